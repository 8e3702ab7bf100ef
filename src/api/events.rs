//! `GET /api/workflow/{name}/events[?task_name=&retry_id=]`: the workflow's
//! events as `text/plain`, one line per event in time order, derived from
//! the replicated records (see `control::events`); with `task_name` only
//! that task's (and `retry_id`'s) events.
//!
//! Invariant: served from one read view, so the lines agree with the
//! `workflow query` of the same moment; unknown workflows and tasks are 404.

use super::error::ApiError;
use super::params::Params;
use super::workflow::read;
use super::AppState;
use crate::control::events::{self, EventFilter};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let retry_id = params.retry_id()?;
    let filter = EventFilter {
        task: params.get("task_name").map(str::to_string),
        retry_id,
    };
    let view = read(&state, &params).await?;
    let workflow = view
        .find_workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    if let Some(task) = &filter.task {
        if view.task(&workflow.id, task)?.is_none() {
            return Err(ApiError::not_found(format!(
                "Task '{task}' not found in workflow '{id}'"
            )));
        }
    }
    let text = events::render(&events::collect(&view, &workflow, &filter)?);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
