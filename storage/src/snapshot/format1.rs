//! Format 1 of the state snapshot (before the table registry): one field per
//! table, positional. Only read, so that snapshots and backups written by
//! earlier versions still install; new snapshots are format 2.
//!
//! Invariants: an install replaces every table in one write transaction;
//! tables this format does not carry are left empty.

use crate::error::StorageError;
use crate::store::Store;
use crate::tables::{self, decode};
use serde::Deserialize;

pub(super) const MAGIC: &[u8; 8] = b"GNTSNAP1";

/// (workflow, task, retry, first offset).
type LogChunkKey = (String, String, u32, u64);

#[derive(Deserialize)]
struct Image {
    meta: Vec<(String, Vec<u8>)>,
    counters: Vec<(String, u64)>,
    workflows: Vec<(String, Vec<u8>)>,
    groups: Vec<((String, String), Vec<u8>)>,
    tasks: Vec<((String, String), Vec<u8>)>,
    task_plans: Vec<((String, String), Vec<u8>)>,
    by_status: Vec<((u8, u64), String)>,
    by_submit: Vec<(u64, String)>,
    timers: Vec<((i64, u64), Vec<u8>)>,
    jobs: Vec<(u64, Vec<u8>)>,
    pools: Vec<(String, Vec<u8>)>,
    active_groups: Vec<(String, String, String)>,
    tokens: Vec<(String, Vec<u8>)>,
    tokens_by_hash: Vec<(String, String)>,
    operator_seqs: Vec<((String, u64), (u64, i64))>,
    config_history: Vec<((u8, u64), Vec<u8>)>,
    config_current: Vec<((u8, String), u64)>,
    backends: Vec<(String, Vec<u8>)>,
    log_chunks: Vec<(LogChunkKey, Vec<u8>)>,
    workflow_archive: Vec<(String, Vec<u8>)>,
    task_runs: Vec<((String, String, u32), Vec<u8>)>,
}

/// Replaces the whole state with a format-1 image (`body` follows the
/// magic) and `raft_meta`.
pub(super) fn install(store: &Store, body: &[u8], raft_meta: &[u8]) -> Result<(), StorageError> {
    let image: Image = decode(body)?;
    let txn = store.database().begin_write()?;
    for table in crate::schema::ALL {
        table.replace(&txn, &[])?;
    }
    {
        let mut table = txn.open_table(tables::META)?;
        for (k, v) in &image.meta {
            table.insert(k.as_str(), v.as_slice())?;
        }
        table.insert(tables::RAFT_META_KEY, raft_meta)?;
        let mut table = txn.open_table(tables::COUNTERS)?;
        for (k, v) in &image.counters {
            table.insert(k.as_str(), *v)?;
        }
        let mut table = txn.open_table(tables::WORKFLOWS)?;
        for (k, v) in &image.workflows {
            table.insert(k.as_str(), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::GROUPS)?;
        for ((a, b), v) in &image.groups {
            table.insert((a.as_str(), b.as_str()), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::TASKS)?;
        for ((a, b), v) in &image.tasks {
            table.insert((a.as_str(), b.as_str()), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::TASK_PLANS)?;
        for ((a, b), v) in &image.task_plans {
            table.insert((a.as_str(), b.as_str()), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::BY_STATUS)?;
        for (k, v) in &image.by_status {
            table.insert(*k, v.as_str())?;
        }
        let mut table = txn.open_table(tables::BY_SUBMIT)?;
        for (k, v) in &image.by_submit {
            table.insert(*k, v.as_str())?;
        }
        let mut table = txn.open_table(tables::TIMERS)?;
        for (k, v) in &image.timers {
            table.insert(*k, v.as_slice())?;
        }
        let mut table = txn.open_table(tables::JOBS)?;
        for (k, v) in &image.jobs {
            table.insert(*k, v.as_slice())?;
        }
        let mut table = txn.open_table(tables::POOLS)?;
        for (k, v) in &image.pools {
            table.insert(k.as_str(), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::TOKENS)?;
        for (k, v) in &image.tokens {
            table.insert(k.as_str(), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::TOKENS_BY_HASH)?;
        for (k, v) in &image.tokens_by_hash {
            table.insert(k.as_str(), v.as_str())?;
        }
        let mut table = txn.open_table(tables::OPERATOR_SEQS)?;
        for ((backend, instance), value) in &image.operator_seqs {
            table.insert((backend.as_str(), *instance), *value)?;
        }
        let mut table = txn.open_table(tables::CONFIG_HISTORY)?;
        for (k, v) in &image.config_history {
            table.insert(*k, v.as_slice())?;
        }
        let mut table = txn.open_table(tables::CONFIG_CURRENT)?;
        for ((code, name), v) in &image.config_current {
            table.insert((*code, name.as_str()), *v)?;
        }
        let mut table = txn.open_table(tables::BACKENDS)?;
        for (k, v) in &image.backends {
            table.insert(k.as_str(), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::LOG_CHUNKS)?;
        for ((workflow, task, retry, first), v) in &image.log_chunks {
            table.insert(
                (workflow.as_str(), task.as_str(), *retry, *first),
                v.as_slice(),
            )?;
        }
        let mut table = txn.open_table(tables::WORKFLOW_ARCHIVE)?;
        for (k, v) in &image.workflow_archive {
            table.insert(k.as_str(), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::TASK_RUNS)?;
        for ((workflow, task, retry), v) in &image.task_runs {
            table.insert((workflow.as_str(), task.as_str(), *retry), v.as_slice())?;
        }
        let mut table = txn.open_table(tables::ACTIVE_GROUPS)?;
        for (a, b, c) in &image.active_groups {
            table.insert((a.as_str(), b.as_str(), c.as_str()), ())?;
        }
    }
    // Format 1 predates sealed rows: every value is sealed here.
    crate::row::seal_legacy_rows(&txn)?;
    // Format 1 predates the tallies: they are counted from the rows.
    crate::tally::rebuild_if_stale(&txn)?;
    crate::indexes::rebuild_if_stale(&txn)?;
    txn.commit()?;
    Ok(())
}
