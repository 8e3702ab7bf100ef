//! The logger: task output lines, stored per workflow and followed live.
//!
//! This stage keeps one append-only file of JSON lines per workflow under
//! the data directory (`logs/<workflow_id>.jsonl`); object-storage chunks
//! with a replicated index replace it in the logs stage. Invariants: lines
//! of one task are stored in the order the executor sent them; readers are
//! woken after every append.

use crate::operator::protocol::{LogLine, LogStream};
use gantry_storage::TaskKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{broadcast, Mutex};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredLine {
    pub task: String,
    pub retry_id: u32,
    pub stream: LogStream,
    pub time: i64,
    pub text: String,
}

#[derive(Clone)]
pub struct LogStore {
    dir: PathBuf,
    write_lock: Arc<Mutex<()>>,
    appended: broadcast::Sender<String>,
}

impl LogStore {
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let (appended, _) = broadcast::channel(1024);
        Ok(LogStore {
            dir: dir.to_path_buf(),
            write_lock: Arc::default(),
            appended,
        })
    }

    fn path(&self, workflow_id: &str) -> PathBuf {
        self.dir.join(format!("{workflow_id}.jsonl"))
    }

    pub async fn append(&self, key: &TaskKey, lines: &[LogLine]) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for line in lines {
            let stored = StoredLine {
                task: key.task.clone(),
                retry_id: key.retry_id,
                stream: line.stream,
                time: line.time,
                text: line.text.clone(),
            };
            serde_json::to_writer(&mut buffer, &stored).map_err(std::io::Error::other)?;
            buffer.push(b'\n');
        }
        {
            let _guard = self.write_lock.lock().await;
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(&key.workflow_id))
                .await?;
            file.write_all(&buffer).await?;
        }
        metrics::counter!(crate::metrics::LOG_RECEIVED_BYTES)
            .increment(lines.iter().map(|line| line.text.len() as u64).sum::<u64>());
        let _ = self.appended.send(key.workflow_id.clone());
        Ok(())
    }

    /// Lines stored for a workflow from byte `offset` on; returns the lines
    /// and the offset after the last complete line.
    pub async fn read_from(
        &self,
        workflow_id: &str,
        offset: u64,
    ) -> std::io::Result<(Vec<StoredLine>, u64)> {
        let mut file = match tokio::fs::File::open(self.path(workflow_id)).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), offset))
            }
            Err(error) => return Err(error),
        };
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        let mut lines = Vec::new();
        let mut consumed = offset;
        for raw in bytes.split_inclusive(|&b| b == b'\n') {
            if raw.last() != Some(&b'\n') {
                break;
            }
            consumed += raw.len() as u64;
            match serde_json::from_slice::<StoredLine>(raw) {
                Ok(line) => lines.push(line),
                Err(error) => {
                    tracing::warn!(%error, workflow = workflow_id, "skipping a damaged log line")
                }
            }
        }
        Ok((lines, consumed))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.appended.subscribe()
    }
}

/// OSMO's rendered line: `YYYY/MM/DD HH:MM:SS [<task>] <text>`.
pub fn render_line(line: &StoredLine) -> String {
    let time = chrono::DateTime::from_timestamp_millis(line.time)
        .unwrap_or_default()
        .format("%Y/%m/%d %H:%M:%S");
    let source = if line.retry_id > 0 {
        format!("{} retry-{}", line.task, line.retry_id)
    } else {
        line.task.clone()
    };
    match line.stream {
        LogStream::Osmo => format!("{time} [{source}][osmo] {}\n", line.text),
        LogStream::Stdout | LogStream::Stderr => format!("{time} [{source}] {}\n", line.text),
    }
}
