//! Attack probes against the local executor's sandbox, run as tasks through
//! `gantry dev` (real bubblewrap, cgroups, network namespaces): each must be
//! refused or killed, and the host left unchanged. They run as whatever user
//! runs the tests (root here and in CI); `probes_hold_for_an_unprivileged_operator`
//! runs the same kinds of probes with `gantry dev` itself unprivileged.
//!
//! The probes are shell and Python 3 (under `/usr`, the host's `/usr` being
//! what a task sees); without it they fail under `CI=true` and are skipped,
//! saying so, elsewhere.

mod common;

use common::{task_of, Api, DevServer};
use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(120);

/// Python 3 under `/usr` (what a task sees) and bubblewrap on the PATH.
fn python_present() -> bool {
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .any(|path| Path::new(path).exists());
    let bwrap = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("bwrap").is_file()));
    if python && bwrap {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the sandbox probes need python3 under /usr and bwrap on the PATH"
    );
    eprintln!("skipped: the sandbox probes need python3 under /usr and bwrap on the PATH");
    false
}

/// A one-task workflow running `script` under `sh -c`, with `resources`
/// (a YAML mapping, or empty) as its resource spec.
fn one_task(name: &str, resources: &str, script: &str) -> String {
    let resource = if resources.is_empty() {
        String::new()
    } else {
        format!("  resources:\n    default:\n{resources}")
    };
    format!(
        "workflow:\n  name: {name}\n{resource}  tasks:\n  - name: probe\n    image: ubuntu\n    command: [sh, -c]\n    args:\n    - |\n{}",
        indent(script, 6)
    )
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// The task lines of a workflow's log (`[task] text` → `text`).
fn task_lines(api: &Api, id: &str, task: &str) -> Vec<String> {
    let reply = api.get(&format!("/api/workflow/{id}/logs"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let prefix = format!("[{task}] ");
    reply
        .body
        .lines()
        .filter_map(|line| line.split_once(&prefix).map(|(_, text)| text.to_string()))
        .collect()
}

struct Finished {
    workflow: Value,
    task: Value,
    lines: Vec<String>,
}

impl Finished {
    fn status(&self) -> &str {
        self.task["status"].as_str().unwrap_or_default()
    }

    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.workflow, self.lines.join("\n"))
    }
}

fn finish(api: &Api, id: &str) -> Finished {
    let workflow = api.wait_finished(id, FINISH);
    let task = task_of(&workflow, "probe").unwrap_or_default();
    let lines = task_lines(api, id, "probe");
    Finished {
        workflow,
        task,
        lines,
    }
}

/// The probe that reaches the kernel through `open_by_handle_at` and
/// `name_to_handle_at` (the way out of a bind mount to the host's `/`).
fn handle_probe() -> String {
    format!(
        "python3 - <<'END'\n\
import ctypes, os\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
buf = ctypes.create_string_buffer(128 + 8)\n\
ctypes.memmove(buf, (128).to_bytes(4, 'little'), 4)\n\
mount_id = ctypes.c_int()\n\
r = libc.syscall({name}, -100, b'/usr', buf, ctypes.byref(mount_id), 0)\n\
print('name_to_handle_at=%d %s' % (r, os.strerror(ctypes.get_errno())))\n\
fd = os.open('/usr', os.O_RDONLY)\n\
r = libc.syscall({open}, fd, buf, os.O_RDONLY)\n\
print('open_by_handle_at=%d %s' % (r, os.strerror(ctypes.get_errno())))\n\
END",
        name = libc::SYS_name_to_handle_at,
        open = libc::SYS_open_by_handle_at,
    )
}

const NETWORK_PROBE: &str = r#"python3 - <<'END'
import socket
for name, port in (('host_port', HOST_PORT), ('api_port', API_PORT)):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(('127.0.0.1', port))
        print(name + '=connected')
    except OSError as e:
        print(name + '=' + type(e).__name__)
END
cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\n' ' ' | sed 's/^/interfaces=/'; echo
"#;

const PIDS_PROBE: &str = r#"python3 - <<'END'
import os, time
started = 0
try:
    for _ in range(2000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
except OSError as e:
    print('fork_refused=' + os.strerror(e.errno))
print('started=%d' % started)
END
"#;

#[test]
fn the_sandbox_holds_against_the_attack_probes() {
    if !python_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let host_listener = TcpListener::bind("127.0.0.1:0").expect("listen on the host's loopback");
    host_listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let host_port = host_listener.local_addr().expect("port").port();
    let api_port = server
        .url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let marker = format!("gantry-probe-{}", std::process::id());
    let shadow_before = std::fs::read("/etc/shadow").unwrap_or_default();

    // Identity, capabilities, mounts and host files.
    let escape = api.submit_ok(&one_task(
        "escape",
        "",
        &format!(
            "echo uid=$(id -u) gid=$(id -g)\n\
             grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'\n\
             mount -o remount,rw /usr 2>/dev/null; echo remount_usr=$?\n\
             mount -o remount,rw /etc 2>/dev/null; echo remount_etc=$?\n\
             mount -t tmpfs none /tmp 2>/dev/null; echo mount_tmpfs=$?\n\
             touch /usr/{marker} 2>/dev/null; echo write_usr=$?\n\
             cat /etc/shadow >/dev/null 2>&1; echo read_shadow=$?\n\
             ls /etc | tr '\\n' ' ' | sed 's/^/etc=/'; echo\n\
             unshare -U -r true 2>/dev/null; echo unshare_user=$?\n\
             unshare -n true 2>/dev/null; echo unshare_net=$?\n\
             {handle}\n",
            handle = handle_probe()
        ),
    ));
    // The host's loopback: a port of this test, and the API of `gantry dev`.
    let network = api.submit_ok(&one_task(
        "network",
        "",
        &NETWORK_PROBE
            .replace("HOST_PORT", &host_port.to_string())
            .replace("API_PORT", &api_port),
    ));
    // 2,000 processes on a task of one CPU (1,024 processes at most).
    let pids = api.submit_ok(&one_task(
        "pids",
        "      cpu: 1\n      memory: 512Mi\n      storage: 64Mi\n",
        PIDS_PROBE,
    ));
    // 1.5 GiB on a task of 16 MiB.
    let memory = api.submit_ok(&one_task(
        "memory",
        "      cpu: 1\n      memory: 16Mi\n      storage: 64Mi\n",
        "python3 -c 'b = bytearray(1536 << 20); b[::4096] = b\"x\" * len(b[::4096]); print(\"allocated\")'\n",
    ));
    // Writes past the storage bound: /tmp (a sized tmpfs), then the output.
    let storage = api.submit_ok(&one_task(
        "storage",
        "      cpu: 1\n      memory: 512Mi\n      storage: 64Mi\n",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=256 2>/dev/null; echo tmp_write=$?\n\
         echo tmp_bytes=$(stat -c %s /tmp/fill)\n\
         rm -f /tmp/fill\n\
         dd if=/dev/zero of=/osmo/data/output/fill bs=1M count=256 2>/dev/null; echo output_write=$?\n\
         sleep 30; echo not_evicted\n",
    ));

    let escape = finish(&api, &escape);
    assert_eq!(escape.status(), "COMPLETED", "{escape:?}");
    assert!(escape.has("uid=1000 gid=1000"), "{escape:?}");
    for (key, value) in [
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ] {
        assert_eq!(escape.value(key), Some(value), "{key}: {escape:?}");
    }
    for refused in [
        "remount_usr",
        "remount_etc",
        "mount_tmpfs",
        "write_usr",
        "read_shadow",
        "unshare_user",
        "unshare_net",
    ] {
        assert_ne!(escape.value(refused), Some("0"), "{refused}: {escape:?}");
        assert!(escape.value(refused).is_some(), "{refused}: {escape:?}");
    }
    for call in ["name_to_handle_at", "open_by_handle_at"] {
        assert_eq!(
            escape.value(call),
            Some("-1 Operation not permitted"),
            "{call}: {escape:?}"
        );
    }
    let etc = escape.value("etc").unwrap_or_default();
    assert!(
        etc.contains("passwd") && etc.contains("resolv.conf"),
        "{etc}"
    );
    for secret in ["shadow", "gshadow", "sudoers"] {
        assert!(!etc.split(' ').any(|entry| entry == secret), "{etc}");
    }
    assert!(!Path::new(&format!("/usr/{marker}")).exists());
    assert_eq!(
        std::fs::read("/etc/shadow").unwrap_or_default(),
        shadow_before
    );

    let network = finish(&api, &network);
    assert_eq!(network.status(), "COMPLETED", "{network:?}");
    assert_eq!(
        network.value("host_port"),
        Some("ConnectionRefusedError"),
        "{network:?}"
    );
    assert_eq!(
        network.value("api_port"),
        Some("ConnectionRefusedError"),
        "{network:?}"
    );
    assert_eq!(network.value("interfaces"), Some("lo "), "{network:?}");
    let mut reached = 0;
    while let Ok((mut stream, _)) = host_listener.accept() {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        reached += 1;
    }
    assert_eq!(reached, 0, "a task reached the host's loopback");

    let pids = finish(&api, &pids);
    assert_eq!(pids.status(), "COMPLETED", "{pids:?}");
    assert_eq!(
        pids.value("fork_refused"),
        Some("Resource temporarily unavailable"),
        "{pids:?}"
    );
    let started: u32 = pids
        .value("started")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(started < 1024, "{started} processes started: {pids:?}");

    let memory = finish(&api, &memory);
    assert_eq!(memory.status(), "FAILED_EVICTED", "{memory:?}");
    assert_eq!(memory.task["exit_code"], 3004, "{memory:?}");
    let message = memory.task["failure_message"].as_str().unwrap_or_default();
    assert!(message.contains("OOMKilled"), "{message}");
    assert!(!memory.has("allocated"), "{memory:?}");

    let storage = finish(&api, &storage);
    assert_eq!(storage.status(), "FAILED_EVICTED", "{storage:?}");
    assert_eq!(storage.task["exit_code"], 3004, "{storage:?}");
    assert_ne!(storage.value("tmp_write"), Some("0"), "{storage:?}");
    let tmp_bytes: u64 = storage
        .value("tmp_bytes")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(tmp_bytes <= 64 << 20, "{tmp_bytes} bytes in /tmp");
    assert!(!storage.has("not_evicted"), "{storage:?}");
    let message = storage.task["failure_message"].as_str().unwrap_or_default();
    assert!(message.contains("storage limit"), "{message}");
    // Evicted as a pod is: its oversized output is not uploaded.
    let log = api
        .get(&format!(
            "/api/workflow/{}/logs",
            storage.workflow["name"].as_str().unwrap_or_default()
        ))
        .body;
    assert!(!log.contains("[upload]"), "{log}");

    // Nothing is left behind: task directories and cgroups are gone.
    let tasks_dir = server.data_dir.join("tasks");
    let left: Vec<_> = std::fs::read_dir(&tasks_dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "task directories left: {left:?}");
    assert_eq!(task_cgroups(server.pid()), Vec::<String>::new());
}

/// Task cgroups of the executors in process `pid` (v1 or v2), by path.
fn task_cgroups(pid: u32) -> Vec<String> {
    let prefix = format!("gantry-{pid}-");
    let mut found = Vec::new();
    for entry in walk_dirs(Path::new("/sys/fs/cgroup"), 6) {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && !name.ends_with("-operator") {
            if let Ok(children) = std::fs::read_dir(&entry) {
                for child in children.filter_map(Result::ok) {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        found.push(child.path().display().to_string());
                    }
                }
            }
        }
    }
    found
}

fn walk_dirs(root: &Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.path());
                out.extend(walk_dirs(&entry.path(), depth - 1));
            }
        }
    }
    out
}

