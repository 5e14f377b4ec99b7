//! A parser thread: one per core, pinned, with its own mio event loop, listeners and
//! connections. It reads, frames, peeks, runs OOB commands, hands in-band jobs to the
//! executor, encodes replies from its inbox, and writes each connection once per loop turn.
//!
//! The loop reads like a dispatch table: poll, note readiness, drain the inbox, service the
//! connections that have work. It never blocks except in `poll`, and only after telling the
//! executor it is about to sleep. Logging on the request path is at `trace` at most.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use ooblane_wire::Dialect;
use ooblane_wire::Event;
use ooblane_wire::qmp::{self, Mode};
use slab::Slab;

use crate::admission::{Admission, Admitted};
use crate::budget::Pause;
use crate::conn::{Conn, LINGER, Stream, Timeout};
use crate::dispatch::{Handled, Worker};
use crate::idle::SpinWindow;
use crate::job::{Arrival, ConnId, Controller, Done, Exchange, Flushed, Mailbox, Work};
use crate::listener::Listener;
use crate::stats::bump;

/// Token of the executor's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`; connections use their slab key.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Reads per connection per loop turn: enough to empty a socket under normal load, few
/// enough that one flooding client cannot starve the others on this thread.
const READS_PER_TURN: usize = 4;
/// Unsent output, in connection budgets, beyond which a session that does not read its
/// events is disconnected: replies alone stay within one budget (reading pauses first), so
/// only a client ignoring a stream of events gets there.
const SLOW_CONSUMER_BUDGETS: usize = 4;
/// Readiness events taken per `poll`.
const EVENTS: usize = 1024;
/// How soon to retry handing over a batch that found the queue full of control jobs.
const KEPT_RETRY: Duration = Duration::from_millis(1);
/// Connection deadlines (lingering closes, timeouts) are checked at most this often: one
/// pass over the connections per tick, never a clock read or a timer per request. A
/// deadline is therefore late by up to this much, which no timeout here needs to beat.
const DEADLINE_TICK: Duration = Duration::from_millis(100);
/// How often connections paused by the server's memory limit are looked at while memory
/// stays over it: often enough that a drain elsewhere resumes them promptly, rare enough to
/// cost nothing with thousands paused.
const HELD_BACK_RETRY: Duration = Duration::from_millis(10);

/// One parser thread's loop state.
pub(crate) struct ParserThread<S, V> {
    pub(crate) poll: Poll,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) conns: Slab<Conn<S, V>>,
    /// Where outcomes and notices arrive (this thread's mailbox) and credits return.
    exchange: Arc<Exchange<S, V>>,
    pub(crate) worker: Worker<S, V>,
    /// Never reused: tells replies for a closed connection from its slot's next tenant.
    next_serial: u32,
    /// Connections to service this turn (each listed once, see `Conn::queued`).
    active: Vec<usize>,
    /// The list being serviced (swapped with `active` each turn, to keep both allocations).
    servicing: Vec<usize>,
    /// Connections of this turn whose writes wait for the turn's hand-over.
    deferred: Vec<usize>,
    /// Connections with jobs parked for lack of credit.
    waiting_credit: Vec<usize>,
    /// Set once shutdown began: stop reading, answer what was read, exit by this time.
    drain_until: Option<Instant>,
    /// The current event's encoding, reused.
    scratch: Vec<u8>,
    /// Whether and how long to poll for the outcomes of the jobs just handed over before
    /// sleeping (never, unless the executor has a core of its own).
    await_outcomes: SpinWindow,
    /// Takes new connections: the connection cap and descriptor exhaustion.
    admission: Admission,
    /// When to look at the connections' deadlines next: the nearest one, but at most once
    /// per [`DEADLINE_TICK`]; `None` while no connection has one.
    next_sweep: Option<Instant>,
    /// Connections whose deadline passed (reused by the sweep).
    expired: Vec<usize>,
    /// Connections paused by the server's memory limit ([`Pause::Shared`]): memory drains
    /// on other threads too, with no event here, so they are retried on a timer.
    held_back: Vec<usize>,
    /// The next timed retry of `held_back`.
    held_back_at: Option<Instant>,
}

