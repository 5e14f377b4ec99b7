//! The server's cost per request, sampled from `/proc` during the measured window only.
//!
//! A sampler thread (`loadgen-sampler`) meets the drivers at their start line, sleeps through
//! the warm-up, takes a baseline at the start of the measured window, samples every
//! [`SAMPLE_PERIOD`] and takes the last sample at its end. The target is one or several
//! server processes (a cluster's members: their figures are summed) or the embedded engine's
//! threads. It reads:
//!
//! - **CPU**: each thread's time on a CPU in ns, the first field of
//!   `/proc/PID/task/TID/schedstat`, summed. Tick-based `utime + stime` (`/proc/PID/stat`,
//!   `sysconf(_SC_CLK_TCK)`, usually 10 ms) is too coarse for a few µs per request at a low
//!   rate; it is kept beside it (whole processes: exact across threads that exit) and used
//!   alone where schedstat is missing (a kernel without `CONFIG_SCHED_INFO`). A thread that
//!   exits in the window loses at most one period of its schedstat time.
//! - **Context switches**: `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` summed over
//!   `/proc/PID/task/*/status`. `/proc/PID/status` holds the main thread's counts only, so
//!   the per-thread sum is the exact one; a thread that exits in the window counts up to its
//!   last sample (at most one period of its switches is lost).
//! - **Memory and descriptors**: the largest sampled `VmRSS`, `VmHWM` (the lifetime peak, so
//!   possibly from before the window) and the largest count of `/proc/PID/fd` entries; for
//!   several processes, the largest sampled sum.
//!
//! The embedded engine runs inside loadgen's own process, so only the threads whose name
//! starts with `engine-` (`engine-parser-N`, `engine-executor`) are counted for CPU and
//! context switches, leaving loadgen's drivers out; memory and descriptors can only be read
//! for the whole process and are labelled so. Never runs on the send path; a vanished
//! process ends sampling with what was seen.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Sampling period: often enough to see short-lived threads and RSS peaks, rare enough that
/// the sampler's own reads (a few small files per thread) cost nothing measurable.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Thread-name prefix of the engine's threads (`engine/core/src/server.rs` names them).
const ENGINE_THREAD_PREFIX: &str = "engine-";

/// Whose cost is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Whole server processes (at least one), summed.
    Processes(Vec<u32>),
    /// The embedded engine's threads inside this process.
    EngineThreads,
}

/// One thread's counters at a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ThreadCounters {
    ticks: u64,
    /// Time on a CPU from `schedstat`, ns; `None` where the kernel has no schedstat.
    run_ns: Option<u64>,
    voluntary: u64,
    nonvoluntary: u64,
}

/// One reading of the target. Thread ids are unique across processes, so the threads of
/// several processes share one map.
#[derive(Debug, Clone, Default)]
struct Reading {
    /// Processes' `utime + stime`, summed (whole-process targets only).
    process_ticks: Option<u64>,
    threads: BTreeMap<u32, ThreadCounters>,
    rss_kib: u64,
    hwm_kib: u64,
    fds: u64,
}

