//! `gantry task-runtime`: the wrapper that runs a task's command inside its
//! pod, whatever the image.
//!
//! How it works (the Kubernetes executor builds pods this way):
//! 1. The `osmo-init` init container runs the Gantry image with
//!    `gantry task-runtime install --to /osmo/bin`, copying this static
//!    binary into an `emptyDir` shared with the task container. The task
//!    image needs no shell, no tools and no Gantry of its own.
//! 2. The task container runs `/osmo/bin/gantry task-runtime exec --inputs N
//!    -- <command> <args>`: it creates `/osmo/data/output` (`{{output}}`) and
//!    `/osmo/data/input/0..N` (`{{input:N}}`), fetches inputs, runs the
//!    command with the container's environment (the spec's `environment`,
//!    set on the container), forwards SIGTERM/SIGINT to it, uploads outputs,
//!    and exits with the command's code (128 + signal when killed).
//! 3. The command's stdout and stderr go straight to the container's log,
//!    which the operator streams to the control plane.
//!
//! Data transfer is a seam: [`stage_inputs`] and [`publish_outputs`] are
//! where inputs are downloaded and outputs uploaded once an object store is
//! configured; today they only prepare the directories and say so.
//!
//! Invariant: the container exits with the command's own code; only a
//! failure of the runtime itself (before the command starts) exits 255,
//! with the reason on stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Exit code when the runtime itself fails before the command runs.
pub const EXIT_RUNTIME_FAILURE: i32 = 255;

#[derive(Debug, clap::Subcommand)]
pub enum TaskRuntimeCommand {
    /// Copy this binary into DIR (run by the init container)
    Install {
        /// Directory to copy `gantry` into
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Prepare the task's data directories, run COMMAND, and exit with its code
    Exec {
        /// Number of inputs: creates `input/0` .. `input/N-1`
        #[arg(long, default_value_t = 0)]
        inputs: usize,
        /// Parent of `output/` and `input/`
        #[arg(long, default_value = "/osmo/data", value_name = "DIR")]
        data_dir: PathBuf,
        /// The command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: OsString,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a task-runtime command; returns the process exit code.
pub async fn run(command: TaskRuntimeCommand) -> i32 {
    let result = match command {
        TaskRuntimeCommand::Install { to } => install(&to).map(|path| {
            eprintln!("[gantry] installed {}", path.display());
            0
        }),
        TaskRuntimeCommand::Exec {
            inputs,
            data_dir,
            command,
        } => exec(&data_dir, inputs, &command).await,
    };
    result.unwrap_or_else(|error| {
        eprintln!("[gantry] task runtime failed: {error}");
        EXIT_RUNTIME_FAILURE
    })
}

/// Copies the running executable to `dir/gantry` (mode 0755).
pub fn install(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let io = |context, path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io {
            context,
            path,
            source,
        }
    };
    let me = std::env::current_exe().map_err(io("cannot locate", Path::new("/proc/self/exe")))?;
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let target = dir.join("gantry");
    // Copy to a temporary name, then rename: a half-copied binary is never
    // visible under the final name.
    let partial = dir.join(".gantry.partial");
    std::fs::copy(&me, &partial).map_err(io("cannot copy to", &partial))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot make executable", &partial))?;
    }
    std::fs::rename(&partial, &target).map_err(io("cannot rename to", &target))?;
    Ok(target)
}

/// Prepares the data directories, runs the command, publishes outputs.
pub async fn exec(
    data_dir: &Path,
    inputs: usize,
    command: &[OsString],
) -> Result<i32, RuntimeError> {
    let Some((program, args)) = command.split_first() else {
        // clap requires at least one word; kept as a clear error anyway.
        return Err(RuntimeError::Spawn {
            command: OsString::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
        });
    };
    let output_dir = data_dir.join("output");
    create_dir(&output_dir)?;
    stage_inputs(data_dir, inputs)?;

    let mut child = tokio::process::Command::new(program)
        .args(args)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            command: program.clone(),
            source,
        })?;
    let status = supervise(&mut child)
        .await
        .map_err(|source| RuntimeError::Io {
            context: "lost track of the command",
            path: PathBuf::from(program),
            source,
        })?;
    let code = exit_code(status);
    publish_outputs(&output_dir, code);
    Ok(code)
}

/// Waits for the child, passing SIGTERM and SIGINT on to it (the kubelet
/// signals PID 1 only when the pod is deleted).
async fn supervise(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        let forward = tokio::select! {
            status = child.wait() => return status,
            _ = term.recv() => nix::sys::signal::Signal::SIGTERM,
            _ = interrupt.recv() => nix::sys::signal::Signal::SIGINT,
        };
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), forward);
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_RUNTIME_FAILURE,
    }
}

fn create_dir(path: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(path).map_err(|source| RuntimeError::Io {
        context: "cannot create",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `input/0..inputs`. Fetching each input's data from the object
/// store belongs here once a data store is configured.
fn stage_inputs(data_dir: &Path, inputs: usize) -> Result<(), RuntimeError> {
    for index in 0..inputs {
        create_dir(&data_dir.join("input").join(index.to_string()))?;
    }
    if inputs > 0 {
        eprintln!("[gantry] {inputs} input directories prepared; no data store is configured, so they are empty");
    }
    Ok(())
}

/// Uploading `output/` to the object store belongs here once a data store
/// is configured (OSMO uploads outputs after every exit except cancel,
/// eviction and preemption).
fn publish_outputs(output_dir: &Path, code: i32) {
    let has_output =
        std::fs::read_dir(output_dir).is_ok_and(|mut entries| entries.next().is_some());
    if has_output {
        eprintln!(
            "[gantry] command exited with {code}; {} is kept in the pod only (no data store is configured)",
            output_dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_prepares_dirs_and_returns_the_exit_code() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command: Vec<OsString> = [
            "sh",
            "-c",
            "echo hi > \"$0/output/x\" && test -d \"$0/input/1\" && exit 7",
        ]
        .iter()
        .map(OsString::from)
        .chain([dir.path().as_os_str().to_owned()])
        .collect();
        let code = exec(dir.path(), 2, &command).await.expect("runs");
        assert_eq!(code, 7);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("output/x")).expect("output written"),
            "hi\n"
        );
    }

    #[tokio::test]
    async fn a_killed_command_exits_128_plus_signal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command: Vec<OsString> = ["sh", "-c", "kill -9 $$"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(exec(dir.path(), 0, &command).await.expect("runs"), 137);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command = vec![OsString::from("/no/such/program")];
        let error = exec(dir.path(), 0, &command)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("/no/such/program")),
            "{error:?}"
        );
    }

    #[test]
    fn install_copies_this_binary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = install(&dir.path().join("bin")).expect("installs");
        let me = std::env::current_exe().expect("exe");
        assert_eq!(
            std::fs::metadata(&target).expect("copied").len(),
            std::fs::metadata(me).expect("exe").len()
        );
    }
}
