//! `query-cluster`: this member's view of the cluster, refreshed from openraft's metrics
//! whenever they change and read by OOB handlers without waiting for anything.

use std::sync::Arc;

use ooblane::replication::{ClusterStatus, MemberProgress};
use parking_lot::RwLock;

use crate::entry::Raft;

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
pub(crate) async fn follow(raft: openraft::Raft<Raft>, cell: Arc<StatusCell>) {
    let mut metrics = raft.metrics();
    loop {
        let status = {
            let m = metrics.borrow_and_update();
            let members: Vec<MemberProgress> = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(node, matched)| MemberProgress {
                            node: *node,
                            matched: matched.map(|id| id.index),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let applied = m.last_applied.map(|id| id.index);
            let commit = if members.is_empty() { applied } else { majority(&members) };
            ClusterStatus {
                id: m.id,
                role: format!("{:?}", m.state).to_lowercase(),
                term: m.current_term,
                leader: m.current_leader,
                last_log: m.last_log_index,
                commit,
                applied,
                snapshot: m.snapshot.map(|id| id.index),
                members,
            }
        };
        *cell.0.write() = status;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The highest index a majority of members hold.
fn majority(members: &[MemberProgress]) -> Option<u64> {
    let mut matched: Vec<Option<u64>> = members.iter().map(|m| m.matched).collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(members.len() / 2).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(matched: &[Option<u64>]) -> Vec<MemberProgress> {
        matched
            .iter()
            .enumerate()
            .map(|(i, m)| MemberProgress { node: i as u64 + 1, matched: *m })
            .collect()
    }

    #[test]
    fn the_commit_index_is_what_a_majority_holds() {
        assert_eq!(majority(&progress(&[Some(10), Some(7), None])), Some(7));
        assert_eq!(majority(&progress(&[Some(10), None, None])), None);
        assert_eq!(majority(&progress(&[Some(9), Some(9), Some(3), Some(2), Some(1)])), Some(3));
        assert_eq!(majority(&progress(&[Some(4)])), Some(4));
    }
}
