//! A config revision's tags, its removal from the history, and two
//! revisions side by side, through a real `gantry dev`: OSMO's routes
//! (`POST /api/configs/history/{config_type}/revision/{revision}/tags`,
//! `DELETE /api/configs/history/{config_type}/revision/{revision}`,
//! `GET /api/configs/diff`) with their refusals, and the CLI verbs on
//! `TYPE:REV` (`show`, `tag`, `diff`, `delete`), `list`, `set` and
//! `rollback TYPE:REV`.

mod common;

use common::{cli, DevServer};
use serde_json::{json, Value};

fn call(url: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{url}{path}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A change's revision, from a PUT of `configs` to `path`.
fn put(url: &str, path: &str, configs: Value, description: &str) -> u64 {
    let body = json!({"configs": configs, "description": description});
    let (status, reply) = call(url, "PUT", path, Some(&body));
    assert_eq!(status, 200, "PUT {path}: {reply}");
    reply["revision"].as_u64().unwrap()
}

fn history(url: &str, query: &str) -> Vec<Value> {
    let (status, reply) = call(url, "GET", &format!("/api/configs/history?{query}"), None);
    assert_eq!(status, 200, "{reply}");
    reply["configs"].as_array().unwrap().clone()
}

/// A refusal: its status, and that its message names `words`.
fn refused(reply: (u16, Value), status: u16, words: &[&str]) {
    assert_eq!(reply.0, status, "{}", reply.1);
    let message = reply.1["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "{word:?} not in: {message}");
    }
}

#[test]
fn revision_tags_removal_and_diff_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.as_str();
    let first = put(
        url,
        "/api/configs/pool/a",
        json!({"backend": "local", "description": "one"}),
        "a once",
    );
    let second = put(
        url,
        "/api/configs/pool/a",
        json!({"backend": "local", "description": "two"}),
        "a twice",
    );
    let pool_b = put(url, "/api/configs/pool/b", json!({"backend": "local"}), "b");

    // Tags: set, then deleted; the revision's config does not change.
    let tags = format!("/api/configs/history/pool/revision/{first}/tags");
    let (status, reply) = call(
        url,
        "POST",
        &tags,
        Some(&json!({"set_tags": ["stable", "x"]})),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["tags"], json!(["stable", "x"]), "{reply}");
    assert_eq!(reply["name"], "a");
    let (status, reply) = call(
        url,
        "POST",
        &tags,
        Some(&json!({"set_tags": ["y"], "delete_tags": ["x", "never-there"]})),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["tags"], json!(["stable", "y"]), "{reply}");
    let tagged = history(url, "config_types=POOL&tags=stable");
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert_eq!(tagged[0]["revision"], first);
    assert_eq!(tagged[0]["data"]["description"], "one");
    // Upper-case types are taken as well as OSMO's lower-case ones.
    let (status, _) = call(
        url,
        "POST",
        &format!("/api/configs/history/POOL/revision/{second}/tags"),
        Some(&json!({"set_tags": ["upper"]})),
    );
    assert_eq!(status, 200);

    // Refusals name the field and say why.
    refused(
        call(
            url,
            "POST",
            "/api/configs/history/nodes/revision/1/tags",
            Some(&json!({"set_tags": ["t"]})),
        ),
        400,
        &["config_type", "unknown config type 'nodes'"],
    );
    refused(
        call(
            url,
            "POST",
            "/api/configs/history/pool/revision/0/tags",
            Some(&json!({"set_tags": ["t"]})),
        ),
        400,
        &["revision", "whole number from 1"],
    );
    refused(
        call(
            url,
            "POST",
            "/api/configs/history/pool/revision/999/tags",
            Some(&json!({"set_tags": ["t"]})),
        ),
        400,
        &["revision", "POOL has no revision 999"],
    );
    refused(
        call(url, "POST", &tags, Some(&json!({}))),
        400,
        &["set_tags", "no tags"],
    );
    refused(
        call(url, "POST", &tags, Some(&json!({"set_tags": [""]}))),
        400,
        &["set_tags[0]", "must not be empty"],
    );
    refused(
        call(url, "POST", &tags, Some(&json!({"add": ["t"]}))),
        400,
        &["unknown field `add`"],
    );

    // Removal: never the revision in force, an old one once.
    refused(
        call(
            url,
            "DELETE",
            &format!("/api/configs/history/pool/revision/{second}"),
            None,
        ),
        400,
        &["revision", "current revision of POOL 'a'"],
    );
    refused(
        call(
            url,
            "DELETE",
            &format!("/api/configs/history/pool/revision/{pool_b}"),
            None,
        ),
        400,
        &["current revision of POOL 'b'"],
    );
    let (status, reply) = call(
        url,
        "DELETE",
        &format!("/api/configs/history/pool/revision/{first}"),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"config_type": "POOL", "name": "a", "revision": first})
    );
    assert!(history(url, &format!("config_types=POOL&revision={first}")).is_empty());
    refused(
        call(
            url,
            "DELETE",
            &format!("/api/configs/history/pool/revision/{first}"),
            None,
        ),
        400,
        &["revision", &format!("POOL has no revision {first}")],
    );
    refused(
        call(url, "DELETE", "/api/configs/history/pool/revision/x", None),
        400,
        &["revision", "'x'"],
    );
    // What is in force did not change.
    let (_, pool) = call(url, "GET", "/api/configs/pool/a", None);
    assert_eq!(pool["description"], "two", "{pool}");

    // Diff: a named type as it stood at each revision, by name.
    let (status, reply) = call(
        url,
        "GET",
        &format!(
            "/api/configs/diff?config_type=POOL&first_revision={second}&second_revision={pool_b}"
        ),
        None,
    );
    assert_eq!(status, 200, "{reply}");
    let names = |data: &Value| {
        data.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        names(&reply["first_data"]).contains(&"a".to_string()),
        "{reply}"
    );
    assert!(
        !names(&reply["first_data"]).contains(&"b".to_string()),
        "{reply}"
    );
    assert!(
        names(&reply["second_data"]).contains(&"b".to_string()),
        "{reply}"
    );
    assert_eq!(reply["second_data"]["a"]["description"], "two", "{reply}");

    // WORKFLOW: secrets are masked, saying only whether they changed.
    let alerts = |token: &str, tags: Value| json!({"workflow_alerts": {"slack_token": token}, "workflow_info": {"tags": tags}});
    let w1 = put(
        url,
        "/api/configs/workflow",
        alerts("secret-one", json!(["a"])),
        "w1",
    );
    let w2 = put(
        url,
        "/api/configs/workflow",
        alerts("secret-one", json!(["a", "b"])),
        "w2",
    );
    let w3 = put(
        url,
        "/api/configs/workflow",
        alerts("secret-two", json!(["a", "b"])),
        "w3",
    );
    let diff = |first: u64, second: u64| {
        let path = format!("/api/configs/diff?config_type=WORKFLOW&first_revision={first}&second_revision={second}");
        let (status, reply) = call(url, "GET", &path, None);
        assert_eq!(status, 200, "{reply}");
        assert!(!reply.to_string().contains("secret-"), "{reply}");
        reply
    };
    let same = diff(w1, w2);
    assert_eq!(
        same["first_data"]["workflow_alerts"]["slack_token"],
        "[MASKED]"
    );
    assert_eq!(
        same["second_data"]["workflow_alerts"]["slack_token"],
        "[MASKED]"
    );
    assert_eq!(
        same["second_data"]["workflow_info"]["tags"],
        json!(["a", "b"])
    );
    let changed = diff(w2, w3);
    assert_eq!(
        changed["first_data"]["workflow_alerts"]["slack_token"],
        "[MASKED]"
    );
    assert_eq!(
        changed["second_data"]["workflow_alerts"]["slack_token"],
        "[MASKED: changed]"
    );
    refused(
        call(
            url,
            "GET",
            "/api/configs/diff?config_type=WORKFLOW&first_revision=1",
            None,
        ),
        400,
        &["second_revision", "required"],
    );
    refused(
        call(
            url,
            "GET",
            &format!(
                "/api/configs/diff?config_type=WORKFLOW&first_revision=99&second_revision={w1}"
            ),
            None,
        ),
        400,
        &["first_revision", "WORKFLOW has no revision 99"],
    );
    refused(
        call(
            url,
            "GET",
            "/api/configs/diff?config_type=DATASET&first_revision=1&second_revision=1",
            None,
        ),
        400,
        &["config_type", "unknown config type 'DATASET'"],
    );
    server.stop();
}

