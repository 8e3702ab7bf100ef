//! One task's run, from acceptance to its final report: INITIALIZING (the
//! sandbox check and the task's host directories), the input download, the
//! barrier of its group, RUNNING (the sandboxed process), the output upload,
//! and the final status.
//!
//! Invariants:
//! - Every accepted task sends exactly one final status, after all its logs:
//!   SCHEDULING (sent on acceptance) → INITIALIZING → RUNNING →
//!   COMPLETED/FAILED…, stopping early on a failure before the process
//!   starts.
//! - Tasks never run unsandboxed: without bubblewrap every task fails to
//!   start.
//! - A task leaves the task table before its final report (the outbox's
//!   reconnect invariant: a task listed in `Hello` reports after it).
//! - A barrier group's tasks start their processes only once every one of
//!   them is prepared; a task that fails or is canceled before that still
//!   counts itself in, so it never strands the rest.
//! - The run's log offsets are one sequence: the executor's note first,
//!   then the download's lines, the process output (checkpoint lines
//!   among it), the last checkpoints' lines, the upload's lines.
//! - Checkpoints are read inside the task's sandbox (`task_files`),
//!   uploaded every `frequency` while the command runs and once after it
//!   exits (not after a cancel or an eviction, as the output).
//! - The command and args run with their `$(VAR)` references expanded from
//!   the task's environment, as kubelet runs them on Kubernetes.
//! - A task runs in its own cgroup with the limits of its `resources`
//!   (as root always: without cgroups it fails to start; an unprivileged
//!   operator without a delegated cgroup runs it unlimited and says so in
//!   its log). A kill by the memory limit or output past the storage limit
//!   ends it FAILED_EVICTED (3004), as OSMO reports an OOMKilled or evicted
//!   pod.
//! - The task's directories are removed once its run is over (after the
//!   upload), before its final report.

use super::Shared;
use crate::clock::now_ms;
use crate::data;
use crate::operator::local::cgroup::{Limits, TaskCgroup};
use crate::operator::local::error::{ExecError, Stopped};
use crate::operator::local::exec_session::SandboxEntry;
use crate::operator::local::expansion;
use crate::operator::local::gpu;
use crate::operator::local::image::{self as images, PulledImage};
use crate::operator::local::log_lines;
use crate::operator::local::netns::TaskNet;
use crate::operator::local::process::{self, ChildSetup, Exit};
use crate::operator::local::sandbox::{self, Network, SandboxRoot, SandboxSpec};
use crate::operator::local::staging::{self, Prepared};
use crate::operator::local::task_files::{self, TaskFiles};
use crate::operator::local::usage;
use crate::protocol::{CheckpointPlan, FromOperator, LogLine, LogStream, TaskLaunch};
use gantry_storage::TaskStatus;
use std::convert::Infallible;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What a run in an image needs beyond a host run.
struct InImage {
    argv: Vec<String>,
    /// The image's environment under the launch's, `HOME` the user's.
    environment: std::collections::BTreeMap<String, String>,
    /// The generated files bound over the image's `/etc`.
    etc_binds: Vec<(String, String)>,
    root: PathBuf,
    run_as: images::RunAs,
    workdir: String,
}

