//! The control plane's two jobs: CreateGroup (track the group's tasks,
//! report SCHEDULING, create its objects) and CancelGroup (fail its
//! unfinished tasks, delete its objects).
//!
//! Invariants:
//! - A group's tasks are tracked before any of its objects is created: a
//!   pod event may arrive before `create` returns.
//! - A re-dispatched task that is still tracked runs once: a running one is
//!   left alone, a finished one gets its final outcome again.
//! - A group that cannot be created fails its new tasks
//!   FAILED_BACKEND_ERROR; what was created of it is deleted (the pods'
//!   delete events end their tracking), and if nothing was, its tasks are
//!   forgotten so that a later dispatch tries again.
//! - Nothing new is created while the operator shuts down.
//! - Cancel finds a group's objects by `osmo.workflow_id`+`osmo.group_name`
//!   (every dispatch of it), deleting the PodGroups of each scheduler the
//!   group was created with.

use super::group_objects;
use super::tracking::Registered;
use super::Shared;
use crate::operator::kubernetes::config::SchedulerSettings;
use crate::operator::kubernetes::error::KubeError;
use crate::operator::kubernetes::manifests::{self, BuildContext};
use crate::operator::kubernetes::names::{self, GroupNames};
use crate::operator::kubernetes::status::PodOutcome;
use crate::protocol::{GroupLaunch, GroupMeta};
use gantry_storage::TaskStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Shared {
    pub(super) async fn create_group(self: &Arc<Self>, group: &GroupLaunch) {
        let scheduler = self.scheduler_for(&group.meta);
        let built = manifests::build_group(&self.build_context(&scheduler), group);
        let names = GroupNames::of(group);
        // Register first: a pod event may arrive before `create` returns.
        let Registered {
            accepted,
            finished_again,
        } = self.lock().register_group(group, &names, &scheduler);
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
            Ok(built) => match group_objects::create(&self.config, &self.pods, built).await {
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
            group_objects::delete(
                &self.config,
                &self.pods,
                &names.cleanup_selector(),
                Some(&scheduler),
            )
            .await;
        } else {
            // Nothing exists in the cluster: forget the tasks, so a later
            // dispatch tries again.
            self.lock().forget_tasks(&accepted, &names.group_uuid);
        }
    }

    pub(super) async fn cancel_group(&self, workflow_id: &str, group: &str, reason: &str) {
        let (canceled, schedulers) = self.lock().cancel_group(workflow_id, group, reason);
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
            group_objects::delete(&self.config, &self.pods, &selector, None).await;
        }
        for scheduler in &schedulers {
            group_objects::delete(&self.config, &self.pods, &selector, Some(scheduler)).await;
        }
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
}
