//! Replicas compare the hash of their state: a real three-node cluster,
//! one member's `state.redb` changed while it is stopped (a row nobody
//! wrote, still a valid row), then started again. The leader's state check
//! flags exactly that member (CORRUPT in `cluster members`, the mismatch
//! alarm in `/metrics`), which then refuses reads and fails `/readyz`
//! while the others serve; `gantry cluster rebuild` from a healthy member
//! makes it match again.

mod common;

use common::cluster::{new_cluster, start_three_stoppable, Cluster};
use common::{wait_for, DevServer, BINARY};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Long enough for a round on a loaded machine, short enough for a test.
const CHECK_WAIT: Duration = Duration::from_secs(60);

/// Each member's `state` in the leader's view, asked of `server`.
fn states(
    cluster: &Cluster,
    server: &DevServer,
) -> Result<Vec<(u64, String, u64, String)>, String> {
    let members = cluster.members(server);
    if members["leader_view"] != true {
        return Err(members.to_string());
    }
    Ok(members["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["state"].as_str().unwrap_or("").to_string(),
                m["state_index"].as_u64().unwrap_or(0),
                m["state_detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Waits until the leader's view, asked of `server`, shows `expected(id)`
/// for every member, from a round at a log index past `after`; returns
/// that index.
fn wait_states(
    cluster: &Cluster,
    server: &DevServer,
    after: u64,
    expected: impl Fn(u64) -> &'static str,
) -> u64 {
    wait_for(CHECK_WAIT, "state check results", || {
        let states = states(cluster, server)?;
        let index = states
            .iter()
            .map(|(_, _, index, _)| *index)
            .min()
            .unwrap_or(0);
        if states.len() == 3
            && index > after
            && states
                .iter()
                .all(|(id, state, _, _)| state == expected(*id))
        {
            Ok(index)
        } else {
            Err(format!("{states:?}"))
        }
    })
}

fn text_get(cluster: &Cluster, server: &DevServer, path: &str) -> (u16, String) {
    let response = cluster
        .http
        .get(format!("{}{path}", server.url))
        .bearer_auth(&cluster.token)
        .send()
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

/// A row no command wrote, in a table apply keeps (a counter), written
/// with redb itself: the file stays valid, only its content differs.
fn add_a_row(data_dir: &Path) {
    let path = data_dir.join("raft").join("state.redb");
    let db = redb::Database::open(&path).expect("open state.redb");
    let txn = db.begin_write().expect("write");
    {
        let counters: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("counters");
        let mut table = txn.open_table(counters).expect("counters");
        table.insert("not-written-by-apply", 1).expect("insert");
    }
    txn.commit().expect("commit");
}

/// `gantry cluster rebuild --data-dir DIR` against `from`: (exit code, stdout, stderr).
fn rebuild(cluster: &Cluster, from: &DevServer, data_dir: &Path) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(["cluster", "rebuild", "--data-dir"])
        .arg(data_dir)
        .env("GANTRY_URL", &from.url)
        .env("GANTRY_CA", cluster.pki.join("ca.pem"))
        .env("GANTRY_TOKEN", &cluster.token)
        .output()
        .expect("run gantry cluster rebuild");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn node(servers: &[Option<DevServer>], i: usize) -> &DevServer {
    servers[i].as_ref().expect("running")
}

#[test]
fn a_member_whose_state_differs_is_flagged_refuses_reads_and_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    cluster.extra = vec!["--state-check-interval".into(), "1s".into()];
    let mut servers = start_three_stoppable(&mut cluster, dir.path());
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            cluster.members(node(&servers, i))["node_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let leader_id = cluster.members(node(&servers, 0))["leader_id"]
        .as_u64()
        .unwrap();
    let leader = ids.iter().position(|&id| id == leader_id).unwrap();
    let bad = (0..3).find(|&i| i != leader).unwrap();
    let good = (0..3).find(|&i| i != leader && i != bad).unwrap();
    let bad_peer = cluster.members(node(&servers, 0))["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_u64() == Some(ids[bad]))
        .unwrap()["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let bad_url = node(&servers, bad).url.clone();

    // Some state, then every member agrees.
    let workflow = cluster.submit(node(&servers, leader));
    cluster.wait_completed(node(&servers, good), &workflow);
    let checked = wait_states(&cluster, node(&servers, good), 0, |_| "HEALTHY");

    // A restart alone changes nothing: the member replays its log to the
    // same state.
    let bad_dir = node(&servers, bad).data_dir.clone();
    servers[bad].take().unwrap().stop();
    servers[bad] = Some(cluster.restart(&bad_dir, bad + 1, &bad_url, &bad_peer));
    let checked = wait_states(&cluster, node(&servers, good), checked, |_| "HEALTHY");

    // The member's state changed behind Raft's back while it was stopped.
    servers[bad].take().unwrap().stop();
    add_a_row(&bad_dir);
    servers[bad] = Some(cluster.restart(&bad_dir, bad + 1, &bad_url, &bad_peer));

    // Exactly that member is flagged; the others stay healthy.
    let flagged = wait_states(&cluster, node(&servers, good), checked, |id| {
        if id == ids[bad] {
            "CORRUPT"
        } else {
            "HEALTHY"
        }
    });
    let output = Command::new(BINARY)
        .args(["cluster", "members"])
        .env("GANTRY_URL", &node(&servers, bad).url)
        .env("GANTRY_CA", cluster.pki.join("ca.pem"))
        .env("GANTRY_TOKEN", &cluster.token)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(&ids[bad].to_string()))
        .unwrap_or_else(|| panic!("no row for node {}: {stdout}", ids[bad]));
    assert!(row.contains("CORRUPT"), "{stdout}");
    assert_eq!(stdout.matches("HEALTHY").count(), 2, "{stdout}");
    assert!(
        stderr.contains(&format!("node {}'s state differs", ids[bad])),
        "{stderr}"
    );

    // The alarm: on the leader per member, on the member about itself.
    let (_, leader_metrics) = text_get(&cluster, node(&servers, leader), "/metrics");
    let mismatch =
        |id: u64, value: &str| format!("gantry_state_hash_mismatch{{member=\"{id}\"}} {value}");
    assert!(
        leader_metrics.contains(&mismatch(ids[bad], "1")),
        "{leader_metrics}"
    );
    assert!(
        leader_metrics.contains(&mismatch(ids[good], "0")),
        "{leader_metrics}"
    );
    assert!(
        leader_metrics.contains("gantry_state_checks_total{outcome=\"mismatch\"}"),
        "{leader_metrics}"
    );
    let (_, bad_metrics) = text_get(&cluster, node(&servers, bad), "/metrics");
    assert!(
        bad_metrics.contains("gantry_state_corrupt 1"),
        "{bad_metrics}"
    );
    let (_, good_metrics) = text_get(&cluster, node(&servers, good), "/metrics");
    assert!(
        good_metrics.contains("gantry_state_corrupt 0"),
        "{good_metrics}"
    );

    // The corrupt member refuses reads, linearizable or stale, and is not
    // ready; the others serve.
    for path in [
        format!("/api/workflow/{workflow}"),
        format!("/api/workflow/{workflow}?stale=true"),
        "/readyz".to_string(),
    ] {
        let (status, body) = text_get(&cluster, node(&servers, bad), &path);
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("corrupt"), "{path}: {body}");
        let (status, body) = text_get(&cluster, node(&servers, good), &path);
        assert_eq!(status, 200, "{path}: {body}");
    }

    // No rebuild while the member runs; stopped, it is rebuilt from a
    // healthy member, and the mark does not outlive the rebuild.
    let (code, _, stderr) = rebuild(&cluster, node(&servers, good), &bad_dir);
    assert_ne!(code, 0);
    assert!(stderr.contains("another gantry process"), "{stderr}");
    servers[bad].take().unwrap().stop();
    assert!(bad_dir.join("raft").join("state-corrupt").exists());
    let (code, stdout, stderr) = rebuild(&cluster, node(&servers, good), &bad_dir);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("node {}", ids[bad])), "{stdout}");
    assert!(!bad_dir.join("raft").join("state-corrupt").exists());
    servers[bad] = Some(cluster.restart(&bad_dir, bad + 1, &bad_url, &bad_peer));

    // It matches again and serves.
    wait_states(&cluster, node(&servers, good), flagged, |_| "HEALTHY");
    let (status, body) = text_get(
        &cluster,
        node(&servers, bad),
        &format!("/api/workflow/{workflow}"),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = text_get(&cluster, node(&servers, bad), "/readyz");
    assert_eq!(status, 200, "{body}");
    let (_, bad_metrics) = text_get(&cluster, node(&servers, bad), "/metrics");
    assert!(
        bad_metrics.contains("gantry_state_corrupt 0"),
        "{bad_metrics}"
    );
    let (_, leader_metrics) = text_get(&cluster, node(&servers, leader), "/metrics");
    assert!(
        leader_metrics.contains(&mismatch(ids[bad], "0")),
        "{leader_metrics}"
    );
    let value: Value = cluster.members(node(&servers, bad));
    assert!(
        value["warnings"].as_array().is_some_and(Vec::is_empty),
        "{value}"
    );
}
