//! Logs as zstd chunks in object storage, end to end: a million lines come
//! back once and in order, `-n` reads only the chunks it needs, the same
//! works against a real S3-compatible server, and a leader killed while a
//! remote operator streams a numbered sequence loses and repeats nothing,
//! neither in the store nor for a `gantry workflow logs` following it from
//! the killed node.

mod common;

use common::{cli, gantry_ok, start_moto, wait_for, DevServer, Https, Pki, BINARY};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MILLION: &str = r#"workflow:
  name: million
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'awk "BEGIN { for (i = 1; i <= 1000000; i++) printf \"step %d loss=%.4f lr=0.0003 throughput=1843.2 samples/s\\n\", i, 1 / (1 + i / 1000) }"']
"#;

/// Raises the WORKFLOW config's log-line limits (OSMO's defaults keep 1,000
/// lines per task) to `lines`, for the tests that need more.
fn allow_log_lines(api: &common::Api, lines: u64) {
    let reply = api.put(
        "/api/configs/workflow",
        &serde_json::json!({
            "configs": {"max_task_log_lines": lines, "max_log_lines": lines},
            "description": "room for the test's lines",
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// The numbers of `step N` lines, in the order the logs show them.
fn step_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split("] step ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// GET the logs; returns the text, the chunks-read header and the time taken.
fn get_logs(url: &str, id: &str, query: &str) -> (String, usize, Duration) {
    let started = Instant::now();
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .get(format!("{url}/api/workflow/{id}/logs{query}"))
        .send()
        .expect("GET logs");
    assert_eq!(response.status().as_u16(), 200);
    let chunks: usize = response
        .headers()
        .get("x-gantry-log-chunks-read")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("chunks-read header");
    let text = response.text().expect("body");
    (text, chunks, started.elapsed())
}

/// Every log chunk file under `dir`, recursively.
fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".jsonl.zst") {
                files.push(path);
            }
        }
    }
    files
}

/// Raw (decompressed) and stored bytes of every chunk file under `dir`.
fn chunk_bytes(dir: &Path) -> (u64, u64, usize) {
    let (mut raw, mut stored, mut files) = (0, 0, 0);
    for path in chunk_files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        stored += bytes.len() as u64;
        raw += zstd::decode_all(bytes.as_slice()).unwrap().len() as u64;
        files += 1;
    }
    (raw, stored, files)
}

#[test]
fn a_million_lines_come_back_once_in_order_and_the_tail_reads_few_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    allow_log_lines(&api, 2_000_000);
    let id = api.submit_ok(MILLION);
    let running = wait_for(Duration::from_secs(60), "the task to run", || {
        let workflow = api.workflow(&id);
        match common::task_of(&workflow, "train")
            .and_then(|t| t["status"].as_str().map(String::from))
        {
            Some(status) if status == "RUNNING" || status == "COMPLETED" => Ok(Instant::now()),
            other => Err(format!("{other:?}")),
        }
    });
    let workflow = api.wait_finished(&id, Duration::from_secs(300));
    let ingest = running.elapsed();
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");

    let (text, chunks_all, full_time) = get_logs(&server.url, &id, "");
    let numbers = step_numbers(&text);
    assert_eq!(numbers.len(), 1_000_000, "every line once");
    assert!(
        numbers.iter().zip(1..).all(|(n, want)| *n == want),
        "lines out of order or repeated"
    );
    assert!(
        text.contains("[train] step 1 loss=0.9990"),
        "OSMO line format"
    );

    let (tail, chunks_tail, tail_time) = get_logs(&server.url, &id, "?last_n_lines=10");
    assert_eq!(
        step_numbers(&tail),
        (999_991..=1_000_000).collect::<Vec<u64>>(),
        "{tail}"
    );
    assert_eq!(tail.lines().count(), 10);
    println!("-n 10: {tail_time:?}, {chunks_tail} of {chunks_all} chunks read");
    assert!(
        chunks_tail <= 2,
        "-n 10 read {chunks_tail} of {chunks_all} chunks"
    );
    assert!(
        tail_time < Duration::from_secs(2),
        "-n 10 took {tail_time:?}"
    );
    // `query`: only the matching lines, the last N of them with a tail
    // (which reads back until it has them).
    let (found, _, _) = get_logs(&server.url, &id, "?query=^step%20(1|500000)%20");
    assert_eq!(step_numbers(&found), vec![1, 500_000], "{found}");
    let (found, chunks_read, _) = get_logs(
        &server.url,
        &id,
        "?last_n_lines=2&query=^step%20[0-9]{1,2}%20",
    );
    assert_eq!(step_numbers(&found), vec![98, 99], "{found}");
    // Read back far past the two chunks a plain tail reads.
    assert!(
        chunks_read > chunks_all / 2,
        "{chunks_read} of {chunks_all}"
    );
    let (cli_code, cli_out, cli_err) = cli(
        &server.url,
        &["workflow", "logs", &id, "-t", "train", "-n", "3"],
    );
    assert_eq!(cli_code, 0, "{cli_err}");
    assert_eq!(step_numbers(&cli_out), vec![999_998, 999_999, 1_000_000]);

    let (code, out, err) = cli(&server.url, &["workflow", "logs", &id, "--error"]);
    assert_eq!((code, out.as_str()), (0, ""), "no failed task: {err}");

    let (raw, stored, files) = chunk_bytes(&data.join("objects").join(&id));
    assert_eq!(files, chunks_all);
    println!(
        "1,000,000 lines: ingest {:.0} lines/s ({ingest:?} from RUNNING to COMPLETED), \
         {files} chunks, raw {raw} B, stored {stored} B, compressed/raw {:.3} ({:.1}:1), \
         full read {full_time:?}, -n 10 {tail_time:?} reading {chunks_tail} chunk(s)",
        1_000_000.0 / ingest.as_secs_f64(),
        stored as f64 / raw as f64,
        raw as f64 / stored as f64,
    );
    assert!(raw > 5 * stored, "compression below 5:1: {raw} / {stored}");
}

