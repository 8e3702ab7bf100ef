//! OSMO's lifecycle rules (reference §2): starting groups when their
//! upstreams complete, group and workflow status aggregation, lead
//! semantics, failure propagation downstream, timers and operator jobs;
//! and what follows a workflow's end (archive and retention timers).
//!
//! Invariants: a group is in `active_groups` exactly while it is dispatched
//! and unfinished; every group that reaches a finished status has all its
//! tasks finished; workflow status is always the aggregation of its groups.
//!
//! Cost: settling after a task report reads the group's and workflow's
//! tallies, not their tasks or groups. A group's tasks are read only when
//! the group ends — its siblings stopped by lead semantics, or a failure
//! whose spec order decides its status and message — which happens once
//! per group run, so the reads stay bounded by the writes they come with;
//! a group's row only when its status changes, a workflow's only when its
//! status changes, and then its row alone, not its specs and group list
//! (`workflow_specs`), since a workflow of many short groups changes
//! status about twice per group.

use crate::aggregate;
use crate::config::{ConfigData, ConfigRevision, ConfigType, WorkflowConfig};
use crate::error::StorageError;
use crate::plan::TaskPlan;
use crate::record::{
    GroupRecord, JobKind, Millis, TaskRecord, TimerKind, WorkflowArchive, WorkflowCore,
};
use crate::status::{TaskStatus, WorkflowStatus};
use crate::tables::Tables;
use crate::tally::GroupTally;
use uuid::Uuid;

/// Namespace of every id [`derive_uuid`] makes. Fixed forever: every
/// replica, of any version, must derive the same ids from the same log.
const DERIVED_UUID_NAMESPACE: Uuid = uuid::uuid!("8a796867-05ab-4740-87c3-2abda9708578");

/// A deterministic identifier from its parts: a name-based (v5) UUID as 32
/// lower-case hex digits. Each part ends with a 0xFF byte, which no UTF-8
/// text holds, so different part lists never make the same name.
pub(crate) fn derive_uuid(parts: &[&str]) -> String {
    let mut name = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for part in parts {
        name.extend_from_slice(part.as_bytes());
        name.push(0xff);
    }
    Uuid::new_v5(&DERIVED_UUID_NAMESPACE, &name)
        .simple()
        .to_string()
}

/// Moves a waiting group to PROCESSING and queues its creation on the backend.
pub(crate) fn start_group(
    tables: &Tables,
    workflow: &WorkflowCore,
    group_name: &str,
    now: Millis,
) -> Result<(), StorageError> {
    let Some(mut group) = tables.group(&workflow.id, group_name)? else {
        return Ok(());
    };
    group.status = TaskStatus::Processing;
    group.processing_start_time = Some(now);
    group.dispatched = true;
    for mut task in tables.group_tasks(&group)? {
        task.status = TaskStatus::Processing;
        task.processing_start_time = Some(now);
        tables.put_task(&task)?;
    }
    tables.put_group(&group)?;
    tables.set_active(&workflow.backend, &workflow.id, &group.name, true)?;
    queue_create(tables, workflow, &group.name, now)
}

/// Queues the job that hands a group to its backend's operator.
fn queue_create(
    tables: &Tables,
    workflow: &WorkflowCore,
    group: &str,
    now: Millis,
) -> Result<(), StorageError> {
    tables.add_job(
        &workflow.backend,
        now,
        JobKind::CreateGroup {
            workflow_id: workflow.id.clone(),
            group: group.to_string(),
        },
    )?;
    Ok(())
}

