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
//! trimmed, the chunks serve them), at most [`LIVE_LINES_MAX`] lines and
//! [`LIVE_BYTES_PER_WORKFLOW_MAX`] bytes per workflow and [`LIVE_BYTES_MAX`]
//! in all (the oldest lines of the largest workflow go first), and
//! remembers the highest offset it evicted early so readers never skip a
//! line; every live line has a sequence number, increasing per workflow,
//! so a follower asks only for the lines after the last it saw
//! ([`Logger::live_since`]); a workflow with no live lines is forgotten
//! once nothing arrived for it for [`LIVE_IDLE_FORGET`]; the followers of
//! a workflow are woken after each change of that workflow (only), and
//! changes that come while a follower works coalesce into one wakeup.

use crate::log_chunk::{self, StoredLine};
use crate::object_storage::{ObjectStorage, ObjectStorageError};
use crate::protocol::LogLine;
use gantry_storage::{LogChunk, TaskKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// A chunk is cut once a task run's pending lines reach this many bytes.
pub const CHUNK_RAW_BYTES_TARGET: usize = 1024 * 1024;
/// ... or once its oldest pending line waited this long.
pub const CHUNK_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// Live (not yet durable) lines kept per workflow, at most.
pub const LIVE_LINES_MAX: usize = 200_000;
/// Bytes of live lines kept per workflow, at most.
pub const LIVE_BYTES_PER_WORKFLOW_MAX: usize = 64 << 20;
/// Bytes of live lines kept in all, at most.
pub const LIVE_BYTES_MAX: usize = 512 << 20;
/// How long a workflow with no live lines keeps its resend filter after
/// the last lines arrived (a resend comes within seconds).
pub const LIVE_IDLE_FORGET: std::time::Duration = std::time::Duration::from_secs(600);
/// How often idle workflows are looked for.
const LIVE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// What a live line costs beyond its text and task name (the record, the
/// queue slot).
const LINE_OVERHEAD_BYTES: usize = 96;

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

struct LiveWorkflow {
    /// Lines with their sequence numbers, oldest first.
    lines: VecDeque<(u64, StoredLine)>,
    /// What `lines` costs ([`line_bytes`]).
    bytes: usize,
    /// Highest offset accepted into the buffer, per run.
    accepted: HashMap<Run, u64>,
    /// Highest offset evicted before it was durable, per run.
    evicted: HashMap<Run, u64>,
    /// When lines last arrived.
    touched: Instant,
}

impl LiveWorkflow {
    fn new() -> LiveWorkflow {
        LiveWorkflow {
            lines: VecDeque::new(),
            bytes: 0,
            accepted: HashMap::new(),
            evicted: HashMap::new(),
            touched: Instant::now(),
        }
    }

    /// Drops the oldest line, remembering its offset as evicted early;
    /// returns the bytes freed.
    fn evict_oldest(&mut self) -> usize {
        let Some((_, old)) = self.lines.pop_front() else {
            return 0;
        };
        let freed = line_bytes(&old);
        self.bytes -= freed;
        let evicted = self.evicted.entry((old.task, old.retry_id)).or_default();
        *evicted = (*evicted).max(old.offset);
        freed
    }
}

fn line_bytes(line: &StoredLine) -> usize {
    line.text.len() + line.task.len() + LINE_OVERHEAD_BYTES
}

struct Live {
    workflows: HashMap<String, LiveWorkflow>,
    /// Bytes of every workflow's lines.
    bytes: usize,
    swept: Instant,
    /// The sequence number of the next line (of any workflow, so a
    /// workflow forgotten and seen again never reuses one).
    next_seq: u64,
}

impl Live {
    /// Evicts the oldest lines of the largest workflows until the total is
    /// within [`LIVE_BYTES_MAX`].
    fn bound_total(&mut self) {
        while self.bytes > LIVE_BYTES_MAX {
            let largest = self
                .workflows
                .values_mut()
                .max_by_key(|workflow| workflow.bytes);
            let Some(largest) = largest else {
                return;
            };
            // Down to what leaves room, in one go for this workflow.
            let mut freed = 0;
            while self.bytes - freed > LIVE_BYTES_MAX {
                let one = largest.evict_oldest();
                if one == 0 {
                    break;
                }
                freed += one;
            }
            if freed == 0 {
                return;
            }
            self.bytes -= freed;
        }
    }

    /// Forgets workflows with no live lines that nothing arrived for
    /// within [`LIVE_IDLE_FORGET`]; at most once per sweep interval.
    fn sweep(&mut self) {
        if self.swept.elapsed() < LIVE_SWEEP_INTERVAL {
            return;
        }
        self.swept = Instant::now();
        self.workflows.retain(|_, workflow| {
            !workflow.lines.is_empty() || workflow.touched.elapsed() < LIVE_IDLE_FORGET
        });
    }
}

/// Log streams one caller may follow at once on one server: a follower
/// holds a connection and wakes on every change of its workflow.
pub const FOLLOWERS_PER_CALLER_MAX: usize = 64;

#[derive(Clone)]
pub struct Logger {
    objects: ObjectStorage,
    live: Arc<Mutex<Live>>,
    /// Per followed workflow, a counter of its changes; a workflow nobody
    /// follows has none, so a change of it costs no wakeup at all.
    changes: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// Log streams followed now, per caller.
    followers: Arc<Mutex<HashMap<String, usize>>>,
}

/// One followed log stream of a caller, counted until dropped.
pub struct FollowSlot {
    followers: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut followers = self
            .followers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = followers.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                followers.remove(&self.caller);
            }
        }
    }
}

