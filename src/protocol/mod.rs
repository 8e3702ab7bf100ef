//! What the control plane and a backend operator say to each other: the
//! messages (here), the frames that carry them (`wire`), the queues bounded
//! in bytes that hold frames between socket and consumer (`byte_queue`), and
//! the task host names both sides compute (`task_host`).
//!
//! The same types travel in-process (`gantry dev`) and over the operator's
//! mTLS HTTP/2 stream. Invariant: a message never carries a reference into
//! server memory; everything an executor needs to run a task is in
//! [`TaskLaunch`].

pub mod byte_queue;
pub mod exec;
pub mod host_access;
pub mod launch_extras;
pub mod session;
pub mod task_host;
pub mod udp;
pub mod wire;

use crate::data::TaskData;
pub use gantry_storage::extras::{CheckpointPlan, TaskExtras};
pub use gantry_storage::NodeInventory;
use gantry_storage::{
    Millis, Priority, SchedulerType, TaskDataTimes, TaskEventInput, TaskKey, TaskStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Server → operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToOperator {
    /// Start every task of a group (a gang).
    CreateGroup { job_id: u64, group: GroupLaunch },
    /// Stop every still-running task of a group; `reason` is logged.
    CancelGroup {
        job_id: u64,
        workflow_id: String,
        group: String,
        reason: String,
    },
    /// Open a byte session into a running task (the router): the operator
    /// answers by attaching its end to `session` (`session::AttachSession`),
    /// never through the numbered reports. Not a job: it is not numbered,
    /// not acknowledged and not resent (a session lives on one link).
    OpenSession {
        session: String,
        key: TaskKey,
        kind: SessionKind,
    },
    /// [`ToOperator::CreateGroup`] whose tasks need more than a
    /// [`TaskLaunch`] carries on every connection: `extras` by task name
    /// (see `launch_extras`). Sent only to operators that announce they
    /// take it.
    CreateGroupWithExtras {
        job_id: u64,
        group: GroupLaunch,
        extras: BTreeMap<String, TaskExtras>,
    },
    /// The queues of the backend's pools as the POOL configs say now (a
    /// Kubernetes operator makes its scheduler's queues so; others ignore
    /// it). Sent when a connection is ready and whenever they change; not
    /// a job (not numbered, nor acknowledged: the next connection gets it
    /// again). Only to operators that announce `QUEUES_HEADER`.
    SyncQueues { pools: Vec<PoolQueue> },
}

/// A pool's GPU share of its backend's cluster, for its scheduler queue
/// (the POOL config's `resources.gpu`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolQueue {
    pub pool: String,
    /// GPUs the pool is guaranteed; -1 for none.
    pub gpu_guarantee: i64,
    /// Most GPUs the pool may use; -1 for no limit.
    pub gpu_maximum: i64,
    /// Share of spare GPUs beyond the guarantee.
    pub gpu_weight: i64,
}

/// The request header in which an operator says it takes
/// `ToOperator::SyncQueues` (level 1).
pub const QUEUES_HEADER: &str = "gantry-queues";
/// The `ToOperator::SyncQueues` this build takes: 1.
pub const QUEUES_LEVEL: u8 = 1;

/// What a session carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionKind {
    /// TCP to `port` on the task's own loopback.
    PortForward { port: u16 },
    /// A command run inside the task (see `exec`); only to operators that
    /// announced sessions level 2.
    Exec(exec::ExecRequest),
    /// UDP to `port` on the task's own loopback, datagrams framed as
    /// `udp` says; only to operators that announced sessions level 3.
    UdpForward { port: u16 },
}

impl SessionKind {
    /// What the user asked for, as the CLI names it.
    pub fn verb(&self) -> &'static str {
        match self {
            SessionKind::PortForward { .. } | SessionKind::UdpForward { .. } => "port-forward",
            SessionKind::Exec(_) => "exec",
        }
    }

    /// The sessions level (`session::SESSIONS_LEVEL`) an operator must
    /// have announced to decode this kind.
    pub fn level(&self) -> u8 {
        match self {
            SessionKind::PortForward { .. } => 1,
            SessionKind::Exec(_) => 2,
            SessionKind::UdpForward { .. } => 3,
        }
    }
}

