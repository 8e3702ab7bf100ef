//! Membership through the CLI: three `gantry server` processes started
//! with neither `--bootstrap` nor `--join` wait; `gantry cluster init` makes
//! the first a cluster of one (again: a no-op, said so), `gantry cluster
//! join PEER_ADDR` brings in the other two (a warning when the voter count
//! is even), and the cluster then serves writes through any node.

mod common;

use common::{wait_for, DevServer, Https, Pki, BINARY};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const HELLO: &str =
    "workflow:\n  name: setup\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

/// Runs the CLI with `args` against `url` (no token unless given);
/// returns (exit code, stdout, stderr).
fn cli(pki: &Pki, url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env("GANTRY_URL", url)
        .env("GANTRY_CA", pki.dir.join("ca.pem"))
        .env_remove("GANTRY_TOKEN")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("gantry-test-no-config"),
        );
    if let Some(token) = token {
        command.env("GANTRY_TOKEN", token);
    }
    let output = command.output().expect("run gantry CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Node 3 also runs tasks on this host (`--local-backend`): it must still
/// serve its API while it waits, though it has no pool yet.
fn start(pki: &Pki, data: &std::path::Path, index: usize) -> DevServer {
    let ip = format!("127.0.0.{index}");
    let mut args: Vec<String> = vec!["server".into()];
    if index == 3 {
        args.push("--local-backend".into());
    }
    args.extend([
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
    ]);
    args.extend(pki.server_flags(&format!("node{index}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(data, &args)
}

#[test]
fn nodes_started_without_flags_wait_for_cluster_init_and_join() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    let servers: Vec<DevServer> = (1..=3)
        .map(|index| start(&pki, &dir.path().join(format!("node{index}")), index))
        .collect();
    for server in &servers {
        assert!(
            server.log().contains("not a cluster member yet"),
            "{}",
            server.log()
        );
    }
    let http = pki.client(Duration::from_secs(30));

    // A waiting node takes no other call without a token.
    let (code, _, stderr) = cli(&pki, &servers[0].url, None, &["cluster", "members"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("token"), "{stderr}");
    // Join needs a peer address that is one.
    let (code, _, stderr) = cli(&pki, &servers[1].url, None, &["cluster", "join", "nope"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("peer") && stderr.contains("host:port"),
        "{stderr}"
    );

    // Init the first node; the token is written on the server, not sent.
    let (code, stdout, stderr) = cli(&pki, &servers[0].url, None, &["cluster", "init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("initialized a new cluster of one"),
        "{stdout}"
    );
    let token_file = dir.path().join("node1").join("bootstrap-admin-token");
    assert!(
        stdout.contains(&token_file.display().to_string()),
        "{stdout}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !stdout.contains(&token),
        "the secret must not cross the wire"
    );
    // Again: nothing to do, and now a token is needed.
    let (code, _, stderr) = cli(&pki, &servers[0].url, None, &["cluster", "init"]);
    assert_ne!(code, 0, "an initialized node takes init only with a token");
    assert!(stderr.contains("token"), "{stderr}");
    let (code, stdout, stderr) = cli(&pki, &servers[0].url, Some(&token), &["cluster", "init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("already a member"), "{stdout}");

    let members: Value = {
        let (code, stdout, stderr) = cli(
            &pki,
            &servers[0].url,
            Some(&token),
            &["cluster", "members", "-t", "json"],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let first_peer = members["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();

    // Node 2 joins: two voters, an even number, is warned about.
    let (code, stdout, stderr) = cli(
        &pki,
        &servers[1].url,
        None,
        &["cluster", "join", &first_peer],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("joined the cluster"), "{stdout}");
    assert!(
        stderr.contains("warning") && stderr.contains("2 voters"),
        "{stderr}"
    );
    // Node 3 joins through node 2 (a follower forwards the change): three voters, no warning.
    let second_peer = {
        let (_, stdout, _) = cli(
            &pki,
            &servers[1].url,
            Some(&token),
            &["cluster", "members", "-t", "json"],
        );
        let members: Value = serde_json::from_str(&stdout).unwrap();
        let id = members["node_id"].clone();
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["peer_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (code, stdout, stderr) = cli(
        &pki,
        &servers[2].url,
        None,
        &["cluster", "join", &second_peer, "-t", "json"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let joined: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(joined["joined"], true, "{joined}");
    assert_eq!(
        joined["voters"].as_array().map(Vec::len),
        Some(3),
        "{joined}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    // Joining again is a no-op.
    let (code, stdout, _) = cli(
        &pki,
        &servers[2].url,
        Some(&token),
        &["cluster", "join", &first_peer],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("already a member"), "{stdout}");

    // Every node sees three voters and a leader, and serves writes.
    let apis: Vec<Https> = servers
        .iter()
        .map(|server| Https {
            http: http.clone(),
            url: server.url.clone(),
            token: token.clone(),
        })
        .collect();
    for api in &apis {
        wait_for(Duration::from_secs(30), "not three voters", || {
            let members = api.members().ok_or("no answer")?;
            let voters = members["members"]
                .as_array()
                .map_or(0, |list| list.iter().filter(|m| m["voter"] == true).count());
            if voters == 3 && members["leader_id"].is_u64() {
                Ok(())
            } else {
                Err(members.to_string())
            }
        });
    }
    let ids: Vec<String> = apis.iter().map(|api| api.submit_ok(HELLO)).collect();
    assert_eq!(ids, ["setup-1", "setup-2", "setup-3"]);
    let (status, pools) = apis[2].get("/api/pool");
    assert_eq!(status, 200);
    assert!(pools["pools"]["default"].is_object(), "{pools}");
}
