//! The systemd units and the server's `Type=notify` protocol.
//!
//! The units are checked with `systemd-analyze verify` (skipped, with the
//! reason printed, where systemd is not installed) and their `gantry`
//! flags against the binary's own `--help`. The notifications are checked
//! the way systemd receives them: the test binds a unix datagram socket,
//! starts real `gantry server` processes with `NOTIFY_SOCKET` (and
//! `WATCHDOG_USEC`) pointing at it, and reads what arrives.

mod common;

use common::notify::NotifySocket;
use common::{gantry_ok, repo_path, DevServer, BINARY};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UNITS: [&str; 2] = ["gantry-server.service", "gantry-operator.service"];

/// The `ExecStart=` command line of a unit, continuation lines joined.
fn exec_start(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_path(&format!("systemd/{unit}"))).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    };
    assert!(version.status.success());
    // verify checks that ExecStart's binary exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(repo_path(&format!("systemd/{unit}"))).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/gantry "), "{unit}");
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin/gantry", BINARY)).unwrap();
        paths.push(path);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verify failed:\n{stderr}");
    // Unknown keys and bad values are warnings with exit 0: none allowed.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(".service"))
        .collect();
    assert!(complaints.is_empty(), "verify complained:\n{stderr}");
}

#[test]
fn server_unit_uses_only_flags_the_server_has() {
    let words = exec_start("gantry-server.service");
    assert_eq!(words[..2], ["/usr/local/bin/gantry", "server"]);
    let help = Command::new(BINARY)
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&String> = words.iter().filter(|w| w.starts_with("--")).collect();
    assert!(flags.len() >= 6, "{flags:?}");
    for flag in flags {
        assert!(help_has(&help, flag), "`gantry server` has no {flag}");
    }
    // Flags in the env file (settings and comments) are the server's too.
    let env = std::fs::read_to_string(repo_path("systemd/server.env")).unwrap();
    for word in env.split(['=', ' ', '\n', ',', '(', ')']) {
        if word.starts_with("--") {
            assert!(help_has(&help, word), "server.env: no {word}");
        }
    }
}

#[test]
fn operator_unit_names_the_operator_flags() {
    let words = exec_start("gantry-operator.service");
    assert_eq!(words[..2], ["/usr/local/bin/gantry", "operator"]);
    let flags: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| w.starts_with("--"))
        .collect();
    for flag in [
        "--servers",
        "--backend",
        "--executor",
        "--token-file",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(flags.contains(&flag), "operator unit lacks {flag}");
    }
    let help = Command::new(BINARY)
        .args(["operator", "--help"])
        .output()
        .unwrap();
    if !help.status.success() {
        println!("SKIPPED (flags only): this build has no `gantry operator` command yet");
        return;
    }
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in flags {
        assert!(help_has(&help, flag), "`gantry operator` has no {flag}");
    }
}

