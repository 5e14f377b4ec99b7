//! What only the leader does for the others: the read index of linearizable reads, and
//! membership changes (a member joins, a member is removed). Each answers within its deadline,
//! with a description a client can act on (`not executed: ...` when nothing changed).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ooblane::replication::AdminRequest;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ReadPolicy};
use tokio::time::Instant;

use crate::entry::{LogId, Raft};
use crate::network::{Peer, Rpc};
use crate::reach::{REACH_WINDOW, Reach};
use crate::state_machine::Node;

/// How long a removed member may take to hear it was removed.
const TELL_REMOVED_WITHIN: Duration = Duration::from_millis(500);

/// How long a joining member may take to catch up (log or snapshot) as a learner before the
/// leader gives up this attempt (the joining member asks again).
const CATCH_UP: Duration = Duration::from_secs(60);

/// The leader's read index: the log id a read must see applied, once this member has
/// confirmed with a quorum that it still leads (Raft's ReadIndex: no clock is trusted).
pub(crate) async fn read_index(raft: &Node) -> Result<LogId, String> {
    let linearizer = raft
        .get_read_linearizer(ReadPolicy::ReadIndex)
        .await
        .map_err(|e| format!("the leader could not confirm it still leads ({e})"))?;
    Ok(*linearizer.read_log_id().log_id())
}

/// Waits until this member has applied `index`, or `deadline`.
pub(crate) async fn applied(raft: &Node, index: u64, deadline: Instant) -> Result<(), String> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    raft.wait(Some(timeout))
        .applied_index_at_least(Some(index), "linearizable read")
        .await
        .map(|_| ())
        .map_err(|e| format!("this member did not catch up with the leader in time ({e})"))
}

/// Carries out an administrative request on the leader.
pub(crate) async fn administer(
    raft: &Node,
    reach: &Arc<Reach>,
    request: &AdminRequest,
    deadline: Instant,
) -> Result<(), String> {
    match request {
        AdminRequest::RemoveMember { node } => remove(raft, reach, *node, deadline).await,
    }
}

/// A snapshot of Raft's metrics.
fn metrics(raft: &Node) -> RaftMetrics<Raft> {
    raft.metrics().borrow_watched().clone()
}

/// Refuses a change this member cannot make now: it does not lead, or another change is in
/// progress.
fn may_change(m: &RaftMetrics<Raft>) -> Result<(), String> {
    if m.current_leader != Some(m.id) {
        return Err(format!("not executed: member {} is not the leader", m.id));
    }
    if m.membership_config.log_id() != m.committed_membership_config.log_id() {
        return Err("not executed: another membership change is in progress".into());
    }
    Ok(())
}

/// Removes member `node` (`cluster-remove-member`): refused if that would leave no voter, or
/// no reachable quorum of the remaining voters. Removing the leader itself hands leadership
/// over first (openraft's step-down once the change is committed); another member is told it
/// was removed, so it refuses what it is asked from then on.
async fn remove(
    raft: &Node,
    reach: &Arc<Reach>,
    node: u64,
    deadline: Instant,
) -> Result<(), String> {
    let m = metrics(raft);
    may_change(&m)?;
    let membership = m.membership_config.membership();
    let Some(at) = membership.get_node(&node) else {
        return Err(format!("not executed: member {node} is not in the cluster"));
    };
    let addr = at.addr.parse::<SocketAddr>().ok();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let change = if voters.contains(&node) {
        let remaining: Vec<u64> = voters.iter().copied().filter(|v| *v != node).collect();
        quorum_left(m.id, &remaining, reach, node)?;
        ChangeMembers::RemoveVoters(BTreeSet::from([node]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([node]))
    };
    change_membership(raft, change, false, deadline).await?;
    if let Some(addr) = addr.filter(|_| node != m.id) {
        tell_removed(node, addr, Arc::clone(reach)).await;
    }
    Ok(())
}

/// Tells member `node` it was removed; best effort (a dead member is told nothing, and one
/// that cannot hear it finds itself cut off instead).
async fn tell_removed(node: u64, addr: SocketAddr, reach: Arc<Reach>) {
    let mut peer = Peer::new(node, addr, reach);
    if let Err(e) = peer.ask(Rpc::Removed, TELL_REMOVED_WITHIN).await {
        tracing::info!(node, error = %e, "could not tell the removed member");
    }
}

/// Refuses a removal after which the remaining voters could not form a reachable quorum.
fn quorum_left(me: u64, remaining: &[u64], reach: &Reach, node: u64) -> Result<(), String> {
    if remaining.is_empty() {
        return Err(format!("not executed: member {node} is the only voter"));
    }
    let reachable: Vec<u64> = remaining
        .iter()
        .copied()
        .filter(|v| *v == me || reach.silence(*v) <= REACH_WINDOW)
        .collect();
    if reachable.len() * 2 <= remaining.len() {
        return Err(format!(
            "not executed: removing member {node} would leave no reachable quorum (of the voters \
             left, {remaining:?}, only {reachable:?} answered in the last {} s)",
            REACH_WINDOW.as_secs()
        ));
    }
    Ok(())
}

/// Adds member `node` at `addr` (a member asking to join): as a learner first, caught up from
/// the log or a snapshot, then as a voter. Nothing to do if it already votes.
pub(crate) async fn add(raft: &Node, node: u64, addr: &str) -> Result<(), String> {
    let m = metrics(raft);
    if m.membership_config.membership().voter_ids().any(|v| v == node) {
        return Ok(());
    }
    may_change(&m)?;
    let learner = raft.add_learner(node, BasicNode::new(addr), true);
    match tokio::time::timeout(CATCH_UP, learner).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(format!("not executed: cannot add member {node} as a learner: {e}"));
        }
        Err(_) => {
            return Err(format!(
                "member {node} did not catch up within {} s; ask again",
                CATCH_UP.as_secs()
            ));
        }
    }
    let voter = ChangeMembers::AddVoterIds(BTreeSet::from([node]));
    change_membership(raft, voter, true, Instant::now() + CATCH_UP).await
}

/// Proposes a membership change and waits for it to be committed, or `deadline`.
async fn change_membership(
    raft: &Node,
    change: ChangeMembers<u64, BasicNode>,
    retain: bool,
    deadline: Instant,
) -> Result<(), String> {
    match tokio::time::timeout_at(deadline, raft.change_membership(change, retain)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => match e.api_error() {
            Some(ClientWriteError::ForwardToLeader(_)) => {
                Err("not executed: leadership changed before the change was proposed".into())
            }
            Some(ClientWriteError::ChangeMembershipError(why)) => {
                Err(format!("not executed: {why}"))
            }
            _ => Err(format!(
                "outcome unknown: {e}; the membership may or may not have changed (query-cluster says)"
            )),
        },
        Err(_) => Err(
            "outcome unknown: the change was not committed in time; the membership may or may not \
             have changed (query-cluster says)"
                .into(),
        ),
    }
}
