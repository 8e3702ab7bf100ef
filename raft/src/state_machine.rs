//! openraft's state machine over [`gantry_storage::Store`], and snapshots.
//!
//! Invariants: one `apply` call from openraft is one redb transaction that
//! stores the effects and the new applied log id + membership together; the
//! latest built or installed snapshot is kept in one file (written to a
//! temporary name, fsynced, then renamed) so it survives a restart.
//!
//! Durability: applies are committed durably at most every
//! [`DURABLE_APPLY_INTERVAL`]; in between they are visible but not yet on
//! disk. That is safe because the Raft log is durable before anything is
//! applied, and a crash rolls the tables and the applied position back
//! together, so openraft replays the log from there. Before a snapshot is
//! built (after which the log may be purged) everything is made durable.
//!
//! Checkpoints (entries with an empty batch, see [`crate::checkpoints`])
//! end an apply transaction: entries up to one commit together, a read
//! view of exactly that state is kept for the state check, and the rest of
//! the call's entries commit in a transaction of their own.
//!
//! Snapshot data — on disk, on the wire and in backups — is a
//! [`crate::snapshot_file`] (tar + zstd: `meta.json`, `state.bin`).
//!
//! Installing a snapshot is crash-safe: the archive is first made durable as
//! the snapshot file (the record of the install), then the tables are
//! replaced in one transaction. A snapshot file ahead of the tables' applied
//! position can only be an install cut short by a crash, so on start
//! ([`StateMachine::applied_state`]) it is installed again from the file
//! before openraft learns the applied position.
//!
//! Failpoints (compiled in only with the `failpoints` feature, i.e. in
//! tests; each returns an I/O error, which openraft treats as fatal):
//! `raft::sm::apply::before_store` (nothing of the batch is applied),
//! `raft::sm::snapshot::build` (the state is synced and exported but no
//! snapshot file is written, so openraft neither learns of a snapshot nor
//! purges the log), `raft::sm::snapshot::install` (before anything of the
//! install is stored) and `raft::sm::snapshot::install::after_file` (the
//! snapshot file is written but the tables are not yet replaced, as when a
//! crash lands there).

use crate::checkpoints::Checkpoints;
#[cfg_attr(not(feature = "failpoints"), allow(unused_imports))]
use crate::error::failpoint_error;
use crate::snapshot_file;
use crate::types::{
    decode, encode, BatchOutcome, Entry, GantryNode, LogId, NodeId, StorageError, StoredMembership,
    TypeConfig,
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

/// Longest time an applied command may stay only in memory (it is in the
/// durable log meanwhile).
pub const DURABLE_APPLY_INTERVAL: Duration = Duration::from_millis(500);

/// A snapshot as openraft sees it: its meta, and the archive bytes.
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, GantryNode>,
    archive: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot_path: PathBuf,
    last_durable_apply: Arc<Mutex<Instant>>,
    checkpoints: Checkpoints,
}

/// Entries applied in one transaction: their batches, the Raft metadata
/// after the last of them, and its log id if it is a checkpoint.
#[derive(Default)]
struct Segment {
    batches: Vec<Vec<Command>>,
    meta: Vec<u8>,
    checkpoint: Option<LogId>,
}

fn io_error(error: impl ToString) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

impl StateMachine {
    /// A state machine over `store` that keeps the read views of the
    /// checkpoints it applies in `checkpoints`.
    pub fn new(
        store: Arc<Store>,
        snapshot_path: PathBuf,
        checkpoints: Checkpoints,
    ) -> StateMachine {
        StateMachine {
            store,
            snapshot_path,
            last_durable_apply: Arc::new(Mutex::new(Instant::now())),
            checkpoints,
        }
    }

    fn applied_meta(&self) -> Result<AppliedMeta, std::io::Error> {
        match self.store.raft_meta().map_err(io_error)? {
            Some(bytes) => decode(&bytes).map_err(io_error),
            None => Ok(AppliedMeta::default()),
        }
    }

