//! openraft's state machine over [`gantry_storage::Store`], and snapshots.
//!
//! Invariants: one `apply` call from openraft is one redb transaction that
//! stores the effects and the new applied log id + membership together; the
//! latest built or installed snapshot is kept in one file (written to a
//! temporary name, then renamed) so it survives a restart.
//!
//! Durability: applies are committed durably at most every
//! [`DURABLE_APPLY_INTERVAL`]; in between they are visible but not yet on
//! disk. That is safe because the Raft log is durable before anything is
//! applied, and a crash rolls the tables and the applied position back
//! together, so openraft replays the log from there. Before a snapshot is
//! built (after which the log may be purged) everything is made durable.
//!
//! Snapshot data — on disk and on the wire — is the storage image
//! compressed with zstd ([`SNAPSHOT_ZSTD_LEVEL`]); installing decompresses
//! it to at most [`SNAPSHOT_IMAGE_MAX`] bytes, so a hostile or corrupt
//! snapshot cannot exhaust memory. Data without the zstd magic is taken as
//! an uncompressed image (snapshot files written before compression).
//!
//! Failpoints (compiled in only with the `failpoints` feature, i.e. in
//! tests; each returns an I/O error, which openraft treats as fatal):
//! `raft::sm::apply::before_store` (nothing of the batch is applied),
//! `raft::sm::snapshot::build` (the state is synced and exported but no
//! snapshot file is written, so openraft neither learns of a snapshot nor
//! purges the log) and `raft::sm::snapshot::install` (before the image
//! replaces the tables, which stay as they were).

#[cfg_attr(not(feature = "failpoints"), allow(unused_imports))]
use crate::error::failpoint_error;
use crate::types::{
    decode, encode, BatchOutcome, Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig,
};
use gantry_storage::{Command, Store};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the Raft layer keeps in the state database next to the state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AppliedMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    /// `data` is a zstd-compressed storage image.
    meta: SnapshotMeta<NodeId, crate::types::GantryNode>,
    data: Vec<u8>,
}

/// Longest time an applied command may stay only in memory (it is in the
/// durable log meanwhile).
pub const DURABLE_APPLY_INTERVAL: Duration = Duration::from_millis(500);

/// zstd level of snapshot images: fast, and storage images compress well.
pub const SNAPSHOT_ZSTD_LEVEL: i32 = 3;
/// Largest decompressed snapshot image accepted.
pub const SNAPSHOT_IMAGE_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// First bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

fn compress_image(image: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    zstd::bulk::compress(image, SNAPSHOT_ZSTD_LEVEL)
}

