//! One Gantry server process: the Raft node, the API, the agent hub, the
//! logger, the leader-only loops and, in the `dev` preset, an in-process
//! local operator.
//!
//! Invariant: `gantry dev` is a preset of this code path (a bootstrapped
//! cluster of one with a `local` backend and pool `default`), not a second
//! implementation.

use crate::api::{self, ApiConfig, AppState};
use crate::control::agent::{AgentHub, OPERATOR_QUEUE_MAX};
use crate::control::logs::LogStore;
use crate::control::membership::{self, Membership, DEFAULT_POOL, LOCAL_BACKEND};
use crate::control::{dispatch, leader, timers};
use crate::operator::local::{LocalConfig, LocalOperator};
use crate::spec::SpecLimits;
use crate::tls::TlsFiles;
use anyhow::Context;
use gantry_raft::transport::{self, HttpVersions, PeerTransport};
use gantry_raft::GantryNode;
use gantry_raft::{NodeConfig, RaftNode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Spec limits for a server: defaults, with Jinja rendered in a child
/// process under memory and time limits (a template must not be able to
/// exhaust the control plane's memory).
pub fn server_spec_limits(max_tasks: usize) -> SpecLimits {
    SpecLimits {
        max_tasks,
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
    /// Run an in-process operator for backend `local` and pool `default`.
    pub local_backend: bool,
    pub body_bytes_max: usize,
    pub spec_limits: SpecLimits,
    /// API calls need a bearer token (always, in server mode).
    pub auth_required: bool,
}

pub struct RunningServer {
    pub address: SocketAddr,
    /// `http://ADDR` or `https://ADDR`.
    pub base_url: String,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    node: RaftNode,
    operator: Option<Arc<LocalOperator>>,
}

pub async fn start(options: ServerOptions) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating data directory {}", options.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let node_id = node_id(&options.data_dir)?;
    let (node, peer_tls) = match &options.tls {
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
                        peer: peer_address.to_string(),
                        api: format!("https://{address}"),
                    },
                ),
                Some(transport.clone()),
            )
            .await
            .context("opening the Raft node")?;
            let router = transport::peer_router(node.clone());
            let tls = crate::tls::peer_server_config(files)?;
            let stop = shutdown.clone();
            tasks.spawn(transport::serve_peer(
                peer_listener,
                tls,
                router,
                async move { stop.cancelled().await },
            ));
            tracing::info!(%peer_address, node_id, "Raft peers listening (mTLS)");
            (node, Some(transport))
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
            (node, None)
        }
    };
    let membership = Arc::new(Membership::new(
        node.clone(),
        peer_tls.clone(),
        &options.data_dir,
        options.auth_required,
    ));
    if options.bootstrap {
        // A no-op for a restarted member.
        membership.init().await?;
    }
    if let Some(peer) = &options.join {
        // A restarted member rejoins by itself; asking would wait for a quorum.
        membership.join(peer, JOIN_WAIT_MAX).await?;
    }
    if !options.bootstrap && options.join.is_none() && !membership.is_member() {
        tracing::info!(
            node_id = node.id(),
            "not a cluster member yet: waiting for `gantry cluster init` or `gantry cluster join PEER_ADDR`"
        );
    }
    let logs = LogStore::open(&options.data_dir.join("logs")).context("opening the log store")?;
    let hub = AgentHub::new(node.clone(), logs.clone());

    let leader_node = node.clone();
    let leader_hub = hub.clone();
    // A new cluster gets pool `default` on backend `local`, served by the
    // in-process operator when there is one.
    let ensure_local_pool = options.local_backend || options.bootstrap;
    tasks.spawn(leader::run_while_leader(
        node.clone(),
        shutdown.clone(),
        move |stop| {
            let node = leader_node.clone();
            let hub = leader_hub.clone();
            async move {
                if ensure_local_pool {
                    if let Err(error) = membership::ensure_pool(&node, false).await {
                        tracing::warn!(%error, "could not create the default pool");
                    }
                }
                tokio::join!(
                    dispatch::run(node.clone(), hub, stop.clone()),
                    timers::run(node, stop)
                );
            }
        },
    ));

    // A node waiting for `cluster init`/`join` has no pool yet: its API must
    // serve first.
    if ensure_local_pool && membership.is_member() {
        wait_for_pool(&node, DEFAULT_POOL).await?;
    }

    let operator = if options.local_backend {
        let operator = Arc::new(LocalOperator::new(LocalConfig {
            backend: LOCAL_BACKEND.to_string(),
            work_dir: options.data_dir.join("tasks"),
            bwrap: None,
        }));
        let (to_operator, from_server) = mpsc::channel(OPERATOR_QUEUE_MAX);
        let (to_server, from_operator) = mpsc::channel(OPERATOR_QUEUE_MAX);
        let serving = operator.clone();
        tasks.spawn(async move { serving.serve(from_server, to_server).await });
        let hub = hub.clone();
        tasks.spawn(async move {
            hub.serve(LOCAL_BACKEND.to_string(), to_operator, from_operator)
                .await
        });
        Some(operator)
    } else {
        None
    };

    let state = AppState {
        node: node.clone(),
        logs,
        hub,
        membership,
        config: Arc::new(ApiConfig {
            body_bytes_max: options.body_bytes_max,
            base_url: format!(
                "{}://{address}",
                if options.tls.is_some() {
                    "https"
                } else {
                    "http"
                }
            ),
            spec_limits: options.spec_limits.clone(),
            auth_required: options.auth_required,
        }),
        render_slots: Arc::new(tokio::sync::Semaphore::new(api::SPEC_RENDERS_MAX)),
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
    })
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

/// This node's Raft ID: random on first start, kept in `<data>/node-id`.
/// (A data directory from before IDs were kept belongs to node 1.)
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<u64> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a node ID", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = if data_dir.join("raft").exists() {
                1
            } else {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes)
                    .map_err(|e| anyhow::anyhow!("generating a node ID: {e}"))?;
                // Small enough to read, large enough never to collide in one cluster.
                u64::from_le_bytes(bytes) % 1_000_000_000 + 1
            };
            std::fs::write(&path, id.to_string())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Longest a node started with `--join` keeps asking to be let in (its
/// peers may still be starting).
const JOIN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(180);

impl RunningServer {
    /// Stops serving, kills running tasks and closes the Raft node.
    pub async fn stop(mut self) {
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
