//! One client connection, owned by the parser thread that accepted it: the socket, the read
//! buffer the framer and the peek work in, the write buffer replies are encoded into, the
//! in-band lane, and the session state.
//!
//! Memory is bounded: the read buffer grows only to the message size limit, and past the
//! connection's byte budget (budget.rs: everything it holds) the thread stops reading and
//! handling its input, so a client that floods or does not read its replies only slows
//! itself. Buffers a burst grew are given back when the connection goes quiet.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use ooblane_wire::Dialect;
use ooblane_wire::peek::PADDING;
use ooblane_wire::qmp::Mode;
use ooblane_wire::reply::Form;
use ooblane_wire::{Framer, Step};

use crate::budget::{ConnBudget, MemoryBudget, Pause, QUIET_WRITE_CAPACITY};
use crate::call::Call;
use crate::job::ConnId;
use crate::lane::{self, Lane};

/// Initial read buffer size: a few typical control-plane messages, so idle connections stay
/// cheap; it grows (doubling) only for larger messages.
const INITIAL_READ: usize = 16 * 1024;

/// Write buffers larger than this are shrunk once empty, so one burst does not pin memory.
const KEEP_WRITE_CAPACITY: usize = 256 * 1024;

/// How long a closing connection keeps reading (and discarding) its client's input after
/// its last reply and its FIN, waiting for the client's end of stream. Closing a socket with
/// unread input makes the kernel send a reset, which destroys replies still in flight to the
/// client; two seconds cover a client's round trip and its last writes many times over, and
/// bound what a client that never closes can hold.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// A connected socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Stream::Tcp(s) => s.register(registry, token, interest),
            Stream::Unix(s) => s.register(registry, token, interest),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }

    /// Sends FIN: the client reads end of stream after the replies already written.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The read buffer and its framer. `buf` is always fully initialised and at least
/// [`PADDING`] bytes longer than the data in it, so any framed message can be parsed in place.
#[derive(Debug)]
pub(crate) struct Input {
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read from the socket.
    filled: usize,
    framer: Framer,
    /// Messages framed so far (progress, for the incomplete-message timeout).
    framed: u64,
    /// Largest `buf` may grow: the message limit plus room for one more read and padding.
    max_buf: usize,
}

impl Input {
    pub(crate) fn new(max_message: usize) -> Input {
        Input {
            buf: vec![0; INITIAL_READ + PADDING],
            filled: 0,
            framer: Framer::new(max_message),
            framed: 0,
            max_buf: max_message + INITIAL_READ + PADDING,
        }
    }

    /// One `read` into the free space (making room first): the byte count (0 is end of
    /// stream) and whether the read filled all the space offered.
    pub(crate) fn read_from(&mut self, src: &mut impl Read) -> io::Result<(usize, bool)> {
        self.make_room();
        let end = self.buf.len() - PADDING;
        let n = src.read(&mut self.buf[self.filled..end])?;
        let filled = self.filled + n == end;
        self.filled += n;
        Ok((n, filled))
    }

    /// The next complete value, if the buffer holds one.
    pub(crate) fn next_frame(&mut self) -> Step {
        let step = self.framer.next(&self.buf[..self.filled]);
        if !matches!(step, Step::Incomplete) {
            self.framed += 1;
        }
        step
    }

    /// Messages framed so far (oversized ones included).
    pub(crate) fn framed(&self) -> u64 {
        self.framed
    }

    /// A message has begun and is not complete yet.
    pub(crate) fn is_mid_message(&self) -> bool {
        self.framer.is_mid_value()
    }

    /// The read buffer's size, as counted on the connection's budget.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Back to the initial size once nothing unhandled is buffered (the connection went
    /// quiet), so one large message or burst does not pin memory.
    pub(crate) fn shrink_if_empty(&mut self) {
        let initial = INITIAL_READ + PADDING;
        if self.buf.len() > initial
            && !self.is_mid_message()
            && self.framer.keep_from() == self.filled
        {
            self.framer.shift(self.filled);
            self.filled = 0;
            self.buf = vec![0; initial];
        }
    }

