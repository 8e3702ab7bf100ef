//! A three-node cluster of real `gantry server` processes on 127.0.0.1-3,
//! with certificates from `gantry tls`: joins, members (the leader's view,
//! from any node; a killed node unreachable), writes through any node, a
//! SIGKILLed leader, and snapshot save/restore.

mod common;

use common::cluster::{gantry, new_cluster, start_three, start_three_stoppable, Cluster, HELLO};
use common::{wait_for, DevServer, BINARY};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// A user on a follower asks `gantry cluster members`: it shows the
/// leader's view (every member's last contact and match index, asked of
/// the leader as writes are forwarded); a SIGKILLed node shows as
/// UNREACHABLE once the leader has not heard from it within the election
/// timeout; with no leader to ask, the node says its list is its own view.
#[test]
fn a_follower_lists_the_members_as_the_leader_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let mut servers = start_three_stoppable(&mut cluster, dir.path());
    let node = |i: usize| servers[i].as_ref().unwrap();
    let leader_id = cluster.members(node(0))["leader_id"].as_u64().unwrap();
    let ids: Vec<u64> = (0..3)
        .map(|i| cluster.members(node(i))["node_id"].as_u64().unwrap())
        .collect();
    let leader = ids.iter().position(|&id| id == leader_id).unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (asked, killed) = (followers[0], followers[1]);

    // Every member's last contact and match index, on a follower.
    let listing = wait_for(
        Duration::from_secs(20),
        "the leader's view on a follower",
        || {
            let (code, stdout, stderr) = cluster.cli_members(node(asked), &["-t", "json"]);
            let json: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stderr}"))?;
            let members = json["members"].as_array().cloned().unwrap_or_default();
            let complete = code == 0
                && json["leader_view"] == true
                && json["view_of"].as_u64() == Some(leader_id)
                && json["node_id"].as_u64() == Some(ids[asked])
                && members.len() == 3
                && members.iter().all(|m| {
                    m["last_contact_ms"].is_u64()
                        && m["match_index"].is_u64()
                        && m["reachable"] == true
                });
            if complete {
                Ok(json)
            } else {
                Err(format!("{json}\n{stderr}"))
            }
        },
    );
    for member in listing["members"].as_array().unwrap() {
        let role = if member["id"].as_u64() == Some(leader_id) {
            "LEADER"
        } else {
            "FOLLOWER"
        };
        assert_eq!(member["role"], role, "{listing}");
    }
    let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches(" ms ago").count(), 3, "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // A SIGKILLed follower: unreachable in the leader's view, shown on the
    // other follower.
    servers[killed].take().unwrap().kill9();
    let node = |i: usize| servers[i].as_ref().unwrap();
    let listing = wait_for(
        Duration::from_secs(10),
        "the killed node shown as unreachable",
        || {
            let (_, stdout, stderr) = cluster.cli_members(node(asked), &["-t", "json"]);
            let json: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stderr}"))?;
            let gone = json["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"].as_u64() == Some(ids[killed]))
                .cloned()
                .unwrap_or_default();
            if json["leader_view"] == true
                && gone["role"] == "UNREACHABLE"
                && gone["reachable"] == false
            {
                Ok(json)
            } else {
                Err(json.to_string())
            }
        },
    );
    for member in listing["members"].as_array().unwrap() {
        if member["id"].as_u64() != Some(ids[killed]) {
            assert_eq!(member["reachable"], true, "{listing}");
            assert_ne!(member["role"], "UNREACHABLE", "{listing}");
        }
    }
    let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(&ids[killed].to_string()))
        .unwrap_or_else(|| panic!("no row for node {}: {stdout}", ids[killed]));
    assert!(row.contains("UNREACHABLE"), "{stdout}");
    assert_eq!(stdout.matches("FOLLOWER").count(), 1, "{stdout}");

    // The leader gone too: no leader to ask, and the node says so.
    servers[leader].take().unwrap().kill9();
    let node = |i: usize| servers[i].as_ref().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the node's own view, said so",
        || {
            let (code, stdout, stderr) = cluster.cli_members(node(asked), &[]);
            if code == 0
                && stderr.contains(&format!(
                    "warning: this is node {}'s own view, not the leader's",
                    ids[asked]
                ))
                && stderr.contains("known only to the leader")
                && !stdout.contains(" ms ago")
            {
                Ok(())
            } else {
                Err(format!("{stdout}\n{stderr}"))
            }
        },
    );
    let json = cluster.members(node(asked));
    assert_eq!(json["leader_view"], false, "{json}");
    assert_eq!(json["view_of"].as_u64(), Some(ids[asked]), "{json}");
}

