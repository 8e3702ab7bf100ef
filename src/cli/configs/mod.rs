//! `gantry config list|show|update|set|history|rollback|delete|tag|diff`,
//! with OSMO's ways of naming a config: `TYPE [NAME]`, or a revision
//! `TYPE:REV` (the verbs on revisions are in `revisions`, the diff's text
//! in `unified_diff`).
//!
//! Invariants: TYPE is checked before any request (one of SERVICE,
//! WORKFLOW, BACKEND, POOL, POD_TEMPLATE, RESOURCE_VALIDATION, ROLE); a
//! `--file` may be JSON or YAML and is sent as OSMO's `configs`; `-t json`
//! prints the API's JSON unchanged.

mod revisions;
mod unified_diff;

use super::client::{encode_segment, Client};
use super::output::{self, print_json, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use anyhow::Context;
use gantry_storage::ConfigType;
use reqwest::Method;
use revisions::parse_ref;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// List the revision in force of every config
    List {
        #[command(flatten)]
        output: FormatArg,
    },
    /// Show a config (SERVICE, WORKFLOW) or one named config (without NAME,
    /// every config of TYPE), or a revision TYPE:REV; further NAMEs index
    /// into it (keys, list positions, names)
    Show {
        /// TYPE, or TYPE:REV for a revision
        config: String,
        names: Vec<String>,
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
    /// Write a generated ROLE: `set ROLE osmo-POOL pool`, or
    /// `set ROLE NAME backend --field BACKEND`
    Set {
        config_type: String,
        name: String,
        /// pool or backend
        role_type: String,
        /// The backend a backend role is for
        #[arg(long)]
        field: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Tags, comma-separated or repeated
        #[arg(long, num_args = 1.., value_delimiter = ',')]
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
        /// Only this revision (of TYPE)
        #[arg(long, short = 'r')]
        revision: Option<u64>,
        /// Only revisions carrying any of these tags, comma-separated or several
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        tags: Vec<String>,
        /// Revisions to skip (paging)
        #[arg(long, short = 'o', default_value_t = 0)]
        offset: u64,
        /// By creation time: newest first (desc, the default) or oldest first
        #[arg(long, value_enum, default_value = "desc")]
        order: HistoryOrder,
        /// Only revisions made before this UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)
        #[arg(long, conflicts_with = "at_timestamp")]
        created_before: Option<String>,
        /// Only revisions made after this UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)
        #[arg(long, conflicts_with = "at_timestamp")]
        created_after: Option<String>,
        /// Each config's revision in force at this UTC time (YYYY-MM-DD or
        /// YYYY-MM-DDTHH:MM:SS)
        #[arg(long)]
        at_timestamp: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Write a new revision equal to an old one: TYPE:REV, or TYPE REVISION
    Rollback {
        /// TYPE:REV, or TYPE followed by REVISION
        config: String,
        revision: Option<u64>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Delete a named config (TYPE NAME; the deletion is a revision too), or
    /// remove a revision from its history (TYPE:REV; never the one in force)
    Delete {
        /// TYPE (with NAME), or TYPE:REV
        config: String,
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Add and remove tags of a revision (TYPE:REV; TYPE alone: its latest)
    Tag {
        /// TYPE:REV, or TYPE for its latest revision
        config: String,
        /// Tags to add, comma-separated or several
        #[arg(long, short = 's', visible_alias = "add", num_args = 1.., value_delimiter = ',')]
        set: Vec<String>,
        /// Tags to remove, comma-separated or several
        #[arg(long, short = 'd', visible_alias = "remove", num_args = 1.., value_delimiter = ',')]
        delete: Vec<String>,
        #[command(flatten)]
        output: FormatArg,
    },
    /// Compare a revision with the type's latest, or with another revision
    /// (TYPE[:REV] [TYPE[:REV]]); secrets show only whether they changed
    Diff {
        first: String,
        second: Option<String>,
        #[command(flatten)]
        output: FormatArg,
    },
}

impl ConfigCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            ConfigCommand::List { output }
            | ConfigCommand::Show { output, .. }
            | ConfigCommand::Update { output, .. }
            | ConfigCommand::Set { output, .. }
            | ConfigCommand::History { output, .. }
            | ConfigCommand::Rollback { output, .. }
            | ConfigCommand::Delete { output, .. }
            | ConfigCommand::Tag { output, .. }
            | ConfigCommand::Diff { output, .. } => output.format,
        }
    }
}

/// The order of `config history`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum HistoryOrder {
    Asc,
    Desc,
}

impl HistoryOrder {
    fn as_query(self) -> &'static str {
        match self {
            HistoryOrder::Asc => "ASC",
            HistoryOrder::Desc => "DESC",
        }
    }
}

