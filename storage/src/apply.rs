//! `apply`: one `match` over [`Command`], one applier per variant.
//!
//! Invariants: appliers read only the command and the transaction; a
//! rejection is decided before the first write, so a rejected command leaves
//! the tables untouched.

use crate::apply_config;
use crate::command::{Command, Outcome, RejectionKind, TaskDataTimes, TaskKey, TaskReport};
use crate::config::{ConfigData, ConfigMeta, ConfigType, PoolConfig};
use crate::error::StorageError;
use crate::lifecycle::{self, derive_uuid};
use crate::plan::{ExitAction, WorkflowPlan};
use crate::record::{
    GroupRecord, JobKind, LogChunk, Millis, PoolRecord, Submission, TaskRecord, TimerKind,
    WorkflowRecord,
};
use crate::status::{TaskStatus, WorkflowStatus};
use crate::tables::Tables;
use redb::WriteTransaction;
use std::collections::{BTreeSet, HashSet};

/// Applies one command inside `txn`.
pub fn apply(txn: &WriteTransaction, command: &Command) -> Result<Outcome, StorageError> {
    let tables = Tables::new(txn);
    match command {
        Command::AppendLogChunk { chunk } => apply_log_chunk_append(&tables, chunk),
        Command::SubmitWorkflow { now, submission } => {
            apply_workflow_submit(&tables, *now, submission)
        }
        Command::CancelWorkflow {
            now,
            workflow_id,
            user,
            message,
            force,
        } => apply_workflow_cancel(&tables, *now, workflow_id, user, message.as_deref(), *force),
        Command::ReportTask { now, report } => apply_task_report(&tables, *now, report),
        Command::RecordTaskDataTimes { key, times } => {
            apply_task_data_times_record(&tables, key, times)
        }
        Command::CompleteJob { job_id } => apply_job_complete(&tables, *job_id),
        Command::FireTimer { now, timer_id, due } => {
            apply_timer_fire(&tables, *now, *timer_id, *due)
        }
        Command::PutPool { pool } => apply_pool_put(&tables, pool),
        Command::OperatorHello {
            now,
            backend,
            running,
        } => apply_operator_hello(&tables, *now, backend, running, None),
        Command::OperatorHelloWithExecutor {
            now,
            backend,
            running,
            executor,
        } => apply_operator_hello(&tables, *now, backend, running, Some(executor)),
        Command::IssueToken { token } => apply_token_issue(&tables, token),
        Command::RevokeToken { name } => apply_token_revoke(&tables, name),
        Command::OperatorReports {
            now,
            backend,
            instance,
            last_seq,
            commands,
        } => apply_operator_reports(txn, &tables, *now, backend, *instance, *last_seq, commands),
        Command::PutConfig {
            now,
            config_type,
            name,
            meta,
            data,
        } => apply_config::apply_config_put(&tables, *now, *config_type, name, meta, data),
        Command::DeleteConfig {
            now,
            config_type,
            name,
            meta,
        } => apply_config::apply_config_delete(&tables, *now, *config_type, name, meta),
        Command::RollbackConfig {
            now,
            config_type,
            revision,
            meta,
        } => apply_config::apply_config_rollback(&tables, *now, *config_type, *revision, meta),
        Command::BackendHeartbeat {
            now,
            backend,
            nodes,
            offline_after_ms,
            fail_tasks_after_ms,
        } => apply_config::apply_backend_heartbeat(
            &tables,
            *now,
            backend,
            nodes,
            *offline_after_ms,
            *fail_tasks_after_ms,
        ),
    }
}

/// Applies the not-yet-applied part of an operator's batch, in order.
/// Rejections of single reports are deterministic no-ops like any other;
/// the batch itself is refused only if it is malformed.
fn apply_operator_reports(
    txn: &WriteTransaction,
    tables: &Tables,
    now: Millis,
    backend: &str,
    instance: u64,
    last_seq: u64,
    commands: &[(u64, Command)],
) -> Result<Outcome, StorageError> {
    let mut previous = 0;
    for (seq, command) in commands {
        if *seq <= previous || *seq > last_seq {
            return Ok(Outcome::rejected(
                RejectionKind::Invalid,
                format!("operator batch sequence {seq} out of order (last {last_seq})"),
            ));
        }
        previous = *seq;
        if !matches!(
            command,
            Command::ReportTask { .. }
                | Command::CompleteJob { .. }
                | Command::OperatorHello { .. }
                | Command::OperatorHelloWithExecutor { .. }
                | Command::BackendHeartbeat { .. }
                | Command::AppendLogChunk { .. }
                | Command::RecordTaskDataTimes { .. }
        ) {
            return Ok(Outcome::rejected(
                RejectionKind::Invalid,
                "an operator batch may hold only operator reports",
            ));
        }
    }
    let applied = tables.operator_seq(backend, instance)?;
    if last_seq <= applied {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!("operator messages up to {last_seq} were already applied"),
        ));
    }
    // A new chunk that overlaps the index means the batch was cut from an
    // older view of it: applying the rest would acknowledge lines that
    // are in no chunk. Refused whole, the sequence stays where it is.
    for (_, command) in commands.iter().filter(|(seq, _)| *seq > applied) {
        if let Command::AppendLogChunk { chunk } = command {
            let last = tables.log_last_offset(&chunk.workflow_id, &chunk.task, chunk.retry_id)?;
            if let Some(last) = last.filter(|last| chunk.first_offset <= *last) {
                return Ok(Outcome::rejected(
                    RejectionKind::Stale,
                    format!(
                        "log lines of {}/{} up to offset {last} are already indexed; the batch's chunk starts at {}",
                        chunk.workflow_id, chunk.task, chunk.first_offset
                    ),
                ));
            }
        }
    }
    for (_, command) in commands.iter().filter(|(seq, _)| *seq > applied) {
        apply(txn, command)?;
    }
    tables.put_operator_seq(
        backend,
        instance,
        last_seq,
        now,
        crate::command::OPERATOR_INSTANCES_MAX,
    )?;
    Ok(Outcome::Applied)
}

