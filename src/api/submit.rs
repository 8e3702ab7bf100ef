//! Submitting workflows: a spec (OSMO's `TemplateSpec`), the stored spec of
//! an earlier workflow (`?workflow_id=`, OSMO's resubmit by ID), and the
//! restart of a failed workflow from the groups that did not complete.
//!
//! Invariants: a spec that is not YAML, cannot be rendered or has no valid
//! name is refused with 400 and nothing is stored; a spec that parses but
//! fails validation is stored as FAILED_SUBMISSION and answered 400 with its
//! workflow ID; `validation_only` runs every check a submit runs (the
//! resource checks against the pool's nodes included) and stores nothing;
//! reusing an earlier workflow's spec needs `workflow:Read` on its pool, so
//! a resubmit or restart shows nobody a spec they could not read. Labels
//! (OSMO's): the spec's `workflow.labels` — an earlier workflow's own
//! labels for a resubmit or restart — then each `label=KEY=VALUE` of the
//! query, the last one winning; a bad one is a 400 and stores nothing.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::request_key::RequestKey;
use super::views::Links;
use super::workflow::{propose, propose_gated, read_body};
use super::AppState;
use crate::clock::now_ms;
use crate::spec::{literal, prepare_cancellable, restart_plan, Prepared, SpecErrorKind, SpecInput};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gantry_storage::config::pool::pool_status;
use gantry_storage::config::WorkflowConfig;
use gantry_storage::extras::WorkflowExtras;
use gantry_storage::labels::{self, Labels};
use gantry_storage::plan::WorkflowPlan;
use gantry_storage::{
    Command, ConfigData, ConfigType, Outcome, PackedSubmission, Priority, ReadView, Submission,
    TaskStatus, WorkflowRecord, WorkflowStatus,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
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

/// `POST /api/pool/{pool_name}/workflow`: a new workflow from the body's
/// spec, or, with `workflow_id` and no body, from that workflow's spec.
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_key: RequestKey,
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
    let overrides = label_overrides(&params)?;
    let mut canonical_labels = None;
    let body = read_body(body, state.config.body_bytes_max).await?;
    let template = match params.get("workflow_id") {
        Some(earlier) if body.iter().all(u8::is_ascii_whitespace) => {
            let view = state.node.read().await?;
            let workflow = readable_workflow(&view, &caller, earlier)?;
            canonical_labels = Some(view.workflow_labels(&workflow.id)?);
            // What ran, exactly: the rendered spec, taken as it is.
            TemplateSpec {
                file: literal(&workflow.rendered_spec),
                set_variables: Vec::new(),
                set_string_variables: Vec::new(),
                uploaded_templated_spec: Some(workflow.template_spec),
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "USAGE",
                "workflow_id resubmits that workflow's spec: send no body with it",
            ))
        }
        None => serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "USAGE",
                format!("request body is not a TemplateSpec ({{file, set_variables, set_string_variables}}): {error}"),
            )
        })?,
    };
    check_pool(&state, &caller, &pool)?;
    let input = SpecInput {
        text: template.file.clone(),
        set_variables: template.set_variables,
        set_string_variables: template.set_string_variables,
        set_env: params.all("env_vars"),
    };
    let prepared = prepare_spec(&state, input).await?;
    let mut warnings = prepared.warnings.clone();
    warnings.extend(declared_pool_warning(&prepared, &pool));
    let labels = merged_labels(
        canonical_labels.unwrap_or_else(|| prepared.labels.clone()),
        overrides,
    )?;
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
    let (plan, admitted) = checked_plan(
        &state,
        (&pool, priority, &caller.user),
        prepared.plan.map_err(|e| e.to_string()),
        &prepared.extras,
    )?;
    warnings.extend(admitted);
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
        user: caller.user.clone(),
        priority,
        template_spec: template.uploaded_templated_spec.unwrap_or(template.file),
        rendered_spec: prepared.rendered,
        plan,
    };
    commit_submission(
        &state,
        (&caller, &request_key),
        submission,
        (labels, prepared.extras),
        warnings,
    )
    .await
}

