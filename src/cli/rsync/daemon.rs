//! `gantry workflow rsync upload ... --daemon` (OSMO's): a background
//! process that uploads LOCAL again whenever it changes, and `rsync
//! status` / `rsync stop` to list and end such processes on this machine.
//!
//! The daemon is this program started again, detached (`setsid`), with
//! the hidden `--daemon-child`: it looks at LOCAL every poll interval (the
//! size, time and mode of every entry), uploads once nothing changed for
//! the debounce delay, and also every reconcile interval whatever changed,
//! so an upload a broken network cut short resumes. Each daemon keeps a
//! state file (`<pid>.json`) and a log (`<pid>.log`, rotated to `.1` past
//! its size limit) under `$XDG_STATE_HOME/gantry/rsync`.
//!
//! Invariants: a daemon ends when its task is no longer RUNNING, when no
//! server answered for ten minutes, or on SIGTERM, and removes its state
//! file; `status` and `stop` trust a state
//! file only while its process lives and is a daemon of this program (a
//! reused PID is not signalled); a failed upload is logged and retried,
//! never fatal.

use super::{RsyncArgs, Transfer};
use crate::cli::session_client::check_running;
use crate::cli::ClientArgs;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What `status` shows of a daemon; written by the daemon itself.
#[derive(Debug, Serialize, Deserialize)]
struct DaemonState {
    pid: u32,
    workflow: String,
    task: String,
    local: String,
    remote: String,
    started: String,
    uploads: u64,
    last_upload: Option<String>,
    last_result: String,
}

/// A daemon no server answered for this long ends (its cluster is gone).
const UNREACHABLE_MAX: Duration = Duration::from_secs(600);

/// The marker of a daemon's command line (what `status` checks a PID by).
const CHILD_FLAG: &str = "--daemon-child";

fn state_dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".local/state")
        }
    };
    Ok(base.join("gantry/rsync"))
}

fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// Starts the daemon for `transfer` and returns at once.
pub fn start(
    client_args: &ClientArgs,
    args: &RsyncArgs,
    transfer: &Transfer,
) -> anyhow::Result<()> {
    let dir = state_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Absolute, so the daemon's status says where; a trailing `/` kept
    // (rsync copies a directory's contents, not the directory, with it).
    let mut local = std::fs::canonicalize(&transfer.source)
        .with_context(|| format!("the local path {}", transfer.source))?
        .to_string_lossy()
        .into_owned();
    if transfer.source.ends_with('/') && !local.ends_with('/') {
        local.push('/');
    }
    let me = std::env::current_exe().context("finding this executable")?;
    let mut command = std::process::Command::new(me);
    command
        .args(["workflow", "rsync", "upload"])
        .arg(&transfer.workflow_id)
        .arg(&transfer.task)
        .arg(format!("{local}:{}", transfer.destination))
        .arg(CHILD_FLAG)
        .arg(format!("--timeout={}", args.timeout))
        .arg(format!("--poll-interval={}", args.poll_interval))
        .arg(format!("--debounce-delay={}", args.debounce_delay))
        .arg(format!("--reconcile-interval={}", args.reconcile_interval))
        .arg(format!("--max-log-size={}", args.max_log_size));
    if let Some(rate) = args.upload_rate_limit {
        command.arg(format!("--upload-rate-limit={rate}"));
    }
    if args.verbose {
        command.arg("--verbose");
    }
    if !client_args.url.is_empty() {
        command.env("GANTRY_URL", client_args.url.join(","));
    }
    if let Some(ca) = &client_args.ca {
        command.env("GANTRY_CA", ca);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let child = command.spawn().context("starting the rsync daemon")?;
    let pid = child.id();
    // Not waited for: it outlives this process (init adopts it).
    drop(child);
    println!(
        "rsync daemon {pid} uploads {local} to {}:{} of {} whenever it changes\nlog: {}\n`gantry workflow rsync status` lists the daemons, `gantry workflow rsync stop` ends them",
        transfer.task,
        transfer.destination,
        transfer.workflow_id,
        dir.join(format!("{pid}.log")).display()
    );
    Ok(())
}

/// A log that moves to `.1` once it holds `max` bytes.
struct Log {
    path: PathBuf,
    max: u64,
}

impl Log {
    fn line(&self, text: &str) {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size + text.len() as u64 >= self.max {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(file, "{} {text}", now_text());
        }
    }
}

/// A number that changes when anything under `path` does: each entry's
/// relative path, size, modification time and mode.
fn fingerprint(path: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            continue;
        };
        next.hash(&mut hasher);
        (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.mode()).hash(&mut hasher);
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&next) {
                let mut children: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                children.sort();
                pending.extend(children);
            }
        }
    }
    hasher.finish()
}

fn write_state(path: &Path, state: &DaemonState) {
    if let Ok(text) = serde_json::to_vec_pretty(state) {
        let temporary = path.with_extension("json.new");
        if std::fs::write(&temporary, text).is_ok() {
            let _ = std::fs::rename(&temporary, path);
        }
    }
}

