//! Workflow routes: submit, list, query, cancel, spec; and the pool list.
//!
//! Invariants: a spec that is not YAML, cannot be rendered or has no valid
//! name is refused with 400 and nothing is stored; a spec that parses but
//! fails validation is stored as FAILED_SUBMISSION and answered 400 with its
//! workflow ID; `validation_only` runs every check a submit runs (the
//! resource checks against the pool's nodes included) and stores nothing;
//! unknown IDs and pools are 404.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::views::{self, Links};
use super::AppState;
use crate::clock::now_ms;
use crate::spec::{prepare, SpecErrorKind, SpecInput};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use gantry_storage::config::pool::{pool_json, pool_status};
use gantry_storage::{
    Command, ConfigData, ConfigType, ListFilter, Outcome, Priority, Submission, WorkflowStatus,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::str::FromStr;

/// Submit body (OSMO `TemplateSpec`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSpec {
    file: String,
    #[serde(default)]
    set_variables: Vec<String>,
    #[serde(default)]
    set_string_variables: Vec<String>,
    #[serde(default)]
    uploaded_templated_spec: Option<String>,
}

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
/// without asking the leader (faster, possibly behind).
pub(super) async fn read(
    state: &AppState,
    params: &Params,
) -> Result<gantry_storage::ReadView, ApiError> {
    if params.flag("stale")? {
        return Ok(state.node.read_local()?);
    }
    Ok(state.node.read().await?)
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(pool): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let dry_run = params.flag("dry_run")?;
    let validation_only = params.flag("validation_only")?;
    let priority = match params.get("priority") {
        Some(value) => Priority::from_str(value)
            .map_err(|message| ApiError::bad_request("USAGE", format!("priority: {message}")))?,
        None => Priority::Normal,
    };
    let body = read_body(body, state.config.body_bytes_max).await?;
    let template: TemplateSpec = serde_json::from_slice(&body).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "USAGE",
            format!("request body is not a TemplateSpec ({{file, set_variables, set_string_variables}}): {error}"),
        )
    })?;
    // An early, friendly answer from local state; `apply` re-checks the pool authoritatively.
    {
        let view = state.node.read_local()?;
        if view.pool(&pool)?.is_none() {
            return Err(ApiError::not_found(format!("Pool '{pool}' not found")));
        }
        if pool_in_maintenance(&view, &pool)? && !caller.is_admin() {
            return Err(ApiError::bad_request(
                "SUBMISSION",
                format!("Pool '{pool}' is in maintenance; only admins can submit to it now"),
            ));
        }
    }
    let input = SpecInput {
        text: template.file.clone(),
        set_variables: template.set_variables,
        set_string_variables: template.set_string_variables,
        set_env: params.all("env_vars"),
    };
    // Parsing and rendering are CPU work (a template may run in a child
    // process for up to its time limit): off the async threads, and bounded.
    let prepared = {
        let _slot = state.render_slots.acquire().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER",
                "the server is shutting down",
            )
        })?;
        let limits = state.config.spec_limits.clone();
        tokio::task::spawn_blocking(move || prepare(&input, &limits))
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SERVER",
                    format!("Internal server error: {error}"),
                )
            })?
    };
    let prepared = prepared.map_err(|error| {
        let code = match error.kind {
            SpecErrorKind::Usage => "USAGE",
            _ => "SUBMISSION",
        };
        ApiError::bad_request(code, error.to_string())
    })?;
    let warnings = prepared.warnings;
    if dry_run {
        prepared
            .plan
            .map_err(|error| ApiError::bad_request("SUBMISSION", error.to_string()))?;
        return Ok(Json(json!({
            "name": prepared.name,
            "overview": Value::Null,
            "logs": Value::Null,
            "spec": prepared.rendered,
            "dashboard_url": Value::Null,
            "warnings": warnings,
        })));
    }
    // OSMO §3.4: resources are checked against the pool's nodes; a failure
    // is recorded like any other validation failure. Validation runs the
    // same checks, so it passes exactly what a submit would accept.
    let plan = match prepared.plan {
        Ok(plan) => {
            let view = state.node.read_local()?;
            super::resources::check_resources(&view, &pool, &plan).map(|()| plan)
        }
        Err(error) => Err(error.to_string()),
    };
    if validation_only {
        plan.map_err(|message| ApiError::bad_request("SUBMISSION", message))?;
        return Ok(Json(json!({
            "name": prepared.name,
            "overview": Value::Null,
            "logs": "Workflow validation succeeded.",
            "spec": Value::Null,
            "dashboard_url": Value::Null,
            "warnings": warnings,
        })));
    }
    let submission = Submission {
        name: prepared.name,
        uuid: uuid::Uuid::new_v4().simple().to_string(),
        pool,
        user: caller.user,
        priority,
        template_spec: template.uploaded_templated_spec.unwrap_or(template.file),
        rendered_spec: prepared.rendered,
        plan,
    };
    match propose(
        &state,
        Command::SubmitWorkflow {
            now: now_ms(),
            submission,
        },
    )
    .await?
    {
        Outcome::Submitted {
            workflow_id,
            failure: Some(message),
        } => Err(ApiError::bad_request("SUBMISSION", message).with_workflow(workflow_id)),
        Outcome::Submitted {
            workflow_id,
            failure: None,
        } => {
            let links = Links {
                base_url: &state.config.base_url,
            };
            Ok(Json(json!({
                "name": workflow_id,
                "overview": links.overview(&workflow_id),
                "logs": links.logs(&workflow_id),
                "spec": Value::Null,
                "dashboard_url": Value::Null,
                "warnings": warnings,
            })))
        }
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
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
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let command = Command::CancelWorkflow {
        now: now_ms(),
        workflow_id: id.clone(),
        user: caller.user,
        message: params.get("message").map(str::to_string),
        force: params.flag("force")?,
    };
    match propose(&state, command).await? {
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

/// Whether `pool` is in maintenance (OSMO: only admins may submit then).
fn pool_in_maintenance(view: &gantry_storage::ReadView, pool: &str) -> Result<bool, ApiError> {
    Ok(match view.config(ConfigType::Pool, pool)? {
        Some(gantry_storage::ConfigRevision {
            data: Some(ConfigData::Pool(pool)),
            ..
        }) => pool_status(&pool, true) == gantry_storage::PoolStatus::Maintenance,
        _ => false,
    })
}
