//! The one way replicated state changes: a [`Command`] in the Raft log.
//!
//! Invariants: variants are append-only (bincode encodes the variant index,
//! so a variant is never removed or reordered; a retired one stays as a
//! no-op); every variant carries the proposer's wall-clock time where time
//! matters, so `apply` is deterministic; the encoded form starts with
//! [`COMMAND_FORMAT_VERSION`].

use crate::config::{ConfigData, ConfigMeta, ConfigType, NodeInventory, PoolConfig};
use crate::error::StorageError;
use crate::labels::Labels;
use crate::record::{LogChunk, Millis, PoolRecord, Submission, TokenRecord};
use crate::status::TaskStatus;
use serde::{Deserialize, Serialize};

pub const COMMAND_FORMAT_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// 0. A workflow arrives (or failed validation and is recorded as such).
    SubmitWorkflow { now: Millis, submission: Submission },
    /// 1. A user cancels a workflow.
    CancelWorkflow {
        now: Millis,
        workflow_id: String,
        user: String,
        message: Option<String>,
        force: bool,
    },
    /// 2. An executor reports a task transition.
    ReportTask { now: Millis, report: TaskReport },
    /// 3. A backend operator acknowledged a job; it leaves the queue.
    CompleteJob { job_id: u64 },
    /// 4. The leader saw a timer come due.
    FireTimer {
        now: Millis,
        timer_id: u64,
        due: Millis,
    },
    /// 5. Create or replace a pool.
    PutPool { pool: PoolRecord },
    /// 6. An operator (re)connected and listed the tasks it still runs;
    ///    dispatched groups it lost are handed to it again.
    OperatorHello {
        now: Millis,
        backend: String,
        running: Vec<TaskKey>,
    },
    /// 7. Store an access token (only its hash); replaces one of the same name.
    IssueToken { token: TokenRecord },
    /// 8. Remove an access token by name.
    RevokeToken { name: String },
    /// 9. Write a new revision of a config (creates or replaces it).
    PutConfig {
        now: Millis,
        config_type: ConfigType,
        /// `""` for SERVICE and WORKFLOW.
        name: String,
        meta: ConfigMeta,
        /// Boxed: a pool config is large, and most commands are small.
        data: Box<ConfigData>,
    },
    /// 10. Delete a config; the deletion is recorded as a revision.
    DeleteConfig {
        now: Millis,
        config_type: ConfigType,
        name: String,
        meta: ConfigMeta,
    },
    /// 11. Write a new revision equal to revision `revision` of this type.
    RollbackConfig {
        now: Millis,
        config_type: ConfigType,
        revision: u64,
        meta: ConfigMeta,
    },
    /// 12. A backend's operator is alive and reports its nodes. Re-arms the
    ///     backend's liveness timers: offline after `offline_after_ms`
    ///     without another heartbeat, its tasks failed after
    ///     `fail_tasks_after_ms` (0: never).
    BackendHeartbeat {
        now: Millis,
        backend: String,
        nodes: Vec<NodeInventory>,
        offline_after_ms: u64,
        fail_tasks_after_ms: u64,
    },
    /// 13. Messages of one operator connection, in sequence order: each
    ///     `(seq, command)` applies only if `seq` is above what this operator
    ///     instance already had applied (a resend after a reconnect or a
    ///     leader change is dropped); afterwards the instance's acknowledged
    ///     sequence is `last_seq`, which also covers messages that became no
    ///     command (log lines). Only operator reports may be inside.
    OperatorReports {
        now: Millis,
        backend: String,
        /// Chosen at random when the operator process starts.
        instance: u64,
        last_seq: u64,
        commands: Vec<(u64, Command)>,
    },
    /// 14. A chunk of one task run's log lines is in object storage: index
    ///     it. Rejected (a duplicate) unless `first_offset` is above every
    ///     offset already indexed for the task run. May ride inside
    ///     `OperatorReports`, so the chunk and the acknowledgement of the
    ///     messages that carried its lines commit together.
    AppendLogChunk { chunk: LogChunk },
    /// 15. [`Command::OperatorHello`] that also records the executor the
    ///     operator runs (`local`, `kubernetes`) on its backend, which decides
    ///     how launches address tasks. A separate variant because bincode
    ///     commands in old logs cannot grow a field.
    OperatorHelloWithExecutor {
        now: Millis,
        backend: String,
        running: Vec<TaskKey>,
        executor: String,
    },
    /// 16. When a task run downloaded its inputs and uploaded its outputs,
    ///     as its executor measured (OSMO's `input_download_*`,
    ///     `output_upload_*`). A phase left `None` keeps what is recorded.
    ///     Rejected for an unknown task or another retry. May ride inside
    ///     `OperatorReports`.
    RecordTaskDataTimes { key: TaskKey, times: TaskDataTimes },
    /// 17. [`Command::SubmitWorkflow`] with the submission compressed (see
    ///     [`PackedSubmission`]): a spec and plan of thousands of similar
    ///     tasks shrink many times over, so large workflows fit in one entry.
    SubmitPackedWorkflow {
        now: Millis,
        packed: PackedSubmission,
    },
    /// 18. `command` carried out at most once per `key` (a client's
    ///     `Idempotency-Key`, scoped by the API to its caller): the first
    ///     time it applies and its outcome is remembered for
    ///     [`REQUEST_KEY_RETENTION_MS`]; a repeat within that time changes
    ///     nothing and returns the remembered outcome.
    Idempotent {
        now: Millis,
        key: String,
        command: Box<Command>,
    },
    /// 19. [`Command::SubmitPackedWorkflow`] with the workflow's labels (the
    ///     spec's `workflow.labels` and the submit's `label` overrides, as
    ///     the proposer merged them). Rejected, writing nothing, when they
    ///     break [`crate::labels::check_labels`]. A separate variant because
    ///     bincode commands in old logs cannot grow a field; gated (see
    ///     [`COMMAND_KINDS_UNGATED`]), so a submit without labels keeps
    ///     the older kinds.
    SubmitWorkflowWithLabels {
        now: Millis,
        packed: PackedSubmission,
        labels: Labels,
    },
    /// 20. OSMO's workflow tags: `remove` first, then `add`. Every added tag
    ///     must be one the WORKFLOW config in force allows
    ///     (`workflow_info.tags`), or nothing changes.
    TagWorkflow {
        workflow_id: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// 21. Tags of one config revision in the history: `set` added, then
    ///     `delete` removed (OSMO's `set_tags`, `delete_tags`). The config
    ///     itself does not change.
    TagConfigRevision {
        config_type: ConfigType,
        revision: u64,
        set: Vec<String>,
        delete: Vec<String>,
    },
    /// 22. Drop a revision from a type's history; refused for a revision in
    ///     force (OSMO's "current revision").
    DeleteConfigRevision {
        config_type: ConfigType,
        revision: u64,
    },
    /// 23. [`Command::SubmitWorkflowWithLabels`] with the plan's extras
    ///     (`crate::extras`: what tasks need beyond their plan, such as
    ///     periodic checkpoints) as JSON text, stored as sent. Rejected,
    ///     writing nothing, when the text does not read as extras. Gated,
    ///     so a submit without extras keeps the older kinds.
    SubmitWorkflowWithExtras {
        now: Millis,
        packed: PackedSubmission,
        labels: Labels,
        extras: String,
    },
    /// 24. [`Command::PutConfig`] of a POOL config with its extras
    ///     (`crate::config::pool_extras`: topology keys) as JSON text,
    ///     stored as sent in [`ConfigData::PoolWithExtras`]. Rejected,
    ///     writing nothing, when the text does not read as pool extras.
    ///     Gated, so a pool without extras keeps [`Command::PutConfig`].
    PutPoolWithExtras {
        now: Millis,
        name: String,
        meta: ConfigMeta,
        pool: Box<PoolConfig>,
        extras: String,
    },
    /// 25. A session a user opened into a running task of the workflow
    ///     (`exec`, `port-forward`): who, into which run, what (the
    ///     command, the port), at `now`. Kept with the workflow, the
    ///     newest [`crate::SESSION_EVENTS_MAX`]; rejected for an unknown
    ///     workflow or fields over their bounds. Gated: a member of an
    ///     older build cannot apply it.
    RecordSession {
        now: Millis,
        workflow_id: String,
        event: crate::record::SessionEventInput,
    },
    /// 26. A user's credential, created or replaced (OSMO's `POST
    ///     /api/credentials/{name}`): its values sealed by the proposer.
    ///     Rejected for a name or key out of syntax or bounds, a value not
    ///     sealed, a name the user holds with another type, a registry or
    ///     endpoint another of the user's credentials has, or a user at
    ///     [`crate::record::CREDENTIALS_PER_USER_MAX`]; with
    ///     `only_if_sealed`, unless the credential is stored with exactly
    ///     that sealed value (a reseal never revives a deleted or replaced
    ///     one). Gated.
    PutCredential {
        now: Millis,
        user: String,
        name: String,
        only_if_sealed: Option<String>,
        credential: crate::record::CredentialRecord,
    },
    /// 27. A user's credential removed; rejected when the user has none of
    ///     that name. Gated.
    DeleteCredential { user: String, name: String },
    /// 28. A user's saved preferences (`crate::record::UserProfile` as JSON
    ///     text, stored as sent; the API merges and checks them). Rejected
    ///     for an empty user or a text that does not read. Gated.
    SetUserProfile { user: String, profile: String },
    /// 29. A user created or given roles (`roles` added to those it holds,
    ///     each `assigned_by` `by` at `now`), as `mode` says: refused for
    ///     a user that exists (`Create`) or does not (`Existing`), a role
    ///     name out of syntax, or more than [`crate::record::USER_ROLES_MAX`]
    ///     roles. Whether a role exists is the API's to check (roles are
    ///     configs and built-ins). Gated.
    PutUser {
        now: Millis,
        user: String,
        by: String,
        roles: Vec<String>,
        mode: crate::record::UserWrite,
    },
    /// 30. A role taken from a user; refused when the user does not hold it
    ///     directly. Gated.
    RemoveUserRole { user: String, role: String },
    /// 31. A user deleted with everything that is theirs: the user record,
    ///     access tokens, credentials and profile (workflows stay: they are
    ///     history). Refused when none of those exists. Gated.
    DeleteUser { user: String },
    /// 32. Every sign-in of the user issued before `now` refused from now
    ///     on (IdP ID tokens and Gantry JWTs; access tokens are revoked one
    ///     by one). Refused for an unknown user. Gated.
    RevokeUserSessions { now: Millis, user: String },
    /// 33. What a task run's backend reported of it, as Kubernetes events
    ///     (`Pulling`, `Pulled`, `Failed`, …) at the backend's times: kept
    ///     with the task, the newest [`crate::TASK_EVENTS_MAX`] of its runs.
    ///     Rejected whole for a run that is not the task's current one, more
    ///     than [`crate::TASK_EVENTS_PER_COMMAND_MAX`] events, or an event
    ///     with an empty reason, a field over its bound or a control
    ///     character. Gated.
    RecordTaskEvents {
        key: TaskKey,
        events: Vec<crate::record::TaskEventInput>,
    },
    /// 34, only in a build with the `upgrade-drill` feature: a command kind
    ///     that the build without it does not know, to rehearse a rolling
    ///     upgrade (see [`COMMAND_KINDS_UNGATED`]). Applies as a no-op. It
    ///     stays the last variant: a new kind goes before it.
    #[cfg(feature = "upgrade-drill")]
    UpgradeDrill { note: String },
}

