//! Server statistics for `query-stats`: per-parser-thread counters (each written by its own
//! thread only, on its own cache line) and executor latency histograms that the executor
//! publishes every [`PUBLISH_EVERY`] under a `parking_lot` mutex, never per request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// How often the executor folds its private histograms into the published ones: often enough
/// for a dashboard, rare enough that the merge never shows in the job rate.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Counters of one parser thread. Single writer, so increments are plain load + store.
#[derive(Debug, Default)]
pub(crate) struct ThreadStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) oob: AtomicU64,
    pub(crate) inband: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bad_input: AtomicU64,
    pub(crate) parked: AtomicU64,
}

/// Adds one to a counter that only the calling thread writes.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Executor latency, in nanoseconds.
#[derive(Debug)]
pub(crate) struct ExecutorHistograms {
    pub(crate) jobs: u64,
    /// Time a job spent queued (parser thread enqueue to executor start).
    pub(crate) wait: Histogram<u64>,
    /// Time the handler ran.
    pub(crate) service: Histogram<u64>,
}

impl ExecutorHistograms {
    pub(crate) fn new() -> Self {
        // 3 significant digits up to 1 hour, auto-resizing above.
        let hist = || {
            let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
            h.auto(true);
            h
        };
        ExecutorHistograms { jobs: 0, wait: hist(), service: hist() }
    }

    pub(crate) fn record(&mut self, wait: Duration, service: Duration) {
        self.jobs += 1;
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.wait.saturating_record(ns(wait));
        self.service.saturating_record(ns(service));
    }

    /// Moves this histogram's contents into `into`.
    pub(crate) fn drain_into(&mut self, into: &mut ExecutorHistograms) {
        into.jobs += self.jobs;
        // Both auto-resize, so adding cannot fail on range.
        let _ = into.wait.add(&self.wait);
        let _ = into.service.add(&self.service);
        self.jobs = 0;
        self.wait.reset();
        self.service.reset();
    }
}

/// Everything `query-stats` reports, shared by all threads.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub(crate) threads: Box<[CachePadded<ThreadStats>]>,
    /// Job queue length as last seen by the executor.
    pub(crate) queue_depth: AtomicUsize,
    /// Open connections at which descriptors ran out (`usize::MAX`: never): see admission.rs.
    pub(crate) fd_cap: AtomicUsize,
    /// When the running job started, in ns since `started` plus one; 0 while idle. Lets a
    /// probe see a stuck executor (and tests see that a `stall` has begun).
    busy_since: AtomicU64,
    pub(crate) executor: Mutex<ExecutorHistograms>,
}

impl Stats {
    pub(crate) fn new(threads: usize) -> Stats {
        Stats {
            started: Instant::now(),
            threads: (0..threads).map(|_| CachePadded::new(ThreadStats::default())).collect(),
            queue_depth: AtomicUsize::new(0),
            fd_cap: AtomicUsize::new(usize::MAX),
            busy_since: AtomicU64::new(0),
            executor: Mutex::new(ExecutorHistograms::new()),
        }
    }

    /// Executor side: a job starts (`Some(now)`) or ends (`None`).
    pub(crate) fn set_busy(&self, since: Option<Instant>) {
        let ns = since.map_or(0, |t| {
            u64::try_from(t.duration_since(self.started).as_nanos()).unwrap_or(u64::MAX - 1) + 1
        });
        self.busy_since.store(ns, Ordering::Release);
    }

    /// How long the executor has been running its current job, if it is running one.
    fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            ns => Some(self.started.elapsed().saturating_sub(Duration::from_nanos(ns - 1))),
        }
    }

    /// Sums the counters and summarises the histograms.
    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |f: fn(&ThreadStats) -> &AtomicU64| -> u64 {
            self.threads.iter().map(|t| f(t).load(Ordering::Relaxed)).sum()
        };
        let accepted = sum(|t| &t.accepted);
        let executor = self.executor.lock();
        StatsSnapshot {
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            threads: self.threads.len(),
            connections: Connections { accepted, open: accepted - sum(|t| &t.closed) },
            requests: Requests {
                oob: sum(|t| &t.oob),
                inband: sum(|t| &t.inband),
                errors: sum(|t| &t.errors),
                bad_input: sum(|t| &t.bad_input),
            },
            queue: Queue {
                depth: self.queue_depth.load(Ordering::Relaxed),
                parked: sum(|t| &t.parked),
            },
            executor: ExecutorSnapshot {
                busy_for_us: self.busy_for().map(|d| d.as_secs_f64() * 1e6),
                jobs: executor.jobs,
                wait_us: Percentiles::of(&executor.wait),
                service_us: Percentiles::of(&executor.service),
            },
        }
    }
}

/// The `query-stats` reply.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatsSnapshot {
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Parser threads.
    pub threads: usize,
    /// Connection counts.
    pub connections: Connections,
    /// Request counts.
    pub requests: Requests,
    /// Executor queue.
    pub queue: Queue,
    /// Executor latencies.
    pub executor: ExecutorSnapshot,
}

/// Connection counts.
#[derive(Clone, Debug, Serialize)]
pub struct Connections {
    /// Accepted since start.
    pub accepted: u64,
    /// Open now.
    pub open: u64,
}

/// Request counts since start.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Requests {
    /// Run out-of-band on a parser thread.
    pub oob: u64,
    /// Queued for the executor.
    pub inband: u64,
    /// Answered with an error (bad input included).
    pub errors: u64,
    /// Unparsable or invalid messages.
    pub bad_input: u64,
}

/// Executor queue state.
#[derive(Clone, Debug, Serialize)]
pub struct Queue {
    /// Jobs waiting in the executor queue.
    pub depth: usize,
    /// Jobs ever parked in their connection because of the in-flight limit or a full queue.
    pub parked: u64,
}

/// Executor latency summary.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExecutorSnapshot {
    /// How long the job running now has run, in microseconds; `null` when idle.
    pub busy_for_us: Option<f64>,
    /// Jobs run (as of the last publication).
    pub jobs: u64,
    /// Time queued before running, microseconds.
    pub wait_us: Percentiles,
    /// Time running, microseconds.
    pub service_us: Percentiles,
}

/// Percentiles in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}
