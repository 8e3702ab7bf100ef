//! Jinja rendering in a resource-limited child process, both sides of it.
//!
//! minijinja's fuel counts instructions, not bytes: `{% set a = a ~ a %}`
//! doubles memory per instruction, so a few dozen instructions can exhaust
//! the server's memory. OSMO renders in a sandboxed subprocess (0.5 s,
//! 100 MiB); this module does the same. The parent ([`render`]) spawns the
//! configured executable (the gantry binary) with [`RENDER_WORKER_ARG`],
//! writes one JSON [`Request`] to its stdin and reads one JSON [`Reply`]
//! from its stdout; the child ([`render_worker_main`]) renders with the same
//! in-process code and minijinja limits.
//!
//! Invariants:
//! - the child runs under `RLIMIT_AS` (address space), `RLIMIT_CPU` and no
//!   core dumps, set between fork and exec, and the parent kills it once
//!   the wall-clock limit passes, so a render can neither grow the server
//!   nor outlive its time limit by more than the poll interval;
//! - every way the child can end (limit, crash, timeout, garbage on stdout,
//!   failure to start) becomes a `Template` [`SpecError`]; nothing here
//!   panics on child output and the child is always reaped;
//! - the wire format carries the variables as YAML text, so non-string
//!   keys and tagged values reach the child exactly as parsed.

use super::defaults::LineMap;
use super::error::{SpecError, SpecErrorKind};
use super::jinja::{self, RenderLimits};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The hidden first argument that turns the gantry binary into a worker.
pub const RENDER_WORKER_ARG: &str = "__render-template";

/// Default address-space limit. Measured with `prlimit --as` on the debug
/// binary (the larger one): rendering `examples/templated.yaml` needs
/// 36 MiB of address space (15 MiB resident), a 1000-task render of
/// 3.4 MB, near the 4 MiB output cap, needs 46 MiB (25 MiB resident).
/// 512 MiB is over ten times that, for large requests and allocator
/// slack, while the doubling bomb of the module doc dies at its ~400 MB
/// step, about 0.5 s in.
pub const MEMORY_BYTES_MAX_DEFAULT: u64 = 512 << 20;

/// Default wall-clock limit; a normal render takes a few milliseconds.
pub const TIME_MAX_DEFAULT: Duration = Duration::from_secs(2);

/// Stderr kept for classifying a failure; the rest is drained and dropped.
const STDERR_BYTES_MAX: usize = 8 << 10;

/// What Rust's default allocation-error handler prints before aborting.
const ALLOC_FAILURE: &str = "memory allocation of";

/// How to run renders out of process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderIsolation {
    /// The program to run with [`RENDER_WORKER_ARG`]; normally
    /// `std::env::current_exe()`.
    pub executable: PathBuf,
    /// `RLIMIT_AS` of the child, in bytes.
    pub memory_bytes_max: u64,
    /// Wall-clock limit; `RLIMIT_CPU` is set just above it as a backstop.
    pub time_max: Duration,
}

impl RenderIsolation {
    pub fn new(executable: PathBuf) -> Self {
        RenderIsolation {
            executable,
            memory_bytes_max: MEMORY_BYTES_MAX_DEFAULT,
            time_max: TIME_MAX_DEFAULT,
        }
    }
}

/// Parent → child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Request {
    /// The spec body with special tokens already protected.
    body: String,
    /// The variables, as a YAML mapping.
    vars_yaml: String,
    limits: RenderLimits,
    /// How error lines map to the input's (absent from an older parent:
    /// body lines as they are).
    #[serde(default)]
    lines: LineMap,
}

/// Child → parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Reply {
    Rendered { text: String },
    Failed { kind: WireKind, message: String },
}

/// [`SpecErrorKind`] on the wire, kept apart so the error type stays free
/// of serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    NotYaml,
    Template,
    Usage,
    Invalid,
}

