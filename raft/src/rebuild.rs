//! Rebuilding a member from a healthy member's snapshot, offline: what
//! `gantry cluster rebuild` runs on a member whose state a state check
//! found corrupt (or that is known bad for any other reason).
//!
//! The member keeps its identity and its vote; its state is replaced by the
//! snapshot's, at the snapshot's log position, and its log is cut to match:
//! entries up to that position are purged (the snapshot holds their
//! effect), and entries after it are kept only when the member's entry at
//! that position is the snapshot's own (otherwise they belong to another
//! history and are dropped, as an InstallSnapshot would). On its next start
//! it catches up from the leader like any member that was down.
//!
//! Invariants:
//! - Refused unless the directory holds a member's Raft state, the member
//!   is in the snapshot's membership (it comes from this cluster), and the
//!   snapshot is not behind what the member already applied or knew
//!   committed (a snapshot taken after the member stopped never is; an
//!   older one would drop committed entries from its log).
//! - Crash-safe in the state machine's own way: the snapshot file is
//!   written first, so a crash anywhere after it leaves a snapshot file
//!   ahead of the tables, which the next start installs
//!   ([`crate::state_machine`]); the corrupt mark is removed last.
//! - The caller holds the data directory's lock (no server runs on it).

use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::node::CORRUPT_MARK_FILE;
use crate::snapshot_file;
use crate::state_machine::AppliedMeta;
use crate::types::{decode, encode, LogId, NodeId};
use gantry_storage::Store;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use std::path::Path;

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// The log position the member's state is now at (the snapshot's).
    pub index: Option<u64>,
    /// The position its state was at before.
    pub was_applied: Option<u64>,
    /// Whether log entries after the snapshot's position were dropped
    /// (they did not follow from it).
    pub dropped_later_entries: bool,
}

fn raft_error(error: impl ToString) -> RaftError {
    RaftError::Raft(error.to_string())
}

/// Replaces the state of the member stored in `raft_dir` (node `node_id`)
/// with the snapshot `archive` (a [`snapshot_file`]); see the module doc.
pub async fn rebuild_member(
    raft_dir: &Path,
    node_id: NodeId,
    archive: &[u8],
) -> Result<Rebuilt, RaftError> {
    let (file_meta, image) = snapshot_file::read(archive).map_err(raft_error)?;
    let snapshot = file_meta.snapshot_meta();
    let state_path = raft_dir.join("state.redb");
    let log_path = raft_dir.join("raft-log.redb");
    if !state_path.exists() || !log_path.exists() {
        return Err(RaftError::Raft(format!(
            "{} holds no member's Raft state: a new member joins with `gantry server --join`, a new cluster starts from `gantry snapshot restore`",
            raft_dir.display()
        )));
    }
    if snapshot
        .last_membership
        .membership()
        .get_node(&node_id)
        .is_none()
    {
        return Err(RaftError::Raft(format!(
            "node {node_id} is not a member in the snapshot's membership: it comes from another cluster, or the node left"
        )));
    }
    let Some(at) = snapshot.last_log_id else {
        return Err(RaftError::Raft(
            "the snapshot holds no applied position".into(),
        ));
    };
    let (store, applied) = open_state(&state_path)?;
    let mut log = LogStore::open(&log_path)?;
    let committed = log.read_committed().await.map_err(raft_error)?;
    for (what, position) in [
        ("applied", applied.last_applied),
        ("known committed", committed),
    ] {
        if let Some(position) = position.filter(|position| position.index > at.index) {
            return Err(RaftError::Raft(format!(
                "the snapshot is at log index {}, behind the {} this member already {what}; take a new snapshot from a healthy member",
                at.index, position.index
            )));
        }
    }
    crate::state_machine::write_snapshot_file(&raft_dir.join("snapshot.bin"), archive)?;
    let dropped_later_entries = cut_log(&mut log, at).await?;
    let meta = AppliedMeta {
        last_applied: snapshot.last_log_id,
        membership: snapshot.last_membership.clone(),
    };
    store.install_snapshot(&image, &encode(&meta).map_err(RaftError::Raft)?)?;
    match std::fs::remove_file(raft_dir.join(CORRUPT_MARK_FILE)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Rebuilt {
        index: Some(at.index),
        was_applied: applied.last_applied.map(|id| id.index),
        dropped_later_entries,
    })
}

