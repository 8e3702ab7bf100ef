//! `gantry operator`: an executor behind the numbered stream, dialing the
//! control plane; and the same loop for the in-process operator of
//! `gantry dev` / `gantry server --local-backend`, over links the server
//! hands it.
//!
//! Invariant: one `Session` per process lives across every link, so what
//! was not acknowledged on one link is resent on the next.

use super::connect::{Connector, ConnectorConfig};
use super::local::{LocalConfig, LocalOperator};
use super::session::{LinkEnd, Session};
use super::Executor;
use crate::access_token::{secret_from_saved_text, SAVED_TOKEN_EXPECTED};
use crate::protocol::wire::Link;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Pause before linking again after a link ended.
const RELINK_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Sandboxed processes on this host (bubblewrap)
    Local,
    /// Pods on the Kubernetes cluster this operator runs in
    Kubernetes,
}

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Control-plane API URLs (repeatable or comma-separated); the operator
    /// moves to the next when one is down and follows the leader
    #[arg(long, required = true, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Backend this operator serves
    #[arg(long)]
    pub backend: String,
    /// File holding a token with the `backend` role: its secret alone, or
    /// what `gantry token set NAME -t json` prints (default: $GANTRY_TOKEN)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The cluster's CA certificate
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This operator's certificate (`gantry tls cert create --kind operator`)
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// This operator's private key
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// What runs the tasks
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Kubernetes namespace for task pods
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Working directory of the local executor (task inputs and outputs)
    #[arg(long, default_value = "gantry-operator")]
    pub work_dir: PathBuf,
    /// Processes (threads included) a local task may run at once (default:
    /// 1024, or 256 per requested CPU when that is more)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub task_pids_max: Option<u64>,
    /// Local tasks run in their image (pulled and cached under the work
    /// directory) or on the host's /usr
    #[arg(long, value_enum, default_value = "image")]
    pub task_root: super::local::TaskRootMode,
    #[command(flatten)]
    pub registries: crate::operator::local::image::RegistryArgs,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<i32> {
    let token = match &args.token_file {
        Some(path) => Some(read_token_file(path)?),
        None => match std::env::var("GANTRY_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(text) => Some(secret_from_saved_text(&text).map_err(|found| {
                anyhow::anyhow!("GANTRY_TOKEN holds {found}; expected {SAVED_TOKEN_EXPECTED}")
            })?),
            None => None,
        },
    };
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(
            crate::tls::api_client_config(Some(ca), Some((cert, key)))
                .context("loading the operator's TLS files")?,
        ),
        _ => None,
    };
    let mut connector = Connector::new(ConnectorConfig {
        urls: args.servers.clone(),
        backend: args.backend.clone(),
        token,
        tls,
    })?;
    let executor = match args.executor {
        ExecutorKind::Local => Executor::Local(Arc::new(LocalOperator::new(LocalConfig {
            backend: args.backend.clone(),
            work_dir: args.work_dir.clone(),
            bwrap: None,
            pids_max: args.task_pids_max,
            cdi_dirs: super::local::gpu::CDI_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            task_root: args.task_root.with(&args.work_dir, &args.registries),
        }))),
        ExecutorKind::Kubernetes => {
            let config = super::kubernetes::KubernetesConfig::infer(&args.backend, &args.namespace)
                .await
                .context("configuring the Kubernetes executor")?;
            Executor::Kubernetes(Arc::new(
                super::kubernetes::KubernetesOperator::new(config)
                    .await
                    .context("starting the Kubernetes executor")?,
            ))
        }
    };
    let mut session = Session::new(executor.clone());
    tracing::info!(
        backend = %args.backend,
        instance = session.instance(),
        "operator starting"
    );
    tokio::select! {
        () = async {
            loop {
                let link = connector.connect(session.instance()).await;
                let end = session.serve_link(link).await;
                tracing::warn!(?end, unacknowledged = session.unacknowledged(), unacknowledged_bytes = session.unacknowledged_bytes(), "link to the control plane lost; reconnecting");
                connector.link_lost();
                tokio::time::sleep(RELINK_PAUSE).await;
            }
        } => {}
        () = crate::supervisor::wait_for_signal() => {}
    }
    executor.shutdown().await;
    Ok(0)
}

/// The token secret in `path`, as a user may have saved it (see
/// [`secret_from_saved_text`]); anything else stops the operator at start
/// with a message naming the file and what it should hold, rather than
/// being sent (and refused) on every connection attempt.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let found = match String::from_utf8(bytes) {
        Ok(text) => match secret_from_saved_text(&text) {
            Ok(secret) => return Ok(secret),
            Err(found) => found.to_string(),
        },
        Err(_) => "bytes that are not UTF-8 text".to_string(),
    };
    anyhow::bail!(
        "the token file {} holds {found}; expected {SAVED_TOKEN_EXPECTED}",
        path.display()
    )
}

/// Serves `executor` over links from `open_link` (given this operator
/// instance) — in-process links to the server's own operator hub — until
/// the task is aborted (after the executor's shutdown, so final reports
/// get through).
pub async fn run_in_process<OpenLink, Opening, Error>(executor: Executor, mut open_link: OpenLink)
where
    OpenLink: FnMut(u64) -> Opening,
    Opening: std::future::Future<Output = Result<Link, Error>>,
    Error: std::fmt::Display,
{
    let mut session = Session::new(executor);
    let instance = session.instance();
    loop {
        match open_link(instance).await {
            Ok(link) => {
                let end = session.serve_link(link).await;
                if end != LinkEnd::Closed {
                    tracing::warn!(?end, "in-process operator link ended");
                }
            }
            Err(error) => {
                tracing::debug!(%error, "in-process operator cannot link yet");
            }
        }
        tokio::time::sleep(RELINK_PAUSE).await;
    }
}