/// A workflow's exec and queue timeouts (seconds) under the POOL and
/// WORKFLOW configs in force: the spec's value, else the pool's default,
/// else the WORKFLOW config's; then at most the pool's maximum, else the
/// WORKFLOW config's (OSMO clamps, it does not refuse). An empty or zero
/// duration sets nothing at that level.
pub(crate) fn timeouts_in_force(
    tables: &Tables,
    pool: &str,
    exec: Option<u64>,
    queue: Option<u64>,
) -> Result<(Option<u64>, Option<u64>), StorageError> {
    let pool = tables
        .config_current(ConfigType::Pool, pool)?
        .and_then(|revision| revision.data)
        .and_then(ConfigData::into_pool);
    let workflow = match tables.config_current(ConfigType::Workflow, "")? {
        Some(ConfigRevision {
            data: Some(data), ..
        }) => WorkflowConfig::from_data(&data).unwrap_or_default(),
        _ => WorkflowConfig::default(),
    };
    // Stored durations were checked when their config was put.
    let seconds = |text: &str| {
        crate::config::parse_duration_seconds(text)
            .ok()
            .filter(|&seconds| seconds > 0)
    };
    let pick = |spec: Option<u64>,
                pool_default: Option<&str>,
                default: &str,
                pool_max: Option<&str>,
                max: &str| {
        let chosen = spec
            .or_else(|| pool_default.and_then(seconds))
            .or_else(|| seconds(default));
        let limit = pool_max.and_then(seconds).or_else(|| seconds(max));
        match (chosen, limit) {
            (Some(chosen), Some(limit)) => Some(chosen.min(limit)),
            (chosen, _) => chosen,
        }
    };
    Ok((
        pick(
            exec,
            pool.as_ref().map(|p| p.default_exec_timeout.as_str()),
            &workflow.default_exec_timeout,
            pool.as_ref().map(|p| p.max_exec_timeout.as_str()),
            &workflow.max_exec_timeout,
        ),
        pick(
            queue,
            pool.as_ref().map(|p| p.default_queue_timeout.as_str()),
            &workflow.default_queue_timeout,
            pool.as_ref().map(|p| p.max_queue_timeout.as_str()),
            &workflow.max_queue_timeout,
        ),
    ))
}

/// `max_retry_per_task` of the WORKFLOW config in force (OSMO's default 0:
/// RESCHEDULE exit actions fail until an admin raises it).
pub(crate) fn max_retry_per_task(tables: &Tables) -> Result<u64, StorageError> {
    Ok(match tables.config_current(ConfigType::Workflow, "")? {
        Some(ConfigRevision {
            data: Some(data), ..
        }) => WorkflowConfig::from_data(&data).map_or(0, |config| config.max_retry_per_task),
        _ => 0,
    })
}

/// Ends the current run of each task of `group` named in `names` and starts
/// its next one: the ended run is kept in `task_runs` as RESCHEDULED (with
/// `reason` when it had no message of its own), the task moves to retry + 1
/// with a fresh UUID (a new pod on Kubernetes) and PROCESSING, the group
/// goes back to PROCESSING, and a create job hands the new runs to the
/// backend. With `stop_group`, whatever still runs of the group is stopped
/// first (a cancel job ahead of the create job).
pub(crate) fn start_next_runs(
    tables: &Tables,
    workflow: &WorkflowCore,
    mut group: GroupRecord,
    names: &[String],
    reason: &str,
    stop_group: bool,
    now: Millis,
) -> Result<(), StorageError> {
    if stop_group && group.dispatched {
        queue_cancel(tables, workflow, &group.name, reason, now)?;
    }
    for name in names {
        let Some(mut run) = tables.task_state(&workflow.id, name)? else {
            continue;
        };
        run.status = TaskStatus::Rescheduled;
        run.end_time = run.end_time.or(Some(now));
        if run.failure_message.is_none() {
            run.failure_message = Some(reason.to_string());
        }
        tables.put_task_run(&run)?;
        let retry_id = run.retry_id.saturating_add(1);
        // The plan is kept in its own table: `unstarted` only needs a name.
        let plan = TaskPlan {
            name: run.name.clone(),
            lead: run.lead,
            ..TaskPlan::default()
        };
        let next = TaskRecord {
            status: TaskStatus::Processing,
            processing_start_time: Some(now),
            ..TaskRecord::unstarted(
                &run.workflow_id,
                &run.group,
                &plan,
                derive_uuid(&[&workflow.uuid, "task", &run.name, &retry_id.to_string()]),
                retry_id,
            )
        };
        tables.put_task(&next)?;
    }
    group.status = TaskStatus::Processing;
    group.end_time = None;
    group.failure_message = None;
    group.dispatched = true;
    tables.put_group(&group)?;
    tables.set_active(&workflow.backend, &workflow.id, &group.name, true)?;
    queue_create(tables, workflow, &group.name, now)?;
    // Siblings that go on keep the group RUNNING.
    settle_group(tables, workflow, &group.name, now)?;
    settle_workflow(tables, &workflow.id, now)
}

fn finish_task(task: &mut TaskRecord, status: TaskStatus, message: &str, now: Millis) {
    task.status = status;
    task.end_time = Some(now);
    task.exit_code = task.exit_code.or(status.default_exit_code());
    if status.is_failure() && task.failure_message.is_none() {
        task.failure_message = Some(message.to_string());
    }
}

