//! The HTTP API (axum on hyper): OSMO's paths and JSON shapes.
//!
//! Invariants: writes go through the Raft node as commands; reads come from
//! a linearizable read view; a request body larger than
//! [`ApiConfig::body_bytes_max`] is refused with 413 before it is parsed.

pub mod access;
mod access_tokens;
mod agent_session;
pub mod auth;
mod cluster;
mod configs;
mod credentials;
mod drain;
mod error;
mod events;
pub mod idp;
mod jwt;
mod names;
mod openapi;
mod operator_stream;
pub mod osmo_router;
mod params;
pub mod plain_listener;
mod policy;
mod port_forward;
mod session_events;
mod session_relay;
pub use session_relay::SessionRelay;
mod request_key;
mod resource_rules;
mod resources;
mod route_table;
mod routes;
mod submit;
mod tasks;
mod users;
mod views;
mod workflow;
mod workflow_logs;

use crate::control::logger::Logger;
use crate::control::operator_hub::OperatorHub;
use crate::spec::SpecLimits;
use access::Access;
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
    pub hub: OperatorHub,
    /// Init and join for a node that is not a cluster member yet.
    pub membership: Arc<crate::control::membership::Membership>,
    pub config: Arc<ApiConfig>,
    /// Specs being parsed and rendered at once, at most [`spec_renders_max`].
    pub render_slots: Arc<tokio::sync::Semaphore>,
    /// The bulk runtime (`crate::bulk`): log followers' streams run there.
    pub bulk: tokio::runtime::Handle,
    /// Sessions OSMO's CLI asked for and has not opened yet (its router
    /// protocol: `osmo_router`).
    pub router_tickets: Arc<osmo_router::RouterTickets>,
    /// How a follower passes sessions on to the leader.
    pub relay: Arc<session_relay::SessionRelay>,
    /// Sessions recorded as workflow events.
    pub session_events: Arc<session_events::SessionEvents>,
    /// The identity provider's keys, for its users' ID tokens.
    pub idp: Arc<idp::IdpKeys>,
}

/// Specs parsed and rendered concurrently, at most (each isolated render may
/// hold a child process with up to its memory limit).
pub const SPEC_RENDERS_MAX: usize = 8;

/// Concurrent renders on this machine: one per CPU, at most
/// [`SPEC_RENDERS_MAX`]. More would only share the same CPUs, so each
/// would come nearer its wall-clock limit, and the server's own work would
/// wait behind them; a submit beyond it waits for a slot without using its
/// time limit.
pub fn spec_renders_max() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, SPEC_RENDERS_MAX)
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    let mut tokenless = auth::TokenlessPaths::default();
    for route in route_table::routes() {
        match route.access {
            Access::Open => tokenless.open.push(route.path),
            Access::ClusterSetup => tokenless.cluster_setup.push(route.path),
            Access::Rule { .. } => {}
        }
        let authorize =
            axum::middleware::from_fn_with_state((state.clone(), route.access), access::authorize);
        let mut handler = route.handler.route_layer(authorize);
        if route.relayed {
            // Outside `authorize`: the leader decides, on its own state.
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                session_relay::to_leader,
            ));
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), Arc::new(tokenless)),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::http::record))
        // Outermost, so refusals of every layer reach the caller.
        .layer(axum::middleware::from_fn_with_state(
            state
                .config
                .body_bytes_max
                .saturating_mul(drain::DRAIN_LIMITS),
            drain::drain_unread,
        ))
        .with_state(state)
}

/// `GET /api/openapi.json`: Gantry's OpenAPI document, generated from the
/// route table.
async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document(&route_table::routes()))
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
    refuse_corrupt_state(&state)?;
    match state.node.stopped_reason() {
        None => Ok(Json(json!({"status": "OK"}))),
        Some(reason) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            format!("the Raft core stopped and needs a restart: {reason}"),
        )),
    }
}

/// 503 once this member's state met a corrupt row: it stays unhealthy (and
/// unready) until it is rebuilt, however well its Raft core runs.
fn refuse_corrupt_state(state: &AppState) -> Result<(), ApiError> {
    match state.node.state_corruption() {
        None => Ok(()),
        Some(corruption) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            format!(
                "this member's state is corrupt and must be rebuilt from a healthy member: \
                 {corruption}"
            ),
        )),
    }
}

/// Ready: a member of a cluster with a leader, applied up to what the
/// leader has committed (a linearizable read succeeds), whose object store
/// a majority of the members share (`control::store_probe`).
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    refuse_corrupt_state(&state)?;
    match tokio::time::timeout(READY_CHECK_MAX, state.node.read()).await {
        Ok(Ok(_)) => match state
            .membership
            .store_probes()
            .and_then(|probes| probes.problem(&state.node))
        {
            None => Ok(Json(json!({"status": "READY"}))),
            Some(problem) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "SERVER",
                format!("not ready: {problem}"),
            )),
        },
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
    if let Err(error) = crate::metrics::state::refresh(&state.node, crate::clock::now_ms()).await {
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
