//! Starting openraft for one member: its timing, its log and state machine, forming the
//! cluster the first time, and (for a durable single node) waiting for the log's replay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ooblane::replication::ExecutorLink;
use ooblane::{Address, Error};
use openraft::{BasicNode, SnapshotPolicy};

use crate::config::RaftConfig;
use crate::entry::Raft;
use crate::state_machine::{Applied, StateMachine};
use crate::{log_store, network, snapshot};

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

/// openraft's timing: a new leader within about a second of a leader's loss. openraft gives
/// each append RPC one heartbeat interval to complete (the follower's fsync included), so
/// an append carries at most `max_payload_entries` entries of at most
/// [`MAX_PROPOSAL`](ooblane::replication::MAX_PROPOSAL) commands: about 1 MiB of JSON.
/// (With 1,024 entries per append, appends under full load took longer than that, timed
/// out for good, and the cluster lost its leader.)
fn raft_config(config: &RaftConfig) -> Result<Arc<openraft::Config>, Error> {
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
pub(crate) async fn boot(
    config: &RaftConfig,
    start: Applied,
    link: ExecutorLink,
) -> Result<openraft::Raft<Raft>, Error> {
    let store = log_store::LogStore::open(&config.data).map_err(|e| {
        Error::Config(format!("cannot open the log in {}: {e}", config.data.display()))
    })?;
    let file = snapshot::SnapshotFile::new(&config.data);
    let machine = StateMachine::new(link, start, file);
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
pub(crate) async fn replayed(raft: &openraft::Raft<Raft>) {
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
