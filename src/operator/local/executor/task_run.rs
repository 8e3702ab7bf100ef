//! One task's run, from acceptance to its final report: INITIALIZING (the
//! sandbox check and the task's host directories), the input download, the
//! barrier of its group, RUNNING (the sandboxed process), the output upload,
//! and the final status.
//!
//! Invariants:
//! - Every accepted task sends exactly one final status, after all its logs:
//!   SCHEDULING (sent on acceptance) → INITIALIZING → RUNNING →
//!   COMPLETED/FAILED…, stopping early on a failure before the process
//!   starts.
//! - Tasks never run unsandboxed: without bubblewrap every task fails to
//!   start.
//! - A task leaves the task table before its final report (the outbox's
//!   reconnect invariant: a task listed in `Hello` reports after it).
//! - A barrier group's tasks start their processes only once every one of
//!   them is prepared; a task that fails or is canceled before that still
//!   counts itself in, so it never strands the rest.
//! - The run's log offsets are one sequence: the executor's note first,
//!   then the download's lines, the process output, the upload's lines.
//! - The command and args run with their `$(VAR)` references expanded from
//!   the task's environment, as kubelet runs them on Kubernetes.

use super::Shared;
use crate::clock::now_ms;
use crate::operator::local::error::{ExecError, Stopped};
use crate::operator::local::expansion;
use crate::operator::local::log_lines;
use crate::operator::local::process::{self, Exit};
use crate::operator::local::sandbox::{self, SandboxSpec};
use crate::operator::local::staging::{self, Prepared};
use crate::protocol::{FromOperator, LogLine, LogStream, TaskLaunch};
use gantry_storage::TaskStatus;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

/// Holds tasks of a barrier group until every one of them is prepared.
/// A count rather than `tokio::sync::Barrier`: a task that fails or is
/// canceled still counts itself in and then leaves, never stranding the rest.
#[derive(Clone)]
pub(super) struct GroupGate {
    unprepared: Arc<watch::Sender<usize>>,
}

impl GroupGate {
    pub(super) fn new(tasks: usize) -> GroupGate {
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

impl Shared {
    /// One task from acceptance to its final report.
    pub(super) async fn drive(
        &self,
        launch: TaskLaunch,
        cancel: watch::Receiver<Option<String>>,
        gate: Option<GroupGate>,
    ) {
        let key = launch.key.clone();
        let outcome = self.run(&launch, cancel, gate).await;
        // Leave the running set before the final report: see the outbox's
        // reconnect invariant.
        self.tasks.remove(&key);
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
        tracing::info!(workflow = %key.workflow_id, task = %key.task, %status, exit_code, "task finished");
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
        let first_offset = log_lines::run_offset_base();
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

        // kubelet expands `$(VAR)` from the environment on Kubernetes; here
        // the executor does, so a spec behaves the same on both.
        let argv: Vec<String> = launch
            .command
            .iter()
            .chain(&launch.args)
            .map(|part| expansion::expand(part, &launch.environment))
            .collect();
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
