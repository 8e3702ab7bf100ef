//! Whole-cluster restart: three `gantry server --local-backend` processes on
//! 127.0.0.1-3 are SIGKILLed at once while a task runs under an exec
//! timeout, then started again on their data directories with the same
//! flags. Nothing acknowledged is lost, every node agrees, unfinished work
//! runs to its end and the replicated timer still fires at its due time.

mod common;

use common::{wait_for, DevServer, Https, Pki};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const SLEEPER: &str = "workflow:\n  name: sleeper\n  timeout: {exec_timeout: 8s}\n  tasks:\n  - name: nap\n    image: ubuntu\n    command: [sleep, \"600\"]\n";
const QUICK: &str = "workflow:\n  name: quick\n  tasks:\n  - name: step\n    image: ubuntu\n    command: [sh, -c, \"sleep 0.2; echo done\"]\n";
const EXEC_TIMEOUT_MS: i64 = 8_000;

/// How node `index` (1-3) is started: the same flags every time, with its
/// listen addresses (port 0 the first time, the ports it got afterwards).
struct NodeSpec {
    index: usize,
    data: PathBuf,
    listen: String,
    peer_listen: String,
    role: Vec<String>,
}

impl NodeSpec {
    fn start(&self, pki: &Pki) -> DevServer {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--local-backend".into(),
            "--listen".into(),
            self.listen.clone(),
            "--peer-listen".into(),
            self.peer_listen.clone(),
        ];
        args.extend(pki.server_flags(&format!("node{}", self.index)));
        args.extend(self.role.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(&self.data, &args)
    }
}

fn millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

fn status_of(api: &Https, id: &str) -> Result<Value, String> {
    match api.try_get(&format!("/api/workflow/{id}")) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(format!("{id} on {}: {status} {body}", api.url)),
        Err(error) => Err(format!("{id} on {}: {error}", api.url)),
    }
}

/// Waits until every node names the same leader among three voters.
fn wait_for_leader(apis: &[Https]) -> u64 {
    wait_for(Duration::from_secs(30), "no agreed leader", || {
        let mut leaders = Vec::new();
        for api in apis {
            let members = api.members().ok_or(format!("{} not answering", api.url))?;
            let voters = members["members"]
                .as_array()
                .map(|list| list.iter().filter(|m| m["voter"] == true).count());
            if voters != Some(3) {
                return Err(format!("not three voters: {members}"));
            }
            leaders.push(members["leader_id"].as_u64());
        }
        match leaders[0] {
            Some(leader) if leaders.iter().all(|l| *l == Some(leader)) => Ok(leader),
            _ => Err(format!("leaders {leaders:?}")),
        }
    })
}

