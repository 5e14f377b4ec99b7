//! Hot-path pieces exposed for the criterion benchmarks (cargo feature `internals`). Not a
//! public API: no stability promise, compiled only when the feature is on.
//!
//! Each type drives the engine's own code, not a copy of it: [`FrameCounter`] the framer,
//! [`Peek`] the simd-json peek and QMP / JSON-RPC classification, [`Handoff`] the job queue,
//! executor and mailbox wake-up across two threads, [`Pipeline`] the whole in-process
//! request path of a parser thread (bytes in, reply bytes out) without sockets.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Waker};

use crate::config::{Config, Limits};
use crate::conn::{Dialect, Input, Session};
use crate::demo::{DemoShared, DemoState};
use crate::dispatch::Worker;
use crate::executor::Executor;
use crate::framer::{Framer, Step};
use crate::job::{ConnId, Inbox, Job, Mailbox, Work};
use crate::peek::Peeker;
use crate::qmp::Mode;
use crate::registry::{Empty, Registry, Reply, ServerInfo};
use crate::reply::Form;
use crate::stats::Stats;

/// Bytes a message needs after it in its buffer for [`Peek`] (simd-json's SIMD loads).
pub const PADDING: usize = crate::peek::PADDING;

/// The framer over a whole buffer.
#[derive(Debug)]
pub struct FrameCounter {
    framer: Framer,
}

impl Default for FrameCounter {
    fn default() -> Self {
        FrameCounter { framer: Framer::new(Limits::default().max_message_bytes) }
    }
}

impl FrameCounter {
    /// Frames every complete value in `buf` (from its start) and returns how many.
    pub fn count(&mut self, buf: &[u8]) -> usize {
        self.framer = Framer::new(Limits::default().max_message_bytes);
        let mut frames = 0;
        while let Step::Frame(_) = self.framer.next(buf) {
            frames += 1;
        }
        frames
    }
}

/// The peek: parse in place with the reused simd-json tape, then classify.
#[derive(Debug, Default)]
pub struct Peek {
    peeker: Peeker,
}

impl Peek {
    /// Peeks a QMP request in `msg[..len]` (followed by [`PADDING`] bytes) as a session with
    /// `oob` negotiated would; returns whether it takes the OOB lane and the length of the
    /// command name, or `None` for an error. Parsing is in place: `msg` is modified.
    pub fn qmp(&mut self, msg: &mut [u8], len: usize) -> Option<(bool, usize)> {
        let tape = self.peeker.parse(msg, len).ok()?;
        let request = crate::qmp::classify(&tape.0, Mode::Commands { oob: true });
        let result = request.target.ok().map(|t| (request.oob, t.name.len()));
        self.peeker.recycle(tape);
        result
    }

    /// Peeks a JSON-RPC request; returns the method name's length, or `None` for an error.
    pub fn jsonrpc(&mut self, msg: &mut [u8], len: usize) -> Option<usize> {
        let tape = self.peeker.parse(msg, len).ok()?;
        let request = crate::jsonrpc::classify(&tape.0, Form::Rpc1);
        let result = request.target.ok().map(|t| t.name.len());
        self.peeker.recycle(tape);
        result
    }
}

/// Builds what a parser thread has: a poll with the executor's waker, its mailbox and inbox.
fn parser_side(threads: usize) -> (Vec<Poll>, Arc<[Mailbox]>, Vec<Receiver<Inbox>>) {
    let mut polls = Vec::new();
    let mut mailboxes = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..threads {
        let poll = Poll::new().expect("poll");
        let waker = Waker::new(poll.registry(), crate::parser::WAKER).expect("waker");
        let (mailbox, inbox) = Mailbox::new(waker);
        polls.push(poll);
        mailboxes.push(mailbox);
        inboxes.push(inbox);
    }
    (polls, mailboxes.into(), inboxes)
}

