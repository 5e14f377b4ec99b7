//! The durable Raft log of one member, in one redb file (`DIR/log.redb`): entries by index,
//! plus the vote, the committed log id and the last purged log id. Every append is one redb
//! write transaction committed with `Durability::Immediate` (one fsync for every entry that
//! openraft hands over at once: group commit), and openraft is told the entries are durable
//! only after that commit returns, so a reply never leaves before its command is on disk.

// openraft's `StorageError` is what its traits return; boxing it here would only move the
// allocation to every caller.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::entry::{Entry, LogId, Raft, StorageError};

/// Entries by index, each as JSON.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// `vote`, `committed`, `purged`: JSON values.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The log of this member; cheap to clone (readers share the database).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<LogStore, redb::DatabaseError> {
        let db = Database::create(dir.join("log.redb"))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let Some(value) = table.get(key).map_err(read_err)? else { return Ok(None) };
        serde_json::from_slice(value.value()).map(Some).map_err(read_err)
    }

    fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let txn = self.db.begin_write().map_err(write_err)?;
        txn.open_table(META)
            .map_err(write_err)?
            .insert(key, bytes.as_slice())
            .map_err(write_err)?;
        txn.commit().map_err(write_err)
    }

    /// Removes the entries in `range` (and records `purged` if given), in one transaction.
    fn remove(
        &self,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<&LogId>,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(write_err)?;
            entries.retain_in::<u64, _>(range, |_, _| false).map_err(write_err)?;
            if let Some(purged) = purged {
                let bytes = serde_json::to_vec(purged).map_err(write_err)?;
                txn.open_table(META)
                    .map_err(write_err)?
                    .insert("purged", bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<Raft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let entries = match txn.open_table(ENTRIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for item in entries.range::<u64>(bounds).map_err(read_err)? {
            let (_, value) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(value.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<Raft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Raft>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta("purged")?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let last = match txn.open_table(ENTRIES) {
            Ok(entries) => match entries.last().map_err(read_err)? {
                Some((_, value)) => {
                    let entry: Entry = serde_json::from_slice(value.value()).map_err(read_err)?;
                    Some(entry.log_id)
                }
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(read_err(e)),
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.set_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.set_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Raft>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(write_err)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
                table.insert(entry.log_id.index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        let committed = txn.commit().map_err(write_err);
        callback.log_io_completed(
            committed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
        );
        committed
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove((Bound::Included(log_id.index), Bound::Unbounded), None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove((Bound::Unbounded, Bound::Included(log_id.index)), Some(&log_id))
    }
}