impl From<SpecErrorKind> for WireKind {
    fn from(kind: SpecErrorKind) -> Self {
        match kind {
            SpecErrorKind::NotYaml => WireKind::NotYaml,
            SpecErrorKind::Template => WireKind::Template,
            SpecErrorKind::Usage => WireKind::Usage,
            SpecErrorKind::Invalid => WireKind::Invalid,
        }
    }
}

impl From<WireKind> for SpecErrorKind {
    fn from(kind: WireKind) -> Self {
        match kind {
            WireKind::NotYaml => SpecErrorKind::NotYaml,
            WireKind::Template => SpecErrorKind::Template,
            WireKind::Usage => SpecErrorKind::Usage,
            WireKind::Invalid => SpecErrorKind::Invalid,
        }
    }
}

/// What the child renders: the protected body, its variables, its limits
/// and its line map.
type Job = (String, serde_yaml_ng::Mapping, RenderLimits, LineMap);

fn encode_request(
    body: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: RenderLimits,
    lines: LineMap,
) -> Result<Vec<u8>, SpecError> {
    let vars_yaml = serde_yaml_ng::to_string(vars)
        .map_err(|err| SpecError::template(format!("template variables: {err}")))?;
    let request = Request {
        body: body.to_string(),
        vars_yaml,
        limits,
        lines,
    };
    serde_json::to_vec(&request)
        .map_err(|err| SpecError::template(format!("template render request: {err}")))
}

fn decode_request(bytes: &[u8]) -> Result<Job, SpecError> {
    let request: Request = serde_json::from_slice(bytes)
        .map_err(|err| SpecError::template(format!("malformed render request: {err}")))?;
    let vars = serde_yaml_ng::from_str(&request.vars_yaml)
        .map_err(|err| SpecError::template(format!("malformed render variables: {err}")))?;
    Ok((request.body, vars, request.limits, request.lines))
}

fn encode_reply(result: &Result<String, SpecError>) -> Vec<u8> {
    let reply = match result {
        Ok(text) => Reply::Rendered { text: text.clone() },
        Err(err) => Reply::Failed {
            kind: err.kind.into(),
            // The render path sets no path; keep one if it ever does.
            message: err.to_string(),
        },
    };
    // Strings and unit variants always serialize; the fallback only keeps
    // this function total.
    serde_json::to_vec(&reply).unwrap_or_else(|_| {
        br#"{"status":"failed","kind":"template","message":"render reply could not be encoded"}"#
            .to_vec()
    })
}

fn decode_reply(bytes: &[u8]) -> Result<String, SpecError> {
    match serde_json::from_slice::<Reply>(bytes) {
        Ok(Reply::Rendered { text }) => Ok(text),
        Ok(Reply::Failed { kind, message }) => Err(SpecError::new(kind.into(), message)),
        Err(err) => Err(SpecError::template(format!(
            "template rendering returned a malformed reply: {err}"
        ))),
    }
}

/// The worker side: request on stdin, reply on stdout. Returns the exit
/// code: 0 once a reply (success or failure) is written, 1 if it cannot be.
pub fn render_worker_main() -> i32 {
    let mut input = Vec::new();
    let result = match io::stdin().lock().read_to_end(&mut input) {
        Ok(_) => decode_request(&input).and_then(|(body, vars, limits, lines)| {
            // Free the raw request before the render needs the memory.
            drop(std::mem::take(&mut input));
            // A panic would otherwise reach the parent as a bare exit code;
            // the default hook still prints it to stderr for diagnosis.
            std::panic::catch_unwind(|| jinja::render_protected(&body, &vars, limits, lines))
                .unwrap_or_else(|_| Err(SpecError::template("template rendering panicked")))
        }),
        Err(err) => Err(SpecError::template(format!(
            "render worker could not read its request: {err}"
        ))),
    };
    let reply = encode_reply(&result);
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&reply).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Renders an already protected `body` in a child process under the
/// limits of `isolation`.
pub fn render(
    body: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: RenderLimits,
    lines: LineMap,
    isolation: &RenderIsolation,
) -> Result<String, SpecError> {
    let request = encode_request(body, vars, limits, lines)?;
    // JSON escapes at most 6 bytes per byte (`\u0000`); more than that is
    // not a reply from our worker, and must not grow the server either.
    let reply_bytes_max = limits
        .output_bytes
        .saturating_mul(6)
        .saturating_add(64 << 10);
    let outcome = run_child(isolation, &request, reply_bytes_max)?;
    classify(outcome, isolation)
}

