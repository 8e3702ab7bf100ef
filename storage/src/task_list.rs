//! The task list (OSMO's `GET /api/task`): the task runs of every workflow
//! that match a [`TaskFilter`], one row per run (a rescheduled task has a
//! row for each retry, as OSMO's `tasks` table has), visited in list order.
//!
//! The order is OSMO's where it costs no index: runs SCHEDULING, then
//! INITIALIZING, then RUNNING first, each by start time (latest first, not
//! started first), then workflow submit time (latest first), then task name
//! (descending); then every other run, by workflow submit order (latest
//! first) — OSMO orders these by start time too, which would take reading
//! every run — and within a workflow by start time and name as above.
//!
//! Cost (no index of its own): the first part reads only the tasks of
//! workflows still alive (PENDING, RUNNING, WAITING: a task in those three
//! states belongs to one); the second walks workflows newest first and
//! stops when the visitor has enough, so a page costs what it takes to
//! fill it. When every status asked for is one a task has only while its
//! workflow is alive (SUBMITTING … RUNNING), the second part walks the
//! alive workflows only. A filter that matches few runs of a long history
//! still reads that history (as a full scan would), once per call.

use crate::error::StorageError;
use crate::record::{Millis, TaskRecord, WorkflowRecord};
use crate::status::{Priority, TaskStatus, WorkflowStatus};
use crate::store::ReadView;
use crate::tables;
use redb::ReadableTable;
use std::cmp::Reverse;
use std::ops::ControlFlow;

/// Filters of the task list; an empty list filters nothing.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    /// Substring of the workflow ID.
    pub workflow_id: Option<String>,
    pub statuses: Vec<TaskStatus>,
    /// Users who submitted the workflow.
    pub users: Vec<String>,
    pub pools: Vec<String>,
    /// Nodes the run was placed on.
    pub nodes: Vec<String>,
    /// Runs started at or after this time, or not started (OSMO's rule).
    pub started_after: Option<Millis>,
    /// Runs started before this time (never the ones not started).
    pub started_before: Option<Millis>,
    pub priorities: Vec<Priority>,
}

/// The statuses a task has only while its workflow is alive.
fn only_while_alive(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Submitting
            | TaskStatus::Waiting
            | TaskStatus::Processing
            | TaskStatus::Scheduling
            | TaskStatus::Initializing
            | TaskStatus::Running
    )
}

/// OSMO's first sort key: SCHEDULING 1, INITIALIZING 2, RUNNING 3, else 4.
fn status_class(status: TaskStatus) -> u8 {
    match status {
        TaskStatus::Scheduling => 1,
        TaskStatus::Initializing => 2,
        TaskStatus::Running => 3,
        _ => 4,
    }
}

impl TaskFilter {
    fn keeps_workflow_id(&self, id: &str) -> bool {
        self.workflow_id
            .as_deref()
            .is_none_or(|part| id.contains(part))
    }

    fn keeps_workflow(&self, workflow: &WorkflowRecord) -> bool {
        (self.users.is_empty() || self.users.contains(&workflow.user))
            && (self.pools.is_empty() || self.pools.contains(&workflow.pool))
            && (self.priorities.is_empty() || self.priorities.contains(&workflow.priority))
    }

    fn keeps_task(&self, task: &TaskRecord) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&task.status))
            && (self.nodes.is_empty()
                || task
                    .node_name
                    .as_ref()
                    .is_some_and(|node| self.nodes.contains(node)))
            && self
                .started_after
                .is_none_or(|after| task.start_time.is_none_or(|start| start >= after))
            && self
                .started_before
                .is_none_or(|before| task.start_time.is_some_and(|start| start < before))
    }

    /// Whether every run it keeps belongs to an alive workflow.
    fn alive_workflows_only(&self) -> bool {
        !self.statuses.is_empty() && self.statuses.iter().all(|s| only_while_alive(*s))
    }

    /// Whether it keeps any run of OSMO's first three classes.
    fn wants_active(&self) -> bool {
        self.statuses.is_empty() || self.statuses.iter().any(|s| status_class(*s) < 4)
    }
}

/// Latest start first, not started before any (Postgres' `DESC`).
fn start_key(task: &TaskRecord) -> Option<Reverse<Millis>> {
    task.start_time.map(Reverse)
}

