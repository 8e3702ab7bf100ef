//! `gantry workflow logs`: reads the `jsonl` form of `/logs` and, when the
//! stream is cut (the serving member died, the connection reset), resumes
//! it with `after=` on whichever member answers, so following a workflow
//! outlives the server it started on.
//!
//! Invariants: each line is handed on once, in the order served (the
//! resume cursor is the highest offset seen per task run, and the server
//! sends a run's lines in offset order); the follow ends only at the
//! server's end marker, on a final error (a 4xx answer, an unreadable
//! record), or once the stream has stayed cut, no new line arriving, for
//! `RESUME_GIVE_UP`.

use super::client::{encode_segment, ClientError, LogQuery};
use super::Client;
use crate::log_chunk::{after_param, StoredLine};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

/// How long resuming may go without receiving anything before giving up.
const RESUME_GIVE_UP: Duration = Duration::from_secs(90);
const RESUME_PAUSE_MIN: Duration = Duration::from_millis(200);
const RESUME_PAUSE_MAX: Duration = Duration::from_secs(2);

/// One record of the `jsonl` stream.
#[derive(Deserialize)]
#[serde(untagged)]
enum Record {
    End {
        #[allow(dead_code)]
        end: bool,
    },
    Cursor {
        after: Vec<(String, u32, u64)>,
    },
    Line(StoredLine),
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unreadable log record from the server: {0}")]
    Record(serde_json::Error),
    #[error("the log stream was cut and could not be resumed for {}s: {last}", RESUME_GIVE_UP.as_secs())]
    GaveUp { last: String },
}

/// Where a follow is: per task run, the highest offset received.
#[derive(Default)]
struct Cursor {
    upto: BTreeMap<(String, u32), u64>,
    /// Whether the first part (the tail, for `-n`) has been received.
    started: bool,
}

impl Cursor {
    fn note(&mut self, task: &str, retry_id: u32, offset: u64) {
        let upto = self
            .upto
            .entry((task.to_string(), retry_id))
            .or_insert(offset);
        *upto = (*upto).max(offset);
    }

    fn is_new(&self, line: &StoredLine) -> bool {
        self.upto
            .get(&(line.task.clone(), line.retry_id))
            .is_none_or(|upto| line.offset > *upto)
    }

    fn params(&self, query: &LogQuery<'_>) -> Vec<(&'static str, String)> {
        let mut params = LogQuery {
            // A resumed stream must not re-tail: the cursor says where it was.
            last_n_lines: query.last_n_lines.filter(|_| !self.started),
            ..*query
        }
        .params();
        params.push(("format", "jsonl".to_string()));
        for ((task, retry), offset) in &self.upto {
            params.push(("after", after_param(task, *retry, *offset)));
        }
        params
    }
}

