//! The failover trial on a running three-member cluster: a `gantry
//! operator` for backend `local` follows the leader; a workflow whose
//! producer logs for a few seconds and then publishes an output that a
//! consumer reads; a client follows the logs from the leader, which writes
//! the log chunks; the leader is SIGKILLed while the producer runs. The
//! consumer must succeed on the new leader's launch (it reads what the
//! producer published) and the follow must end with every line once:
//! both hold only if the members share one object store.

use super::{gantry_ok, task_of, wait_for, DevServer, Https, Pki, BINARY};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when the trial ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PRODUCER_LINES: u64 = 60;

fn handoff_spec() -> String {
    format!(
        r#"workflow:
  name: handoff
  tasks:
  - name: produce
    image: ubuntu
    command: [sh, -c, 'i=1; while [ $i -le {PRODUCER_LINES} ]; do echo "step $i"; sleep 0.1; i=$((i+1)); done; echo payload-from-produce > {{{{output}}}}/result.txt']
  - name: consume
    image: ubuntu
    command: [sh, -c, 'cat {{{{input:0}}}}/result.txt']
    inputs:
    - task: produce
"#
    )
}

fn step_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split("] step ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn leader_url(api: &Https) -> String {
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

fn start_operator(dir: &Path, pki: &Pki, urls: &[String], token: &str) -> Killed {
    let pki_dir = pki.dir.to_str().expect("UTF-8 path");
    gantry_ok(&[
        "tls", "cert", "create", "--ca", pki_dir, "--name", "edge", "--kind", "operator", "--out",
        pki_dir,
    ]);
    let token_file = dir.join("edge-token");
    std::fs::write(&token_file, token).expect("write the operator's token");
    Killed(
        Command::new(BINARY)
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
            .arg(dir.join("edge-work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("edge.log")).expect("operator log"))
            .spawn()
            .expect("spawn gantry operator"),
    )
}

/// Runs the trial on `servers` (three members of one cluster, certificates
/// in `pki`, admin `token`), whose shared `file://` store is `store_dir`;
/// scratch files go to `dir`. Panics when the trial fails.
pub fn run(dir: &Path, pki: &Pki, servers: Vec<DevServer>, token: &str, store_dir: &Path) {
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let mut servers: Vec<Option<DevServer>> = servers.into_iter().map(Some).collect();
    let _operator = start_operator(dir, pki, &urls, token);
    let api = |url: &str| Https {
        http: pki.client(Duration::from_secs(30)),
        url: url.to_string(),
        token: token.to_string(),
    };
    let any = api(&urls[0]);
    let id = any.submit_ok(&handoff_spec());

    let leader = leader_url(&any);
    let mut follow_urls = vec![leader.clone()];
    follow_urls.extend(urls.iter().filter(|url| **url != leader).cloned());
    let follow_out = dir.join("follow.out");
    let mut follower = Killed(
        Command::new(BINARY)
            .args(["workflow", "logs", &id, "--url", &follow_urls.join(",")])
            .arg("--ca")
            .arg(pki.dir.join("ca.pem"))
            .env("GANTRY_TOKEN", token)
            .env("XDG_CONFIG_HOME", dir.join("cli-config"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&follow_out).expect("follow output"))
            .stderr(std::fs::File::create(dir.join("follow.err")).expect("follow errors"))
            .spawn()
            .expect("spawn gantry workflow logs"),
    );
    // Kill the leader once the producer runs and some of its lines are in
    // chunks the leader wrote.
    wait_for(
        Duration::from_secs(60),
        "the producer's first chunks",
        || {
            let (status, body) = any.get(&format!("/api/workflow/{id}"));
            let running = task_of(&body, "produce").is_some_and(|t| t["status"] == "RUNNING");
            let chunks = store_dir.join(&id).join("logs/produce");
            if status == 200 && running && chunks.exists() {
                Ok(())
            } else {
                Err(format!("{status}: {body}"))
            }
        },
    );
    assert_eq!(
        leader_url(&any),
        leader,
        "the leader changed before the kill"
    );
    let killed = urls
        .iter()
        .position(|url| *url == leader)
        .expect("the leader is a member");
    if let Some(server) = servers[killed].take() {
        server.kill9();
    }
    let survivor = api(urls.iter().find(|url| **url != leader).expect("a survivor"));
    let workflow: Value =
        wait_for(
            Duration::from_secs(90),
            "the workflow to finish",
            || match survivor.try_get(&format!("/api/workflow/{id}")) {
                Ok((200, body))
                    if !matches!(
                        body["status"].as_str(),
                        Some("PENDING" | "RUNNING" | "WAITING")
                    ) =>
                {
                    Ok(body)
                }
                Ok((status, body)) => Err(format!("{status}: {}", body["status"])),
                Err(error) => Err(error.to_string()),
            },
        );
    assert_eq!(workflow["status"], "COMPLETED", "{workflow:#}");
    assert_eq!(
        task_of(&workflow, "consume").map(|task| task["exit_code"].clone()),
        Some(Value::from(0))
    );

    let follow_status = wait_for(Duration::from_secs(60), "the follower to end", || {
        follower
            .0
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still following".to_string())
    });
    let followed = std::fs::read_to_string(&follow_out).unwrap_or_default();
    assert!(
        follow_status.success(),
        "the follower failed: {}",
        std::fs::read_to_string(dir.join("follow.err")).unwrap_or_default()
    );
    assert_eq!(
        step_numbers(&followed),
        (1..=PRODUCER_LINES).collect::<Vec<u64>>(),
        "{followed}"
    );
    assert!(
        followed.contains("payload-from-produce"),
        "the consumer's line is missing:\n{followed}"
    );
}
