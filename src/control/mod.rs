//! The control plane's roles inside one server process: the agent endpoint
//! for operators, the log store, cluster membership (init, join), and the
//! leader-only loops (job dispatch, timers) that turn replicated state into
//! effects.
//!
//! Invariant: every effect of these loops on state is a proposed command, so
//! a new leader continues exactly where the old one stopped.

pub mod agent;
pub mod archive;
pub mod dispatch;
pub mod events;
pub mod leader;
pub mod logs;
pub mod masking;
pub mod membership;
pub mod placement;
pub mod timers;

/// Wall-clock time in Unix milliseconds: read at the edges, carried in commands.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