/// Ends a group from the control plane's side (cancel, timeout, upstream
/// failure): unfinished tasks take `status`, running processes are stopped,
/// and, if asked, downstream groups fail with FAILED_UPSTREAM (a cancel
/// instead ends every unfinished group itself).
pub(crate) fn finish_group(
    tables: &Tables,
    workflow: &WorkflowCore,
    group: &mut GroupRecord,
    status: TaskStatus,
    reason: &str,
    now: Millis,
    propagate_downstream: bool,
) -> Result<(), StorageError> {
    for mut task in tables.group_tasks(group)? {
        if !task.status.is_finished() {
            finish_task(&mut task, status, reason, now);
            tables.put_task(&task)?;
        }
    }
    group.status = status;
    group.end_time = Some(now);
    group.failure_message = Some(reason.to_string());
    tables.put_group(group)?;
    close_group(tables, workflow, group, reason, now)?;
    if propagate_downstream && status != TaskStatus::Completed {
        fail_downstream(tables, workflow, group, now)?;
    }
    Ok(())
}

/// Stops what may still run of a finished group and drops it from the active set.
fn close_group(
    tables: &Tables,
    workflow: &WorkflowCore,
    group: &GroupRecord,
    reason: &str,
    now: Millis,
) -> Result<(), StorageError> {
    if group.dispatched {
        tables.set_active(&workflow.backend, &workflow.id, &group.name, false)?;
        queue_cancel(tables, workflow, &group.name, reason, now)?;
    }
    Ok(())
}

/// Queues the job that stops what runs of a group on its backend.
fn queue_cancel(
    tables: &Tables,
    workflow: &WorkflowCore,
    group: &str,
    reason: &str,
    now: Millis,
) -> Result<(), StorageError> {
    tables.add_job(
        &workflow.backend,
        now,
        JobKind::CancelGroup {
            workflow_id: workflow.id.clone(),
            group: group.to_string(),
            reason: reason.to_string(),
        },
    )?;
    Ok(())
}

fn fail_downstream(
    tables: &Tables,
    workflow: &WorkflowCore,
    failed: &GroupRecord,
    now: Millis,
) -> Result<(), StorageError> {
    let mut pending: Vec<String> = failed.downstream.clone();
    while let Some(name) = pending.pop() {
        let Some(mut group) = tables.group(&workflow.id, &name)? else {
            continue;
        };
        if group.status.is_finished() {
            continue;
        }
        let reason = format!("upstream group '{}' did not complete", failed.name);
        for mut task in tables.group_tasks(&group)? {
            if !task.status.is_finished() {
                finish_task(&mut task, TaskStatus::FailedUpstream, &reason, now);
                tables.put_task(&task)?;
            }
        }
        group.status = TaskStatus::FailedUpstream;
        group.end_time = Some(now);
        group.failure_message = Some(reason.clone());
        tables.put_group(&group)?;
        close_group(tables, workflow, &group, &reason, now)?;
        pending.extend(group.downstream.iter().cloned());
    }
    Ok(())
}

