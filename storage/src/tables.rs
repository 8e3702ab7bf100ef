//! redb table definitions and typed access inside one transaction.
//!
//! Invariants: every value of a bytes-valued table is `bincode(serde)` of
//! its record type sealed by [`crate::row::seal`] (format and checksum); the
//! workflow indexes (status, submit order, user, pool, uuid, submit time)
//! are written only through [`Tables::put_workflow`], so they always agree
//! with the workflows table; the tag index only through
//! [`Tables::set_workflow_tags`], so it agrees with `workflow_tags`;
//! the tallies (`crate::tally`) move with every workflow, group and task
//! write; `active_groups` holds exactly the dispatched, unfinished groups.

use crate::command::Outcome;
use crate::config::{BackendRecord, ConfigRevision, ConfigType};
use crate::error::StorageError;
use crate::labels::Labels;
use crate::plan::TaskPlan;
use crate::record::{
    CredentialRecord, GroupRecord, JobRecord, Millis, PoolRecord, SessionEvent, TaskRecord,
    TimerRecord, WorkflowRecord, SESSION_EVENTS_MAX,
};
use crate::row::{decode_row, encode_row, seal, unseal};
use redb::{ReadableTable, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use crate::schema::{
    ACTIVE_GROUPS, BACKENDS, BY_POOL, BY_STATUS, BY_SUBMIT, BY_TAG, BY_TIME, BY_USER, BY_UUID,
    CONFIG_CURRENT, CONFIG_HISTORY, COUNTERS, GROUPS, GROUP_TALLIES, JOBS, LOG_CHUNKS, META,
    OPERATOR_SEQS, POOLS, REQUEST_KEYS, TASKS, TASK_PLANS, TASK_RUNS, TIMERS, TOKENS,
    TOKENS_BY_HASH, USERS, USER_CREDENTIALS, USER_PROFILES, WORKFLOWS, WORKFLOW_ARCHIVE,
    WORKFLOW_EXTRAS, WORKFLOW_LABELS, WORKFLOW_SESSIONS, WORKFLOW_SPECS, WORKFLOW_TAGS,
    WORKFLOW_TALLIES,
};

pub(crate) const RAFT_META_KEY: &str = "raft";
const SEQ_COUNTER: &str = "\0submit_seq";
const TIMER_COUNTER: &str = "\0timer_id";
const JOB_COUNTER: &str = "\0job_id";
const LOG_CHUNK_COUNTER: &str = "\0log_chunk_seq";
mod task_events;
mod users;

/// The state's clock (see [`Tables::clock`]).
pub(crate) const CLOCK_COUNTER: &str = "\0clock";

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| StorageError::Encode(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| StorageError::Decode(e.to_string()))
}

/// Creates every table so read transactions never meet a missing one.
pub(crate) fn create_all(txn: &WriteTransaction) -> Result<(), StorageError> {
    for table in crate::schema::ALL {
        table.create(txn)?;
    }
    Ok(())
}

/// Typed row access within one write transaction.
pub(crate) struct Tables<'a> {
    pub txn: &'a WriteTransaction,
}

impl<'a> Tables<'a> {
    pub fn new(txn: &'a WriteTransaction) -> Self {
        Tables { txn }
    }

    fn next_counter(&self, key: &str) -> Result<u64, StorageError> {
        let mut table = self.txn.open_table(COUNTERS)?;
        let next = table.get(key)?.map(|v| v.value()).unwrap_or(0) + 1;
        table.insert(key, next)?;
        Ok(next)
    }

    /// Next `n` for workflow ID `<name>-<n>`, counting from 1 per name.
    pub fn next_workflow_number(&self, name: &str) -> Result<u64, StorageError> {
        self.next_counter(name)
    }

    pub fn next_submit_seq(&self) -> Result<u64, StorageError> {
        self.next_counter(SEQ_COUNTER)
    }

    /// Writes a workflow and keeps its indexes in step with it (all but the
    /// status index hold what never changes, written with a new one); its
    /// specs and group list go apart (`crate::workflow_specs`).
    pub fn put_workflow(
        &self,
        previous: Option<&WorkflowRecord>,
        workflow: &WorkflowRecord,
    ) -> Result<(), StorageError> {
        let mut by_status = self.txn.open_table(BY_STATUS)?;
        if let Some(previous) = previous {
            by_status.remove((previous.status.code(), previous.submit_seq))?;
        } else {
            self.txn
                .open_table(BY_SUBMIT)?
                .insert(workflow.submit_seq, workflow.id.as_str())?;
            crate::indexes::index_new_workflow(self.txn, workflow)?;
        }
        by_status.insert(
            (workflow.status.code(), workflow.submit_seq),
            workflow.id.as_str(),
        )?;
        self.put_workflow_row(workflow)?;
        self.count_workflow(workflow)
    }

