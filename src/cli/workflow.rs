//! `gantry workflow ...`: submit, validate, list, query, logs, events, cancel, spec.
//!
//! Owns the verbs' flags (OSMO's names); their tables are `render`'s.
//!
//! Invariants: `-t json` prints the response unchanged; logs, events and spec are
//! text/plain in the API and are passed through byte for byte in both formats;
//! log chunks reach stdout as they arrive (flushed), never buffered whole; a
//! spec with `files[].localpath` entries has them read into `contents` before
//! it is sent (`local_files`), any other spec is sent as written.

mod local_files;
mod render;

pub use render::{render_list, render_query, render_submit};

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use super::client::{encode_segment, Client, ListQuery, LogQuery, SubmitRequest};
use super::error::ClientError;
use super::output::{self, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};
use crate::log_chunk::render_line;
use gantry_storage::Priority;

// Doc comments here are clap help text, where `<name>` is no HTML.
#[allow(rustdoc::invalid_html_tags)]
#[derive(clap::Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Submit a workflow spec file to a pool, or an earlier workflow's spec by its ID
    Submit {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow spec (YAML, OSMO version 2), or the ID of a workflow whose spec to submit again
        file: PathBuf,
        /// Pool to run in (default: your profile's pool, `gantry profile set pool NAME`)
        #[arg(short = 'p', long)]
        pool: Option<String>,
        /// Template variable (Jinja), parsed as YAML; repeatable
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<String>,
        /// Template variable kept as a string; repeatable
        #[arg(long = "set-string", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set_string: Vec<String>,
        /// Environment variable for every task; repeatable
        #[arg(long = "set-env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set_env: Vec<String>,
        /// Render and validate only; prints the expanded spec
        #[arg(long)]
        dry_run: bool,
        /// Scheduling priority: HIGH, NORMAL or LOW
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
        /// A label over the spec's `workflow.labels`; repeatable
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        labels: Vec<String>,
    },
    /// Re-run a failed workflow's groups that did not complete, as a new workflow
    Restart {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow ID (<name>-<n>)
        id: String,
        /// Pool to run in (default: the workflow's own)
        #[arg(short = 'p', long)]
        pool: Option<String>,
    },
    /// Check a workflow spec without submitting it
    Validate {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow spec (YAML, OSMO version 2)
        file: PathBuf,
        /// Pool to validate against (default: your profile's pool)
        #[arg(short = 'p', long)]
        pool: Option<String>,
        /// Template variable (Jinja), parsed as YAML; repeatable
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<String>,
        /// Template variable kept as a string; repeatable
        #[arg(long = "set-string", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set_string: Vec<String>,
    },
    /// List workflows
    List {
        #[command(flatten)]
        output: FormatArg,
        /// Only workflows with this status (e.g. RUNNING); repeatable
        #[arg(short = 's', long = "status", value_name = "STATUS", value_parser = parse_upper)]
        statuses: Vec<String>,
        /// How many workflows to show
        #[arg(short = 'c', long, default_value_t = 20)]
        count: u64,
        /// How many matching workflows to skip
        #[arg(short = 'f', long, default_value_t = 0)]
        offset: u64,
        /// Only workflows whose name contains this
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Only workflows in this pool; repeatable
        #[arg(short = 'p', long = "pool", value_name = "POOL")]
        pools: Vec<String>,
        /// Only workflows these users submitted (default: your own)
        #[arg(short = 'u', long = "user", value_name = "USER", num_args = 1.., conflicts_with = "all_users")]
        users: Vec<String>,
        /// Workflows of every user
        #[arg(short = 'a', long = "all-users")]
        all_users: bool,
        /// Only workflows submitted on or after this day (your time zone)
        #[arg(long = "submitted-after", value_name = "YYYY-MM-DD", value_parser = parse_day)]
        submitted_after: Option<chrono::NaiveDate>,
        /// Only workflows submitted before this day (your time zone)
        #[arg(long = "submitted-before", value_name = "YYYY-MM-DD", value_parser = parse_day)]
        submitted_before: Option<chrono::NaiveDate>,
        /// Only workflows carrying any of these tags
        #[arg(long = "tags", value_name = "TAG", num_args = 1..)]
        tags: Vec<String>,
        /// Only workflows of these priorities (HIGH, NORMAL, LOW)
        #[arg(long = "priority", value_name = "PRIORITY", num_args = 1.., value_parser = parse_upper)]
        priorities: Vec<String>,
        /// Only workflows whose label KEY matches SELECTOR (a value, `*`
        /// wildcards, `(a|b)` alternatives); repeatable, all must match
        #[arg(long = "label", value_name = "KEY=SELECTOR")]
        labels: Vec<String>,
        /// Only workflows without label KEY; repeatable
        #[arg(long = "no-label", value_name = "KEY")]
        no_labels: Vec<String>,
        /// Order by submit time
        #[arg(
            short = 'o',
            long,
            value_enum,
            ignore_case = true,
            default_value = "asc"
        )]
        order: ListOrder,
    },
    /// Show a workflow's status, groups and tasks
    Query {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow ID (<name>-<n>)
        id: String,
    },
    /// Print a workflow's logs, following them while it runs
    Logs {
        /// Workflow ID (<name>-<n>)
        id: String,
        /// Only this task's logs
        #[arg(short = 't', long)]
        task: Option<String>,
        /// Only the last N lines
        #[arg(short = 'n', long = "last-n-lines", value_name = "N")]
        last_n_lines: Option<u64>,
        /// Only this retry of the task
        #[arg(short = 'r', long = "retry-id", value_name = "RETRY")]
        retry_id: Option<u32>,
        /// The last lines of failed tasks only
        #[arg(long)]
        error: bool,
    },
    /// Print a workflow's events (phase changes of its tasks, groups and itself)
    Events {
        /// Workflow ID (<name>-<n>)
        id: String,
        /// Only this task's events
        #[arg(short = 't', long)]
        task: Option<String>,
        /// Only this retry of the task
        #[arg(short = 'r', long = "retry-id", value_name = "RETRY")]
        retry_id: Option<u32>,
    },
    /// Cancel a workflow
    Cancel {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow IDs (<name>-<n>); each is cancelled, one failing does
        /// not stop the others
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        /// Reason, recorded with the cancellation
        #[arg(short = 'm', long)]
        message: Option<String>,
        /// Cancel (re-run cleanup) even if the workflow already finished
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Forward local TCP ports to ports of a running task (one session per connection)
    PortForward(super::port_forward::PortForwardArgs),
    /// Run a command inside a running task (a terminal when this one is); exits with its code
    Exec(super::exec::ExecArgs),
    /// Copy a directory tree to or from a running task with rsync (only what changed)
    Rsync {
        #[command(subcommand)]
        command: super::rsync::RsyncCommand,
    },
    /// rsync's remote shell (used by `workflow rsync`)
    #[command(name = "rsync-shell", hide = true)]
    RsyncShell(super::rsync::RsyncShellArgs),
    /// Print a workflow's spec
    Spec {
        #[command(flatten)]
        output: FormatArg,
        /// Workflow ID (<name>-<n>)
        id: String,
        /// The spec as submitted, before template rendering
        #[arg(long)]
        template: bool,
    },
}

