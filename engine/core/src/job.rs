//! What crosses between threads, and how: jobs go from a parser thread to the executor in
//! batches, one per loop turn; outcomes come back through the thread's [`Mailbox`]; each side
//! wakes the other at most once per batch, and only if it sleeps.
//!
//! ```text
//!  parser thread: JobSender::try_push ... try_push ─► flush (end of turn: one send)
//!                 ──► crossbeam bounded queue of Batch ──► executor: run job by job
//!  executor:      each outcome ─► Mailbox::done ring (visible at once, no wake) ─┐
//!                 before the next job and at the end of the batch: wake the      │
//!                 thread only if it sleeps                                      ▼
//!  parser thread: drain the ring, write replies, hand the credits back ◄───────────┘
//! ```
//!
//! Credits bound the jobs outstanding (handed over and not yet answered) across all threads
//! to the queue capacity, so the batch queue and every outcome ring always have room: a full
//! pool hands the job back to its lane, which parks it; nothing blocks, nothing is dropped.
//! Vectors and calls circulate and are reused: steady state allocates nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_queue::ArrayQueue;
use ooblane_wire::Event;

use crate::call::BoxedCall;

/// A connection within one parser thread: slab key plus a serial that is never reused, so a
/// reply for a connection that has since closed cannot reach its successor in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

/// Work for the executor, tagged with the connection its answer goes to.
pub(crate) struct Job<S, V> {
    pub(crate) conn: ConnId,
    pub(crate) work: Work<S, V>,
}

/// What the executor is asked to do.
pub(crate) enum Work<S, V> {
    /// Run a decoded in-band command; its outcome goes back to the sending thread.
    Call(BoxedCall<S, V>),
    /// Emit an event to every session (from `ServerHandle::emit_event`). Boxed: it is rare,
    /// and every job (in batches, and parked in lanes) is as large as the largest variant.
    Emit(Box<Event>),
    /// Begin graceful shutdown, in order after everything queued before it.
    Shutdown(&'static str),
    /// A parser thread has drained and exited; the executor exits after the last one.
    ParserDone,
    /// From the replicated log: entries to apply, refusals, snapshots.
    /// (Boxed: it is rare, and jobs stay small.)
    Replica(Box<crate::replication::ToExecutor>),
}

impl<S, V> std::fmt::Debug for Job<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.work {
            Work::Call(_) => "Call",
            Work::Emit(_) => "Emit",
            Work::Shutdown(_) => "Shutdown",
            Work::ParserDone => "ParserDone",
            Work::Replica(_) => "Replica",
        };
        f.debug_struct("Job").field("conn", &self.conn).field("work", &kind).finish()
    }
}

impl<S, V> Job<S, V> {
    /// A job that answers no connection.
    pub(crate) fn control(work: Work<S, V>) -> Self {
        Job { conn: ConnId { key: 0, serial: 0 }, work }
    }
}

/// The jobs of one parser thread's loop turn, in order.
#[derive(Debug)]
pub(crate) struct Batch<S, V> {
    /// Index of the parser thread that sent it (whose mailbox gets the outcomes).
    pub(crate) thread: usize,
    /// When it was handed over: start of the queue-wait measurement of its jobs.
    pub(crate) sent: Instant,
    pub(crate) jobs: Vec<Job<S, V>>,
}

impl<S, V> Batch<S, V> {
    /// One control job from outside the parser threads.
    pub(crate) fn control(work: Work<S, V>) -> Self {
        Batch { thread: 0, sent: Instant::now(), jobs: vec![Job::control(work)] }
    }
}

/// An executed call on its way back to the connection that sent it.
pub(crate) struct Done<S, V> {
    pub(crate) conn: ConnId,
    pub(crate) call: BoxedCall<S, V>,
}

/// What the executor hands a parser thread, in the order it happened: an event emitted by a
/// command reaches the sessions before that command's reply, `SHUTDOWN` after `quit`'s.
pub(crate) enum Arrival<S, V> {
    /// An executed call.
    Done(Done<S, V>),
    /// An event for every negotiated session of the thread.
    Event(Arc<Event>),
    /// Stop accepting and reading, answer what was read, then exit.
    Shutdown,
}

