//! `gantry workflow exec` end to end through `gantry dev`: the command runs
//! inside the running task's sandbox — its files, its PID namespace, its
//! user (uid 1000, no capability), its seccomp filters and cgroup, never
//! the host's files — with stdin, stdout and stderr apart and the exit
//! code passed back; with a terminal (driven through tmux, as a user
//! types) the window size follows, Ctrl-C reaches the command and the
//! shell's exit code comes back; a finished or unknown task is refused
//! with its status; the session ends when the task does.

mod common;

use common::{wait_for, DevServer, BINARY};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SLEEPER: &str = r#"workflow:
  name: shell
  tasks:
  - name: work
    image: ubuntu
    command: [sh, -c, 'echo from-the-task > /tmp/state; sleep 300']
  - name: done
    image: ubuntu
    command: ["true"]
"#;

/// Runs the CLI with `stdin` fed in; `(exit code, stdout, stderr)`.
fn exec(url: &str, config: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BINARY)
        .arg("workflow")
        .arg("exec")
        .args(args)
        .env("GANTRY_URL", url)
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start() -> (tempfile::TempDir, DevServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(SLEEPER);
    api.wait_task(&id, "work", "RUNNING", Duration::from_secs(90));
    api.wait_task(&id, "done", "COMPLETED", Duration::from_secs(90));
    // The task has written its file once its command runs.
    std::thread::sleep(Duration::from_millis(500));
    (dir, server, id)
}

