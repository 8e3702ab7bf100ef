//! Task data through object storage: what a task downloads into
//! `/osmo/data/input/N` before its command starts and uploads from
//! `/osmo/data/output` after it exits (OSMO's `osmo-ctrl` data phases).
//!
//! `store` describes a data store as it travels in a launch and opens a URL
//! against it (`s3://` through the `object_store` crate, `file://` for a
//! directory); `transfer` moves one prefix to or from one local directory
//! with a regex filter and progress lines; `task` runs a task's whole
//! download or upload phase and turns failures into OSMO's exit codes;
//! `checkpoint` uploads a running task's checkpoint directories, read
//! through `beneath` where the task's file system is not the reader's.
//! The local executor and the in-pod runtime (`gantry task-runtime exec`)
//! both call `task`, so the two paths move data the same way.
//!
//! Invariants: nothing outside the target directory is ever written on
//! download (keys with `.`/`..` parts are refused), nothing outside the
//! output directory is ever read on upload (symlinks are skipped, not
//! followed), and secrets never appear in `Debug` output or log lines.

pub mod beneath;
mod checkpoint;
mod store;
mod task;
mod transfer;

pub use checkpoint::{checkpoint_finally, checkpoint_periodically, TaskFiles};
pub use store::DataStore;
pub use task::{
    download_inputs, upload_outputs, DataInput, DataOutput, PhaseFailure, TaskData,
    EXIT_DOWNLOAD_FAILED, EXIT_UPLOAD_FAILED,
};

/// A line for the task's log (progress and summaries).
pub type Say<'a> = &'a (dyn Fn(String) + Send + Sync);

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("nothing is stored at {url}")]
    Missing { url: String },
    #[error("object '{key}' under {url} is not a safe relative path")]
    UnsafeKey { url: String, key: String },
    /// `note` says how the store was reached when that may be why
    /// (credentials), else it is empty.
    #[error("{url}: {source}{note}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
        note: String,
    },
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid regex '{pattern}': {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

impl DataError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> DataError {
        DataError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
