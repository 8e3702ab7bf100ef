//! Restart and resubmit through the real binary, as OSMO's users do them:
//! `POST /api/pool/{pool}/workflow/{id}/restart` re-runs a failed workflow's
//! groups that did not complete as a new workflow reading the completed
//! groups' outputs from the old one; `?workflow_id=` with no body submits an
//! earlier workflow's spec again. Both also through `gantry workflow`.

mod common;

use common::{cli, group_of, task_of, DevServer};
use std::time::Duration;

/// `train` fails in the first workflow (`pipe-1`) and succeeds in any other,
/// reading what `prep` wrote.
const PIPELINE: &str = r#"workflow:
  name: pipe
  groups:
  - name: making
    tasks:
    - name: prep
      lead: true
      image: ubuntu
      command: [sh, -c, 'echo "made by {{workflow_id}}" > {{output}}/data.txt']
  - name: training
    tasks:
    - name: train
      lead: true
      image: ubuntu
      command: [sh, -c, 'cat {{input:prep}}/data.txt; [ "{{workflow_id}}" != pipe-1 ]']
      inputs:
      - task: prep
"#;

#[test]
fn a_restart_reruns_what_failed_and_reads_what_completed_from_the_old_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    let first = api.submit_ok(PIPELINE);
    assert_eq!(first, "pipe-1");
    let old = api.wait_finished(&first, Duration::from_secs(60));
    assert_eq!(old["status"], "FAILED", "{old}");
    assert_eq!(
        group_of(&old, "making").expect("making")["status"],
        "COMPLETED"
    );

    // A completed workflow cannot be restarted; an unknown one is 404.
    let reply = api.post("/api/pool/default/workflow/nope-1/restart", None);
    assert_eq!(reply.status, 404, "{}", reply.body);

    let reply = api.post(&format!("/api/pool/default/workflow/{first}/restart"), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let restarted = reply.json()["name"].as_str().expect("name").to_string();
    assert_eq!(restarted, "pipe-2");
    let new = api.wait_finished(&restarted, Duration::from_secs(60));
    assert_eq!(new["status"], "COMPLETED", "{new}");
    assert!(
        group_of(&new, "prep").is_none(),
        "prep completed: not run again"
    );
    assert!(task_of(&new, "train").is_some());
    // What train read is what pipe-1's prep wrote.
    let logs = api.get(&format!("/api/workflow/{restarted}/logs")).body;
    assert!(logs.contains("made by pipe-1"), "{logs}");

    let reply = api.post(
        &format!("/api/pool/default/workflow/{restarted}/restart"),
        None,
    );
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("only a failed workflow"),
        "{}",
        reply.body
    );
    server.stop();
}

#[test]
fn a_workflow_id_with_no_body_submits_that_workflows_spec_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    let first = api.submit_ok(PIPELINE);
    api.wait_finished(&first, Duration::from_secs(60));

    let reply = api.post(
        &format!("/api/pool/default/workflow?workflow_id={first}"),
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let again = reply.json()["name"].as_str().expect("name").to_string();
    assert_eq!(again, "pipe-2");
    let workflow = api.wait_finished(&again, Duration::from_secs(60));
    // The whole spec runs again: prep too, and train passes outside pipe-1.
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let logs = api.get(&format!("/api/workflow/{again}/logs")).body;
    assert!(logs.contains("made by pipe-2"), "{logs}");
    // The spec as the user wrote it is kept with the new workflow too.
    let template = api
        .get(&format!("/api/workflow/{again}/spec?use_template=true"))
        .body;
    assert!(template.contains("{{workflow_id}}"), "{template}");

    let reply = api.post("/api/pool/default/workflow?workflow_id=nope-1", None);
    assert_eq!(reply.status, 404, "{}", reply.body);
    server.stop();
}

#[test]
fn the_cli_restarts_and_resubmits_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    let first = api.submit_ok(PIPELINE);
    api.wait_finished(&first, Duration::from_secs(60));

    let (code, out, err) = cli(&server.url, &["workflow", "restart", &first]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pipe-2"), "{out}");
    let (code, out, err) = cli(&server.url, &["workflow", "submit", &first]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pipe-3"), "{out}");
    // A word that is neither a file nor a workflow ID says both.
    let (code, _, err) = cli(&server.url, &["workflow", "submit", "no-such-file.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-file.yaml"), "{err}");
    server.stop();
}
