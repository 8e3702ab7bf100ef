//! gantry: workflow orchestration for Physical AI in one binary.
//!
//! This file only parses the command line and hands each verb to the
//! library (`src/lib.rs`), whose modules hold the roles and the CLI;
//! `anyhow` lives here and in the library's edge modules.

use clap::{Parser, Subcommand};
use gantry::{cli, dev, operator, server, spec, supervisor, tls};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "gantry",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GANTRY_GIT_HASH"), ")"),
    about = "Workflow orchestration for Physical AI: one binary, Raft-replicated state, OSMO-compatible workflows"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run a cluster of one with a local backend (pool `default`); with FILEs, run them and exit
    Dev(dev::DevArgs),
    /// Run a control-plane server
    Server(ServerArgs),
    /// Run a backend operator: dial the control plane and run its tasks
    Operator(operator::run::OperatorArgs),
    /// Submit, list, query, follow and cancel workflows
    Workflow {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::WorkflowCommand,
    },
    /// List tasks across workflows (OSMO's `task list`)
    Task {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::TaskCommand,
    },
    /// Cluster membership: members, leave
    Cluster {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::ClusterCommand,
    },
    /// Back up and restore the whole state
    Snapshot {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::SnapshotCommand,
    },
    /// List pools with their capacity and use
    Pool {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::PoolCommand,
    },
    /// Node inventory: allocatable resources and use per node
    Resource {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::ResourceCommand,
    },
    /// Access tokens: set, list, delete
    Token {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
    /// Your credentials (registry, data, generic): set, list, delete
    Credential {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::CredentialCommand,
    },
    /// Users and the roles given to them (admins): list, get, roles, create, update, delete, revoke
    User {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// Your profile: roles, pools and saved preferences (default pool)
    Profile {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::ProfileCommand,
    },
    /// Save a server URL, token and CA for later commands
    Login(cli::LoginArgs),
    /// Versioned configs: list, show, update, set, history, rollback, delete, tag, diff
    Config {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::ConfigCommand,
    },
    /// Show the client's and the server's versions
    Version {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(flatten)]
        output: cli::FormatArg,
    },
    /// Make certificates for an air-gapped cluster: a CA, then server, operator and client certificates
    Tls {
        #[command(subcommand)]
        command: tls::TlsCommand,
    },
    /// Inside a task pod: install the runtime, or run a task's command under it
    #[command(name = "task-runtime")]
    TaskRuntime {
        #[command(subcommand)]
        command: operator::kubernetes::task_runtime::TaskRuntimeCommand,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory holding the Raft log, state and logs
    #[arg(long)]
    data_dir: PathBuf,
    /// API address
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Raft peer address (mutual TLS)
    #[arg(long, default_value = "127.0.0.1:8471")]
    peer_listen: SocketAddr,
    /// Start a new cluster with this node as its only member (a no-op once initialized)
    #[arg(long, conflicts_with = "join")]
    bootstrap: bool,
    /// Join the cluster through the member at this peer address (host:port); if it
    /// is this node's own --advertise-peer, start the cluster instead (--bootstrap)
    #[arg(long, value_name = "PEER_ADDR")]
    join: Option<String>,
    /// How peers reach this node (host:port) if not the --peer-listen address,
    /// e.g. a stable DNS name; the server certificate must name that host
    #[arg(long, value_name = "HOST:PORT")]
    advertise_peer: Option<String>,
    /// This node's API URL for clients and links if not https://<--listen>
    #[arg(long, value_name = "URL")]
    advertise_api: Option<String>,
    /// The cluster's CA certificate (from `gantry tls ca create`)
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's server certificate (from `gantry tls cert create --kind server`)
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Also run tasks on this host (backend `local`, pool `default`)
    #[arg(long)]
    local_backend: bool,
    /// Largest API request body, in bytes
    #[arg(long, default_value_t = server::BODY_BYTES_MAX_DEFAULT)]
    body_bytes_max: usize,
    /// Gone: the WORKFLOW config's `max_num_tasks` decides (refused with
    /// that advice rather than ignored)
    #[arg(long, hide = true, value_name = "N")]
    max_tasks: Option<String>,
    /// With --bootstrap: take the admin token's secret from this file instead
    /// of generating and printing one (unattended installs)
    #[arg(long, value_name = "FILE", requires = "bootstrap")]
    bootstrap_token_file: Option<PathBuf>,
    /// Object store for logs: file:///dir or s3://bucket/prefix[?endpoint=URL&region=R&path_style=true]
    /// (S3 credentials from AWS_* variables); default <data-dir>/objects, for a
    /// cluster of one. Members of a larger cluster must share one store (an S3
    /// URL, or a file:// path every member mounts): checked when a node joins.
    #[arg(long, env = "GANTRY_OBJECT_STORE", value_name = "URL")]
    object_store: Option<String>,
    /// While this node leads: how often members compare the hashes of
    /// their states (e.g. 30s, 5m, 1h); 0 turns the check off
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = state_check_interval)]
    state_check_interval: std::time::Duration,
    /// Cluster key file (`gantry cluster key create`), the same on every
    /// member: credential values in configs are sealed with it, so the Raft
    /// log, the state and snapshots never hold them in the clear
    #[arg(long, env = "GANTRY_CLUSTER_KEY", value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// CA certificates (PEM) the identity provider's HTTPS certificate is
    /// checked against, besides the system's (an IdP with a private CA)
    #[arg(long, env = "GANTRY_IDP_CA", value_name = "FILE")]
    idp_ca: Option<PathBuf>,
}

