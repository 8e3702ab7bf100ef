//! The task list across workflows (OSMO's `GET /api/task`, `task list`)
//! and one task's latest run (`GET /api/workflow/{name}/task/{task_name}`)
//! against a running `gantry dev`: OSMO's defaults (the caller's tasks;
//! the CLI asks for the live statuses), its filters and summaries, its shapes, refusals naming
//! the parameter, and `gantry task list` printing the same rows.

mod common;

use common::{cli, DevServer};
use serde_json::Value;
use std::time::Duration;

const QUICK: &str = "workflow:\n  name: quick\n  resources:\n    default:\n      cpu: 1\n      memory: 16Mi\n  tasks:\n  - name: done\n    image: ubuntu\n    command: ['true']\n  - name: nap\n    image: ubuntu\n    command: [sleep, '600']\n";

/// GET as `user` (with auth off, OSMO's `x-osmo-user` header names the caller).
fn get_as(url: &str, path: &str, user: &str) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .header("x-osmo-user", user)
        .send()
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn submit_as(url: &str, user: &str) -> String {
    let response = reqwest::blocking::Client::new()
        .post(format!("{url}/api/pool/default/workflow"))
        .header("x-osmo-user", user)
        .json(&serde_json::json!({ "file": QUICK }))
        .send()
        .expect("submit");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().expect("submit answer");
    answer["name"].as_str().expect("name").to_string()
}

/// `(user, workflow_id, task_name, status)` of each listed row, in order.
fn rows(answer: &Value) -> Vec<(String, String, String, String)> {
    answer["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {answer}"))
        .iter()
        .map(|row| {
            let field = |name: &str| row[name].as_str().unwrap_or_default().to_string();
            (
                field("user"),
                field("workflow_id"),
                field("task_name"),
                field("status"),
            )
        })
        .collect()
}

