//! Access-token routes (OSMO's `/api/auth/access_token...` and the admin
//! `/api/auth/user/{user}/access_token...`) and the caller's profile.
//!
//! Invariants: a token's secret is returned once, by the call that creates
//! it, and only its hash is stored; a caller who is not an admin can give a
//! new token only roles it holds itself (the route table already limits
//! which user it may create tokens for); names of other users' tokens are
//! neither shown nor deletable; a new token's user and name are checked
//! against `names::NAME_CHARS` (400 naming the field), while listing and
//! deleting compare names only for equality, so tokens of names made
//! before that check can still be cleaned up.

use super::auth::Caller;
use super::error::ApiError;
use super::names::check_name;
use super::params::Params;
use super::policy;
use super::views::time;
use super::workflow::propose;
use super::AppState;
use crate::access_token::{hash_token, new_secret};
use crate::clock::now_ms;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gantry_storage::{Command, Millis, Outcome, TokenRecord};
use serde_json::{json, Value};

/// `YYYY-MM-DD` (midnight UTC, as OSMO) or an RFC 3339 time.
pub fn parse_expiry(text: &str) -> Result<Millis, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|time| time.and_utc().timestamp_millis())
            .ok_or_else(|| format!("expires_at: '{text}' is not a valid date"));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .map_err(|_| format!("expires_at: '{text}' is neither YYYY-MM-DD nor an RFC 3339 time"))
}

fn token_view(token: &TokenRecord) -> Value {
    json!({
        "user_name": token.user,
        "token_name": token.name,
        "expires_at": time(token.expires),
        "description": token.description,
        "roles": token.roles,
        "service": token.service,
        "created_at": time(Some(token.created)),
    })
}

async fn create(
    state: AppState,
    caller: Caller,
    user: String,
    name: String,
    query: Option<String>,
) -> Result<Json<Value>, ApiError> {
    check_name("user", &user)?;
    check_name("token_name", &name)?;
    let params = Params::parse(query.as_deref());
    let now = now_ms();
    let expires = params
        .get("expires_at")
        .filter(|text| !text.trim().is_empty())
        .map(|text| parse_expiry(text.trim()))
        .transpose()
        .map_err(|message| ApiError::bad_request("USAGE", message))?;
    if expires.is_some_and(|expires| expires <= now) {
        return Err(ApiError::bad_request(
            "USAGE",
            "expires_at: must be in the future",
        ));
    }
    let requested: Vec<String> = params
        .list("roles")
        .iter()
        .map(|role| policy::normalize_role(role))
        .collect();
    let roles = if !requested.is_empty() {
        requested
    } else if user == caller.user && !caller.unrestricted {
        caller.roles.clone()
    } else {
        vec![policy::USER_ROLE.to_string()]
    };
    let view = state.node.read().await?;
    for role in &roles {
        if policy::role_policies(&view, role)?.is_none() {
            return Err(ApiError::bad_request(
                "USAGE",
                format!("roles: unknown role '{role}' (built in: admin, user, backend/<backend name>; others come from ROLE configs, bound to a backend as <role>/<backend name> when their policies say ${{backend}})"),
            ));
        }
        if !caller.is_admin() && !caller.roles.contains(role) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "CREDENTIAL",
                format!(
                    "{} cannot give a token role '{role}', which it does not hold",
                    caller.describe()
                ),
            ));
        }
    }
    if let Some(existing) = view.token(&name)? {
        if existing.user != user {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "USER",
                format!("token name '{name}' is taken; choose another name"),
            ));
        }
    }
    let secret = new_secret().map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: generating a token: {error}"),
        )
    })?;
    let token = TokenRecord {
        name,
        service: params.flag("service")?,
        hash: hash_token(&secret),
        user,
        roles,
        description: params.get("description").unwrap_or("").to_string(),
        created: now,
        expires,
    };
    match propose(&state, Command::IssueToken { token }).await? {
        Outcome::Applied => Ok(Json(Value::String(secret))),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}

async fn remove(state: AppState, user: String, name: String) -> Result<Json<Value>, ApiError> {
    let found = state.node.read().await?.token(&name)?;
    if found.is_none_or(|token| token.user != user) {
        return Err(ApiError::not_found(format!(
            "user '{user}' has no token '{name}'"
        )));
    }
    match propose(&state, Command::RevokeToken { name: name.clone() }).await? {
        Outcome::Applied => Ok(Json(json!({ "token_name": name, "deleted": true }))),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}

/// Tokens of `user`, or every service token with `service=true` (admins).
async fn list(
    state: AppState,
    caller: &Caller,
    user: &str,
    query: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let services = params.flag("service")?;
    if services && !caller.allows("token:List", "user/*") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CREDENTIAL",
            format!(
                "{} is not allowed token:List on user/* (needed for service tokens)",
                caller.describe()
            ),
        ));
    }
    let tokens: Vec<Value> = state
        .node
        .read()
        .await?
        .tokens()?
        .iter()
        .filter(|token| {
            if services {
                token.service
            } else {
                token.user == user
            }
        })
        .map(token_view)
        .collect();
    Ok(Json(Value::Array(tokens)))
}

