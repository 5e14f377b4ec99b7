//! The durable Raft log of one member, in one redb file (`DIR/log.redb`): entries by index,
//! plus the vote, the committed log id and the last purged log id.
//!
//! Appends are written by a thread of their own (`engine-raft-log`), off openraft's tokio
//! runtime: `append` puts the entries in `unflushed`, where readers find them at once, and
//! hands them to the writer, which commits every append waiting at once in one redb
//! transaction with `Durability::Immediate` (one fsync) and only then tells openraft they
//! are durable (`IOFlushed`), so a reply never leaves before its command is on disk.
//! openraft's core does not wait for that callback: it goes on submitting appends (and, on
//! the leader, replicating them) while the fsync runs, so appends that arrive meanwhile share
//! the next fsync (group commit). The committed mark and purges ride along with the next
//! transaction; truncating first waits for the writer to catch up.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::entry::{Entry, LogId, Raft, Vote};

/// Entries by index, each as JSON.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// `vote`, `committed`, `purged`: JSON values.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Entries appended and not yet committed to the file, by index.
type Unflushed = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// What the writer thread is asked to do, in order.
enum Write {
    Append {
        entries: Vec<Entry>,
        done: IOFlushed<Raft>,
    },
    /// The committed log id, kept for a faster restart (not needed for safety: it is
    /// written with the next append's transaction, never on its own).
    Committed(Option<LogId>),
    /// Drop the entries up to this one (in the snapshot now), with the next transaction.
    Purge(LogId),
    /// Answered once everything before it is committed.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The log of this member; cheap to clone (readers share the database).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    unflushed: Unflushed,
    writer: std::sync::mpsc::Sender<Write>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn stopped() -> io::Error {
    io::Error::other("the log writer has stopped")
}

/// The writer thread, joined once every handle to the log is gone.
#[derive(Debug)]
pub(crate) struct Writer(Option<JoinHandle<()>>);

impl Writer {
    /// How long a stop waits for the writer to commit what it has and close the file.
    const STOP_PATIENCE: Duration = Duration::from_secs(2);

    /// Waits (bounded) until the writer has exited and the file is closed, so the same
    /// directory can be opened again at once (redb locks the file while it is open).
    pub(crate) fn join(mut self) {
        let Some(thread) = self.0.take() else { return };
        let deadline = Instant::now() + Self::STOP_PATIENCE;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("the log writer did not stop within 2 s");
        }
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and starts its writer thread, which exits once
    /// the last clone of the store is dropped.
    pub(crate) fn open(dir: &Path) -> io::Result<(LogStore, Writer)> {
        let db = Database::create(dir.join("log.redb")).map_err(io::Error::other)?;
        let db = Arc::new(db);
        let unflushed = Unflushed::default();
        let (writer, queue) = std::sync::mpsc::channel();
        let (file, pending) = (Arc::clone(&db), Arc::clone(&unflushed));
        let thread = std::thread::Builder::new()
            .name("engine-raft-log".into())
            .spawn(move || write_appends(&file, &pending, &queue))?;
        Ok((LogStore { db, unflushed, writer }, Writer(Some(thread))))
    }

    /// Waits until every append handed to the writer so far is committed.
    async fn caught_up(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.send(Write::Barrier(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let Some(value) = table.get(key).map_err(io_err)? else { return Ok(None) };
        serde_json::from_slice(value.value()).map(Some).map_err(io_err)
    }

    fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io_err)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?.insert(key, bytes.as_slice()).map_err(io_err)?;
        txn.commit().map_err(io_err)
    }

