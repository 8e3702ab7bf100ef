//! The logger: task output lines as zstd chunks in object storage, indexed
//! through Raft, plus a bounded live buffer of the lines not yet durable.
//!
//! The logger runs on the node an operator is connected to (the leader, for
//! remote operators). The operator hub hands it each batch's lines: they enter
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

use crate::log_chunk::{self, StoredLine};
use crate::object_storage::{ObjectStorage, ObjectStorageError};
use crate::protocol::LogLine;
use gantry_storage::{LogChunk, TaskKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A chunk is cut once a task run's pending lines reach this many bytes.
pub const CHUNK_RAW_BYTES_TARGET: usize = 1024 * 1024;
/// ... or once its oldest pending line waited this long.
pub const CHUNK_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Live (not yet durable) lines kept per workflow, at most.
pub const LIVE_LINES_MAX: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log chunk {key}: {source}")]
    Store {
        key: String,
        source: ObjectStorageError,
    },
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
    objects: ObjectStorage,
    live: Arc<Mutex<HashMap<String, LiveWorkflow>>>,
    appended: broadcast::Sender<String>,
}

/// Live lines of a workflow, and per run the highest offset evicted early.
pub struct LiveView {
    pub lines: Vec<StoredLine>,
    pub evicted: HashMap<Run, u64>,
}

impl Logger {
    pub fn new(objects: ObjectStorage) -> Logger {
        let (appended, _) = broadcast::channel(1024);
        Logger {
            objects,
            live: Arc::default(),
            appended,
        }
    }

    /// The log store (also holds each workflow's archive).
    pub fn objects(&self) -> &ObjectStorage {
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
        let object_key = log_chunk::chunk_key(key, first, last);
        let damaged = |reason: String| LogError::Damaged {
            key: object_key.clone(),
            reason,
        };
        let raw = log_chunk::encode(key, lines).map_err(|error| damaged(error.to_string()))?;
        let raw_bytes = raw.len() as u64;
        let compressed = tokio::task::spawn_blocking(move || log_chunk::compress(&raw))
            .await
            .map_err(|error| damaged(error.to_string()))?
            .map_err(|error| damaged(error.to_string()))?;
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
            log_chunk::decode(&compressed, capacity).map_err(|reason| LogError::Damaged {
                key: key.clone(),
                reason,
            })
        })
        .await
        .map_err(|error| LogError::Damaged {
            key: chunk.key.clone(),
            reason: error.to_string(),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LogStream;

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

    #[tokio::test]
    async fn chunks_round_trip_through_the_store_compressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
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
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
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
