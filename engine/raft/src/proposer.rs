//! Getting this member's proposals into the log, in the order its executor made them: the
//! leader appends its own at once; a follower forwards its to the leader on one pipelined
//! connection and learns only of failures (success shows as the entry being applied here).
//! Every proposal ends in exactly one of: applied (the executor answers its callers), or a
//! refusal sent to the executor saying whether it certainly did not run or its fate is unknown.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ooblane::replication::{ExecutorLink, MAX_PROPOSAL, ToExecutor, Verdict};
use openraft::error::ClientWriteError;
use openraft::raft::responder::OneshotResponder;
use parking_lot::Mutex;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::entry::{Proposal, Raft};
use crate::network::{self, Request, Response};

/// How long a proposal may wait to be committed before its caller is told its fate is
/// unknown (the leader lost its quorum, or the cluster is partitioned).
pub(crate) const COMMIT_DEADLINE: Duration = Duration::from_secs(3);

/// How long a proposal waits for a (reachable) leader before it is refused: a few election
/// timeouts.
const LEADER_PATIENCE: Duration = Duration::from_secs(3);

/// How long connecting to the leader may take (loopback or a LAN: refused or made at once).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The receiving end of the leader's responder for one appended proposal.
type Waiting = <OneshotResponder<Raft> as openraft::raft::responder::Responder<Raft>>::Receiver;

/// A proposal handed to the leader's Raft: either refused at once or waiting to commit.
pub(crate) enum Submitted {
    Ready(Verdict),
    Waiting(Waiting),
}

/// On the leader: appends `proposal` if this member still leads.
pub(crate) async fn submit(raft: &openraft::Raft<Raft>, me: u64, proposal: Proposal) -> Submitted {
    if raft.metrics().borrow().current_leader != Some(me) {
        return Submitted::Ready(Verdict::NotExecuted(format!("member {me} is not the leader")));
    }
    match raft.client_write_ff(proposal).await {
        Ok(rx) => Submitted::Waiting(rx),
        Err(fatal) => Submitted::Ready(Verdict::NotExecuted(format!("raft stopped: {fatal}"))),
    }
}

/// Waits for an appended proposal to commit, or for its deadline.
pub(crate) async fn settle(submitted: Submitted) -> Verdict {
    let rx = match submitted {
        Submitted::Ready(verdict) => return verdict,
        Submitted::Waiting(rx) => rx,
    };
    match tokio::time::timeout(COMMIT_DEADLINE, rx).await {
        Ok(Ok(Ok(_))) => Verdict::Committed,
        // Sent when the entry was removed from the log as conflicting: it never committed.
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => {
            Verdict::NotExecuted("leadership changed before it was committed".into())
        }
        Ok(Ok(Err(e))) => Verdict::Unknown(format!("the leader failed it: {e}")),
        Ok(Err(_)) => Verdict::Unknown("the leader stopped with it in flight".into()),
        Err(_) => Verdict::Unknown(format!(
            "not committed within {} s (no quorum?)",
            COMMIT_DEADLINE.as_secs()
        )),
    }
}

/// Proposals of this member in the log and not yet committed, at most: while they are, the
/// executor's next proposals wait in the queue and are merged into one entry. At a low rate
/// each command travels alone at once; at a high rate entries grow instead of their number
/// (measured: one entry per command at 5,000/s outran what openraft's core handles per entry
/// on 2 cores, and latency grew to seconds).
const WINDOW: usize = 8;

/// Which of the executor's calls a proposal carries, holding one place in the [`WINDOW`]
/// until its fate is known.
#[derive(Debug)]
struct Ticket {
    first_seq: u64,
    count: usize,
    _place: OwnedSemaphorePermit,
}

