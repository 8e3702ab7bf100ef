//! `GET /metrics` of real servers: after real workflows ran, the Prometheus
//! text holds every family of series with values that match what happened
//! (Raft indexes and term, proposals and fsyncs, API requests by route
//! template, workflows and tasks by status, operator traffic, log bytes),
//! and it needs no token.

mod common;

use common::DevServer;
use std::collections::BTreeMap;
use std::time::Duration;

const HELLO: &str =
    "workflow:\n  name: hello\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hello]\n";
const SLEEPER: &str = "workflow:\n  name: sleeper\n  tasks:\n  - name: s\n    image: ubuntu\n    command: [sleep, \"120\"]\n";

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus' text format (0.0.4): `name{k="v",...} value`.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line}"));
                (name.to_string(), parse_labels(body))
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} unquoted in {body}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {body}"),
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

struct Scrape(Vec<Sample>);

impl Scrape {
    fn get(url: &str) -> Scrape {
        let response = reqwest::blocking::get(format!("{url}/metrics")).expect("GET /metrics");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Scrape(parse(&response.text().unwrap()))
    }

    /// The one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

#[test]
fn metrics_reflect_the_workflows_that_ran() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let hello = api.submit_ok(HELLO);
    let done = api.wait_finished(&hello, Duration::from_secs(60));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let sleeper = api.submit_ok(SLEEPER);
    api.wait_task(&sleeper, "s", "RUNNING", Duration::from_secs(60));
    assert_eq!(api.get("/api/workflow/no-such-7").status, 404);

    let scrape = Scrape::get(&server.url);
    assert_eq!(
        scrape.value(
            "gantry_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Raft: a leader of a cluster of one, with its log applied.
    assert!(scrape.value("gantry_raft_term", &[]) >= 1.0);
    assert_eq!(scrape.value("gantry_raft_is_leader", &[]), 1.0);
    assert_eq!(scrape.value("gantry_raft_has_leader", &[]), 1.0);
    assert!(scrape.value("gantry_raft_leader_changes_total", &[]) >= 1.0);
    let applied = scrape.value("gantry_raft_applied_index", &[]);
    let committed = scrape.value("gantry_raft_commit_index", &[]);
    let last = scrape.value("gantry_raft_last_log_index", &[]);
    assert!(applied >= 5.0, "applied {applied}");
    assert!(
        applied <= committed && committed <= last,
        "{applied} {committed} {last}"
    );
    // Every proposal left in a batch; every append was fsynced.
    let batches = scrape.value("gantry_raft_proposal_batch_commands_count", &[]);
    let commands = scrape.value("gantry_raft_proposal_batch_commands_sum", &[]);
    assert!(
        batches >= 4.0 && commands >= batches,
        "{batches} batches, {commands} commands"
    );
    assert_eq!(
        scrape.value("gantry_raft_proposal_seconds_count", &[]),
        batches
    );
    let fsyncs = scrape.value("gantry_raft_log_fsync_seconds_count", &[]);
    assert!(fsyncs >= batches, "{fsyncs} fsyncs for {batches} batches");
    assert_eq!(
        scrape.value("gantry_raft_log_fsync_seconds_bucket", &[("le", "+Inf")]),
        fsyncs
    );
    // API requests by route template, never by raw path.
    let submits = [
        ("method", "POST"),
        ("route", "/api/pool/{pool_name}/workflow"),
        ("status", "200"),
    ];
    assert_eq!(scrape.value("gantry_api_requests_total", &submits), 2.0);
    assert_eq!(
        scrape.value("gantry_api_request_seconds_count", &submits),
        2.0
    );
    assert_eq!(
        scrape.value(
            "gantry_api_requests_total",
            &[("route", "/api/workflow/{name}"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !scrape
            .0
            .iter()
            .any(|s| s.labels.get("route").is_some_and(|r| r.contains("hello-"))),
        "a raw workflow path became a label"
    );
    // State gauges.
    assert_eq!(
        scrape.value("gantry_workflows", &[("status", "COMPLETED")]),
        1.0
    );
    assert_eq!(
        scrape.value("gantry_workflows", &[("status", "RUNNING")]),
        1.0
    );
    assert_eq!(
        scrape.value("gantry_workflows", &[("status", "FAILED")]),
        0.0
    );
    assert_eq!(
        scrape.value(
            "gantry_tasks",
            &[("status", "RUNNING"), ("pool", "default")]
        ),
        1.0
    );
    let lag = scrape.value("gantry_timer_lag_seconds", &[]);
    assert!((0.0..5.0).contains(&lag), "timer lag {lag}");
    // Operator traffic of the in-process local operator.
    assert_eq!(
        scrape.value("gantry_operator_connections", &[("backend", "local")]),
        1.0
    );
    let received = |kind: &str| {
        scrape.value(
            "gantry_operator_messages_received_total",
            &[("backend", "local"), ("kind", kind)],
        )
    };
    assert!(received("hello") >= 1.0);
    assert!(
        received("task_status") >= 4.0,
        "{}",
        received("task_status")
    );
    assert!(received("job_done") >= 2.0);
    assert!(
        scrape.value(
            "gantry_operator_messages_sent_total",
            &[("backend", "local")]
        ) >= 2.0
    );
    assert!(scrape.value("gantry_log_received_bytes_total", &[]) >= 5.0);
    // The workflows' log lines went to the object store as chunks.
    assert!(scrape.value("gantry_log_chunks_written_total", &[]) >= 1.0);
    assert_eq!(scrape.value("gantry_object_store_errors_total", &[]), 0.0);
    assert!(scrape.has("gantry_scrape_state_seconds"));

    // Once the sleeper is cancelled, its running task no longer counts.
    assert_eq!(
        api.post(&format!("/api/workflow/{sleeper}/cancel"), None)
            .status,
        200
    );
    api.wait_finished(&sleeper, Duration::from_secs(60));
    let after = Scrape::get(&server.url);
    assert_eq!(
        after.value(
            "gantry_tasks",
            &[("status", "RUNNING"), ("pool", "default")]
        ),
        0.0
    );
    assert_eq!(
        after.value("gantry_workflows", &[("status", "RUNNING")]),
        0.0
    );
    assert_eq!(
        after.value("gantry_workflows", &[("status", "FAILED_CANCELED")]),
        1.0
    );
    assert!(after.value("gantry_raft_applied_index", &[]) > applied);
}

#[test]
fn metrics_need_no_token_on_a_server_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start_with(
        &dir.path().join("node"),
        &[
            "server",
            "--bootstrap",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ],
    );
    let api = server.client();
    assert_eq!(api.get("/api/workflow").status, 401);
    let scrape = Scrape::get(&server.url);
    assert_eq!(
        scrape.value(
            "gantry_api_requests_total",
            &[("route", "/api/workflow"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(scrape.value("gantry_raft_is_leader", &[]), 1.0);
}
