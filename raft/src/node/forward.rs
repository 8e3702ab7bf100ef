//! Proposals and linearizable reads from any member: `propose`,
//! `propose_here`, `read_index_here`, `read`, `export_state`, and
//! `at_leader`, which runs a call here or forwards it to the leader.
//!
//! Invariants: a call is forwarded only when this member certainly did not
//! carry it out (`NotLeader`), and retried elsewhere only when it was
//! certainly not carried out there (`NotLeader`, or the leader was
//! unreachable before the request was sent), so forwarding never applies a
//! command twice; a read returns only once this replica has applied up to
//! the leader's read index.

use super::{wait_error, RaftNode};
use crate::error::RaftError;
use crate::transport::{ForwardError, PeerTransport};
use crate::types::{GantryNode, LogId, NodeId};
use gantry_storage::{Command, Outcome, ReadView};
use openraft::error::{CheckIsLeaderError, Fatal};
use std::future::Future;
use std::time::Duration;

/// Whether a forwarded call changes anything, which decides whether one
/// lost after it was sent may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    None,
    Write,
}

/// Forwarded attempts of one call (across leader changes), at most.
pub const FORWARD_ATTEMPTS_MAX: u32 = 5;
/// Longest a read waits for this replica to apply up to the read index.
pub const READ_CATCH_UP_MAX: Duration = Duration::from_secs(10);

/// Longest wait for a proposal's outcome (its commit and apply, with any
/// forwarding and election wait); then the caller learns the outcome is
/// unknown, as the proposal may still commit.
pub const PROPOSE_WAIT_MAX: Duration = Duration::from_secs(20);

/// Longest wait for a leader to be elected before a call gives up.
pub const ELECTION_WAIT_MAX: Duration = Duration::from_secs(10);
/// First and longest pause between attempts while waiting out an election;
/// a pause ends early as soon as this node learns of a different leader.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);

fn leadership_error(
    error: openraft::error::RaftError<NodeId, CheckIsLeaderError<NodeId, GantryNode>>,
) -> RaftError {
    match error {
        openraft::error::RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
            RaftError::NotLeader {
                leader_id: forward.leader_id,
                leader: forward.leader_node.map(|node| node.api),
            }
        }
        // The leader could not confirm its leadership with a quorum in time
        // (a peer is slow or down, or it was just deposed): not a failure of
        // the read, which has no effect; wait as in an election and retry.
        openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
            RaftError::NotLeader {
                leader_id: None,
                leader: None,
            }
        }
        openraft::error::RaftError::Fatal(Fatal::Stopped) => RaftError::ShuttingDown,
        other => RaftError::Raft(other.to_string()),
    }
}

impl RaftNode {
    /// Proposes a command; returns its outcome once committed and applied.
    /// On a follower the command is forwarded to the leader. While the
    /// cluster has no leader (an election), waits for one up to
    /// [`ELECTION_WAIT_MAX`].
    pub async fn propose(&self, command: Command) -> Result<Outcome, RaftError> {
        // Refused here rather than after a forward to the leader.
        crate::proposer::checked_command_bytes(&command)?;
        let proposed = self.at_leader(
            Effect::Write,
            || self.propose_as_leader(command.clone()),
            |transport, peer| {
                let command = command.clone();
                async move { transport.forward_propose(&peer, &command).await }
            },
        );
        tokio::time::timeout(PROPOSE_WAIT_MAX, proposed)
            .await
            .unwrap_or(Err(RaftError::OutcomeUnknown(PROPOSE_WAIT_MAX)))
    }

    /// Proposes on this member only: `NotLeader` unless it leads. What
    /// `/gantry/propose` runs, so a forwarded call is never forwarded again.
    pub async fn propose_here(&self, command: Command) -> Result<Outcome, RaftError> {
        tokio::time::timeout(PROPOSE_WAIT_MAX, self.propose_as_leader(command))
            .await
            .unwrap_or(Err(RaftError::OutcomeUnknown(PROPOSE_WAIT_MAX)))
    }

    /// The log id a linearizable read must see applied, confirmed by a
    /// quorum; `NotLeader` unless this member leads. What
    /// `/gantry/read-index` runs.
    pub async fn read_index_here(&self) -> Result<Option<LogId>, RaftError> {
        let (read_log_id, _applied) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(leadership_error)?;
        Ok(read_log_id)
    }

    /// A linearizable read on any member: gets the read index (from the
    /// leader when this member follows), waits for this replica to apply up
    /// to it (at most [`READ_CATCH_UP_MAX`]), then opens a read view. Waits
    /// out an election like [`RaftNode::propose`]. Refused (`StateCorrupt`)
    /// while a state check has this member's state marked corrupt.
    pub async fn read(&self) -> Result<ReadView, RaftError> {
        if let Some(reason) = self.state_corrupt() {
            return Err(RaftError::StateCorrupt(reason));
        }
        let read_log_id = self
            .at_leader(
                Effect::None,
                || self.read_index_here(),
                |transport, peer| async move { transport.read_index(&peer).await },
            )
            .await?;
        if let Some(log_id) = read_log_id {
            self.raft
                .wait(Some(READ_CATCH_UP_MAX))
                .applied_index_at_least(Some(log_id.index), "applying up to the read index")
                .await
                .map_err(wait_error)?;
        }
        self.read_local()
    }

