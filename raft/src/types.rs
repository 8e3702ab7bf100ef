//! openraft type configuration: what a log entry carries and what applying
//! it returns.

use gantry_storage::{Command, Outcome};
use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub type NodeId = u64;

/// The payload of one log entry: commands proposed together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub commands: Vec<Command>,
}

/// One outcome per command of the entry's batch (empty for blank and
/// membership entries).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
}

/// What the cluster knows of a member: where its peers and its API clients
/// reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GantryNode {
    /// `host:port` of the Raft peer endpoint (mTLS).
    pub peer: String,
    /// Base URL of the HTTP API, e.g. `https://10.0.0.1:8470`.
    pub api: String,
}

impl std::fmt::Display for GantryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer={} api={}", self.peer, self.api)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = GantryNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, GantryNode>;
pub type StorageError = openraft::StorageError<NodeId>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| e.to_string())
}
