//! Probes of a caller acting beyond its grant, kept as tests: a user named
//! `*` reaching every user's tokens (glob injection), an operator
//! credential taking over another backend's stream or reporting on its
//! tasks (impersonation), a waiting node joining a live cluster for
//! anyone who asks (unauthenticated membership change), and a lagging
//! follower skipping the check of a workflow it did not hold yet
//! (authorization failing open).

mod common;

use bytes::BytesMut;
use common::{gantry_ok, wait_for, DevServer, Https, Pki, BINARY};
use gantry::protocol::wire::{encode_frame_into, FrameFormat, Up};
use gantry::protocol::FromOperator;
use gantry_storage::{TaskKey, TaskStatus};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `method path` against `url` with `token` (if any); (status, JSON body).
fn call(
    http: &reqwest::blocking::Client,
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// Probe (glob injection): a token of user `*` was made by an admin, and
/// since `${user}` went unescaped into the `user` role's `user/${user}`,
/// it listed, minted and deleted every user's tokens. Now the name is
/// refused where it would be made, and a name that exists anyway matches
/// only itself.
#[test]
fn a_user_named_star_cannot_reach_other_users_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start_with(&data, &["dev", "--listen", "127.0.0.1:0", "--auth"]);
    let admin = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let admin = admin.trim();
    let http = reqwest::blocking::Client::new();
    let url = &server.url;

    let (status, body) = call(
        &http,
        url,
        "POST",
        "/api/auth/user/bob/access_token/bob-laptop?roles=user",
        Some(admin),
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = call(
        &http,
        url,
        "POST",
        "/api/auth/user/%2A/access_token/star?roles=user",
        Some(admin),
    );
    if status == 200 {
        // The name was taken: the attack must still fail.
        let star = body.as_str().expect("secret").to_string();
        let attempts = [
            ("GET", "/api/auth/user/bob/access_token"),
            ("POST", "/api/auth/user/bob/access_token/minted?roles=user"),
            ("DELETE", "/api/auth/user/bob/access_token/bob-laptop"),
        ];
        for (method, path) in attempts {
            let (status, body) = call(&http, url, method, path, Some(&star));
            assert_eq!(status, 403, "user '*' {method} {path}: {body}");
        }
    }
    assert_eq!(status, 400, "a user named '*' was made: {body}");
    assert!(message(&body).starts_with("user: "), "{body}");
    assert!(message(&body).contains("letters, digits"), "{body}");

    // Token names and OSMO's user header (auth off) take the same set.
    let (status, body) = call(
        &http,
        url,
        "POST",
        "/api/auth/user/bob/access_token/a%2Ab?roles=user",
        Some(admin),
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).starts_with("token_name: "), "{body}");
    for user in ["a?b", "[ab]", "bob*"] {
        let path = format!(
            "/api/auth/user/{}/access_token/t?roles=user",
            user.replace('?', "%3F")
        );
        let (status, body) = call(&http, url, "POST", &path, Some(admin));
        assert_eq!(status, 400, "{user}: {body}");
    }

    // Bob's token is still there, and only his.
    let (status, body) = call(
        &http,
        url,
        "GET",
        "/api/auth/user/bob/access_token",
        Some(admin),
    );
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|token| token["token_name"].as_str())
        .collect();
    assert_eq!(names, ["bob-laptop"], "{body}");
}

fn cert(pki: &Pki, name: &str, kind: &str) {
    let dir = pki.dir.to_str().unwrap();
    gantry_ok(&[
        "tls", "cert", "create", "--ca", dir, "--name", name, "--kind", kind, "--out", dir,
    ]);
}

