//! The Raft log, vote and commit position in a redb file of their own.
//!
//! Invariants: an append is durable (redb immediate commit, i.e. fsync)
//! before openraft is told it completed; entries are keyed by log index and
//! contiguous from `last_purged + 1`; redb work runs on blocking threads so
//! fsyncs never stall the async runtime; every value (entries, vote,
//! commit position, purge position) is in the row envelope
//! (`gantry_storage::seal`: format byte, payload, CRC-32C) and checked on
//! every read, so a flipped bit fails the read, naming the table and key,
//! instead of being replicated or applied; a log written before the
//! envelope (no [`ENVELOPE_MARKER_KEY`] row) is sealed once when opened.
//!
//! Failpoints (compiled in only with the `failpoints` feature, i.e. in
//! tests; each returns an I/O error, which openraft treats as fatal):
//! `raft::log::append::before_commit` (the redb transaction is dropped, so
//! nothing of the append is stored), `raft::log::append::after_commit` (the
//! entries are durable but the append is reported failed, as when a crash
//! lands between the fsync and the report), `raft::log::save_committed` and
//! `raft::log::purge` (before their transactions are committed).

#[cfg_attr(not(feature = "failpoints"), allow(unused_imports))]
use crate::error::failpoint_error;
use crate::types::{decode, encode, Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
/// `raft_log_meta` row whose presence says every value is sealed.
const ENVELOPE_MARKER_KEY: &str = "\0envelope";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Append calls `(started, finished)`: lets the [`crate::Proposer`] hold
    /// a batch back while an append is being written (see [`LogStore::activity`]).
    activity: Arc<watch::Sender<(u64, u64)>>,
}

fn io_error(error: impl ToString) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

impl LogStore {
    pub fn open(path: &Path) -> Result<LogStore, crate::RaftError> {
        // Every page's checksum is verified first: a log changed outside the
        // database is refused here, never replicated or applied.
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|error| {
                let corrupt = matches!(
                    error,
                    redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
                );
                crate::RaftError::RaftStorage(match corrupt {
                    true => format!(
                        "{} is corrupt ({error}); nothing was served from it. Replace this \
                         member: remove it, then join it again with an empty data directory \
                         (ops/runbooks/replace-a-dead-server.md)",
                        path.display()
                    ),
                    false => format!("{}: {error}", path.display()),
                })
            })?;
        seal_legacy_values(&db).map_err(|e| {
            crate::RaftError::RaftStorage(format!("{}: sealing the log: {e}", path.display()))
        })?;
        Ok(LogStore {
            db: Arc::new(db),
            activity: Arc::new(watch::channel((0, 0)).0),
        })
    }

    /// Stores `entries` as they are (tests only: openraft's append needs a
    /// callback only openraft can make).
    #[cfg(test)]
    pub(crate) fn put_entries(&self, entries: &[Entry]) -> Result<(), std::io::Error> {
        let txn = self.db.begin_write().map_err(io_error)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_error)?;
            for entry in entries {
                let bytes = sealed(entry)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(io_error)?;
            }
        }
        txn.commit().map_err(io_error)
    }

    /// Counts of append calls `(started, finished)`. openraft 0.9 writes
    /// one append at a time and waits for its fsync before it takes the
    /// next, so a proposal sent while an append is in progress would become
    /// an entry (and an fsync) of its own; watching this lets the proposer
    /// send everything that queued meanwhile as one entry instead.
    pub fn activity(&self) -> watch::Receiver<(u64, u64)> {
        self.activity.subscribe()
    }

    /// Runs redb work on a blocking thread.
    async fn blocking<T, F>(&self, work: F) -> Result<T, std::io::Error>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, std::io::Error> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(io_error)?
    }

    async fn read_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, std::io::Error> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io_error)?;
            let table = txn.open_table(META).map_err(io_error)?;
            let value = table.get(key).map_err(io_error)?;
            value.map(|v| unsealed(&META, &key, v.value())).transpose()
        })
        .await
    }

    /// Writes one metadata row; `durable == false` leaves the fsync to the
    /// next durable commit (used for the commit index, which Raft can
    /// recompute, never for the vote).
    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durable: bool,
    ) -> Result<(), std::io::Error> {
        let bytes = sealed(value)?;
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(io_error)?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(io_error)?;
            }
            txn.open_table(META)
                .map_err(io_error)?
                .insert(key, bytes.as_slice())
                .map_err(io_error)?;
            txn.commit().map_err(io_error)
        })
        .await
    }

    fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => u64::MAX,
        };
        (start, end)
    }
}

/// `value` encoded and in the row envelope.
fn sealed<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    Ok(gantry_storage::seal(&encode(value).map_err(io_error)?))
}

/// A value of `table` checked against its envelope and decoded; the error
/// names the table and the key.
fn unsealed<T: serde::de::DeserializeOwned>(
    table: &impl redb::TableHandle,
    key: &dyn Debug,
    bytes: &[u8],
) -> Result<T, std::io::Error> {
    let payload = gantry_storage::unseal(table, key, bytes).map_err(io_error)?;
    decode(payload)
        .map_err(|error| io_error(format!("table `{}`, key {key:?}: {error}", table.name())))
}

