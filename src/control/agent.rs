//! The agent endpoint: connections of backend operators.
//!
//! Each operator connection is a pair of channels: jobs go down, reports come
//! up. Reports become commands (task status, job completion, hello) or log
//! appends. Invariant: a job is reported complete only after the
//! `CompleteJob` command is committed, and the hub remembers which jobs were
//! sent on the current connection so the dispatcher never sends one twice
//! to the same connection.

use super::logs::LogStore;
use super::now_ms;
use crate::operator::protocol::{FromOperator, ToOperator};
use gantry_raft::RaftNode;
use gantry_storage::{Command, TaskReport};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// Messages buffered per operator connection, at most.
pub const OPERATOR_QUEUE_MAX: usize = 1024;

struct Connection {
    generation: u64,
    sender: mpsc::Sender<ToOperator>,
    sent_jobs: HashSet<u64>,
}

/// Live operator connections of this node, by backend name.
#[derive(Clone)]
pub struct AgentHub {
    node: RaftNode,
    logs: LogStore,
    connections: Arc<Mutex<HashMap<String, Connection>>>,
    next_generation: Arc<std::sync::atomic::AtomicU64>,
    /// Woken when a connection appears, so the dispatcher retries at once.
    pub connected: Arc<Notify>,
}

impl AgentHub {
    pub fn new(node: RaftNode, logs: LogStore) -> AgentHub {
        AgentHub {
            node,
            logs,
            connections: Arc::default(),
            next_generation: Arc::default(),
            connected: Arc::default(),
        }
    }

    /// Registers an operator for `backend` and serves its reports until the
    /// connection closes. Replaces an older connection of the same backend.
    pub async fn serve(
        &self,
        backend: String,
        sender: mpsc::Sender<ToOperator>,
        mut reports: mpsc::Receiver<FromOperator>,
    ) {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.lock().insert(
            backend.clone(),
            Connection {
                generation,
                sender,
                sent_jobs: HashSet::new(),
            },
        );
        tracing::info!(%backend, "operator connected");
        let connections_gauge =
            metrics::gauge!(crate::metrics::OPERATOR_CONNECTIONS, "backend" => backend.clone());
        connections_gauge.increment(1.0);
        while let Some(report) = reports.recv().await {
            metrics::counter!(
                crate::metrics::OPERATOR_MESSAGES_RECEIVED,
                "backend" => backend.clone(),
                "kind" => crate::metrics::operator_message_kind(&report),
            )
            .increment(1);
            self.handle(&backend, report).await;
        }
        connections_gauge.decrement(1.0);
        let mut connections = self.lock();
        if connections
            .get(&backend)
            .is_some_and(|c| c.generation == generation)
        {
            connections.remove(&backend);
        }
        tracing::info!(%backend, "operator disconnected");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    async fn handle(&self, backend: &str, report: FromOperator) {
        let command = match report {
            FromOperator::Hello {
                backend: named,
                version,
                running,
            } => {
                if named != backend {
                    tracing::warn!(connected = %backend, %named, "operator hello names another backend; ignored");
                    return;
                }
                tracing::info!(%backend, %version, running = running.len(), "operator hello");
                Command::OperatorHello {
                    now: now_ms(),
                    backend: backend.to_string(),
                    running,
                }
            }
            FromOperator::JobDone { job_id } => Command::CompleteJob { job_id },
            FromOperator::TaskStatus {
                key,
                status,
                exit_code,
                message,
                time,
            } => Command::ReportTask {
                now: now_ms(),
                report: TaskReport {
                    key,
                    status,
                    exit_code,
                    message,
                    node_name: Some(backend.to_string()),
                    time,
                },
            },
            FromOperator::Logs { key, lines } => {
                if let Err(error) = self.logs.append(&key, &lines).await {
                    tracing::error!(%error, workflow = %key.workflow_id, "could not store log lines");
                }
                return;
            }
        };
        // The node waits out an election; the hello's re-dispatch is
        // committed before later reports are handled (one at a time).
        match self.node.propose(command.clone()).await {
            Ok(_) => match command {
                Command::CompleteJob { job_id } => {
                    if let Some(connection) = self.lock().get_mut(backend) {
                        connection.sent_jobs.remove(&job_id);
                    }
                }
                // Re-queued groups can go out now.
                Command::OperatorHello { .. } => self.connected.notify_waiters(),
                _ => {}
            },
            Err(error) => tracing::warn!(%error, "could not record operator report"),
        }
    }

    /// Sends a job to the backend's operator unless it was already sent on
    /// the current connection. Returns false if no operator is connected.
    pub async fn send_job(&self, backend: &str, job_id: u64, message: ToOperator) -> bool {
        let sender = {
            let mut connections = self.lock();
            let Some(connection) = connections.get_mut(backend) else {
                return false;
            };
            if !connection.sent_jobs.insert(job_id) {
                return true;
            }
            connection.sender.clone()
        };
        metrics::counter!(crate::metrics::OPERATOR_MESSAGES_SENT, "backend" => backend.to_string())
            .increment(1);
        sender.send(message).await.is_ok()
    }

    pub fn is_connected(&self, backend: &str) -> bool {
        self.lock().contains_key(backend)
    }
}