/// Sleeps in `poll` like a parser thread until the inbox has a message (bounded, so a bug
/// cannot hang a benchmark forever).
fn wait_for_inbox(
    poll: &mut Poll,
    events: &mut Events,
    mailbox: &Mailbox,
    inbox: &Receiver<Inbox>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while inbox.is_empty() {
        assert!(Instant::now() < deadline, "no reply from the executor");
        let timeout = if mailbox.try_sleep(inbox) { Some(Duration::from_secs(1)) } else { None };
        if timeout.is_some() {
            let _ = poll.poll(events, timeout);
        }
        mailbox.awake();
    }
}

/// A parser-side sender and an executor thread with trivial state: the round trip of the
/// job queue, the executor's batch loop, the mailbox and the wake-only-if-asleep protocol.
pub struct Handoff {
    jobs: Sender<Job<(), ()>>,
    poll: Poll,
    events: Events,
    mailboxes: Arc<[Mailbox]>,
    inbox: Receiver<Inbox>,
    executor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff")
    }
}

impl Handoff {
    /// Starts the executor thread.
    pub fn start() -> Handoff {
        let (mut polls, mailboxes, mut inboxes) = parser_side(1);
        let (jobs, rx) = crossbeam_channel::bounded(Limits::default().queue_capacity);
        let registry = Registry::new((), Arc::new(()));
        let info = Arc::new(ServerInfo::new(&registry, "bench".into()));
        let executor = Executor::new(
            (),
            registry.shared,
            rx,
            Arc::clone(&mailboxes),
            Arc::new(Stats::new(1)),
            info,
        );
        let executor = std::thread::spawn(move || executor.run());
        Handoff {
            jobs,
            poll: polls.remove(0),
            events: Events::with_capacity(16),
            mailboxes,
            inbox: inboxes.remove(0),
            executor: Some(executor),
        }
    }

