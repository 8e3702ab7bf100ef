//! Appliers for a workflow as a whole: `SubmitWorkflow` (with the plan's
//! structural check, and its labels), `CancelWorkflow` and `TagWorkflow`.
//!
//! Invariants: a submit whose plan breaks the structure `apply` relies on is
//! stored as FAILED_SUBMISSION without groups, tasks or jobs; group and task
//! uuids derive from the submission alone, so every replica writes the same
//! ones; a submit whose labels break the label rules is rejected and writes
//! nothing; a cancel leaves finished groups as they are and, only when
//! forced, queues their cancel job again; a workflow carries only tags the
//! WORKFLOW config allowed when they were added.

use crate::command::{Outcome, RejectionKind};
use crate::config::workflow::WorkflowConfig;
use crate::config::{ConfigRevision, ConfigType};
use crate::error::StorageError;
use crate::labels::{check_labels, Labels};
use crate::lifecycle::{self, derive_uuid};
use crate::plan::WorkflowPlan;
use crate::record::{GroupRecord, JobKind, Millis, Submission, TaskRecord, WorkflowRecord};
use crate::status::{TaskStatus, WorkflowStatus};
use crate::tables::Tables;
use std::collections::HashSet;

pub(super) fn apply_workflow_submit(
    tables: &Tables,
    now: Millis,
    submission: &Submission,
    labels: &Labels,
) -> Result<Outcome, StorageError> {
    let Some(pool) = tables.pool(&submission.pool)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("pool '{}' does not exist", submission.pool),
        ));
    };
    if let Err(message) = check_labels(labels) {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!("labels: {message}"),
        ));
    }
    let plan = submission
        .plan
        .clone()
        .and_then(|plan| check_plan(&plan).map(|()| plan));
    let number = tables.next_workflow_number(&submission.name)?;
    let id = format!("{}-{}", submission.name, number);
    let mut workflow = WorkflowRecord {
        id: id.clone(),
        name: submission.name.clone(),
        uuid: submission.uuid.clone(),
        submit_seq: tables.next_submit_seq()?,
        pool: pool.name.clone(),
        backend: pool.backend.clone(),
        user: submission.user.clone(),
        priority: submission.priority,
        status: WorkflowStatus::Pending,
        submit_time: now,
        start_time: None,
        end_time: None,
        cancelled_by: None,
        cancel_message: None,
        failure_message: None,
        template_spec: submission.template_spec.clone(),
        rendered_spec: submission.rendered_spec.clone(),
        exec_timeout_seconds: None,
        queue_timeout_seconds: None,
        groups: Vec::new(),
    };
    tables.put_workflow_labels(&id, labels)?;
    let plan = match plan {
        Ok(plan) => plan,
        Err(message) => {
            workflow.status = WorkflowStatus::FailedSubmission;
            workflow.failure_message = Some(message.clone());
            workflow.end_time = Some(now);
            tables.put_workflow(None, &workflow)?;
            lifecycle::workflow_ended(tables, &id, now)?;
            return Ok(Outcome::Submitted {
                workflow_id: id,
                failure: Some(message),
            });
        }
    };
    (
        workflow.exec_timeout_seconds,
        workflow.queue_timeout_seconds,
    ) = lifecycle::timeouts_in_force(
        tables,
        &workflow.pool,
        plan.exec_timeout_seconds,
        plan.queue_timeout_seconds,
    )?;
    workflow.groups = plan.groups.iter().map(|group| group.name.clone()).collect();
    tables.put_workflow(None, &workflow)?;

    for group_plan in &plan.groups {
        let downstream = plan
            .groups
            .iter()
            .filter(|other| other.upstream.contains(&group_plan.name))
            .map(|other| other.name.clone())
            .collect();
        let group = GroupRecord {
            workflow_id: id.clone(),
            name: group_plan.name.clone(),
            uuid: derive_uuid(&[&workflow.uuid, "group", &group_plan.name]),
            status: TaskStatus::Waiting,
            barrier: group_plan.barrier,
            ignore_nonlead_status: group_plan.ignore_nonlead_status,
            upstream: group_plan.upstream.clone(),
            downstream,
            remaining_upstream: group_plan.upstream.clone(),
            tasks: group_plan
                .tasks
                .iter()
                .map(|task| task.name.clone())
                .collect(),
            processing_start_time: None,
            scheduling_start_time: None,
            initializing_start_time: None,
            start_time: None,
            end_time: None,
            failure_message: None,
            dispatched: false,
        };
        // The group first: its tally counts the tasks as they are written.
        tables.put_group(&group)?;
        for task_plan in &group_plan.tasks {
            tables.insert_task(&TaskRecord::unstarted(
                &id,
                &group_plan.name,
                task_plan,
                derive_uuid(&[&workflow.uuid, "task", &task_plan.name, "0"]),
                0,
            ))?;
        }
    }
    let core = workflow.core();
    for group_plan in plan.groups.iter().filter(|group| group.upstream.is_empty()) {
        lifecycle::start_group(tables, &core, &group_plan.name, now)?;
    }
    Ok(Outcome::Submitted {
        workflow_id: id,
        failure: None,
    })
}

