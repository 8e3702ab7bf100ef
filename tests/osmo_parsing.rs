//! Specs parsed as OSMO parses them, end to end through `gantry dev`:
//! repeated keys are accepted (the last wins) with a warning naming the
//! key and its line, in submit's and validate's answers; template errors
//! name the undefined variable.

mod common;

use common::{cli, osmo_reference, DevServer};
use serde_json::{json, Value};
use std::time::Duration;

const FINISH_LIMIT: Duration = Duration::from_secs(60);

fn validate(api: &common::Api, spec: &str) -> common::Reply {
    api.post(
        "/api/pool/default/workflow?validation_only=true",
        Some(&json!({ "file": spec })),
    )
}

fn warnings(reply: &common::Reply) -> Vec<String> {
    reply.json()["warnings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn repeated_keys_keep_the_last_value_and_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();

    // The cookbook's github.yaml repeats a file's `path` (line 62).
    let github = osmo_reference("cookbook/integration_and_tools/github/github.yaml");
    let text = std::fs::read_to_string(&github).unwrap();
    let expected =
        "duplicate key 'path' in workflow.tasks[0].files[1] at line 62: the last value is used";
    let reply = validate(&api, &text);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["logs"], "Workflow validation succeeded.");
    assert_eq!(warnings(&reply), [expected]);
    let (code, stdout, stderr) = cli(
        &server.url,
        &["workflow", "validate", github.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Workflow validation succeeded."),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("warning: {expected}")), "{stderr}");

    // A submit answers the same, and the task runs with the last value.
    let spec = "\
workflow:
  name: repeats
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'echo first']
    command: [sh, -c, 'echo second']
";
    let reply = api.submit(spec);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        warnings(&reply),
        ["duplicate key 'command' in workflow.tasks[0] at line 7: the last value is used"]
    );
    let id = reply.json()["name"].as_str().unwrap().to_string();
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (code, logs, stderr) = cli(&server.url, &["workflow", "logs", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        logs.contains("[t] second") && !logs.contains("first"),
        "{logs}"
    );
}

#[test]
fn template_errors_name_the_undefined_variable_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let reply = server
        .client()
        .submit("workflow:\n  name: wf\n  pool: '{{ foo }}'\n");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["message"],
        "template error: undefined variable 'foo' (line 3)"
    );
}
