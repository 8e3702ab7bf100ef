//! Local executor: runs tasks as sandboxed child processes on this host.
//!
//! `executor` owns task bookkeeping and the operator loop; `staging`
//! prepares each task's host directories; `sandbox` builds the bubblewrap
//! command line; `process` spawns, streams and kills; `logs` turns output
//! into batched log lines; `outbox` routes reports to the newest connection;
//! `inventory` describes this host for heartbeats.

mod error;
mod executor;
mod inventory;
mod log_lines;
mod outbox;
mod process;
mod sandbox;
mod staging;
#[cfg(test)]
mod tests;

pub use executor::{LocalConfig, LocalOperator};
/// Shared with the Kubernetes executor, which routes reports the same way.
pub(crate) use outbox::Outbox;
