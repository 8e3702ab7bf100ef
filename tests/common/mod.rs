//! Helpers for end-to-end tests: start real `gantry` processes on loopback
//! with their own data directories, talk to them over HTTP, stop them (or
//! SIGKILL them). Every process is killed when its handle drops.

#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod failover_trial;
pub mod idp;
pub mod notify;
pub mod osmo;
pub mod registry;

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_gantry");

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A file of OSMO's reference material, which sits in `shared/osmo/`
/// beside the repository (it is not copied into the project): found in the
/// ancestors of the crate directory.
pub fn osmo_reference(file: &str) -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/osmo").join(file))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "shared/osmo/{file} not found beside {}; this test needs OSMO's reference material",
                manifest.display()
            )
        })
}

/// A `gantry dev` process serving on an ephemeral loopback port.
pub struct DevServer {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
}

impl DevServer {
    /// Starts `gantry dev` on `data_dir` and waits until it serves.
    pub fn start(data_dir: &Path) -> DevServer {
        DevServer::start_with(data_dir, &["dev", "--listen", "127.0.0.1:0"])
    }

    /// Starts `gantry <args> --data-dir <data_dir>` and waits until it
    /// announces its API address.
    pub fn start_with(data_dir: &Path, args: &[&str]) -> DevServer {
        DevServer::start_wrapped(&[], data_dir, args)
    }

