//! Membership through the CLI: three `gantry server` processes started
//! with neither `--bootstrap` nor `--join` wait, each with a one-time join
//! token in its data directory (nothing else moves them); `gantry cluster init` makes
//! the first a cluster of one (again: a no-op, said so), `gantry cluster
//! join PEER_ADDR` brings in the other two (a warning when the voter count
//! is even), and the cluster then serves writes through any node. And the
//! README's recipes for a three-node cluster, run as written (only the
//! machines' addresses, data directories and shared mount swapped for
//! loopback ones), and the failover trial on the first.

mod common;

use common::{wait_for, DevServer, Https, Pki, BINARY};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const HELLO: &str =
    "workflow:\n  name: setup\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

/// Runs the CLI with `args` against `url` (no token unless given);
/// returns (exit code, stdout, stderr).
fn cli(pki: &Pki, url: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env("GANTRY_URL", url)
        .env("GANTRY_CA", pki.dir.join("ca.pem"))
        .env_remove("GANTRY_TOKEN")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("gantry-test-no-config"),
        );
    if let Some(token) = token {
        command.env("GANTRY_TOKEN", token);
    }
    let output = command.output().expect("run gantry CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Node 3 also runs tasks on this host (`--local-backend`): it must still
/// serve its API while it waits, though it has no pool yet.
fn start(pki: &Pki, data: &std::path::Path, index: usize) -> DevServer {
    let ip = format!("127.0.0.{index}");
    let mut args: Vec<String> = vec!["server".into()];
    if index == 3 {
        args.push("--local-backend".into());
    }
    args.extend([
        "--listen".into(),
        format!("{ip}:0"),
        "--peer-listen".into(),
        format!("{ip}:0"),
    ]);
    args.extend(pki.server_flags(&format!("node{index}")));
    args.extend(common::shared_store_flags(data));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    DevServer::start_with(data, &args)
}

#[test]
fn nodes_started_without_flags_wait_for_cluster_init_and_join() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(
        &dir.path().join("pki"),
        &[
            ("node1", &["127.0.0.1"]),
            ("node2", &["127.0.0.2"]),
            ("node3", &["127.0.0.3"]),
        ],
    );
    let servers: Vec<DevServer> = (1..=3)
        .map(|index| start(&pki, &dir.path().join(format!("node{index}")), index))
        .collect();
    for server in &servers {
        assert!(
            server.log().contains("not a cluster member yet"),
            "{}",
            server.log()
        );
    }
    let http = pki.client(Duration::from_secs(30));

    // A waiting node takes no other call without a token.
    let (code, _, stderr) = cli(&pki, &servers[0].url, None, &["cluster", "members"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("token"), "{stderr}");
    // A waiting node's join token: 0600 in its data directory.
    let join_token = |index: usize| {
        let file = dir.path().join(format!("node{index}")).join("join-token");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        file.display().to_string()
    };
    // Init and join without it are refused.
    for args in [
        &["cluster", "init"][..],
        &["cluster", "join", "127.0.0.9:1"],
    ] {
        let (code, _, stderr) = cli(&pki, &servers[0].url, None, args);
        assert_ne!(code, 0);
        assert!(stderr.contains("join token"), "{stderr}");
    }
    // Join needs a peer address that is one.
    let (code, _, stderr) = cli(
        &pki,
        &servers[1].url,
        None,
        &[
            "cluster",
            "join",
            "nope",
            "--join-token-file",
            &join_token(2),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("peer") && stderr.contains("host:port"),
        "{stderr}"
    );

    // Init the first node; the token is written on the server, not sent.
    let (code, stdout, stderr) = cli(
        &pki,
        &servers[0].url,
        None,
        &["cluster", "init", "--join-token-file", &join_token(1)],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!dir.path().join("node1/join-token").exists(), "not spent");
    assert!(
        stdout.contains("initialized a new cluster of one"),
        "{stdout}"
    );
    let token_file = dir.path().join("node1").join("bootstrap-admin-token");
    assert!(
        stdout.contains(&token_file.display().to_string()),
        "{stdout}"
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !stdout.contains(&token),
        "the secret must not cross the wire"
    );
    // Again: nothing to do, and now a token is needed.
    let (code, _, stderr) = cli(&pki, &servers[0].url, None, &["cluster", "init"]);
    assert_ne!(code, 0, "an initialized node takes init only with a token");
    assert!(stderr.contains("token"), "{stderr}");
    let (code, stdout, stderr) = cli(&pki, &servers[0].url, Some(&token), &["cluster", "init"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("already a member"), "{stdout}");

    let members: Value = {
        let (code, stdout, stderr) = cli(
            &pki,
            &servers[0].url,
            Some(&token),
            &["cluster", "members", "-t", "json"],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let first_peer = members["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();

    // Node 2 joins: two voters, an even number, is warned about.
    let (code, stdout, stderr) = cli(
        &pki,
        &servers[1].url,
        None,
        &[
            "cluster",
            "join",
            &first_peer,
            "--join-token-file",
            &join_token(2),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("joined the cluster"), "{stdout}");
    assert!(
        stderr.contains("warning") && stderr.contains("2 voters"),
        "{stderr}"
    );
    // Node 3 joins through node 2 (a follower forwards the change): three voters, no warning.
    let second_peer = {
        let (_, stdout, _) = cli(
            &pki,
            &servers[1].url,
            Some(&token),
            &["cluster", "members", "-t", "json"],
        );
        let members: Value = serde_json::from_str(&stdout).unwrap();
        let id = members["node_id"].clone();
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["peer_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (code, stdout, stderr) = cli(
        &pki,
        &servers[2].url,
        None,
        &[
            "cluster",
            "join",
            &second_peer,
            "-t",
            "json",
            "--join-token-file",
            &join_token(3),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let joined: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(joined["joined"], true, "{joined}");
    assert_eq!(
        joined["voters"].as_array().map(Vec::len),
        Some(3),
        "{joined}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    // Joining again is a no-op.
    let (code, stdout, _) = cli(
        &pki,
        &servers[2].url,
        Some(&token),
        &["cluster", "join", &first_peer],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("already a member"), "{stdout}");

    // Every node sees three voters and a leader, and serves writes.
    let apis: Vec<Https> = servers
        .iter()
        .map(|server| Https {
            http: http.clone(),
            url: server.url.clone(),
            token: token.clone(),
        })
        .collect();
    for api in &apis {
        wait_for(Duration::from_secs(30), "not three voters", || {
            let members = api.members().ok_or("no answer")?;
            let voters = members["members"]
                .as_array()
                .map_or(0, |list| list.iter().filter(|m| m["voter"] == true).count());
            if voters == 3 && members["leader_id"].is_u64() {
                Ok(())
            } else {
                Err(members.to_string())
            }
        });
    }
    let ids: Vec<String> = apis.iter().map(|api| api.submit_ok(HELLO)).collect();
    assert_eq!(ids, ["setup-1", "setup-2", "setup-3"]);
    let (status, pools) = apis[2].get("/api/pool");
    assert_eq!(status, 200);
    assert!(pools["pools"]["default"].is_object(), "{pools}");
}

/// The `sh` blocks of the README's "Run a cluster" section, with
/// continuation lines joined: one command (or comment) per line.
fn readme_cluster_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(common::repo_path("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Run a cluster"))
        .expect("README section \"Run a cluster\"");
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| {
            let block = block.split("```").next().unwrap().replace("\\\n", " ");
            block.lines().map(str::to_string).collect()
        })
        .collect()
}

/// The README's machines 10.0.0.1-3 as 127.0.0.1-3 with free ports, each
/// machine's /var/lib/gantry as a directory of its own, and the filesystem
/// they all mount at /mnt/gantry-objects as one directory.
struct Machines {
    root: std::path::PathBuf,
    /// (API port, peer port) of machine N at index N - 1.
    ports: Vec<(u16, u16)>,
}

impl Machines {
    fn new(root: &std::path::Path) -> Machines {
        let free = |ip: &str| {
            let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
            listener.local_addr().unwrap().port()
        };
        let ports = (1..=3)
            .map(|n| {
                let ip = format!("127.0.0.{n}");
                (free(&ip), free(&ip))
            })
            .collect();
        Machines {
            root: root.to_path_buf(),
            ports,
        }
    }

    fn data_dir(&self, machine: usize) -> std::path::PathBuf {
        self.root.join(format!("var-lib-gantry-{machine}"))
    }

    /// `line` as run on `machine` (whose /var/lib/gantry it names).
    fn local(&self, line: &str, machine: usize) -> String {
        let mut line = line.to_string();
        for (index, (api, peer)) in self.ports.iter().enumerate() {
            let n = index + 1;
            line = line
                .replace(&format!("10.0.0.{n}:8470"), &format!("127.0.0.{n}:{api}"))
                .replace(&format!("10.0.0.{n}:8471"), &format!("127.0.0.{n}:{peer}"));
        }
        line.replace("10.0.0.", "127.0.0.")
            .replace(
                "/var/lib/gantry",
                &self.data_dir(machine).display().to_string(),
            )
            .replace(
                "/mnt/gantry-objects",
                &self.shared_store().display().to_string(),
            )
    }

    fn shared_store(&self) -> std::path::PathBuf {
        self.root.join("mnt-gantry-objects")
    }

    /// Runs `gantry server ...` as the line says, on the machine whose
    /// certificate it names, until it serves.
    fn start_server(&self, line: &str) -> DevServer {
        let machine = (1..=3)
            .find(|n| line.contains(&format!("pki/node{n}.pem")))
            .unwrap_or_else(|| panic!("which machine runs {line:?}?"));
        let line = self.local(line, machine);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..2], ["gantry", "server"], "{line}");
        // DevServer adds --data-dir itself; paths stay relative to `root`.
        let mut args = Vec::new();
        let mut rest = words[1..].iter();
        while let Some(word) = rest.next() {
            if *word == "--data-dir" {
                assert_eq!(
                    rest.next().map(std::path::PathBuf::from),
                    Some(self.data_dir(machine)),
                    "{line}"
                );
            } else if word.starts_with("pki/") {
                args.push(self.root.join(word).display().to_string());
            } else {
                args.push(word.to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(&self.data_dir(machine), &args)
    }

    /// Runs `lines` as one `sh` script in `root` (as machine 1), with this
    /// build's `gantry` first on the PATH and no GANTRY_* settings of the
    /// caller's; returns (exit code, stdout, stderr).
    fn sh(&self, lines: &[String]) -> (i32, String, String) {
        let script: Vec<String> = lines.iter().map(|line| self.local(line, 1)).collect();
        let bin = std::path::Path::new(BINARY).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("sh");
        command
            .arg("-ec")
            .arg(script.join("\n"))
            .current_dir(&self.root)
            .env("PATH", path)
            .env("XDG_CONFIG_HOME", self.root.join("no-config"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GANTRY_") {
                command.env_remove(key);
            }
        }
        let output = command.output().expect("run sh");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Three voters, one of them LEADER, in `gantry cluster members` text.
fn three_voters_one_leader(table: &str) -> bool {
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .collect();
    rows.len() == 3
        && rows.iter().all(|row| row.contains(" yes "))
        && rows.iter().filter(|row| row.contains("LEADER")).count() == 1
        && rows.iter().filter(|row| row.contains("FOLLOWER")).count() == 2
}

/// Runs the README's cluster recipe up to its third server as written:
/// the commands before the first server (certificates), then each server
/// (only comments may stand between them). Returns the servers and where
/// in the recipe each was started.
fn start_recipe_servers(machines: &Machines, recipe: &[String]) -> (Vec<DevServer>, Vec<usize>) {
    let servers_at: Vec<usize> = (0..recipe.len())
        .filter(|&i| recipe[i].starts_with("gantry server "))
        .collect();
    assert_eq!(
        servers_at.len(),
        3,
        "one `gantry server` per node: {recipe:?}"
    );
    let (code, stdout, stderr) = machines.sh(&recipe[..servers_at[0]]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut servers = Vec::new();
    for (k, &at) in servers_at.iter().enumerate() {
        let end = servers_at.get(k + 1).copied().unwrap_or(at + 1);
        for line in &recipe[at + 1..end] {
            assert!(line.trim_start().starts_with('#'), "{line}");
        }
        servers.push(machines.start_server(&recipe[at]));
    }
    (servers, servers_at)
}

/// The README's cluster recipe as written (its members share the store it
/// configures), then the failover trial: the leader SIGKILLed while a
/// producer publishes output for a consumer and a client follows the logs
/// (`common::failover_trial`).
#[test]
fn the_readme_cluster_passes_the_failover_trial() {
    let blocks = readme_cluster_blocks();
    let dir = tempfile::tempdir().unwrap();
    let machines = Machines::new(dir.path());
    let (servers, _) = start_recipe_servers(&machines, &blocks[0]);
    let token = std::fs::read_to_string(machines.data_dir(1).join("bootstrap-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let first = Https {
        http: Pki {
            dir: dir.path().join("pki"),
        }
        .client(Duration::from_secs(30)),
        url: servers[0].url.clone(),
        token: token.clone(),
    };
    wait_for(Duration::from_secs(30), "three voters", || {
        let members = first.members().ok_or("no answer")?;
        match members["members"].as_array().map(Vec::len) {
            Some(3) => Ok(()),
            _ => Err(members.to_string()),
        }
    });
    common::failover_trial::run(
        dir.path(),
        &Pki {
            dir: dir.path().join("pki"),
        },
        servers,
        &token,
        &machines.shared_store(),
    );
}

/// The README's cluster recipe, every command as written: certificates,
/// node 1 bootstraps, nodes 2 and 3 join, then `gantry cluster members`
/// with the URL, CA and token set as shown lists three voters. Then its
/// second recipe: three servers started with neither flag, `cluster
/// init` and a `cluster join` for each of nodes 2 and 3.
#[test]
fn the_readme_cluster_recipes_work_as_written() {
    let blocks = readme_cluster_blocks();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let machines = Machines::new(dir.path());

    let recipe = &blocks[0];
    let (servers, servers_at) = start_recipe_servers(&machines, recipe);
    let (code, stdout, stderr) = machines.sh(&recipe[servers_at[2] + 1..]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(three_voters_one_leader(&stdout), "{stdout}{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    drop(servers);

    // The same machines afresh, servers started with neither flag.
    let waiting = Machines {
        root: dir.path().to_path_buf(),
        ports: Machines::new(dir.path()).ports,
    };
    for n in 1..=3 {
        std::fs::remove_dir_all(machines.data_dir(n)).unwrap();
    }
    let _servers: Vec<DevServer> = servers_at
        .iter()
        .map(|&at| {
            let line = recipe[at]
                .replace(" --bootstrap", "")
                .split(" --join ")
                .next()
                .unwrap()
                .to_string();
            waiting.start_server(&line)
        })
        .collect();
    // As the recipe says: each node's join token copied next to the CLI.
    for n in 1..=3 {
        std::fs::copy(
            waiting.data_dir(n).join("join-token"),
            dir.path().join(format!("node{n}-join-token")),
        )
        .unwrap();
    }
    let (code, stdout, stderr) = waiting.sh(&blocks[1]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("initialized a new cluster of one"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("joined the cluster").count(), 2, "{stdout}");
    let token = std::fs::read_to_string(waiting.data_dir(1).join("bootstrap-admin-token")).unwrap();
    let (code, stdout, stderr) = waiting.sh(&[format!(
        "GANTRY_TOKEN={} gantry cluster members --url https://10.0.0.3:8470 --ca pki/ca.pem",
        token.trim()
    )]);
    assert_eq!(code, 0, "{stderr}");
    assert!(three_voters_one_leader(&stdout), "{stdout}{stderr}");
}