/// The server's cost over the measured window, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCost {
    /// What was sampled (`pid 123 (ovsdb-server)`, `pids 1, 2, 3 (etcd, etcd, etcd)`,
    /// `embedded engine threads (engine-*)`).
    pub target: String,
    /// Length of the sampled window in seconds.
    pub window_s: f64,
    /// Samples taken (baseline included).
    pub samples: u32,
    /// Replies recorded in the measured window (the denominator).
    pub replies: u64,
    /// CPU time in the window, µs: from `schedstat` (ns) where the kernel has it, else from
    /// `utime + stime` ticks (see `cpu_source`).
    pub cpu_us: f64,
    /// CPU µs per reply.
    pub cpu_us_per_reply: f64,
    /// Where `cpu_us` comes from: `schedstat` or `ticks`.
    #[serde(default = "ticks_source")]
    pub cpu_source: String,
    /// CPU time in the window from `utime + stime` ticks, µs (the only figure of runs saved
    /// before schedstat was read).
    #[serde(default)]
    pub ticks_cpu_us: f64,
    /// Clock ticks per second the tick-based CPU time was read in (its resolution).
    pub clock_tick_hz: u64,
    /// Voluntary context switches in the window, all threads.
    pub voluntary_switches: u64,
    /// Involuntary context switches in the window, all threads.
    pub nonvoluntary_switches: u64,
    /// (Voluntary + involuntary) per 1,000 replies.
    pub switches_per_1k_replies: f64,
    /// Threads seen during the window.
    pub threads: usize,
    /// Largest sampled `VmRSS`, KiB.
    pub peak_rss_kib: u64,
    /// `VmHWM` at the last sample (lifetime peak), KiB.
    pub hwm_kib: u64,
    /// Largest sampled number of open descriptors.
    pub peak_fds: u64,
    /// What `peak_rss_kib`, `hwm_kib` and `peak_fds` cover.
    pub memory_scope: String,
    /// The process disappeared before the window ended (figures cover what was seen).
    pub vanished: bool,
}

/// What summaries saved before schedstat was read measured CPU with.
fn ticks_source() -> String {
    "ticks".into()
}

/// Raw window measurements, before dividing by the replies.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    target: Target,
    /// Process names (`comm`), one per process of the target.
    names: Vec<String>,
    window: Duration,
    samples: u32,
    ticks: u64,
    /// Schedstat CPU time, ns; `None` if some thread had no schedstat.
    run_ns: Option<u64>,
    voluntary: u64,
    nonvoluntary: u64,
    threads: usize,
    peak_rss_kib: u64,
    hwm_kib: u64,
    peak_fds: u64,
    vanished: bool,
}

impl Window {
    /// The reported figures for `replies` replies.
    pub(crate) fn cost(&self, replies: u64) -> ServerCost {
        let hz = clock_tick_hz();
        let ticks_cpu_us = self.ticks as f64 * 1e6 / hz as f64;
        let (cpu_us, cpu_source) = match self.run_ns {
            Some(ns) => (ns as f64 / 1e3, "schedstat"),
            None => (ticks_cpu_us, "ticks"),
        };
        let per = |x: f64| if replies == 0 { 0.0 } else { x / replies as f64 };
        let (target, memory_scope) = match &self.target {
            Target::Processes(pids) if pids.len() == 1 => {
                (format!("pid {} ({})", pids[0], self.names.join("")), "server process")
            }
            Target::Processes(pids) => (
                format!("pids {} ({})", join(pids), self.names.join(", ")),
                "server processes, summed",
            ),
            Target::EngineThreads => (
                format!("embedded engine threads ({ENGINE_THREAD_PREFIX}*)"),
                "whole loadgen process (the engine runs inside it)",
            ),
        };
        ServerCost {
            target,
            window_s: self.window.as_secs_f64(),
            samples: self.samples,
            replies,
            cpu_us,
            cpu_us_per_reply: per(cpu_us),
            cpu_source: cpu_source.into(),
            ticks_cpu_us,
            clock_tick_hz: hz,
            voluntary_switches: self.voluntary,
            nonvoluntary_switches: self.nonvoluntary,
            switches_per_1k_replies: per(1000.0 * (self.voluntary + self.nonvoluntary) as f64),
            threads: self.threads,
            peak_rss_kib: self.peak_rss_kib,
            hwm_kib: self.hwm_kib,
            peak_fds: self.peak_fds,
            memory_scope: memory_scope.into(),
            vanished: self.vanished,
        }
    }
}

