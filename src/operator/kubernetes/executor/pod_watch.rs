//! The pod watch and the reports it makes: each task pod's changes become
//! the task's status reports, its log stream starts once the user container
//! has started, the final report waits for that stream, and a group's
//! objects are cleaned up after its last task finished.
//!
//! Invariants:
//! - Reports of one task only move forward (SCHEDULING → INITIALIZING →
//!   RUNNING → final) and the final one is sent once, after the task's log
//!   stream has ended (or after `LOG_DRAIN_MAX`).
//! - A pod deleted before its task finished ends the task
//!   FAILED_BACKEND_ERROR, and its tracking ends with that report.
//! - Cleanup after the group's last task finished deletes its objects by
//!   `osmo.workflow_uuid`+`osmo.group_uuid`, once (see `group_objects`).

use super::group_objects;
use super::Shared;
use crate::operator::kubernetes::names::{self, MANAGED_SELECTOR};
use crate::operator::kubernetes::pod_logs;
use crate::operator::kubernetes::status::{pod_status, PodOutcome};
use futures::StreamExt;
use gantry_storage::{TaskKey, TaskStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a finished task's log stream before its final report
/// goes out anyway.
const LOG_DRAIN_MAX: Duration = Duration::from_secs(60);

impl Shared {
    /// Follows the namespace's task pods (by label) for as long as the
    /// operator runs; a failed watch retries with backoff.
    pub(super) async fn watch_pods(self: Arc<Self>, pods: Api<Pod>) {
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
            let tracked = state.track_pod(&key, pod);
            if tracked.pod_uid.is_none() {
                tracked.pod_uid = pod.metadata.uid.clone();
            }
            if tracked.finished.is_some() || tracked.last == Some(outcome.status) {
                return;
            }
            let is_final = outcome.status.is_finished();
            if !is_final {
                // Only forward: a stale event never takes a report back.
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

    /// Sends a task's final report (after its logs) and, with `cleanup`,
    /// cleans up its group once every task of it has finished.
    pub(super) async fn finish(&self, key: &TaskKey, outcome: PodOutcome, cleanup: bool) {
        let (stream, group_uuid) = self.lock().finish(key, &outcome);
        if let Some(stream) = stream {
            if tokio::time::timeout(LOG_DRAIN_MAX, stream).await.is_err() {
                tracing::warn!(task = %key.task, "log stream still open; sending the final status anyway");
            }
        }
        tracing::info!(workflow = %key.workflow_id, task = %key.task, status = %outcome.status, exit_code = outcome.exit_code, "task finished");
        self.outbox
            .task_status(key, outcome.status, outcome.exit_code, outcome.message)
            .await;
        if !cleanup {
            return;
        }
        let Some(group_uuid) = group_uuid else {
            return;
        };
        let selector = self.lock().take_cleanup(&group_uuid);
        if let Some((selector, scheduler)) = selector {
            tracing::info!(%selector, "group finished; cleaning up");
            group_objects::delete(&self.config, &self.pods, &selector, scheduler.as_ref()).await;
        }
    }

    async fn on_pod_deleted(&self, pod: &Pod) {
        let Some(key) = names::key_of(pod.metadata.annotations.as_ref()) else {
            return;
        };
        let lost = self.lock().pod_deleted(&key, pod);
        if lost {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let outcome = PodOutcome {
                status: TaskStatus::FailedBackendError,
                exit_code: TaskStatus::FailedBackendError.default_exit_code(),
                message: Some(format!("pod {name} was deleted before the task finished")),
            };
            self.finish(&key, outcome, true).await;
            // The pod is gone, so no later event ends this task's tracking.
            self.lock().forget_lost(&key, pod);
        }
    }
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