#[test]
fn three_servers_replicate_fail_over_and_restore_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let pki = cluster.pki.clone();

    let mut servers = start_three_stoppable(&mut cluster, dir.path());

    // Every node sees three voters and one leader.
    for server in servers.iter().flatten() {
        let members = cluster.members(server);
        let list = members["members"].as_array().unwrap();
        assert_eq!(list.len(), 3, "{members}");
        assert!(list.iter().all(|m| m["voter"] == true), "{members}");
        assert!(members["leader_id"].is_u64(), "{members}");
    }

    // A write through a follower is forwarded; a read on the third node sees it.
    let id = cluster.submit(servers[1].as_ref().unwrap());
    let (status, workflow) =
        cluster.get(servers[2].as_ref().unwrap(), &format!("/api/workflow/{id}"));
    assert_eq!(status, 200, "{workflow}");
    cluster.wait_completed(servers[2].as_ref().unwrap(), &id);
    // A stale read answers from the replica's own state (here: caught up).
    let (status, stale) = cluster.get(
        servers[2].as_ref().unwrap(),
        &format!("/api/workflow/{id}?stale=true"),
    );
    assert_eq!(status, 200, "{stale}");

    // SIGKILL the leader: the other two elect a new one and keep serving.
    let leader_id = cluster.members(servers[0].as_ref().unwrap())["leader_id"]
        .as_u64()
        .unwrap();
    let leader_index = (0..3)
        .find(|&i| {
            cluster.members(servers[i].as_ref().unwrap())["node_id"].as_u64() == Some(leader_id)
        })
        .unwrap();
    servers[leader_index].take().unwrap().kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_index).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.members(servers[survivors[0]].as_ref().unwrap())["leader_id"].as_u64();
        if leader.is_some_and(|id| id != leader_id) {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = cluster.submit(servers[survivors[1]].as_ref().unwrap());
    cluster.wait_completed(servers[survivors[0]].as_ref().unwrap(), &after);
    let (_, old) = cluster.get(
        servers[survivors[1]].as_ref().unwrap(),
        &format!("/api/workflow/{id}"),
    );
    assert_eq!(old["status"], "COMPLETED");

    // Snapshot from a survivor through the CLI, restore into a new node.
    let snapshot = dir.path().join("state.snap");
    let output = Command::new(BINARY)
        .args(["snapshot", "save", snapshot.to_str().unwrap()])
        .env("GANTRY_URL", &servers[survivors[1]].as_ref().unwrap().url)
        .env("GANTRY_CA", pki.join("ca.pem"))
        .env("GANTRY_TOKEN", &cluster.token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let restored_dir = dir.path().join("restored");
    gantry(&[
        "snapshot",
        "restore",
        snapshot.to_str().unwrap(),
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    for server in servers.iter_mut() {
        if let Some(server) = server.take() {
            server.stop();
        }
    }
    let restored = cluster.start(&restored_dir, 1, &["--bootstrap"]);
    for workflow in [&id, &after] {
        let (status, body) = cluster.get(&restored, &format!("/api/workflow/{workflow}"));
        assert_eq!(status, 200, "{workflow} missing after restore: {body}");
        assert_eq!(body["status"], "COMPLETED");
    }
    let next = cluster.submit(&restored);
    assert_eq!(
        next, "replicated-3",
        "IDs continue from the restored counters"
    );
    cluster.wait_completed(&restored, &next);
}

/// A spec whose one task carries a file of `bytes` characters that do not
/// compress much (so its submission stays about that large when packed).
fn large_spec(name: &str, bytes: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let contents: String = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % 64) as usize] as char
        })
        .collect();
    format!(
        "workflow:\n  name: {name}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n    files:\n    - path: /tmp/blob\n      contents: {contents}\n"
    )
}