/// `--state-check-interval`: a duration as configs write it.
fn state_check_interval(text: &str) -> Result<std::time::Duration, String> {
    gantry_storage::config::parse_duration_seconds(text).map(std::time::Duration::from_secs)
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let json = std::env::var("GANTRY_LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(cli::colour_wanted(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Top::Dev(args) => {
            init_tracing();
            dev::run(args).await
        }
        Top::Server(args) => {
            if args.max_tasks.is_some() {
                anyhow::bail!(
                    "--max-tasks is gone: the WORKFLOW config's max_num_tasks (100 until set, as OSMO's chart deploys it) decides how many tasks a workflow may have; set it with `gantry config update WORKFLOW --file F` (F holding {{\"max_num_tasks\": N}}) and drop the flag"
                );
            }
            init_tracing();
            let running = server::start(server::ServerOptions {
                data_dir: args.data_dir,
                listen: args.listen,
                peer_listen: args.peer_listen,
                tls: match (args.tls_ca, args.tls_cert, args.tls_key) {
                    (Some(ca), Some(cert), Some(key)) => Some(tls::TlsFiles { ca, cert, key }),
                    _ => None,
                },
                bootstrap: args.bootstrap,
                join: args.join,
                advertise_peer: args.advertise_peer,
                advertise_api: args.advertise_api,
                local_backend: args.local_backend,
                body_bytes_max: args.body_bytes_max,
                spec_limits: server::server_spec_limits(),
                auth_required: true,
                bootstrap_token_file: args.bootstrap_token_file,
                object_store: args.object_store,
                state_check_interval: Some(args.state_check_interval)
                    .filter(|interval| !interval.is_zero()),
                cluster_key: args.cluster_key,
                idp_ca: args.idp_ca,
                // The in-process backend runs on the host's /usr, as before
                // images; a pool of images is a `gantry operator`'s.
                task_root: gantry::operator::local::TaskRoot::Host,
            })
            .await?;
            eprintln!("gantry server: API on {}", running.base_url);
            supervisor::wait_for_signal().await;
            running.stop().await;
            Ok(0)
        }
        Top::Operator(args) => {
            init_tracing();
            operator::run::run(args).await
        }
        Top::Workflow {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_workflow(&client, command).await.map(|()| 0)
        }
        Top::Task {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_task(&client, command).await.map(|()| 0)
        }
        Top::Cluster {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_cluster(&client, command).await.map(|()| 0)
        }
        Top::Snapshot { client, command } => cli::run_snapshot(&client, command).await.map(|()| 0),
        Top::Pool {
            mut client,
            command,
        } => {
            let cli::PoolCommand::List { output, .. } = &command;
            client.format = output.format;
            cli::run_pool(&client, command).await.map(|()| 0)
        }
        Top::Resource {
            mut client,
            command,
        } => {
            let cli::ResourceCommand::List { output, .. } = &command;
            client.format = output.format;
            cli::run_resource(&client, command).await.map(|()| 0)
        }
        Top::Token {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_token(&client, command).await.map(|()| 0)
        }
        Top::Credential {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_credential(&client, command).await.map(|()| 0)
        }
        Top::User {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_user(&client, command).await.map(|()| 0)
        }
        Top::Profile {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_profile(&client, command).await.map(|()| 0)
        }
        Top::Login(args) => cli::run_login(args).await.map(|()| 0),
        Top::Config {
            mut client,
            command,
        } => {
            client.format = command.format();
            cli::run_config(&client, command).await.map(|()| 0)
        }
        Top::Version { mut client, output } => {
            client.format = output.format;
            cli::run_version(&client).await.map(|()| 0)
        }
        Top::Tls { command } => tls::run_tls(command).map(|()| 0),
        Top::TaskRuntime { command } => Ok(operator::kubernetes::task_runtime::run(command).await),
    }
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == spec::RENDER_WORKER_ARG)
    {
        std::process::exit(spec::render_worker_main());
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == operator::local::enter::ENTER_ARG)
    {
        std::process::exit(operator::local::enter::enter_main(
            std::env::args_os().skip(2).collect(),
        ));
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // `workflow exec` passes the command's exit code on, silently.
        Err(error) if error.downcast_ref::<cli::exec::CommandExit>().is_some() => error
            .downcast_ref::<cli::exec::CommandExit>()
            .map_or(1, |exit| exit.0),
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