#[test]
fn a_sigkilled_cluster_restarts_with_its_work_and_its_timers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    let http = pki.client(Duration::from_secs(20));
    let data = |index: usize| dir.path().join(format!("node{index}"));
    let mut specs: Vec<NodeSpec> = (1..=3)
        .map(|index| NodeSpec {
            index,
            data: data(index),
            listen: format!("127.0.0.{index}:0"),
            peer_listen: format!("127.0.0.{index}:0"),
            role: Vec::new(),
        })
        .collect();
    specs[0].role = vec!["--bootstrap".into()];

    // First start: node 1 bootstraps, 2 and 3 join through it.
    let first = specs[0].start(&pki);
    let token = std::fs::read_to_string(data(1).join("bootstrap-admin-token")).unwrap();
    let api_of = |server: &DevServer| Https {
        http: http.clone(),
        url: server.url.clone(),
        token: token.clone(),
    };
    let first_peer = api_of(&first).members().expect("members")["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    for spec in &mut specs[1..] {
        spec.role = vec!["--join".into(), first_peer.clone()];
    }
    let mut servers = vec![first, specs[1].start(&pki), specs[2].start(&pki)];
    let apis: Vec<Https> = servers.iter().map(api_of).collect();
    wait_for_leader(&apis);
    // From now on every node keeps the ports it got (peers know it by them).
    for (spec, api) in specs.iter_mut().zip(&apis) {
        let members = api.members().unwrap();
        let own = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == members["node_id"])
            .unwrap_or_else(|| panic!("no own entry: {members}"))
            .clone();
        spec.peer_listen = own["peer_address"].as_str().unwrap().to_string();
        spec.listen = api.url.trim_start_matches("https://").to_string();
    }

    // Work through every node: a sleeper under an 8 s exec timeout, quick ones.
    let sleeper = apis[1].submit_ok(SLEEPER);
    let quick: Vec<String> = (0..3).map(|i| apis[i].submit_ok(QUICK)).collect();
    let running = wait_for(Duration::from_secs(30), "sleeper not RUNNING", || {
        let workflow = status_of(&apis[0], &sleeper)?;
        let task = common::task_of(&workflow, "nap").ok_or("no task nap")?;
        if task["status"] == "RUNNING" && workflow["start_time"].is_string() {
            Ok(workflow)
        } else {
            Err(format!("{workflow}"))
        }
    });
    let started = millis(running["start_time"].as_str().unwrap());

    // SIGKILL all three at once, before the timer is due.
    for server in &mut servers {
        server.kill_now();
    }
    let killed_at = chrono::Utc::now().timestamp_millis();
    drop(servers);
    assert!(
        killed_at < started + EXEC_TIMEOUT_MS,
        "the test was too slow: the kill came {} ms after the start",
        killed_at - started
    );

    // Restart all three together on their data directories, same flags (a
    // lone node cannot elect a leader, so they must come up side by side).
    let servers: Vec<DevServer> = std::thread::scope(|scope| {
        let starting: Vec<_> = specs
            .iter()
            .map(|spec| scope.spawn(|| spec.start(&pki)))
            .collect();
        starting.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let apis: Vec<Https> = servers.iter().map(api_of).collect();
    wait_for_leader(&apis);

    // Every workflow is on every node and runs to its end there.
    let mut all = quick.clone();
    all.push(sleeper.clone());
    for api in &apis {
        for id in &all {
            let workflow = wait_for(Duration::from_secs(40), "not finished", || {
                let workflow = status_of(api, id)?;
                match workflow["status"].as_str() {
                    Some("PENDING" | "RUNNING" | "WAITING") | None => Err(format!("{workflow}")),
                    Some(_) => Ok(workflow),
                }
            });
            if *id == sleeper {
                assert_eq!(workflow["status"], "FAILED_EXEC_TIMEOUT", "{workflow}");
                let nap = common::task_of(&workflow, "nap").unwrap();
                assert_eq!(nap["status"], "FAILED_EXEC_TIMEOUT", "{workflow}");
                let start = millis(workflow["start_time"].as_str().unwrap());
                let end = millis(workflow["end_time"].as_str().unwrap());
                assert_eq!(start, started, "the start time changed: {workflow}");
                assert!(
                    end - start >= EXEC_TIMEOUT_MS,
                    "the timer fired early: after {} ms",
                    end - start
                );
            } else {
                assert_eq!(workflow["status"], "COMPLETED", "{id}: {workflow}");
            }
        }
    }
    // And the nodes list exactly the same workflows, in the same states.
    let listings: Vec<_> = apis.iter().map(|api| api.listing().unwrap()).collect();
    let names: Vec<&String> = listings[0].iter().map(|(name, _)| name).collect();
    let mut expected: Vec<&String> = all.iter().collect();
    expected.sort();
    assert_eq!(names, expected, "listed: {:?}", listings[0]);
    assert!(
        listings.iter().all(|l| *l == listings[0]),
        "nodes disagree: {listings:?}"
    );
    // The cluster still takes work.
    let after = apis[2].submit_ok(QUICK);
    wait_for(Duration::from_secs(30), "new work not COMPLETED", || {
        let workflow = status_of(&apis[0], &after)?;
        (workflow["status"] == "COMPLETED")
            .then_some(())
            .ok_or(format!("{workflow}"))
    });
    drop(servers);
}
