//! Rows of the replicated tables, as stored (bincode) and as read by queries.
//!
//! Times are Unix milliseconds chosen by the proposer of the command that
//! wrote them; nothing here reads a clock.

use crate::plan::{TaskPlan, WorkflowPlan};
use crate::status::{Priority, TaskStatus, WorkflowStatus};
use serde::{Deserialize, Serialize};

pub type Millis = i64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// `<name>-<n>`.
    pub id: String,
    pub name: String,
    pub uuid: String,
    /// Global submit order; key of the by-submit-time index.
    pub submit_seq: u64,
    pub pool: String,
    pub backend: String,
    pub user: String,
    pub priority: Priority,
    pub status: WorkflowStatus,
    pub submit_time: Millis,
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub cancelled_by: Option<String>,
    pub cancel_message: Option<String>,
    /// Why submission failed (FAILED_SUBMISSION only).
    pub failure_message: Option<String>,
    /// The spec as the user sent it (templated).
    pub template_spec: String,
    /// The spec after template rendering.
    pub rendered_spec: String,
    pub exec_timeout_seconds: Option<u64>,
    pub queue_timeout_seconds: Option<u64>,
    /// Group names in spec order.
    pub groups: Vec<String>,
}

/// What the lifecycle (and a group's launch) needs of a workflow: the parts
/// of [`WorkflowRecord`] fixed at submit, without its specs and group list,
/// so a task report reads a few bytes rather than the whole workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCore {
    pub id: String,
    pub uuid: String,
    pub pool: String,
    pub backend: String,
    pub user: String,
    pub priority: Priority,
    pub exec_timeout_seconds: Option<u64>,
    pub queue_timeout_seconds: Option<u64>,
}

impl WorkflowRecord {
    pub fn core(&self) -> WorkflowCore {
        WorkflowCore {
            id: self.id.clone(),
            uuid: self.uuid.clone(),
            pool: self.pool.clone(),
            backend: self.backend.clone(),
            user: self.user.clone(),
            priority: self.priority,
            exec_timeout_seconds: self.exec_timeout_seconds,
            queue_timeout_seconds: self.queue_timeout_seconds,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub workflow_id: String,
    pub name: String,
    pub uuid: String,
    pub status: TaskStatus,
    pub barrier: bool,
    pub ignore_nonlead_status: bool,
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
    /// Upstream groups not yet completed.
    pub remaining_upstream: Vec<String>,
    /// Task names in spec order.
    pub tasks: Vec<String>,
    pub processing_start_time: Option<Millis>,
    pub scheduling_start_time: Option<Millis>,
    pub initializing_start_time: Option<Millis>,
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub failure_message: Option<String>,
    /// A create job was handed to the backend and not yet undone by cleanup.
    pub dispatched: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub workflow_id: String,
    pub group: String,
    pub name: String,
    pub uuid: String,
    pub retry_id: u32,
    pub lead: bool,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub failure_message: Option<String>,
    /// Stored in its own table (`task_plans`), written once when the task
    /// is created: a status change rewrites only the small record, and
    /// aggregating a group reads its tasks without their plans.
    #[serde(skip)]
    pub plan: TaskPlan,
    pub processing_start_time: Option<Millis>,
    pub scheduling_start_time: Option<Millis>,
    pub initializing_start_time: Option<Millis>,
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub input_download_start_time: Option<Millis>,
    pub input_download_end_time: Option<Millis>,
    pub output_upload_start_time: Option<Millis>,
    pub node_name: Option<String>,
    /// Last: added after the others (rows are bincode, read in field order).
    pub output_upload_end_time: Option<Millis>,
}

impl TaskRecord {
    /// Run `retry_id` of task `plan` before anything happened to it: WAITING,
    /// no times, no outcome.
    pub fn unstarted(
        workflow_id: &str,
        group: &str,
        plan: &TaskPlan,
        uuid: String,
        retry_id: u32,
    ) -> TaskRecord {
        TaskRecord {
            workflow_id: workflow_id.to_string(),
            group: group.to_string(),
            name: plan.name.clone(),
            uuid,
            retry_id,
            lead: plan.lead,
            status: TaskStatus::Waiting,
            exit_code: None,
            failure_message: None,
            plan: plan.clone(),
            processing_start_time: None,
            scheduling_start_time: None,
            initializing_start_time: None,
            start_time: None,
            end_time: None,
            input_download_start_time: None,
            input_download_end_time: None,
            output_upload_start_time: None,
            node_name: None,
            output_upload_end_time: None,
        }
    }
}

/// An access token: only the SHA-256 of its secret is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// A service account's token (e.g. a backend operator's), not a person's.
    pub service: bool,
    /// Lower-case hex SHA-256 of the token's secret.
    pub hash: String,
    pub user: String,
    pub roles: Vec<String>,
    pub description: String,
    pub created: Millis,
    pub expires: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub description: String,
    pub backend: String,
    pub default_platform: Option<String>,
    pub platforms: Vec<String>,
}

/// What a replicated timer does when it fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    ExecTimeout {
        workflow_id: String,
        group: String,
    },
    QueueTimeout {
        workflow_id: String,
        group: String,
    },
    /// No heartbeat from the backend for its grace: it goes offline.
    BackendOffline {
        backend: String,
    },
    /// No heartbeat for the longer grace: its running tasks fail.
    BackendLost {
        backend: String,
    },
    /// A workflow ended: the leader writes its archive (specs, events) to
    /// the log store, then fires this timer, which records `archived_at`.
    ArchiveWorkflow {
        workflow_id: String,
    },
    /// A finished workflow's retention ran out: the leader deletes its log
    /// chunks and archive from the log store, then fires this timer, which
    /// drops the chunk index and records `logs_purged_at`.
    PurgeWorkflowLogs {
        workflow_id: String,
    },
    /// The retention of a request's idempotency key ran out: forget it.
    ForgetRequestKey {
        key: String,
    },
}

