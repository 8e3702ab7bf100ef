//! Bearer-token authentication for the API.
//!
//! Invariants: only the SHA-256 of a token's secret is ever stored or
//! compared; with auth on, every route but the health probes, the version
//! and `/metrics` needs a valid, unexpired token (init and join take the
//! node's one-time join token instead while it belongs to no cluster, and
//! nothing else); the caller's identity
//! reaches handlers as a [`Caller`] extension, from the token and never from
//! a client-supplied header — except with auth off (`gantry dev` on
//! loopback), where OSMO's `x-osmo-user` header names the user (as OSMO's
//! CLI sends it after `osmo login --method dev`); with auth on that header
//! is ignored.

use super::error::ApiError;
use super::names;
use super::policy;
use super::AppState;
use crate::clock::now_ms;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use gantry_storage::config::ServiceConfig;
use gantry_storage::{Command, Policy, ReadView, UserWrite};
use std::sync::Arc;

/// Who is calling, as established by the token, and what their roles allow.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: String,
    /// The token's name (`None` with auth off).
    pub token: Option<String>,
    /// Role names as normalized (`osmo-admin` → `admin`).
    pub roles: Vec<String>,
    /// Policies of all roles together, read when the request arrived.
    pub policies: Vec<Policy>,
    /// Auth is off (`gantry dev` on loopback): everything is allowed.
    pub unrestricted: bool,
}

impl Caller {
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        self.unrestricted || policy::allows(&self.policies, &self.user, action, resource)
    }

    pub fn is_admin(&self) -> bool {
        self.unrestricted || self.roles.iter().any(|role| role == policy::ADMIN_ROLE)
    }

    /// `token 'ci' of user 'ann'` for messages.
    pub fn describe(&self) -> String {
        match &self.token {
            Some(token) => format!("token '{token}' of user '{}'", self.user),
            None => format!("user '{}'", self.user),
        }
    }
}

fn credential_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "CREDENTIAL", message)
}

/// OSMO's header naming the user when there is no authentication.
pub const OSMO_USER_HEADER: &str = "x-osmo-user";

/// The user a request names in [`OSMO_USER_HEADER`] (only consulted with
/// auth off): `anonymous` when absent or blank; an error naming the header
/// when it is not a name of `names::NAME_CHARS`.
fn header_user(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(OSMO_USER_HEADER) else {
        return Ok(ANONYMOUS.to_string());
    };
    let user = value.to_str().map(str::trim).unwrap_or("\u{fffd}");
    if user.is_empty() {
        return Ok(ANONYMOUS.to_string());
    }
    names::check_name(OSMO_USER_HEADER, user)?;
    Ok(user.to_string())
}

/// The user of a request that names none.
pub const ANONYMOUS: &str = "anonymous";

/// The paths that may answer without a token, from the route table (such
/// routes have no path parameters, so a path names one route).
#[derive(Debug, Default)]
pub struct TokenlessPaths {
    /// Always (`Access::Open`).
    pub open: Vec<&'static str>,
    /// While this node belongs to no cluster (`Access::ClusterSetup`).
    pub cluster_setup: Vec<&'static str>,
}

/// The secret of the request's `Authorization: Bearer` header.
fn bearer_secret(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            credential_error(
                "this server requires a token: send `Authorization: Bearer <token>` (GANTRY_TOKEN)",
            )
        })?
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| credential_error("the Authorization header must be `Bearer <token>`"))
}

fn join_token_error() -> ApiError {
    credential_error(
        "this node belongs to no cluster yet: `cluster init` and `cluster join` need its one-time join token \
         (printed when it started, and in <data-dir>/join-token on it): --join-token-file FILE",
    )
}

