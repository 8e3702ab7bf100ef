//! The text forms of `workflow submit`, `list` and `query`, as OSMO's CLI
//! prints them. Each takes the API's JSON and a time zone and returns a
//! `String`, so the tables are tested against OSMO-shaped samples without a
//! server or a clock.

use chrono::TimeZone;
use serde_json::Value;

use crate::cli::output::{self, format_duration, format_time, text_field, NONE};

/// OSMO's submit confirmation.
pub fn render_submit(response: &Value) -> String {
    let mut text = format!(
        "Workflow submit successful.\n    Workflow ID        - {}\n",
        text_field(response, "name")
    );
    if let Some(overview) = response.get("overview").and_then(Value::as_str) {
        if !overview.is_empty() {
            text.push_str(&format!("    Workflow Overview  - {overview}\n"));
        }
    }
    text
}

/// `ListResponse {workflows: [ListEntry], more_entries}` as a table.
pub fn render_list<Tz: TimeZone>(response: &Value, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let workflows = response
        .get("workflows")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if workflows.is_empty() {
        return "No workflows found.\n".to_owned();
    }
    let mut table = output::table(&["Workflow ID", "Pool", "Status", "Submit Time", "Duration"]);
    for workflow in workflows {
        table.add_row(vec![
            text_field(workflow, "name"),
            text_field(workflow, "pool"),
            text_field(workflow, "status"),
            format_time(workflow.get("submit_time"), tz),
            format_duration(workflow.get("duration")),
        ]);
    }
    output::render_table(&table)
}

/// `WorkflowQueryResponse` as a summary block and a task table.
pub fn render_query<Tz: TimeZone>(response: &Value, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut summary: Vec<(&str, String)> = vec![
        ("Workflow ID", text_field(response, "name")),
        ("Status", text_field(response, "status")),
        ("User", text_field(response, "submitted_by")),
        ("Pool", text_field(response, "pool")),
        ("Priority", text_field(response, "priority")),
        ("Submit Time", format_time(response.get("submit_time"), tz)),
        ("Start Time", format_time(response.get("start_time"), tz)),
        ("End Time", format_time(response.get("end_time"), tz)),
        ("Duration", format_duration(response.get("duration"))),
    ];
    if let Some(by) = response.get("cancelled_by").and_then(Value::as_str) {
        summary.push(("Cancelled By", by.to_owned()));
    }
    summary.push(("Overview", text_field(response, "overview")));
    let width = summary.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in &summary {
        text.push_str(&format!("{key:<width$} : {value}\n"));
    }

    let mut table = output::table(&[
        "Task",
        "Group",
        "Status",
        "Exit Code",
        "Start",
        "End",
        "Download",
        "Upload",
        "Failure Message",
    ]);
    let groups = response
        .get("groups")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rows = 0;
    for group in groups {
        let group_name = text_field(group, "name");
        let tasks = group
            .get("tasks")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for task in tasks {
            // Retries get their own rows (verbose query); mark them like OSMO's logs do.
            let mut name = text_field(task, "name");
            if let Some(retry) = task.get("retry_id").and_then(Value::as_u64) {
                if retry > 0 {
                    name.push_str(&format!(" (retry {retry})"));
                }
            }
            // A task without its own message inherits its group's (e.g. FAILED_UPSTREAM).
            let mut failure = text_field(task, "failure_message");
            if failure == NONE {
                failure = text_field(group, "failure_message");
            }
            table.add_row(vec![
                name,
                group_name.clone(),
                text_field(task, "status"),
                text_field(task, "exit_code"),
                format_time(task.get("start_time"), tz),
                format_time(task.get("end_time"), tz),
                data_span(task, "input_download_start_time", "input_download_end_time"),
                data_span(task, "output_upload_start_time", "output_upload_end_time"),
                failure,
            ]);
            rows += 1;
        }
    }
    if rows > 0 {
        text.push('\n');
        text.push_str(&output::render_table(&table));
    }
    text
}

