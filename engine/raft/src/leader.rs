//! Which member to hand a request to: this member when it leads, a leader it has heard from
//! lately, or none yet (an election the majority is holding: wait) or none at all (this member
//! is cut off, was removed from the cluster, or is joining and not added yet: refuse now).
//! Shared by the proposer, linearizable reads and administrative requests. Addresses come
//! from the membership in the log, so a member that joined later is reached like the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;

use crate::entry::Raft;
use crate::reach::{REACH_WINDOW, Reach};
use crate::state_machine::Node;

/// How long a follower may go without hearing from its leader before it stops sending to it
/// and waits for the election the others are holding (or refuses, if it cannot reach a
/// majority at all): longer than a few heartbeats (100 ms each), so a leader that is merely
/// slow is not given up on.
const LEADER_SILENCE: Duration = Duration::from_secs(1);

/// How often a request waiting for a leader looks again at who it can reach (it also wakes
/// at every change of Raft's metrics).
const RECHECK: Duration = Duration::from_millis(100);

/// This member's view of who leads, and whom it can reach.
#[derive(Clone)]
pub(crate) struct Leadership {
    pub(crate) raft: Node,
    pub(crate) me: u64,
    pub(crate) reach: Arc<Reach>,
}

impl Leadership {
    /// The leader to hand a request to: this member, or a leader it has heard from lately (not
    /// `avoid`, found unreachable). Otherwise waits, until `deadline`, for an election the
    /// majority is holding; says at once why not if this member cannot reach a majority (cut
    /// off) or is not in the cluster (removed, or joining and not added yet).
    pub(crate) async fn reachable(
        &self,
        avoid: Option<u64>,
        deadline: Instant,
    ) -> Result<u64, String> {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(found) = self.choose(&metrics.borrow_watched(), avoid) {
                return found;
            }
            let wake = (Instant::now() + RECHECK).min(deadline);
            match tokio::time::timeout_at(wake, metrics.changed()).await {
                Ok(Err(_)) => return Err("raft stopped".to_owned()),
                Ok(Ok(())) => {}
                Err(_) if Instant::now() >= deadline => {
                    return Err("no leader in time: an election is in progress or this member has no quorum".to_owned());
                }
                Err(_) => {}
            }
        }
    }

    /// What to do now, given Raft's view: `Some` with a leader or a reason to refuse, `None`
    /// to wait.
    fn choose(&self, m: &RaftMetrics<Raft>, avoid: Option<u64>) -> Option<Result<u64, String>> {
        let membership = m.membership_config.membership();
        let (member, joining) = (membership.get_node(&self.me).is_some(), self.reach.joining());
        let refusal = if membership.nodes().next().is_none() && !joining {
            Some("has not joined a cluster yet")
        } else if self.reach.removed() || (!member && !joining) {
            Some("was removed from the cluster")
        } else if !member {
            Some("is joining the cluster and has not been added yet")
        } else {
            None
        };
        if let Some(why) = refusal {
            return Some(Err(format!("member {} {why}", self.me)));
        }
        // A leader that removed itself leads until it steps down: the others wait for the
        // election that follows rather than hand it what it would refuse; and, having heard
        // from the leader, not from each other, they are not cut off for want of a majority.
        let leader_left = m.current_leader.is_some_and(|l| membership.get_node(&l).is_none());
        match m.current_leader {
            Some(leader) if leader == self.me => return Some(Ok(leader)),
            Some(leader)
                if Some(leader) != avoid
                    && !leader_left
                    && self.reach.silence(leader) <= LEADER_SILENCE =>
            {
                return Some(Ok(leader));
            }
            _ => {}
        }
        let voters: Vec<u64> = membership.voter_ids().collect();
        if !leader_left && !self.reach.majority(self.me, &voters) {
            return Some(Err(format!(
                "this member has heard from no majority of the cluster for {} s: it may be cut off from the others",
                REACH_WINDOW.as_secs()
            )));
        }
        None
    }

    /// Member `node`'s member-to-member address, as the membership in the log has it.
    pub(crate) fn address(&self, node: u64) -> Option<SocketAddr> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().get_node(&node)?.addr.parse().ok()
    }
}
