//! The agent endpoint: connections of backend operators, remote (the
//! operator stream of `api::agent`) or in-process (`gantry dev`).
//!
//! Each connection carries numbered operator messages up and jobs and
//! acknowledgements down. Invariants:
//! - Messages become one `OperatorReports` command per batch, in sequence
//!   order. Batches commit one at a time, in order, and a batch is proposed
//!   only after the one before it committed, so a failed batch ends the
//!   connection before anything after it commits; the acknowledgement
//!   (`Down::Ack`) goes out only after that command is committed. While one
//!   batch commits, up to [`BATCHES_AHEAD_MAX`] more are prepared (lines
//!   filtered, masked, made live, their chunks encoded and written). Log
//!   lines are durable before the acknowledgement: the batch's lines are
//!   written as one zstd chunk per task run to object storage first, and
//!   the chunks' index entries ride in the same command, so an acknowledged
//!   line is always in a committed chunk and an unacknowledged one is
//!   resent (and dropped by offset if it was durable after all). A message
//!   at or below what is acknowledged is a resend and is dropped, here and
//!   again in the state machine.
//! - A batch that holds only log lines waits up to
//!   [`super::logger::CHUNK_AGE_MAX`] for more, until
//!   [`super::logger::CHUNK_RAW_BYTES_TARGET`] bytes: chunks stay large and
//!   commits few; any other message cuts the batch at once, so a task's end
//!   also cuts its last chunk.
//! - A connection receives jobs only after a `Hello` of its own is
//!   committed, so everything the operator resent before it (done jobs,
//!   finished tasks) is applied first; the hub remembers which jobs went
//!   out on the current connection so none is sent twice on one connection.
//! - Acknowledgements never wait on the operator (a watch, not a queue), so
//!   a slow reader cannot stall the batch loop that reads its reports.
//! - A remote connection ends when this node stops leading: operators
//!   follow the leader, whose dispatcher is the only one sending jobs.
//! - Heartbeats become commands at most once per backend per
//!   [`HEARTBEAT_PROPOSE_INTERVAL_MIN`]; the others are only acknowledged
//!   (the next one carries the newer inventory anyway).

use super::logger::{LogError, Logger, CHUNK_AGE_MAX, CHUNK_RAW_BYTES_TARGET};
use super::masking::{Masker, Masks};
use crate::clock::now_ms;
use crate::protocol::wire::{Down, Up};
use crate::protocol::LogLine;
use crate::protocol::{FromOperator, ToOperator};
use futures::Stream;
use gantry_raft::{RaftError, RaftNode};
use gantry_storage::{Command, Outcome, RejectionKind, TaskKey, TaskReport};
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::task::AbortOnDropHandle;

/// Jobs buffered per operator connection, at most.
pub const OPERATOR_QUEUE_MAX: usize = 1024;
/// Operator messages folded into one command, at most.
pub const REPORTS_PER_COMMAND_MAX: usize = 4096;

/// At most one heartbeat per backend is proposed in this time; the others
/// are dropped (the next one carries the newer inventory anyway).
pub const HEARTBEAT_PROPOSE_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(3);

struct Connection {
    generation: u64,
    jobs: mpsc::Sender<ToOperator>,
    sent_jobs: HashSet<u64>,
    /// A hello of this connection is committed: jobs may go out.
    ready: bool,
}

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

/// Prepared batches waiting for the committer, at most: the next batches'
/// lines are encoded, compressed and written while one commits.
const BATCHES_AHEAD_MAX: usize = 2;

/// The preparing side of a connection.
struct Intake {
    backend: String,
    /// Highest sequence taken into a batch (acknowledged, at first).
    seq: u64,
    /// Highest log offset per task run taken into a chunk on this
    /// connection, or indexed when the run was first seen here.
    taken: HashMap<TaskKey, u64>,
}

/// The committing side of a connection.
struct Committing {
    backend: String,
    instance: u64,
    generation: u64,
    acks: watch::Sender<u64>,
}