/// `gantry server --bootstrap` with TLS on `ip` (node `name` of `pki`),
/// plus `extra` flags; with its API over HTTPS with the admin token.
fn server(dir: &Path, pki: &Pki, name: &str, ip: &str, extra: &[&str]) -> (DevServer, Https) {
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
    ];
    args.extend(pki.server_flags(name));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.extend(common::shared_store_flags(&dir.join(name)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = DevServer::start_with(&dir.join(name), &args);
    let https = Https {
        http: pki.client(Duration::from_secs(30)),
        url: server.url.clone(),
        token: String::new(),
    };
    (server, https)
}

/// Frames of an operator as one request body.
fn frames(reports: Vec<FromOperator>) -> Vec<u8> {
    let mut body = BytesMut::new();
    for (index, message) in reports.into_iter().enumerate() {
        // Format 1, as an operator from before format negotiation sends it.
        encode_frame_into(
            &Up::report(index as u64 + 1, message),
            FrameFormat::Bincode,
            &mut body,
        )
        .unwrap();
    }
    body.to_vec()
}

/// The value of counter `name` with both `labels`, 0 when absent.
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Probe (operator impersonation): `backend:Connect` was granted on `*`, so
/// any operator credential opened the stream of any backend (taking over
/// its jobs) and its reports were applied to any task. Now a token names
/// its backends (`backend/<name>`), another backend's stream is refused
/// with 403 naming both, and reports about another backend's work are
/// dropped and counted.
#[test]
fn an_operator_credential_serves_only_its_own_backend() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki"), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let (server, mut api) = server(dir.path(), &pki, "node", "127.0.0.1", &["--bootstrap"]);
    let admin = std::fs::read_to_string(server.data_dir.join("bootstrap-admin-token")).unwrap();
    api.token = admin.trim().to_string();
    let token = |name: &str, roles: &str| {
        let (status, body) = call(
            &api.http,
            &api.url,
            "POST",
            &format!("/api/auth/access_token/{name}?roles={roles}&service=true"),
            Some(&api.token),
        );
        assert_eq!(status, 200, "{name}: {body}");
        body.as_str().unwrap().to_string()
    };
    // The role as documented before backends were named.
    let plain = token("plain", "backend");

    let ca = std::fs::read(pki.dir.join("ca.pem")).unwrap();
    let mut pem = std::fs::read(pki.dir.join("edge.pem")).unwrap();
    pem.extend(std::fs::read(pki.dir.join("edge-key.pem")).unwrap());
    let operator = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let connect = |token: &str, backend: &str, body: Vec<u8>| {
        let response = operator
            .post(format!(
                "{}/api/agent/connect?backend={backend}&instance=7",
                api.url
            ))
            .bearer_auth(token)
            .body(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().unwrap().to_vec())
    };
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);

    // Another backend's stream: refused, naming what was asked and held.
    let (status, body) = connect(&plain, "gpu", Vec::new());
    assert_eq!(status, 403, "role backend took backend gpu's stream");
    assert!(
        message(&json(&body)).contains("backend/<name>"),
        "{}",
        json(&body)
    );
    // Bound to `local`, and to a list.
    let local = token("local-op", "backend/local");
    let both = token("both-op", "backend/local,backend/lab");
    let (status, body) = call(
        &api.http,
        &api.url,
        "POST",
        "/api/auth/access_token/bad?roles=backend/no%2A",
        Some(&api.token),
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("roles"), "{body}");
    for (token, held) in [(&plain, "backend"), (&local, "backend/local")] {
        let (status, body) = connect(token, "gpu", Vec::new());
        let body = json(&body);
        assert_eq!(status, 403, "{body}");
        assert!(message(&body).contains("backend/gpu"), "{body}");
        assert!(message(&body).contains(held), "{body}");
    }
    let (status, body) = connect(&both, "gpu", Vec::new());
    assert_eq!(status, 403, "{}", json(&body));
    // Its own backends: the stream opens (and ends with the empty body).
    for backend in ["local", "lab"] {
        let (status, body) = connect(&both, backend, Vec::new());
        assert_eq!(status, 200, "{}", json(&body));
    }
    let (status, _) = connect(&local, "local", Vec::new());
    assert_eq!(status, 200);

    // A workflow on backend `gpu` (no operator there: it stays queued).
    let put = api
        .http
        .put(format!("{}/api/configs/pool/gpu", api.url))
        .bearer_auth(&api.token)
        .json(&json!({"description": "GPUs", "configs": {"backend": "gpu"}}))
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text());
    let submitted = api
        .http
        .post(format!("{}/api/pool/gpu/workflow", api.url))
        .bearer_auth(&api.token)
        .json(&json!({"file": "workflow:\n  name: gpu\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n"}))
        .send()
        .unwrap();
    let submitted: Value = submitted.json().unwrap();
    let id = submitted["name"].as_str().expect("workflow id").to_string();

    // Backend `local`'s stream (even with the admin's token) reports that
    // task failed and completes the first jobs: dropped, yet acknowledged.
    let key = TaskKey {
        workflow_id: id.clone(),
        task: "t".to_string(),
        retry_id: 0,
    };
    let reports = vec![
        FromOperator::TaskStatus {
            key: key.clone(),
            status: TaskStatus::Failed,
            exit_code: Some(1),
            message: Some("reported by another backend".to_string()),
            time: gantry::clock::now_ms(),
        },
        FromOperator::JobDone { job_id: 1 },
        FromOperator::JobDone { job_id: 2 },
    ];
    let (status, body) = connect(&api.token, "local", frames(reports));
    assert_eq!(status, 200, "{}", json(&body));
    let dropped = "gantry_operator_reports_dropped_total";
    let local_label = "backend=\"local\"";
    // Taken in once the report is either dropped or applied.
    let (metrics, task) = wait_for(Duration::from_secs(20), "the reports taken in", || {
        let metrics = api.http.get(format!("{}/metrics", api.url)).send();
        let metrics = metrics.and_then(|m| m.text()).map_err(|e| e.to_string())?;
        let (_, workflow) = api.get(&format!("/api/workflow/{id}"));
        let task = common::task_of(&workflow, "t").unwrap_or_default();
        let counted = counter(&metrics, dropped, &[local_label, "kind=\"task_status\""]);
        if counted > 0.0 || task["status"] == "FAILED" {
            Ok((metrics, task))
        } else {
            Err(workflow.to_string())
        }
    });
    assert_ne!(
        task["status"], "FAILED",
        "another backend's report applied: {task}"
    );
    assert!(task["exit_code"].is_null(), "{task}");
    assert_eq!(
        counter(&metrics, dropped, &[local_label, "kind=\"task_status\""]),
        1.0,
        "{metrics}"
    );
    assert!(
        counter(&metrics, dropped, &[local_label, "kind=\"job_done\""]) >= 1.0,
        "{metrics}"
    );
    // The workflow's own backend may still report on it.
    let (status, body) = connect(
        &token("gpu-op", "backend/gpu"),
        "gpu",
        frames(vec![FromOperator::TaskStatus {
            key,
            status: TaskStatus::Scheduling,
            exit_code: None,
            message: None,
            time: gantry::clock::now_ms(),
        }]),
    );
    assert_eq!(status, 200, "{}", json(&body));
    wait_for(Duration::from_secs(10), "the gpu report applied", || {
        let (_, workflow) = api.get(&format!("/api/workflow/{id}"));
        let task = common::task_of(&workflow, "t").unwrap_or_default();
        if task["status"] == "SCHEDULING" {
            Ok(())
        } else {
            Err(workflow.to_string())
        }
    });
}