    /// The data read so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// A framed message and the padding after it, for parsing in place.
    pub(crate) fn message_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.buf[range.start..range.end + PADDING]
    }

    /// One `read` whose bytes are thrown away (a closing connection's input is never
    /// handled): the byte count, 0 at end of stream.
    pub(crate) fn discard_from(&mut self, src: &mut impl Read) -> io::Result<usize> {
        self.filled = 0;
        self.framer.reset();
        let end = self.buf.len() - PADDING;
        src.read(&mut self.buf[..end])
    }

    /// Drops consumed bytes: cheaply when all are consumed, else by moving the unconsumed
    /// tail to the front, growing only when a single message needs more room.
    fn make_room(&mut self) {
        let keep = self.framer.keep_from();
        if keep > 0 && (keep == self.filled || self.filled + PADDING >= self.buf.len() / 2) {
            self.buf.copy_within(keep..self.filled, 0);
            self.filled -= keep;
            self.framer.shift(keep);
        }
        if self.filled + PADDING == self.buf.len() && self.buf.len() < self.max_buf {
            let grown = (self.buf.len() * 2).min(self.max_buf);
            self.buf.resize(grown, 0);
        }
    }
}

/// Encoded output waiting for the socket.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
}

/// The least a write buffer grows by when it must (see [`Output::make_room`]).
const MIN_GROWTH: usize = 4 * 1024;

impl Output {
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Makes room for `bytes` more before replies are encoded into the buffer, growing it
    /// by what is needed or a quarter of its capacity, whichever is more, instead of letting
    /// a `Vec` double: the buffer counts on the budget by its capacity, and a doubling as it
    /// nears the budget would take the connection to twice its budget in one step.
    pub(crate) fn make_room(&mut self, bytes: usize) {
        let free = self.buf.capacity() - self.buf.len();
        if free < bytes {
            self.buf.reserve_exact(bytes.max(self.buf.capacity() / 4).max(MIN_GROWTH));
        }
    }

    /// Releases the buffer once everything is written, if it grew past the size a quiet
    /// connection needs.
    pub(crate) fn release_if_empty(&mut self) {
        if self.pending() == 0 && self.buf.capacity() > QUIET_WRITE_CAPACITY {
            self.buf = Vec::new();
            self.sent = 0;
        }
    }

    /// One `write` of everything pending. Returns true if the socket took it all.
    pub(crate) fn flush(&mut self, dst: &mut impl Write) -> io::Result<bool> {
        if self.pending() == 0 {
            return Ok(true);
        }
        let n = dst.write(&self.buf[self.sent..])?;
        self.sent += n;
        if self.sent < self.buf.len() {
            // A slow reader: drop the written half rather than let written bytes pile up.
            if self.sent >= self.buf.len() / 2 {
                self.buf.drain(..self.sent);
                self.sent = 0;
            }
            return Ok(false);
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > KEEP_WRITE_CAPACITY {
            self.buf.shrink_to(KEEP_WRITE_CAPACITY);
        }
        Ok(true)
    }
}

/// What a connection's messages act on (everything but its input, which the message being
/// handled borrows).
#[derive(Debug)]
pub(crate) struct Session<S, V> {
    pub(crate) id: ConnId,
    pub(crate) dialect: Dialect,
    pub(crate) output: Output,
    pub(crate) lane: Lane<S, V>,
    /// Every byte this connection holds, counted (see budget.rs).
    pub(crate) budget: ConnBudget,
    /// QMP negotiation state (JSON-RPC sessions stay `Negotiating`: they get no events).
    pub(crate) mode: Mode,
    /// JSON-RPC: the form of the last request, used for errors about unparsable input.
    pub(crate) rpc_form: Form,
    /// Handle no more input (a JSON-RPC protocol error, a timeout, a slow consumer): the
    /// connection closes, lingering, once its replies are out.
    pub(crate) closing: bool,
}

/// A client connection.
#[derive(Debug)]
pub(crate) struct Conn<S, V> {
    pub(crate) stream: Stream,
    pub(crate) input: Input,
    pub(crate) session: Session<S, V>,
    /// The socket may hold unread bytes (readiness is edge-triggered: true until a read
    /// returns `WouldBlock`).
    pub(crate) readable: bool,
    /// The socket can take more output.
    pub(crate) writable: bool,
    /// The client shut down its sending side; we still answer what it sent.
    pub(crate) read_closed: bool,
    /// A socket error: close without further writes.
    pub(crate) broken: bool,
    /// Listed for servicing this loop turn.
    pub(crate) queued: bool,
    /// The budget stopped handling the read buffer midway: messages read but not handled
    /// wait there (the framer resumes where it stopped) until the connection is back under
    /// budget. Nothing read is dropped.
    pub(crate) input_held: bool,
    /// Counted in the thread's paused-connections gauges (reading stopped by a budget), and
    /// why.
    paused: Option<Pause>,
    /// Set once the engine closes this connection: it flushes what it owes, sends FIN, and
    /// discards input until the client's end of stream or the deadline.
    pub(crate) linger: Option<Linger>,
    /// QMP: capabilities negotiation must be done by then (`Limits::negotiation_timeout`).
    pub(crate) negotiate_by: Option<Instant>,
    /// The message begun in the read buffer must be complete by then
    /// (`Limits::incomplete_timeout`); `None` while no message is begun.
    pub(crate) incomplete_by: Option<Instant>,
    /// Refused at the connection cap: only lingers, never counted as open or closed.
    pub(crate) refused: bool,
}

/// A timeout that ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// QMP capabilities negotiation not finished in time.
    Negotiation,
    /// A message left incomplete too long.
    Incomplete,
}

