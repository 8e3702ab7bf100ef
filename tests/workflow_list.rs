//! The workflow list as OSMO scopes it, through a real `gantry dev`: the
//! caller's own workflows unless `users` or `all_users` say otherwise;
//! OSMO's filters (priority, submit-time window, tags, label selectors);
//! labels stored at submit (the spec's, then `label=` overrides) and shown;
//! tags set through `/api/workflow/{name}/tag` within what the WORKFLOW
//! config allows (`/api/tag`); a workflow found by its uuid; and the same
//! through `gantry workflow list`'s flags.

mod common;

use common::{cli, DevServer};
use serde_json::{json, Value};

/// An HTTP call as `user` (OSMO's `x-osmo-user`, honoured with auth off).
fn call(url: &str, method: &str, path: &str, user: &str, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client
        .request(method, format!("{url}{path}"))
        .header("x-osmo-user", user);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// The IDs a listing names, in its order.
fn names(listing: &Value) -> Vec<String> {
    listing["workflows"]
        .as_array()
        .unwrap_or_else(|| panic!("no workflows: {listing}"))
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Owned IDs, to compare with a listing.
fn ids(of: &[&String]) -> Vec<String> {
    of.iter().map(|id| id.to_string()).collect()
}

fn spec(name: &str, labels: &str) -> String {
    format!(
        "workflow:\n  name: {name}\n{labels}  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n"
    )
}

fn submit(url: &str, user: &str, text: &str, query: &str) -> String {
    let (status, reply) = call(
        url,
        "POST",
        &format!("/api/pool/default/workflow{query}"),
        user,
        Some(&json!({ "file": text })),
    );
    assert_eq!(status, 200, "{reply}");
    reply["name"].as_str().expect("name").to_string()
}

#[test]
fn the_list_is_scoped_filtered_labelled_and_tagged_as_osmo_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.clone();
    let list = |user: &str, query: &str| -> Vec<String> {
        let (status, listing) = call(&url, "GET", &format!("/api/workflow{query}"), user, None);
        assert_eq!(status, 200, "{query}: {listing}");
        names(&listing)
    };

    // Labels: the spec's, then the query's overrides (the last one wins).
    let labelled = spec(
        "sim",
        "  labels:\n    project: sim_cars\n    team: robotics_a\n",
    );
    let a = submit(
        &url,
        "alice",
        &labelled,
        "?label=project=sim_trucks&label=tier=gold",
    );
    let b = submit(&url, "bob", &spec("hil", ""), "?priority=HIGH");
    let c = submit(&url, "alice", &spec("plain", ""), "?priority=LOW");

    // Scoped to the caller unless users or all_users say otherwise.
    assert_eq!(list("alice", ""), ids(&[&a, &c]));
    assert_eq!(list("bob", ""), ids(&[&b]));
    assert!(list("carol", "").is_empty());
    assert_eq!(list("alice", "?users=bob"), ids(&[&b]));
    assert_eq!(list("carol", "?all_users=true"), ids(&[&a, &b, &c]));
    assert_eq!(
        list("carol", "?users=alice&users=bob&order=DESC"),
        ids(&[&c, &b, &a])
    );
    assert_eq!(
        list("carol", "?users=alice,bob&limit=1&offset=1"),
        ids(&[&b])
    );
    // OSMO's CLI sends all_pools or pools.
    assert_eq!(list("alice", "?all_pools=true"), ids(&[&a, &c]));
    assert!(list("alice", "?pools=elsewhere").is_empty());

    assert_eq!(list("carol", "?all_users=true&priority=HIGH"), ids(&[&b]));
    assert_eq!(
        list("carol", "?all_users=true&priority=LOW&priority=NORMAL"),
        ids(&[&a, &c])
    );

    // Labels: stored, shown, selected.
    let (_, workflow) = call(&url, "GET", &format!("/api/workflow/{a}"), "alice", None);
    assert_eq!(
        workflow["labels"],
        json!({"project": "sim_trucks", "team": "robotics_a", "tier": "gold"})
    );
    assert_eq!(
        list("carol", "?all_users=true&label=project=sim_*"),
        ids(&[&a])
    );
    assert_eq!(
        list(
            "carol",
            "?all_users=true&label=team=robotics_(a%7Cb)&label=tier=g*"
        ),
        ids(&[&a])
    );
    assert_eq!(
        list("carol", "?all_users=true&no_label=project"),
        ids(&[&b, &c])
    );
    let (_, listing) = call(&url, "GET", "/api/workflow?label=tier=gold", "alice", None);
    assert_eq!(listing["workflows"][0]["labels"]["tier"], "gold");
    let (status, reply) = call(&url, "GET", "/api/workflow?label=team", "alice", None);
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("label"),
        "{reply}"
    );
    let (status, reply) = call(
        &url,
        "POST",
        "/api/pool/default/workflow?label=Bad%20Key=v",
        "alice",
        Some(&json!({ "file": spec("bad", "") })),
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(list("alice", "?name=bad"), Vec::<String>::new());

    // The submit-time window: [after, before), days or times in UTC.
    let today = chrono::Utc::now().date_naive();
    let (yesterday, tomorrow) = (today.pred_opt().unwrap(), today.succ_opt().unwrap());
    assert_eq!(
        list(
            "carol",
            &format!("?all_users=true&submitted_after={yesterday}")
        ),
        ids(&[&a, &b, &c])
    );
    assert!(list(
        "carol",
        &format!("?all_users=true&submitted_after={tomorrow}T00:00:00")
    )
    .is_empty());
    assert!(list(
        "carol",
        &format!("?all_users=true&submitted_before={yesterday}")
    )
    .is_empty());
    let (status, reply) = call(
        &url,
        "GET",
        "/api/workflow?submitted_after=yesterday",
        "alice",
        None,
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("submitted_after"),
        "{reply}"
    );

    // Tags: only what the WORKFLOW config allows.
    let (_, allowed) = call(&url, "GET", "/api/tag", "alice", None);
    assert_eq!(allowed, json!({"tags": []}));
    let (status, reply) = call(
        &url,
        "POST",
        &format!("/api/workflow/{a}/tag?add=nightly"),
        "alice",
        None,
    );
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = call(
        &url,
        "PUT",
        "/api/configs/workflow",
        "admin",
        Some(&json!({"configs": {"workflow_info": {"tags": ["nightly", "sim"]}}})),
    );
    assert_eq!(status, 200, "{reply}");
    let (_, allowed) = call(&url, "GET", "/api/tag", "alice", None);
    assert_eq!(allowed, json!({"tags": ["nightly", "sim"]}));
    let (status, reply) = call(
        &url,
        "POST",
        &format!("/api/workflow/{a}/tag?add=nightly&add=sim"),
        "alice",
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["tags"], json!(["nightly", "sim"]));
    let (status, _) = call(
        &url,
        "POST",
        &format!("/api/workflow/{b}/tag?add=sim"),
        "bob",
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = call(
        &url,
        "POST",
        &format!("/api/workflow/{a}/tag?remove=sim"),
        "alice",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list("carol", "?all_users=true&tags=nightly"), ids(&[&a]));
    assert_eq!(list("carol", "?all_users=true&tags=sim"), ids(&[&b]));
    assert_eq!(
        list("carol", "?all_users=true&tags=sim,nightly"),
        ids(&[&a, &b])
    );
    let (_, workflow) = call(&url, "GET", &format!("/api/workflow/{a}"), "alice", None);
    assert_eq!(workflow["tags"], json!(["nightly"]));
    let (status, _) = call(
        &url,
        "POST",
        "/api/workflow/nope-1/tag?add=sim",
        "alice",
        None,
    );
    assert_eq!(status, 404);

    // A workflow by its uuid: query, spec, tag.
    let uuid = workflow["uuid"].as_str().expect("uuid").to_string();
    let (status, by_uuid) = call(&url, "GET", &format!("/api/workflow/{uuid}"), "bob", None);
    assert_eq!(status, 200, "{by_uuid}");
    assert_eq!(by_uuid["name"], a.as_str());
    let (status, _) = call(
        &url,
        "POST",
        &format!("/api/workflow/{uuid}/tag?add=sim"),
        "alice",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list("carol", "?all_users=true&tags=sim"), ids(&[&a, &b]));
    // ... and its logs and events, once it has ended.
    server
        .client()
        .wait_finished(&a, std::time::Duration::from_secs(60));
    for path in ["logs", "error_logs", "events"] {
        let response = reqwest::blocking::Client::new()
            .get(format!("{url}/api/workflow/{uuid}/{path}"))
            .header("x-osmo-user", "bob")
            .send()
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200, "{path} by uuid");
        let text = response.text().unwrap_or_default();
        if path == "events" {
            assert!(text.contains("COMPLETED"), "{path}: {text}");
        }
    }

    // The same through `gantry workflow list` (auth off: the CLI's user is
    // `anonymous`, who submitted nothing).
    let gantry = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["workflow", "list", "-t", "json"];
        all.extend(args);
        let (code, stdout, stderr) = cli(&url, &all);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        names(&serde_json::from_str(&stdout).expect("json"))
    };
    assert!(gantry(&[]).is_empty());
    assert_eq!(gantry(&["-a"]), ids(&[&a, &b, &c]));
    assert_eq!(gantry(&["-u", "alice"]), ids(&[&a, &c]));
    assert_eq!(
        gantry(&["--user", "alice", "bob", "-o", "desc"]),
        ids(&[&c, &b, &a])
    );
    assert_eq!(gantry(&["-a", "--tags", "nightly"]), ids(&[&a]));
    assert_eq!(gantry(&["-a", "--priority", "high"]), ids(&[&b]));
    assert_eq!(gantry(&["-a", "--label", "project=sim_*"]), ids(&[&a]));
    assert_eq!(gantry(&["-a", "--no-label", "project"]), ids(&[&b, &c]));
    let after = |day: chrono::NaiveDate| day.format("%Y-%m-%d").to_string();
    assert_eq!(
        gantry(&["-a", "--submitted-after", &after(yesterday)]),
        ids(&[&a, &b, &c])
    );
    assert!(gantry(&["-a", "--submitted-after", &after(tomorrow)]).is_empty());
    // `gantry workflow submit --label` over the spec's labels.
    let dir_spec = dir.path().join("labelled.yaml");
    std::fs::write(&dir_spec, &labelled).unwrap();
    let spec_path = dir_spec.display().to_string();
    let (code, stdout, stderr) = cli(
        &url,
        &[
            "workflow",
            "submit",
            &spec_path,
            "--label",
            "team=robotics_b",
            "-t",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let d = serde_json::from_str::<Value>(&stdout).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, workflow) = call(&url, "GET", &format!("/api/workflow/{d}"), "carol", None);
    assert_eq!(
        workflow["labels"],
        json!({"project": "sim_cars", "team": "robotics_b"})
    );
    let (code, _, stderr) = cli(&url, &["workflow", "list", "-u", "bob", "-a"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--all-users"), "{stderr}");
    server.stop();
}
