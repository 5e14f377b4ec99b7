//! The idle policy: whether a thread that waits for something another thread will hand it
//! polls for it before it parks, and for how long. The executor waits for the next batch; a
//! parser thread for the outcomes of the jobs it just handed over. Used only where the
//! layout gives the executor a core of its own (`placement.rs`).
//!
//! Parking costs a context switch on each side of the hand-off and, in a virtual machine
//! whose idle vCPUs halt, an interrupt and a VM exit for the wake-up: measured here 14 µs
//! (median) from a batch's hand-over to the parked executor running it, more at low rates.
//! Polling costs the CPU time it lasts, and on a core shared with another thread (a client
//! on the same machine) it takes that core from whoever needs it. So polling pays only when
//! the awaited thing comes within the window and nobody else wants the core. A
//! [`SpinWindow`] polls the full window while that holds and stops where it does not:
//!
//! - **Slow arrivals.** A poll that timed out doubles the waits that park at once (up to
//!   [`MAX_BACKOFF`]), each later one probing again; a poll that paid, or a gap seen while
//!   parked that a poll would have caught, ends the back-off. An idle engine and a paced one
//!   whose gaps are longer than a park thus park at once, a busy one stays awake.
//! - **A shared core.** A poll interrupted for longer than [`PREEMPTED`] backs off the same
//!   way. And every [`CHECK_EVERY`] a thread that polled reads its own count of involuntary
//!   context switches: preempted more than once per [`SHARED_POLLS`] polls, its core is
//!   wanted by another thread (measured: a client that shares the core preempts the thread
//!   soon after its polls, not only during them), and it stops polling for a pause that
//!   doubles while that lasts, up to [`MAX_PAUSE`].

use std::time::Duration;

/// The most waits skipped after failed polls: one probing poll per this many waits once
/// polling keeps failing, so an engine whose polls never pay spends at most a window per
/// this many waits on them.
const MAX_BACKOFF: u32 = 1024;

/// A stretch between two clock reads of a poll longer than this means the thread was
/// descheduled meanwhile. Measured here: [`POLLS_PER_READ`] polls take under 1 µs, a
/// stretch over 3 µs happened about once in 20,000 on an unshared core, and a preemption by
/// another thread (two context switches and its work) takes several µs.
pub(crate) const PREEMPTED: Duration = Duration::from_micros(4);

/// Polls between two clock reads: a clock read costs more than a poll.
const POLLS_PER_READ: usize = 16;

/// How often a thread that polls checks whether its core is shared: soon enough to stop
/// within a fraction of a second, rarely enough that the check (a small `/proc` read) costs
/// nothing.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A thread preempted more than once per this many polls shares its core. Measured on the
/// 2-core test machine: a parser thread polling for outcomes with the client on its core
/// was preempted about once per two polls; with the client on the other core, about once
/// per hundred.
pub(crate) const SHARED_POLLS: u64 = 8;

/// The longest a thread that found its core shared stops polling before it tries again.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The awaited thing came while the thread polled, this long after it began.
    Came(Duration),
    /// The thread parked at once and the awaited thing was handed over this long after.
    Parked(Duration),
    /// The poll lasted the whole window and nothing came.
    TimedOut,
    /// The thread was descheduled while it polled.
    Preempted,
}

/// One thread's idle policy: whether to poll before parking, from how recent waits ended
/// and whether its core is shared.
#[derive(Clone, Debug)]
pub(crate) struct SpinWindow {
    /// The longest a poll lasts (zero: never poll).
    limit: Duration,
    /// Waits to skip (park at once) after the last failed poll.
    backoff: u32,
    /// Waits still to skip.
    skip: u32,
    /// The last failed poll was preempted: only a poll that pays ends the back-off then
    /// (short gaps seen while parked say nothing about whether the core is free).
    preempted: bool,
    /// The shared-core check: polls since the last check, when it was (TSC), and the
    /// count of involuntary switches then.
    polls: u64,
    checked_at: u64,
    involuntary: Option<u64>,
    /// The current pause (doubling while the core stays shared), and when it began (TSC)
    /// while it lasts.
    pause: Duration,
    paused_since: Option<u64>,
    clock: quanta::Clock,
}

impl SpinWindow {
    /// A window of at most `limit` (zero: never poll).
    pub(crate) fn new(limit: Duration) -> SpinWindow {
        SpinWindow::with_clock(limit, quanta::Clock::new())
    }

    fn with_clock(limit: Duration, clock: quanta::Clock) -> SpinWindow {
        SpinWindow {
            limit,
            backoff: 0,
            skip: 0,
            preempted: false,
            polls: 0,
            checked_at: clock.raw(),
            involuntary: None,
            pause: Duration::ZERO,
            paused_since: None,
            clock,
        }
    }