/// A lingering close in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Linger {
    /// Close at this time whatever the client does.
    pub(crate) until: Instant,
    /// FIN was sent (every reply was written first).
    pub(crate) fin_sent: bool,
}

impl<S, V> Session<S, V> {
    pub(crate) fn new(id: ConnId, dialect: Dialect, budget: usize) -> Self {
        Session {
            id,
            dialect,
            output: Output::default(),
            lane: Lane::default(),
            budget: ConnBudget::new(budget),
            mode: Mode::Negotiating,
            rpc_form: Form::Rpc1,
            closing: false,
        }
    }

    /// The executor's outcome for this session's oldest in-flight request: write its reply
    /// (and the ready replies queued behind it).
    pub(crate) fn complete(&mut self, call: &mut dyn Call<S, V>) {
        self.output.make_room(self.budget.estimate());
        let (out, budget) = (&mut self.output.buf, &mut self.budget);
        self.lane.complete(out, budget, |out, to| call.write_reply(out, to));
    }

    /// Brings the budget's count of the write buffer up to date (the encoders append to it
    /// directly): its capacity is what it holds; the bytes unsent are what submission waits
    /// on. A buffer a burst grew is released once empty when the connection is paused (see
    /// [`Conn::release_output_if_paused`]), so its spare room never keeps it paused.
    pub(crate) fn sync_unsent(&mut self) {
        self.budget.set_output(self.output.pending(), self.output.buf.capacity());
    }

    /// Every request has its reply written to the socket.
    pub(crate) fn is_answered(&self) -> bool {
        self.lane.is_idle() && self.output.pending() == 0
    }
}

impl<S, V> Conn<S, V> {
    pub(crate) fn new(
        id: ConnId,
        dialect: Dialect,
        stream: Stream,
        max_message: usize,
        budget: usize,
    ) -> Self {
        let input = Input::new(max_message);
        let mut session = Session::new(id, dialect, budget);
        let quiet_lane = lane::ring_bytes::<S, V>(lane::KEEP_ENTRIES);
        session.budget =
            ConnBudget::new(budget).with_base(input.capacity()).with_quiet_lane(quiet_lane);
        Conn {
            stream,
            input,
            session,
            input_held: false,
            readable: true,
            writable: true,
            read_closed: false,
            broken: false,
            queued: false,
            paused: None,
            linger: None,
            negotiate_by: None,
            incomplete_by: None,
            refused: false,
        }
    }