    /// Like [`DevServer::start_with`], with the binary run through `wrapper`
    /// (e.g. `["ip", "netns", "exec", NS]`; empty: run it directly).
    pub fn start_wrapped(wrapper: &[&str], data_dir: &Path, args: &[&str]) -> DevServer {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let log_path = data_dir.with_extension(format!("log-{}", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open server log");
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(BINARY);
                command
            }
            None => Command::new(BINARY),
        };
        // Its own process group, so killing the group takes the server
        // even through a wrapper that forks it (`faketime` does).
        let child = command
            .process_group(0)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("GANTRY_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gantry dev");
        // Owned by the handle at once, so a failed start is still killed on drop.
        let mut server = DevServer {
            child,
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let marker = "API on ";
        loop {
            let text = server.log();
            if let Some(position) = text[offset as usize..].find(marker) {
                let rest = &text[offset as usize + position + marker.len()..];
                // Only a whole line: a read while the server writes it can
                // end inside the address (`http://127.0.0.` once read as
                // 127.0.0.0).
                if let Some((line, _)) = rest.split_once('\n') {
                    let address: String = line.chars().take_while(|c| !c.is_whitespace()).collect();
                    server.url = address;
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gantry {args:?} did not start; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL without waiting (to kill several processes at once); the
    /// handle reaps it when dropped.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
    }

    /// Whether the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no cleanup, no flush beyond what is already durable.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        terminate(&mut self.child, Duration::from_secs(15));
    }

    pub fn client(&self) -> Api {
        Api {
            url: self.url.clone(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = kill_group(self.child.id(), "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signals the process group `pid` leads (a server and whatever wraps it).
fn kill_group(pid: u32, signal: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args([format!("-{signal}"), "--".to_string(), format!("-{pid}")])
        .stderr(Stdio::null())
        .status()
}

fn nix_kill(pid: u32, signal: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
}

/// `--object-store` and a `file://` directory beside `data_dir`, the same
/// for every member whose data directory sits in the same parent: the one
/// store a cluster's members share (a member may not keep objects in its
/// own data directory).
pub fn shared_store_flags(data_dir: &Path) -> [String; 2] {
    let parent = data_dir.parent().unwrap_or(data_dir);
    [
        "--object-store".into(),
        format!("file://{}", parent.join("shared-objects").display()),
    ]
}

/// A small blocking HTTP client for the API.
#[derive(Clone)]
pub struct Api {
    pub url: String,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

impl Api {
    pub fn get(&self, path: &str) -> Reply {
        let response = agent()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        Reply {
            status: response.status().as_u16(),
            body: response.text().unwrap_or_default(),
        }
    }

    pub fn post(&self, path: &str, body: Option<&Value>) -> Reply {
        let mut request = agent().post(format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().expect("POST");
        Reply {
            status: response.status().as_u16(),
            body: response.text().unwrap_or_default(),
        }
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        let response = agent()
            .put(format!("{}{path}", self.url))
            .json(body)
            .send()
            .expect("PUT");
        Reply {
            status: response.status().as_u16(),
            body: response.text().unwrap_or_default(),
        }
    }

    pub fn delete(&self, path: &str) -> Reply {
        let response = agent()
            .delete(format!("{}{path}", self.url))
            .send()
            .expect("DELETE");
        Reply {
            status: response.status().as_u16(),
            body: response.text().unwrap_or_default(),
        }
    }

    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Reply {
        let response = agent()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        Reply {
            status: response.status().as_u16(),
            body: response.text().unwrap_or_default(),
        }
    }

    pub fn submit(&self, spec: &str) -> Reply {
        self.post(
            "/api/pool/default/workflow",
            Some(&serde_json::json!({ "file": spec })),
        )
    }

    /// Submits and returns the workflow ID, panicking on refusal.
    pub fn submit_ok(&self, spec: &str) -> String {
        let reply = self.submit(spec);
        assert_eq!(reply.status, 200, "submit refused: {}", reply.body);
        reply.json()["name"].as_str().expect("name").to_string()
    }

    pub fn workflow(&self, id: &str) -> Value {
        let reply = self.get(&format!("/api/workflow/{id}"));
        assert_eq!(reply.status, 200, "query {id}: {}", reply.body);
        reply.json()
    }

    /// Polls until the workflow has left PENDING/RUNNING, or panics at `limit`.
    pub fn wait_finished(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let workflow = self.workflow(id);
            let status = workflow["status"].as_str().unwrap_or_default().to_string();
            if !matches!(status.as_str(), "PENDING" | "RUNNING" | "WAITING") {
                return workflow;
            }
            assert!(
                Instant::now() < deadline,
                "{id} still {status} after {limit:?}: {workflow}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until task `task` of `id` has status `status`.
    pub fn wait_task(&self, id: &str, task: &str, status: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let workflow = self.workflow(id);
            if let Some(found) = task_of(&workflow, task) {
                if found["status"] == status {
                    return found;
                }
            }
            assert!(
                Instant::now() < deadline,
                "task {task} of {id} not {status} after {limit:?}: {workflow}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn task_of(workflow: &Value, task: &str) -> Option<Value> {
    workflow["groups"]
        .as_array()?
        .iter()
        .flat_map(|group| group["tasks"].as_array().cloned().unwrap_or_default())
        .find(|candidate| candidate["name"] == task)
}

pub fn group_of(workflow: &Value, group: &str) -> Option<Value> {
    workflow["groups"]
        .as_array()?
        .iter()
        .find(|candidate| candidate["name"] == group)
        .cloned()
}

/// Runs the gantry CLI against `url`; returns (exit code, stdout, stderr).
pub fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env("GANTRY_URL", url)
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("gantry-test-no-config"),
        )
        .output()
        .expect("run gantry CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Processes whose command line contains `marker` (to check nothing survived).
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'));
        if text.contains(marker) && !zombie {
            found.push(text);
        }
    }
    found
}

/// Runs the gantry CLI with `args`, panicking unless it succeeds.
pub fn gantry_ok(args: &[&str]) {
    let output = Command::new(BINARY)
        .args(args)
        .output()
        .expect("run gantry");
    assert!(
        output.status.success(),
        "gantry {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and server certificates from `gantry tls`, in one directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Creates the CA and, for each `(name, ips)`, a server certificate
    /// valid for those IP addresses.
    pub fn create(dir: &Path, nodes: &[(&str, &[&str])]) -> Pki {
        let text = dir.to_str().expect("UTF-8 path");
        gantry_ok(&["tls", "ca", "create", "--out", text]);
        for (name, ips) in nodes {
            let mut args = vec![
                "tls", "cert", "create", "--ca", text, "--name", name, "--kind", "server",
            ];
            for ip in ips.iter() {
                args.extend(["--ip", ip]);
            }
            args.extend(["--out", text]);
            gantry_ok(&args);
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// `--tls-ca`, `--tls-cert` and `--tls-key` for node `name`.
    pub fn server_flags(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.dir.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            self.dir.join(format!("{name}.pem")).display().to_string(),
            "--tls-key".into(),
            self.dir
                .join(format!("{name}-key.pem"))
                .display()
                .to_string(),
        ]
    }

    /// An HTTPS client that trusts only this CA, with a per-request timeout.
    pub fn client(&self, timeout: Duration) -> reqwest::blocking::Client {
        client_trusting(&self.dir.join("ca.pem"), timeout)
    }
}

/// An HTTPS client that trusts only the CA in `ca` (PEM).
pub fn client_trusting(ca: &Path, timeout: Duration) -> reqwest::blocking::Client {
    let ca = std::fs::read(ca).expect("read CA");
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .tls_built_in_root_certs(false)
        .timeout(timeout)
        .build()
        .expect("https client")
}

/// A bootstrapped one-node `gantry server` with TLS on 127.0.0.1 (data in
/// `dir/node`, certificates in `dir`), with `extra` flags.
pub fn start_tls_server(dir: &Path, extra: &[&str]) -> (Pki, DevServer) {
    let pki = Pki::create(dir, &[("node", &["127.0.0.1"])]);
    let mut args: Vec<String> = [
        "server",
        "--bootstrap",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.extend(pki.server_flags("node"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = DevServer::start_with(&dir.join("node"), &args);
    (pki, server)
}

/// The API of one server over HTTPS with a bearer token.
#[derive(Clone)]
pub struct Https {
    pub http: reqwest::blocking::Client,
    pub url: String,
    pub token: String,
}

impl Https {
    /// GET; `Err` when no answer came (connection refused, timeout).
    pub fn try_get(&self, path: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    /// GET, panicking when no answer came.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {}{path}: {e}", self.url))
    }

    /// Submits `spec` to pool `default`; `Err` when no answer came.
    pub fn try_submit(&self, spec: &str) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{}/api/pool/default/workflow", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "file": spec }))
            .send()?;
        let status = response.status().as_u16();
        Ok((status, response.json().unwrap_or(Value::Null)))
    }

    /// Submits and returns the workflow ID, panicking on anything but 200.
    pub fn submit_ok(&self, spec: &str) -> String {
        let (status, body) = self
            .try_submit(spec)
            .unwrap_or_else(|e| panic!("submit to {}: {e}", self.url));
        assert_eq!(status, 200, "submit to {} refused: {body}", self.url);
        body["name"].as_str().expect("name").to_string()
    }

    /// `/api/cluster/members`, or `None` when the node does not answer.
    pub fn members(&self) -> Option<Value> {
        match self.try_get("/api/cluster/members") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// The workflows this node lists, as sorted `(name, status)` pairs.
    pub fn listing(&self) -> Result<Vec<(String, String)>, String> {
        let (status, body) = self
            .try_get("/api/workflow?limit=1000")
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        let mut pairs: Vec<(String, String)> = body["workflows"]
            .as_array()
            .ok_or_else(|| format!("no workflows array: {body}"))?
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap_or_default().to_string(),
                    w["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        pairs.sort();
        Ok(pairs)
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, panicking with
/// `what` (and the last `Err`) after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(Instant::now() < deadline, "{what} after {limit:?}: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `moto_server` (S3-compatible) on a free loopback port.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one with bucket `bucket` created; `None` when `moto_server` is
/// not installed (the caller prints SKIPPED).
pub fn start_moto(bucket: &str) -> Option<Moto> {
    let binary = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|path| path.is_file())
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::blocking::Client::new();
    wait_for(Duration::from_secs(30), "moto_server to serve", || {
        http.put(format!("{}/{bucket}", moto.url))
            .send()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(r.status().to_string())
                }
            })
    });
    Some(moto)
}

/// The events of `workflow` (`?task_name=` when `task` is given) once they
/// hold every one of `wanted` (sessions are recorded beside the session,
/// so shortly after it opened).
pub fn wait_for_events(
    http: &reqwest::blocking::Client,
    base_url: &str,
    token: Option<&str>,
    workflow: &str,
    task: Option<&str>,
    wanted: &[&str],
) -> String {
    let mut url = format!("{base_url}/api/workflow/{workflow}/events");
    if let Some(task) = task {
        url.push_str(&format!("?task_name={task}"));
    }
    wait_for(Duration::from_secs(10), "the workflow's events", || {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let text = request
            .send()
            .and_then(|reply| reply.text())
            .map_err(|error| error.to_string())?;
        if wanted.iter().all(|line| text.contains(line)) {
            Ok(text)
        } else {
            Err(text)
        }
    })
}

/// Every file under `dir` that holds `needle` (a probe for values that must
/// never be stored in the clear).
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|window| window == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// SIGTERM `child`, then SIGKILL it if it has not exited within `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = nix_kill(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
