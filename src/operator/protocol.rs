//! Messages between the control plane and a backend operator.
//!
//! The same types travel in-process (`gantry dev`) and, in a later stage,
//! over the operator's mTLS HTTP/2 stream. Invariant: a message never carries
//! a reference into server memory; everything an executor needs to run a
//! task is in [`TaskLaunch`].

pub use gantry_storage::NodeInventory;
use gantry_storage::{Millis, TaskKey, TaskStatus};
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
}

/// Operator → server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromOperator {
    /// First message of a connection: the tasks the executor still runs.
    Hello {
        backend: String,
        version: String,
        running: Vec<TaskKey>,
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchFile {
    pub path: String,
    /// Raw bytes of the file (already base64-decoded).
    pub contents: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LaunchInput {
    /// The output directory of task `task` of workflow `workflow_id`.
    Task {
        workflow_id: String,
        task: String,
        regex: Option<String>,
    },
    /// An object-store URL (needs a data store; see the logs/data stage).
    Url { url: String, regex: Option<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the executor itself writes about the task (`[task][osmo]`).
    Osmo,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: LogStream,
    pub time: Millis,
    pub text: String,
}