#[test]
fn tasks_across_workflows_as_osmo_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let url = server.url.clone();
    let alices = submit_as(&url, "alice");
    let bobs = submit_as(&url, "bob");
    for id in [&alices, &bobs] {
        api.wait_task(id, "nap", "RUNNING", Duration::from_secs(60));
        api.wait_task(id, "done", "COMPLETED", Duration::from_secs(60));
    }

    // Default: the caller's tasks (the live statuses are the CLI's default,
    // not the API's).
    let (status, answer) = get_as(&url, "/api/task", "alice");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(rows(&answer).len(), 2, "{answer}");
    assert!(rows(&answer)
        .iter()
        .all(|row| row.0 == "alice" && row.1 == alices));
    let (status, answer) = get_as(&url, "/api/task?statuses=RUNNING", "alice");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        rows(&answer),
        [(
            "alice".to_string(),
            alices.clone(),
            "nap".to_string(),
            "RUNNING".to_string()
        )]
    );
    let row = &answer["tasks"][0];
    for field in [
        "workflow_uuid",
        "retry_id",
        "pool",
        "node",
        "start_time",
        "duration",
        "overview",
        "logs",
        "priority",
        "cpu",
        "memory",
    ] {
        assert!(row.get(field).is_some(), "{field} missing from {row}");
    }
    assert_eq!(row["cpu"], 1, "{row}");
    assert_eq!(row["pool"], "default");

    // Every user, every status asked for.
    let (_, answer) = get_as(
        &url,
        "/api/task?all_users=true&statuses=RUNNING&statuses=COMPLETED",
        "alice",
    );
    let listed = rows(&answer);
    assert_eq!(listed.len(), 4, "{listed:?}");
    for id in [&alices, &bobs] {
        for (task, status) in [("nap", "RUNNING"), ("done", "COMPLETED")] {
            assert!(
                listed
                    .iter()
                    .any(|row| &row.1 == id && row.2 == task && row.3 == status),
                "{id}/{task} {status} in {listed:?}"
            );
        }
    }
    // Other users by name; a workflow ID substring; a page.
    let (_, answer) = get_as(&url, "/api/task?users=bob", "alice");
    assert_eq!(rows(&answer).len(), 2, "{answer}");
    assert!(rows(&answer).iter().all(|row| row.0 == "bob"));
    let (_, answer) = get_as(
        &url,
        &format!("/api/task?all_users=true&workflow_id={bobs}&statuses=COMPLETED"),
        "alice",
    );
    assert_eq!(rows(&answer).len(), 1, "{answer}");
    assert_eq!(rows(&answer)[0].1, bobs);
    let (_, answer) = get_as(
        &url,
        "/api/task?all_users=true&statuses=RUNNING&statuses=COMPLETED&limit=3",
        "alice",
    );
    assert_eq!(rows(&answer).len(), 3);

    // Requests summed per user, pool and priority, and per workflow.
    let (_, answer) = get_as(&url, "/api/task?all_users=true&summary=true", "alice");
    let summaries = answer["summaries"].as_array().expect("summaries");
    assert_eq!(summaries.len(), 2, "{answer}");
    for summary in summaries {
        // Both tasks of each workflow, the ended one included.
        assert_eq!(summary["cpu"], 2, "{summary}");
        assert_eq!(summary["pool"], "default");
    }
    let (_, answer) = get_as(
        &url,
        "/api/task?all_users=true&aggregate_by_workflow=true",
        "alice",
    );
    let per_workflow = answer["summaries"].as_array().expect("summaries");
    assert_eq!(per_workflow.len(), 2, "{answer}");
    assert!(per_workflow
        .iter()
        .any(|s| s["workflow_id"] == alices.as_str()));

    // Refusals name the parameter.
    for (query, name) in [
        ("statuses=NOPE", "statuses"),
        ("started_after=yesterday", "started_after"),
        ("limit=-1", "limit"),
        ("priority=URGENT", "priority"),
    ] {
        let (status, answer) = get_as(&url, &format!("/api/task?{query}"), "alice");
        assert_eq!(status, 400, "{query}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{query}: {message}");
    }

    // The query names each run's pod as the Kubernetes executor names it:
    // `<workflow_uuid[:16]>-<task_uuid[:16]>`.
    let workflow = api.workflow(&alices);
    let uuid = workflow["uuid"].as_str().expect("uuid").to_string();
    for task in workflow["groups"][0]["tasks"].as_array().expect("tasks") {
        let task_uuid = task["task_uuid"].as_str().expect("task_uuid");
        assert_eq!(
            task["pod_name"],
            format!("{}-{}", &uuid[..16], &task_uuid[..16]),
            "{task}"
        );
    }

    // One task's latest run, in OSMO's TaskEntry shape.
    let (status, entry) = get_as(&url, &format!("/api/workflow/{alices}/task/done"), "bob");
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["status"], "COMPLETED");
    assert_eq!(entry["workflow_id"], alices.as_str());
    assert_eq!(entry["task_name"], "done");
    assert!(entry["end_time"].is_string(), "{entry}");
    let (status, answer) = get_as(&url, &format!("/api/workflow/{alices}/task/nope"), "bob");
    assert_eq!(status, 404, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap_or_default()
        .contains("nope"));

    // The CLI prints the same rows (without a user header the caller is
    // `anonymous`, who has none: -a lists everyone's).
    let (code, out, err) = cli(&url, &["task", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("There are no tasks to view."), "{out}");
    let (code, out, err) = cli(
        &url,
        &["task", "list", "-a", "-s", "RUNNING", "COMPLETED", "-v"],
    );
    assert_eq!(code, 0, "{err}");
    for id in [&alices, &bobs] {
        assert!(out.contains(id.as_str()), "{out}");
    }
    assert!(
        out.contains("Memory (GiB)") && out.contains("Total"),
        "{out}"
    );
    // The CLI asks for the live statuses unless told otherwise.
    let (code, out, err) = cli(&url, &["task", "list", "-u", "bob", "-t", "json"]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).expect("task list -t json");
    assert_eq!(rows(&answer).len(), 1, "{out}");
    assert_eq!(rows(&answer)[0].2, "nap", "{out}");
    let (code, out, err) = cli(&url, &["task", "list", "-a", "-S"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("bob"), "{out}");

    for id in [&alices, &bobs] {
        api.post(&format!("/api/workflow/{id}/cancel"), None);
    }
    server.stop();
}