/// The command, environment, user, working directory and `/etc` of a run in
/// `image`, mounted at `root`; every mount point made safe under it.
fn in_image(
    image: &PulledImage,
    root: &std::path::Path,
    (command, args): (&[String], &[String]),
    launch: &TaskLaunch,
    prepared: &Prepared,
    gpus: &gpu::GpuPlan,
) -> Result<InImage, ExecError> {
    let argv = images::run_config::argv(&image.config, command, args)
        .map_err(|error| ExecError::Image(format!("image {}: {error}", launch.image)))?;
    let run_as = images::run_config::run_as(&image.rootfs, image.config.user.as_deref())
        .map_err(|error| ExecError::Image(format!("image {}: {error}", launch.image)))?;
    let mut environment = std::collections::BTreeMap::new();
    environment.insert("HOME".to_string(), run_as.home.clone());
    environment.extend(images::run_config::environment(&image.config));
    environment.extend(launch.environment.clone());
    let etc_binds = staging::image_etc_binds(&prepared.etc_dir)?;
    let mut destinations: Vec<String> = vec![
        "/proc".into(),
        "/dev".into(),
        sandbox::SANDBOX_OUTPUT.into(),
    ];
    destinations
        .extend((0..prepared.inputs.len()).map(|n| format!("{}/{n}", sandbox::SANDBOX_INPUTS)));
    destinations.extend(prepared.files.iter().map(|(_, inside)| inside.clone()));
    destinations.extend(etc_binds.iter().map(|(_, inside)| inside.clone()));
    destinations.extend(
        gpus.devices
            .iter()
            .chain(&gpus.binds)
            .map(|(_, inside)| inside.clone()),
    );
    let destinations: Vec<&str> = destinations.iter().map(String::as_str).collect();
    images::root::prepare_mount_points(root, &destinations).map_err(ExecError::Image)?;
    let workdir = image
        .config
        .working_dir
        .clone()
        .filter(|dir| dir.starts_with('/'))
        .unwrap_or_else(|| "/".to_string());
    Ok(InImage {
        argv,
        environment,
        etc_binds,
        root: root.to_path_buf(),
        run_as,
        workdir,
    })
}

/// Checkpoint lines waiting for the run's batcher, at most.
const SIDE_LINES_QUEUED_MAX: usize = 1024;

/// Holds tasks of a barrier group until every one of them is prepared.
/// A count rather than `tokio::sync::Barrier`: a task that fails or is
/// canceled still counts itself in and then leaves, never stranding the rest.
#[derive(Clone)]
pub(super) struct GroupGate {
    unprepared: Arc<watch::Sender<usize>>,
}

impl GroupGate {
    pub(super) fn new(tasks: usize) -> GroupGate {
        GroupGate {
            unprepared: Arc::new(watch::channel(tasks).0),
        }
    }

    fn arrive(&self) {
        self.unprepared
            .send_modify(|left| *left = left.saturating_sub(1));
    }

    async fn all_arrived(&self) {
        let mut left = self.unprepared.subscribe();
        let _ = left.wait_for(|left| *left == 0).await;
    }
}

