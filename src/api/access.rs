//! Authorization: what a route's access rule means ([`Access`], declared
//! with each route in `routes`), and the middleware that checks the
//! caller's policies (`policy`) against it.
//!
//! Invariants: every route carries its rule (the route table cannot declare
//! one without); an unrestricted caller (auth off, or a node setting up its
//! cluster with its join token) passes every rule. Authorization fails
//! closed: a rule is checked against the resource or the request is
//! refused. A workflow this replica does not hold yet (a lagging follower)
//! is looked up again with a linearizable read, and one that does not exist
//! then answers 404 here, so no handler runs unchecked (a workflow's pool
//! never changes, so a local hit is authoritative).

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
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
    /// With this node's one-time join token while it belongs to no cluster
    /// (it holds no tokens yet); once a member, `cluster:Update`.
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
    /// `pool/<pool of the workflow in path parameter name>` (its ID or uuid).
    WorkflowPool,
    /// `prefix` + the required query parameter `param`, e.g. `backend/` +
    /// `?backend=`.
    Query(&'static str, &'static str),
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

/// The resource a request acts on. Never skipped: a parameter the rule
/// needs that is missing is refused, and an unknown workflow is 404.
async fn resource_of(
    state: &AppState,
    target: Target,
    params: &RawPathParams,
    query: Option<&str>,
    caller: &Caller,
) -> Result<String, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
            .ok_or_else(|| {
                // The route table's tests keep this from happening.
                forbidden(format!(
                    "the access rule reads path parameter {{{name}}}, which this route lacks"
                ))
            })
    };
    Ok(match target {
        Target::Fixed(resource) => resource.to_string(),
        Target::Param(prefix, name) => format!("{prefix}{}", param(name)?),
        Target::Caller => format!("user/{}", caller.user),
        Target::Query(prefix, name) => {
            let params = Params::parse(query);
            let value = params.get(name).filter(|value| !value.is_empty());
            let value = value.ok_or_else(|| {
                ApiError::bad_request("USAGE", format!("query parameter `{name}` is required"))
            })?;
            format!("{prefix}{value}")
        }
        Target::WorkflowPool => {
            let id = param("name")?;
            // A missing workflow is looked for in the leader's state (as
            // the request asks) before it is denied.
            let workflow = super::workflow::lookup(state, &Params::parse(query), &id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
            format!("pool/{}", workflow.pool)
        }
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
    if caller.unrestricted {
        return Ok(next.run(request).await);
    }
    let resource = resource_of(&state, target, &params, request.uri().query(), &caller).await?;
    if !caller.allows(action, &resource) {
        // Operators' tokens made before backends were named in roles.
        let hint = if action == "backend:Connect" {
            "; an operator's token names the backends it serves in its roles: backend/<name>"
        } else {
            ""
        };
        return Err(forbidden(format!(
            "{} is not allowed {action} on {resource} (roles: {}){hint}",
            caller.describe(),
            caller.roles.join(", ")
        )));
    }
    Ok(next.run(request).await)
}
