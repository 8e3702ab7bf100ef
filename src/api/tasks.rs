//! Task routes, as OSMO has them: `GET /api/task` (the task list across
//! workflows: a page of task runs, or their resource requests summed per
//! user, pool and priority with `summary`, or per workflow with
//! `aggregate_by_workflow`) and `GET /api/workflow/{name}/task/{task_name}`
//! (a task's latest run).
//!
//! Invariants: shapes and field names are OSMO's (`views`); a malformed
//! parameter is a 400 naming it; a page reads what it takes to fill it
//! (`gantry_storage::task_list`), a summary every run its filters keep.
//! OSMO's defaults: without `users` only the caller's tasks (unless
//! `all_users`), without `pools` only the caller's profile pool (unless
//! `all_pools`); `order=ASC` (the default) puts the latest row last.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::views::{self, Links, TaskRequest};
use super::workflow::read;
use super::AppState;
use crate::clock::now_ms;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use gantry_storage::{
    Priority, ReadView, StorageError, TaskFilter, TaskRecord, TaskStatus, WorkflowRecord,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::str::FromStr;

/// Most rows of one answer (OSMO's `min(limit, 1000)`).
const ROWS_MAX: u64 = 1000;

/// Every value of list parameter `name`, parsed; a bad one is a 400 naming it.
fn parsed_list<T: FromStr<Err = String>>(params: &Params, name: &str) -> Result<Vec<T>, ApiError> {
    params
        .list(name)
        .iter()
        .map(|value| {
            value
                .parse()
                .map_err(|message| ApiError::bad_request("USAGE", format!("{name}: {message}")))
        })
        .collect()
}

/// `order`: `ASC` (the default) or `DESC`, any case; whether descending.
fn descending(params: &Params) -> Result<bool, ApiError> {
    let order = params.get("order").unwrap_or("ASC");
    match order.to_ascii_uppercase().as_str() {
        "ASC" => Ok(false),
        "DESC" => Ok(true),
        _ => Err(ApiError::bad_request(
            "USAGE",
            format!("order must be ASC or DESC, not '{order}'"),
        )),
    }
}

/// The first pool the caller may submit to: its profile's pool.
fn profile_pool(view: &ReadView, caller: &Caller) -> Result<Option<String>, ApiError> {
    Ok(view
        .pools()?
        .into_iter()
        .map(|pool| pool.name)
        .find(|pool| caller.allows("workflow:Create", &format!("pool/{pool}"))))
}

/// A run's request, its task's plan read once per task.
struct Requests<'a> {
    view: &'a ReadView,
    known: HashMap<(String, String), TaskRequest>,
}

