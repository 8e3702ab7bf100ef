//! `gantry workflow rsync upload|download WF [TASK] SRC:DST` (OSMO's
//! form): a directory tree between this machine and a running task with
//! the `rsync` protocol, spoken by the `rsync` programs at both ends over
//! an exec session (`rsync -e`, whose remote shell is `gantry workflow
//! rsync-shell`, an exec without a terminal). So only changed files move,
//! an interrupted transfer resumes (`--partial`), and the task needs only
//! `rsync` on its `PATH` (the local executor's tasks see the host's
//! `/usr`).
//!
//! Why rsync itself: it is the well-kept implementation of exactly this
//! (deltas, resumption, permissions, progress), and an exec session is a
//! byte pipe in both directions with the exit code passed back, which is
//! all its remote shell needs.
//!
//! Invariants: without a task, the lead task of the first group (as OSMO);
//! the path is split at its first `:`; the task is checked to be RUNNING
//! before rsync starts; rsync's exit code is this command's.

mod daemon;

use super::client::Client;
use super::exec::CommandExit;
use super::ClientArgs;
use anyhow::Context;
use serde_json::Value;

/// `gantry workflow rsync` (OSMO's subcommands and flags).
#[derive(clap::Subcommand, Debug)]
pub enum RsyncCommand {
    /// Upload LOCAL to REMOTE in the task
    Upload(RsyncArgs),
    /// Download REMOTE in the task to LOCAL
    Download(RsyncArgs),
    /// The upload daemons running on this machine
    Status,
    /// Stop the upload daemons (all, or a workflow's)
    Stop {
        /// Only this workflow's daemons
        workflow_id: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct RsyncArgs {
    /// The ID or UUID of the workflow
    pub workflow_id: String,
    /// [TASK] SRC:DST (upload LOCAL:REMOTE, download REMOTE:LOCAL); without a
    /// task, the lead task of the first group
    #[arg(num_args = 1..=2, required = true)]
    pub task_and_path: Vec<String>,
    /// Seconds the session may take to open
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Upload at most this many bytes per second
    #[arg(long = "upload-rate-limit", value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_rate_limit: Option<u64>,
    /// No progress line
    #[arg(long = "no-progress")]
    pub no_progress: bool,
    /// Print rsync's transfer statistics at the end
    #[arg(long)]
    pub stats: bool,
    /// Upload in the background, again whenever LOCAL changes (upload only)
    #[arg(long)]
    pub daemon: bool,
    /// Daemon: seconds between looks at LOCAL for changes
    #[arg(long = "poll-interval", default_value_t = 2.0, value_parser = positive_seconds)]
    pub poll_interval: f64,
    /// Daemon: seconds without a change before the upload starts
    #[arg(long = "debounce-delay", default_value_t = 1.0, value_parser = positive_seconds)]
    pub debounce_delay: f64,
    /// Daemon: seconds between uploads made whatever changed (a failed one resumes)
    #[arg(long = "reconcile-interval", default_value_t = 60.0, value_parser = positive_seconds)]
    pub reconcile_interval: f64,
    /// Daemon: bytes of log kept before it is rotated
    #[arg(long = "max-log-size", default_value_t = 2 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_log_size: u64,
    /// Daemon: log each upload's file list
    #[arg(long)]
    pub verbose: bool,
    /// Run as the daemon itself (what `--daemon` starts)
    #[arg(long = "daemon-child", hide = true)]
    pub daemon_child: bool,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds <= 86_400.0)
        .ok_or_else(|| format!("'{text}' is not a number of seconds (more than 0, at most 86400)"))
}

/// `gantry workflow rsync-shell WF TASK HOST COMMAND...`: rsync's remote
/// shell (the host rsync names is ignored: the task is the remote).
#[derive(clap::Args, Debug)]
pub struct RsyncShellArgs {
    pub workflow_id: String,
    pub task: String,
    pub host: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// The lead task of the workflow's first group.
async fn first_lead(client: &Client, workflow: &str) -> anyhow::Result<String> {
    let path = format!("/api/workflow/{}", super::client::encode_segment(workflow));
    let answer = client
        .call(reqwest::Method::GET, &path, &[], None)
        .await
        .map_err(|error| anyhow::anyhow!(error))?;
    let tasks = answer["groups"][0]["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tasks
        .iter()
        .find(|task| task["lead"] == Value::Bool(true))
        .or_else(|| tasks.first())
        .and_then(|task| task["name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("workflow {workflow} has no task"))
}

pub async fn run(client_args: &ClientArgs, command: RsyncCommand) -> anyhow::Result<()> {
    let (upload, args) = match command {
        RsyncCommand::Upload(args) => (true, args),
        RsyncCommand::Download(args) => (false, args),
        RsyncCommand::Status => return daemon::status(),
        RsyncCommand::Stop { workflow_id } => return daemon::stop(workflow_id.as_deref()),
    };
    if (args.daemon || args.daemon_child) && !upload {
        anyhow::bail!("--daemon uploads; a download runs once");
    }
    let client = Client::from_args(client_args)?;
    let (task, path) = match args.task_and_path.as_slice() {
        [path] => (first_lead(&client, &args.workflow_id).await?, path.clone()),
        [task, path] => (task.clone(), path.clone()),
        _ => anyhow::bail!("give [TASK] SRC:DST"),
    };
    let (source, destination) = path
        .split_once(':')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the path must be SRC:DST, got {path:?}"))?;
    super::session_client::check_running(client_args, &args.workflow_id, &task).await?;
    let transfer = Transfer {
        workflow_id: args.workflow_id.clone(),
        task,
        source: source.to_string(),
        destination: destination.to_string(),
        upload,
    };
    if args.daemon {
        return daemon::start(client_args, &args, &transfer);
    }
    if args.daemon_child {
        return daemon::serve(client_args, &args, &transfer).await;
    }
    let status = transfer
        .command(client_args, &args)?
        .status()
        .await
        .context("running rsync (install it: `apt-get install rsync`)")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CommandExit(code).into()),
        None => Err(CommandExit(1).into()),
    }
}

/// One rsync run's what and where.
pub struct Transfer {
    pub workflow_id: String,
    pub task: String,
    pub source: String,
    pub destination: String,
    pub upload: bool,
}

impl Transfer {
    /// The rsync command of this transfer, its remote shell this program.
    pub fn command(
        &self,
        client_args: &ClientArgs,
        args: &RsyncArgs,
    ) -> anyhow::Result<tokio::process::Command> {
        let Transfer {
            workflow_id,
            task,
            source,
            destination,
            upload,
        } = self;
        let upload = *upload;
        let me = std::env::current_exe().context("finding this executable")?;
        let shell = shlex::try_join([
            me.to_string_lossy().as_ref(),
            "workflow",
            "rsync-shell",
            workflow_id.as_str(),
            task.as_str(),
        ])
        .map_err(|error| anyhow::anyhow!("quoting the remote shell: {error}"))?;
        let mut rsync = tokio::process::Command::new("rsync");
        rsync.args(["--archive", "--partial", "--rsh", &shell]);
        rsync.arg(format!("--timeout={}", args.timeout.max(60)));
        if args.daemon_child {
            if args.verbose {
                rsync.arg("--itemize-changes");
            }
        } else if !args.no_progress {
            rsync.arg("--info=progress2");
        }
        if args.stats {
            rsync.arg("--stats");
        }
        if let Some(rate) = args.upload_rate_limit.filter(|_| upload) {
            // rsync's unit is KiB per second.
            rsync.arg(format!("--bwlimit={}", rate.div_ceil(1024)));
        }
        if upload {
            rsync.arg(source).arg(format!("task:{destination}"));
        } else {
            rsync.arg(format!("task:{source}")).arg(destination);
        }
        // The remote shell is this program: it finds the same server.
        if !client_args.url.is_empty() {
            rsync.env("GANTRY_URL", client_args.url.join(","));
        }
        if let Some(ca) = &client_args.ca {
            rsync.env("GANTRY_CA", ca);
        }
        Ok(rsync)
    }
}

/// rsync's remote shell: the command, in the task, without a terminal.
pub async fn run_shell(client_args: &ClientArgs, args: RsyncShellArgs) -> anyhow::Result<()> {
    super::exec::run(
        client_args,
        super::exec::ExecArgs {
            workflow_id: args.workflow_id,
            task: Some(args.task),
            group: None,
            entry: String::new(),
            tty: false,
            no_tty: true,
            connect_timeout: 60,
            keep_alive: false,
            command: args.command,
        },
    )
    .await
}