/// Command kinds this build understands: the variants `0..COMMAND_KINDS`.
#[cfg(not(feature = "upgrade-drill"))]
pub const COMMAND_KINDS: u16 = 34;
#[cfg(feature = "upgrade-drill")]
pub const COMMAND_KINDS: u16 = 35;

/// Command kinds every member understands without saying so: those of the
/// release that introduced version gating. A leader proposes a kind at or
/// above this only once every member has announced that it understands it
/// (a member of an older build announces nothing); below it, freely.
pub const COMMAND_KINDS_UNGATED: u16 = 19;

/// How long an idempotency key's outcome is remembered: far longer than any
/// client keeps retrying one request.
pub const REQUEST_KEY_RETENTION_MS: Millis = 60 * 60 * 1000;
/// Longest idempotency key, in bytes (after the API's scoping).
pub const REQUEST_KEY_BYTES_MAX: usize = 512;

impl Command {
    /// The command that stores `data` as the config `config_type`/`name`:
    /// a pool with extras as the gated [`Command::PutPoolWithExtras`],
    /// anything else as [`Command::PutConfig`].
    pub fn put_config(
        now: Millis,
        config_type: ConfigType,
        name: String,
        meta: ConfigMeta,
        data: ConfigData,
    ) -> Command {
        match data {
            ConfigData::PoolWithExtras(pool, extras) => Command::PutPoolWithExtras {
                now,
                name,
                meta,
                pool: Box::new(pool),
                extras,
            },
            data => Command::PutConfig {
                now,
                config_type,
                name,
                meta,
                data: Box::new(data),
            },
        }
    }

