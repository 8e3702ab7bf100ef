//! Exec sessions on the local executor: a command started inside a
//! running task's sandbox (through `enter`, in the task's cgroup and with
//! the task's environment), its standard streams and exit status carried
//! as `protocol::exec` frames over the session's stream.
//!
//! Invariants: the command runs only as a process of the task (see
//! `enter`); the session's end is answered only once the command started;
//! a user who goes away kills the command; the last frame is its exit
//! status (or why it could not run); with a terminal the command's output
//! is one stream, as a terminal's is.

use super::enter::ENTER_ARG;
use super::task_files;
use crate::protocol::exec::{read_output, ExecCodec, ExecFrame, ExecRequest, OUTPUT_CHUNK_BYTES};
use crate::protocol::session::SessionAnswer;
use futures::{SinkExt, StreamExt};
use nix::pty::{openpty, Winsize};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio_util::codec::Framed;

/// Bytes buffered between the session's stream and the command.
const SESSION_BUFFER_BYTES: usize = 256 << 10;
/// How long output is still read after the command exited (a process it
/// left behind may hold its terminal open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// What an exec needs of a running task.
#[derive(Clone, Debug)]
pub struct SandboxEntry {
    /// The task's `bwrap`.
    pub bwrap_pid: u32,
    /// `cgroup.procs` of the task's cgroup directories.
    pub cgroup_procs: Vec<PathBuf>,
}

/// Starts `request` inside the task and answers with the session's end.
pub async fn open(entry: &SandboxEntry, request: &ExecRequest) -> SessionAnswer {
    if request.argv.is_empty() {
        return Err("exec needs a command".into());
    }
    let target = task_files::task_process(entry.bwrap_pid)
        .map_err(|error| format!("the task's sandbox cannot be entered: {error}"))?;
    // This very executable, even once replaced on disk by an upgrade (its
    // path would then name the new build, or nothing).
    let program = "/proc/self/exe";
    let mut cgroup_files = Vec::new();
    for path in &entry.cgroup_procs {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|error| format!("the task's cgroup is gone ({}): {error}", path.display()))?;
        cgroup_files.push(file);
    }
    let cgroup_fds: Vec<RawFd> = cgroup_files.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = tokio::process::Command::new(program);
    command
        .arg(ENTER_ARG)
        .arg(target.pid.to_string())
        .arg(target.parent.to_string())
        .arg(if request.tty { "1" } else { "0" })
        .arg("--")
        .args(&request.argv)
        // Nothing of the task's reaches the helper's own start (it runs
        // privileged on the host until it joins): it reads the task's
        // environment for the command itself (`LD_PRELOAD` set by a task
        // would otherwise run code as the executor).
        .env_clear()
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec; writes to descriptors
    // the parent keeps open until spawn returns and sets a signal, nothing
    // else (no allocation, no lock).
    unsafe {
        command.pre_exec(move || {
            for &fd in &cgroup_fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let io = if request.tty {
        let size = request.size.map(|(columns, rows)| window(columns, rows));
        let pty = openpty(size.as_ref(), None).map_err(|error| format!("no terminal: {error}"))?;
        for stdio in 0..3 {
            let slave = pty.slave.try_clone().map_err(|e| e.to_string())?;
            match stdio {
                0 => command.stdin(Stdio::from(slave)),
                1 => command.stdout(Stdio::from(slave)),
                _ => command.stderr(Stdio::from(slave)),
            };
        }
        nix::fcntl::fcntl(
            &pty.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|error| error.to_string())?;
        // SAFETY: the descriptor is owned by the `OwnedFd` the `AsyncFd`
        // takes, so it stays open and the same for the `AsyncFd`'s life.
        let master = unsafe { AsyncFd::register(pty.master) }
            .map_err(|error| format!("the terminal cannot be polled: {error}"))?;
        Io::Terminal(master)
    } else {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Io::Pipes
    };
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start the exec: {error}"))?;
    drop(command);
    drop(cgroup_files);
    let (user_end, our_end) = tokio::io::duplex(SESSION_BUFFER_BYTES);
    let streams = match io {
        Io::Terminal(master) => Streams::Terminal(master),
        Io::Pipes => Streams::Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        },
    };
    tokio::spawn(pump(Framed::new(our_end, ExecCodec), child, streams));
    Ok(Box::new(user_end))
}

enum Io {
    Terminal(AsyncFd<OwnedFd>),
    Pipes,
}

enum Streams {
    Terminal(AsyncFd<OwnedFd>),
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: Option<tokio::process::ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
    },
}

