//! JSON shapes of OSMO's responses, built from stored records.
//!
//! Invariant: field names are exactly OSMO's (`../shared/osmo/openapi.json`):
//! WorkflowQueryResponse, GroupQueryResponse, TaskQueryResponse, ListEntry,
//! (pools: `gantry_storage::config::pool::pool_json`); every time in the
//! API's JSON goes through [`time`], in OSMO's form.

use gantry_storage::labels::Labels;
use gantry_storage::{GroupRecord, Millis, TaskRecord, WorkflowRecord};
use serde_json::{json, Value};

/// How OSMO writes a time in JSON: UTC, microseconds, no offset suffix
/// (`2026-12-06T07:50:53.571000`); OSMO's CLI reads nothing else.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// A stored time as JSON in OSMO's form ([`TIME_FORMAT`]); `null` when absent.
pub fn time(ms: Option<Millis>) -> Value {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(time) => Value::String(time.format(TIME_FORMAT).to_string()),
        None => Value::Null,
    }
}

fn seconds_between(start: Option<Millis>, end: Option<Millis>) -> Value {
    match (start, end) {
        (Some(start), Some(end)) => json!((end - start) as f64 / 1000.0),
        _ => Value::Null,
    }
}

/// Seconds spent queued: until start, or until now while not started.
fn queued_seconds(workflow: &WorkflowRecord, now: Millis) -> f64 {
    let until = workflow.start_time.or(workflow.end_time).unwrap_or(now);
    (until - workflow.submit_time).max(0) as f64 / 1000.0
}

pub struct Links<'a> {
    pub base_url: &'a str,
}

impl Links<'_> {
    pub fn overview(&self, id: &str) -> String {
        format!("{}/workflows/{id}", self.base_url)
    }
    pub fn logs(&self, id: &str) -> String {
        format!("{}/api/workflow/{id}/logs", self.base_url)
    }
    pub fn spec(&self, id: &str) -> String {
        format!("{}/api/workflow/{id}/spec", self.base_url)
    }
    pub fn events(&self, id: &str) -> String {
        format!("{}/api/workflow/{id}/events", self.base_url)
    }
}

/// What a workflow is marked with besides its record: its labels (set at
/// submit) and its tags (changed since).
pub struct Marks {
    pub labels: Labels,
    pub tags: Vec<String>,
}

pub fn list_entry(workflow: &WorkflowRecord, labels: &Labels, links: &Links, now: Millis) -> Value {
    json!({
        "user": workflow.user,
        "name": workflow.id,
        "workflow_uuid": workflow.uuid,
        "submit_time": time(Some(workflow.submit_time)),
        "start_time": time(workflow.start_time),
        "end_time": time(workflow.end_time),
        "queued_time": queued_seconds(workflow, now),
        "duration": seconds_between(workflow.start_time, workflow.end_time),
        "status": workflow.status.as_str(),
        "overview": links.overview(&workflow.id),
        "logs": links.logs(&workflow.id),
        "error_logs": Value::Null,
        "grafana_url": Value::Null,
        "dashboard_url": Value::Null,
        "pool": workflow.pool,
        "app_owner": Value::Null,
        "app_name": Value::Null,
        "app_version": Value::Null,
        "priority": workflow.priority.as_str(),
        "labels": labels,
    })
}

fn task_entry(task: &TaskRecord, links: &Links) -> Value {
    json!({
        "name": task.name,
        "retry_id": task.retry_id,
        "status": task.status.as_str(),
        "failure_message": task.failure_message,
        "exit_code": task.exit_code,
        "logs": format!("{}?task_name={}", links.logs(&task.workflow_id), task.name),
        "error_logs": Value::Null,
        "processing_start_time": time(task.processing_start_time),
        "scheduling_start_time": time(task.scheduling_start_time),
        "initializing_start_time": time(task.initializing_start_time),
        "events": format!(
            "{}?task_name={}&retry_id={}",
            links.events(&task.workflow_id),
            task.name,
            task.retry_id
        ),
        "start_time": time(task.start_time),
        "end_time": time(task.end_time),
        "input_download_start_time": time(task.input_download_start_time),
        "input_download_end_time": time(task.input_download_end_time),
        "output_upload_start_time": time(task.output_upload_start_time),
        // Gantry's: OSMO records only the upload's start.
        "output_upload_end_time": time(task.output_upload_end_time),
        "dashboard_url": Value::Null,
        "pod_name": format!("{}-{}", &task.workflow_id, task.name),
        "pod_ip": Value::Null,
        "task_uuid": task.uuid,
        "node_name": task.node_name,
        "lead": task.lead,
        "image": task.plan.image,
    })
}