/// Recomputes a group after one of its tasks changed, and carries the
/// consequences: lead semantics, timers, downstream start or failure.
pub(crate) fn settle_group(
    tables: &Tables,
    workflow: &WorkflowCore,
    group_name: &str,
    now: Millis,
) -> Result<(), StorageError> {
    let Some(mut tally) = tables.group_tally(&workflow.id, group_name)? else {
        return Ok(());
    };
    if tally.status.is_finished() {
        return Ok(());
    }
    if siblings_to_stop(&tally) {
        stop_siblings(tables, workflow, group_name, now)?;
        let Some(stopped) = tables.group_tally(&workflow.id, group_name)? else {
            return Ok(());
        };
        tally = stopped;
    }
    // Read once, and only when the group ends with a failure.
    let mut ordered: Option<(GroupRecord, Vec<TaskRecord>)> = None;
    let status = match aggregate::group_status(&tally) {
        Some(status) => status,
        None => {
            let (group, tasks) = group_with_tasks(tables, workflow, group_name, &mut ordered)?;
            aggregate::group_status_in_order(group, tasks)
        }
    };
    if status == tally.status {
        return Ok(());
    }
    let Some(mut group) = tables.group(&workflow.id, group_name)? else {
        return Ok(());
    };
    group.status = status;
    if status.phase_rank() >= TaskStatus::Scheduling.phase_rank()
        && group.scheduling_start_time.is_none()
    {
        group.scheduling_start_time = Some(now);
        if let Some(seconds) = workflow.queue_timeout_seconds {
            tables.add_timer(
                now.saturating_add(seconds_to_millis(seconds)),
                TimerKind::QueueTimeout {
                    workflow_id: workflow.id.clone(),
                    group: group.name.clone(),
                },
            )?;
        }
    }
    if status.phase_rank() >= TaskStatus::Initializing.phase_rank()
        && group.initializing_start_time.is_none()
    {
        group.initializing_start_time = Some(now);
    }
    if status.phase_rank() >= TaskStatus::Running.phase_rank() && group.start_time.is_none() {
        group.start_time = Some(now);
        if let Some(seconds) = workflow.exec_timeout_seconds {
            tables.add_timer(
                now.saturating_add(seconds_to_millis(seconds)),
                TimerKind::ExecTimeout {
                    workflow_id: workflow.id.clone(),
                    group: group.name.clone(),
                },
            )?;
        }
    }
    if status.is_finished() {
        group.end_time = Some(now);
        if status.is_failure() {
            let (_, tasks) = group_with_tasks(tables, workflow, group_name, &mut ordered)?;
            group.failure_message =
                tasks
                    .iter()
                    .find(|task| task.status == status)
                    .and_then(|task| {
                        task.failure_message
                            .clone()
                            .map(|message| format!("task '{}': {message}", task.name))
                    });
        }
        if group.dispatched {
            tables.set_active(&workflow.backend, &workflow.id, &group.name, false)?;
        }
        tables.put_group(&group)?;
        if status == TaskStatus::Completed {
            start_ready_downstream(tables, workflow, &group, now)?;
        } else {
            fail_downstream(tables, workflow, &group, now)?;
        }
    } else {
        tables.put_group(&group)?;
    }
    settle_workflow(tables, &workflow.id, now)
}

fn seconds_to_millis(seconds: u64) -> Millis {
    Millis::try_from(seconds.saturating_mul(1000)).unwrap_or(Millis::MAX)
}

/// A group's row and its tasks in spec order, read into `slot` once.
fn group_with_tasks<'a>(
    tables: &Tables,
    workflow: &WorkflowCore,
    group_name: &str,
    slot: &'a mut Option<(GroupRecord, Vec<TaskRecord>)>,
) -> Result<&'a (GroupRecord, Vec<TaskRecord>), StorageError> {
    let loaded = match slot.take() {
        Some(loaded) => loaded,
        None => {
            let group = tables.group(&workflow.id, group_name)?.ok_or_else(|| {
                StorageError::Tally(format!(
                    "group {group_name} of {} has a tally but no row",
                    workflow.id
                ))
            })?;
            let tasks = tables.group_tasks(&group)?;
            (group, tasks)
        }
    };
    Ok(slot.insert(loaded))
}

/// Whether lead semantics decided the group while some tasks still run: a
/// finished lead ends its siblings; with `ignoreNonleadStatus: false` a
/// failed task ends them too.
fn siblings_to_stop(tally: &GroupTally) -> bool {
    let decided =
        tally.leads.finished() > 0 || (!tally.ignore_nonlead_status && tally.tasks.failures() > 0);
    decided && tally.tasks.unfinished() > 0
}

/// Ends the unfinished tasks of a decided group with the decider's outcome
/// (the first finished lead, else the first failed task, in spec order) and
/// stops what runs of it.
fn stop_siblings(
    tables: &Tables,
    workflow: &WorkflowCore,
    group_name: &str,
    now: Millis,
) -> Result<(), StorageError> {
    let Some(group) = tables.group(&workflow.id, group_name)? else {
        return Ok(());
    };
    let mut tasks = tables.group_tasks(&group)?;
    let decider = tasks
        .iter()
        .find(|task| task.lead && task.status.is_finished())
        .or_else(|| {
            tasks
                .iter()
                .find(|task| !group.ignore_nonlead_status && task.status.is_failure())
        })
        .map(|task| (task.name.clone(), task.status));
    let Some((decider, decided)) = decider else {
        return Ok(());
    };
    // Siblings take the lead's outcome; special failures become plain FAILED.
    let sibling_status = match decided {
        TaskStatus::Completed => TaskStatus::Completed,
        _ => TaskStatus::Failed,
    };
    let reason = format!("stopped because task '{decider}' finished with {decided}");
    for task in tasks.iter_mut().filter(|task| !task.status.is_finished()) {
        finish_task(task, sibling_status, &reason, now);
        tables.put_task(task)?;
    }
    if group.dispatched {
        queue_cancel(tables, workflow, &group.name, &reason, now)?;
    }
    Ok(())
}