/// A `--created-before`-style time as the API takes it: a day means its
/// start (OSMO's CLI does the same), a time is taken as UTC.
fn utc_time(flag: &str, text: &str) -> anyhow::Result<String> {
    if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
        return Ok(format!("{text}T00:00:00"));
    }
    if chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").is_ok() {
        return Ok(text.to_string());
    }
    anyhow::bail!(
        "--{}: '{text}' is neither YYYY-MM-DD nor YYYY-MM-DDTHH:MM:SS",
        flag.replace('_', "-")
    )
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
        ConfigCommand::List { .. } => return revisions::list(args, &client).await,
        ConfigCommand::Show { config, names, .. } => {
            let (config_type, revision) = parse_ref(&config)?;
            if let Some(revision) = revision {
                return revisions::show(&client, config_type, revision, &names).await;
            }
            // A named type's first NAME is the config; the rest index into it.
            let (name, index) = match names.split_first() {
                Some((name, rest)) if !config_type.is_singleton() => (Some(name.as_str()), rest),
                _ => (None, names.as_slice()),
            };
            let path = config_path(config_type, name)?;
            let value = with_spinner(
                args.format,
                "Reading config",
                client.call(Method::GET, &path, &[], None),
            )
            .await?;
            // Configs are documents: text output is the same JSON, indented.
            return print_json(&revisions::index_into(value, index)?);
        }
        ConfigCommand::Set {
            config_type,
            name,
            role_type,
            field,
            description,
            tags,
            ..
        } => {
            let config_type = parse_type(&config_type)?;
            let role = revisions::generated_role(config_type, &name, &role_type, field.as_deref())?;
            let body = json!({ "description": description, "tags": tags, "configs": role });
            let path = config_path(config_type, Some(&name))?;
            client.call(Method::PUT, &path, &[], Some(&body)).await?
        }
        ConfigCommand::Tag {
            config,
            set,
            delete,
            ..
        } => return revisions::tag(args, &client, &config, set, delete).await,
        ConfigCommand::Diff { first, second, .. } => {
            return revisions::diff(args, &client, &first, second.as_deref()).await
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
            revision,
            tags,
            offset,
            order,
            created_before,
            created_after,
            at_timestamp,
            ..
        } => {
            let mut query = vec![
                ("order", order.as_query().to_string()),
                ("limit", count.to_string()),
                ("offset", offset.to_string()),
            ];
            for (key, value) in [
                ("created_before", created_before),
                ("created_after", created_after),
                ("at_timestamp", at_timestamp),
            ] {
                if let Some(value) = value {
                    query.push((key, utc_time(key, &value)?));
                }
            }
            if let Some(revision) = revision {
                query.push(("revision", revision.to_string()));
            }
            query.extend(tags.into_iter().map(|tag| ("tags", tag)));
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
            config,
            revision,
            description,
            ..
        } => {
            let (config_type, revision) = match (parse_ref(&config)?, revision) {
                ((config_type, Some(revision)), None) | ((config_type, None), Some(revision)) => {
                    (config_type, revision)
                }
                ((_, Some(_)), Some(_)) => {
                    anyhow::bail!("give the revision once: TYPE:REV or TYPE REVISION")
                }
                ((config_type, None), None) => {
                    anyhow::bail!("which revision? {config_type}:REV or {config_type} REVISION")
                }
            };
            let body = json!({
                "config_type": config_type.as_str(),
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
            config,
            name,
            description,
            ..
        } => match (parse_ref(&config)?, name) {
            ((config_type, Some(revision)), None) => {
                return revisions::delete(args, &client, config_type, revision).await
            }
            ((_, Some(_)), Some(name)) => {
                anyhow::bail!(
                    "delete either a revision (TYPE:REV) or a config (TYPE {name}), not both"
                )
            }
            ((config_type, None), None) => {
                anyhow::bail!("which {config_type}? gantry config delete {config_type} NAME, or {config_type}:REV for a revision")
            }
            ((config_type, None), Some(name)) => {
                let path = config_path(config_type, Some(&name))?;
                let body = json!({ "description": description });
                client.call(Method::DELETE, &path, &[], Some(&body)).await?
            }
        },
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
        let mut row = revision_cells(entry);
        row.extend([
            if entry["deleted"] == true {
                "delete"
            } else {
                "set"
            }
            .to_string(),
            text_field(entry, "description"),
            tags,
        ]);
        table.add_row(row);
    }
    output::render_table(&table)
}

/// A history entry's type, name, revision, user and time: the first cells
/// of every table of revisions.
pub(super) fn revision_cells(entry: &Value) -> Vec<String> {
    ["config_type", "name", "revision", "username", "created_at"]
        .into_iter()
        .map(|field| text_field(entry, field))
        .collect()
}
