//! Local executor: runs tasks as sandboxed child processes on this host.
//!
//! `executor` owns task bookkeeping and the operator loop; `staging`
//! prepares each task's host directories; `sandbox` builds the bubblewrap
//! command line; `process` spawns, streams and kills; `logs` turns output
//! into batched log lines; `outbox` routes reports to the newest connection.

// The binary's main is still a stub, so nothing outside the tests uses this
// module yet; without this every item would warn as dead code.
#![allow(dead_code)]

mod error;
mod executor;
mod logs;
mod outbox;
mod process;
mod sandbox;
mod staging;
#[cfg(test)]
mod tests;

// Re-exported for the binary's roles; unused until main wires them (see above).
#[allow(unused_imports)]
pub use error::ExecError;
#[allow(unused_imports)]
pub use executor::{LocalConfig, LocalOperator};