    /// The kept snapshot, checked. A file in another format (written by an
    /// older version) is set aside: the tables are the state, and openraft
    /// builds a new snapshot from them when it needs one.
    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, std::io::Error> {
        let bytes = match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        match snapshot_file::read(&bytes) {
            Ok((meta, _state)) => Ok(Some(SnapshotFile {
                meta: meta.snapshot_meta(),
                archive: bytes,
            })),
            Err(snapshot_file::SnapshotFileError::Foreign(reason)) => {
                tracing::warn!(
                    path = %self.snapshot_path.display(),
                    %reason,
                    "ignoring a snapshot file of another format; a new one is built when needed"
                );
                Ok(None)
            }
            Err(error) => Err(io_error(format!(
                "{}: {error}",
                self.snapshot_path.display()
            ))),
        }
    }

    /// Replaces the snapshot file: temporary name, fsync, rename, fsync of
    /// the directory (so the rename itself is durable).
    fn write_snapshot_file(&self, archive: &[u8]) -> Result<(), std::io::Error> {
        write_snapshot_file(&self.snapshot_path, archive)
    }

    /// Replaces the tables with `image`, at the position `meta` names.
    fn install_tables(
        &self,
        meta: &SnapshotMeta<NodeId, GantryNode>,
        image: &[u8],
    ) -> Result<(), std::io::Error> {
        let applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let meta_bytes = encode(&applied).map_err(io_error)?;
        self.store
            .install_snapshot(image, &meta_bytes)
            .map_err(io_error)
    }

    /// Finishes an install cut short by a crash: a snapshot file ahead of
    /// the tables' applied position is installed into them.
    fn finish_interrupted_install(&self) -> Result<(), std::io::Error> {
        let Some(file) = self.read_snapshot_file()? else {
            return Ok(());
        };
        let applied = self.applied_meta()?;
        if file.meta.last_log_id <= applied.last_applied {
            return Ok(());
        }
        tracing::warn!(
            snapshot = ?file.meta.last_log_id,
            applied = ?applied.last_applied,
            "finishing a snapshot install that a crash interrupted"
        );
        let (_, image) = snapshot_file::read(&file.archive).map_err(io_error)?;
        self.install_tables(&file.meta, &image)
    }
}