fn join(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Clock ticks per second of `/proc` CPU times.
fn clock_tick_hz() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Samples `target` from `start` to `end`, returning early (with what it has) when `stop`
/// says so. Blocks the calling thread; meant for the sampler thread.
pub(crate) fn sample_window(
    target: Target,
    start: Instant,
    end: Instant,
    stop: impl Fn() -> bool,
) -> Option<Window> {
    if !sleep_until(start, &stop) {
        return None;
    }
    let base = read(&target)?;
    let began = Instant::now();
    let mut acc = Accumulator::new(target, base);
    loop {
        let next = (Instant::now() + SAMPLE_PERIOD).min(end);
        let on_time = sleep_until(next, &stop);
        match read(&acc.target) {
            Some(reading) => acc.add(reading),
            None => {
                acc.vanished = true;
                break;
            }
        }
        if !on_time || Instant::now() >= end {
            break;
        }
    }
    Some(acc.finish(began.elapsed()))
}

/// Sleeps until `at` in short steps; false if `stop` said so first.
fn sleep_until(at: Instant, stop: &impl Fn() -> bool) -> bool {
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        thread::sleep((at - now).min(SAMPLE_PERIOD));
    }
}

/// Running totals from the baseline to the latest sample.
#[derive(Debug)]
struct Accumulator {
    target: Target,
    names: Vec<String>,
    base: Reading,
    /// Last seen counters of every thread seen in the window (exited ones stay).
    last: BTreeMap<u32, ThreadCounters>,
    last_process_ticks: Option<u64>,
    samples: u32,
    peak_rss_kib: u64,
    hwm_kib: u64,
    peak_fds: u64,
    vanished: bool,
}

impl Accumulator {
    fn new(target: Target, base: Reading) -> Accumulator {
        let names = match &target {
            Target::Processes(pids) => pids.iter().map(|&pid| process_name(pid)).collect(),
            Target::EngineThreads => vec!["engine".into()],
        };
        Accumulator {
            target,
            names,
            last: base.threads.clone(),
            last_process_ticks: base.process_ticks,
            samples: 1,
            peak_rss_kib: base.rss_kib,
            hwm_kib: base.hwm_kib,
            peak_fds: base.fds,
            base,
            vanished: false,
        }
    }

    fn add(&mut self, r: Reading) {
        self.samples += 1;
        self.last.extend(r.threads);
        if r.process_ticks.is_some() {
            self.last_process_ticks = r.process_ticks;
        }
        self.peak_rss_kib = self.peak_rss_kib.max(r.rss_kib);
        self.hwm_kib = self.hwm_kib.max(r.hwm_kib);
        self.peak_fds = self.peak_fds.max(r.fds);
    }

    fn finish(self, window: Duration) -> Window {
        let mut delta = ThreadCounters { run_ns: Some(0), ..ThreadCounters::default() };
        for (tid, last) in &self.last {
            // A thread born in the window started from zero.
            let base = self.base.threads.get(tid).copied().unwrap_or_default();
            delta.ticks += last.ticks.saturating_sub(base.ticks);
            delta.run_ns = match (delta.run_ns, last.run_ns) {
                (Some(sum), Some(ns)) => Some(sum + ns.saturating_sub(base.run_ns.unwrap_or(0))),
                _ => None,
            };
            delta.voluntary += last.voluntary.saturating_sub(base.voluntary);
            delta.nonvoluntary += last.nonvoluntary.saturating_sub(base.nonvoluntary);
        }
        let ticks = match (self.base.process_ticks, self.last_process_ticks) {
            (Some(base), Some(last)) => last.saturating_sub(base),
            _ => delta.ticks,
        };
        Window {
            target: self.target,
            names: self.names,
            window,
            samples: self.samples,
            ticks,
            run_ns: delta.run_ns,
            voluntary: delta.voluntary,
            nonvoluntary: delta.nonvoluntary,
            threads: self.last.len(),
            peak_rss_kib: self.peak_rss_kib,
            hwm_kib: self.hwm_kib,
            peak_fds: self.peak_fds,
            vanished: self.vanished,
        }
    }
}

