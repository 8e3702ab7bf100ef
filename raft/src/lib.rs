//! gantry-raft: Gantry's replicated log — openraft over redb.
//!
//! Invariants:
//! - The log store fsyncs (redb immediate durability) before it reports an
//!   append complete, so an acknowledged proposal survives `kill -9`.
//! - Each log entry carries a [`Batch`] of commands; the [`Proposer`] groups
//!   concurrent proposals so one fsync commits many of them.
//! - The state machine is [`gantry_storage::Store`]; the applied log id and
//!   membership are written in the same transaction as the commands' effects.
//! - Nothing here assumes a single node: a cluster of one is initialized with
//!   one voter and runs the same code as a larger one.
//! - Members talk through the [`transport`] (HTTP/2 over mutual TLS); any
//!   member serves any proposal or linearizable read by asking the leader.
//! - Storage failpoints (`fail::fail_point!`, listed in [`log_store`] and
//!   [`state_machine`]) exist only with the `failpoints` feature, which only
//!   test builds turn on; without it the macro expands to nothing.

pub mod checkpoints;
pub mod error;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod private_fs;
pub mod proposer;
pub mod rebuild;
pub mod snapshot_file;
pub mod snapshot_receive;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use error::RaftError;
pub use node::{MemberInfo, MemberRole, MembersView, NodeConfig, RaftNode};
pub use transport::{peer_router, serve_peer, ForwardError, PeerTransport};
pub use types::{Batch, GantryNode, NodeId, TypeConfig};
