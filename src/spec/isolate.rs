//! The spec pipeline ([`super::prepare`]) in a resource-limited child
//! process, both sides of it.
//!
//! minijinja's fuel counts instructions, not bytes: `{% set a = a ~ a %}`
//! doubles memory per instruction, so a few dozen instructions can exhaust
//! the server's memory; and reading YAML costs time and memory that grow
//! with the text. OSMO renders in a sandboxed subprocess (0.5 s, 100 MiB);
//! this module does the same for rendering and parsing together. The parent
//! ([`prepare`]) spawns the configured executable (the gantry binary) with
//! [`RENDER_WORKER_ARG`], writes one JSON [`Request`] (the input and the
//! limits) to its stdin and reads one JSON [`Reply`] (the prepared spec or
//! the error) from its stdout; the child ([`render_worker_main`]) runs the
//! same in-process code.
//!
//! Invariants:
//! - the child runs under `RLIMIT_AS` (address space), `RLIMIT_CPU` and no
//!   core dumps, set between fork and exec, and the parent kills it once
//!   the wall-clock limit passes or the caller cancels (a client that left),
//!   so the work can neither grow the server nor outlive its time limit or
//!   its caller by more than the poll interval;
//! - every way the child can end (limit, crash, timeout, garbage on stdout,
//!   failure to start) becomes a `Template` [`SpecError`]; nothing here
//!   panics on child output and the child is always reaped;
//! - the child never spawns a child of its own (its limits have no
//!   isolation), and its answer is exactly what [`super::prepare`] gives
//!   in-process for the same input and limits.

use super::error::{SpecError, SpecErrorKind};
use super::input::{RenderIsolation, SpecInput, SpecLimits};
use super::Prepared;
use gantry_storage::extras::WorkflowExtras;
use gantry_storage::plan::WorkflowPlan;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The hidden first argument that turns the gantry binary into a worker.
pub const RENDER_WORKER_ARG: &str = "__render-template";

/// Longest pause between looks at the child, the deadline and a cancel.
const POLL_MAX: Duration = Duration::from_millis(20);

/// How much nicer than the server a worker runs: a flood of submits then
/// costs the workers' CPU time, never the server's Raft heartbeats (starved
/// heartbeats cost the cluster its leader, and every write with it).
const WORKER_NICENESS_INCREMENT: i32 = 10;

/// Stderr kept for classifying a failure; the rest is drained and dropped.
const STDERR_BYTES_MAX: usize = 8 << 10;

/// What Rust's default allocation-error handler prints before aborting.
const ALLOC_FAILURE: &str = "memory allocation of";

/// Parent → child: the whole `prepare` call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    input: SpecInput,
    /// Without `render_isolation` (skipped): the child works in-process.
    limits: SpecLimits,
}

/// Child → parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Reply {
    Prepared {
        name: String,
        rendered: String,
        plan: Result<WorkflowPlan, WireError>,
        warnings: Vec<String>,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        declared_pool: Option<String>,
        #[serde(default)]
        extras: WorkflowExtras,
    },
    Failed {
        error: WireError,
    },
}

/// [`SpecError`] on the wire, kept apart so the error type stays free of
/// serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireError {
    kind: WireKind,
    #[serde(default)]
    path: Option<String>,
    message: String,
}

impl From<SpecError> for WireError {
    fn from(error: SpecError) -> Self {
        WireError {
            kind: error.kind.into(),
            path: error.path,
            message: error.message,
        }
    }
}

impl From<WireError> for SpecError {
    fn from(error: WireError) -> Self {
        SpecError {
            kind: error.kind.into(),
            path: error.path,
            message: error.message,
        }
    }
}

/// [`SpecErrorKind`] on the wire.
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

fn encode_request(input: &SpecInput, limits: &SpecLimits) -> Result<Vec<u8>, SpecError> {
    let request = Request {
        input: input.clone(),
        limits: SpecLimits {
            render_isolation: None,
            ..limits.clone()
        },
    };
    serde_json::to_vec(&request)
        .map_err(|err| SpecError::template(format!("spec preparation request: {err}")))
}