/// Spare job vectors kept per parser thread: a few turns' worth in flight at once.
const SPARE_BATCHES: usize = 64;

/// Jobs a spare vector keeps room for: a pipelining turn's worth (4 connections x 64 in
/// flight is 256). A turn that took in a flood (thousands of parked jobs resubmitted at
/// once) would otherwise leave every spare that large: measured, 33 MiB still held after
/// 2,000 stalled connections had closed.
const SPARE_JOBS: usize = 1024;

/// Room in each arrival ring beyond the outcomes credits allow, for events and notices.
const EVENT_ROOM: usize = 1024;

/// How long the executor waits for a parser thread to make room for an event before it gives
/// that thread's sessions up on the event (the thread has stopped draining: it exited).
const EVENT_PATIENCE: Duration = Duration::from_millis(100);

/// The handshake that lets a thread sleep without missing work handed to it meanwhile, and
/// lets those who hand it work wake it only when it sleeps, at most once per sleep. Set by
/// the sleeper just before it sleeps, cleared by whoever wakes it. Used by a parser thread's
/// mailbox (asleep in `epoll_wait`) and the executor's doorbell (parked).
#[derive(Debug, Default)]
struct SleepFlag(AtomicBool);

impl SleepFlag {
    /// Sleeper side, before sleeping: returns false (stay awake) if `is_empty` says work came
    /// meanwhile.
    fn try_sleep(&self, is_empty: impl FnOnce() -> bool) -> bool {
        self.0.store(true, Ordering::SeqCst);
        // Pairs with the fence in `take`: either the waker sees the flag and wakes us, or we
        // see its work here.
        fence(Ordering::SeqCst);
        if is_empty() {
            return true;
        }
        self.0.store(false, Ordering::SeqCst);
        false
    }

    /// Sleeper side, after waking. Stores only if the flag is still set: the parser threads
    /// call this every loop turn, and a store would take the flag's cache line from the
    /// executor, which reads it after every job.
    fn awake(&self) {
        if self.0.load(Ordering::Relaxed) {
            self.0.store(false, Ordering::Relaxed);
        }
    }

    /// Waker side, after making work visible: true if the sleeper must be woken (then it is
    /// the one to wake it; the flag is cleared).
    fn take(&self) -> bool {
        fence(Ordering::SeqCst);
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::SeqCst)
    }

    /// Clears the flag: the caller wakes the sleeper whatever it does.
    fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A parser thread's inbound side, shared with the executor: the ring of outcomes, notices,
/// recycled batch vectors, and what the executor needs to wake the thread.
pub(crate) struct Mailbox<S, V> {
    /// Outcomes, events and notices, in execution order. Outcomes never fill it: credits
    /// bound them to the queue capacity, and it has [`EVENT_ROOM`] more.
    arrivals: ArrayQueue<Arrival<S, V>>,
    /// Emptied batch vectors, back from the executor for the thread's next turns.
    spare: ArrayQueue<Vec<Job<S, V>>>,
    /// The thread is (about to be) blocked in `epoll_wait`: at most one wake-up syscall per
    /// sleep.
    sleeping: SleepFlag,
    /// The thread found no credit and parked jobs; wake it when credits come back.
    needs_credit: AtomicBool,
    waker: mio::Waker,
}

impl<S, V> std::fmt::Debug for Mailbox<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("arrivals", &self.arrivals.len()).finish_non_exhaustive()
    }
}

impl<S, V> Mailbox<S, V> {
    pub(crate) fn new(waker: mio::Waker, capacity: usize) -> Self {
        Mailbox {
            arrivals: ArrayQueue::new(capacity + EVENT_ROOM),
            spare: ArrayQueue::new(SPARE_BATCHES),
            sleeping: SleepFlag::default(),
            needs_credit: AtomicBool::new(false),
            waker,
        }
    }

    /// Executor side: makes an outcome visible to the thread, without waking it.
    pub(crate) fn deliver(&self, done: Done<S, V>) {
        let mut arrival = Arrival::Done(done);
        // Credits keep outcomes from filling the ring; should that invariant ever break, wait
        // for the thread to drain rather than drop a reply.
        while let Err(back) = self.arrivals.push(arrival) {
            arrival = back;
            self.wake();
            std::thread::yield_now();
        }
    }

