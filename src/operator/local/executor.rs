//! The local operator: its public API, the loop that serves one
//! control-plane connection at a time, and the state its parts share. The
//! parts: `tasks` (the table of running tasks and their cancel switches),
//! `task_run` (one task from acceptance to its final report) and
//! `data_phases` (its input download and output upload). Each states its own
//! invariants.
//!
//! Invariants:
//! - Task state lives outside any connection, so a reconnect (`serve` again)
//!   finds running tasks, and their later reports go to the newest sender.
//! - A session connects in the task's own network (`open_session`): what
//!   the task could not reach, a session cannot either.
//! - `shutdown` kills every running task and waits at most `SHUTDOWN_GRACE`
//!   for their final reports; from then on a task fails to start.

mod data_phases;
mod task_run;
mod tasks;

use super::cgroup::Cgroups;
use super::exec_session;
use super::inventory;
use super::netns::{self, GroupNet, NetError, TaskNet};
use super::outbox::Outbox;
use super::sandbox;
use super::seccomp;
use super::udp_session::{self, UdpTarget};
use crate::protocol::session::SessionAnswer;
use crate::protocol::{FromOperator, GroupLaunch, SessionKind, ToOperator, HEARTBEAT_INTERVAL};
use gantry_storage::{TaskKey, TaskStatus};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use task_run::GroupGate;
use tasks::TaskTable;
use tokio::sync::mpsc;

/// How long `shutdown` waits for killed tasks to report before returning.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Backend name announced in `Hello`.
    pub backend: String,
    /// Per-task directories live here (see `staging`).
    pub work_dir: PathBuf,
    /// The bubblewrap binary; `None` looks up `bwrap` on PATH.
    pub bwrap: Option<PathBuf>,
    /// Processes (and threads) a task may have at once; `None` is
    /// [`default_pids_max`] of the task's CPUs.
    pub pids_max: Option<u64>,
    /// The task's image, or the host's `/usr` (`--task-root`).
    pub task_root: super::image::TaskRoot,
    /// Where CDI specs describe this host's GPUs (`gpu::CDI_DIRS`).
    pub cdi_dirs: Vec<PathBuf>,
}

/// A task's process limit when the operator sets none: 1024, or 256 per
/// requested CPU when that is more.
pub fn default_pids_max(cpus: Option<u64>) -> u64 {
    cpus.unwrap_or(0).saturating_mul(256).max(1024)
}

pub struct LocalOperator {
    shared: Arc<Shared>,
}

/// What the job loop and the tasks it spawns share.
struct Shared {
    config: LocalConfig,
    /// The sandbox binary, or the message every task fails with.
    bwrap: Result<PathBuf, String>,
    /// The compiled seccomp filters, or why they could not be built (then
    /// every task fails to start).
    seccomp: Result<Vec<Vec<u8>>, String>,
    /// The operator's cgroup subtree, or why there is none.
    cgroups: Result<Arc<Cgroups>, String>,
    /// In image mode: the image cache, or why it cannot be opened (then
    /// every task fails to start, naming why); `None` in host mode.
    images: Option<Result<Arc<super::image::ImageStore>, String>>,
    /// This host's GPUs and which are free.
    gpus: super::gpu::Gpus,
    /// Each group's network namespace while a task of it holds it, so a
    /// task launched again alone (a retry) joins its running siblings.
    nets: Mutex<HashMap<(String, String), Weak<GroupNet>>>,
    tasks: TaskTable,
    outbox: Outbox,
    shutting_down: AtomicBool,
}

