//! `gantry config show|update|history|rollback|delete TYPE [NAME]`.
//!
//! Invariants: TYPE is checked before any request (one of SERVICE,
//! WORKFLOW, BACKEND, POOL, POD_TEMPLATE, RESOURCE_VALIDATION, ROLE); a
//! `--file` may be JSON or YAML and is sent as OSMO's `configs`; `-t json`
//! prints the API's JSON unchanged.

use super::client::{encode_segment, Client};
use super::output::{self, print_json, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::Context;
use gantry_storage::ConfigType;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Show a config (SERVICE, WORKFLOW) or one named config; without NAME,
    /// every config of TYPE
    Show {
        config_type: String,
        name: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Write a new revision from a JSON or YAML file (BACKEND: a partial update)
    Update {
        config_type: String,
        name: Option<String>,
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[arg(long)]
        description: Option<String>,
        /// Tags, comma-separated
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// List revisions, newest first
    History {
        config_type: Option<String>,
        name: Option<String>,
        /// Most revisions to show
        #[arg(long, short = 'c', default_value_t = 20)]
        count: u64,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Write a new revision equal to revision REVISION of TYPE
    Rollback {
        config_type: String,
        revision: u64,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Delete a named config (the deletion is a revision too)
    Delete {
        config_type: String,
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl ConfigCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            ConfigCommand::Show { output, .. }
            | ConfigCommand::Update { output, .. }
            | ConfigCommand::History { output, .. }
            | ConfigCommand::Rollback { output, .. }
            | ConfigCommand::Delete { output, .. } => output.format,
        }
    }
}

fn parse_type(text: &str) -> anyhow::Result<ConfigType> {
    text.parse::<ConfigType>().map_err(anyhow::Error::msg)
}

/// `/api/configs/<type>[/<name>]`.
fn config_path(config_type: ConfigType, name: Option<&str>) -> anyhow::Result<String> {
    let base = format!("/api/configs/{}", config_type.as_str().to_ascii_lowercase());
    match (config_type.is_singleton(), name) {
        (true, Some(name)) => {
            anyhow::bail!("{config_type} is a single config; drop the name '{name}'")
        }
        (_, Some(name)) => Ok(format!("{base}/{}", encode_segment(name))),
        (_, None) => Ok(base),
    }
}

/// Reads a JSON or YAML file into JSON.
fn read_body(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(value) => Ok(value),
        Err(_) => serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is neither JSON nor YAML", path.display())),
    }
}

pub async fn run_config(args: &ClientArgs, command: ConfigCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let reply = match command {
        ConfigCommand::Show {
            config_type, name, ..
        } => {
            let path = config_path(parse_type(&config_type)?, name.as_deref())?;
            let value = with_spinner(
                args.format,
                "Reading config",
                client.call(Method::GET, &path, &[], None),
            )
            .await?;
            // Configs are documents: text output is the same JSON, indented.
            return print_json(&value);
        }
        ConfigCommand::Update {
            config_type,
            name,
            file,
            description,
            tags,
            ..
        } => {
            let config_type = parse_type(&config_type)?;
            if !config_type.is_singleton() && name.is_none() {
                anyhow::bail!("{config_type} configs are named: gantry config update {config_type} NAME --file F");
            }
            let path = config_path(config_type, name.as_deref())?;
            let body = json!({
                "description": description,
                "tags": tags,
                "configs": read_body(&file)?,
            });
            // OSMO updates backends with POST (a partial update), the rest with PUT.
            let method = if config_type == ConfigType::Backend {
                Method::POST
            } else {
                Method::PUT
            };
            client.call(method, &path, &[], Some(&body)).await?
        }
        ConfigCommand::History {
            config_type,
            name,
            count,
            ..
        } => {
            let mut query = vec![("order", "DESC".to_string()), ("limit", count.to_string())];
            if let Some(config_type) = config_type {
                query.push((
                    "config_types",
                    parse_type(&config_type)?.as_str().to_string(),
                ));
            }
            if let Some(name) = name {
                query.push(("name", name));
            }
            let history = with_spinner(
                args.format,
                "Reading history",
                client.call(Method::GET, "/api/configs/history", &query, None),
            )
            .await?;
            if args.format == OutputFormat::Json {
                return print_json(&history);
            }
            print!("{}", render_history(&history));
            return Ok(());
        }
        ConfigCommand::Rollback {
            config_type,
            revision,
            description,
            ..
        } => {
            let body = json!({
                "config_type": parse_type(&config_type)?.as_str(),
                "revision": revision,
                "description": description,
            });
            client
                .call(
                    Method::POST,
                    "/api/configs/history/rollback",
                    &[],
                    Some(&body),
                )
                .await?
        }
        ConfigCommand::Delete {
            config_type,
            name,
            description,
            ..
        } => {
            let path = config_path(parse_type(&config_type)?, Some(&name))?;
            let body = json!({ "description": description });
            client.call(Method::DELETE, &path, &[], Some(&body)).await?
        }
    };
    if args.format == OutputFormat::Json {
        return print_json(&reply);
    }
    let name = text_field(&reply, "name");
    println!(
        "{} {}: revision {}",
        text_field(&reply, "config_type"),
        if name == "-" { String::new() } else { name },
        text_field(&reply, "revision")
    );
    Ok(())
}

pub fn render_history(history: &Value) -> String {
    let Some(entries) = history["configs"].as_array().filter(|e| !e.is_empty()) else {
        return "No config revisions found.\n".to_string();
    };
    let mut table = output::table(&[
        "Type",
        "Name",
        "Revision",
        "User",
        "Time",
        "Change",
        "Description",
        "Tags",
    ]);
    for entry in entries {
        let tags = entry["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        table.add_row(vec![
            text_field(entry, "config_type"),
            text_field(entry, "name"),
            text_field(entry, "revision"),
            text_field(entry, "username"),
            text_field(entry, "created_at"),
            if entry["deleted"] == true {
                "delete"
            } else {
                "set"
            }
            .to_string(),
            text_field(entry, "description"),
            tags,
        ]);
    }
    output::render_table(&table)
}