#[test]
fn error_logs_show_the_last_lines_of_failed_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(
        r#"workflow:
  name: fails
  groups:
  - name: g
    tasks:
    - name: bad
      lead: true
      image: ubuntu
      command: [sh, -c, 'for i in $(seq 1 500); do echo "step $i"; done; sleep 0.3; echo "step 501 boom" >&2; exit 3']
    - name: good
      image: ubuntu
      command: [sh, -c, 'echo "step 9999"']
"#,
    );
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "FAILED", "{workflow}");
    let (code, out, err) = cli(
        &server.url,
        &["workflow", "logs", &id, "--error", "-n", "3"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_numbers(&out), vec![499, 500, 501], "{out}");
    assert!(out.contains("[bad] step 501 boom"), "{out}");
    let (code, out, _) = cli(
        &server.url,
        &["workflow", "logs", &id, "-t", "good", "-r", "0"],
    );
    assert_eq!(code, 0);
    assert_eq!(step_numbers(&out), vec![9999], "{out}");
    let error_lines = |query: &str| {
        let response = reqwest::blocking::get(format!(
            "{}/api/workflow/{id}/error_logs{query}",
            server.url
        ))
        .expect("GET error_logs");
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    };
    let (status, text) = error_lines("?query=boom");
    assert_eq!(status, 200, "{text}");
    assert_eq!(step_numbers(&text), vec![501], "{text}");
    let (status, text) = error_lines("?query=(");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("query"), "{text}");
}

#[test]
fn query_sends_only_matching_lines_while_following() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(
        r#"workflow:
  name: checkpoints
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 40); do echo "step $i"; [ $((i % 10)) = 0 ] && echo "checkpoint $i saved"; sleep 0.05; done']
"#,
    );
    api.wait_task(&id, "train", "RUNNING", Duration::from_secs(60));
    // Followed from the start while the task runs, until its end.
    let (text, _, _) = get_logs(&server.url, &id, "?query=checkpoint%20[0-9]%2B%20saved");
    let saved: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split("] ").nth(1))
        .collect();
    assert_eq!(
        saved,
        [
            "checkpoint 10 saved",
            "checkpoint 20 saved",
            "checkpoint 30 saved",
            "checkpoint 40 saved"
        ],
        "{text}"
    );
    let response = reqwest::blocking::get(format!(
        "{}/api/workflow/{id}/logs?query={}",
        server.url,
        "x".repeat(2000)
    ))
    .expect("GET logs");
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().unwrap_or_default().contains("query"));
}

