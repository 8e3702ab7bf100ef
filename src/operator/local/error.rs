//! Errors of the local executor and how each maps onto a task report, and
//! [`Stopped`]: why a task ended without an exit of its own.
//!
//! Invariant: every failure a task can hit before or while starting its
//! process is one [`ExecError`] variant, and [`ExecError::report`] is the only
//! place that decides the status and exit code the control plane sees for it.

use gantry_storage::TaskStatus;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No sandbox available: tasks must never run unsandboxed.
    #[error("{0}")]
    MissingSandbox(String),
    /// A data phase failed (OSMO's 2010 download, 2012 upload).
    #[error("{}", .0.message)]
    Data(crate::data::PhaseFailure),
    /// A name from the launch (workflow id, task name, file path, env key)
    /// that cannot be used safely on the host or in the sandbox.
    #[error("invalid {what} {value:?}: {why}")]
    InvalidName {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not start the sandbox: {0}")]
    Spawn(#[source] io::Error),
    /// Waiting for the sandbox failed; the process state is unknown.
    #[error("lost track of the sandbox process: {0}")]
    Wait(#[source] io::Error),
    /// The task's cgroup (its resource limits) could not be made.
    #[error("cannot enforce the task's resource limits: {0}")]
    Limits(String),
    #[error("cannot build the sandbox's system call filter: {0}")]
    Seccomp(String),
    #[error("cannot hand the task its credentials: {0}")]
    Secrets(String),
    #[error("the executor is shutting down")]
    ShuttingDown,
    /// The network the task's pool asks for cannot be given.
    #[error("{0}")]
    Network(String),
    #[error("a background preparation step failed: {0}")]
    Join(String),
    /// The GPUs the task asks for cannot be given.
    #[error("{0}")]
    Gpu(String),
    /// The task's image could not be pulled, unpacked or mounted.
    #[error("{0}")]
    Image(String),
}

impl ExecError {
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> ExecError {
        ExecError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The status and exit code a task that hit this error is reported with.
    pub fn report(&self) -> (TaskStatus, i32) {
        match self {
            // A data failure is the task's own failure in OSMO's vocabulary,
            // not a start error of the backend.
            ExecError::Data(failure) => (TaskStatus::Failed, failure.exit_code),
            ExecError::Wait(_) => backend_error(TaskStatus::FailedBackendError, 3001),
            ExecError::Image(_) => backend_error(TaskStatus::FailedImagePull, 3002),
            _ => backend_error(TaskStatus::FailedStartError, 3003),
        }
    }
}

/// Why a task ended before or instead of running to an exit.
pub enum Stopped {
    Canceled(String),
    Failed(ExecError),
}

impl From<ExecError> for Stopped {
    fn from(error: ExecError) -> Stopped {
        Stopped::Failed(error)
    }
}

fn backend_error(status: TaskStatus, fallback: i32) -> (TaskStatus, i32) {
    (status, status.default_exit_code().unwrap_or(fallback))
}
