//! Raft gauges from openraft's metrics watch: term, last log and applied
//! indexes, leadership, leader changes, (on the leader) how far each
//! member lags, and whether this member's state is marked corrupt.
//!
//! Invariants: reads openraft's own metrics, so `raft/` needs no recording
//! calls for these; a leader change is counted once per change of the known
//! leader (none → some counts, some → none does not); lag series of members
//! that left, or of a member that stopped leading, are set to zero.

use super::{
    RAFT_APPLIED_INDEX, RAFT_FOLLOWER_LAG_ENTRIES, RAFT_HAS_LEADER, RAFT_IS_LEADER,
    RAFT_LAST_LOG_INDEX, RAFT_LEADER_CHANGES, RAFT_TERM, STATE_CORRUPT,
};
use gantry_raft::node::Metrics;
use gantry_raft::{NodeId, RaftNode};
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;

/// Updates the Raft gauges on every change openraft reports, until `stop`.
pub async fn follow(node: RaftNode, stop: CancellationToken) {
    let mut watch = node.metrics();
    let mut tracker = Tracker::default();
    loop {
        let metrics = watch.borrow_and_update().clone();
        tracker.update(&node, &metrics);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = watch.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[derive(Default)]
struct Tracker {
    leader: Option<NodeId>,
    /// Members with a lag series, so it can be zeroed when they go.
    lagging: BTreeSet<NodeId>,
}

impl Tracker {
    fn update(&mut self, node: &RaftNode, metrics: &Metrics) {
        metrics::gauge!(RAFT_TERM).set(metrics.current_term as f64);
        // Also set when the mark changes; here so it shows from the start
        // (the mark is read before the recorder is installed).
        metrics::gauge!(STATE_CORRUPT).set(if node.state_corrupt().is_some() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(RAFT_LAST_LOG_INDEX).set(metrics.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!(RAFT_APPLIED_INDEX)
            .set(metrics.last_applied.map_or(0, |log_id| log_id.index) as f64);
        let leading = node.leader_term(metrics).is_some();
        metrics::gauge!(RAFT_IS_LEADER).set(if leading { 1.0 } else { 0.0 });
        metrics::gauge!(RAFT_HAS_LEADER).set(if metrics.current_leader.is_some() {
            1.0
        } else {
            0.0
        });
        if metrics.current_leader.is_some() && metrics.current_leader != self.leader {
            metrics::counter!(RAFT_LEADER_CHANGES).increment(1);
        }
        if metrics.current_leader.is_some() {
            self.leader = metrics.current_leader;
        }

        let mut lagging = BTreeSet::new();
        if leading {
            let last = metrics.last_log_index.unwrap_or(0);
            for (id, matched) in metrics.replication.iter().flatten() {
                if *id == node.id() {
                    continue;
                }
                let matched = matched.as_ref().map_or(0, |log_id| log_id.index);
                metrics::gauge!(RAFT_FOLLOWER_LAG_ENTRIES, "follower" => id.to_string())
                    .set(last.saturating_sub(matched) as f64);
                lagging.insert(*id);
            }
        }
        for gone in self.lagging.difference(&lagging) {
            metrics::gauge!(RAFT_FOLLOWER_LAG_ENTRIES, "follower" => gone.to_string()).set(0.0);
        }
        self.lagging = lagging;
    }
}