    /// Executor side: an event or notice, in order with the outcomes, waking the thread if it
    /// sleeps. Returns false if the thread stopped draining and it was given up.
    pub(crate) fn notify(&self, mut arrival: Arrival<S, V>) -> bool {
        let deadline = Instant::now() + EVENT_PATIENCE;
        while let Err(back) = self.arrivals.push(arrival) {
            if Instant::now() >= deadline {
                return false;
            }
            arrival = back;
            self.wake();
            std::thread::yield_now();
        }
        self.wake_if_sleeping();
        true
    }

    /// Nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.arrivals.is_empty()
    }

    /// Parser side: the next arrival, if any.
    pub(crate) fn try_take(&self) -> Option<Arrival<S, V>> {
        self.arrivals.pop()
    }

    /// Executor side, after outcomes were delivered: wakes the thread only if it sleeps.
    pub(crate) fn wake_if_sleeping(&self) {
        if self.sleeping.take() {
            self.wake();
        }
    }

    /// Parser side, before blocking: returns false (stay awake) if anything is waiting.
    pub(crate) fn try_sleep(&self) -> bool {
        self.sleeping.try_sleep(|| self.arrivals.is_empty())
    }

    /// Parser side, after waking.
    pub(crate) fn awake(&self) {
        self.sleeping.awake();
    }

    /// Unconditional wake (shutdown, credits).
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake a parser thread");
        }
    }

    /// Executor side: an emptied batch vector goes back to its thread, no larger than
    /// [`SPARE_JOBS`].
    pub(crate) fn return_vec(&self, mut jobs: Vec<Job<S, V>>) {
        jobs.clear();
        jobs.shrink_to(SPARE_JOBS);
        let _ = self.spare.push(jobs); // beyond the spares, let it go
    }
}

/// How senders wake the executor: only when it sleeps, at most once per sleep, the mirror
/// of a mailbox's `sleeping` flag. The executor polls the batch queue itself and parks the
/// thread; it never blocks inside the queue, whose blocking receive spins and calls
/// `sched_yield` before it sleeps (costly on every sleep, and on a shared core it hands the
/// core to whoever else runs there).
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// The executor is (about to be) parked.
    sleeping: SleepFlag,
    /// The executor thread, once it runs.
    thread: OnceLock<Thread>,
}

impl Doorbell {
    /// Executor side, once, on its own thread: whom to unpark.
    pub(crate) fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Executor side, before parking: returns false (stay awake) if `is_empty` says work came
    /// meanwhile.
    pub(crate) fn try_sleep(&self, is_empty: impl FnOnce() -> bool) -> bool {
        self.sleeping.try_sleep(is_empty)
    }

    /// Executor side, after parking.
    pub(crate) fn awake(&self) {
        self.sleeping.awake();
    }

    /// Sender side, after a send: unparks the executor only if it sleeps.
    fn ring_if_sleeping(&self) {
        if self.sleeping.take() {
            self.ring();
        }
    }

    /// Unparks the executor whatever it does (a sender is gone: it may be the last one).
    /// An unpark before the park is kept, so the executor never misses it.
    fn ring(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// What the parser threads and the executor share: each thread's mailbox, the credit pool
/// that bounds the jobs outstanding, and the executor's doorbell.
pub(crate) struct Exchange<S, V> {
    mailboxes: Box<[Mailbox<S, V>]>,
    doorbell: Doorbell,
    /// Jobs that may still be handed over before the capacity is reached.
    credits: AtomicUsize,
    /// Jobs handed over and not yet taken by the executor (for `query-stats`).
    queued: AtomicUsize,
}

impl<S, V> std::fmt::Debug for Exchange<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("threads", &self.mailboxes.len())
            .field("credits", &self.credits.load(Ordering::Relaxed))
            .finish()
    }
}

/// Credits a sender takes from the pool at once: one shared atomic operation per this many
/// jobs, yet few enough that a small capacity is still shared fairly between threads.
const CREDIT_CHUNK: usize = 64;

