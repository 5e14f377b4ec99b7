//! What a driver thread measures: per-lane histograms and counters, verification counters,
//! per-remote connection counters, what error replies said, the send lag, and the interval
//! log.
//!
//! Two latencies per reply, both in nanoseconds:
//! - **corrected**: receive time − *intended* send time (the schedule's), so time a request
//!   spent waiting behind a stalled server or a full socket counts (coordinated-omission
//!   correction as in wrk2);
//! - **service**: receive time − actual send time (what a closed-loop tool would report).
//!
//! Only requests intended inside the measured window are recorded in histograms; counters
//! cover the whole run so that verification sees every request. One `Recorder` per driver
//! thread, merged at the end; recording is a few array increments, no allocation, no logging.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::error_texts::ErrorTexts;

/// Largest latency recorded exactly: one hour in ns. A stalled server can hold a request for
/// minutes; anything beyond an hour saturates at this value.
pub(crate) const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Significant digits of the run histograms: 0.1% relative error, the HdrHistogram norm.
const SIGFIG: u8 = 3;

/// Significant digits of interval histograms: 1% is plenty for a time series and keeps each
/// interval's memory small.
const INTERVAL_SIGFIG: u8 = 2;

/// A fresh run histogram.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("constant bounds are valid")
}

fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, INTERVAL_SIGFIG).expect("constant bounds are valid")
}

/// Request counters of one lane over the whole run (warm-up included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCounts {
    /// Requests written to a connection.
    pub sent: u64,
    /// Successful replies.
    pub ok: u64,
    /// Error replies (`error` member).
    pub errors: u64,
    /// Requests in flight on a connection that dropped: failed, never retried.
    pub failed: u64,
    /// Requests still without a reply when the drain period ended.
    pub missing: u64,
    /// Requests that came due but were never sent (no connection until the end).
    pub unsent: u64,
}

impl LaneCounts {
    /// Adds another's counters.
    pub(crate) fn add(&mut self, o: &LaneCounts) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.errors += o.errors;
        self.failed += o.failed;
        self.missing += o.missing;
        self.unsent += o.unsent;
    }

    /// Requests that did not get a successful reply.
    pub fn bad(&self) -> u64 {
        self.errors + self.failed + self.missing + self.unsent
    }
}

/// Protocol-level findings of the run, over all connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Replies to an id that had already been answered on that session.
    pub duplicates: u64,
    /// Replies with an id this client never sent on that session (or not a number).
    pub unknown_ids: u64,
    /// In-band replies that arrived before the reply to an earlier in-band request.
    pub out_of_order: u64,
    /// Unparsable messages, garbage bytes, replies without id, failed handshakes.
    pub protocol_errors: u64,
    /// Events / notifications received (informational).
    pub events: u64,
}

impl Verification {
    /// Adds another's findings.
    pub(crate) fn add(&mut self, o: &Verification) {
        self.duplicates += o.duplicates;
        self.unknown_ids += o.unknown_ids;
        self.out_of_order += o.out_of_order;
        self.protocol_errors += o.protocol_errors;
        self.events += o.events;
    }

    /// Findings that always fail a run.
    pub fn violations(&self) -> u64 {
        self.duplicates + self.unknown_ids + self.out_of_order + self.protocol_errors
    }
}

/// Connection history of one remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCounts {
    /// Connect attempts.
    pub attempts: u64,
    /// Sessions established (handshake done).
    pub sessions: u64,
    /// Sessions established by a connection that had had a session before (failovers).
    pub reconnects: u64,
    /// Attempts that failed before a session was established.
    pub connect_failures: u64,
    /// Established sessions that were lost.
    pub disconnects: u64,
    /// Requests failed because their session was lost.
    pub failed_requests: u64,
}

impl RemoteCounts {
    /// Adds another's counters.
    pub(crate) fn add(&mut self, o: &RemoteCounts) {
        self.attempts += o.attempts;
        self.sessions += o.sessions;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
        self.disconnects += o.disconnects;
        self.failed_requests += o.failed_requests;
    }
}

