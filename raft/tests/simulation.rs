//! Seeded deterministic simulation of the Raft layer and the state machine.
//!
//! Three members, each a real `openraft::Raft` over the product's redb
//! [`LogStore`] and [`StateMachine`] (files in a per-member directory that
//! outlives crashes), run as turmoil hosts. Their RPCs (append-entries,
//! vote, install-snapshot) and the clients' proposals travel as
//! length-prefixed bincode frames over turmoil's simulated TCP, so the
//! simulation owns every message: it delays them, drops them, partitions
//! links. Proposals go through the product's [`Proposer`] (group commit).
//! As in the product's transport, an AppendEntries carries at most
//! `APPEND_BYTES_TARGET` bytes beyond its first entry, and a member takes a
//! snapshot chunk through [`install_snapshot_chunk`] (the chunk counts as
//! hearing from the leader).
//!
//! One seed drives everything random: turmoil's network (latency, random
//! link failures), the workload (which member a client asks, what it
//! writes, when) and the faults (crashes, restarts, partitions, latency
//! spikes). The checker asserts, after every step (10 ms of simulated time):
//! - a member that leads holds a committed vote for itself in its term, and
//!   no two members ever lead under the same leader id (term, node); see
//!   `check_leaders` for why this is openraft's form of "one leader per
//!   term";
//! - a member's vote never goes backwards, across restarts too;
//!
//! and every fifth step:
//! - committed log entries (up to each member's applied index) never change:
//!   the first time an index is seen applied its entry is recorded, and any
//!   member that later shows a different entry there fails the run; no
//!   command is committed at two indexes;
//! - an acknowledged write whose index a member has applied is in that
//!   member's redb state (checked again after each restart);
//! - no committed entry holds more than `ENTRY_BYTES_MAX` bytes of commands
//!   (the workload now and then sends a command of up to 900 KB, so the
//!   proposer must cut batches by bytes);
//! - a member's state clock never goes back within one incarnation,
//!   though a tenth of the commands carry a time an hour ahead (a leader
//!   with a fast clock).
//!
//! After the chaos the network is healed and every member restarted; once a
//! fresh write is acknowledged and all members have applied the leader's
//! whole log, the checker asserts that every acknowledged write is in every
//! replica's state, no workflow was created twice, and the redb state images
//! (`Store::export_snapshot`) of all replicas are byte-identical. A cluster
//! that does not converge within 15 simulated seconds of healing fails too.
//!
//! A failing seed prints `SEED=<n>` and the step log. `GANTRY_SIM_SEEDS`
//! (default 200) sets how many seeds run, `GANTRY_SIM_SEED_START` the first,
//! `GANTRY_SIM_SEED` runs just one; thousands:
//! `GANTRY_SIM_SEEDS=5000 cargo test -p gantry-raft --release --test simulation`.
//!
//! Determinism: the seed fixes the fault schedule, the workload plan and
//! turmoil's network draws; openraft draws election timeouts from a thread
//! RNG, so each member incarnation gets a one-value range chosen by the
//! seed. A replay is still not exact: the product runs redb work on tokio
//! blocking threads (real OS threads), and when one finishes within a tick
//! reorders what the members do in it, and with it turmoil's later draws
//! (`--cfg tokio_unstable`, which seeds tokio's own RNG, does not change
//! that). A failing seed reruns the same schedule, not the same
//! interleaving: run it a few times, or run the neighbouring seeds.

use gantry_raft::log_store::LogStore;
use gantry_raft::proposer::{encoded_bytes, Proposer, ENTRY_BYTES_MAX};
use gantry_raft::snapshot_receive::install_snapshot_chunk;
use gantry_raft::state_machine::StateMachine;
use gantry_raft::transport::client::entries_within;
use gantry_raft::transport::APPEND_BYTES_TARGET;
use gantry_raft::{GantryNode, NodeId, TypeConfig};
use gantry_storage::plan::{GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan};
use gantry_storage::{Command, Outcome, PoolRecord, Priority, Store, Submission};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogReader;
use openraft::{Config, Raft, ServerState, SnapshotPolicy, Vote};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

const NODES: [NodeId; 3] = [1, 2, 3];
const PORT: u16 = 9000;
/// Simulated time per step.
const TICK: Duration = Duration::from_millis(10);
/// Steps of chaos (faults and writes), then of healing at most.
const CHAOS_STEPS: u64 = 450;
const HEAL_STEPS_MAX: u64 = 1500;
/// Expensive checks (log contents) every this many steps.
const LOG_CHECK_EVERY: u64 = 5;
/// Chance of a fault at each chaos step.
const FAULT_CHANCE: f64 = 0.03;
const HEARTBEAT_MS: u64 = 50;
const ELECTION_MS: std::ops::Range<u64> = 200..400;
/// Small snapshot policy, so snapshots, purges and snapshot installs happen.
const SNAPSHOT_EVERY_LOGS: u64 = 25;
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 5;
const SNAPSHOT_CHUNK_BYTES: u64 = 512;
const CLIENTS: u64 = 4;
/// Chance that a write is a large command (see `command_for`).
const LARGE_COMMAND_CHANCE: f64 = 0.02;
/// Chance that a command's time is an hour ahead (see `command_time`).
const CLOCK_SKEW_CHANCE: f64 = 0.1;
const CLOCK_SKEW_MS: i64 = 3_600_000;
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
const FRAME_MAX: usize = 64 * 1024 * 1024;

