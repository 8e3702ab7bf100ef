//! Authorization: what a route's access rule means ([`Access`], declared
//! with each route in `routes`), and the middleware that checks the
//! caller's policies (`policy`) against it.
//!
//! Invariants: every route carries its rule (the route table cannot declare
//! one without); an unrestricted caller (auth off, or a node setting up its
//! cluster) passes every rule; a workflow route on an unknown workflow
//! passes here and answers 404 in its handler.

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use axum::extract::{RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// Who may call a route (each route in `routes` says).
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// Anyone, without a token (probes, version, metrics, the API document).
    Open,
    /// Without a token while this node belongs to no cluster (it holds no
    /// tokens yet, and nothing to protect); once a member, `cluster:Update`.
    ClusterSetup,
    /// The caller's policies must allow `action` on `target`.
    Rule {
        action: &'static str,
        target: Target,
    },
}

/// What a route acts on.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// A fixed resource, e.g. `*` or `config/pool`.
    Fixed(&'static str),
    /// `prefix` + the path parameter `param`, e.g. `pool/` + `{pool_name}`.
    Param(&'static str, &'static str),
    /// `user/<the caller's user>`.
    Caller,
    /// `pool/<pool of the workflow in path parameter name>`.
    WorkflowPool,
}

impl Access {
    /// The action and target a token must be allowed (`None`: no token needed).
    fn rule(self) -> Option<(&'static str, Target)> {
        match self {
            Access::Open => None,
            Access::ClusterSetup => Some(("cluster:Update", Target::Fixed("*"))),
            Access::Rule { action, target } => Some((action, target)),
        }
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "CREDENTIAL", message)
}

/// The resource a request acts on, or `None` when it cannot be known (an
/// unknown workflow: the handler answers 404).
fn resource_of(
    state: &AppState,
    target: Target,
    params: &RawPathParams,
    caller: &Caller,
) -> Result<Option<String>, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    };
    Ok(match target {
        Target::Fixed(resource) => Some(resource.to_string()),
        Target::Param(prefix, name) => param(name).map(|value| format!("{prefix}{value}")),
        Target::Caller => Some(format!("user/{}", caller.user)),
        Target::WorkflowPool => match param("name") {
            Some(id) => state
                .node
                .read_local()?
                .workflow(&id)?
                .map(|workflow| format!("pool/{}", workflow.pool)),
            None => None,
        },
    })
}

/// Route-level middleware of one route (its `access` from the route
/// table): refuses with 403 what the caller's roles do not allow.
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some((action, target)) = access.rule() else {
        return Ok(next.run(request).await);
    };
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| forbidden("the caller is not known".to_string()))?;
    if let Some(resource) = resource_of(&state, target, &params, &caller)? {
        if !caller.allows(action, &resource) {
            return Err(forbidden(format!(
                "{} is not allowed {action} on {resource} (roles: {})",
                caller.describe(),
                caller.roles.join(", ")
            )));
        }
    }
    Ok(next.run(request).await)
}
