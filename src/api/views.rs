//! JSON shapes of OSMO's responses, built from stored records.
//!
//! Invariant: field names are exactly OSMO's (`../shared/osmo/openapi.json`):
//! WorkflowQueryResponse, GroupQueryResponse, TaskQueryResponse, ListEntry,
//! TaskEntry, ListTaskEntry, ListTaskSummaryEntry, ListTaskAggregatedEntry
//! (pools: `gantry_storage::config::pool::pool_json`); every time in the
//! API's JSON goes through [`time`], in OSMO's form.

use gantry_storage::labels::Labels;
use gantry_storage::plan::ResourcePlan;
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
    pub fn error_logs(&self, id: &str) -> String {
        format!("{}/api/workflow/{id}/error_logs", self.base_url)
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

fn task_entry(task: &TaskRecord, workflow_uuid: &str, links: &Links) -> Value {
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
        // The pod's name on the Kubernetes executor (the local one has none
        // and reports the same name for the run).
        "pod_name": crate::protocol::task_host::kubernetes_pod_name(workflow_uuid, &task.uuid),
        "pod_ip": Value::Null,
        "task_uuid": task.uuid,
        "node_name": task.node_name,
        "lead": task.lead,
        "image": task.plan.image,
    })
}

fn group_entry(
    group: &GroupRecord,
    tasks: &[TaskRecord],
    workflow_uuid: &str,
    links: &Links,
) -> Value {
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
        "tasks": tasks.iter().map(|task| task_entry(task, workflow_uuid, links)).collect::<Vec<_>>(),
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
        "groups": groups.iter().map(|(group, tasks)| group_entry(group, tasks, &workflow.uuid, links)).collect::<Vec<_>>(),
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

/// A task's resource request as OSMO's task rows count it (`cpu_count`,
/// `gpu_count`, `memory_count`, `disk_count`): whole CPUs and GPUs, memory
/// and storage in GiB; an amount the spec leaves out counts 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskRequest {
    pub cpu: u64,
    pub gpu: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
}

const GIB: f64 = (1u64 << 30) as f64;

impl TaskRequest {
    pub fn of(resource: &ResourcePlan) -> TaskRequest {
        TaskRequest {
            cpu: resource.cpu.unwrap_or(0),
            gpu: resource.gpu.unwrap_or(0),
            memory_bytes: resource.memory_bytes.unwrap_or(0),
            storage_bytes: resource.storage_bytes.unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: TaskRequest) {
        self.cpu = self.cpu.saturating_add(other.cpu);
        self.gpu = self.gpu.saturating_add(other.gpu);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.storage_bytes = self.storage_bytes.saturating_add(other.storage_bytes);
    }

    /// `storage`, `cpu`, `memory`, `gpu` as OSMO writes them.
    fn fields(&self) -> [(&'static str, Value); 4] {
        [
            ("storage", json!(self.storage_bytes as f64 / GIB)),
            ("cpu", json!(self.cpu)),
            ("memory", json!(self.memory_bytes as f64 / GIB)),
            ("gpu", json!(self.gpu)),
        ]
    }
}

fn with_request(mut entry: Value, request: &TaskRequest) -> Value {
    if let Some(object) = entry.as_object_mut() {
        for (key, value) in request.fields() {
            object.insert(key.to_string(), value);
        }
    }
    entry
}

/// OSMO's `TaskEntry` (`GET /api/workflow/{name}/task/{task_name}`): the
/// task's latest run.
pub fn task_get_entry(task: &TaskRecord, request: &TaskRequest) -> Value {
    with_request(
        json!({
            "workflow_id": task.workflow_id,
            "task_name": task.name,
            "node": task.node_name,
            "start_time": time(task.start_time),
            "end_time": time(task.end_time),
            "status": task.status.as_str(),
        }),
        request,
    )
}

/// OSMO's `ListTaskEntry` (`GET /api/task`): one run of a task. Its
/// `duration` runs until now while the run has not ended, as OSMO's does.
pub fn list_task_entry(
    workflow: &WorkflowRecord,
    task: &TaskRecord,
    request: &TaskRequest,
    links: &Links,
    now: Millis,
) -> Value {
    let duration = task
        .start_time
        .map(|start| (task.end_time.unwrap_or(now) - start) as f64 / 1000.0);
    let failed = task.status.as_str().starts_with("FAILED");
    with_request(
        json!({
            "user": workflow.user,
            "workflow_id": workflow.id,
            "workflow_uuid": workflow.uuid,
            "task_name": task.name,
            "retry_id": task.retry_id,
            "pool": workflow.pool,
            "node": task.node_name,
            "start_time": time(task.start_time),
            "end_time": time(task.end_time),
            "duration": duration,
            "status": task.status.as_str(),
            "overview": links.overview(&workflow.id),
            "logs": format!("{}?task_name={}", links.logs(&workflow.id), task.name),
            "error_logs": failed.then(|| format!("{}?task_name={}", links.error_logs(&workflow.id), task.name)),
            "grafana_url": Value::Null,
            "dashboard_url": Value::Null,
            "priority": workflow.priority.as_str(),
        }),
        request,
    )
}

/// OSMO's `ListTaskSummaryEntry`: the requests of a user's tasks in a pool
/// at a priority, summed.
pub fn task_summary_entry(user: &str, pool: &str, priority: &str, request: &TaskRequest) -> Value {
    with_request(
        json!({"user": user, "pool": pool, "priority": priority}),
        request,
    )
}

/// OSMO's `ListTaskAggregatedEntry`: [`task_summary_entry`] per workflow.
pub fn task_aggregated_entry(workflow: &WorkflowRecord, request: &TaskRequest) -> Value {
    let mut entry = task_summary_entry(
        &workflow.user,
        &workflow.pool,
        workflow.priority.as_str(),
        request,
    );
    entry["workflow_id"] = json!(workflow.id);
    entry
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
