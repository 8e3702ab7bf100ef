//! Appliers for one task run: `ReportTask` (a status from its executor),
//! `RecordTaskDataTimes` and `RecordTaskEvents`.
//!
//! Invariants: only the task's current run (its retry id) changes it; a
//! status moves forward by phase only and a finished task takes none; data
//! times are kept even when they arrive after the final status; a
//! RESCHEDULE exit action starts a next run only while the run's retry id
//! is below the WORKFLOW config's `max_retry_per_task` (else it fails); an
//! exit code no rule of the task names takes its pool's default action;
//! events are kept whole or not at all (every one within its bounds).

use crate::command::{Outcome, RejectionKind, TaskDataTimes, TaskKey, TaskReport};
use crate::config::{ConfigData, ConfigType};
use crate::error::StorageError;
use crate::lifecycle;
use crate::plan::ExitAction;
use crate::record::{Millis, TaskEvent, TaskEventInput, TaskRecord, TASK_EVENTS_PER_COMMAND_MAX};
use crate::status::TaskStatus;
use crate::tables::Tables;

/// The task `key` names, if `key` is its current run; else the refusal.
fn current_run(
    tables: &Tables,
    key: &TaskKey,
) -> Result<Result<TaskRecord, Outcome>, StorageError> {
    let Some(task) = tables.task_state(&key.workflow_id, &key.task)? else {
        return Ok(Err(Outcome::rejected(
            RejectionKind::NotFound,
            format!(
                "task '{}' of workflow '{}' does not exist",
                key.task, key.workflow_id
            ),
        )));
    };
    if task.retry_id != key.retry_id {
        return Ok(Err(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "task '{}' is at retry {}, not {}",
                key.task, task.retry_id, key.retry_id
            ),
        )));
    }
    Ok(Ok(task))
}

pub(super) fn apply_task_report(
    tables: &Tables,
    now: Millis,
    report: &TaskReport,
) -> Result<Outcome, StorageError> {
    let key = &report.key;
    let mut task = match current_run(tables, key)? {
        Ok(task) => task,
        Err(refusal) => return Ok(refusal),
    };
    if task.status.is_finished() {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "task '{}' has already finished with status {}",
                key.task, task.status
            ),
        ));
    }
    if !report.status.is_reportable() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!("an executor cannot report status {}", report.status),
        ));
    }
    if matches!(task.status, TaskStatus::Waiting | TaskStatus::Submitting) {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "task '{}' has not been handed to an executor yet (it is {})",
                key.task, task.status
            ),
        ));
    }
    if report.status.phase_rank() < task.status.phase_rank() {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "task '{}' is already {}, later than {}",
                key.task, task.status, report.status
            ),
        ));
    }
    if report.status == task.status {
        return Ok(Outcome::Applied);
    }
    // The workflow's core, not its row: a report reads a few bytes of it.
    let Some(workflow) = tables.workflow_core(&key.workflow_id)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            "workflow vanished",
        ));
    };
    let mut status = report.status;
    // Set when a RESCHEDULE exit action has retry budget left: this run ends
    // and the next one starts.
    let mut reschedule = None;
    if let Some(code) = report.exit_code {
        if matches!(status, TaskStatus::Completed | TaskStatus::Failed) {
            let plan = tables.task_plan(&key.workflow_id, &key.task)?;
            // The task's own rules first, then its pool's default ones.
            let action = match plan.exit_action_for(code) {
                Some(action) => Some(action),
                None => pool_default_exit_action(tables, &workflow.pool, code)?,
            };
            status = match action {
                Some(ExitAction::Complete) => TaskStatus::Completed,
                Some(ExitAction::Reschedule) => {
                    let budget = lifecycle::max_retry_per_task(tables)?;
                    if u64::from(task.retry_id) < budget {
                        reschedule = Some(format!(
                            "exit code {code} asks to RESCHEDULE: retry {} of {budget}",
                            task.retry_id + 1
                        ));
                    }
                    TaskStatus::Failed
                }
                Some(ExitAction::Fail) => TaskStatus::Failed,
                None => status,
            };
        }
    }
    let time = report.time.min(now);
    match status {
        TaskStatus::Scheduling => task.scheduling_start_time = Some(time),
        TaskStatus::Initializing => {
            task.initializing_start_time = Some(time);
            task.input_download_start_time.get_or_insert(time);
        }
        TaskStatus::Running => {
            task.start_time = Some(time);
            task.input_download_end_time.get_or_insert(time);
        }
        _ => {
            task.end_time = Some(time);
            task.exit_code = report.exit_code.or(status.default_exit_code());
            if status.is_failure() {
                task.failure_message = report.message.clone().or_else(|| {
                    report
                        .exit_code
                        .map(|code| format!("exited with code {code}"))
                });
            }
        }
    }
    if let Some(node) = &report.node_name {
        task.node_name = Some(node.clone());
    }
    task.status = status;
    tables.put_task(&task)?;
    if let Some(reason) = reschedule {
        return reschedule_task(tables, &workflow, &task, &reason, now);
    }
    lifecycle::settle_group(tables, &workflow, &task.group, now)?;
    Ok(Outcome::Applied)
}

