//! The delayed-job monitor: fires replicated timers when they come due.
//!
//! Invariants: runs on the leader only; a timer fires by proposing
//! `FireTimer` with the time it was seen due, so it fires at most once
//! (the state machine removes it) and survives restarts (it is a row in
//! redb until fired). Due timers fire within [`TIMER_POLL`] of their time.

use super::now_ms;
use gantry_raft::RaftNode;
use gantry_storage::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const TIMER_POLL: Duration = Duration::from_millis(200);
const TIMERS_PER_ROUND_MAX: usize = 256;

pub async fn run(node: RaftNode, stop: CancellationToken) {
    loop {
        if let Err(error) = fire_due(&node).await {
            tracing::warn!(%error, "timer round failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TIMER_POLL) => {}
        }
    }
}

async fn fire_due(node: &RaftNode) -> Result<(), gantry_raft::RaftError> {
    loop {
        let now = now_ms();
        let due = node.read_local()?.due_timers(now, TIMERS_PER_ROUND_MAX)?;
        if due.is_empty() {
            return Ok(());
        }
        let fired = due.len();
        let proposals = due.into_iter().map(|timer| {
            node.propose_here(Command::FireTimer {
                now,
                timer_id: timer.id,
                due: timer.due,
            })
        });
        for result in futures::future::join_all(proposals).await {
            result?;
        }
        if fired < TIMERS_PER_ROUND_MAX {
            return Ok(());
        }
    }
}