/// No log entry is larger than the transport can carry: 20 concurrent large
/// submits all commit (the proposer cuts batches by bytes, not count),
/// writes keep committing after them, and every member holds them; a
/// command over the limit is refused with 413 before it is proposed,
/// naming the limit.
#[test]
fn twenty_concurrent_large_submits_commit_and_oversized_commands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let servers = start_three(&mut cluster, dir.path(), |cluster, data, index, extra| {
        cluster.start(data, index, extra)
    });

    // As the CLI does: one idempotency key per request, the same on every
    // retry, and a retry while the answer is 503 (outcome unknown under
    // load: the retry then answers the first attempt's outcome).
    let post = |server: &DevServer, spec: &str, key: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let response = cluster
                .http
                .post(format!("{}/api/pool/default/workflow", server.url))
                .bearer_auth(&cluster.token)
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "file": spec }))
                .send()
                .expect("submit");
            let status = response.status().as_u16();
            let body = response.json::<Value>().unwrap_or(Value::Null);
            if status != 503 || Instant::now() > deadline {
                return (status, body);
            }
        }
    };

    // Over the limit: refused before it is proposed, naming the limit (a
    // config write, whose body is cheap to read whatever its size).
    let description: String = large_spec("x", 1_500_000, 99)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let response = cluster
        .http
        .put(format!("{}/api/configs/pool/huge", servers[1].url))
        .bearer_auth(&cluster.token)
        .json(&serde_json::json!({
            "description": description,
            "configs": {"backend": "local"},
        }))
        .send()
        .expect("put config");
    let status = response.status().as_u16();
    let body = response.json::<Value>().unwrap_or(Value::Null);
    assert_eq!(status, 413, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("bytes") && message.contains("more than"),
        "{body}"
    );

    // Twenty large ones at once, through all three members: 1.5 MB of
    // commands that leave in entries of at most 1 MiB (a count-capped
    // batch would carry them all in one entry).
    let names: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &servers[i % 3];
                let post = &post;
                scope.spawn(move || {
                    let spec = large_spec(&format!("large-{i}"), 100_000, i as u64);
                    let (status, body) = post(server, &spec, &format!("k-{i}"));
                    assert_eq!(status, 200, "large submit {i}: {body}");
                    body["name"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(names.len(), 20);

    // No entry was proposed over the limit, on any member.
    let mut proposed_somewhere = false;
    for server in &servers {
        let metrics = cluster
            .http
            .get(format!("{}/metrics", server.url))
            .bearer_auth(&cluster.token)
            .send()
            .and_then(|response| response.text())
            .expect("metrics");
        // Every entry proposed here is in the bucket of at most 1 MiB.
        let value = |series: &str| {
            metrics.lines().find_map(|line| {
                let value = line.strip_prefix(series)?.trim();
                value.parse::<f64>().ok()
            })
        };
        let count = value("gantry_raft_proposal_batch_bytes_count ").unwrap_or(0.0);
        let within =
            value("gantry_raft_proposal_batch_bytes_bucket{le=\"1048576\"} ").unwrap_or(0.0);
        assert_eq!(within, count, "entries over 1 MiB on {}", server.url);
        proposed_somewhere |= count > 0.0;
    }
    assert!(
        proposed_somewhere,
        "no member reports its proposed entry sizes"
    );

    // The log still moves: a small write commits and every member has all.
    let small = cluster.submit(&servers[2]);
    for server in &servers {
        wait_for(Duration::from_secs(60), "every member holds all 21", || {
            let (status, listing) = cluster.get(server, "/api/workflow?limit=100");
            let count = listing["workflows"].as_array().map_or(0, Vec::len);
            if status == 200 && count == 21 {
                Ok(())
            } else {
                Err(format!("{status}: {count} workflows"))
            }
        });
        let (status, _) = cluster.get(server, &format!("/api/workflow/{small}?stale=true"));
        assert_eq!(status, 200);
    }
}

fn signal(server: &DevServer, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {}", server.pid());
}

/// Exactly once through an outage: with both followers stopped, the
/// leader cannot commit, so `gantry workflow submit` hears "outcome
/// unknown" (503 after the proposal wait) and sends the same request again
/// under its idempotency key; once a follower continues, both copies of
/// the proposal commit, the second applies nothing and answers the first's
/// outcome. One workflow exists, and the CLI reports it. (Without the key
/// the retry commits a second workflow, `once-2`.)
#[test]
fn a_submit_retried_through_a_lost_quorum_creates_one_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let servers = start_three(&mut cluster, dir.path(), |cluster, data, index, extra| {
        cluster.start(data, index, extra)
    });
    let leader_id = cluster.members(&servers[0])["leader_id"].as_u64().unwrap();
    let leader = (0..3)
        .find(|&i| cluster.members(&servers[i])["node_id"].as_u64() == Some(leader_id))
        .unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    let spec = dir.path().join("once.yaml");
    std::fs::write(
        &spec,
        "workflow:\n  name: once\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n",
    )
    .unwrap();
    for &follower in &followers {
        signal(&servers[follower], "STOP");
    }
    let started = Instant::now();
    let submit = Command::new(BINARY)
        .args(["workflow", "submit", spec.to_str().unwrap(), "-t", "json"])
        .env("GANTRY_URL", &servers[leader].url)
        .env("GANTRY_CA", cluster.pki.join("ca.pem"))
        .env("GANTRY_TOKEN", &cluster.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gantry workflow submit");
    // Longer than the server's proposal wait: the first attempt must come
    // back "outcome unknown" and be retried.
    std::thread::sleep(gantry_raft::node::PROPOSE_WAIT_MAX + Duration::from_secs(3));
    // One follower first: its log lacks the proposals, so it cannot be
    // elected without the other stale follower, and the leader (or a
    // re-elected leader holding them) commits them. Resuming both at once
    // could elect a stale one, which would drop the proposals instead.
    signal(&servers[followers[0]], "CONT");
    let output = submit.wait_with_output().expect("wait for the CLI");
    signal(&servers[followers[1]], "CONT");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "CLI failed after {:?}: {stdout}\n{stderr}",
        started.elapsed()
    );
    let answer: Value = serde_json::from_str(&stdout).expect("JSON answer");
    let name = answer["name"].as_str().expect("workflow name").to_string();
    assert_eq!(name, "once-1", "{answer}");

    for server in &servers {
        wait_for(Duration::from_secs(30), "exactly one workflow", || {
            let (status, listing) = cluster.get(server, "/api/workflow?limit=100");
            let names: Vec<&str> = listing["workflows"]
                .as_array()
                .map(|list| list.iter().filter_map(|w| w["name"].as_str()).collect())
                .unwrap_or_default();
            if status == 200 && names == ["once-1"] {
                Ok(())
            } else {
                Err(format!("{status}: {names:?}"))
            }
        });
    }
}

/// A leader whose wall clock runs an hour fast fires no timer early: timers
/// follow the voters' median clock. A task with a 30-minute exec timeout
/// starts while a true-clocked member leads; then the member whose clock
/// is an hour ahead is made leader (the others are paused in turn until it
/// wins an election). Judged by its own clock that timeout and the
/// backend's liveness timers are due at once (the timer monitor looks every
/// 200 ms; without the median the backend is declared lost and the task
/// fails); by the voters' median they are not.
#[test]
fn a_leader_with_a_fast_clock_times_nothing_out_early() {
    if std::process::Command::new("faketime")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "faketime is required under CI (Debian package faketime)"
        );
        eprintln!("skipped: faketime is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let servers = start_three(&mut cluster, dir.path(), |cluster, data, index, extra| {
        if index != 2 {
            return cluster.start(data, index, extra);
        }
        // Node 2's clock runs an hour ahead, and nothing of it stamps a
        // command until it leads (a local operator's heartbeats would move
        // the state's clock ahead).
        let mut args = cluster.server_args(index, extra);
        args.retain(|arg| arg != "--local-backend");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let fast = [
            "env",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
            "faketime",
            "-f",
            "+1h",
        ];
        DevServer::start_wrapped(&fast, data, &args)
    });
    let ids: Vec<u64> = servers
        .iter()
        .map(|server| cluster.members(server)["node_id"].as_u64().unwrap())
        .collect();
    // (members listed, index of the leader) as `asked` sees them.
    let leader_of = |cluster: &Cluster, asked: &DevServer| {
        let members = cluster.members(asked);
        let leader = members["leader_id"].as_u64();
        let list = members["members"].as_array().map_or(0, Vec::len);
        (list, ids.iter().position(|&id| Some(id) == leader))
    };
    wait_for(
        Duration::from_secs(30),
        "three voters",
        || match leader_of(&cluster, &servers[2]) {
            (3, Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    let response = cluster
        .http
        .post(format!("{}/api/pool/default/workflow", servers[2].url))
        .bearer_auth(&cluster.token)
        .json(&serde_json::json!({ "file": "workflow:\n  name: patient\n  timeout: {exec_timeout: 30m}\n  tasks:\n  - name: nap\n    image: ubuntu\n    command: [sleep, \"120\"]\n" }))
        .send()
        .expect("submit");
    let status = response.status().as_u16();
    let body = response.json::<Value>().unwrap();
    assert_eq!(status, 200, "{body}");
    let id = body["name"].as_str().unwrap().to_string();
    // Running: its exec timeout is set by a true clock.
    wait_for(Duration::from_secs(60), "the task runs", || {
        let (_, workflow) = cluster.get(&servers[2], &format!("/api/workflow/{id}"));
        match workflow["status"].as_str() {
            Some("RUNNING") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Make the fast member win an election: pause whoever leads and the
    // other true-clocked member, so only the fast one times out and asks
    // for votes (its term then beats theirs); let the other one answer
    // after a few election timeouts. Again until it leads.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let asked = &servers[1];
        let (_, leader) = leader_of(&cluster, asked);
        match leader {
            Some(1) => break,
            Some(other) => {
                let third = (0..3)
                    .find(|&i| i != 1 && i != other)
                    .expect("a third member");
                signal(&servers[other], "STOP");
                signal(&servers[third], "STOP");
                std::thread::sleep(Duration::from_millis(1500));
                signal(&servers[third], "CONT");
                wait_for(
                    Duration::from_secs(30),
                    "another leader",
                    || match leader_of(&cluster, asked).1 {
                        Some(now) if now != other => Ok(()),
                        seen => Err(format!("{seen:?}")),
                    },
                );
                signal(&servers[other], "CONT");
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
        assert!(Instant::now() < deadline, "the fast member never led");
    }
    std::thread::sleep(Duration::from_secs(4));
    let (_, workflow) = cluster.get(&servers[2], &format!("/api/workflow/{id}"));
    assert_eq!(
        workflow["status"], "RUNNING",
        "no timer fired early (exec timeout, backend liveness): {workflow}"
    );
}

/// Writes forwarded by a follower while the leader is SIGKILLed: each is
/// answered 200, or 503 — with `Retry-After` when no leader took it, without
/// it (saying so) when the leader died holding it — never a 500.
#[test]
fn forwarded_writes_that_lose_the_leader_answer_503_not_500() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = new_cluster(dir.path());
    let mut servers = start_three_stoppable(&mut cluster, dir.path());
    let node = |i: usize| servers[i].as_ref().unwrap();
    let leader_id = wait_for(Duration::from_secs(20), "three voters", || {
        let members = cluster.members(node(0));
        let voters = members["members"].as_array().map_or(0, |m| m.len());
        match members["leader_id"].as_u64() {
            Some(id) if voters == 3 => Ok(id),
            _ => Err(members.to_string()),
        }
    });
    let ids: Vec<u64> = (0..3)
        .map(|i| cluster.members(node(i))["node_id"].as_u64().unwrap())
        .collect();
    let leader = ids.iter().position(|&id| id == leader_id).unwrap();
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let url = node(follower).url.clone();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (http, token, url, stop) = (
                cluster.http.clone(),
                cluster.token.clone(),
                url.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(response) = http
                        .post(format!("{url}/api/pool/default/workflow"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "file": HELLO }))
                        .send()
                    else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().unwrap_or(Value::Null);
                    let message = body["message"].as_str().unwrap_or_default().to_string();
                    answers.push((status, retry_after, message));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    servers[leader].take().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let per_writer: Vec<Vec<(u16, bool, String)>> = writers
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .collect();
    // Writes went on under the new leader: each writer's last one worked.
    for answers in &per_writer {
        assert_eq!(answers.last().map(|a| a.0), Some(200), "{answers:?}");
    }
    let answers: Vec<(u16, bool, String)> = per_writer.into_iter().flatten().collect();
    let count = |wanted: &dyn Fn(&(u16, bool, String)) -> bool| {
        answers.iter().filter(|a| wanted(a)).count()
    };
    eprintln!(
        "{} forwarded writes across a leader kill: {} answered 200, {} 503 + Retry-After, {} 503 (maybe carried out), {} other",
        answers.len(),
        count(&|a| a.0 == 200),
        count(&|a| a.0 == 503 && a.1),
        count(&|a| a.0 == 503 && !a.1),
        count(&|a| a.0 != 200 && a.0 != 503),
    );
    for (status, retry_after, message) in &answers {
        match status {
            200 => {}
            503 if *retry_after => {}
            503 => assert!(
                message.contains("may or may not have been carried out"),
                "{message}"
            ),
            other => panic!("{other}: {message}"),
        }
    }
}
