//! `gantry operator` as its own process: it dials the server over mutual
//! TLS and HTTP/2, runs tasks with the local executor, loses nothing when
//! its connection is cut or the server is killed, and tells systemd it is
//! ready only once it is connected.

mod common;

use common::notify::NotifySocket;
use common::{gantry_ok, wait_for, DevServer, Https, Pki, BINARY};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A numbered sequence, slow enough to cut connections while it runs.
const COUNTER: &str = "workflow:
  name: counter
  tasks:
  - name: count
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 40); do echo line-$i; sleep 0.1; done']
";

/// A `gantry operator` process.
struct Operator {
    child: Child,
    log_path: PathBuf,
}

impl Operator {
    fn start(dir: &Path, pki: &Pki, cert: &str, servers: &str, token: &str) -> Operator {
        Operator::start_with_env(dir, pki, cert, servers, token, &[])
    }

    fn start_with_env(
        dir: &Path,
        pki: &Pki,
        cert: &str,
        servers: &str,
        token: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Operator {
        let token_file = dir.join(format!("{cert}-token"));
        std::fs::write(&token_file, token).unwrap();
        let log_path = dir.join(format!("{cert}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(BINARY)
            .args(["operator", "--servers", servers, "--backend", "local"])
            .args(["--task-root", "host"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--tls-ca")
            .arg(pki.dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(pki.dir.join(format!("{cert}.pem")))
            .arg("--tls-key")
            .arg(pki.dir.join(format!("{cert}-key.pem")))
            .arg("--work-dir")
            .arg(dir.join(format!("{cert}-work")))
            .env("GANTRY_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Operator { child, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

#[test]
fn the_operator_tells_systemd_it_is_ready_once_connected() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let secret = "operator-notify-secret-0123456789";
    let secret_file = dir.path().join("admin-token");
    std::fs::write(&secret_file, secret).unwrap();
    let mut socket = NotifySocket::bind(dir.path());

    // No server yet: the operator keeps trying and is not ready.
    let operator = Operator::start_with_env(
        dir.path(),
        &pki,
        "edge",
        &format!("https://{listen}"),
        secret,
        &[("NOTIFY_SOCKET", socket.path.as_os_str())],
    );
    assert!(
        !socket.wait_for("READY=1", Duration::from_secs(3)),
        "ready without a server: {:?}",
        socket.messages()
    );
    assert!(
        socket
            .messages()
            .iter()
            .any(|m| m.contains("STATUS=cannot connect to https://127.0.0.1")),
        "{:?}",
        socket.messages()
    );

    // The server comes: the operator connects and says so.
    let mut args: Vec<String> = [
        "server",
        "--bootstrap",
        "--listen",
        &listen,
        "--peer-listen",
        "127.0.0.1:0",
        "--bootstrap-token-file",
        secret_file.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(pki.server_flags("node"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = DevServer::start_with(&dir.path().join("node"), &args);
    assert!(
        socket.wait_for("READY=1", Duration::from_secs(30)),
        "no READY=1 once the server runs: {:?}\n{}",
        socket.messages(),
        operator.log()
    );
    assert!(
        socket.messages().iter().any(|m| m.contains(&format!(
            "STATUS=connected to https://{listen} as backend local"
        ))),
        "{:?}",
        socket.messages()
    );
    drop(operator);
    server.stop();
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cert(pki: &Pki, name: &str, kind: &str) {
    let dir = pki.dir.to_str().unwrap();
    gantry_ok(&[
        "tls", "cert", "create", "--ca", dir, "--name", name, "--kind", kind, "--out", dir,
    ]);
}

/// A TLS server without `--local-backend`: only a remote operator runs tasks.
fn start_server(dir: &Path, pki: &Pki, listen: &str) -> (DevServer, Https) {
    let mut args: Vec<String> = [
        "server",
        "--bootstrap",
        "--listen",
        listen,
        "--peer-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(pki.server_flags("node"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = dir.join("node");
    let server = DevServer::start_with(&data, &args);
    let token = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let https = Https {
        http: pki.client(Duration::from_secs(10)),
        url: server.url.clone(),
        token: token.trim().to_string(),
    };
    (server, https)
}

fn wait_status(api: &Https, id: &str, wanted: &str, limit: Duration) -> Value {
    wait_for(limit, &format!("{id} to be {wanted}"), || {
        let (status, body) = api
            .try_get(&format!("/api/workflow/{id}"))
            .map_err(|e| e.to_string())?;
        if status == 200 && body["status"] == wanted {
            Ok(body)
        } else {
            Err(format!("{status}: {}", body["status"]))
        }
    })
}

fn task_status(api: &Https, id: &str) -> String {
    match api.try_get(&format!("/api/workflow/{id}")) {
        Ok((200, body)) => common::task_of(&body, "count")
            .and_then(|task| task["status"].as_str().map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn logs(api: &Https, id: &str) -> String {
    api.http
        .get(format!("{}/api/workflow/{id}/logs", api.url))
        .bearer_auth(&api.token)
        .send()
        .and_then(|response| response.text())
        .unwrap_or_default()
}

/// Every `line-N` for N in 1..=40 appears exactly once, in order.
fn assert_counted_once(logs: &str) {
    let numbers: Vec<u32> = logs
        .lines()
        .filter_map(|line| line.split("line-").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>(), "logs:\n{logs}");
}

/// Every `line-N` for N in 1..=40 appears, in order of first appearance.
/// Until log lines live in replicated chunks, a server killed between
/// storing lines and committing their batch stores them again on resend.
fn assert_counted_at_least_once(logs: &str) {
    let mut numbers: Vec<u32> = logs
        .lines()
        .filter_map(|line| line.split("line-").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let mut seen = std::collections::HashSet::new();
    numbers.retain(|n| seen.insert(*n));
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>(), "logs:\n{logs}");
}

#[test]
fn a_remote_operator_runs_workflows_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let operator = Operator::start(dir.path(), &pki, "edge", &server.url, &api.token);

    let id = api.submit_ok(COUNTER);
    let workflow = wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));
    let task = common::task_of(&workflow, "count").unwrap();
    assert_eq!(task["exit_code"], 0, "{workflow}");
    assert_counted_once(&logs(&api, &id));
    assert!(operator.log().contains("connected to the control plane"));

    // The stream outlives any request-size limit: 6 MB of log lines (the
    // WORKFLOW config's log-line limits raised to take them).
    let raised = api
        .http
        .put(format!("{}/api/configs/workflow", api.url))
        .bearer_auth(&api.token)
        .json(&serde_json::json!({
            "configs": {"max_task_log_lines": 100_000, "max_log_lines": 100_000},
            "description": "room for the test's lines",
        }))
        .send()
        .unwrap();
    assert_eq!(raised.status().as_u16(), 200);
    let chatty = "workflow:
  name: chatty
  tasks:
  - name: talk
    image: ubuntu
    command: [sh, -c, 'seq 1 60000 | sed s/$/-0123456789012345678901234567890123456789012345678901234567890123456789012345678/']
";
    let id = api.submit_ok(chatty);
    wait_status(&api, &id, "COMPLETED", Duration::from_secs(120));
    let text = logs(&api, &id);
    let lines = text
        .lines()
        .filter(|line| line.contains("-0123456789"))
        .count();
    assert_eq!(lines, 60000);
}

#[test]
fn the_operator_stream_refuses_wrong_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "cli", "client");
    cert(&pki, "edge", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let ca = std::fs::read(pki.dir.join("ca.pem")).unwrap();
    let client_with = |name: Option<&str>| {
        let mut builder = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(10));
        if let Some(name) = name {
            let mut pem = std::fs::read(pki.dir.join(format!("{name}.pem"))).unwrap();
            pem.extend(std::fs::read(pki.dir.join(format!("{name}-key.pem"))).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    };
    let connect = |client: &reqwest::blocking::Client, token: Option<&str>, query: &str| {
        let mut request = client
            .post(format!("{}/api/agent/connect?{query}", server.url))
            .body(Vec::new());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let good_query = "backend=local&instance=5";

    // No client certificate at all.
    let (status, body) = connect(&client_with(None), Some(&api.token), good_query);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("kind operator"),
        "{body}"
    );
    // A certificate of the wrong kind.
    let (status, body) = connect(&client_with(Some("cli")), Some(&api.token), good_query);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("kind client"),
        "{body}"
    );
    // The right certificate without a token, or with a bad one.
    let operator = client_with(Some("edge"));
    let (status, _) = connect(&operator, None, good_query);
    assert_eq!(status, 401);
    let (status, _) = connect(&operator, Some("not-a-token"), good_query);
    assert_eq!(status, 401);
    // Bad parameters name the field.
    let (status, body) = connect(&operator, Some(&api.token), "backend=local&instance=0");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("instance"),
        "{body}"
    );
    let (status, body) = connect(
        &operator,
        Some(&api.token),
        "backend=no%20spaces&instance=1",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("backend"),
        "{body}"
    );
}

/// A TCP relay the test can cut: every open connection is shut down at once.
struct Relay {
    address: String,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let tracked = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut sockets = tracked.lock().unwrap();
                sockets.push(client.try_clone().unwrap());
                sockets.push(server.try_clone().unwrap());
                drop(sockets);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { address, open }
    }

    fn cut(&self) {
        for socket in self.open.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn cutting_the_operator_connection_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let relay = Relay::start(server.url.trim_start_matches("https://").to_string());
    let operator = Operator::start(
        dir.path(),
        &pki,
        "edge",
        &format!("https://{}", relay.address),
        &api.token,
    );

    let id = api.submit_ok(COUNTER);
    wait_for(
        Duration::from_secs(60),
        "the task to run",
        || match task_status(&api, &id).as_str() {
            "RUNNING" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    for _ in 0..3 {
        relay.cut();
        std::thread::sleep(Duration::from_millis(700));
    }
    let workflow = wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));
    assert_eq!(common::task_of(&workflow, "count").unwrap()["exit_code"], 0);
    assert_counted_once(&logs(&api, &id));
    let log = operator.log();
    assert!(
        log.contains("link to the control plane lost"),
        "the relay never cut the stream; operator log:\n{log}"
    );
}

/// Probe: two executors serve one backend (as `--local-backend` on several
/// members does, or an operator started beside one still connected). Each
/// new link of either is greeted with a hello listing what that executor
/// runs; the cluster took the other's task as lost at every such hello and
/// ran it again as the next retry while the first run went on (the cluster
/// test with a fast clock failed so, now and then). A hello of a live
/// process on a new link now proposes nothing.
#[test]
fn two_operators_of_one_backend_relinking_rerun_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "first", "operator");
    cert(&pki, "second", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let operators = [
        Operator::start(dir.path(), &pki, "first", &server.url, &api.token),
        Operator::start(dir.path(), &pki, "second", &server.url, &api.token),
    ];
    // Both have said hello once: what they run from now on is theirs.
    wait_for(Duration::from_secs(30), "two hellos", || {
        match server.log().matches("relinked=false").count() {
            2.. => Ok(()),
            seen => Err(format!("{seen} hellos")),
        }
    });
    let id = api.submit_ok(COUNTER);
    let workflow = wait_status(&api, &id, "COMPLETED", Duration::from_secs(90));
    let task = common::task_of(&workflow, "count").unwrap();
    assert_eq!(task["retry_id"], 0, "{workflow}");
    assert_eq!(task["exit_code"], 0);
    assert_counted_once(&logs(&api, &id));
    // The executors took turns on the backend's connection meanwhile.
    let relinks = server.log().matches("relinked=true").count();
    assert!(
        relinks >= 2,
        "{relinks} relinks; logs:\n{}\n{}",
        operators[0].log(),
        operators[1].log()
    );
}

#[test]
fn the_operator_outlives_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    // A fixed port, so the restarted server is where the operator looks.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (server, api) = start_server(dir.path(), &pki, &listen);
    let operator = Operator::start(dir.path(), &pki, "edge", &server.url, &api.token);

    let id = api.submit_ok(COUNTER);
    wait_for(
        Duration::from_secs(60),
        "the task to run",
        || match task_status(&api, &id).as_str() {
            "RUNNING" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let (restarted, _) = start_server(dir.path(), &pki, &listen);
    let workflow = wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));
    assert_eq!(common::task_of(&workflow, "count").unwrap()["exit_code"], 0);
    assert_counted_at_least_once(&logs(&api, &id));
    assert!(operator.log().contains("link to the control plane lost"));
    drop(restarted);
}

/// The API URL of the leader `api`'s node knows.
fn leader_of(api: &Https) -> String {
    wait_for(Duration::from_secs(20), "a leader", || {
        let members = api.members().ok_or("no members")?;
        let leader = members["leader_id"].as_u64().ok_or("no leader yet")?;
        members["members"]
            .as_array()
            .and_then(|list| list.iter().find(|m| m["id"].as_u64() == Some(leader)))
            .and_then(|m| m["api_url"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("leader {leader} not listed in {members}"))
    })
}

/// Node `index` of a three-node cluster on 127.0.0.`index` (no local backend).
fn start_member(dir: &Path, pki: &Pki, index: usize, extra: &[&str]) -> DevServer {
    let ip = format!("127.0.0.{index}");
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
    ];
    args.extend(pki.server_flags(&format!("node{index}")));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.extend(common::shared_store_flags(
        &dir.join(format!("node{index}")),
    ));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(&dir.join(format!("node{index}")), &args)
}

#[test]
fn the_operator_follows_the_leader_through_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        dir.path(),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    cert(&pki, "edge", "operator");
    let first = start_member(dir.path(), &pki, 1, &["--bootstrap"]);
    let token = std::fs::read_to_string(dir.path().join("node1/bootstrap-admin-token")).unwrap();
    let api_of = |server: &DevServer| Https {
        http: pki.client(Duration::from_secs(10)),
        url: server.url.clone(),
        token: token.trim().to_string(),
    };
    let members = api_of(&first).members().expect("members");
    let peer = members["members"][0]["peer_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no peer address in {members}"))
        .to_string();
    let mut servers = vec![Some(first)];
    for index in 2..=3 {
        servers.push(Some(start_member(
            dir.path(),
            &pki,
            index,
            &["--join", &peer],
        )));
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().url.clone())
        .collect();
    // Start with a follower first in the list: the operator must find the leader.
    let order = [urls[1].clone(), urls[2].clone(), urls[0].clone()].join(",");
    let operator = Operator::start(dir.path(), &pki, "edge", &order, token.trim());

    let any = api_of(servers[0].as_ref().unwrap());
    let id = any.submit_ok(COUNTER);
    wait_status(&any, &id, "COMPLETED", Duration::from_secs(60));

    let leader_url = leader_of(&any);
    let killed = urls
        .iter()
        .position(|url| *url == leader_url)
        .unwrap_or_else(|| panic!("leader {leader_url} is none of {urls:?}"));
    servers[killed].take().unwrap().kill9();
    let survivor = api_of(servers.iter().flatten().next().unwrap());
    let id = wait_for(
        Duration::from_secs(30),
        "a submit after the kill",
        || match survivor.try_submit(COUNTER) {
            Ok((200, body)) => Ok(body["name"].as_str().unwrap_or_default().to_string()),
            Ok((status, body)) => Err(format!("{status}: {body}")),
            Err(error) => Err(error.to_string()),
        },
    );
    let workflow = wait_status(&survivor, &id, "COMPLETED", Duration::from_secs(60));
    assert_eq!(common::task_of(&workflow, "count").unwrap()["exit_code"], 0);
    // Log lines live on the node the operator streams to (the new leader)
    // until logs move to object storage.
    let leader = Https {
        url: leader_of(&survivor),
        ..survivor.clone()
    };
    assert_counted_once(&logs(&leader, &id));
    let log = operator.log();
    assert!(
        log.contains("not the leader; following"),
        "operator log:\n{log}"
    );
    assert!(
        log.contains("link to the control plane lost"),
        "operator log:\n{log}"
    );
}

/// `gantry <args> -t json` against `url` over TLS with `token`.
fn try_cli_json(pki: &Pki, url: &str, token: &str, args: &[&str]) -> Result<Value, String> {
    let output = Command::new(BINARY)
        .args(args)
        .args(["-t", "json"])
        .env("GANTRY_URL", url)
        .env("GANTRY_CA", pki.dir.join("ca.pem"))
        .env("GANTRY_TOKEN", token)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "gantry {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("{args:?}: {e}"))
}

fn cli_json(pki: &Pki, url: &str, token: &str, args: &[&str]) -> Value {
    try_cli_json(pki, url, token, args).unwrap_or_else(|error| panic!("{error}"))
}

/// OSMO's "register a backend" flow with Gantry's binary: a service token
/// with the backend role bound to the backend (OSMO's name for the role),
/// an operator with it and an operator certificate,
/// the backend online, then offline once the operator stops.
#[test]
fn a_backend_registers_goes_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let url = server.url.clone();
    let service = dir.path().join("service.json");
    std::fs::write(&service, "{\"backend_heartbeat_grace\": \"7s\"}").unwrap();
    cli_json(
        &pki,
        &url,
        &api.token,
        &[
            "config",
            "update",
            "SERVICE",
            "--file",
            service.to_str().unwrap(),
        ],
    );
    let created = cli_json(
        &pki,
        &url,
        &api.token,
        &[
            "token",
            "set",
            "edge-operator",
            "--service",
            "--roles",
            "osmo-backend/local",
        ],
    );
    let backend_token = created["token"].as_str().expect("token").to_string();

    // A token without the backend role may not open the stream.
    let user = cli_json(
        &pki,
        &url,
        &api.token,
        &["token", "set", "someone", "--roles", "user"],
    );
    let refused = Operator::start(
        dir.path(),
        &pki,
        "edge",
        &url,
        user["token"].as_str().unwrap(),
    );
    wait_for(
        Duration::from_secs(20),
        "the refusal in the operator log",
        || {
            let log = refused.log();
            if log.contains("refused this operator") && log.contains("backend:Connect") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    drop(refused);

    let operator = Operator::start(dir.path(), &pki, "edge", &url, &backend_token);
    wait_for(Duration::from_secs(30), "backend local online", || {
        let backend = try_cli_json(
            &pki,
            &url,
            &api.token,
            &["config", "show", "BACKEND", "local"],
        )?;
        if backend["online"] == true {
            Ok(())
        } else {
            Err(backend.to_string())
        }
    });
    let id = api.submit_ok(COUNTER);
    wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));

    drop(operator);
    wait_for(Duration::from_secs(30), "backend local offline", || {
        let backend = cli_json(
            &pki,
            &url,
            &api.token,
            &["config", "show", "BACKEND", "local"],
        );
        if backend["online"] == false {
            Ok(())
        } else {
            Err(backend.to_string())
        }
    });
}

/// Runs `gantry operator` with `token_file` and waits (at most 30 s) for it
/// to stop by itself; returns (exit code, stderr). A token file the
/// operator cannot use must stop it at start, not make it retry forever.
fn operator_refusal(pki: &Pki, url: &str, token_file: &Path) -> (i32, String) {
    let mut child = Command::new(BINARY)
        .args(["operator", "--servers", url, "--backend", "local"])
        .args(["--task-root", "host"])
        .arg("--token-file")
        .arg(token_file)
        .arg("--tls-ca")
        .arg(pki.dir.join("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.dir.join("edge.pem"))
        .arg("--tls-key")
        .arg(pki.dir.join("edge-key.pem"))
        .arg("--work-dir")
        .arg(token_file.with_extension("work"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!(
                "the operator kept running with token file {}:\n{stderr}",
                token_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

/// The runbooks' recipe: `gantry token set NAME --service --roles
/// backend/<backend> -t json > FILE`, that file as `--token-file`. The operator takes what
/// the CLI printed, and the bare secret with whitespace around it; any
/// other file stops it at start, naming the file and what it expected,
/// without repeating the file's text.
#[test]
fn the_operator_takes_the_token_file_as_the_runbooks_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let (server, api) = start_server(dir.path(), &pki, "127.0.0.1:0");
    let url = server.url.clone();
    let printed = Command::new(BINARY)
        .args([
            "token",
            "set",
            "edge-operator",
            "--service",
            "--roles",
            "backend/local",
            "-t",
            "json",
        ])
        .env("GANTRY_URL", &url)
        .env("GANTRY_CA", pki.dir.join("ca.pem"))
        .env("GANTRY_TOKEN", &api.token)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let printed = String::from_utf8(printed.stdout).unwrap();
    let secret = serde_json::from_str::<Value>(&printed).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // What `-t json` printed, written to the file unchanged.
    let operator = Operator::start(dir.path(), &pki, "edge", &url, &printed);
    let id = api.submit_ok(COUNTER);
    wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));
    assert!(
        !operator.log().contains("failed to parse header value"),
        "{}",
        operator.log()
    );
    drop(operator);

    // The bare secret with spaces and newlines around it.
    let operator = Operator::start(dir.path(), &pki, "edge", &url, &format!("  {secret}\r\n\n"));
    let id = api.submit_ok(COUNTER);
    wait_status(&api, &id, "COMPLETED", Duration::from_secs(60));
    drop(operator);

    // Anything else: refused at start, naming the file and what it expected.
    let text_output = format!("Token 'edge-operator' (shown once; keep it safe):\n{secret}\n");
    for (name, content, found) in [
        ("empty", String::new(), "nothing but whitespace"),
        ("two-lines", text_output, "2 lines"),
        (
            "no-token-key",
            format!("{{\"secret\": \"{secret}\"}}"),
            "without \"token\"",
        ),
        ("cut-json", format!("{{\"token\": \"{secret}"), "not JSON"),
        ("bearer", format!("Bearer {secret}"), "a space"),
    ] {
        let file = dir.path().join(format!("token-{name}"));
        std::fs::write(&file, &content).unwrap();
        let (code, stderr) = operator_refusal(&pki, &url, &file);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("the token file {}", file.display()))
                && stderr.contains(found)
                && stderr.contains("expected the token's secret alone")
                && stderr.contains("-t json"),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains(&secret),
            "{name} repeated the secret: {stderr}"
        );
    }
}
