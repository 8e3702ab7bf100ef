//! The Kubernetes operator: turns control-plane jobs into Kubernetes objects
//! and pod changes into task reports.
//!
//! This file holds [`KubernetesOperator`] (its public API and the job loop)
//! and the state its parts share; the parts are `tracking` (which tasks and
//! groups are tracked), `group_jobs` (CreateGroup and CancelGroup),
//! `group_objects` (a group's objects in the cluster, created and deleted
//! by label), `pod_watch` (pod changes → reports, the final report after
//! the log stream, cleanup after a group's last task) and `event_watch`
//! (Kubernetes events about task pods → task events). Each states its own
//! invariants.
//!
//! Invariants:
//! - `Hello` lists the tracked tasks that have not finished, including
//!   those of pods found by label (`osmo.task_uuid`) when `serve` starts,
//!   so tasks of a previous operator are reported, not run again.
//! - After `Hello`, the latest status of each unfinished task goes again:
//!   transitions made while no connection was live were dropped.
//! - Shutting the executor down stops watching; pods keep running, and the
//!   next operator finds them by their labels.

mod event_watch;
mod group_jobs;
mod group_objects;
mod pod_watch;
mod tracking;

use super::config::{KubernetesConfig, PoolQueue};
use super::error::KubeError;
use super::names::{self, MANAGED_SELECTOR};
use super::nodes::{node_inventory, NodeInventory};
use super::queues;
use super::sessions;
use super::status::pod_status;
use crate::operator::local::Outbox;
use crate::protocol::session::SessionAnswer;
use crate::protocol::{FromOperator, SessionKind, ToOperator};
use futures::StreamExt;
use gantry_storage::TaskKey;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracking::State;

pub struct KubernetesOperator {
    shared: Arc<Shared>,
    watchers: Vec<JoinHandle<()>>,
}

/// What the job loop, the pod watch and the tasks they spawn share.
struct Shared {
    config: KubernetesConfig,
    pods: Api<Pod>,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
    nodes: Store<Node>,
    shutting_down: AtomicBool,
}

impl KubernetesOperator {
    /// Starts watching the namespace's task pods and the cluster's nodes.
    pub async fn new(config: KubernetesConfig) -> Result<KubernetesOperator, KubeError> {
        let pods: Api<Pod> = Api::namespaced(config.client.clone(), &config.namespace);
        let (reader, writer) = reflector::store();
        let shared = Arc::new(Shared {
            pods: pods.clone(),
            outbox: Arc::new(Outbox::default()),
            state: Mutex::new(State::default()),
            nodes: reader,
            shutting_down: AtomicBool::new(false),
            config,
        });
        let node_api: Api<Node> = Api::all(shared.config.client.clone());
        let node_watch = tokio::spawn(async move {
            reflector::reflector(writer, watcher(node_api, watcher::Config::default()))
                .default_backoff()
                .for_each(|event| async move {
                    if let Err(error) = event {
                        tracing::warn!(%error, "node watch failed; retrying");
                    }
                })
                .await;
        });
        let watcher_shared = Arc::clone(&shared);
        let pod_watch = tokio::spawn(async move { watcher_shared.watch_pods(pods).await });
        let events: Api<Event> =
            Api::namespaced(shared.config.client.clone(), &shared.config.namespace);
        let watcher_shared = Arc::clone(&shared);
        let event_watch = tokio::spawn(async move { watcher_shared.watch_events(events).await });
        Ok(KubernetesOperator {
            shared,
            watchers: vec![node_watch, pod_watch, event_watch],
        })
    }