#[test]
fn a_group_shares_its_network_and_other_groups_do_not_reach_it() {
    if !python_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let port = 18000 + (std::process::id() % 1000) as u16;
    let spec = format!(
        r#"
workflow:
  name: groupnet
  groups:
  - name: talk
    tasks:
    - name: server
      lead: true
      image: ubuntu
      command: [python3, -c]
      args:
      - |
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', {port})); s.listen(8); s.settimeout(30)
        c, _ = s.accept(); c.sendall(b'hello from the group\n'); c.close()
        print('served')
    - name: client
      image: ubuntu
      command: [python3, -c]
      args:
      - |
        import socket, time
        for _ in range(100):
            try:
                c = socket.create_connection(('{{{{host:server}}}}', {port}), timeout=2)
                print('got=' + c.recv(100).decode().strip()); break
            except OSError:
                time.sleep(0.2)
  - name: other
    tasks:
    - name: outsider
      image: ubuntu
      command: [python3, -c]
      args:
      - |
        import socket, time
        results = set()
        for _ in range(20):
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
                results.add('connected')
            except OSError as e:
                results.add(type(e).__name__)
            time.sleep(0.2)
        print('outsider=' + ','.join(sorted(results)))
"#
    );
    let id = api.submit_ok(&spec);
    let workflow = api.wait_finished(&id, FINISH);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    let client = task_lines(&api, &id, "client");
    assert!(
        client.iter().any(|l| l == "got=hello from the group"),
        "{client:?}"
    );
    let outsider = task_lines(&api, &id, "outsider");
    assert!(
        outsider
            .iter()
            .any(|l| l == "outsider=ConnectionRefusedError"),
        "{outsider:?}"
    );
}

