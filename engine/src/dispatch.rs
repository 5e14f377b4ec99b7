//! Per-message work on a parser thread: peek a framed QMP message, classify it, and either
//! run it here (OOB lane: reply written at once), decode it into a job for the executor
//! (in-band lane), or answer an error in the lane QEMU would use.
//!
//! Nothing here blocks. The OOB path allocates nothing in steady state: the id is copied into
//! a reused scratch buffer, the tape and argument tape are reused, the reply is encoded into
//! the connection's write buffer.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use simd_json::Node;

use crate::config::Limits;
use crate::conn::{Input, Session};
use crate::framer::{Frame, copy_compact};
use crate::job::{Job, Work};
use crate::lane::{IdBuf, Lane, Pushed};
use crate::peek::{Peeker, members};
use crate::qmp::{self, CapabilitiesArgs, Mode};
use crate::registry::{Command, CommandError, Ctx, ServerInfo};
use crate::stats::{Stats, ThreadStats, bump};

/// The commands, types erased, shared read-only by all parser threads.
pub(crate) type Commands<S, V> = std::collections::HashMap<String, Command<S, V>>;

/// What a parser thread needs to handle messages, apart from its connections.
pub(crate) struct Worker<S, V> {
    pub(crate) thread: usize,
    pub(crate) peeker: Peeker,
    pub(crate) commands: Arc<Commands<S, V>>,
    pub(crate) shared: Arc<V>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) info: Arc<ServerInfo>,
    pub(crate) jobs: Sender<Job<S, V>>,
    pub(crate) limits: Limits,
    /// The current request's id, compacted (empty: none).
    id: Vec<u8>,
    /// Set when a job was parked because the queue was full.
    pub(crate) queue_full: bool,
}

impl<S, V> Worker<S, V> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        thread: usize,
        commands: Arc<Commands<S, V>>,
        shared: Arc<V>,
        stats: Arc<Stats>,
        info: Arc<ServerInfo>,
        jobs: Sender<Job<S, V>>,
        limits: Limits,
    ) -> Self {
        Worker {
            thread,
            peeker: Peeker::default(),
            commands,
            shared,
            stats,
            info,
            jobs,
            limits,
            id: Vec::with_capacity(64),
            queue_full: false,
        }
    }

    fn counters(&self) -> &ThreadStats {
        &self.stats.threads[self.thread]
    }

    /// Handles one framed message of `conn`.
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
        let nodes = &tape.0;
        if self.id.is_empty() {
            self.recover_escaped_id(nodes);
        }
        let request = qmp::classify(nodes, conn.mode);
        match request.target {
            Err(err) => self.answer_error(conn, request.oob, &err),
            Ok(t) if t.name == qmp::CAPABILITIES => self.negotiate(conn, t.args),
            Ok(t) => match self.commands.get(t.name) {
                None => {
                    let err = CommandError::not_found(format!(
                        "The command {} has not been found",
                        t.name
                    ));
                    self.answer_error(conn, request.oob, &err);
                }
                Some(_) if request.oob => self.run_oob(conn, t.name, t.args),
                Some(command) => {
                    let prepared = (command.prepare)(&mut self.peeker, t.args);
                    self.submit(conn, prepared, len);
                }
            },
        }
        self.peeker.recycle(tape);
    }

    /// A message that is not a parsable JSON value, or over a limit: one `GenericError`
    /// without id, in the in-band lane.
    pub(crate) fn bad_input(&mut self, conn: &mut Session<S, V>, desc: &str) {
        bump(&self.counters().bad_input);
        self.id.clear();
        self.answer_error(conn, false, &CommandError::generic(desc));
    }

    /// The key `"id"` written with escapes escapes the framer: re-encode the id from the tape.
    fn recover_escaped_id(&mut self, nodes: &[Node<'_>]) {
        let Some((_, value)) = members(nodes).find(|(k, _)| *k == "id") else { return };
        if let Ok(id) = self.peeker.decode::<serde_json::Value>(Some(value)) {
            serde_json::to_writer(&mut self.id, &id).expect("a JSON value always encodes");
        }
    }

    fn answer_error(&mut self, conn: &mut Session<S, V>, oob: bool, err: &CommandError) {
        bump(&self.counters().errors);
        if oob {
            qmp::error(&mut conn.output.buf, err, &self.id);
        } else {
            in_order(&mut conn.lane, &mut conn.output.buf, |out| qmp::error(out, err, &self.id));
        }
    }

    /// `qmp_capabilities` in negotiation mode: enables the requested capabilities.
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
                in_order(&mut conn.lane, &mut conn.output.buf, |out| {
                    qmp::begin_return(out);
                    out.extend_from_slice(b"{}");
                    qmp::end_reply(out, id);
                });
            }
            Err(desc) => self.answer_error(conn, false, &CommandError::generic(desc)),
        }
    }

    /// `exec-oob`: runs the command on this thread and writes the reply now.
    fn run_oob(&mut self, conn: &mut Session<S, V>, name: &str, args: Option<&[Node<'_>]>) {
        let Some(run) = self.commands.get(name).and_then(|c| c.run_oob.as_ref()) else {
            let err = CommandError::generic(format!("The command {name} does not support OOB"));
            return self.answer_error(conn, true, &err);
        };
        bump(&self.counters().oob);
        let out = &mut conn.output.buf;
        let mark = out.len();
        qmp::begin_return(out);
        let ctx = Ctx { shared: &*self.shared, stats: &self.stats, info: &self.info };
        match run(&ctx, &mut self.peeker, args, out) {
            Ok(()) => qmp::end_reply(out, &self.id),
            Err(err) => {
                out.truncate(mark);
                self.answer_error(conn, true, &err);
            }
        }
    }

    /// In-band: queues the decoded call for the executor, or answers the decoding error in
    /// order.
    fn submit(
        &mut self,
        conn: &mut Session<S, V>,
        prepared: Result<crate::registry::Call<S, V>, CommandError>,
        bytes: usize,
    ) {
        let call = match prepared {
            Ok(call) => call,
            Err(err) => return self.answer_error(conn, false, &err),
        };
        bump(&self.counters().inband);
        let job = Job {
            thread: self.thread,
            conn: conn.id,
            enqueued: Instant::now(),
            work: Work::Call(call),
        };
        let limit = self.limits.max_inflight_per_conn;
        match conn.lane.push_job(IdBuf::new(&self.id), job, bytes, limit, &self.jobs) {
            Pushed::Submitted => {}
            Pushed::Parked => bump(&self.counters().parked),
            Pushed::ParkedFull => {
                bump(&self.counters().parked);
                self.queue_full = true;
            }
        }
    }
}

/// Writes a reply now if nothing in the lane is waiting, else queues it behind the waiting
/// ones.
fn in_order<S, V>(lane: &mut Lane<S, V>, out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    if lane.is_idle() {
        encode(out);
    } else {
        let mut reply = Vec::new();
        encode(&mut reply);
        lane.push_ready(reply);
    }
}
