//! Sessions into running tasks, as users open them: an HTTP/1.1 request
//! upgraded to the session's stream. `GET
//! /api/workflow/{name}/portforward/{task_name}?port=N` (`Upgrade:
//! gantry-port-forward`) becomes a TCP connection to port N of the task
//! (with `udp=true`, UDP datagrams framed as `protocol::udp` says);
//! `GET /api/workflow/{name}/exec/task/{task_name}?entry=CMD&tty=BOOL`
//! (`Upgrade: gantry-exec`) a command run inside it, as `protocol::exec`
//! frames.
//!
//! Invariants: authorized as `workflow:PortForward` / `workflow:Exec` on
//! the workflow's pool
//! (by `access`, before this runs); an unknown workflow or task is a 404,
//! a task that is not RUNNING a 409 naming its status; a session is opened
//! on the leader, where the operator running the task is linked (another
//! member answers 421 naming the leader); 101 is answered only
//! once the operator has its end (connected to the task's port), so every
//! failure before is an HTTP error with a message; the bytes go between
//! the two ends here and nowhere else (never a Raft command); every
//! session is logged with its user, workflow, task and what it opened,
//! and recorded as an event of its workflow (`session_events`).

use super::auth::Caller;
use super::error::ApiError;
use super::operator_stream::leader_elsewhere;
use super::params::Params;
use super::workflow::{lookup, read};
use super::AppState;
use crate::control::operator_hub::SessionError;
use crate::protocol::exec::{ExecRequest, EXEC_PROTOCOL};
use crate::protocol::session::PORT_FORWARD_PROTOCOL;
use crate::protocol::SessionKind;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use gantry_storage::{TaskKey, TaskRecord, TaskStatus, WorkflowRecord};

/// Bytes copied at once each way (tokio's default, 8 KiB, costs a system
/// call and an HTTP/2 DATA frame per 8 KiB of a bulk transfer).
const SPLICE_BUFFER_BYTES: usize = 64 << 10;

pub async fn port_forward(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, task_name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
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
    // UDP: the stream carries `protocol::udp` frames, not raw bytes.
    let kind = if params.flag("udp")? {
        SessionKind::UdpForward { port }
    } else {
        SessionKind::PortForward { port }
    };
    let target = SessionTarget {
        state,
        caller,
        workflow: name,
        task: task_name,
        params,
    };
    open_upgraded(target, request, PORT_FORWARD_PROTOCOL, kind).await
}

/// `GET /api/workflow/{name}/exec/task/{task_name}?entry=CMD&tty=BOOL`:
/// a command run inside a running task (`entry`, split as a shell
/// would, OSMO's `/bin/bash` by default), this request upgraded
/// (`Upgrade: gantry-exec`) to a stream of `protocol::exec` frames.
pub async fn exec(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, task_name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let entry = params.get("entry").unwrap_or(DEFAULT_ENTRY);
    let argv = shlex::split(entry)
        .filter(|argv| !argv.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "USAGE",
                format!("query parameter `entry`: {entry:?} is not a command (quotes must close)"),
            )
        })?;
    let tty = params.flag("tty")?;
    let dimension = |field: &str| -> Result<Option<u16>, ApiError> {
        params
            .get(field)
            .map(|text| {
                text.parse::<u16>().map_err(|_| {
                    ApiError::bad_request(
                        "USAGE",
                        format!("query parameter `{field}` must be a number of 0 to 65535"),
                    )
                })
            })
            .transpose()
    };
    let size = match (dimension("columns")?, dimension("rows")?) {
        (Some(columns), Some(rows)) => Some((columns, rows)),
        _ => None,
    };
    let target = SessionTarget {
        state,
        caller,
        workflow: name,
        task: task_name,
        params,
    };
    let kind = SessionKind::Exec(ExecRequest { argv, tty, size });
    open_upgraded(target, request, EXEC_PROTOCOL, kind).await
}

