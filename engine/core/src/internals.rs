//! Hot-path pieces exposed for the criterion benchmarks and the fuzz targets (cargo feature
//! `internals`). Not a public API: no stability promise, compiled only when the feature is
//! on. (The framer and the peek need nothing here: `ooblane-wire`'s public API is theirs.)
//!
//! Each type drives the engine's own code, not a copy of it: [`Handoff`] the batched
//! hand-off, executor and mailbox wake-up across two threads, [`Pipeline`] the whole
//! in-process request path of a parser thread (bytes in, reply bytes out) without sockets.
//! Both are wired by the same constructor as a real server (`wiring.rs`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pipeline hands its output over only at the end of a feed: no byte budget (the
/// parser thread's budget is exercised by the socket-level tests).
const UNBUDGETED: usize = usize::MAX;

use mio::{Events, Poll};

use ooblane_wire::qmp::Mode;
use ooblane_wire::{Dialect, Empty, NoArgs};

use crate::config::{Config, Limits};
use crate::conn::{Input, Session};
use crate::demo::{DemoShared, DemoState};
use crate::dispatch::Worker;
use crate::job::{Arrival, ConnId, Controller, Done, Job, Mailbox, Work};
use crate::registry::Registry;
use crate::wiring::{ParserParts, Wiring};

/// Sleeps in `poll` like a parser thread until the mailbox has an outcome (bounded, so a bug
/// cannot hang a benchmark forever).
fn wait_for_outcome<S, V>(poll: &mut Poll, events: &mut Events, mailbox: &Mailbox<S, V>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mailbox.is_empty() {
        assert!(Instant::now() < deadline, "no outcome from the executor");
        if mailbox.try_sleep() {
            let _ = poll.poll(events, Some(Duration::from_secs(1)));
        }
        mailbox.awake();
    }
}

/// A parser thread's side of a wired server (its poll and worker), with the executor
/// running on a thread of its own: what [`Handoff`] and [`Pipeline`] drive.
struct Harness<S, V> {
    worker: Worker<S, V>,
    poll: Poll,
    events: Events,
    controller: Controller<S, V>,
    executor: Option<JoinHandle<()>>,
}

impl<S: Send + 'static, V: Send + Sync + 'static> Harness<S, V> {
    /// Wires one parser thread to an executor owning `registry`'s state, as `Server::start`
    /// does, and starts the executor.
    fn start(registry: Registry<S, V>) -> Self {
        let Wiring { mut parsers, executor, controller, .. } =
            Wiring::new(registry, 1, Limits::default(), Config::default().package, None)
                .expect("poll and waker");
        let ParserParts { poll, worker } = parsers.remove(0);
        let executor = std::thread::spawn(move || executor.run());
        Harness {
            worker,
            poll,
            events: Events::with_capacity(16),
            controller,
            executor: Some(executor),
        }
    }

    /// Hands this turn's jobs over, waits for at least one outcome, and passes each to
    /// `complete` before recycling its call; returns how many came back.
    fn round(&mut self, mut complete: impl FnMut(&mut Done<S, V>)) -> usize {
        self.worker.jobs.flush();
        let mailbox = self.worker.jobs.exchange().mailbox(0);
        wait_for_outcome(&mut self.poll, &mut self.events, mailbox);
        let mut n = 0;
        while let Some(arrival) = mailbox.try_take() {
            let Arrival::Done(mut done) = arrival else { continue }; // no events here
            complete(&mut done);
            self.worker.calls.recycle(done.call);
            n += 1;
        }
        self.worker.jobs.completed(n);
        n
    }
}

impl<S, V> Drop for Harness<S, V> {
    fn drop(&mut self) {
        self.controller.send(Work::ParserDone);
        if let Some(executor) = self.executor.take() {
            let _ = executor.join();
        }
    }
}