/// How the child ended and what it said.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: Captured,
    stderr: Vec<u8>,
    timed_out: bool,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

fn classify(outcome: Outcome, isolation: &RenderIsolation) -> Result<String, SpecError> {
    let memory = || {
        SpecError::template(format!(
            "template rendering exceeded its memory limit ({})",
            mebibytes(isolation.memory_bytes_max)
        ))
    };
    let time = || {
        SpecError::template(format!(
            "template rendering exceeded its time limit ({})",
            seconds(isolation.time_max)
        ))
    };
    if outcome.timed_out {
        return Err(time());
    }
    if outcome.stdout.overflowed {
        return Err(SpecError::template(
            "template rendering returned an oversized reply",
        ));
    }
    if outcome.status.success() {
        return decode_reply(&outcome.stdout.bytes);
    }
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    // Rust aborts on a failed allocation after printing this line, which
    // is how hitting RLIMIT_AS shows.
    if stderr.contains(ALLOC_FAILURE) {
        return Err(memory());
    }
    let signal = outcome
        .status
        .signal()
        .and_then(|raw| Signal::try_from(raw).ok());
    Err(match signal {
        Some(Signal::SIGXCPU) => time(),
        // RLIMIT_CPU's hard limit, or the kernel's OOM killer.
        Some(Signal::SIGKILL) => SpecError::template(format!(
            "template rendering was killed (over its memory limit of {} or its time limit of {})",
            mebibytes(isolation.memory_bytes_max),
            seconds(isolation.time_max)
        )),
        Some(signal) => SpecError::template(format!("template rendering crashed ({signal})")),
        None => SpecError::template(format!(
            "template rendering failed ({}): {}",
            outcome.status,
            first_line(&stderr)
        )),
    })
}

fn mebibytes(bytes: u64) -> String {
    // A mask rather than `is_multiple_of`, which is newer than the MSRV.
    if bytes & ((1 << 20) - 1) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|line| !line.trim().is_empty());
    line.unwrap_or("no diagnostics").chars().take(200).collect()
}

/// `RLIMIT_CPU` in whole seconds, rounded up and at least 1: a backstop
/// for when the parent is gone, not the primary time limit.
fn cpu_seconds(time_max: Duration) -> u64 {
    let whole = time_max.as_secs();
    let seconds = if time_max.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    seconds.max(1)
}

