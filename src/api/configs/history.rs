//! `GET /api/configs/history` (every revision, filtered as OSMO filters
//! it — type, name, revision, tags, creation window, or the revisions in
//! force at a time — and paged; OSMO's types Gantry does not keep have
//! none) and
//! `POST /api/configs/history/rollback` (a new revision equal to an old
//! one).
//!
//! Invariant: a rollback writes a new revision; history is never rewritten.

use super::{commit, config_type_of, json_body, meta, require, usage, Reply};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::params::Params;
use crate::api::views::time;
use crate::api::AppState;
use crate::clock::now_ms;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use gantry_storage::config;
use gantry_storage::{Command, ConfigRevision, ConfigType};
use serde::Deserialize;
use serde_json::{json, Value};

/// OSMO's config types that Gantry does not keep: a filter may name them
/// (OSMO's `config list` sends every type it knows), and they have no
/// revisions.
const OSMO_TYPES_NOT_KEPT: [&str; 3] = ["DATASET", "GROUP_TEMPLATE", "BACKEND_TEST"];

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

/// OSMO's `GET /api/configs/history` → `{configs: [ConfigHistory]}`.
pub async fn history(State(state): State<AppState>, RawQuery(query): RawQuery) -> Reply {
    let params = Params::parse(query.as_deref());
    let named = params.list("config_types");
    let mut types = Vec::new();
    for text in &named {
        if !OSMO_TYPES_NOT_KEPT.contains(&text.to_ascii_uppercase().as_str()) {
            types.push(config_type_of("config_types", text)?);
        }
    }
    if named.is_empty() {
        types = ConfigType::ALL.to_vec();
    }
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
    let tags = params.list("tags");
    let created_before = params.time("created_before")?;
    let created_after = params.time("created_after")?;
    let at = params.time("at_timestamp")?;
    let view = state.node.read().await?;
    let mut entries: Vec<ConfigRevision> = Vec::new();
    for config_type in types {
        let mut revisions = view.config_history(config_type)?;
        if let Some(at) = at {
            revisions = in_force_at(revisions, at);
        }
        entries.extend(
            revisions
                .into_iter()
                .filter(|entry| name.is_none_or(|name| entry.name == name))
                .filter(|entry| revision.is_none_or(|revision| entry.revision == revision))
                .filter(|entry| {
                    tags.is_empty() || tags.iter().any(|tag| entry.meta.tags.contains(tag))
                })
                .filter(|entry| created_before.is_none_or(|before| entry.time < before))
                .filter(|entry| created_after.is_none_or(|after| entry.time > after)),
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

/// OSMO's `at_timestamp`: of each config, the revision in force at `at`
/// (the last written at or before it), unless that revision deleted it.
fn in_force_at(mut revisions: Vec<ConfigRevision>, at: i64) -> Vec<ConfigRevision> {
    revisions.sort_by_key(|entry| (entry.time, entry.revision));
    let mut in_force: std::collections::BTreeMap<String, ConfigRevision> =
        std::collections::BTreeMap::new();
    for entry in revisions.into_iter().filter(|entry| entry.time <= at) {
        in_force.insert(entry.name.clone(), entry);
    }
    in_force
        .into_values()
        .filter(|entry| entry.data.is_some())
        .collect()
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
    let config_type = config_type_of("config_type", &request.config_type)?;
    require(&caller, "config:Update", config_type)?;
    let view = state.node.read().await?;
    let old = view
        .config_revision(config_type, request.revision)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "USER",
                format!("{config_type} has no revision {}", request.revision),
            )
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
