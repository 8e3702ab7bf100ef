//! `gantry task list`: OSMO's `osmo task list` (`GET /api/task`) with its
//! flags — statuses (default the four live ones), workflow ID substring,
//! users or all users, pools or nodes, start dates, count and offset,
//! order, `-v` (requests per task), `-S` (summed per user, pool and
//! priority), `-W` (summed per workflow), priority.
//!
//! Invariants: the query parameters are the ones OSMO's CLI sends for the
//! same flags (without `-p`, all pools); `-t json` prints the API's JSON
//! unchanged; rendering is pure (time zone passed in), so tables are
//! tested without a server.

use chrono::TimeZone;
use reqwest::Method;
use serde_json::Value;

use super::client::Client;
use super::output::{self, format_time, text_field, with_spinner};
use super::{ClientArgs, FormatArg, OutputFormat};

/// The statuses OSMO's CLI lets `--status` name.
const STATUSES: [&str; 18] = [
    "WAITING",
    "PROCESSING",
    "SCHEDULING",
    "INITIALIZING",
    "RUNNING",
    "FAILED",
    "COMPLETED",
    "FAILED_EXEC_TIMEOUT",
    "FAILED_START_ERROR",
    "FAILED_START_TIMEOUT",
    "FAILED_SERVER_ERROR",
    "FAILED_BACKEND_ERROR",
    "FAILED_QUEUE_TIMEOUT",
    "FAILED_IMAGE_PULL",
    "FAILED_UPSTREAM",
    "FAILED_EVICTED",
    "FAILED_PREEMPTED",
    "FAILED_CANCELED",
];

/// Most tasks one call shows (OSMO's limit).
const COUNT_MAX: u64 = 1000;

#[derive(clap::Subcommand, Debug)]
pub enum TaskCommand {
    /// List tasks of every workflow, with filters
    List(ListArgs),
}

impl TaskCommand {
    pub fn format(&self) -> OutputFormat {
        match self {
            TaskCommand::List(args) => args.output.format,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: FormatArg,
    /// Only tasks with these statuses
    #[arg(
        short = 's',
        long = "status",
        value_name = "STATUS",
        num_args = 1..,
        ignore_case = true,
        value_parser = clap::builder::PossibleValuesParser::new(STATUSES),
        default_values = ["PROCESSING", "SCHEDULING", "INITIALIZING", "RUNNING"],
    )]
    pub statuses: Vec<String>,
    /// Only tasks of workflows whose ID contains this
    #[arg(short = 'w', long = "workflow-id")]
    pub workflow_id: Option<String>,
    /// Only tasks of these users (default: your own)
    #[arg(short = 'u', long = "user", value_name = "USER", num_args = 1.., conflicts_with = "all_users")]
    pub users: Vec<String>,
    /// Tasks of every user
    #[arg(short = 'a', long = "all-users")]
    pub all_users: bool,
    /// Only tasks in these pools (default: every pool)
    #[arg(short = 'p', long = "pool", value_name = "POOL", num_args = 1.., conflicts_with = "nodes")]
    pub pools: Vec<String>,
    /// Only tasks that ran on these nodes
    #[arg(short = 'n', long = "node", value_name = "NODE", num_args = 1..)]
    pub nodes: Vec<String>,
    /// Only tasks started on or after this day (YYYY-MM-DD, local time), or not started
    #[arg(long = "started-after", value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub started_after: Option<chrono::NaiveDate>,
    /// Only tasks started before this day (YYYY-MM-DD, local time)
    #[arg(long = "started-before", value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub started_before: Option<chrono::NaiveDate>,
    /// How many tasks to show (at most 1000)
    #[arg(short = 'c', long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// How many matching tasks to skip
    #[arg(short = 'f', long, default_value_t = 0)]
    pub offset: u64,
    /// asc: the latest at the bottom; desc: the latest at the top
    #[arg(
        short = 'o',
        long,
        value_enum,
        ignore_case = true,
        default_value = "asc"
    )]
    pub order: super::workflow::ListOrder,
    /// Also show each task's storage, CPU, memory and GPU request
    #[arg(short = 'v', long, conflicts_with = "summary")]
    pub verbose: bool,
    /// Requests summed per user, pool and priority
    #[arg(short = 'S', long)]
    pub summary: bool,
    /// Requests summed per workflow
    #[arg(short = 'W', long = "aggregate-by-workflow")]
    pub aggregate_by_workflow: bool,
    /// Only tasks of workflows with these priorities (HIGH, NORMAL, LOW)
    #[arg(long, value_name = "PRIORITY", num_args = 1.., value_parser = parse_priority)]
    pub priority: Vec<String>,
}

