//! Which members this member has heard from lately, and so whether it is cut off (and
//! whether the leader told it it was removed from the cluster, or it is still joining): every
//! member-to-member message counts (an append or heartbeat from the leader, a vote or
//! pre-vote request from a candidate, an answer to one of this member's own RPCs). The
//! proposer reads it to decide, without waiting, between forwarding to the leader, waiting
//! for an election the majority is holding, and refusing because this member cannot reach a
//! majority at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How recently a member must have been heard to count as reachable. Longer than the time
/// followers take to start exchanging pre-votes after their leader falls silent (the leader
/// lease plus an election timeout: 0.9 to 1.2 s), so the survivors of a dead leader still
/// count each other; short enough that a member cut off from everyone refuses within 2 s.
pub(crate) const REACH_WINDOW: Duration = Duration::from_secs(2);

/// When each other member was last heard from.
#[derive(Debug)]
pub(crate) struct Reach {
    started: Instant,
    last: Mutex<HashMap<u64, Instant>>,
    /// The leader said this member was removed from the cluster.
    removed: AtomicBool,
    /// This member is asking the cluster to add it (`--join`) and does not vote yet.
    joining: AtomicBool,
}

impl Reach {
    pub(crate) fn new() -> Reach {
        Reach {
            started: Instant::now(),
            last: Mutex::new(HashMap::new()),
            removed: AtomicBool::new(false),
            joining: AtomicBool::new(false),
        }
    }

    /// The leader said this member was removed from the cluster.
    pub(crate) fn set_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    /// Whether the leader said this member was removed.
    pub(crate) fn removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// This member starts or stops asking the cluster to add it.
    pub(crate) fn set_joining(&self, joining: bool) {
        self.joining.store(joining, Ordering::Relaxed);
    }

    /// Whether this member is still asking the cluster to add it: not in the membership its
    /// log holds because it was never added yet, not because it was removed.
    pub(crate) fn joining(&self) -> bool {
        self.joining.load(Ordering::Relaxed)
    }

    /// A message from `member` arrived (or one of its answers).
    pub(crate) fn heard(&self, member: u64) {
        self.last.lock().insert(member, Instant::now());
    }

    /// How long since `member` was last heard (since start if never).
    pub(crate) fn silence(&self, member: u64) -> Duration {
        let last = self.last.lock().get(&member).copied().unwrap_or(self.started);
        last.elapsed()
    }

    /// Whether this member (`me`) and the members heard within [`REACH_WINDOW`] make a
    /// majority of `voters`. A member that just started counts every voter as heard.
    pub(crate) fn majority(&self, me: u64, voters: &[u64]) -> bool {
        let heard = voters.iter().filter(|&&v| v == me || self.silence(v) <= REACH_WINDOW).count();
        heard * 2 > voters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_cut_off_only_once_a_majority_has_been_silent() {
        let reach = Reach::new();
        assert!(reach.majority(1, &[1, 2, 3]), "at start every voter counts as heard");
        let long_ago =
            Instant::now().checked_sub(REACH_WINDOW * 2).expect("the clock is past boot");
        *reach.last.lock() = (2..=5).map(|member| (member, long_ago)).collect();
        assert!(!reach.majority(1, &[1, 2, 3]));
        reach.heard(3);
        assert!(reach.majority(1, &[1, 2, 3]));
        assert!(!reach.majority(1, &[1, 2, 3, 4, 5]), "two of five is no majority");
        assert!(reach.majority(1, &[1]), "a single node is its own majority");
    }
}
