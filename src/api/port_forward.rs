//! `GET /api/workflow/{name}/portforward/{task_name}?port=N`: a TCP
//! connection to port N of a running task, as this request upgraded
//! (HTTP/1.1 `Upgrade: gantry-port-forward`) to a raw byte stream.
//!
//! Invariants: authorized as `workflow:PortForward` on the workflow's pool
//! (by `access`, before this runs); an unknown workflow or task is a 404,
//! a task that is not RUNNING a 409 naming its status; a session is opened
//! on the leader, where the operator running the task is linked (another
//! member answers 421 naming the leader); 101 is answered only
//! once the operator has its end (connected to the task's port), so every
//! failure before is an HTTP error with a message; the bytes go between
//! the two ends here and nowhere else (never a Raft command); every
//! session is logged with its user, workflow, task and port.

use super::auth::Caller;
use super::error::ApiError;
use super::operator_stream::leader_elsewhere;
use super::params::Params;
use super::workflow::{lookup, read};
use super::AppState;
use crate::control::operator_hub::SessionError;
use crate::protocol::session::PORT_FORWARD_PROTOCOL;
use crate::protocol::SessionKind;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use gantry_storage::{TaskKey, TaskStatus};

/// Bytes copied at once each way (tokio's default, 8 KiB, costs a system
/// call and an HTTP/2 DATA frame per 8 KiB of a bulk transfer).
const SPLICE_BUFFER_BYTES: usize = 64 << 10;

/// OSMO's CLI asks `POST` here and then speaks OSMO's router protocol,
/// which Gantry does not: a clear refusal rather than a bare 405.
pub async fn osmo_port_forward() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "SERVER",
        "OSMO's port-forward protocol (its router) is not supported; use `gantry workflow port-forward WF TASK --port LOCAL[:REMOTE]`",
    )
}

pub async fn port_forward(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, task_name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut request: Request,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let port = params
        .get("port")
        .and_then(|text| text.parse::<u16>().ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                "USAGE",
                "query parameter `port` must be a port number (1-65535)",
            )
        })?;
    let workflow = lookup(&state, &params, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{name}' not found")))?;
    let task = read(&state, &params)
        .await?
        .task(&workflow.id, &task_name)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Task '{task_name}' not found in workflow '{}'",
                workflow.id
            ))
            .with_workflow(&workflow.id)
        })?;
    if task.status != TaskStatus::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "USER",
            format!(
                "Task '{task_name}' of workflow '{}' is {}, not RUNNING: only a running task takes sessions",
                workflow.id,
                task.status.as_str()
            ),
        )
        .with_workflow(&workflow.id));
    }
    // The leader dispatches every job, so the operator running the task is
    // linked to it (a remote operator's stream, or its own in-process one).
    let node = state.hub.node();
    if node.leader_term(&node.metrics().borrow()).is_none() {
        return Ok(leader_elsewhere(&state, "sessions into tasks go"));
    }
    let asks_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(PORT_FORWARD_PROTOCOL));
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| asks_upgrade)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "USAGE",
                format!(
                    "this route becomes the task's TCP stream: send it over HTTP/1.1 with \
                     `Connection: Upgrade` and `Upgrade: {PORT_FORWARD_PROTOCOL}` \
                     (`gantry workflow port-forward` does)"
                ),
            )
        })?;
    let backend = workflow.backend.clone();
    let key = TaskKey {
        workflow_id: workflow.id.clone(),
        task: task_name.clone(),
        retry_id: task.retry_id,
    };
    let task_end = state
        .hub
        .open_session(&backend, key, SessionKind::PortForward { port })
        .await
        .map_err(|error| session_error(error).with_workflow(&workflow.id))?;
    let (user, workflow_id) = (caller.user, workflow.id);
    tracing::info!(%user, workflow = %workflow_id, task = %task_name, port, "port-forward session opened");
    state.bulk.spawn(async move {
        let outcome = match upgrade.await {
            Ok(upgraded) => {
                let mut user_end = hyper_util::rt::TokioIo::new(upgraded);
                let mut task_end = task_end;
                tokio::io::copy_bidirectional_with_sizes(
                    &mut user_end,
                    &mut task_end,
                    SPLICE_BUFFER_BYTES,
                    SPLICE_BUFFER_BYTES,
                )
                    .await
                    .map_err(|error| error.to_string())
            }
            Err(error) => Err(format!("the upgrade failed: {error}")),
        };
        match outcome {
            Ok((to_task, from_task)) => {
                tracing::info!(%user, workflow = %workflow_id, task = %task_name, port, to_task, from_task, "port-forward session closed");
            }
            Err(error) => {
                tracing::info!(%user, workflow = %workflow_id, task = %task_name, port, %error, "port-forward session ended");
            }
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        header::UPGRADE,
        HeaderValue::from_static(PORT_FORWARD_PROTOCOL),
    );
    Ok(response)
}

fn session_error(error: SessionError) -> ApiError {
    let status = match &error {
        SessionError::NotConnected(_) => StatusCode::SERVICE_UNAVAILABLE,
        SessionError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        SessionError::NoAnswer { .. } => StatusCode::GATEWAY_TIMEOUT,
        SessionError::Refused(_) => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, "SERVER", error.to_string())
}