/// A parser-side sender and an executor thread with trivial state: the round trip of a
/// batch of in-band jobs through the hand-off, the executor's batch loop, the outcome
/// mailbox and the wake-only-if-asleep protocol.
pub struct Handoff {
    harness: Harness<(), ()>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff")
    }
}

/// The one command [`Handoff`] sends: does nothing, returns `{}`.
const NOOP: &str = "noop";

impl Handoff {
    /// Starts the executor thread.
    pub fn start() -> Handoff {
        let mut registry = Registry::new((), Arc::new(()));
        registry.inband(NOOP, |_, _: NoArgs| Ok(Empty {}));
        Handoff { harness: Harness::start(registry) }
    }

    /// Hands `batch` no-op in-band calls to the executor as one loop turn, then waits (asleep
    /// in `poll`, as a parser thread does) until all their outcomes are back.
    pub fn round_trip(&mut self, batch: usize) {
        let worker = &mut self.harness.worker;
        let command = &worker.commands[NOOP];
        for _ in 0..batch {
            let free = worker.calls.free_list(command.index);
            let call = (command.prepare)(&mut worker.peeker, None, free).expect("no arguments");
            let job = Job { conn: ConnId { key: 0, serial: 0 }, work: Work::Call(call) };
            worker.jobs.try_push(job).expect("a batch within the queue capacity");
        }
        let mut received = 0;
        while received < batch {
            received += self.harness.round(|_| {});
        }
    }
}

/// One parser thread's request path for one negotiated QMP session, without a socket:
/// framing, peek, OOB execution, job hand-off to a real executor thread running the demo
/// command set, reply encoding.
pub struct Pipeline {
    harness: Harness<DemoState, DemoShared>,
    input: Input,
    session: Session<DemoState, DemoShared>,
    /// Reused buffer for `feed`'s replies.
    replies: Vec<u8>,
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
        let mut session = Session::new(ConnId { key: 0, serial: 0 }, Dialect::Qmp, UNBUDGETED);
        session.mode = Mode::Commands { oob: true };
        Pipeline {
            harness: Harness::start(crate::demo::registry()),
            input: Input::new(Limits::default().max_message_bytes),
            session,
            replies: Vec::new(),
            #[cfg(test)]
            collected: Vec::new(),
        }
    }

    /// Feeds `bytes` as if read from the socket, handles every message, waits for every
    /// in-band reply, and returns the reply bytes produced (then discards them).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut out = std::mem::take(&mut self.replies);
        out.clear();
        self.feed_into(bytes, &mut out);
        #[cfg(test)]
        self.collected.extend_from_slice(&out);
        let produced = out.len();
        self.replies = out;
        produced
    }

    /// Like [`Pipeline::feed`], but appends the reply bytes to `out`. Stops reading after a
    /// protocol error that closes the session, as the parser thread does.
    pub fn feed_into(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while !bytes.is_empty() && !self.session.closing {
            self.input.read_from(&mut bytes).expect("reading a slice cannot fail");
            self.harness.worker.handle_input(&mut self.input, &mut self.session);
        }
        let limit = self.harness.worker.limits.max_inflight_per_conn;
        while !self.session.lane.is_idle() {
            let session = &mut self.session;
            let (jobs, memory) = (&mut self.harness.worker.jobs, &self.harness.worker.stats.memory);
            session.lane.submit_parked(limit, jobs, &mut session.budget, memory);
            let session = &mut self.session;
            self.harness.round(|done| session.complete(&mut *done.call));
        }
        out.extend_from_slice(&self.session.output.buf);
        self.session.output.buf.clear();
    }

    /// Everything `feed` produced since the last call (tests only).
    #[cfg(test)]
    fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.collected)
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
        self.session = Session::new(ConnId { key: 0, serial: 0 }, dialect, UNBUDGETED);
        if kind == SessionKind::QmpOob {
            self.session.mode = Mode::Commands { oob: true };
        }
        self.input = Input::new(self.harness.worker.limits.max_message_bytes);
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
