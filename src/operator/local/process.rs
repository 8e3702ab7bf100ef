//! Spawns a task's sandbox, streams its output, and kills it on cancel.
//!
//! Invariants: the bwrap process leads its own process group, so a kill
//! reaches it and nothing of the executor; the sandbox inside dies with it
//! (`--die-with-parent`, and its PID namespace takes every descendant down).
//! The kill is sent by the same future that waits for the process, before it
//! is reaped, so the signal can never hit a recycled PID. [`supervise`]
//! returns only after every output line has been handed to the outbox.
//! Between fork and exec the child joins the task's cgroups and the group's
//! network namespace ([`ChildSetup`]), so bubblewrap and everything it
//! starts are inside both from their first instruction.

use super::error::ExecError;
use super::log_lines;
use super::outbox::Outbox;
use crate::protocol::{LogLine, LogStream};
use gantry_storage::TaskKey;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::future::Future;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// After the process is gone, how long its pipes may stay open (held by an
/// escaped descendant) before we stop reading them.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// How a supervised process ended.
#[derive(Debug)]
pub struct Exit {
    /// The exit code, or 128 + signal for a death by signal (shell style).
    pub code: i32,
    pub signal: Option<i32>,
    /// `Some(reason)` when we killed it because of a cancel.
    pub canceled: Option<String>,
    /// `Some(reason)` when it was killed for going past a limit.
    pub evicted: Option<String>,
    /// The first log offset after the process's lines.
    pub next_offset: u64,
}

/// What the child does between fork and exec.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// Open `cgroup.procs` files to write itself into.
    pub cgroup_procs: Vec<RawFd>,
    /// A network namespace to join.
    pub netns: Option<RawFd>,
    /// Descriptors bubblewrap reads (seccomp filters): kept across exec.
    pub inherit: Vec<RawFd>,
}

pub fn spawn(bwrap: &Path, args: Vec<OsString>, setup: ChildSetup) -> Result<Child, ExecError> {
    let mut command = Command::new(bwrap);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes system calls that are async-signal-safe (write, setns, fcntl,
    // prctl) on descriptors the parent keeps open until spawn returns; it
    // allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            for &fd in &setup.cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = setup.netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &fd in &setup.inherit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // If this process dies without unwinding (SIGKILL), the kernel kills
            // bwrap, and bwrap's --die-with-parent takes the sandbox with it.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // If the executor itself goes away, its sandboxes go with it.
        .kill_on_drop(true)
        .spawn()
        .map_err(ExecError::Spawn)
}

/// Streams the child's output to the outbox and waits for it to end, killing
/// its process group as soon as `cancel` holds a reason or `evict` resolves
/// with one. `side_lines` (the executor's own, e.g. checkpoint uploads)
/// join the output in the run's offsets until the child exits.
pub async fn supervise(
    mut child: Child,
    (key, outbox): (&TaskKey, &Outbox),
    mut cancel: watch::Receiver<Option<String>>,
    evict: impl Future<Output = String>,
    (first_offset, mut side_lines): (u64, mpsc::Receiver<LogLine>),
) -> Result<Exit, ExecError> {
    let (line_tx, line_rx) = mpsc::channel(log_lines::BATCH_LINES * 4);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (exited_tx, mut exited_rx) = watch::channel(false);
    let mut side_exited = exited_rx.clone();
    let side_tx = line_tx.clone();
    let side = async move {
        tokio::select! {
            _ = async {
                while let Some(line) = side_lines.recv().await {
                    if side_tx.send(line).await.is_err() {
                        break;
                    }
                }
            } => {}
            _ = side_exited.wait_for(|exited| *exited) => {}
        }
    };

    let readers = async move {
        let out = async {
            if let Some(stdout) = stdout {
                log_lines::read_lines(stdout, LogStream::Stdout, line_tx.clone()).await;
            }
        };
        let err = async {
            if let Some(stderr) = stderr {
                log_lines::read_lines(stderr, LogStream::Stderr, line_tx.clone()).await;
            }
        };
        let both = async { tokio::join!(out, err) };
        tokio::select! {
            _ = both => {}
            _ = async {
                let _ = exited_rx.wait_for(|exited| *exited).await;
                tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            } => tracing::warn!("task output still open {DRAIN_AFTER_EXIT:?} after exit; stopped reading"),
        }
        // Dropping the last sender ends the batcher.
        drop(line_tx);
    };

    let waiter = async {
        let (mut canceled, mut evicted) = (None, None);
        tokio::pin!(evict);
        let status = tokio::select! {
            status = child.wait() => status,
            reason = cancel_reason(&mut cancel) => {
                canceled = Some(reason);
                kill_group(&child);
                child.wait().await
            }
            reason = &mut evict => {
                evicted = Some(reason);
                kill_group(&child);
                child.wait().await
            }
        };
        let _ = exited_tx.send(true);
        (status, canceled, evicted)
    };

    let ((), (), next_offset, (status, canceled, evicted)) = tokio::join!(
        readers,
        side,
        log_lines::batch(key, line_rx, outbox, first_offset),
        waiter
    );
    let status = status.map_err(ExecError::Wait)?;
    let mut exit = exit_of(status, canceled, next_offset);
    exit.evicted = evicted;
    Ok(exit)
}

/// Resolves with the cancel reason once one is set. Never resolves when the
/// cancel side is gone without a reason: then nobody can cancel any more.
pub async fn cancel_reason(cancel: &mut watch::Receiver<Option<String>>) -> String {
    let reason = match cancel.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone(),
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

fn kill_group(child: &Child) {
    // `id()` is None only once the child was reaped, and then there is
    // nothing left to kill.
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    if let Err(error) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        tracing::debug!(%error, pid, "killing the sandbox's process group failed");
    }
}

fn exit_of(status: ExitStatus, canceled: Option<String>, next_offset: u64) -> Exit {
    let signal = status.signal();
    let code = match (status.code(), signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    };
    Exit {
        code,
        signal,
        canceled,
        evicted: None,
        next_offset,
    }
}
