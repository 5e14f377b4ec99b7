//! How members talk: one TCP listener per member (its address in `--cluster`), length-
//! prefixed JSON frames. openraft's RPCs (append, vote, pre-vote, snapshot) go one at a time
//! on a connection per peer and purpose ([`Peers`] implements openraft's network; openraft
//! opens one client for replication and one for heartbeats, so a heartbeat never waits behind
//! a large append); a follower forwards its proposals to the leader on a connection of their
//! own, pipelined ([`crate::proposer`]). Every connection answers its requests in the order
//! they came.
//!
//! Every RPC has a deadline (openraft's time budget for it), connecting included: a peer that
//! hangs or is cut off costs an RPC timeout, then a new connection, never a wait for TCP to
//! give up.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ooblane::replication::{AdminRequest, Verdict};
use openraft::BasicNode;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::entry::{LogId, Proposal, Raft, Snapshot, SnapshotMeta, Vote};
use crate::reach::Reach;

/// Largest frame accepted: a whole snapshot travels in one frame, appends are at most
/// `max_payload_entries` entries.
const MAX_FRAME: usize = 256 << 20;

/// What a member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// One request, one answer.
    Rpc(Rpc),
    /// A follower's proposal, for the leader to append.
    Forward(Proposal),
}

/// One request, one answer: openraft's RPCs, and the requests a member sends its leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<Raft>),
    Vote(VoteRequest<Raft>),
    PreVote(VoteRequest<Raft>),
    /// A whole snapshot: the sender's vote, what it covers, the state's bytes.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// The leader hands leadership over to the receiver (it is being removed).
    TransferLeader(TransferLeaderRequest<Raft>),
    /// The leader's read index, once it has confirmed it still leads.
    ReadIndex,
    /// The receiver was removed from the cluster (told once the change is committed).
    Removed,
    /// A membership change, for the leader to carry out.
    Admin(AdminRequest),
    /// Member `node` at `addr` asks to join, for the leader to carry out.
    Join {
        node: u64,
        addr: String,
    },
}

/// The answer, same variant as the request. Errors travel as text: they are diagnostics
/// (a stopped or failing member), never something the caller acts on beyond retrying.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Append(Result<AppendEntriesResponse<Raft>, String>),
    Vote(Result<VoteResponse<Raft>, String>),
    PreVote(Result<VoteResponse<Raft>, String>),
    Snapshot(Result<SnapshotResponse<Raft>, String>),
    Forward(Verdict),
    TransferLeader(Result<TransferLeaderResponse<Raft>, String>),
    ReadIndex(Result<LogId, String>),
    Removed,
    /// Done, or the description of the error a client gets.
    Admin(Result<(), String>),
    Join(Result<(), String>),
}

/// Writes one frame: 4-byte big-endian length, then JSON.
pub(crate) async fn write_frame<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub(crate) async fn read_frame<R: AsyncReadExt + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map(Some).map_err(io::Error::other)
}

/// Opens a connection to a member within `timeout`, with `TCP_NODELAY` (frames are small
/// and latency-bound).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// openraft's network: a [`Peer`] per target member and purpose.
#[derive(Debug)]
pub(crate) struct Peers {
    /// Noted at every answer a peer gives.
    reach: Arc<Reach>,
}

impl Peers {
    pub(crate) fn new(reach: Arc<Reach>) -> Peers {
        Peers { reach }
    }
}

impl RaftNetworkFactory<Raft> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let reach = Arc::clone(&self.reach);
        Peer { target, addr: node.addr.parse().ok(), stream: None, reach }
    }
}

/// The RPC connection to one member, opened on first use and after any failure.
#[derive(Debug)]
pub(crate) struct Peer {
    target: u64,
    addr: Option<SocketAddr>,
    stream: Option<TcpStream>,
    reach: Arc<Reach>,
}

