//! One client connection: its socket, session handshake, send buffer, in-flight window and
//! in-band order check, across reconnects.
//!
//! A `Conn` outlives its sessions. Ids are numbered per connection and keep increasing
//! across sessions, so a late reply from a dead session can never match a new request.
//! Requests that come due while the connection is down wait in `backlog` (their intended
//! time keeps running, so the outage shows as latency); requests in flight when a session
//! drops are counted as failed, never retried or forgotten. Runs on a driver thread; never
//! blocks; logs only on connection state changes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::Address;
use crate::config::Protocol;
use crate::framer::{Frame, Framer, MAX_FRAME};
use crate::inflight::{Flight, InFlight, Lookup};
use crate::protocol::{Message, Template, classify, classify_http, qmp_capabilities};
use crate::recorder::Recorder;
use crate::remote::Rotation;
use crate::stream::Stream;

/// Requests held while disconnected, beyond which new ones are counted unsent at once:
/// bounds memory during a long outage (about 32 MiB) while covering 8 s of backoff at over
/// 100k requests/s per connection.
const MAX_BACKLOG: usize = 1 << 20;

/// What the driver shares with every connection: read-only, built once per run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) protocol: Protocol,
    pub(crate) remotes: Vec<Address>,
    pub(crate) templates: Vec<Template>,
    /// Per lane: exempt from the in-band order check.
    pub(crate) oob: Vec<bool>,
    /// Whether in-band reply order is checked at all (ids are always matched).
    pub(crate) check_order: bool,
    /// Lane names, for error messages.
    pub(crate) lane_names: Vec<String>,
}

/// Session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket; waiting for a reconnect wake.
    Down,
    /// TCP/Unix connect in progress.
    Connecting,
    /// QMP: waiting for the greeting.
    Greeting,
    /// QMP: `qmp_capabilities` sent, waiting for its reply.
    Negotiating,
    /// Requests flow.
    Ready,
}

/// What the driver must do after a connection handled an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing changed state.
    Idle,
    /// A session was just established.
    Up,
    /// The connection failed or dropped; the driver picks the next remote.
    Down(String),
    /// The server cannot serve this workload at all (e.g. no `oob` capability).
    Fatal(String),
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Poll token.
    token: Token,
    /// Present unless `phase == Down`.
    stream: Option<Stream>,
    phase: Phase,
    /// Remote rotation and backoff.
    pub(crate) rotation: Rotation,
    /// Remote of the current or last attempt.
    remote: usize,
    /// Connect attempt counter; stale timer wakes carry an older value.
    pub(crate) epoch: u64,
    /// A session was established before (the next one is a reconnect).
    had_session: bool,
    /// When the current session was established.
    up_since: Option<Instant>,
    framer: Framer,
    /// Bytes not yet written; `out[written..]` is pending.
    out: Vec<u8>,
    written: usize,
    inflight: InFlight,
    /// Ids of in-band requests in send order, awaiting replies.
    inband: VecDeque<u64>,
    /// Id of the next request (never reused on this connection).
    next_id: u64,
    /// (lane, intended) of requests due while not ready.
    backlog: VecDeque<(usize, Instant)>,
}

impl Conn {
    /// A connection that is down and will use `rotation` to reach servers of `protocol`.
    pub(crate) fn new(token: Token, rotation: Rotation, protocol: Protocol) -> Conn {
        Conn {
            token,
            stream: None,
            phase: Phase::Down,
            rotation,
            remote: 0,
            epoch: 0,
            had_session: false,
            up_since: None,
            framer: Framer::new(protocol),
            out: Vec::new(),
            written: 0,
            inflight: InFlight::default(),
            inband: VecDeque::new(),
            next_id: 0,
            backlog: VecDeque::new(),
        }
    }

    /// Requests sent and not yet answered.
    pub(crate) fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Requests due but not yet sent.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.len()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub(crate) fn is_down(&self) -> bool {
        self.phase == Phase::Down
    }

