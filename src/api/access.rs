//! Authorization: roles, their Allow/Deny policies, and the table that maps
//! every API route to the action it performs on which resource.
//!
//! Invariants:
//! - Every route is in [`RULES`]; a route without a rule is refused (fail
//!   closed), and a unit test checks the table against the router.
//! - Deny beats Allow; no matching Allow means refused.
//! - `admin` (also spelled `osmo-admin`) allows everything and cannot be
//!   redefined; `user` and `backend` are built in but a ROLE config of the
//!   same name replaces them; other role names come from ROLE configs only.
//! - A policy resource may say `${user}`: it stands for the caller's user,
//!   so one policy lets every user manage only their own tokens.

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use gantry_storage::{ConfigData, ConfigType, Policy, PolicyEffect, ReadView};

pub const ADMIN_ROLE: &str = "admin";
pub const USER_ROLE: &str = "user";
pub const BACKEND_ROLE: &str = "backend";

/// OSMO's role names map onto Gantry's: `osmo-admin` is `admin`, and so on.
pub fn normalize_role(name: &str) -> String {
    let name = name.trim();
    match name.strip_prefix("osmo-") {
        Some(rest @ (ADMIN_ROLE | USER_ROLE | BACKEND_ROLE)) => rest.to_string(),
        _ => name.to_string(),
    }
}