/// The action the POOL config in force gives `exit_code` by default.
fn pool_default_exit_action(
    tables: &Tables,
    pool: &str,
    exit_code: i32,
) -> Result<Option<ExitAction>, StorageError> {
    Ok(tables
        .config_current(ConfigType::Pool, pool)?
        .and_then(|revision| revision.data)
        .and_then(ConfigData::into_pool)
        .and_then(|config| crate::plan::exit_action_in(&config.default_exit_actions, exit_code)))
}

/// OSMO's RESCHEDULE: a lead (or any task of a group that does not ignore
/// non-lead statuses) restarts its whole group; any other task starts its
/// next run alone while its siblings go on.
fn reschedule_task(
    tables: &Tables,
    workflow: &crate::record::WorkflowCore,
    task: &TaskRecord,
    reason: &str,
    now: Millis,
) -> Result<Outcome, StorageError> {
    let Some(group) = tables.group(&workflow.id, &task.group)? else {
        return Ok(Outcome::rejected(RejectionKind::NotFound, "group vanished"));
    };
    let whole_group = task.lead || !group.ignore_nonlead_status;
    let names = if whole_group {
        group.tasks.clone()
    } else {
        vec![task.name.clone()]
    };
    let reason = if whole_group && group.tasks.len() > 1 {
        format!("task '{}': {reason}; its group restarts", task.name)
    } else {
        reason.to_string()
    };
    lifecycle::start_next_runs(tables, workflow, group, &names, &reason, whole_group, now)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_task_data_times_record(
    tables: &Tables,
    key: &TaskKey,
    times: &TaskDataTimes,
) -> Result<Outcome, StorageError> {
    let mut task = match current_run(tables, key)? {
        Ok(task) => task,
        Err(refusal) => return Ok(refusal),
    };
    // Times may arrive after the final status (reports of one run are
    // ordered, but a cancel can finish the task first): they are kept.
    for (field, value) in [
        (
            &mut task.input_download_start_time,
            times.input_download_start,
        ),
        (&mut task.input_download_end_time, times.input_download_end),
        (
            &mut task.output_upload_start_time,
            times.output_upload_start,
        ),
        (&mut task.output_upload_end_time, times.output_upload_end),
    ] {
        if value.is_some() {
            *field = value;
        }
    }
    tables.put_task(&task)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_task_events_record(
    tables: &Tables,
    key: &TaskKey,
    events: &[TaskEventInput],
) -> Result<Outcome, StorageError> {
    if events.len() > TASK_EVENTS_PER_COMMAND_MAX {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!(
                "{} task events in one command, over the limit of {TASK_EVENTS_PER_COMMAND_MAX}",
                events.len()
            ),
        ));
    }
    if let Some(refusal) = events.iter().find_map(TaskEventInput::refusal) {
        return Ok(Outcome::rejected(RejectionKind::Invalid, refusal));
    }
    if let Err(refusal) = current_run(tables, key)? {
        return Ok(refusal);
    }
    tables.append_task_events(
        &key.workflow_id,
        &key.task,
        events.iter().map(|event| TaskEvent {
            retry_id: key.retry_id,
            time: event.time,
            reason: event.reason.clone(),
            message: event.message.clone(),
        }),
    )?;
    Ok(Outcome::Applied)
}
