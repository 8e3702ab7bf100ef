//! Preparing a batch: the operator's messages become commands, and their
//! log lines chunk writes started in the background.
//!
//! Invariants:
//! - Commands keep the messages' sequence order. A message at or below
//!   what is already taken (acknowledged, at first) is a resend and is
//!   dropped, here and again in the state machine; a sequence number that
//!   does not grow ends the connection.
//! - Log lines are durable before the acknowledgement: a batch's lines are
//!   filtered by offset (what a committed chunk or an earlier batch of this
//!   connection holds is dropped), masked before they are made live or
//!   stored, and written as one zstd chunk per task run to object storage;
//!   the chunks' index entries ride in the batch's command (`commit`), so
//!   an acknowledged line is always in a committed chunk and an
//!   unacknowledged one is resent (and dropped by offset if it was durable
//!   after all).
//! - Reports on work not dispatched to the connection's backend are
//!   dropped before they become commands (`scope`).
//! - Lines past the WORKFLOW config's `max_task_log_lines` (per run) and
//!   `max_log_lines` (per workflow) are dropped, the first of them replaced
//!   by one marker line that closes the run (`log_limits`).
//! - A chunk write is aborted with its batch: a batch given up (its
//!   connection ended) stops writing.
//! - A `Hello` proposes `OperatorHelloWithExecutor` (which runs again what
//!   the executor does not list) only from an operator instance the cluster
//!   has not acknowledged anything of yet: a new process. A hello on a new
//!   link of a live process lost no run, and other executors of the same
//!   backend (`--local-backend` on several members) run what it does not
//!   list; it readies its connection, acknowledged with its batch, and
//!   proposes nothing.

use super::log_limits::{self, LogLimits, Stored};
use super::scope::Scope;
use super::task_events;
use super::{ConnectionEnd, OperatorHub};
use crate::clock::now_ms;
use crate::control::logger::LogError;
use crate::control::masking::Masker;
use crate::protocol::wire::Up;
use crate::protocol::FromOperator;
use crate::protocol::LogLine;
use gantry_raft::RaftError;
use gantry_storage::config::workflow::WorkflowConfig;
use gantry_storage::{Command, TaskKey, TaskReport};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;

/// The preparing side of a connection.
pub(super) struct Intake {
    backend: String,
    /// Highest sequence taken into a batch (acknowledged, at first).
    seq: u64,
    /// Highest log offset per task run taken into a chunk on this
    /// connection, or indexed when the run was first seen here.
    taken: HashMap<TaskKey, u64>,
    /// Lines stored per task run and per workflow (indexed when first seen
    /// here, plus those taken since), for the log-line limits.
    stored_runs: HashMap<TaskKey, u64>,
    stored_workflows: HashMap<String, u64>,
    /// The cluster had acknowledged messages of this operator instance
    /// before this connection: it is a live process on a new link.
    relinked: bool,
}

impl Intake {
    /// A connection of `backend` whose operator's messages up to `acked`
    /// are committed.
    pub(super) fn new(backend: String, acked: u64) -> Intake {
        Intake {
            backend,
            seq: acked,
            taken: HashMap::new(),
            stored_runs: HashMap::new(),
            stored_workflows: HashMap::new(),
            relinked: acked > 0,
        }
    }
}

/// A batch ready to commit: its reports as commands, its log lines as
/// chunk writes under way.
pub(super) struct Prepared {
    pub(super) now: gantry_storage::Millis,
    pub(super) commands: Vec<(u64, Command)>,
    pub(super) chunks: Vec<PendingChunk>,
    pub(super) last_seq: u64,
    pub(super) hello: bool,
}

/// One task run's chunk of a batch, being written.
pub(super) struct PendingChunk {
    /// The last message that carried the run's lines.
    pub(super) seq: u64,
    pub(super) key: TaskKey,
    /// Aborted when dropped: a batch given up (its connection ended) stops
    /// writing, so it cannot re-create objects after a purge or hold memory.
    pub(super) write: AbortOnDropHandle<Result<gantry_storage::LogChunk, LogError>>,
}

