//! Config routes under `/api/configs/...` (OSMO's paths and bodies):
//! SERVICE, WORKFLOW, BACKEND, POOL, POD_TEMPLATE, RESOURCE_VALIDATION and
//! ROLE; their history and rollback.
//!
//! Invariants: every change is one command that writes one revision with the
//! caller as its user; bodies are checked (field paths in messages) before
//! anything is proposed; a config's name in the path wins over one in the body.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::policy::{self, ADMIN_ROLE};
use super::views::time;
use super::workflow::{propose, read_body};
use super::AppState;
use crate::clock::now_ms;
use crate::data::DataStore;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, MethodRouter};
use axum::{Extension, Json};
use gantry_storage::config::backend::{backend_json, merge_backend};
use gantry_storage::config::pool::{pool_json, pool_status};
use gantry_storage::config::role::role_json;
use gantry_storage::config::{self, typed, ServiceConfig, WorkflowConfig};
use gantry_storage::{
    BackendSettings, Command, ConfigData, ConfigMeta, ConfigRevision, ConfigType, Outcome,
    ReadView, RoleConfig,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

type Reply = Result<Json<Value>, ApiError>;

/// `{description?, tags?, configs}`: PUT and POST bodies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    configs: Value,
}

/// `{description?, tags?, configs_dict}`: PATCH bodies.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    configs_dict: Map<String, Value>,
}

/// `{description?, tags?, force?}`: DELETE bodies (optional).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    force: bool,
}

/// OSMO's `RollbackConfigRequest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    config_type: String,
    revision: u64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