/// The structural invariants `apply` relies on; the spec validator checks
/// them first with better messages, this keeps a bad command harmless.
fn check_plan(plan: &WorkflowPlan) -> Result<(), String> {
    if plan.groups.is_empty() {
        return Err("workflow has no groups".into());
    }
    let mut groups_seen = HashSet::new();
    let mut tasks_seen = HashSet::new();
    for group in &plan.groups {
        for upstream in &group.upstream {
            if !groups_seen.contains(upstream.as_str()) {
                return Err(format!(
                    "group '{}' depends on '{upstream}', which is not an earlier group",
                    group.name
                ));
            }
        }
        if !groups_seen.insert(group.name.as_str()) {
            return Err(format!("duplicate group name '{}'", group.name));
        }
        if group.tasks.iter().filter(|task| task.lead).count() != 1 {
            return Err(format!(
                "group '{}' must have exactly one lead task",
                group.name
            ));
        }
        for task in &group.tasks {
            if !tasks_seen.insert(task.name.as_str()) {
                return Err(format!("duplicate task name '{}'", task.name));
            }
        }
    }
    Ok(())
}

pub(super) fn apply_workflow_cancel(
    tables: &Tables,
    now: Millis,
    workflow_id: &str,
    user: &str,
    message: Option<&str>,
    force: bool,
) -> Result<Outcome, StorageError> {
    let Some(workflow) = tables.workflow(workflow_id)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("workflow '{workflow_id}' does not exist"),
        ));
    };
    if !workflow.status.is_alive() && !force {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "workflow '{workflow_id}' has already finished with status {}; use force to clean it up again",
                workflow.status
            ),
        ));
    }
    let reason = message.map_or_else(|| format!("canceled by {user}"), str::to_string);
    let core = workflow.core();
    for group_name in &workflow.groups {
        let Some(mut group) = tables.group(workflow_id, group_name)? else {
            continue;
        };
        if group.status.is_finished() {
            if force && group.dispatched {
                tables.add_job(
                    &workflow.backend,
                    now,
                    JobKind::CancelGroup {
                        workflow_id: workflow_id.to_string(),
                        group: group.name.clone(),
                        reason: reason.clone(),
                    },
                )?;
            }
            continue;
        }
        lifecycle::finish_group(
            tables,
            &core,
            &mut group,
            TaskStatus::FailedCanceled,
            &reason,
            now,
            false,
        )?;
    }
    lifecycle::settle_workflow(tables, workflow_id, now)?;
    if let Some(settled) = tables.workflow_row(workflow_id)? {
        let mut updated = settled.clone();
        updated.cancelled_by = Some(user.to_string());
        updated.cancel_message = message.map(str::to_string);
        tables.put_workflow(Some(&settled), &updated)?;
    }
    Ok(Outcome::Canceled {
        workflow_id: workflow_id.to_string(),
    })
}

/// OSMO's `POST /api/workflow/{name}/tag`: `remove`, then `add`; an added
/// tag must be in the WORKFLOW config's `workflow_info.tags`.
pub(super) fn apply_workflow_tag(
    tables: &Tables,
    workflow_id: &str,
    add: &[String],
    remove: &[String],
) -> Result<Outcome, StorageError> {
    let Some(workflow) = tables.workflow_row(workflow_id)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("workflow '{workflow_id}' does not exist"),
        ));
    };
    if !add.is_empty() {
        let allowed = allowed_tags(tables)?;
        if add.iter().any(|tag| !allowed.contains(tag)) {
            return Ok(Outcome::rejected(
                RejectionKind::Invalid,
                format!(
                    "Invalid tag detected. Users can only set specified tags: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let mut tags = tables.workflow_tags(workflow_id)?;
    tags.retain(|tag| !remove.contains(tag));
    for tag in add {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tables.set_workflow_tags(&workflow, &tags)?;
    Ok(Outcome::Applied)
}

/// The tags users may give workflows: the WORKFLOW config's
/// `workflow_info.tags` (none when never set).
fn allowed_tags(tables: &Tables) -> Result<Vec<String>, StorageError> {
    let config = match tables.config_current(ConfigType::Workflow, "")? {
        Some(ConfigRevision {
            data: Some(data), ..
        }) => WorkflowConfig::from_data(&data).unwrap_or_default(),
        _ => WorkflowConfig::default(),
    };
    Ok(config.workflow_info["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|tag| tag.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