    /// The proposer's time the command carries, if it carries one.
    pub fn time(&self) -> Option<Millis> {
        match self {
            Command::SubmitWorkflow { now, .. }
            | Command::CancelWorkflow { now, .. }
            | Command::ReportTask { now, .. }
            | Command::FireTimer { now, .. }
            | Command::OperatorHello { now, .. }
            | Command::PutConfig { now, .. }
            | Command::DeleteConfig { now, .. }
            | Command::RollbackConfig { now, .. }
            | Command::BackendHeartbeat { now, .. }
            | Command::OperatorReports { now, .. }
            | Command::OperatorHelloWithExecutor { now, .. }
            | Command::SubmitPackedWorkflow { now, .. }
            | Command::Idempotent { now, .. }
            | Command::SubmitWorkflowWithLabels { now, .. }
            | Command::SubmitWorkflowWithExtras { now, .. }
            | Command::PutPoolWithExtras { now, .. }
            | Command::RecordSession { now, .. }
            | Command::PutCredential { now, .. }
            | Command::PutUser { now, .. }
            | Command::RevokeUserSessions { now, .. } => Some(*now),
            Command::CompleteJob { .. }
            | Command::PutPool { .. }
            | Command::IssueToken { .. }
            | Command::RevokeToken { .. }
            | Command::AppendLogChunk { .. }
            | Command::RecordTaskDataTimes { .. }
            | Command::RecordTaskEvents { .. }
            | Command::TagWorkflow { .. }
            | Command::TagConfigRevision { .. }
            | Command::DeleteConfigRevision { .. }
            | Command::DeleteCredential { .. }
            | Command::SetUserProfile { .. }
            | Command::RemoveUserRole { .. }
            | Command::DeleteUser { .. } => None,
            #[cfg(feature = "upgrade-drill")]
            Command::UpgradeDrill { .. } => None,
        }
    }

