//! One Raft member: its log store, state machine, proposer and openraft
//! instance, opened from a data directory; bootstrap, accessors and
//! shutdown. What a member serves lives beside this file: `forward`
//! (proposals and linearizable reads from any member, forwarded to the
//! leader), `membership` (`members`, voter changes), `state_check` (the
//! leader's comparison of state hashes), `integrity` (this member's
//! verdict) and `versions` (version gating of new command kinds); `config`
//! holds its settings.
//!
//! Invariants: the data directory holds `raft-log.redb` (log, vote),
//! `state.redb` (tables and applied position) and `snapshot.bin` (the
//! latest snapshot, a [`crate::snapshot_file`]); reads through
//! [`RaftNode::read`] are linearizable on every member, reads through
//! [`RaftNode::read_local`] see this replica's applied state; forwarding
//! never applies a command twice (see `forward`); a member whose state a
//! state check found corrupt refuses [`RaftNode::read`] (`state_check`,
//! `integrity`).

mod clock;
mod config;
mod forward;
mod integrity;
mod membership;
mod state_check;
mod versions;

pub use clock::{lower_median, wall_clock_ms, CLOCK_PROBE_TIMEOUT};
pub use config::{
    NodeConfig, ELECTION_TIMEOUT_MAX_DEFAULT, ELECTION_TIMEOUT_MIN_DEFAULT,
    HEARTBEAT_INTERVAL_DEFAULT, LOGS_KEPT_AFTER_SNAPSHOT_DEFAULT, SNAPSHOT_CHUNK_BYTES,
    SNAPSHOT_CHUNK_TIMEOUT, SNAPSHOT_EVERY_LOGS_DEFAULT,
};
pub use forward::{ELECTION_WAIT_MAX, FORWARD_ATTEMPTS_MAX, PROPOSE_WAIT_MAX, READ_CATCH_UP_MAX};
pub use integrity::{StateVerdict, CORRUPT_MARK_FILE};
pub use membership::{MemberInfo, MemberRole, MembersView, LEARNER_CATCH_UP_MAX};
pub use state_check::{
    judge, CheckRound, CheckState, Digest, StateCheck, STATE_HASH_APPLY_WAIT, STATE_HASH_TIMEOUT,
};
pub use versions::{Announced, ANNOUNCEMENT_AGE_MAX};

