//! The registry of tables: every table of the state is declared here, once.
//!
//! Invariants: [`ALL`] lists every table [`declare_tables!`] declares, so
//! creating the tables, exporting a snapshot, clearing before an install and
//! installing all derive from one list and a table cannot be left out of any
//! of them. Rows travel in snapshots as redb's own key and value bytes, so a
//! table's rows need no code of their own to be exported or installed.

use crate::error::StorageError;
use redb::{
    Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};

/// A table's rows as redb's key and value bytes, in key order.
pub(crate) type RawRows = Vec<(Vec<u8>, Vec<u8>)>;

/// What every table can do without knowing its types.
pub(crate) trait RegisteredTable {
    fn table_name(&self) -> &str;
    fn create(&self, txn: &WriteTransaction) -> Result<(), StorageError>;
    fn export(&self, txn: &ReadTransaction) -> Result<RawRows, StorageError>;
    /// Hands every row's key and value bytes to `visit`, in key order,
    /// without holding the table in memory; returns how many rows it saw.
    fn visit_rows(
        &self,
        txn: &ReadTransaction,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<u64, StorageError>;
    /// Empties the table, then inserts `rows` (bytes from [`Self::export`]).
    fn replace(
        &self,
        txn: &WriteTransaction,
        rows: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError>;
    /// Seals every value in place, if the table's values are bytes (see
    /// [`crate::row`]); other tables are left as they are.
    fn seal_values(&self, txn: &WriteTransaction) -> Result<(), StorageError>;
    /// Checks every value's envelope, if the table's values are bytes.
    fn check_sealed(&self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StorageError>;
}

impl<K: Key + 'static, V: Value + 'static> RegisteredTable for TableDefinition<'static, K, V> {
    fn table_name(&self) -> &str {
        self.name()
    }

    fn create(&self, txn: &WriteTransaction) -> Result<(), StorageError> {
        txn.open_table(*self)?;
        Ok(())
    }

    fn export(&self, txn: &ReadTransaction) -> Result<RawRows, StorageError> {
        let mut rows = Vec::new();
        self.visit_rows(txn, &mut |key, value| {
            rows.push((key.to_vec(), value.to_vec()))
        })?;
        Ok(rows)
    }

    fn visit_rows(
        &self,
        txn: &ReadTransaction,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<u64, StorageError> {
        let table = txn.open_table(*self)?;
        let mut rows = 0;
        for row in table.iter()? {
            let (key, value) = row?;
            visit(
                K::as_bytes(&key.value()).as_ref(),
                V::as_bytes(&value.value()).as_ref(),
            );
            rows += 1;
        }
        Ok(rows)
    }

    fn replace(
        &self,
        txn: &WriteTransaction,
        rows: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), StorageError> {
        txn.delete_table(*self)?;
        let mut table = txn.open_table(*self)?;
        for (key, value) in rows {
            // Fixed-width types read their bytes without a length check.
            for (what, bytes, width) in [
                ("key", key, K::fixed_width()),
                ("value", value, V::fixed_width()),
            ] {
                if let Some(width) = width.filter(|&width| width != bytes.len()) {
                    return Err(StorageError::Snapshot(format!(
                        "table {}: a {what} of {} bytes where {width} are expected",
                        self.name(),
                        bytes.len()
                    )));
                }
            }
            if !reads_back::<K>(key) || !reads_back::<V>(value) {
                return Err(StorageError::Snapshot(format!(
                    "table {}: a row whose bytes are not a valid key and value \
                     (key bytes {:02x?}…)",
                    self.name(),
                    &key[..key.len().min(16)]
                )));
            }
            table.insert(K::from_bytes(key), V::from_bytes(value))?;
        }
        Ok(())
    }

    fn check_sealed(&self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StorageError> {
        if V::type_name() != <&[u8]>::type_name() {
            return Ok(());
        }
        for (key, value) in rows {
            // The key's own bytes name the row: its type is not trusted yet.
            let key = String::from_utf8_lossy(key);
            crate::row::unseal(self, &key, value)?;
        }
        Ok(())
    }

    fn seal_values(&self, txn: &WriteTransaction) -> Result<(), StorageError> {
        if V::type_name() != <&[u8]>::type_name() {
            return Ok(());
        }
        let rows = txn.open_table(*self)?;
        let mut sealed = Vec::new();
        for row in rows.iter()? {
            let (key, value) = row?;
            sealed.push((
                K::as_bytes(&key.value()).as_ref().to_vec(),
                crate::row::seal(V::as_bytes(&value.value()).as_ref()),
            ));
        }
        drop(rows);
        self.replace(txn, &sealed)
    }
}

/// Whether `bytes` are a well-formed `T`: redb's own decoders trust their
/// input and panic on malformed bytes (a string that is not UTF-8, a tuple
/// whose lengths overrun), so a crafted snapshot row is decoded here under
/// `catch_unwind` and must encode back to the same bytes before it is
/// inserted.
fn reads_back<T: Value>(bytes: &[u8]) -> bool {
    std::panic::catch_unwind(|| T::as_bytes(&T::from_bytes(bytes)).as_ref() == bytes)
        .unwrap_or(false)
}

/// Declares each table's constant and lists them all in [`ALL`].
macro_rules! declare_tables {
    ($($(#[$doc:meta])* $name:ident: $key:ty => $value:ty = $label:literal;)*) => {
        $($(#[$doc])* pub(crate) const $name: TableDefinition<$key, $value> =
            TableDefinition::new($label);)*
        /// Every table of the state, in snapshot order.
        pub(crate) const ALL: &[&dyn RegisteredTable] = &[$(&$name),*];
    };
}

declare_tables! {
    /// Small named values; the Raft layer's own row is [`crate::tables::RAFT_META_KEY`].
    META: &str => &[u8] = "meta";
    /// Named counters (workflow numbers per name, id sequences).
    COUNTERS: &str => u64 = "counters";
    /// workflow id → workflow.
    WORKFLOWS: &str => &[u8] = "workflows";
    /// (workflow id, group name) → group.
    GROUPS: (&str, &str) => &[u8] = "groups";
    /// (workflow id, task name) → task.
    TASKS: (&str, &str) => &[u8] = "tasks";
    /// (workflow id, task name) → the task's plan (never changes).
    TASK_PLANS: (&str, &str) => &[u8] = "task_plans";
    /// (status code, submit seq) → workflow id.
    BY_STATUS: (u8, u64) => &str = "workflows_by_status";
    /// submit seq → workflow id.
    BY_SUBMIT: u64 => &str = "workflows_by_submit";
    /// (due ms, timer id) → timer.
    TIMERS: (i64, u64) => &[u8] = "timers";
    /// job id → job (the operator job queue, in id order).
    JOBS: u64 => &[u8] = "jobs";
    /// pool name → pool.
    POOLS: &str => &[u8] = "pools";
    /// (backend, workflow id, group) → () for dispatched, unfinished groups.
    ACTIVE_GROUPS: (&str, &str, &str) => () = "active_groups";
    /// token name → token.
    TOKENS: &str => &[u8] = "tokens";
    /// token hash → token name.
    TOKENS_BY_HASH: &str => &str = "tokens_by_hash";
    /// (backend, operator instance) → (acknowledged sequence, last seen).
    OPERATOR_SEQS: (&str, u64) => (u64, i64) = "operator_seqs";
    /// (config type code, revision) → config revision (every one ever written).
    CONFIG_HISTORY: (u8, u64) => &[u8] = "config_history";
    /// (config type code, name) → revision in force (absent: none or deleted).
    CONFIG_CURRENT: (u8, &str) => u64 = "config_current";
    /// backend name → backend.
    BACKENDS: &str => &[u8] = "backends";
    /// Log chunk index: (workflow, task, retry, first offset) → `IndexedLogChunk`.
    LOG_CHUNKS: (&str, &str, u32, u64) => &[u8] = "log_chunks";
    /// workflow id → `WorkflowArchive` (ended workflows: archive and retention).
    WORKFLOW_ARCHIVE: &str => &[u8] = "workflow_archive";
    /// Earlier runs of tasks, each ended (RESCHEDULED or lost) when the next
    /// began: (workflow, task, retry) → `TaskRecord` as it ended.
    TASK_RUNS: (&str, &str, u32) => &[u8] = "task_runs";
    /// Idempotency key of a request → its `RememberedOutcome`, until the
    /// key's `ForgetRequestKey` timer fires.
    REQUEST_KEYS: &str => &[u8] = "request_keys";
    /// (workflow id, group name) → `GroupTally`: the group's tasks counted
    /// by status, kept in step with `tasks` and `groups` (see `tally`).
    GROUP_TALLIES: (&str, &str) => &[u8] = "group_tallies";
    /// workflow id → `WorkflowTally`: its groups counted by status, its
    /// status, and what the lifecycle needs of it (see `tally`).
    WORKFLOW_TALLIES: &str => &[u8] = "workflow_tallies";
    /// workflow id → its specs and group list, apart from its row so a
    /// status change rewrites a small row (see `workflow_specs`).
    WORKFLOW_SPECS: &str => &[u8] = "workflow_specs";
    /// (user, submit seq) → workflow id (see `indexes`).
    BY_USER: (&str, u64) => &str = "workflows_by_user";
    /// (pool, submit seq) → workflow id.
    BY_POOL: (&str, u64) => &str = "workflows_by_pool";
    /// workflow uuid → workflow id.
    BY_UUID: &str => &str = "workflows_by_uuid";
    /// (submit time, submit seq) → workflow id. Submit times rise with
    /// submit order (the state's clock never runs back), so a time window
    /// is a window of submit seqs.
    BY_TIME: (i64, u64) => &str = "workflows_by_time";
    /// workflow id → its labels (`labels::Labels`), for workflows with labels.
    WORKFLOW_LABELS: &str => &[u8] = "workflow_labels";
    /// workflow id → its plan extras as JSON text (`extras`), for
    /// workflows that have any.
    WORKFLOW_EXTRAS: &str => &[u8] = "workflow_extras";
    /// (workflow id, tag) → () for every tag a workflow carries.
    WORKFLOW_TAGS: (&str, &str) => () = "workflow_tags";
    /// (tag, submit seq) → workflow id.
    BY_TAG: (&str, u64) => &str = "workflows_by_tag";
    /// workflow id → the sessions users opened into its tasks
    /// (`Vec<SessionEvent>`, the newest `SESSION_EVENTS_MAX`), for
    /// workflows that had any.
    WORKFLOW_SESSIONS: &str => &[u8] = "workflow_sessions";
    /// (workflow id, task name) → the events its backend reported of the
    /// task's runs (`Vec<TaskEvent>`, the newest `TASK_EVENTS_MAX`), for
    /// tasks that had any.
    TASK_EVENTS: (&str, &str) => &[u8] = "task_events";
    /// (user, credential name) → `CredentialRecord` (values sealed).
    USER_CREDENTIALS: (&str, &str) => &[u8] = "user_credentials";
    /// user → saved profile (`UserProfile` as JSON text).
    USER_PROFILES: &str => &[u8] = "user_profiles";
    /// user → `UserRecord` (made by an admin or at first sign-in).
    USERS: &str => &[u8] = "users";
}

/// The registered table called `name`.
pub(crate) fn table_named(name: &str) -> Option<&'static dyn RegisteredTable> {
    ALL.iter().copied().find(|table| table.table_name() == name)
}
