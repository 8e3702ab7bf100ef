//! The end of a workflow, end to end through `gantry dev`: its archive
//! (rendered and original spec, events) lands in the log store under
//! `<wf_id>/` with OSMO's names; `workflow events` shows its phases; a log
//! retention set with `PUT /api/configs/workflow` deletes the chunk files
//! and makes `logs` say so, also after a SIGKILL restart while the purge is
//! pending, and against a real S3-compatible store.

mod common;

use common::{cli, start_moto, task_of, wait_for, DevServer};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const TEMPLATED: &str = r#"workflow:
  name: arch
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 {{ steps }}); do echo "step $i of {{ who }}"; done']
default-values:
  steps: 50
  who: archive
"#;

const LOGGING: &str = r#"workflow:
  name: kept
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 300); do echo "step $i"; done']
"#;

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Starts `gantry dev` and waits until its pool `default` exists (a first
/// start may announce its API a moment before the pool is committed).
fn start_dev(data: &Path, wrapper: &[&str], extra: &[&str]) -> DevServer {
    let mut args = vec!["dev", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = DevServer::start_wrapped(wrapper, data, &args);
    let api = server.client();
    wait_for(Duration::from_secs(30), "pool default", || {
        let reply = api.get("/api/pool");
        if reply.status == 200 && reply.json()["pools"]["default"].is_object() {
            Ok(())
        } else {
            Err(reply.body)
        }
    });
    server
}

fn set_retention(api: &common::Api, retention: &str) {
    let reply = api.put(
        "/api/configs/workflow",
        &json!({"configs": {"workflow_log": {"retention": retention}}, "description": "log retention"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Waits until `GET logs` answers 410 and returns its message.
fn wait_purged(api: &common::Api, id: &str, limit: Duration) -> String {
    wait_for(limit, "the logs to be purged", || {
        let reply = api.get(&format!("/api/workflow/{id}/logs"));
        if reply.status == 410 {
            Ok(reply.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        } else {
            Err(format!(
                "{} {}",
                reply.status,
                &reply.body[..reply.body.len().min(200)]
            ))
        }
    })
}

#[test]
fn a_finished_workflow_is_archived_and_its_events_show_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_dev(&dir.path().join("dev"), &[], &[]);
    let api = server.client();
    let id = api.submit_ok(TEMPLATED);
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");

    let archive = server.data_dir.join("objects").join(&id);
    let names = [
        "workflow_spec.yaml",
        "templated_workflow_spec.yaml",
        "workflow_events.txt",
    ];
    wait_for(Duration::from_secs(20), "the archive files", || match names
        .iter()
        .find(|name| !archive.join(name).is_file())
    {
        None => Ok(()),
        Some(missing) => Err(format!("{missing} missing")),
    });
    let original = std::fs::read_to_string(archive.join("templated_workflow_spec.yaml")).unwrap();
    assert_eq!(original, TEMPLATED, "the original spec, byte for byte");
    let rendered = std::fs::read_to_string(archive.join("workflow_spec.yaml")).unwrap();
    let served = api.get(&format!("/api/workflow/{id}/spec"));
    assert_eq!(served.status, 200);
    assert_eq!(
        rendered, served.body,
        "the rendered spec, as the API serves it"
    );
    assert!(
        rendered.contains("seq 1 50")
            && rendered.contains("of archive")
            && !rendered.contains("{{"),
        "{rendered}"
    );
    let (code, template_out, err) = cli(&server.url, &["workflow", "spec", &id, "--template"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(template_out.trim_end(), TEMPLATED.trim_end());

    // Events: the CLI, the API and the archived file agree.
    let (code, events, err) = cli(&server.url, &["workflow", "events", &id]);
    assert_eq!(code, 0, "{err}");
    let archived_events = std::fs::read_to_string(archive.join("workflow_events.txt")).unwrap();
    assert_eq!(events, archived_events);
    let reasons: Vec<&str> = events
        .lines()
        .map(|line| line.splitn(3, ' ').nth(2).unwrap_or_default())
        .collect();
    let position = |wanted: &str| {
        reasons
            .iter()
            .position(|reason| reason.starts_with(wanted))
            .unwrap_or_else(|| panic!("no event '{wanted}' in:\n{events}"))
    };
    let order = [
        position(&format!("[{id}] SUBMITTED: by ")),
        position("[group train-group] PROCESSING"),
        position("[train] PROCESSING"),
        position("[train] SCHEDULING"),
        position("[train] INITIALIZING"),
        position("[train] RUNNING"),
        position("[train] COMPLETED: exit code 0"),
        position("[group train-group] COMPLETED"),
        position(&format!("[{id}] COMPLETED")),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{events}");
    let (code, only_task, _) = cli(
        &server.url,
        &["workflow", "events", &id, "-t", "train", "-r", "0"],
    );
    assert_eq!(code, 0);
    assert!(only_task.lines().count() >= 5, "{only_task}");
    assert!(
        only_task.lines().all(|line| line.contains("[train] ")),
        "{only_task}"
    );
    let (code, _, err) = cli(&server.url, &["workflow", "events", &id, "-t", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("Task 'nope' not found"), "{err}");

    // The query's URLs point at these routes.
    let workflow = api.workflow(&id);
    let base = format!("{}/api/workflow/{id}", server.url);
    assert_eq!(workflow["events"], format!("{base}/events"));
    assert_eq!(workflow["spec"], format!("{base}/spec"));
    assert_eq!(
        workflow["template_spec"],
        format!("{base}/spec?use_template=true")
    );
    let task = task_of(&workflow, "train").unwrap();
    assert_eq!(
        task["events"],
        format!("{base}/events?task_name=train&retry_id=0")
    );
    // Without retention the logs stay.
    let logs = api.get(&format!("/api/workflow/{id}/logs"));
    assert_eq!(logs.status, 200);
    assert!(logs.body.contains("step 50 of archive"), "{}", logs.body);
}

#[test]
fn retention_deletes_log_chunks_and_a_pending_purge_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = start_dev(&data, &[], &[]);
    let api = server.client();

    let bad = api.put(
        "/api/configs/workflow",
        &json!({"configs": {"workflow_log": {"retention": "soon"}}}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body
            .contains("configs.workflow_log.retention: invalid duration"),
        "{}",
        bad.body
    );

    set_retention(&api, "2s");
    let id = api.submit_ok(LOGGING);
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let objects = data.join("objects").join(&id);
    let message = wait_purged(&api, &id, Duration::from_secs(30));
    assert!(
        message.contains("deleted by the log retention policy")
            && message.contains("workflow_log.retention")
            && message.contains("kept for 2s"),
        "{message}"
    );
    assert!(
        files_ending(&objects, ".jsonl.zst").is_empty(),
        "chunk files remain"
    );
    assert!(
        files_ending(&objects, ".yaml").is_empty(),
        "archive files remain"
    );
    let errors = api.get(&format!("/api/workflow/{id}/error_logs"));
    assert_eq!(errors.status, 410, "{}", errors.body);
    let (code, out, err) = cli(&server.url, &["workflow", "logs", &id]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("deleted by the log retention policy"), "{err}");
    // The record stays: query, spec and events still answer.
    assert_eq!(api.workflow(&id)["status"], "COMPLETED");
    assert_eq!(api.get(&format!("/api/workflow/{id}/spec")).status, 200);
    let events = api.get(&format!("/api/workflow/{id}/events"));
    assert!(events.body.contains("[train] COMPLETED"), "{}", events.body);

    // A purge still pending when the server is killed fires after the restart.
    set_retention(&api, "8s");
    let id = api.submit_ok(LOGGING);
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    let ended = Instant::now();
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let objects = data.join("objects").join(&id);
    wait_for(Duration::from_secs(5), "chunk files on disk", || {
        let chunks = files_ending(&objects, ".jsonl.zst");
        if chunks.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(chunks)
        }
    });
    assert_eq!(api.get(&format!("/api/workflow/{id}/logs")).status, 200);
    assert!(
        ended.elapsed() < Duration::from_secs(6),
        "too slow to test a pending purge"
    );
    server.kill9();
    let server = start_dev(&data, &[], &[]);
    let api = server.client();
    let message = wait_purged(&api, &id, Duration::from_secs(40));
    assert!(message.contains("kept for 8s"), "{message}");
    assert!(
        files_ending(&objects, ".jsonl.zst").is_empty(),
        "chunk files remain"
    );
}

#[test]
fn archive_and_purge_work_on_an_s3_compatible_store() {
    let Some(moto) = start_moto("gantry-logs") else {
        println!("SKIPPED: moto_server is not installed (pip install 'moto[server]')");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "s3://gantry-logs/cluster-b?endpoint={}&region=us-east-1&path_style=true",
        moto.url
    );
    let server = start_dev(
        &dir.path().join("dev"),
        &[
            "env",
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
        ],
        &["--object-store", &store],
    );
    let api = server.client();
    let listing = |id: &str| {
        reqwest::blocking::get(format!(
            "{}/gantry-logs?list-type=2&prefix=cluster-b/{id}/",
            moto.url
        ))
        .unwrap()
        .text()
        .unwrap()
    };
    let id = api.submit_ok(TEMPLATED);
    assert_eq!(
        api.wait_finished(&id, Duration::from_secs(60))["status"],
        "COMPLETED"
    );
    wait_for(Duration::from_secs(20), "the archive in S3", || {
        let keys = listing(&id);
        if keys.contains(&format!("cluster-b/{id}/workflow_spec.yaml</Key>"))
            && keys.contains(&format!(
                "cluster-b/{id}/templated_workflow_spec.yaml</Key>"
            ))
            && keys.contains(&format!("cluster-b/{id}/workflow_events.txt</Key>"))
        {
            Ok(())
        } else {
            Err(keys)
        }
    });
    // Anonymous GETs are refused by the server; the listing gives the size.
    let keys = listing(&id);
    let entry = keys
        .split("<Contents>")
        .find(|entry| entry.contains("templated_workflow_spec.yaml</Key>"))
        .unwrap_or_default();
    assert!(
        entry.contains(&format!("<Size>{}</Size>", TEMPLATED.len())),
        "{entry}"
    );

    set_retention(&api, "1s");
    let id = api.submit_ok(LOGGING);
    assert_eq!(
        api.wait_finished(&id, Duration::from_secs(60))["status"],
        "COMPLETED"
    );
    wait_purged(&api, &id, Duration::from_secs(30));
    let keys = listing(&id);
    assert!(
        !keys.contains("<Key>"),
        "objects left after the purge: {keys}"
    );
}
