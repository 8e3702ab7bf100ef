//! Tagging and removing a config revision are command kinds newer than
//! some builds, so a leader proposes them only once every member has
//! announced a build that knows them. Through three real `gantry server`
//! processes: with one member down and never heard from by the others
//! since they restarted, both routes answer 503 with `Retry-After`, naming
//! the feature and the member, and change nothing; once it is back, they
//! go through. A config change (an older kind) never waits; nor does a
//! submit without checkpoints, while one with them (plan extras, a newer
//! kind) waits as the revision routes do; so does a pool with topology
//! keys (pool extras), while one without goes through.

mod common;

use common::cluster::{new_cluster, start_three_stoppable, Cluster};
use common::wait_for;
use serde_json::{json, Value};
use std::time::Duration;

/// `(status, Retry-After, body)` of a call with the cluster's token.
fn call(
    cluster: &Cluster,
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = cluster
        .http
        .request(method, format!("{url}{path}"))
        .bearer_auth(&cluster.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    (status, retry_after, response.json().unwrap_or(Value::Null))
}

#[test]
fn revision_changes_wait_until_every_member_knows_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let mut servers = start_three_stoppable(&mut cluster, dir.path());
    let ids: Vec<u64> = servers
        .iter()
        .map(|server| {
            cluster.members(server.as_ref().unwrap())["node_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let members = cluster.members(servers[0].as_ref().unwrap());
    let peers: Vec<String> = ids
        .iter()
        .map(|id| {
            members["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|member| member["id"].as_u64() == Some(*id))
                .unwrap()["peer_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().url.clone())
        .collect();
    let data: Vec<_> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().data_dir.clone())
        .collect();

    // Two revisions of a pool while every member runs.
    let put = |url: &str, description: &str| {
        let body = json!({"configs": {"backend": "local", "description": description}});
        let (status, _, reply) = call(&cluster, url, "PUT", "/api/configs/pool/gated", Some(&body));
        assert_eq!(status, 200, "{reply}");
        reply["revision"].as_u64().unwrap()
    };
    let old = put(&urls[0], "old");
    let current = put(&urls[0], "current");

    // Node 3 goes down; nodes 1 and 2 restart, so neither has heard from it.
    servers[2].take().unwrap().kill9();
    for server in &mut servers[..2] {
        server.take().unwrap().stop();
    }
    for index in 0..2 {
        servers[index] =
            Some(cluster.restart(&data[index], index + 1, &urls[index], &peers[index]));
    }
    let node = urls[0].as_str();
    wait_for(Duration::from_secs(30), "a leader of the two", || {
        let members = cluster.members(servers[0].as_ref().unwrap());
        members["leader_id"]
            .as_u64()
            .map(|_| ())
            .ok_or(members.to_string())
    });

    // A config change is an older kind: it goes through.
    let newest = put(node, "while one is down");
    assert!(newest > current);
    let tags = format!("/api/configs/history/pool/revision/{old}/tags");
    let (status, retry_after, reply) = call(
        &cluster,
        node,
        "POST",
        &tags,
        Some(&json!({"set_tags": ["kept"]})),
    );
    assert_eq!(status, 503, "{reply}");
    assert!(retry_after.is_some(), "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("config revision tags needs every member on a build that knows it")
            && message.contains(&format!("node {} (not heard from)", ids[2])),
        "{message}"
    );
    let removal = format!("/api/configs/history/pool/revision/{old}");
    let (status, retry_after, reply) = call(&cluster, node, "DELETE", &removal, None);
    assert_eq!(status, 503, "{reply}");
    assert!(retry_after.is_some(), "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deleting config revisions needs every member"),
        "{reply}"
    );
    // A submit whose task checkpoints carries plan extras, a newer kind
    // too: refused the same way, while one without them goes through.
    let spec = |name: &str, extra: &str| {
        format!(
            "workflow:\n  name: {name}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sh, -c, 'true']\n{extra}"
        )
    };
    let checkpointed = spec(
        "ckpt",
        "    checkpoint: [{path: /tmp/m, url: 's3://b/{{workflow_id}}', frequency: 1m}]\n",
    );
    let (status, retry_after, reply) = call(
        &cluster,
        node,
        "POST",
        "/api/pool/default/workflow",
        Some(&json!({ "file": checkpointed })),
    );
    assert_eq!(status, 503, "{reply}");
    assert!(retry_after.is_some(), "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("checkpoint needs every member on a build that knows it"),
        "{reply}"
    );
    let (status, _, reply) = call(
        &cluster,
        node,
        "POST",
        "/api/pool/default/workflow",
        Some(&json!({ "file": spec("plain", "") })),
    );
    assert_eq!(status, 200, "{reply}");
    // A pool with topology keys (pool extras, a newer kind): refused the
    // same way, while the same pool without them goes through.
    let pool =
        |topology: Value| json!({"configs": {"backend": "default", "topology_keys": topology}});
    let (status, retry_after, reply) = call(
        &cluster,
        node,
        "PUT",
        "/api/configs/pool/racks",
        Some(&pool(json!([{"key": "rack", "label": "example.com/rack"}]))),
    );
    assert_eq!(status, 503, "{reply}");
    assert!(retry_after.is_some(), "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("a pool's topology_keys needs every member on a build that knows it"),
        "{reply}"
    );
    let (status, _, reply) = call(
        &cluster,
        node,
        "PUT",
        "/api/configs/pool/racks",
        Some(&pool(json!([]))),
    );
    assert_eq!(status, 200, "{reply}");
    // Nothing changed.
    let (_, _, history) = call(
        &cluster,
        node,
        "GET",
        &format!("/api/configs/history?config_types=POOL&name=gated&revision={old}"),
        None,
    );
    assert_eq!(history["configs"][0]["tags"], json!([]), "{history}");

    // Node 3 back: both go through.
    servers[2] = Some(cluster.restart(&data[2], 3, &urls[2], &peers[2]));
    let reply = wait_for(
        Duration::from_secs(30),
        "tags once node 3 is back",
        || match call(
            &cluster,
            node,
            "POST",
            &tags,
            Some(&json!({"set_tags": ["kept"]})),
        ) {
            (200, _, reply) => Ok(reply),
            (status, _, reply) => Err(format!("{status} {reply}")),
        },
    );
    assert_eq!(reply["tags"], json!(["kept"]), "{reply}");
    let (status, _, reply) = call(&cluster, node, "DELETE", &removal, None);
    assert_eq!(status, 200, "{reply}");
    let (status, _, reply) = call(
        &cluster,
        node,
        "PUT",
        "/api/configs/pool/racks",
        Some(&pool(json!([{"key": "rack", "label": "example.com/rack"}]))),
    );
    assert_eq!(status, 200, "{reply}");
    for server in servers.into_iter().flatten() {
        server.stop();
    }
}