#[test]
fn exec_runs_inside_the_task_as_the_task_with_streams_apart_and_its_exit_code() {
    let (dir, server, id) = start();
    let config = dir.path().join("no-config");
    let host_secret = dir.path().join("host-secret");
    std::fs::write(&host_secret, "host only").unwrap();
    let script = format!(
        "cat; cat /tmp/state; id -u; echo to-stderr >&2; \
         grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; \
         cat {secret} || echo no-host-file; \
         unshare -U true 2>/dev/null || echo no-namespaces; \
         test -d /proc/1 && echo sees-the-task-init; \
         echo \"$OSMO_TASK_NAME\"; exit 3",
        secret = host_secret.display()
    );
    let (code, stdout, stderr) = exec(
        &server.url,
        &config,
        &[&id, "work", "--", "sh", "-c", &script],
        "piped-in\n",
    );
    assert_eq!(code, 3, "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "piped-in",
            "from-the-task",
            "1000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "Seccomp:\t2",
            "no-host-file",
            "no-namespaces",
            "sees-the-task-init",
            "work",
        ],
        "stderr: {stderr}"
    );
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(!stdout.contains("to-stderr"));

    // `--entry` as OSMO's CLI gives it; success is exit code 0.
    let (code, stdout, _) = exec(
        &server.url,
        &config,
        &[&id, "work", "--entry", "sh -c 'echo \"a b\"'"],
        "",
    );
    assert_eq!((code, stdout.as_str()), (0, "a b\n"));

    // A finished task and an unknown one are refused with why.
    let (code, _, stderr) = exec(&server.url, &config, &[&id, "done", "--", "true"], "");
    assert_ne!(code, 0);
    assert!(stderr.contains("COMPLETED"), "{stderr}");
    let http = reqwest::blocking::Client::new();
    let base = format!("{}/api/workflow/{id}/exec/task", server.url);
    let unknown = http
        .get(format!("{base}/nope"))
        .header("Connection", "upgrade")
        .header("Upgrade", "gantry-exec")
        .send()
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let plain = http.get(format!("{base}/work")).send().unwrap();
    assert_eq!(plain.status().as_u16(), 426, "an exec needs the upgrade");
    let unquoted = http
        .get(format!("{base}/work?entry=sh%20-c%20%27oops"))
        .header("Connection", "upgrade")
        .header("Upgrade", "gantry-exec")
        .send()
        .unwrap();
    assert_eq!(unquoted.status().as_u16(), 400);
    let log = server.log();
    assert!(
        log.contains("exec session opening") && log.contains("task=work"),
        "every exec is logged with who and what:\n{log}"
    );
    // And recorded as events of the workflow: who, into which task, what.
    // A command with a line break of its own (probe: it once wrote a line
    // that read as an event of the task's).
    let (code, _, _) = exec(
        &server.url,
        &config,
        &[
            &id,
            "work",
            "--",
            "sh",
            "-c",
            "true\n2020/01/01 00:00:00 [work] FORGED",
        ],
        "",
    );
    assert_ne!(code, 0);
    let events = common::wait_for_events(
        &http,
        &server.url,
        None,
        &id,
        Some("work"),
        &[
            "EXEC: by anonymous: sh -c 'echo \"a b\"'",
            "true\\n2020/01/01 00:00:00 [work] FORGED",
        ],
    );
    assert!(
        !events.lines().any(|line| line.starts_with("2020/01/01")),
        "a command wrote an event line of its own:\n{events}"
    );
    assert!(
        events.contains("[work] EXEC: by anonymous: sh -c \"cat; cat /tmp/state;"),
        "{events}"
    );
    let running = events
        .find("[work] RUNNING")
        .expect("the task's own events");
    let first_exec = events.find("EXEC").expect("an exec event");
    assert!(running < first_exec, "in time order:\n{events}");

    // A session ends with its task: the command is killed with it.
    let mut long = Command::new(BINARY)
        .args(["workflow", "exec", &id, "work", "--", "sleep", "200"])
        .env("GANTRY_URL", &server.url)
        .env("XDG_CONFIG_HOME", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let cancel = http
        .post(format!("{}/api/workflow/{id}/cancel", server.url))
        .send()
        .unwrap();
    assert!(cancel.status().is_success());
    let started = Instant::now();
    let status = wait_for(
        Duration::from_secs(60),
        "the exec to end with the task",
        || {
            long.try_wait()
                .map_err(|error| error.to_string())?
                .ok_or_else(|| "still running".to_string())
        },
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_ne!(status.code(), Some(0), "{status:?}");
}

fn tmux_present() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The pane's text, trimmed of empty lines.
fn pane(socket: &str) -> String {
    let output = Command::new("tmux")
        .args(["-L", socket, "capture-pane", "-p", "-t", "exec"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tmux(socket: &str, args: &[&str]) {
    let status = Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "tmux {args:?}");
}

fn wait_pane(socket: &str, what: &str, wanted: &str) {
    wait_for(Duration::from_secs(30), what, || {
        let text = pane(socket);
        if text.contains(wanted) {
            Ok(())
        } else {
            Err(text)
        }
    });
}

#[test]
fn exec_with_a_terminal_follows_the_window_passes_ctrl_c_and_the_exit_code() {
    if !tmux_present() {
        assert!(
            std::env::var("CI").is_err(),
            "tmux is missing (CI installs it)"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let (dir, server, id) = start();
    let socket = format!("gantry-exec-{}", std::process::id());
    let command = format!(
        "GANTRY_URL={url} XDG_CONFIG_HOME={config} {bin} workflow exec {id} work --entry /bin/sh; echo EXITED=$?; sleep 60",
        url = server.url,
        config = dir.path().join("no-config").display(),
        bin = BINARY,
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "exec",
            "-x",
            "100",
            "-y",
            "30",
            &command,
        ],
    );
    let _cleanup = KillTmux(socket.clone());
    wait_pane(&socket, "the shell's prompt", "$");
    tmux(
        &socket,
        &[
            "send-keys",
            "-t",
            "exec",
            "stty size; [ -t 0 ] && echo on-a-terminal",
            "Enter",
        ],
    );
    wait_pane(&socket, "the first size", "30 100");
    wait_pane(&socket, "a terminal", "on-a-terminal");
    tmux(
        &socket,
        &["resize-window", "-t", "exec", "-x", "80", "-y", "20"],
    );
    std::thread::sleep(Duration::from_millis(500));
    tmux(&socket, &["send-keys", "-t", "exec", "stty size", "Enter"]);
    wait_pane(&socket, "the new size", "20 80");
    tmux(
        &socket,
        &["send-keys", "-t", "exec", "sleep 100; echo slept", "Enter"],
    );
    std::thread::sleep(Duration::from_millis(500));
    tmux(&socket, &["send-keys", "-t", "exec", "C-c"]);
    tmux(
        &socket,
        &["send-keys", "-t", "exec", "echo after-interrupt", "Enter"],
    );
    wait_pane(&socket, "Ctrl-C to stop the sleep", "after-interrupt");
    assert!(!pane(&socket).contains("\nslept"), "{}", pane(&socket));
    tmux(&socket, &["send-keys", "-t", "exec", "exit 5", "Enter"]);
    wait_pane(&socket, "the exit code", "EXITED=5");
}

struct KillTmux(String);

impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

fn rsync_present() -> bool {
    Command::new("rsync")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `gantry workflow rsync`: a tree up into the task and back, rsync's own
/// protocol over an exec session; a second upload moves only the file
/// that changed; without a task name, the first group's lead.
#[test]
fn rsync_moves_a_tree_both_ways_and_only_what_changed() {
    if !rsync_present() {
        assert!(
            std::env::var("CI").is_err(),
            "rsync is missing (CI installs it)"
        );
        eprintln!("skipped: rsync is not installed");
        return;
    }
    let (dir, server, id) = start();
    let config = dir.path().join("no-config");
    let local = dir.path().join("up");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    std::fs::write(local.join("a.txt"), "one").unwrap();
    std::fs::write(local.join("sub/b.txt"), "two").unwrap();
    std::fs::write(local.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let rsync = |args: &[&str]| {
        let output = Command::new(BINARY)
            .args(["workflow", "rsync"])
            .args(args)
            .env("GANTRY_URL", &server.url)
            .env("XDG_CONFIG_HOME", &config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "rsync {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let source = format!("{}/:/tmp/up", local.display());
    let first = rsync(&["upload", &id, "work", &source, "--stats", "--no-progress"]);
    assert!(
        first.contains("Number of regular files transferred: 3"),
        "{first}"
    );
    std::fs::write(local.join("a.txt"), "changed").unwrap();
    let second = rsync(&["upload", &id, "work", &source, "--stats", "--no-progress"]);
    assert!(
        second.contains("Number of regular files transferred: 1"),
        "{second}"
    );
    let (code, stdout, _) = exec(
        &server.url,
        &config,
        &[
            &id,
            "work",
            "--",
            "cat",
            "/tmp/up/a.txt",
            "/tmp/up/sub/b.txt",
        ],
        "",
    );
    assert_eq!((code, stdout.as_str()), (0, "changedtwo"));
    // Back down, naming no task: the first group's lead (`work`).
    let back = dir.path().join("down");
    rsync(&[
        "download",
        &id,
        &format!("/tmp/up/:{}", back.display()),
        "--no-progress",
    ]);
    assert_eq!(
        std::fs::read_to_string(back.join("a.txt")).unwrap(),
        "changed"
    );
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap().len(), 3 << 20);

    // OSMO's daemon: uploads again whenever the tree changes, listed by
    // `status`, ended by `stop`.
    let state = dir.path().join("state");
    let daemon_cli = |args: &[&str]| {
        let output = Command::new(BINARY)
            .args(["workflow", "rsync"])
            .args(args)
            .env("GANTRY_URL", &server.url)
            .env("XDG_CONFIG_HOME", &config)
            .env("XDG_STATE_HOME", &state)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "rsync {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // Stopped however the test ends.
    struct StopDaemons<F: Fn(&[&str]) -> String>(F);
    impl<F: Fn(&[&str]) -> String> Drop for StopDaemons<F> {
        fn drop(&mut self) {
            (self.0)(&["stop"]);
        }
    }
    let _stop = StopDaemons(daemon_cli);
    let daemon_cli = |args: &[&str]| (_stop.0)(args);
    let watched = format!("{}/:/tmp/watched", local.display());
    let started = daemon_cli(&[
        "upload",
        &id,
        "work",
        &watched,
        "--daemon",
        "--poll-interval",
        "0.2",
        "--debounce-delay",
        "0.2",
    ]);
    assert!(started.contains("rsync daemon"), "{started}");
    let remote_file = |name: &str| {
        let (code, stdout, _) = exec(
            &server.url,
            &config,
            &[&id, "work", "--", "cat", &format!("/tmp/watched/{name}")],
            "",
        );
        (code == 0)
            .then_some(stdout)
            .ok_or_else(|| format!("exit {code}"))
    };
    assert_eq!(
        wait_for(Duration::from_secs(30), "the first upload", || remote_file(
            "a.txt"
        )),
        "changed"
    );
    std::fs::write(local.join("new.txt"), "appeared").unwrap();
    assert_eq!(
        wait_for(Duration::from_secs(30), "the change uploaded", || {
            remote_file("new.txt")
        }),
        "appeared"
    );
    let status = daemon_cli(&["status"]);
    assert!(
        status.contains(&id) && status.contains("/tmp/watched") && status.contains("uploaded"),
        "{status}"
    );
    let stopped = daemon_cli(&["stop", &id]);
    assert!(stopped.contains("Stopped rsync daemon"), "{stopped}");
    assert!(daemon_cli(&["status"]).contains("No rsync daemon runs"));
}

/// OSMO's `exec --group`: the command in every running task of a group,
/// each line prefixed with its task; an interactive shell is refused, as
/// OSMO refuses it; a failing task's code is the command's.
#[test]
fn exec_into_a_group_runs_in_every_task_with_its_name_before_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(
        r#"workflow:
  name: pair
  groups:
  - name: shards
    tasks:
    - {name: one, lead: true, image: ubuntu, command: [sh, -c, 'echo 1 > /tmp/shard; sleep 300']}
    - {name: two, image: ubuntu, command: [sh, -c, 'echo 2 > /tmp/shard; sleep 300']}
"#,
    );
    for task in ["one", "two"] {
        api.wait_task(&id, task, "RUNNING", Duration::from_secs(90));
    }
    std::thread::sleep(Duration::from_millis(500));
    let config = dir.path().join("no-config");
    let (code, stdout, stderr) = exec(
        &server.url,
        &config,
        &[
            &id,
            "--group",
            "shards",
            "--",
            "sh",
            "-c",
            "cat /tmp/shard; echo done",
        ],
        "",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["[one] 1", "[one] done", "[two] 2", "[two] done"]);
    let (code, _, stderr) = exec(&server.url, &config, &[&id, "--group", "shards"], "");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("interactive commands are not supported"),
        "{stderr}"
    );
    let (code, _, _) = exec(
        &server.url,
        &config,
        &[
            &id,
            "--group",
            "shards",
            "--",
            "sh",
            "-c",
            "test \"$OSMO_TASK_NAME\" = one || exit 9",
        ],
        "",
    );
    assert_eq!(code, 9);
}

/// A hostile task sets `LD_PRELOAD` to a library on the host: the exec's
/// helper, privileged on the host until it joins the task, must never load
/// it (it starts with an empty environment and reads the task's for the
/// command only). The probe's "library" is not an ELF file, so a helper
/// that loads it says so ("invalid ELF header"); inside the task the path
/// does not exist, which the command may say instead.
#[test]
fn a_task_s_environment_never_reaches_the_privileged_helper() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.so");
    std::fs::write(&evil, vec![b'x'; 4096]).unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let spec = format!(
        "workflow:\n  name: preload\n  tasks:\n  - name: work\n    image: ubuntu\n    command: [sh, -c, 'echo ok > /tmp/ready; sleep 300']\n    environment: {{LD_PRELOAD: '{}'}}\n",
        evil.display()
    );
    let id = api.submit_ok(&spec);
    api.wait_task(&id, "work", "RUNNING", Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = exec(
        &server.url,
        &dir.path().join("no-config"),
        &[&id, "work", "--", "sh", "-c", "echo \"$LD_PRELOAD\""],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    // The command itself keeps the task's environment.
    assert_eq!(stdout.trim(), evil.display().to_string());
    assert!(!stderr.contains("invalid ELF header"), "{stderr}");
    assert!(!stderr.contains("file too short"), "{stderr}");
}
