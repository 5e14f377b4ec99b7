//! Live counters a progress display can read while a run is going.
//!
//! Driver threads add their deltas a few times per second (not per request), so the
//! atomics cost nothing on the send path. The binary's progress bar polls them; the library
//! never prints.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Establishing sessions.
    Connecting = 0,
    /// Sending, not recording.
    Warmup = 1,
    /// Sending and recording.
    Measuring = 2,
    /// Waiting for the last replies.
    Draining = 3,
    /// Finished.
    Done = 4,
}

/// Counters shared between the driver threads and an observer.
#[derive(Debug, Default)]
pub struct LiveStats {
    phase: AtomicU8,
    sent: AtomicU64,
    replies: AtomicU64,
    bad: AtomicU64,
    reconnects: AtomicU64,
}

/// A consistent-enough copy of [`LiveStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSnapshot {
    /// Current phase.
    pub phase: Phase,
    /// Requests sent so far.
    pub sent: u64,
    /// Replies received so far.
    pub replies: u64,
    /// Error replies, failed requests and protocol violations so far.
    pub bad: u64,
    /// Sessions lost so far.
    pub reconnects: u64,
}

impl LiveStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> LiveSnapshot {
        let phase = match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Connecting,
            1 => Phase::Warmup,
            2 => Phase::Measuring,
            3 => Phase::Draining,
            _ => Phase::Done,
        };
        LiveSnapshot {
            phase,
            sent: self.sent.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            bad: self.bad.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::Relaxed);
    }

    /// Adds a driver thread's progress since its last call.
    pub(crate) fn add(&self, delta: LiveSnapshot) {
        self.sent.fetch_add(delta.sent, Ordering::Relaxed);
        self.replies.fetch_add(delta.replies, Ordering::Relaxed);
        self.bad.fetch_add(delta.bad, Ordering::Relaxed);
        self.reconnects.fetch_add(delta.reconnects, Ordering::Relaxed);
    }
}
