//! The port for a replicated in-band log (opt-in: durable and cluster modes): the messages
//! the executor and a log backend send each other, and the one trait through which the
//! server opens a backend, starts it, and reads what `query-cluster` reports. Nothing here
//! knows how a log is replicated or stored: `ooblane-raft` (openraft and redb) implements
//! it; the core never names a consensus type. The executor's side of it is `parked.rs`.
//!
//! ```text
//!  executor ── ToLog: Propose (replicated calls), Read (a barrier for linearizable reads),
//!     ▲               Admin (a membership change) ──► backend: append, replicate, commit
//!     │                                                (on a majority); find the read index
//!     └── ToExecutor: Apply (committed proposals, in log order), Refuse (a verdict),
//!                     ReadDone, AdminDone, Save (a snapshot of the state),
//!                     Install (a snapshot's state) ◄──┘
//! ```
//!
//! The executor stays the only owner of the state: a backend never touches it, it hands the
//! executor committed entries and snapshots through the executor's job queue
//! ([`ExecutorLink`]), in order with every other job. How far the executor has applied is
//! the backend's business: it attaches an opaque [`Position`] to what it hands over and gets
//! it back with a saved state.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Most commands one proposal (one log entry) carries: bounds the size of an entry, and of
/// the messages a backend sends to replicate it (about 1 MiB of JSON with small arguments).
pub const MAX_PROPOSAL: usize = 512;

/// The member run that proposed an entry: its node id and a number chosen at each start, so
/// a restarted member never mistakes an entry of its previous life for one of its own calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The member's id.
    pub node: u64,
    /// A number that differs at every start of the member.
    pub run: u64,
}

/// Replicated commands in the order the proposing member's executor took them. Command `k`
/// is that member's call number `first_seq + k`. At most [`MAX_PROPOSAL`] commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who proposed it.
    pub origin: Origin,
    /// The proposing executor's number for the first command.
    pub first_seq: u64,
    /// The commands, in order.
    pub commands: Vec<LoggedCommand>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} command(s) from node {} run {} seq {}",
            self.commands.len(),
            self.origin.node,
            self.origin.run,
            self.first_seq
        )
    }
}

/// One command as logged: its registered name and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedCommand {
    /// The registered command name.
    pub name: String,
    /// The arguments, as JSON text.
    pub args: String,
}

/// What became of a proposal that will not be applied as its callers expect (or was).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Committed: its entry is (or will be) applied, and its callers answered then.
    Committed,
    /// Certainly not in the log: the caller may retry. The text says why.
    NotExecuted(String),
    /// Handed to a leader, fate unknown (leadership changed, no quorum in time).
    Unknown(String),
}

/// How far the executor has applied the log, as the backend describes it; opaque here. The
/// executor keeps the latest one it was given and returns it with a saved state, so a
/// snapshot always says exactly which entries it includes.
#[derive(Clone)]
pub struct Position(Arc<dyn Any + Send + Sync>);

impl Position {
    /// Wraps the backend's own description.
    pub fn new<T: Any + Send + Sync>(position: T) -> Position {
        Position(Arc::new(position))
    }

    /// The backend's description, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Position")
    }
}

/// A one-shot answer to a message.
pub type Reply<T> = Box<dyn FnOnce(T) + Send>;

/// What a backend asks of the executor, through its job queue (in order with every job).
pub enum ToExecutor {
    /// Apply these committed proposals, in order; the executor has then applied up to
    /// `position` (entries that carry no proposal, such as membership changes, included).
    Apply {
        /// Committed proposals, in log order.
        entries: Vec<Proposal>,
        /// Where the executor is once they are applied.
        position: Position,
        /// Called once they are applied.
        done: Reply<()>,
    },
    /// This member's calls `first_seq..first_seq + count` will not be applied as proposed.
    Refuse {
        /// The first call's number.
        first_seq: u64,
        /// How many calls.
        count: usize,
        /// Why, and whether they may have run.
        verdict: Verdict,
    },
    /// Save the state as it is now, with the position it reflects.
    Save {
        /// Receives the saved state and its position, or why it could not be saved.
        done: Reply<Result<(Vec<u8>, Position), String>>,
    },
    /// Every read behind `barrier` may run now (`Ok`: this member has applied everything
    /// committed before the barrier was asked for), or must fail with this description
    /// (`not executed: ...`): it could not find out in time, so a read would risk being
    /// stale.
    ReadDone {
        /// The barrier, as [`ToLog::Read`] asked.
        barrier: u64,
        /// Ready, or why not.
        result: Result<(), String>,
    },
    /// The administrative request `ticket` is done, or failed with this description
    /// (`not executed: ...`, or `outcome unknown: ...` if it may still take effect).
    AdminDone {
        /// The ticket, as [`ToLog::Admin`] gave it.
        ticket: u64,
        /// Done, or why not.
        result: Result<(), String>,
    },
    /// Replace the state with this snapshot's, which reflects `position`.
    Install {
        /// The state as [`Save`](ToExecutor::Save) produced it (on some member).
        state: Vec<u8>,
        /// What the snapshot includes.
        position: Position,
        /// Called once installed, or with why it could not be.
        done: Reply<Result<(), String>>,
    },
}

