//! Reading configs: a singleton (its defaults when never set), one named
//! config, and every config of a type in OSMO's shapes (pools with their
//! derived status, roles with the built-in ones).
//!
//! Invariant: a built-in role shows as such unless a ROLE config of the
//! same name replaces it (`admin` never is).

use super::{not_found, Reply};
use crate::api::error::ApiError;
use crate::api::params::Params;
use crate::api::policy::{self, ADMIN_ROLE};
use crate::api::views::time;
use crate::api::AppState;
use axum::Json;
use gantry_storage::config::backend::backend_json;
use gantry_storage::config::pool::{pool_json, pool_status};
use gantry_storage::config::role::role_json;
use gantry_storage::config::{self, ServiceConfig, WorkflowConfig};
use gantry_storage::{ConfigData, ConfigRevision, ConfigType, ReadView, RoleConfig};
use serde_json::{json, Map, Value};

pub(super) fn singleton_json(view: &ReadView, config_type: ConfigType) -> Result<Value, ApiError> {
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
        ConfigData::Pool(pool) | ConfigData::PoolWithExtras(pool, _) => {
            let online = backend_online(view, &pool.backend)?;
            pool_json(pool, &data.pool_extras(), pool_status(pool, online))
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

pub(super) async fn get_named(state: AppState, config_type: ConfigType, name: String) -> Reply {
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

pub(super) async fn list_named(
    state: AppState,
    config_type: ConfigType,
    query: Option<String>,
) -> Reply {
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
                if let Some((data, pool)) = config
                    .data
                    .as_ref()
                    .and_then(|data| data.as_pool().map(|pool| (data, pool)))
                {
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