/// The member's state and the position it was applied to. A state file
/// that fails its page checks on open (or whose Raft row is corrupt) is
/// moved aside to `state.redb.corrupt` and a new, empty one takes its
/// place: the snapshot replaces every table anyway, and the log's commit
/// position still guards against a snapshot that is behind.
fn open_state(state_path: &Path) -> Result<(Store, AppliedMeta), RaftError> {
    let opened = Store::open(state_path).and_then(|store| {
        let meta = store.raft_meta()?;
        Ok((store, meta))
    });
    let (store, meta) = match opened {
        Ok(opened) => opened,
        Err(
            error @ (gantry_storage::StorageError::CorruptFile { .. }
            | gantry_storage::StorageError::Corrupt { .. }),
        ) => {
            let aside = state_path.with_extension("redb.corrupt");
            tracing::warn!(%error, aside = %aside.display(), "the member's state is corrupt: moved aside, rebuilt whole");
            std::fs::rename(state_path, &aside)?;
            (Store::open(state_path)?, None)
        }
        Err(error) => return Err(error.into()),
    };
    let applied = match meta {
        Some(bytes) => decode(&bytes).map_err(RaftError::Raft)?,
        None => AppliedMeta::default(),
    };
    Ok((store, applied))
}

/// Purges the log up to `at`; drops the entries after it too unless the
/// entry at `at` is the snapshot's own. Returns whether any were dropped.
async fn cut_log(log: &mut LogStore, at: LogId) -> Result<bool, RaftError> {
    let state = log.get_log_state().await.map_err(raft_error)?;
    let last = state.last_log_id.map_or(0, |id| id.index);
    let mut dropped = false;
    if last > at.index {
        let entry = log
            .try_get_log_entries(at.index..=at.index)
            .await
            .map_err(raft_error)?;
        // The entry may be purged already (then the purge point names it).
        let here = entry.first().map(|entry| entry.log_id).or(state
            .last_purged_log_id
            .filter(|purged| purged.index == at.index));
        if here != Some(at) {
            // `truncate` removes from the index of the log id it is given.
            let next = LogId::new(at.leader_id, at.index + 1);
            log.truncate(next).await.map_err(raft_error)?;
            dropped = true;
        }
    }
    log.purge(at).await.map_err(raft_error)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, GantryNode, StoredMembership};
    use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotMeta};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A snapshot at `at` of a state with one applied batch, for a cluster
    /// of node 1.
    fn archive(dir: &Path, at: LogId) -> Vec<u8> {
        let healthy = Store::open(&dir.join("healthy.redb")).expect("open");
        healthy.apply(&[], b"healthy", true).expect("apply");
        let membership = Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, GantryNode::default())]),
        );
        let meta = SnapshotMeta {
            last_log_id: Some(at),
            last_membership: StoredMembership::new(Some(log_id(1, 1)), membership),
            snapshot_id: "test".into(),
        };
        snapshot_file::write(&meta, &healthy.export_snapshot().expect("export")).expect("write")
    }

    /// A member's directory: applied up to `applied`, entries 1..=8 of
    /// term 1 in its log.
    async fn member(dir: &Path, applied: u64) {
        let raft = dir.join("raft");
        std::fs::create_dir_all(&raft).expect("dir");
        let store = Store::open(&raft.join("state.redb")).expect("open");
        let meta = AppliedMeta {
            last_applied: Some(log_id(1, applied)),
            membership: StoredMembership::default(),
        };
        store
            .apply(&[], &encode(&meta).expect("meta"), true)
            .expect("apply");
        let log = LogStore::open(&raft.join("raft-log.redb")).expect("log");
        let entries: Vec<Entry> = (1..=8)
            .map(|index| Entry {
                log_id: log_id(1, index),
                payload: EntryPayload::Blank,
            })
            .collect();
        log.put_entries(&entries).expect("entries");
    }

    /// The member's log: its entries' indexes and its purge point.
    async fn log_of(dir: &Path) -> (Vec<u64>, Option<LogId>) {
        let mut log = LogStore::open(&dir.join("raft").join("raft-log.redb")).expect("log");
        let purged = log.get_log_state().await.expect("state").last_purged_log_id;
        let indexes = log
            .try_get_log_entries(0..100)
            .await
            .expect("read")
            .iter()
            .map(|entry| entry.log_id.index)
            .collect();
        (indexes, purged)
    }

    #[tokio::test]
    async fn the_state_takes_the_snapshots_position_and_the_log_follows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        member(dir.path(), 3).await;
        std::fs::write(dir.path().join("raft").join(CORRUPT_MARK_FILE), "bad").expect("mark");
        let rebuilt = rebuild_member(
            &dir.path().join("raft"),
            1,
            &archive(dir.path(), log_id(1, 5)),
        )
        .await
        .expect("rebuild");
        assert_eq!(rebuilt.index, Some(5));
        assert_eq!(rebuilt.was_applied, Some(3));
        assert!(!rebuilt.dropped_later_entries);
        // The entries after the snapshot follow from it: kept.
        assert_eq!(
            log_of(dir.path()).await,
            (vec![6, 7, 8], Some(log_id(1, 5)))
        );
        assert!(!dir.path().join("raft").join(CORRUPT_MARK_FILE).exists());
        let store = Store::open(&dir.path().join("raft").join("state.redb")).expect("open");
        let meta: AppliedMeta =
            decode(&store.raft_meta().expect("meta").expect("some")).expect("decode");
        assert_eq!(meta.last_applied, Some(log_id(1, 5)));
        assert!(dir.path().join("raft").join("snapshot.bin").exists());
    }

    #[tokio::test]
    async fn a_state_file_that_fails_its_checks_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        member(dir.path(), 3).await;
        let state = dir.path().join("raft").join("state.redb");
        // Zero the file's second page: the open's page checks fail.
        let mut bytes = std::fs::read(&state).expect("read");
        let end = bytes.len().min(8192);
        bytes[4096.min(end)..end].fill(0);
        std::fs::write(&state, &bytes).expect("damage");
        assert!(Store::open(&state).is_err(), "the damage is seen");
        let rebuilt = rebuild_member(
            &dir.path().join("raft"),
            1,
            &archive(dir.path(), log_id(1, 5)),
        )
        .await
        .expect("rebuild");
        assert_eq!(rebuilt.index, Some(5));
        assert_eq!(rebuilt.was_applied, None, "the damaged state said nothing");
        assert!(state.with_extension("redb.corrupt").exists(), "kept aside");
        let store = Store::open(&state).expect("the rebuilt state opens");
        let meta: AppliedMeta =
            decode(&store.raft_meta().expect("meta").expect("some")).expect("decode");
        assert_eq!(meta.last_applied, Some(log_id(1, 5)));
    }

    #[tokio::test]
    async fn entries_of_another_history_after_the_snapshot_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Its entry 5 is of term 1; the cluster committed term 2's.
        member(dir.path(), 3).await;
        let rebuilt = rebuild_member(
            &dir.path().join("raft"),
            1,
            &archive(dir.path(), log_id(2, 5)),
        )
        .await
        .expect("rebuild");
        assert!(rebuilt.dropped_later_entries);
        assert_eq!(log_of(dir.path()).await, (vec![], Some(log_id(2, 5))));
    }

    #[tokio::test]
    async fn a_snapshot_behind_the_member_or_of_another_cluster_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        member(dir.path(), 6).await;
        let behind = rebuild_member(
            &dir.path().join("raft"),
            1,
            &archive(dir.path(), log_id(1, 5)),
        )
        .await
        .expect_err("behind");
        assert!(behind.to_string().contains("behind"), "{behind}");
        let foreign = rebuild_member(
            &dir.path().join("raft"),
            9,
            &archive(dir.path(), log_id(1, 7)),
        )
        .await
        .expect_err("foreign");
        assert!(foreign.to_string().contains("not a member"), "{foreign}");
        // Nothing changed.
        assert_eq!(log_of(dir.path()).await, ((1..=8).collect(), None));
        let empty = tempfile::tempdir().expect("tempdir");
        let none = rebuild_member(empty.path(), 1, &archive(dir.path(), log_id(1, 7)))
            .await
            .expect_err("no member here");
        assert!(none.to_string().contains("holds no member"), "{none}");
    }
}