impl fmt::Debug for ToExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToExecutor::Apply { entries, .. } => write!(f, "Apply({})", entries.len()),
            ToExecutor::Refuse { first_seq, count, .. } => write!(f, "Refuse({first_seq}+{count})"),
            ToExecutor::ReadDone { barrier, .. } => write!(f, "ReadDone({barrier})"),
            ToExecutor::AdminDone { ticket, .. } => write!(f, "AdminDone({ticket})"),
            ToExecutor::Save { .. } => f.write_str("Save"),
            ToExecutor::Install { .. } => f.write_str("Install"),
        }
    }
}

/// Sends to the executor, through its job queue (blocks only while the queue is full).
pub type ExecutorLink = Arc<dyn Fn(ToExecutor) + Send + Sync>;

/// What the executor asks of the log.
#[derive(Debug)]
pub enum ToLog {
    /// Append these calls. Every proposal ends in exactly one of: its entry applied (the
    /// executor answers its callers), or a [`ToExecutor::Refuse`] for all its calls.
    Propose(Proposal),
    /// Linearizable reads wait behind `barrier`: answer [`ToExecutor::ReadDone`] once this
    /// member has applied every entry committed before this request (Raft's read index),
    /// within a bounded time. Barriers are asked in increasing order.
    Read {
        /// Its number.
        barrier: u64,
    },
    /// An administrative request; answer [`ToExecutor::AdminDone`] with its `ticket` once
    /// it is done or has failed, within a bounded time.
    Admin {
        /// Its number.
        ticket: u64,
        /// What to do.
        request: AdminRequest,
    },
}

/// Administrative requests a log backend carries out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Remove member `node` from the cluster (`cluster-remove-member`).
    RemoveMember {
        /// The member's id.
        node: u64,
    },
}

/// Sends to the log; hands the message back if the log has stopped.
pub type LogLink = Arc<dyn Fn(ToLog) -> Result<(), ToLog> + Send + Sync>;

/// What `query-cluster` reports, read at once whenever asked.
pub type StatusSource = Arc<dyn Fn() -> ClusterStatus + Send + Sync>;

/// A backend opened before any thread starts.
pub struct Opened {
    /// The state saved in the latest snapshot, to restore before the executor starts.
    pub snapshot: Option<Vec<u8>>,
    /// Where that snapshot leaves the executor (or the start of the log).
    pub position: Position,
    /// This member run: the origin of its proposals.
    pub origin: Origin,
    /// Where the executor sends its proposals.
    pub log: LogLink,
    /// This member's view of the cluster.
    pub status: StatusSource,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// A replicated log backend, as `Server::start_replicated` drives it: opened before any
/// thread starts, started once the executor runs, stopped when the returned handle drops
/// (after the server's threads have exited).
pub trait ReplicatedLog: Send {
    /// Opens the log's storage and reads its latest snapshot. Errors are configuration
    /// errors (a bad data directory, a bad membership).
    fn open(&mut self) -> Result<Opened, Error>;

    /// Starts replicating: the executor is running and receives committed entries, refusals
    /// and snapshot requests through `executor`. A backend that must replay its log before
    /// anyone is served does so before it returns.
    fn start(self: Box<Self>, executor: ExecutorLink) -> Result<Box<dyn RunningLog>, Error>;
}

/// A started backend; dropping it stops the log.
pub trait RunningLog: Send + fmt::Debug {}

/// One member of the cluster and its replication progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemberProgress {
    /// The member's id.
    pub node: u64,
    /// Its member-to-member address.
    pub address: String,
    /// Whether it votes (`false`: a learner catching up before it joins the vote).
    pub voter: bool,
    /// The last log index known to be on that member, as the leader sees it (`null` on
    /// other members, or nothing yet).
    pub matched: Option<u64>,
}

/// What `query-cluster` returns: this member's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterStatus {
    /// This member's id.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `learner`; `starting` before the log reports.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this member knows of (`null` during an election).
    pub leader: Option<u64>,
    /// The last index in this member's log.
    #[serde(rename = "last-log")]
    pub last_log: Option<u64>,
    /// The highest index this member knows committed (on a follower it may lag the leader's
    /// by a heartbeat).
    pub commit: Option<u64>,
    /// The last index applied to this member's state: what its OOB reads reflect.
    pub applied: Option<u64>,
    /// The last index in this member's latest snapshot.
    pub snapshot: Option<u64>,
    /// The last index this member's log no longer holds (compacted into a snapshot): a
    /// member behind it catches up by receiving a snapshot, not entries.
    pub purged: Option<u64>,
    /// Every member, voters and learners, as this member's log has them; `matched` on the
    /// leader only.
    pub members: Vec<MemberProgress>,
    /// A membership change is in progress (joint consensus not yet committed).
    #[serde(rename = "membership-changing")]
    pub membership_changing: bool,
}

impl ClusterStatus {
    /// A member that has not heard from its log yet.
    pub fn starting(id: u64) -> ClusterStatus {
        ClusterStatus {
            id,
            role: "starting".into(),
            term: 0,
            leader: None,
            last_log: None,
            commit: None,
            applied: None,
            snapshot: None,
            purged: None,
            members: Vec::new(),
            membership_changing: false,
        }
    }
}