fn usage(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("USAGE", message)
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
    match propose(state, command).await? {
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

/// Checks that names a pool refers to exist (templates, validations).
fn check_pool_references(view: &ReadView, data: &ConfigData) -> Result<(), ApiError> {
    let ConfigData::Pool(pool) = data else {
        return Ok(());
    };
    for (field, config_type, name) in pool.references() {
        if view.config(config_type, name)?.is_none() {
            return Err(usage(format!(
                "configs.{field}: {config_type} '{name}' does not exist"
            )));
        }
    }
    Ok(())
}

/// PUT of a whole config of `config_type` under `name`.
async fn put_config(
    state: AppState,
    caller: Caller,
    config_type: ConfigType,
    name: String,
    body: Body,
) -> Reply {
    let name = if config_type == ConfigType::Role {
        let name = policy::normalize_role(&name);
        if name == ADMIN_ROLE {
            return Err(usage("role 'admin' is built in and cannot be changed"));
        }
        name
    } else {
        name
    };
    let change: ChangeBody = json_body(&state, body, "body")
        .await?
        .ok_or_else(|| usage("the request body is empty; send {\"configs\": ...}"))?;
    let view = state.node.read().await?;
    let mut configs = change.configs;
    restore_secrets(&view, config_type, &mut configs)?;
    let data = config::parse(config_type, &name, configs).map_err(usage)?;
    check_data_store(config_type, &data)?;
    check_pool_references(&view, &data)?;
    let command = Command::PutConfig {
        now: now_ms(),
        config_type,
        name: name.clone(),
        meta: meta(&caller, change.description, change.tags),
        data: Box::new(data),
    };
    commit(&state, command, config_type, &name).await
}

/// A WORKFLOW config body with `[MASKED]` secrets given their stored values
/// (what the API showed can be edited and sent back).
fn restore_secrets(
    view: &gantry_storage::ReadView,
    config_type: ConfigType,
    body: &mut Value,
) -> Result<(), ApiError> {
    if config_type != ConfigType::Workflow {
        return Ok(());
    }
    let stored = view.config(config_type, "")?.and_then(|c| c.data);
    config::workflow::restore_masked_secrets(body, stored.as_ref()).map_err(usage)
}

/// A WORKFLOW config's data credential must also open as a data store (the
/// data layer's check, after the config's own).
fn check_data_store(config_type: ConfigType, data: &ConfigData) -> Result<(), ApiError> {
    if config_type != ConfigType::Workflow {
        return Ok(());
    }
    let credential = WorkflowConfig::from_data(data).and_then(|c| c.workflow_data.credential);
    match credential {
        Some(credential) => DataStore::from_credential(&credential)
            .map(|_| ())
            .map_err(usage),
        None => Ok(()),
    }
}

/// PATCH of a singleton: `configs_dict` merged over the config in force.
async fn patch_singleton_config(
    state: AppState,
    caller: Caller,
    config_type: ConfigType,
    body: Body,
) -> Reply {
    let patch: PatchBody = json_body(&state, body, "body")
        .await?
        .ok_or_else(|| usage("the request body is empty; send {\"configs_dict\": ...}"))?;
    let view = state.node.read().await?;
    let mut current = match singleton_json(&view, config_type)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    current.extend(patch.configs_dict);
    let mut merged = Value::Object(current);
    restore_secrets(&view, config_type, &mut merged)?;
    let data = config::parse(config_type, "", merged).map_err(usage)?;
    check_data_store(config_type, &data)?;
    let command = Command::PutConfig {
        now: now_ms(),
        config_type,
        name: String::new(),
        meta: meta(&caller, patch.description, patch.tags),
        data: Box::new(data),
    };
    commit(&state, command, config_type, "").await
}

async fn delete_config(
    state: AppState,
    caller: Caller,
    config_type: ConfigType,
    name: String,
    body: Body,
) -> Reply {
    let name = if config_type == ConfigType::Role {
        policy::normalize_role(&name)
    } else {
        name
    };
    let request: DeleteBody = json_body(&state, body, "body").await?.unwrap_or_default();
    let command = Command::DeleteConfig {
        now: now_ms(),
        config_type,
        name: name.clone(),
        meta: meta(&caller, request.description, request.tags),
    };
    commit(&state, command, config_type, &name).await
}

fn singleton_json(view: &ReadView, config_type: ConfigType) -> Result<Value, ApiError> {
    if let Some(ConfigRevision {
        data: Some(data), ..
    }) = view.config(config_type, "")?
    {
        return Ok(config::render(&data));
    }
    Ok(match config_type {
        ConfigType::Service => serde_json::to_value(ServiceConfig::default()),
        _ => serde_json::to_value(WorkflowConfig::default()),
    }
    .unwrap_or(Value::Null))
}

fn backend_online(view: &ReadView, backend: &str) -> Result<bool, ApiError> {
    Ok(view.backend(backend)?.is_some_and(|b| b.online))
}

fn named_json(
    view: &ReadView,
    config_type: ConfigType,
    data: &ConfigData,
) -> Result<Value, ApiError> {
    Ok(match data {
        ConfigData::Pool(pool) => {
            let online = backend_online(view, &pool.backend)?;
            pool_json(pool, pool_status(pool, online))
        }
        other => {
            let _ = config_type;
            config::render(other)
        }
    })
}

fn builtin_role(name: &str) -> Option<RoleConfig> {
    policy::builtin_policies(name).map(|policies| RoleConfig {
        name: name.to_string(),
        description: format!("built-in role '{name}'"),
        policies,
    })
}

async fn get_named(state: AppState, config_type: ConfigType, name: String) -> Reply {
    let view = state.node.read().await?;
    if config_type == ConfigType::Backend {
        let backend = view
            .backend(&name)?
            .ok_or_else(|| not_found(config_type, &name))?;
        return Ok(Json(backend_json(&backend, time)));
    }
    let name = if config_type == ConfigType::Role {
        policy::normalize_role(&name)
    } else {
        name
    };
    match view.config(config_type, &name)? {
        Some(ConfigRevision {
            data: Some(data), ..
        }) if name != ADMIN_ROLE || config_type != ConfigType::Role => {
            Ok(Json(named_json(&view, config_type, &data)?))
        }
        _ if config_type == ConfigType::Role => builtin_role(&name)
            .map(|role| Json(role_json(&role, true)))
            .ok_or_else(|| not_found(config_type, &name)),
        _ => Err(not_found(config_type, &name)),
    }
}

async fn list_named(state: AppState, config_type: ConfigType, query: Option<String>) -> Reply {
    let params = Params::parse(query.as_deref());
    let view = state.node.read().await?;
    let configs = view.configs(config_type)?;
    match config_type {
        ConfigType::Backend => Ok(Json(json!({
            "backends": view.backends()?.iter().map(|b| backend_json(b, time)).collect::<Vec<_>>(),
        }))),
        ConfigType::Role => {
            let mut roles = Vec::new();
            for builtin in [policy::ADMIN_ROLE, policy::USER_ROLE, policy::BACKEND_ROLE] {
                if builtin == ADMIN_ROLE || !configs.iter().any(|c| c.name == builtin) {
                    if let Some(role) = builtin_role(builtin) {
                        roles.push(role_json(&role, true));
                    }
                }
            }
            for config in &configs {
                if let Some(ConfigData::Role(role)) = &config.data {
                    roles.push(role_json(role, false));
                }
            }
            Ok(Json(Value::Array(roles)))
        }
        ConfigType::Pool => {
            let backend_filter = params.get("backend");
            let mut pools = Map::new();
            for config in &configs {
                if let Some(data @ ConfigData::Pool(pool)) = &config.data {
                    if backend_filter.is_some_and(|b| b != pool.backend) {
                        continue;
                    }
                    pools.insert(config.name.clone(), named_json(&view, config_type, data)?);
                }
            }
            Ok(Json(json!({ "pools": pools })))
        }
        _ => {
            let mut map = Map::new();
            for config in &configs {
                if let Some(data) = &config.data {
                    map.insert(config.name.clone(), named_json(&view, config_type, data)?);
                }
            }
            Ok(Json(Value::Object(map)))
        }
    }
}

// --- The routes of every config type (see `routes::routes`) ---------------

/// `GET` of a singleton (SERVICE, WORKFLOW).
pub fn read_singleton(config_type: ConfigType) -> MethodRouter<AppState> {
    get(move |State(state): State<AppState>| async move {
        Ok::<_, ApiError>(Json(singleton_json(
            &state.node.read().await?,
            config_type,
        )?))
    })
}

/// `PATCH` of a singleton: the fields given replace the stored ones.
pub fn patch_singleton(config_type: ConfigType) -> MethodRouter<AppState> {
    patch(
        move |State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Body| {
            patch_singleton_config(state, caller, config_type, body)
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
            put_config(state, caller, config_type, name, body)
        },
    )
}

/// `GET` of every config of a named type.
pub fn list(config_type: ConfigType) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>, RawQuery(query): RawQuery| {
            list_named(state, config_type, query)
        },
    )
}

