//! One Raft member: its log store, state machine, proposer and openraft
//! instance, opened from a data directory.
//!
//! Invariants: the data directory holds `raft-log.redb` (log, vote),
//! `state.redb` (tables and applied position) and `snapshot.bin`; reads
//! through [`RaftNode::read`] are linearizable (read-index), reads through
//! [`RaftNode::read_local`] see this replica's applied state.

use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::proposer::Proposer;
use crate::state_machine::StateMachine;
use crate::types::{GantryNode, NodeId, TypeConfig};
use gantry_storage::{Command, Outcome, ReadView, Store};
use openraft::network::RaftNetworkFactory;
use openraft::{Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    /// How peers and API clients reach this node.
    pub address: GantryNode,
}

#[derive(Clone)]
pub struct RaftNode {
    id: NodeId,
    address: GantryNode,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    proposer: Proposer,
}

pub type Metrics = RaftMetrics<NodeId, GantryNode>;

/// Longest wait for a leader to be elected before a call gives up.
pub const ELECTION_WAIT_MAX: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds or fails for a reason other than "no
/// leader is known yet", backing off, for at most [`ELECTION_WAIT_MAX`].
async fn wait_out_election<T, F, Fut>(mut attempt: F) -> Result<T, RaftError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RaftError>>,
{
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    let mut delay = Duration::from_millis(20);
    loop {
        match attempt().await {
            Err(RaftError::NotLeader { leader: None, .. })
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

fn raft_config() -> Result<Arc<Config>, RaftError> {
    let config = Config {
        cluster_name: "gantry".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 2_000,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| RaftError::Raft(e.to_string()))?,
    ))
}

impl RaftNode {
    pub async fn open<N>(config: NodeConfig, network: N) -> Result<RaftNode, RaftError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        std::fs::create_dir_all(&config.data_dir)?;
        let log_store = LogStore::open(&config.data_dir.join("raft-log.redb"))?;
        let store = Arc::new(Store::open(&config.data_dir.join("state.redb"))?);
        let state_machine = StateMachine::new(store.clone(), config.data_dir.join("snapshot.bin"));
        let raft = Raft::new(
            config.node_id,
            raft_config()?,
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))?;
        let proposer = Proposer::start(raft.clone());
        Ok(RaftNode {
            id: config.node_id,
            address: config.address,
            raft,
            store,
            proposer,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
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

    /// Proposes a command; returns its outcome once committed and applied.
    /// While the cluster has no leader (an election), waits for one up to
    /// [`ELECTION_WAIT_MAX`].
    pub async fn propose(&self, command: Command) -> Result<Outcome, RaftError> {
        wait_out_election(|| self.proposer.propose(command.clone())).await
    }

    /// A linearizable read: confirms leadership, waits for the state machine
    /// to catch up to the read index, then opens a read view. Waits out an
    /// election like [`RaftNode::propose`].
    pub async fn read(&self) -> Result<ReadView, RaftError> {
        wait_out_election(|| self.read_linearizable()).await
    }

    async fn read_linearizable(&self) -> Result<ReadView, RaftError> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|error| match error {
                openraft::error::RaftError::APIError(
                    openraft::error::CheckIsLeaderError::ForwardToLeader(forward),
                ) => RaftError::NotLeader {
                    leader_id: forward.leader_id,
                    leader: forward.leader_node.map(|node| node.api),
                },
                openraft::error::RaftError::Fatal(openraft::error::Fatal::Stopped) => {
                    RaftError::ShuttingDown
                }
                other => RaftError::Raft(other.to_string()),
            })?;
        self.read_local()
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

    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Raft(e.to_string()))
    }
}
