//! Users and their roles (OSMO's `/api/auth/user...`, `/api/auth/roles/
//! {role}/users`, `/api/users`), the revocation of a user's sessions, and
//! OSMO's `/api/auth/login` (where a CLI signs in).
//!
//! Invariants: role names are stored normalized (`osmo-admin` is `admin`)
//! and only roles that exist when given (built-in or a ROLE config) can be
//! given; a user name is a Gantry name (`names::NAME_CHARS`); these routes
//! hold no secret, and the login information is public by design (a CLI
//! reads it before it has a token).

use super::error::ApiError;
use super::names::check_name;
use super::params::Params;
use super::policy;
use super::views::time;
use super::workflow::{propose_gated, read_body};
use super::AppState;
use crate::clock::now_ms;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gantry_storage::config::ServiceConfig;
use gantry_storage::{Command, Outcome, ReadView, RoleGrant, UserRecord, UserWrite};
use serde_json::{json, Value};

use super::auth::Caller;

/// The largest request body these routes read.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Most users one bulk assignment names.
const BULK_USERS_MAX: usize = 1000;
/// Largest page of a user listing.
const PAGE_MAX: usize = 1000;

const FEATURE: &str = "user management";

fn usage(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("USAGE", message)
}

fn unexpected(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Rejected(rejection) => ApiError::from_rejection(rejection),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        ),
    }
}

fn user_view(user: &str, record: &UserRecord) -> Value {
    json!({
        "id": user,
        "created_at": time(Some(record.created)),
        "created_by": record.created_by,
    })
}

fn grant_view(grant: &RoleGrant) -> Value {
    json!({
        "role_name": grant.role,
        "assigned_by": grant.assigned_by,
        "assigned_at": time(Some(grant.assigned_at)),
    })
}

async fn body_json(state: &AppState, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(body, BODY_BYTES_MAX.min(state.config.body_bytes_max)).await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| usage(format!("the request body is not JSON: {error}")))
}

/// `role`, normalized, if it names a role that exists now.
fn existing_role(view: &ReadView, field: &str, role: &str) -> Result<String, ApiError> {
    let role = policy::normalize_role(role);
    if policy::role_policies(view, &role)?.is_none() {
        return Err(usage(format!(
            "{field}: unknown role '{role}' (built in: admin, user, backend/<backend name>; others come from ROLE configs)"
        )));
    }
    Ok(role)
}

fn user_of(view: &ReadView, user: &str) -> Result<UserRecord, ApiError> {
    view.user(user)?
        .ok_or_else(|| ApiError::not_found(format!("user '{user}' does not exist")))
}

/// `GET /api/auth/user`: users by name, filtered by a name prefix and by
/// holding any of `roles`, a page at a time (`start_index` from 1).
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let start = params.number("start_index")?.unwrap_or(1).max(1) as usize;
    let count = params
        .number("count")?
        .unwrap_or(100)
        .clamp(1, PAGE_MAX as u64) as usize;
    let prefix = params.get("id_prefix").unwrap_or("");
    let roles: Vec<String> = params
        .list("roles")
        .iter()
        .map(|role| policy::normalize_role(role))
        .collect();
    let users: Vec<(String, UserRecord)> = state
        .node
        .read()
        .await?
        .users()?
        .into_iter()
        .filter(|(name, record)| {
            name.starts_with(prefix)
                && (roles.is_empty()
                    || record.roles.iter().any(|grant| roles.contains(&grant.role)))
        })
        .collect();
    let page: Vec<Value> = users
        .iter()
        .skip(start - 1)
        .take(count)
        .map(|(name, record)| user_view(name, record))
        .collect();
    Ok(Json(json!({
        "total_results": users.len(),
        "start_index": start,
        "items_per_page": count,
        "users": page,
    })))
}

/// `GET /api/users`: every user's name.
pub async fn names(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = state
        .node
        .read()
        .await?
        .users()?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    Ok(Json(json!(names)))
}