fn run_child(
    isolation: &RenderIsolation,
    request: &[u8],
    reply_bytes_max: usize,
) -> Result<Outcome, SpecError> {
    let mut command = Command::new(&isolation.executable);
    command
        .arg(RENDER_WORKER_ARG)
        // The worker needs nothing from the server's environment, and
        // should not see its secrets or hold its directories.
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let memory = isolation.memory_bytes_max;
    let cpu = cpu_seconds(isolation.time_max);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It calls setrlimit(2), a plain
    // system call that is async-signal-safe, takes its inputs by copy,
    // allocates nothing and builds its error from the raw errno.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_AS, memory, memory)?;
            // SIGXCPU at the soft limit, SIGKILL at the hard one.
            setrlimit(Resource::RLIMIT_CPU, cpu, cpu.saturating_add(1))?;
            // An abort on a failed allocation must not write a core file
            // of up to `memory` bytes.
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|err| {
        SpecError::template(format!(
            "template rendering could not start {}: {err}",
            isolation.executable.display()
        ))
    })?;
    let deadline = started + isolation.time_max;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    thread::scope(|scope| {
        // Separate threads so that neither side can block the other on a
        // full pipe, and so the deadline holds while they are blocked.
        // `Builder` rather than `scope.spawn`, which panics when the system
        // is out of threads.
        let (reply_tx, reply_rx) = mpsc::channel();
        let spawned = thread::Builder::new()
            .spawn_scoped(scope, move || {
                if let Some(mut stdin) = stdin {
                    // A child that dies early closes the pipe; its exit
                    // status tells why, so the write error adds nothing.
                    let _ = stdin.write_all(request);
                }
            })
            .and_then(|_| {
                thread::Builder::new().spawn_scoped(scope, move || {
                    let _ = reply_tx.send(read_stdout(stdout, reply_bytes_max));
                })
            })
            .and_then(|_| thread::Builder::new().spawn_scoped(scope, move || read_stderr(stderr)));
        let stderr_reader = match spawned {
            Ok(handle) => handle,
            Err(err) => {
                // Threads already started end once the child is gone.
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpecError::template(format!(
                    "template rendering could not start an I/O thread: {err}"
                )));
            }
        };

        let received = reply_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        if matches!(&received, Ok(captured) if captured.overflowed) {
            let _ = child.kill();
        }
        let (status, timed_out) = wait_until(&mut child, deadline)?;
        // After the child is gone its pipes are closed, so these finish.
        let stdout = match received {
            Ok(captured) => captured,
            Err(_) => reply_rx.recv().unwrap_or_default(),
        };
        let stderr = stderr_reader.join().unwrap_or_default();
        Ok(Outcome {
            status,
            stdout,
            stderr,
            timed_out,
        })
    })
}

