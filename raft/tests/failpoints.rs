//! Fault injection into the Raft storage: each failpoint of the log store
//! and the state machine is made to fail once, and the test checks what a
//! client saw and what a reopened node holds.
//!
//! openraft 0.9 treats every storage error as fatal: the error ends
//! `RaftCore` (`Fatal::StorageError`, metrics `running_state` is `Err`),
//! pending and later writes fail, and the node must be reopened. A failing
//! snapshot build is fatal too (its result reaches the core as a
//! state-machine command result). So every test below expects the node to
//! stop, then reopens the data directory with the failpoint cleared.
//!
//! Only built with the `failpoints` feature, which the crate's
//! dev-dependency on itself turns on for every test build (so the plain
//! `cargo test --workspace` runs these). `fail` keeps one process-wide
//! registry: every test holds a [`FailScenario`], whose `setup` takes fail's
//! static scenario mutex until the scenario is dropped (also on a panic), so
//! the tests of this binary run one after another and never see each
//! other's failpoints. They must stay in this one test binary; tests
//! elsewhere never configure failpoints, so theirs stay off.
//!
//! Every wait is a condition polled until a generous deadline: the deadline
//! only turns a hang into a failure, the assertions are on behaviour.
#![cfg(feature = "failpoints")]

use fail::FailScenario;
use gantry_raft::log_store::LogStore;
use gantry_raft::state_machine::StateMachine;
use gantry_raft::types::Entry;
use gantry_raft::{Batch, GantryNode, NodeConfig, RaftError, RaftNode};
use gantry_storage::{Command, PoolRecord, Store};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder, ServerState};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Failure guard for every wait below.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(
        1,
        dir,
        GantryNode {
            peer: "127.0.0.1:1".into(),
            api: "https://127.0.0.1:1".into(),
        },
    );
    // Snapshots only when a test triggers one.
    config.snapshot_every_logs = 1_000_000;
    config
}

fn pool(name: &str) -> Command {
    Command::PutPool {
        pool: PoolRecord {
            name: name.to_string(),
            description: String::new(),
            backend: "test".into(),
            default_platform: None,
            platforms: Vec::new(),
        },
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| name.to_string()).collect()
}

