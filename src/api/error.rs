//! API errors in OSMO's body shape: `{"message", "error_code", "workflow_id"}`.
//!
//! Invariant: bad input is always a 4xx naming what was wrong; 500 is kept
//! for real server faults (storage, Raft). A `503` with `Retry-After` means
//! the call was not carried out (no leader could take it) or its outcome is
//! unknown (it was proposed but not seen to commit in time; the message says
//! which): a client may send it again, to this node or another, under the
//! same `Idempotency-Key`, which makes the retry safe in both cases.

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
            // Proposed, or sent to the leader, and then no answer in time:
            // it may still be carried out. Only a retry under the same
            // Idempotency-Key is safe, and it answers the first outcome.
            RaftError::OutcomeUnknown(_) | RaftError::Peer { .. } | RaftError::Timeout(_) => {
                ApiError {
                    retry_after_secs: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "SERVER",
                        format!(
                            "the request may or may not have been carried out ({error}); \
                             send it again with the same Idempotency-Key header to learn \
                             its outcome without carrying it out twice"
                        ),
                    )
                }
            }
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
