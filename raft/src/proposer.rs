//! Group commit: concurrent proposals ride in one log entry.
//!
//! Invariants: each proposal gets exactly one reply — its own outcome, or
//! the error of the write that carried it; at most
//! [`PROPOSALS_IN_FLIGHT_MAX`] entries are in flight, and while they are,
//! new proposals queue and leave together as the next batch (up to
//! [`BATCH_COMMANDS_MAX`] commands and [`ENTRY_BYTES_MAX`] encoded bytes);
//! a command larger than [`COMMAND_BYTES_MAX`] is refused before it is
//! proposed, so no entry is ever too large for the transport to carry.
//!
//! Pacing: openraft 0.9 appends one entry at a time and waits for its
//! fsync, so entries proposed during an append each cost an fsync of their
//! own. Given the log's append activity, the next batch therefore leaves
//! only once the log has taken up the previous one and is idle (or the
//! previous one has finished, e.g. refused): one fsync per batch, and
//! batches as large as the fsync is slow.

use crate::error::RaftError;
use crate::types::{Batch, TypeConfig};
use gantry_storage::{Command, Outcome};
use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

/// Commands in one log entry at most.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Encoded bytes of one log entry's commands at most. 1 MiB: an
/// AppendEntries request carries many entries within the transport's body
/// limit, a follower that falls behind catches up in steps that each fit in
/// one RPC timeout, and a workflow of 10,000 tasks still fits in one submit
/// (its spec and plan travel compressed).
pub const ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// Encoded bytes of one command at most: an entry's framing comes on top.
pub const COMMAND_BYTES_MAX: usize = ENTRY_BYTES_MAX - 1024;
/// Log entries proposed and not yet applied, at most.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4;
/// Proposals waiting for a batch, at most (back-pressure beyond it).
pub const PROPOSAL_QUEUE_MAX: usize = 16 * 1024;

struct Pending {
    command: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<Outcome, RaftError>>,
}

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl Proposer {
    /// `log_activity`: the log store's [`crate::log_store::LogStore::activity`],
    /// to pace batches by (without it, batches leave as soon as a slot is free).
    pub fn start(
        raft: Raft<TypeConfig>,
        log_activity: Option<watch::Receiver<(u64, u64)>>,
    ) -> Proposer {
        let (queue, receiver) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(run_batches(raft, receiver, log_activity));
        Proposer { queue }
    }

    /// Proposes one command and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> Result<Outcome, RaftError> {
        let bytes = checked_command_bytes(&command)?;
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending {
                command,
                bytes,
                reply,
            })
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        outcome.await.map_err(|_| RaftError::ShuttingDown)?
    }
}

async fn run_batches(
    raft: Raft<TypeConfig>,
    mut receiver: mpsc::Receiver<Pending>,
    mut log_activity: Option<watch::Receiver<(u64, u64)>>,
) {
    let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    // Batches finished (answered), and how many were sent.
    let (finished, finished_rx) = watch::channel(0u64);
    let finished = Arc::new(finished);
    let mut sent = 0u64;
    // Appends started when the last batch was sent.
    let mut started_then: Option<u64> = None;
    // A proposal that did not fit in the previous batch.
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(pending) => pending,
            None => match receiver.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if let (Some(activity), Some(started_then)) = (log_activity.as_mut(), started_then) {
            let mut answered = finished_rx.clone();
            tokio::select! {
                _ = activity.wait_for(|&(started, done)| started > started_then && started == done) => {}
                _ = answered.wait_for(|&count| count >= sent) => {}
            }
        }
        // Everything that queued while we waited for a slot leaves together,
        // up to the entry's limits; the first command that does not fit
        // opens the next batch.
        let mut batch_bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            match receiver.try_recv() {
                Ok(pending) if batch_bytes + pending.bytes > ENTRY_BYTES_MAX => {
                    held = Some(pending);
                    break;
                }
                Ok(pending) => {
                    batch_bytes += pending.bytes;
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        started_then = log_activity.as_ref().map(|activity| activity.borrow().0);
        sent += 1;
        let raft = raft.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _finished = CountOnDrop(finished);
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            metrics::histogram!(crate::metrics::PROPOSAL_BATCH_COMMANDS)
                .record(commands.len() as f64);
            metrics::histogram!(crate::metrics::PROPOSAL_BATCH_BYTES).record(batch_bytes as f64);
            let started = std::time::Instant::now();
            let written = raft.client_write(Batch { commands }).await;
            metrics::histogram!(crate::metrics::PROPOSAL_SECONDS)
                .record(started.elapsed().as_secs_f64());
            match written {
                Ok(response) => {
                    let mut outcomes = response.data.outcomes.into_iter();
                    for reply in replies {
                        let outcome = outcomes.next().ok_or_else(|| {
                            RaftError::Raft(
                                "state machine returned fewer outcomes than commands".into(),
                            )
                        });
                        let _ = reply.send(outcome);
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(write_error(&error)));
                    }
                }
            }
        });
    }
}

/// The encoded size of `command`, or [`RaftError::TooLarge`] past
/// [`COMMAND_BYTES_MAX`]. Counted without building the bytes.
pub fn checked_command_bytes(command: &Command) -> Result<usize, RaftError> {
    let bytes = encoded_bytes(command);
    if bytes > COMMAND_BYTES_MAX {
        return Err(RaftError::TooLarge {
            bytes,
            limit: COMMAND_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// The length of `value`'s bincode encoding, counted without building it
/// (`usize::MAX` if it cannot be encoded, so it is never let through).
pub fn encoded_bytes<T: serde::Serialize>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    match bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard()) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

struct ByteCounter(usize);

impl bincode::enc::write::Writer for &mut ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Counts a batch as finished when its task ends, however it ends.
struct CountOnDrop(Arc<watch::Sender<u64>>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count += 1);
    }
}

pub(crate) fn write_error(
    error: &OpenRaftError<u64, ClientWriteError<u64, crate::types::GantryNode>>,
) -> RaftError {
    match error {
        OpenRaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            RaftError::NotLeader {
                leader_id: forward.leader_id,
                leader: forward.leader_node.as_ref().map(|node| node.api.clone()),
            }
        }
        OpenRaftError::Fatal(openraft::error::Fatal::Stopped) => RaftError::ShuttingDown,
        other => RaftError::Raft(other.to_string()),
    }
}