#[test]
fn logs_go_to_a_real_s3_compatible_store() {
    let Some(moto) = start_moto("gantry-logs") else {
        println!("SKIPPED: moto_server is not installed (pip install 'moto[server]')");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let store = format!(
        "s3://gantry-logs/cluster-a?endpoint={}&region=us-east-1&path_style=true",
        moto.url
    );
    let server = DevServer::start_wrapped(
        &[
            "env",
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
        ],
        &data,
        &["dev", "--listen", "127.0.0.1:0", "--object-store", &store],
    );
    let api = server.client();
    allow_log_lines(&api, 100_000);
    let id = api.submit_ok(
        r#"workflow:
  name: s3logs
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 20000); do echo "step $i loss=0.5"; done']
"#,
    );
    let workflow = api.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (text, chunks, _) = get_logs(&server.url, &id, "");
    assert_eq!(step_numbers(&text), (1..=20_000).collect::<Vec<u64>>());
    assert!(chunks >= 1);
    let listing = reqwest::blocking::get(format!(
        "{}/gantry-logs?list-type=2&prefix=cluster-a/{id}/logs/train/0/",
        moto.url
    ))
    .unwrap()
    .text()
    .unwrap();
    assert_eq!(
        listing.matches(".jsonl.zst</Key>").count(),
        chunks,
        "{listing}"
    );
    assert!(
        !data.join("objects").join(&id).exists(),
        "nothing in the local default store"
    );
    let (tail, chunks_tail, _) = get_logs(&server.url, &id, "?last_n_lines=5");
    assert_eq!(step_numbers(&tail), (19_996..=20_000).collect::<Vec<u64>>());
    assert_eq!(chunks_tail, 1);
}

#[test]
fn a_store_that_refuses_chunks_holds_lines_back_until_it_takes_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    // A file where the run's chunk directory belongs, in place before the
    // workflow (IDs count per name): every chunk write fails until it is gone.
    let workflow_dir = data.join("objects").join("refused-1");
    std::fs::create_dir_all(&workflow_dir).unwrap();
    let blocker = workflow_dir.join("logs");
    std::fs::write(&blocker, "not a directory").unwrap();
    allow_log_lines(&api, 100_000);
    let id = api.submit_ok(
        r#"workflow:
  name: refused
  tasks:
  - name: train
    image: ubuntu
    command: [sh, -c, 'for i in $(seq 1 20000); do echo "step $i loss=0.5"; done']
"#,
    );
    assert_eq!(id, "refused-1");
    wait_for(
        Duration::from_secs(60),
        "a refused chunk write",
        || match server
            .log()
            .contains("cannot store the operator's log lines")
        {
            true => Ok(()),
            false => Err("no refusal yet".to_string()),
        },
    );
    // Nothing of a refused batch commits (its status reports neither):
    // the task cannot be seen to end while its lines are not stored.
    std::thread::sleep(Duration::from_secs(3));
    let status = api.workflow(&id)["status"].clone();
    assert!(status == "PENDING" || status == "RUNNING", "{status}");
    std::fs::remove_file(&blocker).unwrap();
    let workflow = api.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (text, _, _) = get_logs(&server.url, &id, "");
    assert_eq!(step_numbers(&text), (1..=20_000).collect::<Vec<u64>>());
}

/// A `gantry operator` process.
/// A child process killed when the test ends, however it ends.
struct Operator {
    child: Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_member(dir: &Path, pki: &Pki, index: usize, store: &str, extra: &[&str]) -> DevServer {
    let ip = format!("127.0.0.{index}");
    let mut args: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
        "--object-store".into(),
        store.into(),
    ];
    args.extend(pki.server_flags(&format!("node{index}")));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(&dir.join(format!("node{index}")), &args)
}