impl Ticket {
    fn of(proposal: &Proposal, place: OwnedSemaphorePermit) -> Ticket {
        Ticket { first_seq: proposal.first_seq, count: proposal.commands.len(), _place: place }
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

/// Tells the executor that a proposal will not be applied as its callers expect.
fn refuse(link: &ExecutorLink, ticket: Ticket, verdict: Verdict) {
    if verdict != Verdict::Committed {
        link(ToExecutor::Refuse { first_seq: ticket.first_seq, count: ticket.count, verdict });
    }
}

/// Routes this member's proposals, in order: to its own Raft when it leads, to the leader
/// otherwise, at most [`WINDOW`] in flight. A proposal that cannot reach any leader (an
/// election, the leader just died) waits up to [`LEADER_PATIENCE`] for one before it is
/// refused; nothing was sent, so it is certainly not executed.
pub(crate) async fn run(
    raft: openraft::Raft<Raft>,
    me: u64,
    peers: HashMap<u64, SocketAddr>,
    link: ExecutorLink,
    mut proposals: mpsc::UnboundedReceiver<Proposal>,
) {
    let mut forwarders: HashMap<u64, Forwarder> = HashMap::new();
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut next: Option<Proposal> = None;
    loop {
        let first = match next.take() {
            Some(proposal) => proposal,
            None => match proposals.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let place = Arc::clone(&window).acquire_owned().await.expect("the window never closes");
        let mut proposal = first;
        next = gather(&mut proposal, &mut proposals);
        let ticket = Ticket::of(&proposal, place);
        route(&raft, me, &peers, &link, &mut forwarders, proposal, ticket).await;
    }
}

/// Hands one proposal to the leader (this member's Raft, or a forwarder), waiting for a
/// reachable one until [`LEADER_PATIENCE`]; refuses it if there is none.
async fn route(
    raft: &openraft::Raft<Raft>,
    me: u64,
    peers: &HashMap<u64, SocketAddr>,
    link: &ExecutorLink,
    forwarders: &mut HashMap<u64, Forwarder>,
    mut proposal: Proposal,
    mut ticket: Ticket,
) {
    let deadline = tokio::time::Instant::now() + LEADER_PATIENCE;
    let mut unreachable: Option<(u64, String)> = None;
    loop {
        let avoid = unreachable.as_ref().map(|(leader, _)| *leader);
        let Some(leader) = wait_for_leader(raft, avoid, deadline).await else {
            let why = match &unreachable {
                Some((leader, e)) => format!("no leader reachable (member {leader}: {e})"),
                None => {
                    "no leader: an election is in progress or this member has no quorum".to_owned()
                }
            };
            return refuse(link, ticket, Verdict::NotExecuted(why));
        };
        if leader == me {
            let submitted = submit(raft, me, proposal).await;
            let link = link.clone();
            tokio::spawn(async move {
                let verdict = settle(submitted).await;
                refuse(&link, ticket, verdict);
            });
            return;
        }
        let Some(&addr) = peers.get(&leader) else {
            return refuse(link, ticket, Verdict::NotExecuted(format!("unknown leader {leader}")));
        };
        let forwarder = forwarders.entry(leader).or_insert_with(|| Forwarder::new(addr));
        match forwarder.send(proposal, ticket, link).await {
            Ok(()) => return,
            Err((back, returned, e)) => {
                (proposal, ticket) = (back, returned);
                unreachable = Some((leader, e.to_string()));
            }
        }
    }
}

/// The current leader, unless it is `avoid` (found unreachable): waits for an election to
/// produce another until `deadline`.
async fn wait_for_leader(
    raft: &openraft::Raft<Raft>,
    avoid: Option<u64>,
    deadline: tokio::time::Instant,
) -> Option<u64> {
    let mut metrics = raft.metrics();
    let waiting = async {
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            if leader.is_some() && leader != avoid {
                return leader;
            }
            if metrics.changed().await.is_err() {
                return None;
            }
        }
    };
    tokio::time::timeout_at(deadline, waiting).await.ok().flatten()
}

/// Proposals forwarded and not yet answered, oldest first.
type InFlight = Arc<Mutex<VecDeque<Ticket>>>;

/// A pipelined connection to one leader: proposals go out in order, answers come back in
/// order (read by a task of its own), and losing the connection makes every proposal in
/// flight on it unknown.
struct Forwarder {
    addr: SocketAddr,
    conn: Option<ForwardConn>,
}

struct ForwardConn {
    writer: tokio::net::tcp::OwnedWriteHalf,
    in_flight: InFlight,
    dead: Arc<AtomicBool>,
}

impl Forwarder {
    fn new(addr: SocketAddr) -> Self {
        Forwarder { addr, conn: None }
    }

    /// Sends `proposal` on the connection (opened if needed); hands it back if the leader
    /// cannot be reached, so it was certainly not sent.
    async fn send(
        &mut self,
        proposal: Proposal,
        ticket: Ticket,
        link: &ExecutorLink,
    ) -> Result<(), (Proposal, Ticket, std::io::Error)> {
        if self.conn.as_ref().is_some_and(|c| c.dead.load(Ordering::Acquire)) {
            self.conn = None;
        }
        if self.conn.is_none() {
            match network::connect(self.addr, CONNECT_TIMEOUT).await {
                Ok(stream) => self.conn = Some(ForwardConn::start(stream, link.clone())),
                Err(e) => return Err((proposal, ticket, e)),
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.in_flight.lock().push_back(ticket);
        if let Err(e) = network::write_frame(&mut conn.writer, &Request::Forward(proposal)).await {
            conn.dead.store(true, Ordering::Release);
            fail_all(&conn.in_flight, link, &format!("lost the leader connection: {e}"));
        }
        Ok(())
    }
}

impl ForwardConn {
    fn start(stream: tokio::net::TcpStream, link: ExecutorLink) -> ForwardConn {
        let (reader, writer) = stream.into_split();
        let in_flight: InFlight = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_verdicts(reader, Arc::clone(&in_flight), Arc::clone(&dead), link));
        ForwardConn { writer, in_flight, dead }
    }
}

/// Reads the leader's verdicts in order, refusing what it refused; at the end of the
/// connection, whatever is still in flight is unknown.
async fn read_verdicts(
    mut reader: OwnedReadHalf,
    in_flight: InFlight,
    dead: Arc<AtomicBool>,
    link: ExecutorLink,
) {
    let why = loop {
        match network::read_frame::<_, Response>(&mut reader).await {
            Ok(Some(Response::Forward(verdict))) => {
                let Some(ticket) = in_flight.lock().pop_front() else {
                    break "the leader answered a proposal never sent".to_owned();
                };
                refuse(&link, ticket, verdict);
            }
            Ok(Some(_)) => break "the leader sent an answer of the wrong kind".to_owned(),
            Ok(None) => break "the leader closed the connection".to_owned(),
            Err(e) => break format!("lost the leader connection: {e}"),
        }
    };
    dead.store(true, Ordering::Release);
    fail_all(&in_flight, &link, &why);
}

fn fail_all(in_flight: &InFlight, link: &ExecutorLink, why: &str) {
    let lost: Vec<Ticket> = in_flight.lock().drain(..).collect();
    for ticket in lost {
        refuse(link, ticket, Verdict::Unknown(why.to_owned()));
    }
}
