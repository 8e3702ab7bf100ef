//! Retries through the real binary: a RESCHEDULE exit action re-runs a task
//! as a new retry up to the WORKFLOW config's `max_retry_per_task`, and a
//! run lost to a SIGKILLed `gantry dev` runs again as the next retry; each
//! run keeps its own log lines, events and query entry.

mod common;

use common::{task_of, DevServer};
use serde_json::json;
use std::time::Duration;

const FLAKY: &str = r#"workflow:
  name: flaky
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'echo "attempt $OSMO_RETRY_ID"; [ "$OSMO_RETRY_ID" -ge 2 ] || exit 7']
    exitActions:
      RESCHEDULE: "7"
"#;

fn set_retry_budget(api: &common::Api, budget: u64) {
    let reply = api.put(
        "/api/configs/workflow",
        &json!({"configs": {"max_retry_per_task": budget}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_rescheduled_task_succeeds_on_its_third_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    set_retry_budget(&api, 3);
    let id = api.submit_ok(FLAKY);
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let task = task_of(&workflow, "t").expect("task t");
    assert_eq!(task["retry_id"], 2, "{task}");

    // `verbose` lists every run, oldest first.
    let verbose = api.get(&format!("/api/workflow/{id}?verbose=true")).json();
    let runs: Vec<(u64, String)> = verbose["groups"][0]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["retry_id"].as_u64().unwrap_or(99),
                t["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            (0, "RESCHEDULED".to_string()),
            (1, "RESCHEDULED".to_string()),
            (2, "COMPLETED".to_string())
        ]
    );

    // Three runs in the log, each under its own source, and `retry_id`
    // keeps one.
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    for line in [
        "[t] attempt 0",
        "[t retry-1] attempt 1",
        "[t retry-2] attempt 2",
    ] {
        assert!(logs.contains(line), "{line:?} missing from:\n{logs}");
    }
    let second = api.get(&format!("/api/workflow/{id}/logs?retry_id=1")).body;
    assert!(
        second.contains("attempt 1") && !second.contains("attempt 0"),
        "{second}"
    );

    // The events show each run ending, the first two RESCHEDULED.
    let events = api.get(&format!("/api/workflow/{id}/events")).body;
    assert!(events.contains("[t] RESCHEDULED"), "{events}");
    assert!(events.contains("[t retry-1] RESCHEDULED"), "{events}");
    assert!(events.contains("[t retry-2] COMPLETED"), "{events}");
    server.stop();
}

#[test]
fn without_a_budget_reschedule_fails_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    let id = api.submit_ok(FLAKY);
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "FAILED", "{workflow}");
    let task = task_of(&workflow, "t").expect("task t");
    assert_eq!(task["retry_id"], 0);
    assert_eq!(task["exit_code"], 7);
    server.stop();
}

#[test]
fn a_sigkilled_dev_runs_its_running_task_again_as_retry_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    let id = api.submit_ok(
        "workflow:\n  name: long\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sh, -c, 'echo \"run $OSMO_RETRY_ID\"; sleep 6; echo finished']\n",
    );
    api.wait_task(&id, "t", "RUNNING", Duration::from_secs(30));
    // Long enough for the first line to become durable (a chunk commits
    // within about a second), well before the run would end. `/logs` of a
    // running workflow follows it, so the test waits rather than reads.
    std::thread::sleep(Duration::from_millis(2500));
    server.kill9();

    let server = DevServer::start(&data);
    let api = server.client();
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let task = task_of(&workflow, "t").expect("task t");
    assert_eq!(task["retry_id"], 1, "{task}");
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    assert!(logs.contains("[t] run 0"), "{logs}");
    assert!(logs.contains("[t retry-1] run 1"), "{logs}");
    assert!(logs.contains("[t retry-1] finished"), "{logs}");
    server.stop();
}
