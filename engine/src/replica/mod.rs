//! The replicated in-band log (opt-in): `--data DIR` makes every replicated in-band command
//! durable before its reply leaves; `--cluster` replicates it over Raft (openraft) to a
//! static set of members, each applying every committed command in the same order.
//!
//! ```text
//!  parser threads ──► executor: replicated call? ─ yes ─► park it (in order), batch it into
//!        ▲                 │                              one Proposal per executor round
//!        │                 no: run now, or after the          │
//!        │                 parked calls before it             ▼
//!        │                                        proposer (tokio): leader? append : forward
//!        │                                                    │
//!        │                          openraft: replicate, fsync (redb), commit
//!        │                                                    │
//!        └── replies, in order ◄── executor applies each entry ◄── state machine (apply)
//!                                  (its own calls: the parked call runs; others: replayed)
//! ```
//!
//! A durable single node is a cluster of one. The executor stays the only owner of the
//! state: openraft's state machine ([`state_machine`]) hands it committed entries through its
//! job queue. OOB commands never wait for any of this.

mod entry;
mod log_store;
mod network;
mod proposer;
mod serve;
mod snapshot;
mod state_machine;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, EntryPayload, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};

pub(crate) use entry::{Entry, LoggedCommand, Origin, Proposal};
use entry::{LogId, SnapshotMeta, StoredMembership};
pub(crate) use network::Verdict;
pub(crate) use status::StatusCell;
pub use status::{ClusterStatus, MemberProgress};

use crate::Error;

/// Durable and replicated operation ([`crate::Config::replication`]).
#[derive(Clone, Debug)]
pub struct Replication {
    /// Where this member keeps its log and snapshot (created if missing).
    pub data: PathBuf,
    /// Every member's id and member-to-member address; empty for a durable single node.
    pub members: BTreeMap<u64, SocketAddr>,
    /// This member's id (a key of `members`; 1 for a durable single node).
    pub node: u64,
    /// Take a snapshot (and drop the log before it) every this many log entries.
    pub snapshot_every: u64,
}

impl Replication {
    /// Log entries between snapshots by default.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 10_000;

    /// A durable single node keeping its log in `data`.
    pub fn durable(data: impl Into<PathBuf>) -> Replication {
        Replication {
            data: data.into(),
            members: BTreeMap::new(),
            node: 1,
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
        }
    }

    /// Checks the membership once, at start.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !self.members.is_empty() && !self.members.contains_key(&self.node) {
            return Err(Error::Config(format!(
                "--node {} is not one of the --cluster members",
                self.node
            )));
        }
        if self.members.len() == 2 || self.members.len() > 7 {
            return Err(Error::Config(format!(
                "a cluster has 1, 3, 5 or 7 members (odd, so a majority survives a loss), not {}",
                self.members.len()
            )));
        }
        if self.snapshot_every == 0 {
            return Err(Error::Config("snapshot_every must be > 0".into()));
        }
        Ok(())
    }

    fn clustered(&self) -> bool {
        !self.members.is_empty()
    }
}

/// How far the executor has applied the log, and the membership as of there.
#[derive(Clone, Debug, Default)]
pub(crate) struct Position {
    pub(crate) applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl Position {
    pub(crate) fn of_snapshot(meta: &SnapshotMeta) -> Position {
        Position { applied: meta.last_log_id, membership: meta.last_membership.clone() }
    }

    /// Moves past `entry` (which is being applied).
    pub(crate) fn advance(&mut self, entry: &Entry) {
        self.applied = Some(entry.log_id);
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
        }
    }
}

/// What the replication side asks of the executor, through its job queue.
pub(crate) enum ToExecutor {
    /// Apply these committed entries, in order, then say so.
    Apply { entries: Vec<Entry>, done: oneshot::Sender<()> },
    /// This member's calls `first_seq..first_seq + count` will not be applied as proposed.
    Refuse { first_seq: u64, count: usize, verdict: Verdict },
    /// Save the state as it is now, with the position it reflects.
    Save { done: oneshot::Sender<Result<(Vec<u8>, Position), String>> },
    /// Replace the state with this snapshot's.
    Install { state: Vec<u8>, position: Position, done: oneshot::Sender<Result<(), String>> },
}

