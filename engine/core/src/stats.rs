//! Server statistics for `query-stats`: per-parser-thread counters (each written by its own
//! thread only, on its own cache line) and executor latency histograms that the executor
//! publishes every [`PUBLISH_EVERY`] under a `parking_lot` mutex, never per request.
//!
//! Metrics exporters read the same counters at scrape time (`scrape.rs`). The
//! per-command, per-dialect, per-error-class counters and the OOB latency buckets exist for
//! it; each is bumped once at its site on the request path, single writer, no lock, no
//! allocation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use ooblane_wire::Dialect;
use ooblane_wire::ErrorClass;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Serialize;

use crate::budget::MemoryBudget;

/// How often the executor folds its private histograms into the published ones: often enough
/// for a dashboard, rare enough that the merge never shows in the job rate.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Dialect label values, in counter index order (`Dialect::Qmp` first).
pub(crate) const DIALECTS: [&str; 2] = ["qmp", "jsonrpc"];

/// Lane label values, in counter index order.
pub(crate) const LANES: [&str; 2] = ["inband", "oob"];

/// Error classes counted, in counter index order ([`class_index`]).
pub(crate) const ERROR_CLASSES: [ErrorClass; 2] =
    [ErrorClass::GenericError, ErrorClass::CommandNotFound];

/// Upper bounds, in seconds, of the latency buckets exported to Prometheus: 1 µs to 10 s in
/// 1-2.5-5 steps, which spans an OOB `ping` (a few µs) to a stalled executor (seconds) with
/// a resolution that still tells a p99 of 50 µs from one of 250 µs.
pub(crate) const LATENCY_BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    /// Requests routed to a registered command, by dialect, lane asked for and command:
    /// index `(dialect * LANES.len() + lane) * commands + command`. Empty when the server
    /// was built without command names (benchmarks).
    pub(crate) routed: Box<[AtomicU64]>,
    /// Error replies by class ([`ERROR_CLASSES`] order), from any stage.
    pub(crate) error_classes: [AtomicU64; ERROR_CLASSES.len()],
    /// Connections of this thread whose reading is paused by a byte budget now, by reason
    /// (gauges, [`Pause::index`] order: over their own budget, over their share of the
    /// server's limit).
    ///
    /// [`Pause::index`]: crate::budget::Pause::index
    pub(crate) paused: [AtomicU64; 2],
    /// The most one connection of this thread has held at the end of a turn.
    pub(crate) peak_conn_bytes: AtomicU64,
    /// OOB service time: argument decoding, handler and reply encoding on this thread.
    pub(crate) oob_latency: LatencyBuckets,
}

impl ThreadStats {
    fn with_commands(commands: usize) -> ThreadStats {
        let routed = (0..DIALECTS.len() * LANES.len() * commands).map(|_| AtomicU64::new(0));
        ThreadStats { routed: routed.collect(), ..ThreadStats::default() }
    }

    /// Counts a request routed to command number `command` (its registration order).
    pub(crate) fn count_routed(&self, dialect: Dialect, oob: bool, command: usize) {
        let commands = self.routed.len() / (DIALECTS.len() * LANES.len());
        let dialect = match dialect {
            Dialect::Qmp => 0,
            Dialect::JsonRpc => 1,
        };
        let index = (dialect * LANES.len() + usize::from(oob)) * commands + command;
        if command < commands {
            bump(&self.routed[index]);
        }
    }

    /// Counts an error reply: the total and its class.
    pub(crate) fn count_error(&self, class: ErrorClass) {
        bump(&self.errors);
        bump(&self.error_classes[class_index(class)]);
    }

    /// Counts an executed in-band command's outcome if it is an error.
    /// An in-band outcome came back: counts it if it is an error (its class).
    pub(crate) fn count_outcome(&self, failure: Option<ErrorClass>) {
        if let Some(class) = failure {
            self.count_error(class);
        }
    }
}

/// A command error class's index in [`ERROR_CLASSES`].
fn class_index(class: ErrorClass) -> usize {
    ERROR_CLASSES.iter().position(|&c| c == class).unwrap_or(0)
}

/// A fixed-bucket latency histogram ([`LATENCY_BUCKETS`] plus +Inf) written by one thread
/// with plain load + store, read at scrape time.
#[derive(Debug, Default)]
pub(crate) struct LatencyBuckets {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub(crate) counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub(crate) sum_ns: AtomicU64,
}

impl LatencyBuckets {
    /// Records one observation; only the owning thread calls this.
    pub(crate) fn record(&self, time: Duration) {
        let seconds = time.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&b| seconds <= b);
        bump(&self.counts[bucket.unwrap_or(LATENCY_BUCKETS.len())]);
        let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let sum = &self.sum_ns;
        sum.store(sum.load(Ordering::Relaxed).saturating_add(ns), Ordering::Relaxed);
    }
}

