//! Specs parsed as OSMO parses them, end to end through `gantry dev`:
//! repeated keys are accepted (the last wins) with a warning naming the
//! key and its line, in submit's and validate's answers; template errors
//! name the undefined variable; special tokens reach output URLs; the CLI
//! reads `files[].localpath` into `contents` (relative to the spec) and the
//! server refuses a `localpath` it is sent; `workflow validate` refuses
//! what submit refuses, the resource checks against the pool's nodes
//! included.

mod common;

use common::{cli, osmo_reference, DevServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const FINISH_LIMIT: Duration = Duration::from_secs(60);

fn validate(api: &common::Api, spec: &str) -> common::Reply {
    api.post(
        "/api/pool/default/workflow?validation_only=true",
        Some(&json!({ "file": spec })),
    )
}

fn warnings(reply: &common::Reply) -> Vec<String> {
    reply.json()["warnings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn workflow_count(api: &common::Api) -> usize {
    api.get("/api/workflow?limit=1000").json()["workflows"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn repeated_keys_keep_the_last_value_and_are_named_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();

    // The cookbook's github.yaml repeats a file's `path` (line 62). It
    // also asks for a credential, refused by name while the user lacks it;
    // once the user has it, the file validates unchanged.
    let original = osmo_reference("cookbook/integration_and_tools/github/github.yaml");
    let text = std::fs::read_to_string(&original).unwrap();
    let reply = validate(&api, &text);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("credentials.github-pat: Could not find the credential: github-pat."),
        "{}",
        reply.body
    );
    let set = api.post(
        "/api/credentials/github-pat",
        Some(&serde_json::json!({"generic_credential": {"credential": {"token": "ghp_example"}}})),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let github = dir.path().join("github.yaml");
    std::fs::write(&github, &text).unwrap();
    let expected =
        "duplicate key 'path' in workflow.tasks[0].files[1] at line 62: the last value is used";
    let reply = validate(&api, &text);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["logs"], "Workflow validation succeeded.");
    assert_eq!(warnings(&reply), [expected]);
    let (code, stdout, stderr) = cli(
        &server.url,
        &["workflow", "validate", github.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Workflow validation succeeded."),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("warning: {expected}")), "{stderr}");

    // A submit answers the same, and the task runs with the last value.
    let spec = "\
workflow:
  name: repeats
  tasks:
  - name: t
    image: ubuntu
    command: [sh, -c, 'echo first']
    command: [sh, -c, 'echo second']
";
    let reply = api.submit(spec);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        warnings(&reply),
        ["duplicate key 'command' in workflow.tasks[0] at line 7: the last value is used"]
    );
    let id = reply.json()["name"].as_str().unwrap().to_string();
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (code, logs, stderr) = cli(&server.url, &["workflow", "logs", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        logs.contains("[t] second") && !logs.contains("first"),
        "{logs}"
    );
}

#[test]
fn template_errors_name_the_undefined_variable_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let reply = server
        .client()
        .submit("workflow:\n  name: wf\n  pool: '{{ foo }}'\n");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["message"],
        "template error: undefined variable 'foo' (line 3)"
    );
}

#[test]
fn output_urls_get_their_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let server = DevServer::start(&data_dir);
    // A url output on the directory store lies inside its data root.
    let exports = data_dir.join("objects/data/exports");
    let spec = format!(
        "workflow:\n  name: tokens\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [sh, -c, 'echo hi > {{{{output}}}}/{{{{workflow_id}}}}.txt']\n    outputs:\n    - url: file://{}/{{{{workflow_id}}}}/\n",
        exports.display()
    );
    let id = server.client().submit_ok(&spec);
    let workflow = server.client().wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let landed = exports.join(&id).join(format!("{id}.txt"));
    assert_eq!(
        std::fs::read_to_string(&landed).unwrap_or_default(),
        "hi\n",
        "{}",
        landed.display()
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_cli_reads_local_files_and_the_server_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let specs = dir.path().join("specs");
    // A templated spec (rendered before the files are read, as OSMO's CLI
    // does) whose script uses a token and shell syntax Jinja would read.
    let spec_text = "\
workflow:
  name: '{{ name }}'
  tasks:
  - name: run
    image: ubuntu
    command: [sh, /tmp/run.sh]
    files:
    - path: /tmp/run.sh
      localpath: scripts/run.sh
default-values:
  name: local-files
";
    let spec = specs.join("spec.yaml");
    write(&spec, spec_text);
    write(
        &specs.join("scripts/run.sh"),
        "set -- a b c\necho \"args: ${#} {{workflow_id}}\"\n",
    );
    // Run from elsewhere: the path is relative to the spec, not the cwd.
    let (code, _, stderr) = cli(
        &server.url,
        &["workflow", "validate", spec.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = cli(
        &server.url,
        &["workflow", "submit", spec.to_str().unwrap(), "-t", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let id = serde_json::from_str::<Value>(&stdout).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (_, logs, _) = cli(&server.url, &["workflow", "logs", &id]);
    assert!(logs.contains(&format!("[run] args: 3 {id}")), "{logs}");
    // The template is the spec as written.
    let (_, template, _) = cli(&server.url, &["workflow", "spec", &id, "--template"]);
    assert_eq!(template, spec_text);

    // A missing file: refused before sending, naming task, entry and path.
    std::fs::remove_file(specs.join("scripts/run.sh")).unwrap();
    let before = workflow_count(&api);
    for verb in ["submit", "validate"] {
        let (code, _, stderr) = cli(&server.url, &["workflow", verb, spec.to_str().unwrap()]);
        assert_ne!(code, 0, "{verb}");
        let missing = specs.join("scripts/run.sh");
        assert!(
            stderr.contains("task 'run', workflow.tasks[0].files[0]")
                && stderr.contains(&missing.display().to_string())
                && stderr.contains("No such file"),
            "{verb}: {stderr}"
        );
    }
    assert_eq!(workflow_count(&api), before);

    // The server cannot read the client's disk.
    let reply = api.submit(
        "workflow:\n  name: raw\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [x]\n    files: [{path: /tmp/a, localpath: a.sh}]\n",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with(
            "workflow.tasks[0].files[0].localpath: a local file cannot be read by the server"
        ),
        "{message}"
    );
}

#[test]
fn validate_refuses_what_submit_refuses_against_the_pools_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    // The checks run once the local operator has reported its node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/api/resources").json()["resources"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "no node reported");
        std::thread::sleep(Duration::from_millis(200));
    }
    let too_big = "workflow:\n  name: huge\n  resources: {default: {cpu: 4096}}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";
    let before = workflow_count(&api);
    let reply = validate(&api, too_big);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error_code"], "SUBMISSION");
    assert!(body["workflow_id"].is_null(), "validation stores nothing");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("cpu 4096") && message.contains("largest"),
        "{message}"
    );
    assert_eq!(workflow_count(&api), before);
    // The same message as the submit that then refuses it.
    let submitted = api.submit(too_big);
    assert_eq!(submitted.status, 400, "{}", submitted.body);
    assert_eq!(submitted.json()["message"], message);
    // The CLI's validate says so too.
    let file = dir.path().join("huge.yaml");
    std::fs::write(&file, too_big).unwrap();
    let (code, _, stderr) = cli(
        &server.url,
        &["workflow", "validate", file.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("cpu 4096"), "{stderr}");
    // What fits validates.
    let fits = too_big.replace("cpu: 4096", "cpu: 1");
    let reply = validate(&api, &fits);
    assert_eq!(reply.status, 200, "{}", reply.body);
}