async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        match attempt().await {
            Ok(value) => return value,
            // A stopped node's tasks release the redb files shortly after
            // it is dropped, not at once.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Opens the member in `dir` and waits until it leads and has applied its
/// whole log (a reopened node replays the log into the state machine).
async fn open(config: NodeConfig) -> RaftNode {
    let node = retry("open the node", || RaftNode::open(config.clone(), None)).await;
    node.bootstrap().await.expect("bootstrap");
    let metrics = node.metrics();
    wait_until("the node leads and has applied its log", || {
        let m = metrics.borrow();
        m.state == ServerState::Leader
            && m.last_applied.map(|id| id.index) == m.last_log_index
            && m.last_log_index.is_some()
    })
    .await;
    node
}

async fn propose(node: &RaftNode, name: &str) -> Result<(), RaftError> {
    node.propose(pool(name)).await.map(drop)
}

/// Waits until openraft has stopped on a storage error; returns the error.
async fn stopped(node: &RaftNode) -> String {
    let metrics = node.metrics();
    wait_until("the node stops on the storage error", || {
        metrics.borrow().running_state.is_err()
    })
    .await;
    let error = metrics.borrow().running_state.clone().unwrap_err();
    assert_eq!(metrics.borrow().state, ServerState::Shutdown);
    error.to_string()
}

/// Shuts a node down and drops it, releasing its data directory.
async fn close(node: RaftNode) {
    let _ = node.shutdown().await;
}

async fn pools(node: &RaftNode) -> BTreeSet<String> {
    node.read()
        .await
        .expect("linearizable read")
        .pools()
        .expect("pools")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// What the log of a closed node holds, read straight from its redb file.
struct LogContents {
    purged: Option<u64>,
    indexes: Vec<u64>,
    /// Names of the pools the log's entries put, in log order.
    pools: Vec<String>,
}

async fn read_log(dir: &Path) -> LogContents {
    let path = dir.join("raft-log.redb");
    let mut log = retry("open the log", || async { LogStore::open(&path) }).await;
    let state = log.get_log_state().await.expect("log state");
    let entries = log.try_get_log_entries(..).await.expect("log entries");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    let first = state.last_purged_log_id.map_or(0, |id| id.index + 1);
    let expected: Vec<u64> = (first..=state.last_log_id.map_or(0, |id| id.index)).collect();
    assert_eq!(
        indexes, expected,
        "the log is contiguous after the purge point"
    );
    let pools = entries
        .into_iter()
        .filter_map(|entry| match entry.payload {
            EntryPayload::Normal(batch) => Some(batch.commands),
            _ => None,
        })
        .flatten()
        .filter_map(|command| match command {
            Command::PutPool { pool } => Some(pool.name),
            _ => None,
        })
        .collect();
    LogContents {
        purged: state.last_purged_log_id.map(|id| id.index),
        indexes,
        pools,
    }
}

/// A write whose log append fails before the redb commit is refused, never
/// stored, and gone for good: after the node is reopened neither the log
/// nor the state holds it, and everything acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_failing_before_its_commit_is_refused_and_never_stored() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let node = open(config(dir.path())).await;
    propose(&node, "acked-1").await.expect("propose");

    fail::cfg("raft::log::append::before_commit", "return").expect("cfg");
    let error = propose(&node, "unacked").await.expect_err("refused");
    // Not NotLeader: the write is never retried on another member.
    assert!(!matches!(error, RaftError::NotLeader { .. }), "{error}");
    assert!(stopped(&node).await.contains("before_commit"));
    assert!(propose(&node, "after-stop").await.is_err());
    close(node).await;
    fail::remove("raft::log::append::before_commit");

    let log = read_log(dir.path()).await;
    assert_eq!(
        log.pools,
        ["acked-1"],
        "nothing of the failed append is stored"
    );
    let node = open(config(dir.path())).await;
    propose(&node, "acked-2")
        .await
        .expect("propose after reopening");
    assert_eq!(pools(&node).await, names(&["acked-1", "acked-2"]));
    close(node).await;
    let log = read_log(dir.path()).await;
    assert_eq!(log.pools, ["acked-1", "acked-2"]);
    scenario.teardown();
}

/// An append that fails after its redb commit (as when the node dies
/// between the fsync and the report) is not acknowledged, but its entry is
/// durable, so the reopened leader commits it: a client must take such an
/// error as "outcome unknown". It is not NotLeader, so no member retries
/// it, and it is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_failing_after_its_commit_is_unacknowledged_but_durable() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let node = open(config(dir.path())).await;
    propose(&node, "acked-1").await.expect("propose");

    fail::cfg("raft::log::append::after_commit", "return").expect("cfg");
    let error = propose(&node, "unknown")
        .await
        .expect_err("not acknowledged");
    assert!(!matches!(error, RaftError::NotLeader { .. }), "{error}");
    assert!(stopped(&node).await.contains("after_commit"));
    close(node).await;
    fail::remove("raft::log::append::after_commit");

    let log = read_log(dir.path()).await;
    assert_eq!(
        log.pools,
        ["acked-1", "unknown"],
        "the entry was made durable"
    );
    let node = open(config(dir.path())).await;
    propose(&node, "acked-2")
        .await
        .expect("propose after reopening");
    assert_eq!(
        pools(&node).await,
        names(&["acked-1", "unknown", "acked-2"])
    );
    close(node).await;
    let log = read_log(dir.path()).await;
    assert_eq!(log.pools, ["acked-1", "unknown", "acked-2"], "applied once");
    scenario.teardown();
}

/// A failing commit-index save stops the node before the entry is applied
/// or acknowledged; the entry is in the durable log, and the reopened node
/// (which recomputes the commit index by winning an election) applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_index_save_stops_the_node_before_applying() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let node = open(config(dir.path())).await;
    propose(&node, "acked-1").await.expect("propose");

    fail::cfg("raft::log::save_committed", "return").expect("cfg");
    propose(&node, "unknown")
        .await
        .expect_err("not acknowledged");
    assert!(stopped(&node).await.contains("save_committed"));
    assert_eq!(
        node.read_local()
            .expect("read view")
            .pools()
            .expect("pools")
            .len(),
        1,
        "not applied"
    );
    close(node).await;
    fail::remove("raft::log::save_committed");

    assert_eq!(read_log(dir.path()).await.pools, ["acked-1", "unknown"]);
    let node = open(config(dir.path())).await;
    assert_eq!(pools(&node).await, names(&["acked-1", "unknown"]));
    close(node).await;
    scenario.teardown();
}