fn parse_date(text: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("'{text}' is not a date in the form YYYY-MM-DD"))
}

fn parse_priority(text: &str) -> Result<String, String> {
    text.parse::<gantry_storage::Priority>()
        .map(|priority| priority.as_str().to_string())
}

/// Midnight of `date` in `tz`, as the API's naive UTC time (what OSMO's CLI sends).
fn midnight_utc<Tz: TimeZone>(date: chrono::NaiveDate, tz: &Tz) -> String {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    let utc = tz
        .from_local_datetime(&midnight)
        .earliest()
        .map(|time| time.naive_utc())
        .unwrap_or(midnight);
    utc.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The query OSMO's CLI sends for these flags.
pub fn query<Tz: TimeZone>(
    args: &ListArgs,
    tz: &Tz,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    if let (Some(after), Some(before)) = (args.started_after, args.started_before) {
        if after > before {
            anyhow::bail!(
                "--started-before ({before}) needs to be later than --started-after ({after})"
            );
        }
    }
    let mut query: Vec<(&str, String)> = vec![
        ("limit", args.count.min(COUNT_MAX).to_string()),
        ("offset", args.offset.to_string()),
        ("all_users", args.all_users.to_string()),
    ];
    if let Some(id) = &args.workflow_id {
        query.push(("workflow_id", id.clone()));
    }
    query.extend(args.nodes.iter().map(|node| ("nodes", node.clone())));
    query.extend(args.users.iter().map(|user| ("users", user.clone())));
    query.extend(
        args.statuses
            .iter()
            .map(|status| ("statuses", status.to_ascii_uppercase())),
    );
    let order = match args.order {
        super::workflow::ListOrder::Asc => "ASC",
        super::workflow::ListOrder::Desc => "DESC",
    };
    query.push(("order", order.to_string()));
    if args.pools.is_empty() {
        query.push(("all_pools", "true".to_string()));
    } else {
        query.extend(args.pools.iter().map(|pool| ("pools", pool.clone())));
    }
    if args.summary {
        query.push(("summary", "true".to_string()));
    }
    if args.aggregate_by_workflow {
        query.push(("aggregate_by_workflow", "true".to_string()));
    }
    query.extend(args.priority.iter().map(|p| ("priority", p.clone())));
    if let Some(after) = args.started_after {
        query.push(("started_after", midnight_utc(after, tz)));
    }
    if let Some(before) = args.started_before {
        query.push(("started_before", midnight_utc(before, tz)));
    }
    Ok(query)
}

pub async fn run_task(args: &ClientArgs, command: TaskCommand) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let TaskCommand::List(list) = command;
    let query = query(&list, &chrono::Local)?;
    let response = with_spinner(
        args.format,
        "Listing tasks",
        client.call(Method::GET, "/api/task", &query, None),
    )
    .await?;
    if args.format == OutputFormat::Json {
        return output::print_json(&response);
    }
    let text = if list.summary {
        render_summaries(&response, false)
    } else if list.aggregate_by_workflow {
        render_summaries(&response, true)
    } else {
        render_tasks(&response, list.verbose, &chrono::Local)
    };
    print!("{text}");
    Ok(())
}

const REQUESTS: [(&str, &str); 4] = [
    ("Storage (GiB)", "storage"),
    ("CPU", "cpu"),
    ("Memory (GiB)", "memory"),
    ("GPU", "gpu"),
];