/// `gantry config ...` with `(code, stdout, stderr)`; panics on failure.
fn gantry_ok(url: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(url, args);
    assert_eq!(code, 0, "gantry {args:?}: {stderr}");
    stdout
}

fn gantry_fails(url: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(url, args);
    assert_ne!(code, 0, "gantry {args:?} succeeded: {stdout}");
    stderr
}

#[test]
fn revision_verbs_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.as_str();
    let first = put(
        url,
        "/api/configs/pool/gpu",
        json!({"backend": "local", "description": "first"}),
        "gpu",
    );
    let second = put(
        url,
        "/api/configs/pool/gpu",
        json!({"backend": "local", "description": "second"}),
        "gpu again",
    );

    // show TYPE:REV [NAME...]: the revision, the name, then keys.
    let at = format!("POOL:{first}");
    let shown: Value = serde_json::from_str(&gantry_ok(url, &["config", "show", &at])).unwrap();
    assert_eq!(shown["description"], "first");
    let text = gantry_ok(url, &["config", "show", &at, "gpu", "description"]);
    assert_eq!(text.trim(), "\"first\"");
    let text = gantry_ok(url, &["config", "show", "POOL", "gpu", "description"]);
    assert_eq!(text.trim(), "\"second\"");
    let stderr = gantry_fails(url, &["config", "show", "POOL:999"]);
    assert!(stderr.contains("POOL has no revision 999"), "{stderr}");
    let stderr = gantry_fails(url, &["config", "show", "POOL:zero"]);
    assert!(stderr.contains("whole number from 1"), "{stderr}");

    // tag: OSMO's --set/--delete (several values or commas); TYPE alone is the latest.
    let text = gantry_ok(
        url,
        &[
            "config", "tag", &at, "--set", "stable", "gold", "--delete", "none",
        ],
    );
    assert_eq!(
        text.trim(),
        format!("POOL:{first} ('gpu'): tags stable, gold")
    );
    let text = gantry_ok(url, &["config", "tag", &at, "--remove", "gold"]);
    assert!(text.trim().ends_with("tags stable"), "{text}");
    let text = gantry_ok(url, &["config", "tag", "POOL", "--add", "latest,new"]);
    assert_eq!(
        text.trim(),
        format!("POOL:{second} ('gpu'): tags latest, new")
    );
    let table = gantry_ok(url, &["config", "history", "POOL", "gpu"]);
    assert!(
        table.contains("latest,new") && table.contains("stable"),
        "{table}"
    );
    let table = gantry_ok(url, &["config", "history", "POOL", "--tags", "stable"]);
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("POOL "))
        .collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains(&format!(" {first} ")), "{table}");
    let table = gantry_ok(
        url,
        &["config", "history", "POOL", "-r", &second.to_string()],
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("POOL "))
        .collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains("latest,new"), "{table}");
    let stderr = gantry_fails(url, &["config", "tag", &at]);
    assert!(stderr.contains("--set"), "{stderr}");

    // OSMO's paging, order and time windows.
    let revisions = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["config", "history", "POOL", "gpu", "-t", "json"];
        all.extend_from_slice(args);
        let reply: Value = serde_json::from_str(&gantry_ok(url, &all)).unwrap();
        reply["configs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|entry| entry["revision"].as_u64())
            .collect()
    };
    assert_eq!(revisions(&["--order", "asc"]), [first, second]);
    assert_eq!(revisions(&[]), [second, first]);
    assert_eq!(revisions(&["--order", "asc", "-o", "1"]), [second]);
    assert_eq!(
        revisions(&["--created-after", "2999-01-01"]),
        Vec::<u64>::new()
    );
    assert_eq!(
        revisions(&["--created-before", "2999-01-01T00:00:00"]).len(),
        2
    );
    assert_eq!(revisions(&["--at-timestamp", "2999-01-01"]), [second]);
    let stderr = gantry_fails(url, &["config", "history", "--created-after", "yesterday"]);
    assert!(stderr.contains("--created-after: 'yesterday'"), "{stderr}");
    let stderr = gantry_fails(
        url,
        &[
            "config",
            "history",
            "--at-timestamp",
            "2030-01-01",
            "--created-before",
            "2030-01-01",
        ],
    );
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    // diff: a revision against the latest, or two; JSON carries both sides.
    let text = gantry_ok(url, &["config", "diff", &at]);
    assert!(
        text.starts_with(&format!("--- POOL:{first}\n+++ POOL:{second}\n@@ ")),
        "{text}"
    );
    assert!(text.contains("\n-    \"description\": \"first\""), "{text}");
    assert!(
        text.contains("\n+    \"description\": \"second\""),
        "{text}"
    );
    let text = gantry_ok(url, &["config", "diff", &at, &at]);
    assert_eq!(
        text.trim(),
        "No differences were found between the two revisions"
    );
    let reply: Value =
        serde_json::from_str(&gantry_ok(url, &["config", "diff", &at, "-t", "json"])).unwrap();
    assert_eq!(reply["second_revision"], second);
    assert_eq!(reply["first_data"]["gpu"]["description"], "first");
    let stderr = gantry_fails(url, &["config", "diff", &at, "SERVICE:1"]);
    assert!(stderr.contains("config type mismatch"), "{stderr}");

    // delete TYPE:REV: the current one refused, an old one removed.
    let stderr = gantry_fails(url, &["config", "delete", &format!("POOL:{second}")]);
    assert!(
        stderr.contains("current revision of POOL 'gpu'"),
        "{stderr}"
    );
    let stderr = gantry_fails(url, &["config", "delete", &at, "gpu"]);
    assert!(stderr.contains("not both"), "{stderr}");
    let text = gantry_ok(url, &["config", "rollback", &at]);
    assert!(text.contains("POOL gpu: revision"), "{text}");
    let text = gantry_ok(url, &["config", "delete", &at]);
    assert_eq!(
        text.trim(),
        format!("Deleted revision {first} of POOL ('gpu') from its history")
    );
    let stderr = gantry_fails(url, &["config", "show", &at]);
    assert!(
        stderr.contains(&format!("POOL has no revision {first}")),
        "{stderr}"
    );

    // set: OSMO's generated roles; list: what is in force, one row each.
    let text = gantry_ok(
        url,
        &[
            "config",
            "set",
            "ROLE",
            "osmo-gpu",
            "pool",
            "--description",
            "gpu users",
        ],
    );
    assert!(text.contains("ROLE osmo-gpu: revision"), "{text}");
    let role: Value =
        serde_json::from_str(&gantry_ok(url, &["config", "show", "ROLE", "osmo-gpu"])).unwrap();
    assert_eq!(
        role["policies"][0]["resources"],
        json!(["pool/gpu*"]),
        "{role}"
    );
    let stderr = gantry_fails(url, &["config", "set", "ROLE", "gpu", "pool"]);
    assert!(stderr.contains("osmo-"), "{stderr}");
    let table = gantry_ok(url, &["config", "list"]);
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("POOL "))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows.iter().any(|row| row.contains(" gpu ")), "{table}");
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("ROLE ") && line.contains("osmo-gpu")),
        "{table}"
    );
    server.stop();
}