fn policy(effect: PolicyEffect, actions: &[&str], resources: &[&str]) -> Policy {
    Policy {
        effect,
        actions: actions.iter().map(|a| a.to_string()).collect(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
    }
}

/// The built-in definition of `role`, if it is one.
pub fn builtin_policies(role: &str) -> Option<Vec<Policy>> {
    use PolicyEffect::Allow;
    match role {
        ADMIN_ROLE => Some(vec![policy(Allow, &["*"], &["*"])]),
        USER_ROLE => Some(vec![
            policy(
                Allow,
                &[
                    "workflow:List",
                    "workflow:Read",
                    "pool:List",
                    "resources:Read",
                    "profile:Read",
                ],
                &["*"],
            ),
            policy(Allow, &["workflow:*"], &["pool/default"]),
            policy(Allow, &["token:*"], &["user/${user}"]),
        ]),
        BACKEND_ROLE => Some(vec![
            policy(
                Allow,
                &[
                    "backend:Connect",
                    "config:Read",
                    "pool:List",
                    "profile:Read",
                ],
                &["*"],
            ),
            policy(Allow, &["token:List"], &["user/${user}"]),
        ]),
        _ => None,
    }
}

/// The policies of `role` as configured now; `None` for an unknown role.
pub fn role_policies(view: &ReadView, role: &str) -> Result<Option<Vec<Policy>>, ApiError> {
    let role = normalize_role(role);
    if role == ADMIN_ROLE {
        return Ok(builtin_policies(ADMIN_ROLE));
    }
    if let Some(config) = view.config(ConfigType::Role, &role)? {
        if let Some(ConfigData::Role(config)) = config.data {
            return Ok(Some(config.policies));
        }
    }
    Ok(builtin_policies(&role))
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether `policies` allow `action` on `resource` for `user` (Deny wins).
pub fn allows(policies: &[Policy], user: &str, action: &str, resource: &str) -> bool {
    let mut allowed = false;
    for policy in policies {
        let action_matches = policy.actions.iter().any(|a| glob_matches(a, action));
        let resource_matches = policy
            .resources
            .iter()
            .any(|r| glob_matches(&r.replace("${user}", user), resource));
        if action_matches && resource_matches {
            match policy.effect {
                PolicyEffect::Deny => return false,
                PolicyEffect::Allow => allowed = true,
            }
        }
    }
    allowed
}

/// What a route acts on.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// No token needed (probes, version).
    Open,
    /// A fixed resource, e.g. `*` or `config/pool`.
    Fixed(&'static str),
    /// `prefix` + the path parameter `param`, e.g. `pool/` + `{pool}`.
    Param(&'static str, &'static str),
    /// `user/<the caller's user>`.
    Caller,
    /// `pool/<pool of the workflow in path parameter id>`.
    WorkflowPool,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub action: &'static str,
    pub target: Target,
}

const fn rule(method: Method, path: &'static str, action: &'static str, target: Target) -> Rule {
    Rule {
        method,
        path,
        action,
        target,
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

/// Every route: the action it performs and on what.
pub const RULES: &[Rule] = &[
    rule(GET, "/health", "system:Health", Target::Open),
    rule(GET, "/healthz", "system:Health", Target::Open),
    rule(GET, "/readyz", "system:Health", Target::Open),
    rule(GET, "/api/version", "system:Version", Target::Open),
    rule(GET, "/metrics", "system:Metrics", Target::Open),
    rule(GET, "/api/pool", "pool:List", Target::Fixed("*")),
    rule(GET, "/api/pool_quota", "pool:List", Target::Fixed("*")),
    rule(GET, "/api/resources", "resources:Read", Target::Fixed("*")),
    rule(
        POST,
        "/api/pool/{pool}/workflow",
        "workflow:Create",
        Target::Param("pool/", "pool"),
    ),
    rule(GET, "/api/workflow", "workflow:List", Target::Fixed("*")),
    rule(
        GET,
        "/api/workflow/{id}",
        "workflow:Read",
        Target::WorkflowPool,
    ),
    rule(
        POST,
        "/api/workflow/{id}/cancel",
        "workflow:Cancel",
        Target::WorkflowPool,
    ),
    rule(
        GET,
        "/api/workflow/{id}/spec",
        "workflow:Read",
        Target::WorkflowPool,
    ),
    rule(
        GET,
        "/api/workflow/{id}/logs",
        "workflow:Read",
        Target::WorkflowPool,
    ),
    rule(
        GET,
        "/api/workflow/{id}/error_logs",
        "workflow:Read",
        Target::WorkflowPool,
    ),
    rule(
        GET,
        "/api/workflow/{id}/events",
        "workflow:Read",
        Target::WorkflowPool,
    ),
    rule(
        GET,
        "/api/cluster/members",
        "cluster:Read",
        Target::Fixed("*"),
    ),
    rule(
        POST,
        "/api/cluster/leave",
        "cluster:Update",
        Target::Fixed("*"),
    ),
    rule(
        POST,
        "/api/cluster/init",
        "cluster:Update",
        Target::Fixed("*"),
    ),
    rule(
        POST,
        "/api/cluster/join",
        "cluster:Update",
        Target::Fixed("*"),
    ),
    rule(
        POST,
        "/api/agent/connect",
        "backend:Connect",
        Target::Fixed("*"),
    ),
    rule(
        GET,
        "/api/cluster/snapshot",
        "cluster:Update",
        Target::Fixed("*"),
    ),
    rule(
        GET,
        "/api/profile/settings",
        "profile:Read",
        Target::Fixed("*"),
    ),
    rule(GET, "/api/auth/access_token", "token:List", Target::Caller),
    rule(
        POST,
        "/api/auth/access_token/{token_name}",
        "token:Create",
        Target::Caller,
    ),
    rule(
        DELETE,
        "/api/auth/access_token/{token_name}",
        "token:Delete",
        Target::Caller,
    ),
    rule(
        GET,
        "/api/auth/user/{user_id}/access_token",
        "token:List",
        Target::Param("user/", "user_id"),
    ),
    rule(
        POST,
        "/api/auth/user/{user_id}/access_token/{token_name}",
        "token:Create",
        Target::Param("user/", "user_id"),
    ),
    rule(
        DELETE,
        "/api/auth/user/{user_id}/access_token/{token_name}",
        "token:Delete",
        Target::Param("user/", "user_id"),
    ),
    rule(
        GET,
        "/api/configs/service",
        "config:Read",
        Target::Fixed("config/service"),
    ),
    rule(
        PUT,
        "/api/configs/service",
        "config:Update",
        Target::Fixed("config/service"),
    ),
    rule(
        PATCH,
        "/api/configs/service",
        "config:Update",
        Target::Fixed("config/service"),
    ),
    rule(
        GET,
        "/api/configs/workflow",
        "config:Read",
        Target::Fixed("config/workflow"),
    ),
    rule(
        PUT,
        "/api/configs/workflow",
        "config:Update",
        Target::Fixed("config/workflow"),
    ),
    rule(
        PATCH,
        "/api/configs/workflow",
        "config:Update",
        Target::Fixed("config/workflow"),
    ),
    rule(
        GET,
        "/api/configs/backend",
        "config:Read",
        Target::Fixed("config/backend"),
    ),
    rule(
        GET,
        "/api/configs/backend/{name}",
        "config:Read",
        Target::Fixed("config/backend"),
    ),
    rule(
        POST,
        "/api/configs/backend/{name}",
        "config:Update",
        Target::Fixed("config/backend"),
    ),
    rule(
        DELETE,
        "/api/configs/backend/{name}",
        "config:Update",
        Target::Fixed("config/backend"),
    ),
    rule(
        GET,
        "/api/configs/pool",
        "config:Read",
        Target::Fixed("config/pool"),
    ),
    rule(
        GET,
        "/api/configs/pool/{name}",
        "config:Read",
        Target::Fixed("config/pool"),
    ),
    rule(
        PUT,
        "/api/configs/pool/{name}",
        "config:Update",
        Target::Fixed("config/pool"),
    ),
    rule(
        DELETE,
        "/api/configs/pool/{name}",
        "config:Update",
        Target::Fixed("config/pool"),
    ),
    rule(
        GET,
        "/api/configs/pod_template",
        "config:Read",
        Target::Fixed("config/pod_template"),
    ),
    rule(
        GET,
        "/api/configs/pod_template/{name}",
        "config:Read",
        Target::Fixed("config/pod_template"),
    ),
    rule(
        PUT,
        "/api/configs/pod_template/{name}",
        "config:Update",
        Target::Fixed("config/pod_template"),
    ),
    rule(
        DELETE,
        "/api/configs/pod_template/{name}",
        "config:Update",
        Target::Fixed("config/pod_template"),
    ),
    rule(
        GET,
        "/api/configs/resource_validation",
        "config:Read",
        Target::Fixed("config/resource_validation"),
    ),
    rule(
        GET,
        "/api/configs/resource_validation/{name}",
        "config:Read",
        Target::Fixed("config/resource_validation"),
    ),
    rule(
        PUT,
        "/api/configs/resource_validation/{name}",
        "config:Update",
        Target::Fixed("config/resource_validation"),
    ),
    rule(
        DELETE,
        "/api/configs/resource_validation/{name}",
        "config:Update",
        Target::Fixed("config/resource_validation"),
    ),
    rule(
        GET,
        "/api/configs/role",
        "config:Read",
        Target::Fixed("config/role"),
    ),
    rule(
        GET,
        "/api/configs/role/{name}",
        "config:Read",
        Target::Fixed("config/role"),
    ),
    rule(
        PUT,
        "/api/configs/role/{name}",
        "config:Update",
        Target::Fixed("config/role"),
    ),
    rule(
        DELETE,
        "/api/configs/role/{name}",
        "config:Update",
        Target::Fixed("config/role"),
    ),
    rule(
        GET,
        "/api/configs/history",
        "config:Read",
        Target::Fixed("config/*"),
    ),
    rule(
        POST,
        "/api/configs/history/rollback",
        "config:Update",
        Target::Fixed("config/*"),
    ),
];

pub fn find_rule(method: &Method, path: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|rule| rule.method == *method && rule.path == path)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "CREDENTIAL", message)
}

/// The resource a request acts on, or `None` when it cannot be known (an
/// unknown workflow: the handler answers 404).
fn resource_of(
    state: &AppState,
    rule: &Rule,
    params: &RawPathParams,
    caller: &Caller,
) -> Result<Option<String>, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    };
    Ok(match rule.target {
        Target::Open => None,
        Target::Fixed(resource) => Some(resource.to_string()),
        Target::Param(prefix, name) => param(name).map(|value| format!("{prefix}{value}")),
        Target::Caller => Some(format!("user/{}", caller.user)),
        Target::WorkflowPool => match param("id") {
            Some(id) => state
                .node
                .read_local()?
                .workflow(&id)?
                .map(|workflow| format!("pool/{}", workflow.pool)),
            None => None,
        },
    })
}