fn decode_request(bytes: &[u8]) -> Result<Request, SpecError> {
    let mut request: Request = serde_json::from_slice(bytes)
        .map_err(|err| SpecError::template(format!("malformed spec preparation request: {err}")))?;
    // Never nest: the child is the isolation.
    request.limits.render_isolation = None;
    Ok(request)
}

fn encode_reply(result: &Result<Prepared, SpecError>) -> Vec<u8> {
    let reply = match result {
        Ok(prepared) => Reply::Prepared {
            name: prepared.name.clone(),
            rendered: prepared.rendered.clone(),
            plan: prepared.plan.clone().map_err(WireError::from),
            warnings: prepared.warnings.clone(),
            labels: prepared.labels.clone(),
            declared_pool: prepared.declared_pool.clone(),
            extras: prepared.extras.clone(),
        },
        Err(err) => Reply::Failed {
            error: err.clone().into(),
        },
    };
    serde_json::to_vec(&reply).unwrap_or_else(|_| {
        br#"{"status":"failed","error":{"kind":"template","message":"spec preparation reply could not be encoded"}}"#
            .to_vec()
    })
}

fn decode_reply(bytes: &[u8]) -> Result<Prepared, SpecError> {
    match serde_json::from_slice::<Reply>(bytes) {
        Ok(Reply::Prepared {
            name,
            rendered,
            plan,
            warnings,
            labels,
            declared_pool,
            extras,
        }) => Ok(Prepared {
            name,
            rendered,
            plan: plan.map_err(SpecError::from),
            extras,
            warnings,
            labels,
            declared_pool,
        }),
        Ok(Reply::Failed { error }) => Err(error.into()),
        Err(err) => Err(SpecError::template(format!(
            "spec preparation returned a malformed reply: {err}"
        ))),
    }
}

/// The worker side: request on stdin, reply on stdout. Returns the exit
/// code: 0 once a reply (success or failure) is written, 1 if it cannot be.
pub fn render_worker_main() -> i32 {
    let mut input = Vec::new();
    let result = match io::stdin().lock().read_to_end(&mut input) {
        Ok(_) => decode_request(&input).and_then(|request| {
            // Free the raw request before the work needs the memory.
            drop(std::mem::take(&mut input));
            // A panic would otherwise reach the parent as a bare exit code;
            // the default hook still prints it to stderr for diagnosis.
            std::panic::catch_unwind(|| super::prepare_here(&request.input, &request.limits))
                .unwrap_or_else(|_| Err(SpecError::template("spec preparation panicked")))
        }),
        Err(err) => Err(SpecError::template(format!(
            "spec worker could not read its request: {err}"
        ))),
    };
    let reply = encode_reply(&result);
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&reply).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Runs [`super::prepare`] in a child process under the limits of
/// `isolation`; `cancel` (the caller left) kills it.
pub fn prepare(
    input: &SpecInput,
    limits: &SpecLimits,
    isolation: &RenderIsolation,
    cancel: &CancellationToken,
) -> Result<Prepared, SpecError> {
    let request = encode_request(input, limits)?;
    // JSON escapes at most 6 bytes per byte (`\u0000`); the reply holds the
    // rendered text and a plan of about its size. More than that is not a
    // reply from our worker, and must not grow the server either.
    let reply_bytes_max = limits
        .template_output_bytes
        .max(input.text.len())
        .saturating_mul(12)
        .saturating_add(64 << 10);
    let outcome = run_child(isolation, &request, reply_bytes_max, cancel)?;
    classify(outcome, isolation)
}

/// How the child ended and what it said.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: Captured,
    stderr: Vec<u8>,
    ended: Ended,
}

/// Why the wait for the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited,
    TimedOut,
    Cancelled,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    overflowed: bool,
}

