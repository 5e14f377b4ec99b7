//! Microsecond wake-ups for the driver's event loop: a `timerfd` registered in mio.
//!
//! epoll's own timeout has millisecond resolution (and mio rounds up), which would quantise
//! every send to 1 ms like wrk2. A timerfd fires at a nanosecond deadline, so the loop sleeps
//! in `epoll_wait` until the next intended send without spinning, keeping loadgen's CPU use
//! low on a machine shared with the server. The kernel still delays expiries by the thread's
//! timer slack (50 µs by default), so driver threads set their slack to 1 ns with
//! [`tighten_slack`]. Virtual machines add their own wake-up latency (about 50 µs on the
//! development VM); the driver learns it from [`Timer::clear`]'s lateness, arms the timer
//! that much early and spins the remainder (see `driver`). Owned by one driver thread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// Sets the calling thread's timer slack to the minimum (1 ns); call on the driver thread.
pub(crate) fn tighten_slack() {
    if let Err(e) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1)) {
        tracing::debug!(error = %e, "cannot set timer slack; sends may lag by up to 50 µs");
    }
}

/// A one-shot monotonic timer that makes the poll readable at its deadline.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
    /// The deadline the kernel timer is armed for, if any (skips redundant re-arming).
    armed: Option<Instant>,
}

impl Timer {
    /// Creates the timerfd and registers it under `token`.
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd, armed: None })
    }

    /// Arms the timer for `deadline` (relative to `now`; at least 1 ns, as 0 would disarm).
    pub(crate) fn arm(&mut self, deadline: Instant, now: Instant) -> io::Result<()> {
        if self.armed == Some(deadline) {
            return Ok(());
        }
        let delay = deadline.saturating_duration_since(now).max(Duration::from_nanos(1));
        let value = Timespec { tv_sec: delay.as_secs() as _, tv_nsec: delay.subsec_nanos() as _ };
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let spec = Itimerspec { it_interval: zero, it_value: value };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed = Some(deadline);
        Ok(())
    }

    /// Consumes an expiry after the timer's readable event; returns how late the wake-up
    /// came (`now` − armed deadline).
    pub(crate) fn clear(&mut self, now: Instant) -> Option<Duration> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        self.armed.take().map(|armed| now.saturating_duration_since(armed))
    }
}
