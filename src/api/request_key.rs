//! The `Idempotency-Key` header: a client's name for one request, reused on
//! every retry of it, so that a write is carried out at most once however
//! often it is sent.
//!
//! Invariants: a key is scoped to the caller (two users' keys never meet);
//! a request without the header is proposed as it is; a malformed key is a
//! 400 naming the header, never ignored.

use super::auth::Caller;
use super::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gantry_storage::{Command, REQUEST_KEY_BYTES_MAX};

pub const HEADER: &str = "idempotency-key";
/// Longest key a client may send (the scoped key adds the user's name).
pub const CLIENT_KEY_BYTES_MAX: usize = 200;

/// The request's idempotency key, if it sent one.
#[derive(Clone, Debug, Default)]
pub struct RequestKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Ok(RequestKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                (1..=CLIENT_KEY_BYTES_MAX).contains(&key.len())
                    && key.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "USAGE",
                    format!(
                        "header Idempotency-Key: 1 to {CLIENT_KEY_BYTES_MAX} visible ASCII characters"
                    ),
                )
            })?;
        Ok(RequestKey(Some(key.to_string())))
    }
}

impl RequestKey {
    /// `command`, carried out at most once for this key and caller.
    pub fn wrap(&self, caller: &Caller, now: i64, command: Command) -> Command {
        match &self.0 {
            None => command,
            Some(key) => {
                // Length-prefixed, so no user name and key pair reads as another.
                let scoped = format!("{}:{}/{key}", caller.user.len(), caller.user);
                debug_assert!(scoped.len() <= REQUEST_KEY_BYTES_MAX || caller.user.len() > 300);
                Command::Idempotent {
                    now,
                    key: scoped,
                    command: Box::new(command),
                }
            }
        }
    }
}
