//! What can go wrong talking to a Gantry server, and how an error answer
//! becomes one.
//!
//! Invariant: an HTTP error keeps its status, OSMO's `error_code` and
//! `workflow_id`, so callers can match on them (`Http { status, .. }`).

use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;

/// Why a request failed; callers match on `Http { status, .. }` (e.g. 404).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status.
    #[error("{message}")]
    Http {
        status: StatusCode,
        message: String,
        error_code: Option<String>,
        workflow_id: Option<String>,
    },
    /// No URL accepted a connection; `url` is the last one tried.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection was made but the exchange failed (timeout, reset, ...).
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx with a body that is not the expected JSON.
    #[error("invalid response from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot read config file {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

impl ClientError {
    /// Builds the error for a non-success response from its body. OSMO sends
    /// `{message, error_code, workflow_id}`; FastAPI validation errors send
    /// `{detail}`; proxies send HTML or nothing, so fall back to the text or
    /// the status reason rather than losing the status.
    pub fn from_response_body(status: StatusCode, body: &[u8]) -> ClientError {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| -> Option<String> {
            match json.as_ref()?.get(name)? {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        };
        let message = field("message")
            .or_else(|| field("detail"))
            .filter(|m| !m.trim().is_empty())
            .or_else(|| {
                let text = String::from_utf8_lossy(body).trim().to_owned();
                (!text.is_empty()).then_some(text)
            })
            .unwrap_or_else(|| {
                format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .trim_end()
                .to_owned()
            });
        ClientError::Http {
            status,
            message,
            error_code: field("error_code"),
            workflow_id: field("workflow_id"),
        }
    }
}
