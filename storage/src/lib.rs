//! gantry-storage: Gantry's replicated state — redb tables and the pure state
//! machine that changes them.
//!
//! Invariants:
//! - [`Command`] is the only way state changes; [`Store::apply`] runs commands
//!   in one write transaction together with the Raft layer's metadata, so the
//!   tables and the applied log position never disagree.
//! - `apply` is pure: no clock, randomness, environment or network; time and
//!   identifiers arrive in the command. Replaying the same commands on any
//!   replica yields the same tables, byte for byte.
//! - A rejected command changes nothing and returns [`Outcome::Rejected`].
//! - This crate knows nothing of tokio, openraft or the network.

pub mod admission;
pub mod command;
pub mod config;
pub mod error;
pub mod extras;
pub mod labels;
pub mod plan;
pub mod record;
pub mod status;

pub use command::{
    Command, Outcome, PackedSubmission, Rejection, RejectionKind, TaskDataTimes, TaskKey,
    TaskReport, COMMAND_KINDS, COMMAND_KINDS_UNGATED, REQUEST_KEY_BYTES_MAX,
    REQUEST_KEY_RETENTION_MS,
};
pub use config::{
    BackendRecord, BackendSettings, ConfigData, ConfigMeta, ConfigRevision, ConfigType, GpuQuota,
    NodeInventory, PlatformConfig, Policy, PolicyEffect, PoolConfig, PoolExtras, PoolStatus,
    RoleConfig, SchedulerType, Taint, Toleration, TopologyKey, EXECUTOR_LOCAL,
};
pub use error::StorageError;
pub use record::*;
/// The row envelope, for the Raft log's file (which this crate does not own).
pub use row::{seal, unseal};
pub use status::{Priority, TaskStatus, WorkflowStatus};
mod aggregate;
mod apply;
mod indexes;
mod lifecycle;
mod list;
mod row;
mod schema;
pub mod snapshot;
pub mod state_hash;
pub mod store;
mod tables;
mod tally;
pub mod task_list;
mod workflow_specs;

pub use state_hash::StateHash;
pub use store::{ListFilter, ReadView, Store};
pub use task_list::TaskFilter;
