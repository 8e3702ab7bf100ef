//! Workflow routes: list, query, cancel, spec; and the pool list (submit
//! and restart are `submit`).
//!
//! Invariants: unknown IDs and pools are 404; reads are linearizable unless
//! the caller asks for `stale=true`.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::request_key::RequestKey;
use super::views::{self, Links};
use super::AppState;
use crate::clock::now_ms;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gantry_storage::config::pool::{pool_json, pool_status};
use gantry_storage::{Command, ConfigData, ConfigType, ListFilter, Outcome, WorkflowStatus};
use serde_json::{json, Value};
use std::str::FromStr;

/// Reads the whole body, refusing it with 413 past the configured size.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "USAGE",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    })
}

/// Proposes a command (the node waits out an election).
pub(super) async fn propose(state: &AppState, command: Command) -> Result<Outcome, ApiError> {
    Ok(state.node.propose(command).await?)
}

/// A read view: linearizable (the node waits out an election) unless the
/// client asked for `stale=true`, which reads this replica's applied state
/// without asking the leader (faster, possibly behind). Neither is served
/// while a state check has this replica's state marked corrupt.
pub(super) async fn read(
    state: &AppState,
    params: &Params,
) -> Result<gantry_storage::ReadView, ApiError> {
    if params.flag("stale")? {
        if let Some(reason) = state.node.state_corrupt() {
            return Err(gantry_raft::RaftError::StateCorrupt(reason).into());
        }
        return Ok(state.node.read_local()?);
    }
    Ok(state.node.read().await?)
}

pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let statuses = params
        .list("statuses")
        .iter()
        .map(|status| {
            WorkflowStatus::from_str(status)
                .map_err(|message| ApiError::bad_request("USAGE", format!("statuses: {message}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let order = params.get("order").unwrap_or("ASC");
    let descending = match order.to_ascii_uppercase().as_str() {
        "ASC" => false,
        "DESC" => true,
        _ => {
            return Err(ApiError::bad_request(
                "USAGE",
                format!("order must be ASC or DESC, not '{order}'"),
            ))
        }
    };
    let limit = params.number("limit")?.unwrap_or(20).min(1000) as usize;
    let filter = ListFilter {
        statuses,
        name: params.get("name").map(str::to_string),
        pools: params.list("pools"),
        offset: params.number("offset")?.unwrap_or(0) as usize,
        limit,
        descending,
        ..ListFilter::default()
    };
    let (workflows, more) = read(&state, &params).await?.list(&filter)?;
    let links = Links {
        base_url: &state.config.base_url,
    };
    let now = now_ms();
    Ok(Json(json!({
        "workflows": workflows.iter().map(|workflow| views::list_entry(workflow, &links, now)).collect::<Vec<_>>(),
        "more_entries": more,
    })))
}

pub async fn query(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let skip_groups = params.flag("skip_groups")?;
    // OSMO's `verbose`: every run of a task, not only its current one.
    let verbose = params.flag("verbose")?;
    let view = read(&state, &params).await?;
    let workflow = view
        .workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    let mut groups = Vec::new();
    if !skip_groups {
        for group in view.groups(&workflow)? {
            let mut tasks = Vec::new();
            for task in view.group_tasks(&group)? {
                if verbose && task.retry_id > 0 {
                    tasks.extend(view.task_runs(&workflow.id, &task.name)?);
                }
                tasks.push(task);
            }
            groups.push((group, tasks));
        }
    }
    let links = Links {
        base_url: &state.config.base_url,
    };
    Ok(Json(views::query(&workflow, &groups, &links, now_ms())))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_key: RequestKey,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let now = now_ms();
    let command = Command::CancelWorkflow {
        now,
        workflow_id: id.clone(),
        user: caller.user.clone(),
        message: params.get("message").map(str::to_string),
        force: params.flag("force")?,
    };
    match propose(&state, request_key.wrap(&caller, now, command)).await? {
        Outcome::Canceled { workflow_id } => Ok(Json(json!({ "name": workflow_id }))),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection).with_workflow(id)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}

pub async fn spec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let use_template = params.flag("use_template")?;
    let workflow = read(&state, &params)
        .await?
        .workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    let text = if use_template {
        workflow.template_spec
    } else {
        workflow.rendered_spec
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

pub async fn list_pools(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let view = read(&state, &params).await?;
    let mut entries = serde_json::Map::new();
    for config in view.configs(ConfigType::Pool)? {
        if let Some(ConfigData::Pool(pool)) = &config.data {
            let online = view.backend(&pool.backend)?.is_some_and(|b| b.online);
            entries.insert(
                pool.name.clone(),
                pool_json(pool, pool_status(pool, online)),
            );
        }
    }
    Ok(Json(json!({ "pools": entries })))
}