/// `POST /api/auth/user` with `{"id", "roles"?}`.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body_json(&state, body).await?;
    let user = body["id"]
        .as_str()
        .ok_or_else(|| usage("id: required, the new user's name"))?
        .to_string();
    check_name("id", &user)?;
    let requested: Vec<String> = match &body["roles"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| usage("roles: must be a list of role names"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(usage("roles: must be a list of role names")),
    };
    if let Some(field) = body.as_object().and_then(|fields| {
        fields
            .keys()
            .find(|key| !matches!(key.as_str(), "id" | "roles"))
    }) {
        return Err(usage(format!(
            "{field}: unknown field (a new user has id and roles)"
        )));
    }
    let roles = {
        let view = state.node.read().await?;
        requested
            .iter()
            .map(|role| existing_role(&view, "roles", role))
            .collect::<Result<Vec<_>, _>>()?
    };
    let command = Command::PutUser {
        now: now_ms(),
        user: user.clone(),
        by: caller.user.clone(),
        roles,
        mode: UserWrite::Create,
    };
    match propose_gated(&state, FEATURE, command).await? {
        Outcome::Applied => {}
        other => return Err(unexpected(other)),
    }
    let view = state.node.read().await?;
    Ok(Json(user_view(&user, &user_of(&view, &user)?)))
}

/// `GET /api/auth/user/{user_id}`: the user with its roles.
pub async fn get_one(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = user_of(&state.node.read().await?, &user)?;
    let mut view = user_view(&user, &record);
    view["roles"] = record.roles.iter().map(grant_view).collect();
    Ok(Json(view))
}

