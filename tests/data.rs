//! Task data through object storage, end to end through `gantry dev`: a
//! serial workflow hands files from one task to the next through the
//! default directory store and through a real S3-compatible server
//! configured with `workflow_data.credential`; url outputs land at their
//! URL; regex filters keep only matching files on an input and an output;
//! a missing input fails the task with exit code 2010 and a message naming
//! it; `workflow query` shows the download and upload times.

mod common;

use common::{cli, start_moto, task_of, DevServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const FINISH_LIMIT: Duration = Duration::from_secs(120);

/// produce → consume: produce writes two csv files and a txt file; its
/// url output keeps only `sub/`; consume's input keeps only `.csv` files.
fn handoff_spec(export_url: &str) -> String {
    format!(
        r#"workflow:
  name: handoff
  tasks:
  - name: produce
    image: ubuntu
    command: [sh, -c, "mkdir -p {{{{output}}}}/sub && echo alpha > {{{{output}}}}/a.csv && echo beta > {{{{output}}}}/b.txt && echo gamma > {{{{output}}}}/sub/c.csv"]
    outputs:
    - url: {export_url}
      regex: '^sub/'
  - name: consume
    image: ubuntu
    command: [sh, -c, "cd {{{{input:0}}}} && find . -type f | sort && cat a.csv sub/c.csv"]
    inputs:
    - task: produce
      regex: '\.csv$'
"#
    )
}

fn logs(url: &str, id: &str, task: &str) -> String {
    let (code, stdout, stderr) = cli(url, &["workflow", "logs", id, "-t", task]);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// The workflow completed, consume saw exactly the filtered files, and
/// both tasks carry their data times (JSON and `workflow query`).
fn check_handoff(server: &DevServer, id: &str) {
    let api = server.client();
    let workflow = api.wait_finished(id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow:#}");
    let consumed = logs(&server.url, id, "consume");
    let stdout: Vec<&str> = consumed
        .lines()
        .filter_map(|line| line.split_once("[consume] ").map(|(_, text)| text))
        .filter(|text| !text.starts_with('['))
        .collect();
    assert!(
        stdout.ends_with(&["./a.csv", "./sub/c.csv", "alpha", "gamma"]),
        "{consumed}"
    );
    assert!(
        consumed.contains("[download] input 0 (task produce): 2 files, 12 B in "),
        "{consumed}"
    );
    let produced = logs(&server.url, id, "produce");
    assert!(
        produced.contains("[upload] output 0 (") && produced.contains(": 1 files, 6 B in "),
        "{produced}"
    );
    assert!(
        produced.contains("[upload] intermediate output: 3 files, 17 B in "),
        "{produced}"
    );

    let consume = task_of(&workflow, "consume").expect("consume");
    let produce = task_of(&workflow, "produce").expect("produce");
    for (task, field) in [
        (&consume, "input_download_start_time"),
        (&consume, "input_download_end_time"),
        (&produce, "output_upload_start_time"),
        (&produce, "output_upload_end_time"),
    ] {
        assert!(task[field].is_string(), "{field}: {task:#}");
    }
    let (code, query, stderr) = cli(&server.url, &["workflow", "query", id]);
    assert_eq!(code, 0, "{stderr}");
    let row = |name: &str| {
        query
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    // Download and Upload columns: a duration where the phase ran.
    assert!(row("consume").matches(" s ").count() >= 1, "{query}");
    assert!(row("produce").matches(" s ").count() >= 1, "{query}");
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walk(dir)
        .into_iter()
        .filter_map(|path| {
            path.strip_prefix(dir)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn tasks_pass_files_through_the_default_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let server = DevServer::start(&data_dir);
    // A url output on the directory store must lie inside its data root.
    let export = data_dir.join("objects/data/exports/run-1");
    let id = server
        .client()
        .submit_ok(&handoff_spec(&format!("file://{}", export.display())));
    check_handoff(&server, &id);
    // The url output holds only what its regex kept.
    assert_eq!(files_under(&export), ["sub/c.csv"]);
    // The intermediate prefix (produce has a consumer) holds everything.
    let intermediate = data_dir.join("objects/data").join(&id).join("produce");
    assert_eq!(
        files_under(&intermediate),
        [".gantry-output", "a.csv", "b.txt", "sub/c.csv"]
    );
    // consume has no consumers and no outputs: it publishes too (OSMO).
    assert!(data_dir
        .join("objects/data")
        .join(&id)
        .join("consume/.gantry-output")
        .is_file());
}

#[test]
fn a_missing_input_fails_the_task_with_2010_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let nothing = format!(
        "file://{}/objects/data/nothing-here",
        dir.path().join("dev").display()
    );
    let id = server.client().submit_ok(&format!(
        r#"workflow:
  name: missing
  tasks:
  - name: needy
    image: ubuntu
    command: [sh, -c, "echo must not run"]
    inputs:
    - url: {nothing}
"#
    ));
    let workflow = server.client().wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "FAILED", "{workflow:#}");
    let task = task_of(&workflow, "needy").expect("task");
    assert_eq!(task["exit_code"], 2010, "{task:#}");
    assert_eq!(
        task["failure_message"],
        format!("input 0 (url {nothing}): nothing is stored at {nothing}"),
        "{task:#}"
    );
    assert!(task["start_time"].is_null(), "the command never started");
    let log = logs(&server.url, &id, "needy");
    assert!(
        log.contains(&format!("[download] failed: input 0 (url {nothing})")),
        "{log}"
    );
    assert!(!log.contains("must not run"), "{log}");
}

fn s3_keys(moto_url: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let listing =
        reqwest::blocking::get(format!("{moto_url}/{bucket}?list-type=2&prefix={prefix}"))
            .unwrap()
            .text()
            .unwrap();
    let mut keys: Vec<String> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
        .collect();
    keys.sort();
    keys
}

#[test]
fn tasks_pass_files_through_an_s3_store_set_in_the_workflow_config() {
    let Some(moto) = start_moto("gantry-data") else {
        println!("SKIPPED: moto_server is not installed (pip install 'moto[server]')");
        return;
    };
    let http = reqwest::blocking::Client::new();
    let created = http
        .put(format!("{}/gantry-exports", moto.url))
        .send()
        .unwrap();
    assert!(created.status().is_success());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    // The default chain (for the export bucket) comes from the environment;
    // the data bucket uses the config's static keys.
    let server = DevServer::start_wrapped(
        &[
            "env",
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
            &format!("AWS_ENDPOINT_URL={}", moto.url),
            "AWS_REGION=us-east-1",
        ],
        &data_dir,
        &["dev", "--listen", "127.0.0.1:0"],
    );
    let config = json!({"configs": {"workflow_data": {"credential": {
        "endpoint": "s3://gantry-data/runs",
        "region": "us-east-1",
        "override_url": moto.url,
        "addressing_style": "path",
        "access_key_id": "data-key",
        "access_key": "data-secret",
    }}}, "description": "data to moto"});
    let reply = http
        .put(format!("{}/api/configs/workflow", server.url))
        .json(&config)
        .send()
        .unwrap();
    assert!(reply.status().is_success(), "{:?}", reply.text());
    let shown: Value = http
        .get(format!("{}/api/configs/workflow", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let credential = &shown["workflow_data"]["credential"];
    assert_eq!(credential["access_key"], "[MASKED]", "{shown:#}");
    assert_eq!(credential["access_key_id"], "data-key");
    // A bad credential is refused with its field named.
    let bad = http
        .put(format!("{}/api/configs/workflow", server.url))
        .json(&json!({"configs": {"workflow_data": {"credential": {"endpoint": "gs://x"}}}}))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: Value = bad.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("configs.workflow_data.credential.endpoint:")),
        "{body}"
    );

    let id = server
        .client()
        .submit_ok(&handoff_spec("s3://gantry-exports/handoff"));
    check_handoff(&server, &id);
    assert_eq!(
        s3_keys(&moto.url, "gantry-exports", "handoff/"),
        ["handoff/sub/c.csv"]
    );
    assert_eq!(
        s3_keys(&moto.url, "gantry-data", &format!("runs/{id}/produce/")),
        [".gantry-output", "a.csv", "b.txt", "sub/c.csv"]
            .map(|name| format!("runs/{id}/produce/{name}"))
    );
    assert!(
        !data_dir.join("objects/data").join(&id).exists(),
        "nothing in the local default store"
    );
}

/// OSMO's `checkpoint` on the local executor: a task's directory (a
/// relative path, read from `/`) is uploaded while the task runs and once
/// more after its command exits, only the files the regex keeps and never
/// a link. A checkpoint path the task links to a host directory resolves
/// inside the task's own file system, so nothing of the host's is read;
/// nor is a kernel file system (`/proc`).
#[test]
fn checkpoints_upload_while_the_task_runs_and_once_after_and_never_follow_links_out() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("dev");
    let server = DevServer::start(&data_dir);
    // A host directory the task must never reach through a link.
    let host_secret = dir.path().join("host-secret");
    std::fs::create_dir_all(&host_secret).unwrap();
    std::fs::write(host_secret.join("stolen.pth"), "host data").unwrap();
    let store = data_dir.join("objects/data");
    let spec = format!(
        r#"
workflow:
  name: ckpt
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c]
    args:
    - |
      mkdir -p /tmp/models
      echo 1 > /tmp/models/epoch-1.pth
      echo notes > /tmp/models/notes.txt
      ln -s /etc/hostname /tmp/models/host.pth
      ln -s {secret} /tmp/evil
      sleep 5
      echo 2 > /tmp/models/epoch-2.pth
    checkpoint:
    - {{path: tmp/models, url: "file://{store}/ckpt/{{{{workflow_id}}}}", frequency: 1s, regex: '\.pth$'}}
    - {{path: /tmp/evil, url: "file://{store}/evil/{{{{workflow_id}}}}", frequency: 1s}}
    - {{path: /proc, url: "file://{store}/proc/{{{{workflow_id}}}}", frequency: 1s, regex: 'kcore|version|environ'}}
"#,
        secret = host_secret.display(),
        store = store.display(),
    );
    let api = server.client();
    let id = api.submit_ok(&spec);
    let uploaded = store.join("ckpt").join(&id);
    // The first checkpoint lands while the task still runs.
    common::wait_for(Duration::from_secs(60), "the first checkpoint", || {
        if uploaded.join("epoch-1.pth").is_file() {
            Ok(())
        } else {
            Err(format!("nothing under {}", uploaded.display()))
        }
    });
    let running = api.workflow(&id);
    assert_eq!(running["status"], "RUNNING", "{running:#}");
    assert!(!uploaded.join("epoch-2.pth").exists());

    let workflow = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow:#}");
    let log = logs(&server.url, &id, "train");
    // The last upload, after the command exited, took what it wrote last.
    assert_eq!(
        files_under(&uploaded),
        ["epoch-1.pth", "epoch-2.pth"],
        "{log}"
    );
    // The link to the host's directory led nowhere: nothing uploaded.
    assert!(
        files_under(&store.join("evil")).is_empty(),
        "{:?}",
        files_under(&store.join("evil"))
    );
    // Nor is the kernel's state read on the task's behalf (as root the
    // executor could read /proc/kcore).
    assert!(files_under(&store.join("proc")).is_empty());
    assert!(log.contains("on the kernel file system proc"), "{log}");
    assert!(log.contains("[checkpoint] /tmp/models to file://"), "{log}");
    assert!(
        log.contains("[checkpoint] /tmp/evil to file://") && log.contains("failed"),
        "{log}"
    );
    assert!(log.contains("symlinks skipped"), "{log}");
}
