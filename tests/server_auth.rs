//! `gantry server` requires a token: the bootstrapping node creates an admin
//! token, prints it once and writes it 0600 under its data directory.

mod common;

use common::{cli, DevServer};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const HELLO: &str =
    "workflow:\n  name: hi\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

#[test]
fn server_mode_requires_the_bootstrap_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let args = [
        "server",
        "--bootstrap",
        "--local-backend",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let server = DevServer::start_with(&data, &args);
    let token_path = data.join("bootstrap-admin-token");
    let token = std::fs::read_to_string(&token_path).expect("bootstrap token file");
    assert!(token.len() >= 40, "token too short: {token:?}");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let api = server.client();
    // Probes and the version answer without a token; everything else does not.
    assert_eq!(api.get("/healthz").status, 200);
    assert_eq!(api.get("/api/version").status, 200);
    let refused = api.get("/api/workflow");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.json()["error_code"], "CREDENTIAL");
    let agent = reqwest::blocking::Client::new();
    let wrong = agent
        .get(format!("{}/api/workflow", server.url))
        .bearer_auth("not-a-token")
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);

    // With the token: submit through the CLI, the workflow runs, the submitter is the token's user.
    let file = dir.path().join("hello.yaml");
    std::fs::write(&file, HELLO).unwrap();
    let output = std::process::Command::new(common::BINARY)
        .args(["workflow", "submit", file.to_str().unwrap(), "-t", "json"])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let submitted: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = submitted["name"].as_str().unwrap().to_string();
    let query = |id: &str| -> serde_json::Value {
        agent
            .get(format!("{}/api/workflow/{id}", server.url))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let workflow = loop {
        let workflow = query(&id);
        if workflow["status"] == "COMPLETED" {
            break workflow;
        }
        assert!(std::time::Instant::now() < deadline, "{workflow}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(workflow["submitted_by"], "admin");
    let ready = agent.get(format!("{}/readyz", server.url)).send().unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    // Without the token the CLI fails with the server's message.
    let (code, _, stderr) = cli(&server.url, &["workflow", "list"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("token"), "{stderr}");

    // A restart keeps the token and does not mint another.
    server.stop();
    let server = DevServer::start_with(&data, &args);
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    let listed = agent
        .get(format!("{}/api/workflow", server.url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
}