fn decompress_image(data: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, std::io::Error> {
    use std::io::Read;
    if !data.starts_with(&ZSTD_MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut image = Vec::new();
    zstd::stream::read::Decoder::new(data)?
        .take(SNAPSHOT_IMAGE_MAX + 1)
        .read_to_end(&mut image)?;
    if image.len() as u64 > SNAPSHOT_IMAGE_MAX {
        return Err(io_error(format!(
            "snapshot image exceeds {SNAPSHOT_IMAGE_MAX} bytes"
        )));
    }
    Ok(std::borrow::Cow::Owned(image))
}

#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot_path: PathBuf,
    last_durable_apply: Arc<Mutex<Instant>>,
}

fn io_error(error: impl ToString) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

impl StateMachine {
    pub fn new(store: Arc<Store>, snapshot_path: PathBuf) -> StateMachine {
        StateMachine {
            store,
            snapshot_path,
            last_durable_apply: Arc::new(Mutex::new(Instant::now())),
        }
    }

    fn applied_meta(&self) -> Result<AppliedMeta, std::io::Error> {
        match self.store.raft_meta().map_err(io_error)? {
            Some(bytes) => decode(&bytes).map_err(io_error),
            None => Ok(AppliedMeta::default()),
        }
    }

    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, std::io::Error> {
        match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => decode(&bytes).map(Some).map_err(io_error),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn write_snapshot_file(&self, file: &SnapshotFile) -> Result<(), std::io::Error> {
        let bytes = encode(file).map_err(io_error)?;
        let temporary = self.snapshot_path.with_extension("tmp");
        std::fs::write(&temporary, bytes)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, &self.snapshot_path)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let machine = self.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<SnapshotFile, std::io::Error> {
            // The log may be purged up to this snapshot: the state behind it must be on disk.
            machine.store.sync().map_err(io_error)?;
            // Meta and data from one moment: applies are serialized with this call by openraft.
            let applied = machine.applied_meta()?;
            let image = machine.store.export_snapshot().map_err(io_error)?;
            let data = compress_image(&image)?;
            fail::fail_point!("raft::sm::snapshot::build", |_| Err(failpoint_error(
                "raft::sm::snapshot::build"
            )));
            let snapshot_id = match applied.last_applied {
                Some(log_id) => {
                    format!("{}-{}-{}", log_id.leader_id.term, log_id.index, data.len())
                }
                None => format!("empty-{}", data.len()),
            };
            let file = SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership,
                    snapshot_id,
                },
                data,
            };
            machine.write_snapshot_file(&file)?;
            Ok(file)
        })
        .await
        .map_err(io_error)
        .and_then(|result| result)
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let meta = self
            .applied_meta()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        Ok((meta.last_applied, meta.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let machine = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<BatchOutcome>, std::io::Error> {
            let mut meta = machine.applied_meta()?;
            let mut batches: Vec<Vec<Command>> = Vec::with_capacity(entries.len());
            for entry in entries {
                meta.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Normal(batch) => batches.push(batch.commands),
                    EntryPayload::Membership(membership) => {
                        meta.membership = StoredMembership::new(Some(entry.log_id), membership);
                        batches.push(Vec::new());
                    }
                    EntryPayload::Blank => batches.push(Vec::new()),
                }
            }
            let meta_bytes = encode(&meta).map_err(io_error)?;
            let slices: Vec<&[Command]> = batches.iter().map(Vec::as_slice).collect();
            let durable = {
                let mut last = machine
                    .last_durable_apply
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let due = last.elapsed() >= DURABLE_APPLY_INTERVAL;
                if due {
                    *last = Instant::now();
                }
                due
            };
            fail::fail_point!("raft::sm::apply::before_store", |_| Err(failpoint_error(
                "raft::sm::apply::before_store"
            )));
            let outcomes = machine
                .store
                .apply(&slices, &meta_bytes, durable)
                .map_err(io_error)?;
            Ok(outcomes
                .into_iter()
                .map(|outcomes| BatchOutcome { outcomes })
                .collect())
        })
        .await
        .map_err(io_error)
        .and_then(|result| result)
        .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, crate::types::GantryNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let machine = self.clone();
        let file = SnapshotFile {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        tokio::task::spawn_blocking(move || -> Result<(), std::io::Error> {
            let applied = AppliedMeta {
                last_applied: file.meta.last_log_id,
                membership: file.meta.last_membership.clone(),
            };
            let meta_bytes = encode(&applied).map_err(io_error)?;
            let image = decompress_image(&file.data)?;
            fail::fail_point!("raft::sm::snapshot::install", |_| Err(failpoint_error(
                "raft::sm::snapshot::install"
            )));
            machine
                .store
                .install_snapshot(&image, &meta_bytes)
                .map_err(io_error)?;
            machine.write_snapshot_file(&file)
        })
        .await
        .map_err(io_error)
        .and_then(|result| result)
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let file = self
            .read_snapshot_file()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(file.map(|file| Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        }))
    }
}

/// Seeds a new member's data directory with a state image (from
/// [`crate::RaftNode::export_state`]): the tables are installed and the
/// Raft position is empty, so the node bootstraps a new cluster holding that
/// state. Refuses a directory that already holds Raft state.
pub fn seed_state(data_dir: &std::path::Path, image: &[u8]) -> Result<(), crate::RaftError> {
    let state_path = data_dir.join("state.redb");
    let log_path = data_dir.join("raft-log.redb");
    if state_path.exists() || log_path.exists() {
        return Err(crate::RaftError::Raft(format!(
            "{} already holds Raft state; restore into a new, empty data directory",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(&state_path)?;
    let empty = encode(&AppliedMeta::default()).map_err(crate::RaftError::Raft)?;
    store.install_snapshot(image, &empty)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_through_compression() {
        let image = b"GNTSNAP1".repeat(1000);
        let compressed = compress_image(&image).expect("compresses");
        assert!(compressed.starts_with(&ZSTD_MAGIC));
        assert!(compressed.len() < image.len());
        assert_eq!(
            decompress_image(&compressed).expect("decompresses"),
            &image[..]
        );
        // Files written before compression hold the bare image.
        assert_eq!(
            decompress_image(&image).expect("passes through"),
            &image[..]
        );
        assert!(decompress_image(&compressed[..compressed.len() / 2]).is_err());
    }
}
