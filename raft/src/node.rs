//! One Raft member: its log store, state machine, proposer and openraft
//! instance, opened from a data directory, and the calls that make any
//! member serve any request (forwarding to the leader).
//!
//! Invariants: the data directory holds `raft-log.redb` (log, vote),
//! `state.redb` (tables and applied position) and `snapshot.bin` (the
//! latest snapshot, a [`crate::archive`]); reads
//! through [`RaftNode::read`] are linearizable on every member (read-index,
//! asked of the leader when this member follows), reads through
//! [`RaftNode::read_local`] see this replica's applied state. A proposal is
//! forwarded to the leader only when it was certainly not proposed here
//! (`NotLeader`), and retried elsewhere only when it was certainly not
//! carried out there (`NotLeader`, or the leader was unreachable before the
//! request was sent), so forwarding never applies a command twice.

use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::network::NoPeerTransport;
use crate::proposer::{write_error, Proposer};
use crate::state_machine::StateMachine;
use crate::transport::MembershipChange;
use crate::transport::{ForwardError, PeerTransport};
use crate::types::{GantryNode, LogId, NodeId, TypeConfig};
use gantry_storage::{Command, Outcome, ReadView, Store};
use openraft::error::{CheckIsLeaderError, Fatal};
use openraft::metrics::WaitError;
use openraft::{Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
/// Forwarded attempts of one call (across leader changes), at most.
pub const FORWARD_ATTEMPTS_MAX: u32 = 5;
/// Longest a read waits for this replica to apply up to the read index.
pub const READ_CATCH_UP_MAX: Duration = Duration::from_secs(10);
/// Longest [`RaftNode::add_learner`] waits for the new learner to catch up.
pub const LEARNER_CATCH_UP_MAX: Duration = Duration::from_secs(60);

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

    fn raft_config(&self) -> Result<Arc<Config>, RaftError> {
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

/// What a member is, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
    /// Only ever reported for this node itself: openraft does not publish
    /// other members' election state.
    Candidate,
}

/// One member of the cluster, as this node's metrics describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub node: GantryNode,
    pub role: MemberRole,
    pub voter: bool,
    /// Highest log index known to be replicated to the member: only known
    /// while this node leads (for itself, its last log index).
    pub matched: Option<u64>,
    /// Milliseconds since this node last got an append-entries reply from
    /// the member: only known while this node leads (0 for itself).
    pub last_contact_ms: Option<u64>,
}

#[derive(Clone)]
pub struct RaftNode {
    id: NodeId,
    address: GantryNode,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    proposer: Proposer,
    transport: Option<PeerTransport>,
}

pub type Metrics = RaftMetrics<NodeId, GantryNode>;

/// Longest wait for a leader to be elected before a call gives up.
pub const ELECTION_WAIT_MAX: Duration = Duration::from_secs(10);
/// First and longest pause between attempts while waiting out an election;
/// a pause ends early as soon as this node learns of a different leader.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);

fn leadership_error(
    error: openraft::error::RaftError<NodeId, CheckIsLeaderError<NodeId, GantryNode>>,
) -> RaftError {
    match error {
        openraft::error::RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
            RaftError::NotLeader {
                leader_id: forward.leader_id,
                leader: forward.leader_node.map(|node| node.api),
            }
        }
        // The leader could not confirm its leadership with a quorum in time
        // (a peer is slow or down, or it was just deposed): not a failure of
        // the read, which has no effect; wait as in an election and retry.
        openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
            RaftError::NotLeader {
                leader_id: None,
                leader: None,
            }
        }
        openraft::error::RaftError::Fatal(Fatal::Stopped) => RaftError::ShuttingDown,
        other => RaftError::Raft(other.to_string()),
    }
}

fn wait_error(error: WaitError) -> RaftError {
    match error {
        WaitError::Timeout(after, what) => RaftError::Timeout(format!("{what} ({after:?})")),
        WaitError::ShuttingDown => RaftError::ShuttingDown,
    }
}

