//! The local operator: task bookkeeping, the per-task lifecycle, and the
//! loop that serves one control-plane connection at a time.
//!
//! Invariants:
//! - A task is in `tasks` from the moment its CreateGroup is accepted until
//!   just before its final status is sent; that map is what `Hello` reports
//!   as running, and what makes a duplicate CreateGroup a no-op while a
//!   finished key may run again (a re-dispatch after a restart).
//! - Every accepted task sends exactly one final status, after all its logs:
//!   SCHEDULING → INITIALIZING → RUNNING → COMPLETED/FAILED…, stopping early
//!   on a failure before the process starts.
//! - Tasks never run unsandboxed: without bubblewrap every task fails to start.
//! - Task state lives outside any connection, so a reconnect (`serve` again)
//!   finds running tasks, and their later reports go to the newest sender.

use super::error::ExecError;
use super::inventory;
use super::outbox::Outbox;
use super::process::{self, Exit};
use super::sandbox::{self, SandboxSpec};
use super::staging::{self, Prepared};
use crate::clock::now_ms;
use crate::data::{self, PhaseFailure, EXIT_DOWNLOAD_FAILED};
use crate::protocol::{
    FromOperator, GroupLaunch, LogLine, LogStream, TaskLaunch, ToOperator, HEARTBEAT_INTERVAL,
};
use gantry_storage::{TaskDataTimes, TaskKey, TaskStatus};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Data phase lines waiting for the batcher, at most.
const PHASE_LINES_QUEUED_MAX: usize = 1024;

/// How long `shutdown` waits for killed tasks to report before returning.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Backend name announced in `Hello`.
    pub backend: String,
    /// Per-task directories live here (see `staging`).
    pub work_dir: PathBuf,
    /// The bubblewrap binary; `None` looks up `bwrap` on PATH.
    pub bwrap: Option<PathBuf>,
}

pub struct LocalOperator {
    shared: Arc<Shared>,
}

struct Shared {
    config: LocalConfig,
    /// The sandbox binary, or the message every task fails with.
    bwrap: Result<PathBuf, String>,
    tasks: Mutex<HashMap<TaskKey, Tracked>>,
    outbox: Outbox,
    /// Signalled whenever a task leaves `tasks`.
    task_left: Notify,
    shutting_down: AtomicBool,
}

/// A task accepted and not yet finished.
struct Tracked {
    workflow_id: String,
    group: String,
    /// Set to `Some(reason)` to stop the task wherever it is.
    cancel: watch::Sender<Option<String>>,
}

/// Holds tasks of a barrier group until every one of them is prepared.
/// A count rather than `tokio::sync::Barrier`: a task that fails or is
/// canceled still counts itself in and then leaves, never stranding the rest.
#[derive(Clone)]
struct GroupGate {
    unprepared: Arc<watch::Sender<usize>>,
}

impl GroupGate {
    fn new(tasks: usize) -> GroupGate {
        GroupGate {
            unprepared: Arc::new(watch::channel(tasks).0),
        }
    }

    fn arrive(&self) {
        self.unprepared
            .send_modify(|left| *left = left.saturating_sub(1));
    }

    async fn all_arrived(&self) {
        let mut left = self.unprepared.subscribe();
        let _ = left.wait_for(|left| *left == 0).await;
    }
}