    /// Removes the entries from `index` on (a conflicting suffix), durably.
    fn truncate_from(&self, index: u64) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(io_err)?;
            entries.retain_in::<u64, _>(index.., |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<Raft> for LogStore {
    /// Reads the entries appended and not yet committed to the file *before* opening the
    /// read transaction: the writer removes an entry from `unflushed` only after committing
    /// it, so each entry is in one or the other (read in the other order, an entry committed
    /// in between would be in neither, and the range would have a hole).
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let pending: Vec<(u64, Entry)> =
            self.unflushed.lock().range(bounds).map(|(i, e)| (*i, e.clone())).collect();
        let mut found: BTreeMap<u64, Entry> = BTreeMap::new();
        let txn = self.db.begin_read().map_err(io_err)?;
        match txn.open_table(ENTRIES) {
            Ok(entries) => {
                for item in entries.range::<u64>(bounds).map_err(io_err)? {
                    let (index, value) = item.map_err(io_err)?;
                    let entry = serde_json::from_slice(value.value()).map_err(io_err)?;
                    found.insert(index.value(), entry);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(io_err(e)),
        }
        found.extend(pending);
        Ok(found.into_values().collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.meta("vote")
    }
}

impl RaftLogStorage<Raft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<Raft>> {
        let last_purged_log_id: Option<LogId> = self.meta("purged")?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let last = match txn.open_table(ENTRIES) {
            Ok(entries) => match entries.last().map_err(io_err)? {
                Some((_, value)) => {
                    let entry: Entry = serde_json::from_slice(value.value()).map_err(io_err)?;
                    Some(entry.log_id)
                }
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(io_err(e)),
        };
        let unflushed = self.unflushed.lock().last_key_value().map(|(_, e)| e.log_id);
        let last = unflushed.max(last);
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        // After the appends before it (so a vote never overtakes a log write), then durably.
        self.caught_up().await?;
        self.set_meta("vote", vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.writer.send(Write::Committed(committed)).map_err(|_| stopped())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Raft>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut unflushed = self.unflushed.lock();
            for entry in &entries {
                unflushed.insert(entry.log_id.index, entry.clone());
            }
        }
        self.writer.send(Write::Append { entries, done: callback }).map_err(|_| stopped())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        self.caught_up().await?;
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.unflushed.lock().retain(|index, _| *index < from);
        self.truncate_from(from)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // After the appends before it, like everything the writer does; nothing waits.
        self.writer.send(Write::Purge(log_id)).map_err(|_| stopped())
    }
}

/// The writer thread: commits every append waiting at once in one transaction (one fsync),
/// then reports each durable and drops it from `unflushed`; exits when the store is dropped.
fn write_appends(db: &Database, unflushed: &Mutex<BTreeMap<u64, Entry>>, queue: &Receiver<Write>) {
    let mut mark: Option<Option<LogId>> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let appended: Vec<&Entry> = batch
            .iter()
            .flat_map(|w| match w {
                Write::Append { entries, .. } => entries.as_slice(),
                _ => &[],
            })
            .collect();
        for write in &batch {
            if let Write::Committed(id) = write {
                mark = Some(*id);
            }
        }
        let purge = batch.iter().rev().find_map(|w| match w {
            Write::Purge(id) => Some(*id),
            _ => None,
        });
        let written = if appended.is_empty() { None } else { mark.take() };
        let committed = commit(db, &appended, written, purge).map_err(|e| e.to_string());
        if let Err(e) = &committed {
            tracing::error!(error = %e, "cannot commit the log");
        }
        if committed.is_ok() {
            let mut unflushed = unflushed.lock();
            for entry in appended {
                if unflushed.get(&entry.log_id.index).is_some_and(|e| e.log_id == entry.log_id) {
                    unflushed.remove(&entry.log_id.index);
                }
            }
        }
        for write in batch {
            match write {
                Write::Append { done, .. } => {
                    done.io_completed(committed.clone().map_err(io::Error::other));
                }
                Write::Barrier(done) => {
                    let _ = done.send(());
                }
                Write::Committed(_) | Write::Purge(_) => {}
            }
        }
    }
}

/// Writes `entries`, the committed mark and a purge in one transaction, durable (one fsync)
/// if it holds entries.
fn commit(
    db: &Database,
    entries: &[&Entry],
    mark: Option<Option<LogId>>,
    purge: Option<LogId>,
) -> io::Result<()> {
    if entries.is_empty() && purge.is_none() {
        return Ok(());
    }
    let mut txn = db.begin_write().map_err(io_err)?;
    if entries.is_empty() {
        txn.set_durability(Durability::None).map_err(io_err)?;
    }
    {
        let mut table = txn.open_table(ENTRIES).map_err(io_err)?;
        for entry in entries {
            let bytes = serde_json::to_vec(entry).map_err(io_err)?;
            table.insert(entry.log_id.index, bytes.as_slice()).map_err(io_err)?;
        }
        let mut meta = txn.open_table(META).map_err(io_err)?;
        if let Some(mark) = mark {
            let bytes = serde_json::to_vec(&mark).map_err(io_err)?;
            meta.insert("committed", bytes.as_slice()).map_err(io_err)?;
        }
        if let Some(purged) = purge {
            table.retain_in::<u64, _>(..=purged.index, |_, _| false).map_err(io_err)?;
            let bytes = serde_json::to_vec(&purged).map_err(io_err)?;
            meta.insert("purged", bytes.as_slice()).map_err(io_err)?;
        }
    }
    txn.commit().map_err(io_err)
}