/// The daemon itself: uploads on change (after the debounce delay) and
/// every reconcile interval, until its task ends or SIGTERM.
pub async fn serve(
    client_args: &ClientArgs,
    args: &RsyncArgs,
    transfer: &Transfer,
) -> anyhow::Result<()> {
    let dir = state_dir()?;
    std::fs::create_dir_all(&dir)?;
    let pid = std::process::id();
    let state_path = dir.join(format!("{pid}.json"));
    let log = Log {
        path: dir.join(format!("{pid}.log")),
        max: args.max_log_size,
    };
    let mut state = DaemonState {
        pid,
        workflow: transfer.workflow_id.clone(),
        task: transfer.task.clone(),
        local: transfer.source.clone(),
        remote: transfer.destination.clone(),
        started: now_text(),
        uploads: 0,
        last_upload: None,
        last_result: "starting".into(),
    };
    write_state(&state_path, &state);
    log.line(&format!(
        "watching {} for {}:{} of {}",
        transfer.source, transfer.task, transfer.destination, transfer.workflow_id
    ));
    let seconds = Duration::from_secs_f64;
    let (poll, debounce, reconcile) = (
        seconds(args.poll_interval),
        seconds(args.debounce_delay),
        seconds(args.reconcile_interval),
    );
    let local = PathBuf::from(transfer.source.trim_end_matches('/'));
    let mut seen = fingerprint(&local);
    // The first upload goes at once.
    let mut first = true;
    let mut changed_at: Option<Instant> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut last_upload = Instant::now();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let due = first
            || changed_at.is_some_and(|at| at.elapsed() >= debounce)
            || last_upload.elapsed() >= reconcile;
        if due {
            if let Err(error) =
                check_running(client_args, &transfer.workflow_id, &transfer.task).await
            {
                let text = error.to_string();
                if text.contains("not RUNNING") || text.contains("not found") {
                    log.line(&format!("stopping: {text}"));
                    break;
                }
                let unreachable = *unreachable_since.get_or_insert_with(Instant::now);
                if unreachable.elapsed() >= UNREACHABLE_MAX {
                    log.line(&format!(
                        "stopping: no server answered for {} s ({text})",
                        UNREACHABLE_MAX.as_secs()
                    ));
                    break;
                }
                log.line(&format!(
                    "the server cannot be asked ({text}); trying again"
                ));
            } else {
                unreachable_since = None;
                let output = transfer.command(client_args, args)?.output().await;
                state.last_result = match output {
                    Ok(output) if output.status.success() => {
                        state.uploads += 1;
                        let listed = String::from_utf8_lossy(&output.stdout);
                        for line in listed.lines().filter(|line| !line.trim().is_empty()) {
                            log.line(line);
                        }
                        "uploaded".into()
                    }
                    Ok(output) => format!(
                        "rsync failed ({}): {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                    Err(error) => format!("rsync did not start: {error}"),
                };
                log.line(&state.last_result);
                state.last_upload = Some(now_text());
                write_state(&state_path, &state);
            }
            first = false;
            changed_at = None;
            last_upload = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = terminate.recv() => {
                log.line("stopped");
                break;
            }
        }
        let now = fingerprint(&local);
        if now != seen {
            seen = now;
            changed_at = Some(Instant::now());
        }
    }
    let _ = std::fs::remove_file(&state_path);
    Ok(())
}

/// The daemons whose process lives and is one (stale files removed).
fn daemons() -> anyhow::Result<Vec<DaemonState>> {
    let dir = state_dir()?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(state) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<DaemonState>(&bytes).ok())
        else {
            continue;
        };
        let command_line =
            std::fs::read(format!("/proc/{}/cmdline", state.pid)).unwrap_or_default();
        let is_daemon = command_line
            .split(|byte| *byte == 0)
            .any(|word| word == CHILD_FLAG.as_bytes());
        if is_daemon {
            found.push(state);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    found.sort_by_key(|state| state.pid);
    Ok(found)
}

/// `gantry workflow rsync status`.
pub fn status() -> anyhow::Result<()> {
    let daemons = daemons()?;
    if daemons.is_empty() {
        println!("No rsync daemon runs.");
        return Ok(());
    }
    let mut table = crate::cli::output::table(&[
        "PID",
        "WORKFLOW",
        "TASK",
        "PATH",
        "UPLOADS",
        "LAST UPLOAD",
        "RESULT",
    ]);
    for d in &daemons {
        table.add_row(vec![
            d.pid.to_string(),
            d.workflow.clone(),
            d.task.clone(),
            format!("{} -> {}", d.local, d.remote),
            d.uploads.to_string(),
            d.last_upload.clone().unwrap_or_else(|| "-".into()),
            d.last_result.clone(),
        ]);
    }
    print!("{}", crate::cli::output::render_table(&table));
    Ok(())
}

/// `gantry workflow rsync stop [WF]`: SIGTERM, then up to 5 s for each to end.
pub fn stop(workflow: Option<&str>) -> anyhow::Result<()> {
    let chosen: Vec<DaemonState> = daemons()?
        .into_iter()
        .filter(|d| workflow.is_none_or(|w| w == d.workflow))
        .collect();
    if chosen.is_empty() {
        println!(
            "No rsync daemon runs{}.",
            workflow.map(|w| format!(" for {w}")).unwrap_or_default()
        );
        return Ok(());
    }
    for daemon in &chosen {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "Stopped rsync daemon {} ({}/{})",
            daemon.pid, daemon.workflow, daemon.task
        );
    }
    Ok(())
}
