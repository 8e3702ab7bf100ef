//! CLI verbs that talk to a Gantry server over its OSMO-compatible REST API.
//!
//! Owns the clap definitions of `workflow`, `task`, `pool`, `resource`, `token`,
//! `login`, `config` and `version` and their output; `main.rs` only parses
//! and dispatches. Submodules: `config` (where the server and token come
//! from, the login file), `client` (HTTP, failover, typed errors), `output`
//! (JSON, tables, spinner), and the verbs: `workflow`, `task`, `pool` (also
//! `resource`), `token` (also `login`), `configs`, `cluster`.
//!
//! Invariants: with `-t json` a verb prints the API's JSON unchanged and nothing
//! else on stdout; errors are returned (never printed here) so the caller prints
//! `error: <message>` to stderr and exits non-zero.

pub mod client;
pub mod cluster;
pub mod config;
pub mod configs;
pub mod credential;
pub mod error;
pub mod exec;
pub mod follow;
pub mod output;
pub mod pool;
pub mod port_forward;
pub mod profile;
pub mod rsync;
mod session_client;
pub mod sign_in;
pub mod task;
pub mod token;
pub mod user;
pub mod workflow;

#[cfg(test)]
mod client_tests;

pub use client::Client;
pub use cluster::{run_cluster, run_snapshot, ClusterCommand, SnapshotCommand};
pub use configs::{run_config, ConfigCommand};
pub use credential::{run_credential, CredentialCommand};
pub use pool::{run_pool, run_resource, PoolCommand, ResourceCommand};
pub use profile::{run_profile, ProfileCommand};
pub use task::{run_task, TaskCommand};
pub use token::{run_login, run_token, LoginArgs, TokenCommand};
pub use user::{run_user, UserCommand};
pub use workflow::{run_workflow, WorkflowCommand};

use serde_json::Value;

/// Options shared by every verb that talks to a server.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// Server URL(s); repeatable or comma-separated, tried in order on connect errors
    #[arg(long, env = "GANTRY_URL", global = true, value_delimiter = ',')]
    pub url: Vec<String>,
    /// CA certificate that signed the server's certificate (https URLs)
    #[arg(long, env = "GANTRY_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Output format, taken from the verb's own `-t` (see [`FormatArg`]).
    #[arg(skip = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// `-t/--format-type` of a verb. It is per verb, not global, because
/// `workflow logs -t TASK` (OSMO's spelling) takes `-t` for the task.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct FormatArg {
    /// Output format: human-readable text or the API's JSON
    #[arg(short = 't', long = "format-type", value_enum, default_value = "text")]
    pub format: OutputFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Whether to colour what goes to a stream (the logs on stderr): only when
/// it is a terminal, and never while `NO_COLOR` is set to anything
/// (<https://no-color.org>), so redirected output holds no escape codes.
pub fn colour_wanted(stream_is_terminal: bool) -> bool {
    colour_wanted_with(stream_is_terminal, std::env::var_os("NO_COLOR"))
}

fn colour_wanted_with(stream_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stream_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `gantry version`: the client's version, then the server's `/api/version`.
pub async fn run_version(args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    if args.format == OutputFormat::Json {
        return output::print_json(&client.version().await?);
    }
    // Print the client's version first so it shows even when no server answers.
    println!(
        "client version: {} ({})",
        env!("CARGO_PKG_VERSION"),
        crate::GIT_HASH
    );
    let version =
        output::with_spinner(args.format, "Fetching server version", client.version()).await?;
    println!("server version: {}", format_version(&version));
    Ok(())
}

/// OSMO's `Version {major, minor, revision, hash}` as `major.minor.revision (hash)`.
fn format_version(v: &Value) -> String {
    let part = |k: &str, default: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => default.to_owned(),
    };
    let mut text = format!(
        "{}.{}.{}",
        part("major", "?"),
        part("minor", "0"),
        part("revision", "0")
    );
    let hash = part("hash", "");
    if !hash.is_empty() {
        text.push_str(&format!(" ({hash})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use serde_json::json;

    /// Stand-in for main.rs's wiring, to check the clap definitions are valid
    /// together (no clashing short flags with the global `-t`).
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Subcommand, Debug)]
    enum TestCommand {
        #[command(subcommand)]
        Workflow(WorkflowCommand),
        #[command(subcommand)]
        Pool(PoolCommand),
        #[command(subcommand)]
        Token(TokenCommand),
        #[command(subcommand)]
        Config(ConfigCommand),
        #[command(subcommand)]
        Resource(ResourceCommand),
        Version,
    }

    #[test]
    fn clap_definitions_are_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_flags_parse_after_verbs() {
        let cli = TestCli::try_parse_from([
            "gantry",
            "workflow",
            "list",
            "-t",
            "json",
            "--url",
            "http://a:1,http://b:2",
            "-s",
            "running",
            "-c",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.client.url, vec!["http://a:1", "http://b:2"]);
        let TestCommand::Workflow(command) = cli.command else {
            panic!("not a workflow verb");
        };
        assert_eq!(command.format(), OutputFormat::Json);
        assert!(matches!(command, WorkflowCommand::List { count: 5, .. }));
    }

    #[test]
    fn logs_take_dash_t_as_the_task() {
        let cli = TestCli::try_parse_from([
            "gantry", "workflow", "logs", "wf-1", "-t", "train", "-n", "10",
        ])
        .unwrap();
        let TestCommand::Workflow(command) = cli.command else {
            panic!("not a workflow verb");
        };
        assert_eq!(command.format(), OutputFormat::Text);
        assert!(matches!(
            command,
            WorkflowCommand::Logs { task: Some(ref task), last_n_lines: Some(10), .. } if task == "train"
        ));
    }

    #[test]
    fn version_text() {
        let v = json!({"major": "6", "minor": "1", "revision": "2", "hash": "abc123"});
        assert_eq!(format_version(&v), "6.1.2 (abc123)");
        assert_eq!(format_version(&json!({"major": "1"})), "1.0.0");
    }
}

#[cfg(test)]
mod colour_tests {
    use super::colour_wanted_with;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour_wanted_with(true, None));
        assert!(!colour_wanted_with(false, None));
        assert!(!colour_wanted_with(true, Some("1".into())));
        assert!(!colour_wanted_with(false, Some("1".into())));
        // An empty NO_COLOR counts as unset (no-color.org).
        assert!(colour_wanted_with(true, Some("".into())));
    }
}
