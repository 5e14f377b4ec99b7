//! The executor thread: runs in-band jobs one at a time, in the order the queue delivers
//! them, and owns the state `S`. This is the only ordered part of the engine.
//!
//! It never parses or encodes JSON and never touches a socket: it calls a decoded job's
//! boxed function, delivers the typed outcome to the sending parser thread's mailbox, and
//! wakes that thread only if it sleeps. It drains the queue in batches; statistics are
//! published at most every `PUBLISH_EVERY`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::job::{Inbox, Job, Mailbox, Work};
use crate::registry::{CommandError, Ctx, Effects, Event, Exec, ServerInfo};
use crate::stats::{ExecutorHistograms, PUBLISH_EVERY, Stats};

/// Jobs taken per batch before publishing statistics and waking threads that wait for
/// queue space: bounds how long those wake-ups are deferred under a constant stream.
const BATCH: usize = 256;

/// Runs a handler; a panic becomes an error reply instead of killing the thread (and with
/// it every later request). The state may be left half-updated by the panicking handler:
/// the error says so.
pub(crate) fn contain_panic<T>(
    handler: impl FnOnce() -> Result<T, CommandError>,
) -> Result<T, CommandError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = why, "a command handler panicked");
        Err(CommandError::generic(format!("the command failed internally (panic: {why})")))
    })
}

/// The executor and everything it owns.
pub(crate) struct Executor<S, V> {
    state: S,
    shared: Arc<V>,
    rx: Receiver<Job<S, V>>,
    mailboxes: Arc<[Mailbox]>,
    stats: Arc<Stats>,
    info: Arc<ServerInfo>,
    /// Parser threads that have not yet reported `ParserDone`.
    parsers_left: usize,
    shutting_down: bool,
    /// Private latency histograms, folded into `stats` every `PUBLISH_EVERY`.
    local: ExecutorHistograms,
    last_publish: Instant,
}

impl<S, V> Executor<S, V> {
    pub(crate) fn new(
        state: S,
        shared: Arc<V>,
        rx: Receiver<Job<S, V>>,
        mailboxes: Arc<[Mailbox]>,
        stats: Arc<Stats>,
        info: Arc<ServerInfo>,
    ) -> Self {
        let parsers_left = mailboxes.len();
        Executor {
            state,
            shared,
            rx,
            mailboxes,
            stats,
            info,
            parsers_left,
            shutting_down: false,
            local: ExecutorHistograms::new(),
            last_publish: Instant::now(),
        }
    }

    /// Runs until every parser thread has drained and exited.
    pub(crate) fn run(mut self) {
        while self.parsers_left > 0 {
            let Some(first) = self.next_job() else { break };
            self.stats.queue_depth.store(self.rx.len(), Ordering::Relaxed);
            self.handle(first);
            for _ in 1..BATCH {
                match self.rx.try_recv() {
                    Ok(job) => self.handle(job),
                    Err(_) => break,
                }
            }
            self.end_batch();
        }
        self.publish();
        tracing::debug!("executor exits");
    }

    /// Waits for the next job. While some jobs are not published yet, waits at most until
    /// their publication is due, so the last jobs before a quiet spell still reach
    /// `query-stats` and the metrics endpoint.
    fn next_job(&mut self) -> Option<Job<S, V>> {
        loop {
            if self.local.jobs == 0 {
                return self.rx.recv().ok();
            }
            let due = PUBLISH_EVERY.saturating_sub(self.last_publish.elapsed());
            match self.rx.recv_timeout(due) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Timeout) => self.publish(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn handle(&mut self, job: Job<S, V>) {
        match job.work {
            Work::Call(call) => {
                let started = Instant::now();
                self.stats.set_busy(Some(started));
                let mut effects = Effects::default();
                let outcome = {
                    let ctx = Ctx { shared: &*self.shared, stats: &self.stats, info: &self.info };
                    let mut exec = Exec { state: &mut self.state, ctx, effects: &mut effects };
                    contain_panic(|| call(&mut exec))
                };
                self.stats.set_busy(None);
                self.local.record(started - job.enqueued, started.elapsed());
                for event in effects.events {
                    self.broadcast(event);
                }
                let mailbox = &self.mailboxes[job.thread];
                mailbox.deliver(Inbox::Reply { conn: job.conn, outcome });
                mailbox.wake_if_sleeping();
                if let Some(reason) = effects.shutdown {
                    self.begin_shutdown(reason);
                }
            }
            Work::Emit(event) => self.broadcast(event),
            Work::Shutdown(reason) => self.begin_shutdown(reason),
            Work::ParserDone => self.parsers_left -= 1,
        }
    }

    fn broadcast(&self, event: Event) {
        let event = Arc::new(event);
        for mailbox in self.mailboxes.iter() {
            mailbox.deliver(Inbox::Event(Arc::clone(&event)));
            mailbox.wake_if_sleeping();
        }
    }

    /// Sends `SHUTDOWN` to every session, then tells every parser thread to drain.
    fn begin_shutdown(&mut self, reason: &'static str) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(reason, "shutting down");
        let data = serde_json::json!({ "guest": false, "reason": reason });
        self.broadcast(Event::now("SHUTDOWN".into(), Some(data)));
        for mailbox in self.mailboxes.iter() {
            mailbox.deliver(Inbox::Shutdown);
            mailbox.wake();
        }
    }

    fn end_batch(&mut self) {
        for mailbox in self.mailboxes.iter() {
            mailbox.wake_if_waiting_for_space();
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.local.drain_into(&mut self.stats.executor.lock());
        self.last_publish = Instant::now();
    }
}
