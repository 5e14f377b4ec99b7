//! Intended send times (wrk2-style constant-rate schedules) and the driver's timeline.
//!
//! Each (connection, lane) pair has a [`Schedule`]: request `n` is *intended* at
//! `start + offset + n / rate`, whatever happened to earlier requests. When the driver wakes
//! late (a stalled server filled the socket, the machine was busy), every request whose time
//! has passed is sent at once (catch-up), each keeping its own intended time, so a stall shows
//! up as latency instead of as a lower rate. Times are kept in nanoseconds from `start`;
//! µs-exact wake-ups come from the driver's timerfd, not from epoll's millisecond timeout.
//!
//! Runs on a driver thread; never allocates per request (the heap holds one entry per pair).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Constant-rate intended send times for one lane on one connection.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// Time zero of the run.
    start: Instant,
    /// Nanoseconds between consecutive intended times.
    period_ns: f64,
    /// Nanoseconds from `start` to request 0 (staggers connections of one lane).
    offset_ns: f64,
    /// Index of the next request not yet handed out.
    next: u64,
    /// Nanoseconds from `start` at which the schedule stops (exclusive).
    end_ns: f64,
}

impl Schedule {
    /// `rate` requests/s starting `offset` after `start`, ending before `start + length`.
    pub(crate) fn new(start: Instant, rate: f64, offset: Duration, length: Duration) -> Schedule {
        Schedule {
            start,
            period_ns: 1e9 / rate,
            offset_ns: offset.as_nanos() as f64,
            next: 0,
            end_ns: length.as_nanos() as f64,
        }
    }

    /// The intended time of the next request, or `None` when the schedule is over.
    pub(crate) fn peek(&self) -> Option<Instant> {
        let ns = self.offset_ns + self.next as f64 * self.period_ns;
        (ns < self.end_ns).then(|| self.start + Duration::from_nanos(ns as u64))
    }

    /// Hands out the next intended time if it is due at `now` (call in a loop to catch up).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Instant> {
        let due = self.peek().filter(|&t| t <= now)?;
        self.next += 1;
        Some(due)
    }

    /// How many requests the whole schedule holds.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        if self.offset_ns >= self.end_ns {
            return 0;
        }
        ((self.end_ns - self.offset_ns) / self.period_ns).ceil() as u64
    }
}

/// Closed-loop lane choice: smooth weighted round-robin (as nginx balances upstreams), so
/// the request mix follows the lane shares exactly and evenly, with no randomness.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    /// Lane weights (shares).
    weights: Vec<f64>,
    /// Running credit per lane.
    credit: Vec<f64>,
}

impl Mix {
    /// A mix over lanes with the given shares.
    pub(crate) fn new(shares: &[f64]) -> Mix {
        Mix { weights: shares.to_vec(), credit: vec![0.0; shares.len()] }
    }

    /// The lane of the next request.
    pub(crate) fn next_lane(&mut self) -> usize {
        let total: f64 = self.weights.iter().sum();
        for (credit, weight) in self.credit.iter_mut().zip(&self.weights) {
            *credit += weight;
        }
        let best = (0..self.credit.len())
            .max_by(|&a, &b| self.credit[a].total_cmp(&self.credit[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        self.credit[best] -= total;
        best
    }
}

/// What the driver must do at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
    /// Send whatever is due on this connection's lane.
    Send {
        /// Connection index within the driver thread.
        conn: usize,
        /// Lane index.
        lane: usize,
    },
    /// Backoff is over: try the next remote.
    Reconnect {
        /// Connection index.
        conn: usize,
        /// Connect attempt this wake belongs to; stale wakes are ignored.
        epoch: u64,
    },
    /// A connect attempt has taken too long.
    ConnectTimeout {
        /// Connection index.
        conn: usize,
        /// Connect attempt this wake belongs to.
        epoch: u64,
    },
}

/// Min-heap of future wakes; the driver arms its timer for the earliest.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    heap: BinaryHeap<Reverse<(Instant, Wake)>>,
}

impl Timeline {
    /// Schedules `wake` at `at`.
    pub(crate) fn push(&mut self, at: Instant, wake: Wake) {
        self.heap.push(Reverse((at, wake)));
    }

    /// When the earliest wake is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest wake if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Wake> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, wake))| wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn intended_times_follow_the_rate_not_the_sends() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0, Duration::from_micros(250), ms(5));
        assert_eq!(s.total(), 5);
        assert_eq!(s.pop_due(t0), None, "nothing is due before the offset");
        let times: Vec<_> = std::iter::from_fn(|| s.pop_due(t0 + ms(100))).collect();
        let offsets: Vec<_> = times.iter().map(|t| (*t - t0).as_micros()).collect();
        assert_eq!(offsets, vec![250, 1250, 2250, 3250, 4250]);
        assert_eq!(s.peek(), None, "the schedule ends before start + length");
    }

    #[test]
    fn catch_up_after_a_stall_keeps_each_intended_time() {
        // 10 kHz for 10 ms; the driver sleeps through the first 3.05 ms then wakes.
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 10_000.0, Duration::ZERO, ms(10));
        let late = t0 + Duration::from_micros(3050);
        let burst: Vec<_> = std::iter::from_fn(|| s.pop_due(late)).collect();
        assert_eq!(burst.len(), 31, "0, 100, ..., 3000 µs are all due at once");
        assert_eq!(burst[30] - t0, Duration::from_micros(3000));
        assert_eq!(s.peek().map(|t| t - t0), Some(Duration::from_micros(3100)));
    }

    #[test]
    fn microsecond_periods_are_exact_over_long_runs() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 300_000.0, Duration::ZERO, Duration::from_secs(3600));
        s.next = 1_080_000_000 - 1; // the last request of an hour at 300k/s
        let last = s.peek().unwrap() - t0;
        assert!(Duration::from_secs(3600) - last <= Duration::from_micros(4), "{last:?}");
        assert_eq!(s.total(), 1_080_000_000);
    }

    #[test]
    fn mix_follows_shares_evenly() {
        let mut mix = Mix::new(&[3.0, 1.0]);
        let picks: Vec<_> = (0..8).map(|_| mix.next_lane()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn timeline_pops_in_time_order_only_when_due() {
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        tl.push(t0 + ms(2), Wake::Send { conn: 1, lane: 0 });
        tl.push(t0 + ms(1), Wake::Reconnect { conn: 0, epoch: 3 });
        assert_eq!(tl.pop_due(t0), None);
        assert_eq!(tl.pop_due(t0 + ms(5)), Some(Wake::Reconnect { conn: 0, epoch: 3 }));
        assert_eq!(tl.next_at(), Some(t0 + ms(2)));
    }
}
