//! The logger: task output lines as zstd chunks in object storage, indexed
//! through Raft, plus a bounded live buffer of the lines not yet durable.
//!
//! The logger runs on the node an operator is connected to (the leader, for
//! remote operators). The agent hub hands it each batch's lines: they enter
//! the live buffer at once (followers on this node see them), and before the
//! batch commits the hub has [`Logger::write_chunk`] write one chunk per task
//! run; the chunk's index entry commits in the same command as the
//! acknowledgement of the messages that carried it.
//!
//! Invariants: a chunk holds lines of one task run with strictly increasing
//! offsets and is written before its index entry is proposed; the live
//! buffer holds only lines above a run's durable offset (committed lines are
//! trimmed, the chunks serve them), at most [`LIVE_LINES_MAX`] per workflow,
//! and remembers the highest offset it evicted early so readers never skip
//! a line; followers are woken after every change.

use crate::objects::{Objects, ObjectsError};
use crate::operator::protocol::{LogLine, LogStream};
use gantry_storage::{LogChunk, TaskKey};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A chunk is cut once a task run's pending lines reach this many bytes.
pub const CHUNK_RAW_BYTES_TARGET: usize = 1024 * 1024;
/// ... or once its oldest pending line waited this long.
pub const CHUNK_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Live (not yet durable) lines kept per workflow, at most.
pub const LIVE_LINES_MAX: usize = 200_000;
/// zstd level: 3 is zstd's default, fast with a good ratio on text.
const ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredLine {
    pub task: String,
    pub retry_id: u32,
    pub stream: LogStream,
    #[serde(default)]
    pub offset: u64,
    pub time: i64,
    pub text: String,
}

/// A [`StoredLine`] borrowed from the line it is made of: what a chunk
/// writer serializes (the same JSON), without copying task name and text.
#[derive(Serialize)]
struct StoredLineRef<'a> {
    task: &'a str,
    retry_id: u32,
    stream: LogStream,
    offset: u64,
    time: i64,
    text: &'a str,
}

impl<'a> StoredLineRef<'a> {
    fn of(key: &'a TaskKey, line: &'a LogLine) -> StoredLineRef<'a> {
        StoredLineRef {
            task: &key.task,
            retry_id: key.retry_id,
            stream: line.stream,
            offset: line.offset,
            time: line.time,
            text: &line.text,
        }
    }
}

