//! Group commit: concurrent proposals ride in one log entry.
//!
//! Invariants: each proposal gets exactly one reply — its own outcome, or
//! the error of the write that carried it; at most
//! [`PROPOSALS_IN_FLIGHT_MAX`] entries are in flight, and while they are,
//! new proposals queue and leave together as the next batch (up to
//! [`BATCH_COMMANDS_MAX`]).

use crate::error::RaftError;
use crate::types::{Batch, TypeConfig};
use gantry_storage::{Command, Outcome};
use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Commands in one log entry at most.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Log entries proposed and not yet applied, at most.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4;
/// Proposals waiting for a batch, at most (back-pressure beyond it).
pub const PROPOSAL_QUEUE_MAX: usize = 16 * 1024;

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, RaftError>>,
}

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn start(raft: Raft<TypeConfig>) -> Proposer {
        let (queue, receiver) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(run_batches(raft, receiver));
        Proposer { queue }
    }

    /// Proposes one command and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> Result<Outcome, RaftError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        outcome.await.map_err(|_| RaftError::ShuttingDown)?
    }
}

async fn run_batches(raft: Raft<TypeConfig>, mut receiver: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while we waited for a slot leaves together.
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            metrics::histogram!(crate::metrics::PROPOSAL_BATCH_COMMANDS)
                .record(commands.len() as f64);
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
