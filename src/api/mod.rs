//! The HTTP API (axum on hyper): OSMO's paths and JSON shapes.
//!
//! Invariants: writes go through the Raft node as commands; reads come from
//! a linearizable read view; a request body larger than
//! [`ApiConfig::body_bytes_max`] is refused with 413 before it is parsed.

pub mod access;
mod agent;
pub mod auth;
mod cluster;
mod configs;
mod error;
mod events;
mod logs;
mod params;
mod resources;
mod tokens;
mod views;
mod workflow;

use crate::control::agent::AgentHub;
use crate::control::logs::Logger;
use crate::spec::SpecLimits;
use axum::http::Method;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::{Json, Router};
use gantry_raft::RaftNode;
use serde_json::json;
use std::sync::Arc;

pub use error::ApiError;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub body_bytes_max: usize,
    /// Public base URL used in links (`overview`, `logs`).
    pub base_url: String,
    pub spec_limits: SpecLimits,
    /// Every route but the probes needs a bearer token.
    pub auth_required: bool,
    /// Operator streams need a client certificate of kind operator (TLS on).
    pub operator_certificate_required: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub node: RaftNode,
    pub logs: Logger,
    /// Operator connections of this node (for routes that talk to operators).
    pub hub: AgentHub,
    /// Init and join for a node that is not a cluster member yet.
    pub membership: Arc<crate::control::membership::Membership>,
    pub config: Arc<ApiConfig>,
    /// Specs being parsed and rendered at once, at most [`SPEC_RENDERS_MAX`].
    pub render_slots: Arc<tokio::sync::Semaphore>,
}

/// Specs parsed and rendered concurrently, at most (each isolated render may
/// hold a child process with up to its memory limit).
pub const SPEC_RENDERS_MAX: usize = 8;

/// Every route with its one method. The access table (`access::RULES`)
/// must name each of them; a unit test checks it.
fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/health", get(health)),
        (Method::GET, "/healthz", get(liveness)),
        (Method::GET, "/readyz", get(ready)),
        (Method::GET, "/api/version", get(version)),
        (Method::GET, "/metrics", get(prometheus_metrics)),
        (Method::GET, "/api/pool", get(workflow::list_pools)),
        (Method::GET, "/api/pool_quota", get(resources::pool_quota)),
        (Method::GET, "/api/resources", get(resources::resources)),
        (
            Method::POST,
            "/api/pool/{pool}/workflow",
            post(workflow::submit),
        ),
        (Method::GET, "/api/workflow", get(workflow::list)),
        (Method::GET, "/api/workflow/{id}", get(workflow::query)),
        (
            Method::POST,
            "/api/workflow/{id}/cancel",
            post(workflow::cancel),
        ),
        (Method::GET, "/api/workflow/{id}/spec", get(workflow::spec)),
        (Method::GET, "/api/workflow/{id}/logs", get(logs::logs)),
        (
            Method::GET,
            "/api/workflow/{id}/error_logs",
            get(logs::error_logs),
        ),
        (
            Method::GET,
            "/api/workflow/{id}/events",
            get(events::events),
        ),
        // A stream for as long as the operator lives: each frame is bounded
        // (`operator::wire::FRAME_BYTES_MAX`), the whole body is not.
        (
            Method::POST,
            "/api/agent/connect",
            post(agent::connect).layer(axum::extract::DefaultBodyLimit::disable()),
        ),
        (Method::GET, "/api/cluster/members", get(cluster::members)),
        (Method::POST, "/api/cluster/leave", post(cluster::leave)),
        (Method::POST, cluster::INIT_PATH, post(cluster::init)),
        (Method::POST, cluster::JOIN_PATH, post(cluster::join)),
        (Method::GET, "/api/cluster/snapshot", get(cluster::snapshot)),
        (Method::GET, "/api/profile/settings", get(tokens::profile)),
        (Method::GET, "/api/auth/access_token", get(tokens::list_own)),
        (
            Method::POST,
            "/api/auth/access_token/{token_name}",
            post(tokens::create_own),
        ),
        (
            Method::DELETE,
            "/api/auth/access_token/{token_name}",
            delete(tokens::delete_own),
        ),
        (
            Method::GET,
            "/api/auth/user/{user_id}/access_token",
            get(tokens::list_for_user),
        ),
        (
            Method::POST,
            "/api/auth/user/{user_id}/access_token/{token_name}",
            post(tokens::create_for_user),
        ),
        (
            Method::DELETE,
            "/api/auth/user/{user_id}/access_token/{token_name}",
            delete(tokens::delete_for_user),
        ),
        (
            Method::GET,
            "/api/configs/service",
            get(configs::get_service),
        ),
        (
            Method::PUT,
            "/api/configs/service",
            put(configs::put_service),
        ),
        (
            Method::PATCH,
            "/api/configs/service",
            patch(configs::patch_service),
        ),
        (
            Method::GET,
            "/api/configs/workflow",
            get(configs::get_workflow),
        ),
        (
            Method::PUT,
            "/api/configs/workflow",
            put(configs::put_workflow),
        ),
        (
            Method::PATCH,
            "/api/configs/workflow",
            patch(configs::patch_workflow),
        ),
        (
            Method::GET,
            "/api/configs/backend",
            get(configs::list_backends),
        ),
        (
            Method::GET,
            "/api/configs/backend/{name}",
            get(configs::get_backend),
        ),
        (
            Method::POST,
            "/api/configs/backend/{name}",
            post(configs::post_backend),
        ),
        (
            Method::DELETE,
            "/api/configs/backend/{name}",
            delete(configs::delete_backend),
        ),
        (Method::GET, "/api/configs/pool", get(configs::list_pools)),
        (
            Method::GET,
            "/api/configs/pool/{name}",
            get(configs::get_pool),
        ),
        (
            Method::PUT,
            "/api/configs/pool/{name}",
            put(configs::put_pool),
        ),
        (
            Method::DELETE,
            "/api/configs/pool/{name}",
            delete(configs::delete_pool),
        ),
        (
            Method::GET,
            "/api/configs/pod_template",
            get(configs::list_pod_templates),
        ),
        (
            Method::GET,
            "/api/configs/pod_template/{name}",
            get(configs::get_pod_template),
        ),
        (
            Method::PUT,
            "/api/configs/pod_template/{name}",
            put(configs::put_pod_template),
        ),
        (
            Method::DELETE,
            "/api/configs/pod_template/{name}",
            delete(configs::delete_pod_template),
        ),
        (
            Method::GET,
            "/api/configs/resource_validation",
            get(configs::list_resource_validations),
        ),
        (
            Method::GET,
            "/api/configs/resource_validation/{name}",
            get(configs::get_resource_validation),
        ),
        (
            Method::PUT,
            "/api/configs/resource_validation/{name}",
            put(configs::put_resource_validation),
        ),
        (
            Method::DELETE,
            "/api/configs/resource_validation/{name}",
            delete(configs::delete_resource_validation),
        ),
        (Method::GET, "/api/configs/role", get(configs::list_roles)),
        (
            Method::GET,
            "/api/configs/role/{name}",
            get(configs::get_role),
        ),
        (
            Method::PUT,
            "/api/configs/role/{name}",
            put(configs::put_role),
        ),
        (
            Method::DELETE,
            "/api/configs/role/{name}",
            delete(configs::delete_role),
        ),
        (Method::GET, "/api/configs/history", get(configs::history)),
        (
            Method::POST,
            "/api/configs/history/rollback",
            post(configs::rollback),
        ),
    ]
}