    /// Notes whether reading is paused by a byte budget now and why, keeping the owning
    /// thread's gauges of paused connections (one per reason) in step (single writer: plain
    /// load + store).
    pub(crate) fn track_pause(&mut self, pause: Option<Pause>, gauges: &[AtomicU64; 2]) {
        if pause != self.paused {
            if let Some(was) = self.paused {
                let gauge = &gauges[was.index()];
                gauge.store(gauge.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
            }
            if let Some(now) = pause {
                let gauge = &gauges[now.index()];
                gauge.store(gauge.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            self.paused = pause;
        }
    }

    /// Whether the budgets stop this connection's reading and handling now, and why.
    pub(crate) fn pause(&self, memory: &MemoryBudget) -> Option<Pause> {
        self.session.budget.pause(memory)
    }

    /// A paused connection with nothing left to send gives back a write buffer a burst grew
    /// (its room counts on the budget, and a paused connection is not quiet: its socket may
    /// still be readable). Returns whether it did.
    pub(crate) fn release_output_if_paused(&mut self, memory: &MemoryBudget) -> bool {
        let output = &self.session.output;
        if output.pending() > 0 || output.buf.capacity() <= QUIET_WRITE_CAPACITY {
            return false;
        }
        if self.pause(memory).is_none() {
            return false;
        }
        self.session.output.release_if_empty();
        self.session.sync_unsent();
        true
    }

    /// Nothing left to read or write this turn: big buffers go back.
    pub(crate) fn shrink_if_quiet(&mut self) {
        if self.readable || self.input_held || self.session.output.pending() > 0 {
            return;
        }
        self.input.shrink_if_empty();
        self.session.output.release_if_empty();
        self.session.sync_unsent();
        self.session.budget.set_read_buffer(self.input.capacity());
    }

    /// Nothing more will come from or go to this connection: the socket can be closed
    /// without a reset (no unread input can be left once the client's end of stream is read).
    pub(crate) fn is_finished(&self) -> bool {
        self.broken || (self.read_closed && self.session.is_answered())
    }

    /// When this connection must be looked at again whatever happens on its socket.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if let Some(linger) = self.linger {
            return Some(linger.until);
        }
        let negotiate_by = self.negotiate_by.filter(|_| self.session.mode == Mode::Negotiating);
        [negotiate_by, self.incomplete_by].into_iter().flatten().min()
    }

    /// Which timeout, if any, has passed at `now`.
    pub(crate) fn timed_out(&self, now: Instant) -> Option<Timeout> {
        let negotiating = self.session.mode == Mode::Negotiating;
        if negotiating && self.negotiate_by.is_some_and(|at| at <= now) {
            return Some(Timeout::Negotiation);
        }
        self.incomplete_by.filter(|at| *at <= now).map(|_| Timeout::Incomplete)
    }

    /// After handling input at `now`: a message left begun gets a deadline, counted from
    /// when it began (the first turn that left it incomplete); `None` with nothing begun.
    pub(crate) fn track_incomplete(&mut self, framed_before: u64, now: Instant, limit: Duration) {
        if limit.is_zero() || !self.input.is_mid_message() {
            self.incomplete_by = None;
        } else if self.incomplete_by.is_none() || self.input.framed() != framed_before {
            self.incomplete_by = Some(now + limit);
        }
    }

    /// Starts a lingering close (once): no more input is handled, what is owed is still
    /// written, then FIN. Closes by `until` at the latest.
    pub(crate) fn begin_linger(&mut self, until: Instant) {
        self.session.closing = true;
        if self.linger.is_none() {
            self.linger = Some(Linger { until, fin_sent: false });
        }
    }

    /// A lingering connection whose replies are all written sends its FIN (once).
    pub(crate) fn send_fin_when_answered(&mut self) {
        let Some(linger) = &mut self.linger else { return };
        if !linger.fin_sent && !self.broken && self.session.is_answered() {
            linger.fin_sent = true;
            if self.stream.shutdown_write().is_err() {
                self.broken = true;
            }
        }
    }
}