impl<S, V> Exchange<S, V> {
    pub(crate) fn new(mailboxes: Vec<Mailbox<S, V>>, capacity: usize) -> Self {
        Exchange {
            mailboxes: mailboxes.into(),
            doorbell: Doorbell::default(),
            credits: AtomicUsize::new(capacity),
            queued: AtomicUsize::new(0),
        }
    }

    /// Jobs handed over and not yet taken by the executor.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Executor side: a batch of `n` jobs was taken.
    pub(crate) fn dequeued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn mailbox(&self, thread: usize) -> &Mailbox<S, V> {
        &self.mailboxes[thread]
    }

    pub(crate) fn mailboxes(&self) -> &[Mailbox<S, V>] {
        &self.mailboxes
    }

    /// How the executor is woken.
    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// Takes up to `want` credits.
    fn take_credits(&self, want: usize) -> usize {
        let mut available = self.credits.load(Ordering::Relaxed);
        loop {
            let take = available.min(want);
            if take == 0 {
                return 0;
            }
            match self.credits.compare_exchange_weak(
                available,
                available - take,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => available = now,
            }
        }
    }

    /// Gives credits back and wakes the threads waiting for them.
    fn give_credits(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.credits.fetch_add(n, Ordering::SeqCst);
        for mailbox in self.mailboxes.iter() {
            if mailbox.needs_credit.load(Ordering::SeqCst)
                && mailbox.needs_credit.swap(false, Ordering::SeqCst)
            {
                mailbox.sleeping.clear();
                mailbox.wake();
            }
        }
    }

    /// Parser side, after parking for lack of credit: asks to be woken when credits return.
    /// Returns true if some already have (retry now instead of sleeping).
    pub(crate) fn want_credits(&self, thread: usize) -> bool {
        self.mailboxes[thread].needs_credit.store(true, Ordering::SeqCst);
        self.credits.load(Ordering::SeqCst) > 0
    }
}

/// Room in the batch queue beyond the capacity, for control jobs (events, shutdown, thread
/// exits), which take no credit: parser threads' batches never find the queue full unless
/// outside callers flood it with events.
pub(crate) const CONTROL_ROOM: usize = 256;

/// The batch queue: parser threads' batches are bounded by credits, control jobs by
/// [`CONTROL_ROOM`].
pub(crate) fn batch_queue<S, V>(capacity: usize) -> (BatchTx<S, V>, BatchRx<S, V>) {
    crossbeam_channel::bounded(capacity + CONTROL_ROOM)
}

/// Sending end of the batch queue.
pub(crate) type BatchTx<S, V> = Sender<Batch<S, V>>;
/// The executor's end of the batch queue.
pub(crate) type BatchRx<S, V> = Receiver<Batch<S, V>>;

/// Sends control jobs (shutdown, events, a parser thread's exit) from any thread, blocking
/// until the queue has room: never used on a parser thread's request path.
pub(crate) struct Controller<S, V> {
    tx: Sender<Batch<S, V>>,
    exchange: Arc<Exchange<S, V>>,
}

impl<S, V> Clone for Controller<S, V> {
    fn clone(&self) -> Self {
        Controller { tx: self.tx.clone(), exchange: Arc::clone(&self.exchange) }
    }
}

impl<S, V> std::fmt::Debug for Controller<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Controller")
    }
}

impl<S, V> Controller<S, V> {
    pub(crate) fn send(&self, work: Work<S, V>) {
        self.exchange.queued.fetch_add(1, Ordering::Relaxed);
        // Fails only once the executor has exited, when there is nothing left to control.
        // The executor never waits inside the queue, so a full queue is only waited out here
        // (it drains: the executor is awake while the queue holds anything).
        if self.tx.send(Batch::control(work)).is_err() {
            self.exchange.queued.fetch_sub(1, Ordering::Relaxed);
        }
        self.exchange.doorbell.ring_if_sleeping();
    }
}

impl<S, V> Drop for Controller<S, V> {
    fn drop(&mut self) {
        // The last sender gone ends the executor (its queue reports the disconnection).
        self.exchange.doorbell.ring();
    }
}

/// Whether a turn's batch reached the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Sent (or there was nothing to send).
    Sent,
    /// The queue was full of control messages: the batch is kept and goes next turn.
    Kept,
}