/// A failing apply stops the node (openraft cannot go on with a state
/// machine behind its log); reopening replays the log and reaches the state
/// the writes describe, each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_apply_stops_the_node_and_reopening_replays_the_log() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let node = open(config(dir.path())).await;
    let acked: Vec<String> = (0..5).map(|i| format!("acked-{i}")).collect();
    for name in &acked {
        propose(&node, name).await.expect("propose");
    }

    fail::cfg("raft::sm::apply::before_store", "return").expect("cfg");
    propose(&node, "unknown")
        .await
        .expect_err("not acknowledged");
    assert!(stopped(&node).await.contains("apply::before_store"));
    let applied_before = node.metrics().borrow().last_applied;
    close(node).await;
    fail::remove("raft::sm::apply::before_store");

    let log = read_log(dir.path()).await;
    let mut expected: BTreeSet<String> = acked.iter().cloned().collect();
    expected.insert("unknown".into());
    assert_eq!(log.pools.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let node = open(config(dir.path())).await;
    assert_eq!(pools(&node).await, expected);
    let metrics = node.metrics().borrow().clone();
    assert!(metrics.last_applied > applied_before, "{metrics:?}");
    close(node).await;
    // Again, from what the first recovery left: the same state.
    let node = open(config(dir.path())).await;
    assert_eq!(pools(&node).await, expected);
    close(node).await;
    scenario.teardown();
}

/// A failing snapshot build stops the node without a snapshot and with the
/// whole log; after reopening, a snapshot is built and the log purged
/// behind it (`logs_kept_after_snapshot` is 0, so a successful build purges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_snapshot_build_leaves_the_log_unpurged() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let mut config = config(dir.path());
    config.logs_kept_after_snapshot = 0;
    let node = open(config.clone()).await;
    let written: Vec<String> = (0..10).map(|i| format!("pool-{i}")).collect();
    for name in &written {
        propose(&node, name).await.expect("propose");
    }
    let expected: BTreeSet<String> = written.iter().cloned().collect();

    fail::cfg("raft::sm::snapshot::build", "return").expect("cfg");
    node.raft().trigger().snapshot().await.expect("trigger");
    assert!(stopped(&node).await.contains("snapshot::build"));
    let metrics = node.metrics().borrow().clone();
    assert_eq!((metrics.snapshot, metrics.purged), (None, None));
    close(node).await;
    fail::remove("raft::sm::snapshot::build");

    assert!(
        !dir.path().join("snapshot.bin").exists(),
        "no snapshot file"
    );
    let log = read_log(dir.path()).await;
    assert_eq!(log.purged, None);
    assert_eq!(log.pools, written, "the whole log is kept");

    let node = open(config).await;
    assert_eq!(pools(&node).await, expected);
    node.raft().trigger().snapshot().await.expect("trigger");
    let metrics = node.metrics();
    wait_until("the log is purged behind a new snapshot", || {
        let m = metrics.borrow();
        m.snapshot.is_some() && m.purged == m.snapshot
    })
    .await;
    propose(&node, "after-snapshot").await.expect("propose");
    close(node).await;
    let log = read_log(dir.path()).await;
    assert!(log.purged.is_some());
    assert_eq!(log.pools, ["after-snapshot"]);
    scenario.teardown();
}

