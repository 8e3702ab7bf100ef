//! A workflow's events, derived from its replicated records: the phase
//! times of the workflow, its groups and its task runs (processing,
//! scheduling, initializing, running, end with status, exit code and failure
//! message) and the sessions users opened into its tasks (exec,
//! port-forward: who and what), one line per event in time order, in
//! OSMO's log-line style:
//! `YYYY/MM/DD HH:MM:SS [<source>] <STATUS>[: <detail>]`.
//!
//! Beside them, what backends reported of each run as Kubernetes events
//! (`Pulling`, `Pulled`, `Failed`, … with the reason as reported), and why
//! a workflow that has not started waits when its pool's backend is
//! offline. Invariants: the same records give the same text (events
//! at the same millisecond are ordered by cause — submit, then processing
//! top-down, then reports bottom-up: task, group, workflow — then spec
//! order); nothing here writes, so serving events costs the status path
//! nothing.

use gantry_storage::admission::InForce;
use gantry_storage::{
    GroupRecord, Millis, ReadView, SessionEvent, StorageError, TaskEvent, TaskRecord, TaskStatus,
    WorkflowRecord, WorkflowStatus,
};

/// Which events to keep: a task name (and retry) keeps only that task's.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub task: Option<String>,
    pub retry_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub time: Millis,
    /// Causal rank among events of the same millisecond.
    tier: u8,
    /// `<task>`, `<task> retry-N`, `group <name>` or the workflow ID.
    pub source: String,
    /// A status name (`RUNNING`, `FAILED`, …) or `SUBMITTED`.
    pub reason: String,
    pub detail: Option<String>,
}

const TIER_SUBMIT: u8 = 0;
const TIER_GROUP_PROCESSING: u8 = 1;
const TIER_TASK_PROCESSING: u8 = 2;
const TIER_TASK: u8 = 3;
const TIER_GROUP: u8 = 4;
const TIER_WORKFLOW: u8 = 5;
/// Sessions come after the task's own events of their millisecond: a
/// session opens into a task already running.
const TIER_SESSION: u8 = 6;

fn push(
    events: &mut Vec<Event>,
    time: Option<Millis>,
    tier: u8,
    source: &str,
    reason: &str,
    detail: Option<String>,
) {
    if let Some(time) = time {
        events.push(Event {
            time,
            tier,
            source: source.to_string(),
            reason: reason.to_string(),
            detail,
        });
    }
}

fn end_detail(exit_code: Option<i32>, message: Option<&str>) -> Option<String> {
    match (exit_code, message) {
        (Some(code), Some(message)) => Some(format!("exit code {code}, {message}")),
        (Some(code), None) => Some(format!("exit code {code}")),
        (None, Some(message)) => Some(message.to_string()),
        (None, None) => None,
    }
}

fn task_events(events: &mut Vec<Event>, task: &TaskRecord) {
    let source = crate::log_chunk::run_source(&task.name, task.retry_id);
    push(
        events,
        task.processing_start_time,
        TIER_TASK_PROCESSING,
        &source,
        "PROCESSING",
        None,
    );
    push(
        events,
        task.scheduling_start_time,
        TIER_TASK,
        &source,
        "SCHEDULING",
        None,
    );
    push(
        events,
        task.initializing_start_time,
        TIER_TASK,
        &source,
        "INITIALIZING",
        task.node_name
            .as_ref()
            .map(|node| format!("on node {node}")),
    );
    push(
        events,
        task.start_time,
        TIER_TASK,
        &source,
        "RUNNING",
        task.node_name
            .as_ref()
            .map(|node| format!("on node {node}")),
    );
    if task.status.is_finished() || task.status == TaskStatus::Rescheduled {
        push(
            events,
            task.end_time,
            TIER_TASK,
            &source,
            task.status.as_str(),
            end_detail(task.exit_code, task.failure_message.as_deref()),
        );
    }
}

