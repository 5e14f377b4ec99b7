//! openraft's state machine, which is the executor: committed entries are handed to the
//! executor thread (through its job queue, in order with everything else it does) and applied
//! there to the state it owns; snapshots are taken and installed there too. This side only
//! mirrors how far the executor has applied and keeps the snapshot file.

use std::io::Cursor;

use ooblane::replication::{ExecutorLink, Position, Reply, ToExecutor};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use tokio::sync::oneshot;

use crate::entry::{Entry, LogId, Raft, SnapshotMeta, StorageError, StoredMembership};
use crate::snapshot::{Image, SnapshotFile};

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

/// The state machine: the executor, reached through `link`.
pub(crate) struct StateMachine {
    link: ExecutorLink,
    /// What the executor has applied, as far as this side has seen.
    position: Applied,
    file: SnapshotFile,
    /// Snapshots built by this run, for unique ids.
    built: u64,
}

impl StateMachine {
    /// `position`: where the executor starts (the snapshot it restored at start, if any).
    pub(crate) fn new(link: ExecutorLink, position: Applied, file: SnapshotFile) -> Self {
        StateMachine { link, position, file, built: 0 }
    }
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snapshot_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())).into()
}

/// Runs snapshot file I/O on a blocking thread, off the runtime openraft's tasks share.
async fn off_runtime<T: Send + 'static>(
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(io).await.map_err(snapshot_err)?.map_err(snapshot_err)
}

/// Asks the executor and waits for its answer.
async fn ask<T: Send + 'static>(
    link: &ExecutorLink,
    make: impl FnOnce(Reply<T>) -> ToExecutor,
) -> Result<T, StorageError> {
    let (tx, rx) = oneshot::channel();
    link(make(Box::new(move |answer| {
        let _ = tx.send(answer);
    })));
    rx.await.map_err(|_| sm_err("the executor has exited"))
}

/// Builds a snapshot of the executor's state as it is when the request reaches it.
pub(crate) struct Builder {
    link: ExecutorLink,
    file: SnapshotFile,
    id: u64,
}

impl RaftSnapshotBuilder<Raft> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Raft>, StorageError> {
        let (state, position) =
            ask(&self.link, |done| ToExecutor::Save { done }).await?.map_err(snapshot_err)?;
        let position = Applied::of(&position);
        let index = position.last.map_or(0, |id| id.index);
        let meta = SnapshotMeta {
            last_log_id: position.last,
            last_membership: position.membership,
            snapshot_id: format!("{index}-{}", self.id),
        };
        let image = Image { meta: meta.clone(), state };
        let file = self.file.clone();
        let image = off_runtime(move || file.save(&image).map(|()| image)).await?;
        tracing::debug!(index, bytes = image.state.len(), "snapshot saved");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(image.state)) })
    }
}

impl RaftStateMachine<Raft> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.position.last, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut proposals = Vec::new();
        let mut n = 0;
        for entry in entries {
            n += 1;
            self.position.advance(&entry);
            if let EntryPayload::Normal(proposal) = entry.payload {
                proposals.push(proposal);
            }
        }
        let position = Position::new(self.position.clone());
        ask(&self.link, |done| ToExecutor::Apply { entries: proposals, position, done }).await?;
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        self.built += 1;
        Builder { link: self.link.clone(), file: self.file.clone(), id: self.built }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let applied = Applied::of_snapshot(meta);
        let state = snapshot.into_inner();
        let image = Image { meta: meta.clone(), state: state.clone() };
        let position = Position::new(applied.clone());
        ask(&self.link, |done| ToExecutor::Install { state, position, done })
            .await?
            .map_err(sm_err)?;
        self.position = applied;
        let file = self.file.clone();
        off_runtime(move || file.save(&image)).await?;
        tracing::info!(index = meta.last_log_id.map_or(0, |id| id.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Raft>>, StorageError> {
        let file = self.file.clone();
        let image = off_runtime(move || file.load()).await?;
        Ok(image.map(|image| Snapshot {
            meta: image.meta,
            snapshot: Box::new(Cursor::new(image.state)),
        }))
    }
}
