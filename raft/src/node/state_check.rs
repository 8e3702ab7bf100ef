//! State checks: the leader asks every member for the hash of its state at
//! one log index and marks a member whose hash differs from the majority's
//! (etcd's corruption check, over Raft positions instead of revisions).
//!
//! A round, on the leader ([`RaftNode::check_states`]): write a checkpoint
//! entry (an empty batch, see [`crate::checkpoints`]) and learn its index;
//! hash its own view at that index and ask every other member for the hash
//! of its view at the same index (`/gantry/state-hash`, which waits for the
//! member to apply that far); judge ([`judge`]); send each member answered
//! its verdict (`/gantry/state-verdict-schema`, with the state schema it
//! judged under); keep the results for `members`.
//!
//! Invariants:
//! - Hashes are compared only between builds that hash the same tables
//!   (`gantry_storage::state_hash::state_schema`): while a member answers
//!   another schema, or is of a build from before schemas were announced
//!   (mid-upgrade), a round compares nothing, writes no checkpoint, and
//!   every member shows `Uncompared` (at the leader's last log index) with
//!   the reason; a member takes a verdict only when it was
//!   judged under its own schema, and never takes a corrupt verdict from a
//!   leader of a build from before schemas (`/gantry/state-verdict`).
//! - Hashes are compared only at the same index, each from a read view
//!   taken right after that index was applied, and computed off the apply
//!   path (on a blocking thread, one at a time per member).
//! - A member is judged corrupt only against a hash held by more than half
//!   of the members that answered, and by at least two of them; with no such
//!   hash (two members that disagree, nobody to break the tie) nobody is
//!   marked, every disagreeing member shows `Undecided` and the mismatch
//!   alarm is raised for each. A member that answered alone is compared
//!   with nobody and judged neither way.
//! - A member that did not answer keeps a `Corrupt` result from an earlier
//!   round (a corrupt member that is down stays flagged) and otherwise shows
//!   `NoAnswer`.

use super::integrity::StateVerdict;
use super::RaftNode;
use crate::error::RaftError;
use crate::proposer::write_error;
use crate::transport::ForwardError;
use crate::types::{decode, Batch, NodeId};
use gantry_storage::state_hash::hex_of;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest a member waits to apply up to a checkpoint before it answers.
pub const STATE_HASH_APPLY_WAIT: Duration = Duration::from_secs(10);
/// Longest the leader waits for one member's hash (its apply wait, then a
/// hash of the whole state).
pub const STATE_HASH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the checkpoint entry may take to commit.
const CHECKPOINT_WRITE_MAX: Duration = Duration::from_secs(10);

/// A SHA-256 of a member's state.
pub type Digest = [u8; 32];

/// What the last round found about one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckState {
    /// Its hash matched the majority's.
    Healthy,
    /// Its hash differed from the majority's: it refuses reads.
    Corrupt,
    /// Its hash differed from another's and no hash had a majority.
    Undecided,
    /// It did not answer (down, behind, or restarted since the checkpoint).
    NoAnswer,
    /// It was the only member that answered: nothing to compare with.
    Uncompared,
}

/// One member's result in the last round the leader ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCheck {
    pub state: CheckState,
    /// The checkpoint index the result is about (unknown for a member's
    /// own mark read by a follower: the reason names it).
    pub index: Option<u64>,
    /// The member's hash (hex) or why there is none.
    pub detail: String,
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRound {
    pub index: u64,
    pub checks: BTreeMap<NodeId, StateCheck>,
}