/// `GET` of one config of a named type.
pub fn read(config_type: ConfigType) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>, Path(name): Path<String>| {
            get_named(state, config_type, name)
        },
    )
}

/// `DELETE` of one config of a named type: a revision without data.
pub fn delete(config_type: ConfigType) -> MethodRouter<AppState> {
    axum::routing::delete(
        move |State(state): State<AppState>,
              Extension(caller): Extension<Caller>,
              Path(name): Path<String>,
              body: Body| { delete_config(state, caller, config_type, name, body) },
    )
}

/// OSMO's `POST /api/configs/backend/{name}`: a partial update (or creation).
pub async fn post_backend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Body,
) -> Reply {
    let change: ChangeBody = json_body(&state, body, "body")
        .await?
        .ok_or_else(|| usage("the request body is empty; send {\"configs\": ...}"))?;
    let current = state
        .node
        .read()
        .await?
        .backend(&name)?
        .map_or_else(BackendSettings::default, |backend| backend.settings);
    let settings = merge_backend(&current, change.configs).map_err(usage)?;
    let command = Command::PutConfig {
        now: now_ms(),
        config_type: ConfigType::Backend,
        name: name.clone(),
        meta: meta(&caller, change.description, change.tags),
        data: Box::new(ConfigData::Backend(settings)),
    };
    commit(&state, command, ConfigType::Backend, &name).await
}