    /// The variant index, as the log's encoding carries it.
    pub fn kind(&self) -> u16 {
        match self {
            Command::SubmitWorkflow { .. } => 0,
            Command::CancelWorkflow { .. } => 1,
            Command::ReportTask { .. } => 2,
            Command::CompleteJob { .. } => 3,
            Command::FireTimer { .. } => 4,
            Command::PutPool { .. } => 5,
            Command::OperatorHello { .. } => 6,
            Command::IssueToken { .. } => 7,
            Command::RevokeToken { .. } => 8,
            Command::PutConfig { .. } => 9,
            Command::DeleteConfig { .. } => 10,
            Command::RollbackConfig { .. } => 11,
            Command::BackendHeartbeat { .. } => 12,
            Command::OperatorReports { .. } => 13,
            Command::AppendLogChunk { .. } => 14,
            Command::OperatorHelloWithExecutor { .. } => 15,
            Command::RecordTaskDataTimes { .. } => 16,
            Command::SubmitPackedWorkflow { .. } => 17,
            Command::Idempotent { .. } => 18,
            Command::SubmitWorkflowWithLabels { .. } => 19,
            Command::TagWorkflow { .. } => 20,
            Command::TagConfigRevision { .. } => 21,
            Command::DeleteConfigRevision { .. } => 22,
            Command::SubmitWorkflowWithExtras { .. } => 23,
            Command::PutPoolWithExtras { .. } => 24,
            Command::RecordSession { .. } => 25,
            Command::PutCredential { .. } => 26,
            Command::DeleteCredential { .. } => 27,
            Command::SetUserProfile { .. } => 28,
            Command::PutUser { .. } => 29,
            Command::RemoveUserRole { .. } => 30,
            Command::DeleteUser { .. } => 31,
            Command::RevokeUserSessions { .. } => 32,
            Command::RecordTaskEvents { .. } => 33,
            #[cfg(feature = "upgrade-drill")]
            Command::UpgradeDrill { .. } => 34,
        }
    }