fn apply_log_chunk_append(tables: &Tables, chunk: &LogChunk) -> Result<Outcome, StorageError> {
    if chunk.first_offset > chunk.last_offset || chunk.lines == 0 || chunk.key.is_empty() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!(
                "log chunk of {}/{} is malformed (offsets {}..={}, {} lines, key '{}')",
                chunk.workflow_id,
                chunk.task,
                chunk.first_offset,
                chunk.last_offset,
                chunk.lines,
                chunk.key
            ),
        ));
    }
    let Some(task) = tables.task_state(&chunk.workflow_id, &chunk.task)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!(
                "task '{}' of workflow '{}' does not exist",
                chunk.task, chunk.workflow_id
            ),
        ));
    };
    // Only a finished task's workflow can have ended and been purged: the
    // common case (a running task's lines) skips the archive lookup.
    let purged = if task.status.is_finished() {
        tables
            .workflow_archive(&chunk.workflow_id)?
            .and_then(|archive| archive.logs_purged_at)
    } else {
        None
    };
    if let Some(purged) = purged {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!(
                "logs of workflow '{}' were deleted by the retention policy at {purged}",
                chunk.workflow_id
            ),
        ));
    }
    if let Some(last) = tables.log_last_offset(&chunk.workflow_id, &chunk.task, chunk.retry_id)? {
        if chunk.first_offset <= last {
            return Ok(Outcome::rejected(
                RejectionKind::Conflict,
                format!(
                    "log lines of {}/{} up to offset {last} are already indexed",
                    chunk.workflow_id, chunk.task
                ),
            ));
        }
    }
    tables.put_log_chunk(chunk)?;
    Ok(Outcome::Applied)
}

fn apply_workflow_submit(
    tables: &Tables,
    now: Millis,
    submission: &Submission,
) -> Result<Outcome, StorageError> {
    let Some(pool) = tables.pool(&submission.pool)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("pool '{}' does not exist", submission.pool),
        ));
    };
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
    workflow.exec_timeout_seconds = plan.exec_timeout_seconds;
    workflow.queue_timeout_seconds = plan.queue_timeout_seconds;
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
        for task_plan in &group_plan.tasks {
            tables.insert_task(&TaskRecord {
                workflow_id: id.clone(),
                group: group_plan.name.clone(),
                name: task_plan.name.clone(),
                uuid: derive_uuid(&[&workflow.uuid, "task", &task_plan.name, "0"]),
                retry_id: 0,
                lead: task_plan.lead,
                status: TaskStatus::Waiting,
                exit_code: None,
                failure_message: None,
                plan: task_plan.clone(),
                processing_start_time: None,
                scheduling_start_time: None,
                initializing_start_time: None,
                start_time: None,
                end_time: None,
                input_download_start_time: None,
                input_download_end_time: None,
                output_upload_start_time: None,
                node_name: None,
                output_upload_end_time: None,
            })?;
        }
        tables.put_group(&group)?;
    }
    for group_plan in plan.groups.iter().filter(|group| group.upstream.is_empty()) {
        lifecycle::start_group(tables, &workflow, &group_plan.name, now)?;
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

fn apply_workflow_cancel(
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
            &workflow,
            &mut group,
            TaskStatus::FailedCanceled,
            &reason,
            now,
            false,
        )?;
    }
    lifecycle::settle_workflow(tables, workflow_id, now)?;
    if let Some(settled) = tables.workflow(workflow_id)? {
        let mut updated = settled.clone();
        updated.cancelled_by = Some(user.to_string());
        updated.cancel_message = message.map(str::to_string);
        tables.put_workflow(Some(&settled), &updated)?;
    }
    Ok(Outcome::Canceled {
        workflow_id: workflow_id.to_string(),
    })
}

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