impl Shared {
    /// One task from acceptance to its final report.
    pub(super) async fn drive(
        &self,
        launch: TaskLaunch,
        cancel: watch::Receiver<Option<String>>,
        gate: Option<GroupGate>,
        net: TaskNet,
    ) {
        let key = launch.key.clone();
        let outcome = self.run(&launch, cancel, gate, net).await;
        // The output was uploaded (or is not kept): the task's host
        // directories go before the final report.
        let (work_dir, run) = (self.config.work_dir.clone(), key.clone());
        let removed = tokio::task::spawn_blocking(move || staging::remove(&work_dir, &run)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "removing the task's directory"),
            Err(error) => tracing::warn!(%error, "removing the task's directory"),
        }
        // Leave the running set before the final report: see the outbox's
        // reconnect invariant.
        self.tasks.remove(&key);
        let (status, exit_code, message) = match outcome {
            Ok(exit) => final_status(&exit),
            Err(Stopped::Canceled(reason)) => (
                TaskStatus::Failed,
                None,
                Some(format!("canceled: {reason}")),
            ),
            Err(Stopped::Failed(error)) => {
                let (status, code) = error.report();
                (status, Some(code), Some(error.to_string()))
            }
        };
        tracing::info!(workflow = %key.workflow_id, task = %key.task, %status, exit_code, "task finished");
        self.outbox
            .task_status(&key, status, exit_code, message)
            .await;
    }

    async fn run(
        &self,
        launch: &TaskLaunch,
        mut cancel: watch::Receiver<Option<String>>,
        gate: Option<GroupGate>,
        net: TaskNet,
    ) -> Result<Exit, Stopped> {
        if let TaskNet::Refused(reason) = &net {
            return Err(ExecError::Network(reason.clone()).into());
        }
        // The executor's own note takes the run's first offset; data phase
        // lines and output follow in order.
        let first_offset = log_lines::run_offset_base();
        let prepared = match self.prepare(launch, first_offset).await {
            Ok((bwrap, prepared, image, next_offset)) => self
                .download(launch, &prepared, &mut cancel, next_offset)
                .await
                .map(|next_offset| (bwrap, prepared, image, next_offset)),
            Err(stopped) => Err(stopped),
        };
        if let Some(gate) = &gate {
            gate.arrive();
        }
        let (bwrap, prepared, image, next_offset) = prepared?;
        if let Some(gate) = &gate {
            tokio::select! {
                _ = gate.all_arrived() => {}
                reason = process::cancel_reason(&mut cancel) => return Err(Stopped::Canceled(reason)),
            }
        }
        let canceled = cancel.borrow().clone();
        if let Some(reason) = canceled {
            return Err(Stopped::Canceled(reason));
        }

        // kubelet expands `$(VAR)` from the environment on Kubernetes; here
        // the executor does, so a spec behaves the same on both.
        let expand = |parts: &[String]| -> Vec<String> {
            parts
                .iter()
                .map(|part| expansion::expand(part, &launch.environment))
                .collect()
        };
        let (command, args) = (expand(&launch.command), expand(&launch.args));
        let gpus = self.gpus_for(launch)?;
        let gpu_plan = gpus
            .as_ref()
            .map(|lease| lease.plan.clone())
            .unwrap_or_default();
        let in_image = match (&image, &prepared.image_root) {
            (Some(image), Some(root)) => Some(in_image(
                image,
                root,
                (&command, &args),
                launch,
                &prepared,
                &gpu_plan,
            )?),
            _ => None,
        };
        let mut environment = in_image
            .as_ref()
            .map_or_else(|| launch.environment.clone(), |run| run.environment.clone());
        if gpus.is_some() {
            environment.extend(gpu_plan.env.iter().cloned());
        } else {
            // As on Kubernetes (OSMO): a task without GPUs sees none.
            environment
                .entry("NVIDIA_VISIBLE_DEVICES".to_string())
                .or_default();
        }
        let argv: Vec<String> = match &in_image {
            Some(run) => run.argv.clone(),
            None => command.into_iter().chain(args).collect(),
        };
        let resources = &launch.placement.resources;
        let (cgroup, next_offset) = self.task_cgroup(launch, next_offset).await?;
        let seccomp = self.seccomp_fds()?;
        let seccomp_fds: Vec<i32> = seccomp.iter().map(AsRawFd::as_raw_fd).collect();
        let secret_args = secret_args_fd(launch)?;
        let secret_args_fd = secret_args.as_ref().map(AsRawFd::as_raw_fd);
        let hostname = staging::hostname(&launch.key.task);
        let args = sandbox::bwrap_args(&SandboxSpec {
            key: &launch.key,
            output_dir: &prepared.output_dir,
            inputs: &prepared.inputs,
            files: &prepared.files,
            environment: &environment,
            argv: &argv,
            etc_dir: &prepared.etc_dir,
            etc_binds: in_image
                .as_ref()
                .map_or(&prepared.etc_binds, |run| &run.etc_binds),
            hostname: &hostname,
            network: match net {
                TaskNet::Own | TaskNet::Refused(_) => Network::Own,
                TaskNet::Host | TaskNet::Group(_) => Network::Inherit,
            },
            seccomp_fds: &seccomp_fds,
            tmpfs_bytes: resources.storage_bytes,
            secret_args_fd,
            root: match &in_image {
                Some(run) => SandboxRoot::Image {
                    root: &run.root,
                    uid: run.run_as.uid,
                    gid: run.run_as.gid,
                    workdir: &run.workdir,
                },
                None => SandboxRoot::Host,
            },
            devices: &gpu_plan.devices,
            device_binds: &gpu_plan.binds,
        });
        let setup = ChildSetup {
            cgroup_procs: cgroup
                .as_ref()
                .map(TaskCgroup::join_fds)
                .unwrap_or_default(),
            netns: match &net {
                TaskNet::Group(group) => Some(group.raw_fd()),
                TaskNet::Host | TaskNet::Own | TaskNet::Refused(_) => None,
            },
            inherit: seccomp_fds.iter().copied().chain(secret_args_fd).collect(),
        };
        let child = process::spawn(&bwrap, args, setup);
        // The child holds its own copies now.
        drop(seccomp);
        drop(secret_args);
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                remove_cgroup(cgroup).await;
                return Err(error.into());
            }
        };
        self.outbox
            .task_status(&launch.key, TaskStatus::Running, None, None)
            .await;
        // Checkpoints read the task's files through its sandbox's root;
        // an exec enters the sandbox and its cgroup.
        let files = child.id().map(TaskFiles::new);
        if let Some(bwrap_pid) = child.id() {
            self.tasks.set_sandbox(
                &launch.key,
                SandboxEntry {
                    bwrap_pid,
                    cgroup_procs: cgroup
                        .as_ref()
                        .map(TaskCgroup::procs_paths)
                        .unwrap_or_default(),
                },
            );
        }
        let (side_tx, side_lines) = mpsc::channel(SIDE_LINES_QUEUED_MAX);
        let supervised = process::supervise(
            child,
            (&launch.key, &self.outbox),
            cancel.clone(),
            usage::exceeded(prepared.output_dir.clone(), resources.storage_bytes),
            (next_offset, side_lines),
        );
        let exit = match (&launch.data, &files) {
            (Some(data), Some(files)) if !launch.extras.checkpoints.is_empty() => {
                let say = |text: String| {
                    // Best effort, as progress lines are.
                    let _ = side_tx.try_send(executor_line(text));
                };
                let open_dir = |path: &str| files.open_dir(path);
                let checkpoints = &launch.extras.checkpoints;
                tokio::select! {
                    exit = supervised => exit,
                    never = data::checkpoint_periodically(data, checkpoints, data::TaskFiles::Beneath(&open_dir), &say) => match never {},
                    never = keep_open(files, checkpoints) => match never {},
                }
            }
            _ => {
                drop(side_tx);
                supervised.await
            }
        };
        // Read before the cgroup goes; its count is the OOM killer's verdict.
        let oom_kills = remove_cgroup(cgroup).await;
        let mut exit = exit?;
        // Set by the storage watch: the whole task was evicted, as kubelet
        // evicts a pod (its output is over its bound and not uploaded).
        let evicted_for_storage = exit.evicted.is_some();
        if oom_kills > 0 && exit.code != 0 && exit.canceled.is_none() && exit.evicted.is_none() {
            let limit = resources.memory_bytes.map_or_else(
                || "its memory".to_string(),
                |b| format!("its memory limit of {b} bytes"),
            );
            exit.evicted = Some(format!(
                "the task ran out of memory (OOMKilled): {oom_kills} process(es) killed at {limit}"
            ));
        }
        // OSMO uploads after every exit except a cancel (or an eviction of
        // the pod: its uploader goes with it). An OOM kill is the task's
        // container only, so its output is uploaded.
        if exit.canceled.is_none() && !evicted_for_storage {
            let mut next_offset = exit.next_offset;
            if let Some(files) = &files {
                next_offset = self
                    .last_checkpoints(launch, files, &mut cancel, next_offset)
                    .await?;
            }
            self.upload(launch, &prepared, &mut cancel, next_offset)
                .await?;
        }
        Ok(exit)
    }

    /// INITIALIZING: checks the sandbox, pulls the task's image in image
    /// mode (its progress in the task's log), and builds the task's host
    /// dirs; the next log offset.
    async fn prepare(
        &self,
        launch: &TaskLaunch,
        first_offset: u64,
    ) -> Result<(PathBuf, Prepared, Option<PulledImage>, u64), Stopped> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ExecError::ShuttingDown.into());
        }
        let bwrap = self.bwrap.clone().map_err(ExecError::MissingSandbox)?;
        self.outbox
            .task_status(&launch.key, TaskStatus::Initializing, None, None)
            .await;
        let mut offset = first_offset;
        let image = match &self.images {
            None => {
                self.say(
                    launch,
                    &mut offset,
                    format!(
                        "image {} is not pulled by the local executor (--task-root host); the command runs on the host's /usr",
                        launch.image
                    ),
                )
                .await;
                None
            }
            Some(Err(message)) => {
                return Err(ExecError::Image(format!(
                    "image {}: the image cache cannot be used: {message}",
                    launch.image
                ))
                .into())
            }
            Some(Ok(store)) => Some(self.pull(store, launch, &mut offset).await?),
        };
        let work_dir = self.config.work_dir.clone();
        let task = launch.clone();
        let lower = image.as_ref().map(|image| image.rootfs.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            staging::prepare(&work_dir, &task, lower.as_deref())
        })
        .await
        .map_err(|e| ExecError::Join(e.to_string()))??;
        Ok((bwrap, prepared, image, offset))
    }

    /// The GPUs the task asks for, leased for its run.
    fn gpus_for(&self, launch: &TaskLaunch) -> Result<Option<gpu::GpuLease>, ExecError> {
        let count = launch.placement.resources.gpu.unwrap_or(0);
        if count == 0 {
            return Ok(None);
        }
        let lease = self.gpus.allocate(count).map_err(ExecError::Gpu)?;
        if let Some(missing) = gpu::missing_on_host(&lease.plan) {
            return Err(ExecError::Gpu(format!(
                "GPU(s) {}: {missing}, which the CDI spec names, is not on this host",
                lease.names.join(", ")
            )));
        }
        Ok(Some(lease))
    }

    /// One executor line in the task's log at `offset` (then moved on).
    async fn say(&self, launch: &TaskLaunch, offset: &mut u64, text: String) {
        let line = LogLine {
            offset: *offset,
            stream: LogStream::Osmo,
            time: now_ms(),
            text,
        };
        *offset += 1;
        self.outbox
            .send(FromOperator::Logs {
                key: launch.key.clone(),
                lines: vec![line],
            })
            .await;
    }

    /// The task's image from the cache, pulled first when missing; each
    /// step a line of the task's log.
    async fn pull(
        &self,
        store: &images::ImageStore,
        launch: &TaskLaunch,
        offset: &mut u64,
    ) -> Result<PulledImage, Stopped> {
        let started = std::time::Instant::now();
        let (lines, mut progress) = mpsc::unbounded_channel::<String>();
        let pulling = async move {
            let say = move |text: String| {
                let _ = lines.send(text);
            };
            store
                .ensure(&launch.image, &launch.extras.registry_auths, &say)
                .await
        };
        let quoted = format!("{:?}", launch.image);
        let forwarding = async {
            // Any progress means the registry is asked: a pull, as the
            // kubelet's events name it.
            let mut pulling_said = false;
            while let Some(text) = progress.recv().await {
                if !pulling_said {
                    pulling_said = true;
                    self.outbox
                        .task_event(&launch.key, "Pulling", format!("Pulling image {quoted}"))
                        .await;
                }
                self.say(launch, offset, text).await;
            }
        };
        let (pulled, ()) = tokio::join!(pulling, forwarding);
        let image = match pulled {
            Ok(image) => image,
            Err(error) => {
                self.outbox
                    .task_event(
                        &launch.key,
                        "Failed",
                        format!("Failed to pull image {quoted}: {error}"),
                    )
                    .await;
                return Err(ExecError::Image(error).into());
            }
        };
        let message = if image.cached {
            format!("Container image {quoted} already present on machine")
        } else {
            format!(
                "Successfully pulled image {quoted} in {}ms",
                started.elapsed().as_millis()
            )
        };
        self.outbox.task_event(&launch.key, "Pulled", message).await;
        let how = if image.cached { "cached" } else { "pulled" };
        self.say(
            launch,
            offset,
            format!(
                "[image] {} ({}) {how}, ready in {} ms",
                launch.image,
                image.digest,
                started.elapsed().as_millis()
            ),
        )
        .await;
        Ok(image)
    }
}

