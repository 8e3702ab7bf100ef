//! A three-node cluster of real `gantry server` processes on 127.0.0.1-3,
//! with certificates from `gantry tls`: its bring-up and the calls tests
//! make on it.

use super::{wait_for, DevServer, BINARY};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const HELLO: &str = "workflow:\n  name: replicated\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

pub fn gantry(args: &[&str]) {
    let status = Command::new(BINARY)
        .args(args)
        .status()
        .expect("run gantry");
    assert!(status.success(), "gantry {args:?} failed");
}

pub struct Cluster {
    pub pki: PathBuf,
    pub token: String,
    pub http: reqwest::blocking::Client,
    /// Flags every server of the cluster gets.
    pub extra: Vec<String>,
}

impl Cluster {
    pub fn server_args(&self, index: usize, extra: &[&str]) -> Vec<String> {
        let ip = format!("127.0.0.{index}");
        self.server_args_at(index, &format!("{ip}:0"), &format!("{ip}:0"), extra)
    }

    /// Like [`Cluster::server_args`], listening on the given addresses.
    pub fn server_args_at(
        &self,
        index: usize,
        listen: &str,
        peer_listen: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "server".into(),
            "--local-backend".into(),
            "--listen".into(),
            listen.to_string(),
            "--peer-listen".into(),
            peer_listen.to_string(),
            "--tls-ca".into(),
            self.pki.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            self.pki
                .join(format!("node{index}.pem"))
                .display()
                .to_string(),
            "--tls-key".into(),
            self.pki
                .join(format!("node{index}-key.pem"))
                .display()
                .to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        // The PKI sits beside the data directories: one store for all.
        args.extend(super::shared_store_flags(&self.pki));
        args
    }

    pub fn start(&self, data: &Path, index: usize, extra: &[&str]) -> DevServer {
        let args = self.server_args(index, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(data, &args)
    }

    /// Starts node `index` again on the addresses it had (its API URL and
    /// its peer address, which the membership holds).
    pub fn restart(&self, data: &Path, index: usize, url: &str, peer: &str) -> DevServer {
        let listen = url.trim_start_matches("https://");
        let args = self.server_args_at(index, listen, peer, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        DevServer::start_with(data, &args)
    }

    pub fn get(&self, server: &DevServer, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(&self.token)
            .send()
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn submit(&self, server: &DevServer) -> String {
        let response = self
            .http
            .post(format!("{}/api/pool/default/workflow", server.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "file": HELLO }))
            .send()
            .expect("submit");
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().unwrap();
        body["name"].as_str().unwrap().to_string()
    }

    pub fn wait_completed(&self, server: &DevServer, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, workflow) = self.get(server, &format!("/api/workflow/{id}"));
            if status == 200 && workflow["status"] == "COMPLETED" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not COMPLETED: {status} {workflow}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn members(&self, server: &DevServer) -> Value {
        self.get(server, "/api/cluster/members").1
    }

    /// `gantry cluster members [extra]` against `server`, as a user runs it:
    /// (exit code, stdout, stderr).
    pub fn cli_members(&self, server: &DevServer, extra: &[&str]) -> (i32, String, String) {
        let output = Command::new(BINARY)
            .args(["cluster", "members"])
            .args(extra)
            .env("GANTRY_URL", &server.url)
            .env("GANTRY_CA", self.pki.join("ca.pem"))
            .env("GANTRY_TOKEN", &self.token)
            .output()
            .expect("run gantry cluster members");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// Certificates for nodes 1-3 (127.0.0.1-3) and a cluster handle with an
/// HTTPS client that trusts only their CA; the token is set once node 1
/// has bootstrapped.
pub fn new_cluster(dir: &Path) -> Cluster {
    let pki = dir.join("pki");
    let pki_text = pki.to_str().unwrap();
    gantry(&["tls", "ca", "create", "--out", pki_text]);
    for index in 1..=3 {
        let name = format!("node{index}");
        let ip = format!("127.0.0.{index}");
        gantry(&[
            "tls", "cert", "create", "--ca", pki_text, "--name", &name, "--kind", "server", "--ip",
            &ip, "--out", pki_text,
        ]);
    }
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Cluster {
        pki,
        token: String::new(),
        http,
        extra: Vec::new(),
    }
}

/// Node 1 bootstraps, nodes 2 and 3 join it; returns once every node lists
/// three voters and a leader. `start` starts node 2 or 3 with the given
/// flags (most tests: [`Cluster::start`]).
/// Three plain members (as [`start_three`] starts them), each held in an
/// `Option` so a test can stop one and start it again.
pub fn start_three_stoppable(cluster: &mut Cluster, dir: &Path) -> Vec<Option<DevServer>> {
    start_three(cluster, dir, |cluster, data, index, extra| {
        cluster.start(data, index, extra)
    })
    .into_iter()
    .map(Some)
    .collect()
}

pub fn start_three(
    cluster: &mut Cluster,
    dir: &Path,
    start: impl Fn(&Cluster, &Path, usize, &[&str]) -> DevServer,
) -> Vec<DevServer> {
    let data: Vec<PathBuf> = (1..=3)
        .map(|index| dir.join(format!("node{index}")))
        .collect();
    let first = cluster.start(&data[0], 1, &["--bootstrap"]);
    cluster.token = std::fs::read_to_string(data[0].join("bootstrap-admin-token")).unwrap();
    let first_peer = cluster.members(&first)["members"][0]["peer_address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut servers = vec![first];
    for index in 2..=3 {
        servers.push(start(
            cluster,
            &data[index - 1],
            index,
            &["--join", &first_peer],
        ));
    }
    for server in &servers {
        wait_for(Duration::from_secs(30), "three voters and a leader", || {
            let members = cluster.members(server);
            let voters = members["members"].as_array().map_or(0, Vec::len);
            match members["leader_id"].as_u64() {
                Some(_) if voters == 3 => Ok(()),
                _ => Err(members.to_string()),
            }
        });
    }
    servers
}
