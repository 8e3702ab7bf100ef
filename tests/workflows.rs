//! Workflows run end to end through the real binary: `gantry dev` with a
//! bubblewrap sandbox, redb state and the HTTP API on loopback.

mod common;

use common::{cli, group_of, processes_with, repo_path, task_of, DevServer, BINARY};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn every_example_completes_through_gantry_dev() {
    let dir = tempfile::tempdir().unwrap();
    for example in ["hello", "serial", "parallel", "group-lead", "templated"] {
        let output = Command::new(BINARY)
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("dev"))
            .arg(repo_path(&format!("examples/{example}.yaml")))
            .env("GANTRY_LOG", "warn")
            .output()
            .expect("run gantry dev");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{example} did not complete:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(stderr.contains(": COMPLETED"), "{example}: {stderr}");
        match example {
            "hello" => assert!(stdout.contains("[hello] Hello from Gantry"), "{stdout}"),
            "serial" => assert!(
                stdout.contains("[report] report: RAW SENSOR DATA"),
                "{stdout}"
            ),
            "parallel" => assert!(stdout.contains("[gather] scene c"), "{stdout}"),
            "templated" => assert!(stdout.contains("episode 2 of 3 in rollout-"), "{stdout}"),
            _ => {}
        }
    }
}

#[test]
fn failing_lead_fails_its_group_and_stops_the_sleeping_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let marker = format!("gantry-lead-sibling-{}", std::process::id());
    let id = api.submit_ok(&format!(
        r#"
workflow:
  name: lead-fails
  groups:
  - name: gang
    tasks:
    - name: lead
      lead: true
      image: ubuntu
      command: [sh, -c, "sleep 1; exit 1"]
    - name: sibling
      image: ubuntu
      command: [sh, -c, "sleep 600; echo {marker}"]
  - name: after
    tasks:
    - name: downstream
      lead: true
      image: ubuntu
      command: ["true"]
      inputs: [{{task: lead}}]
"#
    ));
    api.wait_task(&id, "sibling", "RUNNING", Duration::from_secs(30));
    assert!(
        !processes_with(&marker).is_empty(),
        "the sibling should be running"
    );
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "FAILED", "{workflow}");
    assert_eq!(group_of(&workflow, "gang").unwrap()["status"], "FAILED");
    assert_eq!(
        group_of(&workflow, "after").unwrap()["status"],
        "FAILED_UPSTREAM"
    );
    let lead = task_of(&workflow, "lead").unwrap();
    assert_eq!(lead["status"], "FAILED");
    assert_eq!(lead["exit_code"], 1);
    assert_eq!(task_of(&workflow, "sibling").unwrap()["status"], "FAILED");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sibling still runs: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kubernetes' `$(VAR)` references in command and args, expanded from the
/// task's environment as kubelet does (OSMO's own serial test workflow
/// passes its script as `args: ['$(FILE_PATH)']`): `$$` escapes, unknown
/// names stay as written, and shell syntax passes through.
#[test]
fn command_and_args_expand_var_references_like_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(
        r#"
workflow:
  name: var-refs
  tasks:
  - name: refs
    image: ubuntu
    command: ['$(SHELL_PATH)']
    args: ['$(FILE_PATH)', '$(GREETING)', '$$(GREETING)', '$(UNSET)', '$GREETING']
    environment:
      SHELL_PATH: /bin/sh
      FILE_PATH: /tmp/run.sh
      GREETING: hello
    files:
    - path: /tmp/run.sh
      contents: |
        echo "1=$1 2=$2 3=$3 4=$4 env=$GREETING"
"#,
    );
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (code, logs, stderr) = cli(&server.url, &["workflow", "logs", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        logs.contains("[refs] 1=hello 2=$(GREETING) 3=$(UNSET) 4=$GREETING env=hello"),
        "{logs}"
    );
}