fn apply_task_report(
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
    let Some(workflow) = tables.workflow(&key.workflow_id)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            "workflow vanished",
        ));
    };
    let mut status = report.status;
    if let Some(code) = report.exit_code {
        if matches!(status, TaskStatus::Completed | TaskStatus::Failed) {
            let plan = tables.task_plan(&key.workflow_id, &key.task)?;
            status = match plan.exit_action_for(code) {
                Some(ExitAction::Complete) => TaskStatus::Completed,
                // RESCHEDULE needs a retry budget (max_retry_per_task, OSMO default 0): it fails.
                Some(ExitAction::Fail) | Some(ExitAction::Reschedule) => TaskStatus::Failed,
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
    lifecycle::settle_group(tables, &workflow, &task.group, now)?;
    Ok(Outcome::Applied)
}

fn apply_task_data_times_record(
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

fn apply_job_complete(tables: &Tables, job_id: u64) -> Result<Outcome, StorageError> {
    if tables.remove_job(job_id)? {
        Ok(Outcome::Applied)
    } else {
        Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("job {job_id} is not queued"),
        ))
    }
}

fn apply_timer_fire(
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
                apply_config::fire_backend_timer(tables, now, backend, (due, timer_id), false)?;
                return Ok(Outcome::Applied);
            }
            TimerKind::BackendLost { backend } => {
                apply_config::fire_backend_timer(tables, now, backend, (due, timer_id), true)?;
                return Ok(Outcome::Applied);
            }
            TimerKind::ArchiveWorkflow { workflow_id } => {
                return apply_workflow_archived(tables, now, workflow_id);
            }
            TimerKind::PurgeWorkflowLogs { workflow_id } => {
                return apply_workflow_logs_purged(tables, now, workflow_id);
            }
        };
    let (Some(workflow), Some(mut group)) = (
        tables.workflow(workflow_id)?,
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

fn apply_pool_put(tables: &Tables, pool: &PoolRecord) -> Result<Outcome, StorageError> {
    if pool.name.trim().is_empty() || pool.backend.trim().is_empty() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a pool needs a name and a backend",
        ));
    }
    // Recorded as a POOL revision too, so the config history is complete.
    let meta = ConfigMeta {
        user: "system".to_string(),
        description: "pool created by the server".to_string(),
        tags: Vec::new(),
    };
    let data = ConfigData::Pool(PoolConfig::from_record(pool));
    // PutPool carries no time: its revision is stamped 0.
    match apply_config::apply_config_put(tables, 0, ConfigType::Pool, &pool.name, &meta, &data)? {
        rejected @ Outcome::Rejected(_) => Ok(rejected),
        _ => Ok(Outcome::Applied),
    }
}

fn apply_operator_hello(
    tables: &Tables,
    now: Millis,
    backend: &str,
    running: &[TaskKey],
    executor: Option<&str>,
) -> Result<Outcome, StorageError> {
    apply_config::ensure_backend(tables, now, backend)?;
    if let Some(executor) = executor.map(str::trim).filter(|e| !e.is_empty()) {
        if let Some(mut record) = tables.backend(backend)? {
            if record.executor != executor {
                record.executor = executor.to_string();
                tables.put_backend(&record)?;
            }
        }
    }
    let running: BTreeSet<&TaskKey> = running.iter().collect();
    let queued: BTreeSet<(String, String)> = tables
        .jobs()?
        .into_iter()
        .filter_map(|job| match job.kind {
            JobKind::CreateGroup { workflow_id, group } if job.backend == backend => {
                Some((workflow_id, group))
            }
            _ => None,
        })
        .collect();
    for (workflow_id, group_name) in tables.active_groups(backend)? {
        if queued.contains(&(workflow_id.clone(), group_name.clone())) {
            continue;
        }
        let (Some(workflow), Some(group)) = (
            tables.workflow(&workflow_id)?,
            tables.group(&workflow_id, &group_name)?,
        ) else {
            continue;
        };
        let tasks = tables.group_tasks(&group)?;
        let lost = tasks.iter().any(|task| {
            !task.status.is_finished()
                && !running.contains(&TaskKey {
                    workflow_id: workflow_id.clone(),
                    task: task.name.clone(),
                    retry_id: task.retry_id,
                })
        });
        if lost {
            lifecycle::redispatch_group(tables, &workflow, group, now)?;
        }
    }
    Ok(Outcome::Applied)
}

fn apply_token_issue(
    tables: &Tables,
    token: &crate::record::TokenRecord,
) -> Result<Outcome, StorageError> {
    let well_formed_hash = token.hash.len() == 64
        && token
            .hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if token.name.trim().is_empty() || !well_formed_hash {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a token needs a name and a lower-case hex SHA-256 hash",
        ));
    }
    if let Some(existing) = tables.token(&token.name)? {
        if existing.user != token.user {
            return Ok(Outcome::rejected(
                RejectionKind::Conflict,
                format!(
                    "token name '{}' is taken by another user; choose another name",
                    token.name
                ),
            ));
        }
    }
    tables.put_token(token)?;
    Ok(Outcome::Applied)
}

fn apply_token_revoke(tables: &Tables, name: &str) -> Result<Outcome, StorageError> {
    if tables.remove_token(name)? {
        Ok(Outcome::Applied)
    } else {
        Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("token '{name}' does not exist"),
        ))
    }
}
