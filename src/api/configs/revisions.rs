//! One revision of a type's history: its tags
//! (`POST /api/configs/history/{config_type}/revision/{revision}/tags`,
//! OSMO's `set_tags`, then `delete_tags`) and its removal
//! (`DELETE /api/configs/history/{config_type}/revision/{revision}`).
//!
//! Invariants: neither changes what is in force; the revision in force of
//! its config (OSMO's "current revision") is never removed; both are
//! command kinds newer than some builds, so during a rolling upgrade they
//! are refused (503 naming the members behind) rather than proposed.

use super::{config_type_of, json_body, require, revision_of, usage, Reply};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::workflow::propose_gated;
use crate::api::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gantry_storage::{Command, ConfigRevision, ConfigType, Outcome, ReadView};
use serde::Deserialize;
use serde_json::json;

/// Most tags one request may name, and longest tag in bytes.
const TAGS_PER_REQUEST_MAX: usize = 64;
const TAG_BYTES_MAX: usize = 128;
/// Most tags one revision may carry after a change.
const TAGS_PER_REVISION_MAX: usize = 64;

/// OSMO's `UpdateConfigTagsRequest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    #[serde(default)]
    set_tags: Option<Vec<String>>,
    #[serde(default)]
    delete_tags: Option<Vec<String>>,
}

/// The type and revision of the path, checked, with the caller's right to
/// change that type's history.
fn target(
    caller: &Caller,
    config_type: &str,
    revision: &str,
) -> Result<(ConfigType, u64), ApiError> {
    let config_type = config_type_of("config_type", config_type)?;
    let revision = revision_of("revision", revision)?;
    require(caller, "config:Update", config_type)?;
    Ok((config_type, revision))
}

/// The revision as this replica's leader-read state has it, or a 400
/// naming it (OSMO's user error for a revision that does not exist).
fn existing(
    view: &ReadView,
    config_type: ConfigType,
    revision: u64,
) -> Result<ConfigRevision, ApiError> {
    view.config_revision(config_type, revision)?.ok_or_else(|| {
        ApiError::bad_request(
            "USER",
            format!("revision: {config_type} has no revision {revision} in its history"),
        )
    })
}

/// A tag list of the body: each tag non-empty and bounded.
fn checked_tags(field: &str, tags: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let tags = tags.unwrap_or_default();
    if tags.len() > TAGS_PER_REQUEST_MAX {
        return Err(usage(format!(
            "{field}: {} tags; at most {TAGS_PER_REQUEST_MAX} in one request",
            tags.len()
        )));
    }
    for (index, tag) in tags.iter().enumerate() {
        if tag.trim().is_empty() {
            return Err(usage(format!("{field}[{index}]: a tag must not be empty")));
        }
        if tag.len() > TAG_BYTES_MAX {
            return Err(usage(format!(
                "{field}[{index}]: a tag is at most {TAG_BYTES_MAX} bytes"
            )));
        }
    }
    Ok(tags)
}

fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "SERVER",
        format!("Internal server error: unexpected outcome {outcome:?}"),
    )
}

/// OSMO's `POST .../revision/{revision}/tags`: `set_tags` added, then
/// `delete_tags` removed; answers the revision's tags.
pub async fn tag_revision(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((config_type, revision)): Path<(String, String)>,
    body: Body,
) -> Reply {
    let (config_type, revision) = target(&caller, &config_type, &revision)?;
    let request: TagsBody = json_body(&state, body, "body").await?.unwrap_or(TagsBody {
        set_tags: None,
        delete_tags: None,
    });
    let set = checked_tags("set_tags", request.set_tags)?;
    let delete = checked_tags("delete_tags", request.delete_tags)?;
    if set.is_empty() && delete.is_empty() {
        return Err(usage(
            "set_tags, delete_tags: no tags to set or delete were given",
        ));
    }
    let entry = existing(&state.node.read().await?, config_type, revision)?;
    let after = entry
        .meta
        .tags
        .iter()
        .chain(set.iter().filter(|tag| !entry.meta.tags.contains(tag)))
        .filter(|tag| !delete.contains(tag))
        .count();
    if after > TAGS_PER_REVISION_MAX {
        return Err(usage(format!(
            "set_tags: revision {revision} would carry {after} tags; at most {TAGS_PER_REVISION_MAX}"
        )));
    }
    let command = Command::TagConfigRevision {
        config_type,
        revision,
        set,
        delete,
    };
    match propose_gated(&state, "config revision tags", command).await? {
        Outcome::Revision { .. } => {}
        Outcome::Rejected(rejection) => return Err(ApiError::from_rejection(rejection)),
        other => return Err(unexpected(other)),
    }
    let entry = existing(&state.node.read().await?, config_type, revision)?;
    Ok(Json(json!({
        "config_type": config_type.as_str(),
        "name": entry.name,
        "revision": revision,
        "tags": entry.meta.tags,
    })))
}

/// OSMO's `DELETE .../revision/{revision}`: the revision leaves the
/// history; refused for the revision in force of its config.
pub async fn delete_revision(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((config_type, revision)): Path<(String, String)>,
) -> Reply {
    let (config_type, revision) = target(&caller, &config_type, &revision)?;
    let view = state.node.read().await?;
    let entry = existing(&view, config_type, revision)?;
    if view.config_revision_in_force(config_type, &entry.name)? == Some(revision) {
        let config = if entry.name.is_empty() {
            config_type.to_string()
        } else {
            format!("{config_type} '{}'", entry.name)
        };
        return Err(usage(format!(
            "revision: {revision} is the current revision of {config}; roll back or change it \
             first, then delete this revision"
        )));
    }
    drop(view);
    let command = Command::DeleteConfigRevision {
        config_type,
        revision,
    };
    match propose_gated(&state, "deleting config revisions", command).await? {
        Outcome::Revision { .. } => Ok(Json(json!({
            "config_type": config_type.as_str(),
            "name": entry.name,
            "revision": revision,
        }))),
        Outcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection)),
        other => Err(unexpected(other)),
    }
}