/// Voters of the cluster as node `api` sees them.
fn voters(api: &Https) -> usize {
    api.members().map_or(0, |members| {
        members["members"]
            .as_array()
            .map_or(0, |list| list.iter().filter(|m| m["voter"] == true).count())
    })
}

/// Probe (unauthenticated membership change): a node started with neither
/// `--bootstrap` nor `--join` took `cluster join` from anyone, and a live
/// 3-voter cluster became 4 voters. Now it takes init and join only with
/// its one-time join token, and forgets it once it is a member.
#[test]
fn a_waiting_node_joins_only_with_its_join_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
            ("node4", &["127.0.0.4"]),
        ],
    );
    let (first, mut api) = server(dir.path(), &pki, "node1", "127.0.0.1", &["--bootstrap"]);
    let admin = std::fs::read_to_string(first.data_dir.join("bootstrap-admin-token")).unwrap();
    api.token = admin.trim().to_string();
    let peer = api.members().expect("members")["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let _others: Vec<DevServer> = [("node2", "127.0.0.2"), ("node3", "127.0.0.3")]
        .into_iter()
        .map(|(name, ip)| server(dir.path(), &pki, name, ip, &["--join", &peer]).0)
        .collect();
    wait_for(Duration::from_secs(60), "three voters", || {
        match voters(&api) {
            3 => Ok(()),
            n => Err(format!("{n} voters")),
        }
    });

    let (waiting, node4) = server(dir.path(), &pki, "node4", "127.0.0.4", &[]);

    // No credential, a wrong one, or the cluster's admin token (a waiting
    // node knows no tokens): refused, and the cluster keeps three voters.
    let join = format!("/api/cluster/join?peer={peer}");
    for token in [None, Some("not-the-join-token"), Some(api.token.as_str())] {
        for path in [join.as_str(), "/api/cluster/init"] {
            let (status, body) = call(&node4.http, &node4.url, "POST", path, token);
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert!(message(&body).contains("join token"), "{body}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(voters(&api), 3);

    // The token: printed at start, and 0600 in the node's data directory.
    let join_token_file = waiting.data_dir.join("join-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&join_token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "join-token mode {mode:o}");
    let join_token = std::fs::read_to_string(&join_token_file).unwrap();

    // With the join token, through the CLI: a member, the token spent.
    let output = Command::new(BINARY)
        .args(["cluster", "join", &peer, "--join-token-file"])
        .arg(&join_token_file)
        .env("GANTRY_URL", &node4.url)
        .env("GANTRY_CA", pki.dir.join("ca.pem"))
        .env_remove("GANTRY_TOKEN")
        .env("XDG_CONFIG_HOME", dir.path().join("no-config"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("joined the cluster"), "{stdout}");
    assert_eq!(voters(&api), 4);
    assert!(!join_token_file.exists(), "the join token file stays");
    let (status, body) = call(
        &node4.http,
        &node4.url,
        "POST",
        "/api/cluster/init",
        Some(join_token.trim()),
    );
    assert_eq!(status, 401, "a spent join token still works: {body}");
}

/// A TCP relay in front of a node's peer port that the test can pause:
/// bytes are held (not dropped) until it resumes, so the node behind it
/// lags behind the leader while it can still reach the leader itself.
struct Relay {
    address: String,
    paused: Arc<AtomicBool>,
}

impl Relay {
    fn start(bind: &str, target: String) -> Relay {
        let listener = TcpListener::bind(bind).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let paused = Arc::new(AtomicBool::new(false));
        let held = paused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                relay_pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    &held,
                );
                relay_pipe(server, client, &held);
            }
        });
        Relay { address, paused }
    }
}

fn relay_pipe(mut from: TcpStream, mut to: TcpStream, paused: &Arc<AtomicBool>) {
    let paused = paused.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while paused.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Probe (authorization fails open): a follower that had not applied a
/// workflow yet skipped the access check for it, so a user allowed only on
/// pool `default` cancelled an admin's workflow on pool `gpu` through that
/// follower (the cancel itself is forwarded to the leader). Now the
/// follower reads the workflow linearizably first, and refuses.
#[test]
fn a_lagging_follower_checks_a_workflow_it_does_not_hold_yet() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    let (first, mut api) = server(dir.path(), &pki, "node1", "127.0.0.1", &["--bootstrap"]);
    let admin = std::fs::read_to_string(first.data_dir.join("bootstrap-admin-token")).unwrap();
    api.token = admin.trim().to_string();
    let peer = api.members().expect("members")["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let (_second, _) = server(dir.path(), &pki, "node2", "127.0.0.2", &["--join", &peer]);
    // Node 3's peers reach it only through the relay.
    let port = TcpListener::bind("127.0.0.3:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = Relay::start("127.0.0.3:0", format!("127.0.0.3:{port}"));
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        "127.0.0.3:0".into(),
        "--peer-listen".into(),
        format!("127.0.0.3:{port}"),
        "--advertise-peer".into(),
        relay.address.clone(),
        "--join".into(),
        peer.clone(),
    ];
    args.extend(pki.server_flags("node3"));
    args.extend(common::shared_store_flags(&dir.path().join("node3")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let third = DevServer::start_with(&dir.path().join("node3"), &args);
    let lagging = Https {
        http: pki.client(Duration::from_secs(30)),
        url: third.url.clone(),
        token: api.token.clone(),
    };
    wait_for(Duration::from_secs(60), "three voters", || {
        match voters(&api) {
            3 => Ok(()),
            n => Err(format!("{n} voters")),
        }
    });

    let put = api
        .http
        .put(format!("{}/api/configs/pool/gpu", api.url))
        .bearer_auth(&api.token)
        .json(&json!({"description": "GPUs", "configs": {"backend": "local"}}))
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 200, "{:?}", put.text());
    let (status, ann) = call(
        &api.http,
        &api.url,
        "POST",
        "/api/auth/user/ann/access_token/ann-laptop?roles=user",
        Some(&api.token),
    );
    assert_eq!(status, 200, "{ann}");
    let ann = ann.as_str().unwrap().to_string();
    // Node 3 has everything so far.
    wait_for(
        Duration::from_secs(20),
        "node 3 to know ann",
        || match call(
            &lagging.http,
            &lagging.url,
            "GET",
            "/api/profile/settings",
            Some(&ann),
        ) {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    );

    relay.paused.store(true, Ordering::SeqCst);
    let submitted = api
        .http
        .post(format!("{}/api/pool/gpu/workflow", api.url))
        .bearer_auth(&api.token)
        .json(&json!({"file": "workflow:\n  name: admins\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sleep, '600']\n"}))
        .send()
        .unwrap();
    let submitted: Value = submitted.json().unwrap();
    let id = submitted["name"].as_str().expect("workflow id").to_string();
    // Node 3 lags: it does not list the workflow. (Held well below the
    // election timeout: a follower that hears nothing campaigns.)
    let (status, body) = lagging.get("/api/workflow?stale=true");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.to_string().contains(&id),
        "node 3 does not lag: {body}"
    );
    let paused = relay.paused.clone();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        paused.store(false, Ordering::SeqCst);
    });
    let (status, body) = call(
        &lagging.http,
        &lagging.url,
        "POST",
        &format!("/api/workflow/{id}/cancel"),
        Some(&ann),
    );
    resume.join().unwrap();
    assert_eq!(
        status, 403,
        "ann on pool gpu through a lagging follower: {body}"
    );
    assert!(message(&body).contains("pool/gpu"), "{body}");
    let (_, workflow) = api.get(&format!("/api/workflow/{id}"));
    assert!(
        !workflow["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("FAILED_CANCELED"),
        "{workflow}"
    );
    // A workflow that exists nowhere is 404 there, for anyone.
    let (status, body) = call(
        &lagging.http,
        &lagging.url,
        "POST",
        "/api/workflow/nothing-1/cancel",
        Some(&ann),
    );
    assert_eq!(status, 404, "{body}");
}
