//! The operator hub: connections of backend operators, remote (the operator
//! stream of `api::operator_stream`) or in-process (`gantry dev`).
//!
//! Each connection carries numbered operator messages up and jobs and
//! acknowledgements down. Up, a connection is a pipeline of three stages,
//! one file each: `serve` gathers frames into batches, `prepare` turns a
//! batch into commands and chunk writes, `commit` commits batches one at a
//! time and acknowledges. Down, `registry` holds each backend's current
//! connection, the jobs sent on it and its frames; `scope` keeps each
//! operator to its own backend's work. `heartbeat` rate-limits
//! `BackendHeartbeat`; `in_process` links an operator of this process;
//! `sessions` pairs a user's session into a task with its operator's end.
//!
//! Public API: [`OperatorHub::accept`] then [`OperatorHub::serve`] (a remote
//! stream), [`OperatorHub::link_in_process`], and for the dispatcher
//! [`OperatorHub::wants_job`], [`OperatorHub::send_job`],
//! [`OperatorHub::forget_completed_jobs`] and [`OperatorHub::connected`].
//!
//! Invariant of the whole pipeline: messages become one `OperatorReports`
//! command per batch, in sequence order, and an operator message is
//! acknowledged only once the command holding it is committed, its log
//! lines in a committed chunk. Anything unacknowledged is resent by the
//! operator and anything resent is dropped (by sequence, by offset), so a
//! connection may end at any point without losing or doubling a message.
//! The files' docs say how each stage keeps its part.

mod commit;
mod heartbeat;
mod in_process;
mod log_limits;
mod prepare;
mod queues;
mod registry;
mod scope;
mod serve;
mod sessions;
mod task_events;

pub use heartbeat::HEARTBEAT_PROPOSE_INTERVAL_MIN;
pub use registry::{OperatorAbilities, OPERATOR_QUEUE_MAX};
pub use serve::REPORTS_PER_COMMAND_MAX;
pub use sessions::{SessionError, SESSION_ANSWER_WAIT};

use super::logger::{LogError, Logger};
use super::masking::Masks;
use gantry_raft::{RaftError, RaftNode};
use registry::Connection;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// Live operator connections of this node, by backend name.
#[derive(Clone)]
pub struct OperatorHub {
    node: RaftNode,
    logs: Logger,
    connections: Arc<Mutex<HashMap<String, Connection>>>,
    next_generation: Arc<AtomicU64>,
    /// When a heartbeat of each backend was last proposed from this node.
    last_heartbeat: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// Woken when a connection becomes ready, so the dispatcher retries at once.
    pub connected: Arc<Notify>,
    /// Secrets to mask out of log lines, per WORKFLOW config revision.
    masks: Arc<Masks>,
    /// Sessions into tasks waiting for their operator's end.
    sessions: Arc<sessions::PendingSessions>,
}

/// A registered connection, to be served with [`OperatorHub::serve`].
pub struct Accepted {
    backend: String,
    instance: u64,
    generation: u64,
    acked: u64,
    acks: watch::Sender<u64>,
    /// End the connection when this node stops leading.
    follow_leader: bool,
}

/// Why serving a connection ended (for the log).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    #[error("the operator closed the connection")]
    Closed,
    #[error("this node stopped leading")]
    NotLeader,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot commit the operator's messages: {0}")]
    Propose(RaftError),
    #[error("cannot store the operator's log lines: {0}")]
    Logs(LogError),
    #[error("the operator's batch was refused (it is resent): {0}")]
    Refused(String),
}

impl OperatorHub {
    pub fn new(node: RaftNode, logs: Logger) -> OperatorHub {
        OperatorHub {
            node,
            logs,
            connections: Arc::default(),
            next_generation: Arc::default(),
            last_heartbeat: Arc::default(),
            connected: Arc::default(),
            masks: Arc::default(),
            sessions: Arc::default(),
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }
}
