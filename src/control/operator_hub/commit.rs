//! Committing a connection's batches: one `OperatorReports` command per
//! batch, then the acknowledgement.
//!
//! Invariants:
//! - Batches commit one at a time, in order, and a batch is proposed only
//!   after the one before it committed, so a failed batch ends the
//!   connection before anything after it commits.
//! - A batch's command is proposed only once its chunks are written (their
//!   index entries ride in it), and the acknowledgement (`Down::Ack`) goes
//!   out only after that command is committed: an acknowledged line is in a
//!   committed chunk. Lines leave the live buffer only then.
//! - A committed `Hello` makes its connection ready for jobs (`registry`).

use super::prepare::{PendingChunk, Prepared};
use super::{ConnectionEnd, OperatorHub};
use crate::control::logger::LogError;
use gantry_storage::{Command, Outcome, RejectionKind};
use tokio::sync::{mpsc, watch};

/// The committing side of a connection.
pub(super) struct Committing {
    backend: String,
    instance: u64,
    generation: u64,
    acks: watch::Sender<u64>,
}

impl Committing {
    /// Connection `generation` of `backend`'s operator `instance`,
    /// acknowledging through `acks`.
    pub(super) fn new(
        backend: String,
        instance: u64,
        generation: u64,
        acks: watch::Sender<u64>,
    ) -> Committing {
        Committing {
            backend,
            instance,
            generation,
            acks,
        }
    }
}

/// Why the committer ended (it never returns while batches come).
pub(super) fn committer_end(
    joined: Result<ConnectionEnd, tokio::task::JoinError>,
) -> ConnectionEnd {
    joined.unwrap_or_else(|error| {
        ConnectionEnd::Protocol(format!("the batch committer stopped: {error}"))
    })
}

/// The operator closed its stream: commit what is prepared, then end.
pub(super) async fn finish_commits(
    to_commit: mpsc::Sender<Prepared>,
    committer: &mut tokio::task::JoinHandle<ConnectionEnd>,
) -> ConnectionEnd {
    drop(to_commit);
    committer_end(committer.await)
}

impl OperatorHub {
    /// Commits prepared batches in order until the channel closes (the
    /// connection ended) or one fails.
    pub(super) async fn commit_batches(
        self,
        mut committing: Committing,
        mut batches: mpsc::Receiver<Prepared>,
    ) -> ConnectionEnd {
        while let Some(batch) = batches.recv().await {
            if let Err(end) = self.commit(&mut committing, batch).await {
                return end;
            }
        }
        ConnectionEnd::Closed
    }

    /// Waits for the batch's chunks, commits its command, and acknowledges.
    async fn commit(
        &self,
        committing: &mut Committing,
        batch: Prepared,
    ) -> Result<(), ConnectionEnd> {
        let Prepared {
            now,
            mut commands,
            chunks,
            last_seq,
            hello,
        } = batch;
        let mut durable_now = Vec::with_capacity(chunks.len());
        for PendingChunk { seq, key, write } in chunks {
            let chunk = write
                .await
                .map_err(|error| {
                    ConnectionEnd::Logs(LogError::Damaged {
                        key: format!("{}/{}", key.workflow_id, key.task),
                        reason: format!("the chunk writer stopped: {error}"),
                    })
                })?
                .map_err(ConnectionEnd::Logs)?;
            durable_now.push((key, chunk.last_offset));
            commands.push((seq, Command::AppendLogChunk { chunk }));
        }
        commands.sort_by_key(|(seq, _)| *seq);
        let batch = Command::OperatorReports {
            now,
            backend: committing.backend.clone(),
            instance: committing.instance,
            last_seq,
            commands,
        };
        match self.node.propose(batch).await {
            // Applied, or refused as already applied (a resend that raced
            // another connection): either way it is committed.
            Ok(Outcome::Rejected(rejection)) if rejection.kind != RejectionKind::Conflict => {
                // Nothing of it applied (stale: another connection indexed
                // some of its lines meanwhile): the operator resends over a
                // new connection, which rereads the index.
                return Err(ConnectionEnd::Refused(rejection.message));
            }
            Ok(_) => {}
            Err(error) => return Err(ConnectionEnd::Propose(error)),
        }
        for (key, offset) in durable_now {
            self.logs.trim_live(&key, offset);
        }
        committing.acks.send_replace(last_seq);
        if hello {
            self.hello_committed(&committing.backend, committing.generation);
        }
        Ok(())
    }
}
