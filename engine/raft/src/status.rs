//! `query-cluster`: this member's view of the cluster, computed from openraft's latest
//! metrics when an OOB handler asks (a borrow of a watch, never a wait). Nothing runs when
//! the metrics change: at 1,000 commits/s they change several times per commit, and a task
//! refreshing a copy each time cost a wake-up per change.

use std::sync::OnceLock;

use ooblane::replication::{ClusterStatus, MemberProgress};
use openraft::RaftMetrics;
use openraft::alias::WatchReceiverOf;
use openraft::async_runtime::WatchReceiver;

use crate::entry::Raft;
use crate::state_machine::Node;

/// This member's metrics once Raft has started, shared with OOB handlers.
pub(crate) struct StatusCell {
    id: u64,
    metrics: OnceLock<WatchReceiverOf<Raft, RaftMetrics<Raft>>>,
}

impl std::fmt::Debug for StatusCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCell").field("id", &self.id).finish_non_exhaustive()
    }
}

impl StatusCell {
    pub(crate) fn new(id: u64) -> Self {
        StatusCell { id, metrics: OnceLock::new() }
    }

    /// From now on, reads describe `raft`.
    pub(crate) fn attach(&self, raft: &Node) {
        let _ = self.metrics.set(raft.metrics());
    }

    /// The status as of the latest metrics ("starting" until Raft has started).
    pub(crate) fn get(&self) -> ClusterStatus {
        let Some(metrics) = self.metrics.get() else { return ClusterStatus::starting(self.id) };
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let matched = m.replication.as_ref();
        let members: Vec<MemberProgress> = membership
            .nodes()
            .map(|(node, at)| MemberProgress {
                node: *node,
                address: at.addr.clone(),
                voter: voters.contains(node),
                matched: matched.and_then(|r| r.get(node)).copied().flatten().map(|id| id.index),
            })
            .collect();
        ClusterStatus {
            id: m.id,
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader,
            last_log: m.last_log_index,
            commit: m.local_committed.map(|id| id.index),
            applied: m.last_applied.map(|id| id.index),
            snapshot: m.snapshot.map(|id| id.index),
            purged: m.purged.map(|id| id.index),
            members,
            membership_changing: m.membership_config.log_id()
                != m.committed_membership_config.log_id(),
        }
    }
}