/// One lane's histograms and counters.
#[derive(Debug, Clone)]
pub(crate) struct LaneRecord {
    /// Whole-run counters.
    pub(crate) counts: LaneCounts,
    /// Measured-window latencies from the intended send time.
    pub(crate) corrected: Histogram<u64>,
    /// Measured-window latencies from the actual send time.
    pub(crate) service: Histogram<u64>,
    /// Corrected latencies received in the current interval.
    current: Histogram<u64>,
}

/// A finished interval: index from the measure start, lane, V2-serialized histogram.
#[derive(Debug, Clone)]
pub(crate) struct IntervalRecord {
    pub(crate) index: u32,
    pub(crate) lane: usize,
    pub(crate) bytes: Vec<u8>,
}

/// Everything one driver thread measured.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    pub(crate) lanes: Vec<LaneRecord>,
    /// Actual − intended send time of every request (open loop): how far the driver lagged.
    pub(crate) lag: Histogram<u64>,
    pub(crate) verify: Verification,
    /// What the error replies said, per lane.
    pub(crate) error_texts: ErrorTexts,
    pub(crate) remotes: Vec<RemoteCounts>,
    /// Start of the measured window (end of warm-up).
    measure_start: Instant,
    /// Interval log period.
    interval: Duration,
    /// Index of the interval being filled.
    interval_index: u32,
    pub(crate) intervals: Vec<IntervalRecord>,
}

impl Recorder {
    /// A recorder for `lanes` lanes and `remotes` remotes.
    pub(crate) fn new(
        lanes: usize,
        remotes: usize,
        measure_start: Instant,
        interval: Duration,
    ) -> Recorder {
        let lane = LaneRecord {
            counts: LaneCounts::default(),
            corrected: histogram(),
            service: histogram(),
            current: interval_histogram(),
        };
        Recorder {
            lanes: vec![lane; lanes],
            lag: histogram(),
            verify: Verification::default(),
            error_texts: ErrorTexts::default(),
            remotes: vec![RemoteCounts::default(); remotes],
            measure_start,
            interval,
            interval_index: 0,
            intervals: Vec::new(),
        }
    }

    /// Fixes the start of the measured window (at time zero, after the connect phase).
    pub(crate) fn start_clock(&mut self, measure_start: Instant) {
        self.measure_start = measure_start;
        self.interval_index = 0;
    }

    /// A request was written; `lag` is actual − intended send time.
    pub(crate) fn sent(&mut self, lane: usize, lag: Duration) {
        self.lanes[lane].counts.sent += 1;
        self.lag.saturating_record(lag.as_nanos() as u64);
    }

    /// A reply matched a request.
    pub(crate) fn reply(
        &mut self,
        lane: usize,
        intended: Instant,
        sent: Instant,
        now: Instant,
        ok: bool,
    ) {
        let rec = &mut self.lanes[lane];
        if ok {
            rec.counts.ok += 1;
        } else {
            rec.counts.errors += 1;
        }
        if intended < self.measure_start {
            return;
        }
        let corrected = now.saturating_duration_since(intended).as_nanos() as u64;
        rec.corrected.saturating_record(corrected.max(1));
        rec.service
            .saturating_record((now.saturating_duration_since(sent).as_nanos() as u64).max(1));
        rec.current.saturating_record(corrected.max(1));
    }

    /// Lane counters, for the connection and driver to bump failures.
    pub(crate) fn counts(&mut self, lane: usize) -> &mut LaneCounts {
        &mut self.lanes[lane].counts
    }

    /// Closes every interval that ended by `now`.
    pub(crate) fn tick(&mut self, now: Instant) {
        while now >= self.next_interval_at() {
            self.close_interval();
        }
    }

    /// When the current interval ends.
    pub(crate) fn next_interval_at(&self) -> Instant {
        self.measure_start + self.interval * (self.interval_index + 1)
    }

    /// Closes the intervals up to `end`, the last one partial unless it ended exactly there.
    pub(crate) fn finish_intervals(&mut self, end: Instant) {
        self.tick(end);
        if self.next_interval_at() - self.interval < end {
            self.close_interval();
        }
    }

