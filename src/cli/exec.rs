//! `gantry workflow exec WF TASK [--entry CMD] [-- CMD...]`: runs a
//! command inside a running task through the control plane (`GET
//! /api/workflow/{name}/exec/task/{task_name}`, upgraded to a stream of
//! `protocol::exec` frames) and exits with its exit code.
//!
//! Invariants: with a terminal on both stdin and stdout (or `--tty`), the
//! local terminal is in raw mode for the session (restored on every way
//! out) and its size follows the window; otherwise stdin, stdout and
//! stderr stay apart for scripts, and the end of stdin is passed on. The
//! task is checked to be RUNNING first, so a wrong name fails at once.

use super::session_client::{check_running, Opener};
use super::ClientArgs;
use crate::protocol::exec::{ExecCodec, ExecFrame, ExecFrameError, EXEC_PROTOCOL};
use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// Largest stdin read sent as one frame.
const STDIN_CHUNK_BYTES: usize = 32 << 10;

/// `gantry workflow exec` (OSMO's flags, and a command after `--`).
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The ID or UUID of the workflow
    pub workflow_id: String,
    /// Name of the task in the workflow
    #[arg(required_unless_present = "group")]
    pub task: Option<String>,
    /// Run the command in every running task of this group instead (no terminal; each output line prefixed with its task)
    #[arg(long, conflicts_with = "task")]
    pub group: Option<String>,
    /// The command to run, split as a shell would (OSMO's default)
    #[arg(
        long = "entry",
        default_value = "/bin/bash",
        conflicts_with = "command"
    )]
    pub entry: String,
    /// Run with a terminal even if this one is not (default: when stdin and stdout are terminals)
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never with a terminal: stdout and stderr apart, for scripts
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Seconds the session may take to open
    #[arg(long = "connect-timeout", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// Run the command again when the connection is lost (not when it exits)
    #[arg(long = "keep-alive", conflicts_with = "group")]
    pub keep_alive: bool,
    /// The command and its arguments, instead of --entry
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// The command's exit code, for the process to exit with.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {0}")]
pub struct CommandExit(pub i32);

/// Restores the terminal when the session ends, however it ends.
struct RawMode(Termios);

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)
            .map_err(|error| anyhow::anyhow!("cannot read the terminal's mode: {error}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .map_err(|error| anyhow::anyhow!("cannot put the terminal in raw mode: {error}"))?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// This terminal's size, `(columns, rows)`.
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the ioctl writes a `winsize` that lives across the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}

/// OSMO's interactive programs, refused for a group (as OSMO refuses them).
const INTERACTIVE_COMMANDS: [&str; 7] = ["bash", "sh", "zsh", "fish", "tcsh", "csh", "ksh"];

/// Runs the command; `Err(CommandExit(code))` when it exits non-zero.
pub async fn run(client_args: &ClientArgs, args: ExecArgs) -> anyhow::Result<()> {
    let entry = if args.command.is_empty() {
        args.entry.clone()
    } else {
        shlex::try_join(args.command.iter().map(String::as_str))
            .map_err(|error| anyhow::anyhow!("the command cannot be quoted: {error}"))?
    };
    let Some(task) = args.task.clone() else {
        let group = args.group.clone().unwrap_or_default();
        return run_group(client_args, &args, &group, entry).await;
    };
    check_running(client_args, &args.workflow_id, &task).await?;
    let tty = !args.no_tty
        && (args.tty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal()));
    let mut query = vec![("entry", entry), ("tty", tty.to_string())];
    if tty {
        if let Some((columns, rows)) = terminal_size() {
            query.push(("columns", columns.to_string()));
            query.push(("rows", rows.to_string()));
        }
    }
    // One reader for every session: a reconnect must not leave a second
    // thread waiting on stdin.
    let mut stdin = stdin_chunks();
    loop {
        let upgraded = open(client_args, &args, &task, &query).await?;
        let raw = if tty && std::io::stdin().is_terminal() {
            Some(RawMode::enable()?)
        } else {
            None
        };
        let ended = session(Framed::new(upgraded, ExecCodec), tty, &mut stdin).await;
        drop(raw);
        match ended {
            Ok(0) => return Ok(()),
            Ok(code) => return Err(CommandExit(code).into()),
            Err(SessionEnd::Lost(reason)) if args.keep_alive => {
                eprintln!("\r\nexec: {reason}; reconnecting to the exec session...");
                tokio::time::sleep(RECONNECT_DELAY).await;
                check_running(client_args, &args.workflow_id, &task).await?;
            }
            Err(end) => return Err(anyhow::anyhow!(end)),
        }
    }
}

