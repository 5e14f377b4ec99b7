//! Getting this member's proposals into the log, in the order its executor made them: the
//! leader appends its own at once; a follower forwards its to the leader on one pipelined
//! connection ([`crate::forwarder`]) and learns only of failures (success shows as the entry
//! being applied here). Every proposal ends in exactly one of: applied (the executor answers
//! its callers), or a refusal sent to the executor saying whether it certainly did not run or
//! its fate is unknown, and that within [`DEADLINE`] of its arrival here, whatever any member
//! does: a hung or cut-off leader is noticed by Raft's own heartbeats and elections (a new
//! leader, or no contact with the old one), never by waiting for TCP.

use std::collections::HashMap;
use std::sync::Arc;

use ooblane::replication::{ExecutorLink, MAX_PROPOSAL, ToExecutor, Verdict};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use openraft::raft::responder::ProgressResponder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::entry::{Proposal, Raft};
use crate::forwarder::Forwarder;
use crate::leader::Leadership;
use crate::state_machine::{Node, OwnApplied};
use crate::ticket::{DEADLINE, Ticket, Unapplied, refuse};

/// Proposals of this member in the log and not yet committed, at most: while they are, the
/// executor's next proposals wait in the queue and are merged into one entry. At a low rate
/// each command travels alone at once; at a high rate entries grow instead of their number
/// (measured: one entry per command at 5,000/s outran what openraft's core handles per entry
/// on 2 cores, and latency grew to seconds).
const WINDOW: usize = 8;

/// The leader's answer for one appended proposal, once known.
type Outcome =
    tokio::sync::oneshot::Receiver<Result<ClientWriteResponse<Raft>, ClientWriteError<Raft>>>;

/// A proposal handed to the leader's Raft: either refused at once or waiting to commit.
pub(crate) enum Submitted {
    Ready(Verdict),
    Waiting(Outcome),
}

/// On the leader: appends `proposal` if this member still leads, once a quorum has
/// acknowledged it as leader (a leader just elected refuses writes until then: openraft's
/// lease starts at the first acknowledgement), waiting for that until `deadline`.
pub(crate) async fn submit(
    raft: &Node,
    me: u64,
    proposal: Proposal,
    deadline: Instant,
) -> Submitted {
    if let Err(why) = writable(raft, me, deadline).await {
        return Submitted::Ready(Verdict::NotExecuted(why));
    }
    let (responder, outcome) = ProgressResponder::complete_only();
    match raft.client_write_ff(proposal, Some(responder)).await {
        Ok(()) => Submitted::Waiting(outcome),
        Err(fatal) => Submitted::Ready(Verdict::NotExecuted(format!("raft stopped: {fatal}"))),
    }
}

/// Waits until this member leads and a quorum has acknowledged it; says why not otherwise.
async fn writable(raft: &Node, me: u64, deadline: Instant) -> Result<(), String> {
    let mut metrics = raft.metrics();
    let waiting = async {
        loop {
            {
                let m = metrics.borrow_watched();
                if m.current_leader != Some(me) {
                    return Err(format!("member {me} is not the leader"));
                }
                if m.last_quorum_acked.is_some() {
                    return Ok(());
                }
            }
            if metrics.changed().await.is_err() {
                return Err("raft stopped".to_owned());
            }
        }
    };
    let late = || {
        format!(
            "member {me} was elected but no quorum acknowledged it within {} s",
            DEADLINE.as_secs()
        )
    };
    tokio::time::timeout_at(deadline, waiting).await.unwrap_or_else(|_| Err(late()))
}

/// Waits for an appended proposal to commit, or for `deadline`.
pub(crate) async fn settle(submitted: Submitted, deadline: Instant) -> Verdict {
    let outcome = match submitted {
        Submitted::Ready(verdict) => return verdict,
        Submitted::Waiting(outcome) => outcome,
    };
    match tokio::time::timeout_at(deadline, outcome).await {
        Ok(Ok(Ok(_))) => Verdict::Committed,
        // Refused before it was appended: not leader, or the leader lease expired (the leader
        // lost its quorum).
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(to)))) => {
            Verdict::NotExecuted(format!("the leader refused it ({to})"))
        }
        // Discarded from this member's log when it adopted another leader's: truncated as
        // conflicting, so never committed. (openraft also uses it for an entry purged under
        // a snapshot this member installed; the executor has already answered those calls
        // "outcome unknown" when it installed the snapshot, so this refusal finds them done.)
        Ok(Ok(Err(ClientWriteError::LogEntryDiscarded(_)))) => {
            Verdict::NotExecuted("leadership changed before it was committed".into())
        }
        Ok(Ok(Err(e))) => Verdict::Unknown(format!("the leader failed it: {e}")),
        Ok(Err(_)) => Verdict::Unknown("the leader stopped with it in flight".into()),
        Err(_) => Verdict::Unknown(format!(
            "not committed within {} s (the leader lost its quorum?)",
            DEADLINE.as_secs()
        )),
    }
}