// --- history and rollback --------------------------------------------------

/// OSMO's `GET /api/configs/history` → `{configs: [ConfigHistory]}`.
pub async fn history(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let params = Params::parse(query.as_deref());
    let types = params
        .list("config_types")
        .iter()
        .map(|text| {
            text.parse::<ConfigType>()
                .map_err(|message| usage(format!("config_types: {message}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types = if types.is_empty() {
        ConfigType::ALL.to_vec()
    } else {
        types
    };
    let name = params.get("name");
    let revision = params.number("revision")?;
    let omit_data = params.flag("omit_data")?;
    let offset = params.number("offset")?.unwrap_or(0) as usize;
    let limit = params.number("limit")?.unwrap_or(20).clamp(1, 1000) as usize;
    let descending = match params
        .get("order")
        .unwrap_or("ASC")
        .to_ascii_uppercase()
        .as_str()
    {
        "ASC" => false,
        "DESC" => true,
        other => return Err(usage(format!("order must be ASC or DESC, not '{other}'"))),
    };
    let view = state.node.read().await?;
    let mut entries: Vec<ConfigRevision> = Vec::new();
    for config_type in types {
        entries.extend(
            view.config_history(config_type)?
                .into_iter()
                .filter(|entry| name.is_none_or(|name| entry.name == name))
                .filter(|entry| revision.is_none_or(|revision| entry.revision == revision)),
        );
    }
    entries.sort_by_key(|entry| (entry.time, entry.config_type.code(), entry.revision));
    if descending {
        entries.reverse();
    }
    let configs: Vec<Value> = entries
        .iter()
        .skip(offset)
        .take(limit)
        .map(|entry| {
            json!({
                "config_type": entry.config_type.as_str(),
                "name": entry.name,
                "revision": entry.revision,
                "username": entry.meta.user,
                "created_at": time(Some(entry.time)),
                "description": entry.meta.description,
                "tags": entry.meta.tags,
                "deleted": entry.data.is_none(),
                "data": if omit_data { Value::Null } else { entry.data.as_ref().map_or(Value::Null, config::render) },
            })
        })
        .collect();
    Ok(Json(json!({ "configs": configs })))
}

/// OSMO's `POST /api/configs/history/rollback`.
pub async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Reply {
    let request: RollbackBody = json_body(&state, body, "body")
        .await?
        .ok_or_else(|| usage("the request body is empty; send {\"config_type\", \"revision\"}"))?;
    let config_type: ConfigType = request
        .config_type
        .parse()
        .map_err(|message: String| usage(format!("config_type: {message}")))?;
    if !caller.allows(
        "config:Update",
        &format!("config/{}", config_type.as_str().to_ascii_lowercase()),
    ) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CREDENTIAL",
            format!(
                "{} is not allowed config:Update on config/{}",
                caller.describe(),
                config_type.as_str().to_ascii_lowercase()
            ),
        ));
    }
    let view = state.node.read().await?;
    let old = view
        .config_revision(config_type, request.revision)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{config_type} has no revision {}",
                request.revision
            ))
        })?;
    let command = Command::RollbackConfig {
        now: now_ms(),
        config_type,
        revision: request.revision,
        meta: meta(
            &caller,
            Some(
                request
                    .description
                    .unwrap_or_else(|| format!("rollback to revision {}", request.revision)),
            ),
            request.tags,
        ),
    };
    commit(&state, command, config_type, &old.name).await
}