/// Adds one to a counter that only the calling thread writes.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Executor latency, in nanoseconds.
#[derive(Debug)]
pub(crate) struct ExecutorHistograms {
    pub(crate) jobs: u64,
    /// Exact sums of the recorded waits and service times, in ns (the histograms round).
    pub(crate) wait_sum_ns: u64,
    pub(crate) service_sum_ns: u64,
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
        ExecutorHistograms {
            jobs: 0,
            wait_sum_ns: 0,
            service_sum_ns: 0,
            wait: hist(),
            service: hist(),
        }
    }

    pub(crate) fn record(&mut self, wait: Duration, service: Duration) {
        self.jobs += 1;
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.wait_sum_ns = self.wait_sum_ns.saturating_add(ns(wait));
        self.service_sum_ns = self.service_sum_ns.saturating_add(ns(service));
        self.wait.saturating_record(ns(wait));
        self.service.saturating_record(ns(service));
    }

    /// Moves this histogram's contents into `into`.
    pub(crate) fn drain_into(&mut self, into: &mut ExecutorHistograms) {
        into.jobs += self.jobs;
        into.wait_sum_ns = into.wait_sum_ns.saturating_add(self.wait_sum_ns);
        into.service_sum_ns = into.service_sum_ns.saturating_add(self.service_sum_ns);
        // Both auto-resize, so adding cannot fail on range.
        let _ = into.wait.add(&self.wait);
        let _ = into.service.add(&self.service);
        self.jobs = 0;
        self.wait_sum_ns = 0;
        self.service_sum_ns = 0;
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
    /// Command names by registration order, for the per-command counters' labels.
    pub(crate) commands: Box<[String]>,
    /// Bytes held for all connections, and the limit (see budget.rs).
    pub(crate) memory: MemoryBudget,
}

impl Stats {
    /// Statistics that also count requests per command, `commands` in registration order.
    pub(crate) fn with_commands(threads: usize, commands: Vec<String>, memory: usize) -> Stats {
        let per_thread = |_| CachePadded::new(ThreadStats::with_commands(commands.len()));
        Stats {
            started: Instant::now(),
            threads: (0..threads).map(per_thread).collect(),
            queue_depth: AtomicUsize::new(0),
            fd_cap: AtomicUsize::new(usize::MAX),
            busy_since: AtomicU64::new(0),
            executor: Mutex::new(ExecutorHistograms::new()),
            commands: commands.into(),
            memory: MemoryBudget::new(memory),
        }
    }

    /// Sums one counter over the parser threads.
    pub(crate) fn sum(&self, counter: impl Fn(&ThreadStats) -> &AtomicU64) -> u64 {
        self.threads.iter().map(|t| counter(t).load(Ordering::Relaxed)).sum()
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
            memory: Memory {
                limit: self.memory.limit() as u64,
                held: self.memory.held() as u64,
                peak: self.memory.peak() as u64,
                paused_own: self.threads.iter().map(|t| t.paused[0].load(Ordering::Relaxed)).sum(),
                paused_shared: self
                    .threads
                    .iter()
                    .map(|t| t.paused[1].load(Ordering::Relaxed))
                    .sum(),
                peak_conn: self
                    .threads
                    .iter()
                    .map(|t| t.peak_conn_bytes.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0),
            },
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
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct StatsSnapshot {
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Parser threads.
    pub threads: usize,
    /// Connection counts.
    pub connections: Connections,
    /// Bytes held for connections, as their byte budgets count them.
    pub memory: Memory,
    /// Request counts.
    pub requests: Requests,
    /// Executor queue.
    pub queue: Queue,
    /// Executor latencies.
    pub executor: ExecutorSnapshot,
}

/// Connection counts.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Connections {
    /// Accepted since start.
    pub accepted: u64,
    /// Open now.
    pub open: u64,
}

/// Bytes held for connections (requests read, replies owed, buffers), as counted by the
/// per-connection byte budgets.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Memory {
    /// The server's limit (`--memory-limit`).
    pub limit: u64,
    /// Held now, all connections.
    pub held: u64,
    /// The most held at once since start.
    pub peak: u64,
    /// Connections not being read now because they are over their own byte budget
    /// (`--conn-budget`): their clients must read their replies first.
    pub paused_own: u64,
    /// Connections not being read now because the server is over its limit and they hold
    /// more than their share (or anything, past the slack).
    pub paused_shared: u64,
    /// The most any one connection has held at the end of a loop turn since start.
    pub peak_conn: u64,
}

/// Request counts since start.
#[derive(Clone, Debug, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Queue {
    /// Jobs waiting in the executor queue.
    pub depth: usize,
    /// Jobs ever parked in their connection because of the in-flight limit or a full queue.
    pub parked: u64,
}

/// Executor latency summary.
#[derive(Clone, Debug, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, Serialize, JsonSchema)]
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