impl StoredLine {
    fn of(key: &TaskKey, line: &LogLine) -> StoredLine {
        StoredLine {
            task: key.task.clone(),
            retry_id: key.retry_id,
            stream: line.stream,
            offset: line.offset,
            time: line.time,
            text: line.text.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log chunk {key}: {source}")]
    Store { key: String, source: ObjectsError },
    #[error("log chunk {key}: {reason}")]
    Damaged { key: String, reason: String },
}

/// A task run within a workflow.
type Run = (String, u32);

#[derive(Default)]
struct LiveWorkflow {
    lines: VecDeque<StoredLine>,
    /// Highest offset accepted into the buffer, per run.
    accepted: HashMap<Run, u64>,
    /// Highest offset evicted before it was durable, per run.
    evicted: HashMap<Run, u64>,
}

#[derive(Clone)]
pub struct Logger {
    objects: Objects,
    live: Arc<Mutex<HashMap<String, LiveWorkflow>>>,
    appended: broadcast::Sender<String>,
}

/// Live lines of a workflow, and per run the highest offset evicted early.
pub struct LiveView {
    pub lines: Vec<StoredLine>,
    pub evicted: HashMap<Run, u64>,
}

impl Logger {
    pub fn new(objects: Objects) -> Logger {
        let (appended, _) = broadcast::channel(1024);
        Logger {
            objects,
            live: Arc::default(),
            appended,
        }
    }

    /// The log store (also holds each workflow's archive).
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveWorkflow>> {
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds lines above what the buffer already accepted for the run (a
    /// resend is dropped by offset) and wakes followers.
    pub fn push_live(&self, key: &TaskKey, lines: &[LogLine]) {
        {
            let mut live = self.lock();
            let workflow = live.entry(key.workflow_id.clone()).or_default();
            let run: Run = (key.task.clone(), key.retry_id);
            let mut accepted = workflow.accepted.get(&run).copied();
            for line in lines {
                if accepted.is_some_and(|last| line.offset <= last) {
                    continue;
                }
                accepted = Some(line.offset);
                workflow.lines.push_back(StoredLine::of(key, line));
            }
            if let Some(last) = accepted {
                workflow.accepted.insert(run, last);
            }
            while workflow.lines.len() > LIVE_LINES_MAX {
                if let Some(old) = workflow.lines.pop_front() {
                    let evicted = workflow
                        .evicted
                        .entry((old.task, old.retry_id))
                        .or_default();
                    *evicted = (*evicted).max(old.offset);
                }
            }
        }
        metrics::counter!(crate::metrics::LOG_RECEIVED_BYTES)
            .increment(lines.iter().map(|line| line.text.len() as u64).sum::<u64>());
        let _ = self.appended.send(key.workflow_id.clone());
    }

    /// Drops live lines of the run up to `durable_offset` (they are in a
    /// committed chunk now).
    pub fn trim_live(&self, key: &TaskKey, durable_offset: u64) {
        let mut live = self.lock();
        if let Some(workflow) = live.get_mut(&key.workflow_id) {
            workflow.lines.retain(|line| {
                !(line.task == key.task
                    && line.retry_id == key.retry_id
                    && line.offset <= durable_offset)
            });
        }
        drop(live);
        let _ = self.appended.send(key.workflow_id.clone());
    }

    /// The workflow's live lines (in arrival order).
    pub fn live(&self, workflow_id: &str) -> LiveView {
        let live = self.lock();
        match live.get(workflow_id) {
            Some(workflow) => LiveView {
                lines: workflow.lines.iter().cloned().collect(),
                evicted: workflow.evicted.clone(),
            },
            None => LiveView {
                lines: Vec::new(),
                evicted: HashMap::new(),
            },
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.appended.subscribe()
    }

    /// Compresses `lines` (one task run, offsets increasing, not empty) and
    /// writes them as one object; returns the index entry to commit.
    pub async fn write_chunk(
        &self,
        key: &TaskKey,
        lines: &[LogLine],
    ) -> Result<LogChunk, LogError> {
        let (first, last) = match (lines.first(), lines.last()) {
            (Some(first), Some(last)) => (first.offset, last.offset),
            _ => {
                return Err(LogError::Damaged {
                    key: format!("{}/{}", key.workflow_id, key.task),
                    reason: "a chunk needs at least one line".into(),
                })
            }
        };
        let object_key = chunk_key(key, first, last);
        let mut raw = Vec::with_capacity(lines.len() * 64);
        for line in lines {
            serde_json::to_writer(&mut raw, &StoredLineRef::of(key, line)).map_err(|error| {
                LogError::Damaged {
                    key: object_key.clone(),
                    reason: error.to_string(),
                }
            })?;
            raw.push(b'\n');
        }
        let raw_bytes = raw.len() as u64;
        let compressed =
            tokio::task::spawn_blocking(move || zstd::bulk::compress(&raw, ZSTD_LEVEL))
                .await
                .map_err(|error| LogError::Damaged {
                    key: object_key.clone(),
                    reason: error.to_string(),
                })?
                .map_err(|error| LogError::Damaged {
                    key: object_key.clone(),
                    reason: error.to_string(),
                })?;
        let stored_bytes = compressed.len() as u64;
        self.objects
            .put(&object_key, compressed)
            .await
            .map_err(|source| {
                metrics::counter!(crate::metrics::OBJECT_STORE_ERRORS).increment(1);
                LogError::Store {
                    key: object_key.clone(),
                    source,
                }
            })?;
        metrics::counter!(crate::metrics::LOG_CHUNKS_WRITTEN).increment(1);
        Ok(LogChunk {
            workflow_id: key.workflow_id.clone(),
            task: key.task.clone(),
            retry_id: key.retry_id,
            first_offset: first,
            last_offset: last,
            key: object_key,
            raw_bytes,
            stored_bytes,
            lines: lines.len() as u64,
        })
    }

    /// Reads one chunk's lines.
    pub async fn read_chunk(&self, chunk: &LogChunk) -> Result<Vec<StoredLine>, LogError> {
        let compressed = self
            .objects
            .get(&chunk.key)
            .await
            .map_err(|source| LogError::Store {
                key: chunk.key.clone(),
                source,
            })?;
        let capacity = usize::try_from(chunk.raw_bytes).unwrap_or(usize::MAX);
        let key = chunk.key.clone();
        tokio::task::spawn_blocking(move || {
            let damaged = |reason: String| LogError::Damaged {
                key: key.clone(),
                reason,
            };
            let raw = zstd::bulk::decompress(&compressed, capacity.max(1))
                .map_err(|error| damaged(error.to_string()))?;
            raw.split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    serde_json::from_slice::<StoredLine>(line)
                        .map_err(|error| damaged(error.to_string()))
                })
                .collect()
        })
        .await
        .map_err(|error| LogError::Damaged {
            key: chunk.key.clone(),
            reason: error.to_string(),
        })?
    }
}

/// `<workflow>/logs/<task>/<retry>/<first>-<last>.jsonl.zst`, offsets
/// zero-padded so keys sort in offset order.
fn chunk_key(key: &TaskKey, first: u64, last: u64) -> String {
    format!(
        "{}/logs/{}/{}/{first:020}-{last:020}.jsonl.zst",
        key.workflow_id, key.task, key.retry_id
    )
}

/// OSMO's rendered line: `YYYY/MM/DD HH:MM:SS [<task>] <text>`.
pub fn render_line(line: &StoredLine) -> String {
    let time = osmo_time(line.time);
    let source = run_source(&line.task, line.retry_id);
    match line.stream {
        LogStream::Osmo => format!("{time} [{source}][osmo] {}\n", line.text),
        LogStream::Stdout | LogStream::Stderr => format!("{time} [{source}] {}\n", line.text),
    }
}

/// `after=` of a resumed `/logs` stream: task run `task`/`retry_id` was
/// read up to `offset` (the task name last, since it may hold colons).
pub fn after_param(task: &str, retry_id: u32, offset: u64) -> String {
    format!("{task}:{retry_id}:{offset}")
}

/// Parses [`after_param`]'s form; the error says what is wrong with it.
pub fn parse_after_param(value: &str) -> Result<(&str, u32, u64), String> {
    let parsed = value.rsplitn(3, ':').collect::<Vec<_>>();
    let [offset, retry, task] = parsed.as_slice() else {
        return Err(format!("after: '{value}' is not <task>:<retry>:<offset>"));
    };
    match (retry.parse::<u32>(), offset.parse::<u64>()) {
        (Ok(retry), Ok(offset)) => Ok((task, retry, offset)),
        _ => Err(format!(
            "after: '{value}' needs a number for retry and offset"
        )),
    }
}

/// OSMO's time in log and event lines: `YYYY/MM/DD HH:MM:SS` (UTC).
pub fn osmo_time(ms: i64) -> impl std::fmt::Display {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y/%m/%d %H:%M:%S")
}

/// How a task run is named in log and event lines: `task` or `task retry-N`.
pub fn run_source(task: &str, retry_id: u32) -> String {
    if retry_id > 0 {
        format!("{task} retry-{retry_id}")
    } else {
        task.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TaskKey {
        TaskKey {
            workflow_id: "wf-1".into(),
            task: "a".into(),
            retry_id: 0,
        }
    }

    fn lines(offsets: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
        offsets
            .map(|offset| LogLine {
                offset,
                stream: LogStream::Stdout,
                time: 1_700_000_000_000,
                text: format!("step {offset} loss=0.{offset:04}"),
            })
            .collect()
    }

    #[test]
    fn the_borrowed_form_writes_the_stored_json() {
        let key = key();
        for line in lines(1..=3).iter().chain(&[LogLine {
            offset: 9,
            stream: LogStream::Stderr,
            time: -1,
            text: "quote \" backslash \\ tab \t é".into(),
        }]) {
            let borrowed = serde_json::to_string(&StoredLineRef::of(&key, line)).unwrap();
            let owned = serde_json::to_string(&StoredLine::of(&key, line)).unwrap();
            assert_eq!(borrowed, owned);
        }
    }

    #[tokio::test]
    async fn chunks_round_trip_through_the_store_compressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(Objects::open(None, dir.path()).expect("objects"));
        let chunk = logger
            .write_chunk(&key(), &lines(10..=5009))
            .await
            .expect("write");
        assert_eq!(
            (chunk.first_offset, chunk.last_offset, chunk.lines),
            (10, 5009, 5000)
        );
        assert!(chunk.stored_bytes * 5 < chunk.raw_bytes, "{chunk:?}");
        let back = logger.read_chunk(&chunk).await.expect("read");
        assert_eq!(back.len(), 5000);
        assert_eq!(back[0].text, "step 10 loss=0.0010");
        assert_eq!(back[4999].offset, 5009);
    }

    #[test]
    fn the_live_buffer_drops_resends_and_trims_durable_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(Objects::open(None, dir.path()).expect("objects"));
        logger.push_live(&key(), &lines(0..=9));
        logger.push_live(&key(), &lines(5..=14)); // 5..=9 are resends
        let offsets: Vec<u64> = logger.live("wf-1").lines.iter().map(|l| l.offset).collect();
        assert_eq!(offsets, (0..=14).collect::<Vec<_>>());
        logger.trim_live(&key(), 9);
        let offsets: Vec<u64> = logger.live("wf-1").lines.iter().map(|l| l.offset).collect();
        assert_eq!(offsets, (10..=14).collect::<Vec<_>>());
        logger.push_live(&key(), &lines(0..=3)); // durable and resent: dropped
        assert_eq!(logger.live("wf-1").lines.len(), 5);
    }
}
