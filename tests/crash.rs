//! Crash safety through the real binary: SIGKILL `gantry dev` at a bad
//! moment, restart it on the same data directory, and check that nothing
//! acknowledged is lost and pending timers still fire.

mod common;

use common::{task_of, DevServer};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUICK: &str = "workflow:\n  name: crash\n  tasks:\n  - name: step\n    image: ubuntu\n    command: [sh, -c, \"sleep 0.2; echo done\"]\n";

#[test]
fn acknowledged_workflows_survive_sigkill_and_run_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    let total = 200;
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let attempted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let acknowledged = acknowledged.clone();
        let attempted = attempted.clone();
        clients.push(std::thread::spawn(move || {
            let agent = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            while attempted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                let sent = agent
                    .post(format!("{}/api/pool/default/workflow", api.url))
                    .json(&serde_json::json!({ "file": QUICK }))
                    .send();
                // Only a 200 with an ID is an acknowledgement; errors after the kill are expected.
                let Ok(response) = sent else { return };
                if response.status().as_u16() != 200 {
                    return;
                }
                let body: serde_json::Value = response.json().unwrap();
                acknowledged
                    .lock()
                    .unwrap()
                    .push(body["name"].as_str().unwrap().to_string());
            }
        }));
    }
    // Kill mid-stream: after about half were acknowledged, while tasks run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < total / 2 {
        assert!(Instant::now() < deadline, "submits too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= total / 2);

    let server = DevServer::start(&data);
    let api = server.client();
    let unique: BTreeSet<&String> = acknowledged.iter().collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "duplicate IDs were acknowledged"
    );
    for id in &acknowledged {
        let workflow = api.wait_finished(id, Duration::from_secs(120));
        assert_eq!(workflow["status"], "COMPLETED", "{id}: {workflow}");
    }
    // IDs are gap-free: crash-1..crash-N with N the number stored.
    let listed = api.get("/api/workflow?limit=1000&name=crash-");
    let names: BTreeSet<String> = listed.json()["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (1..=names.len()).map(|n| format!("crash-{n}")).collect();
    assert_eq!(names, expected, "IDs are not gap-free");
    assert!(acknowledged.iter().all(|id| names.contains(id)));
    // Everything stored, acknowledged or not, also ran to its end.
    for id in &names {
        assert_eq!(
            api.wait_finished(id, Duration::from_secs(120))["status"],
            "COMPLETED"
        );
    }
}

#[test]
fn pending_exec_timeout_fires_after_a_sigkill_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    let id = api.submit_ok(
        "workflow:\n  name: timer\n  timeout: {exec_timeout: 6s}\n  tasks:\n  - name: nap\n    image: ubuntu\n    command: [sleep, \"600\"]\n",
    );
    let task = api.wait_task(&id, "nap", "RUNNING", Duration::from_secs(30));
    assert!(task["start_time"].is_string());
    server.kill9();
    std::thread::sleep(Duration::from_secs(1));

    let server = DevServer::start(&data);
    let api = server.client();
    let workflow = api.wait_finished(&id, Duration::from_secs(30));
    assert_eq!(workflow["status"], "FAILED_EXEC_TIMEOUT", "{workflow}");
    assert_eq!(
        task_of(&workflow, "nap").unwrap()["status"],
        "FAILED_EXEC_TIMEOUT"
    );
    // It fired at its due time (group start + 6 s), not at restart.
    let start = chrono_millis(workflow["start_time"].as_str().unwrap());
    let end = chrono_millis(workflow["end_time"].as_str().unwrap());
    assert!(end - start >= 6_000, "fired early: {} ms", end - start);
    assert!(server.log().contains("leadership gained"));
}

/// A JSON time as the API writes it (OSMO's: naive UTC, microseconds).
fn chrono_millis(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}
