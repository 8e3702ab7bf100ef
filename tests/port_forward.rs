//! `gantry workflow port-forward` end to end: the CLI listens, each TCP
//! connection becomes a session through the server to the operator, which
//! connects to the port inside the task's network namespace. Through the
//! in-process operator of `gantry dev`, and through a remote `gantry
//! operator` over mutual TLS (the session a request of its own on the
//! operator's HTTP/2 connection); many connections at once, each with its
//! own bytes; 403, 404 and 409; the session ends when the task does. An
//! exec travels the remote operator's path too.

mod common;

use common::{gantry_ok, wait_for, DevServer, Pki, BINARY};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Task `serve` answers every connection with what it receives, upper-cased,
/// until the connection closes; task `done` ends at once.
const SERVE: &str = r#"workflow:
  name: forward
  tasks:
  - name: serve
    image: ubuntu
    command: [python3, -c]
    args:
    - |
      import socket, socketserver, threading
      def udp():
          sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
          sock.bind(("127.0.0.1", 7000))
          while True:
              data, peer = sock.recvfrom(65535)
              sock.sendto(data.upper(), peer)
      threading.Thread(target=udp, daemon=True).start()
      class Upper(socketserver.BaseRequestHandler):
          def handle(self):
              while True:
                  data = self.request.recv(65536)
                  if not data:
                      break
                  self.request.sendall(data.upper())
      socketserver.ThreadingTCPServer.allow_reuse_address = True
      socketserver.ThreadingTCPServer.daemon_threads = True
      server = socketserver.ThreadingTCPServer(("127.0.0.1", 7000), Upper)
      print("listening", flush=True)
      server.serve_forever()
  - name: done
    image: ubuntu
    command: ["true"]
"#;

const UPGRADE: &str = "gantry-port-forward";
const CONNECTIONS: usize = 20;