impl RaftNode {
    /// Opens the member stored in `config.data_dir`. With a `transport` it
    /// replicates to and forwards calls to its peers; without one it can
    /// only be a cluster of one (every peer is unreachable).
    pub async fn open(
        config: NodeConfig,
        transport: Option<PeerTransport>,
    ) -> Result<RaftNode, RaftError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let raft_config = config.raft_config()?;
        let log_store = LogStore::open(&config.data_dir.join("raft-log.redb"))?;
        let store = Arc::new(Store::open(&config.data_dir.join("state.redb"))?);
        let log_activity = log_store.activity();
        let state_machine = StateMachine::new(store.clone(), config.data_dir.join("snapshot.bin"));
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
        let proposer = Proposer::start(raft.clone(), Some(log_activity));
        Ok(RaftNode {
            id: config.node_id,
            address: config.address,
            raft,
            store,
            proposer,
            transport,
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

    /// Proposes a command; returns its outcome once committed and applied.
    /// On a follower the command is forwarded to the leader. While the
    /// cluster has no leader (an election), waits for one up to
    /// [`ELECTION_WAIT_MAX`].
    pub async fn propose(&self, command: Command) -> Result<Outcome, RaftError> {
        self.at_leader(
            || self.proposer.propose(command.clone()),
            |transport, peer| {
                let command = command.clone();
                async move { transport.forward_propose(&peer, &command).await }
            },
        )
        .await
    }

    /// Proposes on this member only: `NotLeader` unless it leads. What
    /// `/gantry/propose` runs, so a forwarded call is never forwarded again.
    pub async fn propose_here(&self, command: Command) -> Result<Outcome, RaftError> {
        self.proposer.propose(command).await
    }

    /// The log id a linearizable read must see applied, confirmed by a
    /// quorum; `NotLeader` unless this member leads. What
    /// `/gantry/read-index` runs.
    pub async fn read_index_here(&self) -> Result<Option<LogId>, RaftError> {
        let (read_log_id, _applied) = self
            .raft
            .get_read_log_id()
            .await
            .map_err(leadership_error)?;
        Ok(read_log_id)
    }

    /// A linearizable read on any member: gets the read index (from the
    /// leader when this member follows), waits for this replica to apply up
    /// to it (at most [`READ_CATCH_UP_MAX`]), then opens a read view. Waits
    /// out an election like [`RaftNode::propose`].
    pub async fn read(&self) -> Result<ReadView, RaftError> {
        let read_log_id = self
            .at_leader(
                || self.read_index_here(),
                |transport, peer| async move { transport.read_index(&peer).await },
            )
            .await?;
        if let Some(log_id) = read_log_id {
            self.raft
                .wait(Some(READ_CATCH_UP_MAX))
                .applied_index_at_least(Some(log_id.index), "applying up to the read index")
                .await
                .map_err(wait_error)?;
        }
        self.read_local()
    }

    /// Runs `here` on this member; when it answers `NotLeader` and the
    /// leader is known and reachable through the transport, runs `there`
    /// against the leader's peer address instead. Retries while no leader
    /// is known, or the one asked no longer leads or could not be reached
    /// before the call was sent — for at most [`ELECTION_WAIT_MAX`] and
    /// [`FORWARD_ATTEMPTS_MAX`] forwards. Any other failure is returned: a
    /// call that may have been carried out is not repeated.
    async fn at_leader<T, Here, HereFut, There, ThereFut>(
        &self,
        mut here: Here,
        mut there: There,
    ) -> Result<T, RaftError>
    where
        Here: FnMut() -> HereFut,
        HereFut: Future<Output = Result<T, RaftError>>,
        There: FnMut(PeerTransport, String) -> ThereFut,
        ThereFut: Future<Output = Result<Result<T, ForwardError>, RaftError>>,
    {
        let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
        let mut pause = RETRY_PAUSE_MIN;
        let mut forwards = 0;
        loop {
            let error = match here().await {
                Ok(value) => return Ok(value),
                Err(error @ RaftError::NotLeader { .. }) => error,
                Err(other) => return Err(other),
            };
            let leader_id = match &error {
                RaftError::NotLeader { leader_id, .. } => *leader_id,
                _ => None,
            };
            let last_error = match (leader_id, &self.transport) {
                // Without a transport the caller is told where the leader is.
                (Some(_), None) => return Err(error),
                (Some(leader), Some(transport)) if leader != self.id => {
                    if forwards >= FORWARD_ATTEMPTS_MAX {
                        return Err(error);
                    }
                    let Some(node) = self.member(leader) else {
                        return Err(error);
                    };
                    forwards += 1;
                    match there(transport.clone(), node.peer.clone()).await {
                        Ok(Ok(value)) => return Ok(value),
                        // Not carried out there: the leader moved on.
                        Ok(Err(ForwardError::NotLeader { leader_id })) => RaftError::NotLeader {
                            leader_id,
                            leader: None,
                        },
                        Ok(Err(ForwardError::ShuttingDown)) => {
                            return Err(RaftError::Peer {
                                peer: node.peer,
                                reason: "the leader is shutting down".into(),
                            })
                        }
                        Ok(Err(ForwardError::Failed(reason))) => {
                            return Err(RaftError::Peer {
                                peer: node.peer,
                                reason,
                            })
                        }
                        // Never sent (the leader is probably down): it does not
                        // use up the forward budget; wait for the election.
                        Err(unsent @ RaftError::PeerUnreachable { .. }) => {
                            forwards -= 1;
                            unsent
                        }
                        Err(other) => return Err(other),
                    }
                }
                // No leader known yet, or openraft still names this member
                // while it steps down: wait for the election.
                _ => error,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(last_error);
            }
            // The leader this node believed in when the attempt failed.
            let known = leader_id.or_else(|| self.raft.metrics().borrow().current_leader);
            self.wait_for_other_leader(known, pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Waits up to `pause` for this node to know of a leader other than
    /// `known` (a new term's leader is usually known within a round trip of
    /// its election, long before a fixed pause would end).
    async fn wait_for_other_leader(&self, known: Option<NodeId>, pause: Duration) {
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(
            pause,
            metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != known),
        )
        .await;
    }

    /// The whole state as a snapshot archive ([`crate::archive`]),
    /// consistent as of a linearizable read (so it holds everything
    /// acknowledged before the call); its meta names the position applied
    /// when the export began (the state is at or after it).
    pub async fn export_state(&self) -> Result<Vec<u8>, RaftError> {
        drop(self.read().await?);
        let store = self.store.clone();
        let (_meta, archive) = tokio::task::spawn_blocking(move || {
            crate::state_machine::export_archive(&store, |applied, state_bytes| {
                let at = applied.last_applied.map_or("empty".to_string(), |id| {
                    format!("{}-{}", id.leader_id.term, id.index)
                });
                format!("backup-{at}-{state_bytes}")
            })
        })
        .await
        .map_err(|e| RaftError::Raft(e.to_string()))??;
        Ok(archive)
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

    /// Adds `id` as a learner (it receives the log but does not vote) and
    /// waits up to [`LEARNER_CATCH_UP_MAX`] for it to catch up. Must run on
    /// the leader. A `Timeout` error means it was added but still lags.
    pub async fn add_learner(&self, id: NodeId, node: GantryNode) -> Result<(), RaftError> {
        // openraft's own blocking wait has no bound: wait here instead.
        let response = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| write_error(&e))?;
        let added_at = response.log_id.index;
        self.raft
            .wait(Some(LEARNER_CATCH_UP_MAX))
            .metrics(
                |metrics| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .is_some_and(|matched| matched.index >= added_at)
                },
                format!("learner {id} catching up to {added_at}"),
            )
            .await
            .map_err(wait_error)?;
        Ok(())
    }

    /// Makes `voters` the voting members (each must already be a member;
    /// add it as a learner first). Voters left out are removed from the
    /// cluster, not kept as learners. Must run on the leader.
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), RaftError> {
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| write_error(&e))?;
        Ok(())
    }

    /// Carries out a membership change on the leader (forwarded there from
    /// a follower); returns the voters afterwards.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<NodeId>, RaftError> {
        self.at_leader(
            || self.change_membership_here(change.clone()),
            |transport, peer| {
                let change = change.clone();
                async move { transport.change_membership(&peer, &change).await }
            },
        )
        .await
    }