fn leader_of(api: &Https) -> String {
    wait_for(Duration::from_secs(30), "a leader", || {
        let members = api.members().ok_or("no members")?;
        let leader = members["leader_id"].as_u64().ok_or("no leader yet")?;
        members["members"]
            .as_array()
            .and_then(|list| list.iter().find(|m| m["id"].as_u64() == Some(leader)))
            .and_then(|m| m["api_url"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("leader {leader} not listed"))
    })
}

#[test]
fn killing_the_leader_while_a_task_logs_loses_and_repeats_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let shared: PathBuf = dir.path().join("shared-objects");
    let store = format!("file://{}", shared.display());
    let pki = Pki::create(
        dir.path(),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    let pki_dir = pki.dir.to_str().unwrap().to_string();
    gantry_ok(&[
        "tls", "cert", "create", "--ca", &pki_dir, "--name", "edge", "--kind", "operator", "--out",
        &pki_dir,
    ]);
    let first = start_member(dir.path(), &pki, 1, &store, &["--bootstrap"]);
    let token = std::fs::read_to_string(dir.path().join("node1/bootstrap-admin-token")).unwrap();
    let token = token.trim().to_string();
    let api_of = |url: &str| Https {
        http: pki.client(Duration::from_secs(30)),
        url: url.to_string(),
        token: token.clone(),
    };
    let members = api_of(&first.url).members().expect("members");
    let peer = members["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut servers = vec![Some(first)];
    for index in 2..=3 {
        servers.push(Some(start_member(
            dir.path(),
            &pki,
            index,
            &store,
            &["--join", &peer],
        )));
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().url.clone())
        .collect();
    let token_file = dir.path().join("edge-token");
    std::fs::write(&token_file, &token).unwrap();
    let _operator = Operator {
        child: Command::new(BINARY)
            .args([
                "operator",
                "--servers",
                &urls.join(","),
                "--backend",
                "local",
                // The tasks' images are not pulled here: host tools.
                "--task-root",
                "host",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--tls-ca")
            .arg(pki.dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(pki.dir.join("edge.pem"))
            .arg("--tls-key")
            .arg(pki.dir.join("edge-key.pem"))
            .arg("--work-dir")
            .arg(dir.path().join("edge-work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("edge.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    let any = api_of(&urls[0]);
    let raised = any
        .http
        .put(format!("{}/api/configs/workflow", any.url))
        .bearer_auth(&any.token)
        .json(&serde_json::json!({
            "configs": {"max_task_log_lines": 100_000, "max_log_lines": 100_000},
            "description": "room for the test's lines",
        }))
        .send()
        .unwrap();
    assert_eq!(raised.status().as_u16(), 200);
    // 6000 numbered lines over about 6 s.
    let id = any.submit_ok(
        r#"workflow:
  name: numbered
  tasks:
  - name: count
    image: ubuntu
    command: [sh, -c, 'i=1; while [ $i -le 6000 ]; do echo "step $i"; if [ $((i % 100)) -eq 0 ]; then sleep 0.1; fi; i=$((i+1)); done']
"#,
    );
    // A CLI follows the log from the leader (which holds the live buffer)
    // and must resume on a survivor when the leader dies.
    let leader_url = leader_of(&any);
    let mut follow_urls = vec![leader_url.clone()];
    follow_urls.extend(urls.iter().filter(|url| **url != leader_url).cloned());
    let follower_out = dir.path().join("follow.out");
    let mut follower = Operator {
        child: Command::new(BINARY)
            .args(["workflow", "logs", &id, "--url", &follow_urls.join(",")])
            .arg("--ca")
            .arg(pki.dir.join("ca.pem"))
            .env("GANTRY_TOKEN", &token)
            .env("XDG_CONFIG_HOME", dir.path().join("cli-config"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&follower_out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("follow.err")).unwrap())
            .spawn()
            .unwrap(),
    };
    // Kill the leader once some lines are durable (a chunk is indexed).
    wait_for(Duration::from_secs(60), "the first chunks", || {
        let (status, body) = any.get(&format!("/api/workflow/{id}"));
        let count_running =
            common::task_of(&body, "count").is_some_and(|t| t["status"] == "RUNNING");
        let objects = shared.join(&id);
        if status == 200 && count_running && objects.exists() {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        leader_of(&any),
        leader_url,
        "the leader changed before the kill"
    );
    let followed_before_kill = step_numbers(&std::fs::read_to_string(&follower_out).unwrap());
    assert!(
        !followed_before_kill.is_empty(),
        "the follower printed nothing from the leader"
    );
    let killed = urls.iter().position(|url| *url == leader_url).unwrap();
    servers[killed].take().unwrap().kill9();
    let survivor_url = urls
        .iter()
        .enumerate()
        .find(|(index, _)| *index != killed)
        .map(|(_, url)| url.clone())
        .unwrap();
    let survivor = api_of(&survivor_url);
    let workflow = wait_for(
        Duration::from_secs(120),
        "the workflow to finish",
        || match survivor.try_get(&format!("/api/workflow/{id}")) {
            Ok((200, body)) if body["status"] == "COMPLETED" => Ok(body),
            Ok((status, body)) => Err(format!("{status}: {}", body["status"])),
            Err(error) => Err(error.to_string()),
        },
    );
    assert_eq!(common::task_of(&workflow, "count").unwrap()["exit_code"], 0);
    let follower_status = wait_for(Duration::from_secs(60), "the follower to end", || {
        follower
            .child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still following".to_string())
    });
    let followed = std::fs::read_to_string(&follower_out).unwrap();
    assert!(
        follower_status.success(),
        "the follower failed: {}",
        std::fs::read_to_string(dir.path().join("follow.err")).unwrap_or_default()
    );
    assert_eq!(
        step_numbers(&followed),
        (1..=6000).collect::<Vec<u64>>(),
        "the follower's lines"
    );
    // Any survivor serves the stored log from the replicated index.
    for url in urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != killed)
        .map(|(_, u)| u)
    {
        let text = survivor
            .http
            .get(format!("{url}/api/workflow/{id}/logs"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.text())
            .unwrap();
        assert_eq!(
            step_numbers(&text),
            (1..=6000).collect::<Vec<u64>>(),
            "from {url}"
        );
    }
}

#[test]
fn credential_values_are_masked_in_stored_and_live_lines() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let secret = "xoxb-7731-secret-token";
    let put = reqwest::blocking::Client::new()
        .put(format!("{}/api/configs/workflow", server.url))
        .json(&serde_json::json!({
            "configs": {"workflow_alerts": {"slack_token": secret}},
            "description": "alerts"
        }))
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().unwrap());
    let id = api.submit_ok(&format!(
        r#"workflow:
  name: leaky
  tasks:
  - name: talk
    image: ubuntu
    command: [sh, -c, 'echo "token={secret} twice {secret}"; echo "short words stay" >&2']
"#
    ));
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (text, _, _) = get_logs(&server.url, &id, "");
    assert!(
        text.contains("[talk] token=[MASKED] twice [MASKED]"),
        "{text}"
    );
    assert!(text.contains("short words stay"), "{text}");
    assert!(!text.contains(secret), "{text}");
    // Nothing stored holds the secret either.
    let objects = dir.path().join("dev/objects").join(&id);
    let chunks = chunk_files(&objects);
    assert!(!chunks.is_empty(), "no chunk under {objects:?}");
    for chunk in chunks {
        let raw = zstd::decode_all(std::fs::File::open(&chunk).unwrap()).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(secret), "{chunk:?}");
    }
}

#[test]
fn lines_past_the_log_limits_are_dropped_after_one_marker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start(&data);
    let api = server.client();
    // OSMO's defaults: 1,000 lines per task; the workflow limit lowered so
    // two tasks reach it together.
    let reply = api.put(
        "/api/configs/workflow",
        &serde_json::json!({
            "configs": {"max_task_log_lines": 1000, "max_log_lines": 1500},
            "description": "log limits",
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = api.submit_ok(
        r#"workflow:
  name: yes
  groups:
  - name: g
    tasks:
    - name: a
      image: ubuntu
      lead: true
      command: [sh, -c, 'timeout 3 yes; true']
    - name: b
      image: ubuntu
      command: [sh, -c, 'timeout 3 yes; true']
"#,
    );
    let workflow = api.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let (text, _, _) = get_logs(&server.url, &id, "");
    let mut total = 0;
    for task in ["a", "b"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(&format!(" [{task}")))
            .collect();
        let markers: Vec<&&str> = lines
            .iter()
            .filter(|line| line.contains("later lines are dropped"))
            .collect();
        let ys = lines.iter().filter(|line| line.ends_with("] y")).count();
        eprintln!(
            "task {task}: {} lines stored, {ys} of `yes`, marker {:?}",
            lines.len(),
            markers
        );
        assert_eq!(markers.len(), 1, "task {task}: {lines:?}");
        assert!(ys <= 1000, "task {task}: {ys} lines of yes");
        total += lines.len();
    }
    // At most 1,500 lines for the workflow, plus each task's marker and the
    // executor's own notes written before the limit applied.
    assert!(total <= 1500 + 2, "{total} lines stored");
    let (tail, _, _) = get_logs(&server.url, &id, "?last_n_lines=1&task_name=a");
    assert!(tail.contains("later lines are dropped"), "{tail}");
}