fn group_events(events: &mut Vec<Event>, group: &GroupRecord) {
    let source = format!("group {}", group.name);
    push(
        events,
        group.processing_start_time,
        TIER_GROUP_PROCESSING,
        &source,
        "PROCESSING",
        None,
    );
    push(
        events,
        group.scheduling_start_time,
        TIER_GROUP,
        &source,
        "SCHEDULING",
        None,
    );
    push(
        events,
        group.initializing_start_time,
        TIER_GROUP,
        &source,
        "INITIALIZING",
        None,
    );
    push(
        events,
        group.start_time,
        TIER_GROUP,
        &source,
        "RUNNING",
        None,
    );
    if group.status.is_finished() {
        push(
            events,
            group.end_time,
            TIER_GROUP,
            &source,
            group.status.as_str(),
            group.failure_message.clone(),
        );
    }
}

fn workflow_events(events: &mut Vec<Event>, workflow: &WorkflowRecord) {
    let source = workflow.id.as_str();
    push(
        events,
        Some(workflow.submit_time),
        TIER_SUBMIT,
        source,
        "SUBMITTED",
        Some(format!("by {} to pool {}", workflow.user, workflow.pool)),
    );
    push(
        events,
        workflow.start_time,
        TIER_WORKFLOW,
        source,
        "RUNNING",
        None,
    );
    if !workflow.status.is_alive() {
        let detail = match (&workflow.cancelled_by, &workflow.failure_message) {
            (Some(user), _) => Some(match &workflow.cancel_message {
                Some(message) => format!("canceled by {user}: {message}"),
                None => format!("canceled by {user}"),
            }),
            (None, Some(message)) if workflow.status == WorkflowStatus::FailedSubmission => {
                Some(message.clone())
            }
            _ => None,
        };
        push(
            events,
            workflow.end_time,
            TIER_WORKFLOW,
            source,
            workflow.status.as_str(),
            detail,
        );
    }
}

/// Why a workflow that has not started waits, while its pool's backend is
/// offline (as OSMO's PENDING reasons): said at its submit time, derived
/// from the backend's state now, so it goes once the operator connects.
fn waiting_event(
    events: &mut Vec<Event>,
    view: &ReadView,
    workflow: &WorkflowRecord,
) -> Result<(), StorageError> {
    if !workflow.status.is_alive() || workflow.start_time.is_some() {
        return Ok(());
    }
    let reason = InForce::read(view, &workflow.pool)?.waiting_reason();
    push(
        events,
        reason.is_some().then_some(workflow.submit_time),
        TIER_SUBMIT,
        &workflow.id,
        "PENDING",
        reason,
    );
    Ok(())
}

/// The events of `workflow` kept by `filter`, in time order.
pub fn collect(
    view: &ReadView,
    workflow: &WorkflowRecord,
    filter: &EventFilter,
) -> Result<Vec<Event>, StorageError> {
    let mut events = Vec::new();
    if filter.task.is_none() {
        workflow_events(&mut events, workflow);
        waiting_event(&mut events, view, workflow)?;
    }
    for group in view.groups(workflow)? {
        if filter.task.is_none() {
            group_events(&mut events, &group);
        }
        for task in view.group_tasks(&group)? {
            if filter.task.as_ref().is_some_and(|name| *name != task.name) {
                continue;
            }
            // Earlier runs (ended RESCHEDULED) first, then the current one.
            let mut runs = if task.retry_id > 0 {
                view.task_runs(&workflow.id, &task.name)?
            } else {
                Vec::new()
            };
            let name = task.name.clone();
            runs.push(task);
            for run in runs
                .iter()
                .filter(|run| filter.retry_id.is_none_or(|retry| retry == run.retry_id))
            {
                task_events(&mut events, run);
            }
            for reported in view.task_events(&workflow.id, &name)? {
                if filter
                    .retry_id
                    .is_none_or(|retry| retry == reported.retry_id)
                {
                    backend_event(&mut events, &name, &reported);
                }
            }
        }
    }
    for session in view.workflow_sessions(&workflow.id)? {
        let kept = filter
            .task
            .as_ref()
            .is_none_or(|name| *name == session.task)
            && filter
                .retry_id
                .is_none_or(|retry| retry == session.retry_id);
        if kept {
            session_event(&mut events, &session);
        }
    }
    order(&mut events);
    Ok(events)
}

