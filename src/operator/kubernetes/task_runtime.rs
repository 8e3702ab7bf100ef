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
//! Data: with `--data FILE` (a JSON [`TaskData`], mounted from the task's
//! Secret so the store's credential is never on the command line) inputs
//! are downloaded into `input/N` before the command and `output/` is
//! uploaded after it (not after a forwarded SIGTERM/SIGINT, i.e. a cancel),
//! through the same `crate::data` code as the local executor; progress
//! lines go to stderr, so they reach the task's log.
//!
//! Invariant: the container exits with the command's own code, except a
//! failed download (2010, the command never runs) or upload (2012), as
//! OSMO's `osmo-ctrl`: those exit 1 and write `{"code", "error"}` to the
//! termination message, from which the operator takes the code; a failure
//! of the runtime itself (before the command starts) exits 255, with the
//! reason on stderr.

use crate::data::{self, DataStore, TaskData};
use gantry_storage::extras::CheckpointPlan;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// Exit code when the runtime itself fails before the command runs.
pub const EXIT_RUNTIME_FAILURE: i32 = 255;
/// Process exit code of a failed data phase; its OSMO code (2010, 2012) is
/// in the termination message.
pub const EXIT_DATA_PHASE_FAILED: i32 = 1;
/// Where the Kubernetes executor mounts the task's data description.
pub const DATA_SPEC_PATH: &str = "/osmo/run/data.json";

/// What `--data FILE` holds: the task's data phases and its checkpoints
/// (uploaded while the command runs and once after it exits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeData {
    #[serde(flatten)]
    pub data: TaskData,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointPlan>,
    /// The user's DATA credentials (`TaskData::user_stores`, which the
    /// task data's own encoding leaves out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_stores: Vec<DataStore>,
}

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
        /// JSON description of the task's data (store, inputs, outputs)
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// Where a failed data phase writes `{"code": N, "error": ...}`
        /// (Kubernetes reads it as the container's termination message)
        #[arg(long, default_value = "/dev/termination-log", value_name = "FILE")]
        termination_log: PathBuf,
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
    #[error("task data description {path}: {message}")]
    DataSpec { path: PathBuf, message: String },
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
            data,
            termination_log,
            command,
        } => match data.as_deref().map(read_runtime_data).transpose() {
            Ok(runtime_data) => {
                exec(
                    &data_dir,
                    inputs,
                    runtime_data.as_ref(),
                    Some(&termination_log),
                    &command,
                )
                .await
            }
            Err(error) => Err(error),
        },
    };
    // Process exit codes are 8-bit: OSMO's 2010/2012 travel in the
    // termination message, and the container exits 1.
    let result = result.map(|code| {
        if (0..=255).contains(&code) {
            code
        } else {
            EXIT_DATA_PHASE_FAILED
        }
    });
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

