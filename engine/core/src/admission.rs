//! Connection admission: the connection cap, the descriptor limit, and recovery when the
//! process runs out of descriptors. Each parser thread owns one [`Admission`] and takes
//! every new connection through [`Admission::try_accept`].
//!
//! Past the cap (`Limits::max_connections`, shared by all parser threads), a new connection
//! gets one error in its listener's dialect and is closed, lingering (the parser thread
//! discards its input until its end of stream, so no reset destroys the error). When `accept` fails with
//! `EMFILE`/`ENFILE`, the thread gives up its reserve descriptor, accepts, answers the same
//! kind of error and shuts the socket down, so the listener's queue keeps draining and no
//! client waits on a backlog that nobody reads. The refused socket itself becomes the new
//! reserve: its descriptor is never free for another thread's `accept` to take (a client
//! that sees the refusal and reconnects at once would otherwise race the reopening). The
//! threads also learn the open-connection count at which descriptors ran out (shared, in
//! `Stats::fd_cap`) and refuse at it from then on, so a descriptor freed for a reserve is
//! never taken by a connection that stays, only by a refusal that gives it back.
//! Readiness is edge-triggered: if a thread still cannot accept (its reserve was lost), a
//! retry timer ([`Admission::retry_in`]) brings it back to the listeners instead of
//! waiting for an edge that may never come. Warnings are rate-limited.
//!
//! Runs on the parser thread; never blocks (the error is one non-blocking write to a fresh
//! socket, whose buffer always has room for it).

use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ooblane_wire::CommandError;
use ooblane_wire::Dialect;
use ooblane_wire::reply::{self, Form};

use crate::conn::Stream;
use crate::listener::Listener;
use crate::stats::Stats;

/// How soon a thread that could not accept (its reserve was taken by another thread's
/// `accept` in the moment it was free) tries again: clients in its queue wait this long,
/// and the timer runs only while the thread is stuck, so short is cheap.
const RETRY_EVERY: Duration = Duration::from_millis(10);
/// At most one warning of each kind per thread per this interval; the ones in between are
/// counted and reported with the next.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// Descriptors the default cap leaves for the engine's own use (listeners, polls, wakers,
/// reserves, standard streams, logs) at the smallest limits.
const MIN_HEADROOM: u64 = 64;
/// The default cap leaves 1/HEADROOM_FRACTION of the limit free at large limits.
const HEADROOM_FRACTION: u64 = 16;
/// Used as the hard limit when the hard limit is "unlimited" (Linux's default `nr_open`;
/// asking for more fails).
const UNLIMITED_NOFILE: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a server should not stop at the
/// default 1024) and returns the soft limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(UNLIMITED_NOFILE);
    let soft = limit.current.unwrap_or(UNLIMITED_NOFILE);
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: limit.maximum }) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the descriptor limit");
            soft
        }
    }
}

/// The default connection cap for a descriptor limit: below it by a headroom for the
/// engine's own descriptors, so the cap, not `EMFILE`, is what clients normally meet.
pub(crate) fn default_max_connections(fd_limit: u64) -> usize {
    let headroom = MIN_HEADROOM.max(fd_limit / HEADROOM_FRACTION);
    usize::try_from(fd_limit.saturating_sub(headroom).max(1)).unwrap_or(usize::MAX)
}

/// A connection taken from a listener.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// To be served.
    Serve(Stream),
    /// Refused at the cap: its error is written and its FIN sent; the parser thread keeps it
    /// for a lingering close (it may hold input already, and closing it now would reset it,
    /// destroying the error). It does not count as an open connection.
    Refused(Stream),
}

/// Why a connection is refused (its error's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// At `max_connections`.
    Cap(usize),
    /// The process is out of descriptors (`EMFILE`/`ENFILE`).
    NoDescriptors,
}

impl Refusal {
    fn describe(self) -> String {
        match self {
            Refusal::Cap(limit) => format!("too many connections (limit {limit})"),
            Refusal::NoDescriptors => "too many connections (out of file descriptors)".into(),
        }
    }
}

