//! A durable, Raft-replicated in-band log for the ooblane dispatcher: the backend of its
//! replication port ([`ooblane::replication`]), built on openraft with a redb log.
//!
//! `--data DIR` makes every replicated in-band command durable before its reply leaves;
//! `--cluster` replicates it over Raft to a static set of members, each applying every
//! committed command in the same order. A durable single node is a cluster of one.
//!
//! ```text
//!  executor ── ToLog::Propose ──► proposer (tokio): leader? append : forward to the leader
//!     ▲                                        │
//!     │                      openraft: replicate, fsync (redb), commit
//!     │                                        │
//!     └── ToExecutor::Apply (in log order) ◄── state machine (the executor, through its
//!                                              job queue); snapshots taken and installed there
//! ```
//!
//! The executor stays the only owner of the state. OOB commands never wait for any of this.
//! See `docs/cluster.md` in the repository for what a client sees.
//!
//! # Layout
//!
//! In reading order, leaves first: each module imports only modules listed before it.
//! - `config`: [`RaftConfig`], plain data.
//! - `entry`: what the log holds (the core's proposals) and openraft's type configuration.
//! - `snapshot`: the snapshot file, replaced atomically.
//! - `reach`: which members this member has heard from lately (is it cut off?).
//! - `log_store`: the durable log in one redb file, with its writer thread.
//! - `state_machine`: openraft's state machine, which is the executor.
//! - `status`: `query-cluster`'s view, computed from openraft's metrics when asked.
//! - `network`: member-to-member framing, openraft's RPC client, this member's own requests.
//! - `leader`: whom to hand a request to (this member, a leader heard from lately, or none).
//! - `membership`: what only the leader does: read index, members joining and leaving.
//! - `ticket`: a proposal on its way: its calls, its place in the window, its deadline; and
//!   the forwarded ones the leader committed, until they are applied here.
//! - `forwarder`: a follower's pipelined connection to the leader for its proposals.
//! - `proposer`: routes this member's proposals to the leader, each settled within a deadline.
//! - `requests`: linearizable-read barriers and administrative requests, within a deadline.
//! - `serve`: this member's side of the member connections.
//! - `join`: a new member asking the running cluster to add it.
//! - `boot`: openraft's configuration, creation, first formation, replay.

mod boot;
mod config;
mod entry;
mod forwarder;
mod join;
mod leader;
mod log_store;
mod membership;
mod network;
mod proposer;
mod reach;
mod requests;
mod serve;
mod snapshot;
mod state_machine;
mod status;
mod ticket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ooblane::Error;
use ooblane::replication::{
    ExecutorLink, LogLink, Opened, Origin, Position, ReplicatedLog, RunningLog, ToLog,
};
use tokio::sync::mpsc;

use crate::entry::Proposal;
use crate::leader::Leadership;
use crate::proposer::Proposer;
use crate::reach::Reach;
use crate::requests::{Asked, Requests};
use crate::state_machine::{Applied, OwnApplied};
use crate::status::StatusCell;

pub use crate::config::RaftConfig;

/// What `open` prepares for `start`: where the executor starts, and its requests.
#[derive(Debug)]
struct Channels {
    start: Applied,
    /// This run's proposals carry it.
    origin: Origin,
    proposed: mpsc::UnboundedReceiver<Proposal>,
    asked: mpsc::UnboundedReceiver<Asked>,
}

/// A member's replicated log: hand it to `ooblane::Server::start_replicated`.
#[derive(Debug)]
pub struct RaftLog {
    config: RaftConfig,
    /// Set by `open`.
    opened: Option<Channels>,
    status: Arc<StatusCell>,
}

impl RaftLog {
    /// The log of the member `config` describes; nothing is touched before the server opens it.
    pub fn new(config: RaftConfig) -> RaftLog {
        let status = Arc::new(StatusCell::new(config.node));
        RaftLog { config, opened: None, status }
    }
}