    /// The highest kind in this command, counting the commands it carries
    /// (an idempotent wrapper's, an operator batch's): what a member must
    /// understand to apply it.
    pub fn newest_kind(&self) -> u16 {
        let carried = match self {
            Command::Idempotent { command, .. } => command.newest_kind(),
            Command::OperatorReports { commands, .. } => commands
                .iter()
                .map(|(_, command)| command.newest_kind())
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        self.kind().max(carried)
    }
}

/// A [`Submission`], bincode-encoded and zstd-compressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedSubmission(Vec<u8>);

/// Largest unpacked submission: a bound on what a packed one may inflate
/// to (several times the API's body limit: template, rendered spec, plan).
pub const SUBMISSION_UNPACKED_BYTES_MAX: usize = 64 * 1024 * 1024;

impl PackedSubmission {
    pub fn pack(submission: &Submission) -> Result<PackedSubmission, StorageError> {
        let bytes = crate::tables::encode(submission)?;
        zstd::bulk::compress(&bytes, 3)
            .map(PackedSubmission)
            .map_err(|e| StorageError::Encode(format!("compress the submission: {e}")))
    }

    pub fn unpack(&self) -> Result<Submission, StorageError> {
        let bytes = zstd::bulk::decompress(&self.0, SUBMISSION_UNPACKED_BYTES_MAX)
            .map_err(|e| StorageError::Decode(format!("packed submission: {e}")))?;
        crate::tables::decode(&bytes)
    }

    /// Compressed bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Start and end of a task run's data phases, in executor time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDataTimes {
    pub input_download_start: Option<Millis>,
    pub input_download_end: Option<Millis>,
    pub output_upload_start: Option<Millis>,
    pub output_upload_end: Option<Millis>,
}

/// Operator instances whose acknowledged sequence is kept per backend, at
/// most; the least recently seen is forgotten first.
pub const OPERATOR_INSTANCES_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    pub workflow_id: String,
    pub task: String,
    pub retry_id: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub key: TaskKey,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub node_name: Option<String>,
    /// When the executor saw the transition (may precede `now`).
    pub time: Millis,
}

/// What applying a command produced. Rejections are deterministic no-ops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Submitted {
        workflow_id: String,
        /// `Some` when the workflow was recorded as FAILED_SUBMISSION.
        failure: Option<String>,
    },
    Canceled {
        workflow_id: String,
    },
    Applied,
    Rejected(Rejection),
    /// A config command wrote this revision.
    Revision {
        revision: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectionKind {
    NotFound,
    Conflict,
    Invalid,
    /// An operator batch built on an older view: one of its log chunks
    /// overlaps lines indexed meanwhile (another connection of the same
    /// operator committed them). Nothing of it is applied; the sender
    /// rereads the index and resends.
    Stale,
}

impl Outcome {
    pub fn rejected(kind: RejectionKind, message: impl Into<String>) -> Outcome {
        Outcome::Rejected(Rejection {
            kind,
            message: message.into(),
        })
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Command {
    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let mut bytes = vec![COMMAND_FORMAT_VERSION];
        bytes.extend(
            bincode::serde::encode_to_vec(self, bincode_config())
                .map_err(|e| StorageError::Encode(e.to_string()))?,
        );
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, StorageError> {
        match bytes.split_first() {
            Some((&COMMAND_FORMAT_VERSION, body)) => {
                bincode::serde::decode_from_slice(body, bincode_config())
                    .map(|(command, _)| command)
                    .map_err(|e| StorageError::Decode(e.to_string()))
            }
            Some((version, _)) => Err(StorageError::Decode(format!(
                "unknown command format version {version}"
            ))),
            None => Err(StorageError::Decode("empty command".into())),
        }
    }
}