/// What giving up the reserve for one `accept` achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spent {
    /// A connection was refused (or went away): accept the next.
    Refused,
    /// Nobody was waiting; the reserve is back.
    Empty,
    /// No descriptor to accept with (no reserve, or another thread took the one freed):
    /// retry on the timer.
    Stuck,
}

/// One kind of warning, logged at most once per [`WARN_EVERY`].
#[derive(Debug, Default)]
struct Warning {
    last: Option<Instant>,
    /// Occurrences since the last one logged.
    folded: u64,
}

impl Warning {
    /// Counts an occurrence; returns how many to report if a warning is due now.
    fn due(&mut self) -> Option<u64> {
        self.folded += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.folded))
    }
}

/// A descriptor held only so that it can be given up to accept one more connection.
#[derive(Debug)]
enum Spare {
    /// `/dev/null`, opened at start or by the retry timer.
    File(#[allow(dead_code, reason = "held for its descriptor")] File),
    /// A refused connection, shut down (the client has its error and end of stream).
    Socket(#[allow(dead_code, reason = "held for its descriptor")] Stream),
}

/// One parser thread's admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Open connections (all threads) at which new ones are refused.
    max_connections: usize,
    /// Given up to accept-and-refuse when the process has no descriptor left. `None` when
    /// another thread took the descriptor freed for it (refusals and the timer refill it).
    reserve: Option<Spare>,
    /// Set while a listener may hold connections this thread could not accept.
    retry_at: Option<Instant>,
    /// The refusal line being written (reused).
    scratch: Vec<u8>,
    refused_cap: Warning,
    refused_fds: Warning,
    accept_failed: Warning,
}

impl Admission {
    pub(crate) fn new(max_connections: usize) -> Admission {
        Admission {
            max_connections,
            reserve: open_reserve(),
            retry_at: None,
            scratch: Vec::new(),
            refused_cap: Warning::default(),
            refused_fds: Warning::default(),
            accept_failed: Warning::default(),
        }
    }

    /// The next connection from `listener` to serve, refusing those past the cap or past the
    /// descriptor limit on the way. `None`: nothing more to accept now (the queue is empty,
    /// or this thread is out of descriptors and will retry after [`Admission::retry_in`]).
    pub(crate) fn try_accept(&mut self, listener: &Listener, stats: &Stats) -> Option<Admitted> {
        loop {
            let open = open_connections(stats);
            match listener.accept() {
                Ok(mut stream) if open >= self.max_connections => {
                    let why = Refusal::Cap(self.max_connections);
                    if self.reserve.is_some() {
                        self.answer_refusal(&mut stream, listener.dialect, why);
                        let _ = stream.shutdown_write();
                        return Some(Admitted::Refused(stream));
                    }
                    self.refuse(stream, listener.dialect, why);
                }
                Ok(stream) if open >= stats.fd_cap.load(Ordering::Relaxed) => {
                    self.refuse(stream, listener.dialect, Refusal::NoDescriptors);
                }
                Ok(stream) => return Some(Admitted::Serve(stream)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if is_transient(&e) => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    // Less one per parser thread: room for reserves once clients close.
                    let cap = open.saturating_sub(stats.threads.len());
                    stats.fd_cap.fetch_min(cap, Ordering::Relaxed);
                    match self.refuse_with_reserve(listener) {
                        Spent::Refused => {}
                        Spent::Empty => return None,
                        Spent::Stuck => {
                            self.schedule_retry(&e);
                            return None;
                        }
                    }
                }
                Err(e) => {
                    self.schedule_retry(&e);
                    return None;
                }
            }
        }
    }