/// Live lines of a workflow, and per run the highest offset evicted early.
pub struct LiveView {
    pub lines: Vec<StoredLine>,
    pub evicted: HashMap<Run, u64>,
    /// The sequence number to ask [`Logger::live_since`] for next.
    pub next_seq: u64,
    /// Lines past these are live already (the read stopped at its bound).
    pub more: bool,
}

impl LiveView {
    /// No lines yet, and a cursor before every live line: what a follower
    /// that reads the buffer page by page starts from.
    pub fn empty_from_start() -> LiveView {
        LiveView {
            lines: Vec::new(),
            evicted: HashMap::new(),
            next_seq: 0,
            more: false,
        }
    }
}

impl Logger {
    pub fn new(objects: ObjectStorage) -> Logger {
        Logger {
            objects,
            live: Arc::new(Mutex::new(Live {
                workflows: HashMap::new(),
                bytes: 0,
                swept: Instant::now(),
                next_seq: 1,
            })),
            changes: Arc::default(),
            followers: Arc::default(),
        }
    }

    /// The log store (also holds each workflow's archive).
    pub fn objects(&self) -> &ObjectStorage {
        &self.objects
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds lines above what the buffer already accepted for the run (a
    /// resend is dropped by offset) and wakes followers.
    pub fn push_live(&self, key: &TaskKey, lines: &[LogLine]) {
        {
            let mut live = self.lock();
            let live = &mut *live;
            let workflow = live
                .workflows
                .entry(key.workflow_id.clone())
                .or_insert_with(LiveWorkflow::new);
            workflow.touched = Instant::now();
            let run: Run = (key.task.clone(), key.retry_id);
            let mut accepted = workflow.accepted.get(&run).copied();
            let bytes_before = workflow.bytes;
            for line in lines {
                if accepted.is_some_and(|last| line.offset <= last) {
                    continue;
                }
                accepted = Some(line.offset);
                let stored = StoredLine::of(key, line);
                workflow.bytes += line_bytes(&stored);
                workflow.lines.push_back((live.next_seq, stored));
                live.next_seq += 1;
            }
            if let Some(last) = accepted {
                workflow.accepted.insert(run, last);
            }
            while workflow.lines.len() > LIVE_LINES_MAX
                || workflow.bytes > LIVE_BYTES_PER_WORKFLOW_MAX
            {
                if workflow.evict_oldest() == 0 {
                    break;
                }
            }
            live.bytes = live.bytes - bytes_before + workflow.bytes;
            live.bound_total();
            live.sweep();
        }
        metrics::counter!(crate::metrics::LOG_RECEIVED_BYTES)
            .increment(lines.iter().map(|line| line.text.len() as u64).sum::<u64>());
        self.changed(&key.workflow_id);
    }

    /// Wakes the workflow's followers, if it has any.
    fn changed(&self, workflow_id: &str) {
        let changes = self
            .changes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(sender) = changes.get(workflow_id) {
            sender.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Drops live lines of the run up to `durable_offset` (they are in a
    /// committed chunk now).
    pub fn trim_live(&self, key: &TaskKey, durable_offset: u64) {
        let mut live = self.lock();
        let live_ref = &mut *live;
        if let Some(workflow) = live_ref.workflows.get_mut(&key.workflow_id) {
            let before = workflow.bytes;
            let mut freed = 0;
            workflow.lines.retain(|(_, line)| {
                let durable = line.task == key.task
                    && line.retry_id == key.retry_id
                    && line.offset <= durable_offset;
                if durable {
                    freed += line_bytes(line);
                }
                !durable
            });
            workflow.bytes = before - freed;
            live_ref.bytes -= freed;
        }
        live_ref.sweep();
        drop(live);
        self.changed(&key.workflow_id);
    }

    /// The workflow's live lines (in arrival order).
    pub fn live(&self, workflow_id: &str) -> LiveView {
        self.live_since(workflow_id, 0, usize::MAX)
    }

    /// The workflow's live lines with sequence numbers from `next_seq` on
    /// (in arrival order), about `bytes_max` bytes of them at most (at least
    /// one line): what a follower has not seen yet, without copying what it
    /// has, nor more than one wakeup should hold. `more` says lines were
    /// left for the next call.
    pub fn live_since(&self, workflow_id: &str, next_seq: u64, bytes_max: usize) -> LiveView {
        let live = self.lock();
        let Some(workflow) = live.workflows.get(workflow_id) else {
            return LiveView {
                lines: Vec::new(),
                evicted: HashMap::new(),
                next_seq: live.next_seq,
                more: false,
            };
        };
        // Sequence numbers increase along the queue (trimming keeps the
        // order): find the first wanted one by bisection.
        let skip = workflow.lines.partition_point(|(seq, _)| *seq < next_seq);
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut resume_at = None;
        for (seq, line) in workflow.lines.range(skip..) {
            if bytes >= bytes_max {
                resume_at = Some(*seq);
                break;
            }
            bytes += line_bytes(line);
            lines.push(line.clone());
        }
        LiveView {
            lines,
            evicted: workflow.evicted.clone(),
            next_seq: resume_at.unwrap_or(live.next_seq),
            more: resume_at.is_some(),
        }
    }

    /// A slot for `caller` to follow one more log stream, or `None` when it
    /// follows [`FOLLOWERS_PER_CALLER_MAX`] already.
    pub fn follow_slot(&self, caller: &str) -> Option<FollowSlot> {
        let mut followers = self
            .followers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = followers.entry(caller.to_string()).or_default();
        if *count >= FOLLOWERS_PER_CALLER_MAX {
            return None;
        }
        *count += 1;
        Some(FollowSlot {
            followers: self.followers.clone(),
            caller: caller.to_string(),
        })
    }

    /// Bytes of live lines held in all.
    pub fn live_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Wakes on every later change of `workflow_id`'s log (several changes
    /// between two waits wake it once). Dropping the last receiver of a
    /// workflow stops its wakeups (the next subscriber starts them again).
    pub fn subscribe(&self, workflow_id: &str) -> watch::Receiver<u64> {
        let mut changes = self
            .changes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Workflows whose followers all left are forgotten here, so the map
        // holds only followed workflows.
        changes.retain(|_, sender| sender.receiver_count() > 0);
        match changes.get(workflow_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                changes.insert(workflow_id.to_string(), sender);
                receiver
            }
        }
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

    #[test]
    fn followers_wake_for_their_own_workflow_once_per_burst() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
        let mut follower = logger.subscribe("wf-1");
        let other = TaskKey {
            workflow_id: "wf-2".into(),
            ..key()
        };
        logger.push_live(&other, &lines(0..=9));
        assert!(
            !follower.has_changed().unwrap_or(true),
            "another workflow's lines"
        );
        logger.push_live(&key(), &lines(0..=9));
        logger.push_live(&key(), &lines(10..=19));
        logger.trim_live(&key(), 9);
        assert!(follower.has_changed().unwrap_or(false));
        follower.borrow_and_update();
        assert!(
            !follower.has_changed().unwrap_or(true),
            "three changes, one wakeup"
        );
        // The last follower gone, the workflow's watch goes at the next subscribe.
        drop(follower);
        let _again = logger.subscribe("wf-3");
        assert_eq!(logger.changes.lock().map(|c| c.len()).unwrap_or(0), 1);
    }

    #[test]
    fn a_follower_gets_only_the_lines_after_its_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
        let first = logger.live_since("wf-1", 0, usize::MAX);
        assert!(first.lines.is_empty());
        logger.push_live(&key(), &lines(0..=9));
        let seen = logger.live_since("wf-1", first.next_seq, usize::MAX);
        assert_eq!(seen.lines.len(), 10);
        logger.push_live(&key(), &lines(10..=12));
        logger.trim_live(&key(), 4); // a trim in between keeps the order
        let fresh = logger.live_since("wf-1", seen.next_seq, usize::MAX);
        let offsets: Vec<u64> = fresh.lines.iter().map(|l| l.offset).collect();
        assert_eq!(offsets, vec![10, 11, 12]);
        assert!(logger
            .live_since("wf-1", fresh.next_seq, usize::MAX)
            .lines
            .is_empty());
    }

    #[test]
    fn a_follower_reads_a_long_backlog_a_bounded_page_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
        logger.push_live(&key(), &lines(0..=999));
        let page_bytes = 10 * line_bytes(&logger.live("wf-1").lines[0]);
        let mut next_seq = 0;
        let mut offsets = Vec::new();
        let mut pages = 0;
        loop {
            let page = logger.live_since("wf-1", next_seq, page_bytes);
            assert!(page.lines.len() <= 11, "{}", page.lines.len());
            offsets.extend(page.lines.iter().map(|l| l.offset));
            next_seq = page.next_seq;
            pages += 1;
            if !page.more {
                break;
            }
        }
        assert_eq!(offsets, (0..=999).collect::<Vec<_>>());
        assert!(pages >= 90, "{pages}");
        // A page bound below one line still makes progress.
        let one = logger.live_since("wf-1", 0, 1);
        assert_eq!((one.lines.len(), one.more), (1, true));
    }

    #[test]
    fn live_lines_are_bounded_in_bytes_per_workflow_and_counted_back_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
        let big = "x".repeat(64 * 1024);
        let batch: Vec<LogLine> = (0..2048u64)
            .map(|offset| LogLine {
                offset,
                stream: LogStream::Stdout,
                time: 0,
                text: big.clone(),
            })
            .collect();
        logger.push_live(&key(), &batch); // 128 MiB offered
        let view = logger.live("wf-1");
        assert!(
            logger.live_bytes() <= LIVE_BYTES_PER_WORKFLOW_MAX,
            "{}",
            logger.live_bytes()
        );
        assert!(view.lines.len() < 2048);
        // The oldest went, and are remembered as evicted early.
        let evicted = view.evicted.get(&("a".to_string(), 0)).copied();
        assert_eq!(evicted, Some(view.lines[0].offset - 1));
        logger.trim_live(&key(), 2047);
        assert_eq!(logger.live_bytes(), 0, "trimming gives the bytes back");
    }

    #[test]
    fn a_caller_follows_a_bounded_number_of_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = Logger::new(ObjectStorage::open(None, dir.path()).expect("objects"));
        let slots: Vec<FollowSlot> = (0..FOLLOWERS_PER_CALLER_MAX)
            .map(|_| logger.follow_slot("alice").expect("a slot"))
            .collect();
        assert!(logger.follow_slot("alice").is_none());
        assert!(logger.follow_slot("bob").is_some(), "per caller");
        drop(slots);
        assert!(logger.follow_slot("alice").is_some(), "slots come back");
    }
}