use crate::checkpoints::Checkpoints;
use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::network::NoPeerTransport;
use crate::proposer::Proposer;
use crate::state_machine::StateMachine;
use crate::transport::PeerTransport;
use crate::types::{GantryNode, NodeId, TypeConfig};
use gantry_storage::{ReadView, Store};
use openraft::metrics::WaitError;
use openraft::{Raft, RaftMetrics, ServerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct RaftNode {
    id: NodeId,
    address: GantryNode,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    proposer: Proposer,
    transport: Option<PeerTransport>,
    /// Read views at the last checkpoints (see [`crate::checkpoints`]).
    checkpoints: Checkpoints,
    /// Whether a state check found this member's state corrupt.
    integrity: integrity::Integrity,
    /// One state hash at a time on this member.
    hashing: Arc<tokio::sync::Mutex<()>>,
    /// The results of the last state check this node ran as leader.
    state_checks: Arc<std::sync::Mutex<BTreeMap<NodeId, StateCheck>>>,
    /// The members' builds as they announced them (version gating).
    announcements: versions::Announcements,
}

pub type Metrics = RaftMetrics<NodeId, GantryNode>;

/// A bounded wait on openraft's metrics (reads catching up, a learner
/// catching up) as this crate's error.
fn wait_error(error: WaitError) -> RaftError {
    match error {
        WaitError::Timeout(after, what) => RaftError::Timeout(format!("{what} ({after:?})")),
        WaitError::ShuttingDown => RaftError::ShuttingDown,
    }
}

/// Longest [`RaftNode::open`] waits for the core's first metrics report.
const FIRST_METRICS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl RaftNode {
    /// Opens the member stored in `config.data_dir`. With a `transport` it
    /// replicates to and forwards calls to its peers; without one it can
    /// only be a cluster of one (every peer is unreachable).
    pub async fn open(
        config: NodeConfig,
        transport: Option<PeerTransport>,
    ) -> Result<RaftNode, RaftError> {
        // Private whatever the umask: the log and the state hold every
        // credential the cluster was given.
        crate::private_fs::create_dir(&config.data_dir)?;
        let log_path = config.data_dir.join("raft-log.redb");
        let state_path = config.data_dir.join("state.redb");
        crate::private_fs::prepare_file(&log_path)?;
        crate::private_fs::prepare_file(&state_path)?;
        let raft_config = config.raft_config()?;
        let log_store = LogStore::open(&log_path)?;
        let store = Arc::new(Store::open(&state_path)?);
        let log_activity = log_store.activity();
        let checkpoints = Checkpoints::default();
        let integrity = integrity::Integrity::open(&config.data_dir)?;
        let state_machine = StateMachine::new(
            store.clone(),
            config.data_dir.join("snapshot.bin"),
            checkpoints.clone(),
        );
        let raft = match &transport {
            Some(transport) => {
                Raft::new(
                    config.node_id,
                    raft_config,
                    transport.clone(),
                    log_store,
                    state_machine,
                )
                .await
            }
            None => {
                Raft::new(
                    config.node_id,
                    raft_config,
                    NoPeerTransport,
                    log_store,
                    state_machine,
                )
                .await
            }
        }
        .map_err(|e| RaftError::Raft(e.to_string()))?;
        // Until the core's first report the metrics hold openraft's empty
        // initial state: wait for it, so that what callers read right after
        // opening (`is_initialized_member`, `members`) is the stored membership.
        let mut metrics = raft.metrics();
        if tokio::time::timeout(FIRST_METRICS_WAIT_MAX, metrics.changed())
            .await
            .is_err()
        {
            tracing::warn!("the Raft core reported no state within {FIRST_METRICS_WAIT_MAX:?}");
        }
        let proposer = Proposer::start(raft.clone(), Some(log_activity));
        Ok(RaftNode {
            id: config.node_id,
            address: config.address,
            raft,
            store,
            proposer,
            transport,
            checkpoints,
            integrity,
            hashing: Arc::new(tokio::sync::Mutex::new(())),
            state_checks: Arc::default(),
            announcements: versions::Announcements::default(),
        })
    }

    /// Why the Raft core stopped, if it did (e.g. a storage error such as a
    /// full disk): the node cannot serve again until it is restarted.
    pub fn stopped_reason(&self) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(|fatal| fatal.to_string())
    }

    /// Whether this node's stored membership already includes it (it
    /// belonged to a cluster before this start).
    pub fn is_initialized_member(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some()
    }

    /// How peers and API clients reach this node.
    pub fn address(&self) -> &GantryNode {
        &self.address
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This member's openraft instance (the peer routes feed it RPCs).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Makes this node the only voter of a new cluster; a no-op if the node
    /// already belongs to one.
    pub async fn bootstrap(&self) -> Result<(), RaftError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id, self.address.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))
    }
    /// The first corrupt row this member's state met since it started, if
    /// any: the member is then unhealthy until it is rebuilt.
    pub fn state_corruption(&self) -> Option<String> {
        self.store.corruption()
    }

    /// This replica's applied state, without a leadership check.
    pub fn read_local(&self) -> Result<ReadView, RaftError> {
        Ok(self.store.read()?)
    }

    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.raft.metrics()
    }

    /// `Some(term)` while this node leads.
    pub fn leader_term(&self, metrics: &Metrics) -> Option<u64> {
        (metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id))
            .then_some(metrics.current_term)
    }

    /// The member with `id` in the membership this node knows.
    fn member(&self, id: NodeId) -> Option<GantryNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// The leader this node knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, GantryNode)> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.member(leader).map(|node| (leader, node))
    }
    /// Stops openraft on this member (the peer server, if any, is the
    /// caller's to stop).
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))
    }
}