/// `POST /api/pool/{pool_name}/workflow/{workflow_id}/restart`: a new
/// workflow (the same name, the next number) of the groups of a failed
/// workflow that did not complete; what they read from completed groups
/// comes from the old workflow's outputs (OSMO §2.5).
pub async fn restart(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_key: RequestKey,
    Path((pool, earlier)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let view = state.node.read().await?;
    let workflow = readable_workflow(&view, &caller, &earlier)?;
    if workflow.status.is_alive() || workflow.status == WorkflowStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "USAGE",
            format!(
                "workflow '{earlier}' is {}: only a failed workflow can be restarted",
                workflow.status
            ),
        )
        .with_workflow(earlier));
    }
    let completed: BTreeSet<String> = view
        .groups(&workflow)?
        .into_iter()
        .filter(|group| group.status == TaskStatus::Completed)
        .map(|group| group.name)
        .collect();
    check_pool(&state, &caller, &pool)?;
    let input = SpecInput {
        text: literal(&workflow.rendered_spec),
        set_variables: Vec::new(),
        set_string_variables: Vec::new(),
        set_env: Vec::new(),
    };
    let prepared = prepare_spec(&state, input).await?;
    let plan = prepared
        .plan
        .map_err(|error| error.to_string())
        .and_then(|plan| restart_plan(plan, &completed, &workflow.id))
        .map_err(|message| ApiError::bad_request("SUBMISSION", message).with_workflow(&earlier))?;
    // The kept tasks' extras (the others do not run again).
    let mut extras = prepared.extras;
    let kept: BTreeSet<&str> = plan
        .groups
        .iter()
        .flat_map(|group| group.tasks.iter().map(|task| task.name.as_str()))
        .collect();
    extras.retain_tasks(|task| kept.contains(task));
    let (plan, admitted) = checked_plan(
        &state,
        (&pool, workflow.priority, &caller.user),
        Ok(plan),
        &extras,
    )?;
    let labels = view.workflow_labels(&workflow.id)?;
    let mut warnings = prepared.warnings;
    warnings.extend(admitted);
    let submission = Submission {
        name: prepared.name,
        uuid: uuid::Uuid::new_v4().simple().to_string(),
        pool,
        user: caller.user.clone(),
        priority: workflow.priority,
        template_spec: workflow.template_spec,
        rendered_spec: prepared.rendered,
        plan,
    };
    commit_submission(
        &state,
        (&caller, &request_key),
        submission,
        (labels, extras),
        warnings,
    )
    .await
}

/// The query's `label=KEY=VALUE` overrides, in order.
fn label_overrides(params: &Params) -> Result<Vec<(String, String)>, ApiError> {
    params
        .all("label")
        .iter()
        .map(|assignment| {
            labels::parse_assignment(assignment)
                .map_err(|message| ApiError::bad_request("USAGE", format!("label: {message}")))
        })
        .collect()
}

/// `base` with the overrides applied (the last value of a key wins), checked.
fn merged_labels(mut base: Labels, overrides: Vec<(String, String)>) -> Result<Labels, ApiError> {
    base.extend(overrides);
    labels::check_labels(&base)
        .map_err(|message| ApiError::bad_request("USAGE", format!("label: {message}")))?;
    Ok(base)
}

/// `id`'s record, if the caller may read it (`workflow:Read` on its pool).
fn readable_workflow(
    view: &ReadView,
    caller: &Caller,
    id: &str,
) -> Result<WorkflowRecord, ApiError> {
    let workflow = view
        .find_workflow(id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    let resource = format!("pool/{}", workflow.pool);
    if !caller.allows("workflow:Read", &resource) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CREDENTIAL",
            format!(
                "{} is not allowed workflow:Read on {resource}, where workflow '{id}' ran",
                caller.describe()
            ),
        ));
    }
    Ok(workflow)
}

/// An early, friendly answer from local state (`apply` re-checks the pool
/// authoritatively): the pool exists and takes this caller's workflows.
fn check_pool(state: &AppState, caller: &Caller, pool: &str) -> Result<(), ApiError> {
    let view = state.node.read_local()?;
    if view.pool(pool)?.is_none() {
        return Err(ApiError::not_found(format!("Pool '{pool}' not found")));
    }
    if pool_in_maintenance(&view, pool)? && !caller.is_admin() {
        return Err(ApiError::bad_request(
            "SUBMISSION",
            format!("Pool '{pool}' is in maintenance; only admins can submit to it now"),
        ));
    }
    Ok(())
}