impl TimerKind {
    /// Whether firing this timer needs object-store work on the leader first.
    pub fn needs_storage_work(&self) -> bool {
        matches!(
            self,
            TimerKind::ArchiveWorkflow { .. } | TimerKind::PurgeWorkflowLogs { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub id: u64,
    pub due: Millis,
    pub kind: TimerKind,
}

/// What became of a finished workflow's stored files: one row per ended
/// workflow (table `workflow_archive`), written when it ends, so the
/// workflow's own record stays as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowArchive {
    pub workflow_id: String,
    pub end_time: Millis,
    /// The retention in force when the workflow ended (`None`: keep forever).
    pub retention_ms: Option<u64>,
    /// When the purge timer is due (`end_time + retention_ms`).
    pub purge_due: Option<Millis>,
    /// When the archive (specs, events) was confirmed written.
    pub archived_at: Option<Millis>,
    /// When the log chunks and the archive were deleted by retention.
    pub logs_purged_at: Option<Millis>,
}

/// Object names of a workflow's archive under `<workflow id>/` (OSMO's).
pub const ARCHIVE_RENDERED_SPEC: &str = "workflow_spec.yaml";
pub const ARCHIVE_TEMPLATE_SPEC: &str = "templated_workflow_spec.yaml";
pub const ARCHIVE_EVENTS: &str = "workflow_events.txt";

/// Work for a backend operator, kept until the operator acknowledges it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    CreateGroup {
        workflow_id: String,
        group: String,
    },
    CancelGroup {
        workflow_id: String,
        group: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub backend: String,
    pub created: Millis,
    pub kind: JobKind,
}

/// Everything `submit` needs to describe a workflow; see [`crate::Command`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub name: String,
    /// Proposer-chosen; the state machine never invents identifiers.
    pub uuid: String,
    pub pool: String,
    pub user: String,
    pub priority: Priority,
    pub template_spec: String,
    pub rendered_spec: String,
    /// `Err` holds the validation error: the workflow is recorded as
    /// FAILED_SUBMISSION with that message.
    pub plan: Result<WorkflowPlan, String>,
}