fn start_ready_downstream(
    tables: &Tables,
    workflow: &WorkflowCore,
    completed: &GroupRecord,
    now: Millis,
) -> Result<(), StorageError> {
    for name in &completed.downstream {
        let Some(mut group) = tables.group(&workflow.id, name)? else {
            continue;
        };
        group
            .remaining_upstream
            .retain(|upstream| upstream != &completed.name);
        let ready = group.remaining_upstream.is_empty() && group.status == TaskStatus::Waiting;
        tables.put_group(&group)?;
        if ready {
            start_group(tables, workflow, name, now)?;
        }
    }
    Ok(())
}

/// Recomputes a workflow from its groups' tally; ends it when they are
/// all finished.
pub(crate) fn settle_workflow(
    tables: &Tables,
    workflow_id: &str,
    now: Millis,
) -> Result<(), StorageError> {
    let Some(tally) = tables.workflow_tally(workflow_id)? else {
        return Ok(());
    };
    if !tally.status.is_alive() {
        return Ok(());
    }
    let status = aggregate::workflow_status(&tally.groups);
    if status == tally.status {
        return Ok(());
    }
    // The row alone: a workflow of many short groups changes status about
    // twice per group, and its specs stay as they are.
    let Some(workflow) = tables.workflow_row(workflow_id)? else {
        return Ok(());
    };
    let mut updated = workflow.clone();
    updated.status = status;
    if status == WorkflowStatus::Running && updated.start_time.is_none() {
        updated.start_time = Some(now);
    }
    if !status.is_alive() {
        updated.end_time = Some(now);
    }
    tables.put_workflow(Some(&workflow), &updated)?;
    if !status.is_alive() {
        workflow_ended(tables, workflow_id, now)?;
    }
    Ok(())
}

/// A workflow reached a final status at `now`: records its archive row and
/// schedules the archive (due at once) and, if the WORKFLOW config in force
/// sets `workflow_log.retention`, the purge of its logs at `now + retention`.
/// The retention is read here, from replicated state, so every replica
/// schedules the same purge; a later config change leaves it as it was.
pub(crate) fn workflow_ended(
    tables: &Tables,
    workflow_id: &str,
    now: Millis,
) -> Result<(), StorageError> {
    if tables.workflow_archive(workflow_id)?.is_some() {
        return Ok(());
    }
    let retention_ms = match tables.config_current(ConfigType::Workflow, "")? {
        Some(ConfigRevision {
            data: Some(ConfigData::Json(text)),
            ..
        }) => crate::config::workflow::retention_of_config_text(&text),
        _ => None,
    };
    tables.add_timer(
        now,
        TimerKind::ArchiveWorkflow {
            workflow_id: workflow_id.to_string(),
        },
    )?;
    let purge_due =
        retention_ms.map(|ms| now.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX)));
    if let Some(due) = purge_due {
        tables.add_timer(
            due,
            TimerKind::PurgeWorkflowLogs {
                workflow_id: workflow_id.to_string(),
            },
        )?;
    }
    tables.put_workflow_archive(&WorkflowArchive {
        workflow_id: workflow_id.to_string(),
        end_time: now,
        retention_ms,
        purge_due,
        archived_at: None,
        logs_purged_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        assert_eq!(derive_uuid(&["a", "b"]), derive_uuid(&["a", "b"]));
        assert_ne!(derive_uuid(&["a", "b"]), derive_uuid(&["ab"]));
        assert_eq!(derive_uuid(&["x"]).len(), 32);
    }

    #[test]
    fn derived_uuids_are_name_based() {
        let derived = derive_uuid(&["wf-uuid", "task", "train", "0"]);
        assert_eq!(derived, derived.to_ascii_lowercase());
        let parsed = Uuid::parse_str(&derived).expect("32 hex digits");
        assert_eq!(parsed.get_version(), Some(uuid::Version::Sha1));
    }
}