impl Shared {
    /// The task's cgroup with the limits of its resources, or `None` with a
    /// log line when this operator has no cgroups and is not root.
    async fn task_cgroup(
        &self,
        launch: &TaskLaunch,
        next_offset: u64,
    ) -> Result<(Option<TaskCgroup>, u64), Stopped> {
        let cgroups = match &self.cgroups {
            Ok(cgroups) => Arc::clone(cgroups),
            Err(why) if !nix::unistd::geteuid().is_root() => {
                self.note(
                    launch,
                    next_offset,
                    format!("resource limits are not enforced: {why}"),
                )
                .await;
                return Ok((None, next_offset + 1));
            }
            Err(why) => return Err(ExecError::Limits(why.clone()).into()),
        };
        let resources = &launch.placement.resources;
        let limits = Limits {
            cpus: resources.cpu,
            memory_bytes: resources.memory_bytes,
            pids_max: Some(
                self.config
                    .pids_max
                    .unwrap_or_else(|| super::default_pids_max(resources.cpu)),
            ),
        };
        let key = &launch.key;
        let name = format!("{}.{}.{}", key.workflow_id, key.task, key.retry_id);
        // Workflow and task names were checked as path components in staging.
        let made = tokio::task::spawn_blocking(move || cgroups.create(&name, &limits))
            .await
            .map_err(|e| ExecError::Join(e.to_string()))?;
        let cgroup = made.map_err(|e| ExecError::Limits(e.to_string()))?;
        Ok((Some(cgroup), next_offset))
    }

