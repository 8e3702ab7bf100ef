//! API errors in OSMO's body shape: `{"message", "error_code", "workflow_id"}`.
//!
//! Invariant: bad input is always a 4xx naming what was wrong; 500 is kept
//! for real server faults (storage, Raft). A `503` with `Retry-After` means
//! the call was certainly not carried out (no leader could take it), so a
//! client may send it again, to this node or another. A `503` without it
//! means the outcome is unknown (proposed but not seen to commit in time, or
//! the leader was lost while it held the call): only a retry under the same
//! `Idempotency-Key` is safe, and it answers the first outcome.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gantry_raft::RaftError;
use gantry_storage::{Rejection, RejectionKind, StorageError};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_code: &'static str,
    pub message: String,
    pub workflow_id: Option<String>,
    /// Seconds for the `Retry-After` header: set only when the call was
    /// certainly not carried out.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error_code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error_code,
            message: message.into(),
            workflow_id: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(error_code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error_code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "USER", message)
    }

    pub fn with_workflow(mut self, workflow_id: impl Into<String>) -> ApiError {
        self.workflow_id = Some(workflow_id.into());
        self
    }

    pub fn from_rejection(rejection: Rejection) -> ApiError {
        match rejection.kind {
            RejectionKind::NotFound => ApiError::not_found(rejection.message),
            RejectionKind::Conflict | RejectionKind::Invalid | RejectionKind::Stale => {
                ApiError::bad_request("USER", rejection.message)
            }
        }
    }
}

impl From<RaftError> for ApiError {
    fn from(error: RaftError) -> ApiError {
        match error {
            // Not proposed anywhere: safe to send again.
            RaftError::NotLeader { .. } => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER",
                    format!("the control plane is not ready: {error}"),
                )
            },
            // Refused before it was proposed: nothing happened.
            RaftError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "USAGE",
                format!(
                    "{error}; split the workflow into smaller workflows or reduce repeated content"
                ),
            ),
            // Never sent to a leader (the one known was unreachable all
            // through the wait for an election): safe to send again.
            RaftError::PeerUnreachable { .. } => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER",
                    format!("no leader could take the call: {error}"),
                )
            },
            // Proposed, or held by a leader that was lost, and no answer in
            // time: it may still be carried out. No `Retry-After` (a client
            // retrying blindly could do it twice); a retry under the same
            // Idempotency-Key is safe and answers the first outcome.
            RaftError::OutcomeUnknown(_) | RaftError::Peer { .. } | RaftError::Timeout(_) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER",
                    format!(
                        "the call may or may not have been carried out ({error}); send it \
                         again with the same Idempotency-Key header to learn its outcome \
                         without carrying it out twice"
                    ),
                )
            }
            // This replica's state differs from the majority's: no read of
            // it is served. No `Retry-After`: it stays so until rebuilt.
            RaftError::StateCorrupt(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER",
                format!("this server does not serve reads: {error}; use another member"),
            ),
            // Refused before it was proposed (version gating), until the
            // rolling upgrade is done: nothing happened.
            RaftError::NotUnderstood(_) => ApiError {
                retry_after_secs: Some(10),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVER", error.to_string())
            },
            RaftError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER",
                format!("the control plane is not ready: {error}"),
            ),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SERVER",
                format!("Internal server error: {other}"),
            ),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER",
            format!("Internal server error: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "message": self.message,
            "error_code": self.error_code,
            "workflow_id": self.workflow_id,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: RaftError) -> (u16, Option<String>, String) {
        let api = ApiError::from(error);
        let message = api.message.clone();
        let response = api.into_response();
        let retry = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        (response.status().as_u16(), retry, message)
    }

    #[test]
    fn losing_the_leader_is_a_503_and_retry_after_only_when_not_carried_out() {
        let peer = || "10.0.0.1:7001".to_string();
        let not_sent = answer(RaftError::PeerUnreachable {
            peer: peer(),
            reason: "connection: connection closed".into(),
        });
        assert_eq!((not_sent.0, not_sent.1.as_deref()), (503, Some("1")));
        let lost = answer(RaftError::Peer {
            peer: peer(),
            reason: "lost: connection error".into(),
        });
        assert_eq!((lost.0, lost.1.as_deref()), (503, None));
        assert!(
            lost.2.contains("may or may not have been carried out"),
            "{}",
            lost.2
        );
        let no_leader = answer(RaftError::NotLeader {
            leader_id: None,
            leader: None,
        });
        assert_eq!((no_leader.0, no_leader.1.as_deref()), (503, Some("1")));
        let storage = answer(RaftError::RaftStorage("disk full".into()));
        assert_eq!((storage.0, storage.1), (500, None));
    }
}