/// Merges into `proposal` the proposals queued behind it that continue it, up to
/// [`MAX_PROPOSAL`] commands; returns the first one that does not.
fn gather(
    proposal: &mut Proposal,
    queue: &mut mpsc::UnboundedReceiver<Proposal>,
) -> Option<Proposal> {
    while proposal.commands.len() < MAX_PROPOSAL {
        let Ok(next) = queue.try_recv() else { return None };
        let continues = next.first_seq == proposal.first_seq + proposal.commands.len() as u64;
        if !continues || proposal.commands.len() + next.commands.len() > MAX_PROPOSAL {
            return Some(next);
        }
        proposal.commands.extend(next.commands);
    }
    None
}

/// This member's side of proposing: who leads, the executor, the way to each leader.
pub(crate) struct Proposer {
    leadership: Leadership,
    link: ExecutorLink,
    forwarders: HashMap<u64, Forwarder>,
    window: Arc<Semaphore>,
    /// Forwarded proposals the leader committed, until they are applied here.
    unapplied: Arc<Unapplied>,
}

impl Proposer {
    pub(crate) fn new(
        leadership: Leadership,
        link: ExecutorLink,
        own: Arc<OwnApplied>,
    ) -> Proposer {
        let window = Arc::new(Semaphore::new(WINDOW));
        let reach = Arc::clone(&leadership.reach);
        let unapplied = Arc::new(Unapplied::new(link.clone(), own, reach));
        Proposer { leadership, link, forwarders: HashMap::new(), window, unapplied }
    }

    /// Routes this member's proposals, in order, at most [`WINDOW`] in flight, until the
    /// executor stops proposing.
    pub(crate) async fn run(mut self, mut proposals: mpsc::UnboundedReceiver<Proposal>) {
        let watch = tokio::spawn(Arc::clone(&self.unapplied).watch());
        let _stop = AbortOnDrop(watch);
        let mut next: Option<(Proposal, Instant)> = None;
        loop {
            let (mut proposal, deadline) = match next.take() {
                Some(queued) => queued,
                None => match proposals.recv().await {
                    Some(proposal) => (proposal, Instant::now() + DEADLINE),
                    None => return,
                },
            };
            let Some(place) = self.room(deadline).await else {
                let why = format!(
                    "{WINDOW} proposals of this member did not settle within {} s",
                    DEADLINE.as_secs()
                );
                self.refuse_unsent(&proposal, Verdict::NotExecuted(why));
                continue;
            };
            next = gather(&mut proposal, &mut proposals).map(|p| (p, Instant::now() + DEADLINE));
            let ticket = Ticket::new(&proposal, deadline, place);
            self.route(proposal, ticket).await;
        }
    }

    /// A place in the window, unless `deadline` comes first.
    async fn room(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let place = Arc::clone(&self.window).acquire_owned();
        tokio::time::timeout_at(deadline, place).await.ok().map(|p| p.expect("never closed"))
    }

    /// Refuses a proposal that never got a place in the window.
    fn refuse_unsent(&self, proposal: &Proposal, verdict: Verdict) {
        let count = proposal.commands.len();
        tracing::debug!(first_seq = proposal.first_seq, count, ?verdict, "proposal refused");
        (self.link)(ToExecutor::Refuse { first_seq: proposal.first_seq, count, verdict });
    }

    /// Hands one proposal to the leader (this member's Raft, or a forwarder), waiting for a
    /// reachable one until the ticket's deadline; refuses it if there is none.
    async fn route(&mut self, mut proposal: Proposal, mut ticket: Ticket) {
        let mut unreachable: Option<(u64, String)> = None;
        loop {
            let avoid = unreachable.as_ref().map(|(leader, _)| *leader);
            let leader = match self.leadership.reachable(avoid, ticket.deadline).await {
                Ok(leader) => leader,
                Err(why) => {
                    let why = match &unreachable {
                        Some((leader, e)) => format!("no leader reachable (member {leader}: {e})"),
                        None => why,
                    };
                    return refuse(&self.link, ticket, Verdict::NotExecuted(why));
                }
            };
            if leader == self.leadership.me {
                return self.append_here(proposal, ticket).await;
            }
            let Some(addr) = self.leadership.address(leader) else {
                let why = format!("no address for the leader (member {leader})");
                return refuse(&self.link, ticket, Verdict::NotExecuted(why));
            };
            let (raft, link) = (self.leadership.raft.clone(), self.link.clone());
            let unapplied = Arc::clone(&self.unapplied);
            let forwarder = self
                .forwarders
                .entry(leader)
                .or_insert_with(|| Forwarder::new(leader, addr, raft, link, unapplied));
            match forwarder.send(proposal, ticket).await {
                Ok(()) => return,
                Err((back, returned, e)) => {
                    (proposal, ticket) = (back, returned);
                    unreachable = Some((leader, e.to_string()));
                }
            }
        }
    }

    /// On the leader: appends, then settles the proposal in a task of its own.
    async fn append_here(&self, proposal: Proposal, ticket: Ticket) {
        let (raft, me) = (&self.leadership.raft, self.leadership.me);
        let submitted = submit(raft, me, proposal, ticket.deadline).await;
        let link = self.link.clone();
        tokio::spawn(async move {
            let verdict = settle(submitted, ticket.deadline).await;
            refuse(&link, ticket, verdict);
        });
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
