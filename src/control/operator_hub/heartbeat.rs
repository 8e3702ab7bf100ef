//! Heartbeats: an operator's `Heartbeat` (its nodes) becomes a
//! `BackendHeartbeat` command, which keeps the backend online and re-arms
//! its offline and lost timers.
//!
//! Invariant: heartbeats become commands at most once per backend per
//! [`HEARTBEAT_PROPOSE_INTERVAL_MIN`] (from this node); the others are only
//! acknowledged (the next one carries the newer inventory anyway).

use super::OperatorHub;
use gantry_storage::{Command, Millis, NodeInventory};

/// At most one heartbeat per backend is proposed in this time; the others
/// are dropped (the next one carries the newer inventory anyway).
pub const HEARTBEAT_PROPOSE_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(3);

impl OperatorHub {
    /// The command for a heartbeat of `backend` carrying `nodes`, or `None`
    /// when one was proposed too recently.
    pub(super) fn heartbeat_command(
        &self,
        now: Millis,
        backend: &str,
        nodes: Vec<NodeInventory>,
        view: &gantry_storage::ReadView,
    ) -> Option<Command> {
        if !self.heartbeat_due(backend) {
            return None;
        }
        // The graces travel in the command: apply reads no config.
        let (offline_after_ms, fail_tasks_after_ms) =
            gantry_storage::config::ServiceConfig::in_force(view).graces_ms();
        Some(Command::BackendHeartbeat {
            now,
            backend: backend.to_string(),
            nodes,
            offline_after_ms,
            fail_tasks_after_ms,
        })
    }

    /// Whether a heartbeat of `backend` may be proposed now (and notes it).
    fn heartbeat_due(&self, backend: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self
            .last_heartbeat
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match last.get(backend) {
            Some(at) if now.duration_since(*at) < HEARTBEAT_PROPOSE_INTERVAL_MIN => false,
            _ => {
                last.insert(backend.to_string(), now);
                true
            }
        }
    }
}