    /// Connecting or handshaking.
    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Greeting | Phase::Negotiating)
    }

    /// Starts a connect attempt to the next remote in rotation.
    pub(crate) fn start_connect(
        &mut self,
        sh: &Shared,
        reg: &Registry,
        rec: &mut Recorder,
    ) -> Outcome {
        self.remote = self.rotation.next_remote();
        self.epoch += 1;
        rec.remotes[self.remote].attempts += 1;
        let address = &sh.remotes[self.remote];
        tracing::debug!(conn = self.token.0, remote = %address, "connecting");
        let mut stream = match Stream::connect(address) {
            Ok(stream) => stream,
            Err(e) => return Outcome::Down(format!("connect to {address}: {e}")),
        };
        if let Err(e) =
            reg.register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
        {
            return Outcome::Down(format!("register: {e}"));
        }
        self.stream = Some(stream);
        self.phase = Phase::Connecting;
        Outcome::Idle
    }

    /// The remote of the current or last attempt.
    pub(crate) fn remote(&self) -> usize {
        self.remote
    }

    /// Handles readiness of the socket.
    pub(crate) fn on_event(&mut self, sh: &Shared, rec: &mut Recorder, now: Instant) -> Outcome {
        let mut outcome = Outcome::Idle;
        if self.phase == Phase::Connecting {
            match self.stream.as_ref().map(Stream::connect_outcome) {
                Some(Ok(true)) => outcome = self.on_connected(sh, now),
                Some(Ok(false)) => return Outcome::Idle,
                Some(Err(e)) => {
                    return Outcome::Down(format!("connect to {}: {e}", sh.remotes[self.remote]));
                }
                None => return Outcome::Idle,
            }
        }
        match self.read_all(sh, rec, now) {
            Outcome::Idle => {}
            Outcome::Up => outcome = Outcome::Up,
            other => return other,
        }
        if let Err(e) = self.flush() {
            return Outcome::Down(format!("write: {e}"));
        }
        outcome
    }

    /// The transport is connected: QMP waits for the greeting, other dialects are ready.
    fn on_connected(&mut self, sh: &Shared, now: Instant) -> Outcome {
        if sh.protocol == Protocol::Qmp {
            self.phase = Phase::Greeting;
            return Outcome::Idle;
        }
        self.session_up(now);
        Outcome::Up
    }

    /// Reads until the socket would block, handling every complete message. Returns `Up`
    /// if a session got established on the way (reading goes on: edge-triggered readiness
    /// will not report bytes already waiting).
    fn read_all(&mut self, sh: &Shared, rec: &mut Recorder, now: Instant) -> Outcome {
        let mut result = Outcome::Idle;
        loop {
            let Some(stream) = self.stream.as_mut() else { return result };
            match self.framer.read_from(stream) {
                Ok(0) => return Outcome::Down("closed by peer".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return result,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Outcome::Down(format!("read: {e}")),
            }
            while let Some(frame) = self.framer.next_frame() {
                let message = match frame {
                    Frame::Value(range) => classify(sh.protocol, self.framer.bytes(range)),
                    Frame::Response { status, body } => {
                        classify_http(status, self.framer.bytes(body))
                    }
                    Frame::Garbage => Message::Malformed,
                    Frame::Unframable(why) => {
                        rec.verify.protocol_errors += 1;
                        return Outcome::Down(format!("unframable reply: {why}"));
                    }
                };
                match self.on_message(sh, rec, message, now) {
                    Outcome::Idle => {}
                    Outcome::Up => result = Outcome::Up,
                    other => return other,
                }
            }
            if self.framer.pending() > MAX_FRAME {
                rec.verify.protocol_errors += 1;
                return Outcome::Down(format!("message larger than {MAX_FRAME} bytes"));
            }
        }
    }

    /// Dispatches one message according to the session phase.
    fn on_message(
        &mut self,
        sh: &Shared,
        rec: &mut Recorder,
        message: Message,
        now: Instant,
    ) -> Outcome {
        match (self.phase, message) {
            (_, Message::Event) => rec.verify.events += 1,
            (Phase::Greeting, Message::Greeting { oob }) => return self.on_greeting(sh, oob),
            (Phase::Negotiating, Message::Anonymous { ok: true }) => {
                self.session_up(now);
                return Outcome::Up;
            }
            (Phase::Negotiating, Message::Anonymous { ok: false }) => {
                return Outcome::Fatal(format!(
                    "{}: qmp_capabilities was refused",
                    sh.remotes[self.remote]
                ));
            }
            (Phase::Ready, Message::Reply { id, error }) => self.on_reply(sh, rec, id, error, now),
            (Phase::Ready, Message::InOrder { error }) => {
                self.on_reply_in_order(sh, rec, error, now);
            }
            (Phase::Ready, Message::MalformedInOrder { body }) => {
                rec.verify.protocol_errors += 1;
                self.on_reply_in_order(sh, rec, Some(body), now);
            }
            (Phase::Ready, Message::ForeignId) => rec.verify.unknown_ids += 1,
            (_, Message::ServerRequest(Some(reply))) => self.out.extend_from_slice(&reply),
            (_, Message::ServerRequest(None)) => {}
            (Phase::Ready, _) => rec.verify.protocol_errors += 1,
            (phase, message) => {
                rec.verify.protocol_errors += 1;
                return Outcome::Down(format!("unexpected {message:?} while {phase:?}"));
            }
        }
        Outcome::Idle
    }

    /// Answers the QMP greeting, enabling `oob` when offered.
    fn on_greeting(&mut self, sh: &Shared, oob: bool) -> Outcome {
        if !oob && let Some(i) = sh.oob.iter().position(|&o| o) {
            return Outcome::Fatal(format!(
                "{} does not offer the 'oob' capability, but lane '{}' uses exec-oob",
                sh.remotes[self.remote], sh.lane_names[i]
            ));
        }
        self.out.extend_from_slice(qmp_capabilities(oob));
        self.phase = Phase::Negotiating;
        Outcome::Idle
    }

    /// A session is established; the driver then calls [`Conn::count_session`].
    fn session_up(&mut self, now: Instant) {
        self.phase = Phase::Ready;
        self.up_since = Some(now);
        self.inflight.start_session(self.next_id);
    }

    /// Counts a new session; called by the driver right after `Outcome::Up`.
    pub(crate) fn count_session(&mut self, sh: &Shared, rec: &mut Recorder, now: Instant) {
        let remote = &mut rec.remotes[self.remote];
        remote.sessions += 1;
        if self.had_session {
            remote.reconnects += 1;
            tracing::info!(conn = self.token.0, remote = %sh.remotes[self.remote], "reconnected");
        }
        self.had_session = true;
        while let Some((lane, intended)) = self.backlog.pop_front() {
            self.send(sh, rec, lane, intended, now);
        }
    }

    /// Matches a reply to its request and, where the protocol promises it, checks in-band
    /// order; `error` is `None` for a successful reply, else what the error said.
    fn on_reply(
        &mut self,
        sh: &Shared,
        rec: &mut Recorder,
        id: u64,
        error: Option<String>,
        now: Instant,
    ) {
        let flight = match self.inflight.take(id) {
            Lookup::Found(flight) => flight,
            Lookup::Duplicate => return rec.verify.duplicates += 1,
            Lookup::Unknown => return rec.verify.unknown_ids += 1,
        };
        if sh.check_order && !sh.oob[flight.lane] {
            if self.inband.front() == Some(&id) {
                self.inband.pop_front();
            } else {
                rec.verify.out_of_order += 1;
                if let Some(pos) = self.inband.iter().position(|&i| i == id) {
                    self.inband.remove(pos);
                }
            }
        }
        rec.reply(flight.lane, flight.intended, flight.sent, now, error.is_none());
        if let Some(text) = error {
            rec.error_texts.add(&sh.lane_names[flight.lane], &text, 1);
        }
    }

    /// A reply without an id answers the oldest request outstanding (HTTP/1.1); one with
    /// nothing outstanding is counted as a reply to an unknown request.
    fn on_reply_in_order(
        &mut self,
        sh: &Shared,
        rec: &mut Recorder,
        error: Option<String>,
        now: Instant,
    ) {
        match self.inflight.oldest() {
            Some(id) => self.on_reply(sh, rec, id, error, now),
            None => rec.verify.unknown_ids += 1,
        }
    }

    /// Sends a request now if the session is ready, else holds it in the backlog.
    pub(crate) fn submit(
        &mut self,
        sh: &Shared,
        rec: &mut Recorder,
        lane: usize,
        intended: Instant,
        now: Instant,
    ) {
        if self.phase == Phase::Ready {
            self.send(sh, rec, lane, intended, now);
        } else if self.backlog.len() < MAX_BACKLOG {
            self.backlog.push_back((lane, intended));
        } else {
            rec.counts(lane).unsent += 1;
        }
    }

    /// Encodes a request into the send buffer and records it in flight.
    fn send(
        &mut self,
        sh: &Shared,
        rec: &mut Recorder,
        lane: usize,
        intended: Instant,
        now: Instant,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        sh.templates[lane].encode(id, &mut self.out);
        self.inflight.insert(id, Flight { lane, intended, sent: now });
        if sh.check_order && !sh.oob[lane] {
            self.inband.push_back(id);
        }
        rec.sent(lane, now.saturating_duration_since(intended));
    }

    /// Writes as much of the send buffer as the socket takes.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        while self.written < self.out.len() {
            match stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    /// Tears the session down: in-flight requests fail, the socket closes. Returns how long
    /// the session had been up (`None` if it never got established).
    pub(crate) fn go_down(&mut self, reg: &Registry, rec: &mut Recorder) -> Option<Duration> {
        if let Some(mut stream) = self.stream.take() {
            let _ = reg.deregister(&mut stream);
        }
        let was_up = self.phase == Phase::Ready;
        self.phase = Phase::Down;
        let mut failed = 0;
        for flight in self.inflight.drain() {
            rec.counts(flight.lane).failed += 1;
            failed += 1;
        }
        let remote = &mut rec.remotes[self.remote];
        remote.failed_requests += failed;
        if was_up {
            remote.disconnects += 1;
        } else {
            remote.connect_failures += 1;
        }
        self.inband.clear();
        self.framer.reset();
        self.out.clear();
        self.written = 0;
        let up_for = self.up_since.take().map(|since| since.elapsed());
        if was_up { up_for } else { None }
    }

    /// End of run: whatever is still in flight is missing, whatever is backlogged unsent.
    pub(crate) fn finish(&mut self, rec: &mut Recorder) {
        for flight in self.inflight.drain() {
            rec.counts(flight.lane).missing += 1;
        }
        for (lane, _) in self.backlog.drain(..) {
            rec.counts(lane).unsent += 1;
        }
    }
}
