//! Backends, pools and configs through real processes: config
//! update/history/rollback/delete through the CLI; pool and resource lists
//! from the local operator's heartbeats; submissions checked against the
//! pool's nodes; and a backend whose operator stops going offline after the
//! grace, its running task failed after the longer grace — by the replicated
//! timers of a restarted server.

mod common;

use common::{DevServer, BINARY};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// The CLI against `url` with `token`; `(code, stdout, stderr)`.
fn cli(url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env("GANTRY_URL", url)
        .env_remove("GANTRY_CA")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("gantry-test-no-config"),
        );
    match token {
        Some(token) => command.env("GANTRY_TOKEN", token),
        None => command.env_remove("GANTRY_TOKEN"),
    };
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_of(url: &str, token: Option<&str>, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-t", "json"]);
    let (code, stdout, stderr) = cli(url, token, &all);
    assert_eq!(code, 0, "gantry {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what} after {limit:?}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn configs_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.as_str();
    let file = dir.path().join("pool.yaml");
    std::fs::write(
        &file,
        "backend: local\ndescription: first\nresources: {gpu: {guarantee: 0, maximum: 4}}\n",
    )
    .unwrap();
    let first = json_of(
        url,
        None,
        &[
            "config",
            "update",
            "POOL",
            "gpu",
            "--file",
            file.to_str().unwrap(),
            "--description",
            "add gpu",
            "--tags",
            "a,b",
        ],
    );
    assert_eq!(first["config_type"], "POOL");
    let first_revision = first["revision"].as_u64().unwrap();
    std::fs::write(
        &file,
        "{\"backend\": \"local\", \"description\": \"second\"}",
    )
    .unwrap();
    let second = json_of(
        url,
        None,
        &[
            "config",
            "update",
            "POOL",
            "gpu",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(second["revision"].as_u64().unwrap(), first_revision + 1);
    assert_eq!(
        json_of(url, None, &["config", "show", "POOL", "gpu"])["description"],
        "second"
    );

    // `config show` output goes back in unchanged.
    let shown = json_of(url, None, &["config", "show", "POOL", "gpu"]);
    std::fs::write(&file, shown.to_string()).unwrap();
    let (code, _, stderr) = cli(
        url,
        None,
        &[
            "config",
            "update",
            "POOL",
            "gpu",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");

    let rolled = json_of(
        url,
        None,
        &["config", "rollback", "POOL", &first_revision.to_string()],
    );
    assert_eq!(rolled["name"], "gpu");
    let shown = json_of(url, None, &["config", "show", "POOL", "gpu"]);
    assert_eq!(shown["description"], "first");
    assert_eq!(shown["resources"]["gpu"]["maximum"], 4);

    let history = json_of(url, None, &["config", "history", "POOL", "gpu"]);
    let entries = history["configs"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{history}");
    assert_eq!(
        entries[0]["revision"].as_u64().unwrap(),
        rolled["revision"].as_u64().unwrap()
    );
    assert_eq!(entries[0]["data"]["description"], "first");
    let oldest = &entries[3];
    assert_eq!(oldest["description"], "add gpu");
    assert_eq!(oldest["tags"], json!(["a", "b"]));
    assert_eq!(oldest["username"], "anonymous");
    assert!(
        oldest["created_at"].as_str().unwrap().starts_with("20"),
        "{oldest}"
    );
    let (code, table, _) = cli(url, None, &["config", "history", "POOL"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("add gpu") && table.contains("default"),
        "{table}"
    );

    json_of(url, None, &["config", "delete", "POOL", "gpu"]);
    let (code, _, stderr) = cli(url, None, &["config", "show", "POOL", "gpu"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let history = json_of(url, None, &["config", "history", "POOL", "gpu"]);
    assert_eq!(history["configs"][0]["deleted"], true);

    // Bad bodies are refused with the field named; nothing is written.
    std::fs::write(
        &file,
        "{\"scheduler_settings\": {\"scheduler_type\": \"slurm\"}}",
    )
    .unwrap();
    let (code, _, stderr) = cli(
        url,
        None,
        &[
            "config",
            "update",
            "BACKEND",
            "local",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("configs.scheduler_settings.scheduler_type"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "{\"backend\": \"local\", \"platforms\": {\"a\": {}}, \"default_platform\": \"b\"}",
    )
    .unwrap();
    let (code, _, stderr) = cli(
        url,
        None,
        &[
            "config",
            "update",
            "POOL",
            "p",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("configs.default_platform"), "{stderr}");
    let (code, _, stderr) = cli(url, None, &["config", "show", "NODES"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown config type"), "{stderr}");

    // BACKEND: a partial update keeps what it does not name, and the operator's state.
    std::fs::write(&file, "scheduler_settings: {scheduler_type: volcano, scheduler_name: volcano}\ndashboard_url: https://dash\n").unwrap();
    json_of(
        url,
        None,
        &[
            "config",
            "update",
            "BACKEND",
            "local",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    std::fs::write(&file, "grafana_url: https://grafana\n").unwrap();
    json_of(
        url,
        None,
        &[
            "config",
            "update",
            "BACKEND",
            "local",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let backend = json_of(url, None, &["config", "show", "BACKEND", "local"]);
    assert_eq!(backend["scheduler_settings"]["scheduler_type"], "volcano");
    assert_eq!(backend["dashboard_url"], "https://dash");
    assert_eq!(backend["grafana_url"], "https://grafana");
    assert_eq!(backend["online"], true, "{backend}");
    // SERVICE: PUT then PATCH.
    std::fs::write(&file, "{\"backend_heartbeat_grace\": \"90s\"}").unwrap();
    json_of(
        url,
        None,
        &[
            "config",
            "update",
            "SERVICE",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let service = json_of(url, None, &["config", "show", "SERVICE"]);
    assert_eq!(service["backend_heartbeat_grace"], "90s");
    assert_eq!(service["max_pod_restart_limit"], "30m");
}

#[test]
fn pools_and_resources_show_the_operators_nodes_and_submissions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.as_str();
    let node = wait_for(
        Duration::from_secs(30),
        "a node from the local operator",
        || {
            let resources = json_of(url, None, &["resource", "list"]);
            resources["resources"][0]
                .as_object()
                .cloned()
                .map(Value::Object)
                .ok_or_else(|| resources.to_string())
        },
    );
    assert_eq!(node["backend"], "local");
    assert_eq!(node["pool_platform_labels"], json!({"default": [""]}));
    let cpus: u64 = node["allocatable_fields"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cpus >= 1, "{node}");
    assert_eq!(node["conditions"], json!(["Ready"]));

    let quota = json_of(url, None, &["pool", "list"]);
    let pool = &quota["node_sets"][0]["pools"][0];
    assert_eq!(pool["name"], "default");
    assert_eq!(pool["status"], "ONLINE");
    assert_eq!(pool["nodes"], 1);
    assert_eq!(pool["capacity"]["cpu"], cpus.to_string());
    assert_eq!(pool["usage"]["cpu"], "0");

    // A running task's request shows as use on the node and in the pool.
    let spec = "workflow:\n  name: busy\n  resources: {default: {cpu: 1, memory: 64Mi}}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sleep, '600']\n";
    let api = server.client();
    let id = api.submit_ok(spec);
    api.wait_task(&id, "t", "RUNNING", Duration::from_secs(30));
    let quota = json_of(url, None, &["pool", "list"]);
    assert_eq!(
        quota["node_sets"][0]["pools"][0]["usage"]["cpu"], "1",
        "{quota}"
    );
    assert_eq!(
        quota["node_sets"][0]["pools"][0]["usage"]["memory"], "65536Ki",
        "{quota}"
    );
    let resources = json_of(url, None, &["resource", "list", "--pools", "default"]);
    assert_eq!(
        resources["resources"][0]["usage_fields"]["cpu"], "1",
        "{resources}"
    );
    let (code, table, _) = cli(url, None, &["pool", "list"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("default")
            && table.contains("ONLINE")
            && table.contains(&format!("1/{cpus}")),
        "{table}"
    );
    let (code, table, _) = cli(url, None, &["resource", "list"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("Ready") && table.contains(&format!("1/{cpus}")),
        "{table}"
    );
    api.post(&format!("/api/workflow/{id}/cancel"), None);

    // More CPU than any node has: refused at submission, naming the resource.
    let too_big = "workflow:\n  name: huge\n  resources: {default: {cpu: 4096}}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";
    let reply = api.submit(too_big);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error_code"], "SUBMISSION");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("cpu 4096") && message.contains("largest"),
        "{message}"
    );
    let id = body["workflow_id"].as_str().unwrap();
    assert_eq!(api.workflow(id)["status"], "FAILED_SUBMISSION");
    let too_much_memory = "workflow:\n  name: huge\n  resources: {default: {memory: 64Ti}}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";
    let reply = api.submit(too_much_memory);
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["message"].as_str().unwrap().contains("memory"),
        "{}",
        reply.body
    );

    // A pool in maintenance takes no submissions from non-admins (dev: auth
    // off, the caller is unrestricted), and shows MAINTENANCE.
    let file = dir.path().join("pool.json");
    std::fs::write(
        &file,
        "{\"backend\": \"local\", \"enable_maintenance\": true}",
    )
    .unwrap();
    json_of(
        url,
        None,
        &[
            "config",
            "update",
            "POOL",
            "default",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let quota = json_of(url, None, &["pool", "list"]);
    assert_eq!(quota["node_sets"][0]["pools"][0]["status"], "MAINTENANCE");
}

#[test]
fn a_silent_backend_goes_offline_and_its_tasks_fail_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let with_operator = [
        "server",
        "--bootstrap",
        "--local-backend",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let server = DevServer::start_with(&data, &with_operator);
    let token = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    let url = server.url.clone();
    let file = dir.path().join("service.json");
    std::fs::write(
        &file,
        "{\"backend_heartbeat_grace\": \"4s\", \"backend_lost_grace\": \"8s\"}",
    )
    .unwrap();
    json_of(
        &url,
        Some(&token),
        &[
            "config",
            "update",
            "SERVICE",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    let changed = chrono::Utc::now();
    // Wait for a heartbeat that carries the short graces (one every 5 s).
    wait_for(
        Duration::from_secs(20),
        "a heartbeat after the config change",
        || {
            let backend = json_of(&url, Some(&token), &["config", "show", "BACKEND", "local"]);
            let last = backend["last_heartbeat"].as_str().unwrap_or_default();
            // OSMO's form: naive UTC with microseconds.
            match chrono::NaiveDateTime::parse_from_str(last, "%Y-%m-%dT%H:%M:%S%.f") {
                Ok(time) if time.and_utc() > changed && backend["online"] == true => Ok(()),
                _ => Err(backend.to_string()),
            }
        },
    );
    let spec = "workflow:\n  name: orphan\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sleep, '600']\n";
    let agent = reqwest::blocking::Client::new();
    let reply: Value = agent
        .post(format!("{url}/api/pool/default/workflow"))
        .bearer_auth(&token)
        .json(&json!({"file": spec}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = reply["name"].as_str().unwrap().to_string();
    let query = |url: &str| -> Value {
        agent
            .get(format!("{url}/api/workflow/{id}"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    wait_for(Duration::from_secs(30), "the task running", || {
        let workflow = query(&url);
        (workflow["groups"][0]["tasks"][0]["status"] == "RUNNING")
            .then_some(())
            .ok_or(workflow.to_string())
    });

    // The operator dies with its server; the server comes back without one.
    server.kill9();
    let without_operator: Vec<&str> = with_operator
        .iter()
        .copied()
        .filter(|a| *a != "--local-backend")
        .collect();
    let server = DevServer::start_with(&data, &without_operator);
    let url = server.url.clone();
    let backend = wait_for(Duration::from_secs(30), "the backend offline", || {
        let backend = json_of(&url, Some(&token), &["config", "show", "BACKEND", "local"]);
        (backend["online"] == false)
            .then_some(backend.clone())
            .ok_or(backend.to_string())
    });
    assert_eq!(
        backend["nodes"].as_array().map(Vec::len),
        Some(1),
        "the last inventory is kept"
    );
    let quota = json_of(&url, Some(&token), &["pool", "list"]);
    assert_eq!(
        quota["node_sets"][0]["pools"][0]["status"], "OFFLINE",
        "{quota}"
    );
    let workflow = wait_for(Duration::from_secs(30), "the workflow failed", || {
        let workflow = query(&url);
        (workflow["status"] == "FAILED_BACKEND_ERROR")
            .then_some(workflow.clone())
            .ok_or(workflow.to_string())
    });
    let task = &workflow["groups"][0]["tasks"][0];
    assert_eq!(task["status"], "FAILED_BACKEND_ERROR");
    assert_eq!(task["exit_code"], 3001);
    assert!(
        task["failure_message"]
            .as_str()
            .unwrap()
            .contains("no heartbeat"),
        "{task}"
    );
}