impl WorkflowCommand {
    /// The verb's `-t` output format (logs are always text).
    pub fn format(&self) -> OutputFormat {
        match self {
            WorkflowCommand::Submit { output, .. }
            | WorkflowCommand::Restart { output, .. }
            | WorkflowCommand::Validate { output, .. }
            | WorkflowCommand::List { output, .. }
            | WorkflowCommand::Query { output, .. }
            | WorkflowCommand::Cancel { output, .. }
            | WorkflowCommand::Spec { output, .. } => output.format,
            WorkflowCommand::Logs { .. }
            | WorkflowCommand::Events { .. }
            | WorkflowCommand::PortForward(_)
            | WorkflowCommand::Exec(_)
            | WorkflowCommand::Rsync { .. }
            | WorkflowCommand::RsyncShell(_) => OutputFormat::Text,
        }
    }
}

/// OSMO's `WorkflowPriority`, case-insensitive.
fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse()
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum ListOrder {
    Asc,
    Desc,
}

/// Rejects `--set foo` early with a clear message instead of a server 400.
fn parse_key_value(raw: &str) -> Result<String, String> {
    match raw.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(raw.to_owned()),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

/// `--submitted-after/--submitted-before`: a day, as OSMO's CLI takes it.
fn parse_day(raw: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a day as YYYY-MM-DD, got {raw:?}"))
}

/// Midnight of `day` in this machine's time zone, in UTC, as the API
/// takes times (OSMO's CLI sends the same).
fn local_midnight_utc(day: chrono::NaiveDate) -> String {
    use chrono::TimeZone;
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    let utc = match chrono::Local.from_local_datetime(&midnight).earliest() {
        Some(local) => local.naive_utc(),
        // A day that starts in a gap of the zone's clock: take it as UTC.
        None => midnight,
    };
    utc.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Statuses are upper case in the API; accept `-s running` too.
fn parse_upper(raw: &str) -> Result<String, String> {
    Ok(raw.trim().to_ascii_uppercase())
}

/// The pool given, else the caller's profile's default pool (its saved
/// one, or the first it may submit to), as OSMO's CLI picks it.
async fn pool_or_default(client: &Client, pool: Option<String>) -> anyhow::Result<String> {
    if let Some(pool) = pool {
        return Ok(pool);
    }
    let profile = client
        .call(reqwest::Method::GET, "/api/profile/settings", &[], None)
        .await?;
    profile["profile"]["pool"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no default pool: you may submit to no pool; ask an admin for a pool's role, or pass --pool"
            )
        })
}

