//! Workflow routes: list, query, cancel, spec, tags; and the pool list
//! (submit and restart are `submit`).
//!
//! Invariants: unknown IDs and pools are 404; a workflow is found by its ID
//! or its uuid; reads are linearizable unless the caller asks for
//! `stale=true`; a malformed filter is a 400 naming its parameter.

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
use gantry_storage::config::workflow::WorkflowConfig;
use gantry_storage::labels::{self, LabelSelector};
use gantry_storage::{
    Command, ConfigType, ListFilter, Outcome, Priority, ReadView, WorkflowRecord, WorkflowStatus,
};
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

/// [`propose`] for a command of a kind newer than some builds know: while
/// a rolling upgrade leaves a member of an older build, the 503 says that
/// `feature` waits for it (and which members are behind).
pub(super) async fn propose_gated(
    state: &AppState,
    feature: &str,
    command: Command,
) -> Result<Outcome, ApiError> {
    state
        .node
        .propose(command)
        .await
        .map_err(|error| match error {
            gantry_raft::RaftError::NotUnderstood(reason) => gantry_raft::RaftError::NotUnderstood(
                format!("{feature} needs every member on a build that knows it: {reason}"),
            )
            .into(),
            other => other.into(),
        })
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

/// OSMO's `GET /api/workflow`, scoped as OSMO scopes it: the caller's own
/// workflows unless `users` or `all_users` say otherwise; every pool
/// unless `pools` names some (OSMO's CLI always sends `all_pools` or
/// `pools`).
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    let mut users = params.list("users");
    if users.is_empty() && !params.flag("all_users")? {
        users.push(caller.user.clone());
    }
    let pools = if params.flag("all_pools")? {
        Vec::new()
    } else {
        params.list("pools")
    };
    let priorities = params
        .list("priority")
        .iter()
        .map(|priority| {
            Priority::from_str(priority)
                .map_err(|message| ApiError::bad_request("USAGE", format!("priority: {message}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let labels = params
        .all("label")
        .iter()
        .map(|selector| {
            LabelSelector::parse(selector)
                .map_err(|message| ApiError::bad_request("USAGE", format!("label: {message}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let no_labels = params.all("no_label");
    for key in &no_labels {
        labels::check_key(key)
            .map_err(|message| ApiError::bad_request("USAGE", format!("no_label: {message}")))?;
    }
    let filter = ListFilter {
        statuses,
        name: params.get("name").map(str::to_string),
        pools,
        offset: params.number("offset")?.unwrap_or(0) as usize,
        limit,
        descending,
        users,
        tags: params.list("tags"),
        priorities,
        submitted_after: params.time("submitted_after")?,
        submitted_before: params.time("submitted_before")?,
        labels,
        no_labels,
    };
    let view = read(&state, &params).await?;
    let (workflows, more) = view.list(&filter)?;
    let links = Links {
        base_url: &state.config.base_url,
    };
    let now = now_ms();
    let mut entries = Vec::with_capacity(workflows.len());
    for workflow in &workflows {
        let labels = view.workflow_labels(&workflow.id)?;
        entries.push(views::list_entry(workflow, &labels, &links, now));
    }
    Ok(Json(json!({
        "workflows": entries,
        "more_entries": more,
    })))
}

/// The workflow `id` names, by its ID or its uuid (as OSMO looks it up):
/// this replica's state first (neither ever changes its workflow), else a
/// read as `params` ask (this replica may lag). What the access check and
/// the routes that take a uuid resolve it with.
pub(super) async fn lookup(
    state: &AppState,
    params: &Params,
    id: &str,
) -> Result<Option<WorkflowRecord>, ApiError> {
    if let Some(workflow) = state.node.read_local()?.find_workflow(id)? {
        return Ok(Some(workflow));
    }
    Ok(read(state, params).await?.find_workflow(id)?)
}

/// The ID of the workflow `id` names ([`lookup`]); a name that is neither
/// an ID nor a uuid stays as given (the route answers its 404).
pub(super) async fn resolve_id(
    state: &AppState,
    params: &Params,
    id: String,
) -> Result<String, ApiError> {
    Ok(lookup(state, params, &id)
        .await?
        .map_or(id, |workflow| workflow.id))
}

/// The workflow `id` names: its ID or its uuid (as OSMO looks it up).
pub(super) fn find(view: &ReadView, id: &str) -> Result<WorkflowRecord, ApiError> {
    view.find_workflow(id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))
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
    let workflow = find(&view, &id)?;
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
    let marks = views::Marks {
        labels: view.workflow_labels(&workflow.id)?,
        tags: view.workflow_tags(&workflow.id)?,
    };
    Ok(Json(views::query(
        &workflow,
        &marks,
        &groups,
        &links,
        now_ms(),
    )))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_key: RequestKey,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    // An unknown name is apply's 404.
    let id = resolve_id(&state, &params, id).await?;
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
    let workflow = find(&read(&state, &params).await?, &id)?;
    let text = if use_template {
        workflow.template_spec
    } else {
        workflow.rendered_spec
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// OSMO's `POST /api/workflow/{name}/tag?add=&remove=`: remove, then add
/// (only tags the WORKFLOW config's `workflow_info.tags` allows).
pub async fn tag(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let (add, remove) = (params.list("add"), params.list("remove"));
    if add.is_empty() && remove.is_empty() {
        return Err(ApiError::bad_request(
            "USER",
            "No tags specified! (add, remove)",
        ));
    }
    let workflow = find(&state.node.read().await?, &id)?;
    let command = Command::TagWorkflow {
        workflow_id: workflow.id.clone(),
        add,
        remove,
    };
    match propose_gated(&state, "workflow tags", command).await? {
        Outcome::Applied => {
            let tags = state.node.read().await?.workflow_tags(&workflow.id)?;
            Ok(Json(json!({ "name": workflow.id, "tags": tags })))
        }
        Outcome::Rejected(rejection) => {
            Err(ApiError::from_rejection(rejection).with_workflow(workflow.id))
        }
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}

/// OSMO's `GET /api/tag`: the tags users may give workflows (the WORKFLOW
/// config's `workflow_info.tags`).
pub async fn allowed_tags(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let config = WorkflowConfig::in_force(&read(&state, &params).await?);
    let tags = config
        .workflow_info
        .get("tags")
        .filter(|tags| tags.is_array())
        .cloned()
        .unwrap_or_else(|| json!([]));
    Ok(Json(json!({ "tags": tags })))
}

pub async fn list_pools(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let view = read(&state, &params).await?;
    let mut entries = serde_json::Map::new();
    for config in view.configs(ConfigType::Pool)? {
        let Some(data) = &config.data else {
            continue;
        };
        if let Some(pool) = data.as_pool() {
            let online = view.backend(&pool.backend)?.is_some_and(|b| b.online);
            entries.insert(
                pool.name.clone(),
                pool_json(pool, &data.pool_extras(), pool_status(pool, online)),
            );
        }
    }
    Ok(Json(json!({ "pools": entries })))
}
