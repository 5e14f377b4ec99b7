//! What crosses between threads: jobs to the executor, and inbox messages back to a parser
//! thread, with the wake-up protocol that lets the executor wake a thread only if it sleeps.
//!
//! Parser threads send [`Job`]s with `try_send` (a full queue hands the job back; it is
//! parked, never dropped). The executor delivers to a [`Mailbox`] per parser thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::registry::{Call, Event, Outcome};

/// A connection within one parser thread: slab key plus a serial that is never reused, so a
/// reply for a connection that has since closed cannot reach its successor in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

/// Work for the executor, tagged with where the answer goes.
pub(crate) struct Job<S, V> {
    /// Index of the parser thread that sent it.
    pub(crate) thread: usize,
    pub(crate) conn: ConnId,
    /// When the parser thread queued (or parked) it: start of the queue-wait measurement.
    pub(crate) enqueued: Instant,
    pub(crate) work: Work<S, V>,
}

/// What the executor is asked to do.
pub(crate) enum Work<S, V> {
    /// Run a decoded in-band command and reply.
    Call(Call<S, V>),
    /// Emit an event to every session (from `ServerHandle::emit_event`).
    Emit(Event),
    /// Begin graceful shutdown, in order after everything queued before it.
    Shutdown(&'static str),
    /// A parser thread has drained and exited; the executor exits after the last one.
    ParserDone,
}

impl<S, V> std::fmt::Debug for Job<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.work {
            Work::Call(_) => "Call",
            Work::Emit(_) => "Emit",
            Work::Shutdown(_) => "Shutdown",
            Work::ParserDone => "ParserDone",
        };
        f.debug_struct("Job").field("thread", &self.thread).field("work", &kind).finish()
    }
}

/// What the executor sends back to a parser thread.
#[derive(Debug)]
pub(crate) enum Inbox {
    /// The outcome of a connection's oldest in-flight in-band request.
    Reply { conn: ConnId, outcome: Outcome },
    /// An event for every negotiated session of the thread.
    Event(Arc<Event>),
    /// Stop accepting and reading, answer what was read, then exit.
    Shutdown,
}

/// A parser thread's reply queue plus what the executor needs to wake it.
#[derive(Debug)]
pub(crate) struct Mailbox {
    tx: Sender<Inbox>,
    /// The thread is (about to be) blocked in `epoll_wait`. Set by the thread just before it
    /// sleeps, cleared by whoever wakes it: at most one wake-up syscall per sleep.
    sleeping: AtomicBool,
    /// The thread found the job queue full and parked jobs; wake it when there is room.
    needs_space: AtomicBool,
    waker: mio::Waker,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker) -> (Mailbox, Receiver<Inbox>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Mailbox {
            tx,
            sleeping: AtomicBool::new(false),
            needs_space: AtomicBool::new(false),
            waker,
        };
        (mailbox, rx)
    }

    /// Queues a message without waking (see [`Mailbox::wake_if_sleeping`]).
    pub(crate) fn deliver(&self, message: Inbox) {
        // The receiver lives as long as the parser thread, which outlives every job it sent.
        let _ = self.tx.send(message);
    }

    /// Executor side, after delivering: wakes the thread only if it sleeps.
    pub(crate) fn wake_if_sleeping(&self) {
        // Pairs with the fence in `try_sleep`: either the thread sees our message before it
        // sleeps, or we see its `sleeping` flag and wake it.
        fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Parser side, before blocking: returns false (stay awake) if messages are waiting.
    pub(crate) fn try_sleep(&self, rx: &Receiver<Inbox>) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if rx.is_empty() {
            return true;
        }
        self.sleeping.store(false, Ordering::SeqCst);
        false
    }

    /// Parser side, after waking.
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Parser side: the job queue was full.
    pub(crate) fn want_space(&self) {
        self.needs_space.store(true, Ordering::Release);
    }

    /// Executor side, after a batch freed queue space.
    pub(crate) fn wake_if_waiting_for_space(&self) {
        if self.needs_space.swap(false, Ordering::AcqRel) {
            self.sleeping.store(false, Ordering::SeqCst);
            self.wake();
        }
    }

    /// Unconditional wake (shutdown, space).
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake a parser thread");
        }
    }
}
