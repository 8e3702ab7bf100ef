//! A task's data phases through `crate::data`: the input download before
//! its command and the output upload after it, each with its lines in the
//! task's log and its times reported as `DataTimes`.
//!
//! Invariants:
//! - A phase's lines go to the task's log (stream Osmo) in order from the
//!   offset it is given, and the phase returns the next free offset, so the
//!   run's offsets stay one sequence.
//! - A cancel stops a phase where it is; its lines said so far still go out.
//! - Every phase that starts reports its start and end times, whether it
//!   succeeded, failed or was canceled.
//! - A launch that names inputs without a data store fails the download
//!   (exit code 2010); no data store or nothing to upload skips the upload.
//! - Progress lines are best effort: a full queue drops them.

use super::Shared;
use crate::clock::now_ms;
use crate::data::{self, PhaseFailure, EXIT_DOWNLOAD_FAILED};
use crate::operator::local::error::{ExecError, Stopped};
use crate::operator::local::log_lines;
use crate::operator::local::process;
use crate::operator::local::staging::Prepared;
use crate::operator::local::task_files::TaskFiles;
use crate::protocol::{FromOperator, LogLine, LogStream, TaskLaunch};
use gantry_storage::{TaskDataTimes, TaskKey};
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};

/// Data phase lines waiting for the batcher, at most.
const PHASE_LINES_QUEUED_MAX: usize = 1024;

impl Shared {
    /// Downloads the task's inputs into its input dirs; returns the next
    /// free log offset.
    pub(super) async fn download(
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
    pub(super) async fn upload(
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

    /// The last upload of the task's checkpoints, after its command exited
    /// (read through the directories `files` kept open); returns the next
    /// free log offset.
    pub(super) async fn last_checkpoints(
        &self,
        launch: &TaskLaunch,
        files: &TaskFiles,
        cancel: &mut watch::Receiver<Option<String>>,
        first_offset: u64,
    ) -> Result<u64, Stopped> {
        let (Some(data), false) = (&launch.data, launch.extras.checkpoints.is_empty()) else {
            return Ok(first_offset);
        };
        let (lines, line_rx) = PhaseLines::new();
        let say = |text: String| lines.say(text);
        let open_dir = |path: &str| files.open_dir(path);
        let checkpoints = async {
            data::checkpoint_finally(
                data,
                &launch.extras.checkpoints,
                data::TaskFiles::Beneath(&open_dir),
                &say,
            )
            .await;
            Ok(())
        };
        let (end, next_offset) = self
            .data_phase(
                &launch.key,
                cancel,
                first_offset,
                (&lines, line_rx),
                checkpoints,
            )
            .await;
        match end {
            PhaseEnd::Done(_) => Ok(next_offset),
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
            log_lines::batch(key, line_rx, &self.outbox, first_offset)
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
