//! The executor's requests other than proposals: read barriers for linearizable reads, and
//! administrative requests (membership changes). Each runs in a task of its own and is
//! answered through the executor's queue within [`DEADLINE`]:
//!
//! - a read barrier gets the leader's read index (the leader confirms with a quorum that it
//!   still leads; a follower asks it over the member connection), then waits until this
//!   member has applied that far. Reads never answer from a state that may be stale: a member
//!   that cannot find out in time refuses them.
//! - an administrative request is carried out by the leader (this member, or the leader asked
//!   over the member connection).

use std::collections::HashMap;
use std::sync::Arc;

use ooblane::replication::{AdminRequest, ExecutorLink, ToExecutor};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::leader::Leadership;
use crate::membership;
use crate::network::{Peer, Response, Rpc};
use crate::ticket::DEADLINE;

/// A request of the executor's, other than a proposal.
#[derive(Debug)]
pub(crate) enum Asked {
    /// A read barrier.
    Read { barrier: u64 },
    /// An administrative request.
    Admin { ticket: u64, request: AdminRequest },
}

/// A connection to one member, one request at a time.
type SharedPeer = Arc<Mutex<Peer>>;

/// What serves the executor's requests.
#[derive(Clone)]
pub(crate) struct Requests {
    leadership: Leadership,
    link: ExecutorLink,
    /// Connections to the members asked so far.
    peers: Arc<parking_lot::Mutex<HashMap<u64, SharedPeer>>>,
}

impl Requests {
    pub(crate) fn new(leadership: Leadership, link: ExecutorLink) -> Requests {
        Requests { leadership, link, peers: Arc::default() }
    }

    /// Serves requests until the executor stops sending them.
    pub(crate) async fn run(self, mut requests: mpsc::UnboundedReceiver<Asked>) {
        while let Some(request) = requests.recv().await {
            let this = self.clone();
            match request {
                Asked::Read { barrier } => {
                    tokio::spawn(async move {
                        let result = this.read(Instant::now() + DEADLINE).await;
                        (this.link)(ToExecutor::ReadDone { barrier, result });
                    });
                }
                Asked::Admin { ticket, request } => {
                    tokio::spawn(async move {
                        let result = this.admin(&request, Instant::now() + DEADLINE).await;
                        (this.link)(ToExecutor::AdminDone { ticket, result });
                    });
                }
            }
        }
    }

    /// A read barrier: the leader's read index, then this member's apply catching up to it.
    async fn read(&self, deadline: Instant) -> Result<(), String> {
        let me = self.leadership.me;
        let mut avoid = None;
        loop {
            let leader = self.leadership.reachable(avoid, deadline).await.map_err(not_executed)?;
            let index = if leader == me {
                membership::read_index(&self.leadership.raft).await.map_err(not_executed)?
            } else {
                match self.ask(leader, Rpc::ReadIndex, deadline).await {
                    Ok(Response::ReadIndex(Ok(index))) => index,
                    Ok(Response::ReadIndex(Err(why))) => {
                        return Err(format!("not executed: the leader (member {leader}): {why}"));
                    }
                    Ok(_) => return Err(not_executed("the leader answered something else")),
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "read index: leader unreachable");
                        avoid = Some(leader);
                        continue;
                    }
                }
            };
            return membership::applied(&self.leadership.raft, index.index, deadline)
                .await
                .map_err(not_executed);
        }
    }

    /// An administrative request, carried out by the leader.
    async fn admin(&self, request: &AdminRequest, deadline: Instant) -> Result<(), String> {
        let leader = self.leadership.reachable(None, deadline).await.map_err(not_executed)?;
        if leader == self.leadership.me {
            let raft = &self.leadership.raft;
            return membership::administer(raft, &self.leadership.reach, request, deadline).await;
        }
        match self.ask(leader, Rpc::Admin(request.clone()), deadline).await {
            Ok(Response::Admin(result)) => result,
            Ok(_) => Err(not_executed("the leader answered something else")),
            Err(e) => Err(format!(
                "outcome unknown: lost the leader (member {leader}) with the request in flight: {e}"
            )),
        }
    }

    /// One request to member `node`, answered by `deadline`.
    async fn ask(&self, node: u64, rpc: Rpc, deadline: Instant) -> std::io::Result<Response> {
        let addr = self.leadership.address(node).ok_or_else(|| {
            std::io::Error::other(format!("no address for member {node} in the membership"))
        })?;
        let peer = {
            let reach = Arc::clone(&self.leadership.reach);
            let mut peers = self.peers.lock();
            let peer = peers
                .entry(node)
                .or_insert_with(|| Arc::new(Mutex::new(Peer::new(node, addr, reach))));
            Arc::clone(peer)
        };
        let mut peer = peer.lock().await;
        peer.ask(rpc, deadline.saturating_duration_since(Instant::now())).await
    }
}

fn not_executed(why: impl std::fmt::Display) -> String {
    format!("not executed: {why}")
}
