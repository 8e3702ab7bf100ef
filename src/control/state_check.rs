//! The state-check loop (leader only): every interval, one round of
//! [`gantry_raft::RaftNode::check_states`], its outcome logged.
//!
//! Invariants: runs only while this node leads (started by the leader
//! loops, fenced by term like them); the first round waits one interval,
//! so a new leader does not add a hash of the whole state to its election;
//! a member found corrupt is logged at error level each round it stays so;
//! the results are forgotten when this node stops leading (the next
//! leader's rounds are what `cluster members` shows).

use gantry_raft::node::CheckState;
use gantry_raft::RaftNode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs a round every `interval` until `stop`.
pub async fn run(node: RaftNode, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let round = tokio::select! {
            _ = stop.cancelled() => break,
            round = node.check_states() => round,
        };
        match round {
            Ok(round) => {
                for (id, check) in &round.checks {
                    match check.state {
                        CheckState::Corrupt => tracing::error!(
                            node = id,
                            index = round.index,
                            hash = %check.detail,
                            "state check: this member's state differs from the majority's; it refuses reads until rebuilt (`gantry cluster rebuild`)"
                        ),
                        CheckState::Undecided => tracing::error!(
                            node = id,
                            index = round.index,
                            hash = %check.detail,
                            "state check: members disagree and no hash has a majority; compare them and rebuild the wrong one"
                        ),
                        CheckState::NoAnswer => tracing::warn!(
                            node = id,
                            index = round.index,
                            reason = %check.detail,
                            "state check: no hash from this member"
                        ),
                        CheckState::Healthy | CheckState::Uncompared => {}
                    }
                }
                tracing::debug!(
                    index = round.index,
                    members = round.checks.len(),
                    "state check done"
                );
            }
            Err(error) => tracing::warn!(%error, "state check: round not run"),
        }
    }
    node.forget_state_checks();
}
