//! `gantry cluster members|leave` and `gantry snapshot save|restore`.
//!
//! Invariants: `-t json` prints the API's JSON unchanged; `snapshot restore`
//! works offline on a new data directory and never overwrites Raft state.

use super::client::Client;
use super::output::{print_json, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::Context;
use comfy_table::Table;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// List members: id, addresses, role, last contact, match index
    Members {
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
}

impl ClusterCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            ClusterCommand::Members { output } | ClusterCommand::Leave { output, .. } => {
                output.format
            }
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
    let client = Client::from_args(args)?;
    let format = command.format();
    let response = match command {
        ClusterCommand::Members { .. } => {
            with_spinner(format, "Listing members", client.members()).await?
        }
        ClusterCommand::Leave { id, .. } => {
            with_spinner(format, "Changing membership", client.leave(id)).await?
        }
    };
    if format == OutputFormat::Json {
        return print_json(&response);
    }
    if let Some(members) = response["members"].as_array() {
        let leader = response["leader_id"].as_u64();
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header([
            "ID",
            "Role",
            "Voter",
            "Peer Address",
            "API",
            "Last Contact",
            "Match Index",
        ]);
        for member in members {
            let dash = || "-".to_string();
            table.add_row([
                member["id"].to_string(),
                member["role"].as_str().unwrap_or("?").to_string(),
                member["voter"]
                    .as_bool()
                    .map_or_else(dash, |voter| if voter { "yes" } else { "no" }.to_string()),
                member["peer_address"].as_str().unwrap_or("").to_string(),
                member["api_url"].as_str().unwrap_or("").to_string(),
                member["last_contact_ms"]
                    .as_u64()
                    .map_or_else(dash, |ms| format!("{ms} ms ago")),
                member["match_index"]
                    .as_u64()
                    .map_or_else(dash, |index| index.to_string()),
            ]);
        }
        println!("{table}");
        if leader.is_none() {
            eprintln!("warning: this node knows no leader");
        }
    } else {
        println!(
            "Removed node {}; voters now: {}",
            response["removed"], response["voters"]
        );
        for warning in response["warnings"].as_array().into_iter().flatten() {
            eprintln!("warning: {}", warning.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

pub async fn run_snapshot(args: &ClientArgs, command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => {
            let client = Client::from_args(args)?;
            let bytes =
                with_spinner(OutputFormat::Text, "Taking a snapshot", client.snapshot()).await?;
            let temporary = file.with_extension("partial");
            std::fs::write(&temporary, &bytes)
                .with_context(|| format!("writing {}", temporary.display()))?;
            std::fs::rename(&temporary, &file)
                .with_context(|| format!("writing {}", file.display()))?;
            println!("saved {} ({} bytes, zstd)", file.display(), bytes.len());
        }
        SnapshotCommand::Restore { file, data_dir } => {
            let compressed =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let image = zstd::decode_all(compressed.as_slice())
                .with_context(|| format!("{} is not a Gantry snapshot (zstd)", file.display()))?;
            gantry_raft::state_machine::seed_state(&data_dir.join("raft"), &image)?;
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
