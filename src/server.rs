//! One Gantry server process: the Raft node, the API, the operator hub, the
//! logger, the leader-only loops and, in the `dev` preset, an in-process
//! local operator.
//!
//! Invariants: `gantry dev` is a preset of this code path (a bootstrapped
//! cluster of one with a `local` backend and pool `default`), not a second
//! implementation; one process at a time uses a data directory (an
//! exclusive lock on `<data>/gantry.lock`, taken before anything else is
//! opened or bound, held until the server stops); a member of a cluster of
//! more than one does not start on a store inside its data directory, and
//! with peers it serves and runs the object-store probe exchange
//! (`control::store_probe`).

use crate::api::{self, ApiConfig, AppState};
use crate::bulk::BulkRuntime;
use crate::control::logger::Logger;
use crate::control::membership::{self, Membership, DEFAULT_POOL, LOCAL_BACKEND};
use crate::control::operator_hub::OperatorHub;
use crate::control::store_probe::{self, StoreProbes};
use crate::control::{dispatch, leader, state_check, timers};
use crate::operator::local::{LocalConfig, LocalOperator};
use crate::spec::SpecLimits;
use crate::tls::TlsFiles;
use anyhow::Context;
use gantry_raft::transport::{self, HttpVersions, PeerTransport};
use gantry_raft::GantryNode;
use gantry_raft::{NodeConfig, RaftNode};
use nix::fcntl::Flock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Spec limits for a server: defaults, with Jinja rendered in a child
/// process under memory and time limits (a template must not be able to
/// exhaust the control plane's memory). The task limit is not here: the
/// WORKFLOW config in force sets it per submit (`max_num_tasks`).
pub fn server_spec_limits() -> SpecLimits {
    SpecLimits {
        render_isolation: std::env::current_exe()
            .ok()
            .map(crate::spec::RenderIsolation::new),
        ..SpecLimits::default()
    }
}

/// Largest request body the API accepts by default (a workflow spec).
pub const BODY_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Raft peer listener (mTLS); used only with `tls`.
    pub peer_listen: SocketAddr,
    /// The cluster's CA and this node's server certificate: HTTPS on the API,
    /// mTLS between peers. Without it the node is a cluster of one on plain HTTP.
    pub tls: Option<TlsFiles>,
    pub bootstrap: bool,
    /// Peer address of a member to join through (`--join`).
    pub join: Option<String>,
    /// Where peers reach this node (`host:port`) when it is not the bound
    /// address (a stable DNS name behind a Kubernetes headless Service).
    pub advertise_peer: Option<String>,
    /// This node's API URL for clients and links, when not `https://<listen>`.
    pub advertise_api: Option<String>,
    /// Run an in-process operator for backend `local` and pool `default`.
    pub local_backend: bool,
    pub body_bytes_max: usize,
    pub spec_limits: SpecLimits,
    /// API calls need a bearer token (always, in server mode).
    pub auth_required: bool,
    /// The bootstrap admin token's secret comes from this file instead of
    /// being generated (unattended installs).
    pub bootstrap_token_file: Option<PathBuf>,
    /// Where logs go (`file:///dir`, `s3://bucket/prefix?...`); `None`:
    /// `<data_dir>/objects`.
    pub object_store: Option<String>,
    /// Time between two state checks while this node leads (`None`: none).
    pub state_check_interval: Option<std::time::Duration>,
    /// The cluster key file that seals credential values (`secrets`);
    /// `None`: they are stored as given.
    pub cluster_key: Option<PathBuf>,
    /// CA certificates (PEM) for the identity provider's HTTPS, besides the
    /// system's roots.
    pub idp_ca: Option<PathBuf>,
    /// The in-process operator's task root (`local_backend`).
    pub task_root: crate::operator::local::TaskRoot,
}

pub struct RunningServer {
    pub address: SocketAddr,
    /// `http://ADDR` or `https://ADDR`.
    pub base_url: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    node: RaftNode,
    operator: Option<Arc<LocalOperator>>,
    /// Log traffic and the in-process operator (`bulk`); shut down when
    /// the server is dropped.
    _bulk: BulkRuntime,
    /// Released when the server is dropped (after `stop`).
    _data_dir_lock: Flock<std::fs::File>,
}