/// Waits for `child` until `deadline`, then kills it; always reaps it.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<(ExitStatus, bool), SpecError> {
    let waited = |err: io::Error| {
        SpecError::template(format!("template rendering: waiting for the worker: {err}"))
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, false)),
            Ok(None) => {}
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(waited(err));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            // kill fails only if the child has already exited, which the
            // wait below then reports; either way it is reaped.
            let _ = child.kill();
            let status = child.wait().map_err(waited)?;
            return Ok((status, true));
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn read_stdout(stdout: Option<ChildStdout>, cap: usize) -> Captured {
    let Some(stdout) = stdout else {
        return Captured::default();
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    // A read error leaves what arrived; the exit status decides the rest.
    let _ = stdout.take(limit).read_to_end(&mut bytes);
    let overflowed = bytes.len() > cap;
    Captured { bytes, overflowed }
}

fn read_stderr(stderr: Option<ChildStderr>) -> Vec<u8> {
    let Some(mut stderr) = stderr else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    let _ = (&mut stderr)
        .take(STDERR_BYTES_MAX as u64)
        .read_to_end(&mut bytes);
    // Keep draining so a chatty child never blocks on a full pipe.
    let _ = io::copy(&mut stderr, &mut io::sink());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::{Mapping, Value};

    fn limits() -> RenderLimits {
        RenderLimits {
            fuel: 1000,
            output_bytes: 4096,
            recursion: 10,
        }
    }

    #[test]
    fn request_round_trips_with_odd_variables() {
        let vars: Mapping = serde_yaml_ng::from_str(
            "name: wf\n1: one\ntrue: yes\nlist: [1, 2.5, null]\nnested: {a: {b: c}}\ntagged: !t x\ntext: \"\\u0000\\ue000 \\\"q\\\"\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let body = "workflow: {{ name }}\u{E000}0\u{E001}\n";
        let lines = LineMap {
            cut_at: 2,
            cut_lines: 3,
        };
        let bytes = encode_request(body, &vars, limits(), lines).unwrap_or_else(|e| panic!("{e}"));
        let (got_body, got_vars, got_limits, got_lines) =
            decode_request(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got_body, body);
        assert_eq!(got_vars, vars);
        assert_eq!(got_limits, limits());
        assert_eq!(got_lines, lines);
    }

    #[test]
    fn a_request_without_a_line_map_keeps_body_lines() {
        let request = br#"{"body": "x", "vars_yaml": "{}", "limits": {"fuel": 1, "output_bytes": 1, "recursion": 1}}"#;
        let lines = decode_request(request).ok().map(|job| job.3);
        assert_eq!(lines, Some(LineMap::default()));
    }

    #[test]
    fn replies_round_trip() {
        let ok = encode_reply(&Ok("a: \"{{x}}\"\n\u{E000}1\u{E001}".to_string()));
        assert_eq!(
            decode_reply(&ok).ok().as_deref(),
            Some("a: \"{{x}}\"\n\u{E000}1\u{E001}")
        );
        let err = encode_reply(&Err(SpecError::template("template error: boom")));
        assert_eq!(
            decode_reply(&err).err(),
            Some(SpecError::template("template error: boom"))
        );
        let usage = encode_reply(&Err(SpecError::usage("u")));
        assert_eq!(
            decode_reply(&usage).err().map(|e| e.kind),
            Some(SpecErrorKind::Usage)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"null",
            b"{\"status\":\"rendered\"}",
            b"{\"status\":\"other\",\"text\":\"x\"}",
            b"\xff\xfe",
        ] {
            assert_eq!(
                decode_reply(bytes).err().map(|e| e.kind),
                Some(SpecErrorKind::Template)
            );
            assert!(decode_request(bytes).is_err());
        }
    }

    #[test]
    fn limit_formatting() {
        assert_eq!(mebibytes(512 << 20), "512 MiB");
        assert_eq!(mebibytes(1000), "1000 bytes");
        assert_eq!(seconds(Duration::from_secs(2)), "2 s");
        assert_eq!(seconds(Duration::from_millis(500)), "500 ms");
        assert_eq!(cpu_seconds(Duration::from_millis(500)), 1);
        assert_eq!(cpu_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(cpu_seconds(Duration::from_secs(2)), 2);
        assert_eq!(cpu_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn missing_executable_is_a_template_error() {
        let isolation = RenderIsolation::new(PathBuf::from("/nonexistent/gantry"));
        let err = render(
            "{{ 1 }}",
            &Mapping::new(),
            limits(),
            LineMap::default(),
            &isolation,
        )
        .err();
        assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
    }

    #[test]
    fn a_foreign_child_failing_is_a_template_error() {
        // `sh __render-template` finds no such script in `/`, ignores its
        // stdin and exits 127: classified, not a panic or a hang.
        let isolation = RenderIsolation::new(PathBuf::from("/bin/sh"));
        let err = render(
            "{{ 1 }}",
            &Mapping::new(),
            limits(),
            LineMap::default(),
            &isolation,
        )
        .err();
        assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
    }

    fn mapping(vars: &[(&str, Value)]) -> Mapping {
        vars.iter()
            .map(|(k, v)| (Value::String(k.to_string()), v.clone()))
            .collect()
    }

    #[test]
    fn worker_logic_matches_in_process() {
        // What the worker does with a request, minus the process.
        let vars = mapping(&[("n", Value::from(3))]);
        let body = "{% for i in range(n) %}{{ i }}{% endfor %}";
        let bytes = encode_request(body, &vars, limits(), LineMap::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let (b, v, l, m) = decode_request(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let reply = encode_reply(&jinja::render_protected(&b, &v, l, m));
        assert_eq!(decode_reply(&reply).ok().as_deref(), Some("012"));
    }

    /// The built gantry binary next to this test binary
    /// (`target/debug/deps/gantry-*` → `target/debug/gantry`); these tests
    /// need it up to date, so run `cargo build` first.
    fn gantry() -> Option<RenderIsolation> {
        let exe = std::env::current_exe().ok()?;
        let path = exe.parent()?.parent()?.join("gantry");
        if path.is_file() {
            Some(RenderIsolation::new(path))
        } else {
            eprintln!("skipped: no gantry binary at {}", path.display());
            None
        }
    }

    fn isolated_limits(isolation: RenderIsolation) -> super::super::SpecLimits {
        super::super::SpecLimits {
            render_isolation: Some(isolation),
            ..super::super::SpecLimits::default()
        }
    }

    fn prepare_with(text: &str, limits: &super::super::SpecLimits) -> Result<String, SpecError> {
        let input = super::super::SpecInput {
            text: text.to_string(),
            ..Default::default()
        };
        super::super::prepare(&input, limits).map(|prepared| prepared.rendered)
    }

    #[test]
    fn doubling_bomb_hits_the_memory_limit() {
        let Some(isolation) = gantry() else { return };
        // The bomb needs ~0.5 s of CPU (faulting in ~300 MB) alone, but on
        // a loaded 2-core machine running the other tests it can take over
        // the default 2 s, and then fails on time instead; give it room so
        // this checks the memory limit specifically.
        let limits = isolated_limits(RenderIsolation {
            time_max: Duration::from_secs(4),
            ..isolation
        });
        let bomb = format!(
            "workflow:\n  name: wf\n  pool: \"{{% set a = 'a' * 99999999 %}}{}{{{{ a|length }}}}\"\n",
            "{% set a = a ~ a %}".repeat(10)
        );
        let started = Instant::now();
        let err = prepare_with(&bomb, &limits).err();
        let elapsed = started.elapsed();
        assert_eq!(
            err.as_ref().map(|e| e.message.as_str()),
            Some("template rendering exceeded its memory limit (512 MiB)"),
            "{err:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        eprintln!("bomb rejected in {elapsed:?}");
    }

    #[test]
    fn long_loops_hit_fuel_or_the_time_limit() {
        let Some(isolation) = gantry() else { return };
        let body =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        // Default fuel stops it inside the worker, as in-process.
        let err = prepare_with(
            &format!("workflow:\n  name: wf\n  pool: \"{body}\"\n"),
            &isolated_limits(isolation.clone()),
        )
        .err();
        assert_eq!(err.as_ref().map(|e| e.kind), Some(SpecErrorKind::Template));
        assert!(
            err.as_ref()
                .is_some_and(|e| e.message.contains("fuel") || e.message.contains("limit")),
            "{err:?}"
        );
        // Without fuel, the wall clock stops it.
        let isolation = RenderIsolation {
            time_max: Duration::from_millis(500),
            ..isolation
        };
        let unlimited = RenderLimits {
            fuel: 1 << 40,
            ..limits()
        };
        let started = Instant::now();
        let err = render(
            body,
            &Mapping::new(),
            unlimited,
            LineMap::default(),
            &isolation,
        )
        .err();
        let elapsed = started.elapsed();
        assert_eq!(
            err.as_ref().map(|e| e.message.as_str()),
            Some("template rendering exceeded its time limit (500 ms)"),
            "{err:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[test]
    fn examples_render_identically_when_isolated() {
        let Some(isolation) = gantry() else { return };
        let isolated = isolated_limits(isolation);
        let in_process = super::super::SpecLimits::default();
        let texts = [
            include_str!("../../examples/templated.yaml"),
            include_str!("../../examples/hello.yaml"),
            "workflow:\n  name: \"{{ n }}-{{ '{{output}}' }}\"\n  tasks: [{name: t, image: i, command: ['{{output}}', '{{ input:0 }}']}]\ndefault-values: {n: 7}\n",
            "{{ undefined }}",
        ];
        for text in texts {
            let want = prepare_with(text, &in_process);
            let got = prepare_with(text, &isolated);
            assert_eq!(got, want, "{text}");
        }
    }
}