    /// The seccomp filters, each in a pipe the sandbox reads.
    fn seccomp_fds(&self) -> Result<Vec<OwnedFd>, ExecError> {
        let programs = self
            .seccomp
            .as_ref()
            .map_err(|why| ExecError::Seccomp(why.clone()))?;
        programs
            .iter()
            .map(|program| {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| ExecError::Seccomp(format!("pipe: {e}")))?;
                // A filter is a few KiB, far below a pipe's buffer.
                std::fs::File::from(write)
                    .write_all(program)
                    .map_err(|e| ExecError::Seccomp(format!("writing the filter: {e}")))?;
                Ok(read)
            })
            .collect()
    }

    /// One line of the executor's own in the task's log.
    async fn note(&self, launch: &TaskLaunch, offset: u64, text: String) {
        let line = LogLine {
            offset,
            stream: LogStream::Osmo,
            time: now_ms(),
            text,
        };
        self.outbox
            .send(FromOperator::Logs {
                key: launch.key.clone(),
                lines: vec![line],
            })
            .await;
    }
}

/// A line of the executor's own; the batcher gives it its offset.
fn executor_line(text: String) -> LogLine {
    LogLine {
        offset: 0,
        stream: LogStream::Osmo,
        time: now_ms(),
        text,
    }
}

