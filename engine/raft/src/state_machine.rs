//! openraft's state machine, which is the executor: committed entries are handed to the
//! executor thread (through its job queue, in order with everything else it does) and applied
//! there to the state it owns; snapshots are taken and installed there too. This side only
//! mirrors how far the executor has applied and keeps the snapshot file.

use std::io::{self, Cursor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{Stream, TryStreamExt};
use ooblane::replication::{ExecutorLink, Origin, Position, Proposal, Reply, ToExecutor};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::oneshot;

use crate::entry::{Entry, LogId, Raft, Snapshot, SnapshotData, SnapshotMeta, StoredMembership};
use crate::snapshot::{Image, SnapshotFile};

/// This member's Raft: the executor is its state machine.
pub(crate) type Node = openraft::Raft<Raft, StateMachine>;

/// How far the executor has applied the log, and the membership as of there: what the
/// executor carries for us as its opaque [`Position`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Applied {
    pub(crate) last: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl Applied {
    pub(crate) fn of_snapshot(meta: &SnapshotMeta) -> Applied {
        Applied { last: meta.last_log_id, membership: meta.last_membership.clone() }
    }

    /// Moves past `entry` (which is being applied).
    fn advance(&mut self, entry: &Entry) {
        self.last = Some(entry.log_id);
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
        }
    }

    /// Ours again, from the executor's opaque copy.
    fn of(position: &Position) -> Applied {
        position.get::<Applied>().cloned().unwrap_or_default()
    }
}

/// How far this member run's own proposals have been handed to the executor to apply: the
/// end (`first_seq` plus its number of commands) of the furthest one. This run's proposals are
/// committed, hence applied, in the order of their numbers, so a committed proposal that ends
/// at or before it has been applied (or its calls answered when a snapshot skipped it).
#[derive(Debug)]
pub(crate) struct OwnApplied {
    origin: Origin,
    end: AtomicU64,
}

impl OwnApplied {
    pub(crate) fn new(origin: Origin) -> OwnApplied {
        OwnApplied { origin, end: AtomicU64::new(0) }
    }

    /// `proposal` is being handed to the executor to apply.
    pub(crate) fn note(&self, proposal: &Proposal) {
        if proposal.origin == self.origin {
            let end = proposal.first_seq + proposal.commands.len() as u64;
            self.end.fetch_max(end, Ordering::Release);
        }
    }

    /// Whether this run's calls before `end` have all been handed to the executor to apply.
    pub(crate) fn covers(&self, end: u64) -> bool {
        self.end.load(Ordering::Acquire) >= end
    }
}

/// The state machine: the executor, reached through `link`.
pub(crate) struct StateMachine {
    link: ExecutorLink,
    /// What the executor has applied, as far as this side has seen.
    position: Applied,
    file: SnapshotFile,
    own: Arc<OwnApplied>,
}

impl StateMachine {
    /// `position`: where the executor starts (the snapshot it restored at start, if any);
    /// `own`: noted at each of this run's proposals applied.
    pub(crate) fn new(
        link: ExecutorLink,
        position: Applied,
        file: SnapshotFile,
        own: Arc<OwnApplied>,
    ) -> Self {
        StateMachine { link, position, file, own }
    }
}

fn io_err(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs snapshot file I/O on a blocking thread, off the runtime openraft's tasks share.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io_err)?
}

/// Asks the executor and waits for its answer.
async fn ask<T: Send + 'static>(
    link: &ExecutorLink,
    make: impl FnOnce(Reply<T>) -> ToExecutor,
) -> io::Result<T> {
    let (tx, rx) = oneshot::channel();
    link(make(Box::new(move |answer| {
        let _ = tx.send(answer);
    })));
    rx.await.map_err(|_| io_err("the executor has exited"))
}

/// Builds a snapshot of the executor's state as it is when the request reaches it.
pub(crate) struct Builder {
    link: ExecutorLink,
    file: SnapshotFile,
}

impl RaftSnapshotBuilder<Raft> for Builder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (state, position) =
            ask(&self.link, |done| ToExecutor::Save { done }).await?.map_err(io_err)?;
        let position = Applied::of(&position);
        let index = position.last.map_or(0, |id| id.index);
        let meta =
            SnapshotMeta { last_log_id: position.last, last_membership: position.membership };
        let image = Image { meta: meta.clone(), state };
        let file = self.file.clone();
        let image = off_runtime(move || file.save(&image).map(|()| image)).await?;
        tracing::debug!(index, bytes = image.state.len(), "snapshot saved");
        Ok(Snapshot { meta, snapshot: Cursor::new(image.state) })
    }
}

impl RaftStateMachine<Raft> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.position.last, self.position.membership.clone()))
    }

    /// Hands the committed entries to the executor in one message, waits until it has applied
    /// them, then answers openraft's responders (nothing to return: the executor answers the
    /// callers itself).
    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<Raft>>> + Unpin + OptionalSend,
    {
        let mut proposals = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            self.position.advance(&entry);
            if let EntryPayload::Normal(proposal) = entry.payload {
                self.own.note(&proposal);
                proposals.push(proposal);
            }
            responders.extend(responder);
        }
        let position = Position::new(self.position.clone());
        ask(&self.link, |done| ToExecutor::Apply { entries: proposals, position, done }).await?;
        for responder in responders {
            responder.send(());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder { link: self.link.clone(), file: self.file.clone() }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let applied = Applied::of_snapshot(meta);
        let state = snapshot.into_inner();
        let image = Image { meta: meta.clone(), state: state.clone() };
        let position = Position::new(applied.clone());
        ask(&self.link, |done| ToExecutor::Install { state, position, done })
            .await?
            .map_err(io_err)?;
        self.position = applied;
        let file = self.file.clone();
        off_runtime(move || file.save(&image)).await?;
        tracing::info!(index = meta.last_log_id.map_or(0, |id| id.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let file = self.file.clone();
        let image = off_runtime(move || file.load()).await?;
        Ok(image.map(|image| Snapshot { meta: image.meta, snapshot: Cursor::new(image.state) }))
    }
}
