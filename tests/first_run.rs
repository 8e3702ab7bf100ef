//! Setup and messages, tried as a new user would: `gantry dev FILE` with
//! its output redirected or on a terminal, a CLI with no server to talk
//! to, and a second process started on a data directory in use. Each
//! message names the thing and the reason, on one line, and never panics.

mod common;

use common::{DevServer, BINARY};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ESC: char = '\u{1b}';

fn hello() -> String {
    common::repo_path("examples/hello.yaml")
        .display()
        .to_string()
}

/// `gantry dev --data-dir DIR --listen 127.0.0.1:0 FILE`, with no config
/// from the environment that would change its output.
fn dev_command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg(hello())
        .env_remove("NO_COLOR")
        .env_remove("GANTRY_LOG")
        .env_remove("GANTRY_LOG_FORMAT")
        .stdin(Stdio::null());
    command
}

/// Runs `command` with its stderr on a new pseudo-terminal (stdout to
/// /dev/null); returns its exit code and what it wrote to the terminal.
fn on_a_terminal(mut command: Command) -> (i32, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the given integers;
    // the other arguments may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned only here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn gantry");
    // The child holds the terminal's only other end now.
    drop(command);
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        // Ends with EIO once the child (the last holder of the slave) exits.
        while let Ok(read) = master.read(&mut buffer) {
            if read == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let status = child.wait().expect("wait for gantry");
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// Redirected, `gantry dev FILE` writes plain text: no colour codes, and
/// the exit code as `exit_code=0`, not Rust's `Some(0)`. On a terminal the
/// logs are coloured, unless `NO_COLOR` is set.
#[test]
fn dev_colours_only_a_terminal_and_prints_plain_exit_codes() {
    let dir = tempfile::tempdir().unwrap();

    let output = dev_command(&dir.path().join("redirected"))
        .output()
        .expect("run gantry dev");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Hello from Gantry"), "{stdout}");
    assert!(!stdout.contains(ESC) && !stderr.contains(ESC), "{stderr}");
    assert!(stderr.contains("exit_code=0"), "{stderr}");
    assert!(!stderr.contains("Some("), "{stderr}");
    assert!(stderr.contains("hello-1: COMPLETED"), "{stderr}");

    let (code, terminal) = on_a_terminal(dev_command(&dir.path().join("terminal")));
    assert_eq!(code, 0, "{terminal}");
    assert!(
        terminal.contains(ESC),
        "no colour on a terminal:\n{terminal}"
    );
    assert!(!terminal.contains("Some("), "{terminal}");

    let mut command = dev_command(&dir.path().join("no-color"));
    command.env("NO_COLOR", "1");
    let (code, terminal) = on_a_terminal(command);
    assert_eq!(code, 0, "{terminal}");
    assert!(terminal.contains("exit_code=0"), "{terminal}");
    assert!(
        !terminal.contains(ESC),
        "colour despite NO_COLOR:\n{terminal}"
    );
}

/// A loopback URL nothing listens on.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// With no server there, the CLI says so on one line: each URL tried
/// once, why, and what to do.
#[test]
fn a_refused_connection_names_the_urls_once_with_a_hint() {
    let dead = refused_url();
    let (code, stdout, stderr) = common::cli(&dead, &["workflow", "list"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: cannot connect to {dead} (connection refused): is a gantry server running there? set --url or GANTRY_URL\n"
        )
    );

    let other = refused_url();
    let (code, _, stderr) = common::cli(&format!("{dead},{other}"), &["pool", "list"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches(&dead).count(), 1, "{stderr}");
    assert_eq!(stderr.matches(&other).count(), 1, "{stderr}");
    assert!(
        stderr.contains("is a gantry server running at any of them? set --url or GANTRY_URL"),
        "{stderr}"
    );
}

/// Runs `gantry ARGS --data-dir DIR` and waits (at most 60 s) for it to
/// stop by itself; returns (exit code, stderr).
fn refused_start(args: &[&str], data_dir: &Path) -> (i32, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gantry");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gantry {args:?} kept running on a data directory in use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

/// A second `gantry dev` or `gantry server` on a data directory in use is
/// refused before it opens anything, naming the directory and the process
/// using it; the first keeps serving, and once it stops the directory is
/// free again.
#[test]
fn a_second_process_on_a_data_directory_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = DevServer::start(&data);
    let api = first.client();
    assert_eq!(api.get("/api/version").status, 200);
    let holder = std::fs::read_to_string(data.join("gantry.lock")).unwrap();
    let holder = holder.trim();
    assert!(holder.parse::<u32>().is_ok(), "{holder:?}");

    for args in [
        &["dev", "--listen", "127.0.0.1:0"][..],
        // The default port too: the data directory is named first.
        &["dev"][..],
        &["server", "--bootstrap", "--listen", "127.0.0.1:0"][..],
    ] {
        let (code, stderr) = refused_start(args, &data);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: another gantry process is using {} (pid {holder}, running as gantry, holds {}); stop it first\n",
                data.display(),
                data.join("gantry.lock").display()
            ),
            "{args:?}"
        );
    }
    assert_eq!(api.get("/api/version").status, 200);
    let id = api.submit_ok(&std::fs::read_to_string(hello()).unwrap());
    api.wait_finished(&id, Duration::from_secs(60));

    // Stopped (or killed), it leaves the directory to the next process.
    first.kill9();
    let second = DevServer::start(&data);
    let workflow = second.client().workflow(&id);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    second.stop();
}

/// OSMO's backend operators open WebSockets at `/api/agent/listener/...`
/// and `/api/agent/worker/...`; Gantry's operator stream replaces them, so
/// such an operator is not let in, and the README says so plainly with
/// the migration path.
#[test]
fn an_osmo_backend_operator_cannot_connect_and_the_readme_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("data"));
    let http = reqwest::blocking::Client::new();
    for path in [
        "/api/agent/listener/pod/backend/k8s",
        "/api/agent/worker/backend/k8s",
    ] {
        let response = http
            .get(format!("{}{path}", server.url))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .unwrap();
        let status = response.status().as_u16();
        assert!(status != 101 && status >= 400, "{path}: {status}");
    }
    let readme = std::fs::read_to_string(common::repo_path("README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        "existing OSMO backend operators cannot connect to Gantry",
        "The migration path is Gantry's own operator, `gantry operator`",
    ] {
        assert!(readme.contains(said), "README does not say: {said}");
    }
}
