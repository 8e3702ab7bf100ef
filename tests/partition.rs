//! Network partition: three `gantry server` processes, each in its own
//! network namespace, joined by veth pairs to a bridge in a fourth
//! namespace. Every address lives inside namespaces this test creates (and
//! removes): peers talk on 10.77.0.1-3, and each node's API listens on
//! 127.0.0.1 inside its own namespace, reached by an HTTPS client whose
//! connections are made from that namespace (setns(2) on the client's
//! thread). Nothing is addressed in the test's own namespace.
//!
//! The leader is cut off (its bridge port set down): it must stop
//! acknowledging writes and linearizable reads, the other two must elect a
//! new leader and keep acknowledging writes; after healing, the old leader
//! converges on the majority's state, and nothing it was sent while cut off
//! was ever stored.
//!
//! Needs root (network namespaces); skips with a message when not permitted.

mod common;

use common::{wait_for, DevServer, Https, Pki};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

const SUBNET: &str = "10.77.0";
const API: &str = "127.0.0.1:8470";
const PEER_PORT: u16 = 8471;
/// How long the test waits for an answer from the cut-off leader: a guard,
/// not a timing under test (it must not acknowledge at all).
const MINORITY_PROBE: Duration = Duration::from_secs(6);

fn spec(name: &str) -> String {
    format!("workflow:\n  name: {name}\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n")
}

/// Runs `ip ARGS`; `Err` with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespaces this test made: deleted on drop (which also deletes
/// every veth and bridge inside them), whatever happened.
struct Namespaces {
    hub: String,
    nodes: Vec<String>,
    made: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        Ok(())
    }

    /// A bridge in the hub, and each node namespace wired to it by a veth
    /// pair (`v<i>` on the bridge, `eth0` in the node) with `SUBNET.<i>/24`.
    fn build() -> Result<Namespaces, String> {
        let pid = std::process::id();
        let mut namespaces = Namespaces {
            hub: format!("gantry-part-{pid}-hub"),
            nodes: (1..=3).map(|i| format!("gantry-part-{pid}-n{i}")).collect(),
            made: Vec::new(),
        };
        let hub = namespaces.hub.clone();
        namespaces.add(&hub)?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (index, node) in namespaces.nodes.clone().iter().enumerate() {
            let index = index + 1;
            let port = format!("v{index}");
            namespaces.add(node)?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                node,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", node, "link", "set", "lo", "up"])?;
            let address = format!("{SUBNET}.{index}/24");
            ip(&["-n", node, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", node, "link", "set", "eth0", "up"])?;
        }
        Ok(namespaces)
    }

    /// Sets node `index`'s bridge port down (cut off) or up (healed).
    fn set_port(&self, index: usize, up: bool) {
        let port = format!("v{}", index + 1);
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &port, state]).unwrap();
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

/// An HTTPS client whose connections are made from network namespace `ns`
/// (reqwest's blocking client does its I/O on a thread it spawns while
/// being built, which inherits the namespace of the building thread).
fn client_in(ns: &str, pki: &Pki, timeout: Duration) -> reqwest::blocking::Client {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
                    .unwrap_or_else(|e| panic!("open /var/run/netns/{ns}: {e}"));
                // SAFETY: setns on a valid namespace fd changes only this thread's
                // network namespace; the thread ends once the client is built.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({ns}): {}", std::io::Error::last_os_error());
                pki.client(timeout)
            })
            .join()
            .unwrap()
    })
}

fn members_of(api: &Https) -> Result<Value, String> {
    api.members()
        .ok_or_else(|| format!("{} not answering", api.url))
}

/// Waits until the nodes in `which` agree on one leader among them.
fn agreed_leader(apis: &[Https], which: &[usize], ids: &[u64]) -> usize {
    wait_for(Duration::from_secs(30), "no agreed leader", || {
        let mut leaders = BTreeSet::new();
        for &i in which {
            leaders.insert(members_of(&apis[i])?["leader_id"].as_u64());
        }
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [Some(leader)] => which
                .iter()
                .copied()
                .find(|&i| ids[i] == leader)
                .ok_or(format!("leader {leader} is not among {which:?}")),
            ref other => Err(format!("leaders {other:?}")),
        }
    })
}