impl Requests<'_> {
    fn of(&mut self, task: &TaskRecord) -> Result<TaskRequest, StorageError> {
        let key = (task.workflow_id.clone(), task.name.clone());
        if let Some(request) = self.known.get(&key) {
            return Ok(*request);
        }
        let request = self
            .view
            .task_plan(&task.workflow_id, &task.name)?
            .map(|plan| TaskRequest::of(&plan.resource))
            .unwrap_or_default();
        self.known.insert(key, request);
        Ok(request)
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let limit = params.number("limit")?.unwrap_or(20);
    if limit == 0 {
        return Err(ApiError::bad_request(
            "USER",
            "limit: must be greater than 0",
        ));
    }
    let limit = usize::try_from(limit.min(ROWS_MAX)).unwrap_or(usize::MAX);
    let offset = usize::try_from(params.number("offset")?.unwrap_or(0)).unwrap_or(usize::MAX);
    let descending = descending(&params)?;
    let summary = params.flag("summary")?;
    let aggregate = params.flag("aggregate_by_workflow")?;
    let mut users = params.list("users");
    if users.is_empty() && !params.flag("all_users")? {
        users.push(caller.user.clone());
    }
    let all_pools = params.flag("all_pools")?;
    let mut filter = TaskFilter {
        workflow_id: params
            .get("workflow_id")
            .filter(|id| !id.is_empty())
            .map(str::to_string),
        statuses: parsed_list::<TaskStatus>(&params, "statuses")?,
        users,
        pools: if all_pools {
            Vec::new()
        } else {
            params.list("pools")
        },
        nodes: params.list("nodes"),
        started_after: params.time("started_after")?,
        started_before: params.time("started_before")?,
        priorities: parsed_list::<Priority>(&params, "priority")?,
    };
    let view = read(&state, &params).await?;
    if filter.pools.is_empty() && !all_pools {
        let pool = profile_pool(&view, &caller)?
            .ok_or_else(|| ApiError::bad_request("USER", "No pool selected!"))?;
        filter.pools.push(pool);
    }
    let mut requests = Requests {
        view: &view,
        known: HashMap::new(),
    };
    // OSMO's ASC shows the page with the latest row last.
    let in_order = |mut rows: Vec<Value>| {
        if !descending {
            rows.reverse();
        }
        rows
    };
    if summary {
        let mut sums: BTreeMap<(String, String, &'static str), TaskRequest> = BTreeMap::new();
        view.visit_tasks(&filter, |workflow, task| {
            let request = requests.of(task)?;
            sums.entry((
                workflow.user.clone(),
                workflow.pool.clone(),
                workflow.priority.as_str(),
            ))
            .or_default()
            .add(request);
            Ok(ControlFlow::Continue(()))
        })?;
        let rows = sums
            .iter()
            .skip(offset)
            .take(limit)
            .map(|((user, pool, priority), request)| {
                views::task_summary_entry(user, pool, priority, request)
            })
            .collect();
        return Ok(Json(json!({ "summaries": in_order(rows) })));
    }
    if aggregate {
        let mut sums: Vec<(WorkflowRecord, TaskRequest)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        view.visit_tasks(&filter, |workflow, task| {
            let request = requests.of(task)?;
            let at = *index.entry(workflow.id.clone()).or_insert_with(|| {
                sums.push((workflow.clone(), TaskRequest::default()));
                sums.len() - 1
            });
            sums[at].1.add(request);
            Ok(ControlFlow::Continue(()))
        })?;
        // Newest workflow first, as the list's own order.
        sums.sort_by_key(|(workflow, _)| std::cmp::Reverse(workflow.submit_seq));
        let rows = sums
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(workflow, request)| views::task_aggregated_entry(workflow, request))
            .collect();
        return Ok(Json(json!({ "summaries": in_order(rows) })));
    }
    let mut page: Vec<(WorkflowRecord, TaskRecord)> = Vec::new();
    let mut skipped = 0;
    view.visit_tasks(&filter, |workflow, task| {
        if skipped < offset {
            skipped += 1;
            return Ok(ControlFlow::Continue(()));
        }
        page.push((workflow.clone(), task.clone()));
        Ok(if page.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    let links = Links {
        base_url: &state.config.base_url,
    };
    let now = now_ms();
    let mut rows = Vec::with_capacity(page.len());
    for (workflow, task) in &page {
        let request = requests.of(task)?;
        rows.push(views::list_task_entry(
            workflow, task, &request, &links, now,
        ));
    }
    Ok(Json(json!({ "tasks": in_order(rows) })))
}

pub async fn get(
    State(state): State<AppState>,
    Path((id, task_name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let view = read(&state, &params).await?;
    if view.workflow(&id)?.is_none() {
        return Err(ApiError::not_found(format!("Workflow '{id}' not found")));
    }
    let task = view.task(&id, &task_name)?.ok_or_else(|| {
        ApiError::not_found(format!("Task '{task_name}' not found in workflow '{id}'"))
            .with_workflow(&id)
    })?;
    let request = TaskRequest::of(&task.plan.resource);
    Ok(Json(views::task_get_entry(&task, &request)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_statuses_priorities_and_orders_are_named() {
        let params = Params::parse(Some("statuses=RUNNING,sleeping&priority=urgent&order=up"));
        let error = parsed_list::<TaskStatus>(&params, "statuses").unwrap_err();
        assert!(error.message.contains("statuses") && error.message.contains("sleeping"));
        let error = parsed_list::<Priority>(&params, "priority").unwrap_err();
        assert!(error.message.contains("priority") && error.message.contains("urgent"));
        let error = descending(&params).unwrap_err();
        assert!(error.message.contains("order"), "{}", error.message);
        let params = Params::parse(Some("statuses=running&statuses=COMPLETED&order=desc"));
        assert_eq!(
            parsed_list::<TaskStatus>(&params, "statuses").unwrap(),
            [TaskStatus::Running, TaskStatus::Completed]
        );
        assert!(descending(&params).unwrap());
    }
}