/// Operator → server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromOperator {
    /// First message of a connection: the tasks the executor still runs.
    Hello {
        backend: String,
        version: String,
        running: Vec<TaskKey>,
        /// [`EXECUTOR_LOCAL`] or [`EXECUTOR_KUBERNETES`]: how the server
        /// addresses tasks (`{{host:...}}`) in this backend's launches.
        #[serde(default = "default_executor")]
        executor: String,
    },
    /// The job was received and acted on.
    JobDone { job_id: u64 },
    /// A task moved to `status` (SCHEDULING, INITIALIZING, RUNNING, or finished).
    TaskStatus {
        key: TaskKey,
        status: TaskStatus,
        exit_code: Option<i32>,
        message: Option<String>,
        time: Millis,
    },
    /// Output lines of a task, in order.
    Logs { key: TaskKey, lines: Vec<LogLine> },
    /// The operator is alive; its nodes as they are now. Sent on connect
    /// and every [`HEARTBEAT_INTERVAL`].
    Heartbeat { nodes: Vec<NodeInventory> },
    /// When a task run downloaded its inputs and uploaded its outputs; sent
    /// after each phase, before the final status.
    DataTimes { key: TaskKey, times: TaskDataTimes },
    /// What happened to a task run on its backend, as Kubernetes events
    /// (`Pulling`, `Pulled`, `Failed`, …). Sent only on links whose server
    /// takes reports level 1 (`wire::REPORTS_HEADER`).
    TaskEvents {
        key: TaskKey,
        events: Vec<TaskEventInput>,
    },
}

impl FromOperator {
    /// About the bytes this message holds in memory: its text and the fixed
    /// size of its parts. What bounds the operator's backlog; cheap (no
    /// encoding), and within a small factor of the encoded size.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 64;
        match self {
            FromOperator::Hello {
                backend,
                version,
                running,
                executor,
            } => {
                FIXED
                    + backend.len()
                    + version.len()
                    + executor.len()
                    + running.iter().map(key_bytes).sum::<usize>()
            }
            FromOperator::JobDone { .. } => FIXED,
            FromOperator::TaskStatus { key, message, .. } => {
                FIXED + key_bytes(key) + message.as_ref().map_or(0, String::len)
            }
            FromOperator::Logs { key, lines } => {
                FIXED
                    + key_bytes(key)
                    + lines
                        .iter()
                        .map(|line| FIXED + line.text.len())
                        .sum::<usize>()
            }
            // A node's labels and conditions: a few KiB on Kubernetes.
            FromOperator::Heartbeat { nodes } => FIXED + nodes.len() * 4096,
            FromOperator::DataTimes { key, .. } => FIXED + key_bytes(key),
            FromOperator::TaskEvents { key, events } => {
                FIXED
                    + key_bytes(key)
                    + events
                        .iter()
                        .map(|event| FIXED + event.reason.len() + event.message.len())
                        .sum::<usize>()
            }
        }
    }

    /// The `kind` label of this message in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FromOperator::Hello { .. } => "hello",
            FromOperator::JobDone { .. } => "job_done",
            FromOperator::TaskStatus { .. } => "task_status",
            FromOperator::Logs { .. } => "logs",
            FromOperator::Heartbeat { .. } => "heartbeat",
            FromOperator::DataTimes { .. } => "data_times",
            FromOperator::TaskEvents { .. } => "task_events",
        }
    }

    /// The reports level (`wire::REPORTS_LEVEL`) a server must take for
    /// this message: 0 for what every build decodes.
    pub fn reports_level(&self) -> u8 {
        match self {
            FromOperator::TaskEvents { .. } => 1,
            _ => 0,
        }
    }
}

fn key_bytes(key: &TaskKey) -> usize {
    std::mem::size_of::<TaskKey>() + key.workflow_id.len() + key.task.len()
}

pub use gantry_storage::EXECUTOR_LOCAL;
/// The executor kind of `gantry operator --executor kubernetes`.
pub const EXECUTOR_KUBERNETES: &str = "kubernetes";