#[test]
fn a_partitioned_leader_stops_acknowledging_and_converges_after_healing() {
    let namespaces = match Namespaces::build() {
        Ok(namespaces) => namespaces,
        Err(error) => {
            eprintln!("skipping: cannot build network namespaces ({error})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let addresses: Vec<String> = (1..=3).map(|i| format!("{SUBNET}.{i}")).collect();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &[addresses[0].as_str(), "127.0.0.1"]),
            ("node2", &[addresses[1].as_str(), "127.0.0.1"]),
            ("node3", &[addresses[2].as_str(), "127.0.0.1"]),
        ],
    );
    let start = |index: usize, role: &[&str]| -> DevServer {
        let peer = format!("{}:{PEER_PORT}", addresses[index]);
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            API.into(),
            "--peer-listen".into(),
            peer,
        ];
        args.extend(pki.server_flags(&format!("node{}", index + 1)));
        args.extend(role.iter().map(|s| s.to_string()));
        args.extend(common::shared_store_flags(
            &dir.path().join(format!("node{}", index + 1)),
        ));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_wrapped(
            &["ip", "netns", "exec", &namespaces.nodes[index]],
            &dir.path().join(format!("node{}", index + 1)),
            &args,
        )
    };
    let first_peer = format!("{}:{PEER_PORT}", addresses[0]);
    let mut servers = vec![start(0, &["--bootstrap"])];
    let token =
        std::fs::read_to_string(dir.path().join("node1").join("bootstrap-admin-token")).unwrap();
    for index in 1..3 {
        servers.push(start(index, &["--join", &first_peer]));
    }
    let api_in = |index: usize, timeout: Duration| Https {
        http: client_in(&namespaces.nodes[index], &pki, timeout),
        url: servers[index].url.clone(),
        token: token.clone(),
    };
    let apis: Vec<Https> = (0..3).map(|i| api_in(i, Duration::from_secs(20))).collect();

    // Three voters; each client reaches the node in its own namespace.
    let ids: Vec<u64> = apis
        .iter()
        .map(|api| {
            wait_for(Duration::from_secs(30), "not three voters", || {
                let members = members_of(api)?;
                let voters = members["members"].as_array().map(|list| {
                    list.iter()
                        .filter(|m| m["voter"] == true)
                        .map(|m| m["peer_address"].as_str().unwrap_or_default().to_string())
                        .collect::<BTreeSet<_>>()
                });
                let expected: BTreeSet<String> = addresses
                    .iter()
                    .map(|a| format!("{a}:{PEER_PORT}"))
                    .collect();
                if voters == Some(expected) {
                    Ok(members["node_id"].as_u64().unwrap())
                } else {
                    Err(format!("{members}"))
                }
            })
        })
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 3, "{ids:?}");
    let old = agreed_leader(&apis, &[0, 1, 2], &ids);

    // Writes before the partition, through every node.
    let mut acknowledged: Vec<String> =
        (0..3).map(|i| apis[i].submit_ok(&spec("before"))).collect();

    // Cut the leader off from the other two.
    namespaces.set_port(old, false);
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let cut_off = Instant::now();
    let probe = api_in(old, MINORITY_PROBE);
    std::thread::scope(|scope| {
        // The old leader: a write sent to it is never acknowledged.
        let minority = scope.spawn(|| {
            let answer = probe.try_submit(&spec("minority"));
            assert!(
                !matches!(answer, Ok((200, _))),
                "the cut-off leader acknowledged a write: {answer:?}"
            );
            eprintln!("minority submit: {answer:?} after {:?}", cut_off.elapsed());
        });
        // The majority elects a new leader and keeps acknowledging writes,
        // through the leader and through the follower (forwarded).
        let new = agreed_leader(&apis, &majority, &ids);
        assert_ne!(new, old);
        eprintln!("new leader after {:?}", cut_off.elapsed());
        for &i in &majority {
            acknowledged.push(apis[i].submit_ok(&spec("majority")));
        }
        minority.join().unwrap();
    });
    // A linearizable read on the old leader does not answer from its stale
    // state (it cannot confirm its leadership with a quorum).
    let newest = acknowledged.last().unwrap().clone();
    let read = probe.try_get(&format!("/api/workflow/{newest}"));
    assert!(
        !matches!(read, Ok((200 | 404, _))),
        "the cut-off leader answered a read: {read:?}"
    );
    eprintln!("minority read: {read:?}");
    assert!(servers.iter_mut().all(|s| s.alive()), "a server exited");

    // Heal: the old leader follows the new one and catches up.
    namespaces.set_port(old, true);
    let healed = Instant::now();
    let converged = wait_for(Duration::from_secs(40), "nodes did not converge", || {
        let listings: Vec<Vec<(String, String)>> = apis
            .iter()
            .map(|api| api.listing())
            .collect::<Result<_, _>>()?;
        if listings.iter().all(|l| *l == listings[0]) {
            Ok(listings[0].clone())
        } else {
            Err(format!("{listings:?}"))
        }
    });
    eprintln!("converged {:?} after healing", healed.elapsed());
    let leader = agreed_leader(&apis, &[0, 1, 2], &ids);
    assert_ne!(leader, old, "the old leader should have lost its term");
    let names: BTreeSet<&String> = converged.iter().map(|(name, _)| name).collect();
    for id in &acknowledged {
        assert!(
            names.contains(id),
            "acknowledged {id} is missing: {converged:?}"
        );
    }
    assert!(
        !names.iter().any(|name| name.starts_with("minority")),
        "a write sent to the cut-off leader was stored: {converged:?}"
    );
    assert_eq!(names.len(), acknowledged.len(), "{converged:?}");

    // The old leader takes writes again (forwarded), and all nodes see them.
    let after = apis[old].submit_ok(&spec("after"));
    for api in &apis {
        wait_for(
            Duration::from_secs(20),
            "new write not replicated",
            || match api.try_get(&format!("/api/workflow/{after}")) {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    drop(apis);
    drop(probe);
    drop(servers);
    drop(namespaces);
}
