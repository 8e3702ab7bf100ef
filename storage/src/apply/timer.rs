//! `FireTimer`: exec and queue timeouts, the backend liveness timers
//! (carried out by [`super::config`]), and the timers of a workflow's end
//! (its archive written, its logs purged).
//!
//! Invariants: a timer fires at most once (firing takes it from the table)
//! and never before it is due; a timeout acts only while its group is in a
//! state the timeout covers; archive and purge times are recorded once, and
//! no archive time after a purge.

use super::config::fire_backend_timer;
use crate::command::{Outcome, RejectionKind};
use crate::error::StorageError;
use crate::lifecycle;
use crate::record::{Millis, TimerKind};
use crate::status::TaskStatus;
use crate::tables::Tables;

pub(super) fn apply_timer_fire(
    tables: &Tables,
    now: Millis,
    timer_id: u64,
    due: Millis,
) -> Result<Outcome, StorageError> {
    if due > now {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!("timer {timer_id} is due at {due}, after {now}"),
        ));
    }
    let Some(timer) = tables.take_timer(due, timer_id)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("timer {timer_id} is not pending"),
        ));
    };
    let (workflow_id, group_name, status, still_applies): (_, _, _, fn(TaskStatus) -> bool) =
        match &timer.kind {
            TimerKind::ExecTimeout { workflow_id, group } => (
                workflow_id,
                group,
                TaskStatus::FailedExecTimeout,
                |s: TaskStatus| !s.is_finished(),
            ),
            TimerKind::QueueTimeout { workflow_id, group } => {
                (workflow_id, group, TaskStatus::FailedQueueTimeout, |s| {
                    matches!(s, TaskStatus::Processing | TaskStatus::Scheduling)
                })
            }
            TimerKind::BackendOffline { backend } => {
                fire_backend_timer(tables, now, backend, (due, timer_id), false)?;
                return Ok(Outcome::Applied);
            }
            TimerKind::BackendLost { backend } => {
                fire_backend_timer(tables, now, backend, (due, timer_id), true)?;
                return Ok(Outcome::Applied);
            }
            TimerKind::ArchiveWorkflow { workflow_id } => {
                return apply_workflow_archived(tables, now, workflow_id);
            }
            TimerKind::PurgeWorkflowLogs { workflow_id } => {
                return apply_workflow_logs_purged(tables, now, workflow_id);
            }
            TimerKind::ForgetRequestKey { key } => {
                tables.forget_request_key(key)?;
                return Ok(Outcome::Applied);
            }
        };
    let (Some(workflow), Some(mut group)) = (
        tables.workflow_core(workflow_id)?,
        tables.group(workflow_id, group_name)?,
    ) else {
        return Ok(Outcome::Applied);
    };
    if still_applies(group.status) {
        let reason = match status {
            TaskStatus::FailedExecTimeout => "exceeded the exec timeout",
            _ => "exceeded the queue timeout",
        };
        lifecycle::finish_group(tables, &workflow, &mut group, status, reason, now, true)?;
        lifecycle::settle_workflow(tables, workflow_id, now)?;
    }
    Ok(Outcome::Applied)
}

/// The leader wrote the workflow's archive: record when. After a purge the
/// leader writes nothing (the purge won), so nothing is recorded.
fn apply_workflow_archived(
    tables: &Tables,
    now: Millis,
    workflow_id: &str,
) -> Result<Outcome, StorageError> {
    if let Some(mut archive) = tables.workflow_archive(workflow_id)? {
        if archive.logs_purged_at.is_none() && archive.archived_at.is_none() {
            archive.archived_at = Some(now);
            tables.put_workflow_archive(&archive)?;
        }
    }
    Ok(Outcome::Applied)
}

/// The leader deleted the workflow's log objects: drop their index and
/// record when, so readers say the logs are gone instead of reading none.
fn apply_workflow_logs_purged(
    tables: &Tables,
    now: Millis,
    workflow_id: &str,
) -> Result<Outcome, StorageError> {
    if let Some(mut archive) = tables.workflow_archive(workflow_id)? {
        tables.remove_log_chunks(workflow_id)?;
        if archive.logs_purged_at.is_none() {
            archive.logs_purged_at = Some(now);
            tables.put_workflow_archive(&archive)?;
        }
    }
    Ok(Outcome::Applied)
}