/// A batch ready to commit: its reports as commands, its log lines as
/// chunk writes under way.
struct Prepared {
    now: gantry_storage::Millis,
    commands: Vec<(u64, Command)>,
    chunks: Vec<PendingChunk>,
    last_seq: u64,
    hello: bool,
}

/// One task run's chunk of a batch, being written.
struct PendingChunk {
    /// The last message that carried the run's lines.
    seq: u64,
    key: TaskKey,
    /// Aborted when dropped: a batch given up (its connection ended) stops
    /// writing, so it cannot re-create objects after a purge or hold memory.
    write: AbortOnDropHandle<Result<gantry_storage::LogChunk, LogError>>,
}

/// Why the committer ended (it never returns while batches come).
fn committer_end(joined: Result<ConnectionEnd, tokio::task::JoinError>) -> ConnectionEnd {
    joined.unwrap_or_else(|error| {
        ConnectionEnd::Protocol(format!("the batch committer stopped: {error}"))
    })
}

/// The operator closed its stream: commit what is prepared, then end.
async fn finish_commits(
    to_commit: mpsc::Sender<Prepared>,
    committer: &mut tokio::task::JoinHandle<ConnectionEnd>,
) -> ConnectionEnd {
    drop(to_commit);
    committer_end(committer.await)
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
        }
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// Registers a connection of `backend`'s operator `instance` (replacing
    /// an older one of the same backend) and returns it with the frames to
    /// send down: `Resume` first, then jobs and acknowledgements.
    pub async fn accept(
        &self,
        backend: &str,
        instance: u64,
        follow_leader: bool,
    ) -> Result<(Accepted, impl Stream<Item = Down> + Send + 'static), RaftError> {
        let acked = self.node.read().await?.operator_seq(backend, instance)?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (jobs, job_receiver) = mpsc::channel(OPERATOR_QUEUE_MAX);
        let (acks, ack_receiver) = watch::channel(acked);
        self.lock().insert(
            backend.to_string(),
            Connection {
                generation,
                jobs,
                sent_jobs: HashSet::new(),
                ready: false,
            },
        );
        tracing::info!(%backend, instance, acked, "operator connected");
        let accepted = Accepted {
            backend: backend.to_string(),
            instance,
            generation,
            acked,
            acks,
            follow_leader,
        };
        Ok((accepted, down_frames(acked, job_receiver, ack_receiver)))
    }

    /// Serves the operator's frames until the connection closes, this node
    /// stops leading (if the connection follows the leader), or a batch
    /// cannot be committed (the operator reconnects and resends).
    ///
    /// Two stages: this loop turns frames into prepared batches (lines
    /// filtered, masked, made live, and their chunks being written), and a
    /// committer commits them one at a time, in order, and acknowledges.
    /// The next batches are prepared while one commits, so encoding,
    /// compression and the chunk writes overlap the Raft commit.
    pub async fn serve(&self, accepted: Accepted, mut up: mpsc::Receiver<Up>) -> ConnectionEnd {
        let connections_gauge = metrics::gauge!(
            crate::metrics::OPERATOR_CONNECTIONS,
            "backend" => accepted.backend.clone()
        );
        connections_gauge.increment(1.0);
        let Accepted {
            backend,
            instance,
            generation,
            acked,
            acks,
            follow_leader,
        } = accepted;
        let mut intake = Intake {
            backend: backend.clone(),
            seq: acked,
            taken: HashMap::new(),
        };
        let (to_commit, batches) = mpsc::channel(BATCHES_AHEAD_MAX);
        let committing = Committing {
            backend: backend.clone(),
            instance,
            generation,
            acks,
        };
        let mut committer = tokio::spawn(self.clone().commit_batches(committing, batches));
        let end = loop {
            let first = tokio::select! {
                frame = up.recv() => frame,
                () = leadership_lost(&self.node), if follow_leader => {
                    break ConnectionEnd::NotLeader;
                }
                ended = &mut committer => break committer_end(ended),
            };
            let Some(first) = first else {
                break finish_commits(to_commit, &mut committer).await;
            };
            let mut frames = vec![first];
            let mut line_bytes = frame_line_bytes(&frames[0]);
            // Up to the chunk target, so a backlog still makes chunks of about that size.
            while frames.len() < REPORTS_PER_COMMAND_MAX && line_bytes < CHUNK_RAW_BYTES_TARGET {
                match up.try_recv() {
                    Ok(frame) => {
                        line_bytes += frame_line_bytes(&frame);
                        frames.push(frame);
                    }
                    Err(_) => break,
                }
            }
            let closed = gather_log_frames(&mut up, &mut frames).await;
            match self.prepare(&mut intake, frames).await {
                Ok(Some(prepared)) => {
                    tokio::select! {
                        sent = to_commit.send(prepared) => {
                            if sent.is_err() {
                                break committer_end((&mut committer).await);
                            }
                        }
                        ended = &mut committer => break committer_end(ended),
                    }
                }
                Ok(None) => {}
                Err(end) => break end,
            }
            if closed {
                break finish_commits(to_commit, &mut committer).await;
            }
        };
        // Batches still queued are not acknowledged; the operator resends them.
        committer.abort();
        connections_gauge.decrement(1.0);
        let mut connections = self.lock();
        if connections
            .get(&backend)
            .is_some_and(|c| c.generation == generation)
        {
            connections.remove(&backend);
        }
        tracing::info!(%backend, %end, "operator disconnected");
        end
    }

    /// Turns one batch of frames into commands and chunk writes. `None`
    /// when every frame was a resend of something already committed.
    async fn prepare(
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
                    tracing::info!(%backend, %version, %executor, running = running.len(), "operator hello");
                    hello = true;
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
                    if !self.heartbeat_due(&backend) {
                        continue;
                    }
                    // The graces travel in the command: apply reads no config.
                    let view = self.node.read_local().map_err(ConnectionEnd::Propose)?;
                    let (offline_after_ms, fail_tasks_after_ms) =
                        gantry_storage::config::ServiceConfig::in_force(&view).graces_ms();
                    Command::BackendHeartbeat {
                        now,
                        backend: backend.clone(),
                        nodes,
                        offline_after_ms,
                        fail_tasks_after_ms,
                    }
                }
                FromOperator::Logs { key, lines } => {
                    let floor = self.taken_offset(intake, &key).await?;
                    let entry = pending_logs.entry(key.clone()).or_default();
                    let mut above = entry.1.last().map(|line| line.offset).or(floor);
                    let masker = match &masker {
                        Some(masker) => masker.clone(),
                        None => {
                            let view = self.node.read_local().map_err(ConnectionEnd::Propose)?;
                            let current = self
                                .masks
                                .current(&view)
                                .map_err(|e| ConnectionEnd::Propose(RaftError::from(e)))?;
                            masker.insert(current).clone()
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
                            line
                        })
                        .collect();
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

    /// Commits prepared batches in order until the channel closes (the
    /// connection ended) or one fails.
    async fn commit_batches(
        self,
        mut committing: Committing,
        mut batches: mpsc::Receiver<Prepared>,
    ) -> ConnectionEnd {
        while let Some(batch) = batches.recv().await {
            if let Err(end) = self.commit(&mut committing, batch).await {
                return end;
            }
        }
        ConnectionEnd::Closed
    }

    /// Waits for the batch's chunks, commits its command, and acknowledges.
    async fn commit(
        &self,
        committing: &mut Committing,
        batch: Prepared,
    ) -> Result<(), ConnectionEnd> {
        let Prepared {
            now,
            mut commands,
            chunks,
            last_seq,
            hello,
        } = batch;
        let mut durable_now = Vec::with_capacity(chunks.len());
        for PendingChunk { seq, key, write } in chunks {
            let chunk = write
                .await
                .map_err(|error| {
                    ConnectionEnd::Logs(LogError::Damaged {
                        key: format!("{}/{}", key.workflow_id, key.task),
                        reason: format!("the chunk writer stopped: {error}"),
                    })
                })?
                .map_err(ConnectionEnd::Logs)?;
            durable_now.push((key, chunk.last_offset));
            commands.push((seq, Command::AppendLogChunk { chunk }));
        }
        commands.sort_by_key(|(seq, _)| *seq);
        let batch = Command::OperatorReports {
            now,
            backend: committing.backend.clone(),
            instance: committing.instance,
            last_seq,
            commands,
        };
        match self.node.propose(batch).await {
            // Applied, or refused as already applied (a resend that raced
            // another connection): either way it is committed.
            Ok(Outcome::Rejected(rejection)) if rejection.kind != RejectionKind::Conflict => {
                // Nothing of it applied (stale: another connection indexed
                // some of its lines meanwhile): the operator resends over a
                // new connection, which rereads the index.
                return Err(ConnectionEnd::Refused(rejection.message));
            }
            Ok(_) => {}
            Err(error) => return Err(ConnectionEnd::Propose(error)),
        }
        for (key, offset) in durable_now {
            self.logs.trim_live(&key, offset);
        }
        committing.acks.send_replace(last_seq);
        if hello {
            if let Some(connection) = self
                .lock()
                .get_mut(&committing.backend)
                .filter(|connection| connection.generation == committing.generation)
            {
                connection.ready = true;
            }
            // Re-queued groups (and everything queued meanwhile) can go out.
            self.connected.notify_waiters();
        }
        Ok(())
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether a heartbeat of `backend` may be proposed now (and notes it).
    fn heartbeat_due(&self, backend: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self
            .last_heartbeat
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match last.get(backend) {
            Some(at) if now.duration_since(*at) < HEARTBEAT_PROPOSE_INTERVAL_MIN => false,
            _ => {
                last.insert(backend.to_string(), now);
                true
            }
        }
    }

    /// Sends a job to the backend's operator unless it was already sent on
    /// the current connection. Returns false if no operator is ready.
    pub async fn send_job(&self, backend: &str, job_id: u64, message: ToOperator) -> bool {
        let sender = {
            let mut connections = self.lock();
            let Some(connection) = connections.get_mut(backend).filter(|c| c.ready) else {
                return false;
            };
            if !connection.sent_jobs.insert(job_id) {
                return true;
            }
            connection.jobs.clone()
        };
        metrics::counter!(crate::metrics::OPERATOR_MESSAGES_SENT, "backend" => backend.to_string())
            .increment(1);
        sender.send(message).await.is_ok()
    }

    /// Whether job `job_id` should go to `backend` now: its operator is
    /// ready here and has not been sent the job on this connection.
    pub fn wants_job(&self, backend: &str, job_id: u64) -> bool {
        self.lock()
            .get(backend)
            .is_some_and(|c| c.ready && !c.sent_jobs.contains(&job_id))
    }

    /// Forgets sent jobs that left the queue. `queued` is a prefix of the
    /// queue in id order, read after those jobs were sent: a sent id at or
    /// below its last id that it does not list was completed. (Forgetting
    /// on completion instead would let a dispatcher holding an older view
    /// send the job again.)
    pub fn forget_completed_jobs(&self, queued: &[u64]) {
        let Some(&last) = queued.last() else {
            for connection in self.lock().values_mut() {
                connection.sent_jobs.clear();
            }
            return;
        };
        let listed: HashSet<u64> = queued.iter().copied().collect();
        for connection in self.lock().values_mut() {
            connection
                .sent_jobs
                .retain(|id| *id > last || listed.contains(id));
        }
    }
}

/// Raw bytes of the log lines in one frame (0 for other messages).
fn frame_line_bytes(frame: &Up) -> usize {
    log_bytes(std::slice::from_ref(frame)).unwrap_or(0)
}

/// Raw bytes of the log lines in `frames`, or `None` if one of them is not
/// a log message (the batch must then go at once).
fn log_bytes(frames: &[Up]) -> Option<usize> {
    let mut bytes = 0;
    for Up::Report { message, .. } in frames {
        match &**message {
            FromOperator::Logs { lines, .. } => {
                bytes += lines.iter().map(|line| line.text.len() + 32).sum::<usize>();
            }
            _ => return None,
        }
    }
    Some(bytes)
}

/// While `frames` holds only log lines, waits for more until the chunk
/// target size or age is reached or another message arrives. Returns
/// whether the operator closed the stream meanwhile.
async fn gather_log_frames(up: &mut mpsc::Receiver<Up>, frames: &mut Vec<Up>) -> bool {
    let Some(mut bytes) = log_bytes(frames) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + CHUNK_AGE_MAX;
    while bytes < CHUNK_RAW_BYTES_TARGET && frames.len() < REPORTS_PER_COMMAND_MAX {
        let frame = match tokio::time::timeout_at(deadline, up.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return true,
            Err(_) => return false,
        };
        frames.push(frame);
        match log_bytes(std::slice::from_ref(&frames[frames.len() - 1])) {
            Some(more) => bytes += more,
            None => return false,
        }
    }
    false
}

/// Resolves once this node is no longer the leader.
async fn leadership_lost(node: &RaftNode) {
    let mut metrics = node.metrics();
    loop {
        if node.leader_term(&metrics.borrow_and_update()).is_none() {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// `Resume { acked }`, then jobs and acknowledgements as they come; ends
/// when the connection is replaced or dropped (its job sender goes away).
fn down_frames(
    acked: u64,
    jobs: mpsc::Receiver<ToOperator>,
    acks: watch::Receiver<u64>,
) -> impl Stream<Item = Down> + Send + 'static {
    struct State {
        resumed: bool,
        jobs: mpsc::Receiver<ToOperator>,
        acks: watch::Receiver<u64>,
        acks_open: bool,
    }
    let state = State {
        resumed: false,
        jobs,
        acks,
        acks_open: true,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if !state.resumed {
            state.resumed = true;
            state.acks.borrow_and_update();
            return Some((Down::Resume { acked }, state));
        }
        loop {
            tokio::select! {
                job = state.jobs.recv() => return job.map(|job| (Down::Job(job), state)),
                changed = state.acks.changed(), if state.acks_open => match changed {
                    Ok(()) => {
                        let seq = *state.acks.borrow_and_update();
                        return Some((Down::Ack { seq }, state));
                    }
                    Err(_) => state.acks_open = false,
                },
            }
        }
    })
}

/// Frames queued between the in-process operator and the hub.
const IN_PROCESS_QUEUE_MAX: usize = 1024;

impl OperatorHub {
    /// A link for an operator in this process (`gantry dev`, `--local-backend`):
    /// the same frames and the same batch loop as a remote stream, minus the
    /// socket. It does not follow the leader: on a follower its reports are
    /// forwarded to the leader like any proposal.
    pub async fn link_in_process(
        &self,
        backend: &str,
        instance: u64,
    ) -> Result<crate::protocol::wire::Link, RaftError> {
        use futures::StreamExt;
        let (accepted, down_frames) = self.accept(backend, instance, false).await?;
        let (up, up_receiver) = mpsc::channel(IN_PROCESS_QUEUE_MAX);
        let (down_sender, down) = mpsc::channel(IN_PROCESS_QUEUE_MAX);
        tokio::spawn(async move {
            let mut down_frames = std::pin::pin!(down_frames);
            while let Some(frame) = down_frames.next().await {
                if down_sender.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move { hub.serve(accepted, up_receiver).await });
        Ok(crate::protocol::wire::Link { up, down })
    }
}
