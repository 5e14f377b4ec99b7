//! The executor thread: runs in-band jobs one at a time, in the order the queue delivers
//! them, and owns the state `S`. This is the only ordered part of the engine.
//!
//! It never parses or encodes JSON and never touches a socket. It takes a parser thread's
//! turn of jobs as one [`Batch`], runs each call, and makes each outcome visible in the
//! sending thread's mailbox at once; it wakes that thread only if it sleeps, before running
//! the next job (so a slow job never holds replies already computed) and at the end of the
//! batch: at most one wake-up per sleep.
//!
//! Waiting for work: it polls the batch queue and parks its thread (`Doorbell`), so senders
//! wake it only when it sleeps and nothing spins or yields inside the queue. With a core of
//! its own it polls before parking for a window adapted to the recent gaps between batches
//! (`idle::SpinWindow`, at most `Config::spin`): a steady stream of turns then costs no
//! wake-up, while an idle or paced engine parks at once. Calls are timed by TSC reads
//! (`quanta`), anchored to the monotonic clock once per round. Statistics are published at
//! most every `PUBLISH_EVERY`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use ooblane_wire::{CommandError, Event};

use crate::call::BoxedCall;
use crate::exec::{Ctx, Effects, Exec, ServerInfo};
use crate::idle::SpinWindow;
use crate::job::{Arrival, Batch, ConnId, Done, Exchange, Job, Work};
use crate::parked::{Admitted, Parked, ReplicatedLane};
use crate::registry::ShutdownHook;
use crate::replication::{LoggedCommand, Proposal, ToExecutor};
use crate::stats::{ExecutorHistograms, PUBLISH_EVERY, Stats};

/// Batches taken before ending the round (waking waiting threads, publishing statistics):
/// bounds how long those are deferred under a constant stream.
const BATCHES_PER_ROUND: usize = 64;

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
    rx: Receiver<Batch<S, V>>,
    exchange: Arc<Exchange<S, V>>,
    stats: Arc<Stats>,
    info: Arc<ServerInfo>,
    /// How long to poll an empty queue before parking, from the recent gaps between batches
    /// (never, unless it has a core of its own).
    spin: SpinWindow,
    /// Times calls: raw TSC reads, converted only for the deltas (`clock_gettime` per call
    /// was 3% of the executor's time under pipelined load).
    clock: quanta::Clock,
    /// The monotonic time and the TSC read together at the start of the round: a call's
    /// start is the anchor plus the TSC delta, so timing a call reads no clock.
    anchor: (Instant, u64),
    /// Threads with outcomes delivered since they were last considered for a wake-up.
    unwoken: Vec<usize>,
    /// Runs when shutdown begins here (e.g. releases a blocking command queued behind `quit`).
    on_shutdown: Option<ShutdownHook<V>>,
    /// Parser threads that have not yet reported `ParserDone`.
    parsers_left: usize,
    shutting_down: bool,
    /// Private latency histograms, folded into `stats` every `PUBLISH_EVERY`.
    local: ExecutorHistograms,
    last_publish: Instant,
    /// Durable and cluster modes: replicated calls waiting for their entry.
    log: Option<ReplicatedLane<S, V>>,
}

impl<S, V> Executor<S, V> {
    pub(crate) fn new(
        state: S,
        shared: Arc<V>,
        rx: Receiver<Batch<S, V>>,
        exchange: Arc<Exchange<S, V>>,
        stats: Arc<Stats>,
        info: Arc<ServerInfo>,
    ) -> Self {
        let parsers_left = exchange.mailboxes().len();
        let clock = quanta::Clock::new();
        let anchor = (Instant::now(), clock.raw());
        Executor {
            state,
            shared,
            rx,
            exchange,
            stats,
            info,
            spin: SpinWindow::new(Duration::ZERO),
            clock,
            anchor,
            unwoken: Vec::with_capacity(parsers_left),
            on_shutdown: None,
            parsers_left,
            shutting_down: false,
            local: ExecutorHistograms::new(),
            last_publish: Instant::now(),
            log: None,
        }
    }

    /// Durable and cluster modes: replicated calls go through the log.
    pub(crate) fn with_log(mut self, log: Option<ReplicatedLane<S, V>>) -> Self {
        self.log = log;
        self
    }

    /// The registry's shutdown hook, run when shutdown begins on the executor.
    pub(crate) fn with_shutdown_hook(mut self, hook: Option<ShutdownHook<V>>) -> Self {
        self.on_shutdown = hook;
        self
    }