    /// Serializes and resets the current interval histograms (the last one may be partial).
    pub(crate) fn close_interval(&mut self) {
        for (lane, rec) in self.lanes.iter_mut().enumerate() {
            let mut bytes = Vec::new();
            if V2Serializer::new().serialize(&rec.current, &mut bytes).is_ok() {
                self.intervals.push(IntervalRecord { index: self.interval_index, lane, bytes });
            }
            rec.current.reset();
        }
        self.interval_index += 1;
    }

    /// Adds another thread's recorder into this one.
    pub(crate) fn merge(&mut self, other: Recorder) {
        for (mine, theirs) in self.lanes.iter_mut().zip(&other.lanes) {
            mine.counts.add(&theirs.counts);
            let _ = mine.corrected.add(&theirs.corrected);
            let _ = mine.service.add(&theirs.service);
        }
        let _ = self.lag.add(&other.lag);
        self.verify.add(&other.verify);
        self.error_texts.merge(&other.error_texts);
        for (mine, theirs) in self.remotes.iter_mut().zip(&other.remotes) {
            mine.add(theirs);
        }
        self.intervals.extend(other.intervals);
    }

    /// The interval log as `(index, lane, histogram)`, threads merged, sorted by index.
    pub(crate) fn merged_intervals(&self) -> Vec<(u32, usize, Histogram<u64>)> {
        let mut out: Vec<(u32, usize, Histogram<u64>)> = Vec::new();
        let mut sorted: Vec<&IntervalRecord> = self.intervals.iter().collect();
        sorted.sort_by_key(|r| (r.index, r.lane));
        for rec in sorted {
            let Ok(h) = Deserializer::new().deserialize::<u64, _>(&mut rec.bytes.as_slice()) else {
                continue;
            };
            match out.last_mut() {
                Some((index, lane, acc)) if *index == rec.index && *lane == rec.lane => {
                    let _ = acc.add(&h);
                }
                _ => out.push((rec.index, rec.lane, h)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_latency_counts_the_wait_that_service_time_hides() {
        // 1 kHz schedule; the server stalls for 100 ms starting at t=10 ms, then answers
        // everything within 50 µs of the (late) send.
        let t0 = Instant::now();
        let mut r = Recorder::new(1, 1, t0, Duration::from_secs(1));
        let ms = Duration::from_millis;
        for i in 0..200u64 {
            let intended = t0 + ms(i);
            let sent = if (10..110).contains(&i) { t0 + ms(110) } else { intended };
            r.reply(0, intended, sent, sent + Duration::from_micros(50), true);
        }
        let lane = &r.lanes[0];
        assert_eq!(lane.counts.ok, 200);
        assert_eq!(lane.service.max(), lane.service.highest_equivalent(50_000));
        let worst = lane.corrected.max() as f64 / 1e6;
        assert!((100.0..100.2).contains(&worst), "first stalled request waited 100 ms: {worst}");
        // Half the stalled requests waited more than 50 ms: p75 of 200 samples lands there.
        assert!(lane.corrected.value_at_quantile(0.75) > 40_000_000);
        assert!(lane.service.value_at_quantile(0.99) < 60_000);
    }

    #[test]
    fn warmup_is_counted_but_not_recorded() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let mut r = Recorder::new(1, 1, start, Duration::from_secs(1));
        r.reply(0, t0, t0, t0 + Duration::from_micros(5), true);
        r.reply(0, start, start, start + Duration::from_micros(5), false);
        assert_eq!((r.lanes[0].counts.ok, r.lanes[0].counts.errors), (1, 1));
        assert_eq!(r.lanes[0].corrected.len(), 1);
    }

    #[test]
    fn intervals_close_on_time_and_merge_across_threads() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut a = Recorder::new(2, 1, t0, sec);
        let mut b = Recorder::new(2, 1, t0, sec);
        a.reply(0, t0, t0, t0 + Duration::from_micros(10), true);
        b.reply(0, t0, t0, t0 + Duration::from_micros(20), true);
        a.tick(t0 + sec * 2);
        b.tick(t0 + sec);
        b.close_interval();
        a.merge(b);
        let log = a.merged_intervals();
        let shape: Vec<_> = log.iter().map(|(i, l, h)| (*i, *l, h.len())).collect();
        assert_eq!(shape, vec![(0, 0, 2), (0, 1, 0), (1, 0, 0), (1, 1, 0)]);
    }
}