impl<S, V> ParserThread<S, V> {
    pub(crate) fn new(
        poll: Poll,
        listeners: Vec<Listener>,
        worker: Worker<S, V>,
    ) -> io::Result<Self> {
        let admission = Admission::new(worker.limits.max_connections);
        let mut thread = ParserThread {
            poll,
            listeners,
            conns: Slab::new(),
            exchange: Arc::clone(worker.jobs.exchange()),
            worker,
            next_serial: 0,
            active: Vec::new(),
            servicing: Vec::new(),
            deferred: Vec::new(),
            waiting_credit: Vec::new(),
            drain_until: None,
            scratch: Vec::new(),
            await_outcomes: SpinWindow::new(Duration::ZERO),
            admission,
            next_sweep: None,
            expired: Vec::new(),
            held_back: Vec::new(),
            held_back_at: None,
        };
        for (i, listener) in thread.listeners.iter_mut().enumerate() {
            listener.register(thread.poll.registry(), Token(LISTENER_BASE - i))?;
        }
        Ok(thread)
    }

    /// Lets the thread poll for up to `limit` for the outcomes of the jobs it handed over
    /// before sleeping: only where the executor has a core of its own.
    pub(crate) fn with_await_outcomes(mut self, limit: Duration) -> Self {
        self.await_outcomes = SpinWindow::new(limit);
        self
    }

    fn mailbox(&self) -> &Mailbox<S, V> {
        self.exchange.mailbox(self.worker.thread)
    }

