//! The Kubernetes operator: turns control-plane jobs into Kubernetes objects
//! and pod changes into task reports.
//!
//! Invariants:
//! - A task is tracked from its CreateGroup (or from the first sight of its
//!   pod after a restart) until its pod is gone; `Hello` lists the tracked
//!   tasks that have not finished.
//! - Reports of one task only move forward (SCHEDULING → INITIALIZING →
//!   RUNNING → final) and the final one is sent once, after the task's log
//!   stream has ended.
//! - Objects are found by labels only: cancel deletes the group's pods, gang,
//!   Service and Secrets by `osmo.workflow_id`+`osmo.group_name`; cleanup
//!   after the group's last task finished does the same by
//!   `osmo.workflow_uuid`+`osmo.group_uuid`.
//! - Shutting the executor down stops watching; pods keep running, and the
//!   next operator finds them by their labels.

use super::config::{KubernetesConfig, PoolQueue, SchedulerSettings};
use super::error::{is_conflict, KubeError};
use super::manifests::{self, BuildContext};
use super::names::{self, GroupNames, LABEL_GROUP_UUID, LABEL_WORKFLOW_UUID, MANAGED_SELECTOR};
use super::nodes::{node_inventory, NodeInventory};
use super::pod_logs;
use super::queues;
use super::scheduler;
use super::status::{pod_status, PodOutcome};
use crate::operator::local::Outbox;
use crate::protocol::{FromOperator, GroupLaunch, GroupMeta, ToOperator};
use futures::StreamExt;
use gantry_storage::{TaskKey, TaskStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for a finished task's log stream before its final report
/// goes out anyway.
const LOG_DRAIN_MAX: Duration = Duration::from_secs(60);

pub struct KubernetesOperator {
    shared: Arc<Shared>,
    watchers: Vec<JoinHandle<()>>,
}

struct Shared {
    config: KubernetesConfig,
    pods: Api<Pod>,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
    nodes: Store<Node>,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct State {
    tasks: HashMap<TaskKey, Tracked>,
    /// Group UUID → the group's tasks, to clean up after the last one.
    groups: HashMap<String, TrackedGroup>,
}

struct Tracked {
    group: String,
    group_uuid: String,
    pod: String,
    container: String,
    /// UID of the pod once seen, so a late delete of an older pod of the
    /// same name does not end a re-created one.
    pod_uid: Option<String>,
    last: Option<TaskStatus>,
    logs: Option<JoinHandle<()>>,
    /// Set once the final status is decided; holds it for a re-dispatch
    /// that arrives before the pod is gone.
    finished: Option<PodOutcome>,
}

struct TrackedGroup {
    names: GroupNames,
    tasks: BTreeSet<TaskKey>,
    cleaned: bool,
    /// The settings the group was created with (`None`: adopted after a
    /// restart, so unknown); cleanup also deletes this kind of PodGroup.
    scheduler: Option<SchedulerSettings>,
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
        Ok(KubernetesOperator {
            shared,
            watchers: vec![node_watch, pod_watch],
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
                running: shared.running(),
                executor: crate::protocol::EXECUTOR_KUBERNETES.to_string(),
            })
            .await;
        // Transitions sent while no connection was live were dropped; the
        // latest status of each running task goes again (a repeat is a no-op).
        for (key, status) in shared.latest_statuses() {
            shared.outbox.task_status(&key, status, None, None).await;
        }
        while let Some(message) = from_server.recv().await {
            let job_id = match message {
                ToOperator::CreateGroup { job_id, group } => {
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
            };
            shared.outbox.send(FromOperator::JobDone { job_id }).await;
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

    fn running(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, tracked)| tracked.finished.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn latest_statuses(&self) -> Vec<(TaskKey, TaskStatus)> {
        let mut statuses: Vec<(TaskKey, TaskStatus)> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, tracked)| tracked.finished.is_none())
            .filter_map(|(key, tracked)| Some((key.clone(), tracked.last?)))
            .collect();
        statuses.sort();
        statuses
    }

    fn build_context<'a>(&'a self, scheduler: &'a SchedulerSettings) -> BuildContext<'a> {
        BuildContext {
            namespace: &self.config.namespace,
            scheduler,
            runtime_image: &self.config.runtime_image,
        }
    }

    /// The backend's settings from the launch, else this executor's own.
    fn scheduler_for(&self, meta: &GroupMeta) -> SchedulerSettings {
        match &meta.scheduler {
            Some(launch) => {
                SchedulerSettings::from_launch(launch, self.config.scheduler.coscheduling)
            }
            None => self.config.scheduler.clone(),
        }
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
            let tracked = state
                .tasks
                .entry(key.clone())
                .or_insert_with(|| tracked_from_pod(pod));
            if tracked.last.is_none() {
                tracked.last = outcome.as_ref().map(|o| o.status);
            }
            adopt_group(&mut state, &key, pod);
        }
        Ok(())
    }

    async fn create_group(self: &Arc<Self>, group: &GroupLaunch) {
        let scheduler = self.scheduler_for(&group.meta);
        let built = manifests::build_group(&self.build_context(&scheduler), group);
        let names = GroupNames::of(group);
        // Register first: a pod event may arrive before `create` returns.
        let mut accepted = Vec::new();
        let mut finished_again = Vec::new();
        {
            let mut state = self.lock();
            for task in &group.tasks {
                if let Some(tracked) = state.tasks.get(&task.key) {
                    match &tracked.finished {
                        None => continue,
                        Some(outcome) => {
                            finished_again.push((task.key.clone(), outcome.clone()));
                            continue;
                        }
                    }
                }
                let task_uuid = names::task_uuid(task);
                state.tasks.insert(
                    task.key.clone(),
                    Tracked {
                        group: group.group.clone(),
                        group_uuid: names.group_uuid.clone(),
                        pod: names::pod_name(&names, &task_uuid),
                        container: names::container_name(&task.key.task),
                        pod_uid: None,
                        last: Some(TaskStatus::Scheduling),
                        logs: None,
                        finished: None,
                    },
                );
                accepted.push(task.key.clone());
            }
            let entry = state
                .groups
                .entry(names.group_uuid.clone())
                .or_insert_with(|| TrackedGroup {
                    names: names.clone(),
                    tasks: BTreeSet::new(),
                    cleaned: false,
                    scheduler: None,
                });
            entry.cleaned = false;
            entry.scheduler = Some(scheduler.clone());
            entry
                .tasks
                .extend(group.tasks.iter().map(|t| t.key.clone()));
        }
        // A re-dispatch of a task that finished while the control plane was
        // not listening: tell it again instead of running it twice.
        for (key, outcome) in finished_again {
            self.outbox
                .task_status(&key, outcome.status, outcome.exit_code, outcome.message)
                .await;
        }
        if accepted.is_empty() {
            return;
        }
        for key in &accepted {
            self.outbox
                .task_status(key, TaskStatus::Scheduling, None, None)
                .await;
        }
        let built = match built {
            Ok(_) if self.shutting_down.load(Ordering::SeqCst) => Err(KubeError::Unschedulable(
                "the operator is shutting down".to_string(),
            )),
            other => other,
        };
        let (error, created_any) = match built {
            Ok(built) => match self.create_objects(built).await {
                Ok(()) => return,
                Err(error) => (error, true),
            },
            Err(error) => (error, false),
        };
        tracing::error!(workflow = %group.workflow_id, group = %group.group, %error, "cannot create group");
        let outcome = PodOutcome {
            status: TaskStatus::FailedBackendError,
            exit_code: TaskStatus::FailedBackendError.default_exit_code(),
            message: Some(error.to_string()),
        };
        for key in &accepted {
            self.finish(key, outcome.clone(), false).await;
        }
        if created_any {
            // Pods already created are deleted; their delete events end
            // their tracking.
            self.delete_group(&names.cleanup_selector(), Some(&scheduler))
                .await;
        } else {
            // Nothing exists in the cluster: forget the tasks, so a later
            // dispatch tries again.
            let mut state = self.lock();
            for key in &accepted {
                state.tasks.remove(key);
            }
            let empty = state
                .groups
                .get(&names.group_uuid)
                .is_some_and(|g| g.tasks.iter().all(|t| !state.tasks.contains_key(t)));
            if empty {
                state.groups.remove(&names.group_uuid);
            }
        }
    }

    /// Creates the group's objects in OSMO's order; an object that already
    /// exists (a re-dispatch) is kept.
    async fn create_objects(&self, built: manifests::GroupManifests) -> Result<(), KubeError> {
        let client = &self.config.client;
        let namespace = &self.config.namespace;
        let post = PostParams::default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for secret in &built.secrets {
            let name = secret.metadata.name.clone().unwrap_or_default();
            tolerate_conflict(secrets.create(&post, secret).await)
                .map_err(|error| KubeError::api("create", "Secret", &name, error))?;
        }
        if let Some(gang) = &built.gang {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &gang.resource);
            let name = gang.object.metadata.name.clone().unwrap_or_default();
            tolerate_conflict(api.create(&post, &gang.object).await)
                .map_err(|error| KubeError::api("create", "PodGroup", &name, error))?;
        }
        for (_, pod) in &built.pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            tolerate_conflict(self.pods.create(&post, pod).await)
                .map_err(|error| KubeError::api("create", "Pod", &name, error))?;
        }
        if let Some(service) = &built.service {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let name = service.metadata.name.clone().unwrap_or_default();
            tolerate_conflict(services.create(&post, service).await)
                .map_err(|error| KubeError::api("create", "Service", &name, error))?;
        }
        Ok(())
    }

    async fn cancel_group(&self, workflow_id: &str, group: &str, reason: &str) {
        let mut schedulers: Vec<SchedulerSettings> = Vec::new();
        let canceled: Vec<TaskKey> = {
            let mut state = self.lock();
            let mut keys = Vec::new();
            for (key, tracked) in state.tasks.iter_mut() {
                if key.workflow_id == workflow_id
                    && tracked.group == group
                    && tracked.finished.is_none()
                {
                    tracked.finished = Some(PodOutcome {
                        status: TaskStatus::Failed,
                        exit_code: None,
                        message: Some(format!("canceled: {reason}")),
                    });
                    if let Some(stream) = tracked.logs.take() {
                        stream.abort();
                    }
                    keys.push(key.clone());
                }
            }
            let uuids: Vec<String> = state
                .groups
                .iter()
                .filter(|(_, g)| g.names.workflow_id == workflow_id && g.names.group == group)
                .map(|(uuid, _)| uuid.clone())
                .collect();
            for uuid in uuids {
                if let Some(tracked) = state.groups.get_mut(&uuid) {
                    tracked.cleaned = true;
                    schedulers.extend(tracked.scheduler.clone());
                }
            }
            keys.sort();
            keys
        };
        tracing::info!(
            workflow = workflow_id,
            group,
            reason,
            tasks = canceled.len(),
            "group canceled"
        );
        for key in &canceled {
            self.outbox
                .task_status(
                    key,
                    TaskStatus::Failed,
                    None,
                    Some(format!("canceled: {reason}")),
                )
                .await;
        }
        let selector = names::group_name_selector(workflow_id, group);
        if schedulers.is_empty() {
            self.delete_group(&selector, None).await;
        }
        for scheduler in &schedulers {
            self.delete_group(&selector, Some(scheduler)).await;
        }
    }

    /// Deletes every object of a group by label selector: the PodGroups of
    /// this executor's scheduler and of `scheduler` (the group's own, when
    /// known). Failures are logged: a later cleanup or cancel deletes what
    /// is left.
    async fn delete_group(&self, selector: &str, scheduler: Option<&SchedulerSettings>) {
        let client = &self.config.client;
        let namespace = &self.config.namespace;
        let list = ListParams::default().labels(selector);
        let delete = DeleteParams::background();
        if let Err(error) = self.pods.delete_collection(&delete, &list).await {
            tracing::warn!(%selector, %error, "cannot delete the group's pods");
        }
        let mut gang_kinds: Vec<ApiResource> = Vec::new();
        for settings in std::iter::once(&self.config.scheduler).chain(scheduler) {
            if let Some(resource) = scheduler::pod_group_resource(settings) {
                if !gang_kinds.iter().any(|kind| kind.group == resource.group) {
                    gang_kinds.push(resource);
                }
            }
        }
        for resource in &gang_kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
            if let Err(error) = api.delete_collection(&delete, &list).await {
                tracing::warn!(%selector, %error, "cannot delete the group's PodGroup");
            }
        }
        // Services have no delete-collection on older clusters: one by one.
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        match services.list(&list).await {
            Ok(found) => {
                for service in found.items {
                    let name = service.metadata.name.unwrap_or_default();
                    if let Err(error) = services.delete(&name, &delete).await {
                        tracing::warn!(%name, %error, "cannot delete the group's Service");
                    }
                }
            }
            Err(error) => tracing::warn!(%selector, %error, "cannot list the group's Services"),
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        if let Err(error) = secrets.delete_collection(&delete, &list).await {
            tracing::warn!(%selector, %error, "cannot delete the group's Secrets");
        }
    }

    async fn watch_pods(self: Arc<Self>, pods: Api<Pod>) {
        let config = watcher::Config::default().labels(MANAGED_SELECTOR);
        let mut events = watcher(pods, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.on_pod(&pod).await;
                }
                Ok(watcher::Event::Delete(pod)) => self.on_pod_deleted(&pod).await,
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
            }
        }
    }

    async fn on_pod(self: &Arc<Self>, pod: &Pod) {
        let Some(key) = names::key_of(pod.metadata.annotations.as_ref()) else {
            return;
        };
        let Some(outcome) = pod_status(pod, crate::clock::now_ms()) else {
            return;
        };
        let container_started = user_container_started(pod);
        {
            let mut state = self.lock();
            adopt_group(&mut state, &key, pod);
            let tracked = state
                .tasks
                .entry(key.clone())
                .or_insert_with(|| tracked_from_pod(pod));
            if tracked.pod_uid.is_none() {
                tracked.pod_uid = pod.metadata.uid.clone();
            }
            if tracked.finished.is_some() || tracked.last == Some(outcome.status) {
                return;
            }
            let is_final = outcome.status.is_finished();
            if !is_final {
                if tracked
                    .last
                    .is_some_and(|last| last.phase_rank() > outcome.status.phase_rank())
                {
                    return;
                }
                tracked.last = Some(outcome.status);
            }
            if tracked.logs.is_none() && container_started {
                let stream = pod_logs::stream(
                    self.pods.clone(),
                    tracked.pod.clone(),
                    tracked.container.clone(),
                    key.clone(),
                    Arc::clone(&self.outbox),
                );
                tracked.logs = Some(tokio::spawn(stream));
            }
            if is_final {
                tracked.finished = Some(outcome.clone());
            }
        }
        if outcome.status.is_finished() {
            // The final report waits for the log stream: do not hold up
            // other pods' events meanwhile.
            let shared = Arc::clone(self);
            tokio::spawn(async move { shared.finish(&key, outcome, true).await });
        } else {
            self.outbox
                .task_status(&key, outcome.status, outcome.exit_code, outcome.message)
                .await;
        }
    }

    /// Sends a task's final report (after its logs) and cleans up its group
    /// once every task of it has finished.
    async fn finish(&self, key: &TaskKey, outcome: PodOutcome, cleanup: bool) {
        let (stream, group_uuid) = {
            let mut state = self.lock();
            match state.tasks.get_mut(key) {
                Some(tracked) => {
                    tracked.finished = Some(outcome.clone());
                    (tracked.logs.take(), Some(tracked.group_uuid.clone()))
                }
                None => (None, None),
            }
        };
        if let Some(stream) = stream {
            if tokio::time::timeout(LOG_DRAIN_MAX, stream).await.is_err() {
                tracing::warn!(task = %key.task, "log stream still open; sending the final status anyway");
            }
        }
        tracing::info!(workflow = %key.workflow_id, task = %key.task, status = %outcome.status, exit_code = ?outcome.exit_code, "task finished");
        self.outbox
            .task_status(key, outcome.status, outcome.exit_code, outcome.message)
            .await;
        if !cleanup {
            return;
        }
        let Some(group_uuid) = group_uuid else {
            return;
        };
        let selector = {
            let mut state = self.lock();
            let all_done = state.groups.get(&group_uuid).is_some_and(|group| {
                group.tasks.iter().all(|task| {
                    state
                        .tasks
                        .get(task)
                        .is_none_or(|tracked| tracked.finished.is_some())
                })
            });
            match state.groups.get_mut(&group_uuid) {
                Some(group) if all_done && !group.cleaned => {
                    group.cleaned = true;
                    Some((group.names.cleanup_selector(), group.scheduler.clone()))
                }
                _ => None,
            }
        };
        if let Some((selector, scheduler)) = selector {
            tracing::info!(%selector, "group finished; cleaning up");
            self.delete_group(&selector, scheduler.as_ref()).await;
        }
    }

    async fn on_pod_deleted(&self, pod: &Pod) {
        let Some(key) = names::key_of(pod.metadata.annotations.as_ref()) else {
            return;
        };
        let lost = {
            let mut state = self.lock();
            let Some(tracked) = state.tasks.get_mut(&key) else {
                return;
            };
            let same_pod = tracked.pod_uid.is_some() && tracked.pod_uid == pod.metadata.uid;
            if !same_pod {
                return;
            }
            if tracked.finished.is_some() {
                state.tasks.remove(&key);
                let group_uuid = label(pod, LABEL_GROUP_UUID);
                let empty = state
                    .groups
                    .get(&group_uuid)
                    .is_some_and(|g| g.tasks.iter().all(|t| !state.tasks.contains_key(t)));
                if empty {
                    state.groups.remove(&group_uuid);
                }
                false
            } else {
                tracked.finished = Some(PodOutcome {
                    status: TaskStatus::FailedBackendError,
                    exit_code: TaskStatus::FailedBackendError.default_exit_code(),
                    message: None,
                });
                true
            }
        };
        if lost {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let outcome = PodOutcome {
                status: TaskStatus::FailedBackendError,
                exit_code: TaskStatus::FailedBackendError.default_exit_code(),
                message: Some(format!("pod {name} was deleted before the task finished")),
            };
            self.finish(&key, outcome, true).await;
            // The pod is gone, so no later event ends this task's tracking.
            let mut state = self.lock();
            if state
                .tasks
                .get(&key)
                .is_some_and(|tracked| tracked.pod_uid == pod.metadata.uid)
            {
                state.tasks.remove(&key);
            }
        }
    }
}