fn process_name(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| format!("pid {pid}"), |s| s.trim().to_owned())
}

/// Reads the target once; `None` if a process is gone.
fn read(target: &Target) -> Option<Reading> {
    match target {
        Target::Processes(pids) => {
            let mut total = Reading { process_ticks: Some(0), ..Reading::default() };
            for &pid in pids {
                let one = read_dir(&PathBuf::from(format!("/proc/{pid}")), false)?;
                total.process_ticks = Some(total.process_ticks? + one.process_ticks?);
                total.threads.extend(one.threads);
                total.rss_kib += one.rss_kib;
                total.hwm_kib += one.hwm_kib;
                total.fds += one.fds;
            }
            Some(total)
        }
        Target::EngineThreads => read_dir(Path::new("/proc/self"), true),
    }
}

/// Reads one process's `/proc` directory; with `engine_threads_only`, only its `engine-*`
/// threads (and no process-wide CPU).
fn read_dir(dir: &Path, engine_threads_only: bool) -> Option<Reading> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let process_ticks = match engine_threads_only {
        false => Some(stat_ticks(&fs::read_to_string(dir.join("stat")).ok()?)?),
        true => None,
    };
    let mut threads = BTreeMap::new();
    for entry in fs::read_dir(dir.join("task")).ok()?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if engine_threads_only {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(ENGINE_THREAD_PREFIX) {
                continue;
            }
        }
        if let Some(counters) = thread_counters(&entry.path()) {
            threads.insert(tid, counters);
        }
    }
    let fds = fs::read_dir(dir.join("fd")).map_or(0, |d| d.count() as u64);
    Some(Reading {
        process_ticks,
        threads,
        rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_field(&status, "VmHWM:").unwrap_or(0),
        fds,
    })
}

/// One thread's CPU ticks and context switches; `None` if it exited meanwhile.
fn thread_counters(task: &Path) -> Option<ThreadCounters> {
    let stat = fs::read_to_string(task.join("stat")).ok()?;
    let status = fs::read_to_string(task.join("status")).ok()?;
    let run_ns = fs::read_to_string(task.join("schedstat")).ok().and_then(|s| schedstat_ns(&s));
    Some(ThreadCounters {
        ticks: stat_ticks(&stat)?,
        run_ns,
        voluntary: status_field(&status, "voluntary_ctxt_switches:")?,
        nonvoluntary: status_field(&status, "nonvoluntary_ctxt_switches:")?,
    })
}

