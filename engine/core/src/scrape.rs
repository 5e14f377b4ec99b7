//! What a metrics exporter reads ([`Stats::scrape`]): every counter, gauge and latency
//! histogram the server keeps, summed over the parser threads into plain data, with its
//! labels. Read on the exporter's thread; nothing is counted here. The in-band histograms are
//! read under the executor's publication mutex, which the executor takes every
//! `PUBLISH_EVERY`, never per job.

use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use crate::budget::Pause;
use crate::stats::{DIALECTS, ERROR_CLASSES, LANES, LATENCY_BUCKETS, Stats, StatsSnapshot};

/// A latency histogram in per-bucket form: upper bound in seconds and the observations at or
/// below it and above the previous bound (not cumulative); the last bound is infinite.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    /// `(upper bound in seconds, observations in the bucket)`, bounds increasing.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all.
    pub count: u64,
    /// Their exact sum, in seconds.
    pub sum_seconds: f64,
}

/// Requests routed to one command, by dialect and the lane asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// `qmp` or `jsonrpc`.
    pub dialect: &'static str,
    /// `inband` or `oob`.
    pub lane: &'static str,
    /// The command name.
    pub command: String,
    /// Requests so far.
    pub count: u64,
}

/// Everything the server counts, read at once.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Per (dialect, lane, command): every combination, zeros included.
    pub routed: Vec<Routed>,
    /// In-band jobs queued for the executor.
    pub dispatched_inband: u64,
    /// OOB requests run on a parser thread (JSON-RPC `echo` included).
    pub dispatched_oob: u64,
    /// Error replies by class name (`GenericError`, `CommandNotFound`).
    pub errors: Vec<(&'static str, u64)>,
    /// Unparsable or over-limit messages.
    pub bad_input: u64,
    /// In-band requests parked in their connection (in-flight limit or full queue).
    pub parked: u64,
    /// Connections whose reading is paused now, by reason (`own`, `shared`).
    pub paused: Vec<(&'static str, u64)>,
    /// Jobs in the executor queue, as last seen by the executor.
    pub queue_depth: u64,
    /// Jobs the executor ran, as of its last publication.
    pub executor_jobs: u64,
    /// Seconds the executor spent in handlers, as of its last publication.
    pub executor_busy_seconds: f64,
    /// In-band queue wait (handed over to started).
    pub inband_wait: Buckets,
    /// In-band handler time.
    pub inband_service: Buckets,
    /// OOB service time (argument decoding, handler, reply encoding).
    pub oob_service: Buckets,
    /// The `query-stats` figures (connections, memory, uptime, threads).
    pub snapshot: StatsSnapshot,
}

impl Stats {
    /// Reads every counter, gauge and histogram for an exporter.
    pub fn scrape(&self) -> Scrape {
        let (executor_jobs, busy_ns, inband_wait, inband_service) = {
            let executor = self.executor.lock();
            let wait = buckets_of(&executor.wait, executor.wait_sum_ns);
            let service = buckets_of(&executor.service, executor.service_sum_ns);
            (executor.jobs, executor.service_sum_ns, wait, service)
        };
        Scrape {
            routed: self.routed(),
            dispatched_inband: self.sum(|t| &t.inband),
            dispatched_oob: self.sum(|t| &t.oob),
            errors: ERROR_CLASSES
                .iter()
                .enumerate()
                .map(|(i, class)| (class.as_str(), self.sum(|t| &t.error_classes[i])))
                .collect(),
            bad_input: self.sum(|t| &t.bad_input),
            parked: self.sum(|t| &t.parked),
            paused: Pause::NAMES
                .iter()
                .enumerate()
                .map(|(i, reason)| (*reason, self.sum(|t| &t.paused[i])))
                .collect(),
            queue_depth: self.queue_depth.load(Ordering::Relaxed) as u64,
            executor_jobs,
            executor_busy_seconds: busy_ns as f64 / 1e9,
            inband_wait,
            inband_service,
            oob_service: self.oob_buckets(),
            snapshot: self.snapshot(),
        }
    }

    /// Requests per (dialect, lane, command), every combination.
    fn routed(&self) -> Vec<Routed> {
        let commands = self.commands.len();
        let mut routed = Vec::with_capacity(DIALECTS.len() * LANES.len() * commands);
        for (d, dialect) in DIALECTS.iter().enumerate() {
            for (l, lane) in LANES.iter().enumerate() {
                for (c, command) in self.commands.iter().enumerate() {
                    let index = (d * LANES.len() + l) * commands + c;
                    let count = self.sum(|t| &t.routed[index]);
                    routed.push(Routed { dialect, lane, command: command.clone(), count });
                }
            }
        }
        routed
    }

    /// The parser threads' OOB buckets, summed.
    fn oob_buckets(&self) -> Buckets {
        let mut buckets: Vec<(f64, u64)> =
            LATENCY_BUCKETS.iter().chain([&f64::INFINITY]).map(|&b| (b, 0)).collect();
        let mut sum_ns = 0u64;
        for thread in self.threads.iter() {
            for (bucket, count) in buckets.iter_mut().zip(&thread.oob_latency.counts) {
                bucket.1 += count.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.saturating_add(thread.oob_latency.sum_ns.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        Buckets { buckets, count, sum_seconds: sum_ns as f64 / 1e9 }
    }
}

/// An HdrHistogram of nanoseconds in [`LATENCY_BUCKETS`], with the exact sum kept beside it.
fn buckets_of(histogram: &Histogram<u64>, sum_ns: u64) -> Buckets {
    let mut below = 0;
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    for bound in LATENCY_BUCKETS {
        let upto = histogram.count_between(0, (bound * 1e9) as u64);
        buckets.push((bound, upto - below));
        below = upto;
    }
    buckets.push((f64::INFINITY, histogram.len() - below));
    Buckets { buckets, count: histogram.len(), sum_seconds: sum_ns as f64 / 1e9 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_histograms_map_onto_per_bucket_counts() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for ns in [500, 900, 2_000, 40_000, 20_000_000_000] {
            h.record(ns).unwrap();
        }
        let b = buckets_of(&h, 20_000_043_400);
        assert_eq!(b.count, 5);
        assert_eq!(b.buckets[0], (1e-6, 2), "0.5 µs and 0.9 µs");
        assert_eq!(b.buckets[1], (2.5e-6, 1), "2 µs");
        assert_eq!(b.buckets[5], (5e-5, 1), "40 µs");
        assert_eq!(b.buckets.last(), Some(&(f64::INFINITY, 1)), "20 s");
        assert_eq!(b.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert!((b.sum_seconds - 20.0000434).abs() < 1e-9);
    }
}
