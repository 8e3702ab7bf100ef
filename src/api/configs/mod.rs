//! Config routes under `/api/configs/...` (OSMO's paths and bodies):
//! SERVICE, WORKFLOW, BACKEND, POOL, POD_TEMPLATE, RESOURCE_VALIDATION and
//! ROLE; their history, rollback, revision tags and diff. Here: one handler
//! per operation for every config type (the route table mounts them per
//! type) and what the operations share; reads in `read`, changes in
//! `write`, history and rollback in `history`, a revision's tags and
//! removal in `revisions`, two revisions side by side in `diff`. Bodies are
//! parsed by `gantry_storage::config`.
//!
//! Invariants: every change of a config is one command that writes one
//! revision with the caller as its user (tagging or removing an old
//! revision changes the history only); bodies are checked (field paths in
//! messages) before anything is proposed; a config's name in the path wins
//! over one in the body.

mod diff;
mod history;
mod read;
mod revisions;
mod write;

pub use diff::diff;
pub use history::{history, rollback};
pub use revisions::{delete_revision, tag_revision};
pub use write::post_backend;

use super::auth::Caller;
use super::error::ApiError;
use super::workflow::{propose, propose_gated, read_body};
use super::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, MethodRouter};
use axum::{Extension, Json};
use gantry_storage::config::typed;
use gantry_storage::{Command, ConfigMeta, ConfigType, Outcome};
use serde_json::{json, Value};

type Reply = Result<Json<Value>, ApiError>;

// --- The routes of every config type (see `route_table`) ------------------

/// `GET` of a singleton (SERVICE, WORKFLOW).
pub fn read_singleton(config_type: ConfigType) -> MethodRouter<AppState> {
    get(move |State(state): State<AppState>| async move {
        Ok::<_, ApiError>(Json(read::singleton_json(
            &state.node.read().await?,
            config_type,
        )?))
    })
}

/// `POST /api/cluster/key/reseal`: the WORKFLOW config's credentials
/// sealed under the newest cluster key.
pub async fn reseal(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Reply {
    let users = super::credentials::reseal_all(&state).await?;
    let Json(mut reply) = write::reseal_secrets(state, caller).await?;
    if let Some(object) = reply.as_object_mut() {
        object.insert("user_credentials_resealed".into(), users.into());
    }
    Ok(Json(reply))
}

/// `PATCH` of a singleton: the fields given replace the stored ones.
pub fn patch_singleton(config_type: ConfigType) -> MethodRouter<AppState> {
    patch(
        move |State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Body| {
            write::patch_singleton_config(state, caller, config_type, body)
        },
    )
}

/// `PUT` of a config: a new revision (singletons have the name `""`).
pub fn put(config_type: ConfigType) -> MethodRouter<AppState> {
    axum::routing::put(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              name: Option<Path<String>>,
              body: Body| {
            let name = name.map(|Path(name)| name).unwrap_or_default();
            write::put_config(state, caller, config_type, name, body)
        },
    )
}

/// `GET` of every config of a named type.
pub fn list(config_type: ConfigType) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>, RawQuery(query): RawQuery| {
            read::list_named(state, config_type, query)
        },
    )
}

/// `GET` of one config of a named type.
pub fn read(config_type: ConfigType) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>, Path(name): Path<String>| {
            read::get_named(state, config_type, name)
        },
    )
}

/// `DELETE` of one config of a named type: a revision without data.
pub fn delete(config_type: ConfigType) -> MethodRouter<AppState> {
    axum::routing::delete(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              Path(name): Path<String>,
              body: Body| { write::delete_config(state, caller, config_type, name, body) },
    )
}

fn usage(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("USAGE", message)
}

/// A config type named by `field` (a path or query parameter, a body
/// field), or a 400 naming the field and the types there are.
fn config_type_of(field: &str, text: &str) -> Result<ConfigType, ApiError> {
    text.parse()
        .map_err(|message: String| usage(format!("{field}: {message}")))
}

/// A revision named by `field`: a whole number from 1, as OSMO takes it.
fn revision_of(field: &str, text: &str) -> Result<u64, ApiError> {
    match text.trim().parse::<u64>() {
        Ok(revision) if revision > 0 => Ok(revision),
        _ => Err(usage(format!(
            "{field}: '{text}' is not a revision (a whole number from 1)"
        ))),
    }
}

/// The routes on the whole history are ruled on `config/*`; a change to
/// one type's history also needs `action` on that type's own resource
/// (`config/pool`), as its other routes do.
fn require(caller: &Caller, action: &str, config_type: ConfigType) -> Result<(), ApiError> {
    let resource = format!("config/{}", config_type.as_str().to_ascii_lowercase());
    if caller.allows(action, &resource) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "CREDENTIAL",
        format!(
            "{} is not allowed {action} on {resource}",
            caller.describe()
        ),
    ))
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
    what: &str,
) -> Result<Option<T>, ApiError> {
    let bytes = read_body(body, state.config.body_bytes_max).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|error| usage(format!("the request body is not JSON: {error}")))?;
    typed(value, what).map(Some).map_err(usage)
}

fn meta(caller: &Caller, description: Option<String>, tags: Option<Vec<String>>) -> ConfigMeta {
    ConfigMeta {
        user: caller.user.clone(),
        description: description.unwrap_or_default(),
        tags: tags.unwrap_or_default(),
    }
}

async fn commit(state: &AppState, command: Command, config_type: ConfigType, name: &str) -> Reply {
    let outcome = if matches!(command, Command::PutPoolWithExtras { .. }) {
        propose_gated(state, "a pool's topology_keys", command).await?
    } else {
        propose(state, command).await?
    };
    match outcome {
        Outcome::Revision { revision } => Ok(Json(json!({
            "config_type": config_type.as_str(),
            "name": name,
            "revision": revision,
        }))),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: unexpected outcome {other:?}"),
        )),
    }
}

fn not_found(config_type: ConfigType, name: &str) -> ApiError {
    ApiError::not_found(format!("{config_type} '{name}' does not exist"))
}
