//! Local executor: runs tasks as sandboxed child processes on this host.
//!
//! `executor` is the operator: its job loop and public API, with its parts
//! below it (`tasks`, the table of running tasks and their cancels;
//! `task_run`, one task from acceptance to its final report; `data_phases`,
//! its input download and output upload); `staging` prepares each task's
//! host directories; `expansion` expands kubelet's `$(VAR)` references in
//! the command and args; `sandbox` builds the bubblewrap command line, with
//! `etc` (the task's generated `/etc`), `seccomp` (its system call
//! filters), `netns` (its group's network namespace) and `cgroup` (its
//! resource limits); `usage` watches its output against its storage limit;
//! `process` spawns, streams and kills; `task_files` reads a running
//! task's checkpoint directories through its sandbox's root; `log_lines` turns output into
//! batched log lines; `outbox` routes reports to the newest connection;
//! `inventory` describes this host for heartbeats; `error` holds why a task
//! failed or stopped.

mod cgroup;
pub mod enter;
mod error;
mod etc;
mod exec_session;
mod executor;
mod expansion;
pub mod gpu;
pub mod image;
mod inventory;
mod log_lines;
mod netns;
mod outbound;
#[cfg(test)]
mod outbound_tests;
mod outbox;
mod process;
mod sandbox;
mod seccomp;
mod staging;
mod task_files;
#[cfg(test)]
mod tests;
mod udp_session;
mod usage;

pub use executor::{LocalConfig, LocalOperator};
pub use image::{TaskRoot, TaskRootMode};
/// Shared with the Kubernetes executor, which routes reports the same way.
pub(crate) use outbox::Outbox;