    /// Lets the executor poll for up to `spin` before parking: only when it has a core of
    /// its own.
    pub(crate) fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = SpinWindow::new(spin);
        self
    }

    /// Runs until every parser thread has drained and exited.
    pub(crate) fn run(mut self) {
        self.exchange.doorbell().register();
        while self.parsers_left > 0 {
            let Some(first) = self.next_batch() else { break };
            self.run_batch(first);
            for _ in 1..BATCHES_PER_ROUND {
                match self.rx.try_recv() {
                    Ok(batch) => self.run_batch(batch),
                    Err(_) => break,
                }
            }
            self.end_round();
        }
        self.publish();
        tracing::debug!("executor exits");
    }

    /// The next batch, and a new anchor for the round's timing. With the queue empty it
    /// polls for the window the idle policy allows, then parks until a batch comes; how the
    /// wait ended tunes the policy. `None` once every sender is gone.
    fn next_batch(&mut self) -> Option<Batch<S, V>> {
        let batch = match self.rx.try_recv() {
            Ok(batch) => Some(batch),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => self.wait(),
        };
        self.anchor = (Instant::now(), self.clock.raw());
        batch
    }

    /// Waits for the next batch: polls if the idle policy says so, then parks.
    fn wait(&mut self) -> Option<Batch<S, V>> {
        let rx = &self.rx;
        if self.spin.poll(|| !rx.is_empty()) {
            return self.wait_for_batch(); // at once if the batch came
        }
        // Parked at once: when the next batch was handed over says whether a poll would
        // have caught it.
        let idle_since = Instant::now();
        let batch = self.wait_for_batch();
        if let Some(batch) = &batch {
            self.spin.parked(batch.sent.saturating_duration_since(idle_since));
        }
        batch
    }

    /// Parks until a batch comes. While some jobs are not published yet, wakes at the latest
    /// when their publication is due, so the last jobs before a quiet spell still reach
    /// `query-stats` and the metrics endpoint.
    fn wait_for_batch(&mut self) -> Option<Batch<S, V>> {
        loop {
            match self.rx.try_recv() {
                Ok(batch) => return Some(batch),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let due = (self.local.jobs > 0)
                .then(|| PUBLISH_EVERY.saturating_sub(self.last_publish.elapsed()));
            if due.is_some_and(|due| due.is_zero()) {
                self.publish();
                continue;
            }
            let doorbell = self.exchange.doorbell();
            if doorbell.try_sleep(|| self.rx.is_empty()) {
                match due {
                    Some(due) => std::thread::park_timeout(due),
                    None => std::thread::park(),
                }
            }
            doorbell.awake();
        }
    }

    fn run_batch(&mut self, mut batch: Batch<S, V>) {
        let thread = batch.thread;
        let jobs = batch.jobs.len();
        self.exchange.dequeued(jobs);
        for (i, job) in batch.jobs.drain(..).enumerate() {
            let depth = self.exchange.queued() + (jobs - i - 1);
            self.stats.queue_depth.store(depth, Ordering::Relaxed);
            self.wake_sleepers();
            self.handle(thread, batch.sent, job);
        }
        self.exchange.mailbox(thread).return_vec(batch.jobs);
    }

    fn handle(&mut self, thread: usize, sent: Instant, job: Job<S, V>) {
        let job = match &mut self.log {
            Some(log) => match log.admit(thread, sent, job) {
                Admitted::RunNow(job) => job,
                Admitted::Parked => return,
            },
            None => job,
        };
        self.handle_now(thread, sent, job);
    }

    fn handle_now(&mut self, thread: usize, sent: Instant, job: Job<S, V>) {
        match job.work {
            Work::Call(call) => self.call(thread, sent, job.conn, call),
            Work::Emit(event) => self.broadcast(*event),
            Work::Shutdown(reason) => self.begin_shutdown(reason),
            Work::ParserDone => self.parsers_left -= 1,
            Work::Replica(message) => self.replica(*message),
        }
    }

    fn call(&mut self, thread: usize, sent: Instant, conn: ConnId, mut call: BoxedCall<S, V>) {
        let effects = self.run_call(sent, &mut call);
        self.finish_call(thread, conn, call, effects);
    }

    /// Runs a call's handler on the state, keeping its outcome in the call.
    fn run_call(&mut self, sent: Instant, call: &mut BoxedCall<S, V>) -> Effects {
        let started_raw = self.clock.raw();
        let started = self.anchor.0 + self.clock.delta(self.anchor.1, started_raw);
        self.stats.set_busy(Some(started));
        let (ran, effects) = self.with_exec(|exec| {
            call.run(exec);
            Ok(())
        });
        if let Err(err) = ran {
            call.fail(err);
        }
        self.stats.set_busy(None);
        let service = self.clock.delta(started_raw, self.clock.raw());
        self.local.record(started.saturating_duration_since(sent), service);
        effects
    }

    /// Runs a handler on the state (a panic contained), with the effects it asked for.
    fn with_exec(
        &mut self,
        handler: impl FnOnce(&mut Exec<'_, S, V>) -> Result<(), CommandError>,
    ) -> (Result<(), CommandError>, Effects) {
        let mut effects = Effects::default();
        let ctx = Ctx { shared: &*self.shared, stats: &self.stats, info: &self.info };
        let mut exec = Exec { state: &mut self.state, ctx, effects: &mut effects };
        let ran = contain_panic(|| handler(&mut exec));
        (ran, effects)
    }

    /// Answers a call that has run: its events first, then its outcome, then the shutdown it
    /// asked for.
    fn finish_call(
        &mut self,
        thread: usize,
        conn: ConnId,
        call: BoxedCall<S, V>,
        effects: Effects,
    ) {
        for event in effects.events {
            self.broadcast(event);
        }
        self.exchange.mailbox(thread).deliver(Done { conn, call });
        if !self.unwoken.contains(&thread) {
            self.unwoken.push(thread);
        }
        if let Some(reason) = effects.shutdown {
            self.begin_shutdown(reason);
        }
    }

    /// A message from the replicated log (durable and cluster modes only).
    fn replica(&mut self, message: ToExecutor) {
        let Some(log) = &mut self.log else { return };
        match message {
            ToExecutor::Apply { entries, position, done } => {
                for proposal in entries {
                    self.apply(proposal);
                }
                if let Some(log) = &mut self.log {
                    log.position = position;
                }
                done(());
            }
            ToExecutor::Refuse { first_seq, count, verdict } => {
                log.refuse(first_seq, count, &verdict);
            }
            ToExecutor::ReadDone { barrier, result } => log.read_done(barrier, result),
            ToExecutor::AdminDone { ticket, result } => log.admin_done(ticket, result),
            ToExecutor::Save { done } => {
                let saved = (log.snapshots.save)(&self.state);
                done(saved.map(|state| (state, log.position.clone())));
            }
            ToExecutor::Install { state, position, done } => {
                let restored = (log.snapshots.restore)(&state, &self.shared);
                let installed = restored.map(|state| {
                    self.state = state;
                    log.position = position;
                    // Entries the snapshot covers are never applied one by one: a waiting
                    // call may be in it or not (later ones are replayed if they come).
                    log.forget_waiting("this member caught up from a snapshot");
                });
                done(installed);
            }
        }
        self.answer_parked();
    }

    /// Applies one committed proposal: this run's waiting calls run themselves (their replies
    /// wait their turn); any other command is replayed from the log.
    fn apply(&mut self, proposal: Proposal) {
        if self.log.is_none() {
            return;
        }
        for (k, command) in proposal.commands.iter().enumerate() {
            let seq = proposal.first_seq + k as u64;
            let log = self.log.as_mut().expect("checked above");
            match log.take_waiting(proposal.origin, seq) {
                Some((sent, mut call)) => {
                    let effects = self.run_call(sent, &mut call);
                    self.log.as_mut().expect("checked above").ran(seq, call, effects);
                }
                None => self.replay(command),
            }
        }
    }

    /// Re-runs a logged command whose caller is not here; its result goes nowhere.
    fn replay(&mut self, command: &LoggedCommand) {
        let Some(log) = &self.log else { return };
        let commands = Arc::clone(&log.commands);
        let Some(replay) = commands.get(&command.name).and_then(|c| c.replay.as_ref()) else {
            tracing::error!(command = command.name, "the log holds a command this engine lacks");
            return;
        };
        // A failure here failed on the proposing member too: handlers are deterministic.
        let (_, effects) = self.with_exec(|exec| replay(exec, &command.args));
        for event in effects.events {
            self.broadcast(event);
        }
    }

    /// Answers (or runs) the parked calls and jobs whose turn has come.
    fn answer_parked(&mut self) {
        while let Some(parked) = self.log.as_mut().and_then(ReplicatedLane::pop_ready) {
            match parked {
                Parked::Answered { thread, conn, call, effects } => {
                    self.finish_call(thread, conn, call, effects);
                }
                Parked::Run { thread, sent, job } => self.handle_now(thread, sent, job),
            }
        }
    }

    /// Wakes the threads that have outcomes waiting and sleep: before each job, so a slow job
    /// never holds replies already made, and once more before the executor itself waits.
    fn wake_sleepers(&mut self) {
        for thread in self.unwoken.drain(..) {
            self.exchange.mailbox(thread).wake_if_sleeping();
        }
    }

    fn broadcast(&self, event: Event) {
        let event = Arc::new(event);
        for (thread, mailbox) in self.exchange.mailboxes().iter().enumerate() {
            if !mailbox.notify(Arrival::Event(Arc::clone(&event))) {
                tracing::warn!(
                    thread,
                    event = event.name,
                    "parser thread not draining; event dropped"
                );
            }
        }
    }

    /// Sends `SHUTDOWN` to every session, then tells every parser thread to drain.
    fn begin_shutdown(&mut self, reason: &'static str) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(reason, "shutting down");
        if let Some(hook) = &self.on_shutdown {
            hook(&self.shared);
        }
        let data = serde_json::json!({ "guest": false, "reason": reason });
        self.broadcast(Event::now("SHUTDOWN".into(), Some(data)));
        for mailbox in self.exchange.mailboxes() {
            mailbox.notify(Arrival::Shutdown);
            mailbox.wake();
        }
    }

    fn end_round(&mut self) {
        if let Some(log) = &mut self.log {
            log.end_round();
            // A proposal the stopped log refused has failed its calls: answer them.
            self.answer_parked();
        }
        self.wake_sleepers();
        self.stats.queue_depth.store(self.exchange.queued(), Ordering::Relaxed);
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.local.drain_into(&mut self.stats.executor.lock());
        self.last_publish = Instant::now();
    }
}