    /// Runs until shutdown has drained this thread's connections.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        while !self.is_drained() {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "poll failed; parser thread stops");
                break;
            }
            self.mailbox().awake();
            for event in events.iter() {
                self.on_event(event);
            }
            self.retry_accept();
            self.sweep_deadlines();
            self.drain_inbox();
            self.retry_waiting_credit();
            self.retry_held_back();
            self.service_active();
        }
        self.finish();
    }

    /// Zero when work is pending; otherwise sleep (after telling the executor, which then
    /// wakes us for replies), until the drain deadline when draining.
    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.active.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.worker.jobs.has_kept() {
            return Some(KEPT_RETRY);
        }
        self.await_outcomes();
        if !self.mailbox().try_sleep() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let until = |at: Instant| at.saturating_duration_since(now);
        let drain = self.drain_until.map(until);
        let sweep = self.next_sweep.map(until);
        let held_back = (!self.held_back.is_empty()).then_some(HELD_BACK_RETRY);
        [drain, sweep, held_back, self.admission.retry_in()].into_iter().flatten().min()
    }

    /// With jobs in flight, the executor often answers within µs: polling the mailbox that
    /// long instead of sleeping at once spares the executor a wake-up syscall and this
    /// thread a sleep and a wake-up (in a virtual machine, an interrupt and a VM exit). The
    /// idle policy (`idle.rs`) stops it where it does not pay: outcomes slower than the
    /// window, or a core shared with another thread (a client on the same machine), which
    /// the poll would take from it. Socket readiness is seen on the next `poll` either way.
    fn await_outcomes(&mut self) {
        if self.worker.jobs.in_flight() == 0 || !self.mailbox().is_empty() {
            return;
        }
        let mailbox = self.exchange.mailbox(self.worker.thread);
        self.await_outcomes.poll(|| !mailbox.is_empty());
    }

    fn on_event(&mut self, event: &mio::event::Event) {
        match event.token() {
            WAKER => {}
            Token(t) if t > LISTENER_BASE - self.listeners.len() => self.accept(LISTENER_BASE - t),
            Token(key) => {
                let Some(conn) = self.conns.get_mut(key) else { return };
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.readable = true;
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    conn.writable = true;
                }
                self.activate(key);
            }
        }
    }

    fn activate(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.queued
        {
            conn.queued = true;
            self.active.push(key);
        }
    }

    fn accept(&mut self, index: usize) {
        if self.drain_until.is_some() {
            return;
        }
        let dialect = self.listeners[index].dialect;
        while let Some(admitted) =
            self.admission.try_accept(&self.listeners[index], &self.worker.stats)
        {
            match admitted {
                Admitted::Serve(stream) => self.add_conn(stream, dialect),
                Admitted::Refused(stream) => self.add_refused(stream, dialect),
            }
        }
    }

    /// After running out of descriptors, accepts on every listener again once the retry
    /// timer is due: readiness is edge-triggered, so a waiting queue raises no new event.
    fn retry_accept(&mut self) {
        if self.admission.take_due_retry() {
            for index in 0..self.listeners.len() {
                self.accept(index);
            }
        }
    }

    /// Registers a new socket with this thread's poll under the next free slab key and builds
    /// its connection (not yet inserted: the caller inserts it at that key).
    fn new_conn(&mut self, mut stream: Stream, dialect: Dialect) -> Option<Conn<S, V>> {
        let key = self.conns.vacant_key();
        if let Err(e) = stream.register(self.poll.registry(), Token(key)) {
            tracing::warn!(error = %e, "cannot register a connection");
            return None;
        }
        let id = ConnId { key: key as u32, serial: self.next_serial };
        self.next_serial = self.next_serial.wrapping_add(1);
        let limits = &self.worker.limits;
        Some(Conn::new(id, dialect, stream, limits.max_message_bytes, limits.conn_budget_bytes))
    }

    fn add_conn(&mut self, stream: Stream, dialect: Dialect) {
        let Some(mut conn) = self.new_conn(stream, dialect) else { return };
        let negotiation = self.worker.limits.negotiation_timeout;
        if dialect == Dialect::Qmp {
            qmp::greeting(&mut conn.session.output.buf, &self.worker.info.version);
            if !negotiation.is_zero() {
                conn.negotiate_by = Some(Instant::now() + negotiation);
            }
        }
        let deadline = conn.negotiate_by;
        let key = self.conns.insert(conn);
        if let Some(at) = deadline {
            self.arm_sweep(at);
        }
        bump(&self.worker.stats.threads[self.worker.thread].accepted);
        self.worker.stats.memory.opened();
        tracing::debug!(thread = self.worker.thread, key, "connection accepted");
        self.activate(key);
    }

    /// A connection refused at the cap, its error and FIN already sent: it only lingers,
    /// and is not counted as open.
    fn add_refused(&mut self, stream: Stream, dialect: Dialect) {
        let until = self.linger_until();
        let Some(mut conn) = self.new_conn(stream, dialect) else { return };
        conn.begin_linger(until);
        conn.refused = true;
        conn.send_fin_when_answered(); // marks the FIN admission sent
        let key = self.conns.insert(conn);
        self.arm_sweep(until);
        self.activate(key);
    }

    /// Handles everything the executor has delivered, in order: writes the replies of the
    /// outcomes (handing their credits back), broadcasts events, begins draining.
    fn drain_inbox(&mut self) {
        let mut completed = 0;
        while let Some(arrival) = self.mailbox().try_take() {
            match arrival {
                Arrival::Done(done) => {
                    completed += 1;
                    self.complete(done);
                }
                Arrival::Event(event) => self.broadcast(&event),
                Arrival::Shutdown => self.begin_drain(),
            }
        }
        self.worker.jobs.completed(completed);
    }

    fn complete(&mut self, mut done: Done<S, V>) {
        let key = done.conn.key as usize;
        // A connection that has closed since: its slot may have a new tenant, skip it.
        if let Some(conn) = self.conns.get_mut(key)
            && conn.session.id == done.conn
        {
            self.worker.stats.threads[self.worker.thread].count_outcome(done.call.failure());
            conn.session.complete(&mut *done.call);
            self.activate(key);
        }
        self.worker.calls.recycle(done.call);
    }

    /// Encodes an event once and appends it to every negotiated session. Replies are bounded
    /// by the byte budget (reading pauses), but events are not requested: a session that
    /// lets them pile up beyond [`SLOW_CONSUMER_BUDGETS`] budgets is disconnected instead of
    /// holding memory without bound.
    fn broadcast(&mut self, event: &Event) {
        self.scratch.clear();
        qmp::event(&mut self.scratch, event);
        let limit = self.worker.limits.conn_budget_bytes.saturating_mul(SLOW_CONSUMER_BUDGETS);
        let linger_until = self.linger_until();
        let mut keys = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let open = !conn.broken && !conn.session.closing;
            if matches!(conn.session.mode, Mode::Commands { .. }) && open {
                if conn.session.output.pending() + self.scratch.len() > limit {
                    tracing::warn!(
                        key,
                        pending = conn.session.output.pending(),
                        "slow consumer: disconnected"
                    );
                    conn.begin_linger(linger_until);
                } else {
                    conn.session.output.buf.extend_from_slice(&self.scratch);
                }
                keys.push(key);
            }
        }
        for key in keys {
            self.activate(key);
        }
        self.arm_sweep(linger_until);
    }

    /// A lingering close begun now ends by this time (by the drain deadline when draining).
    fn linger_until(&self) -> Instant {
        let until = Instant::now() + LINGER;
        self.drain_until.map_or(until, |drain| drain.min(until))
    }

    /// A connection got a deadline at `at`: the next sweep comes no later.
    fn arm_sweep(&mut self, at: Instant) {
        self.next_sweep = Some(self.next_sweep.map_or(at, |next| next.min(at)));
    }

    /// Once per tick at most: acts on the connections whose deadline has passed and finds
    /// the next deadline.
    fn sweep_deadlines(&mut self) {
        let Some(at) = self.next_sweep else { return }; // no clock read while none is armed
        let now = Instant::now();
        if now < at {
            return;
        }
        let mut next: Option<Instant> = None;
        for (key, conn) in self.conns.iter() {
            match conn.deadline() {
                Some(at) if at <= now => self.expired.push(key),
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.next_sweep = next.map(|at| at.max(now + DEADLINE_TICK));
        for i in 0..self.expired.len() {
            let key = self.expired[i];
            self.on_deadline(key, now);
        }
        self.expired.clear();
    }

    /// A connection's deadline passed: a lingering close ends here; a timeout answers its
    /// error (in order, after the replies owed) and closes the connection, lingering.
    fn on_deadline(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        if conn.linger.is_some() {
            return self.close(key);
        }
        let Some(timeout) = conn.timed_out(now).filter(|_| !conn.session.closing) else {
            return;
        };
        let unread = conn.input_held || conn.pause(&self.worker.stats.memory).is_some();
        if timeout == Timeout::Incomplete && unread {
            // The budget stopped reading this connection: the rest of the message may be
            // waiting in the socket. Not the client's delay; its time starts again.
            let at = now + self.worker.limits.incomplete_timeout;
            conn.incomplete_by = Some(at);
            return self.arm_sweep(at);
        }
        conn.negotiate_by = None;
        conn.incomplete_by = None;
        let limits = &self.worker.limits;
        let desc = match timeout {
            Timeout::Negotiation => format!(
                "capabilities negotiation not finished within {:?}",
                limits.negotiation_timeout
            ),
            Timeout::Incomplete => {
                format!("message incomplete for {:?}", limits.incomplete_timeout)
            }
        };
        tracing::debug!(thread = self.worker.thread, key, reason = %desc, "connection timed out");
        self.worker.time_out(&mut conn.session, &desc);
        self.activate(key);
    }

    fn begin_drain(&mut self) {
        self.drain_until = Some(Instant::now() + self.worker.limits.drain_timeout);
        for listener in &mut self.listeners {
            let _ = listener.deregister(self.poll.registry());
        }
        self.listeners.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.activate(key);
        }
    }

    /// Connections paused by the server's memory limit get a turn once memory is back under
    /// it, or once per [`HELD_BACK_RETRY`] (their share grows as connections close).
    fn retry_held_back(&mut self) {
        if self.held_back.is_empty() {
            return;
        }
        let now = Instant::now();
        let due = self.held_back_at.is_none_or(|at| now >= at);
        if due || !self.worker.stats.memory.is_over() {
            self.held_back_at = Some(now + HELD_BACK_RETRY);
            for key in std::mem::take(&mut self.held_back) {
                self.activate(key);
            }
        }
    }

    fn retry_waiting_credit(&mut self) {
        for key in std::mem::take(&mut self.waiting_credit) {
            self.activate(key);
        }
    }

    /// The turn's jobs go to the executor in one batch.
    fn hand_over(&mut self) {
        if self.worker.jobs.flush() == Flushed::Kept {
            tracing::trace!(thread = self.worker.thread, "job queue full of control jobs");
        }
    }

    /// Connections left waiting for credit are retried at once if credits came back
    /// meanwhile, else when the thread that returns them wakes this one.
    fn ask_for_credit(&mut self) {
        if !self.waiting_credit.is_empty() && self.exchange.want_credits(self.worker.thread) {
            self.retry_waiting_credit();
        }
    }

    /// One turn of every connection with work: each takes in what it can (parked jobs, then
    /// what it reads) and writes what it owes, then the turn's jobs go to the executor in one
    /// batch. A connection's output waits until after the hand-over once the turn holds jobs
    /// not yet handed over: a client that sees a reply can then rely on every job read
    /// before it being with the executor already, ahead of anything the reply lets it
    /// trigger next (a shutdown, an event, a request on another connection). Connections
    /// serviced before the turn's first job write at once, so OOB-only traffic keeps its
    /// writes spread over the turn.
    fn service_active(&mut self) {
        std::mem::swap(&mut self.active, &mut self.servicing);
        for i in 0..self.servicing.len() {
            let key = self.servicing[i];
            if let Some(conn) = self.conns.get_mut(key) {
                conn.queued = false;
            }
            self.take_in(key);
            if self.worker.jobs.has_unsent() {
                self.deferred.push(key);
            } else {
                self.write_and_settle(key);
            }
        }
        self.servicing.clear();
        self.hand_over();
        for i in 0..self.deferred.len() {
            self.write_and_settle(self.deferred[i]);
        }
        self.deferred.clear();
        self.ask_for_credit();
    }

    fn write_and_settle(&mut self, key: usize) {
        if self.conns.contains(key) {
            self.write(key);
            self.settle(key);
        }
    }

    /// A connection's intake for this turn: submit parked jobs, read and handle what arrived.
    fn take_in(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.conns[key].session.sync_unsent();
        self.resubmit_parked(key);
        let conn = &self.conns[key];
        if conn.linger.is_some() {
            return self.discard(key);
        }
        if conn.session.closing {
            return;
        }
        // Read but not handled yet: handled even while draining (nothing read is dropped).
        if conn.input_held && conn.pause(&self.worker.stats.memory).is_none() {
            self.handle_frames(key);
        }
        if self.drain_until.is_none() {
            self.read(key);
        }
        // At once, not at the end of the turn: the next connection's reading must see it.
        self.publish_held(key);
    }

    /// Parked jobs go to the executor as far as the in-flight limit and credits allow.
    fn resubmit_parked(&mut self, key: usize) {
        let limit = self.worker.limits.max_inflight_per_conn;
        let session = &mut self.conns[key].session;
        if session.lane.has_parked() {
            let (jobs, memory) = (&mut self.worker.jobs, &self.worker.stats.memory);
            session.lane.submit_parked(limit, jobs, &mut session.budget, memory);
        }
    }

    /// One write of everything pending, if the socket can take it.
    fn write(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.writable || conn.broken {
            return;
        }
        match conn.session.output.flush(&mut conn.stream) {
            Ok(all) => conn.writable = all,
            Err(e) if e.kind() == ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => conn.broken = true,
        }
    }

    /// After a connection's turn: close it when it is done (lingering if it may still have
    /// input), note it if it waits for credit, and give it another turn if the fairness cap
    /// stopped its reading.
    fn settle(&mut self, key: usize) {
        self.conns[key].session.sync_unsent();
        let memory = &self.worker.stats.memory;
        let mut pause = self.conns[key].pause(memory);
        if self.conns[key].release_output_if_paused(memory) {
            pause = self.conns[key].pause(memory);
        }
        let paused = pause.is_some();
        if pause == Some(Pause::Shared) {
            self.held_back.push(key);
        }
        self.conns[key].track_pause(pause, &self.worker.stats.threads[self.worker.thread].paused);
        if !paused {
            self.conns[key].shrink_if_quiet();
        }
        self.publish_held(key);
        if self.conns[key].is_finished() {
            return self.close(key);
        }
        let stop = self.drain_until.is_some() || self.conns[key].session.closing;
        if stop && self.is_answered(key) && self.conns[key].linger.is_none() {
            let until = self.linger_until();
            self.conns[key].begin_linger(until);
            self.arm_sweep(until);
        }
        let conn = &mut self.conns[key];
        conn.send_fin_when_answered();
        if conn.linger.is_some_and(|linger| linger.fin_sent) && conn.read_closed {
            return self.close(key); // the client saw our FIN and closed: no reset possible
        }
        if conn.session.lane.waits_for_credit(self.worker.limits.max_inflight_per_conn) {
            self.waiting_credit.push(key);
        }
        let wants_turn = if conn.linger.is_some() {
            conn.readable && !conn.read_closed
        } else if paused || conn.session.closing {
            false
        } else {
            conn.input_held || (conn.readable && !conn.read_closed && !stop)
        };
        if wants_turn {
            self.activate(key); // fairness cap or budget stopped it: continue next turn
        }
    }

    /// Adds the connection's change in held bytes to the server's total and notes its peak.
    fn publish_held(&mut self, key: usize) {
        let counters = &self.worker.stats.threads[self.worker.thread];
        let budget = &mut self.conns[key].session.budget;
        self.worker.stats.memory.add(budget.publish());
        let now = budget.held() as u64;
        if now > counters.peak_conn_bytes.load(Ordering::Relaxed) {
            counters.peak_conn_bytes.store(now, Ordering::Relaxed);
        }
    }

    fn is_paused(&self, key: usize) -> bool {
        self.conns[key].pause(&self.worker.stats.memory).is_some()
    }

    fn is_answered(&self, key: usize) -> bool {
        self.conns[key].session.is_answered()
    }

    /// Reads while the socket has data, the budget allows and the fairness cap is not hit,
    /// handling every complete message after each read.
    fn read(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let conn = &mut self.conns[key];
            // Unhandled messages wait in the buffer: reading more would only grow it.
            let stop = conn.session.closing || conn.input_held;
            if stop || !conn.readable || conn.read_closed || conn.broken || self.is_paused(key) {
                return;
            }
            let conn = &mut self.conns[key];
            let read = conn.input.read_from(&mut conn.stream);
            conn.session.budget.set_read_buffer(conn.input.capacity());
            match read {
                Ok((0, _)) => {
                    conn.read_closed = true;
                    conn.readable = false;
                }
                Ok((_, filled)) => {
                    // A short read emptied the socket: new data will raise a new edge, so
                    // skip the read that would only say `WouldBlock`.
                    conn.readable = filled;
                    self.handle_frames(key);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => conn.broken = true,
            }
        }
    }

    fn handle_frames(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let framed = conn.input.framed();
        let handled = self.worker.handle_input(&mut conn.input, &mut conn.session);
        conn.input_held = handled == Handled::Held;
        if conn.input.is_mid_message() || conn.incomplete_by.is_some() {
            let limit = self.worker.limits.incomplete_timeout;
            conn.track_incomplete(framed, Instant::now(), limit);
            if let Some(at) = conn.incomplete_by {
                self.arm_sweep(at);
            }
        }
    }

    /// A lingering connection's input is read and thrown away until end of stream, so the
    /// close that follows finds nothing unread (which would make the kernel send a reset).
    fn discard(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        for _ in 0..READS_PER_TURN {
            if !conn.readable || conn.read_closed || conn.broken {
                return;
            }
            match conn.input.discard_from(&mut conn.stream) {
                Ok(0) => {
                    conn.read_closed = true;
                    conn.readable = false;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => conn.broken = true,
            }
        }
    }

    fn close(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        let _ = conn.stream.deregister(self.poll.registry());
        conn.track_pause(None, &self.worker.stats.threads[self.worker.thread].paused);
        let memory = &self.worker.stats.memory;
        memory.add(-(conn.session.budget.withdraw() as isize));
        if !conn.refused {
            memory.closed();
            bump(&self.worker.stats.threads[self.worker.thread].closed);
        }
        tracing::debug!(thread = self.worker.thread, key, "connection closed");
    }

    fn is_drained(&self) -> bool {
        match self.drain_until {
            None => false,
            Some(until) => self.conns.is_empty() || Instant::now() >= until,
        }
    }

    /// Closes what is left (the executor hears of the exit from [`ExitNotice`]).
    fn finish(mut self) {
        let left: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        if !left.is_empty() {
            tracing::warn!(connections = left.len(), "drain timed out; closing");
        }
        for key in left {
            self.close(key);
        }
    }
}

/// Tells the executor that a parser thread is gone when dropped, however the thread ends
/// (even by a panic), so the executor, which exits after the last one, can never wait forever.
pub(crate) struct ExitNotice<S, V>(pub(crate) Controller<S, V>);

impl<S, V> Drop for ExitNotice<S, V> {
    fn drop(&mut self) {
        // Blocks at most until the executor takes a batch; it is draining too.
        self.0.send(Work::ParserDone);
    }
}