pub async fn run_workflow(args: &ClientArgs, command: WorkflowCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let format = command.format();
    let json = format == OutputFormat::Json;
    match command {
        WorkflowCommand::Submit {
            file,
            pool,
            set,
            set_string,
            set_env,
            dry_run,
            priority,
            labels,
            ..
        } => {
            let pool = pool_or_default(&client, pool).await?;
            // OSMO's CLI: a word that is no file but a workflow ID submits
            // that workflow's spec again.
            if let Some(id) = earlier_workflow_id(&file) {
                if dry_run || !set.is_empty() || !set_string.is_empty() || !set_env.is_empty() {
                    anyhow::bail!(
                        "{id} is a workflow ID: its spec is submitted as it ran, so --dry-run, --set, --set-string and --set-env do not apply"
                    );
                }
                let response = with_spinner(
                    format,
                    "Submitting workflow",
                    client.resubmit(&pool, &id, priority.map(Priority::as_str), &labels),
                )
                .await?;
                if json {
                    return output::print_json(&response);
                }
                print_warnings(&response);
                print!("{}", render_submit(&response));
                return Ok(());
            }
            let file_text = read_spec(&file)?;
            let inlined = local_files::inline(&file, &file_text, &set, &set_string)?;
            print_local_warnings(inlined.as_ref());
            let request = SubmitRequest {
                pool: &pool,
                file_text: inlined.as_ref().map_or(&file_text, |i| &i.text),
                set: &set,
                set_string: &set_string,
                set_env: &set_env,
                priority: priority.map(Priority::as_str),
                labels: &labels,
                dry_run,
                validation_only: false,
            };
            let message = if dry_run {
                "Rendering workflow"
            } else {
                "Submitting workflow"
            };
            let response = with_spinner(
                format,
                message,
                send(&client, &request, inlined.as_ref(), &file_text),
            )
            .await?;
            if json {
                return output::print_json(&response);
            }
            print_warnings(&response);
            if dry_run {
                print_text(response.get("spec").and_then(Value::as_str).unwrap_or(""));
            } else {
                print!("{}", render_submit(&response));
            }
        }
        WorkflowCommand::Restart { id, pool, .. } => {
            let pool = match pool {
                Some(pool) => pool,
                None => client
                    .query(&id)
                    .await?
                    .get("pool")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
            };
            let response =
                with_spinner(format, "Restarting workflow", client.restart(&pool, &id)).await?;
            if json {
                return output::print_json(&response);
            }
            print_warnings(&response);
            println!("Workflow {id} restarted.");
            print!("{}", render_submit(&response));
        }
        WorkflowCommand::Validate {
            file,
            pool,
            set,
            set_string,
            ..
        } => {
            let pool = pool_or_default(&client, pool).await?;
            let file_text = read_spec(&file)?;
            let inlined = local_files::inline(&file, &file_text, &set, &set_string)?;
            print_local_warnings(inlined.as_ref());
            let request = SubmitRequest {
                pool: &pool,
                file_text: inlined.as_ref().map_or(&file_text, |i| &i.text),
                set: &set,
                set_string: &set_string,
                set_env: &[],
                priority: None,
                labels: &[],
                dry_run: false,
                validation_only: true,
            };
            let response = with_spinner(
                format,
                "Validating workflow",
                send(&client, &request, inlined.as_ref(), &file_text),
            )
            .await?;
            if json {
                return output::print_json(&response);
            }
            print_warnings(&response);
            print_text(
                response
                    .get("logs")
                    .and_then(Value::as_str)
                    .unwrap_or("Workflow validation succeeded."),
            );
        }
        WorkflowCommand::List {
            statuses,
            count,
            offset,
            name,
            pools,
            users,
            all_users,
            submitted_after,
            submitted_before,
            tags,
            priorities,
            labels,
            no_labels,
            order,
            ..
        } => {
            if let (Some(after), Some(before)) = (submitted_after, submitted_before) {
                if after > before {
                    anyhow::bail!(
                        "--submitted-before ({before}) needs to be later than --submitted-after ({after})"
                    );
                }
            }
            let query = ListQuery {
                statuses,
                name,
                pools,
                users,
                all_users,
                tags,
                priorities,
                labels,
                no_labels,
                submitted_after: submitted_after.map(local_midnight_utc),
                submitted_before: submitted_before.map(local_midnight_utc),
                offset,
                limit: count,
                order_desc: order == ListOrder::Desc,
            };
            let response = with_spinner(format, "Listing workflows", client.list(&query)).await?;
            if json {
                return output::print_json(&response);
            }
            print!("{}", render_list(&response, &chrono::Local));
            if response.get("more_entries").and_then(Value::as_bool) == Some(true) {
                eprintln!(
                    "More workflows match; use --offset {} to see the next page.",
                    offset + count
                );
            }
        }
        WorkflowCommand::Query { id, .. } => {
            let response = with_spinner(format, "Querying workflow", client.query(&id)).await?;
            if json {
                return output::print_json(&response);
            }
            print!("{}", render_query(&response, &chrono::Local));
        }
        WorkflowCommand::Logs {
            id,
            task,
            last_n_lines,
            retry_id,
            error,
        } => {
            let query = LogQuery {
                task: task.as_deref(),
                last_n_lines,
                retry_id,
                errors_only: error,
            };
            stream_logs(&client, &id, &query).await?
        }
        WorkflowCommand::Cancel {
            ids,
            message,
            force,
            ..
        } => {
            // As OSMO's CLI: every ID is tried, each answer printed as it
            // comes; unlike it, the exit status says whether any failed.
            let mut failed = Vec::new();
            for id in &ids {
                let cancelled = with_spinner(
                    format,
                    "Cancelling workflow",
                    client.cancel(id, message.as_deref(), force),
                )
                .await;
                let response = match cancelled {
                    Ok(response) => response,
                    Err(error) if ids.len() == 1 => return Err(error.into()),
                    Err(error) => {
                        eprintln!("Workflow cancelation failed for workflow {id}: {error}");
                        failed.push(id.as_str());
                        continue;
                    }
                };
                if json {
                    output::print_json(&response)?;
                    continue;
                }
                let name = response.get("name").and_then(Value::as_str).unwrap_or(id);
                println!("Cancel job for workflow {name} is submitted.");
            }
            if !failed.is_empty() {
                anyhow::bail!(
                    "{} of {} cancellations failed: {}",
                    failed.len(),
                    ids.len(),
                    failed.join(", ")
                );
            }
        }
        WorkflowCommand::Events { id, task, retry_id } => {
            let text = client.events(&id, task.as_deref(), retry_id).await?;
            print_text(&text);
        }
        WorkflowCommand::PortForward(forward) => super::port_forward::run(args, forward).await?,
        WorkflowCommand::Exec(exec) => super::exec::run(args, exec).await?,
        WorkflowCommand::Rsync { command } => super::rsync::run(args, command).await?,
        WorkflowCommand::RsyncShell(shell) => super::rsync::run_shell(args, shell).await?,
        WorkflowCommand::Spec { id, template, .. } => {
            let spec = with_spinner(format, "Fetching spec", client.spec(&id, template)).await?;
            print_text(&spec);
        }
    }
    Ok(())
}