/// `DELETE /api/auth/user/{user_id}`: the user, its tokens, credentials
/// and profile.
pub async fn delete(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match propose_gated(&state, FEATURE, Command::DeleteUser { user: user.clone() }).await? {
        Outcome::Applied => Ok(Json(json!({"id": user, "deleted": true}))),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/auth/user/{user_id}/roles`.
pub async fn roles(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = user_of(&state.node.read().await?, &user)?;
    Ok(Json(json!({
        "user_id": user,
        "roles": record.roles.iter().map(grant_view).collect::<Vec<_>>(),
    })))
}

/// Gives `role` (checked) to existing `users`; the grant of each as stored.
async fn give_role(
    state: &AppState,
    caller: &Caller,
    user: &str,
    role: &str,
) -> Result<RoleGrant, ApiError> {
    let command = Command::PutUser {
        now: now_ms(),
        user: user.to_string(),
        by: caller.user.clone(),
        roles: vec![role.to_string()],
        mode: UserWrite::Existing,
    };
    match propose_gated(state, FEATURE, command).await? {
        Outcome::Applied => {}
        other => return Err(unexpected(other)),
    }
    user_of(&state.node.read().await?, user)?
        .roles
        .into_iter()
        .find(|grant| grant.role == role)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "USER",
                format!("role '{role}' of user '{user}' was removed meanwhile"),
            )
        })
}

/// `POST /api/auth/user/{user_id}/roles` with `{"role_name"}`.
pub async fn assign(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body_json(&state, body).await?;
    let role = body["role_name"]
        .as_str()
        .ok_or_else(|| usage("role_name: required, the role to give"))?;
    let role = existing_role(&state.node.read().await?, "role_name", role)?;
    let grant = give_role(&state, &caller, &user, &role).await?;
    Ok(Json(json!({
        "user_id": user,
        "role_name": grant.role,
        "assigned_by": grant.assigned_by,
        "assigned_at": time(Some(grant.assigned_at)),
    })))
}

/// `DELETE /api/auth/user/{user_id}/roles/{role_name}`.
pub async fn unassign(
    State(state): State<AppState>,
    Path((user, role)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let role = policy::normalize_role(&role);
    let command = Command::RemoveUserRole {
        user: user.clone(),
        role: role.clone(),
    };
    match propose_gated(&state, FEATURE, command).await? {
        Outcome::Applied => Ok(Json(
            json!({"user_id": user, "role_name": role, "removed": true}),
        )),
        other => Err(unexpected(other)),
    }
}

/// `GET /api/auth/roles/{role_name}/users`: who holds the role directly.
pub async fn role_users(
    State(state): State<AppState>,
    Path(role): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let role = policy::normalize_role(&role);
    let users: Vec<Value> = state
        .node
        .read()
        .await?
        .users()?
        .into_iter()
        .filter_map(|(name, record)| {
            record
                .roles
                .into_iter()
                .find(|grant| grant.role == role)
                .map(|grant| {
                    json!({
                        "id": name,
                        "assigned_by": grant.assigned_by,
                        "assigned_at": time(Some(grant.assigned_at)),
                    })
                })
        })
        .collect();
    Ok(Json(json!({"role_name": role, "users": users})))
}

/// `POST /api/auth/roles/{role_name}/users` with `{"user_ids": [...]}`:
/// the role given to each existing user; unknown users are `failed`.
pub async fn bulk_assign(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(role): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body_json(&state, body).await?;
    let users: Vec<String> = body["user_ids"]
        .as_array()
        .ok_or_else(|| usage("user_ids: required, a list of user names"))?
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| usage("user_ids: must be a list of user names"))
        })
        .collect::<Result<_, _>>()?;
    if users.len() > BULK_USERS_MAX {
        return Err(usage(format!(
            "user_ids: at most {BULK_USERS_MAX} users at once, got {}",
            users.len()
        )));
    }
    let role = existing_role(&state.node.read().await?, "role_name", &role)?;
    let (mut assigned, mut already, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for user in users {
        let held = state
            .node
            .read()
            .await?
            .user(&user)?
            .map(|record| record.roles.iter().any(|grant| grant.role == role));
        match held {
            None => failed.push(user),
            Some(true) => already.push(user),
            Some(false) => match give_role(&state, &caller, &user, &role).await {
                Ok(_) => assigned.push(user),
                Err(error) if error.status.is_client_error() => failed.push(user),
                Err(error) => return Err(error),
            },
        }
    }
    Ok(Json(json!({
        "role_name": role,
        "assigned": assigned,
        "already_assigned": already,
        "failed": failed,
    })))
}

/// `POST /api/auth/user/{user_id}/sessions/revoke` (Gantry's): every
/// sign-in of the user issued until now is refused from now on.
pub async fn revoke_sessions(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let command = Command::RevokeUserSessions {
        now,
        user: user.clone(),
    };
    match propose_gated(&state, FEATURE, command).await? {
        Outcome::Applied => {}
        other => return Err(unexpected(other)),
    }
    let record = user_of(&state.node.read().await?, &user)?;
    Ok(Json(json!({
        "user_id": user,
        "sessions_valid_from": time(record.sessions_valid_from),
    })))
}

/// `GET /api/auth/login` (OSMO's `LoginInfo`): where a CLI signs in. The
/// SERVICE config's `service_auth.login_info` wins field by field; the
/// rest comes from the IdP's discovery document; client ids default to the
/// first configured one. Without an IdP every field is null.
pub async fn login_info(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let auth = ServiceConfig::in_force(&state.node.read_local()?).service_auth;
    let mut info = auth.login_info.clone();
    if let Some(idp) = &auth.idp {
        let discovery = state.idp.discovery(idp).await?;
        let client = idp.client_ids.first().cloned();
        info.device_endpoint = info
            .device_endpoint
            .or(discovery.device_authorization_endpoint);
        info.browser_endpoint = info.browser_endpoint.or(discovery.authorization_endpoint);
        info.token_endpoint = info.token_endpoint.or(discovery.token_endpoint);
        info.logout_endpoint = info.logout_endpoint.or(discovery.end_session_endpoint);
        info.device_client_id = info.device_client_id.or_else(|| client.clone());
        info.browser_client_id = info.browser_client_id.or(client);
    }
    Ok(Json(serde_json::to_value(info).unwrap_or(Value::Null)))
}
