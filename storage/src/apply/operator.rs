//! Appliers for what an operator reports: `OperatorReports` (a numbered
//! batch of its messages), `OperatorHello`, `CompleteJob` and
//! `AppendLogChunk`.
//!
//! Invariants: a batch applies only its messages past the sequence recorded
//! for the backend's instance and records the new sequence in the same
//! transaction, so a resent batch applies nothing twice; a batch whose new
//! chunk overlaps the log index is refused whole; a chunk at or below its
//! run's indexed offsets, or of a workflow whose logs were purged, is
//! refused; a hello re-dispatches only groups that lost a task and have no
//! creation job queued.

use super::apply;
use super::config::ensure_backend;
use crate::command::{Command, Outcome, RejectionKind, TaskKey, OPERATOR_INSTANCES_MAX};
use crate::error::StorageError;
use crate::lifecycle;
use crate::record::{JobKind, LogChunk, Millis};
use crate::tables::Tables;
use redb::WriteTransaction;
use std::collections::BTreeSet;

/// Applies the not-yet-applied part of an operator's batch, in order.
/// Rejections of single reports are deterministic no-ops like any other;
/// the batch itself is refused only if it is malformed.
pub(super) fn apply_operator_reports(
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
                | Command::RecordTaskEvents { .. }
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
    tables.put_operator_seq(backend, instance, last_seq, now, OPERATOR_INSTANCES_MAX)?;
    Ok(Outcome::Applied)
}

pub(super) fn apply_log_chunk_append(
    tables: &Tables,
    chunk: &LogChunk,
) -> Result<Outcome, StorageError> {
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

pub(super) fn apply_operator_hello(
    tables: &Tables,
    now: Millis,
    backend: &str,
    running: &[TaskKey],
    executor: Option<&str>,
) -> Result<Outcome, StorageError> {
    ensure_backend(tables, now, backend)?;
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
            tables.workflow_core(&workflow_id)?,
            tables.group(&workflow_id, &group_name)?,
        ) else {
            continue;
        };
        let tasks = tables.group_tasks(&group)?;
        let lost: Vec<String> = tasks
            .iter()
            .filter(|task| {
                !task.status.is_finished()
                    && !running.contains(&TaskKey {
                        workflow_id: workflow_id.clone(),
                        task: task.name.clone(),
                        retry_id: task.retry_id,
                    })
            })
            .map(|task| task.name.clone())
            .collect();
        if !lost.is_empty() {
            // A run its executor lost (a restart) runs again as the next
            // retry, so its log and events stay apart from the lost run's.
            // Not counted against `max_retry_per_task`: the task did not fail.
            lifecycle::start_next_runs(
                tables,
                &workflow,
                group,
                &lost,
                "its executor lost the run (the operator restarted); it runs again",
                false,
                now,
            )?;
        }
    }
    Ok(Outcome::Applied)
}

pub(super) fn apply_job_complete(tables: &Tables, job_id: u64) -> Result<Outcome, StorageError> {
    if tables.remove_job(job_id)? {
        Ok(Outcome::Applied)
    } else {
        Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("job {job_id} is not queued"),
        ))
    }
}