    /// Sends `batch` no-op in-band jobs, then waits (asleep in `poll`, as a parser thread
    /// does) until all their outcomes are back.
    pub fn round_trip(&mut self, batch: usize) {
        for _ in 0..batch {
            let call = Box::new(|_: &mut crate::Exec<'_, (), ()>| Ok(Reply::new(Empty {})));
            self.jobs.send(job(Work::Call(call))).expect("executor runs");
        }
        let mut received = 0;
        while received < batch {
            wait_for_inbox(&mut self.poll, &mut self.events, &self.mailboxes[0], &self.inbox);
            received += self.inbox.try_iter().count();
        }
    }
}

fn job<S, V>(work: Work<S, V>) -> Job<S, V> {
    Job { thread: 0, conn: ConnId { key: 0, serial: 0 }, enqueued: Instant::now(), work }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let _ = self.jobs.send(job(Work::ParserDone));
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

/// One parser thread's request path for one negotiated QMP session, without a socket:
/// framing, peek, OOB execution, job hand-off to a real executor thread running the demo
/// command set, reply encoding.
pub struct Pipeline {
    worker: Worker<DemoState, DemoShared>,
    input: Input,
    session: Session<DemoState, DemoShared>,
    poll: Poll,
    events: Events,
    mailboxes: Arc<[Mailbox]>,
    inbox: Receiver<Inbox>,
    executor: Option<JoinHandle<()>>,
    /// Replies produced so far (tests only; benchmarks discard them).
    #[cfg(test)]
    collected: Vec<u8>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

impl Pipeline {
    /// Starts the executor with the demo command set; the session has `oob` negotiated.
    pub fn start() -> Pipeline {
        let limits = Limits::default();
        let (mut polls, mailboxes, mut inboxes) = parser_side(1);
        let (jobs, rx) = crossbeam_channel::bounded(limits.queue_capacity);
        let registry = crate::demo::registry();
        let info = Arc::new(ServerInfo::new(&registry, Config::default().package));
        let stats = Arc::new(Stats::new(1));
        let Registry { state, shared, commands, .. } = registry;
        let worker = Worker::new(
            0,
            Arc::new(commands),
            Arc::clone(&shared),
            Arc::clone(&stats),
            Arc::clone(&info),
            jobs,
            limits,
        );
        let executor = Executor::new(state, shared, rx, Arc::clone(&mailboxes), stats, info);
        let executor = std::thread::spawn(move || executor.run());
        let mut session = Session::new(ConnId { key: 0, serial: 0 }, Dialect::Qmp);
        session.mode = Mode::Commands { oob: true };
        Pipeline {
            worker,
            input: Input::new(limits.max_message_bytes),
            session,
            poll: polls.remove(0),
            events: Events::with_capacity(16),
            mailboxes,
            inbox: inboxes.remove(0),
            executor: Some(executor),
            #[cfg(test)]
            collected: Vec::new(),
        }
    }

    /// Feeds `bytes` as if read from the socket, handles every message, waits for every
    /// in-band reply, and returns the reply bytes produced (then discards them).
    pub fn feed(&mut self, mut bytes: &[u8]) -> usize {
        while !bytes.is_empty() {
            self.input.read_from(&mut bytes).expect("reading a slice cannot fail");
            self.worker.handle_input(&mut self.input, &mut self.session);
        }
        let limit = self.worker.limits.max_inflight_per_conn;
        while !self.session.lane.is_idle() {
            self.session.lane.submit_parked(limit, &self.worker.jobs);
            wait_for_inbox(&mut self.poll, &mut self.events, &self.mailboxes[0], &self.inbox);
            while let Ok(Inbox::Reply { outcome, .. }) = self.inbox.try_recv() {
                self.session.complete(&outcome);
            }
        }
        let produced = self.session.output.pending();
        #[cfg(test)]
        self.collected.extend_from_slice(&self.session.output.buf);
        self.session.output.buf.clear();
        produced
    }

    /// Everything `feed` produced since the last call (tests only).
    #[cfg(test)]
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.collected)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.worker.jobs.send(job(Work::ParserDone));
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

/// The sessions a [`Pipeline`] can serve (fuzzing drives all three through one pipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// QMP before `qmp_capabilities`.
    QmpNegotiating,
    /// QMP with `oob` negotiated (what [`Pipeline::start`] serves).
    QmpOob,
    /// OVS JSON-RPC.
    JsonRpc,
}

impl Pipeline {
    /// Replaces the session (and its read buffer) with a fresh one of `kind`, as a new
    /// connection would get, so one pipeline (one executor thread) serves many inputs.
    pub fn restart_session(&mut self, kind: SessionKind) {
        assert!(self.session.lane.is_idle(), "restart only between feeds");
        let dialect = if kind == SessionKind::JsonRpc { Dialect::JsonRpc } else { Dialect::Qmp };
        self.session = Session::new(ConnId { key: 0, serial: 0 }, dialect);
        if kind == SessionKind::QmpOob {
            self.session.mode = Mode::Commands { oob: true };
        }
        self.input = Input::new(self.worker.limits.max_message_bytes);
    }

    /// Like [`Pipeline::feed`], but appends the reply bytes to `out`. Stops reading after a
    /// protocol error that closes the session, as the parser thread does.
    pub fn feed_into(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while !bytes.is_empty() && !self.session.closing {
            self.input.read_from(&mut bytes).expect("reading a slice cannot fail");
            self.worker.handle_input(&mut self.input, &mut self.session);
        }
        let limit = self.worker.limits.max_inflight_per_conn;
        while !self.session.lane.is_idle() {
            self.session.lane.submit_parked(limit, &self.worker.jobs);
            wait_for_inbox(&mut self.poll, &mut self.events, &self.mailboxes[0], &self.inbox);
            while let Ok(Inbox::Reply { outcome, .. }) = self.inbox.try_recv() {
                self.session.complete(&outcome);
            }
        }
        out.extend_from_slice(&self.session.output.buf);
        self.session.output.buf.clear();
    }
}

impl Peek {
    /// Whether the peek's parse (before any classification) accepts `msg[..len]` (followed
    /// by [`PADDING`] bytes) as one JSON value without duplicate keys. Modifies `msg`.
    pub fn accepts(&mut self, msg: &mut [u8], len: usize) -> bool {
        match self.peeker.parse(msg, len) {
            Ok(tape) => {
                self.peeker.recycle(tape);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_answers_oob_and_in_band_requests() {
        let mut pipeline = Pipeline::start();
        let oob = br#"{"exec-oob":"ping","id":1}"#;
        assert_eq!(pipeline.feed(oob), br#"{"return":{},"id":1}"#.len() + 2);
        let inband = br#"{"execute":"counter-add","arguments":{"delta":1},"id":1}"#.repeat(300);
        let reply = br#"{"return":{"value":100},"id":1}"#.len() + 2;
        assert!(pipeline.feed(&inband) >= 300 * reply - 300);
    }

    #[test]
    fn handoff_round_trips_batches() {
        let mut handoff = Handoff::start();
        handoff.round_trip(1);
        handoff.round_trip(100);
    }

    #[test]
    fn frame_counter_and_peek_see_every_request() {
        let stream = br#"{"execute":"ping"} {"exec-oob":"ping","id":[1]}"#;
        assert_eq!(FrameCounter::default().count(stream), 2);
        let mut msg = br#"{"exec-oob":"ping","id":[1]}"#.to_vec();
        let len = msg.len();
        msg.resize(len + PADDING, 0);
        assert_eq!(Peek::default().qmp(&mut msg, len), Some((true, 4)));
    }

    mod hostile_input {
        use proptest::prelude::*;

        use super::super::Pipeline;

        /// Bytes weighted towards what breaks framers and parsers: structure, quotes,
        /// backslashes, newlines, control bytes, invalid UTF-8, fragments of real requests.
        fn hostile() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                prop::sample::select(vec![
                    &b"{"[..],
                    b"}",
                    b"[",
                    b"]",
                    b"\"",
                    b"\\",
                    b":",
                    b",",
                    b" ",
                    b"\n",
                    b"\r",
                    b"\x00",
                    b"\x01",
                    b"\xff",
                    b"\xfe",
                    b"\xc3",
                    b"1",
                    b"-",
                    b"e",
                    b"null",
                    b"\"id\"",
                    b"\"exec-oob\"",
                    b"\"execute\"",
                    b"\"ping\"",
                    b"\"arguments\"",
                ])
                .prop_map(<[u8]>::to_vec),
                Just(br#"{"exec-oob":"ping","id":1}"#.to_vec()),
            ];
            prop::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
        }

        proptest! {
            /// Whatever arrives, in whatever chunks, the path never panics or hangs, and every
            /// line it writes is one JSON object with `return` or `error`.
            #[test]
            fn hostile_bytes_only_ever_get_well_formed_replies(
                input in hostile(),
                chunk in 1usize..40,
            ) {
                let mut pipeline = Pipeline::start();
                for piece in input.chunks(chunk) {
                    pipeline.feed(piece);
                }
                // A complete request after the garbage: may be swallowed by an unclosed value
                // (as in QEMU), but must never break the output.
                pipeline.feed(b"]}]}\"\n{\"exec-oob\":\"ping\"}");
                let out = pipeline.take_output();
                for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    let line = line.strip_suffix(b"\r").expect("QMP lines end with CRLF");
                    let value: serde_json::Value = serde_json::from_slice(line)
                        .unwrap_or_else(|e| panic!("bad reply {:?}: {e}", String::from_utf8_lossy(line)));
                    prop_assert!(value.get("return").is_some() || value.get("error").is_some(), "{value}");
                }
            }
        }
    }
}