fn group_entry(group: &GroupRecord, tasks: &[TaskRecord], links: &Links) -> Value {
    json!({
        "name": group.name,
        "status": group.status.as_str(),
        "start_time": time(group.start_time),
        "end_time": time(group.end_time),
        "processing_start_time": time(group.processing_start_time),
        "scheduling_start_time": time(group.scheduling_start_time),
        "initializing_start_time": time(group.initializing_start_time),
        "remaining_upstream_groups": group.remaining_upstream,
        "downstream_groups": group.downstream,
        "failure_message": group.failure_message,
        "tasks": tasks.iter().map(|task| task_entry(task, links)).collect::<Vec<_>>(),
    })
}

pub fn query(
    workflow: &WorkflowRecord,
    marks: &Marks,
    groups: &[(GroupRecord, Vec<TaskRecord>)],
    links: &Links,
    now: Millis,
) -> Value {
    json!({
        "name": workflow.id,
        "uuid": workflow.uuid,
        "submitted_by": workflow.user,
        "cancelled_by": workflow.cancelled_by,
        "spec": links.spec(&workflow.id),
        "template_spec": format!("{}?use_template=true", links.spec(&workflow.id)),
        "logs": links.logs(&workflow.id),
        "events": links.events(&workflow.id),
        "overview": links.overview(&workflow.id),
        "parent_name": Value::Null,
        "parent_job_id": Value::Null,
        "dashboard_url": Value::Null,
        "grafana_url": Value::Null,
        "tags": marks.tags,
        "submit_time": time(Some(workflow.submit_time)),
        "start_time": time(workflow.start_time),
        "end_time": time(workflow.end_time),
        "exec_timeout": workflow.exec_timeout_seconds,
        "queue_timeout": workflow.queue_timeout_seconds,
        "duration": seconds_between(workflow.start_time, workflow.end_time),
        "queued_time": queued_seconds(workflow, now),
        "status": workflow.status.as_str(),
        "failure_message": workflow.failure_message,
        "outputs": "",
        "groups": groups.iter().map(|(group, tasks)| group_entry(group, tasks, links)).collect::<Vec<_>>(),
        "pool": workflow.pool,
        "backend": workflow.backend,
        "app_owner": Value::Null,
        "app_name": Value::Null,
        "app_version": Value::Null,
        "plugins": {"rsync": false},
        "priority": workflow.priority.as_str(),
        "labels": marks.labels,
        "warnings": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_osmo_writes_them() {
        // 2026-12-06T07:50:53.571Z
        let ms = 1_796_543_453_571;
        assert_eq!(time(Some(ms)), json!("2026-12-06T07:50:53.571000"));
        assert_eq!(time(Some(0)), json!("1970-01-01T00:00:00.000000"));
        assert_eq!(time(None), Value::Null);
        // What OSMO's CLI parses (`%Y-%m-%d %H:%M:%S.%f` once `T` is a
        // space), and Gantry's own CLI reads back as UTC.
        let text = time(Some(ms));
        let text = text.as_str().unwrap();
        let parsed =
            chrono::NaiveDateTime::parse_from_str(&text.replace('T', " "), "%Y-%m-%d %H:%M:%S%.6f")
                .unwrap();
        assert_eq!(parsed.and_utc().timestamp_millis(), ms);
        assert!(!text.ends_with('Z') && !text.contains('+'), "{text}");
    }
}