/// A parser thread's sending side of the hand-off: collects a loop turn's jobs and hands them
/// over with one queue operation.
pub(crate) struct JobSender<S, V> {
    thread: usize,
    tx: Sender<Batch<S, V>>,
    exchange: Arc<Exchange<S, V>>,
    /// This turn's jobs, in order.
    batch: Vec<Job<S, V>>,
    /// A batch the queue refused (only control messages can fill it), sent before any other.
    kept: Option<Batch<S, V>>,
    /// Credits taken from the pool and not yet used.
    credit: usize,
    /// Jobs handed over whose outcomes have not come back yet.
    in_flight: usize,
}

impl<S, V> std::fmt::Debug for JobSender<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSender")
            .field("thread", &self.thread)
            .field("batch", &self.batch.len())
            .field("credit", &self.credit)
            .finish()
    }
}

impl<S, V> JobSender<S, V> {
    pub(crate) fn new(
        thread: usize,
        tx: Sender<Batch<S, V>>,
        exchange: Arc<Exchange<S, V>>,
    ) -> Self {
        JobSender { thread, tx, exchange, batch: Vec::new(), kept: None, credit: 0, in_flight: 0 }
    }

    pub(crate) fn thread(&self) -> usize {
        self.thread
    }

    pub(crate) fn exchange(&self) -> &Arc<Exchange<S, V>> {
        &self.exchange
    }

    /// Jobs handed over whose outcomes have not come back yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// This turn's batch holds jobs not yet handed over (or a refused batch waits).
    pub(crate) fn has_unsent(&self) -> bool {
        !self.batch.is_empty() || self.kept.is_some()
    }

    /// A batch the queue refused waits to be sent.
    pub(crate) fn has_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// Adds a job to this turn's batch, or hands it back if the capacity is reached.
    pub(crate) fn try_push(&mut self, job: Job<S, V>) -> Result<(), Job<S, V>> {
        if self.credit == 0 {
            self.credit = self.exchange.take_credits(CREDIT_CHUNK);
            if self.credit == 0 {
                return Err(job);
            }
        }
        self.credit -= 1;
        self.batch.push(job);
        Ok(())
    }

    /// End of turn: hands the batch over with one queue operation (the executor is woken
    /// only if it sleeps) and gives unused credits back.
    pub(crate) fn flush(&mut self) -> Flushed {
        let unused = std::mem::take(&mut self.credit);
        self.exchange.give_credits(unused);
        if let Some(kept) = self.kept.take()
            && let Err(refused) = self.send(kept)
        {
            self.kept = Some(refused);
            return Flushed::Kept;
        }
        if self.batch.is_empty() {
            return Flushed::Sent;
        }
        let spare = self.exchange.mailbox(self.thread).spare.pop().unwrap_or_default();
        let jobs = std::mem::replace(&mut self.batch, spare);
        // Counted before sending, so the executor's decrement can never run first.
        self.exchange.queued.fetch_add(jobs.len(), Ordering::Relaxed);
        self.in_flight += jobs.len();
        match self.send(Batch { thread: self.thread, sent: Instant::now(), jobs }) {
            Ok(()) => Flushed::Sent,
            Err(refused) => {
                self.kept = Some(refused);
                Flushed::Kept
            }
        }
    }

    fn send(&self, batch: Batch<S, V>) -> Result<(), Batch<S, V>> {
        match self.tx.try_send(batch) {
            Ok(()) => {
                self.exchange.doorbell.ring_if_sleeping();
                Ok(())
            }
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => Err(batch),
        }
    }

    /// `n` outcomes were taken from the mailbox: their credits go back to the pool.
    pub(crate) fn completed(&mut self, n: usize) {
        self.in_flight -= n;
        self.exchange.give_credits(n);
    }

    /// Sends control jobs through the same queue, in order after this thread's batches.
    pub(crate) fn controller(&self) -> Controller<S, V> {
        Controller { tx: self.tx.clone(), exchange: Arc::clone(&self.exchange) }
    }
}

impl<S, V> Drop for JobSender<S, V> {
    fn drop(&mut self) {
        // The last sender gone ends the executor (its queue reports the disconnection).
        self.exchange.doorbell.ring();
    }
}
