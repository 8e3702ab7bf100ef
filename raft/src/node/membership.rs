//! Membership: who the members are ([`MemberInfo`], `members`) and how the
//! voters change (learner first, then voter; removal), forwarded to the
//! leader from any member.
//!
//! Invariants: a node becomes a voter only after it caught up as a learner;
//! the last voter cannot leave; only the leader knows other members'
//! replication progress and last contact, so followers report none, and
//! [`RaftNode::leader_members`] asks the leader for its view (saying so
//! when it shows this node's own instead); a member the leader has not
//! heard from within the election timeout is not reachable.

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
    /// Whether the leader heard from the member within the election
    /// timeout (its longest): only known while this node leads (`true` for
    /// itself). A member that is not is down or cut off, whatever its role
    /// in the membership.
    pub reachable: Option<bool>,
    /// What the last state check found about the member: known while this
    /// node leads and has run one; a follower knows only its own mark.
    pub state_check: Option<super::StateCheck>,
}

/// Whose view a member list is ([`RaftNode::leader_members`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembersView {
    /// The leader's, with every member's last contact and replication.
    Leader(NodeId),
    /// This node's own, because the leader's could not be had; why.
    Own(String),
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
            super::forward::Effect::Write,
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

    /// Every member as the leader sees it: this node's own list when it
    /// leads, else the leader's, asked over the peer transport (at most
    /// [`crate::transport::MEMBERS_TIMEOUT`]). When there is no leader or
    /// it does not answer, this node's own list and why.
    pub async fn leader_members(&self) -> (Vec<MemberInfo>, MembersView) {
        let (state, leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_leader)
        };
        if state == ServerState::Leader {
            return (self.members(), MembersView::Leader(self.id));
        }
        let own = |why: String| (self.members(), MembersView::Own(why));
        let Some(leader) = leader else {
            return own(format!("node {} knows no leader", self.id));
        };
        let (Some(transport), Some(node)) = (&self.transport, self.member(leader)) else {
            return own(format!(
                "node {} cannot reach the leader (node {leader}) from here",
                self.id
            ));
        };
        match transport.members(&node.peer).await {
            Ok(Ok(members)) => (members, MembersView::Leader(leader)),
            Ok(Err(crate::transport::ForwardError::NotLeader { .. })) => own(format!(
                "node {leader} at {} no longer leads (an election is under way)",
                node.peer
            )),
            Ok(Err(error)) => own(format!(
                "the leader (node {leader} at {}) did not list its members: {error:?}",
                node.peer
            )),
            Err(error) => own(format!(
                "the leader (node {leader} at {}) did not answer: {error}",
                node.peer
            )),
        }
    }

    /// The member list as this leader sees it; `NotLeader` on any other
    /// member. What `/gantry/members` runs.
    pub fn members_here(&self) -> Result<Vec<MemberInfo>, RaftError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(RaftError::NotLeader {
                leader_id: metrics.current_leader,
                leader: None,
            });
        }
        Ok(self.members())
    }

    /// Every member of the current membership, as this node sees it. See
    /// [`MemberInfo`] for what only a leader knows.
    pub fn members(&self) -> Vec<MemberInfo> {
        let heard_within = Duration::from_millis(self.raft.config().election_timeout_max);
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
                let (matched, last_contact_ms, reachable) = if !leading {
                    (None, None, None)
                } else if id == self.id {
                    (metrics.last_log_index, Some(0), Some(true))
                } else {
                    let matched = metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .map(|log_id| log_id.index);
                    let since = self
                        .transport
                        .as_ref()
                        .and_then(|transport| transport.since_last_contact(id));
                    let contact =
                        since.map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
                    let reachable = since.is_some_and(|since| since <= heard_within);
                    (matched, contact, Some(reachable))
                };
                let state_check = if leading {
                    self.state_check_of(id)
                } else if id == self.id {
                    self.state_corrupt().map(|reason| super::StateCheck {
                        state: super::CheckState::Corrupt,
                        index: None,
                        detail: reason,
                    })
                } else {
                    None
                };
                MemberInfo {
                    id,
                    node: node.clone(),
                    role,
                    voter,
                    matched,
                    last_contact_ms,
                    reachable,
                    state_check,
                }
            })
            .collect()
    }
}
