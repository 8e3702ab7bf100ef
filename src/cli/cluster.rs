//! `gantry cluster members|init|join|leave|rebuild` and `gantry snapshot
//! save|restore`.
//!
//! Invariants: `-t json` prints the API's JSON unchanged; `snapshot restore`
//! works offline on a new data directory and never overwrites Raft state;
//! `cluster rebuild` works on a stopped member's data directory (it takes
//! the directory's lock) with a snapshot taken after it stopped.

use super::client::Client;
use super::output::{print_json, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::Context;
use comfy_table::Table;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// List members as the leader sees them: id, addresses, role (UNREACHABLE
    /// when the leader has not heard from it lately), state (CORRUPT when its
    /// state hash differed from the majority's), last contact, match index,
    /// and whether its object store is the answering node's (SHARED, DIVERGED,
    /// UNKNOWN, SELF)
    Members {
        #[command(flatten)]
        output: FormatArg,
    },
    /// Make the node at --url (started without --bootstrap or --join) a new
    /// cluster of one, as --bootstrap does; a no-op for a member
    Init {
        #[command(flatten)]
        join_token: JoinTokenArg,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Make the node at --url (started without --bootstrap or --join) join
    /// the cluster through the member at PEER_ADDR, as --join does
    Join {
        /// Peer address (host:port) of a cluster member
        #[arg(value_name = "PEER_ADDR")]
        peer: String,
        #[command(flatten)]
        join_token: JoinTokenArg,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Remove a member (default: the node at --url) from the cluster
    Leave {
        /// Node ID to remove
        #[arg(long)]
        id: Option<u64>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Replace the state of a stopped member (e.g. one shown CORRUPT) with a
    /// snapshot taken now from the healthy member at --url; start it again
    /// afterwards and it catches up from the leader
    Rebuild {
        /// The stopped member's data directory (as given to `gantry server`)
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        output: FormatArg,
    },
    /// The cluster key that seals credential values at rest (`gantry server
    /// --cluster-key FILE`, the same file on every member)
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new key file (mode 0600); never replaces one
    Create {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Put a new key first in FILE, keeping the old ones (they still open
    /// what they sealed); copy FILE to every member, restart them one at a
    /// time, then run `reseal`
    Rotate {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Seal every stored credential with the newest key (a new WORKFLOW
    /// config revision); afterwards the older keys may leave the file
    Reseal {
        #[command(flatten)]
        output: FormatArg,
    },
}

/// The credential a waiting node demands for init and join.
#[derive(clap::Args, Debug)]
pub struct JoinTokenArg {
    /// File holding the waiting node's one-time join token (it prints the
    /// token at start and keeps it in <data-dir>/join-token); without it,
    /// GANTRY_TOKEN is sent, as for a node that is already a member
    #[arg(long, value_name = "FILE")]
    join_token_file: Option<PathBuf>,
}

impl JoinTokenArg {
    /// A client that sends the join token instead of GANTRY_TOKEN, when a
    /// file is given.
    fn client(&self, args: &ClientArgs) -> anyhow::Result<Client> {
        let client = Client::from_args(args)?;
        let Some(path) = &self.join_token_file else {
            return Ok(client);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--join-token-file: reading {}", path.display()))?;
        let secret = crate::access_token::secret_from_saved_text(&text).map_err(|found| {
            anyhow::anyhow!(
                "--join-token-file: {} holds {found}, not a join token",
                path.display()
            )
        })?;
        Ok(client.with_token(secret))
    }
}

impl ClusterCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            ClusterCommand::Members { output }
            | ClusterCommand::Init { output, .. }
            | ClusterCommand::Join { output, .. }
            | ClusterCommand::Leave { output, .. }
            | ClusterCommand::Rebuild { output, .. }
            | ClusterCommand::Key(KeyCommand::Reseal { output }) => output.format,
            ClusterCommand::Key(_) => OutputFormat::Text,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of the whole state (from any node)
    Save { file: PathBuf },
    /// Seed a new, empty data directory from a snapshot (offline); start the
    /// node there with --bootstrap to run a new cluster with that state
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

pub async fn run_cluster(args: &ClientArgs, command: ClusterCommand) -> anyhow::Result<()> {
    let format = command.format();
    let response = match command {
        ClusterCommand::Members { .. } => {
            let client = Client::from_args(args)?;
            with_spinner(format, "Listing members", client.members()).await?
        }
        ClusterCommand::Init { join_token, .. } => {
            let client = join_token.client(args)?;
            with_spinner(format, "Initializing the cluster", client.init()).await?
        }
        ClusterCommand::Join {
            peer, join_token, ..
        } => {
            let client = join_token.client(args)?;
            with_spinner(format, "Joining the cluster", client.join(&peer)).await?
        }
        ClusterCommand::Leave { id, .. } => {
            let client = Client::from_args(args)?;
            with_spinner(format, "Changing membership", client.leave(id)).await?
        }
        ClusterCommand::Rebuild { data_dir, .. } => rebuild(args, format, &data_dir).await?,
        ClusterCommand::Key(KeyCommand::Create { out }) => {
            let id = crate::secrets::KeyRing::write_new_key(&out, false)?;
            println!("wrote {} (cluster key {id}, mode 0600): give the same file to every member with --cluster-key", out.display());
            return Ok(());
        }
        ClusterCommand::Key(KeyCommand::Rotate { file }) => {
            let id = crate::secrets::KeyRing::write_new_key(&file, true)?;
            println!("{}: new key {id} first, older keys kept; copy it to every member, restart them one at a time, then run `gantry cluster key reseal`", file.display());
            return Ok(());
        }
        ClusterCommand::Key(KeyCommand::Reseal { .. }) => {
            let client = Client::from_args(args)?;
            with_spinner(format, "Sealing credentials", client.reseal()).await?
        }
    };
    for warning in response["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", warning.as_str().unwrap_or_default());
    }
    if format == OutputFormat::Json {
        return print_json(&response);
    }
    if let Some(message) = response["message"].as_str() {
        println!("{message}");
        return Ok(());
    }
    if let Some(members) = response["members"].as_array() {
        let leader = response["leader_id"].as_u64();
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header([
            "ID",
            "Role",
            "Voter",
            "State",
            "Peer Address",
            "API",
            "Last Contact",
            "Match Index",
            "Object Store",
            "Build",
        ]);
        for member in members {
            let dash = || "-".to_string();
            table.add_row([
                member["id"].to_string(),
                member["role"].as_str().unwrap_or("?").to_string(),
                member["voter"]
                    .as_bool()
                    .map_or_else(dash, |voter| if voter { "yes" } else { "no" }.to_string()),
                member["state"].as_str().map_or_else(dash, str::to_string),
                member["peer_address"].as_str().unwrap_or("").to_string(),
                member["api_url"].as_str().unwrap_or("").to_string(),
                member["last_contact_ms"]
                    .as_u64()
                    .map_or_else(dash, |ms| format!("{ms} ms ago")),
                member["match_index"]
                    .as_u64()
                    .map_or_else(dash, |index| index.to_string()),
                member["object_store"]
                    .as_str()
                    .map_or_else(dash, str::to_string),
                match (member["version"].as_str(), member["command_kinds"].as_u64()) {
                    (Some(version), Some(kinds)) => format!("{version} ({kinds} kinds)"),
                    (None, Some(kinds)) => format!("older ({kinds} kinds)"),
                    _ => dash(),
                },
            ]);
        }
        println!("{table}");
        // A server that says whose view this is warned above already.
        if leader.is_none() && response.get("leader_view").is_none() {
            eprintln!("warning: this node knows no leader");
        }
    } else {
        println!(
            "Removed node {}; voters now: {}",
            response["removed"], response["voters"]
        );
    }
    Ok(())
}

/// `cluster rebuild`: with the member stopped (its data directory's lock
/// taken for the whole rebuild), a snapshot from --url replaces its state.
async fn rebuild(
    args: &ClientArgs,
    format: OutputFormat,
    data_dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let _lock = crate::data_dir::lock(data_dir)?;
    let node_id = crate::data_dir::existing_node_id(data_dir)?;
    let client = Client::from_args(args)?;
    let archive = with_spinner(
        format,
        "Taking a snapshot from a healthy member",
        client.snapshot(),
    )
    .await?;
    let rebuilt = gantry_raft::rebuild::rebuild_member(&data_dir.join("raft"), node_id, &archive)
        .await
        .with_context(|| format!("rebuilding node {node_id} in {}", data_dir.display()))?;
    let index = rebuilt
        .index
        .map_or_else(|| "-".to_string(), |index| index.to_string());
    Ok(serde_json::json!({
        "node_id": node_id,
        "index": rebuilt.index,
        "was_applied": rebuilt.was_applied,
        "dropped_later_entries": rebuilt.dropped_later_entries,
        "message": format!(
            "node {node_id}: state replaced by a snapshot at log index {index} ({} bytes); start its server again and it catches up from the leader",
            archive.len()
        ),
        "warnings": [],
    }))
}

pub async fn run_snapshot(args: &ClientArgs, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => {
            let client = Client::from_args(args)?;
            let bytes =
                with_spinner(OutputFormat::Text, "Taking a snapshot", client.snapshot()).await?;
            // Refuse to save what would not restore.
            gantry_raft::snapshot_file::read(&bytes)
                .context("the server sent a snapshot that does not check out")?;
            let temporary = file.with_extension("partial");
            // 0600 whatever the umask: a snapshot holds the whole state.
            gantry_raft::private_fs::write_file(&temporary, &bytes)
                .with_context(|| format!("writing {}", temporary.display()))?;
            std::fs::rename(&temporary, &file)
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "saved {} ({} bytes, tar + zstd)",
                file.display(),
                bytes.len()
            );
        }
        SnapshotCommand::Restore { file, data_dir } => {
            let archive =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            gantry_raft::private_fs::create_dir(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            gantry_raft::state_machine::seed_state(&data_dir.join("raft"), &archive)
                .with_context(|| format!("restoring {}", file.display()))?;
            println!(
                "restored {} into {}; start it with `gantry server --data-dir {} --bootstrap ...`",
                file.display(),
                data_dir.display(),
                data_dir.display()
            );
        }
    }
    Ok(())
}
