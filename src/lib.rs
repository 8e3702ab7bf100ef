//! gantry: workflow orchestration for Physical AI.
//!
//! The library behind the `gantry` binary: the control plane's roles (API,
//! worker, timers, logger, operator hub), the backend operator and its
//! executors, and the CLI. Replicated state lives in `gantry-raft` over
//! `gantry-storage`.
//!
//! Invariant: the modules form layers (edges → api → roles → shared →
//! base) with no cycle and no upward import; `tests/layers.rs` holds the
//! order and fails when an import breaks it. `anyhow` appears only in the
//! edge modules (`cli`, `server`, `dev`, the operator's process entry).

// Edges
pub mod cli;
pub mod dev;
pub mod server;
// The HTTP API
pub mod api;
// Roles
pub mod control;
pub mod operator;
// Shared by both sides of the operator stream and the API
pub mod data;
pub mod log_chunk;
pub mod protocol;
// Base
pub mod access_token;
pub mod bulk;
pub mod clock;
pub mod data_dir;
pub mod image_ref;
pub mod metrics;
pub mod object_storage;
pub mod secrets;
pub mod spec;
pub mod supervisor;
pub mod text;
pub mod tls;

/// The git commit this binary was built from (`build.rs`; `unknown` when
/// built outside a git checkout without `GANTRY_GIT_HASH` set).
pub const GIT_HASH: &str = env!("GANTRY_GIT_HASH");
