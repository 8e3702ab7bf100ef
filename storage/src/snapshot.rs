//! Snapshot export and install: the whole state as one consistent image.
//!
//! Invariants: an export is taken from one read transaction, so it is a
//! state some prefix of the log produced; an install replaces every table in
//! one write transaction, so a reader sees the old state or the new one,
//! never a mix. The Raft metadata row is not part of the image: the Raft
//! layer writes its own after installing.

use crate::error::StorageError;
use crate::store::Store;
use crate::tables::{self, decode, encode};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

const SNAPSHOT_MAGIC: &[u8; 8] = b"GNTSNAP1";

/// (workflow, task, retry, first offset).
type LogChunkKey = (String, String, u32, u64);

#[derive(Default, Serialize, Deserialize)]
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

macro_rules! export_table {
    ($txn:expr, $def:expr, |$k:ident, $v:ident| $row:expr) => {{
        let table = $txn.open_table($def)?;
        let mut rows = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let ($k, $v) = (key.value(), value.value());
            rows.push($row);
        }
        rows
    }};
}

fn clear<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StorageError> {
    txn.delete_table(def)?;
    txn.open_table(def)?;
    Ok(())
}

impl Store {
    /// Serializes the committed state.
    pub fn export_snapshot(&self) -> Result<Vec<u8>, StorageError> {
        let txn = self.database().begin_read()?;
        let image = Image {
            meta: export_table!(txn, tables::META, |k, v| (k.to_string(), v.to_vec()))
                .into_iter()
                .filter(|(key, _)| key != tables::RAFT_META_KEY)
                .collect(),
            counters: export_table!(txn, tables::COUNTERS, |k, v| (k.to_string(), v)),
            workflows: export_table!(txn, tables::WORKFLOWS, |k, v| (k.to_string(), v.to_vec())),
            groups: export_table!(txn, tables::GROUPS, |k, v| (
                (k.0.to_string(), k.1.to_string()),
                v.to_vec()
            )),
            tasks: export_table!(txn, tables::TASKS, |k, v| (
                (k.0.to_string(), k.1.to_string()),
                v.to_vec()
            )),
            task_plans: export_table!(txn, tables::TASK_PLANS, |k, v| (
                (k.0.to_string(), k.1.to_string()),
                v.to_vec()
            )),
            by_status: export_table!(txn, tables::BY_STATUS, |k, v| (k, v.to_string())),
            by_submit: export_table!(txn, tables::BY_SUBMIT, |k, v| (k, v.to_string())),
            timers: export_table!(txn, tables::TIMERS, |k, v| (k, v.to_vec())),
            jobs: export_table!(txn, tables::JOBS, |k, v| (k, v.to_vec())),
            pools: export_table!(txn, tables::POOLS, |k, v| (k.to_string(), v.to_vec())),
            tokens: export_table!(txn, tables::TOKENS, |k, v| (k.to_string(), v.to_vec())),
            tokens_by_hash: export_table!(txn, tables::TOKENS_BY_HASH, |k, v| (
                k.to_string(),
                v.to_string()
            )),
            operator_seqs: export_table!(txn, tables::OPERATOR_SEQS, |k, v| (
                (k.0.to_string(), k.1),
                v
            )),
            config_history: export_table!(txn, tables::CONFIG_HISTORY, |k, v| (k, v.to_vec())),
            config_current: export_table!(txn, tables::CONFIG_CURRENT, |k, v| (
                (k.0, k.1.to_string()),
                v
            )),
            backends: export_table!(txn, tables::BACKENDS, |k, v| (k.to_string(), v.to_vec())),
            log_chunks: export_table!(txn, tables::LOG_CHUNKS, |k, v| (
                (k.0.to_string(), k.1.to_string(), k.2, k.3),
                v.to_vec()
            )),
            workflow_archive: export_table!(txn, tables::WORKFLOW_ARCHIVE, |k, v| (
                k.to_string(),
                v.to_vec()
            )),
            task_runs: export_table!(txn, tables::TASK_RUNS, |k, v| (
                (k.0.to_string(), k.1.to_string(), k.2),
                v.to_vec()
            )),
            active_groups: export_table!(txn, tables::ACTIVE_GROUPS, |k, _v| (
                k.0.to_string(),
                k.1.to_string(),
                k.2.to_string()
            )),
        };
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend(encode(&image)?);
        Ok(bytes)
    }

    /// Replaces the whole state with a snapshot image and `raft_meta`.
    pub fn install_snapshot(&self, bytes: &[u8], raft_meta: &[u8]) -> Result<(), StorageError> {
        let body = bytes
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or_else(|| {
                StorageError::Snapshot("not a Gantry state snapshot (bad magic)".into())
            })?;
        let image: Image = decode(body)?;
        let txn = self.database().begin_write()?;
        clear(&txn, tables::META)?;
        clear(&txn, tables::COUNTERS)?;
        clear(&txn, tables::WORKFLOWS)?;
        clear(&txn, tables::GROUPS)?;
        clear(&txn, tables::TASKS)?;
        clear(&txn, tables::TASK_PLANS)?;
        clear(&txn, tables::BY_STATUS)?;
        clear(&txn, tables::BY_SUBMIT)?;
        clear(&txn, tables::TIMERS)?;
        clear(&txn, tables::JOBS)?;
        clear(&txn, tables::POOLS)?;
        clear(&txn, tables::ACTIVE_GROUPS)?;
        clear(&txn, tables::TOKENS)?;
        clear(&txn, tables::TOKENS_BY_HASH)?;
        clear(&txn, tables::OPERATOR_SEQS)?;
        clear(&txn, tables::CONFIG_HISTORY)?;
        clear(&txn, tables::CONFIG_CURRENT)?;
        clear(&txn, tables::BACKENDS)?;
        clear(&txn, tables::LOG_CHUNKS)?;
        clear(&txn, tables::WORKFLOW_ARCHIVE)?;
        clear(&txn, tables::TASK_RUNS)?;
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
        txn.commit()?;
        Ok(())
    }
}
