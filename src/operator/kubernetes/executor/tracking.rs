//! What the Kubernetes operator tracks: its tasks (pod, container, last
//! status, log stream, final outcome) and its groups (names, tasks, the
//! scheduler they were created with), and the bookkeeping rules the job
//! loop and the pod watch share. No Kubernetes calls and no reports here:
//! callers hold the lock, change the state through these methods, and act
//! after releasing it.
//!
//! Invariants:
//! - A task is tracked from its CreateGroup (or from the first sight of its
//!   pod after a restart) until its pod is gone; `Hello` lists the tracked
//!   tasks that have not finished.
//! - A task's pod is known by UID once seen, so a late delete of an older
//!   pod of the same name does not end a re-created one.
//! - A finished task keeps its outcome until its pod is gone, so a
//!   re-dispatch meanwhile gets the outcome again instead of a second run.
//! - A group is cleaned up once (`cleaned`) per dispatch; a cancel marks it
//!   cleaned too, since the cancel deletes its objects itself.

use crate::operator::kubernetes::config::SchedulerSettings;
use crate::operator::kubernetes::names::{
    self, GroupNames, LABEL_GROUP_NAME, LABEL_GROUP_UUID, LABEL_WORKFLOW_UUID,
};
use crate::operator::kubernetes::status::PodOutcome;
use crate::protocol::GroupLaunch;
use gantry_storage::{TaskKey, TaskStatus};
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeSet, HashMap};
use tokio::task::JoinHandle;

#[derive(Default)]
pub(super) struct State {
    pub(super) tasks: HashMap<TaskKey, Tracked>,
    /// Group UUID → the group's tasks, to clean up after the last one.
    pub(super) groups: HashMap<String, TrackedGroup>,
    /// Which Kubernetes events were forwarded (`event_watch`).
    pub(super) events_sent: super::event_watch::Sent,
}

pub(super) struct Tracked {
    pub(super) group: String,
    pub(super) group_uuid: String,
    pub(super) pod: String,
    pub(super) container: String,
    /// UID of the pod once seen, so a late delete of an older pod of the
    /// same name does not end a re-created one.
    pub(super) pod_uid: Option<String>,
    pub(super) last: Option<TaskStatus>,
    pub(super) logs: Option<JoinHandle<()>>,
    /// Set once the final status is decided; holds it for a re-dispatch
    /// that arrives before the pod is gone.
    pub(super) finished: Option<PodOutcome>,
}

pub(super) struct TrackedGroup {
    pub(super) names: GroupNames,
    pub(super) tasks: BTreeSet<TaskKey>,
    pub(super) cleaned: bool,
    /// The settings the group was created with (`None`: adopted after a
    /// restart, so unknown); cleanup also deletes this kind of PodGroup.
    pub(super) scheduler: Option<SchedulerSettings>,
}

/// What `register_group` decided for a group's tasks.
pub(super) struct Registered {
    /// Tasks now tracked from SCHEDULING on: their objects are to be created.
    pub(super) accepted: Vec<TaskKey>,
    /// Tasks dispatched again after they finished: their outcome goes again.
    pub(super) finished_again: Vec<(TaskKey, PodOutcome)>,
}

impl State {
    /// The tracked tasks that have not finished: what `Hello` lists.
    pub(super) fn running(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, tracked)| tracked.finished.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The latest status of every unfinished task, to send again after a
    /// reconnect.
    pub(super) fn latest_statuses(&self) -> Vec<(TaskKey, TaskStatus)> {
        let mut statuses: Vec<(TaskKey, TaskStatus)> = self
            .tasks
            .iter()
            .filter(|(_, tracked)| tracked.finished.is_none())
            .filter_map(|(key, tracked)| Some((key.clone(), tracked.last?)))
            .collect();
        statuses.sort();
        statuses
    }