fn classify(outcome: Outcome, isolation: &RenderIsolation) -> Result<Prepared, SpecError> {
    let memory = || {
        SpecError::template(format!(
            "reading the spec exceeded its memory limit ({})",
            mebibytes(isolation.memory_bytes_max)
        ))
    };
    let time = || {
        SpecError::template(format!(
            "reading the spec exceeded its time limit ({})",
            seconds(isolation.time_max)
        ))
    };
    match outcome.ended {
        Ended::Exited => {}
        Ended::TimedOut => return Err(time()),
        Ended::Cancelled => {
            return Err(SpecError::template(
                "reading the spec was cancelled: its caller left",
            ))
        }
    }
    if outcome.stdout.overflowed {
        return Err(SpecError::template(
            "reading the spec returned an oversized reply",
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
            "reading the spec was killed (over its memory limit of {} or its time limit of {})",
            mebibytes(isolation.memory_bytes_max),
            seconds(isolation.time_max)
        )),
        Some(signal) => SpecError::template(format!("reading the spec crashed ({signal})")),
        None => SpecError::template(format!(
            "reading the spec failed ({}): {}",
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

/// The worker's limits, set from outside (prlimit(2), setpriority(2)):
/// address space, CPU time (SIGXCPU at the soft limit, SIGKILL at the hard
/// one) and no core file (an abort on a failed allocation must not write
/// one of up to the memory limit's size).
fn limit_worker(pid: u32, isolation: &RenderIsolation) -> Result<(), nix::errno::Errno> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    let memory = isolation.memory_bytes_max;
    let cpu = cpu_seconds(isolation.time_max);
    for (resource, soft, hard) in [
        (libc::RLIMIT_AS, memory, memory),
        (libc::RLIMIT_CPU, cpu, cpu.saturating_add(1)),
        (libc::RLIMIT_CORE, 0, 0),
    ] {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: prlimit(2) reads `limit`, a live value, and is given no
        // pointer to write to.
        let result = unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) };
        if result != 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    // Best effort: a worker that cannot be made nicer still runs.
    // SAFETY: getpriority/setpriority(2) take plain integers.
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(
            libc::PRIO_PROCESS,
            pid as libc::id_t,
            current.saturating_add(WORKER_NICENESS_INCREMENT),
        );
    }
    Ok(())
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
    cancel: &CancellationToken,
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
    // Spawned without a `pre_exec` hook, so the standard library uses
    // posix_spawn (a vfork) rather than a fork of the whole server, whose
    // page tables a busy server would copy on every submit; the limits are
    // set on the child right after, before it is sent the spec: the worker
    // touches nothing of the caller's until then.
    let started = Instant::now();
    let mut child = command.spawn().map_err(|err| {
        SpecError::template(format!(
            "reading the spec could not start {}: {err}",
            isolation.executable.display()
        ))
    })?;
    if let Err(errno) = limit_worker(child.id(), isolation) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(SpecError::template(format!(
            "reading the spec could not limit its worker: {errno}"
        )));
    }
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
                    "reading the spec could not start an I/O thread: {err}"
                )));
            }
        };

        // The reply, awaited in short slices so a cancel is seen promptly.
        let received = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reply_rx.recv_timeout(left.min(POLL_MAX)) {
                Err(mpsc::RecvTimeoutError::Timeout)
                    if !left.is_zero() && !cancel.is_cancelled() => {}
                received => break received,
            }
        };
        if matches!(&received, Ok(captured) if captured.overflowed) {
            let _ = child.kill();
        }
        let (status, ended) = wait_until(&mut child, deadline, cancel)?;
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
            ended,
        })
    })
}

/// Waits for `child` until `deadline` or a cancel, then kills it; always
/// reaps it.
fn wait_until(
    child: &mut Child,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(ExitStatus, Ended), SpecError> {
    let waited = |err: io::Error| {
        SpecError::template(format!("reading the spec: waiting for the worker: {err}"))
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, Ended::Exited)),
            Ok(None) => {}
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(waited(err));
            }
        }
        let now = Instant::now();
        let ended = if cancel.is_cancelled() {
            Some(Ended::Cancelled)
        } else if now >= deadline {
            Some(Ended::TimedOut)
        } else {
            None
        };
        if let Some(ended) = ended {
            // kill fails only if the child has already exited, which the
            // wait below then reports; either way it is reaped.
            let _ = child.kill();
            let status = child.wait().map_err(waited)?;
            return Ok((status, ended));
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(POLL_MAX);
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
mod tests;