fn read_runtime_data(path: &Path) -> Result<RuntimeData, RuntimeError> {
    let text = std::fs::read(path).map_err(|source| RuntimeError::Io {
        context: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut runtime: RuntimeData =
        serde_json::from_slice(&text).map_err(|error| RuntimeError::DataSpec {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
    runtime.data.user_stores = std::mem::take(&mut runtime.user_stores);
    Ok(runtime)
}

/// Prepares the data directories, downloads inputs, runs the command
/// (uploading checkpoints while it runs and once after), uploads outputs.
pub async fn exec(
    data_dir: &Path,
    inputs: usize,
    runtime_data: Option<&RuntimeData>,
    termination_log: Option<&Path>,
    command: &[OsString],
) -> Result<i32, RuntimeError> {
    // Best effort: outside a pod the path may not be writable, and the
    // failure is on stderr (the task's log) either way.
    let report = |failure: &data::PhaseFailure| {
        eprintln!("[gantry] {}", failure.message);
        if let Some(path) = termination_log {
            let message = serde_json::json!({"code": failure.exit_code, "error": failure.message});
            if let Err(error) = std::fs::write(path, message.to_string()) {
                eprintln!("[gantry] cannot write {}: {error}", path.display());
            }
        }
    };
    let Some((program, args)) = command.split_first() else {
        // clap requires at least one word; kept as a clear error anyway.
        return Err(RuntimeError::Spawn {
            command: OsString::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
        });
    };
    let task_data = runtime_data.map(|runtime| &runtime.data);
    let checkpoints = runtime_data.map_or(&[][..], |runtime| &runtime.checkpoints[..]);
    let output_dir = data_dir.join("output");
    create_dir(&output_dir)?;
    let inputs = inputs.max(task_data.map_or(0, |data| data.inputs.len()));
    let input_dirs = stage_inputs(data_dir, inputs)?;
    let say = |line: String| eprintln!("[gantry] {line}");
    if let Some(task_data) = task_data {
        if let Err(failure) = data::download_inputs(task_data, &input_dirs, &say).await {
            report(&failure);
            return Ok(failure.exit_code);
        }
    }

    let mut child = tokio::process::Command::new(program)
        .args(args)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            command: program.clone(),
            source,
        })?;
    // In the container the checkpoint's path is the task's own.
    let in_container = data::TaskFiles::Own;
    let supervised = match task_data {
        Some(task_data) => tokio::select! {
            supervised = supervise(&mut child) => supervised,
            never = data::checkpoint_periodically(task_data, checkpoints, in_container, &say) => match never {},
        },
        None => supervise(&mut child).await,
    };
    let (status, signaled) = supervised.map_err(|source| RuntimeError::Io {
        context: "lost track of the command",
        path: PathBuf::from(program),
        source,
    })?;
    let code = exit_code(status);
    if let (Some(task_data), false) = (task_data, signaled) {
        data::checkpoint_finally(task_data, checkpoints, in_container, &say).await;
    }
    // OSMO uploads after every exit except a cancel (the pod's deletion
    // is what signals the runtime).
    if let (Some(task_data), false) = (task_data, signaled) {
        if let Err(failure) = data::upload_outputs(task_data, &output_dir, &say).await {
            report(&failure);
            return Ok(failure.exit_code.max(code));
        }
    }
    Ok(code)
}

/// Waits for the child, passing SIGTERM and SIGINT on to it (the kubelet
/// signals PID 1 only when the pod is deleted).
/// Returns the status and whether a signal was forwarded.
async fn supervise(child: &mut tokio::process::Child) -> std::io::Result<(ExitStatus, bool)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut signaled = false;
    loop {
        let forward = tokio::select! {
            status = child.wait() => return Ok((status?, signaled)),
            _ = term.recv() => nix::sys::signal::Signal::SIGTERM,
            _ = interrupt.recv() => nix::sys::signal::Signal::SIGINT,
        };
        signaled = true;
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

/// Creates `input/0..inputs` and returns them.
fn stage_inputs(data_dir: &Path, inputs: usize) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut dirs = Vec::with_capacity(inputs);
    for index in 0..inputs {
        let dir = data_dir.join("input").join(index.to_string());
        create_dir(&dir)?;
        dirs.push(dir);
    }
    Ok(dirs)
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
        let code = exec(dir.path(), 2, None, None, &command)
            .await
            .expect("runs");
        assert_eq!(code, 7);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("output/x")).expect("output written"),
            "hi\n"
        );
    }

    #[test]
    fn the_command_after_the_separator_is_taken_verbatim() {
        // kubelet has already expanded `$(VAR)` in the container's args;
        // the runtime must not read what follows `--` as its own flags.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: TaskRuntimeCommand,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from([
            "gantry", "exec", "--inputs", "1", "--", "sh", "$(A)", "--data", "x", "--",
        ]);
        let command = match parsed.map(|cli| cli.command) {
            Ok(TaskRuntimeCommand::Exec { command, data, .. }) => {
                assert_eq!(data, None);
                command
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(command, ["sh", "$(A)", "--data", "x", "--"]);
    }

    #[tokio::test]
    async fn arguments_reach_the_command_unchanged() {
        // No shell in between: what kubelet left is what the command gets.
        let dir = tempfile::tempdir().expect("temp dir");
        let command: Vec<OsString> = [
            "sh",
            "-c",
            "printf '%s|%s|%s' \"$1\" \"$2\" \"$3\" > \"$0/output/args\"",
        ]
        .iter()
        .map(OsString::from)
        .chain([dir.path().as_os_str().to_owned()])
        .chain(["$(X)", "$$", "a b"].map(OsString::from))
        .collect();
        let code = exec(dir.path(), 0, None, None, &command)
            .await
            .expect("runs");
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("output/args")).expect("written"),
            "$(X)|$$|a b"
        );
    }

    #[tokio::test]
    async fn a_killed_command_exits_128_plus_signal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command: Vec<OsString> = ["sh", "-c", "kill -9 $$"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            exec(dir.path(), 0, None, None, &command)
                .await
                .expect("runs"),
            137
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command = vec![OsString::from("/no/such/program")];
        let error = exec(dir.path(), 0, None, None, &command)
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

    #[tokio::test]
    async fn exec_uploads_checkpoints_while_the_command_runs_and_once_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DataStore {
            root: format!("file://{}/store", dir.path().display()),
            ..DataStore::default()
        };
        std::fs::create_dir_all(dir.path().join("store")).expect("dirs");
        let work = dir.path().join("work");
        let runtime_data = RuntimeData {
            user_stores: Vec::new(),
            data: TaskData {
                store: store.clone(),
                ..TaskData::default()
            },
            checkpoints: vec![CheckpointPlan {
                path: work.display().to_string(),
                url: store.task_url("wf-1", "ckpt"),
                frequency_seconds: 1,
                regex: Some(r"\.pth$".into()),
            }],
        };
        let spec = dir.path().join("data.json");
        std::fs::write(&spec, serde_json::to_vec(&runtime_data).expect("json")).expect("write");
        let runtime_data = read_runtime_data(&spec).expect("reads back");
        assert_eq!(runtime_data.checkpoints.len(), 1);
        // The command sees its first checkpoint uploaded while it runs,
        // then writes one more that only the last upload takes.
        let uploaded = dir.path().join("store/wf-1/ckpt");
        let script = "mkdir -p \"$0\" && echo 1 > \"$0/epoch-1.pth\" && echo x > \"$0/notes\" \
             && for i in 1 2 3 4 5 6 7 8 9 10; do test -f \"$1/epoch-1.pth\" && break; sleep 0.5; done \
             && test -f \"$1/epoch-1.pth\" && echo 2 > \"$0/epoch-2.pth\"";
        let command: Vec<OsString> = ["sh", "-c", script]
            .iter()
            .map(OsString::from)
            .chain([work.as_os_str().to_owned(), uploaded.as_os_str().to_owned()])
            .collect();
        let code = exec(
            &dir.path().join("pod"),
            0,
            Some(&runtime_data),
            None,
            &command,
        )
        .await
        .expect("runs");
        assert_eq!(
            code, 0,
            "the first checkpoint was uploaded while the command ran"
        );
        assert!(uploaded.join("epoch-2.pth").is_file(), "the last upload");
        assert!(
            !uploaded.join("notes").exists(),
            "the regex keeps only .pth files"
        );
    }

    #[tokio::test]
    async fn exec_moves_data_through_a_file_store() {
        use crate::data::{DataInput, DataOutput};
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DataStore {
            root: format!("file://{}/store", dir.path().display()),
            ..DataStore::default()
        };
        let upstream = dir.path().join("store/wf-1/produce");
        std::fs::create_dir_all(&upstream).expect("dirs");
        std::fs::write(upstream.join("a.csv"), "1\n").expect("write");
        std::fs::write(upstream.join("b.txt"), "2\n").expect("write");
        let export = format!("file://{}/store/export", dir.path().display());
        let task_data = TaskData {
            user_stores: Vec::new(),
            store: store.clone(),
            inputs: vec![DataInput {
                source: "task produce".into(),
                url: store.task_url("wf-1", "produce"),
                regex: Some(r"\.csv$".into()),
            }],
            outputs: vec![DataOutput {
                url: export,
                regex: None,
            }],
            intermediate: Some(store.task_url("wf-1", "consume")),
        };
        let spec = dir.path().join("data.json");
        // A description without checkpoints, as a server before them wrote.
        std::fs::write(&spec, serde_json::to_vec(&task_data).expect("json")).expect("write");
        let task_data = read_runtime_data(&spec).expect("reads back");
        assert!(task_data.checkpoints.is_empty());
        let pod = dir.path().join("pod");
        let command: Vec<OsString> = ["sh", "-c", "ls \"$0/input/0\" > \"$0/output/listing\""]
            .iter()
            .map(OsString::from)
            .chain([pod.as_os_str().to_owned()])
            .collect();
        let code = exec(&pod, 0, Some(&task_data), None, &command)
            .await
            .expect("runs");
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("store/export/listing")).expect("exported"),
            "a.csv\n"
        );
        assert!(dir.path().join("store/wf-1/consume/listing").is_file());
        assert!(dir
            .path()
            .join("store/wf-1/consume/.gantry-output")
            .is_file());

        // A missing input: 2010, and the command never runs.
        let mut missing = task_data.clone();
        missing.data.inputs[0].url = store.task_url("wf-1", "ghost");
        let marker = dir.path().join("ran");
        let command: Vec<OsString> = ["sh", "-c", "touch \"$0\""]
            .iter()
            .map(OsString::from)
            .chain([marker.as_os_str().to_owned()])
            .collect();
        let termination_log = dir.path().join("termination-log");
        let code = exec(
            &dir.path().join("pod2"),
            0,
            Some(&missing),
            Some(&termination_log),
            &command,
        )
        .await
        .expect("runs");
        assert_eq!(code, 2010);
        assert!(!marker.exists());
        let message: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&termination_log).expect("written"))
                .expect("JSON");
        assert_eq!(message["code"], 2010);
        assert!(
            message["error"]
                .as_str()
                .is_some_and(|e| e.contains("input 0")),
            "{message}"
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