/// One compressed chunk of a task run's log lines in object storage: the
/// replicated index entry (the bytes live in the store under `key`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub workflow_id: String,
    pub task: String,
    pub retry_id: u32,
    /// Executor-assigned offsets of the first and last line (inclusive).
    pub first_offset: u64,
    pub last_offset: u64,
    /// Object key, relative to the log store's root.
    pub key: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub lines: u64,
}

/// A chunk as indexed: `seq` orders chunks of all tasks by commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedLogChunk {
    pub seq: u64,
    pub chunk: LogChunk,
}

/// Sessions kept per workflow, at most: the newest.
pub const SESSION_EVENTS_MAX: usize = 256;
/// Longest `detail` of a session event, in bytes.
pub const SESSION_DETAIL_BYTES_MAX: usize = 1024;
/// Longest user, task or kind of a session event, in bytes.
pub const SESSION_NAME_BYTES_MAX: usize = 256;

/// A session into a task as proposed (`Command::RecordSession`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEventInput {
    pub user: String,
    pub task: String,
    pub retry_id: u32,
    /// `exec` or `port-forward`.
    pub kind: String,
    /// What was opened: the command, or the port.
    pub detail: String,
}

/// A session into a task as kept with its workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// When it was recorded (the command's time).
    pub time: Millis,
    pub user: String,
    pub task: String,
    pub retry_id: u32,
    pub kind: String,
    pub detail: String,
}

/// Events kept per task (all its runs together), at most: the newest, as
/// OSMO keeps 100 per task.
pub const TASK_EVENTS_MAX: usize = 100;
/// Events one `Command::RecordTaskEvents` may carry.
pub const TASK_EVENTS_PER_COMMAND_MAX: usize = 32;
/// Longest reason of a task event (`Pulling`, `BackOff`, …), in bytes.
pub const TASK_EVENT_REASON_BYTES_MAX: usize = 64;
/// Longest message of a task event, in bytes.
pub const TASK_EVENT_MESSAGE_BYTES_MAX: usize = 1024;

/// An event of a task run as its backend reported it: a reason in
/// Kubernetes' words (`Pulling`, `Pulled`, `Failed`, `BackOff`, …) and
/// what happened, at the backend's time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEventInput {
    pub time: Millis,
    pub reason: String,
    pub message: String,
}

impl TaskEventInput {
    /// Why this event cannot be kept: a field empty, over its bound or
    /// holding a control character (an event is one line of text).
    pub fn refusal(&self) -> Option<String> {
        if self.reason.is_empty() {
            return Some("a task event needs a reason".to_string());
        }
        for (field, value, limit) in [
            ("reason", &self.reason, TASK_EVENT_REASON_BYTES_MAX),
            ("message", &self.message, TASK_EVENT_MESSAGE_BYTES_MAX),
        ] {
            if value.len() > limit {
                return Some(format!(
                    "task event {field} of {} bytes is over the limit of {limit}",
                    value.len()
                ));
            }
            if value.chars().any(char::is_control) {
                return Some(format!("task event {field} holds a control character"));
            }
        }
        None
    }
}

/// A task event as kept with its task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub retry_id: u32,
    pub time: Millis,
    pub reason: String,
    pub message: String,
}

