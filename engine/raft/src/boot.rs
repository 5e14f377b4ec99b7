//! Starting openraft for one member: its timing, its log and state machine, forming the
//! cluster the first time, and (for a durable single node) waiting for the log's replay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ooblane::replication::ExecutorLink;
use ooblane::{Address, Error};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, SnapshotPolicy};

use crate::config::RaftConfig;
use crate::log_store::{LogStore, Writer};
use crate::reach::Reach;
use crate::state_machine::Node;
use crate::state_machine::{Applied, OwnApplied, StateMachine};
use crate::{network, snapshot};

/// Binds the member-to-member listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(Error::Start)?;
    let fail = |source| Error::Bind { address: Address::Tcp(addr), source };
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(fail)
}

/// openraft's timing and policies.
///
/// - **Failover within about a second**: a follower that stops hearing from its leader waits
///   out the leader lease (`election_timeout_max`, 600 ms) plus one election timeout (300 to
///   600 ms) before it campaigns, so a new leader exists 0.9 to 1.2 s after the last
///   heartbeat. (With 600 to 1,200 ms, failover after a pause took 2.0 to 2.4 s.)
/// - **Pre-vote**: a member that cannot win (cut off, or with a stale log) asks first and
///   never raises its term, so it cannot make a healthy leader step down when it comes back,
///   and a member with a shorter log waits longer before campaigning (openraft's
///   `smaller_log_timeout`): after a heal, the up-to-date member wins at once.
/// - **Check-quorum**: a leader that no quorum has acknowledged for a lease refuses new
///   writes ("not executed"), so a partitioned leader stops accepting within 600 ms.
/// - **Replication while the leader's fsync runs** (`broadcast_submitted_on_append`): the
///   leader sends an append to the followers as soon as it is handed to its log writer, so
///   the two fsyncs a commit needs run in parallel, not in series.
/// - openraft gives each append RPC one heartbeat interval (100 ms) to complete, the
///   follower's fsync included, so an append carries at most `max_payload_entries` entries
///   of at most [`MAX_PROPOSAL`](ooblane::replication::MAX_PROPOSAL) commands: about 1 MiB of
///   JSON. (With 1,024 entries per append, appends under full load took longer than that,
///   timed out for good, and the cluster lost its leader.)
fn raft_config(config: &RaftConfig) -> Result<Arc<openraft::Config>, Error> {
    let raft = openraft::Config {
        cluster_name: "ooblane".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        enable_pre_vote: Some(true),
        broadcast_submitted_on_append: Some(true),
        // A restarted leader campaigns again like anyone else: its state machine is restored
        // from a snapshot plus the committed log, never trusted as it was.
        enable_leader_restore: Some(false),
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
/// first time (every member proposes the same membership: safe, and no member is special);
/// a member that joins a running cluster (`--join`) forms nothing: the leader adds it.
pub(crate) async fn boot(
    config: &RaftConfig,
    start: Applied,
    link: ExecutorLink,
    reach: Arc<Reach>,
    own: Arc<OwnApplied>,
) -> Result<(Node, Writer), Error> {
    let (store, writer) = LogStore::open(&config.data).map_err(|e| {
        Error::Config(format!("cannot open the log in {}: {e}", config.data.display()))
    })?;
    let file = snapshot::SnapshotFile::new(&config.data);
    let machine = StateMachine::new(link, start, file, own);
    let peers = network::Peers::new(reach);
    let raft = Node::new(config.node, raft_config(config)?, peers, store, machine)
        .await
        .map_err(|e| Error::Config(format!("raft: {e}")))?;
    let fatal =
        |e: openraft::errors::Fatal<crate::entry::Raft>| Error::Config(format!("raft: {e}"));
    if !config.join && !raft.is_initialized().await.map_err(fatal)? {
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
    Ok((raft, writer))
}

/// A durable single node serves no request before its whole log is applied again: Raft
/// replays at start only what it knew committed, and the rest once this node has elected
/// itself and committed a new entry (a few hundred milliseconds). Without this wait, a read
/// right after a restart would miss acknowledged commands. (A cluster member cannot wait:
/// it learns what is committed from the leader; its reads are allowed to lag.)
pub(crate) async fn replayed(raft: &Node) {
    let mut metrics = raft.metrics();
    let waiting = async {
        loop {
            {
                let m = metrics.borrow_watched();
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
