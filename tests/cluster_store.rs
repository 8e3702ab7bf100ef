//! The shared object store of a cluster, checked: real `gantry server`
//! processes on 127.0.0.1-3 with certificates from `gantry tls`. Members
//! sharing one `file://` directory pass the probe exchange; a node whose
//! store is its own (a private directory, or the default inside its data
//! directory) is refused when it asks to join, with a message naming
//! `--object-store` and what to set it to. (The failover trial on a shared
//! store runs on the README's recipe, in `tests/cluster_setup.rs`.)

mod common;

use common::{wait_for, DevServer, Https, Pki, BINARY};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn three_node_pki(dir: &Path) -> Pki {
    Pki::create(
        &dir.join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    )
}

/// `gantry server` arguments for node `index` on 127.0.0.`index`, with
/// `store` as its `--object-store` (`None`: the default in its data dir).
fn server_args(pki: &Pki, index: usize, store: Option<&str>, extra: &[&str]) -> Vec<String> {
    let ip = format!("127.0.0.{index}");
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
    ];
    args.extend(pki.server_flags(&format!("node{index}")));
    if let Some(store) = store {
        args.extend(["--object-store".to_string(), store.to_string()]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

fn start(dir: &Path, pki: &Pki, index: usize, store: Option<&str>, extra: &[&str]) -> DevServer {
    let args = server_args(pki, index, store, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(&dir.join(format!("node{index}")), &args)
}

/// Runs a server that is expected to refuse to start: its exit status and
/// everything it wrote to stderr.
fn run_refused(data: &Path, args: &[String]) -> (std::process::ExitStatus, String) {
    std::fs::create_dir_all(data).unwrap();
    let log = data.with_extension("log");
    let mut child = Killed(
        Command::new(BINARY)
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = wait_for(
        Duration::from_secs(60),
        "the refused server to exit",
        || {
            child
                .0
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_string())
        },
    );
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api(pki: &Pki, url: &str, token: &str) -> Https {
    Https {
        http: pki.client(Duration::from_secs(30)),
        url: url.to_string(),
        token: token.to_string(),
    }
}

fn token_of(first: &DevServer) -> String {
    std::fs::read_to_string(first.data_dir.join("bootstrap-admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

fn peer_of(api: &Https) -> String {
    api.members().expect("members")["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Node 1 bootstraps, nodes 2 and 3 join it, all on `store`; returns once
/// node 1 lists three voters.
fn start_three(dir: &Path, pki: &Pki, store: &str, extra: &[&str]) -> (Vec<DevServer>, String) {
    let mut bootstrap = vec!["--bootstrap"];
    bootstrap.extend(extra);
    let first = start(dir, pki, 1, Some(store), &bootstrap);
    let token = token_of(&first);
    let peer = peer_of(&api(pki, &first.url, &token));
    let mut servers = vec![first];
    for index in 2..=3 {
        let mut join = vec!["--join", peer.as_str()];
        join.extend(extra);
        servers.push(start(dir, pki, index, Some(store), &join));
    }
    let first = api(pki, &servers[0].url, &token);
    wait_for(Duration::from_secs(30), "three voters", || {
        let members = first.members().ok_or("no answer")?;
        match members["members"].as_array().map(Vec::len) {
            Some(3) => Ok(()),
            _ => Err(members.to_string()),
        }
    });
    (servers, token)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Three members on one `file://` directory: each wrote its probe there,
/// each sees every other's store as SHARED in `cluster members`, exports
/// no diverged member, and is ready.
#[test]
fn members_sharing_one_directory_pass_the_store_probe() {
    let dir = tempfile::tempdir().unwrap();
    let pki = three_node_pki(dir.path());
    let shared = dir.path().join("shared-objects");
    let store = format!("file://{}", shared.display());
    let (servers, token) = start_three(dir.path(), &pki, &store, &[]);
    for server in &servers {
        let api = api(&pki, &server.url, &token);
        let members = wait_for(
            Duration::from_secs(30),
            "every other member's store SHARED",
            || {
                let members = api.members().ok_or("no answer")?;
                let list = members["members"].as_array().cloned().unwrap_or_default();
                let labels: Vec<&str> = list
                    .iter()
                    .map(|m| m["object_store"].as_str().unwrap_or("-"))
                    .collect();
                let mut sorted = labels.clone();
                sorted.sort();
                if sorted == ["SELF", "SHARED", "SHARED"] {
                    Ok(members)
                } else {
                    Err(members.to_string())
                }
            },
        );
        assert_eq!(members["object_store"].as_str(), Some(store.as_str()));
        assert_eq!(members["warnings"], serde_json::json!([]), "{members}");
        let (status, body) = api.get("/readyz");
        assert_eq!(status, 200, "{body}");
        let text = api
            .http
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(
            metric(&text, "gantry_object_store_diverged_members"),
            Some(0.0),
            "{text}"
        );
    }
    let members = api(&pki, &servers[0].url, &token).members().unwrap();
    for member in members["members"].as_array().unwrap() {
        let id = member["id"].as_u64().unwrap();
        assert!(
            shared.join(format!("cluster/probes/{id}")).is_file(),
            "no probe of node {id} in the shared directory"
        );
    }
}

/// A member restarted on a directory of its own (a restart asks nobody to
/// let it in) diverges: the periodic exchange shows it DIVERGED from both
/// sides, it exports two diverged members and fails `/readyz` naming
/// why; the two that still share a store stay ready. Restarted on the
/// default store, it refuses to start.
#[test]
fn a_member_restarted_on_another_store_diverges_and_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let pki = three_node_pki(dir.path());
    let store = format!("file://{}", dir.path().join("shared-objects").display());
    let (mut servers, token) = start_three(dir.path(), &pki, &store, &[]);
    let first = api(&pki, &servers[0].url, &token);
    let members = first.members().unwrap();
    let third = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["api_url"].as_str() == Some(servers[2].url.as_str()))
        .cloned()
        .expect("node 3 listed");
    let third_id = third["id"].as_u64().unwrap();
    let listen = servers[2].url.trim_start_matches("https://").to_string();
    let peer = third["peer_address"].as_str().unwrap().to_string();
    servers.pop().unwrap().stop();

    let private = format!("file://{}", dir.path().join("node3-objects").display());
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        listen,
        "--peer-listen".into(),
        peer,
        "--object-store".into(),
        private,
    ];
    args.extend(pki.server_flags("node3"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let restarted = DevServer::start_with(&dir.path().join("node3"), &args);
    let moved = api(&pki, &restarted.url, &token);

    let problem = wait_for(Duration::from_secs(30), "node 3 not ready", || match moved
        .try_get("/readyz")
    {
        Ok((503, body)) => Ok(body["message"].as_str().unwrap_or_default().to_string()),
        other => Err(format!("{other:?}")),
    });
    for expected in ["not a majority", "cannot read", "--object-store"] {
        assert!(problem.contains(expected), "no {expected:?} in {problem}");
    }
    let members = moved.members().unwrap();
    let mut labels: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["object_store"].as_str().unwrap_or("-"))
        .collect();
    labels.sort();
    assert_eq!(labels, ["DIVERGED", "DIVERGED", "SELF"], "{members}");
    let scrape = |url: &str| {
        let text = pki
            .client(Duration::from_secs(10))
            .get(format!("{url}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        metric(&text, "gantry_object_store_diverged_members")
    };
    assert_eq!(scrape(&restarted.url), Some(2.0));

    wait_for(
        Duration::from_secs(30),
        "node 1 to see node 3 diverged",
        || {
            let members = first.members().ok_or("no answer")?;
            let verdict = members["members"]
                .as_array()
                .and_then(|list| list.iter().find(|m| m["id"].as_u64() == Some(third_id)))
                .map(|m| m["object_store"].clone());
            match verdict {
                Some(Value::String(label)) if label == "DIVERGED" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert_eq!(scrape(&servers[0].url), Some(1.0));
    let (status, body) = first.get("/readyz");
    assert_eq!(status, 200, "two of three share the store: {body}");

    // Restarted once more on the default store, it does not start.
    restarted.stop();
    let default_args: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string())
        .filter(|arg| arg != "--object-store" && !arg.contains("node3-objects"))
        .collect();
    let (status, log) = run_refused(&dir.path().join("node3"), &default_args);
    assert!(!status.success(), "started on the default store: {log}");
    for expected in [
        "is a member of a cluster of 3",
        "inside its own data directory",
        "--object-store",
        "s3://",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
}

/// A node whose store is a directory of its own asks to join (`--join`):
/// it is refused before it becomes a member, with a message naming what
/// the member it asked could not read and what to configure; a node on
/// the default store (`<data-dir>/objects`) asking through `gantry cluster
/// join` is refused the same way. The cluster keeps its one voter.
#[test]
fn a_member_on_a_store_of_its_own_is_refused_when_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let pki = three_node_pki(dir.path());
    let shared = format!("file://{}", dir.path().join("shared-objects").display());
    let first = start(dir.path(), &pki, 1, Some(&shared), &["--bootstrap"]);
    let token = token_of(&first);
    let cluster = api(&pki, &first.url, &token);
    let peer = peer_of(&cluster);

    let private = format!("file://{}", dir.path().join("private-objects").display());
    let args = server_args(&pki, 2, Some(&private), &["--join", &peer]);
    let (status, log) = run_refused(&dir.path().join("node2"), &args);
    assert!(!status.success(), "the private store joined: {log}");
    for expected in [
        "refusing to join the cluster",
        "cannot read this node's probe",
        "--object-store",
        "s3://",
        "a file:// path on a filesystem every member mounts",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }

    // Node 3 waits for `cluster join`, on the default store.
    let third = start(dir.path(), &pki, 3, None, &[]);
    let join_token = dir.path().join("node3/join-token");
    let output = Command::new(BINARY)
        .args(["cluster", "join", &peer, "--url", &third.url])
        .arg("--ca")
        .arg(pki.dir.join("ca.pem"))
        .arg("--join-token-file")
        .arg(&join_token)
        .env("XDG_CONFIG_HOME", dir.path().join("cli-config"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the default store joined");
    for expected in ["inside its own data directory", "--object-store", "s3://"] {
        assert!(stderr.contains(expected), "no {expected:?} in: {stderr}");
    }

    let members = cluster.members().unwrap();
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );
    let (status, body) = cluster.get("/readyz");
    assert_eq!(status, 200, "a cluster of one stays ready: {body}");
}