/// Submits `request`; a spec whose local files were read goes with the
/// spec as written as its template (OSMO's `uploaded_templated_spec`).
async fn send(
    client: &Client,
    request: &SubmitRequest<'_>,
    inlined: Option<&local_files::Inlined>,
    written: &str,
) -> Result<Value, ClientError> {
    if inlined.is_none() {
        return client.submit_request(request).await;
    }
    let path = format!("/api/pool/{}/workflow", encode_segment(request.pool));
    let mut query: Vec<(&str, String)> = vec![
        ("dry_run", request.dry_run.to_string()),
        ("validation_only", request.validation_only.to_string()),
    ];
    if let Some(priority) = request.priority {
        query.push(("priority", priority.to_owned()));
    }
    query.extend(request.set_env.iter().map(|kv| ("env_vars", kv.clone())));
    let body = serde_json::json!({
        "file": request.file_text,
        "set_variables": request.set,
        "set_string_variables": request.set_string,
        "uploaded_templated_spec": written,
    });
    client
        .call(reqwest::Method::POST, &path, &query, Some(&body))
        .await
}

/// `path` as a workflow ID (`<name>-<n>`) when no file of that name exists.
fn earlier_workflow_id(path: &std::path::Path) -> Option<String> {
    if path.exists() {
        return None;
    }
    let text = path.to_str()?;
    let (name, number) = text.rsplit_once('-')?;
    let is_id = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit());
    is_id.then(|| text.to_string())
}