/// A failing purge stops the node with the log still whole and readable;
/// the reopened node serves it and purges when asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_purge_leaves_the_log_readable() {
    let scenario = FailScenario::setup();
    let dir = TempDir::new().expect("temp dir");
    let node = open(config(dir.path())).await;
    let written: Vec<String> = (0..10).map(|i| format!("pool-{i}")).collect();
    for name in &written {
        propose(&node, name).await.expect("propose");
    }
    let expected: BTreeSet<String> = written.iter().cloned().collect();
    node.raft().trigger().snapshot().await.expect("trigger");
    let metrics = node.metrics();
    wait_until("a snapshot is built", || {
        metrics.borrow().snapshot.is_some()
    })
    .await;
    // The default keeps 2,000 entries behind a snapshot: nothing purged yet.
    assert_eq!(metrics.borrow().purged, None);
    let snapshot = metrics.borrow().snapshot.expect("snapshot");

    fail::cfg("raft::log::purge", "return").expect("cfg");
    node.raft()
        .trigger()
        .purge_log(snapshot.index)
        .await
        .expect("trigger");
    assert!(stopped(&node).await.contains("raft::log::purge"));
    close(node).await;
    fail::remove("raft::log::purge");

    let log = read_log(dir.path()).await;
    assert_eq!(log.purged, None, "the purge point is unchanged");
    assert_eq!(log.indexes.first(), Some(&0), "every entry is still there");
    assert_eq!(log.pools, written);

    let node = open(config(dir.path())).await;
    assert_eq!(pools(&node).await, expected);
    node.raft()
        .trigger()
        .purge_log(snapshot.index)
        .await
        .expect("trigger");
    let metrics = node.metrics();
    wait_until("the log is purged", || {
        metrics.borrow().purged == Some(snapshot)
    })
    .await;
    close(node).await;
    assert_eq!(read_log(dir.path()).await.purged, Some(snapshot.index));
    scenario.teardown();
}

fn entry(index: u64, name: &str) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch {
            commands: vec![pool(name)],
        }),
    }
}

fn machine(dir: &Path) -> (Arc<Store>, StateMachine) {
    let store = Arc::new(Store::open(&dir.join("state.redb")).expect("store"));
    let machine = StateMachine::new(store.clone(), dir.join("snapshot.bin"), Default::default());
    (store, machine)
}

fn store_pools(store: &Store) -> BTreeSet<String> {
    store
        .read()
        .expect("read view")
        .pools()
        .expect("pools")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// openraft builds snapshots while applies go on. An apply landing between
/// the build's read of the applied position and its read of the tables
/// (failpoint `storage::export::after_meta`, where the two reads of the old
/// code were apart) must not put entries into the image that its position
/// says are still to come: the image is exactly the state at its position,
/// and a replica that installs it and applies the rest of the log ends
/// byte-identical to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_during_a_snapshot_build_stays_out_of_its_image() {
    let scenario = FailScenario::setup();
    let log: Vec<Entry> = (1..=4).map(|i| entry(i, &format!("pool-{i}"))).collect();
    let source_dir = TempDir::new().expect("temp dir");
    let (source_store, mut source) = machine(source_dir.path());
    source.apply(log[..3].to_vec()).await.expect("apply");

    // The interleaving: entry 4 is applied from inside the build.
    let handle = tokio::runtime::Handle::current();
    let applier = source.clone();
    let fourth = log[3].clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let applied_inside = done.clone();
    fail::cfg_callback("storage::export::after_meta", move || {
        if applied_inside.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut applier = applier.clone();
        let fourth = fourth.clone();
        handle
            .block_on(async move { applier.apply([fourth]).await })
            .expect("apply inside the build");
    })
    .expect("cfg");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    fail::remove("storage::export::after_meta");
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst),
        "the failpoint ran"
    );
    assert_eq!(store_pools(&source_store).len(), 4, "entry 4 was applied");
    let position = snapshot.meta.last_log_id.expect("a position").index;

    // The image equals a replay of exactly the entries up to its position.
    let reference_dir = TempDir::new().expect("temp dir");
    let (reference_store, mut reference) = machine(reference_dir.path());
    reference
        .apply(log[..position as usize].to_vec())
        .await
        .expect("apply");
    let (_, image) =
        gantry_raft::snapshot_file::read(snapshot.snapshot.get_ref()).expect("snapshot file");
    assert!(
        image == reference_store.export_snapshot().expect("export"),
        "the image at position {position} holds exactly entries 1..={position}"
    );

    // A replica installing it, then applying the rest, matches the source.
    let target_dir = TempDir::new().expect("temp dir");
    let (target_store, mut target) = machine(target_dir.path());
    target
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    target
        .apply(log[position as usize..].to_vec())
        .await
        .expect("apply the rest");
    assert!(
        target_store.export_snapshot().expect("export")
            == source_store.export_snapshot().expect("export"),
        "the replica is byte-identical to the source"
    );
    scenario.teardown();
}

