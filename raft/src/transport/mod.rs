//! The Raft peer transport: HTTP/2 over mutual TLS between cluster members.
//!
//! Owns the wire protocol between members: the three openraft RPCs
//! (`/raft/append`, `/raft/vote`, `/raft/snapshot`) and the Gantry calls
//! that let any member serve any client call (`/gantry/propose`,
//! `/gantry/read-index`, `/gantry/membership`, `/gantry/members`,
//! `/gantry/clock`) or check the others' state (`/gantry/state-hash`,
//! `/gantry/state-verdict`), and the object-store probe exchange
//! (`/gantry/store-probe`, answered by the binary, which owns the store:
//! [`server::store_probe_router`]). Every body is bincode (the serde API of bincode 2,
//! standard config); every handled call answers `200` with a bincode
//! `Result`, so a non-200 status always means the transport, not Raft, failed.
//!
//! Invariants:
//! - TLS is configured by the caller (the binary): the client config verifies
//!   the peer against the cluster CA and presents this member's certificate;
//!   the server config requires a client certificate. Nothing here weakens it.
//! - One pooled HTTP/2 connection per peer address, shared by every RPC to
//!   it and re-established when it closes ([`client`]).
//! - Every RPC is bounded in time ([`RPC_TIMEOUT_MAX`], or openraft's shorter
//!   `hard_ttl`) and every body in size ([`REQUEST_BODY_MAX`],
//!   [`RESPONSE_BODY_MAX`]).
//! - A peer listener accepts at most [`PEER_CONNECTIONS_MAX`] connections and
//!   an API listener at most [`API_CONNECTIONS_MAX`], each limit its own;
//!   each connection has [`TLS_HANDSHAKE_TIMEOUT`] to complete its handshake
//!   ([`server`]).

pub mod client;
pub mod server;

use crate::types::{LogId, NodeId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use client::{PeerClient, PeerTransport};
pub use server::{peer_router, serve_peer, serve_tls, store_probe_router, HttpVersions, TlsPeer};

/// A change of the voting membership, carried out by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add `id` as a learner, wait for it to catch up, then make it a voter.
    /// A no-op for a member that already votes.
    Join {
        id: NodeId,
        node: crate::types::GantryNode,
    },
    /// Remove `id` from the cluster.
    Remove { id: NodeId },
}

/// The voters after a membership change.
pub type MembershipReply = Result<Vec<NodeId>, ForwardError>;

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
pub const PROPOSE_PATH: &str = "/gantry/propose";
pub const READ_INDEX_PATH: &str = "/gantry/read-index";
pub const MEMBERSHIP_PATH: &str = "/gantry/membership";
pub const MEMBERS_PATH: &str = "/gantry/members";
/// A member's wall clock (Unix ms), for the voters' median time.
pub const CLOCK_PATH: &str = "/gantry/clock";
/// The hash of a member's state at a checkpoint index (the leader asks).
pub const STATE_HASH_PATH: &str = "/gantry/state-hash";
/// The leader's verdict on a member's state after a state check.
pub const STATE_VERDICT_PATH: &str = "/gantry/state-verdict";
/// What a member's state hash covers (`gantry_storage::state_hash::state_schema`);
/// a member of a build from before schemas were announced answers 404.
pub const STATE_SCHEMA_PATH: &str = "/gantry/state-schema";
/// The leader's verdict with the state schema it judged under: a member
/// takes it only when its own schema is the same. (Builds from before
/// schemas were announced send theirs to [`STATE_VERDICT_PATH`].)
pub const STATE_VERDICT_SCHEMA_PATH: &str = "/gantry/state-verdict-schema";
/// What a member's build understands ([`BuildInfo`]); a member of a build
/// from before version gating answers 404.
pub const BUILD_PATH: &str = "/gantry/build";
/// Longest one build probe may take.
pub const BUILD_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A member's build, as it announces it to the leader (version gating).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The release, e.g. `0.1.0`.
    pub version: String,
    /// Command kinds it understands: `0..command_kinds`.
    pub command_kinds: u16,
}

impl BuildInfo {
    /// This process's build.
    pub fn this_build() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            command_kinds: gantry_storage::COMMAND_KINDS,
        }
    }
}

/// One object-store probe exchange: the caller names its probe, the callee
/// reads it from its own store and answers with its own probe.
pub const STORE_PROBE_PATH: &str = "/gantry/store-probe";
/// Longest one probe exchange may take (two small object-store reads and a
/// round trip).
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A member's probe object: it wrote `nonce` under its probe key in its
/// object store at its start, so any member that reads the same nonce
/// there reads the same store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProbe {
    pub id: NodeId,
    /// Random, new at every start.
    pub nonce: String,
    /// The store's URL, for messages (it holds no credentials).
    pub store: String,
    /// Whether it is a directory inside the member's own data directory
    /// (the default store), which no other member reads.
    pub in_data_dir: bool,
}