fn default_executor() -> String {
    EXECUTOR_LOCAL.to_string()
}

/// How often an operator sends [`FromOperator::Heartbeat`] (OSMO's listener: 20 s;
/// shorter here so a short offline grace still works).
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupLaunch {
    pub workflow_id: String,
    pub group: String,
    /// Start the user commands of all tasks together.
    pub barrier: bool,
    pub tasks: Vec<TaskLaunch>,
    /// Identity and placement of the group (empty from an older server).
    #[serde(default)]
    pub meta: GroupMeta,
}

/// What a cluster executor needs to name, label and queue a group's objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub workflow_uuid: String,
    pub group_uuid: String,
    /// The user who submitted the workflow.
    pub submitted_by: String,
    pub pool: String,
    /// `None` is OSMO's default, NORMAL.
    pub priority: Option<Priority>,
    /// The backend's admin-set `scheduler_settings`; `None` (no BACKEND
    /// config, or an older server) leaves the executor's own settings.
    #[serde(default)]
    pub scheduler: Option<LaunchScheduler>,
}

/// A backend's `scheduler_settings` as a launch carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchScheduler {
    pub scheduler_type: SchedulerType,
    /// The pods' `schedulerName`.
    pub scheduler_name: String,
    pub scheduler_timeout_seconds: u64,
}

/// One task, fully resolved: special tokens are substituted, inputs are
/// named by the task whose output they read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskLaunch {
    pub key: TaskKey,
    pub group: String,
    pub lead: bool,
    /// Recorded and shown; the local executor does not pull images.
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub files: Vec<LaunchFile>,
    /// Index N is mounted read-only at `/osmo/data/input/N`.
    pub inputs: Vec<LaunchInput>,
    /// Resources and platform (empty from an older server).
    #[serde(default)]
    pub placement: TaskPlacement,
    /// Where inputs come from and outputs go (index N of `data.inputs` is
    /// input N); `None` from an older server, which sends no data.
    #[serde(default)]
    pub data: Option<TaskData>,
    /// What the task needs beyond the fields above. Never in this
    /// struct's encoding (format 1 is positional): it travels in
    /// [`ToOperator::CreateGroupWithExtras`] (see `launch_extras`).
    #[serde(skip)]
    pub extras: TaskExtras,
}

/// Where and with what a task runs on a cluster backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskPlacement {
    pub task_uuid: String,
    pub resources: LaunchResources,
    /// Platform name within the pool.
    pub platform: Option<String>,
    /// The platform's node selector labels.
    pub node_selector: BTreeMap<String, String>,
    /// The platform's tolerations, as Kubernetes `Toleration` JSON.
    pub tolerations: Vec<serde_json::Value>,
    /// Partial Pod manifests in merge order (pool common templates, then the
    /// platform's overrides); rendered with the task's variables, then merged.
    pub pod_templates: Vec<serde_json::Value>,
}

/// A task's resource request; `None` leaves the quantity unset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchResources {
    pub cpu: Option<u64>,
    /// `nvidia.com/gpu`.
    pub gpu: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Ephemeral storage.
    pub storage_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchFile {
    pub path: String,
    /// Raw bytes of the file (already base64-decoded).
    pub contents: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LaunchInput {
    /// The published output of task `task` of workflow `workflow_id`.
    Task {
        workflow_id: String,
        task: String,
        regex: Option<String>,
    },
    /// An object-store URL (`s3://`, `file://`).
    Url { url: String, regex: Option<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the executor itself writes about the task (`[task][osmo]`).
    Osmo,
}

/// One output line. `offset` is assigned by the executor, per task run,
/// strictly increasing in the order lines are sent; the logger drops a line
/// at or below the highest offset it already holds for the run (a resend).
/// An executor that starts a run over from scratch must start above every
/// offset it used before (the local executor starts each run at its start
/// time in milliseconds shifted left by 20 bits; the Kubernetes executor
/// counts from 0 because re-reading a pod's log re-reads the same lines).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(default)]
    pub offset: u64,
    pub stream: LogStream,
    pub time: Millis,
    pub text: String,
}
