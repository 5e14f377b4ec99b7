//! A proposal on its way: which of the executor's calls it carries, its place in the
//! proposer's window, its deadline, and how it is refused. The proposer and the forwarder
//! both hold tickets; whoever learns a proposal's fate settles its ticket.

use std::time::Duration;

use ooblane::replication::{ExecutorLink, ToExecutor, Verdict};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::entry::Proposal;

/// How long a proposal may take, from its arrival here to its verdict: waiting for a leader,
/// for room in the window, and to be committed. Past it, a proposal never sent is "not
/// executed" and one handed to a leader "outcome unknown". A few election timeouts: long
/// enough to ride out a failover (about a second), short enough that no caller waits more
/// than 3.5 s.
pub(crate) const DEADLINE: Duration = Duration::from_secs(3);

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