/// What every sealed credential value starts with: the state holds a
/// user's credential only in this form (the binary seals it with the
/// cluster key before proposing; `apply` refuses anything else).
pub const SEALED_VALUE_PREFIX: &str = "gantry-sealed:";
/// Credentials one user may hold.
pub const CREDENTIALS_PER_USER_MAX: usize = 128;
/// Longest credential name, in bytes.
pub const CREDENTIAL_NAME_BYTES_MAX: usize = 64;
/// Keys one credential may have.
pub const CREDENTIAL_KEYS_MAX: usize = 64;
/// Longest key of a credential, in bytes (`<name>.<key>` is a Secret's key
/// on Kubernetes, at most 253 bytes).
pub const CREDENTIAL_KEY_BYTES_MAX: usize = 188;
/// Longest profile (registry or endpoint), in bytes.
pub const CREDENTIAL_PROFILE_BYTES_MAX: usize = 1024;
/// Longest sealed value, in bytes (its plaintext is at most about three
/// quarters of this).
pub const CREDENTIAL_SEALED_BYTES_MAX: usize = 96 * 1024;

/// OSMO's credential name syntax.
pub fn is_credential_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= CREDENTIAL_NAME_BYTES_MAX
                && first.is_ascii_alphabetic()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(inner)
        }
        _ => false,
    }
}

/// OSMO's credential types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialKind {
    /// A container registry's user and password (image pulls).
    Registry,
    /// An object store's access key (the user's `s3://` URLs).
    Data,
    /// Any keys and values (a task's `credentials:`).
    Generic,
}

impl CredentialKind {
    /// OSMO's name: `REGISTRY`, `DATA`, `GENERIC`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Registry => "REGISTRY",
            CredentialKind::Data => "DATA",
            CredentialKind::Generic => "GENERIC",
        }
    }
}

/// A user's credential, as proposed (`Command::PutCredential`) and stored:
/// what may be shown in clear, and the values sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub kind: CredentialKind,
    /// OSMO's `profile`: the registry (REGISTRY) or the endpoint (DATA)
    /// the credential is for; the name for GENERIC.
    pub profile: String,
    /// The names of its values, sorted (a task's `credentials:` is checked
    /// against them at submit without opening anything).
    pub keys: Vec<String>,
    /// The values as a JSON object of strings, sealed with the cluster key.
    pub sealed: String,
    /// When it was last set (the command's time; ignored as proposed).
    pub updated: Millis,
}

/// Longest saved profile text, in bytes.
pub const USER_PROFILE_BYTES_MAX: usize = 4096;

/// A user's saved preferences (OSMO's `UserProfile` without the name),
/// stored as JSON text so fields can be added; an absent field is unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserProfile {
    /// The pool a submit without one goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_notification: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack_notification: Option<bool>,
}

impl UserProfile {
    /// Reads a stored or proposed text (bounded).
    pub fn from_text(text: &str) -> Result<UserProfile, String> {
        if text.len() > USER_PROFILE_BYTES_MAX {
            return Err(format!(
                "a profile of {} bytes is over the limit of {USER_PROFILE_BYTES_MAX}",
                text.len()
            ));
        }
        serde_json::from_str(text).map_err(|error| format!("malformed profile: {error}"))
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Most roles one user holds directly.
pub const USER_ROLES_MAX: usize = 64;

/// A role given to a user directly (not through an IdP group), OSMO's
/// `UserRole`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleGrant {
    pub role: String,
    /// Who gave it: a user, or `idp` for a role the user's sign-in brought.
    pub assigned_by: String,
    pub assigned_at: Millis,
}

/// A user Gantry knows: made by an admin or at the user's first sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub created: Millis,
    pub created_by: String,
    /// Sorted by role name, one grant per role.
    pub roles: Vec<RoleGrant>,
    /// Sign-ins (IdP ID tokens, Gantry JWTs) issued before this are
    /// refused: the user's sessions were revoked then.
    pub sessions_valid_from: Option<Millis>,
}

/// How [`crate::Command::PutUser`] treats a user that exists, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserWrite {
    /// Create; refused when the user exists.
    Create,
    /// Create when absent; add the roles either way (a first sign-in).
    Ensure,
    /// Add roles; refused when the user does not exist.
    Existing,
}