fn host(id: NodeId) -> String {
    format!("node{id}")
}

fn address(id: NodeId) -> GantryNode {
    GantryNode {
        peer: format!("{}:{PORT}", host(id)),
        api: format!("sim://{}", host(id)),
    }
}

// ---------------------------------------------------------------- wire

#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Propose(Command),
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<Outcome, ProposeError>),
}

#[derive(Debug, Serialize, Deserialize)]
enum ProposeError {
    /// Certainly not proposed.
    NotLeader(Option<NodeId>),
    /// May or may not have been carried out.
    Failed(String),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(std::io::Error::other)
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let body = encode(value);
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&u32::try_from(body.len()).expect("frame size").to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_MAX {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    decode(&body)
}

enum CallError {
    /// Not delivered (connection refused): certainly not carried out.
    Unreachable(std::io::Error),
    /// Sent, or maybe sent, and no reply.
    Lost(std::io::Error),
}

/// One request on a fresh connection, within `ttl`.
async fn call(peer: &str, request: &Request, ttl: Duration) -> Result<Reply, CallError> {
    let exchange = async {
        let mut stream = TcpStream::connect(peer)
            .await
            .map_err(CallError::Unreachable)?;
        write_frame(&mut stream, request)
            .await
            .map_err(CallError::Lost)?;
        read_frame::<Reply>(&mut stream)
            .await
            .map_err(CallError::Lost)
    };
    match tokio::time::timeout(ttl, exchange).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Lost(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply within {ttl:?}"),
        ))),
    }
}

// ---------------------------------------------------------------- network

/// openraft's network for a simulated member: every RPC is a turmoil TCP
/// exchange with the target's host.
struct SimNetwork;

struct SimPeer {
    target: NodeId,
    node: GantryNode,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimPeer;

    async fn new_client(&mut self, target: NodeId, node: &GantryNode) -> SimPeer {
        SimPeer {
            target,
            node: node.clone(),
        }
    }
}

impl SimPeer {
    async fn rpc<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, GantryNode, E>> {
        call(&self.node.peer, &request, option.hard_ttl())
            .await
            .map_err(|error| match error {
                CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Lost(e) => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<NodeId, GantryNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            error,
        ))
    }