fn python_present() -> bool {
    Path::new("/usr/bin/python3").exists() || Path::new("/usr/local/bin/python3").exists()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `gantry workflow port-forward`, killed when dropped.
struct Forward {
    child: Child,
    port: u16,
    /// Kept open: the CLI prints more, and a closed pipe would end it.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Forward {
    /// Starts the CLI forwarding a free local port to `remote` and waits
    /// until it listens.
    fn start(env: &[(&str, String)], workflow: &str, task: &str, remote: u16) -> Forward {
        let port = free_port();
        let mut child = Command::new(BINARY)
            .args(["workflow", "port-forward", workflow, task, "--port"])
            .arg(format!("{port}:{remote}"))
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        if !line.starts_with("Forwarding from") {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("the CLI did not start forwarding: {line}{stderr}");
        }
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        Forward {
            child,
            port,
            _stdout: stdout,
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `payload` through local port `port`, half-closes, and returns
/// everything that comes back until the other side closes.
fn exchange(port: u16, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    // Written from a thread of its own: the answer comes back while the
    // payload is still going out (more than any buffer holds).
    let payload = payload.to_vec();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&payload)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    sender.join().unwrap()?;
    Ok(answer)
}

/// Waits until the task's server answers through the forward.
fn wait_serving(port: u16) {
    wait_for(
        Duration::from_secs(60),
        "the task to serve",
        || match exchange(port, b"ping") {
            Ok(answer) if answer == b"PING" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// `CONNECTIONS` connections at once, each with bytes of its own, each
/// answered with exactly its own bytes upper-cased.
fn many_connections_each_get_their_own_bytes(port: u16) {
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|index| {
            std::thread::spawn(move || {
                // About 256 KiB each: more than an HTTP/2 stream's window.
                let payload: Vec<u8> = format!("connection-{index:02}-abcdefghijklmnopq;")
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(256 << 10)
                    .collect();
                let answer = exchange(port, &payload).unwrap();
                assert_eq!(answer.len(), payload.len(), "connection {index}");
                assert!(
                    answer == payload.to_ascii_uppercase(),
                    "connection {index} got bytes that are not its own"
                );
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// `gantry workflow port-forward --udp`: datagrams of two local clients
/// reach the task's UDP port 7000 and each gets its own reply.
fn udp_forward_answers_each_client(env: &[(&str, String)], workflow: &str) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BINARY)
        .args([
            "workflow",
            "port-forward",
            workflow,
            "serve",
            "--udp",
            "--port",
        ])
        .arg(format!("{port}:7000"))
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("Forwarding UDP from"), "{line}");
    let exchange = |client: &std::net::UdpSocket, word: &str| -> Result<String, String> {
        client
            .send_to(word.as_bytes(), ("127.0.0.1", port))
            .map_err(|e| e.to_string())?;
        let mut reply = [0u8; 64];
        let (n, _) = client.recv_from(&mut reply).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
    };
    let clients: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            client
        })
        .collect();
    let first = wait_for(Duration::from_secs(30), "a UDP reply", || {
        exchange(&clients[0], "alpha")
    });
    assert_eq!(first, "ALPHA");
    assert_eq!(exchange(&clients[1], "beta").as_deref(), Ok("BETA"));
    assert_eq!(exchange(&clients[0], "gamma").as_deref(), Ok("GAMMA"));
    let _ = child.kill();
    let _ = child.wait();
}

/// A session stays open while the task runs and closes when it ends
/// (`end_task` ends it).
fn the_session_ends_with_the_task(port: u16, end_task: impl FnOnce()) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(b"still here").unwrap();
    let mut answer = [0u8; 10];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"STILL HERE");
    end_task();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(error) => assert!(
            !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the session outlived its task"
        ),
    }
}

/// `(status, body)` of the user's request with the upgrade asked for.
fn ask(http: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http
        .get(url)
        .header("Connection", "upgrade")
        .header("Upgrade", UPGRADE);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn wait_task(
    http: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
    id: &str,
    task: &str,
    status: &str,
) {
    wait_for(
        Duration::from_secs(90),
        &format!("{task} to be {status}"),
        || {
            let mut request = http.get(format!("{url}/api/workflow/{id}/task/{task}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let body: Value = request
                .send()
                .and_then(|response| response.json())
                .map_err(|error| error.to_string())?;
            if body["status"] == status {
                Ok(())
            } else {
                Err(body["status"].to_string())
            }
        },
    );
}

#[test]
fn port_forward_through_the_in_process_operator() {
    if !python_present() {
        eprintln!("skipped: the task's server needs python3 under /usr");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(dir.path());
    let api = server.client();
    let id = api.submit_ok(SERVE);
    let http = reqwest::blocking::Client::new();
    wait_task(&http, &server.url, None, &id, "serve", "RUNNING");
    wait_task(&http, &server.url, None, &id, "done", "COMPLETED");
    let env = [
        ("GANTRY_URL", server.url.clone()),
        (
            "XDG_CONFIG_HOME",
            dir.path().join("no-config").display().to_string(),
        ),
    ];

    let forward = Forward::start(&env, &id, "serve", 7000);
    wait_serving(forward.port);
    many_connections_each_get_their_own_bytes(forward.port);

    // Unknown task, finished task, nothing listening: the server's answer.
    let base = format!("{}/api/workflow/{id}/portforward", server.url);
    let (status, body) = ask(&http, &format!("{base}/nope?port=7000"), None);
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = ask(&http, &format!("{base}/done?port=7000"), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("COMPLETED"),
        "{body}"
    );
    // OSMO's CLI asks POST for its router protocol's tickets (one per
    // port, a WebSocket address on this server).
    let osmo: Value = http
        .post(format!("{base}/serve?task_ports=7000,7001"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tickets = osmo.as_array().expect("a ticket per port");
    assert_eq!(tickets.len(), 2, "{osmo}");
    assert!(
        tickets[0]["router_address"]
            .as_str()
            .unwrap()
            .starts_with("ws://"),
        "{osmo}"
    );
    assert_ne!(tickets[0]["key"], tickets[1]["key"]);
    // OSMO's limit of ports per call (WORKFLOW max_num_ports_per_task, 30).
    let many: Vec<String> = (7000..7031).map(|port| port.to_string()).collect();
    let over = http
        .post(format!("{base}/serve?task_ports={}", many.join(",")))
        .send()
        .unwrap();
    assert_eq!(over.status().as_u16(), 400);
    assert!(over
        .text()
        .unwrap_or_default()
        .contains("max_num_ports_per_task"));
    // UDP (`use_udp`): a ticket per port as well.
    let udp: Value = http
        .post(format!("{base}/serve?task_ports=7000&use_udp=true"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(udp.as_array().map(Vec::len), Some(1), "{udp}");
    // A ticket is its user's: another user's socket finds nothing.
    let stranger = http
        .get(format!(
            "{}/api/router/portforward/{id}/client/{}",
            server.url,
            tickets[0]["key"].as_str().unwrap()
        ))
        .header("x-osmo-user", "mallory")
        .header("Connection", "upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .unwrap();
    assert_eq!(stranger.status().as_u16(), 404, "{:?}", stranger.text());
    let (status, body) = ask(&http, &format!("{base}/serve?port=7001"), None);
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("port 7001"),
        "{body}"
    );
    let (status, _) = ask(&http, &format!("{base}/serve?port=0"), None);
    assert_eq!(status, 400);
    // The CLI checks the task before it listens.
    let (code, _, stderr) = common::cli(
        &server.url,
        &["workflow", "port-forward", &id, "done", "--port", "7000"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("COMPLETED"), "{stderr}");

    let log = server.log();
    assert!(
        log.contains("port-forward session opened")
            && log.contains("port-forward session opening")
            && log.contains("user=anonymous")
            && log.contains("task=serve port=7000"),
        "every session is logged with who, what and where:\n{log}"
    );

    // UDP: two local clients, each answered alone, through one session.
    udp_forward_answers_each_client(&env, &id);

    // Recorded as an event of the workflow: once, however many
    // connections the forward carried within a minute.
    let events = common::wait_for_events(
        &http,
        &server.url,
        None,
        &id,
        None,
        &[
            "[serve] PORT-FORWARD: by anonymous to port 7000\n",
            "[serve] PORT-FORWARD: by anonymous to port 7000/udp",
        ],
    );
    assert_eq!(events.matches("PORT-FORWARD").count(), 2, "{events}");

    the_session_ends_with_the_task(forward.port, || {
        let cancel = http
            .post(format!("{}/api/workflow/{id}/cancel", server.url))
            .send()
            .unwrap();
        assert!(cancel.status().is_success());
    });
}

fn cert(pki: &Pki, name: &str, kind: &str) {
    let dir = pki.dir.to_str().unwrap();
    gantry_ok(&[
        "tls", "cert", "create", "--ca", dir, "--name", name, "--kind", kind, "--out", dir,
    ]);
}

/// A `gantry operator` process, killed when dropped.
struct Operator(Child);

impl Operator {
    fn start(dir: &Path, pki: &Pki, servers: &str, token: &str) -> Operator {
        let token_file = dir.join("operator-token");
        std::fs::write(&token_file, token).unwrap();
        let file = |name: &str| -> PathBuf { pki.dir.join(name) };
        let child = Command::new(BINARY)
            .args(["operator", "--servers", servers, "--backend", "local"])
            .args(["--task-root", "host"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--tls-ca")
            .arg(file("ca.pem"))
            .arg("--tls-cert")
            .arg(file("edge.pem"))
            .arg("--tls-key")
            .arg(file("edge-key.pem"))
            .arg("--work-dir")
            .arg(dir.join("operator-work"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_forward_through_a_remote_operator_over_mutual_tls() {
    if !python_present() {
        eprintln!("skipped: the task's server needs python3 under /usr");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node", &["127.0.0.1"])]);
    cert(&pki, "edge", "operator");
    let mut args: Vec<String> = ["server", "--bootstrap", "--listen", "127.0.0.1:0"]
        .into_iter()
        .chain(["--peer-listen", "127.0.0.1:0"])
        .map(String::from)
        .collect();
    args.extend(pki.server_flags("node"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = dir.path().join("node");
    let server = DevServer::start_with(&data, &args);
    let admin = std::fs::read_to_string(data.join("bootstrap-admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let _operator = Operator::start(dir.path(), &pki, &server.url, &admin);
    let http = pki.client(Duration::from_secs(30));
    let env = |token: &str| {
        [
            ("GANTRY_URL", server.url.clone()),
            ("GANTRY_CA", pki.dir.join("ca.pem").display().to_string()),
            ("GANTRY_TOKEN", token.to_string()),
            (
                "XDG_CONFIG_HOME",
                dir.path().join("no-config").display().to_string(),
            ),
        ]
    };
    let submitted: Value = http
        .post(format!("{}/api/pool/default/workflow", server.url))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"file": SERVE}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = submitted["name"].as_str().expect("submitted").to_string();
    wait_task(&http, &server.url, Some(&admin), &id, "serve", "RUNNING");

    let forward = Forward::start(&env(&admin), &id, "serve", 7000);
    wait_serving(forward.port);
    many_connections_each_get_their_own_bytes(forward.port);

    // A token whose roles lack workflow:PortForward is refused, naming it.
    let output = Command::new(BINARY)
        .args([
            "token",
            "set",
            "edge-only",
            "--roles",
            "backend",
            "-t",
            "json",
        ])
        .envs(env(&admin))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
    let backend_token = reply["token"].as_str().unwrap().to_string();
    let url = format!(
        "{}/api/workflow/{id}/portforward/serve?port=7000",
        server.url
    );
    let (status, body) = ask(&http, &url, Some(&backend_token));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("workflow:PortForward"),
        "{body}"
    );
    let (status, _) = ask(&http, &url, None);
    assert_eq!(status, 401);

    // An exec goes the same way (over TLS, to the remote operator, into
    // the task's sandbox); a token without workflow:Exec is refused.
    let output = Command::new(BINARY)
        .args([
            "workflow",
            "exec",
            &id,
            "serve",
            "--",
            "sh",
            "-c",
            "id -u; exit 4",
        ])
        .envs(env(&admin))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "1000\n");
    let refused = http
        .get(format!("{}/api/workflow/{id}/exec/task/serve", server.url))
        .header("Connection", "upgrade")
        .header("Upgrade", "gantry-exec")
        .bearer_auth(&backend_token)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let text = refused.text().unwrap_or_default();
    assert!(text.contains("workflow:Exec"), "{text}");

    // An operator's credentials answer only a session the server asked of
    // their backend: a made-up session is 404, and no stream opens.
    let mut pem = std::fs::read(pki.dir.join("edge.pem")).unwrap();
    pem.extend(std::fs::read(pki.dir.join("edge-key.pem")).unwrap());
    let ca = std::fs::read(pki.dir.join("ca.pem")).unwrap();
    let operator_client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let hijack = operator_client
        .post(format!(
            "{}/api/agent/session/00000000-0000-0000-0000-000000000000?backend=local",
            server.url
        ))
        .bearer_auth(&admin)
        .body(b"from a stranger".to_vec())
        .send()
        .unwrap();
    assert_eq!(hijack.status().as_u16(), 404);
    let text = hijack.text().unwrap_or_default();
    assert!(text.contains("waits for its operator"), "{text}");

    // Recorded as an event of the workflow: once, however many
    // connections the forward carried within a minute.
    let events = common::wait_for_events(
        &http,
        &server.url,
        Some(&admin),
        &id,
        None,
        &[
            "[serve] PORT-FORWARD: by admin to port 7000",
            "[serve] EXEC: by admin: sh -c",
        ],
    );
    assert_eq!(events.matches("PORT-FORWARD").count(), 1, "{events}");

    the_session_ends_with_the_task(forward.port, || {
        let cancel = http
            .post(format!("{}/api/workflow/{id}/cancel", server.url))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert!(cancel.status().is_success());
    });
}

/// A three-member cluster whose members run the `local` backend in
/// process (the leader's runs the tasks): sessions asked of a follower
/// (Gantry's upgraded requests and OSMO's ticket POSTs) are relayed to
/// the leader, where the operator is linked; a relayed request is never
/// relayed again; a dead member's share goes to the next URL.
#[test]
fn sessions_asked_of_a_follower_are_relayed_to_the_leader() {
    if !python_present() {
        eprintln!("skipped: the task's server needs python3 under /usr");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster::new_cluster(dir.path());
    let servers =
        common::cluster::start_three(&mut cluster, dir.path(), |c, data, index, extra| {
            c.start(data, index, extra)
        });
    let pki = Pki {
        dir: cluster.pki.clone(),
    };
    let token = cluster.token.trim().to_string();
    let urls: Vec<String> = servers.iter().map(|server| server.url.clone()).collect();
    let http = pki.client(Duration::from_secs(30));
    let submitted: Value = http
        .post(format!("{}/api/pool/default/workflow", urls[0]))
        .bearer_auth(&token)
        .json(&serde_json::json!({"file": SERVE}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = submitted["name"].as_str().expect("submitted").to_string();
    wait_task(&http, &urls[0], Some(&token), &id, "serve", "RUNNING");
    let members = cluster.members(&servers[0]);
    let leader_id = members["leader_id"].as_u64().expect("a leader");
    let leader_url = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["id"].as_u64() == Some(leader_id))
        .and_then(|member| member["api_url"].as_str())
        .expect("the leader's URL")
        .trim_end_matches('/')
        .to_string();
    let followers: Vec<usize> = (0..servers.len())
        .filter(|index| servers[*index].url.trim_end_matches('/') != leader_url)
        .collect();
    let (follower_index, other_follower) = (followers[0], followers[1]);
    let follower = &servers[follower_index];
    let env = [
        (
            "GANTRY_URL",
            format!("{},{}", follower.url, servers[other_follower].url),
        ),
        ("GANTRY_CA", pki.dir.join("ca.pem").display().to_string()),
        ("GANTRY_TOKEN", token.clone()),
        (
            "XDG_CONFIG_HOME",
            dir.path().join("no-config").display().to_string(),
        ),
    ];

    // Gantry's CLI, told only the follower's URL.
    let forward = Forward::start(&env, &id, "serve", 7000);
    wait_serving(forward.port);
    many_connections_each_get_their_own_bytes(forward.port);
    let output = Command::new(BINARY)
        .args(["workflow", "exec", &id, "serve", "--", "sh", "-c"])
        .arg("echo relayed; exit 5")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "relayed\n");
    let log = servers[follower_index].log();
    assert!(
        log.contains("session relayed to the leader"),
        "the follower relayed, not redirected:\n{log}"
    );

    // OSMO's ticket POST, which its CLI never redirects: the leader's
    // ticket comes back through the follower.
    let ticket: Value = http
        .post(format!(
            "{}/api/workflow/{id}/exec/task/serve?entry_command=sh",
            follower.url
        ))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let router = ticket["router_address"].as_str().unwrap_or_default();
    assert_eq!(
        router.trim_start_matches("wss://"),
        leader_url.trim_start_matches("https://"),
        "{ticket}"
    );

    // A request that says it was relayed already is not passed on again
    // (two members that each took the other for the leader would loop).
    let twice = http
        .get(format!(
            "{}/api/workflow/{id}/portforward/serve?port=7000",
            follower.url
        ))
        .bearer_auth(&token)
        .header("Connection", "upgrade")
        .header("Upgrade", UPGRADE)
        .header("gantry-relayed-by", "9")
        .send()
        .unwrap();
    assert_eq!(twice.status().as_u16(), 421);

    // An exec with `--keep-alive`, through the same member.
    let mut kept = Command::new(BINARY)
        .args(["workflow", "exec", &id, "serve", "--keep-alive", "-T", "--"])
        .args(["sh", "-c", "echo started; sleep 120"])
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, kept_lines) = std::sync::mpsc::channel();
    let kept_stdout = BufReader::new(kept.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in kept_stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let started = kept_lines.recv_timeout(Duration::from_secs(30));
    assert_eq!(started.as_deref(), Ok("started"));

    // The member the CLI used dies: new connections go through the next
    // URL it was given, relayed by that member; the exec runs again.
    let mut servers = servers;
    servers[follower_index].kill_now();
    wait_serving(forward.port);
    let again = kept_lines.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        again.as_deref(),
        Ok("started"),
        "--keep-alive ran the command again"
    );
    let _ = kept.kill();
    let kept_output = kept.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&kept_output.stderr);
    assert!(
        stderr.contains("reconnecting to the exec session"),
        "{stderr}"
    );
    let log = servers[other_follower].log();
    assert!(log.contains("session relayed to the leader"), "{log}");
}
