//! Membership: who the members are ([`MemberInfo`], `members`) and how the
//! voters change (learner first, then voter; removal), forwarded to the
//! leader from any member.
//!
//! Invariants: a node becomes a voter only after it caught up as a learner;
//! the last voter cannot leave; only the leader knows other members'
//! replication progress and last contact, so followers report none.

use super::{wait_error, RaftNode};
use crate::error::RaftError;
use crate::proposer::write_error;
use crate::transport::MembershipChange;
use crate::types::{GantryNode, NodeId};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// Longest [`RaftNode::add_learner`] waits for the new learner to catch up.
pub const LEARNER_CATCH_UP_MAX: Duration = Duration::from_secs(60);

/// What a member is, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
    /// Only ever reported for this node itself: openraft does not publish
    /// other members' election state.
    Candidate,
}

/// One member of the cluster, as this node's metrics describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub node: GantryNode,
    pub role: MemberRole,
    pub voter: bool,
    /// Highest log index known to be replicated to the member: only known
    /// while this node leads (for itself, its last log index).
    pub matched: Option<u64>,
    /// Milliseconds since this node last got an append-entries reply from
    /// the member: only known while this node leads (0 for itself).
    pub last_contact_ms: Option<u64>,
}

impl RaftNode {
    /// Adds `id` as a learner (it receives the log but does not vote) and
    /// waits up to [`LEARNER_CATCH_UP_MAX`] for it to catch up. Must run on
    /// the leader. A `Timeout` error means it was added but still lags.
    pub async fn add_learner(&self, id: NodeId, node: GantryNode) -> Result<(), RaftError> {
        // openraft's own blocking wait has no bound: wait here instead.
        let response = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| write_error(&e))?;
        let added_at = response.log_id.index;
        self.raft
            .wait(Some(LEARNER_CATCH_UP_MAX))
            .metrics(
                |metrics| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .is_some_and(|matched| matched.index >= added_at)
                },
                format!("learner {id} catching up to {added_at}"),
            )
            .await
            .map_err(wait_error)?;
        Ok(())
    }

    /// Makes `voters` the voting members (each must already be a member;
    /// add it as a learner first). Voters left out are removed from the
    /// cluster, not kept as learners. Must run on the leader.
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), RaftError> {
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| write_error(&e))?;
        Ok(())
    }

    /// Carries out a membership change on the leader (forwarded there from
    /// a follower); returns the voters afterwards.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<NodeId>, RaftError> {
        self.at_leader(
            || self.change_membership_here(change.clone()),
            |transport, peer| {
                let change = change.clone();
                async move { transport.change_membership(&peer, &change).await }
            },
        )
        .await
    }

    async fn change_membership_here(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<NodeId>, RaftError> {
        let voters = || -> BTreeSet<NodeId> {
            self.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect()
        };
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Err(RaftError::NotLeader {
                leader_id: self.raft.metrics().borrow().current_leader,
                leader: None,
            });
        }
        match change {
            MembershipChange::Join { id, node } => {
                if !voters().contains(&id) {
                    self.add_learner(id, node).await?;
                    let mut next = voters();
                    next.insert(id);
                    self.change_voters(next).await?;
                }
            }
            MembershipChange::Remove { id } => {
                let mut next = voters();
                if !next.remove(&id) {
                    return Err(RaftError::Raft(format!("node {id} is not a voting member")));
                }
                if next.is_empty() {
                    return Err(RaftError::Raft(
                        "the last voting member cannot leave".into(),
                    ));
                }
                self.change_voters(next).await?;
            }
        }
        let voters: Vec<NodeId> = voters().into_iter().collect();
        if voters.len().is_multiple_of(2) {
            tracing::warn!(
                voters = voters.len(),
                "an even number of voters tolerates no more failures than one fewer; use 3 or 5"
            );
        }
        Ok(voters)
    }

    /// Every member of the current membership, as this node sees it. See
    /// [`MemberInfo`] for what only a leader knows.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leading = metrics.state == ServerState::Leader;
        membership
            .nodes()
            .map(|(&id, node)| {
                let voter = voters.contains(&id);
                let role = if id == self.id {
                    match metrics.state {
                        ServerState::Leader => MemberRole::Leader,
                        ServerState::Candidate => MemberRole::Candidate,
                        ServerState::Learner => MemberRole::Learner,
                        // Follower, or shutting down: what the membership says.
                        _ if voter => MemberRole::Follower,
                        _ => MemberRole::Learner,
                    }
                } else if metrics.current_leader == Some(id) {
                    MemberRole::Leader
                } else if voter {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                };
                let (matched, last_contact_ms) = if !leading {
                    (None, None)
                } else if id == self.id {
                    (metrics.last_log_index, Some(0))
                } else {
                    let matched = metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .map(|log_id| log_id.index);
                    let contact = self
                        .transport
                        .as_ref()
                        .and_then(|transport| transport.since_last_contact(id))
                        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
                    (matched, contact)
                };
                MemberInfo {
                    id,
                    node: node.clone(),
                    role,
                    voter,
                    matched,
                    last_contact_ms,
                }
            })
            .collect()
    }
}
