//! `gantry dev`: a cluster of one with a local backend, for a first run,
//! for development and for tests. With files it submits each, streams the
//! logs, and exits 0 when every workflow ends COMPLETED (1 otherwise);
//! without files it serves until Ctrl-C. A restart on the same data
//! directory resumes where the last run stopped.

use crate::cli::Client;
use crate::server::{self, ServerOptions};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

// Doc comments here are clap help text, where `<data-dir>` is no HTML.
#[allow(rustdoc::invalid_html_tags)]
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Data directory (default: $XDG_DATA_HOME/gantry/dev)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// API address
    #[arg(long, default_value = "127.0.0.1:8470")]
    pub listen: SocketAddr,
    /// Workflow files to run; without them the server runs until Ctrl-C
    pub files: Vec<PathBuf>,
    /// Pool to submit the files to
    #[arg(long, default_value = "default")]
    pub pool: String,
    /// Require tokens even on loopback (always on for other addresses); the
    /// first start prints an admin token
    #[arg(long)]
    pub auth: bool,
    /// Object store for logs (file:///dir or s3://bucket/prefix?...); default <data-dir>/objects
    #[arg(long, env = "GANTRY_OBJECT_STORE", value_name = "URL")]
    pub object_store: Option<String>,
    /// CA certificates (PEM) the identity provider's HTTPS certificate is
    /// checked against, besides the system's (an IdP with a private CA)
    #[arg(long, env = "GANTRY_IDP_CA", value_name = "FILE")]
    pub idp_ca: Option<PathBuf>,
    /// Tasks run on the host's /usr (the default: examples and tests run
    /// offline) or in their image, pulled and cached under the data
    /// directory
    #[arg(long, value_enum, default_value = "host")]
    pub task_root: crate::operator::local::TaskRootMode,
    #[command(flatten)]
    pub registries: crate::operator::local::image::RegistryArgs,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir).join("gantry/dev"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/gantry/dev"))
}

/// The dev server's cluster key: `<data-dir>/cluster-key`, made at the
/// first start, so user credentials work without a setup step (the data
/// directory is private; the key is never part of the state or snapshots).
fn dev_cluster_key(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    gantry_raft::private_fs::create_dir(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let path = data_dir.join("cluster-key");
    if !path.exists() {
        crate::secrets::KeyRing::write_new_key(&path, false)?;
    }
    Ok(path)
}

pub async fn run(args: DevArgs) -> anyhow::Result<i32> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    // Read the files first: a typo in a path should not start a server.
    let mut specs = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        specs.push((file.clone(), text));
    }
    let auth_required = args.auth || !args.listen.ip().is_loopback();
    let cluster_key = dev_cluster_key(&data_dir)?;
    let running = server::start(ServerOptions {
        data_dir: data_dir.clone(),
        listen: args.listen,
        peer_listen: "127.0.0.1:8471".parse()?,
        tls: None,
        bootstrap: true,
        join: None,
        advertise_peer: None,
        advertise_api: None,
        local_backend: true,
        body_bytes_max: server::BODY_BYTES_MAX_DEFAULT,
        spec_limits: server::server_spec_limits(),
        // Like `nomad agent -dev`: loopback only, no auth (unless asked).
        auth_required,
        bootstrap_token_file: None,
        object_store: args.object_store.clone(),
        // A cluster of one has nobody to compare its state with.
        state_check_interval: None,
        cluster_key: Some(cluster_key),
        idp_ca: args.idp_ca.clone(),
        task_root: args
            .task_root
            .with(&data_dir.join("tasks"), &args.registries),
    })
    .await?;
    eprintln!(
        "gantry dev: API on http://{} (data in {}); auth is {}; tasks run {}",
        running.address,
        data_dir.display(),
        if auth_required {
            "on"
        } else {
            "off on loopback"
        },
        match args.task_root {
            crate::operator::local::TaskRootMode::Host => "on the host's /usr (--task-root host)",
            crate::operator::local::TaskRootMode::Image => "in their images (--task-root image)",
        }
    );
    if specs.is_empty() {
        crate::supervisor::wait_for_signal().await;
        running.stop().await;
        return Ok(0);
    }
    let token = if auth_required {
        std::fs::read_to_string(data_dir.join(crate::control::membership::BOOTSTRAP_TOKEN_FILE))
            .ok()
            .map(|secret| secret.trim().to_string())
    } else {
        None
    };
    let client = Client::new(vec![format!("http://{}", running.address)], token)?;
    let outcome = tokio::select! {
        outcome = run_files(&client, &args.pool, &specs) => outcome,
        _ = crate::supervisor::wait_for_signal() => Ok(false),
    };
    running.stop().await;
    Ok(if outcome? { 0 } else { 1 })
}

/// Submits every file, follows each workflow's logs in turn, and reports
/// whether all of them completed.
async fn run_files(
    client: &Client,
    pool: &str,
    specs: &[(PathBuf, String)],
) -> anyhow::Result<bool> {
    let mut submitted = Vec::new();
    let mut all_completed = true;
    for (file, text) in specs {
        match client.submit(pool, text, &[], &[], &[], false, false).await {
            Ok(response) => {
                let id = response["name"].as_str().unwrap_or_default().to_string();
                eprintln!("submitted {} as {id}", file.display());
                submitted.push(id);
            }
            Err(error) => {
                eprintln!("error: {}: {error}", file.display());
                all_completed = false;
            }
        }
    }
    for id in &submitted {
        client
            .logs(id, None, None, |chunk| {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(chunk);
                let _ = stdout.flush();
            })
            .await?;
        let status = wait_finished(client, id).await?;
        eprintln!("{id}: {status}");
        all_completed &= status == "COMPLETED";
    }
    Ok(all_completed)
}

/// The log stream ends when the workflow ends; this confirms the final status.
async fn wait_finished(client: &Client, id: &str) -> anyhow::Result<String> {
    loop {
        let workflow = client.query(id).await?;
        let status = workflow["status"].as_str().unwrap_or("UNKNOWN").to_string();
        if !matches!(status.as_str(), "PENDING" | "RUNNING" | "WAITING") {
            return Ok(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