    fn protocol<E: std::error::Error>() -> RPCError<NodeId, GantryNode, E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(
            "reply of the wrong kind",
        )))
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>>
    {
        // As the product's transport does: a request carries at most
        // APPEND_BYTES_TARGET beyond its first entry, so it can finish
        // within openraft's one-heartbeat timeout.
        let fitting = entries_within(&rpc.entries, APPEND_BYTES_TARGET);
        if fitting < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(fitting as u64),
            ));
        }
        match self.rpc(Request::Append(rpc), &option).await? {
            Reply::Append(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(Self::protocol()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, GantryNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.rpc(Request::Snapshot(rpc), &option).await? {
            Reply::Snapshot(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(Self::protocol()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Reply::Vote(reply) => reply.map_err(|e| self.remote(e)),
            _ => Err(Self::protocol()),
        }
    }
}

// ---------------------------------------------------------------- members

/// A running member's handles, as the checker sees them. Dropped before the
/// member crashes, so its redb files can be opened again on restart.
struct Live {
    /// Counts the member's starts.
    incarnation: u64,
    raft: Raft<TypeConfig>,
    store: Arc<Store>,
    log: LogStore,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Chaos,
    Heal,
}

#[derive(Clone, Debug)]
enum Written {
    /// A command that applies nothing (refused by the state machine).
    Nothing,
    Pool(String),
    /// uuid, and the workflow id the state machine gave it.
    Workflow(String, Option<String>),
}

/// Everything the hosts, the clients and the checker share (one thread).
struct Shared {
    dirs: Vec<PathBuf>,
    live: RefCell<BTreeMap<NodeId, Live>>,
    /// Election timeout of each member's next incarnation (ms).
    election_ms: RefCell<BTreeMap<NodeId, u64>>,
    phase: Cell<Phase>,
    next_op: Cell<u64>,
    /// Writes acknowledged to a client.
    acked: RefCell<Vec<(u64, Written)>>,
    /// Writes whose outcome the client never learned.
    unknown: RefCell<Vec<(u64, Written)>>,
    /// The pool that workflows are submitted to was acknowledged.
    pool_ready: Cell<bool>,
    /// The barrier write of the heal phase was acknowledged.
    barrier_acked: Cell<bool>,
    events: RefCell<Vec<String>>,
    /// Member starts so far (all members).
    starts: Cell<u64>,
    /// Simulated time at the start of the current step (ms).
    now_ms: Cell<u128>,
}

impl Shared {
    fn event(&self, text: String) {
        self.events.borrow_mut().push(text);
    }
}

fn raft_config(election_ms: u64) -> Arc<Config> {
    let config = Config {
        cluster_name: "gantry-sim".into(),
        heartbeat_interval: HEARTBEAT_MS,
        // A one-value range: openraft's own draw (thread RNG) has no choice.
        election_timeout_min: election_ms,
        election_timeout_max: election_ms + 1,
        install_snapshot_timeout: 400,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// A member's software: what turmoil runs on its host, again on each
/// restart, over the same data directory.
async fn member(id: NodeId, shared: Rc<Shared>) -> turmoil::Result {
    let dir = shared.dirs[(id - 1) as usize].clone();
    let election_ms = shared.election_ms.borrow()[&id];
    let log = LogStore::open(&dir.join("raft-log.redb"))?;
    let store = Arc::new(Store::open(&dir.join("state.redb"))?);
    let machine = StateMachine::new(store.clone(), dir.join("snapshot.bin"), Default::default());
    let raft = Raft::new(
        id,
        raft_config(election_ms),
        SimNetwork,
        log.clone(),
        machine,
    )
    .await?;
    let proposer = Proposer::start(raft.clone(), Some(log.activity()));
    let incarnation = shared.starts.get() + 1;
    shared.starts.set(incarnation);
    shared.live.borrow_mut().insert(
        id,
        Live {
            incarnation,
            raft: raft.clone(),
            store,
            log,
        },
    );
    if id == NODES[0] && !raft.is_initialized().await? {
        let members: BTreeMap<NodeId, GantryNode> =
            NODES.iter().map(|&n| (n, address(n))).collect();
        raft.initialize(members).await?;
    }
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(serve(raft.clone(), proposer.clone(), stream));
    }
}

/// Answers one request on one connection.
async fn serve(raft: Raft<TypeConfig>, proposer: Proposer, mut stream: TcpStream) {
    let Ok(request) = read_frame::<Request>(&mut stream).await else {
        return;
    };
    let reply = match request {
        Request::Append(rpc) => Reply::Append(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
        Request::Snapshot(rpc) => Reply::Snapshot(install_snapshot_chunk(&raft, rpc).await),
        Request::Propose(command) => Reply::Propose(match proposer.propose(command).await {
            Ok(outcome) => Ok(outcome),
            Err(gantry_raft::RaftError::NotLeader { leader_id, .. }) => {
                Err(ProposeError::NotLeader(leader_id))
            }
            Err(other) => Err(ProposeError::Failed(other.to_string())),
        }),
    };
    let _ = write_frame(&mut stream, &reply).await;
}

// ---------------------------------------------------------------- clients

fn small_plan(op: u64) -> WorkflowPlan {
    let task = |name: &str, lead: bool| TaskPlan {
        name: name.into(),
        lead,
        image: "busybox".into(),
        command: vec!["true".into()],
        args: vec![format!("{op}")],
        environment: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        resource: ResourcePlan::default(),
        exit_actions: Vec::new(),
        credentials: BTreeMap::new(),
        privileged: false,
        host_network: false,
        volume_mounts: Vec::new(),
    };
    WorkflowPlan {
        groups: vec![
            GroupPlan {
                name: "a".into(),
                tasks: vec![task("a1", true), task("a2", false)],
                upstream: Vec::new(),
                barrier: false,
                ignore_nonlead_status: false,
            },
            GroupPlan {
                name: "b".into(),
                tasks: vec![task("b1", true)],
                upstream: vec!["a".into()],
                barrier: true,
                ignore_nonlead_status: false,
            },
        ],
        exec_timeout_seconds: None,
        queue_timeout_seconds: None,
    }
}

fn pool(name: String) -> PoolRecord {
    PoolRecord {
        name,
        description: "sim".into(),
        backend: "local".into(),
        default_platform: None,
        platforms: Vec::new(),
    }
}

/// A write: a pool, or (once the pool workflows go to exists) a workflow;
/// now and then a large command that applies nothing (a cancel of an
/// unknown workflow carrying up to 900 KB), so entries are cut by bytes
/// and replicated near their size limit.
fn command_for(op: u64, pool_ready: bool, rng: &mut StdRng) -> (Command, Written) {
    if rng.random_bool(LARGE_COMMAND_CHANCE) {
        let bytes = rng.random_range(100_000..900_000);
        let command = Command::CancelWorkflow {
            now: command_time(op, rng),
            workflow_id: format!("absent-{op}"),
            user: "sim".into(),
            message: Some("x".repeat(bytes)),
            force: false,
        };
        return (command, Written::Nothing);
    }
    if !pool_ready || rng.random_bool(0.6) {
        let name = if pool_ready {
            format!("pool-{op}")
        } else {
            "pool-sim".to_string()
        };
        (
            Command::PutPool {
                pool: pool(name.clone()),
            },
            Written::Pool(name),
        )
    } else {
        let uuid = format!("uuid-{op}");
        let command = Command::SubmitWorkflow {
            now: command_time(op, rng),
            submission: Submission {
                name: "sim".into(),
                uuid: uuid.clone(),
                pool: "pool-sim".into(),
                user: "sim".into(),
                priority: Priority::Normal,
                template_spec: String::new(),
                rendered_spec: String::new(),
                plan: Ok(small_plan(op)),
            },
        };
        (command, Written::Workflow(uuid, None))
    }
}

/// A command's time: its proposer's clock, an hour fast now and then (a
/// leader with a skewed clock). The state's clock must never go back
/// after such a command, whatever comes after it.
fn command_time(op: u64, rng: &mut StdRng) -> i64 {
    let skew = if rng.random_bool(CLOCK_SKEW_CHANCE) {
        CLOCK_SKEW_MS
    } else {
        0
    };
    1_700_000_000_000 + op as i64 + skew
}

enum Proposed {
    Acked(Outcome),
    Unknown(String),
    /// Certainly not carried out (no leader reachable).
    NotDone,
}

/// Proposes `command` at a random member, following "not the leader"
/// answers (the command was certainly not proposed there).
async fn propose(command: &Command, rng: &mut StdRng) -> Proposed {
    let mut target = NODES[rng.random_range(0..NODES.len())];
    for _ in 0..8 {
        let request = Request::Propose(command.clone());
        match call(&address(target).peer, &request, CLIENT_CALL_TIMEOUT).await {
            Ok(Reply::Propose(Ok(outcome))) => return Proposed::Acked(outcome),
            Ok(Reply::Propose(Err(ProposeError::NotLeader(Some(leader))))) => target = leader,
            Ok(Reply::Propose(Err(ProposeError::NotLeader(None))))
            | Err(CallError::Unreachable(_)) => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
                target = NODES[rng.random_range(0..NODES.len())];
            }
            Ok(Reply::Propose(Err(ProposeError::Failed(reason)))) => {
                return Proposed::Unknown(reason)
            }
            Ok(_) => return Proposed::Unknown("reply of the wrong kind".into()),
            Err(CallError::Lost(error)) => return Proposed::Unknown(error.to_string()),
        }
    }
    Proposed::NotDone
}

fn record(shared: &Shared, op: u64, written: Written, proposed: Proposed) -> bool {
    let at = sim_ms(shared);
    match proposed {
        Proposed::Acked(outcome) => {
            let written = match (written, &outcome) {
                (Written::Workflow(uuid, _), Outcome::Submitted { workflow_id, .. }) => {
                    Written::Workflow(uuid, Some(workflow_id.clone()))
                }
                (written, _) => written,
            };
            shared.event(format!("{at}ms ack op {op} {written:?} -> {outcome:?}"));
            if matches!(&written, Written::Pool(name) if name == "pool-sim") {
                shared.pool_ready.set(true);
            }
            shared.acked.borrow_mut().push((op, written));
            true
        }
        Proposed::Unknown(reason) => {
            shared.event(format!("{at}ms unknown op {op} {written:?}: {reason}"));
            shared.unknown.borrow_mut().push((op, written));
            false
        }
        Proposed::NotDone => {
            shared.event(format!("{at}ms gave up op {op} (not proposed)"));
            false
        }
    }
}

fn sim_ms(shared: &Shared) -> u128 {
    shared.now_ms.get()
}

async fn client(shared: Rc<Shared>, seed: u64) -> turmoil::Result {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let shared = shared.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(c + 1));
            // Chaos: writes at random members, at random intervals.
            while shared.phase.get() == Phase::Chaos {
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..40))).await;
                let op = shared.next_op.get();
                shared.next_op.set(op + 1);
                let (command, written) = command_for(op, shared.pool_ready.get(), &mut rng);
                let proposed = propose(&command, &mut rng).await;
                record(&shared, op, written, proposed);
            }
            // Heal: the first client writes until one write is acknowledged.
            if c == 0 {
                while !shared.barrier_acked.get() {
                    let op = shared.next_op.get();
                    shared.next_op.set(op + 1);
                    let name = format!("barrier-{op}");
                    let command = Command::PutPool {
                        pool: pool(name.clone()),
                    };
                    let proposed = propose(&command, &mut rng).await;
                    if record(&shared, op, Written::Pool(name), proposed) {
                        shared.barrier_acked.set(true);
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- checker

/// What the checker remembers between steps.
#[derive(Default)]
struct Checker {
    /// Leader id (term, node) → first seen at (ms).
    leaders: BTreeMap<(u64, NodeId), u128>,
    /// Highest vote each member has shown.
    votes: BTreeMap<NodeId, Vote<NodeId>>,
    /// Committed entries: index → encoded entry, as first seen applied.
    committed: BTreeMap<u64, Vec<u8>>,
    /// Where each committed command was found: command key → index.
    placed: BTreeMap<String, u64>,
    /// Acknowledged writes found in a member incarnation's applied state.
    verified: BTreeSet<(u64, u64)>,
    /// Snapshots seen: (member, snapshot's last log index).
    snapshots: BTreeSet<(NodeId, u64)>,
    /// The state's clock last seen in each member incarnation.
    clocks: BTreeMap<(NodeId, u64), i64>,
    /// The largest committed entry seen (bytes).
    entry_bytes_max: usize,
    runtime: Option<tokio::runtime::Runtime>,
}

fn command_key(command: &Command) -> Option<String> {
    match command {
        // Written by several clients until one is acknowledged.
        Command::PutPool { pool } if pool.name == "pool-sim" => None,
        Command::PutPool { pool } => Some(format!("pool:{}", pool.name)),
        Command::SubmitWorkflow { submission, .. } => Some(format!("wf:{}", submission.uuid)),
        _ => None,
    }
}

impl Checker {
    fn runtime(&mut self) -> &tokio::runtime::Runtime {
        self.runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("checker runtime")
        })
    }

    /// Cheap checks, after every step.
    fn check_leaders(&mut self, shared: &Shared) -> Result<(), String> {
        let at = sim_ms(shared);
        for (&id, live) in shared.live.borrow().iter() {
            let metrics = live.raft.metrics().borrow().clone();
            // Votes persist before openraft acts on them: they never go back.
            if let Some(previous) = self.votes.get(&id) {
                if metrics.vote < *previous {
                    return Err(format!(
                        "node {id}'s vote went back from {previous} to {}",
                        metrics.vote
                    ));
                }
            }
            if self.votes.get(&id) != Some(&metrics.vote) {
                self.votes.insert(id, metrics.vote);
            }
            if let Some(snapshot) = metrics.snapshot {
                self.snapshots.insert((id, snapshot.index));
            }
            if metrics.state != ServerState::Leader {
                continue;
            }
            // openraft's default leader id is (term, node): two members may
            // both be elected in one term (the higher id wins the tie), so
            // "one leader per term" is "one leader per leader id" here, and
            // a leader must have been granted its own vote by a quorum.
            let leader_id = metrics.vote.leader_id();
            if leader_id.term != metrics.current_term
                || leader_id.voted_for() != Some(id)
                || !metrics.vote.committed
            {
                return Err(format!(
                    "node {id} leads in term {} with vote {}",
                    metrics.current_term, metrics.vote
                ));
            }
            if !self.leaders.contains_key(&(metrics.current_term, id)) {
                let same_term: Vec<NodeId> = self
                    .leaders
                    .keys()
                    .filter(|(term, _)| *term == metrics.current_term)
                    .map(|(_, node)| *node)
                    .collect();
                shared.event(format!(
                    "{at}ms node {id} leads term {} (other leaders this term: {same_term:?})",
                    metrics.current_term
                ));
                self.leaders.insert((metrics.current_term, id), at);
            }
        }
        Ok(())
    }

    /// An acknowledged write whose log index a member has applied is in
    /// that member's state (checked once per write and member start).
    fn check_applied_state(&mut self, shared: &Shared) -> Result<(), String> {
        let live = shared.live.borrow();
        let acked = shared.acked.borrow();
        for (&id, member) in live.iter() {
            let applied = member.raft.metrics().borrow().last_applied.map(|l| l.index);
            let Some(applied) = applied else {
                continue;
            };
            let mut view = None;
            for (op, written) in acked.iter() {
                if self.verified.contains(&(member.incarnation, *op)) {
                    continue;
                }
                let key = match written {
                    Written::Nothing => continue,
                    Written::Pool(name) if name == "pool-sim" => continue,
                    Written::Pool(name) => format!("pool:{name}"),
                    Written::Workflow(uuid, _) => format!("wf:{uuid}"),
                };
                match self.placed.get(&key) {
                    Some(&index) if index <= applied => {}
                    _ => continue,
                }
                if view.is_none() {
                    view = Some(member.store.read().map_err(|e| e.to_string())?);
                }
                let view = view.as_ref().expect("read view");
                written_in(view, id, *op, written)?;
                self.verified.insert((member.incarnation, *op));
            }
        }
        Ok(())
    }

    /// The state's clock never goes back within a member incarnation (a
    /// restart may roll back to an earlier durable state, and its clock
    /// with it), however far ahead a command's time was.
    fn check_clocks(&mut self, shared: &Shared) -> Result<(), String> {
        for (&id, member) in shared.live.borrow().iter() {
            let clock = member
                .store
                .read()
                .and_then(|view| view.clock())
                .map_err(|e| format!("node {id}: reading its clock: {e}"))?;
            let key = (id, member.incarnation);
            if let Some(&seen) = self.clocks.get(&key) {
                if clock < seen {
                    return Err(format!(
                        "node {id}'s state clock went back from {seen} to {clock}"
                    ));
                }
            }
            self.clocks.insert(key, clock);
        }
        Ok(())
    }

    /// Committed entries never change: reads each member's log up to what
    /// it applied and compares with what was seen committed before.
    fn check_logs(&mut self, shared: &Shared) -> Result<(), String> {
        let live = shared.live.borrow();
        let mut reads = Vec::new();
        for (&id, member) in live.iter() {
            let metrics = member.raft.metrics().borrow().clone();
            let Some(applied) = metrics.last_applied else {
                continue;
            };
            let from = metrics.purged.map(|p| p.index + 1).unwrap_or(0);
            let upto = applied.index;
            if from > upto {
                continue;
            }
            reads.push((id, member.log.clone(), from, upto));
        }
        drop(live);
        for (id, mut log, from, upto) in reads {
            let entries = self
                .runtime()
                .block_on(log.try_get_log_entries(from..=upto))
                .map_err(|e| format!("node {id}: reading its log: {e}"))?;
            for entry in entries {
                let index = entry.log_id.index;
                let bytes = encode(&entry);
                if let openraft::EntryPayload::Normal(batch) = &entry.payload {
                    let size = encoded_bytes(&batch.commands);
                    if size > ENTRY_BYTES_MAX {
                        return Err(format!(
                            "entry {index} on node {id} holds {size} bytes of commands, \
                             over the {ENTRY_BYTES_MAX}-byte limit"
                        ));
                    }
                    self.entry_bytes_max = self.entry_bytes_max.max(size);
                }
                match self.committed.get(&index) {
                    Some(seen) if *seen != bytes => {
                        let seen: openraft::Entry<TypeConfig> =
                            decode(seen).map_err(|e| e.to_string())?;
                        return Err(format!(
                            "committed entry {index} changed on node {id}: was {seen:?}, now {entry:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if let openraft::EntryPayload::Normal(batch) = &entry.payload {
                            for command in &batch.commands {
                                let Some(key) = command_key(command) else {
                                    continue;
                                };
                                if let Some(other) = self.placed.insert(key.clone(), index) {
                                    return Err(format!(
                                        "{key} committed twice: at {other} and at {index}"
                                    ));
                                }
                            }
                        }
                        self.committed.insert(index, bytes);
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the run

#[derive(Default)]
struct Outcomes {
    events: Vec<String>,
    acked: usize,
    unknown: usize,
    leaders: usize,
    committed: usize,
    snapshots: usize,
    /// The largest committed entry (bytes of commands).
    entry_bytes_max: usize,
}

impl Outcomes {
    fn add(&mut self, other: &Outcomes) {
        self.acked += other.acked;
        self.unknown += other.unknown;
        self.leaders += other.leaders;
        self.committed += other.committed;
        self.snapshots += other.snapshots;
        self.entry_bytes_max = self.entry_bytes_max.max(other.entry_bytes_max);
    }
}

/// Runs one seed; `Err` holds what went wrong, with the step log.
fn run_seed(seed: u64) -> Result<Outcomes, (String, Vec<String>)> {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new()
            .prefix("gantry-sim-")
            .tempdir_in("/dev/shm")
    } else {
        tempfile::Builder::new().prefix("gantry-sim-").tempdir()
    }
    .expect("temp dir");
    let dirs: Vec<PathBuf> = NODES
        .iter()
        .map(|&id| {
            let dir = base.path().join(host(id));
            std::fs::create_dir_all(&dir).expect("member dir");
            dir
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let shared = Rc::new(Shared {
        dirs,
        live: RefCell::new(BTreeMap::new()),
        election_ms: RefCell::new(
            NODES
                .iter()
                .map(|&id| (id, rng.random_range(ELECTION_MS)))
                .collect(),
        ),
        phase: Cell::new(Phase::Chaos),
        next_op: Cell::new(0),
        acked: RefCell::new(Vec::new()),
        unknown: RefCell::new(Vec::new()),
        pool_ready: Cell::new(false),
        barrier_acked: Cell::new(false),
        events: RefCell::new(Vec::new()),
        now_ms: Cell::new(0),
        starts: Cell::new(0),
    });
    let result = simulate(seed, &mut rng, &shared);
    // Close every redb file before the directory goes.
    shared.live.borrow_mut().clear();
    let events = shared.events.take();
    match result {
        Ok(mut outcomes) => {
            outcomes.events = events;
            Ok(outcomes)
        }
        Err(error) => Err((error, events)),
    }
}

fn simulate(seed: u64, rng: &mut StdRng, shared: &Rc<Shared>) -> Result<Outcomes, String> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(Duration::from_secs(3600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(25))
        .build();
    for &id in &NODES {
        let shared = shared.clone();
        sim.host(host(id), move || member(id, shared.clone()));
    }
    {
        let shared = shared.clone();
        sim.client("client", client(shared, seed));
    }
    let mut checker = Checker::default();
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    let mut cut: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();

    let step = |sim: &mut turmoil::Sim, checker: &mut Checker, n: u64| -> Result<(), String> {
        sim.step().map_err(|e| format!("simulation error: {e}"))?;
        shared.now_ms.set(sim.elapsed().as_millis());
        checker.check_leaders(shared)?;
        if n.is_multiple_of(LOG_CHECK_EVERY) {
            checker.check_logs(shared)?;
            checker.check_applied_state(shared)?;
            checker.check_clocks(shared)?;
        }
        Ok(())
    };

    // Chaos: faults at random, writes all along.
    for n in 0..CHAOS_STEPS {
        if rng.random_bool(FAULT_CHANCE) {
            let at = sim_ms(shared);
            let action = rng.random_range(0..100);
            let id = NODES[rng.random_range(0..NODES.len())];
            let text = if action < 22 {
                // Crash a member (at most two down at once).
                if down.contains(&id) || down.len() >= 2 {
                    None
                } else {
                    shared.live.borrow_mut().remove(&id);
                    sim.crash(host(id));
                    down.insert(id);
                    Some(format!("crash node {id}"))
                }
            } else if action < 45 {
                // Restart a crashed member, or restart a running one at once.
                let restart = down.iter().next().copied().unwrap_or(id);
                shared.live.borrow_mut().remove(&restart);
                let election = rng.random_range(ELECTION_MS);
                shared.election_ms.borrow_mut().insert(restart, election);
                sim.bounce(host(restart));
                let was_down = down.remove(&restart);
                Some(format!(
                    "{} node {restart} (election timeout {election}ms)",
                    if was_down { "restart" } else { "bounce" }
                ))
            } else if action < 65 {
                // Partition: isolate a member, or cut one link.
                if rng.random_bool(0.5) {
                    for &other in NODES.iter().filter(|&&o| o != id) {
                        sim.partition(host(id), host(other));
                        cut.insert((id.min(other), id.max(other)));
                    }
                    sim.partition(host(id), "client");
                    Some(format!("isolate node {id}"))
                } else {
                    let other = NODES[(NODES.iter().position(|&o| o == id).unwrap_or(0)
                        + rng.random_range(1..NODES.len()))
                        % NODES.len()];
                    sim.partition(host(id), host(other));
                    cut.insert((id.min(other), id.max(other)));
                    Some(format!("cut link {id}-{other}"))
                }
            } else if action < 80 {
                for &(a, b) in &cut {
                    sim.repair(host(a), host(b));
                }
                for &n in &NODES {
                    sim.repair(host(n), "client");
                }
                cut.clear();
                Some("repair all links".to_string())
            } else if action < 92 {
                let max = rng.random_range(5..300);
                sim.set_max_message_latency(Duration::from_millis(max));
                Some(format!("max message latency {max}ms"))
            } else {
                let rate = if rng.random_bool(0.5) {
                    0.0
                } else {
                    rng.random_range(0.001..0.03)
                };
                sim.set_fail_rate(rate);
                Some(format!("link fail rate {rate:.3}"))
            };
            if let Some(text) = text {
                shared.event(format!("{at}ms step {n}: {text}"));
            }
        }
        step(&mut sim, &mut checker, n)?;
    }

    // Heal: every link, every member, calm network; then wait for a write
    // and for all members to apply the same log.
    shared.event(format!("{}ms heal", sim_ms(shared)));
    shared.phase.set(Phase::Heal);
    sim.set_fail_rate(0.0);
    sim.set_max_message_latency(Duration::from_millis(25));
    for &a in &NODES {
        for &b in &NODES {
            if a < b {
                sim.repair(host(a), host(b));
            }
        }
        sim.repair(host(a), "client");
    }
    for id in std::mem::take(&mut down) {
        let election = rng.random_range(ELECTION_MS);
        shared.election_ms.borrow_mut().insert(id, election);
        sim.bounce(host(id));
        shared.event(format!("restart node {id} (election timeout {election}ms)"));
    }
    let mut n = CHAOS_STEPS;
    loop {
        step(&mut sim, &mut checker, n)?;
        n += 1;
        if shared.barrier_acked.get() && converged(shared) {
            break;
        }
        if n > CHAOS_STEPS + HEAL_STEPS_MAX {
            return Err(format!(
                "no convergence {} steps after healing: barrier acknowledged: {}, members: {}",
                HEAL_STEPS_MAX,
                shared.barrier_acked.get(),
                describe(shared)
            ));
        }
    }
    checker.check_logs(shared)?;
    check_final_state(shared)?;
    Ok(Outcomes {
        events: Vec::new(),
        acked: shared.acked.borrow().len(),
        unknown: shared.unknown.borrow().len(),
        leaders: checker.leaders.len(),
        committed: checker.committed.len(),
        snapshots: checker.snapshots.len(),
        entry_bytes_max: checker.entry_bytes_max,
    })
}

fn describe(shared: &Shared) -> String {
    shared
        .live
        .borrow()
        .iter()
        .map(|(id, live)| {
            let m = live.raft.metrics().borrow().clone();
            format!(
                "node {id}: {:?} term {} leader {:?} last log {:?} applied {:?}",
                m.state, m.current_term, m.current_leader, m.last_log_index, m.last_applied
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// All members run, one leads, and all applied its whole log.
fn converged(shared: &Shared) -> bool {
    let live = shared.live.borrow();
    if live.len() != NODES.len() {
        return false;
    }
    let metrics: Vec<_> = live
        .values()
        .map(|l| l.raft.metrics().borrow().clone())
        .collect();
    let Some(leader) = metrics.iter().find(|m| m.state == ServerState::Leader) else {
        return false;
    };
    let target = leader.last_log_index;
    metrics.iter().all(|m| {
        m.last_log_index == target
            && m.last_applied.map(|l| l.index) == target
            && m.current_leader == Some(leader.id)
    })
}

/// `written` (acknowledged as op `op`) is in member `id`'s state `view`.
fn written_in(
    view: &gantry_storage::ReadView,
    id: NodeId,
    op: u64,
    written: &Written,
) -> Result<(), String> {
    match written {
        Written::Nothing => {}
        Written::Pool(name) => {
            if view.pool(name).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("node {id} lost acknowledged op {op}: pool {name}"));
            }
        }
        // Rejected (its pool was not there yet): nothing to find.
        Written::Workflow(_, None) => {}
        Written::Workflow(uuid, Some(workflow_id)) => {
            match view.workflow(workflow_id).map_err(|e| e.to_string())? {
                Some(record) if record.uuid == *uuid => {}
                other => {
                    return Err(format!(
                    "node {id} lost acknowledged op {op}: workflow {workflow_id} ({uuid}) is {:?}",
                    other.map(|r| r.uuid)
                ))
                }
            }
        }
    }
    Ok(())
}

/// Every acknowledged write in every replica; all replicas identical.
fn check_final_state(shared: &Shared) -> Result<(), String> {
    let live = shared.live.borrow();
    let mut images: Vec<(NodeId, Vec<u8>)> = Vec::new();
    for (&id, member) in live.iter() {
        let view = member.store.read().map_err(|e| e.to_string())?;
        for (op, written) in shared.acked.borrow().iter() {
            written_in(&view, id, *op, written)?;
        }
        images.push((
            id,
            member.store.export_snapshot().map_err(|e| e.to_string())?,
        ));
    }
    // Every workflow id given out was given once: a command applied twice
    // would have made a second workflow with the same uuid.
    let view = live
        .values()
        .next()
        .ok_or("no member")?
        .store
        .read()
        .map_err(|e| e.to_string())?;
    let (workflows, _) = view
        .list(&gantry_storage::ListFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let mut uuids = BTreeSet::new();
    for workflow in &workflows {
        if !uuids.insert(workflow.uuid.clone()) {
            return Err(format!("workflow uuid {} applied twice", workflow.uuid));
        }
    }
    let (first_id, first) = &images[0];
    for (id, image) in &images[1..] {
        if image != first {
            return Err(format!(
                "state images differ after healing: node {first_id} ({} bytes) vs node {id} ({} bytes)",
                first.len(),
                image.len()
            ));
        }
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}"))
    })
}

#[test]
fn raft_survives_seeded_crashes_partitions_and_delays() {
    let seeds: Vec<u64> = match env_u64("GANTRY_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("GANTRY_SIM_SEED_START").unwrap_or(0);
            let count = env_u64("GANTRY_SIM_SEEDS").unwrap_or(200);
            (start..start + count).collect()
        }
    };
    let verbose = std::env::var_os("GANTRY_SIM_VERBOSE").is_some();
    // Members wait on redb work in blocking threads: three times as many workers
    // as cores keep the cores busy.
    let workers = env_u64("GANTRY_SIM_WORKERS")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| {
            3 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .min(seeds.len().max(1));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seeds = Arc::new(seeds);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let next = next.clone();
            let seeds = seeds.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut totals = Outcomes::default();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else {
                        break;
                    };
                    match run_seed(seed) {
                        Ok(outcomes) => {
                            if verbose {
                                eprintln!("SEED={seed} ok");
                                for event in &outcomes.events {
                                    eprintln!("  {event}");
                                }
                            }
                            totals.add(&outcomes);
                        }
                        Err((error, events)) => {
                            eprintln!("SEED={seed} FAILED: {error}\nstep log of SEED={seed}:");
                            for event in &events {
                                eprintln!("  {event}");
                            }
                            eprintln!("SEED={seed} FAILED: {error}");
                            failures.push((seed, error));
                        }
                    }
                }
                (failures, totals)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut totals = Outcomes::default();
    for handle in handles {
        let (worker_failures, worker_totals) = handle.join().expect("simulation worker");
        failures.extend(worker_failures);
        totals.add(&worker_totals);
    }
    eprintln!(
        "simulated {} seeds in {:.1?}: {} writes acknowledged, {} of unknown outcome, \
         {} leader terms, {} committed entries checked (largest {} bytes), {} snapshots",
        seeds.len(),
        started.elapsed(),
        totals.acked,
        totals.unknown,
        totals.leaders,
        totals.committed,
        totals.entry_bytes_max,
        totals.snapshots,
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|(seed, error)| format!("SEED={seed}: {error}"))
            .collect();
        panic!(
            "{} of {} seeds failed (rerun one with GANTRY_SIM_SEED=<n> GANTRY_SIM_VERBOSE=1):\n{}",
            failures.len(),
            seeds.len(),
            list.join("\n")
        );
    }
}