fn unreachable(e: &io::Error) -> RPCError<Raft> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn network(e: &io::Error) -> RPCError<Raft> {
    RPCError::Network(NetworkError::new(e))
}

impl Peer {
    /// A connection to `target` at `addr`, opened on first use.
    pub(crate) fn new(target: u64, addr: SocketAddr, reach: Arc<Reach>) -> Peer {
        Peer { target, addr: Some(addr), stream: None, reach }
    }

    /// One request of this member's own (not openraft's) and its answer, within `ttl`.
    pub(crate) async fn ask(&mut self, rpc: Rpc, ttl: Duration) -> io::Result<Response> {
        self.exchange(rpc, ttl).await.map_err(|e| io::Error::other(e.to_string()))
    }

    /// One request and its answer within openraft's budget (`soft_ttl`, connecting
    /// included).
    async fn call(&mut self, rpc: Rpc, option: &RPCOption) -> Result<Response, RPCError<Raft>> {
        self.exchange(rpc, option.soft_ttl()).await
    }

    /// One request and its answer within `ttl`, connecting included; any failure drops the
    /// connection, so the next call starts afresh.
    async fn exchange(&mut self, rpc: Rpc, ttl: Duration) -> Result<Response, RPCError<Raft>> {
        let Some(addr) = self.addr else {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "bad member address");
            return Err(unreachable(&e));
        };
        let deadline = tokio::time::Instant::now() + ttl;
        if self.stream.is_none() {
            let stream = connect(addr, ttl).await.map_err(|e| unreachable(&e))?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let exchange = async {
            write_frame(stream, &Request::Rpc(rpc)).await?;
            read_frame::<_, Response>(stream)
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => {
                self.reach.heard(self.target);
                Ok(response)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(network(&e))
            }
            Err(_) => {
                self.stream = None;
                let e = io::Error::new(io::ErrorKind::TimedOut, "rpc timed out");
                Err(network(&e))
            }
        }
    }

    /// The peer answered something else, or an error (as text).
    fn failed(&self, what: impl std::fmt::Display) -> RPCError<Raft> {
        let e = io::Error::other(format!("member {}: {what}", self.target));
        network(&e)
    }
}

impl RaftNetworkV2<Raft> for Peer {
    type SnapshotData = crate::entry::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Raft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Raft>, RPCError<Raft>> {
        match self.call(Rpc::Append(rpc), &option).await? {
            Response::Append(Ok(r)) => Ok(r),
            Response::Append(Err(e)) => Err(self.failed(e)),
            _ => Err(self.failed("an answer of the wrong kind")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Raft>,
        option: RPCOption,
    ) -> Result<VoteResponse<Raft>, RPCError<Raft>> {
        match self.call(Rpc::Vote(rpc), &option).await? {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => Err(self.failed(e)),
            _ => Err(self.failed("an answer of the wrong kind")),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Raft>,
        option: RPCOption,
    ) -> Result<VoteResponse<Raft>, RPCError<Raft>> {
        match self.call(Rpc::PreVote(rpc), &option).await? {
            Response::PreVote(Ok(r)) => Ok(r),
            Response::PreVote(Err(e)) => Err(self.failed(e)),
            _ => Err(self.failed("an answer of the wrong kind")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<Raft>, StreamingError<Raft>> {
        let request =
            Rpc::Snapshot { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = self.call(request, &option) => answer,
        };
        match answer? {
            Response::Snapshot(Ok(r)) => Ok(r),
            Response::Snapshot(Err(e)) => Err(self.failed(e).into()),
            _ => Err(self.failed("an answer of the wrong kind").into()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<Raft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<Raft>, RPCError<Raft>> {
        match self.call(Rpc::TransferLeader(req), &option).await? {
            Response::TransferLeader(Ok(r)) => Ok(r),
            Response::TransferLeader(Err(e)) => Err(self.failed(e)),
            _ => Err(self.failed("an answer of the wrong kind")),
        }
    }
}