    /// Polls `ready` for as long as the policy allows now; returns whether it polled. The
    /// caller then looks for what it waited for (it may have come meanwhile either way).
    pub(crate) fn poll(&mut self, ready: impl FnMut() -> bool) -> bool {
        let now = self.clock.raw();
        self.check_core(now, involuntary_switches);
        let window = self.window(now);
        if window.is_zero() {
            return false;
        }
        let waited = poll(&self.clock, now, window, ready);
        self.polls += 1;
        self.observe(waited);
        true
    }

    /// A wait that parked at once ended when the awaited thing was handed over `gap` after
    /// it began: tells whether a poll would have caught it.
    pub(crate) fn parked(&mut self, gap: Duration) {
        self.observe(Waited::Parked(gap));
    }

    /// How long to poll for this wait (`now` on the TSC): the limit, unless recent polls
    /// failed or the core is shared.
    fn window(&mut self, now: u64) -> Duration {
        if let Some(since) = self.paused_since {
            if self.clock.delta(since, now) < self.pause {
                return Duration::ZERO;
            }
            self.paused_since = None;
            self.checked_at = now; // the next check judges the polls made from now on
            self.polls = 0;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return Duration::ZERO;
        }
        self.limit
    }

    /// Notes how a wait ended. A poll that timed out or was preempted doubles the waits
    /// skipped; a poll that paid ends the back-off, and so does a gap seen while parked that
    /// a poll would have caught, unless the last failed poll was preempted.
    fn observe(&mut self, waited: Waited) {
        match waited {
            Waited::Came(_) => self.reset(),
            Waited::Parked(gap) if gap <= self.limit && !self.preempted => self.reset(),
            Waited::Parked(_) => {}
            Waited::TimedOut | Waited::Preempted => {
                self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
                self.skip = self.backoff;
                self.preempted = waited == Waited::Preempted;
            }
        }
    }

    fn reset(&mut self) {
        self.backoff = 0;
        self.skip = 0;
        self.preempted = false;
    }

    /// Every [`CHECK_EVERY`] (`now` on the TSC), if the thread polled meanwhile: preempted
    /// more than once per [`SHARED_POLLS`] polls, it stops polling for a pause that doubles
    /// each time, else the pause ends. `involuntary` reads the thread's count of involuntary
    /// context switches.
    fn check_core(&mut self, now: u64, involuntary: impl FnOnce() -> Option<u64>) {
        if self.limit.is_zero()
            || self.paused_since.is_some()
            || self.clock.delta(self.checked_at, now) < CHECK_EVERY
        {
            return;
        }
        self.checked_at = now;
        let count = involuntary();
        let preempted = match (self.involuntary, count) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => 0,
        };
        self.involuntary = count;
        if self.polls == 0 {
            return;
        }
        if preempted * SHARED_POLLS > self.polls {
            self.pause = (self.pause * 2).clamp(CHECK_EVERY, MAX_PAUSE);
            self.paused_since = Some(now);
        } else {
            self.pause = Duration::ZERO;
        }
        self.polls = 0;
    }
}

/// This thread's involuntary context switches (`/proc/thread-self/status`), read into a
/// stack buffer: no allocation.
fn involuntary_switches() -> Option<u64> {
    use std::io::Read;
    let mut buf = [0u8; 2048];
    let mut file = std::fs::File::open("/proc/thread-self/status").ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?;
    line.trim().parse().ok()
}