    /// Tracks the task of a pod seen in the cluster (listed at start, or
    /// an event of the watch) and records its group from its labels, for
    /// cleanup after a restart. A task already tracked is kept as it is.
    pub(super) fn track_pod(&mut self, key: &TaskKey, pod: &Pod) -> &mut Tracked {
        self.adopt_group(key, pod);
        self.tasks
            .entry(key.clone())
            .or_insert_with(|| tracked_from_pod(pod))
    }

    fn adopt_group(&mut self, key: &TaskKey, pod: &Pod) {
        let group_uuid = label(pod, LABEL_GROUP_UUID);
        if group_uuid.is_empty() {
            return;
        }
        let group = self
            .groups
            .entry(group_uuid.clone())
            .or_insert_with(|| TrackedGroup {
                names: GroupNames {
                    workflow_id: key.workflow_id.clone(),
                    workflow_uuid: label(pod, LABEL_WORKFLOW_UUID),
                    group: label(pod, LABEL_GROUP_NAME),
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

    /// Tracks a dispatched group's tasks before its objects exist (a pod
    /// event may arrive before `create` returns). A task still running is
    /// left alone (a duplicate dispatch); the group's cleanup is re-armed.
    pub(super) fn register_group(
        &mut self,
        group: &GroupLaunch,
        names: &GroupNames,
        scheduler: &SchedulerSettings,
    ) -> Registered {
        let mut accepted = Vec::new();
        let mut finished_again = Vec::new();
        for task in &group.tasks {
            if let Some(tracked) = self.tasks.get(&task.key) {
                match &tracked.finished {
                    None => continue,
                    Some(outcome) => {
                        finished_again.push((task.key.clone(), outcome.clone()));
                        continue;
                    }
                }
            }
            let task_uuid = names::task_uuid(task);
            self.tasks.insert(
                task.key.clone(),
                Tracked {
                    group: group.group.clone(),
                    group_uuid: names.group_uuid.clone(),
                    pod: names::pod_name(names, &task_uuid),
                    container: names::container_name(&task.key.task),
                    pod_uid: None,
                    last: Some(TaskStatus::Scheduling),
                    logs: None,
                    finished: None,
                },
            );
            accepted.push(task.key.clone());
        }
        let entry = self
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
        Registered {
            accepted,
            finished_again,
        }
    }

    /// Forgets tasks whose objects were never created, so a later dispatch
    /// tries again.
    pub(super) fn forget_tasks(&mut self, keys: &[TaskKey], group_uuid: &str) {
        for key in keys {
            self.tasks.remove(key);
        }
        self.forget_group_if_empty(group_uuid);
    }

    fn forget_group_if_empty(&mut self, group_uuid: &str) {
        let empty = self
            .groups
            .get(group_uuid)
            .is_some_and(|g| g.tasks.iter().all(|t| !self.tasks.contains_key(t)));
        if empty {
            self.groups.remove(group_uuid);
        }
    }

    /// Marks the group's unfinished tasks failed by a cancel (stopping
    /// their log streams) and its dispatches cleaned. Returns the canceled
    /// tasks (sorted) and the schedulers the group was created with, whose
    /// PodGroups the cancel deletes.
    pub(super) fn cancel_group(
        &mut self,
        workflow_id: &str,
        group: &str,
        reason: &str,
    ) -> (Vec<TaskKey>, Vec<SchedulerSettings>) {
        let mut schedulers: Vec<SchedulerSettings> = Vec::new();
        let mut keys = Vec::new();
        for (key, tracked) in self.tasks.iter_mut() {
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
        let uuids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.names.workflow_id == workflow_id && g.names.group == group)
            .map(|(uuid, _)| uuid.clone())
            .collect();
        for uuid in uuids {
            if let Some(tracked) = self.groups.get_mut(&uuid) {
                tracked.cleaned = true;
                schedulers.extend(tracked.scheduler.clone());
            }
        }
        keys.sort();
        (keys, schedulers)
    }

    /// Records a task's final outcome; returns its log stream (to wait
    /// for before the final report) and its group's UUID.
    pub(super) fn finish(
        &mut self,
        key: &TaskKey,
        outcome: &PodOutcome,
    ) -> (Option<JoinHandle<()>>, Option<String>) {
        match self.tasks.get_mut(key) {
            Some(tracked) => {
                tracked.finished = Some(outcome.clone());
                (tracked.logs.take(), Some(tracked.group_uuid.clone()))
            }
            None => (None, None),
        }
    }

    /// Once every task of the group has finished, and only the first time:
    /// the selector of its objects and the scheduler it was created with.
    pub(super) fn take_cleanup(
        &mut self,
        group_uuid: &str,
    ) -> Option<(String, Option<SchedulerSettings>)> {
        let all_done = self.groups.get(group_uuid).is_some_and(|group| {
            group.tasks.iter().all(|task| {
                self.tasks
                    .get(task)
                    .is_none_or(|tracked| tracked.finished.is_some())
            })
        });
        match self.groups.get_mut(group_uuid) {
            Some(group) if all_done && !group.cleaned => {
                group.cleaned = true;
                Some((group.names.cleanup_selector(), group.scheduler.clone()))
            }
            _ => None,
        }
    }

    /// The task's pod is gone. A finished task stops being tracked (and its
    /// group with its last task); an unfinished one is marked lost, and
    /// `true` says its final report is still to be sent. A delete of another
    /// pod than the tracked one changes nothing.
    pub(super) fn pod_deleted(&mut self, key: &TaskKey, pod: &Pod) -> bool {
        let Some(tracked) = self.tasks.get_mut(key) else {
            return false;
        };
        let same_pod = tracked.pod_uid.is_some() && tracked.pod_uid == pod.metadata.uid;
        if !same_pod {
            return false;
        }
        if tracked.finished.is_some() {
            self.tasks.remove(key);
            self.forget_group_if_empty(&label(pod, LABEL_GROUP_UUID));
            false
        } else {
            tracked.finished = Some(PodOutcome {
                status: TaskStatus::FailedBackendError,
                exit_code: TaskStatus::FailedBackendError.default_exit_code(),
                message: None,
            });
            true
        }
    }

    /// Stops tracking a lost task whose final report went out: its pod is
    /// gone, so no later event ends its tracking (nor its group's, when it
    /// was the last). A task re-created meanwhile (another pod UID) stays.
    pub(super) fn forget_lost(&mut self, key: &TaskKey, pod: &Pod) {
        if self
            .tasks
            .get(key)
            .is_some_and(|tracked| tracked.pod_uid == pod.metadata.uid)
        {
            self.tasks.remove(key);
            self.forget_group_if_empty(&label(pod, LABEL_GROUP_UUID));
        }
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
        group: label(pod, LABEL_GROUP_NAME),
        group_uuid: label(pod, LABEL_GROUP_UUID),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        container,
        pod_uid: pod.metadata.uid.clone(),
        last: None,
        logs: None,
        finished: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.to_string());
        pod.metadata.name = Some("p".to_string());
        pod.metadata.labels = Some(
            [
                (LABEL_GROUP_UUID.to_string(), "g-uuid".to_string()),
                (LABEL_GROUP_NAME.to_string(), "g".to_string()),
            ]
            .into(),
        );
        pod
    }

    /// A probe: a pod deleted before its task finished must not leave its
    /// group behind (the tracker would grow with every such group).
    #[test]
    fn a_lost_last_task_takes_its_group_with_it() {
        let mut state = State::default();
        let key = TaskKey {
            workflow_id: "wf-1".into(),
            task: "t".into(),
            retry_id: 0,
        };
        let pod = pod("uid-1");
        state.track_pod(&key, &pod).pod_uid = Some("uid-1".into());
        assert!(state.groups.contains_key("g-uuid"));
        assert!(state.pod_deleted(&key, &pod), "an unfinished task is lost");
        state.forget_lost(&key, &pod);
        assert!(state.tasks.is_empty());
        assert!(state.groups.is_empty(), "the group went with its last task");
    }
}