impl OperatorHub {
    /// Turns one batch of frames into commands and chunk writes. `None`
    /// when every frame was a resend of something already committed.
    pub(super) async fn prepare(
        &self,
        intake: &mut Intake,
        frames: Vec<Up>,
    ) -> Result<Option<Prepared>, ConnectionEnd> {
        let now = now_ms();
        let backend = intake.backend.clone();
        let mut last_seq = intake.seq;
        let mut commands = Vec::new();
        let mut hello = false;
        // Per task run: the sequence of the last message carrying new lines, and those lines.
        let mut pending_logs: BTreeMap<TaskKey, (u64, Vec<LogLine>)> = BTreeMap::new();
        let mut masker: Option<Arc<Masker>> = None;
        let mut scope = Scope::new(&backend);
        let mut limits: Option<LogLimits> = None;
        // Asked once per batch: the answer may probe the members.
        let mut events_understood: Option<bool> = None;
        for Up::Report { seq, message } in frames {
            metrics::counter!(
                crate::metrics::OPERATOR_MESSAGES_RECEIVED,
                "backend" => backend.clone(),
                "kind" => message.kind(),
            )
            .increment(1);
            if seq <= intake.seq {
                continue; // a resend of something already taken
            }
            if seq <= last_seq {
                return Err(ConnectionEnd::Protocol(format!(
                    "message {seq} after {last_seq}: sequence numbers must grow"
                )));
            }
            last_seq = seq;
            let kind = message.kind();
            let about_work = match &*message {
                FromOperator::TaskStatus { key, .. }
                | FromOperator::DataTimes { key, .. }
                | FromOperator::TaskEvents { key, .. }
                | FromOperator::Logs { key, .. } => {
                    self.reports_on_workflow(&mut scope, &key.workflow_id, kind)
                        .await?
                }
                FromOperator::JobDone { job_id } => self.completes_job(&scope, *job_id).await?,
                FromOperator::Hello { .. } | FromOperator::Heartbeat { .. } => true,
            };
            if !about_work {
                continue; // dropped (`scope`); acknowledged with its batch
            }
            let command = match Arc::unwrap_or_clone(message) {
                FromOperator::Hello {
                    backend: named,
                    version,
                    running,
                    executor,
                } => {
                    if named != backend {
                        return Err(ConnectionEnd::Protocol(format!(
                            "hello names backend '{named}' on a connection of backend '{backend}'"
                        )));
                    }
                    tracing::info!(%backend, %version, %executor, running = running.len(), relinked = intake.relinked, "operator hello");
                    hello = true;
                    if intake.relinked {
                        continue;
                    }
                    Command::OperatorHelloWithExecutor {
                        now,
                        backend: backend.clone(),
                        running,
                        executor,
                    }
                }
                FromOperator::JobDone { job_id } => Command::CompleteJob { job_id },
                FromOperator::DataTimes { key, times } => {
                    Command::RecordTaskDataTimes { key, times }
                }
                FromOperator::TaskEvents { key, events } => {
                    let command = Command::RecordTaskEvents {
                        key,
                        events: task_events::fit(events),
                    };
                    // Events are worth less than the batch: while a member
                    // of an older build cannot apply them, they are left out.
                    let understood = match events_understood {
                        Some(known) => known,
                        None => {
                            *events_understood.insert(self.node.understands(command.kind()).await)
                        }
                    };
                    if !understood {
                        continue;
                    }
                    command
                }
                FromOperator::TaskStatus {
                    key,
                    status,
                    exit_code,
                    message,
                    time,
                } => Command::ReportTask {
                    now,
                    report: TaskReport {
                        key,
                        status,
                        exit_code,
                        message,
                        node_name: Some(backend.clone()),
                        time,
                    },
                },
                FromOperator::Heartbeat { nodes } => {
                    let view = self.node.read_local().map_err(ConnectionEnd::Propose)?;
                    if let Err(error) = self.sync_queues(&backend, &view) {
                        tracing::warn!(%backend, %error, "cannot read the pools' queues");
                    }
                    match self.heartbeat_command(now, &backend, nodes, &view) {
                        Some(command) => command,
                        None => continue,
                    }
                }
                FromOperator::Logs { key, lines } => {
                    let floor = self.taken_offset(intake, &key).await?;
                    let entry = pending_logs.entry(key.clone()).or_default();
                    let mut above = entry.1.last().map(|line| line.offset).or(floor);
                    let (masker, limits) = match (&masker, limits) {
                        (Some(masker), Some(limits)) => (masker.clone(), limits),
                        _ => {
                            let view = self.node.read_local().map_err(ConnectionEnd::Propose)?;
                            let current = self
                                .masks
                                .current(&view)
                                .map_err(|e| ConnectionEnd::Propose(RaftError::from(e)))?;
                            let config = WorkflowConfig::in_force(&view);
                            let current_limits = LogLimits {
                                task_lines: config.max_task_log_lines,
                                workflow_lines: config.max_log_lines,
                            };
                            (
                                masker.insert(current).clone(),
                                *limits.insert(current_limits),
                            )
                        }
                    };
                    let task_masker = match self.masks.known_task(&key) {
                        Some(known) => known,
                        None => {
                            let view = self.node.read_local().map_err(ConnectionEnd::Propose)?;
                            self.masks
                                .for_task(&view, &key)
                                .map_err(|e| ConnectionEnd::Propose(RaftError::from(e)))?
                        }
                    };
                    let fresh: Vec<LogLine> = lines
                        .into_iter()
                        .filter(|line| {
                            let keep = above.is_none_or(|last| line.offset > last);
                            if keep {
                                above = Some(line.offset);
                            }
                            keep
                        })
                        .map(|mut line| {
                            if let Some(masked) = masker.mask(&line.text) {
                                line.text = masked;
                            }
                            if let Some(masked) = task_masker
                                .as_ref()
                                .and_then(|task_masker| task_masker.mask(&line.text))
                            {
                                line.text = masked;
                            }
                            line
                        })
                        .collect();
                    let mut stored = self.stored(intake, &key).await?;
                    let fresh = log_limits::cap(fresh, &mut stored, limits);
                    intake.stored_runs.insert(key.clone(), stored.run);
                    intake
                        .stored_workflows
                        .insert(key.workflow_id.clone(), stored.workflow);
                    if !fresh.is_empty() {
                        self.logs.push_live(&key, &fresh);
                        entry.0 = seq;
                        entry.1.extend(fresh);
                    }
                    continue;
                }
            };
            commands.push((seq, command));
        }
        if last_seq == intake.seq {
            return Ok(None);
        }
        intake.seq = last_seq;
        // Durable before the acknowledgement: the chunks are written (from
        // now on, in the background), then indexed in the same command that
        // acknowledges the messages.
        let chunks = pending_logs
            .into_iter()
            .filter_map(|(key, (seq, lines))| {
                let last = lines.last()?.offset;
                intake.taken.insert(key.clone(), last);
                let logs = self.logs.clone();
                let write_key = key.clone();
                let write = AbortOnDropHandle::new(tokio::spawn(async move {
                    logs.write_chunk(&write_key, &lines).await
                }));
                Some(PendingChunk { seq, key, write })
            })
            .collect();
        Ok(Some(Prepared {
            now,
            commands,
            chunks,
            last_seq,
            hello,
        }))
    }

