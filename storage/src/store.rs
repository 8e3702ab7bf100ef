//! [`Store`]: the state database file, the one place commands are applied,
//! and consistent read views for queries.
//!
//! Invariants: a call to [`Store::apply`] is one redb write transaction that
//! also records the Raft layer's opaque metadata (last applied log id and
//! membership); reads see only committed state. How durable a commit is, is
//! the caller's choice (see [`Store::apply`]).

use crate::apply::apply;
use crate::command::{Command, Outcome};
use crate::config::{BackendRecord, ConfigRevision, ConfigType};
use crate::error::StorageError;
use crate::extras::WorkflowExtras;
use crate::labels::Labels;
pub use crate::list::ListFilter;
use crate::record::{
    GroupRecord, JobRecord, Millis, PoolRecord, SessionEvent, TaskRecord, TimerRecord,
    WorkflowRecord,
};
use crate::row::{self, unseal};
use crate::status::WorkflowStatus;
use crate::tables::{self, Tables};
use crate::workflow_specs::attach_specs;
use redb::TableHandle;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, OnceLock};

mod task_events;

pub struct Store {
    db: Database,
    corruption: Arc<OnceLock<String>>,
}

impl Store {
    /// Opens (or creates) the state file. Every page's checksum is verified
    /// first, so a file changed outside the database is refused here with
    /// [`StorageError::CorruptFile`] rather than served; a store written before
    /// rows were sealed is sealed once (see [`crate::row`]).
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|error| match error {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
                    StorageError::CorruptFile {
                        path: path.display().to_string(),
                        reason,
                    }
                }
                other => other.into(),
            })?;
        let txn = db.begin_write()?;
        tables::create_all(&txn)?;
        row::seal_legacy_rows(&txn)?;
        // A state written before the tallies existed has them counted now.
        crate::tally::rebuild_if_stale(&txn)?;
        // And the list's indexes, if it predates them.
        crate::indexes::rebuild_if_stale(&txn)?;
        txn.commit()?;
        Ok(Store {
            db,
            corruption: Arc::default(),
        })
    }

    /// The first corrupt row a read met since the process started, if any:
    /// while it is set the node is unhealthy.
    pub fn corruption(&self) -> Option<String> {
        self.corruption.get().cloned()
    }

    /// Applies batches of commands and stores `raft_meta`, atomically.
    ///
    /// With `durable == false` the commit is visible at once but reaches the
    /// disk only with a later durable commit: a crash rolls the tables and
    /// `raft_meta` back together to an earlier applied position, and the
    /// Raft layer replays its (durable) log from there.
    pub fn apply(
        &self,
        batches: &[&[Command]],
        raft_meta: &[u8],
        durable: bool,
    ) -> Result<Vec<Vec<Outcome>>, StorageError> {
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StorageError::Database(e.to_string()))?;
        }
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut batch_outcomes = Vec::with_capacity(batch.len());
            for command in batch.iter() {
                batch_outcomes.push(apply(&txn, command)?);
            }
            outcomes.push(batch_outcomes);
        }
        Tables::new(&txn).set_meta(tables::RAFT_META_KEY, raft_meta)?;
        txn.commit()?;
        Ok(outcomes)
    }

    /// Makes every earlier commit durable (an empty durable commit).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db.begin_write()?.commit()?;
        Ok(())
    }

    /// The Raft layer's metadata as last stored by [`Store::apply`].
    pub fn raft_meta(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(tables::META)?;
        let value = table
            .get(tables::RAFT_META_KEY)?
            .map(|v| unseal(&tables::META, &tables::RAFT_META_KEY, v.value()).map(<[u8]>::to_vec))
            .transpose();
        self.note(value)
    }

    pub fn read(&self) -> Result<ReadView, StorageError> {
        Ok(ReadView {
            txn: self.db.begin_read()?,
            corruption: Arc::clone(&self.corruption),
        })
    }

    /// Passes `result` on, noting a corrupt row first.
    pub(crate) fn note<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        note_corruption(&self.corruption, result)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