impl LocalOperator {
    pub fn new(config: LocalConfig) -> LocalOperator {
        let bwrap = sandbox::locate_bwrap(config.bwrap.as_deref());
        if let Err(message) = &bwrap {
            tracing::error!("{message}");
        }
        LocalOperator {
            shared: Arc::new(Shared {
                config,
                bwrap,
                tasks: Mutex::new(HashMap::new()),
                outbox: Outbox::default(),
                task_left: Notify::new(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// Runs until `from_server` closes: first sends FromOperator::Hello{backend, version: env!("CARGO_PKG_VERSION"), running: keys of tasks still running in this process}, then acts on each message and sends FromOperator::JobDone{job_id} once it has acted, plus TaskStatus and Logs messages as tasks progress.
    pub async fn serve(
        &self,
        mut from_server: mpsc::Receiver<ToOperator>,
        to_server: mpsc::Sender<FromOperator>,
    ) {
        // The running list is taken under the outbox lock: a task finishing
        // meanwhile is either listed and reports on this connection after
        // Hello, or already out of the set (finished) when the list is taken.
        let shared = &self.shared;
        shared
            .outbox
            .connect(to_server, || FromOperator::Hello {
                backend: shared.config.backend.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                running: shared.running(),
                executor: crate::protocol::EXECUTOR_LOCAL.to_string(),
            })
            .await;
        // Heartbeats with this host's inventory, on connect and then every
        // interval, for as long as this connection is served.
        let heartbeats = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                loop {
                    let (name, dir) = (
                        shared.config.backend.clone(),
                        shared.config.work_dir.clone(),
                    );
                    let node =
                        tokio::task::spawn_blocking(move || inventory::this_host(&name, &dir))
                            .await;
                    match node {
                        Ok(node) => {
                            shared
                                .outbox
                                .send(FromOperator::Heartbeat { nodes: vec![node] })
                                .await
                        }
                        Err(error) => tracing::warn!(%error, "reading the inventory failed"),
                    }
                    tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                }
            })
        };
        let _stop_heartbeats = AbortOnDrop(heartbeats);

        while let Some(message) = from_server.recv().await {
            let job_id = match message {
                ToOperator::CreateGroup { job_id, group } => {
                    self.create_group(group).await;
                    job_id
                }
                ToOperator::CancelGroup {
                    job_id,
                    workflow_id,
                    group,
                    reason,
                } => {
                    self.shared.cancel_group(&workflow_id, &group, &reason);
                    job_id
                }
            };
            self.shared
                .outbox
                .send(FromOperator::JobDone { job_id })
                .await;
        }
    }

    /// Kill every running task (used on shutdown). Waits, boundedly, for
    /// their final reports; afterwards new tasks fail to start.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for tracked in self.shared.lock_tasks().values() {
            tracked
                .cancel
                .send_replace(Some("the executor is shutting down".to_string()));
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            loop {
                let left = self.shared.task_left.notified();
                tokio::pin!(left);
                left.as_mut().enable();
                if self.shared.lock_tasks().is_empty() {
                    return;
                }
                left.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("tasks still finishing after {SHUTDOWN_GRACE:?}; shutting down anyway");
        }
    }

    async fn create_group(&self, group: GroupLaunch) {
        let accepted = self.shared.accept(&group);
        for (launch, _) in &accepted {
            tracing::info!(workflow = %launch.key.workflow_id, task = %launch.key.task, "task accepted");
            self.shared
                .outbox
                .task_status(&launch.key, TaskStatus::Scheduling, None, None)
                .await;
        }
        let gate = (group.barrier && accepted.len() > 1).then(|| GroupGate::new(accepted.len()));
        for (launch, cancel) in accepted {
            let shared = Arc::clone(&self.shared);
            let gate = gate.clone();
            tokio::spawn(async move { shared.drive(launch, cancel, gate).await });
        }
    }
}

impl Shared {
    fn lock_tasks(&self) -> MutexGuard<'_, HashMap<TaskKey, Tracked>> {
        // A panic elsewhere while holding the lock leaves the map consistent
        // (every update is a single insert or remove), so poison is ignored.
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn running(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self.lock_tasks().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Registers the group's tasks that are not already running here.
    fn accept(&self, group: &GroupLaunch) -> Vec<(TaskLaunch, watch::Receiver<Option<String>>)> {
        let mut tasks = self.lock_tasks();
        let mut accepted = Vec::new();
        for launch in &group.tasks {
            if tasks.contains_key(&launch.key) {
                tracing::debug!(task = %launch.key.task, "duplicate dispatch of a running task ignored");
                continue;
            }
            let (cancel, canceled) = watch::channel(None);
            tasks.insert(
                launch.key.clone(),
                Tracked {
                    workflow_id: group.workflow_id.clone(),
                    group: group.group.clone(),
                    cancel,
                },
            );
            accepted.push((launch.clone(), canceled));
        }
        accepted
    }

    fn cancel_group(&self, workflow_id: &str, group: &str, reason: &str) {
        let tasks = self.lock_tasks();
        let mut hit = 0;
        for tracked in tasks.values() {
            if tracked.workflow_id == workflow_id && tracked.group == group {
                tracked.cancel.send_replace(Some(reason.to_string()));
                hit += 1;
            }
        }
        tracing::info!(
            workflow = workflow_id,
            group,
            reason,
            tasks = hit,
            "group canceled"
        );
    }

    /// One task from acceptance to its final report.
    async fn drive(
        &self,
        launch: TaskLaunch,
        cancel: watch::Receiver<Option<String>>,
        gate: Option<GroupGate>,
    ) {
        let key = launch.key.clone();
        let outcome = self.run(&launch, cancel, gate).await;
        // Leave the running set before the final report: see the outbox's
        // reconnect invariant.
        self.lock_tasks().remove(&key);
        self.task_left.notify_waiters();
        let (status, exit_code, message) = match outcome {
            Ok(exit) => final_status(&exit),
            Err(Stopped::Canceled(reason)) => (
                TaskStatus::Failed,
                None,
                Some(format!("canceled: {reason}")),
            ),
            Err(Stopped::Failed(error)) => {
                let (status, code) = error.report();
                (status, Some(code), Some(error.to_string()))
            }
        };
        tracing::info!(workflow = %key.workflow_id, task = %key.task, %status, ?exit_code, "task finished");
        self.outbox
            .task_status(&key, status, exit_code, message)
            .await;
    }

    async fn run(
        &self,
        launch: &TaskLaunch,
        mut cancel: watch::Receiver<Option<String>>,
        gate: Option<GroupGate>,
    ) -> Result<Exit, Stopped> {
        // The executor's own note takes the run's first offset; data phase
        // lines and output follow in order.
        let first_offset = super::log_lines::run_offset_base();
        let prepared = match self.prepare(launch, first_offset).await {
            Ok((bwrap, prepared)) => self
                .download(launch, &prepared, &mut cancel, first_offset + 1)
                .await
                .map(|next_offset| (bwrap, prepared, next_offset)),
            Err(stopped) => Err(stopped),
        };
        if let Some(gate) = &gate {
            gate.arrive();
        }
        let (bwrap, prepared, next_offset) = prepared?;
        if let Some(gate) = &gate {
            tokio::select! {
                _ = gate.all_arrived() => {}
                reason = process::cancel_reason(&mut cancel) => return Err(Stopped::Canceled(reason)),
            }
        }
        let canceled = cancel.borrow().clone();
        if let Some(reason) = canceled {
            return Err(Stopped::Canceled(reason));
        }

        let mut argv = launch.command.clone();
        argv.extend(launch.args.iter().cloned());
        let args = sandbox::bwrap_args(&SandboxSpec {
            key: &launch.key,
            output_dir: &prepared.output_dir,
            inputs: &prepared.inputs,
            files: &prepared.files,
            environment: &launch.environment,
            argv: &argv,
        });
        let child = process::spawn(&bwrap, args)?;
        self.outbox
            .task_status(&launch.key, TaskStatus::Running, None, None)
            .await;
        let exit = process::supervise(
            child,
            &launch.key,
            &self.outbox,
            cancel.clone(),
            next_offset,
        )
        .await?;
        // OSMO uploads after every exit except a cancel.
        if exit.canceled.is_none() {
            self.upload(launch, &prepared, &mut cancel, exit.next_offset)
                .await?;
        }
        Ok(exit)
    }

    /// Downloads the task's inputs into its input dirs; returns the next
    /// free log offset.
    async fn download(
        &self,
        launch: &TaskLaunch,
        prepared: &Prepared,
        cancel: &mut watch::Receiver<Option<String>>,
        first_offset: u64,
    ) -> Result<u64, Stopped> {
        let data =
            match &launch.data {
                Some(data) => data,
                None if launch.inputs.is_empty() => return Ok(first_offset),
                None => return Err(ExecError::Data(PhaseFailure {
                    exit_code: EXIT_DOWNLOAD_FAILED,
                    message:
                        "the launch names inputs but no data store (a server too old for task data)"
                            .into(),
                })
                .into()),
            };
        let start = now_ms();
        let (lines, line_rx) = PhaseLines::new();
        let say = |text: String| lines.say(text);
        let (result, next_offset) = self
            .data_phase(
                &launch.key,
                cancel,
                first_offset,
                (&lines, line_rx),
                data::download_inputs(data, &prepared.inputs, &say),
            )
            .await;
        let times = TaskDataTimes {
            input_download_start: Some(start),
            input_download_end: Some(now_ms()),
            ..TaskDataTimes::default()
        };
        self.send_times(&launch.key, times).await;
        match result {
            PhaseEnd::Done(Ok(())) => Ok(next_offset),
            PhaseEnd::Done(Err(failure)) => Err(ExecError::Data(failure).into()),
            PhaseEnd::Canceled(reason) => Err(Stopped::Canceled(reason)),
        }
    }

    /// Uploads the output dir where the launch says.
    async fn upload(
        &self,
        launch: &TaskLaunch,
        prepared: &Prepared,
        cancel: &mut watch::Receiver<Option<String>>,
        first_offset: u64,
    ) -> Result<(), Stopped> {
        let Some(data) = &launch.data else {
            return Ok(());
        };
        if data.outputs.is_empty() && data.intermediate.is_none() {
            return Ok(());
        }
        let start = now_ms();
        let (lines, line_rx) = PhaseLines::new();
        let say = |text: String| lines.say(text);
        let (result, _) = self
            .data_phase(
                &launch.key,
                cancel,
                first_offset,
                (&lines, line_rx),
                data::upload_outputs(data, &prepared.output_dir, &say),
            )
            .await;
        let times = TaskDataTimes {
            output_upload_start: Some(start),
            output_upload_end: Some(now_ms()),
            ..TaskDataTimes::default()
        };
        self.send_times(&launch.key, times).await;
        match result {
            PhaseEnd::Done(Ok(())) => Ok(()),
            PhaseEnd::Done(Err(failure)) => Err(ExecError::Data(failure).into()),
            PhaseEnd::Canceled(reason) => Err(Stopped::Canceled(reason)),
        }
    }

    /// Runs one data phase whose lines (said to `lines`) go to the task's
    /// log (stream Osmo) from `first_offset` on, stopping it if the task is
    /// canceled. Returns how it ended and the next free offset.
    async fn data_phase(
        &self,
        key: &TaskKey,
        cancel: &mut watch::Receiver<Option<String>>,
        first_offset: u64,
        (lines, line_rx): (&PhaseLines, mpsc::Receiver<LogLine>),
        phase: impl std::future::Future<Output = Result<(), PhaseFailure>>,
    ) -> (PhaseEnd, u64) {
        let work = async {
            let end = tokio::select! {
                result = phase => PhaseEnd::Done(result),
                reason = process::cancel_reason(cancel) => PhaseEnd::Canceled(reason),
            };
            // Ends the batcher once it has sent what is queued.
            lines.close();
            end
        };
        tokio::join!(
            work,
            super::log_lines::batch(key, line_rx, &self.outbox, first_offset)
        )
    }

    async fn send_times(&self, key: &TaskKey, times: TaskDataTimes) {
        self.outbox
            .send(FromOperator::DataTimes {
                key: key.clone(),
                times,
            })
            .await;
    }

    /// INITIALIZING: checks the sandbox and builds the task's host dirs.
    async fn prepare(
        &self,
        launch: &TaskLaunch,
        first_offset: u64,
    ) -> Result<(PathBuf, Prepared), Stopped> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ExecError::ShuttingDown.into());
        }
        let bwrap = self.bwrap.clone().map_err(ExecError::MissingSandbox)?;
        self.outbox
            .task_status(&launch.key, TaskStatus::Initializing, None, None)
            .await;
        let note = LogLine {
            offset: first_offset,
            stream: LogStream::Osmo,
            time: now_ms(),
            text: format!(
                "image {} is not pulled by the local executor; the command runs on the host's /usr",
                launch.image
            ),
        };
        self.outbox
            .send(FromOperator::Logs {
                key: launch.key.clone(),
                lines: vec![note],
            })
            .await;
        let work_dir = self.config.work_dir.clone();
        let task = launch.clone();
        let prepared = tokio::task::spawn_blocking(move || staging::prepare(&work_dir, &task))
            .await
            .map_err(|e| ExecError::Join(e.to_string()))??;
        Ok((bwrap, prepared))
    }
}