    /// Time until the listeners should be tried again, if a retry is pending.
    pub(crate) fn retry_in(&self) -> Option<Duration> {
        self.retry_at.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the retry is due now; if so it is taken (the caller accepts on every
    /// listener, which schedules another if still needed) and the reserve is reopened.
    pub(crate) fn take_due_retry(&mut self) -> bool {
        if self.retry_at.is_none_or(|at| Instant::now() < at) {
            return false;
        }
        self.retry_at = None;
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
        true
    }

    /// Out of descriptors: frees the reserve for one `accept` and refuses what it got (which
    /// becomes the reserve).
    fn refuse_with_reserve(&mut self, listener: &Listener) -> Spent {
        if self.reserve.take().is_none() {
            return Spent::Stuck;
        }
        let spent = match listener.accept() {
            Ok(stream) => {
                self.refuse(stream, listener.dialect, Refusal::NoDescriptors);
                return Spent::Refused;
            }
            // `accept` reserves a descriptor before it looks at the queue, so `EMFILE` does
            // not mean that a client waits: often none does.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Spent::Empty,
            Err(e) if is_transient(&e) => Spent::Refused,
            Err(_) => Spent::Stuck,
        };
        self.reserve = open_reserve();
        if self.reserve.is_none() { Spent::Stuck } else { spent }
    }

    /// Answers one error in the listener's dialect and shuts the connection down; keeps
    /// its descriptor as the reserve if the reserve is missing, else closes it.
    fn refuse(&mut self, mut stream: Stream, dialect: Dialect, why: Refusal) {
        self.answer_refusal(&mut stream, dialect, why);
        let _ = match &stream {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
        if self.reserve.is_none() {
            self.reserve = Some(Spare::Socket(stream));
        }
    }

    /// Writes the refusal's error in the listener's dialect and counts the warning.
    fn answer_refusal(&mut self, stream: &mut Stream, dialect: Dialect, why: Refusal) {
        let err = CommandError::generic(why.describe());
        self.scratch.clear();
        match dialect {
            Dialect::Qmp => reply::error(&mut self.scratch, Form::Qmp, &err, b""),
            Dialect::JsonRpc => reply::error(&mut self.scratch, Form::Rpc1, &err, b"null"),
        }
        // A fresh socket's send buffer takes a line; if not, the client gets only the close.
        let _ = stream.write(&self.scratch);
        let warning = match why {
            Refusal::Cap(_) => &mut self.refused_cap,
            Refusal::NoDescriptors => &mut self.refused_fds,
        };
        if let Some(count) = warning.due() {
            tracing::warn!(count, reason = %why.describe(), "connections refused");
        }
    }

    fn schedule_retry(&mut self, error: &io::Error) {
        self.retry_at = Some(Instant::now() + RETRY_EVERY);
        if let Some(count) = self.accept_failed.due() {
            tracing::warn!(%error, count, "accept failed; retrying on a timer");
        }
    }
}

/// Open connections across all parser threads. Each thread checks it before admitting, so
/// concurrent accepts may overshoot the cap by at most one per parser thread.
fn open_connections(stats: &Stats) -> usize {
    let open: u64 = stats
        .threads
        .iter()
        .map(|t| {
            // `closed` first: both are bumped by the thread that owns them, so this never
            // sees more closed than accepted.
            let closed = t.closed.load(Ordering::Relaxed);
            t.accepted.load(Ordering::Relaxed).saturating_sub(closed)
        })
        .sum();
    usize::try_from(open).unwrap_or(usize::MAX)
}

fn open_reserve() -> Option<Spare> {
    File::open("/dev/null").ok().map(Spare::File)
}

/// `EMFILE` (this process) or `ENFILE` (the whole system).
fn is_out_of_descriptors(e: &io::Error) -> bool {
    let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
    matches!(errno, Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE))
}

/// Errors about one connection that went away before it was accepted: try the next.
fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_headroom_below_the_limit() {
        assert_eq!(default_max_connections(1024), 960);
        assert_eq!(default_max_connections(20_000), 18_750);
        assert_eq!(default_max_connections(10), 1);
    }

    #[test]
    fn warnings_are_folded_within_the_interval() {
        let mut warning = Warning::default();
        assert_eq!(warning.due(), Some(1));
        assert_eq!(warning.due(), None);
        assert_eq!(warning.due(), None);
        warning.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(warning.due(), Some(3), "the two folded ones and this one");
    }

    #[test]
    fn refusals_describe_the_limit() {
        assert_eq!(Refusal::Cap(960).describe(), "too many connections (limit 960)");
        let out_of_fds = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_out_of_descriptors(&out_of_fds));
        assert!(!is_out_of_descriptors(&io::Error::from(ErrorKind::WouldBlock)));
    }
}
