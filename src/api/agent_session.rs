//! `POST /api/agent/session/{id}`: an operator's end of a session into a
//! task (the router's data path), as a request of its own on the operator's
//! HTTP/2 connection: the request body carries the task's bytes, the
//! response body the user's.
//!
//! Invariants: the same credentials as the operator stream (an operator
//! certificate with TLS on; `backend:Connect` on the backend the query
//! names, checked by `access`); an answer is taken only for a session this
//! node asked of that backend and still waits for (404 otherwise); bytes
//! are never buffered beyond [`SESSION_BUFFER_BYTES`] toward the task, so
//! HTTP/2 flow control holds a fast sender back per session.

use super::error::ApiError;
use super::operator_stream::{check_operator_certificate, validate_backend_name};
use super::workflow::read_body;
use super::AppState;
use crate::protocol::session::{SessionIo, SESSION_REASON_BYTES_MAX, SESSION_REFUSED_HEADER};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use gantry_raft::transport::TlsPeer;
use serde::Deserialize;
use tokio_util::io::{ReaderStream, StreamReader};

/// Bytes of the user's side held toward the task, at most, per session.
pub const SESSION_BUFFER_BYTES: usize = 64 << 10;

#[derive(Debug, Deserialize)]
pub struct AttachParams {
    backend: Option<String>,
}

pub async fn attach(
    State(state): State<AppState>,
    peer: Option<Extension<TlsPeer>>,
    Path(session): Path<String>,
    Query(params): Query<AttachParams>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let backend = params
        .backend
        .ok_or_else(|| ApiError::bad_request("USAGE", "query parameter `backend` is required"))?;
    validate_backend_name(&backend)?;
    if state.config.operator_certificate_required {
        check_operator_certificate(peer.as_ref().map(|Extension(peer)| peer))?;
    }
    let no_such_session = || {
        ApiError::not_found(format!(
            "no session '{session}' of backend '{backend}' waits for its operator"
        ))
    };
    if headers.contains_key(SESSION_REFUSED_HEADER) {
        let reason = read_body(body, SESSION_REASON_BYTES_MAX).await?;
        let reason = String::from_utf8_lossy(&reason).into_owned();
        return match state.hub.answer_session(&backend, &session, Err(reason)) {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(_) => Err(no_such_session()),
        };
    }
    let from_task = StreamReader::new(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    let (to_task, toward_task) = tokio::io::duplex(SESSION_BUFFER_BYTES);
    let end: SessionIo = Box::new(tokio::io::join(from_task, to_task));
    if state
        .hub
        .answer_session(&backend, &session, Ok(end))
        .is_err()
    {
        return Err(no_such_session());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(ReaderStream::with_capacity(
            toward_task,
            SESSION_BUFFER_BYTES,
        )),
    )
        .into_response())
}