    /// Runs `here` on this member; when it answers `NotLeader` and the
    /// leader is known and reachable through the transport, runs `there`
    /// against the leader's peer address instead. Retries while no leader
    /// is known, or the one asked no longer leads or could not be reached
    /// before the call was sent — for at most [`ELECTION_WAIT_MAX`] and
    /// [`FORWARD_ATTEMPTS_MAX`] forwards. Any other failure is returned: a
    /// call that may have been carried out is not repeated, unless it has
    /// no effect (`Effect::None`: a read index), which is asked again.
    pub(super) async fn at_leader<T, Here, HereFut, There, ThereFut>(
        &self,
        effect: Effect,
        mut here: Here,
        mut there: There,
    ) -> Result<T, RaftError>
    where
        Here: FnMut() -> HereFut,
        HereFut: Future<Output = Result<T, RaftError>>,
        There: FnMut(PeerTransport, String) -> ThereFut,
        ThereFut: Future<Output = Result<Result<T, ForwardError>, RaftError>>,
    {
        let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
        let mut pause = RETRY_PAUSE_MIN;
        let mut forwards = 0;
        loop {
            let error = match here().await {
                Ok(value) => return Ok(value),
                Err(error @ RaftError::NotLeader { .. }) => error,
                Err(other) => return Err(other),
            };
            let leader_id = match &error {
                RaftError::NotLeader { leader_id, .. } => *leader_id,
                _ => None,
            };
            let last_error = match (leader_id, &self.transport) {
                // Without a transport the caller is told where the leader is.
                (Some(_), None) => return Err(error),
                (Some(leader), Some(transport)) if leader != self.id => {
                    if forwards >= FORWARD_ATTEMPTS_MAX {
                        return Err(error);
                    }
                    let Some(node) = self.member(leader) else {
                        return Err(error);
                    };
                    forwards += 1;
                    match there(transport.clone(), node.peer.clone()).await {
                        Ok(Ok(value)) => return Ok(value),
                        // Not carried out there: the leader moved on.
                        Ok(Err(ForwardError::NotLeader { leader_id })) => RaftError::NotLeader {
                            leader_id,
                            leader: None,
                        },
                        Ok(Err(ForwardError::ShuttingDown)) => {
                            return Err(RaftError::Peer {
                                peer: node.peer,
                                reason: "the leader is shutting down".into(),
                            })
                        }
                        Ok(Err(ForwardError::OutcomeUnknown { waited_ms })) => {
                            return Err(RaftError::OutcomeUnknown(Duration::from_millis(waited_ms)))
                        }
                        Ok(Err(ForwardError::NotUnderstood(reason))) => {
                            return Err(RaftError::NotUnderstood(reason))
                        }
                        Ok(Err(ForwardError::Failed(reason))) => {
                            return Err(RaftError::Peer {
                                peer: node.peer,
                                reason,
                            })
                        }
                        // Never sent (the leader is probably down): it does not
                        // use up the forward budget; wait for the election.
                        Err(unsent @ RaftError::PeerUnreachable { .. }) => {
                            forwards -= 1;
                            unsent
                        }
                        // Lost after it was sent: a call without effect can
                        // be asked again of the next leader.
                        Err(lost @ RaftError::Peer { .. }) if effect == Effect::None => lost,
                        Err(other) => return Err(other),
                    }
                }
                // No leader known yet, or openraft still names this member
                // while it steps down: wait for the election.
                _ => error,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(last_error);
            }
            // The leader this node believed in when the attempt failed.
            let known = leader_id.or_else(|| self.raft.metrics().borrow().current_leader);
            self.wait_for_other_leader(known, pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Waits up to `pause` for this node to know of a leader other than
    /// `known` (a new term's leader is usually known within a round trip of
    /// its election, long before a fixed pause would end).
    async fn wait_for_other_leader(&self, known: Option<NodeId>, pause: Duration) {
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(
            pause,
            metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != known),
        )
        .await;
    }

    /// The whole state as a snapshot file ([`crate::snapshot_file`]),
    /// consistent as of a linearizable read (so it holds everything
    /// acknowledged before the call); its meta names the position applied
    /// when the export began (the state is at or after it).
    pub async fn export_state(&self) -> Result<Vec<u8>, RaftError> {
        drop(self.read().await?);
        let store = self.store.clone();
        let (_meta, archive) = tokio::task::spawn_blocking(move || {
            crate::state_machine::export_archive(&store, |applied, state_bytes| {
                let at = applied.last_applied.map_or("empty".to_string(), |id| {
                    format!("{}-{}", id.leader_id.term, id.index)
                });
                format!("backup-{at}-{state_bytes}")
            })
        })
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))??;
        Ok(archive)
    }
}