/// The callee's half of a probe exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProbeAnswer {
    /// The callee's own probe.
    pub probe: StoreProbe,
    /// Whether the callee read the caller's probe, nonce and all, from its
    /// own store; why not.
    pub read_yours: Result<(), String>,
    /// Every other member of the callee's membership (ID, peer address),
    /// so a node about to join can exchange probes with all of them.
    pub members: Vec<(NodeId, String)>,
}

/// Longest a membership change may take end to end (a joining learner
/// catches up first).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest a follower waits for the leader's member list before it shows
/// its own view instead.
pub const MEMBERS_TIMEOUT: Duration = Duration::from_secs(3);

/// Encoded bytes of log entries one AppendEntries request carries, at most
/// (beyond a single entry, which goes alone whatever its size): openraft
/// allows the request one heartbeat interval (100 ms), and a request that
/// cannot finish in it is resent forever; a quarter of the entry limit
/// still finishes on a loaded machine.
pub const APPEND_BYTES_TARGET: usize = 256 * 1024;

/// Longest any one peer RPC may take, whatever openraft's TTL says.
pub const RPC_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Longest a forwarded proposal or read-index call may take: it waits for a
/// commit on the leader, which answers within its proposal wait
/// ([`crate::node::forward::PROPOSE_WAIT_MAX`]), so this is longer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(25);
/// Longest to open a connection (TCP + TLS + HTTP/2 preface) to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body sent or accepted. Above any snapshot chunk
/// ([`crate::node::SNAPSHOT_CHUNK_BYTES`]); an append-entries request above
/// it is split by openraft (the client answers `PayloadTooLarge`).
pub const REQUEST_BODY_MAX: usize = 64 * 1024 * 1024;
/// Largest response body accepted: Raft replies and outcomes are small.
pub const RESPONSE_BODY_MAX: usize = 4 * 1024 * 1024;
/// Longest an accepted connection may take to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Peer connections served at once, at most (a cluster has 3–5 members, each
/// holding one; the rest is headroom for reconnects).
pub const PEER_CONNECTIONS_MAX: usize = 64;
/// API connections served at once, at most, on one listener of their own:
/// many clients following logs hold a connection each, and must not take
/// the slots of the peers (or of each other's queries) — 64 of them once
/// starved everything. The server raises its open-file limit to fit.
pub const API_CONNECTIONS_MAX: usize = 4096;
/// Concurrent HTTP/2 streams per peer connection, at most.
pub const PEER_STREAMS_MAX: u32 = 256;
/// HTTP/2 ping interval on idle peer connections, and how long a ping may go
/// unanswered before the connection is dropped (and re-established).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the server waits for open connections to finish after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a member did not carry out a forwarded call, as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardError {
    /// The member is not the leader; `leader_id` is the leader it knows of.
    NotLeader {
        leader_id: Option<NodeId>,
    },
    ShuttingDown,
    /// Anything else, as text: the caller cannot act on it beyond reporting.
    Failed(String),
    /// The leader took the proposal but did not see it commit in time.
    OutcomeUnknown {
        waited_ms: u64,
    },
    /// The leader refused a command kind that some member does not
    /// understand yet (version gating); nothing was proposed.
    NotUnderstood(String),
}

impl From<crate::RaftError> for ForwardError {
    fn from(error: crate::RaftError) -> ForwardError {
        match error {
            crate::RaftError::NotLeader { leader_id, .. } => ForwardError::NotLeader { leader_id },
            crate::RaftError::ShuttingDown => ForwardError::ShuttingDown,
            crate::RaftError::OutcomeUnknown(waited) => ForwardError::OutcomeUnknown {
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            },
            crate::RaftError::NotUnderstood(reason) => ForwardError::NotUnderstood(reason),
            other => ForwardError::Failed(other.to_string()),
        }
    }
}

/// Answer of `/gantry/read-index`: the log id a follower must have applied
/// before its local state is a linearizable read.
pub type ReadIndexReply = Result<Option<LogId>, ForwardError>;
/// Answer of `/gantry/members`: the leader's view of every member.
pub type MembersReply = Result<Vec<crate::node::MemberInfo>, ForwardError>;
/// Answer of `/gantry/state-hash`: the SHA-256 of the member's state at the
/// index asked, or why it has none.
pub type StateHashReply = Result<crate::node::Digest, ForwardError>;
/// Answer of `/gantry/state-verdict`.
pub type StateVerdictReply = Result<(), ForwardError>;
/// Answer of `/gantry/propose`.
pub type ProposeReply = Result<gantry_storage::Outcome, ForwardError>;