/// A snapshot install that fails leaves the receiving state machine as it
/// was — tables, applied position and kept snapshot — and the same install
/// succeeds once the failure is gone. On the state machine directly: what a
/// follower's worker runs when a leader sends it a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_snapshot_install_leaves_the_old_state_intact() {
    let scenario = FailScenario::setup();
    let source_dir = TempDir::new().expect("temp dir");
    let (_source_store, mut source) = machine(source_dir.path());
    source
        .apply((1..=3).map(|i| entry(i, &format!("new-{i}"))))
        .await
        .expect("apply");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let target_dir = TempDir::new().expect("temp dir");
    let (target_store, mut target) = machine(target_dir.path());
    target
        .apply([entry(1, "old-1"), entry(2, "old-2")])
        .await
        .expect("apply");
    let kept = target
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build")
        .meta;
    let applied = target.applied_state().await.expect("applied state");

    fail::cfg("raft::sm::snapshot::install", "return").expect("cfg");
    let data = snapshot.snapshot.clone();
    target
        .install_snapshot(&snapshot.meta, data)
        .await
        .expect_err("install fails");
    assert_eq!(store_pools(&target_store), names(&["old-1", "old-2"]));
    assert_eq!(
        target.applied_state().await.expect("applied state"),
        applied
    );
    let current = target
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a kept snapshot");
    assert_eq!(current.meta, kept, "the kept snapshot is the old one");
    fail::remove("raft::sm::snapshot::install");

    target
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(
        store_pools(&target_store),
        names(&["new-1", "new-2", "new-3"])
    );
    let (last_applied, _) = target.applied_state().await.expect("applied state");
    assert_eq!(last_applied, snapshot.meta.last_log_id);
    scenario.teardown();
}

/// A crash between writing the snapshot file and replacing the tables
/// (failpoint `raft::sm::snapshot::install::after_file`) is finished on
/// restart: the reopened state machine installs the file it finds ahead of
/// its tables before it reports where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_cut_short_after_the_file_is_finished_on_restart() {
    let scenario = FailScenario::setup();
    let source_dir = TempDir::new().expect("temp dir");
    let (_source_store, mut source) = machine(source_dir.path());
    source
        .apply((1..=3).map(|i| entry(i, &format!("new-{i}"))))
        .await
        .expect("apply");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let target_dir = TempDir::new().expect("temp dir");
    {
        let (target_store, mut target) = machine(target_dir.path());
        target
            .apply([entry(1, "old-1"), entry(2, "old-2")])
            .await
            .expect("apply");
        target_store.sync().expect("sync");
        fail::cfg("raft::sm::snapshot::install::after_file", "return").expect("cfg");
        target
            .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
            .await
            .expect_err("install cut short");
        fail::remove("raft::sm::snapshot::install::after_file");
        assert_eq!(store_pools(&target_store), names(&["old-1", "old-2"]));
    }
    // "Restart": a new store and state machine over the same files.
    let (target_store, mut target) = machine(target_dir.path());
    let (last_applied, _) = target.applied_state().await.expect("applied state");
    assert_eq!(last_applied, snapshot.meta.last_log_id);
    assert_eq!(
        store_pools(&target_store),
        names(&["new-1", "new-2", "new-3"])
    );
    let current = target
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("the installed snapshot");
    assert_eq!(current.meta, snapshot.meta);
    scenario.teardown();
}

/// A truncated or corrupted snapshot sent by a leader is refused before
/// anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
    let source_dir = TempDir::new().expect("temp dir");
    let (_source_store, mut source) = machine(source_dir.path());
    source
        .apply((1..=3).map(|i| entry(i, &format!("new-{i}"))))
        .await
        .expect("apply");
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let bytes = snapshot.snapshot.into_inner();

    let target_dir = TempDir::new().expect("temp dir");
    let (target_store, mut target) = machine(target_dir.path());
    target.apply([entry(1, "old-1")]).await.expect("apply");
    let applied = target.applied_state().await.expect("applied state");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for bad in [
        bytes[..bytes.len() - 8].to_vec(),
        flipped,
        b"not a snapshot".to_vec(),
    ] {
        let error = target
            .install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(bad)))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("snapshot"), "{error}");
        assert_eq!(store_pools(&target_store), names(&["old-1"]));
        assert_eq!(target.applied_state().await.expect("applied"), applied);
        assert!(!target_dir.path().join("snapshot.bin").exists());
    }
}

/// The failpoints are compiled into this test build (and so a test above
/// that expects a failure is not passing by accident of a missing point).
#[test]
fn failpoints_are_compiled_in() {
    assert!(fail::has_failpoints());
}