fn spawn_server(args: &[String], data: &Path, notify: &Path, watchdog_usec: Option<u64>) -> Child {
    std::fs::create_dir_all(data).unwrap();
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("NOTIFY_SOCKET", notify)
        .env("GANTRY_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(usec) = watchdog_usec {
        command.env("WATCHDOG_USEC", usec.to_string());
    }
    command.spawn().expect("spawn gantry server")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn server_signals_ready_feeds_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut socket = NotifySocket::bind(dir.path());
    let args: Vec<String> = [
        "server",
        "--bootstrap",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    // 400 ms: the server pings every 200 ms.
    let server = Killed(spawn_server(
        &args,
        &dir.path().join("node"),
        &socket.path,
        Some(400_000),
    ));
    assert!(
        socket.wait_for("READY=1", Duration::from_secs(30)),
        "no READY=1; got {:?}",
        socket.messages()
    );
    let ready_at = Instant::now();
    // Feeding at half the timeout: about 10 pings in 2 s.
    while Instant::now() < ready_at + Duration::from_secs(2) {
        socket.wait_for("never", Duration::from_millis(200));
    }
    let pings = socket.count("WATCHDOG=1");
    assert!(
        (5..=30).contains(&pings),
        "{pings} WATCHDOG=1 in 2 s (expected about 10)"
    );
    assert!(socket
        .messages()
        .iter()
        .any(|m| m.contains("STATUS=serving")));

    let pid = server.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    assert!(
        socket.wait_for("STOPPING=1", Duration::from_secs(15)),
        "no STOPPING=1; got {:?}",
        socket.messages()
    );
}

#[test]
fn without_a_watchdog_the_server_sends_no_pings() {
    let dir = tempfile::tempdir().unwrap();
    let mut socket = NotifySocket::bind(dir.path());
    let args: Vec<String> = [
        "server",
        "--bootstrap",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let _server = Killed(spawn_server(
        &args,
        &dir.path().join("node"),
        &socket.path,
        None,
    ));
    assert!(socket.wait_for("READY=1", Duration::from_secs(30)));
    assert!(!socket.wait_for("WATCHDOG=1", Duration::from_secs(1)));
}

/// A port free on `ip` now (the address is this test's own, so nothing
/// else races for it).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_joining_server_is_ready_only_once_it_is_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_text = pki.to_str().unwrap();
    // Loopback addresses of this test only.
    let (ip_a, ip_b) = ("127.0.0.61", "127.0.0.62");
    gantry_ok(&["tls", "ca", "create", "--out", pki_text]);
    for (name, ip) in [("a", ip_a), ("b", ip_b)] {
        gantry_ok(&[
            "tls", "cert", "create", "--ca", pki_text, "--name", name, "--kind", "server", "--ip",
            ip, "--out", pki_text,
        ]);
    }
    let tls = |name: &str| -> Vec<String> {
        vec![
            "--tls-ca".into(),
            pki.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            pki.join(format!("{name}.pem")).display().to_string(),
            "--tls-key".into(),
            pki.join(format!("{name}-key.pem")).display().to_string(),
        ]
    };
    let peer_a = format!("{ip_a}:{}", free_port(ip_a));

    // B first: it keeps asking A, which is not up yet.
    let mut socket = NotifySocket::bind(dir.path());
    let mut args_b: Vec<String> = vec![
        "server".into(),
        "--listen".into(),
        format!("{ip_b}:0"),
        "--peer-listen".into(),
        format!("{ip_b}:0"),
        "--join".into(),
        peer_a.clone(),
    ];
    args_b.extend(tls("b"));
    args_b.extend(common::shared_store_flags(&dir.path().join("b")));
    let data_b = dir.path().join("b");
    let _b = Killed(spawn_server(
        &args_b,
        &data_b,
        &socket.path,
        Some(2_000_000),
    ));
    assert!(
        !socket.wait_for("READY=1", Duration::from_secs(3)),
        "READY=1 before there was a cluster to join: {:?}",
        socket.messages()
    );
    assert!(socket
        .messages()
        .iter()
        .any(|m| m.contains("STATUS=joining")));

    // A bootstraps the cluster; B gets in and only then says it is ready.
    let mut args_a: Vec<String> = vec![
        "server".into(),
        "--bootstrap".into(),
        "--listen".into(),
        format!("{ip_a}:0"),
        "--peer-listen".into(),
        peer_a.clone(),
    ];
    args_a.extend(tls("a"));
    args_a.extend(common::shared_store_flags(&dir.path().join("a")));
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let a = DevServer::start_with(&dir.path().join("a"), &args_a);
    assert!(
        socket.wait_for("READY=1", Duration::from_secs(60)),
        "B never said READY=1; got {:?}\nB's log:\n{}",
        socket.messages(),
        std::fs::read_to_string(data_b.with_extension("log")).unwrap_or_default()
    );
    // By then A lists B as a member.
    let token = std::fs::read_to_string(a.data_dir.join("bootstrap-admin-token")).unwrap();
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let members: serde_json::Value = http
        .get(format!("{}/api/cluster/members", a.url))
        .bearer_auth(token.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let peers: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["peer_address"].as_str())
        .collect();
    assert_eq!(peers.len(), 2, "{members}");
    assert!(peers.iter().any(|p| p.starts_with(ip_b)), "{members}");
}

/// Whether `--help` text lists `flag` (followed by its value or the line end).
fn help_has(help: &str, flag: &str) -> bool {
    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"))
}
