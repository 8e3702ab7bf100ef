//! The voters' agreed wall-clock time: this member's clock corrected by the
//! median of the voters' clock offsets, so that one member whose clock runs
//! fast or slow cannot move the cluster's time (what the leader stamps on
//! the timers it fires).
//!
//! Invariants: this member counts with offset 0; a voter that does not
//! answer within [`CLOCK_PROBE_TIMEOUT`] is left out; with an even number
//! of answers the lower median is taken, so a tie never makes time run
//! ahead (timers fire late rather than early). A cluster of one is its own
//! clock.

use super::RaftNode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait for one voter's clock.
pub const CLOCK_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// This machine's wall clock in Unix milliseconds.
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The lower median of `offsets` (0 when empty).
pub fn lower_median(mut offsets: Vec<i64>) -> i64 {
    if offsets.is_empty() {
        return 0;
    }
    offsets.sort_unstable();
    offsets[(offsets.len() - 1) / 2]
}

impl RaftNode {
    /// How far the voters' median clock is from this member's, in ms
    /// (negative: this clock is ahead).
    pub async fn voters_clock_offset(&self) -> i64 {
        let Some(transport) = &self.transport else {
            return 0;
        };
        let peers: Vec<String> = {
            let metrics = self.raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .filter_map(|id| membership.get_node(&id).map(|node| node.peer.clone()))
                .collect()
        };
        let mut probes = tokio::task::JoinSet::new();
        for peer in peers {
            let transport = transport.clone();
            probes.spawn(async move {
                let sent = Instant::now();
                let local_before = wall_clock_ms();
                let remote = tokio::time::timeout(CLOCK_PROBE_TIMEOUT, transport.clock(&peer))
                    .await
                    .ok()?
                    .ok()?;
                // The peer read its clock about halfway through the round trip.
                let half_trip = i64::try_from(sent.elapsed().as_millis() / 2).unwrap_or(0);
                Some(remote - (local_before + half_trip))
            });
        }
        let mut offsets = vec![0];
        while let Some(joined) = probes.join_next().await {
            if let Ok(Some(offset)) = joined {
                offsets.push(offset);
            }
        }
        lower_median(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::lower_median;

    #[test]
    fn one_clock_cannot_move_the_median() {
        let hour = 3_600_000;
        assert_eq!(lower_median(vec![0, -hour, -hour]), -hour);
        assert_eq!(lower_median(vec![0, hour, 5]), 5);
        assert_eq!(lower_median(vec![0, hour]), 0);
        assert_eq!(lower_median(vec![0, -hour]), -hour);
        assert_eq!(lower_median(vec![0]), 0);
        assert_eq!(lower_median(Vec::new()), 0);
    }
}
