//! A member's configuration: identity, data directory, address, Raft timing
//! and snapshot policy, with their defaults, and the openraft `Config` made
//! from them.
//!
//! Invariant: a node's openraft `Config` comes only from
//! [`NodeConfig::raft_config`], checked by openraft before the node opens.

use crate::error::RaftError;
use crate::types::{GantryNode, NodeId};
use openraft::{Config, SnapshotPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default leader heartbeat interval. openraft checks its timers every
/// 1.5 heartbeat intervals, so heartbeats actually leave every 150 ms.
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);
/// Default election timeout range. Each node draws its timeout once from
/// it. openraft adds the leader lease (= the maximum) for a follower that
/// knew a leader, so a follower that hears nothing for
/// `max + [min, max)` = 900–1100 ms (plus up to one timer tick) starts an
/// election, and until `max` has passed since its last heartbeat it refuses
/// to vote for anyone else. That puts a SIGKILLed leader's successor at
/// about one second, and still tolerates six missed heartbeats on a loaded
/// machine before anyone campaigns.
pub const ELECTION_TIMEOUT_MIN_DEFAULT: Duration = Duration::from_millis(350);
pub const ELECTION_TIMEOUT_MAX_DEFAULT: Duration = Duration::from_millis(550);
/// Default: a snapshot is built every this many applied log entries.
pub const SNAPSHOT_EVERY_LOGS_DEFAULT: u64 = 20_000;
/// Default: log entries kept behind a snapshot, so a briefly lagging member
/// catches up from the log instead of a whole snapshot.
pub const LOGS_KEPT_AFTER_SNAPSHOT_DEFAULT: u64 = 2_000;
/// Bytes of snapshot per install-snapshot RPC (below the transport's
/// request body limit).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Longest one install-snapshot chunk RPC may take.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// How peers and API clients reach this node.
    pub address: GantryNode,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot every this many applied log entries.
    pub snapshot_every_logs: u64,
    /// Log entries kept behind a snapshot when the log is purged.
    pub logs_kept_after_snapshot: u64,
}

impl NodeConfig {
    /// A configuration with the default timing and snapshot policy.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>, address: GantryNode) -> NodeConfig {
        NodeConfig {
            node_id,
            data_dir: data_dir.into(),
            address,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            election_timeout_min: ELECTION_TIMEOUT_MIN_DEFAULT,
            election_timeout_max: ELECTION_TIMEOUT_MAX_DEFAULT,
            snapshot_every_logs: SNAPSHOT_EVERY_LOGS_DEFAULT,
            logs_kept_after_snapshot: LOGS_KEPT_AFTER_SNAPSHOT_DEFAULT,
        }
    }

    pub(super) fn raft_config(&self) -> Result<Arc<Config>, RaftError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: "gantry".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(SNAPSHOT_CHUNK_TIMEOUT),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_logs),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            ..Default::default()
        };
        Ok(Arc::new(
            config
                .validate()
                .map_err(|e| RaftError::Raft(e.to_string()))?,
        ))
    }
}
