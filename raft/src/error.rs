//! The Raft crate's one error type.

use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The state's own words (they name the table, key or file).
    #[error(transparent)]
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
    /// A peer could not be reached; the request was never sent, so retrying
    /// it (elsewhere) cannot apply it twice.
    #[error("peer {peer} unreachable: {reason}")]
    PeerUnreachable { peer: String, reason: String },
    /// A request to a peer failed after it was sent: it may or may not have
    /// taken effect there.
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    /// A command too large for one log entry; never proposed.
    #[error("the request encodes to {bytes} bytes, more than the {limit} one replicated command may hold")]
    TooLarge { bytes: usize, limit: usize },
    /// A proposal was not seen to commit within the proposal wait: it may
    /// still commit later (or never).
    #[error("no commit within {0:?}; the outcome is unknown")]
    OutcomeUnknown(std::time::Duration),
    /// A state check found this member's state different from the
    /// majority's: it serves no reads until it is rebuilt.
    #[error(
        "this member's state is marked corrupt ({0}); rebuild it with `gantry cluster rebuild`"
    )]
    StateCorrupt(String),
    /// A command kind some member does not understand yet (version
    /// gating): refused before it was proposed.
    #[error("{0}")]
    NotUnderstood(String),
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// The I/O error a storage failpoint injects (see the `failpoints` feature).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) fn failpoint_error(name: &str) -> std::io::Error {
    std::io::Error::other(format!("failpoint {name}"))
}
