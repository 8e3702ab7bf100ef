//! Credential values at rest: a server given `--cluster-key` seals the
//! WORKFLOW config's credentials before it proposes them, so no file of the
//! data directory (log, state, snapshot file) and no snapshot holds them in
//! the clear — the probe of the isolation review, which found a Slack token
//! in plain text in `state.redb` and in snapshots, kept as a test. A member
//! whose key file lacks the key a credential was sealed with says so; after
//! `cluster key rotate` and `reseal` the credentials are under the new key.

mod common;

use common::{files_holding, start_tls_server, DevServer, Https, BINARY};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SLACK_TOKEN: &str = "xoxb-SLACK-SECRET-4242";
const DATA_KEY: &str = "DATA-SECRET-KEY-9999";
const USER_TOKEN: &str = "hf_USER-SECRET-8888";

fn gantry(args: &[&str]) -> String {
    gantry_as(args, "")
}

/// The CLI with `token` as GANTRY_TOKEN.
fn gantry_as(args: &[&str], token: &str) -> String {
    let output = Command::new(BINARY)
        .args(args)
        .env("GANTRY_TOKEN", token)
        .output()
        .expect("run gantry");
    assert!(
        output.status.success(),
        "gantry {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The server of `start_tls_server` started again on its data, with `key`.
fn restart(dir: &Path, pki: &common::Pki, key: &str) -> DevServer {
    let mut args: Vec<String> = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(pki.server_flags("node"));
    args.extend(["--cluster-key".to_string(), key.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(&dir.join("node"), &args)
}

fn api(server: &DevServer, pki: &common::Pki) -> Https {
    Https {
        http: pki.client(Duration::from_secs(30)),
        url: server.url.clone(),
        token: std::fs::read_to_string(server.data_dir.join("bootstrap-admin-token"))
            .expect("admin token"),
    }
}

fn send(api: &Https, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = api
        .http
        .request(method, format!("{}{path}", api.url))
        .bearer_auth(&api.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn credentials_are_sealed_in_the_log_the_state_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster-key");
    let key_arg = key.display().to_string();
    gantry(&["cluster", "key", "create", "--out", &key_arg]);
    let (pki, server) = start_tls_server(dir.path(), &["--cluster-key", &key_arg]);
    let api = api(&server, &pki);

    let config = json!({
        "configs": {
            "workflow_data": {"credential": {
                "endpoint": "s3://bucket/data",
                "override_url": "http://127.0.0.1:9",
                "access_key_id": "AKIAEXAMPLE",
                "access_key": DATA_KEY,
            }},
            "workflow_alerts": {"slack_token": SLACK_TOKEN},
        },
        "description": "credentials",
    });
    let (status, body) = send(
        &api,
        reqwest::Method::PUT,
        "/api/configs/workflow",
        Some(config),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &api,
        reqwest::Method::POST,
        "/api/credentials/hf",
        Some(json!({"generic_credential": {"credential": {"token": USER_TOKEN}}})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, shown) = send(&api, reqwest::Method::GET, "/api/configs/workflow", None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["workflow_alerts"]["slack_token"], "[MASKED]",
        "{shown}"
    );

    // A snapshot, saved as a user would, and its state image.
    let snapshot = dir.path().join("saved.snap");
    gantry_as(
        &[
            "snapshot",
            "save",
            &snapshot.display().to_string(),
            "--url",
            &server.url,
            "--ca",
            &dir.path().join("ca.pem").display().to_string(),
        ],
        &api.token,
    );
    let archive = std::fs::read(&snapshot).expect("snapshot");
    let (_meta, image) = gantry_raft::snapshot_file::read(&archive).expect("a snapshot");
    for secret in [SLACK_TOKEN, DATA_KEY, USER_TOKEN] {
        assert!(
            !image.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the snapshot's state"
        );
        let holding = files_holding(&server.data_dir, secret.as_bytes());
        assert!(holding.is_empty(), "{secret} in the clear in {holding:?}");
    }
    let sealed_prefix = b"gantry-sealed:1:";
    assert!(
        image
            .windows(sealed_prefix.len())
            .any(|w| w == sealed_prefix),
        "the state holds the sealed values"
    );
    drop(server);

    // A member whose key file lacks the key: the stored credential does not
    // open, and the error says which key to bring.
    let other_key = dir.path().join("other-key");
    gantry(&[
        "cluster",
        "key",
        "create",
        "--out",
        &other_key.display().to_string(),
    ]);
    let server = restart(dir.path(), &pki, &other_key.display().to_string());
    let api = Https {
        url: server.url.clone(),
        ..api
    };
    let patch = json!({"configs_dict": {"max_num_tasks": 50}});
    let (status, body) = send(
        &api,
        reqwest::Method::PATCH,
        "/api/configs/workflow",
        Some(patch.clone()),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not hold"),
        "{body}"
    );
    drop(server);

    // Rotated: the old key stays in the file, so everything opens; reseal
    // moves every credential under the new key.
    let rotated = gantry(&["cluster", "key", "rotate", "--file", &key_arg]);
    let new_id = rotated
        .split("new key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the new key's id")
        .to_string();
    let server = restart(dir.path(), &pki, &key_arg);
    let api = Https {
        url: server.url.clone(),
        ..api
    };
    let (status, body) = send(
        &api,
        reqwest::Method::PATCH,
        "/api/configs/workflow",
        Some(patch),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(&api, reqwest::Method::POST, "/api/cluster/key/reseal", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_credentials_resealed"], 1, "{body}");
    let (status, body) = send(&api, reqwest::Method::POST, "/api/cluster/key/reseal", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_credentials_resealed"], 0, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already"),
        "a second reseal has nothing to do: {body}"
    );
    let archive = api
        .http
        .get(format!("{}/api/cluster/snapshot", api.url))
        .bearer_auth(&api.token)
        .send()
        .expect("snapshot")
        .bytes()
        .expect("snapshot bytes");
    let (_meta, image) = gantry_raft::snapshot_file::read(&archive).expect("a snapshot");
    let under_new = format!("gantry-sealed:1:{new_id}:");
    let count = image
        .windows(under_new.len())
        .filter(|w| *w == under_new.as_bytes())
        .count();
    assert!(
        count >= 3,
        "both config credentials and the user's under key {new_id}: {count}"
    );
}