impl LocalOperator {
    pub fn new(config: LocalConfig) -> LocalOperator {
        let bwrap = sandbox::locate_bwrap(config.bwrap.as_deref());
        if let Err(message) = &bwrap {
            tracing::error!("{message}");
        }
        let seccomp = seccomp::programs().map_err(|e| e.to_string());
        if let Err(message) = &seccomp {
            tracing::error!("{message}");
        }
        let cgroups = Cgroups::detect().map(Arc::new).map_err(|e| e.to_string());
        if let Err(message) = &cgroups {
            tracing::warn!("task resource limits: {message}");
        }
        let images = match &config.task_root {
            super::image::TaskRoot::Host => None,
            super::image::TaskRoot::Image {
                cache_dir,
                insecure_registries,
                mirrors,
                cache_max_bytes,
            } => {
                let store = super::image::ImageStore::open(
                    cache_dir,
                    insecure_registries.clone(),
                    mirrors.clone(),
                    Some(*cache_max_bytes),
                )
                .map(Arc::new);
                if let Err(message) = &store {
                    tracing::error!("{message}");
                }
                Some(store)
            }
        };
        let gpus = super::gpu::Gpus::discover(&config.cdi_dirs);
        if gpus.count() > 0 {
            tracing::info!(gpus = gpus.count(), "GPUs from the host's CDI specs");
        }
        LocalOperator {
            shared: Arc::new(Shared {
                gpus,
                config,
                bwrap,
                seccomp,
                cgroups,
                images,
                nets: Mutex::default(),
                tasks: TaskTable::default(),
                outbox: Outbox::default(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// Runs until `from_server` closes: first sends FromOperator::Hello{backend, version: env!("CARGO_PKG_VERSION"), running: keys of tasks still running in this process}, then acts on each message and sends FromOperator::JobDone{job_id} once it has acted, plus TaskStatus and Logs messages as tasks progress.
    pub async fn serve(
        &self,
        mut from_server: mpsc::Receiver<ToOperator>,
        to_server: mpsc::Sender<FromOperator>,
    ) {
        // The running list is taken under the outbox lock: a task finishing
        // meanwhile is either listed and reports on this connection after
        // Hello, or already out of the set (finished) when the list is taken.
        let shared = &self.shared;
        shared
            .outbox
            .connect(to_server, || FromOperator::Hello {
                backend: shared.config.backend.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                running: shared.tasks.running(),
                executor: crate::protocol::EXECUTOR_LOCAL.to_string(),
            })
            .await;
        // Heartbeats with this host's inventory, on connect and then every
        // interval, for as long as this connection is served.
        let heartbeats = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                loop {
                    let (name, dir, gpus) = (
                        shared.config.backend.clone(),
                        shared.config.work_dir.clone(),
                        shared.gpus.count(),
                    );
                    let node = tokio::task::spawn_blocking(move || {
                        inventory::this_host(&name, &dir, gpus)
                    })
                    .await;
                    match node {
                        Ok(node) => {
                            shared
                                .outbox
                                .send(FromOperator::Heartbeat { nodes: vec![node] })
                                .await
                        }
                        Err(error) => tracing::warn!(%error, "reading the inventory failed"),
                    }
                    tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                }
            })
        };
        let _stop_heartbeats = AbortOnDrop(heartbeats);

        while let Some(message) = from_server.recv().await {
            // Folded, a create job is always `CreateGroup`.
            let job_id = match message.with_extras_folded() {
                ToOperator::CreateGroup { job_id, group }
                | ToOperator::CreateGroupWithExtras { job_id, group, .. } => {
                    self.create_group(group).await;
                    job_id
                }
                ToOperator::CancelGroup {
                    job_id,
                    workflow_id,
                    group,
                    reason,
                } => {
                    self.shared
                        .tasks
                        .cancel_group(&workflow_id, &group, &reason);
                    job_id
                }
                // Answered by the session (`open_session`), never queued here.
                ToOperator::OpenSession { .. } => continue,
                // A local pool has no scheduler queues.
                ToOperator::SyncQueues { .. } => continue,
            };
            self.shared
                .outbox
                .send(FromOperator::JobDone { job_id })
                .await;
        }
    }

    /// A TCP connection (or UDP sockets, `udp_session`) to the port a
    /// session names, made in the task's network (its group's namespace:
    /// the task's `localhost`); or an exec in its sandbox.
    pub async fn open_session(&self, key: &TaskKey, kind: &SessionKind) -> SessionAnswer {
        let task = format!("task '{}' of {}", key.task, key.workflow_id);
        let net = match self.shared.tasks.net_of(key) {
            None => return Err(format!("{task} is not running on this operator")),
            Some(None) => return Err(format!("{task} is still starting")),
            Some(Some(net)) => net,
        };
        let port = match kind {
            SessionKind::PortForward { port } => *port,
            SessionKind::UdpForward { port } => {
                let target = match net {
                    TaskNet::Host => UdpTarget::Host,
                    TaskNet::Group(net) => UdpTarget::Group(net),
                    TaskNet::Own => return Err(
                        "the task has a network namespace of its own, which sessions cannot enter"
                            .to_string(),
                    ),
                    TaskNet::Refused(reason) => return Err(reason),
                };
                return udp_session::open(target, *port).await;
            }
            SessionKind::Exec(request) => {
                return match self.shared.tasks.sandbox_of(key) {
                    None => Err(format!("{task} is not running on this operator")),
                    Some(None) => Err(format!("{task} is still starting")),
                    Some(Some(sandbox)) => exec_session::open(&sandbox, request).await,
                };
            }
        };
        let stream = match net {
            TaskNet::Host => tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
                .await
                .map_err(|error| error.to_string()),
            TaskNet::Group(net) => netns::connect_inside(net, port).await,
            TaskNet::Own => Err("the task has a network namespace of its own (this operator cannot create group namespaces without CAP_SYS_ADMIN), which sessions cannot enter".to_string()),
            TaskNet::Refused(reason) => Err(reason),
        };
        match stream {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Err(error) => Err(format!("cannot connect to port {port} in {task}: {error}")),
        }
    }

    /// Kill every running task (used on shutdown). Waits, boundedly, for
    /// their final reports; afterwards new tasks fail to start.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.shared
            .tasks
            .cancel_all("the executor is shutting down");
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tasks.drained()).await;
        if drained.is_err() {
            tracing::warn!("tasks still finishing after {SHUTDOWN_GRACE:?}; shutting down anyway");
        }
    }