/// What a task run's backend reported (Kubernetes' reasons as they are):
/// `Pulled: Successfully pulled image "busybox:1.36" in 429ms`.
fn backend_event(events: &mut Vec<Event>, task: &str, reported: &TaskEvent) {
    push(
        events,
        Some(reported.time),
        TIER_TASK,
        &crate::log_chunk::run_source(task, reported.retry_id),
        &reported.reason,
        (!reported.message.is_empty()).then(|| reported.message.clone()),
    );
}

/// A session a user opened into a task: `EXEC: by ann: bash (terminal)`,
/// `PORT-FORWARD: by ann to port 8888`.
fn session_event(events: &mut Vec<Event>, session: &SessionEvent) {
    let source = crate::log_chunk::run_source(&session.task, session.retry_id);
    let (reason, detail) = match session.kind.as_str() {
        "port-forward" => (
            "PORT-FORWARD".to_string(),
            format!("by {} to port {}", session.user, session.detail),
        ),
        other => (
            other.to_ascii_uppercase(),
            format!("by {}: {}", session.user, session.detail),
        ),
    };
    push(
        events,
        Some(session.time),
        TIER_SESSION,
        &source,
        &reason,
        Some(detail),
    );
}

/// Time order; at the same millisecond, by cause. Stable: equal keys keep
/// spec order.
fn order(events: &mut [Event]) {
    events.sort_by_key(|event| (event.time, event.tier));
}

/// One line per event.
pub fn render(events: &[Event]) -> String {
    let mut text = String::new();
    for event in events {
        let time = crate::log_chunk::osmo_time(event.time);
        text.push_str(&format!("{time} [{}] {}", event.source, event.reason));
        if let Some(detail) = &event.detail {
            text.push_str(": ");
            text.push_str(detail);
        }
        text.push('\n');
    }
    text
}

/// The whole workflow's events as text (the archive's `workflow_events.txt`).
pub fn render_workflow(view: &ReadView, workflow: &WorkflowRecord) -> Result<String, StorageError> {
    Ok(render(&collect(view, workflow, &EventFilter::default())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: Millis, tier: u8, source: &str, reason: &str, detail: Option<&str>) -> Event {
        Event {
            time,
            tier,
            source: source.into(),
            reason: reason.into(),
            detail: detail.map(str::to_string),
        }
    }

    #[test]
    fn lines_read_like_osmo_log_lines() {
        let text = render(&[
            event(
                1_700_000_000_000,
                TIER_SUBMIT,
                "wf-1",
                "SUBMITTED",
                Some("by alice to pool default"),
            ),
            event(
                1_700_000_003_500,
                TIER_TASK,
                "train",
                "FAILED",
                end_detail(Some(1), Some("exited with code 1")).as_deref(),
            ),
        ]);
        assert_eq!(
            text,
            "2023/11/14 22:13:20 [wf-1] SUBMITTED: by alice to pool default\n\
             2023/11/14 22:13:23 [train] FAILED: exit code 1, exited with code 1\n"
        );
    }

    #[test]
    fn same_millisecond_events_follow_their_cause() {
        let mut events = [
            event(5, TIER_WORKFLOW, "wf-1", "COMPLETED", None),
            event(5, TIER_GROUP, "group a", "COMPLETED", None),
            event(5, TIER_TASK, "a", "COMPLETED", None),
            event(1, TIER_TASK_PROCESSING, "a", "PROCESSING", None),
            event(1, TIER_GROUP_PROCESSING, "group a", "PROCESSING", None),
            event(1, TIER_SUBMIT, "wf-1", "SUBMITTED", None),
        ];
        order(&mut events);
        let order: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.source.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("wf-1", "SUBMITTED"),
                ("group a", "PROCESSING"),
                ("a", "PROCESSING"),
                ("a", "COMPLETED"),
                ("group a", "COMPLETED"),
                ("wf-1", "COMPLETED"),
            ]
        );
    }
}
