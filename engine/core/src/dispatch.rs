//! Per-message work on a parser thread: peek a framed message, classify it in its
//! connection's dialect, and route it: run it here (OOB lane: reply written at once), decode
//! it into a job for the executor (in-band lane), or answer an error in the lane the dialect
//! puts it in.
//!
//! Nothing here blocks. The OOB path allocates nothing in steady state: the id is copied into
//! a reused scratch buffer, the tape and argument tape are reused, and the reply is encoded
//! into the connection's write buffer.

use std::sync::Arc;

use ooblane_wire::CommandError;
use ooblane_wire::Dialect;
use ooblane_wire::jsonrpc;
use ooblane_wire::peek::{Peeker, members};
use ooblane_wire::qmp::{self, CapabilitiesArgs, Mode, Target};
use ooblane_wire::reply::{self, Form, IdBuf, ReplyTo};
use ooblane_wire::{Frame, Step, copy_compact};
use simd_json::Node;

use crate::call::{BoxedCall, CallPool};
use crate::config::Limits;
use crate::conn::{Input, Session};
use crate::exec::{Ctx, ServerInfo};
use crate::executor::contain_panic;
use crate::job::{Job, JobSender, Work};
use crate::lane::Pushed;
use crate::registry::{Command, Lane as CommandLane};
use crate::stats::{Stats, ThreadStats, bump};

/// Room made in the write buffer before each message is handled: most replies (OOB, errors,
/// in-band ones written at once) are far smaller.
const SMALL_REPLY: usize = 512;

/// How far [`Worker::handle_input`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Every complete message (or the session is closing).
    All,
    /// Stopped at the byte budget; complete messages may be left in the buffer.
    Held,
}

/// The commands, types erased, shared read-only by all parser threads.
pub(crate) type Commands<S, V> = std::collections::HashMap<String, Command<S, V>>;

/// A classified message, whatever its dialect.
struct Routed<'t, 'i> {
    /// QMP `exec-oob`: answered at once, errors included.
    oob: bool,
    form: Form,
    /// JSON-RPC `params`, for `echo`.
    params: Option<&'t [Node<'i>]>,
    target: Result<Target<'t, 'i>, CommandError>,
}

/// What a parser thread needs to handle messages, apart from its connections.
pub(crate) struct Worker<S, V> {
    pub(crate) thread: usize,
    pub(crate) peeker: Peeker,
    pub(crate) commands: Arc<Commands<S, V>>,
    pub(crate) shared: Arc<V>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) info: Arc<ServerInfo>,
    /// This thread's side of the hand-off to the executor.
    pub(crate) jobs: JobSender<S, V>,
    /// Reusable in-band calls, one free list per command.
    pub(crate) calls: CallPool<S, V>,
    pub(crate) limits: Limits,
    /// The current request's id, compacted (empty: none, or a JSON-RPC notification).
    id: Vec<u8>,
    /// Times OOB handlers for the metrics by raw TSC reads, converted only for the delta:
    /// `clock_gettime` cost 9% of the OOB path in a virtual machine.
    clock: quanta::Clock,
}

impl<S, V> Worker<S, V> {
    pub(crate) fn new(
        commands: Arc<Commands<S, V>>,
        shared: Arc<V>,
        stats: Arc<Stats>,
        info: Arc<ServerInfo>,
        jobs: JobSender<S, V>,
        limits: Limits,
    ) -> Self {
        Worker {
            thread: jobs.thread(),
            peeker: Peeker::default(),
            calls: CallPool::new(commands.len()),
            commands,
            shared,
            stats,
            info,
            jobs,
            limits,
            id: Vec::with_capacity(64),
            clock: quanta::Clock::new(),
        }
    }

    fn counters(&self) -> &ThreadStats {
        &self.stats.threads[self.thread]
    }

    /// Handles every complete message in a connection's read buffer. Stops at a protocol
    /// error that closes the session (JSON-RPC), and when the connection's byte budget is
    /// reached: then the rest stays in the buffer ([`Handled::Held`]), the framer resumes
    /// there next time.
    pub(crate) fn handle_input(&mut self, input: &mut Input, conn: &mut Session<S, V>) -> Handled {
        while !conn.closing {
            // Room for a small reply, grown in steps rather than doubled (see `make_room`).
            conn.output.make_room(SMALL_REPLY);
            conn.sync_unsent();
            conn.budget.publish_if_due(&self.stats.memory);
            if conn.budget.pause(&self.stats.memory).is_some() {
                return Handled::Held;
            }
            match input.next_frame() {
                Step::Frame(frame) => self.on_frame(input, conn, frame),
                Step::TooLarge => {
                    let limit = self.limits.max_message_bytes;
                    self.bad_input(
                        conn,
                        &format!("JSON parse error, message exceeds {limit} bytes"),
                    );
                }
                Step::Incomplete => return Handled::All,
            }
        }
        Handled::All
    }

