//! Changes to configs: PUT (a whole config), PATCH (fields of a
//! singleton), DELETE, and BACKEND's POST (a partial update).
//!
//! Invariants: a WORKFLOW body sent back with `[MASKED]` secrets keeps the
//! stored values; a WORKFLOW data credential must open as a data store; a
//! POOL may name only templates and validations that exist; role `admin`
//! is built in and cannot be changed.

use super::{commit, json_body, meta, usage, Reply};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::policy::{self, ADMIN_ROLE};
use crate::api::AppState;
use crate::clock::now_ms;
use crate::data::DataStore;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use gantry_storage::config::backend::merge_backend;
use gantry_storage::config::{self, WorkflowConfig};
use gantry_storage::{BackendSettings, Command, ConfigData, ConfigType, ReadView, SchedulerType};
use serde::Deserialize;
use serde_json::{json, Map, Value};

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

/// Checks that names a pool refers to exist (templates, validations).
fn check_pool_references(view: &ReadView, data: &ConfigData) -> Result<(), ApiError> {
    let Some(pool) = data.as_pool() else {
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

/// Refuses topology keys for a pool whose backend's scheduler cannot
/// place by topology (OSMO's check). Only KAI can; a local backend runs
/// a group on one host, which every topology constraint allows. A backend
/// whose scheduler is not known yet is checked again at launch.
fn check_pool_topology(view: &ReadView, data: &ConfigData) -> Result<(), ApiError> {
    let Some(pool) = data.as_pool() else {
        return Ok(());
    };
    if data.pool_extras().topology_keys.is_empty() {
        return Ok(());
    }
    let Some(backend) = view.backend(&pool.backend)? else {
        return Ok(());
    };
    let scheduler = backend.settings.scheduler_type;
    if backend.configured
        && backend.executor == crate::protocol::EXECUTOR_KUBERNETES
        && scheduler != SchedulerType::Kai
    {
        return Err(usage(format!(
            "configs.topology_keys: topology keys cannot be set for pool '{}' because backend '{}' uses scheduler '{}', which does not support topology constraints (only kai does)",
            pool.name,
            pool.backend,
            scheduler.as_str()
        )));
    }
    Ok(())
}

/// PUT of a whole config of `config_type` under `name`.
pub(super) async fn put_config(
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
    check_pool_topology(&view, &data)?;
    let command = Command::put_config(
        now_ms(),
        config_type,
        name.clone(),
        meta(&caller, change.description, change.tags),
        data,
    );
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
    config::workflow::restore_masked_secrets(body, stored.as_ref()).map_err(usage)?;
    seal_secrets(body).map(drop)
}

/// Seals the WORKFLOW config's credential values with the cluster key (a
/// server without one stores them as given): what is proposed, and so the
/// log, the state and snapshots, holds only ciphertext. Whether anything
/// changed.
fn seal_secrets(body: &mut Value) -> Result<bool, ApiError> {
    let Some(ring) = crate::secrets::ring() else {
        return Ok(false);
    };
    ring.seal_at(
        body,
        config::workflow::SECRET_POINTERS,
        config::workflow::MASK,
    )
    .map_err(|error| match error {
        // What the caller sent: a value dressed as a sealed one that does
        // not open (a sealed value is never shown through the API).
        crate::secrets::SecretError::Corrupt(_) => usage(error.to_string()),
        // This server's key file lacks a key the stored values need.
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            other.to_string(),
        ),
    })
}

/// `POST /api/cluster/key/reseal`: the WORKFLOW config's credentials
/// sealed again under the newest cluster key (after `gantry cluster key
/// rotate`), or sealed for the first time (stored before a key was
/// given), as a new revision; nothing when they already are.
pub(super) async fn reseal_secrets(state: AppState, caller: Caller) -> Reply {
    let Some(ring) = crate::secrets::ring() else {
        return Err(usage(
            "this server has no cluster key (--cluster-key): credentials are stored as given",
        ));
    };
    let view = state.node.read().await?;
    // As stored (the read routes mask the credentials).
    let stored = view
        .config(ConfigType::Workflow, "")?
        .and_then(|config| config.data);
    let Some(ConfigData::Json(text)) = stored else {
        return Ok(Json(
            json!({ "message": "no WORKFLOW config is stored: nothing to seal" }),
        ));
    };
    let mut current: Value = serde_json::from_str(&text).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("the stored WORKFLOW config: {error}"),
        )
    })?;
    if !seal_secrets(&mut current)? {
        return Ok(Json(json!({
            "message": format!("every credential is sealed with cluster key {} already", ring.primary()),
        })));
    }
    let data = config::parse(ConfigType::Workflow, "", current).map_err(usage)?;
    let command = Command::PutConfig {
        now: now_ms(),
        config_type: ConfigType::Workflow,
        name: String::new(),
        meta: meta(
            &caller,
            Some(format!(
                "credentials sealed with cluster key {}",
                ring.primary()
            )),
            None,
        ),
        data: Box::new(data),
    };
    commit(&state, command, ConfigType::Workflow, "").await
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
pub(super) async fn patch_singleton_config(
    state: AppState,
    caller: Caller,
    config_type: ConfigType,
    body: Body,
) -> Reply {
    let patch: PatchBody = json_body(&state, body, "body")
        .await?
        .ok_or_else(|| usage("the request body is empty; send {\"configs_dict\": ...}"))?;
    let view = state.node.read().await?;
    let mut current = match super::read::singleton_json(&view, config_type)? {
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

pub(super) async fn delete_config(
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
