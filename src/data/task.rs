//! A task's two data phases: download every input before the command,
//! upload the output directory after it.
//!
//! Missing input: a `{task: X}` input whose prefix holds nothing at all
//! means task X never published (every publish writes [`OUTPUT_MARKER`],
//! so an upstream with an empty output is not missing); a `{url: ...}` input
//! is missing when nothing is stored under the URL, or at it. Either fails
//! the task with [`EXIT_DOWNLOAD_FAILED`]; an upload failure fails it with
//! [`EXIT_UPLOAD_FAILED`] (OSMO's 2010 and 2012).

use super::store::DataStore;
use super::transfer::{self, put_marker};
use super::{DataError, Say};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// OSMO's exit code for a failed input download.
pub const EXIT_DOWNLOAD_FAILED: i32 = 2010;
/// OSMO's exit code for a failed output upload.
pub const EXIT_UPLOAD_FAILED: i32 = 2012;
/// Written last below a task's intermediate prefix by every publish; not
/// downloaded as data.
pub const OUTPUT_MARKER: &str = ".gantry-output";

/// Everything a task's data phases need, resolved by the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskData {
    pub store: DataStore,
    /// Index N is downloaded into `input/N`.
    pub inputs: Vec<DataInput>,
    pub outputs: Vec<DataOutput>,
    /// The task's intermediate prefix, when its output goes there too (it
    /// has downstream consumers, or no `outputs`).
    #[serde(default)]
    pub intermediate: Option<String>,
    /// The user's DATA credentials for URLs below their endpoints (from
    /// the launch's extras; never in this struct's own encodings).
    #[serde(skip)]
    pub user_stores: Vec<DataStore>,
}

impl TaskData {
    /// The store that opens `url`: the user's credential whose `s3://`
    /// root holds it most closely (as `DataStore::open` decides which keys
    /// go with a request, so a user's endpoint only ever gets requests
    /// signed with the user's keys), else the task's data store.
    pub fn store_for(&self, url: &str) -> &DataStore {
        self.user_stores
            .iter()
            .filter(|store| store.holds_url(url))
            .max_by_key(|store| store.root.len())
            .unwrap_or(&self.store)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataInput {
    /// For messages: `task produce`, `task wf-2:produce` or `url s3://...`.
    pub source: String,
    pub url: String,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOutput {
    pub url: String,
    #[serde(default)]
    pub regex: Option<String>,
}

/// A data phase failed: the task fails with this code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseFailure {
    pub exit_code: i32,
    pub message: String,
}

pub(super) fn compile(pattern: Option<&str>) -> Result<Option<Regex>, DataError> {
    pattern
        .map(|pattern| {
            Regex::new(pattern).map_err(|source| DataError::Regex {
                pattern: pattern.to_string(),
                source,
            })
        })
        .transpose()
}

/// Downloads input N into `input_dirs[N]` (which exist and are empty).
pub async fn download_inputs(
    data: &TaskData,
    input_dirs: &[PathBuf],
    say: Say<'_>,
) -> Result<(), PhaseFailure> {
    for (index, (input, dir)) in data.inputs.iter().zip(input_dirs).enumerate() {
        let label = format!("[download] input {index} ({})", input.source);
        let fail = |error: DataError| {
            let message = match &error {
                DataError::Missing { url } => format!(
                    "input {index} ({}): nothing is stored at {url}{}",
                    input.source,
                    if input.source.starts_with("task ") {
                        " (the task never published its output)"
                    } else {
                        ""
                    }
                ),
                other => format!("input {index} ({}): {other}", input.source),
            };
            say(format!("[download] failed: {message}"));
            PhaseFailure {
                exit_code: EXIT_DOWNLOAD_FAILED,
                message,
            }
        };
        let regex = compile(input.regex.as_deref()).map_err(fail)?;
        let location = data.store_for(&input.url).open(&input.url).map_err(fail)?;
        transfer::download(
            &location,
            dir,
            regex.as_ref(),
            &[OUTPUT_MARKER],
            &label,
            say,
        )
        .await
        .map_err(fail)?;
    }
    Ok(())
}

/// Uploads `output_dir` to each output URL (with its regex) and, when the
/// task has one, to its intermediate prefix (everything, then the marker).
pub async fn upload_outputs(
    data: &TaskData,
    output_dir: &Path,
    say: Say<'_>,
) -> Result<(), PhaseFailure> {
    let fail = |what: &str, error: DataError| {
        let message = format!("output upload to {what}: {error}");
        say(format!("[upload] failed: {message}"));
        PhaseFailure {
            exit_code: EXIT_UPLOAD_FAILED,
            message,
        }
    };
    for (index, output) in data.outputs.iter().enumerate() {
        let what = &output.url;
        let regex = compile(output.regex.as_deref()).map_err(|e| fail(what, e))?;
        let location = data
            .store_for(&output.url)
            .open(&output.url)
            .map_err(|e| fail(what, e))?;
        let label = format!("[upload] output {index} ({what})");
        transfer::upload(output_dir, &location, regex.as_ref(), &label, say)
            .await
            .map_err(|e| fail(what, e))?;
    }
    if let Some(url) = &data.intermediate {
        let location = data.store.open(url).map_err(|e| fail(url, e))?;
        let label = "[upload] intermediate output".to_string();
        // A task that wrote nothing still publishes (the marker), quietly:
        // most tasks have no output, and their logs stay theirs.
        let quiet = |_: String| {};
        let empty = std::fs::read_dir(output_dir).is_ok_and(|mut d| d.next().is_none());
        let say_here: Say<'_> = if empty { &quiet } else { say };
        let moved = transfer::upload(output_dir, &location, None, &label, say_here)
            .await
            .map_err(|e| fail(url, e))?;
        let marker = serde_json::json!({"files": moved.files, "bytes": moved.bytes});
        put_marker(&location, OUTPUT_MARKER, marker.to_string().into_bytes())
            .await
            .map_err(|e| fail(url, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL below a user's DATA credential is opened with it (the closest
    /// one wins); any other URL with the task's data store.
    #[test]
    fn a_users_data_credential_opens_the_urls_below_its_endpoint() {
        let store = |root: &str| DataStore {
            root: root.into(),
            ..DataStore::default()
        };
        let data = TaskData {
            store: store("s3://gantry-data"),
            user_stores: vec![store("s3://team"), store("s3://team/private")],
            ..TaskData::default()
        };
        assert_eq!(data.store_for("s3://team/a/b").root, "s3://team");
        assert_eq!(data.store_for("s3://team").root, "s3://team");
        assert_eq!(
            data.store_for("s3://team/private/x").root,
            "s3://team/private"
        );
        assert_eq!(data.store_for("s3://teamwork/x").root, "s3://gantry-data");
        assert_eq!(data.store_for("s3://other/x").root, "s3://gantry-data");
        // Spelled to climb out of a root: the store that holds the URL as
        // it is requested opens it, or nothing does.
        assert_eq!(data.store_for("s3://team/private/../x").root, "s3://team");
        let smuggled = "s3://team/private%2F..%2Fx";
        assert!(data.store_for(smuggled).open(smuggled).is_err());
        // Never a user's store for a file URL.
        let files = TaskData {
            store: store("s3://gantry-data"),
            user_stores: vec![store("file:///etc")],
            ..TaskData::default()
        };
        assert_eq!(
            files.store_for("file:///etc/shadow").root,
            "s3://gantry-data"
        );
    }
}