fn tolerate_conflict<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_conflict(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

fn label(pod: &Pod, key: &str) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .cloned()
        .unwrap_or_default()
}

fn tracked_from_pod(pod: &Pod) -> Tracked {
    let container = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    Tracked {
        group: label(pod, names::LABEL_GROUP_NAME),
        group_uuid: label(pod, LABEL_GROUP_UUID),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        container,
        pod_uid: pod.metadata.uid.clone(),
        last: None,
        logs: None,
        finished: None,
    }
}

/// Records a pod's group from its labels, for cleanup after a restart.
fn adopt_group(state: &mut State, key: &TaskKey, pod: &Pod) {
    let group_uuid = label(pod, LABEL_GROUP_UUID);
    if group_uuid.is_empty() {
        return;
    }
    let group = state
        .groups
        .entry(group_uuid.clone())
        .or_insert_with(|| TrackedGroup {
            names: GroupNames {
                workflow_id: key.workflow_id.clone(),
                workflow_uuid: label(pod, LABEL_WORKFLOW_UUID),
                group: label(pod, names::LABEL_GROUP_NAME),
                group_uuid,
                submitted_by: String::new(),
                pool: String::new(),
                priority: gantry_storage::Priority::Normal,
            },
            tasks: BTreeSet::new(),
            cleaned: false,
            scheduler: None,
        });
    group.tasks.insert(key.clone());
}

/// The user container is running or has run (so it has a log to read).
fn user_container_started(pod: &Pod) -> bool {
    let Some(user) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .map(|c| c.name.as_str())
    else {
        return false;
    };
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == user))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|state| {
            state.running.is_some()
                || state
                    .terminated
                    .as_ref()
                    .is_some_and(|t| t.reason.as_deref() != Some("StartError"))
        })
}
