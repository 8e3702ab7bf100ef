//! `POST /api/agent/connect`: the operator stream (mutual TLS, HTTP/2).
//!
//! The request body carries the operator's numbered messages and the
//! response body the server's `Resume`, acknowledgements and jobs, both as
//! `protocol::wire` frames, for as long as the connection lives.
//!
//! Invariants: with TLS on, only a client certificate of kind `operator`
//! (verified against the cluster CA in the handshake) may open a stream,
//! and the token must allow `backend:Connect` on `backend/<backend>` (the
//! backend the query names; checked by `access` before the handler runs,
//! a 403 naming the backend asked for and the token's roles, which name
//! the backends it may serve, e.g. `backend/local`); the hub then takes
//! reports only about that backend's work (`control::operator_hub`); only
//! the leader takes
//! streams — other members answer 421 naming the leader's API URL, so
//! operators follow the leader whose dispatcher sends jobs.

use super::error::ApiError;
use super::names;
use super::AppState;
use crate::control::operator_hub::OperatorAbilities;
use crate::protocol::byte_queue;
use crate::protocol::wire::{self, Up};
use crate::tls::CertKind;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use gantry_raft::transport::TlsPeer;
use serde::Deserialize;
use serde_json::json;
use tokio_util::io::StreamReader;

/// Operator frames buffered between the socket and the batch loop, at most:
/// enough for the loop to fold thousands of small reports into one command.
const UP_QUEUE_MAX: usize = 8192;
/// Encoded bytes of those frames, at most: two of the largest log batches
/// (the frame limit is 16 MiB), or thousands of small reports.
const UP_QUEUE_BYTES_MAX: usize = 32 << 20;

#[derive(Debug, Deserialize)]
pub struct ConnectParams {
    backend: Option<String>,
    instance: Option<String>,
}

pub async fn connect(
    State(state): State<AppState>,
    peer: Option<Extension<TlsPeer>>,
    Query(params): Query<ConnectParams>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let backend = params
        .backend
        .ok_or_else(|| ApiError::bad_request("USAGE", "query parameter `backend` is required"))?;
    validate_backend_name(&backend)?;
    let instance: u64 = params
        .instance
        .as_deref()
        .and_then(|text| text.parse().ok())
        .filter(|instance| *instance != 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                "USAGE",
                "query parameter `instance` must be a non-zero unsigned 64-bit number",
            )
        })?;
    if state.config.operator_certificate_required {
        check_operator_certificate(peer.as_ref().map(|Extension(peer)| peer))?;
    }
    let node = state.hub.node();
    if node.leader_term(&node.metrics().borrow()).is_none() {
        return Ok(not_leader(&state));
    }

    // The newest format at or below the operator's offer; none offered:
    // an operator from before formats were negotiated.
    let format = wire::FrameFormat::from_header(
        headers
            .get(wire::FRAME_FORMAT_HEADER)
            .and_then(|value| value.to_str().ok()),
    );
    if format != wire::FrameFormat::NEWEST {
        tracing::info!(%backend, format = format.number(), "the operator speaks an older frame format");
    }
    // What the operator's build says it takes beyond every build's jobs;
    // extras need the named format.
    let abilities = OperatorAbilities {
        sessions: crate::protocol::launch_extras::announced_level(
            headers
                .get(crate::protocol::session::SESSIONS_HEADER)
                .map(|value| value.as_bytes()),
        ),
        launch_extras: if format == wire::FrameFormat::Named {
            crate::protocol::launch_extras::announced_level(
                headers
                    .get(crate::protocol::launch_extras::LAUNCH_EXTRAS_HEADER)
                    .map(|value| value.as_bytes()),
            )
        } else {
            0
        },
        queues: crate::protocol::launch_extras::announced_level(
            headers
                .get(crate::protocol::QUEUES_HEADER)
                .map(|value| value.as_bytes()),
        ),
    };
    let (accepted, down) = state
        .hub
        .accept(&backend, instance, true, abilities)
        .await?;
    let (up_sender, up_receiver) = byte_queue::channel(UP_QUEUE_MAX, UP_QUEUE_BYTES_MAX);
    let reader = StreamReader::new(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    // Decoding and taking in the operator's frames (mostly task output) on
    // the bulk runtime, below the API and Raft.
    state.bulk.spawn(async move {
        let reason = wire::pump_frames::<Up>(reader, format, up_sender).await;
        tracing::debug!("operator stream closed: {reason}");
    });
    let hub = state.hub.clone();
    state
        .bulk
        .spawn(async move { hub.serve(accepted, up_receiver).await });
    let frames = wire::body_chunks(down, format);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(wire::FRAME_FORMAT_HEADER),
                format.number().to_string(),
            ),
            (
                header::HeaderName::from_static(wire::REPORTS_HEADER),
                wire::REPORTS_LEVEL.to_string(),
            ),
        ],
        Body::from_stream(frames),
    )
        .into_response())
}

pub(super) fn check_operator_certificate(peer: Option<&TlsPeer>) -> Result<(), ApiError> {
    let certificate = peer
        .and_then(|peer| peer.certificate.as_ref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "CREDENTIAL",
                "operators must present a client certificate of kind operator \
                 (`gantry tls cert create --kind operator`)",
            )
        })?;
    match crate::tls::cert_kind(certificate) {
        Ok((CertKind::Operator, _)) => Ok(()),
        Ok((kind, name)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CREDENTIAL",
            format!(
                "certificate '{name}' is of kind {}; operators need a certificate of kind operator",
                kind.as_str()
            ),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "CREDENTIAL",
            format!("the client certificate is not a Gantry certificate: {error}"),
        )),
    }
}

pub(super) fn validate_backend_name(backend: &str) -> Result<(), ApiError> {
    if names::is_backend_name(backend) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "USAGE",
            format!(
                "query parameter `backend`: '{backend}' is not a backend name ({})",
                names::BACKEND_CHARS
            ),
        ))
    }
}

/// 421 with the leader's API URL (or 503 while there is none).
fn not_leader(state: &AppState) -> Response {
    leader_elsewhere(state, "operators connect")
}

/// 421 naming the leader's API URL in `leader_url`: `who` (e.g. "operators
/// connect") to the leader; 503 while there is none.
pub(super) fn leader_elsewhere(state: &AppState, who: &str) -> Response {
    match state.hub.node().leader() {
        Some((id, leader)) => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(json!({
                "message": format!("{who} to the leader (node {id}) at {}", leader.api),
                "error_code": "SERVER",
                "leader_url": leader.api,
            })),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            "no leader yet: try again shortly",
        )
        .into_response(),
    }
}