pub async fn create_own(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let user = caller.user.clone();
    create(state, caller, user, name, query).await
}

pub async fn create_for_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((user, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    create(state, caller, user, name, query).await
}

pub async fn delete_own(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    remove(state, caller.user, name).await
}

pub async fn delete_for_user(
    State(state): State<AppState>,
    Path((user, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    remove(state, user, name).await
}

pub async fn list_own(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let user = caller.user.clone();
    list(state, &caller, &user, query).await
}

pub async fn list_for_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    list(state, &caller, &user, query).await
}

/// The pools `caller` may submit to, by name.
fn submittable_pools(
    view: &gantry_storage::ReadView,
    caller: &Caller,
) -> Result<Vec<String>, ApiError> {
    Ok(view
        .pools()?
        .into_iter()
        .map(|pool| pool.name)
        .filter(|pool| caller.allows("workflow:Create", &format!("pool/{pool}")))
        .collect())
}

/// `GET /api/profile/settings`, OSMO's `ProfileResponse`: who the caller
/// is (`profile.username`), its saved preferences (the default pool: the
/// one it saved while it may still submit there, else the first it may
/// submit to; notifications: off unless saved, and Gantry sends none), its
/// roles, the pools it may submit to, and the token it called with
/// (`null` without one).
pub async fn profile(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let view = state.node.read().await?;
    let pools = submittable_pools(&view, &caller)?;
    let saved = view.user_profile(&caller.user)?;
    let pool = saved
        .pool
        .filter(|pool| pools.contains(pool))
        .or_else(|| pools.first().cloned());
    let token = match &caller.token {
        Some(name) => {
            let expires = view.token(name)?.and_then(|token| token.expires);
            json!({"name": name, "expires_at": time(expires)})
        }
        None => Value::Null,
    };
    Ok(Json(json!({
        "profile": {
            "username": caller.user,
            "email_notification": saved.email_notification.unwrap_or(false),
            "slack_notification": saved.slack_notification.unwrap_or(false),
            "pool": pool,
        },
        "roles": caller.roles,
        "pools": pools,
        "token": token,
    })))
}

/// The largest body of a profile update.
const PROFILE_BODY_BYTES_MAX: usize = 16 * 1024;

/// `POST /api/profile/settings` (OSMO's `UserProfile`): the fields given
/// are saved over the caller's profile. A pool must be one the caller may
/// submit to; notifications can only be off (Gantry sends none, so turning
/// them on would be accepted and ignored); the user name is the caller's.
pub async fn set_profile(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    // Read as every other route reads a body, so bad input gets OSMO's
    // error shape rather than the framework's.
    let bytes = super::workflow::read_body(body, PROFILE_BODY_BYTES_MAX).await?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request("USAGE", format!("the request body is not JSON: {error}"))
    })?;
    let params = Params::parse(query.as_deref());
    if params.flag("set_default_backend")? {
        return Err(ApiError::bad_request(
            "USAGE",
            "set_default_backend: Gantry has no default backend; a profile's pool decides where a submit goes",
        ));
    }
    let fields = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("USAGE", "the body must be a UserProfile object"))?;
    let view = state.node.read().await?;
    let mut profile = view.user_profile(&caller.user)?;
    for (field, value) in fields {
        match (field.as_str(), value) {
            (_, Value::Null) => {}
            ("username", Value::String(name)) if *name == caller.user => {}
            ("username", _) => {
                return Err(ApiError::bad_request(
                    "USAGE",
                    format!("username: a profile is its caller's ({}); it cannot name another user", caller.user),
                ))
            }
            ("pool", Value::String(pool)) => {
                if !submittable_pools(&view, &caller)?.contains(pool) {
                    return Err(ApiError::bad_request(
                        "USAGE",
                        format!("pool: '{pool}' is not a pool {} may submit to", caller.describe()),
                    ));
                }
                profile.pool = Some(pool.clone());
            }
            ("email_notification" | "slack_notification", Value::Bool(true)) => {
                return Err(ApiError::bad_request(
                    "USAGE",
                    format!("{field}: Gantry sends no notifications, so they cannot be turned on"),
                ))
            }
            ("email_notification", Value::Bool(false)) => profile.email_notification = Some(false),
            ("slack_notification", Value::Bool(false)) => profile.slack_notification = Some(false),
            ("pool" | "email_notification" | "slack_notification", _) => {
                return Err(ApiError::bad_request(
                    "USAGE",
                    format!("{field}: {value} is not a {}", if field == "pool" { "pool name" } else { "boolean" }),
                ))
            }
            (other, _) => {
                return Err(ApiError::bad_request(
                    "USAGE",
                    format!("{other}: not a profile field (pool, email_notification, slack_notification, username)"),
                ))
            }
        }
    }
    drop(view);
    let command = Command::SetUserProfile {
        user: caller.user.clone(),
        profile: profile.to_text(),
    };
    match super::workflow::propose_gated(&state, "saved profiles", command).await? {
        Outcome::Applied => Ok(Json(Value::Null)),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}
