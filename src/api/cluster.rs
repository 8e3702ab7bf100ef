//! Cluster routes: members, init, join, leave, and a consistent state
//! snapshot.
//!
//! Invariants: membership changes run on the leader (forwarded there by the
//! Raft node); init and join act on the node that was called and are
//! idempotent; a snapshot holds everything acknowledged before the request
//! (it is taken after a linearizable read).

use super::error::ApiError;
use super::params::Params;
use super::AppState;
use crate::control::membership::{even_voters_warning, InitOutcome, JoinOutcome};
use crate::control::store_probe::Verdict;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gantry_raft::node::{Announced, CheckState};
use gantry_raft::transport::MembershipChange;
use gantry_raft::MembersView;
use serde_json::{json, Value};

/// Longest `POST /api/cluster/join` keeps asking the cluster (below the
/// CLI's request timeout).
const JOIN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /api/cluster/members`: the leader's view of the members (asked of
/// the leader by a follower, as writes are forwarded), with `view_of`
/// naming whose view it is; when the leader's cannot be had, this node's
/// own view and a warning saying why. A member the leader has not heard
/// from within the election timeout is `UNREACHABLE`, whatever its role.
/// Each member's `object_store` is whether its store is this node's, as
/// this node's last probe exchange with it found (`SHARED`, `DIVERGED`,
/// `UNKNOWN`; `SELF`); a diverged store that costs this node its
/// readiness is a warning.
/// `state` is what the leader's last state check found (`HEALTHY`,
/// `CORRUPT`, `UNDECIDED`, `NO_ANSWER`, `UNCOMPARED`; `UNCHECKED` before
/// any), with a warning for each member whose state is in doubt.
pub async fn members(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let leader = state.node.leader().map(|(id, _)| id);
    let (list, view) = state.node.leader_members().await;
    let probes = state.membership.store_probes();
    let verdicts = probes.map(|probes| probes.verdicts()).unwrap_or_default();
    let node_id = state.node.id();
    let builds = state.node.member_builds().await;
    let mut state_warnings = Vec::new();
    let members: Vec<Value> = list
        .into_iter()
        .map(|member| {
            let role = if member.reachable == Some(false) {
                "UNREACHABLE".to_string()
            } else {
                format!("{:?}", member.role).to_ascii_uppercase()
            };
            let check = member.state_check.as_ref();
            let state = check.map_or("UNCHECKED", |check| state_name(&check.state));
            match check.map(|check| &check.state) {
                Some(CheckState::Corrupt) => state_warnings.push(format!(
                    "node {}'s state differs from the majority's{}: it refuses reads; rebuild it from a healthy member (stop it, run `gantry cluster rebuild --data-dir DIR` against another member, start it)",
                    member.id,
                    check.and_then(|check| check.index).map_or(String::new(), |index| format!(" at log index {index}"))
                )),
                Some(CheckState::Undecided) => state_warnings.push(format!(
                    "node {}'s state hash differs from another member's and no hash has a majority: compare the members and rebuild the wrong one",
                    member.id
                )),
                _ => {}
            }
            json!({
                "id": member.id,
                "peer_address": member.node.peer,
                "api_url": member.node.api,
                "role": role,
                "voter": member.voter,
                "match_index": member.matched,
                "last_contact_ms": member.last_contact_ms,
                "reachable": member.reachable,
                "object_store": if member.id == node_id {
                    probes.map(|_| "SELF")
                } else {
                    verdicts.get(&member.id).map(Verdict::label)
                },
                "object_store_detail": verdicts.get(&member.id).and_then(|verdict| match verdict {
                    Verdict::Shared => None,
                    Verdict::Diverged(why) | Verdict::Unknown(why) => Some(why.clone()),
                }),
                "version": match builds.get(&member.id) {
                    Some(Ok(Announced::Build(build))) => Some(build.version.clone()),
                    _ => None,
                },
                "command_kinds": builds.get(&member.id).and_then(|build| build.as_ref().ok()).map(Announced::command_kinds),
                "build_detail": builds.get(&member.id).and_then(|build| match build {
                    Ok(Announced::Build(_)) => None,
                    Ok(before @ Announced::BeforeGating) => Some(before.to_string()),
                    Err(why) => Some(why.clone()),
                }),
                "state": state,
                "state_index": check.and_then(|check| check.index),
                "state_detail": check.map(|check| check.detail.clone()),
            })
        })
        .collect();
    let (view_of, leader_view, mut warnings) = match view {
        MembersView::Leader(id) => (id, true, Vec::new()),
        MembersView::Own(why) => (
            node_id,
            false,
            vec![format!(
                "this is node {node_id}'s own view, not the leader's ({why}): last contact, match index and reachability are known only to the leader"
            )],
        ),
    };
    if let Some(problem) = probes.and_then(|probes| probes.problem(&state.node)) {
        warnings.push(problem);
    }
    warnings.extend(state_warnings);
    let kinds: Vec<u16> = builds
        .values()
        .filter_map(|build| build.as_ref().ok().map(Announced::command_kinds))
        .collect();
    let agreed = (kinds.len() == builds.len())
        .then(|| kinds.iter().copied().min())
        .flatten();
    if kinds.iter().min() != kinds.iter().max() {
        warnings.push(format!(
            "the members run builds that understand different command kinds ({}): a rolling upgrade is under way, and commands of the newer kinds are refused until every member understands them",
            builds
                .iter()
                .filter_map(|(id, build)| build.as_ref().ok().map(|build| format!("node {id}: {build}")))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(Json(json!({
        "command_kinds_agreed": agreed,
        "node_id": node_id,
        "object_store": probes.map(|probes| probes.own().store.clone()),
        "leader_id": leader,
        "view_of": view_of,
        "leader_view": leader_view,
        "members": members,
        "warnings": warnings,
    })))
}

/// `POST /api/cluster/upgrade-drill`, only in the rehearsal build: proposes
/// the command kind that the build without the feature lacks, which version
/// gating refuses (503) until every member runs this build.
#[cfg(feature = "upgrade-drill")]
pub async fn upgrade_drill(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let command = gantry_storage::Command::UpgradeDrill {
        note: format!("proposed through node {}", state.node.id()),
    };
    let outcome = state.node.propose(command).await?;
    Ok(Json(json!({ "outcome": format!("{outcome:?}") })))
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
    let warnings: Vec<String> = even_voters_warning(voters.len()).into_iter().collect();
    Ok(Json(
        json!({ "removed": id, "voters": voters, "warnings": warnings }),
    ))
}

/// `GET /api/cluster/snapshot`: the whole state as a snapshot archive (tar
/// + zstd, see `gantry_raft::snapshot_file`).
pub async fn snapshot(State(state): State<AppState>) -> Result<Response, ApiError> {
    let archive = state.node.export_state().await?;
    Ok(([(header::CONTENT_TYPE, "application/zstd")], archive).into_response())
}

/// `POST /api/cluster/init`: makes the called node a new cluster of one (as
/// `gantry server --bootstrap`); says so when it already is a member.
pub async fn init(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let node_id = state.node.id();
    match state.membership.init().await.map_err(setup_error)? {
        InitOutcome::Initialized { token_file } => {
            let message = match &token_file {
                Some(path) => format!(
                    "initialized a new cluster of one (node {node_id}); the bootstrap admin token is in {} on the server",
                    path.display()
                ),
                None => format!("initialized a new cluster of one (node {node_id})"),
            };
            Ok(Json(json!({
                "initialized": true,
                "node_id": node_id,
                "voters": 1,
                "token_file": token_file.map(|path| path.display().to_string()),
                "message": message,
            })))
        }
        InitOutcome::AlreadyMember { voters } => Ok(Json(json!({
            "initialized": false,
            "node_id": node_id,
            "voters": voters,
            "message": format!(
                "node {node_id} is already a member of a cluster with {voters} voter(s); nothing to do"
            ),
        }))),
    }
}

/// `POST /api/cluster/join?peer=HOST:PORT`: makes the called node join the
/// cluster through the member at that peer address (as `gantry server
/// --join`); says so when it already is a member.
pub async fn join(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let peer = params
        .get("peer")
        .map(str::trim)
        .filter(|peer| !peer.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "USAGE",
                "peer: required, the peer address (host:port) of a cluster member",
            )
        })?
        .to_string();
    if peer
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(ApiError::bad_request(
            "USAGE",
            format!("peer: {peer:?} is not host:port"),
        ));
    }
    let node_id = state.node.id();
    if !state.membership.can_join() && !state.membership.is_member() {
        return Err(ApiError::bad_request(
            "USAGE",
            "this node runs without --tls-ca/--tls-cert/--tls-key: peers talk over mutual TLS, so it cannot join a cluster",
        ));
    }
    match state
        .membership
        .join(&peer, JOIN_WAIT_MAX)
        .await
        .map_err(setup_error)?
    {
        JoinOutcome::Joined { voters } => {
            let warnings: Vec<String> = even_voters_warning(voters.len()).into_iter().collect();
            Ok(Json(json!({
                "joined": true,
                "node_id": node_id,
                "voters": voters,
                "warnings": warnings,
                "message": format!("node {node_id} joined the cluster through {peer}; {} voters", voters.len()),
            })))
        }
        JoinOutcome::AlreadyMember { voters } => Ok(Json(json!({
            "joined": false,
            "node_id": node_id,
            "voters": voters,
            "warnings": [],
            "message": format!(
                "node {node_id} is already a member of a cluster with {voters} voter(s); nothing to do"
            ),
        }))),
    }
}

/// A state check's result as `cluster members` shows it.
fn state_name(state: &CheckState) -> &'static str {
    match state {
        CheckState::Healthy => "HEALTHY",
        CheckState::Corrupt => "CORRUPT",
        CheckState::Undecided => "UNDECIDED",
        CheckState::NoAnswer => "NO_ANSWER",
        CheckState::Uncompared => "UNCOMPARED",
    }
}

fn setup_error(error: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "SERVER", format!("{error:#}"))
}