pub async fn authenticate(
    State((state, tokenless)): State<(AppState, Arc<TokenlessPaths>)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    // A node that belongs to no cluster holds no tokens (they are replicated
    // state): it takes init and join with the one-time join token it
    // printed at start instead, and nothing else.
    let setting_up = tokenless.cluster_setup.contains(&path) && !state.membership.is_member();
    if setting_up && state.config.auth_required {
        let secret = bearer_secret(request.headers()).map_err(|_| join_token_error())?;
        if !state.membership.join_token_matches(secret) {
            return Err(join_token_error());
        }
    }
    let open = tokenless.open.contains(&path);
    let caller = if !state.config.auth_required || open || setting_up {
        // With auth on, a header never names the caller (only a token
        // does); the open routes (probes, version) need no user at all.
        let user = if state.config.auth_required || open {
            ANONYMOUS.to_string()
        } else {
            header_user(request.headers())?
        };
        Caller {
            user,
            token: None,
            roles: Vec::new(),
            policies: Vec::new(),
            // A node outside any cluster has nothing to protect yet.
            unrestricted: !state.config.auth_required || setting_up,
        }
    } else {
        let secret = bearer_secret(request.headers())?;
        let issuer = super::jwt::looks_like_jwt(secret)
            .then(|| super::idp::unverified_issuer(secret))
            .flatten();
        match issuer {
            Some(issuer) if issuer != super::jwt::ISSUER => {
                let secret = secret.to_string();
                idp_caller(&state, &issuer, &secret).await?
            }
            _ => token_caller(&state, secret)?,
        }
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The caller an access token, or a Gantry JWT made from one, names.
fn token_caller(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
    let view = state.node.read_local()?;
    let token = if super::jwt::looks_like_jwt(secret) {
        let (token, issued_at_ms) = super::jwt::verify(&view, secret)?;
        check_not_revoked(&view, &token.user, issued_at_ms)?;
        token
    } else {
        view.token_by_hash(&crate::access_token::hash_token(secret))?
            .ok_or_else(|| credential_error("Token is not valid"))?
    };
    if token.expires.is_some_and(|expires| expires <= now_ms()) {
        return Err(credential_error(format!(
            "Token is expired: token '{}' expired",
            token.name
        )));
    }
    with_roles(&view, token.user, Some(token.name), &token.roles)
}

/// Refuses a sign-in issued before the user's sessions were revoked.
fn check_not_revoked(view: &ReadView, user: &str, issued_at_ms: i64) -> Result<(), ApiError> {
    let revoked_at = view
        .user(user)?
        .and_then(|record| record.sessions_valid_from);
    match revoked_at {
        Some(at) if issued_at_ms < at => Err(credential_error(format!(
            "Token is revoked: the sessions of user '{user}' were revoked after it was issued; sign in again"
        ))),
        _ => Ok(()),
    }
}

/// The caller an ID token of the SERVICE config's identity provider names,
/// with the roles every signed-in user holds, those given to the user and
/// those its IdP groups bring. A user seen for the first time is recorded
/// (in the background: the request does not wait for it).
async fn idp_caller(state: &AppState, issuer: &str, token: &str) -> Result<Caller, ApiError> {
    let auth = ServiceConfig::in_force(&state.node.read_local()?).service_auth;
    let Some(idp) = auth.idp.as_ref() else {
        return Err(credential_error(
            "Token is not valid: wrong issuer (this server takes no ID tokens: no identity provider in the SERVICE config's service_auth.idp)",
        ));
    };
    if issuer != idp.issuer {
        return Err(credential_error("Token is not valid: wrong issuer"));
    }
    let identity = state.idp.verify(idp, token).await?;
    let view = state.node.read_local()?;
    check_not_revoked(&view, &identity.user, identity.issued_at_ms)?;
    let record = view.user(&identity.user)?;
    let mut roles = auth.user_roles.clone();
    if let Some(record) = &record {
        roles.extend(record.roles.iter().map(|grant| grant.role.clone()));
    }
    for group in &identity.groups {
        if let Some(granted) = idp.group_roles.get(group) {
            roles.extend(granted.iter().cloned());
        }
    }
    if record.is_none() {
        first_sign_in(state, &identity.user);
    }
    with_roles(&view, identity.user, None, &roles)
}

/// Records a user seen for the first time (at most one proposal in flight
/// per user on this member).
fn first_sign_in(state: &AppState, user: &str) {
    if !state.idp.begin_first_sign_in(user) {
        return;
    }
    let state = state.clone();
    let user = user.to_string();
    tokio::spawn(async move {
        let command = Command::PutUser {
            now: now_ms(),
            user: user.clone(),
            by: IDP_CREATOR.to_string(),
            roles: Vec::new(),
            mode: UserWrite::Ensure,
        };
        if let Err(error) = state.node.propose(command).await {
            tracing::warn!(%user, %error, "recording a user's first sign-in");
        }
        state.idp.end_first_sign_in(&user);
    });
}

/// Who created a user recorded at its first sign-in.
pub const IDP_CREATOR: &str = "idp";

/// A caller holding `role_names` (normalized; a role that no longer exists
/// grants nothing), each once.
fn with_roles(
    view: &ReadView,
    user: String,
    token: Option<String>,
    role_names: &[String],
) -> Result<Caller, ApiError> {
    let mut roles: Vec<String> = Vec::new();
    let mut policies = Vec::new();
    for role in role_names {
        let role = policy::normalize_role(role);
        if roles.contains(&role) {
            continue;
        }
        if let Some(found) = policy::role_policies(view, &role)? {
            policies.extend(found);
        }
        roles.push(role);
    }
    Ok(Caller {
        user,
        token,
        roles,
        policies,
        unrestricted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn named(value: Option<&[u8]>) -> Result<String, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(OSMO_USER_HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        header_user(&headers)
    }

    #[test]
    fn the_osmo_user_header_names_the_user() {
        assert_eq!(named(Some(b"alice")).unwrap(), "alice");
        assert_eq!(
            named(Some(b" alice@example.com ")).unwrap(),
            "alice@example.com"
        );
        assert_eq!(named(None).unwrap(), ANONYMOUS);
        assert_eq!(named(Some(b"  ")).unwrap(), ANONYMOUS);
        assert!(named(Some("zoë".as_bytes())).is_err());
        assert!(named(Some(b"*")).is_err());
        assert!(named(Some(b"alice smith")).is_err());
        assert!(named(Some("a".repeat(129).as_bytes())).is_err());
    }
}