/// A request amount as a cell: whole numbers without a fraction.
fn amount(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The request cells of `entry`, added to `sums`.
fn request_cells(entry: &Value, sums: &mut [f64; 4]) -> Vec<String> {
    REQUESTS
        .iter()
        .zip(sums.iter_mut())
        .map(|((_, key), sum)| {
            let value = entry.get(*key).and_then(Value::as_f64).unwrap_or(0.0);
            *sum += value;
            amount(value)
        })
        .collect()
}

fn total_row(leading: usize, sums: &[f64; 4]) -> Vec<String> {
    let mut row = vec![String::new(); leading.max(1)];
    row[0] = "Total".to_string();
    row.extend(sums.iter().map(|sum| amount(*sum)));
    row
}

/// `ListTaskResponse` as a table (with `verbose`, each task's requests and
/// their total).
pub fn render_tasks<Tz: TimeZone>(response: &Value, verbose: bool, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let tasks = response
        .get("tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if tasks.is_empty() {
        return "There are no tasks to view.\n".to_owned();
    }
    let mut headers = vec![
        "User",
        "Workflow ID",
        "Task",
        "Retry",
        "Status",
        "Pool",
        "Priority",
        "Node",
        "Start Time",
    ];
    let leading = headers.len();
    if verbose {
        headers.extend(REQUESTS.iter().map(|(header, _)| *header));
    }
    let mut table = output::table(&headers);
    let mut sums = [0.0; 4];
    for task in tasks {
        let mut row = vec![
            text_field(task, "user"),
            text_field(task, "workflow_id"),
            text_field(task, "task_name"),
            text_field(task, "retry_id"),
            text_field(task, "status"),
            text_field(task, "pool"),
            text_field(task, "priority"),
            text_field(task, "node"),
            format_time(task.get("start_time"), tz),
        ];
        if verbose {
            row.extend(request_cells(task, &mut sums));
        }
        table.add_row(row);
    }
    if verbose {
        table.add_row(total_row(leading, &sums));
    }
    output::render_table(&table)
}

/// `ListTaskSummaryResponse` (or, `by_workflow`, `ListTaskAggregatedResponse`)
/// as a table with a total row.
pub fn render_summaries(response: &Value, by_workflow: bool) -> String {
    let summaries = response
        .get("summaries")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if summaries.is_empty() {
        return if by_workflow {
            "There are no workflows to view.\n"
        } else {
            "There are no summaries to view.\n"
        }
        .to_owned();
    }
    let mut headers = vec!["User"];
    if by_workflow {
        headers.push("Workflow ID");
    }
    headers.extend(["Pool", "Priority"]);
    let leading = headers.len();
    headers.extend(REQUESTS.iter().map(|(header, _)| *header));
    let mut table = output::table(&headers);
    let mut sums = [0.0; 4];
    for entry in summaries {
        let mut row = vec![text_field(entry, "user")];
        if by_workflow {
            row.push(text_field(entry, "workflow_id"));
        }
        row.extend([text_field(entry, "pool"), text_field(entry, "priority")]);
        row.extend(request_cells(entry, &mut sums));
        table.add_row(row);
    }
    table.add_row(total_row(leading, &sums));
    output::render_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    /// As main.rs wires it: the shared client flags beside the verb's.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TaskCommand,
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<ListArgs, clap::Error> {
        let mut all = vec!["gantry", "list"];
        all.extend_from_slice(args);
        TestCli::try_parse_from(all).map(|cli| {
            let TaskCommand::List(list) = cli.command;
            list
        })
    }

    fn pairs(query: &[(&str, String)], key: &str) -> Vec<String> {
        query
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[test]
    fn defaults_send_what_osmos_cli_sends() {
        let args = parse(&[]).unwrap();
        let sent = query(&args, &chrono::Utc).unwrap();
        assert_eq!(pairs(&sent, "limit"), ["20"]);
        assert_eq!(pairs(&sent, "offset"), ["0"]);
        assert_eq!(pairs(&sent, "all_users"), ["false"]);
        assert_eq!(pairs(&sent, "all_pools"), ["true"]);
        assert_eq!(pairs(&sent, "order"), ["ASC"]);
        assert_eq!(
            pairs(&sent, "statuses"),
            ["PROCESSING", "SCHEDULING", "INITIALIZING", "RUNNING"]
        );
        assert!(pairs(&sent, "pools").is_empty() && pairs(&sent, "summary").is_empty());
    }

    #[test]
    fn flags_as_osmo_spells_them() {
        let args = parse(&[
            "-s",
            "running",
            "COMPLETED",
            "-w",
            "train",
            "-u",
            "alice",
            "bob",
            "-p",
            "gpu",
            "--started-after",
            "2023-05-02",
            "--started-before",
            "2023-05-04",
            "-c",
            "5000",
            "-f",
            "3",
            "-o",
            "DESC",
            "-S",
            "-W",
            "--priority",
            "high",
            "low",
            "-t",
            "json",
        ])
        .unwrap();
        assert_eq!(args.output.format, OutputFormat::Json);
        let plus2 = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        let sent = query(&args, &plus2).unwrap();
        assert_eq!(pairs(&sent, "statuses"), ["RUNNING", "COMPLETED"]);
        assert_eq!(pairs(&sent, "workflow_id"), ["train"]);
        assert_eq!(pairs(&sent, "users"), ["alice", "bob"]);
        assert_eq!(pairs(&sent, "pools"), ["gpu"]);
        assert!(pairs(&sent, "all_pools").is_empty());
        assert_eq!(pairs(&sent, "limit"), ["1000"]);
        assert_eq!(pairs(&sent, "offset"), ["3"]);
        assert_eq!(pairs(&sent, "order"), ["DESC"]);
        assert_eq!(pairs(&sent, "summary"), ["true"]);
        assert_eq!(pairs(&sent, "aggregate_by_workflow"), ["true"]);
        assert_eq!(pairs(&sent, "priority"), ["HIGH", "LOW"]);
        // Local midnight (UTC+2) in UTC.
        assert_eq!(pairs(&sent, "started_after"), ["2023-05-01T22:00:00"]);
        assert_eq!(pairs(&sent, "started_before"), ["2023-05-03T22:00:00"]);
        let args = parse(&["-a", "-n", "node-1", "node-2"]).unwrap();
        let sent = query(&args, &chrono::Utc).unwrap();
        assert_eq!(pairs(&sent, "all_users"), ["true"]);
        assert_eq!(pairs(&sent, "nodes"), ["node-1", "node-2"]);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["-s", "SLEEPING"][..],
            &["-u", "alice", "-a"],
            &["-p", "gpu", "-n", "node-1"],
            &["-v", "-S"],
            &["-c", "0"],
            &["--started-after", "May 3rd"],
            &["--priority", "urgent"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let args = parse(&[
            "--started-after",
            "2023-05-04",
            "--started-before",
            "2023-05-02",
        ])
        .unwrap();
        let error = query(&args, &chrono::Utc).unwrap_err();
        assert!(error.to_string().contains("--started-before"), "{error}");
    }

    #[test]
    fn tables() {
        let response = json!({"tasks": [{
            "user": "alice", "workflow_id": "train-1", "task_name": "master", "retry_id": 1,
            "status": "RUNNING", "pool": "default", "priority": "NORMAL", "node": null,
            "start_time": "2026-12-06T07:50:53.571000",
            "storage": 1.5, "cpu": 2, "memory": 4.0, "gpu": 1,
        }]});
        let row = "alice  train-1      master  1      RUNNING  default  NORMAL    -     2026-12-06 07:50:53";
        assert_eq!(
            render_tasks(&response, false, &chrono::Utc),
            format!(
                "User   Workflow ID  Task    Retry  Status   Pool     Priority  Node  Start Time\n{}\n{row}\n",
                "-".repeat(row.len())
            )
        );
        let verbose = render_tasks(&response, true, &chrono::Utc);
        assert!(
            verbose.contains("Storage (GiB)  CPU  Memory (GiB)  GPU"),
            "{verbose}"
        );
        assert!(
            verbose.lines().last().unwrap().starts_with("Total"),
            "{verbose}"
        );
        assert!(
            verbose
                .lines()
                .last()
                .unwrap()
                .ends_with("1.50           2    4             1"),
            "{verbose}"
        );
        assert_eq!(
            render_tasks(&json!({"tasks": []}), false, &chrono::Utc),
            "There are no tasks to view.\n"
        );
        let summaries = json!({"summaries": [
            {"user": "alice", "pool": "default", "priority": "NORMAL", "workflow_id": "a-1",
             "storage": 0.0, "cpu": 1, "memory": 0.5, "gpu": 0},
            {"user": "bob", "pool": "default", "priority": "HIGH", "workflow_id": "b-1",
             "storage": 0.0, "cpu": 3, "memory": 0.5, "gpu": 2},
        ]});
        let text = render_summaries(&summaries, false);
        assert!(
            text.starts_with("User   Pool     Priority  Storage"),
            "{text}"
        );
        assert!(!text.contains("a-1"), "{text}");
        let total = text.lines().last().unwrap();
        assert!(
            total.starts_with("Total") && total.ends_with("4    1             2"),
            "{text}"
        );
        let text = render_summaries(&summaries, true);
        assert!(
            text.contains("Workflow ID") && text.contains("b-1"),
            "{text}"
        );
        assert_eq!(
            render_summaries(&json!({"summaries": []}), true),
            "There are no workflows to view.\n"
        );
        assert_eq!(
            render_summaries(&json!({"summaries": []}), false),
            "There are no summaries to view.\n"
        );
    }
}