/// How long a task's data phase took (`0.31 s`), `-` when not recorded.
fn data_span(task: &Value, start: &str, end: &str) -> String {
    let time = |field: &str| {
        task.get(field)
            .and_then(Value::as_str)
            .and_then(output::parse_time)
    };
    match (time(start), time(end)) {
        (Some(start), Some(end)) if end >= start => {
            format!("{:.2} s", (end - start).num_milliseconds() as f64 / 1000.0)
        }
        _ => NONE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn submit_text_matches_osmo() {
        let r = json!({"name": "train-3", "overview": "http://127.0.0.1:8470/workflows/train-3",
                       "logs": null, "spec": null, "dashboard_url": null, "warnings": []});
        assert_eq!(
            render_submit(&r),
            "Workflow submit successful.\n    Workflow ID        - train-3\n    \
             Workflow Overview  - http://127.0.0.1:8470/workflows/train-3\n"
        );
    }

    #[test]
    fn list_table() {
        let r = json!({
            "workflows": [
                {"user": "alice", "name": "train-1", "workflow_uuid": "u1",
                 "submit_time": "2025-03-01T10:00:00+00:00", "start_time": "2025-03-01T10:00:05+00:00",
                 "end_time": "2025-03-01T11:02:08+00:00", "queued_time": 5.0, "duration": 3723.0,
                 "status": "COMPLETED", "overview": "", "logs": "", "pool": "default",
                 "priority": "NORMAL", "labels": {}},
                {"user": "bob", "name": "eval-12", "workflow_uuid": "u2",
                 "submit_time": "2025-03-02T08:30:00.250000", "start_time": null, "end_time": null,
                 "queued_time": 0.0, "duration": null, "status": "PENDING", "overview": "",
                 "logs": "", "pool": null, "priority": "HIGH", "labels": {}}
            ],
            "more_entries": false
        });
        let expected = "\
Workflow ID  Pool     Status     Submit Time          Duration
--------------------------------------------------------------
train-1      default  COMPLETED  2025-03-01 10:00:00  1h 2m 3s
eval-12      -        PENDING    2025-03-02 08:30:00  -
";
        assert_eq!(render_list(&r, &Utc), expected);
        assert_eq!(
            render_list(&json!({"workflows": [], "more_entries": false}), &Utc),
            "No workflows found.\n"
        );
    }

    #[test]
    fn query_summary_and_tasks() {
        let mut r = json!({
            "name": "train-1", "uuid": "u1", "submitted_by": "alice", "cancelled_by": null,
            "spec": "", "template_spec": "", "logs": "", "events": "", "overview": "http://x/train-1",
            "submit_time": "2025-03-01T10:00:00+00:00", "start_time": "2025-03-01T10:00:05+00:00",
            "end_time": null, "duration": null, "queued_time": 5.0, "status": "FAILED",
            "pool": "default", "priority": "NORMAL", "plugins": {}, "labels": {}, "warnings": [],
            "groups": [
                {"name": "prep", "status": "FAILED", "failure_message": null, "tasks": [
                    {"name": "prep", "retry_id": 0, "status": "FAILED", "exit_code": 2,
                     "failure_message": "exit code 2", "logs": "", "events": "", "pod_name": "p",
                     "task_uuid": "t1", "start_time": "2025-03-01T10:00:05+00:00",
                     "end_time": "2025-03-01T10:00:09+00:00"}]},
                {"name": "train", "status": "FAILED_UPSTREAM", "failure_message": "upstream prep failed",
                 "tasks": [
                    {"name": "worker", "retry_id": 1, "status": "FAILED_UPSTREAM", "exit_code": null,
                     "failure_message": null, "logs": "", "events": "", "pod_name": "q",
                     "task_uuid": "t2", "start_time": null, "end_time": null}]}
            ]
        });
        let prep = &mut r["groups"][0]["tasks"][0];
        prep["input_download_start_time"] = json!("2025-03-01T10:00:04.500000+00:00");
        prep["input_download_end_time"] = json!("2025-03-01T10:00:04.810000+00:00");
        let expected = "\
Workflow ID : train-1
Status      : FAILED
User        : alice
Pool        : default
Priority    : NORMAL
Submit Time : 2025-03-01 10:00:00
Start Time  : 2025-03-01 10:00:05
End Time    : -
Duration    : -
Overview    : http://x/train-1

Task              Group  Status           Exit Code  Start                End                  Download  Upload  Failure Message
-------------------------------------------------------------------------------------------------------------------------------------
prep              prep   FAILED           2          2025-03-01 10:00:05  2025-03-01 10:00:09  0.31 s    -       exit code 2
worker (retry 1)  train  FAILED_UPSTREAM  -          -                    -                    -         -       upstream prep failed
";
        assert_eq!(render_query(&r, &Utc), expected);
    }
}