/// Creates the tables and seals every value of a log written before the
/// envelope, once, in one transaction that also writes the marker (a new
/// log only gains the marker).
fn seal_legacy_values(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        if meta.get(ENVELOPE_MARKER_KEY)?.is_none() {
            let mut bare = Vec::new();
            for row in log.iter()? {
                let (index, value) = row?;
                bare.push((index.value(), value.value().to_vec()));
            }
            for (index, value) in bare {
                log.insert(index, gantry_storage::seal(&value).as_slice())?;
            }
            let mut bare = Vec::new();
            for row in meta.iter()? {
                let (key, value) = row?;
                bare.push((key.value().to_string(), value.value().to_vec()));
            }
            for (key, value) in bare {
                meta.insert(key.as_str(), gantry_storage::seal(&value).as_slice())?;
            }
            meta.insert(ENVELOPE_MARKER_KEY, gantry_storage::seal(&[]).as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Counts an append as finished however it ends (error or cancellation).
struct FinishOnDrop<'a>(&'a watch::Sender<(u64, u64)>);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|(_, finished)| *finished += 1);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = Self::bounds(&range);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io_error)?;
            let table = txn.open_table(LOG).map_err(io_error)?;
            let mut entries = Vec::new();
            if start >= end {
                return Ok(entries);
            }
            for row in table.range(start..end).map_err(io_error)? {
                let (index, value) = row.map_err(io_error)?;
                entries.push(unsealed::<Entry>(&LOG, &index.value(), value.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self
            .read_meta(PURGED_KEY)
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self
            .blocking(|db| {
                let txn = db.begin_read().map_err(io_error)?;
                let table = txn.open_table(LOG).map_err(io_error)?;
                let last = table.last().map_err(io_error)?;
                last.map(|(index, v)| {
                    unsealed::<Entry>(&LOG, &index.value(), v.value()).map(|entry| entry.log_id)
                })
                .transpose()
            })
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE_KEY, vote, true)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY)
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let saved = async {
            fail::fail_point!("raft::log::save_committed", |_| Err(failpoint_error(
                "raft::log::save_committed"
            )));
            self.write_meta(COMMITTED_KEY, &committed, false).await?;
            if let Some(committed) = committed {
                metrics::gauge!(crate::metrics::COMMIT_INDEX).set(committed.index as f64);
            }
            Ok::<(), std::io::Error>(())
        };
        saved.await.map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self
            .read_meta(COMMITTED_KEY)
            .await
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.activity.send_modify(|(started, _)| *started += 1);
        let finished = FinishOnDrop(&self.activity);
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = sealed(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            rows.push((entry.log_id.index, bytes));
        }
        let result = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(io_error)?;
                {
                    let mut table = txn.open_table(LOG).map_err(io_error)?;
                    for (index, bytes) in &rows {
                        table.insert(*index, bytes.as_slice()).map_err(io_error)?;
                    }
                }
                fail::fail_point!("raft::log::append::before_commit", |_| Err(
                    failpoint_error("raft::log::append::before_commit")
                ));
                let started = std::time::Instant::now();
                txn.commit().map_err(io_error)?;
                metrics::histogram!(crate::metrics::LOG_FSYNC_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                fail::fail_point!("raft::log::append::after_commit", |_| Err(failpoint_error(
                    "raft::log::append::after_commit"
                )));
                Ok(())
            })
            .await;
        drop(finished);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let storage_error = StorageIOError::write_logs(&error).into();
                callback.log_io_completed(Err(error));
                Err(storage_error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io_error)?;
            txn.open_table(LOG)
                .map_err(io_error)?
                .retain_in(from.., |_, _| false)
                .map_err(io_error)?;
            txn.commit().map_err(io_error)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        let purged = sealed(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io_error)?;
            txn.open_table(META)
                .map_err(io_error)?
                .insert(PURGED_KEY, purged.as_slice())
                .map_err(io_error)?;
            txn.open_table(LOG)
                .map_err(io_error)?
                .retain_in(..=upto, |_, _| false)
                .map_err(io_error)?;
            fail::fail_point!("raft::log::purge", |_| Err(failpoint_error(
                "raft::log::purge"
            )));
            txn.commit().map_err(io_error)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Batch, Entry};
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch::default()),
        }
    }

    /// A log from before the envelope (bare values, no marker) is sealed
    /// when opened and reads back the same.
    #[tokio::test]
    async fn a_log_from_before_the_envelope_is_sealed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for index in 1..=3 {
                    log.insert(index, encode(&entry(index)).unwrap().as_slice())
                        .unwrap();
                }
                let vote = Vote::<NodeId>::new(1, 1);
                txn.open_table(META)
                    .unwrap()
                    .insert(VOTE_KEY, encode(&vote).unwrap().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let mut store = LogStore::open(&path).unwrap();
        let entries = store.try_get_log_entries(1..=3).await.unwrap();
        assert_eq!(entries, (1..=3).map(entry).collect::<Vec<_>>());
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        drop(store);
        // Sealed once: a second open finds the marker and changes nothing.
        let mut again = LogStore::open(&path).unwrap();
        assert_eq!(again.try_get_log_entries(1..=3).await.unwrap().len(), 3);
    }

    /// A bit flipped in a stored entry fails the read, naming the table and
    /// the index, instead of handing the entry to Raft.
    #[tokio::test]
    async fn a_flipped_bit_in_an_entry_fails_the_read_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.redb");
        let store = LogStore::open(&path).unwrap();
        store.put_entries(&[entry(1), entry(2)]).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                let mut value = log.get(2).unwrap().unwrap().value().to_vec();
                value[3] ^= 0x10;
                log.insert(2, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut reader = store.clone();
        let error = reader
            .try_get_log_entries(1..=2)
            .await
            .expect_err("a flipped entry is not read");
        let text = error.to_string();
        assert!(
            text.contains("raft_log") && text.contains("2") && text.contains("checksum"),
            "{text}"
        );
        assert_eq!(reader.try_get_log_entries(1..=1).await.unwrap().len(), 1);
    }
}
