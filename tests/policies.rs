//! OSMO's admin policies, applied at submit through `gantry dev` as an
//! OSMO user meets them: the WORKFLOW config's `max_num_tasks`,
//! RESOURCE_VALIDATION rules named by the pool and its platform (static
//! and node rules), the GPU guarantee by priority, platforms that must
//! exist, `privileged`/`hostNetwork`/`volumeMounts` against the platform's
//! settings and the executor, and a pool whose backend is offline
//! (accepted, with a warning). `workflow validate` answers as submit does.

mod common;

use common::{Api, DevServer, Reply};
use serde_json::{json, Value};
use std::time::Duration;

const FINISH_LIMIT: Duration = Duration::from_secs(60);

fn validate(api: &Api, spec: &str) -> Reply {
    api.post(
        "/api/pool/default/workflow?validation_only=true",
        Some(&json!({ "file": spec })),
    )
}

fn message(reply: &Reply) -> String {
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Submit and validate both refuse `spec` with the same message, which
/// contains every one of `expected`.
fn refused(api: &Api, spec: &str, expected: &[&str]) {
    let checked = validate(api, spec);
    assert_eq!(checked.status, 400, "validate: {}", checked.body);
    let submitted = api.submit(spec);
    assert_eq!(submitted.status, 400, "submit: {}", submitted.body);
    let text = message(&submitted);
    assert_eq!(message(&checked), text, "validate and submit differ");
    for part in expected {
        assert!(text.contains(part), "no {part:?} in {text}");
    }
}

fn task(name: &str, resources: &str, extra: &str) -> String {
    format!(
        "workflow:\n  name: {name}\n  resources:\n    default: {resources}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sh, -c, 'readlink /proc/self/ns/net']\n{extra}"
    )
}

/// The default pool of `gantry dev`, with `changes` merged into its config.
fn change_default_pool(api: &Api, changes: Value) {
    let current = api.get("/api/configs/pool/default");
    assert_eq!(current.status, 200, "{}", current.body);
    let mut body = current.json();
    let configs = body
        .get_mut("configs")
        .and_then(Value::as_object_mut)
        .cloned()
        .unwrap_or_else(|| body.as_object().cloned().unwrap_or_default());
    let mut configs = Value::Object(configs);
    for (key, value) in changes.as_object().unwrap() {
        configs[key] = value.clone();
    }
    let reply = api.put("/api/configs/pool/default", &json!({ "configs": configs }));
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn wait_for_nodes(api: &Api) {
    common::wait_for(
        Duration::from_secs(30),
        "the local node reported",
        || match api.get("/api/resources").json()["resources"].as_array() {
            Some(nodes) if !nodes.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn resource_validation_rules_of_the_pool_and_platform_decide() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    wait_for_nodes(&api);
    let rules = |name: &str, rules: Value| {
        let reply = api.put(
            &format!("/api/configs/resource_validation/{name}"),
            &json!({ "configs": rules }),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    // A static rule the pool names, and a node rule its platform names.
    rules(
        "small",
        json!([{"operator": "LE", "left_operand": "{{USER_CPU}}", "right_operand": "2",
                "assert_message": "cpu {{USER_CPU}} is over this pool's 2"}]),
    );
    rules(
        "fits-node",
        json!([{"operator": "LT", "left_operand": "{{USER_MEMORY}}", "right_operand": "{{K8_MEMORY}}",
                "assert_message": "memory {{USER_MEMORY}} is not below the node's {{K8_MEMORY}}"}]),
    );
    change_default_pool(
        &api,
        json!({
            "common_resource_validations": ["small"],
            "default_platform": "cpu",
            "platforms": {"cpu": {"resource_validations": ["fits-node"]}},
        }),
    );
    refused(
        &api,
        &task("big", "{cpu: 4}", ""),
        &[
            "Resource validation failed for task: t",
            "cpu 4.0 is over this pool's 2",
        ],
    );
    refused(
        &api,
        &task("huge", "{cpu: 1, memory: 64Ti}", ""),
        &[
            "Resource validation failed for task: t",
            "no node of platform 'cpu' of pool 'default' passes",
            "memory 64Ti is not below the node's",
        ],
    );
    // A platform the pool does not have.
    refused(
        &api,
        &task("elsewhere", "{cpu: 1, platform: h100}", ""),
        &[
            "platform 'h100'",
            "is not a platform of pool 'default' (its platforms: cpu)",
        ],
    );
    // What passes every rule runs.
    let id = api.submit_ok(&task("fits", "{cpu: 1, memory: 64Mi}", ""));
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");

    // A rule the pool names that was deleted since is an error, not a pass.
    let deleted = reqwest::blocking::Client::new()
        .delete(format!(
            "{}/api/configs/resource_validation/small",
            server.url
        ))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);
    refused(
        &api,
        &task("ruleless", "{cpu: 1}", ""),
        &["names RESOURCE_VALIDATION 'small' in common_resource_validations, which does not exist"],
    );
}

#[test]
fn task_limit_gpu_guarantee_and_host_access_follow_the_configs() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    wait_for_nodes(&api);

    // The WORKFLOW config's max_num_tasks, not a server flag.
    let two_tasks = "workflow:\n  name: pair\n  tasks:\n  - {name: a, image: ubuntu, command: ['true']}\n  - {name: b, image: ubuntu, command: ['true']}\n";
    let reply = reqwest::blocking::Client::new()
        .patch(format!("{}/api/configs/workflow", server.url))
        .json(&json!({"configs_dict": {"max_num_tasks": 1}}))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    refused(
        &api,
        two_tasks,
        &["2 tasks exceed the limit of 1 (the WORKFLOW config's max_num_tasks)"],
    );

    // NORMAL and HIGH fit the pool's GPU guarantee; LOW may borrow.
    change_default_pool(
        &api,
        json!({
            "resources": {"gpu": {"guarantee": 0}},
            "default_platform": "bench",
            "platforms": {"bench": {"host_network_allowed": true}},
        }),
    );
    let gpu = task("gpu", "{cpu: 1, gpu: 1}", "");
    refused(
        &api,
        &gpu,
        &["Pool default has 0 GPUs guaranteed", "LOW priority"],
    );
    let low = api.post(
        "/api/pool/default/workflow?priority=LOW&validation_only=true",
        Some(&json!({ "file": gpu })),
    );
    // Past the guarantee; the node's GPUs (none here) refuse it next.
    assert!(
        !message(&low).contains("guaranteed"),
        "LOW is not held to the guarantee: {}",
        low.body
    );

    // The platform allows the host's network: the task runs in the
    // server's network namespace rather than a group namespace of its own.
    let id = api.submit_ok(&task("hil", "{cpu: 1}", "    hostNetwork: true\n"));
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        logs.contains(&host.display().to_string()),
        "not on the host's network ({}): {logs}",
        host.display()
    );
    // It does not allow privileged tasks or host mounts.
    refused(
        &api,
        &task("root", "{cpu: 1}", "    privileged: true\n"),
        &["task 't': privileged: platform 'bench' of pool 'default' does not allow it (privileged_allowed is false)"],
    );
    refused(
        &api,
        &task("mounts", "{cpu: 1}", "    volumeMounts: [/data]\n"),
        &["does not allow mounting '/data' (allowed_mounts: none)"],
    );
    // Allowed by the platform, a privileged task is still refused by the
    // local executor, which cannot honour it.
    change_default_pool(
        &api,
        json!({"platforms": {"bench": {"privileged_allowed": true, "allowed_mounts": ["/data"]}}}),
    );
    refused(
        &api,
        &task("root", "{cpu: 1}", "    privileged: true\n"),
        &["privileged: the local executor", "cannot honour it"],
    );
    refused(
        &api,
        &task(
            "mounts",
            "{cpu: 1}",
            "    volumeMounts: ['/data:/mnt/data']\n",
        ),
        &["volumeMounts: the local executor"],
    );
}

#[test]
fn a_pool_whose_backend_is_offline_accepts_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let reply = api.put(
        "/api/configs/pool/far",
        &json!({"configs": {"backend": "far-lab"}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = api.post(
        "/api/pool/far/workflow",
        Some(&json!({"file": task("waits", "{cpu: 1}", "")})),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains(
            "pool 'far' is OFFLINE: its backend 'far-lab' has never had an operator connected"
        ),
        "{body}"
    );
    let id = body["name"].as_str().unwrap().to_string();
    let workflow = api.workflow(&id);
    let status = workflow["status"].as_str().unwrap_or_default();
    assert!(
        ["PENDING", "WAITING", "PROCESSING", "SCHEDULING"].contains(&status),
        "it waits for the backend: {workflow}"
    );
    // Its events say why, as OSMO's PENDING reasons do.
    let events = api.get(&format!("/api/workflow/{id}/events")).body;
    assert!(
        events.contains("PENDING: pool 'far' is OFFLINE: its backend 'far-lab'"),
        "{events}"
    );
    // One that runs on an online pool has no such event.
    let ran = api.submit_ok(&task("here", "{cpu: 1}", ""));
    api.wait_finished(&ran, FINISH_LIMIT);
    let events = api.get(&format!("/api/workflow/{ran}/events")).body;
    assert!(!events.contains("PENDING"), "{events}");
}

/// OSMO's topology-aware scheduling as a user meets it: a pool without
/// topology keys refuses a resource's `topology` naming the key; the admin
/// gives the pool keys (shown back by `config show`, bad ones refused by
/// field); keys the pool lacks and tasks with different key sets are
/// refused by submit and validate alike; a workflow whose tasks share a
/// rack runs to the end on the local executor, where a group is on one
/// host, which every topology allows.
#[test]
fn topology_keys_of_the_pool_decide_what_a_workflow_may_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let spec = |first: &str, second: &str| {
        format!(
            "workflow:\n  name: racks\n  resources:\n    a: {{topology: [{first}]}}\n    b: {{topology: [{second}]}}\n  groups:\n  - name: g\n    tasks:\n    - {{name: lead, lead: true, image: ubuntu, resource: a, command: [sh, -c, 'echo shard 1']}}\n    - {{name: other, image: ubuntu, resource: b, command: [sh, -c, 'echo shard 2']}}\n"
        )
    };
    let same_rack = spec("{key: rack}", "{key: rack, requirementType: preferred}");
    refused(
        &api,
        &same_rack,
        &["topology key \"rack\" is not available in pool 'default' (it has no topology_keys)"],
    );

    let current = api.get("/api/configs/pool/default").json();
    let mut configs = current.get("configs").cloned().unwrap_or(current);
    configs["topology_keys"] = json!([{"key": "rack", "label": "kubernetes.io/hostname"}, {"key": "zone", "label": "topology.kubernetes.io/zone"}]);
    let reply = api.put("/api/configs/pool/default", &json!({ "configs": configs }));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        message(&reply).contains(
            "configs.topology_keys[0].label: kubernetes.io/hostname can only be the last"
        ),
        "{}",
        reply.body
    );
    change_default_pool(
        &api,
        json!({"topology_keys": [
            {"key": "zone", "label": "topology.kubernetes.io/zone"},
            {"key": "rack", "label": "example.com/rack"},
        ]}),
    );
    let shown = api.get("/api/configs/pool/default").json();
    let shown = shown.get("configs").cloned().unwrap_or(shown);
    assert_eq!(
        shown["topology_keys"],
        json!([
            {"key": "zone", "label": "topology.kubernetes.io/zone"},
            {"key": "rack", "label": "example.com/rack"},
        ])
    );
    refused(
        &api,
        &spec("{key: clique}", "{key: clique}"),
        &["task 'lead': resources.a.topology: topology key \"clique\" is not available in pool 'default' (its topology keys are zone, rack)"],
    );
    refused(
        &api,
        &spec("{key: zone}, {key: rack}", "{key: zone}"),
        &["task 'other': resources.b.topology: all tasks must use the same topology keys"],
    );
    let id = api.submit_ok(&same_rack);
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow:#}");
}
