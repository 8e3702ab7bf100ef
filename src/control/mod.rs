//! The control plane's roles inside one server process: the operator hub
//! (operator connections), the logger, cluster membership (init, join),
//! the shared-object-store check,
//! and the leader-only loops (job dispatch, timers, state checks) that
//! turn replicated state into effects or check it.
//!
//! Invariant: every effect of these loops on state is a proposed command, so
//! a new leader continues exactly where the old one stopped.

pub mod archive;
pub mod dispatch;
pub mod events;
pub mod leader;
pub mod logger;
pub mod masking;
pub mod membership;
pub mod operator_hub;
pub mod placement;
pub mod state_check;
pub mod store_probe;
pub mod timers;