    async fn change_membership_here(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<NodeId>, RaftError> {
        let voters = || -> BTreeSet<NodeId> {
            self.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect()
        };
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Err(RaftError::NotLeader {
                leader_id: self.raft.metrics().borrow().current_leader,
                leader: None,
            });
        }
        match change {
            MembershipChange::Join { id, node } => {
                if !voters().contains(&id) {
                    self.add_learner(id, node).await?;
                    let mut next = voters();
                    next.insert(id);
                    self.change_voters(next).await?;
                }
            }
            MembershipChange::Remove { id } => {
                let mut next = voters();
                if !next.remove(&id) {
                    return Err(RaftError::Raft(format!("node {id} is not a voting member")));
                }
                if next.is_empty() {
                    return Err(RaftError::Raft(
                        "the last voting member cannot leave".into(),
                    ));
                }
                self.change_voters(next).await?;
            }
        }
        let voters: Vec<NodeId> = voters().into_iter().collect();
        if voters.len().is_multiple_of(2) {
            tracing::warn!(
                voters = voters.len(),
                "an even number of voters tolerates no more failures than one fewer; use 3 or 5"
            );
        }
        Ok(voters)
    }

    /// Every member of the current membership, as this node sees it. See
    /// [`MemberInfo`] for what only a leader knows.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leading = metrics.state == ServerState::Leader;
        membership
            .nodes()
            .map(|(&id, node)| {
                let voter = voters.contains(&id);
                let role = if id == self.id {
                    match metrics.state {
                        ServerState::Leader => MemberRole::Leader,
                        ServerState::Candidate => MemberRole::Candidate,
                        ServerState::Learner => MemberRole::Learner,
                        // Follower, or shutting down: what the membership says.
                        _ if voter => MemberRole::Follower,
                        _ => MemberRole::Learner,
                    }
                } else if metrics.current_leader == Some(id) {
                    MemberRole::Leader
                } else if voter {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                };
                let (matched, last_contact_ms) = if !leading {
                    (None, None)
                } else if id == self.id {
                    (metrics.last_log_index, Some(0))
                } else {
                    let matched = metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .and_then(|matched| matched.as_ref())
                        .map(|log_id| log_id.index);
                    let contact = self
                        .transport
                        .as_ref()
                        .and_then(|transport| transport.since_last_contact(id))
                        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
                    (matched, contact)
                };
                MemberInfo {
                    id,
                    node: node.clone(),
                    role,
                    voter,
                    matched,
                    last_contact_ms,
                }
            })
            .collect()
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