    pub fn group(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Option<GroupRecord>, StorageError> {
        let table = self.txn.open_table(GROUPS)?;
        let row = table.get((workflow_id, name))?;
        row.map(|v| decode_row(&GROUPS, &(workflow_id, name), v.value()))
            .transpose()
    }

    /// Writes a group (its workflow first) and moves it in the tallies.
    pub fn put_group(&self, group: &GroupRecord) -> Result<(), StorageError> {
        self.txn.open_table(GROUPS)?.insert(
            (group.workflow_id.as_str(), group.name.as_str()),
            encode_row(group)?.as_slice(),
        )?;
        self.count_group(group)
    }

    /// A task's plan (empty if it has none).
    pub fn task_plan(&self, workflow_id: &str, name: &str) -> Result<TaskPlan, StorageError> {
        let plans = self.txn.open_table(TASK_PLANS)?;
        let row = plans.get((workflow_id, name))?;
        Ok(row
            .map(|v| decode_row(&TASK_PLANS, &(workflow_id, name), v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    /// A task without its plan (`plan` is empty): for status work.
    pub fn task_state(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Option<TaskRecord>, StorageError> {
        let table = self.txn.open_table(TASKS)?;
        let row = table.get((workflow_id, name))?;
        row.map(|v| decode_row(&TASKS, &(workflow_id, name), v.value()))
            .transpose()
    }

    /// Writes a new task and its plan.
    pub fn insert_task(&self, task: &TaskRecord) -> Result<(), StorageError> {
        self.txn.open_table(TASK_PLANS)?.insert(
            (task.workflow_id.as_str(), task.name.as_str()),
            encode_row(&task.plan)?.as_slice(),
        )?;
        self.put_task(task)
    }

    /// Writes a task's state (its group first) and moves it in its group's
    /// tally; its plan, written by `insert_task`, stays.
    pub fn put_task(&self, task: &TaskRecord) -> Result<(), StorageError> {
        let previous: Option<TaskRecord> = {
            let mut table = self.txn.open_table(TASKS)?;
            let key = (task.workflow_id.as_str(), task.name.as_str());
            let replaced = table.insert(key, encode_row(task)?.as_slice())?;
            replaced
                .map(|v| decode_row(&TASKS, &key, v.value()))
                .transpose()?
        };
        self.count_task(previous.as_ref(), task)
    }

    /// Keeps an ended run of a task (its record as it ended).
    pub fn put_task_run(&self, run: &TaskRecord) -> Result<(), StorageError> {
        self.txn.open_table(TASK_RUNS)?.insert(
            (run.workflow_id.as_str(), run.name.as_str(), run.retry_id),
            encode_row(run)?.as_slice(),
        )?;
        Ok(())
    }

    /// The group's tasks without their plans (`plan` is empty).
    pub fn group_tasks(&self, group: &GroupRecord) -> Result<Vec<TaskRecord>, StorageError> {
        let mut tasks = Vec::with_capacity(group.tasks.len());
        for name in &group.tasks {
            let task = self.task_state(&group.workflow_id, name)?.ok_or_else(|| {
                StorageError::Decode(format!("group {} lists missing task {name}", group.name))
            })?;
            tasks.push(task);
        }
        Ok(tasks)
    }

    pub fn pool(&self, name: &str) -> Result<Option<PoolRecord>, StorageError> {
        let table = self.txn.open_table(POOLS)?;
        let row = table.get(name)?;
        row.map(|v| decode_row(&POOLS, &name, v.value()))
            .transpose()
    }

    pub fn put_pool(&self, pool: &PoolRecord) -> Result<(), StorageError> {
        self.txn
            .open_table(POOLS)?
            .insert(pool.name.as_str(), encode_row(pool)?.as_slice())?;
        Ok(())
    }

    pub fn add_timer(
        &self,
        due: Millis,
        kind: crate::record::TimerKind,
    ) -> Result<u64, StorageError> {
        let id = self.next_counter(TIMER_COUNTER)?;
        let timer = TimerRecord { id, due, kind };
        self.txn
            .open_table(TIMERS)?
            .insert((due, id), encode_row(&timer)?.as_slice())?;
        Ok(id)
    }

    pub fn take_timer(&self, due: Millis, id: u64) -> Result<Option<TimerRecord>, StorageError> {
        let mut table = self.txn.open_table(TIMERS)?;
        let removed = table.remove((due, id))?;
        removed
            .map(|v| decode_row(&TIMERS, &(due, id), v.value()))
            .transpose()
    }

    pub fn add_job(
        &self,
        backend: &str,
        created: Millis,
        kind: crate::record::JobKind,
    ) -> Result<u64, StorageError> {
        let id = self.next_counter(JOB_COUNTER)?;
        let job = JobRecord {
            id,
            backend: backend.to_string(),
            created,
            kind,
        };
        self.txn
            .open_table(JOBS)?
            .insert(id, encode_row(&job)?.as_slice())?;
        Ok(id)
    }

    pub fn remove_job(&self, id: u64) -> Result<bool, StorageError> {
        Ok(self.txn.open_table(JOBS)?.remove(id)?.is_some())
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>, StorageError> {
        let table = self.txn.open_table(JOBS)?;
        let mut jobs = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            jobs.push(decode_row(&JOBS, &key.value(), value.value())?);
        }
        Ok(jobs)
    }

    pub fn set_active(
        &self,
        backend: &str,
        workflow_id: &str,
        group: &str,
        active: bool,
    ) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(ACTIVE_GROUPS)?;
        if active {
            table.insert((backend, workflow_id, group), ())?;
        } else {
            table.remove((backend, workflow_id, group))?;
        }
        Ok(())
    }

    pub fn active_groups(&self, backend: &str) -> Result<Vec<(String, String)>, StorageError> {
        let table = self.txn.open_table(ACTIVE_GROUPS)?;
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

    /// The last offset indexed for a task run, if any chunk is.
    pub fn log_last_offset(
        &self,
        workflow_id: &str,
        task: &str,
        retry_id: u32,
    ) -> Result<Option<u64>, StorageError> {
        let table = self.txn.open_table(LOG_CHUNKS)?;
        let mut range = table
            .range((workflow_id, task, retry_id, 0)..=(workflow_id, task, retry_id, u64::MAX))?;
        let last = match range.next_back() {
            Some(row) => {
                let (key, value) = row?;
                let indexed: crate::record::IndexedLogChunk =
                    decode_row(&LOG_CHUNKS, &key.value(), value.value())?;
                Some(indexed.chunk.last_offset)
            }
            None => None,
        };
        Ok(last)
    }

    /// Indexes a chunk under the next chunk sequence number.
    pub fn put_log_chunk(&self, chunk: &crate::record::LogChunk) -> Result<(), StorageError> {
        let seq = self.next_counter(LOG_CHUNK_COUNTER)?;
        let indexed = crate::record::IndexedLogChunk {
            seq,
            chunk: chunk.clone(),
        };
        self.txn.open_table(LOG_CHUNKS)?.insert(
            (
                chunk.workflow_id.as_str(),
                chunk.task.as_str(),
                chunk.retry_id,
                chunk.first_offset,
            ),
            encode_row(&indexed)?.as_slice(),
        )?;
        Ok(())
    }

    /// Removes every indexed chunk of a workflow; returns how many.
    pub fn remove_log_chunks(&self, workflow_id: &str) -> Result<usize, StorageError> {
        let mut table = self.txn.open_table(LOG_CHUNKS)?;
        let mut keys = Vec::new();
        for row in table.range((workflow_id, "", 0, 0)..)? {
            let (key, _) = row?;
            let (workflow, task, retry, first) = key.value();
            if workflow != workflow_id {
                break;
            }
            keys.push((task.to_string(), retry, first));
        }
        for (task, retry, first) in &keys {
            table.remove((workflow_id, task.as_str(), *retry, *first))?;
        }
        Ok(keys.len())
    }

    pub fn workflow_archive(
        &self,
        workflow_id: &str,
    ) -> Result<Option<crate::record::WorkflowArchive>, StorageError> {
        let table = self.txn.open_table(WORKFLOW_ARCHIVE)?;
        let row = table.get(workflow_id)?;
        row.map(|v| decode_row(&WORKFLOW_ARCHIVE, &workflow_id, v.value()))
            .transpose()
    }

    pub fn put_workflow_archive(
        &self,
        archive: &crate::record::WorkflowArchive,
    ) -> Result<(), StorageError> {
        self.txn.open_table(WORKFLOW_ARCHIVE)?.insert(
            archive.workflow_id.as_str(),
            encode_row(archive)?.as_slice(),
        )?;
        Ok(())
    }

    /// The highest sequence applied for this operator instance (0: none).
    pub fn operator_seq(&self, backend: &str, instance: u64) -> Result<u64, StorageError> {
        let table = self.txn.open_table(OPERATOR_SEQS)?;
        let row = table.get((backend, instance))?;
        Ok(row.map(|v| v.value().0).unwrap_or(0))
    }

    /// Records the instance's acknowledged sequence; a backend keeps at most
    /// `keep` instances, forgetting the least recently seen.
    pub fn put_operator_seq(
        &self,
        backend: &str,
        instance: u64,
        seq: u64,
        now: Millis,
        keep: usize,
    ) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(OPERATOR_SEQS)?;
        table.insert((backend, instance), (seq, now))?;
        let mut instances = Vec::new();
        for row in table.range((backend, 0)..=(backend, u64::MAX))? {
            let (key, value) = row?;
            instances.push((value.value().1, key.value().1));
        }
        if instances.len() > keep {
            instances.sort_unstable();
            for (_, stale) in &instances[..instances.len() - keep] {
                table.remove((backend, *stale))?;
            }
        }
        Ok(())
    }

    pub fn remove_pool(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.txn.open_table(POOLS)?.remove(name)?.is_some())
    }

    pub fn pools(&self) -> Result<Vec<PoolRecord>, StorageError> {
        let table = self.txn.open_table(POOLS)?;
        let mut pools = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            pools.push(decode_row(&POOLS, &key.value(), value.value())?);
        }
        Ok(pools)
    }

    pub fn backend(&self, name: &str) -> Result<Option<BackendRecord>, StorageError> {
        let table = self.txn.open_table(BACKENDS)?;
        let row = table.get(name)?;
        row.map(|v| BackendRecord::decode(unseal(&BACKENDS, &name, v.value())?))
            .transpose()
    }

    pub fn put_backend(&self, backend: &BackendRecord) -> Result<(), StorageError> {
        self.txn
            .open_table(BACKENDS)?
            .insert(backend.name.as_str(), encode_row(backend)?.as_slice())?;
        Ok(())
    }

    pub fn remove_backend(&self, name: &str) -> Result<(), StorageError> {
        self.txn.open_table(BACKENDS)?.remove(name)?;
        Ok(())
    }

    /// The next revision number of `config_type` (from 1).
    pub fn next_config_revision(&self, config_type: ConfigType) -> Result<u64, StorageError> {
        self.next_counter(&format!("\0config_revision:{}", config_type.as_str()))
    }

    pub fn config_revision(
        &self,
        config_type: ConfigType,
        revision: u64,
    ) -> Result<Option<ConfigRevision>, StorageError> {
        let table = self.txn.open_table(CONFIG_HISTORY)?;
        let row = table.get((config_type.code(), revision))?;
        row.map(|v| decode_row(&CONFIG_HISTORY, &(config_type.code(), revision), v.value()))
            .transpose()
    }

    /// The revision in force for `(config_type, name)`, if any.
    pub fn config_current(
        &self,
        config_type: ConfigType,
        name: &str,
    ) -> Result<Option<ConfigRevision>, StorageError> {
        let revision = {
            let table = self.txn.open_table(CONFIG_CURRENT)?;
            let row = table.get((config_type.code(), name))?;
            row.map(|v| v.value())
        };
        match revision {
            Some(revision) => self.config_revision(config_type, revision),
            None => Ok(None),
        }
    }

    /// Appends `revision` to the history and makes it the one in force
    /// (or, without data, removes the config from force).
    pub fn put_config_revision(&self, revision: &ConfigRevision) -> Result<(), StorageError> {
        let code = revision.config_type.code();
        self.txn
            .open_table(CONFIG_HISTORY)?
            .insert((code, revision.revision), encode_row(revision)?.as_slice())?;
        let mut current = self.txn.open_table(CONFIG_CURRENT)?;
        if revision.data.is_some() {
            current.insert((code, revision.name.as_str()), revision.revision)?;
        } else {
            current.remove((code, revision.name.as_str()))?;
        }
        Ok(())
    }

    /// The state's clock: the latest command time applied (0 before any).
    pub fn clock(&self) -> Result<Millis, StorageError> {
        let table = self.txn.open_table(COUNTERS)?;
        let value = table.get(CLOCK_COUNTER)?.map(|v| v.value()).unwrap_or(0);
        Ok(Millis::try_from(value).unwrap_or(Millis::MAX))
    }

    pub fn set_clock(&self, time: Millis) -> Result<(), StorageError> {
        self.txn
            .open_table(COUNTERS)?
            .insert(CLOCK_COUNTER, u64::try_from(time).unwrap_or(0))?;
        Ok(())
    }

    /// The outcome remembered for idempotency key `key`.
    pub fn remembered_outcome(&self, key: &str) -> Result<Option<Outcome>, StorageError> {
        let table = self.txn.open_table(REQUEST_KEYS)?;
        let row = table.get(key)?;
        row.map(|v| decode_row(&REQUEST_KEYS, &key, v.value()))
            .transpose()
    }

    pub fn remember_outcome(&self, key: &str, outcome: &Outcome) -> Result<(), StorageError> {
        self.txn
            .open_table(REQUEST_KEYS)?
            .insert(key, encode_row(outcome)?.as_slice())?;
        Ok(())
    }

    pub fn forget_request_key(&self, key: &str) -> Result<(), StorageError> {
        self.txn.open_table(REQUEST_KEYS)?.remove(key)?;
        Ok(())
    }

    /// Stores a new workflow's labels (nothing for none).
    pub fn put_workflow_labels(&self, id: &str, labels: &Labels) -> Result<(), StorageError> {
        if !labels.is_empty() {
            self.txn
                .open_table(WORKFLOW_LABELS)?
                .insert(id, encode_row(labels)?.as_slice())?;
        }
        Ok(())
    }

    /// Stores a new workflow's plan extras, as the proposer's text.
    pub fn put_workflow_extras(&self, id: &str, extras: &str) -> Result<(), StorageError> {
        self.txn
            .open_table(WORKFLOW_EXTRAS)?
            .insert(id, encode_row(&extras)?.as_slice())?;
        Ok(())
    }

    /// A workflow's tags, in tag order.
    pub fn workflow_tags(&self, id: &str) -> Result<Vec<String>, StorageError> {
        crate::indexes::tags_of(&self.txn.open_table(WORKFLOW_TAGS)?, id)
    }

    /// Adds a session to workflow `id`'s, keeping the newest
    /// [`SESSION_EVENTS_MAX`].
    pub fn append_session(&self, id: &str, event: SessionEvent) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(WORKFLOW_SESSIONS)?;
        let mut events: Vec<SessionEvent> = match table.get(id)? {
            Some(row) => decode_row(&WORKFLOW_SESSIONS, &id, row.value())?,
            None => Vec::new(),
        };
        events.push(event);
        let excess = events.len().saturating_sub(SESSION_EVENTS_MAX);
        events.drain(..excess);
        table.insert(id, encode_row(&events)?.as_slice())?;
        Ok(())
    }

    /// Gives `workflow` exactly `tags`, keeping the tag index in step.
    pub fn set_workflow_tags(
        &self,
        workflow: &WorkflowRecord,
        tags: &[String],
    ) -> Result<(), StorageError> {
        let id = workflow.id.as_str();
        let old_tags = self.workflow_tags(id)?;
        let mut by_workflow = self.txn.open_table(WORKFLOW_TAGS)?;
        let mut by_tag = self.txn.open_table(BY_TAG)?;
        for old in old_tags {
            if !tags.contains(&old) {
                by_workflow.remove((id, old.as_str()))?;
                by_tag.remove((old.as_str(), workflow.submit_seq))?;
            }
        }
        for tag in tags {
            by_workflow.insert((id, tag.as_str()), ())?;
            by_tag.insert((tag.as_str(), workflow.submit_seq), id)?;
        }
        Ok(())
    }

    /// Removes one revision from a type's history (what is in force stays).
    pub fn remove_config_revision(
        &self,
        config_type: ConfigType,
        revision: u64,
    ) -> Result<bool, StorageError> {
        let removed = self
            .txn
            .open_table(CONFIG_HISTORY)?
            .remove((config_type.code(), revision))?
            .is_some();
        Ok(removed)
    }

    /// Rewrites a revision in the history only (its tags); what is in
    /// force does not change.
    pub fn replace_config_revision(&self, revision: &ConfigRevision) -> Result<(), StorageError> {
        self.txn.open_table(CONFIG_HISTORY)?.insert(
            (revision.config_type.code(), revision.revision),
            encode_row(revision)?.as_slice(),
        )?;
        Ok(())
    }

    /// The number of the revision in force of `(config_type, name)`.
    pub fn config_revision_in_force(
        &self,
        config_type: ConfigType,
        name: &str,
    ) -> Result<Option<u64>, StorageError> {
        let table = self.txn.open_table(CONFIG_CURRENT)?;
        let row = table.get((config_type.code(), name))?;
        Ok(row.map(|v| v.value()))
    }

    /// Stores `value` sealed under `key` in `meta`.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.txn
            .open_table(META)?
            .insert(key, seal(value).as_slice())?;
        Ok(())
    }
}
