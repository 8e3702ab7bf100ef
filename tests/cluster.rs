//! A three-node cluster of real `gantry server` processes on 127.0.0.1-3,
//! with certificates from `gantry tls`: joins, members (the leader's view,
//! from any node; a killed node unreachable), writes through any node, a
//! SIGKILLed leader, and snapshot save/restore.

mod common;

use common::{wait_for, DevServer, BINARY};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HELLO: &str = "workflow:\n  name: replicated\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

fn gantry(args: &[&str]) {
    let status = Command::new(BINARY)
        .args(args)
        .status()
        .expect("run gantry");
    assert!(status.success(), "gantry {args:?} failed");
}

struct Cluster {
    pki: PathBuf,
    token: String,
    http: reqwest::blocking::Client,
}

impl Cluster {
    fn server_args(&self, index: usize, extra: &[&str]) -> Vec<String> {
        let ip = format!("127.0.0.{index}");
        let mut args: Vec<String> = vec![
            "server".into(),
            "--local-backend".into(),
            "--listen".into(),
            format!("{ip}:0"),
            "--peer-listen".into(),
            format!("{ip}:0"),
            "--tls-ca".into(),
            self.pki.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            self.pki
                .join(format!("node{index}.pem"))
                .display()
                .to_string(),
            "--tls-key".into(),
            self.pki
                .join(format!("node{index}-key.pem"))
                .display()
                .to_string(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args
    }

    fn start(&self, data: &Path, index: usize, extra: &[&str]) -> DevServer {
        let args = self.server_args(index, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(data, &args)
    }

    fn get(&self, server: &DevServer, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(&self.token)
            .send()
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn submit(&self, server: &DevServer) -> String {
        let response = self
            .http
            .post(format!("{}/api/pool/default/workflow", server.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "file": HELLO }))
            .send()
            .expect("submit");
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().unwrap();
        body["name"].as_str().unwrap().to_string()
    }

    fn wait_completed(&self, server: &DevServer, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, workflow) = self.get(server, &format!("/api/workflow/{id}"));
            if status == 200 && workflow["status"] == "COMPLETED" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not COMPLETED: {status} {workflow}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn members(&self, server: &DevServer) -> Value {
        self.get(server, "/api/cluster/members").1
    }

    /// `gantry cluster members [extra]` against `server`, as a user runs it:
    /// (exit code, stdout, stderr).
    fn cli_members(&self, server: &DevServer, extra: &[&str]) -> (i32, String, String) {
        let output = Command::new(BINARY)
            .args(["cluster", "members"])
            .args(extra)
            .env("GANTRY_URL", &server.url)
            .env("GANTRY_CA", self.pki.join("ca.pem"))
            .env("GANTRY_TOKEN", &self.token)
            .output()
            .expect("run gantry cluster members");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Certificates for nodes 1-3 (127.0.0.1-3) and a cluster handle with an
/// HTTPS client that trusts only their CA; the token is set once node 1
/// has bootstrapped.
fn new_cluster(dir: &Path) -> Cluster {
    let pki = dir.join("pki");
    let pki_text = pki.to_str().unwrap();
    gantry(&["tls", "ca", "create", "--out", pki_text]);
    for index in 1..=3 {
        let name = format!("node{index}");
        let ip = format!("127.0.0.{index}");
        gantry(&[
            "tls", "cert", "create", "--ca", pki_text, "--name", &name, "--kind", "server", "--ip",
            &ip, "--out", pki_text,
        ]);
    }
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Cluster {
        pki,
        token: String::new(),
        http,
    }
}

/// A user on a follower asks `gantry cluster members`: it shows the
/// leader's view (every member's last contact and match index, asked of
/// the leader as writes are forwarded); a SIGKILLed node shows as
/// UNREACHABLE once the leader has not heard from it within the election
/// timeout; with no leader to ask, the node says its list is its own view.
#[test]
fn a_follower_lists_the_members_as_the_leader_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let data: Vec<PathBuf> = (1..=3)
        .map(|index| dir.path().join(format!("node{index}")))
        .collect();
    let first = cluster.start(&data[0], 1, &["--bootstrap"]);
    cluster.token = std::fs::read_to_string(data[0].join("bootstrap-admin-token")).unwrap();
    let first_peer = cluster.members(&first)["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut servers = vec![Some(first)];
    for index in 2..=3 {
        servers.push(Some(cluster.start(
            &data[index - 1],
            index,
            &["--join", &first_peer],
        )));
    }
    let node = |i: usize| servers[i].as_ref().unwrap();
    let leader_id = cluster.members(node(0))["leader_id"].as_u64().unwrap();
    let ids: Vec<u64> = (0..3)
        .map(|i| cluster.members(node(i))["node_id"].as_u64().unwrap())
        .collect();
    let leader = ids.iter().position(|&id| id == leader_id).unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (asked, killed) = (followers[0], followers[1]);

    // Every member's last contact and match index, on a follower.
    let listing = wait_for(
        Duration::from_secs(20),
        "the leader's view on a follower",
        || {
            let (code, stdout, stderr) = cluster.cli_members(node(asked), &["-t", "json"]);
            let json: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stderr}"))?;
            let members = json["members"].as_array().cloned().unwrap_or_default();
            let complete = code == 0
                && json["leader_view"] == true
                && json["view_of"].as_u64() == Some(leader_id)
                && json["node_id"].as_u64() == Some(ids[asked])
                && members.len() == 3
                && members.iter().all(|m| {
                    m["last_contact_ms"].is_u64()
                        && m["match_index"].is_u64()
                        && m["reachable"] == true
                });
            if complete {
                Ok(json)
            } else {
                Err(format!("{json}\n{stderr}"))
            }
        },
    );
    for member in listing["members"].as_array().unwrap() {
        let role = if member["id"].as_u64() == Some(leader_id) {
            "LEADER"
        } else {
            "FOLLOWER"
        };
        assert_eq!(member["role"], role, "{listing}");
    }
    let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches(" ms ago").count(), 3, "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // A SIGKILLed follower: unreachable in the leader's view, shown on the
    // other follower.
    servers[killed].take().unwrap().kill9();
    let node = |i: usize| servers[i].as_ref().unwrap();
    let listing = wait_for(
        Duration::from_secs(10),
        "the killed node shown as unreachable",
        || {
            let (_, stdout, stderr) = cluster.cli_members(node(asked), &["-t", "json"]);
            let json: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stderr}"))?;
            let gone = json["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"].as_u64() == Some(ids[killed]))
                .cloned()
                .unwrap_or_default();
            if json["leader_view"] == true
                && gone["role"] == "UNREACHABLE"
                && gone["reachable"] == false
            {
                Ok(json)
            } else {
                Err(json.to_string())
            }
        },
    );
    for member in listing["members"].as_array().unwrap() {
        if member["id"].as_u64() != Some(ids[killed]) {
            assert_eq!(member["reachable"], true, "{listing}");
            assert_ne!(member["role"], "UNREACHABLE", "{listing}");
        }
    }
    let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(&ids[killed].to_string()))
        .unwrap_or_else(|| panic!("no row for node {}: {stdout}", ids[killed]));
    assert!(row.contains("UNREACHABLE"), "{stdout}");
    assert_eq!(stdout.matches("FOLLOWER").count(), 1, "{stdout}");

    // The leader gone too: no leader to ask, and the node says so.
    servers[leader].take().unwrap().kill9();
    let node = |i: usize| servers[i].as_ref().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the node's own view, said so",
        || {
            let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
            if code == 0
                && stderr.contains(&format!(
                    "warning: this is node {}'s own view, not the leader's",
                    ids[asked]
                ))
                && stderr.contains("known only to the leader")
                && !stdout.contains(" ms ago")
            {
                Ok(())
            } else {
                Err(format!("{stdout}\n{stderr}"))
            }
        },
    );
    let json = cluster.members(node(asked));
    assert_eq!(json["leader_view"], false, "{json}");
    assert_eq!(json["view_of"].as_u64(), Some(ids[asked]), "{json}");
}

