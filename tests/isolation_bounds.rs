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

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every directory and file under `dir` (with `dir`), depth first.
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            found.extend(tree(&entry.unwrap().path()));
        }
    }
    found
}

/// Runs `gantry ARGS` with umask 000 (the umask a careless unit might give).
fn with_open_umask(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", common::BINARY])
        .args(args);
    command
}

#[test]
fn the_data_directory_and_its_secrets_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // Found wide open: tightened.
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let server = DevServer::start_wrapped(
        &["sh", "-c", "umask 000; exec \"$0\" \"$@\""],
        &data,
        &[
            "server",
            "--bootstrap",
            "--local-backend",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ],
    );
    let token = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let snapshot = dir.path().join("backup.snapshot");
    let output = with_open_umask(&["snapshot", "save", snapshot.to_str().unwrap()])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(mode(&snapshot), 0o600, "snapshot save output");

    // A restore seeds a private directory too.
    let restored = dir.path().join("restored");
    let output = with_open_umask(&[
        "snapshot",
        "restore",
        snapshot.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for (root, must) in [
        (
            &data,
            &[
                "raft",
                "raft/state.redb",
                "raft/raft-log.redb",
                "node-id",
                "gantry.lock",
                "bootstrap-admin-token",
            ][..],
        ),
        (&restored, &["raft", "raft/state.redb"][..]),
    ] {
        for name in must {
            assert!(root.join(name).exists(), "{name} under {}", root.display());
        }
        assert_eq!(mode(root), 0o700, "{}", root.display());
        let raft = root.join("raft");
        for path in tree(&raft)
            .into_iter()
            .chain(must.iter().map(|n| root.join(n)))
        {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&path), want, "{}", path.display());
        }
    }
    // Nothing under the data directory is reachable by others, whatever
    // its own mode: the directory itself is closed.
    eprintln!(
        "modes with umask 000: {}",
        tree(&data)
            .iter()
            .map(|p| format!("{} {:o}", p.strip_prefix(&data).unwrap().display(), mode(p)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// One refusal as curl sees it: exit code, status and body.
fn curl_post(
    version: &str,
    ca: &std::path::Path,
    url: &str,
    token: &str,
    body: &std::path::Path,
) -> (i32, String, String) {
    let output = std::process::Command::new("curl")
        .args(["-s", version, "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{url}/api/pool/default/workflow"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        output.status.code().unwrap_or(-1),
        status.to_string(),
        body.to_string(),
    )
}

#[test]
fn refusals_before_the_body_is_read_reach_the_caller_over_http2_and_http1() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is required"
        );
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pki, server) = common::start_tls_server(dir.path(), &["--local-backend"]);
    let data = dir.path().join("node");
    let admin = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let admin = admin.trim().to_string();
    let ca = pki.dir.join("ca.pem");
    // A service token of the `backend` role: no `workflow:Create`.
    let output = std::process::Command::new(common::BINARY)
        .args([
            "token",
            "set",
            "no-submit",
            "--service",
            "--roles",
            "backend",
            "-t",
            "json",
        ])
        .env("GANTRY_URL", &server.url)
        .env("GANTRY_CA", &ca)
        .env("GANTRY_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let minted: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let limited = minted["token"].as_str().unwrap().to_string();

    let small = dir.path().join("200k.json");
    let spec = format!("workflow:\n  name: x\n# {}\n", "x".repeat(200_000));
    std::fs::write(
        &small,
        serde_json::to_vec(&json!({ "file": spec })).unwrap(),
    )
    .unwrap();
    let large = dir.path().join("5m.json");
    std::fs::write(
        &large,
        serde_json::to_vec(&json!({ "file": "x".repeat(BODY_BYTES_MAX + (1 << 20)) })).unwrap(),
    )
    .unwrap();

    let cases = [
        ("401", "not-a-token", &small, "CREDENTIAL"),
        ("403", limited.as_str(), &small, "workflow:Create"),
        ("413", admin.as_str(), &large, "larger than the limit"),
    ];
    let mut failures = Vec::new();
    for version in ["--http2", "--http1.1"] {
        for (status, token, body, says) in &cases {
            let mut seen = 0;
            for _ in 0..40 {
                let (code, got, text) = curl_post(version, &ca, &server.url, token, body);
                if code == 0 && got == *status && text.contains(says) {
                    seen += 1;
                } else {
                    failures.push(format!(
                        "{version} {status}: curl exit {code}, status {got}, {text:.120}"
                    ));
                }
            }
            eprintln!("{version} {status}: {seen}/40 refusals seen with their message");
        }
    }
    assert!(
        failures.is_empty(),
        "{} not seen:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The API's connections have a limit of their own, far above the peers'
/// 64: a hundred clients that each hold an idle connection (as `logs -f`
/// does) leave the API answering new callers.
#[test]
fn a_hundred_held_api_connections_leave_the_api_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, server) = common::start_tls_server(dir.path(), &[]);
    let version = format!("{}/api/version", server.url);
    let held: Vec<reqwest::blocking::Client> = (0..100)
        .map(|n| {
            let client = pki.client(Duration::from_secs(10));
            let status = client
                .get(&version)
                .send()
                .unwrap_or_else(|e| panic!("connection {n}: {e}"))
                .status();
            assert!(status.is_success(), "connection {n}: {status}");
            client
        })
        .collect();
    // Each client keeps its connection open; a new caller is still served.
    let fresh = pki.client(Duration::from_secs(10));
    let status = fresh.get(&version).send().expect("a new caller").status();
    assert!(status.is_success(), "{status}");
    drop(held);
}

/// One caller follows at most `FOLLOWERS_PER_CALLER_MAX` (64) running
/// workflows' logs on a server: the next follow is refused with 429 and a
/// message that says why, another caller is not affected, and a closed
/// follow gives its slot back.
#[test]
fn a_caller_follows_a_bounded_number_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, server) = common::start_tls_server(dir.path(), &["--local-backend"]);
    let admin = std::fs::read_to_string(server.data_dir.join("bootstrap-admin-token")).unwrap();
    let api = common::Https {
        http: pki.client(Duration::from_secs(30)),
        url: server.url.clone(),
        token: admin.clone(),
    };
    let id = api.submit_ok(
        "workflow:\n  name: long\n  tasks:\n  - name: sleeper\n    image: ubuntu:24.04\n    command: [sleep, '600']\n",
    );
    let logs = format!("{}/api/workflow/{id}/logs", server.url);
    let follow = |client: &reqwest::blocking::Client, token: &str| {
        client.get(&logs).bearer_auth(token).send().expect("follow")
    };
    let client = pki.client(Duration::from_secs(30));
    let held: Vec<reqwest::blocking::Response> = (0..64)
        .map(|n| {
            let response = follow(&client, &admin);
            assert_eq!(response.status(), 200, "follow {n}");
            response
        })
        .collect();
    let refused = follow(&client, &admin);
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().unwrap_or_default();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already follows 64"),
        "{body}"
    );
    drop(held);
    common::wait_for(Duration::from_secs(10), "a slot back", || {
        let response = follow(&client, &admin);
        match response.status().as_u16() {
            200 => Ok(()),
            other => Err(other.to_string()),
        }
    });
}
