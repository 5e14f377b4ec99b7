//! How members talk: one TCP listener per member (its address in `--cluster`), length-
//! prefixed JSON frames. openraft's RPCs (append, vote, snapshot chunks) go one at a time on
//! a connection per peer ([`Peers`] implements openraft's network); a follower forwards its
//! proposals to the leader on a connection of their own, pipelined ([`crate::proposer`]).
//! Every connection answers its requests in the order they came.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ooblane::replication::Verdict;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::entry::{Proposal, Raft};

/// Largest frame accepted: snapshot chunks are at most openraft's chunk size (3 MiB), append
/// batches at most `max_payload_entries`.
const MAX_FRAME: usize = 64 << 20;

/// What a member asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<Raft>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<Raft>),
    /// A follower's proposal, for the leader to append.
    Forward(Proposal),
}

/// The answer, same variant as the request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Forward(Verdict),
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

/// Opens a connection to a member, with `TCP_NODELAY` (frames are small and latency-bound).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// openraft's network: a [`Peer`] per target member.
#[derive(Debug, Default)]
pub(crate) struct Peers;

impl RaftNetworkFactory<Raft> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.parse().ok(), stream: None }
    }
}

/// The RPC connection to one member, opened on first use and after any failure.
#[derive(Debug)]
pub(crate) struct Peer {
    target: u64,
    addr: Option<SocketAddr>,
    stream: Option<TcpStream>,
}

/// An RPC failure before any answer: openraft retries after a backoff.
type Failed<E> = RPCError<u64, BasicNode, E>;

impl Peer {
    async fn call<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, Failed<E>> {
        let ttl = option.hard_ttl();
        let Some(addr) = self.addr else {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "bad member address");
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        if self.stream.is_none() {
            let stream = connect(addr, ttl)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let exchange = async {
            write_frame(stream, &request).await?;
            read_frame::<_, Response>(stream)
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.stream = None;
                Err(RPCError::Network(NetworkError::new(&e)))
            }
            Err(_) => {
                self.stream = None;
                let e = io::Error::new(io::ErrorKind::TimedOut, "rpc timed out");
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }

    fn mismatch<E: std::error::Error>() -> Failed<E> {
        let e = io::Error::new(io::ErrorKind::InvalidData, "answer of the wrong kind");
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<Raft> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Raft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(Request::Append(rpc), &option).await? {
            Response::Append(Ok(r)) => Ok(r),
            Response::Append(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::mismatch()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Raft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.call(Request::Snapshot(rpc), &option).await? {
            Response::Snapshot(Ok(r)) => Ok(r),
            Response::Snapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::mismatch()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(Self::mismatch()),
        }
    }
}