#[test]
fn three_servers_replicate_fail_over_and_restore_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let pki = cluster.pki.clone();

    let data: Vec<PathBuf> = (1..=3)
        .map(|index| dir.path().join(format!("node{index}")))
        .collect();
    let first = cluster.start(&data[0], 1, &["--bootstrap"]);
    cluster.token = std::fs::read_to_string(data[0].join("bootstrap-admin-token")).unwrap();
    let members = cluster.members(&first);
    let first_peer = members["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut servers = vec![Some(first)];
    for index in 2..=3 {
        servers.push(Some(cluster.start(
            &data[index - 1],
            index,
            &["--join", &first_peer],
        )));
    }

    // Every node sees three voters and one leader.
    for server in servers.iter().flatten() {
        let members = cluster.members(server);
        let list = members["members"].as_array().unwrap();
        assert_eq!(list.len(), 3, "{members}");
        assert!(list.iter().all(|m| m["voter"] == true), "{members}");
        assert!(members["leader_id"].is_u64(), "{members}");
    }

    // A write through a follower is forwarded; a read on the third node sees it.
    let id = cluster.submit(servers[1].as_ref().unwrap());
    let (status, workflow) =
        cluster.get(servers[2].as_ref().unwrap(), &format!("/api/workflow/{id}"));
    assert_eq!(status, 200, "{workflow}");
    cluster.wait_completed(servers[2].as_ref().unwrap(), &id);
    // A stale read answers from the replica's own state (here: caught up).
    let (status, stale) = cluster.get(
        servers[2].as_ref().unwrap(),
        &format!("/api/workflow/{id}?stale=true"),
    );
    assert_eq!(status, 200, "{stale}");

    // SIGKILL the leader: the other two elect a new one and keep serving.
    let leader_id = cluster.members(servers[0].as_ref().unwrap())["leader_id"]
        .as_u64()
        .unwrap();
    let leader_index = (0..3)
        .find(|&i| {
            cluster.members(servers[i].as_ref().unwrap())["node_id"].as_u64() == Some(leader_id)
        })
        .unwrap();
    servers[leader_index].take().unwrap().kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_index).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.members(servers[survivors[0]].as_ref().unwrap())["leader_id"].as_u64();
        if leader.is_some_and(|id| id != leader_id) {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = cluster.submit(servers[survivors[1]].as_ref().unwrap());
    cluster.wait_completed(servers[survivors[0]].as_ref().unwrap(), &after);
    let (_, old) = cluster.get(
        servers[survivors[1]].as_ref().unwrap(),
        &format!("/api/workflow/{id}"),
    );
    assert_eq!(old["status"], "COMPLETED");

    // Snapshot from a survivor through the CLI, restore into a new node.
    let snapshot = dir.path().join("state.snap");
    let output = Command::new(BINARY)
        .args(["snapshot", "save", snapshot.to_str().unwrap()])
        .env("GANTRY_URL", &servers[survivors[1]].as_ref().unwrap().url)
        .env("GANTRY_CA", pki.join("ca.pem"))
        .env("GANTRY_TOKEN", &cluster.token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored_dir = dir.path().join("restored");
    gantry(&[
        "snapshot",
        "restore",
        snapshot.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    for server in servers.iter_mut() {
        if let Some(server) = server.take() {
            server.stop();
        }
    }
    let restored = cluster.start(&restored_dir, 1, &["--bootstrap"]);
    for workflow in [&id, &after] {
        let (status, body) = cluster.get(&restored, &format!("/api/workflow/{workflow}"));
        assert_eq!(status, 200, "{workflow} missing after restore: {body}");
        assert_eq!(body["status"], "COMPLETED");
    }
    let next = cluster.submit(&restored);
    assert_eq!(
        next, "replicated-3",
        "IDs continue from the restored counters"
    );
    cluster.wait_completed(&restored, &next);
}

/// Writes forwarded by a follower while the leader is SIGKILLed: each is
/// answered 200, or 503 — with `Retry-After` when no leader took it, without
/// it (saying so) when the leader died holding it — never a 500.
#[test]
fn forwarded_writes_that_lose_the_leader_answer_503_not_500() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let data: Vec<PathBuf> = (1..=3)
        .map(|index| dir.path().join(format!("node{index}")))
        .collect();
    let first = cluster.start(&data[0], 1, &["--bootstrap"]);
    cluster.token = std::fs::read_to_string(data[0].join("bootstrap-admin-token")).unwrap();
    let first_peer = cluster.members(&first)["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut servers = vec![Some(first)];
    for index in 2..=3 {
        servers.push(Some(cluster.start(
            &data[index - 1],
            index,
            &["--join", &first_peer],
        )));
    }
    let node = |i: usize| servers[i].as_ref().unwrap();
    let leader_id = wait_for(Duration::from_secs(20), "three voters", || {
        let members = cluster.members(node(0));
        let voters = members["members"].as_array().map_or(0, |m| m.len());
        match members["leader_id"].as_u64() {
            Some(id) if voters == 3 => Ok(id),
            _ => Err(members.to_string()),
        }
    });
    let ids: Vec<u64> = (0..3)
        .map(|i| cluster.members(node(i))["node_id"].as_u64().unwrap())
        .collect();
    let leader = ids.iter().position(|&id| id == leader_id).unwrap();
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let url = node(follower).url.clone();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (http, token, url, stop) = (
                cluster.http.clone(),
                cluster.token.clone(),
                url.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(response) = http
                        .post(format!("{url}/api/pool/default/workflow"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "file": HELLO }))
                        .send()
                    else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().unwrap_or(Value::Null);
                    let message = body["message"].as_str().unwrap_or_default().to_string();
                    answers.push((status, retry_after, message));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    servers[leader].take().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let per_writer: Vec<Vec<(u16, bool, String)>> = writers
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .collect();
    // Writes went on under the new leader: each writer's last one worked.
    for answers in &per_writer {
        assert_eq!(answers.last().map(|a| a.0), Some(200), "{answers:?}");
    }
    let answers: Vec<(u16, bool, String)> = per_writer.into_iter().flatten().collect();
    let count = |wanted: &dyn Fn(&(u16, bool, String)) -> bool| {
        answers.iter().filter(|a| wanted(a)).count()
    };
    eprintln!(
        "{} forwarded writes across a leader kill: {} answered 200, {} 503 + Retry-After, {} 503 (maybe carried out), {} other",
        answers.len(),
        count(&|a| a.0 == 200),
        count(&|a| a.0 == 503 && a.1),
        count(&|a| a.0 == 503 && !a.1),
        count(&|a| a.0 != 200 && a.0 != 503),
    );
    for (status, retry_after, message) in &answers {
        match status {
            200 => {}
            503 if *retry_after => {}
            503 => assert!(
                message.contains("may or may not have been carried out"),
                "{message}"
            ),
            other => panic!("{other}: {message}"),
        }
    }
}
