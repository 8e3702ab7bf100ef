//! Serving one connection: the operator's frames gathered into batches,
//! each prepared (`prepare`) and handed to the connection's committer
//! (`commit`), until the connection ends.
//!
//! Invariants:
//! - While one batch commits, up to [`BATCHES_AHEAD_MAX`] more are prepared
//!   (lines filtered, masked, made live, their chunks encoded and written),
//!   so that work overlaps the Raft commit. Batches still queued when the
//!   connection ends are not acknowledged; the operator resends them.
//! - A batch that holds only log lines waits up to [`CHUNK_AGE_MAX`] for
//!   more, until [`CHUNK_RAW_BYTES_TARGET`] bytes: chunks stay large and
//!   commits few; any other message cuts the batch at once, so a task's end
//!   also cuts its last chunk.
//! - A remote connection ends when this node stops leading: operators
//!   follow the leader, whose dispatcher is the only one sending jobs.

use super::commit::{committer_end, finish_commits, Committing};
use super::prepare::Intake;
use super::{Accepted, ConnectionEnd, OperatorHub};
use crate::control::logger::{CHUNK_AGE_MAX, CHUNK_RAW_BYTES_TARGET};
use crate::protocol::byte_queue;
use crate::protocol::wire::Up;
use crate::protocol::FromOperator;
use gantry_raft::RaftNode;
use tokio::sync::mpsc;

/// Operator messages folded into one command, at most.
pub const REPORTS_PER_COMMAND_MAX: usize = 4096;

/// Estimated encoded bytes of the reports folded into one command, at most
/// (the first message always goes): half of what one command may hold,
/// leaving room for the log chunk entries the batch adds.
pub const REPORT_BYTES_PER_COMMAND_MAX: usize = gantry_raft::proposer::COMMAND_BYTES_MAX / 2;

/// Prepared batches waiting for the committer, at most: the next batches'
/// lines are encoded, compressed and written while one commits.
const BATCHES_AHEAD_MAX: usize = 2;

impl OperatorHub {
    /// Serves the operator's frames until the connection closes, this node
    /// stops leading (if the connection follows the leader), or a batch
    /// cannot be committed (the operator reconnects and resends).
    ///
    /// Two stages: this loop turns frames into prepared batches (lines
    /// filtered, masked, made live, and their chunks being written), and a
    /// committer commits them one at a time, in order, and acknowledges.
    /// The next batches are prepared while one commits, so encoding,
    /// compression and the chunk writes overlap the Raft commit.
    pub async fn serve(
        &self,
        accepted: Accepted,
        mut up: byte_queue::Receiver<Up>,
    ) -> ConnectionEnd {
        let connections_gauge = metrics::gauge!(
            crate::metrics::OPERATOR_CONNECTIONS,
            "backend" => accepted.backend.clone()
        );
        connections_gauge.increment(1.0);
        let Accepted {
            backend,
            instance,
            generation,
            acked,
            acks,
            follow_leader,
        } = accepted;
        let mut intake = Intake::new(backend.clone(), acked);
        let (to_commit, batches) = mpsc::channel(BATCHES_AHEAD_MAX);
        let committing = Committing::new(backend.clone(), instance, generation, acks);
        let mut committer = tokio::spawn(self.clone().commit_batches(committing, batches));
        let end = loop {
            let first = tokio::select! {
                frame = up.recv() => frame,
                () = leadership_lost(&self.node), if follow_leader => {
                    break ConnectionEnd::NotLeader;
                }
                ended = &mut committer => break committer_end(ended),
            };
            let Some(first) = first else {
                break finish_commits(to_commit, &mut committer).await;
            };
            let mut frames = vec![first];
            let mut line_bytes = frame_line_bytes(&frames[0]);
            let mut report_bytes = frame_report_bytes(&frames[0]);
            // Up to the chunk target, so a backlog still makes chunks of about
            // that size, and within what one replicated command may hold.
            while frames.len() < REPORTS_PER_COMMAND_MAX
                && line_bytes < CHUNK_RAW_BYTES_TARGET
                && report_bytes < REPORT_BYTES_PER_COMMAND_MAX
            {
                match up.try_recv() {
                    Ok(frame) => {
                        line_bytes += frame_line_bytes(&frame);
                        report_bytes += frame_report_bytes(&frame);
                        frames.push(frame);
                    }
                    Err(_) => break,
                }
            }
            let closed = gather_log_frames(&mut up, &mut frames).await;
            match self.prepare(&mut intake, frames).await {
                Ok(Some(prepared)) => {
                    tokio::select! {
                        sent = to_commit.send(prepared) => {
                            if sent.is_err() {
                                break committer_end((&mut committer).await);
                            }
                        }
                        ended = &mut committer => break committer_end(ended),
                    }
                }
                Ok(None) => {}
                Err(end) => break end,
            }
            if closed {
                break finish_commits(to_commit, &mut committer).await;
            }
        };
        // Batches still queued are not acknowledged; the operator resends them.
        committer.abort();
        connections_gauge.decrement(1.0);
        self.unregister(&backend, generation);
        tracing::info!(%backend, %end, "operator disconnected");
        end
    }
}

/// Raw bytes of the log lines in one frame (0 for other messages).
fn frame_line_bytes(frame: &Up) -> usize {
    log_bytes(std::slice::from_ref(frame)).unwrap_or(0)
}

/// Estimated bytes a frame adds to the batch's command: a log frame adds at
/// most one chunk's index entry, any other message about its own encoding.
fn frame_report_bytes(frame: &Up) -> usize {
    const CHUNK_ENTRY_BYTES: usize = 256;
    let Up::Report { message, .. } = frame;
    match &**message {
        FromOperator::Logs { .. } => CHUNK_ENTRY_BYTES,
        other => gantry_raft::proposer::encoded_bytes(other),
    }
}

/// Raw bytes of the log lines in `frames`, or `None` if one of them is not
/// a log message (the batch must then go at once).
fn log_bytes(frames: &[Up]) -> Option<usize> {
    let mut bytes = 0;
    for Up::Report { message, .. } in frames {
        match &**message {
            FromOperator::Logs { lines, .. } => {
                bytes += lines.iter().map(|line| line.text.len() + 32).sum::<usize>();
            }
            _ => return None,
        }
    }
    Some(bytes)
}

/// While `frames` holds only log lines, waits for more until the chunk
/// target size or age is reached or another message arrives. Returns
/// whether the operator closed the stream meanwhile.
async fn gather_log_frames(up: &mut byte_queue::Receiver<Up>, frames: &mut Vec<Up>) -> bool {
    let Some(mut bytes) = log_bytes(frames) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + CHUNK_AGE_MAX;
    let mut report_bytes: usize = frames.iter().map(frame_report_bytes).sum();
    while bytes < CHUNK_RAW_BYTES_TARGET
        && frames.len() < REPORTS_PER_COMMAND_MAX
        && report_bytes < REPORT_BYTES_PER_COMMAND_MAX
    {
        let frame = match tokio::time::timeout_at(deadline, up.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return true,
            Err(_) => return false,
        };
        report_bytes += frame_report_bytes(&frame);
        frames.push(frame);
        match log_bytes(std::slice::from_ref(&frames[frames.len() - 1])) {
            Some(more) => bytes += more,
            None => return false,
        }
    }
    false
}

/// Resolves once this node is no longer the leader.
async fn leadership_lost(node: &RaftNode) {
    let mut metrics = node.metrics();
    loop {
        if node.leader_term(&metrics.borrow_and_update()).is_none() {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
