//! No request can exhaust the server, and what it keeps on disk is private:
//! nesting bombs are refused in linear time while queries keep answering,
//! and the data directory and its files are private whatever the umask.

mod common;

use common::DevServer;
use serde_json::json;
use std::time::{Duration, Instant};

/// The API's body limit (`BODY_BYTES_MAX_DEFAULT`).
const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

const VALID: &str =
    "workflow:\n  name: ok\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";

/// A submit body of exactly `BODY_BYTES_MAX` bytes whose spec nests `open`
/// as deep as the body allows.
fn bomb_body(open: &str) -> Vec<u8> {
    let envelope = serde_json::to_vec(&json!({"file": "workflow: "})).unwrap();
    let room = BODY_BYTES_MAX - envelope.len();
    let spec = format!("workflow: {}", open.repeat(room / open.len()));
    let body = serde_json::to_vec(&json!({ "file": spec })).unwrap();
    assert!(body.len() <= BODY_BYTES_MAX && body.len() > BODY_BYTES_MAX - 8);
    body
}

fn post(url: &str, body: Vec<u8>) -> (u16, String, Duration) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("{url}/api/pool/default/workflow"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    (status, text, started.elapsed())
}

#[test]
fn nesting_bombs_are_refused_while_queries_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(VALID);
    let query = format!("{}/api/workflow/{id}", server.url);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Warm the connection pool and the route.
    assert_eq!(client.get(&query).send().unwrap().status().as_u16(), 200);

    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|i| bomb_body(if i % 2 == 0 { "[" } else { "{a: " }))
        .collect();
    let started = Instant::now();
    let bombs: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let url = server.url.clone();
            std::thread::spawn(move || post(&url, body))
        })
        .collect();
    // Queries while the bombs are in flight (and a little after).
    let mut latencies = Vec::new();
    while latencies.len() < 40 {
        let sent = Instant::now();
        let status = client.get(&query).send().unwrap().status().as_u16();
        latencies.push(sent.elapsed());
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut answers = Vec::new();
    for bomb in bombs {
        let (status, text, elapsed) = bomb.join().unwrap();
        assert_eq!(status, 400, "{text}");
        let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
        let message = reply["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("collections nested more than 100 deep (the depth limit)"),
            "{message}"
        );
        assert!(reply["workflow_id"].is_null(), "{reply}");
        answers.push(elapsed);
    }
    let all = started.elapsed();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let under = latencies
        .iter()
        .filter(|l| **l < Duration::from_millis(100))
        .count();
    eprintln!(
        "8 concurrent {BODY_BYTES_MAX}-byte nesting bombs: 400 after {:?} (all answered within {all:?}); \
         concurrent queries: median {median:?}, max {:?}, {under}/{} under 100 ms",
        answers,
        latencies.last().unwrap(),
        latencies.len()
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(under * 4 >= latencies.len() * 3, "{latencies:?}");
    // Each bomb is refused in about the time its upload takes.
    for elapsed in &answers {
        assert!(*elapsed < Duration::from_secs(10), "{answers:?}");
    }
    // And the server still works.
    let next = api.submit_ok(VALID);
    assert_eq!(
        api.wait_finished(&next, Duration::from_secs(60))["status"],
        "COMPLETED"
    );
}