/// Opens the checkpoints' directories again and again while the task
/// runs, so their last upload reads them after the sandbox is gone.
async fn keep_open(files: &TaskFiles, checkpoints: &[CheckpointPlan]) -> Infallible {
    loop {
        for checkpoint in checkpoints {
            // Not there yet, or gone: the last one opened is kept.
            let _ = files.open_dir(&checkpoint.path);
        }
        tokio::time::sleep(task_files::REFRESH_INTERVAL).await;
    }
}

/// Removes the task's cgroup; returns how many of its processes the OOM
/// killer had killed.
async fn remove_cgroup(cgroup: Option<TaskCgroup>) -> u64 {
    let Some(cgroup) = cgroup else {
        return 0;
    };
    tokio::task::spawn_blocking(move || {
        let kills = cgroup.oom_kills();
        cgroup.remove();
        kills
    })
    .await
    .unwrap_or(0)
}

fn final_status(exit: &Exit) -> (TaskStatus, Option<i32>, Option<String>) {
    if let Some(reason) = &exit.evicted {
        let status = TaskStatus::FailedEvicted;
        return (status, status.default_exit_code(), Some(reason.clone()));
    }
    if exit.code == 0 {
        return (TaskStatus::Completed, Some(0), None);
    }
    let how = match exit.signal {
        Some(signal) => format!("killed by signal {signal}"),
        None => format!("exited with code {}", exit.code),
    };
    let message = match &exit.canceled {
        Some(reason) => format!("canceled: {reason} ({how})"),
        None => how,
    };
    (TaskStatus::Failed, Some(exit.code), Some(message))
}

/// A sealed memory file holding the task's credential `--setenv`
/// arguments for `bwrap --args` (`None` without any): the values stay off
/// every command line.
fn secret_args_fd(launch: &TaskLaunch) -> Result<Option<OwnedFd>, ExecError> {
    let args = staging::credential_env_args(launch);
    if args.is_empty() {
        return Ok(None);
    }
    let failed = |error: nix::Error| ExecError::Secrets(error.to_string());
    let fd = nix::sys::memfd::memfd_create(
        c"gantry-credentials",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .map_err(failed)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&args)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
        .map_err(|error| ExecError::Secrets(error.to_string()))?;
    Ok(Some(OwnedFd::from(file)))
}