/// OSMO's default exec entry.
const DEFAULT_ENTRY: &str = "/bin/bash";

/// Who asks for a session into which task.
struct SessionTarget {
    state: AppState,
    caller: Caller,
    workflow: String,
    task: String,
    params: Params,
}

/// On a follower, the answer that names the leader (421): the leader
/// dispatches every job, so the operator running a task is linked to it
/// (a remote operator's stream, or its own in-process one), and sessions
/// open there.
pub(super) fn not_the_leader(state: &AppState) -> Option<Response> {
    let node = state.hub.node();
    node.leader_term(&node.metrics().borrow())
        .is_none()
        .then(|| leader_elsewhere(state, "sessions into tasks go"))
}

/// Workflow `name` and its task `task_name`, which must be RUNNING: else
/// 404 for an unknown one, 409 naming the status of one that is not.
pub(super) async fn running_task(
    state: &AppState,
    params: &Params,
    name: &str,
    task_name: &str,
) -> Result<(WorkflowRecord, TaskRecord), ApiError> {
    let workflow = lookup(state, params, name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{name}' not found")))?;
    let task = read(state, params)
        .await?
        .task(&workflow.id, task_name)?
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
    Ok((workflow, task))
}

/// Opens a session of `kind` into the target's task and answers 101,
/// splicing the upgraded request with the operator's end.
async fn open_upgraded(
    target: SessionTarget,
    mut request: Request,
    protocol: &'static str,
    kind: SessionKind,
) -> Result<Response, ApiError> {
    let SessionTarget {
        state,
        caller,
        workflow: name,
        task: task_name,
        params,
    } = target;
    let (workflow, task) = running_task(&state, &params, &name, &task_name).await?;
    if let Some(elsewhere) = not_the_leader(&state) {
        return Ok(elsewhere);
    }
    let asks_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(protocol));
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| asks_upgrade)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "USAGE",
                format!(
                    "this route becomes the session's stream: send it over HTTP/1.1 with \
                     `Connection: Upgrade` and `Upgrade: {protocol}` \
                     (`gantry workflow {}` does)",
                    kind.verb()
                ),
            )
        })?;
    let backend = workflow.backend.clone();
    let key = TaskKey {
        workflow_id: workflow.id.clone(),
        task: task_name.clone(),
        retry_id: task.retry_id,
    };
    let verb = kind.verb();
    let (user, workflow_id) = (caller.user, workflow.id.clone());
    match &kind {
        SessionKind::PortForward { port } => {
            tracing::info!(%user, workflow = %workflow_id, task = %task_name, port, "port-forward session opening");
        }
        SessionKind::UdpForward { port } => {
            tracing::info!(%user, workflow = %workflow_id, task = %task_name, port, "UDP port-forward session opening");
        }
        SessionKind::Exec(request) => {
            tracing::info!(%user, workflow = %workflow_id, task = %task_name, command = ?request.argv, tty = request.tty, "exec session opening");
        }
    }
    let task_end = state
        .hub
        .open_session(&backend, key.clone(), kind.clone())
        .await
        .map_err(|error| session_error(error).with_workflow(&workflow.id))?;
    state
        .session_events
        .record(&state.node, &state.bulk, &user, &key, &kind);
    tracing::info!(%user, workflow = %workflow_id, task = %task_name, "{verb} session opened");
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
                tracing::info!(%user, workflow = %workflow_id, task = %task_name, to_task, from_task, "{verb} session closed");
            }
            Err(error) => {
                tracing::info!(%user, workflow = %workflow_id, task = %task_name, %error, "{verb} session ended");
            }
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    Ok(response)
}

fn session_error(error: SessionError) -> ApiError {
    let status = match &error {
        SessionError::NotConnected(_) => StatusCode::SERVICE_UNAVAILABLE,
        SessionError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        SessionError::NoAnswer { .. } => StatusCode::GATEWAY_TIMEOUT,
        SessionError::Refused(_) => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, "SERVER", error.to_string())
}
