//! A proposal on its way: which of the executor's calls it carries, its place in the
//! proposer's window, its deadline, and how it is refused. The proposer and the forwarder
//! both hold tickets; whoever learns a proposal's fate settles its ticket.
//!
//! A proposal a follower forwarded and the leader committed is settled by its entry being
//! applied here, which this member may never see: it was removed from the cluster with the
//! entry past the last one the leader sent it, or it lost the leader. [`Unapplied`] watches
//! those until they are applied, and refuses them as "outcome unknown" if they are not by
//! their deadline (at once if this member learns it was removed), so that their callers, and
//! a shutdown queued behind them, never wait for good.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ooblane::replication::{ExecutorLink, ToExecutor, Verdict};
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::entry::Proposal;
use crate::reach::Reach;
use crate::state_machine::OwnApplied;

/// How long a proposal may take, from its arrival here to its verdict: waiting for a leader,
/// for room in the window, and to be committed. Past it, a proposal never sent is "not
/// executed" and one handed to a leader "outcome unknown". A few election timeouts: long
/// enough to ride out a failover (about a second), short enough that no caller waits more
/// than 3.5 s.
pub(crate) const DEADLINE: Duration = Duration::from_secs(3);

/// How long a follower may take to apply a proposal after the leader said it committed it,
/// at least (the leader answers once it has applied the entry itself; a follower learns of
/// the commit with the next append or heartbeat, 100 ms apart), even when the proposal's
/// deadline is nearer: a proposal committed just before its deadline still has this long.
/// Within the 3.5 s a caller may wait.
const APPLY_GRACE: Duration = Duration::from_millis(500);

/// How often [`Unapplied`] looks whether this member was removed, while it watches any.
const RECHECK: Duration = Duration::from_millis(100);

/// Which of the executor's calls a proposal carries, holding one place in the proposer's window
/// until its fate is known, and by when that must be.
#[derive(Debug)]
pub(crate) struct Ticket {
    first_seq: u64,
    count: usize,
    pub(crate) deadline: Instant,
    _place: OwnedSemaphorePermit,
}

impl Ticket {
    pub(crate) fn new(
        proposal: &Proposal,
        deadline: Instant,
        place: OwnedSemaphorePermit,
    ) -> Ticket {
        Ticket {
            first_seq: proposal.first_seq,
            count: proposal.commands.len(),
            deadline,
            _place: place,
        }
    }
}

/// Tells the executor that a proposal will not be applied as its callers expect.
pub(crate) fn refuse(link: &ExecutorLink, ticket: Ticket, verdict: Verdict) {
    if verdict != Verdict::Committed {
        tracing::debug!(
            first_seq = ticket.first_seq,
            count = ticket.count,
            ?verdict,
            "proposal refused"
        );
        link(ToExecutor::Refuse { first_seq: ticket.first_seq, count: ticket.count, verdict });
    }
}

/// A committed proposal this member has not applied yet.
#[derive(Debug)]
struct Committed {
    first_seq: u64,
    count: usize,
    /// The leader that committed it.
    leader: u64,
    deadline: Instant,
}

/// The proposals this member forwarded that the leader committed, until this member applies
/// them; [`Unapplied::watch`] refuses those it has not applied in time.
pub(crate) struct Unapplied {
    link: ExecutorLink,
    own: Arc<OwnApplied>,
    reach: Arc<Reach>,
    pending: Mutex<VecDeque<Committed>>,
    added: Notify,
}

impl Unapplied {
    pub(crate) fn new(link: ExecutorLink, own: Arc<OwnApplied>, reach: Arc<Reach>) -> Unapplied {
        Unapplied { link, own, reach, pending: Mutex::default(), added: Notify::new() }
    }

    /// The leader (member `leader`) committed `ticket`'s proposal: its calls are answered
    /// when this member applies it, or refused by [`Unapplied::watch`] if it does not in
    /// time. Frees the ticket's place in the window.
    pub(crate) fn committed(&self, ticket: Ticket, leader: u64) {
        let end = ticket.first_seq + ticket.count as u64;
        if self.own.covers(end) {
            return;
        }
        let deadline = ticket.deadline.max(Instant::now() + APPLY_GRACE);
        let Ticket { first_seq, count, .. } = ticket;
        self.pending.lock().push_back(Committed { first_seq, count, leader, deadline });
        self.added.notify_one();
    }

    /// Refuses, as "outcome unknown", each watched proposal not applied by its deadline, or
    /// every one not applied as soon as this member learns it was removed. Runs until
    /// aborted.
    pub(crate) async fn watch(self: Arc<Self>) {
        loop {
            let next = self.sweep(Instant::now());
            match next {
                Some(deadline) => {
                    tokio::time::sleep_until(deadline.min(Instant::now() + RECHECK)).await;
                }
                None => self.added.notified().await,
            }
        }
    }