    /// Runs until `from_server` closes: first `Hello` (tasks whose pods
    /// exist and have not finished), then each job acted on and answered
    /// with `JobDone`, with `TaskStatus` and `Logs` as pods change.
    pub async fn serve(
        &self,
        mut from_server: mpsc::Receiver<ToOperator>,
        to_server: mpsc::Sender<FromOperator>,
    ) {
        let shared = &self.shared;
        if let Err(error) = shared.adopt_existing_pods().await {
            tracing::warn!(%error, "cannot list task pods; Hello lists only tasks known in memory");
        }
        shared
            .outbox
            .connect(to_server, || FromOperator::Hello {
                backend: shared.config.backend.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                running: shared.lock().running(),
                executor: crate::protocol::EXECUTOR_KUBERNETES.to_string(),
            })
            .await;
        // Transitions sent while no connection was live were dropped; the
        // latest status of each running task goes again (a repeat is a no-op).
        // Collected first, so the lock is not held across the sends.
        let latest = shared.lock().latest_statuses();
        for (key, status) in latest {
            shared.outbox.task_status(&key, status, None, None).await;
        }
        while let Some(message) = from_server.recv().await {
            // Folded, a create job is always `CreateGroup`.
            let job_id = match message.with_extras_folded() {
                ToOperator::CreateGroup { job_id, group }
                | ToOperator::CreateGroupWithExtras { job_id, group, .. } => {
                    shared.create_group(&group).await;
                    job_id
                }
                ToOperator::CancelGroup {
                    job_id,
                    workflow_id,
                    group,
                    reason,
                } => {
                    shared.cancel_group(&workflow_id, &group, &reason).await;
                    job_id
                }
                // Answered by the session (`Executor::open_session`).
                ToOperator::OpenSession { .. } => continue,
                // Not a job: applied beside the jobs, never holding them up.
                ToOperator::SyncQueues { pools } => {
                    let operator = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        let config = &operator.config;
                        let synced = queues::sync(
                            &config.client,
                            config.scheduler.scheduler_type,
                            &config.namespace,
                            &pools,
                        )
                        .await;
                        match synced {
                            Ok(()) => tracing::info!(pools = pools.len(), "queues synced"),
                            Err(error) => {
                                tracing::warn!(%error, "cannot sync the pools' queues; the next change or connection tries again")
                            }
                        }
                    });
                    continue;
                }
            };
            shared.outbox.send(FromOperator::JobDone { job_id }).await;
        }
    }

    /// This executor's end of a session into task `key`: through the API
    /// server's `exec` or `portforward` of the task's own pod.
    pub async fn open_session(&self, key: &TaskKey, kind: &SessionKind) -> SessionAnswer {
        let (pod, container) = {
            let state = self.shared.lock();
            let tracked = state
                .tasks
                .get(key)
                .filter(|tracked| tracked.finished.is_none())
                .ok_or_else(|| {
                    format!(
                        "task '{}' (retry {}) of workflow '{}' does not run on this backend",
                        key.task, key.retry_id, key.workflow_id
                    )
                })?;
            (tracked.pod.clone(), tracked.container.clone())
        };
        let pods = &self.shared.pods;
        match kind {
            SessionKind::PortForward { port } => sessions::port_forward(pods, &pod, *port).await,
            SessionKind::Exec(request) => sessions::exec(pods, &pod, &container, request).await,
            SessionKind::UdpForward { .. } => Err(
                "UDP port-forward into a Kubernetes task is not supported: the API server's port-forward carries TCP only"
                    .into(),
            ),
        }
    }

    /// Stops watching. Pods keep running: the next operator adopts them.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for watcher in &self.watchers {
            watcher.abort();
        }
        let streams: Vec<JoinHandle<()>> = self
            .shared
            .lock()
            .tasks
            .values_mut()
            .filter_map(|tracked| tracked.logs.take())
            .collect();
        for stream in streams {
            stream.abort();
        }
    }

    /// The cluster's nodes as last seen by the node watch.
    pub fn nodes(&self) -> Vec<NodeInventory> {
        let mut nodes: Vec<NodeInventory> = self
            .shared
            .nodes
            .state()
            .iter()
            .map(|node| node_inventory(node))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Creates or updates the scheduler queues of `pools` and OSMO's
    /// priority classes (call when pools change).
    pub async fn sync_pools(&self, pools: &[PoolQueue]) -> Result<(), KubeError> {
        let config = &self.shared.config;
        queues::sync(
            &config.client,
            config.scheduler.scheduler_type,
            &config.namespace,
            pools,
        )
        .await
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single insert, remove or field write, so a
        // panic elsewhere cannot leave the state half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tracks every task pod in the namespace (after a restart, the pods of
    /// the previous operator).
    async fn adopt_existing_pods(&self) -> Result<(), KubeError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(|error| KubeError::api("list", "Pod", MANAGED_SELECTOR, error))?;
        let now_ms = crate::clock::now_ms();
        let mut state = self.lock();
        for pod in &list.items {
            let Some(key) = names::key_of(pod.metadata.annotations.as_ref()) else {
                continue;
            };
            let outcome = pod_status(pod, now_ms);
            let tracked = state.track_pod(&key, pod);
            if tracked.last.is_none() {
                tracked.last = outcome.as_ref().map(|o| o.status);
            }
        }
        Ok(())
    }
}