/// How an exec session ended without the command's exit code.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The connection broke or closed: `--keep-alive` runs the command again.
    #[error("exec: {0}")]
    Lost(String),
    /// The command could not run, or this end failed.
    #[error("exec: {0}")]
    Failed(String),
}

/// The pause before `--keep-alive` opens the next session.
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// An exec session into `task`: the upgraded connection.
async fn open(
    client_args: &ClientArgs,
    args: &ExecArgs,
    task: &str,
    query: &[(&str, String)],
) -> anyhow::Result<reqwest::Upgraded> {
    let path = format!(
        "/api/workflow/{}/exec/task/{}",
        super::client::encode_segment(&args.workflow_id),
        super::client::encode_segment(task)
    );
    let timeout = Duration::from_secs(args.connect_timeout);
    let opener = Opener::new(client_args, path, timeout)?;
    tokio::time::timeout(timeout, opener.open(query, EXEC_PROTOCOL))
        .await
        .map_err(|_| anyhow::anyhow!("no session within {} s", timeout.as_secs()))?
        .map_err(|reason| anyhow::anyhow!("task '{task}': {reason}"))
}

/// OSMO's `exec --group`: the command in every running task of the group
/// at once, without a terminal or stdin, each output line prefixed
/// `[task] `; the first non-zero exit code is the command's.
async fn run_group(
    client_args: &ClientArgs,
    args: &ExecArgs,
    group: &str,
    entry: String,
) -> anyhow::Result<()> {
    // OSMO's test: the entry ends with a shell's name.
    if INTERACTIVE_COMMANDS
        .iter()
        .any(|shell| entry.ends_with(shell))
    {
        anyhow::bail!("interactive commands are not supported for exec groups; use --entry (or a command after --) to run a non-interactive one");
    }
    let client = super::client::Client::from_args(client_args)?;
    let path = format!(
        "/api/workflow/{}",
        super::client::encode_segment(&args.workflow_id)
    );
    let workflow = client
        .call(reqwest::Method::GET, &path, &[], None)
        .await
        .map_err(|error| anyhow::anyhow!(error))?;
    let tasks: Vec<String> = workflow["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == group)
        .flat_map(|g| g["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|task| task["status"] == "RUNNING")
        .filter_map(|task| task["name"].as_str().map(str::to_string))
        .collect();
    if tasks.is_empty() {
        anyhow::bail!(
            "group '{group}' of {} has no running task",
            args.workflow_id
        );
    }
    let query = [("entry", entry), ("tty", "false".to_string())];
    let runs = tasks.iter().map(|task| async {
        let upgraded = open(client_args, args, task, &query).await?;
        prefixed_session(Framed::new(upgraded, ExecCodec), task).await
    });
    let mut code = 0;
    for outcome in futures::future::join_all(runs).await {
        match outcome {
            Ok(0) => {}
            Ok(failed) => code = if code == 0 { failed } else { code },
            Err(error) => {
                eprintln!("{error:#}");
                code = if code == 0 { 1 } else { code };
            }
        }
    }
    match code {
        0 => Ok(()),
        code => Err(CommandExit(code).into()),
    }
}

/// One task's session of a group exec: no input, each whole output line
/// printed with the task's name before it.
async fn prefixed_session(
    framed: Framed<reqwest::Upgraded, ExecCodec>,
    task: &str,
) -> anyhow::Result<i32> {
    let (mut to_task, mut from_task) = framed.split();
    to_task.send(ExecFrame::StdinClosed).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let print = |pending: &mut Vec<u8>, all: bool, to_stderr: bool| {
        let cut = if all {
            pending.len()
        } else {
            pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1)
        };
        let text = String::from_utf8_lossy(&pending[..cut]).into_owned();
        pending.drain(..cut);
        for line in text.lines() {
            if to_stderr {
                eprintln!("[{task}] {line}");
            } else {
                println!("[{task}] {line}");
            }
        }
    };
    loop {
        match from_task.next().await {
            Some(Ok(ExecFrame::Stdout(bytes))) => {
                out.extend(bytes);
                print(&mut out, false, false);
            }
            Some(Ok(ExecFrame::Stderr(bytes))) => {
                err.extend(bytes);
                print(&mut err, false, true);
            }
            Some(Ok(ExecFrame::Exit(code))) => {
                print(&mut out, true, false);
                print(&mut err, true, true);
                return Ok(code);
            }
            Some(Ok(ExecFrame::Failed(reason))) => anyhow::bail!("[{task}] exec: {reason}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => anyhow::bail!("[{task}] exec: the session broke: {error}"),
            None => anyhow::bail!("[{task}] exec: the session ended before the command did"),
        }
    }
}

/// Writes all of `bytes`, waiting out a full non-blocking pipe (a caller
/// may hand over a non-blocking stdout: rsync does).
async fn write_fully(out: &mut impl Write, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    loop {
        match out.flush() {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

/// Stdin read on a thread of its own (a blocking read that never holds up
/// the process's exit); `None` once it ended.
fn stdin_chunks() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0; STDIN_CHUNK_BYTES];
        loop {
            match stdin.read(&mut buffer) {
                // A caller may hand over a non-blocking stdin (rsync does).
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    let _ = sender.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if sender.blocking_send(Some(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

async fn session(
    framed: Framed<reqwest::Upgraded, ExecCodec>,
    tty: bool,
    stdin: &mut mpsc::Receiver<Option<Vec<u8>>>,
) -> Result<i32, SessionEnd> {
    let (mut to_task, mut from_task) = framed.split();
    let lost = |error: ExecFrameError| SessionEnd::Lost(format!("the session broke: {error}"));
    let failed = |error: std::io::Error| SessionEnd::Failed(error.to_string());
    let mut stdin_open = true;
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(failed)?;
    loop {
        tokio::select! {
            frame = from_task.next() => match frame {
                Some(Ok(ExecFrame::Stdout(bytes))) => write_fully(&mut std::io::stdout(), &bytes).await.map_err(failed)?,
                Some(Ok(ExecFrame::Stderr(bytes))) => write_fully(&mut std::io::stderr(), &bytes).await.map_err(failed)?,
                Some(Ok(ExecFrame::Exit(code))) => return Ok(code),
                Some(Ok(ExecFrame::Failed(reason))) => return Err(SessionEnd::Failed(reason)),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(lost(error)),
                None => return Err(SessionEnd::Lost("the session ended before the command did".into())),
            },
            chunk = stdin.recv(), if stdin_open => match chunk {
                Some(Some(bytes)) => to_task.send(ExecFrame::Stdin(bytes)).await.map_err(lost)?,
                Some(None) | None => {
                    stdin_open = false;
                    // A terminal's end of input is a key the command reads.
                    if !tty {
                        to_task.send(ExecFrame::StdinClosed).await.map_err(lost)?;
                    }
                }
            },
            _ = resized.recv(), if tty => {
                if let Some((columns, rows)) = terminal_size() {
                    to_task.send(ExecFrame::Resize { columns, rows }).await.map_err(lost)?;
                }
            }
        }
    }
}