fn note_corruption<T>(
    note: &OnceLock<String>,
    result: Result<T, StorageError>,
) -> Result<T, StorageError> {
    if let Err(error @ StorageError::Corrupt { .. }) = &result {
        let _ = note.set(error.to_string());
    }
    result
}

/// A consistent view of committed state.
pub struct ReadView {
    pub(crate) txn: ReadTransaction,
    corruption: Arc<OnceLock<String>>,
}

impl ReadView {
    /// A sealed row checked and decoded; a corrupt one is noted in the store.
    pub(crate) fn row<T: DeserializeOwned>(
        &self,
        table: &impl TableHandle,
        key: &dyn Debug,
        sealed: &[u8],
    ) -> Result<T, StorageError> {
        note_corruption(&self.corruption, row::decode_row(table, key, sealed))
    }

    /// A sealed row's payload, checked; a corrupt one is noted in the store.
    fn unseal<'a>(
        &self,
        table: &impl TableHandle,
        key: &dyn Debug,
        sealed: &'a [u8],
    ) -> Result<&'a [u8], StorageError> {
        note_corruption(&self.corruption, unseal(table, key, sealed))
    }

    /// The read transaction behind this view.
    pub(crate) fn transaction(&self) -> &ReadTransaction {
        &self.txn
    }

    /// The state's clock: the latest command time applied (0 before any).
    pub fn clock(&self) -> Result<Millis, StorageError> {
        let table = self.txn.open_table(tables::COUNTERS)?;
        let value = table
            .get(tables::CLOCK_COUNTER)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(Millis::try_from(value).unwrap_or(Millis::MAX))
    }

    pub fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StorageError> {
        let table = self.txn.open_table(tables::WORKFLOWS)?;
        let Some(row) = table.get(id)? else {
            return Ok(None);
        };
        let workflow = self.row(&tables::WORKFLOWS, &id, row.value())?;
        let specs = self.txn.open_table(tables::WORKFLOW_SPECS)?;
        note_corruption(&self.corruption, attach_specs(&specs, workflow)).map(Some)
    }

    /// A workflow's [`crate::WorkflowCore`]: a few bytes, where its row
    /// holds its specs and every group's name.
    pub fn workflow_core(
        &self,
        id: &str,
    ) -> Result<Option<crate::record::WorkflowCore>, StorageError> {
        crate::tally::workflow_core(&self.txn, id)
    }

    pub fn groups(&self, workflow: &WorkflowRecord) -> Result<Vec<GroupRecord>, StorageError> {
        let table = self.txn.open_table(tables::GROUPS)?;
        let mut groups = Vec::with_capacity(workflow.groups.len());
        for name in &workflow.groups {
            if let Some(row) = table.get((workflow.id.as_str(), name.as_str()))? {
                groups.push(self.row(
                    &tables::GROUPS,
                    &(workflow.id.as_str(), name.as_str()),
                    row.value(),
                )?);
            }
        }
        Ok(groups)
    }

    pub fn group(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Option<GroupRecord>, StorageError> {
        let table = self.txn.open_table(tables::GROUPS)?;
        let row = table.get((workflow_id, name))?;
        row.map(|v| self.row(&tables::GROUPS, &(workflow_id, name), v.value()))
            .transpose()
    }

    /// A task with its plan.
    pub fn task(&self, workflow_id: &str, name: &str) -> Result<Option<TaskRecord>, StorageError> {
        let table = self.txn.open_table(tables::TASKS)?;
        let Some(row) = table.get((workflow_id, name))? else {
            return Ok(None);
        };
        let mut task: TaskRecord = self.row(&tables::TASKS, &(workflow_id, name), row.value())?;
        let plans = self.txn.open_table(tables::TASK_PLANS)?;
        if let Some(plan) = plans.get((workflow_id, name))? {
            task.plan = self.row(&tables::TASK_PLANS, &(workflow_id, name), plan.value())?;
        }
        Ok(Some(task))
    }

    /// The earlier (ended) runs of task `name`, oldest first, without plans.
    pub fn task_runs(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Vec<TaskRecord>, StorageError> {
        let table = self.txn.open_table(tables::TASK_RUNS)?;
        let mut runs = Vec::new();
        for row in table.range((workflow_id, name, 0)..=(workflow_id, name, u32::MAX))? {
            let (key, value) = row?;
            runs.push(self.row(&tables::TASK_RUNS, &key.value(), value.value())?);
        }
        Ok(runs)
    }

    pub fn group_tasks(&self, group: &GroupRecord) -> Result<Vec<TaskRecord>, StorageError> {
        let mut tasks = Vec::with_capacity(group.tasks.len());
        for name in &group.tasks {
            if let Some(task) = self.task(&group.workflow_id, name)? {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// Workflows matching `filter` in submit order, and whether more match
    /// (see `list` for how the indexes answer it).
    pub fn list(&self, filter: &ListFilter) -> Result<(Vec<WorkflowRecord>, bool), StorageError> {
        let workflows = self.txn.open_table(tables::WORKFLOWS)?;
        let specs = self.txn.open_table(tables::WORKFLOW_SPECS)?;
        let labels = self.txn.open_table(tables::WORKFLOW_LABELS)?;
        let record = |id: &str, with_specs: bool| -> Result<Option<WorkflowRecord>, StorageError> {
            let Some(row) = workflows.get(id)? else {
                return Ok(None);
            };
            let workflow = self.row(&tables::WORKFLOWS, &id, row.value())?;
            if !with_specs {
                return Ok(Some(workflow));
            }
            note_corruption(&self.corruption, attach_specs(&specs, workflow)).map(Some)
        };
        let labels_of = |id: &str| -> Result<Labels, StorageError> {
            let row = labels.get(id)?;
            Ok(row
                .map(|v| self.row(&tables::WORKFLOW_LABELS, &id, v.value()))
                .transpose()?
                .unwrap_or_default())
        };
        crate::list::list(&self.txn, filter, record, labels_of)
    }

    /// A workflow by its ID or, failing that, its uuid (as OSMO looks
    /// workflows up).
    pub fn find_workflow(&self, id_or_uuid: &str) -> Result<Option<WorkflowRecord>, StorageError> {
        if let Some(workflow) = self.workflow(id_or_uuid)? {
            return Ok(Some(workflow));
        }
        let id = {
            let table = self.txn.open_table(tables::BY_UUID)?;
            let row = table.get(id_or_uuid)?;
            row.map(|v| v.value().to_string())
        };
        match id {
            Some(id) => self.workflow(&id),
            None => Ok(None),
        }
    }

    /// A workflow's labels (empty without any).
    pub fn workflow_labels(&self, id: &str) -> Result<Labels, StorageError> {
        let table = self.txn.open_table(tables::WORKFLOW_LABELS)?;
        let row = table.get(id)?;
        Ok(row
            .map(|v| self.row(&tables::WORKFLOW_LABELS, &id, v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    /// The sessions users opened into a workflow's tasks, oldest first
    /// (the newest `SESSION_EVENTS_MAX`; empty without any).
    pub fn workflow_sessions(&self, id: &str) -> Result<Vec<SessionEvent>, StorageError> {
        let table = self.txn.open_table(tables::WORKFLOW_SESSIONS)?;
        let row = table.get(id)?;
        Ok(row
            .map(|v| self.row(&tables::WORKFLOW_SESSIONS, &id, v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    /// A user's credential by name.
    pub fn credential(
        &self,
        user: &str,
        name: &str,
    ) -> Result<Option<crate::record::CredentialRecord>, StorageError> {
        let table = self.txn.open_table(tables::USER_CREDENTIALS)?;
        let row = table.get((user, name))?;
        row.map(|v| self.row(&tables::USER_CREDENTIALS, &(user, name), v.value()))
            .transpose()
    }

    /// A user Gantry knows.
    pub fn user(&self, name: &str) -> Result<Option<crate::record::UserRecord>, StorageError> {
        let table = self.txn.open_table(tables::USERS)?;
        let row = table.get(name)?;
        row.map(|v| self.row(&tables::USERS, &name, v.value()))
            .transpose()
    }

    /// Every user Gantry knows, by name.
    pub fn users(&self) -> Result<Vec<(String, crate::record::UserRecord)>, StorageError> {
        let table = self.txn.open_table(tables::USERS)?;
        let mut users = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let record = self.row(&tables::USERS, &key.value(), value.value())?;
            users.push((key.value().to_string(), record));
        }
        Ok(users)
    }

    /// A user's saved profile (the default without one).
    pub fn user_profile(&self, user: &str) -> Result<crate::record::UserProfile, StorageError> {
        let table = self.txn.open_table(tables::USER_PROFILES)?;
        let Some(row) = table.get(user)? else {
            return Ok(crate::record::UserProfile::default());
        };
        let text: String = self.row(&tables::USER_PROFILES, &user, row.value())?;
        // Checked when it was applied: a text that no longer reads is a
        // newer build's; its fields are unknown here.
        Ok(crate::record::UserProfile::from_text(&text).unwrap_or_default())
    }

    /// Every user's credentials, by user and name.
    pub fn all_credentials(
        &self,
    ) -> Result<Vec<(String, String, crate::record::CredentialRecord)>, StorageError> {
        let table = self.txn.open_table(tables::USER_CREDENTIALS)?;
        let mut credentials = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let (user, name) = key.value();
            let record = self.row(&tables::USER_CREDENTIALS, &(user, name), value.value())?;
            credentials.push((user.to_string(), name.to_string(), record));
        }
        Ok(credentials)
    }

    /// A user's credentials, by name.
    pub fn credentials(
        &self,
        user: &str,
    ) -> Result<Vec<(String, crate::record::CredentialRecord)>, StorageError> {
        let table = self.txn.open_table(tables::USER_CREDENTIALS)?;
        let mut credentials = Vec::new();
        for row in table.range((user, "")..)? {
            let (key, value) = row?;
            let (owner, name) = key.value();
            if owner != user {
                break;
            }
            let record = self.row(&tables::USER_CREDENTIALS, &(owner, name), value.value())?;
            credentials.push((name.to_string(), record));
        }
        Ok(credentials)
    }

    /// A workflow's plan extras (empty without any).
    pub fn workflow_extras(&self, id: &str) -> Result<WorkflowExtras, StorageError> {
        let table = self.txn.open_table(tables::WORKFLOW_EXTRAS)?;
        let Some(row) = table.get(id)? else {
            return Ok(WorkflowExtras::default());
        };
        let text: String = self.row(&tables::WORKFLOW_EXTRAS, &id, row.value())?;
        // Checked when it was applied: a text that no longer reads is a
        // build that cannot read what an older one wrote.
        WorkflowExtras::from_text(&text).map_err(StorageError::Decode)
    }

    /// A workflow's tags, in tag order.
    pub fn workflow_tags(&self, id: &str) -> Result<Vec<String>, StorageError> {
        crate::indexes::tags_of(&self.txn.open_table(tables::WORKFLOW_TAGS)?, id)
    }

    pub fn pools(&self) -> Result<Vec<PoolRecord>, StorageError> {
        let table = self.txn.open_table(tables::POOLS)?;
        let mut pools = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            pools.push(self.row(&tables::POOLS, &key.value(), value.value())?);
        }
        Ok(pools)
    }

    pub fn pool(&self, name: &str) -> Result<Option<PoolRecord>, StorageError> {
        let table = self.txn.open_table(tables::POOLS)?;
        let row = table.get(name)?;
        row.map(|v| self.row(&tables::POOLS, &name, v.value()))
            .transpose()
    }

    /// Queued operator jobs, oldest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StorageError> {
        let table = self.txn.open_table(tables::JOBS)?;
        let mut jobs = Vec::new();
        for row in table.iter()?.take(limit) {
            let (key, value) = row?;
            jobs.push(self.row(&tables::JOBS, &key.value(), value.value())?);
        }
        Ok(jobs)
    }

    /// The queued operator job `id`, if it is still queued.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StorageError> {
        let table = self.txn.open_table(tables::JOBS)?;
        let row = table.get(id)?;
        row.map(|v| self.row(&tables::JOBS, &id, v.value()))
            .transpose()
    }

    /// Timers due at or before `now`, earliest first.
    pub fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<TimerRecord>, StorageError> {
        let table = self.txn.open_table(tables::TIMERS)?;
        let mut timers = Vec::new();
        for row in table.range(..=(now, u64::MAX))?.take(limit) {
            let (key, value) = row?;
            timers.push(self.row(&tables::TIMERS, &key.value(), value.value())?);
        }
        Ok(timers)
    }

    /// Timers due at or before `now` that come after `after` (a timer's
    /// `(due, id)`) in timer order: for paging past timers a caller skips.
    pub fn due_timers_after(
        &self,
        now: Millis,
        after: (Millis, u64),
        limit: usize,
    ) -> Result<Vec<TimerRecord>, StorageError> {
        if after.0 > now {
            return Ok(Vec::new());
        }
        let table = self.txn.open_table(tables::TIMERS)?;
        let mut timers = Vec::new();
        for row in table.range(after..=(now, u64::MAX))? {
            let (key, value) = row?;
            if key.value() == after {
                continue;
            }
            if timers.len() == limit {
                break;
            }
            timers.push(self.row(&tables::TIMERS, &key.value(), value.value())?);
        }
        Ok(timers)
    }

    /// What became of an ended workflow's stored files (`None` while it runs).
    pub fn workflow_archive(
        &self,
        workflow_id: &str,
    ) -> Result<Option<crate::record::WorkflowArchive>, StorageError> {
        let table = self.txn.open_table(tables::WORKFLOW_ARCHIVE)?;
        let row = table.get(workflow_id)?;
        row.map(|v| self.row(&tables::WORKFLOW_ARCHIVE, &workflow_id, v.value()))
            .transpose()
    }

    /// Due time of the earliest pending timer.
    pub fn next_timer_due(&self) -> Result<Option<Millis>, StorageError> {
        let table = self.txn.open_table(tables::TIMERS)?;
        let first = table.first()?.map(|(key, _)| key.value().0);
        Ok(first)
    }

    /// The highest message sequence applied for an operator instance (0: none).
    /// Indexed log chunks of a workflow (of one task, or one task run, if
    /// given), in commit order.
    pub fn log_chunks(
        &self,
        workflow_id: &str,
        task: Option<&str>,
        retry_id: Option<u32>,
    ) -> Result<Vec<crate::record::IndexedLogChunk>, StorageError> {
        let table = self.txn.open_table(tables::LOG_CHUNKS)?;
        let rows =
            match (task, retry_id) {
                (Some(task), Some(retry)) => table
                    .range((workflow_id, task, retry, 0)..=(workflow_id, task, retry, u64::MAX))?,
                (Some(task), None) => table
                    .range((workflow_id, task, 0, 0)..=(workflow_id, task, u32::MAX, u64::MAX))?,
                _ => table.range((workflow_id, "", 0, 0)..)?,
            };
        let mut chunks = Vec::new();
        for row in rows {
            let (key, value) = row?;
            if key.value().0 != workflow_id {
                break;
            }
            let indexed: crate::record::IndexedLogChunk =
                self.row(&tables::LOG_CHUNKS, &key.value(), value.value())?;
            if retry_id.is_some_and(|retry| indexed.chunk.retry_id != retry) {
                continue;
            }
            chunks.push(indexed);
        }
        chunks.sort_by_key(|indexed| indexed.seq);
        Ok(chunks)
    }

    pub fn operator_seq(&self, backend: &str, instance: u64) -> Result<u64, StorageError> {
        let table = self.txn.open_table(tables::OPERATOR_SEQS)?;
        let row = table.get((backend, instance))?;
        Ok(row.map(|v| v.value().0).unwrap_or(0))
    }

    /// The token whose secret hashes to `hash`.
    pub fn token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<crate::record::TokenRecord>, StorageError> {
        let by_hash = self.txn.open_table(tables::TOKENS_BY_HASH)?;
        let Some(name) = by_hash.get(hash)? else {
            return Ok(None);
        };
        let tokens = self.txn.open_table(tables::TOKENS)?;
        let row = tokens.get(name.value())?;
        row.map(|v| self.row(&tables::TOKENS, &name.value(), v.value()))
            .transpose()
    }

    pub fn token(&self, name: &str) -> Result<Option<crate::record::TokenRecord>, StorageError> {
        let tokens = self.txn.open_table(tables::TOKENS)?;
        let row = tokens.get(name)?;
        row.map(|v| self.row(&tables::TOKENS, &name, v.value()))
            .transpose()
    }

    /// Every token, by name.
    pub fn tokens(&self) -> Result<Vec<crate::record::TokenRecord>, StorageError> {
        let table = self.txn.open_table(tables::TOKENS)?;
        let mut tokens = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            tokens.push(self.row(&tables::TOKENS, &key.value(), value.value())?);
        }
        Ok(tokens)
    }

    pub fn backend(&self, name: &str) -> Result<Option<BackendRecord>, StorageError> {
        let table = self.txn.open_table(tables::BACKENDS)?;
        let row = table.get(name)?;
        row.map(|v| BackendRecord::decode(self.unseal(&tables::BACKENDS, &name, v.value())?))
            .transpose()
    }

    /// Every backend, by name.
    pub fn backends(&self) -> Result<Vec<BackendRecord>, StorageError> {
        let table = self.txn.open_table(tables::BACKENDS)?;
        let mut backends = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            backends.push(BackendRecord::decode(self.unseal(
                &tables::BACKENDS,
                &key.value(),
                value.value(),
            )?)?);
        }
        Ok(backends)
    }

    /// Dispatched, unfinished groups of `backend` as `(workflow id, group)`.
    pub fn active_groups(&self, backend: &str) -> Result<Vec<(String, String)>, StorageError> {
        let table = self.txn.open_table(tables::ACTIVE_GROUPS)?;
        let mut groups = Vec::new();
        for row in table.range((backend, "", "")..)? {
            let (key, _) = row?;
            let (row_backend, workflow_id, group) = key.value();
            if row_backend != backend {
                break;
            }
            groups.push((workflow_id.to_string(), group.to_string()));
        }
        Ok(groups)
    }

    pub fn config_revision(
        &self,
        config_type: ConfigType,
        revision: u64,
    ) -> Result<Option<ConfigRevision>, StorageError> {
        let table = self.txn.open_table(tables::CONFIG_HISTORY)?;
        let row = table.get((config_type.code(), revision))?;
        row.map(|v| {
            self.row(
                &tables::CONFIG_HISTORY,
                &(config_type.code(), revision),
                v.value(),
            )
        })
        .transpose()
    }

    /// The revision in force of `(config_type, name)`.
    pub fn config(
        &self,
        config_type: ConfigType,
        name: &str,
    ) -> Result<Option<ConfigRevision>, StorageError> {
        let revision = {
            let table = self.txn.open_table(tables::CONFIG_CURRENT)?;
            let row = table.get((config_type.code(), name))?;
            row.map(|v| v.value())
        };
        match revision {
            Some(revision) => self.config_revision(config_type, revision),
            None => Ok(None),
        }
    }

    /// The number of the revision in force of config `name`, if any: a cheap
    /// way to tell whether a config changed since it was last read.
    pub fn config_revision_in_force(
        &self,
        config_type: ConfigType,
        name: &str,
    ) -> Result<Option<u64>, StorageError> {
        let table = self.txn.open_table(tables::CONFIG_CURRENT)?;
        let row = table.get((config_type.code(), name))?;
        Ok(row.map(|v| v.value()))
    }

    /// The revisions in force of every config of `config_type`, by name.
    pub fn configs(&self, config_type: ConfigType) -> Result<Vec<ConfigRevision>, StorageError> {
        let code = config_type.code();
        let revisions: Vec<u64> = {
            let table = self.txn.open_table(tables::CONFIG_CURRENT)?;
            let mut revisions = Vec::new();
            for row in table.range((code, "")..)? {
                let (key, value) = row?;
                if key.value().0 != code {
                    break;
                }
                revisions.push(value.value());
            }
            revisions
        };
        let mut configs = Vec::with_capacity(revisions.len());
        for revision in revisions {
            if let Some(config) = self.config_revision(config_type, revision)? {
                configs.push(config);
            }
        }
        Ok(configs)
    }

    /// Every revision of `config_type` in revision order.
    pub fn config_history(
        &self,
        config_type: ConfigType,
    ) -> Result<Vec<ConfigRevision>, StorageError> {
        let code = config_type.code();
        let table = self.txn.open_table(tables::CONFIG_HISTORY)?;
        let mut history = Vec::new();
        for row in table.range((code, 0)..=(code, u64::MAX))? {
            let (key, value) = row?;
            history.push(self.row(&tables::CONFIG_HISTORY, &key.value(), value.value())?);
        }
        Ok(history)
    }

    /// Number of workflows per status.
    pub fn count_by_status(&self) -> Result<Vec<(WorkflowStatus, u64)>, StorageError> {
        let table = self.txn.open_table(tables::BY_STATUS)?;
        let mut counts = Vec::new();
        for status in WorkflowStatus::ALL {
            let code = status.code();
            let count = table.range((code, 0)..=(code, u64::MAX))?.count() as u64;
            if count > 0 {
                counts.push((status, count));
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PoolRecord, Submission};
    use crate::status::Priority;

    #[test]
    fn due_timers_page_past_the_ones_a_caller_skips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.redb")).expect("open");
        let mut commands = vec![Command::PutPool {
            pool: PoolRecord {
                name: "default".into(),
                description: String::new(),
                backend: "local".into(),
                default_platform: None,
                platforms: Vec::new(),
            },
        }];
        // Three invalid submissions end at once: three archive timers.
        for (n, now) in [(1, 100), (2, 200), (3, 300)] {
            commands.push(Command::SubmitWorkflow {
                now,
                submission: Submission {
                    name: "bad".into(),
                    uuid: format!("u{n}"),
                    pool: "default".into(),
                    user: "alice".into(),
                    priority: Priority::Normal,
                    template_spec: String::new(),
                    rendered_spec: String::new(),
                    plan: Err("no".into()),
                },
            });
        }
        store
            .apply(&[commands.as_slice()], b"m", true)
            .expect("apply");
        let read = store.read().expect("read");
        let all = read.due_timers(1000, 10).expect("due");
        assert_eq!(
            all.iter().map(|t| t.due).collect::<Vec<_>>(),
            [100, 200, 300]
        );
        let first = (all[0].due, all[0].id);
        let rest = read.due_timers_after(1000, first, 10).expect("after");
        assert_eq!(rest.iter().map(|t| t.due).collect::<Vec<_>>(), [200, 300]);
        let one = read.due_timers_after(1000, first, 1).expect("after");
        assert_eq!(one.len(), 1);
        assert!(read.due_timers_after(250, first, 10).expect("after").len() == 1);
        assert!(read
            .due_timers_after(50, (60, 1), 10)
            .expect("after")
            .is_empty());
    }
}