/// Aborts a spawned task when dropped (when `serve` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a data phase ended.
enum PhaseEnd {
    Done(Result<(), PhaseFailure>),
    Canceled(String),
}

/// Lines of a data phase on their way to the batcher; closed when the
/// phase ends so the batcher finishes.
struct PhaseLines {
    sender: Mutex<Option<mpsc::Sender<LogLine>>>,
}

impl PhaseLines {
    fn new() -> (PhaseLines, mpsc::Receiver<LogLine>) {
        let (sender, receiver) = mpsc::channel(PHASE_LINES_QUEUED_MAX);
        let lines = PhaseLines {
            sender: Mutex::new(Some(sender)),
        };
        (lines, receiver)
    }

    fn say(&self, text: String) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = sender.as_ref() {
            // Progress is at most a line a second: a full queue means a slow
            // connection, and a dropped progress line is harmless.
            let _ = sender.try_send(LogLine {
                offset: 0,
                stream: LogStream::Osmo,
                time: now_ms(),
                text,
            });
        }
    }

    fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }
}

/// Why a task ended before or instead of running to an exit.
enum Stopped {
    Canceled(String),
    Failed(ExecError),
}

impl From<ExecError> for Stopped {
    fn from(error: ExecError) -> Stopped {
        Stopped::Failed(error)
    }
}

fn final_status(exit: &Exit) -> (TaskStatus, Option<i32>, Option<String>) {
    if exit.code == 0 {
        return (TaskStatus::Completed, Some(0), None);
    }
    let how = match exit.signal {
        Some(signal) => format!("killed by signal {signal}"),
        None => format!("exited with code {}", exit.code),
    };
    let message = match &exit.canceled {
        Some(reason) => format!("canceled: {reason} ({how})"),
        None => how,
    };
    (TaskStatus::Failed, Some(exit.code), Some(message))
}