    /// Handles one framed message of a connection.
    pub(crate) fn on_frame(&mut self, input: &mut Input, conn: &mut Session<S, V>, frame: Frame) {
        self.id.clear();
        if let Some(span) = frame.id.clone() {
            // Copied before parsing: simd-json unescapes strings in place.
            copy_compact(&input.bytes()[span], &mut self.id);
        }
        if frame.too_deep {
            return self.bad_input(conn, "JSON parse error, nesting too deep");
        }
        let len = frame.range.len();
        let tape = match self.peeker.parse(input.message_mut(frame.range), len) {
            Ok(tape) => tape,
            Err(malformed) => return self.bad_input(conn, &malformed.describe()),
        };
        if self.id.is_empty() {
            self.recover_escaped_id(&tape.0);
        }
        let routed = self.classify(conn, &tape.0);
        self.route(conn, routed, len);
        self.peeker.recycle(tape);
    }

    fn classify<'t, 'i>(
        &mut self,
        conn: &mut Session<S, V>,
        nodes: &'t [Node<'i>],
    ) -> Routed<'t, 'i> {
        match conn.dialect {
            Dialect::Qmp => {
                let request = qmp::classify(nodes, conn.mode);
                Routed { oob: request.oob, form: Form::Qmp, params: None, target: request.target }
            }
            Dialect::JsonRpc => {
                let request = jsonrpc::classify(nodes, conn.rpc_form);
                conn.rpc_form = request.form;
                if request.notification {
                    self.id.clear();
                } else if self.id.is_empty() {
                    self.id.extend_from_slice(b"null"); // a batch or non-object: answer anyway
                }
                Routed {
                    oob: false,
                    form: request.form,
                    params: request.params,
                    target: request.target,
                }
            }
        }
    }

    fn route(&mut self, conn: &mut Session<S, V>, routed: Routed<'_, '_>, bytes: usize) {
        let Routed { oob, form, params, target } = routed;
        let target = match target {
            Ok(target) => target,
            Err(err) => return self.answer_error(conn, oob, form, &err),
        };
        match (conn.dialect, target.name) {
            (Dialect::Qmp, qmp::CAPABILITIES) => return self.negotiate(conn, target.args),
            (Dialect::JsonRpc, jsonrpc::ECHO) => return self.echo(conn, form, params),
            _ => {}
        }
        let Some(command) = self.commands.get(target.name) else {
            let err =
                CommandError::not_found(format!("The command {} has not been found", target.name));
            return self.answer_error(conn, oob, form, &err);
        };
        // QMP: `exec-oob` asks for the OOB lane; JSON-RPC: allow-oob methods always take it.
        let wants_oob =
            oob || (conn.dialect == Dialect::JsonRpc && command.lane == CommandLane::AllowOob);
        self.counters().count_routed(conn.dialect, wants_oob, command.index);
        if !wants_oob {
            let free = self.calls.free_list(command.index);
            let prepared = (command.prepare)(&mut self.peeker, target.args, free);
            return self.submit(conn, form, prepared, bytes);
        }
        let Some(run) = &command.run_oob else {
            let err =
                CommandError::generic(format!("The command {} does not support OOB", target.name));
            return self.answer_error(conn, true, form, &err);
        };
        bump(&self.stats.threads[self.thread].oob);
        let ctx = Ctx { shared: &*self.shared, stats: &self.stats, info: &self.info };
        let peeker = &mut self.peeker;
        let started = self.clock.raw();
        let written = reply::write_return(&mut conn.output.buf, form, &self.id, |out| {
            contain_panic(|| run(&ctx, peeker, target.args, out))
        });
        self.stats.threads[self.thread]
            .oob_latency
            .record(self.clock.delta(started, self.clock.raw()));
        if let Err(err) = written {
            self.answer_error(conn, true, form, &err);
        }
    }

    /// A message that is not a parsable JSON value, or over a limit: one error without id
    /// (JSON-RPC: `"id": null`), in the in-band lane. JSON-RPC then closes the connection, as
    /// OVS does: its clients cannot resynchronise after a protocol error.
    pub(crate) fn bad_input(&mut self, conn: &mut Session<S, V>, desc: &str) {
        bump(&self.counters().bad_input);
        self.id.clear();
        let form = match conn.dialect {
            Dialect::Qmp => Form::Qmp,
            Dialect::JsonRpc => {
                self.id.extend_from_slice(b"null");
                conn.closing = true;
                conn.rpc_form
            }
        };
        self.answer_error(conn, false, form, &CommandError::parse(desc));
    }

    /// A timeout ends the session: one error without id (JSON-RPC: `"id": null`), in order
    /// after the replies owed; no more input is handled.
    pub(crate) fn time_out(&mut self, conn: &mut Session<S, V>, desc: &str) {
        self.id.clear();
        let form = match conn.dialect {
            Dialect::Qmp => Form::Qmp,
            Dialect::JsonRpc => {
                self.id.extend_from_slice(b"null");
                conn.rpc_form
            }
        };
        conn.closing = true;
        self.answer_error(conn, false, form, &CommandError::generic(desc));
    }

    /// The key `"id"` written with escapes escapes the framer: re-encode the id from the tape.
    fn recover_escaped_id(&mut self, nodes: &[Node<'_>]) {
        let Some((_, value)) = members(nodes).find(|(k, _)| *k == "id") else { return };
        if let Ok(id) = self.peeker.decode::<serde_json::Value>(Some(value)) {
            serde_json::to_writer(&mut self.id, &id).expect("a JSON value always encodes");
        }
    }

    fn answer_error(
        &mut self,
        conn: &mut Session<S, V>,
        oob: bool,
        form: Form,
        err: &CommandError,
    ) {
        self.counters().count_error(err.class);
        let id = &self.id;
        if oob {
            reply::error(&mut conn.output.buf, form, err, id);
        } else {
            in_order(conn, |out| reply::error(out, form, err, id));
        }
    }

    /// QMP `qmp_capabilities` in negotiation mode: enables the requested capabilities.
    fn negotiate(&mut self, conn: &mut Session<S, V>, args: Option<&[Node<'_>]>) {
        let oob = self.peeker.decode::<CapabilitiesArgs>(args).and_then(|args| {
            let enable = args.enable.unwrap_or_default();
            match enable.iter().find(|cap| *cap != "oob") {
                Some(cap) => Err(format!("Parameter 'enable' does not accept value '{cap}'")),
                None => Ok(!enable.is_empty()),
            }
        });
        match oob {
            Ok(oob) => {
                conn.mode = Mode::Commands { oob };
                let id = &self.id;
                in_order(conn, |out| {
                    qmp::begin_return(out);
                    out.extend_from_slice(b"{}");
                    qmp::end_reply(out, id);
                });
            }
            Err(desc) => self.answer_error(conn, false, Form::Qmp, &CommandError::generic(desc)),
        }
    }

    /// JSON-RPC `echo` (the OVS keepalive): `result` is `params`, answered here, at once.
    fn echo(&mut self, conn: &mut Session<S, V>, form: Form, params: Option<&[Node<'_>]>) {
        bump(&self.counters().oob);
        let params = match params {
            Some(nodes) => self.peeker.decode::<serde_json::Value>(Some(nodes)),
            None => Ok(serde_json::Value::Array(Vec::new())),
        };
        let written = reply::write_return(&mut conn.output.buf, form, &self.id, |out| {
            let params = params.map_err(CommandError::invalid_arguments)?;
            serde_json::to_writer(out, &params).map_err(|e| CommandError::generic(e.to_string()))
        });
        if let Err(err) = written {
            self.answer_error(conn, true, form, &err);
        }
    }

    /// In-band: queues the decoded call for the executor, or answers the decoding error in
    /// order.
    fn submit(
        &mut self,
        conn: &mut Session<S, V>,
        form: Form,
        prepared: Result<BoxedCall<S, V>, CommandError>,
        bytes: usize,
    ) {
        let call = match prepared {
            Ok(call) => call,
            Err(err) => return self.answer_error(conn, false, form, &err),
        };
        bump(&self.counters().inband);
        let job = Job { conn: conn.id, work: Work::Call(call) };
        let to = ReplyTo { form, id: IdBuf::new(&self.id) };
        let limit = self.limits.max_inflight_per_conn;
        let (jobs, memory) = (&mut self.jobs, &self.stats.memory);
        match conn.lane.push_job(to, job, bytes, limit, jobs, &mut conn.budget, memory) {
            Pushed::Submitted => {}
            Pushed::Parked | Pushed::ParkedFull => bump(&self.counters().parked),
        }
    }
}

/// Writes a reply now if nothing in the lane is waiting, else queues it behind the waiting
/// ones.
fn in_order<S, V>(conn: &mut Session<S, V>, encode: impl FnOnce(&mut Vec<u8>)) {
    if conn.lane.is_idle() {
        encode(&mut conn.output.buf);
    } else {
        let mut reply = Vec::new();
        encode(&mut reply);
        if !reply.is_empty() {
            conn.lane.push_ready(reply, &mut conn.budget);
        }
    }
}