impl CheckRound {
    /// Members judged corrupt or undecided in this round.
    pub fn disagreeing(&self) -> Vec<NodeId> {
        self.checks
            .iter()
            .filter(|(_, check)| matches!(check.state, CheckState::Corrupt | CheckState::Undecided))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Judges the answers of one round: the hash held by more than half of
/// those that answered, and by at least two, is the state; a member with
/// another hash is `Corrupt`. Without such a hash, members that disagree
/// with any other are `Undecided` (see the module doc).
pub fn judge(answers: &BTreeMap<NodeId, Result<Digest, String>>) -> BTreeMap<NodeId, CheckState> {
    let mut counts: BTreeMap<Digest, usize> = BTreeMap::new();
    for digest in answers.values().flatten() {
        *counts.entry(*digest).or_default() += 1;
    }
    let answered: usize = counts.values().sum();
    let majority = counts
        .iter()
        .find(|(_, &count)| count >= 2 && count * 2 > answered)
        .map(|(digest, _)| *digest);
    answers
        .iter()
        .map(|(id, answer)| {
            let state = match (answer, majority) {
                (Err(_), _) => CheckState::NoAnswer,
                (Ok(digest), Some(majority)) if *digest == majority => CheckState::Healthy,
                (Ok(_), Some(_)) => CheckState::Corrupt,
                // Nobody to compare with: nothing is known either way.
                (Ok(_), None) if answered == 1 => CheckState::Uncompared,
                (Ok(_), None) => CheckState::Undecided,
            };
            (*id, state)
        })
        .collect()
}

impl RaftNode {
    /// The hash of this member's state at checkpoint `index`: waits up to
    /// [`STATE_HASH_APPLY_WAIT`] to apply that far, then hashes the view
    /// kept at that index. What `/gantry/state-hash` runs.
    pub async fn state_hash_at(&self, index: u64) -> Result<Digest, RaftError> {
        self.raft
            .wait(Some(STATE_HASH_APPLY_WAIT))
            .applied_index_at_least(Some(index), "applying up to the checkpoint")
            .await
            .map_err(super::wait_error)?;
        let Some((log_id, view)) = self.checkpoints.take(index) else {
            let applied = self.raft.metrics().borrow().last_applied;
            return Err(RaftError::Raft(format!(
                "node {} keeps no view of its state at index {index} (applied: {applied:?}): it restarted, installed a snapshot or was asked already",
                self.id
            )));
        };
        // One hash at a time: each reads the whole state.
        let _slot = self.hashing.lock().await;
        let started = Instant::now();
        let hash = tokio::task::spawn_blocking(move || view.state_hash())
            .await
            .map_err(|e| RaftError::Raft(format!("hashing the state: {e}")))??;
        metrics::histogram!(crate::metrics::STATE_HASH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        // The view's own metadata names the position it is of.
        let applied: Option<crate::state_machine::AppliedMeta> = hash
            .raft_meta
            .as_deref()
            .map(decode)
            .transpose()
            .map_err(RaftError::Raft)?;
        let at = applied.and_then(|meta| meta.last_applied);
        if at != Some(log_id) {
            return Err(RaftError::Raft(format!(
                "the view kept for {log_id} is of {at:?}"
            )));
        }
        Ok(hash.digest)
    }

    /// One state-check round (see the module doc); `NotLeader` unless this
    /// member leads.
    pub async fn check_states(&self) -> Result<CheckRound, RaftError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(RaftError::NotLeader {
                leader_id: metrics.current_leader,
                leader: None,
            });
        }
        let members: Vec<(NodeId, String)> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.peer.clone()))
            .collect();
        // Asked before the checkpoint is written: a round that compares
        // nothing adds no entry to the log.
        if let Some(reason) = self.schemas_differ(&members).await {
            let index = metrics.last_log_index.unwrap_or(0);
            // Hashes of different table sets always differ: no verdicts
            // until every member runs this build's schema.
            let checks: BTreeMap<NodeId, StateCheck> = members
                .iter()
                .map(|(id, _)| {
                    let check = StateCheck {
                        state: CheckState::Uncompared,
                        index: Some(index),
                        detail: reason.clone(),
                    };
                    (*id, check)
                })
                .collect();
            self.keep_results(&checks);
            metrics::counter!(crate::metrics::STATE_CHECKS, "outcome" => "schemas_differ")
                .increment(1);
            return Ok(CheckRound { index, checks });
        }
        let written = tokio::time::timeout(
            CHECKPOINT_WRITE_MAX,
            self.raft.client_write(Batch::default()),
        )
        .await
        .map_err(|_| RaftError::OutcomeUnknown(CHECKPOINT_WRITE_MAX))?
        .map_err(|e| write_error(&e))?;
        let index = written.log_id.index;
        let mut asks = tokio::task::JoinSet::new();
        for (id, peer) in members {
            let node = self.clone();
            asks.spawn(async move {
                let answer = if id == node.id {
                    node.state_hash_at(index).await.map_err(|e| e.to_string())
                } else {
                    node.peer_state_hash(&peer, index).await
                };
                (id, answer)
            });
        }
        let mut answers = BTreeMap::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok((id, answer)) = joined {
                answers.insert(id, answer);
            }
        }
        let states = judge(&answers);
        let mut checks = BTreeMap::new();
        for (id, state) in states {
            let detail = match &answers[&id] {
                Ok(digest) => hex_of(digest),
                Err(reason) => reason.clone(),
            };
            checks.insert(
                id,
                StateCheck {
                    state,
                    index: Some(index),
                    detail,
                },
            );
        }
        self.send_verdicts(index, &checks).await;
        self.keep_results(&checks);
        let outcome = if checks.values().any(|c| c.state == CheckState::Corrupt) {
            "mismatch"
        } else if checks.values().any(|c| c.state == CheckState::Undecided) {
            "undecided"
        } else {
            "agreed"
        };
        metrics::counter!(crate::metrics::STATE_CHECKS, "outcome" => outcome).increment(1);
        Ok(CheckRound { index, checks })
    }

    /// Why this round cannot compare hashes: a member whose state hash
    /// covers other tables (another build, mid-upgrade); `None` when every
    /// member that answers hashes what this one does. A member that cannot
    /// be asked does not stop the round (it will not answer the hash either).
    async fn schemas_differ(&self, members: &[(NodeId, String)]) -> Option<String> {
        let transport = self.transport.clone()?;
        let own = gantry_storage::state_hash::state_schema();
        let mut asks = tokio::task::JoinSet::new();
        for (id, peer) in members.iter().filter(|(id, _)| *id != self.id).cloned() {
            let transport = transport.clone();
            asks.spawn(async move { (id, transport.state_schema(&peer).await) });
        }
        let mut differing = Vec::new();
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok((id, Ok(Some(schema)))) if schema != own => {
                    differing.push(format!("node {id} hashes schema {schema}"));
                }
                Ok((id, Ok(None))) => {
                    differing.push(format!("node {id} runs a build from before state schemas"));
                }
                _ => {}
            }
        }
        differing.sort();
        (!differing.is_empty()).then(|| {
            format!(
                "not compared: {} (this leader: schema {own}); checks resume once every member runs one build's tables",
                differing.join(", ")
            )
        })
    }

    async fn peer_state_hash(&self, peer: &str, index: u64) -> Result<Digest, String> {
        let Some(transport) = &self.transport else {
            return Err("no peer transport".into());
        };
        match tokio::time::timeout(STATE_HASH_TIMEOUT, transport.state_hash(peer, index)).await {
            Ok(Ok(Ok(digest))) => Ok(digest),
            Ok(Ok(Err(ForwardError::Failed(reason)))) => Err(reason),
            Ok(Ok(Err(other))) => Err(format!("{other:?}")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no hash within {STATE_HASH_TIMEOUT:?}")),
        }
    }

    /// Tells each member judged healthy or corrupt (this one included).
    async fn send_verdicts(&self, index: u64, checks: &BTreeMap<NodeId, StateCheck>) {
        let majority = checks
            .values()
            .find(|check| check.state == CheckState::Healthy)
            .map(|check| check.detail.clone());
        for (id, check) in checks {
            let verdict = match check.state {
                CheckState::Healthy => StateVerdict::Healthy { index },
                CheckState::Corrupt => StateVerdict::Corrupt {
                    index,
                    reason: format!(
                        "node {id}'s state at log index {index} hashes to {}, the majority's to {}",
                        short(&check.detail),
                        majority.as_deref().map_or("?", short)
                    ),
                },
                CheckState::Undecided | CheckState::NoAnswer | CheckState::Uncompared => continue,
            };
            let result = if *id == self.id {
                self.take_verdict(&verdict)
            } else {
                self.send_verdict(*id, &verdict).await
            };
            if let Err(error) = result {
                tracing::warn!(node = id, %error, ?verdict, "state check: could not deliver the verdict");
            }
        }
    }

    async fn send_verdict(&self, id: NodeId, verdict: &StateVerdict) -> Result<(), RaftError> {
        let (Some(transport), Some(node)) = (&self.transport, self.member(id)) else {
            return Err(RaftError::Raft(format!(
                "node {id} cannot be reached from here"
            )));
        };
        let schema = gantry_storage::state_hash::state_schema();
        match transport
            .state_verdict(&node.peer, &schema, verdict)
            .await?
        {
            Ok(()) => Ok(()),
            Err(error) => Err(RaftError::Raft(format!("{error:?}"))),
        }
    }

    /// Keeps this round's results for `members`: a member that did not
    /// answer keeps an earlier `Corrupt`; gauges follow.
    fn keep_results(&self, checks: &BTreeMap<NodeId, StateCheck>) {
        let mut kept = self.state_checks.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for (id, check) in checks {
            let earlier = kept
                .get(id)
                .filter(|earlier| earlier.state == CheckState::Corrupt);
            let check = match (check.state.clone(), earlier) {
                (CheckState::NoAnswer, Some(earlier)) => StateCheck {
                    detail: format!("{}; no answer since: {}", earlier.detail, check.detail),
                    ..earlier.clone()
                },
                _ => check.clone(),
            };
            let alarm = matches!(check.state, CheckState::Corrupt | CheckState::Undecided);
            metrics::gauge!(crate::metrics::STATE_HASH_MISMATCH, "member" => id.to_string())
                .set(if alarm { 1.0 } else { 0.0 });
            next.insert(*id, check);
        }
        for gone in kept.keys().filter(|id| !next.contains_key(id)) {
            metrics::gauge!(crate::metrics::STATE_HASH_MISMATCH, "member" => gone.to_string())
                .set(0.0);
        }
        *kept = next;
    }

    /// The last round's result for member `id`, while this node leads.
    pub(crate) fn state_check_of(&self, id: NodeId) -> Option<StateCheck> {
        self.state_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Forgets the results of rounds this node ran (it stopped leading).
    pub fn forget_state_checks(&self) {
        let mut kept = self.state_checks.lock().unwrap_or_else(|p| p.into_inner());
        for id in kept.keys() {
            metrics::gauge!(crate::metrics::STATE_HASH_MISMATCH, "member" => id.to_string())
                .set(0.0);
        }
        kept.clear();
    }
}

/// The first 12 hex digits of a digest (or the text as it is).
fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[(NodeId, Result<u8, &str>)]) -> BTreeMap<NodeId, Result<Digest, String>> {
        list.iter()
            .map(|(id, answer)| {
                (
                    *id,
                    answer
                        .map(|byte| [byte; 32])
                        .map_err(|reason| reason.to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn the_majority_hash_wins_and_the_odd_member_is_corrupt() {
        let states = judge(&answers(&[(1, Ok(7)), (2, Ok(7)), (3, Ok(9))]));
        assert_eq!(states[&1], CheckState::Healthy);
        assert_eq!(states[&2], CheckState::Healthy);
        assert_eq!(states[&3], CheckState::Corrupt);
        // The leader (whoever answers) can be the odd one too.
        let states = judge(&answers(&[(1, Ok(9)), (2, Ok(7)), (3, Ok(7))]));
        assert_eq!(states[&1], CheckState::Corrupt);
    }

    #[test]
    fn two_that_disagree_are_undecided_and_nobody_is_marked() {
        let states = judge(&answers(&[(1, Ok(7)), (2, Ok(9)), (3, Err("down"))]));
        assert_eq!(states[&1], CheckState::Undecided);
        assert_eq!(states[&2], CheckState::Undecided);
        assert_eq!(states[&3], CheckState::NoAnswer);
        let states = judge(&answers(&[(1, Ok(1)), (2, Ok(2)), (3, Ok(3))]));
        assert!(states.values().all(|state| *state == CheckState::Undecided));
        // Two against two of five: no majority either.
        let states = judge(&answers(&[
            (1, Ok(1)),
            (2, Ok(1)),
            (3, Ok(2)),
            (4, Ok(2)),
            (5, Err("down")),
        ]));
        assert_eq!(states[&1], CheckState::Undecided);
        assert_eq!(states[&5], CheckState::NoAnswer);
    }

    #[test]
    fn agreement_and_lone_answers_mark_nobody() {
        let states = judge(&answers(&[(1, Ok(7)), (2, Ok(7)), (3, Err("behind"))]));
        assert_eq!(states[&1], CheckState::Healthy);
        assert_eq!(states[&2], CheckState::Healthy);
        assert_eq!(states[&3], CheckState::NoAnswer);
        // A cluster of one, or the only member that answered: no verdict
        // either way (a marked leader alone does not clear itself).
        let states = judge(&answers(&[(1, Ok(7))]));
        assert_eq!(states[&1], CheckState::Uncompared);
        let states = judge(&answers(&[(1, Ok(7)), (2, Err("down")), (3, Err("down"))]));
        assert_eq!(states[&1], CheckState::Uncompared);
    }
}
