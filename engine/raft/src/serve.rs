//! This member's side of the member-to-member connections: openraft's RPCs, and proposals
//! forwarded by followers when this member leads. Each connection answers in the order its
//! requests came: RPCs are handled one after the other; a forwarded proposal is appended at
//! once (so proposals keep their order in the log) and answered when it commits.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::entry::Raft;
use crate::network::{self, Request, Response};
use crate::proposer::{self, Submitted};

/// Answers queued for a connection's writer, in request order.
enum Answer {
    Now(Response),
    Proposal(Submitted),
}

/// Accepts member connections until the runtime stops.
pub(crate) async fn listen(listener: TcpListener, raft: openraft::Raft<Raft>, me: u64) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, raft.clone(), me));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, raft: openraft::Raft<Raft>, me: u64) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let writing = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let response = match answer {
                Answer::Now(response) => response,
                Answer::Proposal(submitted) => Response::Forward(proposer::settle(submitted).await),
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
            Request::Append(rpc) => Answer::Now(Response::Append(raft.append_entries(rpc).await)),
            Request::Vote(rpc) => Answer::Now(Response::Vote(raft.vote(rpc).await)),
            Request::Snapshot(rpc) => {
                Answer::Now(Response::Snapshot(raft.install_snapshot(rpc).await))
            }
            Request::Forward(proposal) => {
                Answer::Proposal(proposer::submit(&raft, me, proposal).await)
            }
        };
        if tx.send(answer).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writing.await;
}