impl std::fmt::Debug for ToExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToExecutor::Apply { entries, .. } => write!(f, "Apply({})", entries.len()),
            ToExecutor::Refuse { first_seq, count, .. } => write!(f, "Refuse({first_seq}+{count})"),
            ToExecutor::Save { .. } => f.write_str("Save"),
            ToExecutor::Install { .. } => f.write_str("Install"),
        }
    }
}

/// Sends to the executor (through its job queue; blocks only while the queue is full).
pub(crate) type ExecutorLink = Arc<dyn Fn(ToExecutor) + Send + Sync>;

/// What the executor needs to take part: where to send proposals, who it is.
#[derive(Debug)]
pub(crate) struct ExecutorSide {
    pub(crate) proposals: mpsc::UnboundedSender<Proposal>,
    pub(crate) origin: Origin,
    /// Where the executor starts: the snapshot restored at start.
    pub(crate) position: Position,
}

/// Opened before any thread starts: the snapshot to restore the state from, and the channel
/// the executor will propose on.
pub(crate) struct Opened {
    config: Replication,
    /// The state saved in the latest snapshot, if any.
    state: Option<Vec<u8>>,
    /// Where the executor starts: the position of that snapshot.
    start: Position,
    proposals: mpsc::UnboundedReceiver<Proposal>,
    side: Option<ExecutorSide>,
    pub(crate) status: Arc<StatusCell>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Opens the data directory and reads the latest snapshot.
pub(crate) fn open(config: Replication) -> Result<Opened, Error> {
    config.validate()?;
    std::fs::create_dir_all(&config.data).map_err(|e| {
        Error::Config(format!("cannot create the data directory {}: {e}", config.data.display()))
    })?;
    let snapshot = snapshot::SnapshotFile::new(&config.data).load().map_err(|e| {
        Error::Config(format!("cannot read the snapshot in {}: {e}", config.data.display()))
    })?;
    let start = snapshot.as_ref().map(|s| Position::of_snapshot(&s.meta)).unwrap_or_default();
    let state = snapshot.map(|s| s.state);
    let (tx, rx) = mpsc::unbounded_channel();
    let origin = Origin { node: config.node, run: run_number() };
    let side = ExecutorSide { proposals: tx, origin, position: start.clone() };
    let status = Arc::new(StatusCell::new(config.node));
    Ok(Opened { config, state, start, proposals: rx, side: Some(side), status })
}

/// A number that differs at every start of a member (nanoseconds since the epoch).
fn run_number() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_nanos() as u64)
}

impl Opened {
    /// The state bytes to restore before the executor starts, if a snapshot exists.
    pub(crate) fn snapshot_state(&self) -> Option<&[u8]> {
        self.state.as_deref()
    }

    /// The executor's part; taken once.
    pub(crate) fn executor_side(&mut self) -> ExecutorSide {
        self.side.take().expect("the executor side is taken once")
    }

    /// Starts Raft on a runtime of its own; the executor must already be running (it applies
    /// the log as Raft replays it).
    pub(crate) fn start(self, link: ExecutorLink) -> Result<Replica, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("engine-raft")
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let Opened { config, start, proposals, status, .. } = self;
        let listener = match config.members.get(&config.node) {
            Some(addr) => Some(runtime.block_on(bind(*addr))?),
            None => None,
        };
        let raft = runtime.block_on(boot(&config, start, link.clone()))?;
        if !config.clustered() {
            runtime.block_on(replayed(&raft));
        }
        let peers: HashMap<u64, SocketAddr> = config.members.clone().into_iter().collect();
        runtime.spawn(proposer::run(raft.clone(), config.node, peers, link, proposals));
        runtime.spawn(status::follow(raft.clone(), Arc::clone(&status)));
        if let Some(listener) = listener {
            runtime.spawn(serve::listen(listener, raft.clone(), config.node));
        }
        tracing::info!(
            node = config.node,
            members = config.members.len().max(1),
            data = %config.data.display(),
            "replicated log started"
        );
        Ok(Replica { runtime: Some(runtime), raft })
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(Error::Start)?;
    let fail = |source| Error::Bind { address: crate::Address::Tcp(addr), source };
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(fail)
}