#[test]
fn exec_timeout_ends_a_long_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(
        r#"
workflow:
  name: too-slow
  timeout: {exec_timeout: 3s}
  tasks:
  - name: nap
    image: ubuntu
    command: [sleep, "600"]
"#,
    );
    let started = Instant::now();
    let workflow = api.wait_finished(&id, Duration::from_secs(30));
    assert_eq!(workflow["status"], "FAILED_EXEC_TIMEOUT", "{workflow}");
    assert_eq!(
        task_of(&workflow, "nap").unwrap()["status"],
        "FAILED_EXEC_TIMEOUT"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn cancel_stops_a_running_task_and_a_finished_workflow_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let marker = format!("gantry-cancel-me-{}", std::process::id());
    let id = api.submit_ok(&format!(
        r#"
workflow:
  name: long-run
  tasks:
  - name: spin
    image: ubuntu
    command: [sh, -c, "echo started; sleep 600; echo {marker}"]
  - name: later
    image: ubuntu
    command: ["true"]
    inputs: [{{task: spin}}]
"#
    ));
    api.wait_task(&id, "spin", "RUNNING", Duration::from_secs(30));
    assert!(
        !processes_with(&marker).is_empty(),
        "the task should be running"
    );
    let (code, stdout, stderr) = cli(
        &server.url,
        &["workflow", "cancel", &id, "-m", "no longer needed"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let workflow = api.wait_finished(&id, Duration::from_secs(30));
    assert_eq!(workflow["status"], "FAILED_CANCELED", "{workflow}");
    assert_eq!(
        task_of(&workflow, "spin").unwrap()["status"],
        "FAILED_CANCELED"
    );
    assert_eq!(
        task_of(&workflow, "later").unwrap()["status"],
        "FAILED_CANCELED"
    );
    assert_eq!(workflow["cancelled_by"], "anonymous");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the canceled task still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Canceling again: refused unless forced.
    let again = api.post(&format!("/api/workflow/{id}/cancel"), None);
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.json()["message"]
        .as_str()
        .unwrap()
        .contains("already finished"));
    let forced = api.post(&format!("/api/workflow/{id}/cancel?force=true"), None);
    assert_eq!(forced.status, 200, "{}", forced.body);
}

#[test]
fn cli_verbs_show_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let hello = repo_path("examples/hello.yaml");
    let hello = hello.to_str().unwrap();
    let (code, stdout, stderr) = cli(&server.url, &["workflow", "submit", hello, "-t", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let submitted: serde_json::Value = serde_json::from_str(&stdout).expect("submit JSON");
    let id = submitted["name"].as_str().unwrap().to_string();
    server.client().wait_finished(&id, Duration::from_secs(30));

    let (code, stdout, _) = cli(&server.url, &["workflow", "list"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&id) && stdout.contains("COMPLETED"),
        "{stdout}"
    );
    let (code, stdout, _) = cli(
        &server.url,
        &["workflow", "list", "-s", "FAILED", "-t", "json"],
    );
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["workflows"].as_array().unwrap().len(), 0);
    let (code, stdout, _) = cli(&server.url, &["workflow", "query", &id]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("hello-group") && stdout.contains("COMPLETED"),
        "{stdout}"
    );
    let (code, stdout, _) = cli(
        &server.url,
        &["workflow", "logs", &id, "-t", "hello", "-n", "1"],
    );
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("[hello] Linux"), "{stdout}");
    let (code, stdout, _) = cli(&server.url, &["workflow", "spec", &id]);
    assert_eq!(code, 0);
    assert!(stdout.contains("name: hello"), "{stdout}");
    let (code, stdout, _) = cli(&server.url, &["pool", "list"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("default") && stdout.contains("ONLINE"),
        "{stdout}"
    );
    let (code, stdout, _) = cli(&server.url, &["version", "-t", "json"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("major"), "{stdout}");
    let (code, _, stderr) = cli(&server.url, &["workflow", "query", "nope-1"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not found"), "{stderr}");
}
