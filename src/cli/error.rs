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
    /// The IdP sign-in could not be refreshed.
    #[error("{reason}")]
    SignIn { reason: String },
    /// The server answered with a non-success status.
    #[error("{message}")]
    Http {
        status: StatusCode,
        message: String,
        error_code: Option<String>,
        workflow_id: Option<String>,
    },
    /// No URL accepted a connection: each server URL tried, with why, on
    /// one line with a hint (the reason is the innermost cause, so the
    /// URL is not repeated down an error chain).
    #[error("{}", connect_message(tried))]
    Connect {
        /// `(server URL, why it could not be reached)`, in the order tried.
        tried: Vec<(String, String)>,
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

/// What a user reads when no server could be reached: every URL tried
/// with its reason, then what to check.
fn connect_message(tried: &[(String, String)]) -> String {
    let mut reasons: Vec<&str> = tried.iter().map(|(_, reason)| reason.as_str()).collect();
    reasons.dedup();
    let urls: Vec<&str> = tried.iter().map(|(url, _)| url.as_str()).collect();
    let what = match reasons.as_slice() {
        [reason] => format!("{} ({reason})", urls.join(", ")),
        _ => tried
            .iter()
            .map(|(url, reason)| format!("{url} ({reason})"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let hint = if !tried.is_empty()
        && tried
            .iter()
            .all(|(_, reason)| reason.contains("certificate") || reason.starts_with("TLS"))
    {
        "does --ca (or GANTRY_CA) name the CA that signed the server's certificate?"
    } else if tried.len() > 1 {
        "is a gantry server running at any of them? set --url or GANTRY_URL"
    } else {
        "is a gantry server running there? set --url or GANTRY_URL"
    };
    format!("cannot connect to {what}: {hint}")
}

/// Why a connection could not be made, in a few words: the innermost
/// cause of `error` (e.g. `connection refused`), without the request URL
/// that the outer causes repeat.
pub(super) fn connect_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let text = innermost.to_string();
    // "Connection refused (os error 111)" → "connection refused"
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text,
    }
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