/// Open files the server wants: the API's connections, the peers', files.
const OPEN_FILES_WANTED: u64 = 65_536;

/// Raises the soft open-file limit towards [`OPEN_FILES_WANTED`] (within
/// the hard limit), as the systemd unit's `LimitNOFILE` does, so the API's
/// connection limit is reachable when started by hand; best effort.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = OPEN_FILES_WANTED.min(hard);
    if soft < wanted {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
            tracing::warn!(%error, soft, wanted, "could not raise the open-file limit");
        }
    }
}

pub async fn start(mut options: ServerOptions) -> anyhow::Result<RunningServer> {
    raise_open_file_limit();
    // One pod template for every member of a StatefulSet: the member that
    // is told to join through itself starts the cluster.
    if options.join.is_some() && options.join == options.advertise_peer {
        options.join = None;
        options.bootstrap = true;
    }
    if let Some(peer) = &options.advertise_peer {
        let port = peer
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            anyhow::bail!("--advertise-peer must be HOST:PORT, got '{peer}'");
        }
    }
    if let Some(api) = &options.advertise_api {
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            anyhow::bail!("--advertise-api must be an http(s):// URL, got '{api}'");
        }
    }
    gantry_raft::private_fs::create_dir(&options.data_dir)
        .with_context(|| format!("creating data directory {}", options.data_dir.display()))?;
    let data_dir_lock = crate::data_dir::lock(&options.data_dir)?;
    match &options.cluster_key {
        Some(path) => {
            let ring = crate::secrets::KeyRing::load(path)?;
            tracing::info!(
                key = ring.primary(),
                "credential values are sealed with the cluster key"
            );
            crate::secrets::install(Some(ring));
        }
        None => {
            tracing::warn!("no --cluster-key: credential values are stored in the state as given");
            crate::secrets::install(None);
        }
    }
    // Before anything records: what is recorded before the recorder is
    // installed is lost (a first store-probe round once was).
    crate::metrics::install().context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let node_id = crate::data_dir::node_id(&options.data_dir)?;
    let objects = crate::object_storage::ObjectStorage::open(
        options.object_store.as_deref(),
        &options.data_dir,
    )
    .context("opening the object store")?;
    tracing::info!(store = %objects.display, "object store for logs");
    let (node, peer_tls, probes) = match &options.tls {
        Some(files) => {
            let peer_listener = tokio::net::TcpListener::bind(options.peer_listen)
                .await
                .with_context(|| format!("listening for peers on {}", options.peer_listen))?;
            let peer_address = peer_listener.local_addr()?;
            let transport = PeerTransport::new(crate::tls::peer_client_config(files)?);
            let node = RaftNode::open(
                NodeConfig::new(
                    node_id,
                    options.data_dir.join("raft"),
                    GantryNode {
                        peer: options
                            .advertise_peer
                            .clone()
                            .unwrap_or_else(|| peer_address.to_string()),
                        api: options
                            .advertise_api
                            .clone()
                            .unwrap_or_else(|| format!("https://{address}")),
                    },
                ),
                Some(transport.clone()),
            )
            .await
            .context("opening the Raft node")?;
            let probes = StoreProbes::new(objects.clone(), node_id, &options.data_dir)?;
            // A member of a cluster of more than one must not start on a
            // store no other member reads (a restart after a failover
            // would lose what it wrote).
            if node.is_initialized_member() && node.members().len() > 1 {
                if let Some(refusal) = probes.refusal_of_own_store() {
                    anyhow::bail!(
                        "node {node_id} is a member of a cluster of {} and {refusal}",
                        node.members().len()
                    );
                }
            }
            let router = transport::peer_router(node.clone())
                .merge(store_probe::peer_routes(probes.clone(), node.clone()));
            let tls = crate::tls::peer_server_config(files)?;
            let stop = shutdown.clone();
            tasks.spawn(transport::serve_peer(
                peer_listener,
                tls,
                router,
                async move { stop.cancelled().await },
            ));
            tracing::info!(%peer_address, node_id, "Raft peers listening (mTLS)");
            tasks.spawn(store_probe::run(
                probes.clone(),
                node.clone(),
                transport.clone(),
                shutdown.clone(),
            ));
            (node, Some(transport), Some(probes))
        }
        None => {
            if options.join.is_some() {
                anyhow::bail!(
                    "--join needs --tls-ca, --tls-cert and --tls-key: peers talk over mutual TLS"
                );
            }
            let node = RaftNode::open(
                NodeConfig::new(
                    node_id,
                    options.data_dir.join("raft"),
                    GantryNode {
                        peer: options.peer_listen.to_string(),
                        api: format!("http://{address}"),
                    },
                ),
                None,
            )
            .await
            .context("opening the Raft node")?;
            (node, None, None)
        }
    };
    tasks.spawn(crate::metrics::raft::follow(node.clone(), shutdown.clone()));
    tasks.spawn(crate::metrics::upkeep(shutdown.clone()));
    // Before bootstrap or join: systemd hears READY=1 once that is done.
    tasks.spawn(crate::supervisor::run(node.clone(), shutdown.clone()));
    // Whether this node belonged to a cluster before this start (a restart).
    let was_member = node.is_initialized_member();
    if options.bootstrap {
        node.bootstrap()
            .await
            .context("bootstrapping the cluster")?;
    }
    let membership = Arc::new(Membership::new(
        node.clone(),
        peer_tls.clone(),
        probes,
        &options.data_dir,
        options.auth_required,
    ));
    if let Some(peer) = &options.join {
        // A restarted member rejoins by itself; asking would wait for a quorum.
        membership.join(peer, JOIN_WAIT_MAX).await?;
    }
    if !options.bootstrap && options.join.is_none() && !membership.is_member() {
        tracing::info!(
            node_id = node.id(),
            "not a cluster member yet: waiting for `gantry cluster init` or `gantry cluster join PEER_ADDR`"
        );
        if let Some((path, secret)) = membership.arm_join_token()? {
            println!(
                "Join token of this waiting node (one-time, for `gantry cluster init|join --join-token-file`; also in {}):\n{secret}",
                path.display()
            );
        }
    } else {
        membership.spend_join_token();
    }
    let default_data = crate::data::DataStore::default_in(&objects);
    let logs = Logger::new(objects);
    let bulk = BulkRuntime::start(bulk_workers()).context("starting the bulk runtime")?;
    let hub = OperatorHub::new(node.clone(), logs.clone());

    let leader_node = node.clone();
    let leader_hub = hub.clone();
    let leader_objects = logs.objects().clone();
    let leader_data = default_data.clone();
    // A new cluster gets pool `default` on backend `local`, served by the
    // in-process operator when there is one.
    let ensure_local_pool = options.local_backend || options.bootstrap;
    let state_check_interval = options.state_check_interval;
    tasks.spawn(leader::run_while_leader(
        node.clone(),
        shutdown.clone(),
        move |stop| {
            let node = leader_node.clone();
            let hub = leader_hub.clone();
            let objects = leader_objects.clone();
            let default_data = leader_data.clone();
            async move {
                if ensure_local_pool {
                    if let Err(error) = membership::ensure_pool(&node, false).await {
                        tracing::warn!(%error, "could not create the default pool");
                    }
                }
                let checks = {
                    let node = node.clone();
                    let stop = stop.clone();
                    async move {
                        if let Some(interval) = state_check_interval {
                            state_check::run(node, interval, stop).await;
                        }
                    }
                };
                tokio::join!(
                    dispatch::run(node.clone(), hub, default_data, stop.clone()),
                    timers::run(node, objects, stop),
                    checks
                );
            }
        },
    ));

    // A node waiting for `cluster init`/`join` has no pool yet: its API must
    // serve first. Right after `bootstrap` the membership may not show in
    // the metrics yet, so a bootstrapped node always waits.
    if ensure_local_pool && (options.bootstrap || membership.is_member()) {
        wait_for_pool(&node, DEFAULT_POOL).await?;
    }
    if options.bootstrap && options.auth_required {
        let secret = options
            .bootstrap_token_file
            .as_deref()
            .map(membership::read_bootstrap_secret)
            .transpose()?;
        if was_member {
            // A restart must not wait for a quorum (its peers may still be
            // down): finish an interrupted bootstrap in the background.
            let node = node.clone();
            let data_dir = options.data_dir.clone();
            tasks.spawn(async move {
                if let Err(error) =
                    membership::ensure_bootstrap_token(&node, &data_dir, secret, false).await
                {
                    tracing::error!(error = %format!("{error:#}"), "bootstrap token");
                }
            });
        } else {
            membership::ensure_bootstrap_token(&node, &options.data_dir, secret, true).await?;
        }
    }

    let operator = if options.local_backend {
        let operator = Arc::new(LocalOperator::new(LocalConfig {
            backend: LOCAL_BACKEND.to_string(),
            work_dir: options.data_dir.join("tasks"),
            bwrap: None,
            pids_max: None,
            task_root: options.task_root.clone(),
            cdi_dirs: crate::operator::local::gpu::CDI_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
        }));
        let local_hub = hub.clone();
        // On the bulk runtime: the link's batches (task output) are read,
        // batched and taken in there, below the API and Raft.
        tasks.spawn_on(
            crate::operator::run::run_in_process(
                crate::operator::Executor::Local(operator.clone()),
                move |instance| {
                    let hub = local_hub.clone();
                    async move { hub.link_in_process(LOCAL_BACKEND, instance).await }
                },
            ),
            bulk.handle(),
        );
        Some(operator)
    } else {
        None
    };

    let idp_ca = match &options.idp_ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("--idp-ca {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let state = AppState {
        idp: Arc::new(
            crate::api::idp::IdpKeys::new(idp_ca.as_deref()).map_err(anyhow::Error::msg)?,
        ),
        router_tickets: crate::api::osmo_router::tickets(),
        session_events: Arc::default(),
        relay: Arc::new(
            crate::api::SessionRelay::new(options.tls.as_ref().map(|files| files.ca.as_path()))
                .map_err(anyhow::Error::msg)?,
        ),
        node: node.clone(),
        logs,
        hub,
        membership,
        config: Arc::new(ApiConfig {
            body_bytes_max: options.body_bytes_max,
            base_url: options.advertise_api.clone().unwrap_or_else(|| {
                format!(
                    "{}://{address}",
                    if options.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    }
                )
            }),
            spec_limits: options.spec_limits.clone(),
            auth_required: options.auth_required,
            operator_certificate_required: options.tls.is_some(),
        }),
        render_slots: Arc::new(tokio::sync::Semaphore::new(api::spec_renders_max())),
        bulk: bulk.handle().clone(),
    };
    let router = api::router(state);
    let stop = shutdown.clone();
    match &options.tls {
        Some(files) => {
            let tls = crate::tls::api_server_config(files)?;
            tasks.spawn(transport::serve_tls(
                listener,
                tls,
                router,
                async move { stop.cancelled().await },
                HttpVersions::Http1And2,
            ));
        }
        None => {
            tasks.spawn(async move {
                let listener = api::plain_listener::PlainListener::new(listener);
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "API server failed");
                }
            });
        }
    }
    tracing::info!(%address, "API listening");
    Ok(RunningServer {
        address,
        base_url: format!(
            "{}://{address}",
            if options.tls.is_some() {
                "https"
            } else {
                "http"
            }
        ),
        shutdown,
        tasks,
        node,
        operator,
        _bulk: bulk,
        _data_dir_lock: data_dir_lock,
    })
}

/// Worker threads of the bulk runtime: one per CPU, as the server's own.
fn bulk_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Waits until the leader loop has created `pool` (it needs an elected leader).
async fn wait_for_pool(node: &RaftNode, pool: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if node.read_local()?.pool(pool)?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("pool '{pool}' was not created within 30 s: no Raft leader was elected");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Longest a new member keeps asking to be let in.
const JOIN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(180);

impl RunningServer {
    /// Stops serving, kills running tasks and closes the Raft node.
    pub async fn stop(mut self) {
        crate::supervisor::stopping();
        self.shutdown.cancel();
        if let Some(operator) = &self.operator {
            operator.shutdown().await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Err(error) = self.node.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
    }
}