fn window(columns: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The exit code a shell would show.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Reads the terminal; `None` once the command's side closed (`EIO`).
async fn read_terminal(master: &AsyncFd<OwnedFd>) -> Option<Vec<u8>> {
    let mut buffer = vec![0; OUTPUT_CHUNK_BYTES];
    loop {
        let mut ready = master.readable().await.ok()?;
        match ready
            .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buffer).map_err(std::io::Error::from))
        {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => {
                buffer.truncate(n);
                return Some(buffer);
            }
            Err(_would_block) => continue,
        }
    }
}

async fn write_terminal(master: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let mut ready = master.writable().await?;
        match ready
            .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(error)) => return Err(error),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

type Session = Framed<tokio::io::DuplexStream, ExecCodec>;

/// Moves bytes between the session and the command until it exits (then
/// sends its exit code) or the user goes away (then kills it).
async fn pump(session: Session, mut child: Child, streams: Streams) {
    let (mut to_user, mut from_user) = session.split();
    let mut exited: Option<ExitStatus> = None;
    match streams {
        Streams::Pipes {
            mut stdin,
            mut stdout,
            mut stderr,
        } => {
            let mut user_open = true;
            while stdout.is_some() || stderr.is_some() || exited.is_none() {
                tokio::select! {
                    frame = from_user.next(), if user_open => match frame {
                        Some(Ok(ExecFrame::Stdin(bytes))) => {
                            if let Some(pipe) = stdin.as_mut() {
                                if pipe.write_all(&bytes).await.is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        Some(Ok(ExecFrame::StdinClosed)) => stdin = None,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            user_open = false;
                            let _ = child.start_kill();
                        }
                    },
                    Some(bytes) = read_output(&mut stdout) => {
                        if to_user.send(ExecFrame::Stdout(bytes)).await.is_err() {
                            let _ = child.start_kill();
                        }
                    }
                    Some(bytes) = read_output(&mut stderr) => {
                        if to_user.send(ExecFrame::Stderr(bytes)).await.is_err() {
                            let _ = child.start_kill();
                        }
                    }
                    status = child.wait(), if exited.is_none() => {
                        exited = Some(status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)));
                        // Output still buffered is read; a descendant that
                        // keeps a pipe open does not hold the session.
                        tokio::time::sleep(DRAIN_AFTER_EXIT).await;
                        let deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
                        while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, read_output(&mut stdout)).await {
                            let _ = to_user.send(ExecFrame::Stdout(bytes)).await;
                        }
                        while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, read_output(&mut stderr)).await {
                            let _ = to_user.send(ExecFrame::Stderr(bytes)).await;
                        }
                        stdout = None;
                        stderr = None;
                    }
                }
            }
        }
        Streams::Terminal(master) => {
            let mut user_open = true;
            let mut output_open = true;
            while output_open || exited.is_none() {
                tokio::select! {
                    frame = from_user.next(), if user_open => match frame {
                        Some(Ok(ExecFrame::Stdin(bytes))) => {
                            let _ = write_terminal(&master, &bytes).await;
                        }
                        Some(Ok(ExecFrame::Resize { columns, rows })) => {
                            let size = window(columns, rows);
                            // SAFETY: the ioctl reads a `winsize` that lives
                            // across the call.
                            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            user_open = false;
                            let _ = child.start_kill();
                        }
                    },
                    output = read_terminal(&master), if output_open => match output {
                        Some(bytes) => {
                            if to_user.send(ExecFrame::Stdout(bytes)).await.is_err() {
                                let _ = child.start_kill();
                            }
                        }
                        None => output_open = false,
                    },
                    status = child.wait(), if exited.is_none() => {
                        exited = Some(status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)));
                        let deadline = tokio::time::Instant::now() + DRAIN_AFTER_EXIT;
                        while output_open {
                            match tokio::time::timeout_at(deadline, read_terminal(&master)).await {
                                Ok(Some(bytes)) => {
                                    let _ = to_user.send(ExecFrame::Stdout(bytes)).await;
                                }
                                Ok(None) | Err(_) => output_open = false,
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(status) = exited {
        let _ = to_user.send(ExecFrame::Exit(exit_code(status))).await;
    }
    let _ = to_user.close().await;
}