impl ReadView {
    /// Visits every task run `filter` keeps, in list order (see the module
    /// comment), until `visit` breaks. Runs come without their plans
    /// ([`ReadView::task_plan`] reads one).
    pub fn visit_tasks(
        &self,
        filter: &TaskFilter,
        mut visit: impl FnMut(&WorkflowRecord, &TaskRecord) -> Result<ControlFlow<()>, StorageError>,
    ) -> Result<(), StorageError> {
        let alive = self.alive_workflow_ids()?;
        if filter.wants_active() {
            let mut active: Vec<(usize, TaskRecord)> = Vec::new();
            let mut workflows = Vec::new();
            for id in alive.iter().filter(|id| filter.keeps_workflow_id(id)) {
                let Some(workflow) = self.workflow_kept(id, filter)? else {
                    continue;
                };
                for task in self.current_tasks(&workflow)? {
                    if status_class(task.status) < 4 && filter.keeps_task(&task) {
                        active.push((workflows.len(), task));
                    }
                }
                workflows.push(workflow);
            }
            // Workflows are newest first: a stable sort keeps that order
            // among runs of equal status and start.
            active.sort_by_key(|(workflow, task)| {
                (
                    status_class(task.status),
                    start_key(task),
                    *workflow,
                    Reverse(task.name.clone()),
                )
            });
            for (workflow, task) in &active {
                if visit(&workflows[*workflow], task)?.is_break() {
                    return Ok(());
                }
            }
        }
        let mut visit_rest = |workflow: &WorkflowRecord| -> Result<ControlFlow<()>, StorageError> {
            let mut runs = Vec::new();
            for task in self.current_tasks(workflow)? {
                if task.retry_id > 0 {
                    runs.extend(self.task_runs(&workflow.id, &task.name)?);
                }
                runs.push(task);
            }
            runs.retain(|run| status_class(run.status) == 4 && filter.keeps_task(run));
            runs.sort_by_key(|run| {
                (
                    start_key(run),
                    Reverse(run.name.clone()),
                    Reverse(run.retry_id),
                )
            });
            for run in &runs {
                if visit(workflow, run)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        };
        if filter.alive_workflows_only() {
            for id in alive.iter().filter(|id| filter.keeps_workflow_id(id)) {
                if let Some(workflow) = self.workflow_kept(id, filter)? {
                    if visit_rest(&workflow)?.is_break() {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        let by_submit = self.txn.open_table(tables::BY_SUBMIT)?;
        for row in by_submit.iter()?.rev() {
            let (_, id) = row?;
            let id = id.value();
            if !filter.keeps_workflow_id(id) {
                continue;
            }
            if let Some(workflow) = self.workflow_kept(id, filter)? {
                if visit_rest(&workflow)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The task's plan (`None` for an unknown task).
    pub fn task_plan(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Option<crate::plan::TaskPlan>, StorageError> {
        let plans = self.txn.open_table(tables::TASK_PLANS)?;
        let row = plans.get((workflow_id, name))?;
        row.map(|v| self.row(&tables::TASK_PLANS, &(workflow_id, name), v.value()))
            .transpose()
    }

    /// IDs of the workflows still alive, newest first.
    fn alive_workflow_ids(&self) -> Result<Vec<String>, StorageError> {
        let table = self.txn.open_table(tables::BY_STATUS)?;
        let mut alive = Vec::new();
        for status in WorkflowStatus::ALL.into_iter().filter(|s| s.is_alive()) {
            let code = status.code();
            for row in table.range((code, 0)..=(code, u64::MAX))? {
                let (key, id) = row?;
                alive.push((key.value().1, id.value().to_string()));
            }
        }
        alive.sort_unstable_by_key(|(seq, _)| Reverse(*seq));
        Ok(alive.into_iter().map(|(_, id)| id).collect())
    }

    fn workflow_kept(
        &self,
        id: &str,
        filter: &TaskFilter,
    ) -> Result<Option<WorkflowRecord>, StorageError> {
        Ok(self
            .workflow(id)?
            .filter(|workflow| filter.keeps_workflow(workflow)))
    }

    /// The current run of each task of `workflow`, without plans, in spec order.
    fn current_tasks(&self, workflow: &WorkflowRecord) -> Result<Vec<TaskRecord>, StorageError> {
        let table = self.txn.open_table(tables::TASKS)?;
        let mut tasks = Vec::new();
        for group in self.groups(workflow)? {
            for name in &group.tasks {
                let key = (workflow.id.as_str(), name.as_str());
                if let Some(row) = table.get(key)? {
                    tasks.push(self.row(&tables::TASKS, &key, row.value())?);
                }
            }
        }
        Ok(tasks)
    }
}