/// Parses and renders a spec: CPU work (a template may run in a child
/// process for up to its time limit), so off the async threads, and bounded.
async fn prepare_spec(state: &AppState, input: SpecInput) -> Result<Prepared, ApiError> {
    let _slot = state.render_slots.acquire().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            "the server is shutting down",
        )
    })?;
    let mut limits = state.config.spec_limits.clone();
    // The WORKFLOW config in force decides how many tasks a workflow may
    // have.
    let max_tasks = WorkflowConfig::in_force(&state.node.read_local()?).max_num_tasks;
    limits.max_tasks = usize::try_from(max_tasks).unwrap_or(usize::MAX);
    // A client that leaves drops this future, and with it the guard: the
    // worker process is killed rather than left to run out its limits.
    let cancel = tokio_util::sync::CancellationToken::new();
    let _cancel_on_drop = cancel.clone().drop_guard();
    let prepared =
        tokio::task::spawn_blocking(move || prepare_cancellable(&input, &limits, &cancel))
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SERVER",
                    format!("Internal server error: {error}"),
                )
            })?;
    prepared.map_err(|error| {
        let code = match error.kind {
            SpecErrorKind::Usage => "USAGE",
            _ => "SUBMISSION",
        };
        ApiError::bad_request(code, error.to_string())
    })
}

/// Every check of a plan against its pool and the configs in force
/// (`resources::check_resources`, the one place submit, validation,
/// resubmit and restart share); a failure is recorded like any other
/// validation failure. Validation runs the same checks, so it passes
/// exactly what a submit would accept. Also the warnings they give.
fn checked_plan(
    state: &AppState,
    (pool, priority, user): (&str, Priority, &str),
    plan: Result<WorkflowPlan, String>,
    extras: &WorkflowExtras,
) -> Result<(Result<WorkflowPlan, String>, Vec<String>), ApiError> {
    Ok(match plan {
        Ok(plan) => {
            let view = state.node.read_local()?;
            let checked = gantry_storage::admission::check_credentials(&view, user, &plan)
                .and_then(|()| {
                    super::resources::check_resources(&view, pool, (&plan, extras), priority)
                });
            match checked {
                Ok(warnings) => (Ok(plan), warnings),
                Err(error) => (Err(error), Vec::new()),
            }
        }
        Err(error) => (Err(error), Vec::new()),
    })
}

/// OSMO keeps `workflow.pool` for information only: the submit's pool
/// decides. A spec naming another pool says so in the answer.
fn declared_pool_warning(prepared: &Prepared, pool: &str) -> Option<String> {
    prepared
        .declared_pool
        .as_deref()
        .filter(|declared| !declared.is_empty() && *declared != pool)
        .map(|declared| {
            format!(
                "workflow.pool is '{declared}', but the workflow runs in pool '{pool}' (the pool it is submitted to, as OSMO)"
            )
        })
}

/// Proposes the submission and answers as OSMO's `SubmitResponse`. With
/// labels it needs a command kind that members of an older build lack:
/// until every member understands it, 503 naming those behind (see
/// `gantry_raft`'s version gating).
async fn commit_submission(
    state: &AppState,
    (caller, request_key): (&Caller, &RequestKey),
    submission: Submission,
    (labels, extras): (Labels, WorkflowExtras),
    warnings: Vec<String>,
) -> Result<Json<Value>, ApiError> {
    let packed = PackedSubmission::pack(&submission)?;
    let now = now_ms();
    // Without labels or extras, the kind every member understands: a submit
    // is never refused for a rolling upgrade that is still under way.
    let outcome = if !extras.is_empty() && submission.plan.is_ok() {
        let command = Command::SubmitWorkflowWithExtras {
            now,
            packed,
            labels,
            extras: extras.to_text(),
        };
        let feature = extras.feature_names();
        propose_gated(state, &feature, request_key.wrap(caller, now, command)).await?
    } else if labels.is_empty() {
        let command = Command::SubmitPackedWorkflow { now, packed };
        propose(state, request_key.wrap(caller, now, command)).await?
    } else {
        let command = Command::SubmitWorkflowWithLabels {
            now,
            packed,
            labels,
        };
        propose_gated(
            state,
            "workflow labels",
            request_key.wrap(caller, now, command),
        )
        .await?
    };
    match outcome {
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

/// Whether `pool` is in maintenance (OSMO: only admins may submit then).
fn pool_in_maintenance(view: &gantry_storage::ReadView, pool: &str) -> Result<bool, ApiError> {
    Ok(view
        .config(ConfigType::Pool, pool)?
        .and_then(|revision| revision.data)
        .and_then(ConfigData::into_pool)
        .is_some_and(|pool| pool_status(&pool, true) == gantry_storage::PoolStatus::Maintenance))
}
