//! Cluster routes: members, leave, and a consistent state snapshot.
//!
//! Invariants: membership changes run on the leader (forwarded there by the
//! Raft node); a snapshot holds everything acknowledged before the request
//! (it is taken after a linearizable read).

use super::error::ApiError;
use super::params::Params;
use super::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gantry_raft::transport::MembershipChange;
use serde_json::{json, Value};

/// zstd level for snapshot files: fast, and state compresses well.
const SNAPSHOT_ZSTD_LEVEL: i32 = 3;

pub async fn members(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let leader = state.node.leader().map(|(id, _)| id);
    let members: Vec<Value> = state
        .node
        .members()
        .into_iter()
        .map(|member| {
            json!({
                "id": member.id,
                "peer_address": member.node.peer,
                "api_url": member.node.api,
                "role": format!("{:?}", member.role).to_ascii_uppercase(),
                "voter": member.voter,
                "match_index": member.matched,
                "last_contact_ms": member.last_contact_ms,
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": state.node.id(),
        "leader_id": leader,
        "members": members,
    })))
}

pub async fn leave(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let id = params.number("id")?.unwrap_or(state.node.id());
    let voters = state
        .node
        .change_membership(MembershipChange::Remove { id })
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "USAGE",
                format!("node {id} could not leave: {error}"),
            )
        })?;
    let mut warnings = Vec::new();
    if voters.len().is_multiple_of(2) {
        warnings.push(format!(
            "the cluster now has {} voters: an even number tolerates no more failures than one fewer; use 3 or 5",
            voters.len()
        ));
    }
    Ok(Json(
        json!({ "removed": id, "voters": voters, "warnings": warnings }),
    ))
}

pub async fn snapshot(State(state): State<AppState>) -> Result<Response, ApiError> {
    let image = state.node.export_state().await?;
    let compressed = tokio::task::spawn_blocking(move || {
        zstd::encode_all(image.as_slice(), SNAPSHOT_ZSTD_LEVEL)
    })
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: {error}"),
        )
    })?
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: compressing: {error}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/zstd")], compressed).into_response())
}
