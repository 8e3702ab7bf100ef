//! The Raft crate's one error type.

use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("storage: {0}")]
    Storage(#[from] gantry_storage::StorageError),
    #[error("raft storage: {0}")]
    RaftStorage(String),
    /// This node is not the leader; `leader` is the leader's address if known.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader: Option<String>,
    },
    #[error("raft is shutting down")]
    ShuttingDown,
    #[error("raft: {0}")]
    Raft(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
