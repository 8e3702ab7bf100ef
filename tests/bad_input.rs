//! Bad input through the real server: each gets a clear 4xx that names the
//! problem, nothing is lost, and the server keeps serving.

mod common;

use common::{cli, DevServer};
use serde_json::json;
use std::time::{Duration, Instant};

const VALID: &str =
    "workflow:\n  name: ok\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";

#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let first = api.submit_ok(VALID);

    // Not YAML at all: 400, nothing stored.
    let reply = api.submit("workflow: [unclosed\n  - {");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.json()["workflow_id"].is_null());

    // Parses, fails validation: stored as FAILED_SUBMISSION, 400 naming the field.
    let cases: &[(&str, &str)] = &[
        (
            "workflow:\n  name: empty-cmd\n  groups:\n  - name: g\n    tasks:\n    - name: a\n      image: x\n      command: []\n",
            "workflow.groups[0].tasks[0].command",
        ),
        (
            "workflow:\n  name: wrong-type\n  tasks:\n  - name: a\n    image: x\n    command: [\"true\"]\n    privileged: maybe\n",
            "workflow.tasks[0].privileged",
        ),
        (
            "workflow:\n  name: unknown-field\n  tasks:\n  - name: a\n    image: x\n    command: [\"true\"]\n    colour: blue\n",
            "colour",
        ),
        (
            "workflow:\n  name: osmo-file\n  tasks:\n  - name: a\n    image: x\n    command: [\"true\"]\n    files: [{path: /osmo/data/x, contents: hi}]\n",
            "workflow.tasks[0].files[0].path",
        ),
        (
            "workflow:\n  name: both\n  tasks: []\n  groups: []\n",
            "workflow",
        ),
    ];
    for (spec, field) in cases {
        let reply = api.submit(spec);
        assert_eq!(reply.status, 400, "{spec}: {}", reply.body);
        let body = reply.json();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{spec}: message {message:?} does not name {field}"
        );
        assert_eq!(body["error_code"], "SUBMISSION");
        let id = body["workflow_id"]
            .as_str()
            .expect("a FAILED_SUBMISSION workflow ID");
        let stored = api.workflow(id);
        assert_eq!(stored["status"], "FAILED_SUBMISSION", "{stored}");
        assert_eq!(stored["failure_message"].as_str(), Some(message));
    }

    // What could only fail at launch is refused at submit, naming the field
    // and the reason.
    let task = |name: &str, extra: &str| {
        format!("workflow:\n  name: {name}\n  tasks:\n  - name: a\n    image: x\n    command: [\"true\"]\n{extra}")
    };
    let launch_failures = [
        (
            "nul-arg",
            "    args: [ok, \"a\\0b\"]\n",
            "workflow.tasks[0].args[1]",
            "NUL",
        ),
        (
            "env-equals",
            "    environment: {\"A=B\": x}\n",
            "workflow.tasks[0].environment.A=B",
            "'='",
        ),
        (
            "env-nul-name",
            "    environment: {\"A\\0\": x}\n",
            "workflow.tasks[0].environment.A",
            "'=' or NUL",
        ),
        (
            "env-empty",
            "    environment: {\"\": x}\n",
            "workflow.tasks[0].environment",
            "must not be empty",
        ),
        (
            "env-nul-value",
            "    environment: {A: \"x\\0\"}\n",
            "workflow.tasks[0].environment.A",
            "NUL",
        ),
        (
            "file-etc",
            "    files: [{path: /etc/app.conf, contents: hi}]\n",
            "workflow.tasks[0].files[0].path",
            "system directory",
        ),
        (
            "file-proc",
            "    files: [{path: /proc/x, contents: hi}]\n",
            "workflow.tasks[0].files[0].path",
            "system directory",
        ),
        (
            "file-dir",
            "    files: [{path: /opt/app/, contents: hi}]\n",
            "workflow.tasks[0].files[0].path",
            "names a directory",
        ),
        (
            "file-dot",
            "    files: [{path: /opt/./a, contents: hi}]\n",
            "workflow.tasks[0].files[0].path",
            "'.' segments",
        ),
        (
            "cred-env",
            "    credentials: {c: {\"A=B\": key}}\n",
            "workflow.tasks[0].credentials.c.A=B",
            "'='",
        ),
    ];
    for (name, extra, field, reason) in launch_failures {
        let spec = task(name, extra);
        let reply = api.submit(&spec);
        assert_eq!(reply.status, 400, "{spec}: {}", reply.body);
        let body = reply.json();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(field) && message.contains(reason),
            "{spec}: message {message:?} should name {field} and say {reason}"
        );
        assert_eq!(body["error_code"], "SUBMISSION");
        assert!(body["workflow_id"].is_string(), "{body}");
    }
    // --set-env names are environment names too.
    let reply = api.post(
        "/api/pool/default/workflow?env_vars=%00X%3Dy",
        Some(&json!({ "file": VALID })),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("environment"),
        "{}",
        reply.body
    );

    // Template errors and bombs are refused quickly.
    for spec in [
        "workflow:\n  name: \"{{ undefined_variable }}\"\n",
        "workflow:\n  name: attr\n  tasks:\n  - name: a\n    image: \"{{ ''.__class__ }}\"\n    command: [\"true\"]\n",
        "workflow:\n  name: bomb\n{% for i in range(100000000) %}{% for j in range(100000000) %}x{% endfor %}{% endfor %}\n",
        "workflow:\n  name: \"{{ 'a' * 1000000000 }}\"\n",
        // Memory doubling: each step is one instruction, so only the render
        // process's memory limit stops it.
        "{% set a = 'a' * 99999999 %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}\nworkflow:\n  name: memory\n",
    ] {
        let started = Instant::now();
        let reply = api.submit(spec);
        assert_eq!(reply.status, 400, "{spec}: {}", reply.body);
        assert!(started.elapsed() < Duration::from_secs(10), "{spec} took {:?}", started.elapsed());
    }

    // Duplicate --set keys are a usage error.
    let reply = api.post(
        "/api/pool/default/workflow",
        Some(&json!({"file": "workflow:\n  name: \"{{n}}\"\n", "set_variables": ["n=a", "n=b"]})),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error_code"], "USAGE");
    assert!(reply.json()["message"].as_str().unwrap().contains('n'));

    // Wrong body shape: 422; oversized body: 413.
    let reply = api.post_raw("/api/pool/default/workflow", b"{\"spec\": 1}".to_vec());
    assert_eq!(reply.status, 422, "{}", reply.body);
    let huge = serde_json::to_vec(&json!({"file": "x".repeat(5 * 1024 * 1024)})).unwrap();
    let reply = api.post_raw("/api/pool/default/workflow", huge);
    assert_eq!(reply.status, 413, "{}", reply.body);

    // Unknown pool: 404 naming the pool. Unknown workflow: 404.
    let reply = api.post("/api/pool/gpu-h100/workflow", Some(&json!({"file": VALID})));
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.json()["message"]
        .as_str()
        .unwrap()
        .contains("gpu-h100"));
    for path in [
        "/api/workflow/nope-7",
        "/api/workflow/nope-7/logs",
        "/api/workflow/nope-7/spec",
    ] {
        assert_eq!(api.get(path).status, 404, "{path}");
    }
    assert_eq!(api.post("/api/workflow/nope-7/cancel", None).status, 404);
    // An unbounded tail would hold a workflow's whole log in memory.
    for path in [
        "/api/workflow/nope-7/logs?last_n_lines=100000001",
        "/api/workflow/nope-7/error_logs?last_n_lines=100000001",
    ] {
        let reply = api.get(path);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .contains("'last_n_lines' is at most 100000"),
            "{}",
            reply.body
        );
    }
    let reply = api.get("/api/workflow?statuses=BOGUS");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.json()["message"].as_str().unwrap().contains("BOGUS"));

    // The CLI refuses duplicate --set keys before sending anything.
    let (code, _, stderr) = cli(
        &server.url,
        &[
            "workflow",
            "submit",
            "/nonexistent.yaml",
            "--set",
            "a=1",
            "--set",
            "a=2",
        ],
    );
    assert_ne!(code, 0);
    assert!(!stderr.is_empty());

    // Nothing was lost and the server still works.
    let workflow = api.wait_finished(&first, Duration::from_secs(30));
    assert_eq!(workflow["status"], "COMPLETED");
    let second = api.submit_ok(VALID);
    assert_eq!(
        api.wait_finished(&second, Duration::from_secs(30))["status"],
        "COMPLETED"
    );
}
