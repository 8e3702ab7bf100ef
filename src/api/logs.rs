//! `GET /api/workflow/{id}/logs`: stored lines, then live lines while the
//! workflow runs, as one `text/plain` stream.
//!
//! Invariants: lines come in stored order, each once; with `last_n_lines`
//! only the tail of what is stored is sent; the stream ends once the
//! workflow has finished and every stored line has been sent.

use super::error::ApiError;
use super::params::Params;
use super::workflow::read;
use super::AppState;
use crate::control::logs::{render_line, StoredLine};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

/// How often a follower re-checks a quiet workflow for its end.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

struct Filter {
    task: Option<String>,
    retry_id: Option<u32>,
}

impl Filter {
    fn keeps(&self, line: &StoredLine) -> bool {
        self.task.as_ref().is_none_or(|task| &line.task == task)
            && self.retry_id.is_none_or(|retry| line.retry_id == retry)
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let last_n = params.number("last_n_lines")?;
    let retry_id = params
        .number("retry_id")?
        .map(|retry| {
            u32::try_from(retry)
                .map_err(|_| ApiError::bad_request("USAGE", "retry_id is too large"))
        })
        .transpose()?;
    let filter = Filter {
        task: params.get("task_name").map(str::to_string),
        retry_id,
    };
    let workflow = read(&state, &params)
        .await?
        .workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    if let Some(task) = &filter.task {
        if read(&state, &params).await?.task(&id, task)?.is_none() {
            return Err(ApiError::not_found(format!(
                "Task '{task}' not found in workflow '{id}'"
            )));
        }
    }
    let (stored, offset) = state.logs.read_from(&id, 0).await.map_err(|error| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: reading logs: {error}"),
        )
    })?;
    let mut head: VecDeque<String> = VecDeque::new();
    for line in stored.iter().filter(|line| filter.keeps(line)) {
        head.push_back(render_line(line));
        if let Some(n) = last_n {
            while head.len() as u64 > n {
                head.pop_front();
            }
        }
    }
    let initial: String = head.into_iter().collect();
    let follow = workflow.status.is_alive();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(16);
    tokio::spawn(async move {
        if !initial.is_empty() && sender.send(Ok(initial)).await.is_err() {
            return;
        }
        if follow {
            follow_live(state, id, filter, offset, sender).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// Sends lines appended after `offset` until the workflow has ended and
/// everything stored is sent, or the client goes away.
async fn follow_live(
    state: AppState,
    id: String,
    filter: Filter,
    mut offset: u64,
    sender: tokio::sync::mpsc::Sender<Result<String, Infallible>>,
) {
    let mut appended = state.logs.subscribe();
    loop {
        // Read the status first: lines stored before the end are then all read below.
        let finished = match state.node.read_local().map(|view| view.workflow(&id)) {
            Ok(Ok(Some(workflow))) => !workflow.status.is_alive(),
            _ => true,
        };
        let Ok((lines, next)) = state.logs.read_from(&id, offset).await else {
            return;
        };
        offset = next;
        let text: String = lines
            .iter()
            .filter(|line| filter.keeps(line))
            .map(render_line)
            .collect();
        if !text.is_empty() && sender.send(Ok(text)).await.is_err() {
            return;
        }
        if finished {
            return;
        }
        let wait_for_append = async {
            loop {
                match appended.recv().await {
                    Ok(workflow) if workflow == id => return,
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(FOLLOW_POLL, wait_for_append).await;
    }
}
