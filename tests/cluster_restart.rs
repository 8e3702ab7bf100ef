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
        args.extend(common::shared_store_flags(&self.data));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(&self.data, &args)
    }
}

/// A JSON time as the API writes it (OSMO's: naive UTC, microseconds).
fn millis(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{text:?} is not YYYY-MM-DDTHH:MM:SS.ffffff: {e}"))
        .and_utc()
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

/// A formed three-node cluster and how to start each node again.
struct Formed {
    specs: Vec<NodeSpec>,
    servers: Vec<DevServer>,
    apis: Vec<Https>,
    http: reqwest::blocking::Client,
    token: String,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Formed {
    /// Node 1 bootstraps, 2 and 3 join through it; then every node's
    /// addresses are fixed to the ports it got (peers know it by them).
    fn start() -> Formed {
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
        let mut specs: Vec<NodeSpec> = (1..=3)
            .map(|index| NodeSpec {
                index,
                data: dir.path().join(format!("node{index}")),
                listen: format!("127.0.0.{index}:0"),
                peer_listen: format!("127.0.0.{index}:0"),
                role: Vec::new(),
            })
            .collect();
        specs[0].role = vec!["--bootstrap".into()];
        let first = specs[0].start(&pki);
        let token = std::fs::read_to_string(specs[0].data.join("bootstrap-admin-token")).unwrap();
        let mut formed = Formed {
            specs,
            servers: vec![first],
            apis: Vec::new(),
            http,
            token,
            pki,
            _dir: dir,
        };
        let first_peer = formed
            .api_of(&formed.servers[0])
            .members()
            .expect("members")["members"][0]["peer_address"]
            .as_str()
            .unwrap()
            .to_string();
        for spec in &mut formed.specs[1..] {
            spec.role = vec!["--join".into(), first_peer.clone()];
        }
        for index in 1..3 {
            let server = formed.specs[index].start(&formed.pki);
            formed.servers.push(server);
        }
        formed.apis = formed.servers.iter().map(|s| formed.api_of(s)).collect();
        wait_for_leader(&formed.apis);
        for (spec, api) in formed.specs.iter_mut().zip(&formed.apis) {
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
        formed
    }

    fn api_of(&self, server: &DevServer) -> Https {
        Https {
            http: self.http.clone(),
            url: server.url.clone(),
            token: self.token.clone(),
        }
    }

    /// SIGKILLs all three at once and reaps them.
    fn kill_all(&mut self) {
        for server in &mut self.servers {
            server.kill_now();
        }
        self.servers.clear();
        self.apis.clear();
    }

    /// Starts the nodes `which` side by side (each start returns once the
    /// node serves), adding them to `servers` and `apis`.
    fn restart(&mut self, which: &[usize]) {
        let started: Vec<DevServer> = std::thread::scope(|scope| {
            let starting: Vec<_> = which
                .iter()
                .map(|&i| {
                    let (spec, pki) = (&self.specs[i], &self.pki);
                    scope.spawn(move || spec.start(pki))
                })
                .collect();
            starting.into_iter().map(|s| s.join().unwrap()).collect()
        });
        for server in started {
            self.apis.push(self.api_of(&server));
            self.servers.push(server);
        }
    }
}

#[test]
fn a_sigkilled_cluster_restarts_with_its_work_and_its_timers() {
    let mut formed = Formed::start();
    let apis = formed.apis.clone();

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
    formed.kill_all();
    let killed_at = chrono::Utc::now().timestamp_millis();
    assert!(
        killed_at < started + EXEC_TIMEOUT_MS,
        "the test was too slow: the kill came {} ms after the start",
        killed_at - started
    );

    // Restart all three together on their data directories, same flags (a
    // lone node cannot elect a leader, so they must come up side by side).
    formed.restart(&[0, 1, 2]);
    let apis = formed.apis.clone();
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
}

/// Members of a stopped cluster rarely come back at the same moment: the
/// bootstrap node, restarted first and alone, must wait for its peers
/// (it cannot serve without a quorum), not give up.
#[test]
fn a_bootstrap_node_restarted_before_its_peers_waits_for_them() {
    let mut formed = Formed::start();
    let id = formed.apis[1].submit_ok(QUICK);
    formed.kill_all();
    let first = std::thread::scope(|scope| {
        let first = scope.spawn(|| formed.specs[0].start(&formed.pki));
        // Well past an election timeout, with no peer to vote.
        std::thread::sleep(Duration::from_secs(3));
        let late: Vec<_> = [1, 2]
            .iter()
            .map(|&i| {
                let (spec, pki) = (&formed.specs[i], &formed.pki);
                scope.spawn(move || spec.start(pki))
            })
            .collect();
        let first = first
            .join()
            .expect("the bootstrap node did not wait for its peers");
        for server in late {
            formed.servers.push(server.join().unwrap());
        }
        first
    });
    formed.servers.insert(0, first);
    formed.apis = formed.servers.iter().map(|s| formed.api_of(s)).collect();
    let apis = formed.apis.clone();
    wait_for_leader(&apis);
    for api in &apis {
        let workflow = wait_for(Duration::from_secs(30), "not COMPLETED", || {
            let workflow = status_of(api, &id)?;
            (workflow["status"] == "COMPLETED")
                .then_some(workflow.clone())
                .ok_or(format!("{workflow}"))
        });
        assert_eq!(workflow["status"], "COMPLETED");
    }
    apis[0].submit_ok(QUICK);
}