impl ReplicatedLog for RaftLog {
    fn open(&mut self) -> Result<Opened, Error> {
        let config = &self.config;
        config.validate()?;
        std::fs::create_dir_all(&config.data).map_err(|e| {
            Error::Config(format!(
                "cannot create the data directory {}: {e}",
                config.data.display()
            ))
        })?;
        let image = snapshot::SnapshotFile::new(&config.data).load().map_err(|e| {
            Error::Config(format!("cannot read the snapshot in {}: {e}", config.data.display()))
        })?;
        let start = image.as_ref().map(|s| Applied::of_snapshot(&s.meta)).unwrap_or_default();
        let (proposals, proposed) = mpsc::unbounded_channel();
        let (requests, asked) = mpsc::unbounded_channel();
        let log: LogLink = Arc::new(move |message| match message {
            ToLog::Propose(proposal) => {
                proposals.send(proposal).map_err(|refused| ToLog::Propose(refused.0))
            }
            ToLog::Read { barrier } => {
                requests.send(Asked::Read { barrier }).map_err(|_| ToLog::Read { barrier })
            }
            ToLog::Admin { ticket, request } => {
                requests.send(Asked::Admin { ticket, request }).map_err(|refused| match refused.0 {
                    Asked::Admin { ticket, request } => ToLog::Admin { ticket, request },
                    Asked::Read { barrier } => ToLog::Read { barrier },
                })
            }
        });
        let status = Arc::clone(&self.status);
        let origin = Origin { node: config.node, run: run_number() };
        let opened = Opened {
            snapshot: image.map(|s| s.state),
            position: Position::new(start.clone()),
            origin,
            log,
            status: Arc::new(move || status.get()),
        };
        self.opened = Some(Channels { start, origin, proposed, asked });
        Ok(opened)
    }

    fn start(self: Box<Self>, executor: ExecutorLink) -> Result<Box<dyn RunningLog>, Error> {
        let RaftLog { config, opened, status } = *self;
        let Channels { start, origin, proposed, asked } = opened.ok_or_else(|| {
            Error::Config("the replicated log was started before it was opened".into())
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("engine-raft")
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let listener = match config.members.get(&config.node) {
            Some(addr) => Some(runtime.block_on(boot::bind(*addr))?),
            None => None,
        };
        let reach = Arc::new(Reach::new());
        let own = Arc::new(OwnApplied::new(origin));
        let booting =
            boot::boot(&config, start, executor.clone(), Arc::clone(&reach), Arc::clone(&own));
        let (raft, writer) = runtime.block_on(booting)?;
        if !config.clustered() {
            runtime.block_on(boot::replayed(&raft));
        }
        let leadership =
            Leadership { raft: raft.clone(), me: config.node, reach: Arc::clone(&reach) };
        runtime.spawn(Proposer::new(leadership.clone(), executor.clone(), own).run(proposed));
        runtime.spawn(Requests::new(leadership, executor).run(asked));
        if config.join {
            let members: Vec<(u64, SocketAddr)> = config.members.clone().into_iter().collect();
            let addr = config.members[&config.node];
            runtime.spawn(join::join(raft.clone(), config.node, addr, members, Arc::clone(&reach)));
        }
        status.attach(&raft);
        if let Some(listener) = listener {
            let member = serve::Member { raft: raft.clone(), me: config.node, reach };
            runtime.spawn(serve::listen(listener, member));
        }
        tracing::info!(
            node = config.node,
            members = config.members.len().max(1),
            data = %config.data.display(),
            "replicated log started"
        );
        Ok(Box::new(Running { runtime: Some(runtime), raft, writer: Some(writer) }))
    }
}

/// A number that differs at every start of a member (nanoseconds since the epoch).
fn run_number() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_nanos() as u64)
}

/// The running log; dropping it stops Raft, then waits for the log file to be closed.
struct Running {
    runtime: Option<tokio::runtime::Runtime>,
    raft: state_machine::Node,
    writer: Option<log_store::Writer>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftLog(running)")
    }
}

impl RunningLog for Running {}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let raft = self.raft.clone();
            let _ = runtime.block_on(async move {
                tokio::time::timeout(Duration::from_secs(2), raft.shutdown()).await
            });
            runtime.shutdown_timeout(Duration::from_millis(500));
        }
        if let Some(writer) = self.writer.take() {
            writer.join();
        }
    }
}