#[test]
fn probes_hold_for_an_unprivileged_operator() {
    if !python_present() || !nix_is_root() {
        return;
    }
    // `gantry dev` itself as nobody: bubblewrap unprivileged, no cgroups of
    // its own (the hierarchy is root's), a network namespace per task.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    std::fs::create_dir_all(&data).expect("data dir");
    for path in [dir.path(), data.as_path()] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown to nobody");
    }
    let server = DevServer::start_wrapped(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &data,
        &["dev", "--listen", "127.0.0.1:0"],
    );
    let api = server.client();
    let id = api.submit_ok(&one_task(
        "unprivileged",
        "",
        &format!(
            "echo uid=$(id -u)\n\
             grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'\n\
             mount -o remount,rw /usr 2>/dev/null; echo remount_usr=$?\n\
             cat /etc/shadow >/dev/null 2>&1; echo read_shadow=$?\n\
             {handle}\n\
             python3 -c \"import socket; s = socket.socket(); s.settimeout(2); print('api=' + str(s.connect_ex(('127.0.0.1', {api}))))\"\n",
            handle = handle_probe(),
            api = server.url.rsplit(':').next().unwrap_or_default(),
        ),
    ));
    let probe = finish(&api, &id);
    assert_eq!(probe.status(), "COMPLETED", "{probe:?}");
    assert_eq!(probe.value("uid"), Some("1000"), "{probe:?}");
    assert_eq!(probe.value("CapEff"), Some("0000000000000000"), "{probe:?}");
    assert_eq!(probe.value("NoNewPrivs"), Some("1"), "{probe:?}");
    assert_eq!(probe.value("Seccomp"), Some("2"), "{probe:?}");
    assert_ne!(probe.value("remount_usr"), Some("0"), "{probe:?}");
    assert_ne!(probe.value("read_shadow"), Some("0"), "{probe:?}");
    assert_eq!(
        probe.value("open_by_handle_at"),
        Some("-1 Operation not permitted"),
        "{probe:?}"
    );
    // ECONNREFUSED: the task has a loopback of its own.
    assert_eq!(probe.value("api"), Some("111"), "{probe:?}");
    // The executor's own lines are `[probe][osmo] ...`.
    let log = api.get(&format!("/api/workflow/{id}/logs")).body;
    assert!(
        log.contains("[probe][osmo] resource limits are not enforced"),
        "an unprivileged operator says it cannot limit: {log}"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn resources_become_the_task_cgroups_limits() {
    if !python_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let id = api.submit_ok(&one_task(
        "limits",
        "      cpu: 2\n      memory: 64Mi\n      storage: 32Mi\n",
        "df -B1 --output=size / /tmp | tail -n +2 | tr -d ' ' | tr '\\n' ' ' | sed 's/^/tmpfs=/'; echo\nsleep 60\n",
    ));
    api.wait_task(&id, "probe", "RUNNING", FINISH);
    // The task's cgroup(s), as the host sees them while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dirs = loop {
        let dirs = task_cgroups(server.pid());
        if !dirs.is_empty() || std::time::Instant::now() > deadline {
            break dirs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |file: &str| -> Option<String> {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(Path::new(d).join(file)).ok())
            .map(|text| text.trim().to_string())
    };
    if let Some(max) = read("cpu.max") {
        assert_eq!(max, "200000 100000");
        assert_eq!(read("memory.max").as_deref(), Some("67108864"));
    } else {
        assert_eq!(
            read("cpu.cfs_quota_us").as_deref(),
            Some("200000"),
            "{dirs:?}"
        );
        assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
    }
    assert_eq!(read("pids.max").as_deref(), Some("1024"));
    let procs = read("cgroup.procs").unwrap_or_default();
    assert!(!procs.is_empty(), "the sandbox runs inside: {dirs:?}");

    let reply = api.post(&format!("/api/workflow/{id}/cancel"), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let probe = finish(&api, &id);
    assert_eq!(
        probe.value("tmpfs"),
        Some(format!("{0} {0} ", 32 << 20).as_str()),
        "{probe:?}"
    );
    assert_eq!(task_cgroups(server.pid()), Vec::<String>::new());
}