/// Replaces the snapshot file at `path`: temporary name, fsync, rename,
/// fsync of the directory (so the rename itself is durable).
pub(crate) fn write_snapshot_file(
    path: &std::path::Path,
    archive: &[u8],
) -> Result<(), std::io::Error> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    {
        let mut file = crate::private_fs::create_file(&temporary)?;
        file.write_all(archive)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// The whole state of `store` as a snapshot archive, with the applied
/// position read in the same read transaction as the tables, so the image
/// is exactly the state at that position (applies may run meanwhile).
pub fn export_archive(
    store: &Store,
    snapshot_id: impl FnOnce(&AppliedMeta, usize) -> String,
) -> Result<(SnapshotMeta<NodeId, GantryNode>, Vec<u8>), std::io::Error> {
    let export = store.export_state().map_err(io_error)?;
    let applied = match export.raft_meta {
        Some(bytes) => decode::<AppliedMeta>(&bytes).map_err(io_error)?,
        None => AppliedMeta::default(),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership.clone(),
        snapshot_id: snapshot_id(&applied, export.image.len()),
    };
    let bytes = snapshot_file::write(&meta, &export.image).map_err(io_error)?;
    Ok((meta, bytes))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let machine = self.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<SnapshotFile, std::io::Error> {
            // The log may be purged up to this snapshot: the state behind it must be on disk.
            machine.store.sync().map_err(io_error)?;
            let (meta, archive) = export_archive(&machine.store, |applied, state_bytes| {
                match applied.last_applied {
                    Some(log_id) => {
                        format!("{}-{}-{state_bytes}", log_id.leader_id.term, log_id.index)
                    }
                    None => format!("empty-{state_bytes}"),
                }
            })?;
            fail::fail_point!("raft::sm::snapshot::build", |_| Err(failpoint_error(
                "raft::sm::snapshot::build"
            )));
            machine.write_snapshot_file(&archive)?;
            Ok(SnapshotFile { meta, archive })
        })
        .await
        .map_err(io_error)
        .and_then(|result| result)
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.archive)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self.clone();
        let meta = tokio::task::spawn_blocking(move || {
            machine.finish_interrupted_install()?;
            machine.applied_meta()
        })
        .await
        .map_err(io_error)
        .and_then(|result| result)
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
            // One transaction per segment; a segment ends at a checkpoint
            // (see `crate::checkpoints`), so its view is of exactly that index.
            let mut segments: Vec<Segment> = vec![Segment::default()];
            for entry in entries {
                let checkpoint = crate::checkpoints::is_checkpoint(&entry);
                meta.last_applied = Some(entry.log_id);
                let segment = segments.last_mut().ok_or_else(|| io_error("no segment"))?;
                match entry.payload {
                    EntryPayload::Normal(batch) => segment.batches.push(batch.commands),
                    EntryPayload::Membership(membership) => {
                        meta.membership = StoredMembership::new(Some(entry.log_id), membership);
                        segment.batches.push(Vec::new());
                    }
                    EntryPayload::Blank => segment.batches.push(Vec::new()),
                }
                segment.meta = encode(&meta).map_err(io_error)?;
                if checkpoint {
                    segment.checkpoint = Some(entry.log_id);
                    segments.push(Segment::default());
                }
            }
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
            machine.checkpoints.expire();
            let mut outcomes = Vec::new();
            for segment in segments
                .iter()
                .filter(|segment| !segment.batches.is_empty())
            {
                let slices: Vec<&[Command]> = segment.batches.iter().map(Vec::as_slice).collect();
                outcomes.extend(
                    machine
                        .store
                        .apply(&slices, &segment.meta, durable)
                        .map_err(io_error)?,
                );
                if let Some(log_id) = segment.checkpoint {
                    let view = machine.store.read().map_err(io_error)?;
                    machine.checkpoints.record(log_id, view);
                }
            }
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
        meta: &SnapshotMeta<NodeId, GantryNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let machine = self.clone();
        let meta_sent = meta.clone();
        let bytes = snapshot.into_inner();
        tokio::task::spawn_blocking(move || -> Result<(), std::io::Error> {
            let (archived, image) = snapshot_file::read(&bytes).map_err(io_error)?;
            if archived.last_log_id != meta_sent.last_log_id {
                return Err(io_error(format!(
                    "the snapshot's archive is at {:?}, its announcement at {:?}",
                    archived.last_log_id, meta_sent.last_log_id
                )));
            }
            fail::fail_point!("raft::sm::snapshot::install", |_| Err(failpoint_error(
                "raft::sm::snapshot::install"
            )));
            // The file first: it records the install, which a restart
            // finishes if a crash cuts it short (see the module doc).
            machine.write_snapshot_file(&bytes)?;
            fail::fail_point!("raft::sm::snapshot::install::after_file", |_| Err(
                failpoint_error("raft::sm::snapshot::install::after_file")
            ));
            // Views of the replaced state are of no further use.
            machine.checkpoints.clear();
            machine.install_tables(&meta_sent, &image)
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
            snapshot: Box::new(Cursor::new(file.archive)),
        }))
    }
}

/// Seeds a new member's data directory from a snapshot archive (from
/// `gantry snapshot save`): checks it, installs its state into the tables
/// and leaves the Raft position empty, so the node bootstraps a new cluster
/// holding that state. Refuses a directory that already holds Raft state.
pub fn seed_state(
    data_dir: &std::path::Path,
    archive_bytes: &[u8],
) -> Result<(), crate::RaftError> {
    let (_meta, image) =
        snapshot_file::read(archive_bytes).map_err(|e| crate::RaftError::Raft(e.to_string()))?;
    let state_path = data_dir.join("state.redb");
    let log_path = data_dir.join("raft-log.redb");
    if state_path.exists() || log_path.exists() {
        return Err(crate::RaftError::Raft(format!(
            "{} already holds Raft state; restore into a new, empty data directory",
            data_dir.display()
        )));
    }
    crate::private_fs::create_dir(data_dir)?;
    crate::private_fs::prepare_file(&state_path)?;
    let store = Store::open(&state_path)?;
    let empty = encode(&AppliedMeta::default()).map_err(crate::RaftError::Raft)?;
    store.install_snapshot(&image, &empty)?;
    Ok(())
}