/// Route-level middleware: refuses with 403 what the caller's roles do not allow.
pub async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = matched.as_ref().map_or("", |m| m.as_str());
    let Some(rule) = find_rule(request.method(), path) else {
        return Err(forbidden(format!(
            "no access rule covers {} {path}; refused",
            request.method()
        )));
    };
    if matches!(rule.target, Target::Open) {
        return Ok(next.run(request).await);
    }
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| forbidden("the caller is not known".to_string()))?;
    if let Some(resource) = resource_of(&state, rule, &params, &caller)? {
        if !caller.allows(rule.action, &resource) {
            return Err(forbidden(format!(
                "{} is not allowed {} on {resource} (roles: {})",
                caller.describe(),
                rule.action,
                caller.roles.join(", ")
            )));
        }
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_exactly_one_rule_and_every_rule_a_route() {
        let routes = super::super::route_list();
        for (method, path) in &routes {
            let matching = RULES
                .iter()
                .filter(|rule| rule.method == *method && rule.path == *path)
                .count();
            assert_eq!(
                matching, 1,
                "{method} {path} needs exactly one access rule in api::access::RULES"
            );
        }
        for rule in RULES {
            assert!(
                routes
                    .iter()
                    .any(|(method, path)| *method == rule.method && *path == rule.path),
                "rule for {} {} has no route",
                rule.method,
                rule.path
            );
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything/at:all"));
        assert!(glob_matches("workflow:*", "workflow:Create"));
        assert!(!glob_matches("workflow:*", "pool:List"));
        assert!(glob_matches("pool/*", "pool/gpu-h100"));
        assert!(glob_matches("*:Read", "config:Read"));
        assert!(!glob_matches("pool/default", "pool/default2"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn deny_beats_allow_and_user_placeholders_expand() {
        let policies = vec![
            policy(PolicyEffect::Allow, &["workflow:*"], &["pool/*"]),
            policy(PolicyEffect::Deny, &["workflow:Cancel"], &["pool/prod"]),
            policy(PolicyEffect::Allow, &["token:*"], &["user/${user}"]),
        ];
        assert!(allows(&policies, "ann", "workflow:Cancel", "pool/dev"));
        assert!(!allows(&policies, "ann", "workflow:Cancel", "pool/prod"));
        assert!(allows(&policies, "ann", "workflow:Create", "pool/prod"));
        assert!(allows(&policies, "ann", "token:Create", "user/ann"));
        assert!(!allows(&policies, "ann", "token:Create", "user/bob"));
        assert!(!allows(&policies, "ann", "config:Update", "config/pool"));
    }

    #[test]
    fn builtin_roles() {
        let user = builtin_policies(USER_ROLE).unwrap();
        assert!(allows(&user, "u", "workflow:Create", "pool/default"));
        assert!(!allows(&user, "u", "workflow:Create", "pool/gpu"));
        assert!(allows(&user, "u", "workflow:Read", "pool/gpu"));
        assert!(!allows(&user, "u", "config:Update", "config/pool"));
        let backend = builtin_policies(BACKEND_ROLE).unwrap();
        assert!(allows(&backend, "op", "backend:Connect", "*"));
        assert!(!allows(&backend, "op", "workflow:Create", "pool/default"));
        let admin = builtin_policies(ADMIN_ROLE).unwrap();
        assert!(allows(&admin, "root", "config:Update", "config/role"));
        assert_eq!(normalize_role("osmo-backend"), BACKEND_ROLE);
        assert_eq!(normalize_role("osmo-gpu"), "osmo-gpu");
    }
}