/// Streams workflow `id`'s log to `on_line` until it is complete.
pub async fn follow(
    client: &Client,
    id: &str,
    query: &LogQuery<'_>,
    mut on_line: impl FnMut(&StoredLine) -> ControlFlow<()>,
) -> Result<(), FollowError> {
    let path = format!("/api/workflow/{}/logs", encode_segment(id));
    let mut cursor = Cursor::default();
    let mut pause = RESUME_PAUSE_MIN;
    // When the stream was first cut since lines last arrived.
    let mut cut_since: Option<tokio::time::Instant> = None;
    loop {
        let mut pending: Vec<u8> = Vec::new();
        let mut outcome: Option<Result<(), FollowError>> = None;
        let mut progressed = false;
        let streamed = client
            .stream(&path, &cursor.params(query), |chunk| {
                pending.extend_from_slice(chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let record: Vec<u8> = pending.drain(..=end).collect();
                    match serde_json::from_slice::<Record>(&record) {
                        Ok(Record::End { .. }) => {
                            outcome = Some(Ok(()));
                            return ControlFlow::Break(());
                        }
                        Ok(Record::Cursor { after }) => {
                            for (task, retry, offset) in after {
                                cursor.note(&task, retry, offset);
                            }
                            cursor.started = true;
                        }
                        Ok(Record::Line(line)) => {
                            if cursor.is_new(&line) {
                                // Only new lines count: a member that sends
                                // the cursor and then fails is no progress.
                                progressed = true;
                                cursor.note(&line.task, line.retry_id, line.offset);
                                if on_line(&line).is_break() {
                                    outcome = Some(Ok(()));
                                    return ControlFlow::Break(());
                                }
                            }
                        }
                        Err(error) => {
                            outcome = Some(Err(FollowError::Record(error)));
                            return ControlFlow::Break(());
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .await;
        if let Some(outcome) = outcome {
            return outcome;
        }
        let cut = match streamed {
            // A clean end without the marker: the member stopped mid-stream.
            Ok(()) => "the stream ended before the log was complete".to_string(),
            Err(error) if is_final(&error) => return Err(error.into()),
            Err(error) => error.to_string(),
        };
        if progressed {
            cut_since = None;
            pause = RESUME_PAUSE_MIN;
        }
        let cut_at = *cut_since.get_or_insert_with(tokio::time::Instant::now);
        if cut_at.elapsed() >= RESUME_GIVE_UP {
            return Err(FollowError::GaveUp { last: cut });
        }
        tracing::debug!(error = %cut, "log stream cut; resuming");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESUME_PAUSE_MAX);
    }
}

/// Errors a retry cannot fix: the server refused the request itself.
fn is_final(error: &ClientError) -> bool {
    match error {
        ClientError::Http { status, .. } => {
            !(status.is_server_error() || *status == StatusCode::MISDIRECTED_REQUEST)
        }
        ClientError::Connect { .. } | ClientError::Request { .. } => false,
        ClientError::Decode { .. }
        | ClientError::InvalidUrl { .. }
        | ClientError::Config { .. }
        | ClientError::SignIn { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_stream_keeps_its_filters_but_does_not_tail_again() {
        let query = LogQuery {
            task: Some("train"),
            last_n_lines: Some(10),
            retry_id: Some(1),
            errors_only: false,
        };
        let mut cursor = Cursor::default();
        let first = cursor.params(&query);
        assert!(first.contains(&("last_n_lines", "10".into())));
        assert!(first.contains(&("format", "jsonl".into())));
        cursor.note("train", 1, 41);
        cursor.note("train", 1, 7);
        cursor.started = true;
        let resumed = cursor.params(&query);
        assert!(!resumed.iter().any(|(key, _)| *key == "last_n_lines"));
        assert!(resumed.contains(&("task_name", "train".into())));
        assert!(resumed.contains(&("after", "train:1:41".into())));
    }

    #[test]
    fn records_are_told_apart() {
        assert!(matches!(
            serde_json::from_str::<Record>(r#"{"end":true}"#),
            Ok(Record::End { .. })
        ));
        assert!(matches!(
            serde_json::from_str::<Record>(r#"{"after":[["a",0,3]]}"#),
            Ok(Record::Cursor { after }) if after == vec![("a".to_string(), 0, 3)]
        ));
        let line = r#"{"task":"a","retry_id":0,"stream":"Stdout","offset":4,"time":0,"text":"hi"}"#;
        assert!(matches!(
            serde_json::from_str::<Record>(line),
            Ok(Record::Line(line)) if line.offset == 4 && line.text == "hi"
        ));
    }

    #[test]
    fn only_refusals_are_final() {
        let http = |status| ClientError::Http {
            status,
            message: String::new(),
            error_code: None,
            workflow_id: None,
        };
        assert!(is_final(&http(StatusCode::NOT_FOUND)));
        assert!(is_final(&http(StatusCode::UNAUTHORIZED)));
        assert!(!is_final(&http(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!is_final(&http(StatusCode::INTERNAL_SERVER_ERROR)));
    }
}
