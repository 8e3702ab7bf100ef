//! OSMO's status aggregation (reference §2.2): a group's status from its
//! tasks, a workflow's from its groups, computed from tallies.
//!
//! Invariant: [`group_status`] answers from a group's tally exactly what
//! [`group_status_in_order`] answers from its tasks, or nothing when the
//! answer depends on the tasks' spec order (finished tasks failing in more
//! than one way); [`workflow_status`] never needs more than the counts.

use crate::record::{GroupRecord, TaskRecord};
use crate::status::{TaskStatus, WorkflowStatus};
use crate::tally::{GroupTally, StatusCounts};

/// Statuses that decide a finished group whichever task holds them, in
/// precedence order.
const GROUP_PRECEDENCE: [TaskStatus; 3] = [
    TaskStatus::FailedUpstream,
    TaskStatus::FailedServerError,
    TaskStatus::FailedPreempted,
];

/// A group's status from its tally; `None` when the first failure in spec
/// order decides it (ask [`group_status_in_order`]).
pub(crate) fn group_status(tally: &GroupTally) -> Option<TaskStatus> {
    let tasks = &tally.tasks;
    if tasks.unfinished() > 0 {
        if tasks.of(TaskStatus::Running) > 0 || tasks.finished() > 0 {
            return Some(TaskStatus::Running);
        }
        // Unfinished ranks are distinct, so the furthest status is unique.
        return tasks.present().max_by_key(|status| status.phase_rank());
    }
    if let Some(status) = GROUP_PRECEDENCE
        .into_iter()
        .find(|status| tasks.of(*status) > 0)
    {
        return Some(status);
    }
    let considered = if tally.ignore_nonlead_status {
        &tally.leads
    } else {
        tasks
    };
    if considered.of(TaskStatus::FailedEvicted) > 0 {
        return Some(TaskStatus::FailedEvicted);
    }
    let mut failures = considered.present().filter(|status| status.is_failure());
    match (failures.next(), failures.next()) {
        (None, _) => Some(TaskStatus::Completed),
        (Some(only), None) => Some(only),
        (Some(_), Some(_)) => None,
    }
}

/// A group's status from its tasks in spec order (OSMO
/// `TaskGroup._aggregate_status`).
pub(crate) fn group_status_in_order(group: &GroupRecord, tasks: &[TaskRecord]) -> TaskStatus {
    if tasks.iter().any(|task| !task.status.is_finished()) {
        if tasks
            .iter()
            .any(|task| task.status == TaskStatus::Running || task.status.is_finished())
        {
            return TaskStatus::Running;
        }
        return tasks
            .iter()
            .map(|task| task.status)
            .max_by_key(|status| status.phase_rank())
            .unwrap_or(group.status);
    }
    let considered: Vec<TaskStatus> = tasks
        .iter()
        .filter(|task| task.lead || !group.ignore_nonlead_status)
        .map(|task| task.status)
        .collect();
    let any = |status: TaskStatus| tasks.iter().any(|task| task.status == status);
    if let Some(status) = GROUP_PRECEDENCE.into_iter().find(|status| any(*status)) {
        return status;
    }
    if considered.contains(&TaskStatus::FailedEvicted) {
        return TaskStatus::FailedEvicted;
    }
    considered
        .iter()
        .copied()
        .find(|status| status.is_failure())
        .unwrap_or(TaskStatus::Completed)
}

/// Workflow status from its groups counted by status (OSMO §2.2).
pub(crate) fn workflow_status(groups: &StatusCounts) -> WorkflowStatus {
    if groups.unfinished() > 0 {
        return if groups.of(TaskStatus::Running) > 0 {
            WorkflowStatus::Running
        } else {
            WorkflowStatus::Pending
        };
    }
    for precedence in [
        TaskStatus::FailedCanceled,
        TaskStatus::FailedServerError,
        TaskStatus::FailedExecTimeout,
        TaskStatus::FailedQueueTimeout,
    ] {
        if groups.of(precedence) > 0 {
            return WorkflowStatus::from_group_failure(precedence);
        }
    }
    let mut failures = groups
        .present()
        .filter(|status| status.is_failure() && *status != TaskStatus::FailedUpstream);
    match (failures.next(), failures.next()) {
        (None, _) if groups.failures() > 0 => WorkflowStatus::Failed,
        (None, _) => WorkflowStatus::Completed,
        (Some(only), None) => WorkflowStatus::from_group_failure(only),
        (Some(_), Some(_)) => WorkflowStatus::Failed,
    }
}

#[cfg(test)]
mod tests;