/// `(method, path)` of every route, for the access-table check.
#[cfg(test)]
pub(crate) fn route_list() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::http::record))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "OK"}))
}

/// Liveness: the process is up and its Raft core still runs. After a fatal
/// storage error (a full disk) openraft stops for good; answering 503 lets a
/// supervisor restart the node, which recovers from its log.
async fn liveness(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state.node.stopped_reason() {
        None => Ok(Json(json!({"status": "OK"}))),
        Some(reason) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            format!("the Raft core stopped and needs a restart: {reason}"),
        )),
    }
}

/// Ready: a member of a cluster with a leader, applied up to what the
/// leader has committed (a linearizable read succeeds).
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(READY_CHECK_MAX, state.node.read()).await {
        Ok(Ok(_)) => Ok(Json(json!({"status": "READY"}))),
        Ok(Err(error)) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            format!("not ready: {error}"),
        )),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            "not ready: no leader confirmed this node's state in time",
        )),
    }
}

/// Prometheus text format: everything recorded, with the state gauges
/// computed from this replica's applied state. Open (no token) for scrapers.
async fn prometheus_metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if let Err(error) = crate::metrics::state::refresh(&state.node, crate::control::now_ms()).await
    {
        // The recorded metrics are still worth serving.
        tracing::warn!(%error, "metrics: could not read the state gauges");
    }
    let text = crate::metrics::render().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            "metrics are not recorded in this process",
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Longest a readiness probe waits for the read-index check.
const READY_CHECK_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// `major.minor.revision` from the package version, and the build's git hash if known.
async fn version() -> Json<serde_json::Value> {
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    Json(json!({
        "major": parts.next().unwrap_or("0"),
        "minor": parts.next().unwrap_or("0"),
        "revision": parts.next().unwrap_or("0"),
        "hash": option_env!("GANTRY_GIT_HASH").unwrap_or("unknown"),
    }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such API path: {}", uri.path()))
}