fn read_spec(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read workflow spec {}", path.display()))
}

/// The warnings of a spec whose local files were read (e.g. repeated keys)
/// go to stderr before sending: the server no longer sees what they are
/// about.
fn print_local_warnings(inlined: Option<&local_files::Inlined>) {
    for warning in inlined.into_iter().flat_map(|i| &i.warnings) {
        eprintln!("warning: {warning}");
    }
}

/// Prints `text` to stdout, adding a final newline only if it lacks one.
fn print_text(text: &str) {
    if text.ends_with('\n') || text.is_empty() {
        print!("{text}");
    } else {
        println!("{text}");
    }
}

/// Server warnings (e.g. clamped timeouts) go to stderr so stdout stays the result.
fn print_warnings(response: &Value) {
    for warning in response
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("warning: {warning}");
    }
}

/// Copies the log stream to stdout chunk by chunk. A closed stdout (`| head`)
/// ends the command quietly, like other Unix tools.
async fn stream_logs(client: &Client, id: &str, query: &LogQuery<'_>) -> anyhow::Result<()> {
    let mut write_error = None;
    let mut write = |bytes: &[u8]| {
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    if query.errors_only {
        client.logs_query(id, query, write).await?;
    } else {
        super::follow::follow(client, id, query, |line| {
            write(render_line(line).as_bytes())
        })
        .await?;
    }
    match write_error {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write logs to stdout"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_flags_are_checked() {
        assert!(parse_key_value("a=1").is_ok());
        assert!(parse_key_value("a==").is_ok());
        assert!(parse_key_value("a").is_err());
        assert!(parse_key_value("=1").is_err());
        assert_eq!(parse_upper(" running").unwrap(), "RUNNING");
    }
}