    async fn create_group(&self, group: GroupLaunch) {
        let accepted = self.shared.tasks.accept(&group);
        for (launch, _) in &accepted {
            tracing::info!(workflow = %launch.key.workflow_id, task = %launch.key.task, "task accepted");
            self.shared
                .outbox
                .task_status(&launch.key, TaskStatus::Scheduling, None, None)
                .await;
        }
        let gate = (group.barrier && accepted.len() > 1).then(|| GroupGate::new(accepted.len()));
        let group_net = if accepted
            .iter()
            .any(|(launch, _)| !netns::wants_host_network(&launch.placement))
        {
            let outbound = accepted.iter().any(|(launch, _)| {
                !netns::wants_host_network(&launch.placement)
                    && netns::wants_outbound_network(&launch.placement)
            });
            self.group_network(&group, outbound).await
        } else {
            TaskNet::Own
        };
        for (launch, cancel) in accepted {
            let shared = Arc::clone(&self.shared);
            let gate = gate.clone();
            let net = if netns::wants_host_network(&launch.placement) {
                TaskNet::Host
            } else {
                group_net.clone()
            };
            self.shared.tasks.set_net(&launch.key, &net);
            tokio::spawn(async move { shared.drive(launch, cancel, gate, net).await });
        }
    }
}

impl LocalOperator {
    /// The group's network namespace (the one its running tasks are in, else
    /// a new one); a namespace per task where none can be made (an
    /// unprivileged operator).
    async fn group_network(&self, group: &GroupLaunch, outbound: bool) -> TaskNet {
        let key = (group.workflow_id.clone(), group.group.clone());
        let running = {
            let nets = self
                .shared
                .nets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            nets.get(&key).and_then(Weak::upgrade)
        };
        if let Some(net) = running {
            return TaskNet::Group(net);
        }
        let scratch = outbound.then(|| self.shared.config.work_dir.clone());
        let net = new_network(group, scratch).await;
        if let TaskNet::Group(made) = &net {
            let mut nets = self
                .shared
                .nets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            nets.retain(|_, held| held.strong_count() > 0);
            nets.insert(key, Arc::downgrade(made));
        }
        net
    }
}

/// A namespace for `group`, with outbound network when `outbound_scratch`
/// names where its daemon keeps files. Outbound network asked for and not
/// given refuses the tasks; otherwise a failure leaves each task a
/// namespace of its own.
async fn new_network(group: &GroupLaunch, outbound_scratch: Option<PathBuf>) -> TaskNet {
    let outbound = outbound_scratch.is_some();
    let made =
        tokio::task::spawn_blocking(move || netns::new_group_net(outbound_scratch.as_deref()))
            .await;
    match made {
        Ok(Ok(net)) => TaskNet::Group(Arc::new(net)),
        Ok(Err(error @ NetError::Outbound(_))) => TaskNet::Refused(error.to_string()),
        Ok(Err(error)) if outbound => TaskNet::Refused(format!(
            "the pool allows outbound network, which needs a network namespace of the group's own: {error}"
        )),
        Ok(Err(NetError::Unprivileged)) => TaskNet::Own,
        Ok(Err(error)) => {
            tracing::warn!(workflow = %group.workflow_id, group = %group.group, %error, "each task gets a network namespace of its own");
            TaskNet::Own
        }
        Err(error) => {
            tracing::warn!(%error, "each task gets a network namespace of its own");
            TaskNet::Own
        }
    }
}

/// Aborts a spawned task when dropped (when `serve` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