/// openraft's timing: a new leader within about a second of a leader's loss. openraft gives
/// each append RPC one heartbeat interval to complete (the follower's fsync included), so
/// an append carries at most `max_payload_entries` entries of at most
/// [`MAX_PROPOSAL`](crate::replicated::MAX_PROPOSAL) commands: about 1 MiB of JSON.
/// (With 1,024 entries per append, appends under full load took longer than that, timed
/// out for good, and the cluster lost its leader.)
fn raft_config(config: &Replication) -> Result<Arc<openraft::Config>, Error> {
    let raft = openraft::Config {
        cluster_name: "ooblane".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        max_payload_entries: 32,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: 1000,
        // Purge the log in steps (each rides along with the log writer's next transaction),
        // small enough that a member down for a few thousand entries needs a snapshot.
        purge_batch_size: 64,
        ..Default::default()
    };
    raft.validate().map(Arc::new).map_err(|e| Error::Config(format!("raft: {e}")))
}

/// Creates this member's Raft over its log and the executor, and forms the cluster the
/// first time (every member proposes the same membership: safe, and no member is special).
async fn boot(
    config: &Replication,
    start: Position,
    link: ExecutorLink,
) -> Result<openraft::Raft<entry::Raft>, Error> {
    let store = log_store::LogStore::open(&config.data).map_err(|e| {
        Error::Config(format!("cannot open the log in {}: {e}", config.data.display()))
    })?;
    let file = snapshot::SnapshotFile::new(&config.data);
    let machine = state_machine::StateMachine::new(link, start, file);
    let raft =
        openraft::Raft::new(config.node, raft_config(config)?, network::Peers, store, machine)
            .await
            .map_err(|e| Error::Config(format!("raft: {e}")))?;
    let fatal = |e: openraft::error::Fatal<u64>| Error::Config(format!("raft: {e}"));
    if !raft.is_initialized().await.map_err(fatal)? {
        let members: BTreeMap<u64, BasicNode> = if config.clustered() {
            config.members.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect()
        } else {
            BTreeMap::from([(config.node, BasicNode::default())])
        };
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(node = config.node, "cluster formed"),
            Err(e) => tracing::debug!(error = %e, "cluster already formed"),
        }
    }
    Ok(raft)
}

/// A durable single node serves no request before its whole log is applied again: Raft
/// replays at start only what it knew committed, and the rest once this node has elected
/// itself and committed a new entry (a few hundred milliseconds). Without this wait, a read
/// right after a restart would miss acknowledged commands. (A cluster member cannot wait:
/// it learns what is committed from the leader; its reads are allowed to lag.)
async fn replayed(raft: &openraft::Raft<entry::Raft>) {
    let mut metrics = raft.metrics();
    let waiting = async {
        loop {
            {
                let m = metrics.borrow_and_update();
                let applied = m.last_applied.map(|id| id.index);
                if m.current_leader == Some(m.id) && applied >= m.last_log_index {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), waiting).await.is_err() {
        tracing::warn!("the log is not replayed after 30 s; serving anyway");
    }
}

/// The running replication side; dropping it stops Raft.
pub(crate) struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
    raft: openraft::Raft<entry::Raft>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replica")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let raft = self.raft.clone();
            let _ = runtime.block_on(async move {
                tokio::time::timeout(Duration::from_secs(2), raft.shutdown()).await
            });
            runtime.shutdown_timeout(Duration::from_millis(500));
        }
    }
}