/// Polls `ready` for up to `window` from `start` on the TSC `clock` (read every
/// [`POLLS_PER_READ`] polls), noticing preemption. `Came` carries the time polled.
fn poll(
    clock: &quanta::Clock,
    start: u64,
    window: Duration,
    mut ready: impl FnMut() -> bool,
) -> Waited {
    let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    let preempted = PREEMPTED.as_nanos() as u64;
    let mut last = start;
    loop {
        let mut came = false;
        for _ in 0..POLLS_PER_READ {
            if ready() {
                came = true;
                break;
            }
            std::hint::spin_loop();
        }
        let now = clock.raw();
        if clock.delta_as_nanos(last, now) > preempted {
            return Waited::Preempted;
        }
        let polled = clock.delta_as_nanos(start, now);
        if came {
            return Waited::Came(Duration::from_nanos(polled));
        }
        if polled >= window {
            return Waited::TimedOut;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(20);

    /// Skips until the next poll; returns how many waits were skipped.
    fn skipped(w: &mut SpinWindow) -> u32 {
        let mut n = 0;
        while w.window(w.clock.raw()).is_zero() {
            n += 1;
        }
        n
    }

    #[test]
    fn polls_while_work_comes_in_time_and_backs_off_exponentially_when_not() {
        let mut w = SpinWindow::new(LIMIT);
        assert_eq!(w.window(w.clock.raw()), LIMIT);
        w.observe(Waited::Came(Duration::from_micros(3)));
        assert_eq!(w.window(w.clock.raw()), LIMIT);
        let mut backoff = Vec::new();
        for _ in 0..4 {
            w.observe(Waited::TimedOut);
            backoff.push(skipped(&mut w)); // then one probing poll
        }
        assert_eq!(backoff, [1, 2, 4, 8]);
        w.observe(Waited::Came(Duration::from_micros(5)));
        assert_eq!(skipped(&mut w), 0, "a poll that paid ends the back-off");
        for _ in 0..20 {
            w.observe(Waited::TimedOut);
        }
        assert_eq!(skipped(&mut w), MAX_BACKOFF);
    }

    #[test]
    fn a_gap_seen_while_parked_ends_the_back_off_only_if_a_poll_would_have_caught_it() {
        let mut w = SpinWindow::new(LIMIT);
        w.observe(Waited::TimedOut);
        w.parked(Duration::from_millis(1));
        assert_eq!(skipped(&mut w), 1, "a paced gap: parking was right");
        w.observe(Waited::TimedOut);
        w.parked(LIMIT);
        assert_eq!(skipped(&mut w), 0, "a burst began: poll again");
    }

    #[test]
    fn after_a_preempted_poll_short_gaps_while_parked_do_not_end_the_back_off() {
        let mut w = SpinWindow::new(LIMIT);
        w.observe(Waited::Preempted);
        w.parked(Duration::from_micros(1));
        assert_eq!(skipped(&mut w), 1, "the core may be shared: keep backing off");
        w.observe(Waited::Came(Duration::from_micros(2)));
        w.parked(Duration::from_micros(1));
        assert_eq!(skipped(&mut w), 0, "a poll that paid ended it");
    }

    #[test]
    fn a_zero_limit_never_polls() {
        let mut w = SpinWindow::new(Duration::ZERO);
        w.observe(Waited::Came(Duration::ZERO));
        assert!(!w.poll(|| true));
    }

    #[test]
    fn a_thread_preempted_often_while_polling_pauses_for_doubling_periods() {
        let (clock, mock) = quanta::Clock::mock();
        let mut w = SpinWindow::with_clock(LIMIT, clock);
        let check = |w: &mut SpinWindow, switches: u64| {
            let now = w.clock.raw();
            w.check_core(now, || Some(switches));
        };
        let tick = |d: Duration| mock.increment(d);
        check(&mut w, 100); // too early: no check yet
        tick(CHECK_EVERY);
        check(&mut w, 100); // the first reading: a baseline
        w.polls = 80;
        tick(CHECK_EVERY);
        check(&mut w, 105);
        assert_eq!(w.window(w.clock.raw()), LIMIT, "5 preemptions in 80 polls: a core of its own");
        w.polls = 80;
        tick(CHECK_EVERY);
        check(&mut w, 125);
        assert_eq!(w.window(w.clock.raw()), Duration::ZERO, "20 in 80: shared, pause");
        tick(CHECK_EVERY / 2);
        assert_eq!(w.window(w.clock.raw()), Duration::ZERO, "still paused");
        tick(CHECK_EVERY / 2);
        assert_eq!(w.window(w.clock.raw()), LIMIT, "the pause is over: poll again");
        w.polls = 10;
        tick(CHECK_EVERY);
        check(&mut w, 135);
        tick(CHECK_EVERY);
        assert_eq!(w.window(w.clock.raw()), Duration::ZERO, "shared again: twice as long");
        tick(CHECK_EVERY);
        assert_eq!(w.window(w.clock.raw()), LIMIT);
        tick(CHECK_EVERY);
        check(&mut w, 135);
        assert_eq!(w.pause, CHECK_EVERY * 2, "no polls since the pause: nothing to judge");
    }

    #[test]
    fn poll_reports_arrival_or_timeout() {
        let clock = quanta::Clock::new();
        let now = clock.raw();
        assert!(matches!(poll(&clock, now, LIMIT, || true), Waited::Came(_)));
        let ended = poll(&clock, clock.raw(), Duration::from_micros(50), || false);
        assert!(matches!(ended, Waited::TimedOut | Waited::Preempted));
    }

    #[test]
    fn this_threads_involuntary_switches_can_be_read() {
        assert!(involuntary_switches().is_some());
    }
}