    /// Lines stored for `key`'s run and its workflow: this connection's
    /// count, else (first seen here) what the index holds, read
    /// linearizably.
    async fn stored(&self, intake: &Intake, key: &TaskKey) -> Result<Stored, ConnectionEnd> {
        let run = intake.stored_runs.get(key).copied();
        let workflow = intake.stored_workflows.get(&key.workflow_id).copied();
        if let (Some(run), Some(workflow)) = (run, workflow) {
            return Ok(Stored { run, workflow });
        }
        let view = self.node.read().await.map_err(ConnectionEnd::Propose)?;
        let lines = |task: Option<&str>, retry: Option<u32>| {
            view.log_chunks(&key.workflow_id, task, retry)
                .map(|chunks| {
                    chunks
                        .iter()
                        .map(|indexed| indexed.chunk.lines)
                        .sum::<u64>()
                })
                .map_err(|error| ConnectionEnd::Propose(RaftError::from(error)))
        };
        Ok(Stored {
            run: match run {
                Some(run) => run,
                None => lines(Some(&key.task), Some(key.retry_id))?,
            },
            workflow: match workflow {
                Some(workflow) => workflow,
                None => lines(None, None)?,
            },
        })
    }

    /// The highest offset of `key`'s run already taken into a chunk: from
    /// this connection's batches, else a linearizable read of the index (a
    /// stale one could re-send lines as a chunk the index rejects).
    async fn taken_offset(
        &self,
        intake: &mut Intake,
        key: &TaskKey,
    ) -> Result<Option<u64>, ConnectionEnd> {
        if let Some(offset) = intake.taken.get(key) {
            return Ok(Some(*offset));
        }
        let view = self.node.read().await.map_err(ConnectionEnd::Propose)?;
        let chunks = view
            .log_chunks(&key.workflow_id, Some(&key.task), Some(key.retry_id))
            .map_err(|error| ConnectionEnd::Propose(RaftError::from(error)))?;
        let last = chunks.last().map(|indexed| indexed.chunk.last_offset);
        if let Some(last) = last {
            intake.taken.insert(key.clone(), last);
        }
        Ok(last)
    }
}