    /// Forgets what was applied, refuses what is due; returns the earliest deadline left.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let removed = self.reach.removed();
        let mut due = Vec::new();
        let next = {
            let mut pending = self.pending.lock();
            pending.retain(|c| {
                if self.own.covers(c.first_seq + c.count as u64) {
                    return false;
                }
                if removed || c.deadline <= now {
                    due.push((c.first_seq, c.count, c.leader));
                    return false;
                }
                true
            });
            pending.iter().map(|c| c.deadline).min()
        };
        for (first_seq, count, leader) in due {
            let why = if removed {
                format!(
                    "the leader (member {leader}) committed it, but this member was removed from the cluster before applying it"
                )
            } else {
                format!(
                    "the leader (member {leader}) committed it, but this member had not applied it within {} s",
                    DEADLINE.as_secs()
                )
            };
            tracing::debug!(first_seq, count, why, "committed proposal not applied here");
            (self.link)(ToExecutor::Refuse { first_seq, count, verdict: Verdict::Unknown(why) });
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use ooblane::replication::{LoggedCommand, Origin};
    use tokio::sync::Semaphore;

    use super::*;

    const ORIGIN: Origin = Origin { node: 1, run: 7 };

    fn proposal(first_seq: u64, count: usize) -> Proposal {
        let command = LoggedCommand { name: "counter-add".into(), args: "{}".into() };
        Proposal { origin: ORIGIN, first_seq, commands: vec![command; count] }
    }

    fn ticket(first_seq: u64, count: usize, deadline: Instant) -> Ticket {
        let place = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a free place");
        Ticket::new(&proposal(first_seq, count), deadline, place)
    }

    /// Refusals sent to the executor: (first_seq, count, why).
    type Refused = Arc<Mutex<Vec<(u64, usize, String)>>>;

    /// An `Unapplied`, what it reads, and the refusals it sends.
    struct Watching {
        unapplied: Arc<Unapplied>,
        own: Arc<OwnApplied>,
        reach: Arc<Reach>,
        refused: Refused,
    }

    fn watching() -> Watching {
        let refused = Refused::default();
        let seen = Arc::clone(&refused);
        let link: ExecutorLink = Arc::new(move |message| match message {
            ToExecutor::Refuse { first_seq, count, verdict: Verdict::Unknown(why) } => {
                seen.lock().push((first_seq, count, why));
            }
            other => panic!("unexpected message to the executor: {other:?}"),
        });
        let own = Arc::new(OwnApplied::new(ORIGIN));
        let reach = Arc::new(Reach::new());
        let unapplied = Arc::new(Unapplied::new(link, Arc::clone(&own), Arc::clone(&reach)));
        Watching { unapplied, own, reach, refused }
    }

    #[test]
    fn a_committed_proposal_not_applied_by_its_deadline_is_refused_as_unknown() {
        let Watching { unapplied, own, refused, .. } = watching();
        let now = Instant::now();
        unapplied.committed(ticket(0, 3, now + Duration::from_secs(3)), 2);
        unapplied.committed(ticket(3, 2, now + Duration::from_secs(3)), 2);
        unapplied.committed(ticket(5, 4, now + Duration::from_secs(4)), 2);
        own.note(&proposal(0, 3));
        assert_eq!(unapplied.sweep(now), Some(now + Duration::from_secs(3)));
        assert!(refused.lock().is_empty(), "nothing is due yet");
        let next = unapplied.sweep(now + Duration::from_secs(3));
        assert_eq!(next, Some(now + Duration::from_secs(4)));
        let why =
            "the leader (member 2) committed it, but this member had not applied it within 3 s";
        assert_eq!(*refused.lock(), vec![(3, 2, why.to_owned())], "0..3 was applied: not refused");
        own.note(&proposal(5, 4));
        assert_eq!(unapplied.sweep(now + Duration::from_secs(10)), None);
        assert_eq!(refused.lock().len(), 1, "5..9 was applied: not refused");
    }

    #[test]
    fn a_removed_member_refuses_every_committed_proposal_at_once() {
        let Watching { unapplied, reach, refused, .. } = watching();
        let now = Instant::now();
        unapplied.committed(ticket(0, 1, now + Duration::from_secs(3)), 3);
        unapplied.committed(ticket(1, 8, now + Duration::from_secs(3)), 3);
        reach.set_removed();
        assert_eq!(unapplied.sweep(now), None);
        let why = "the leader (member 3) committed it, but this member was removed from the \
                   cluster before applying it";
        assert_eq!(*refused.lock(), vec![(0, 1, why.to_owned()), (1, 8, why.to_owned())]);
    }

    #[test]
    fn a_proposal_committed_at_its_deadline_still_has_time_to_be_applied() {
        let Watching { unapplied, refused, .. } = watching();
        let now = Instant::now();
        unapplied.committed(ticket(0, 1, now), 2);
        assert!(unapplied.sweep(now).is_some_and(|next| next >= now + APPLY_GRACE));
        assert!(refused.lock().is_empty());
    }

    #[test]
    fn a_proposal_already_applied_is_not_watched() {
        let Watching { unapplied, own, .. } = watching();
        own.note(&proposal(0, 4));
        unapplied.committed(ticket(2, 2, Instant::now()), 2);
        assert!(unapplied.pending.lock().is_empty());
    }
}