/// `utime + stime` from a `stat` line. The command name (field 2) is in parentheses and may
/// hold spaces, so fields are counted after its closing parenthesis: utime and stime are
/// fields 14 and 15, i.e. the 12th and 13th after it.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Time on a CPU in ns: the first of `schedstat`'s three fields.
fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The number after `key` in a `status` file (`VmRSS:   1234 kB` gives 1234).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status_lines() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 3 0 12 0 0";
        assert_eq!(stat_ticks(stat), Some(10));
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n\
                      voluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t2\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1024));
        assert_eq!(status_field(status, "voluntary_ctxt_switches:"), Some(5));
        assert_eq!(status_field(status, "nonvoluntary_ctxt_switches:"), Some(2));
        assert_eq!(status_field(status, "VmSwap:"), None);
        assert_eq!(schedstat_ns("1234567 890 12\n"), Some(1_234_567));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn exited_and_new_threads_count_from_their_own_start() {
        let t = |ticks, voluntary, nonvoluntary| ThreadCounters {
            ticks,
            run_ns: Some(ticks * 1000 + 1),
            voluntary,
            nonvoluntary,
        };
        let base = Reading {
            threads: BTreeMap::from([(1, t(10, 100, 5)), (2, t(4, 50, 1))]),
            ..Reading::default()
        };
        let mut acc = Accumulator::new(Target::EngineThreads, base);
        // Thread 2 exits after this sample; thread 3 is born.
        acc.add(Reading {
            threads: BTreeMap::from([(1, t(12, 110, 5)), (2, t(6, 53, 2)), (3, t(1, 7, 0))]),
            rss_kib: 900,
            fds: 9,
            ..Reading::default()
        });
        acc.add(Reading {
            threads: BTreeMap::from([(1, t(15, 120, 6)), (3, t(2, 9, 1))]),
            rss_kib: 800,
            fds: 7,
            ..Reading::default()
        });
        let w = acc.finish(Duration::from_secs(1));
        assert_eq!((w.ticks, w.voluntary, w.nonvoluntary), (5 + 2 + 2, 20 + 3 + 9, 1 + 1 + 1));
        // Thread 3 was born in the window: all of its schedstat time counts.
        assert_eq!(w.run_ns, Some(5000 + 2000 + 2001));
        assert_eq!((w.threads, w.samples, w.peak_rss_kib, w.peak_fds), (3, 3, 900, 9));
        let cost = w.cost(1000);
        assert_eq!(cost.switches_per_1k_replies, 35.0);
        assert_eq!((cost.cpu_source.as_str(), cost.cpu_us), ("schedstat", 9.001));
    }

    #[test]
    fn ticks_are_the_fallback_and_the_process_total_is_preferred_for_them() {
        let thread = ThreadCounters { ticks: 1, ..ThreadCounters::default() };
        let base = Reading {
            process_ticks: Some(100),
            threads: BTreeMap::from([(1, thread)]),
            ..Reading::default()
        };
        let mut acc = Accumulator::new(Target::Processes(vec![std::process::id()]), base);
        let later = ThreadCounters { ticks: 2, ..thread };
        acc.add(Reading {
            process_ticks: Some(130),
            threads: BTreeMap::from([(1, later)]),
            ..Reading::default()
        });
        let w = acc.finish(Duration::from_secs(1));
        assert_eq!((w.ticks, w.run_ns), (30, None), "no schedstat: ticks only");
        let cost = w.cost(10);
        assert_eq!(cost.cpu_source, "ticks");
        assert_eq!(cost.cpu_us, cost.ticks_cpu_us);
    }

    #[test]
    fn several_processes_are_summed() {
        let me = std::process::id();
        let one = read(&Target::Processes(vec![me])).expect("own process");
        let two = read(&Target::Processes(vec![me, me])).expect("own process twice");
        assert!(two.fds >= 2 * one.fds.saturating_sub(2) && two.rss_kib > one.rss_kib, "{two:?}");
        let w = Accumulator::new(Target::Processes(vec![me, me]), two).finish(Duration::ZERO);
        let cost = w.cost(1);
        assert!(cost.target.starts_with(&format!("pids {me}, {me} (")), "{}", cost.target);
        assert_eq!(cost.memory_scope, "server processes, summed");
        assert!(read(&Target::Processes(vec![me, u32::MAX])).is_none(), "one is gone");
    }

    #[test]
    fn samples_this_process_and_its_engine_named_threads() {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let busy = thread::Builder::new()
            .name("engine-test".into())
            .spawn(|| {
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let now = Instant::now();
        let w = sample_window(Target::EngineThreads, now, now + Duration::from_millis(250), || {
            stop.load(std::sync::atomic::Ordering::Relaxed)
        })
        .expect("this process exists");
        busy.join().unwrap();
        assert!(w.threads >= 1 && w.samples >= 3, "{w:?}");
        assert!(w.run_ns.unwrap_or(w.ticks) >= 1, "a spinning engine- thread used CPU: {w:?}");
        assert!(w.peak_rss_kib > 0 && w.peak_fds > 0, "{w:?}");
        let me = read(&Target::Processes(vec![std::process::id()])).expect("own process");
        assert!(me.process_ticks.is_some() && !me.threads.is_empty());
    }
}
