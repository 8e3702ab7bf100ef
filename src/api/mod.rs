//! The HTTP API (axum on hyper): OSMO's paths and JSON shapes.
//!
//! Invariants: writes go through the Raft node as commands; reads come from
//! a linearizable read view; a request body larger than
//! [`ApiConfig::body_bytes_max`] is refused with 413 before it is parsed.

pub mod auth;
mod cluster;
mod error;
mod logs;
mod params;
mod views;
mod workflow;

use crate::control::agent::AgentHub;
use crate::control::logs::LogStore;
use crate::spec::SpecLimits;
use axum::routing::{get, post};
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
}

#[derive(Clone)]
pub struct AppState {
    pub node: RaftNode,
    pub logs: LogStore,
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/healthz", get(liveness))
        .route("/readyz", get(ready))
        .route("/api/version", get(version))
        .route("/api/pool", get(workflow::list_pools))
        .route("/api/pool/{pool}/workflow", post(workflow::submit))
        .route("/api/workflow", get(workflow::list))
        .route("/api/workflow/{id}", get(workflow::query))
        .route("/api/workflow/{id}/cancel", post(workflow::cancel))
        .route("/api/workflow/{id}/spec", get(workflow::spec))
        .route("/api/workflow/{id}/logs", get(logs::logs))
        .route("/api/cluster/members", get(cluster::members))
        .route("/api/cluster/leave", post(cluster::leave))
        .route(cluster::INIT_PATH, post(cluster::init))
        .route(cluster::JOIN_PATH, post(cluster::join))
        .route("/api/cluster/snapshot", get(cluster::snapshot))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
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
