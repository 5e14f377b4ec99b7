//! `query-cluster`: this member's view of the cluster, refreshed from openraft's metrics
//! whenever they change and read by OOB handlers without waiting for anything.

use std::sync::Arc;

use ooblane::replication::{ClusterStatus, MemberProgress};
use openraft::async_runtime::WatchReceiver;
use parking_lot::RwLock;

use crate::state_machine::Node;

/// The latest [`ClusterStatus`], shared with OOB handlers.
#[derive(Debug)]
pub(crate) struct StatusCell(RwLock<ClusterStatus>);

impl StatusCell {
    pub(crate) fn new(id: u64) -> Self {
        StatusCell(RwLock::new(ClusterStatus::starting(id)))
    }

    pub(crate) fn get(&self) -> ClusterStatus {
        self.0.read().clone()
    }
}

/// Keeps `cell` up to date until Raft stops.
pub(crate) async fn follow(raft: Node, cell: Arc<StatusCell>) {
    let mut metrics = raft.metrics();
    loop {
        let status = {
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
                    matched: matched
                        .and_then(|r| r.get(node))
                        .copied()
                        .flatten()
                        .map(|id| id.index),
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
                members,
                membership_changing: m.membership_config.log_id()
                    != m.committed_membership_config.log_id(),
            }
        };
        *cell.0.write() = status;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
