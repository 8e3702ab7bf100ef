//! `GET /api/configs/diff?config_type=&first_revision=&second_revision=`
//! (OSMO's `ConfigDiffResponse`, `{first_data, second_data}`): a type's
//! configs as they stood at two of its revisions, for a client to diff.
//!
//! A revision numbers a change of its type, as in OSMO, whose revision
//! holds the type's whole config; Gantry keeps one config per revision, so
//! a named type at revision N is every config of it in force just after N
//! (the last revision at or before N of each name, deletions left out),
//! keyed by name. A singleton is its config at that revision.
//!
//! Invariant: no secret is answered. A WORKFLOW secret reads `[MASKED]`
//! on both sides when the two revisions hold the same value, and
//! `[MASKED: changed]` on the second side when they differ, so a diff
//! shows that it changed and nothing of what it is.

use super::{config_type_of, revision_of, Reply};
use crate::api::error::ApiError;
use crate::api::params::Params;
use crate::api::AppState;
use crate::secrets;
use axum::extract::{RawQuery, State};
use axum::Json;
use gantry_storage::config;
use gantry_storage::config::workflow::{MASK, SECRET_POINTERS};
use gantry_storage::{ConfigData, ConfigRevision, ConfigType};
use serde_json::{json, Map, Value};

/// What a secret that differs between the two revisions reads as on the
/// second side.
const MASK_CHANGED: &str = "[MASKED: changed]";

/// OSMO's `GET /api/configs/diff`.
pub async fn diff(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let params = Params::parse(query.as_deref());
    let required = |name: &str| {
        params
            .get(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| super::usage(format!("{name}: the query parameter is required")))
    };
    let config_type = config_type_of("config_type", required("config_type")?)?;
    let first = revision_of("first_revision", required("first_revision")?)?;
    let second = revision_of("second_revision", required("second_revision")?)?;
    let history = state.node.read().await?.config_history(config_type)?;
    for (field, revision) in [("first_revision", first), ("second_revision", second)] {
        if !history.iter().any(|entry| entry.revision == revision) {
            return Err(ApiError::bad_request(
                "USER",
                format!("{field}: {config_type} has no revision {revision} in its history"),
            ));
        }
    }
    let mut first_data = state_at(&history, config_type, first);
    let mut second_data = state_at(&history, config_type, second);
    if config_type.is_singleton() {
        mask_pair(&mut first_data, &mut second_data);
    } else if let (Value::Object(first_map), Value::Object(second_map)) =
        (&mut first_data, &mut second_data)
    {
        for (name, first_config) in first_map.iter_mut() {
            match second_map.get_mut(name) {
                Some(second_config) => mask_pair(first_config, second_config),
                None => config::workflow::mask_secrets(first_config),
            }
        }
        for (name, second_config) in second_map.iter_mut() {
            if !first_map.contains_key(name) {
                config::workflow::mask_secrets(second_config);
            }
        }
    }
    Ok(Json(json!({
        "first_data": first_data,
        "second_data": second_data,
    })))
}

/// The type's configs as they stood just after `revision` (`history` in
/// revision order), secrets still in place.
fn state_at(history: &[ConfigRevision], config_type: ConfigType, revision: u64) -> Value {
    let upto = history.iter().filter(|entry| entry.revision <= revision);
    if config_type.is_singleton() {
        return upto
            .filter_map(|entry| entry.data.as_ref())
            .next_back()
            .map_or(Value::Null, unmasked);
    }
    let mut in_force: std::collections::BTreeMap<&str, Option<&ConfigData>> =
        std::collections::BTreeMap::new();
    for entry in upto {
        in_force.insert(&entry.name, entry.data.as_ref());
    }
    let configs: Map<String, Value> = in_force
        .into_iter()
        .filter_map(|(name, data)| data.map(|data| (name.to_string(), unmasked(data))))
        .collect();
    Value::Object(configs)
}

/// A stored config as shown, but with its secrets (sealed) still there for
/// [`mask_pair`] to compare.
fn unmasked(data: &ConfigData) -> Value {
    match data {
        ConfigData::Json(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => config::render(other),
    }
}

/// Each secret of the two sides masked, saying on the second side whether
/// it differs from the first.
fn mask_pair(first: &mut Value, second: &mut Value) {
    for pointer in SECRET_POINTERS {
        let before = first.pointer(pointer).and_then(Value::as_str).map(opened);
        let after = second.pointer(pointer).and_then(Value::as_str).map(opened);
        let changed = before.is_some() && after.is_some() && before != after;
        if let Some(slot) = first.pointer_mut(pointer).filter(|slot| slot.is_string()) {
            *slot = Value::String(MASK.into());
        }
        if let Some(slot) = second.pointer_mut(pointer).filter(|slot| slot.is_string()) {
            let shown = if changed { MASK_CHANGED } else { MASK };
            *slot = Value::String(shown.into());
        }
    }
}

/// A stored secret as it was given: sealed ones opened (each sealing of a
/// value differs), any other as stored.
fn opened(stored: &str) -> String {
    secrets::open(stored).unwrap_or_else(|_| stored.to_string())
}
