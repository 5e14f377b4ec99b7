//! This member's side of the member-to-member connections: openraft's RPCs, and proposals
//! forwarded by followers when this member leads. Each connection answers in the order its
//! requests came: RPCs are handled one after the other; a forwarded proposal is appended at
//! once (so proposals keep their order in the log) and answered when it commits.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::vote::RaftLeaderId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::entry::Snapshot;
use crate::membership;
use crate::network::{self, Request, Response, Rpc};
use crate::proposer::{self, Submitted};
use crate::reach::Reach;
use crate::state_machine::Node;
use crate::ticket::DEADLINE;

/// Answers queued for a connection's writer, in request order.
enum Answer {
    Now(Response),
    /// A forwarded proposal, answered once it commits or by its deadline.
    Proposal(Submitted, Instant),
}

/// What a member connection is served with.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) raft: Node,
    pub(crate) me: u64,
    /// Noted at every RPC another member sends here.
    pub(crate) reach: Arc<Reach>,
}

/// Accepts member connections until the runtime stops.
pub(crate) async fn listen(listener: TcpListener, member: Member) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, member.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, member: Member) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let writing = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let response = match answer {
                Answer::Now(response) => response,
                Answer::Proposal(submitted, deadline) => {
                    Response::Forward(proposer::settle(submitted, deadline).await)
                }
            };
            if network::write_frame(&mut writer, &response).await.is_err() {
                break;
            }
        }
    });
    loop {
        let request = match network::read_frame::<_, Request>(&mut reader).await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "member connection ended");
                break;
            }
        };
        let answer = match request {
            Request::Forward(proposal) => {
                let deadline = Instant::now() + DEADLINE;
                let submitted = proposer::submit(&member.raft, member.me, proposal, deadline).await;
                Answer::Proposal(submitted, deadline)
            }
            Request::Rpc(rpc) => Answer::Now(answer_rpc(&member, rpc).await),
        };
        if tx.send(answer).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writing.await;
}

/// Hands one of openraft's RPCs to this member's Raft; its errors travel as text.
async fn answer_rpc(member: &Member, rpc: Rpc) -> Response {
    let (raft, text) = (&member.raft, |e: &dyn std::fmt::Display| e.to_string());
    match rpc {
        Rpc::Append(rpc) => {
            member.reach.heard(*rpc.vote.leader_id().node_id());
            Response::Append(raft.append_entries(rpc).await.map_err(|e| text(&e)))
        }
        Rpc::Vote(rpc) => {
            member.reach.heard(*rpc.vote.leader_id().node_id());
            Response::Vote(raft.vote(rpc).await.map_err(|e| text(&e)))
        }
        Rpc::PreVote(rpc) => {
            member.reach.heard(*rpc.vote.leader_id().node_id());
            Response::PreVote(raft.pre_vote(rpc).await.map_err(|e| text(&e)))
        }
        Rpc::ReadIndex => Response::ReadIndex(membership::read_index(raft).await),
        Rpc::TransferLeader(request) => Response::TransferLeader(
            raft.handle_transfer_leader(request).await.map_err(|e| text(&e)),
        ),
        Rpc::Removed => {
            tracing::warn!(node = member.me, "the leader removed this member from the cluster");
            member.reach.set_removed();
            Response::Removed
        }
        Rpc::Admin(request) => {
            let deadline = Instant::now() + DEADLINE;
            Response::Admin(membership::administer(raft, &member.reach, &request, deadline).await)
        }
        Rpc::Join { node, addr } => Response::Join(membership::add(raft, node, &addr).await),
        Rpc::Snapshot { vote, meta, data } => {
            member.reach.heard(*vote.leader_id().node_id());
            let snapshot = Snapshot { meta, snapshot: Cursor::new(data) };
            let installed = raft.install_full_snapshot(vote, snapshot).await;
            Response::Snapshot(installed.map_err(|e| text(&e)))
        }
    }
}
