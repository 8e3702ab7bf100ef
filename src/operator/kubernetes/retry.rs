//! Transient API failures, tried again. kube's client already waits out
//! 429 (for the server's `Retry-After`), 503 and 504 on its own; what it
//! leaves are the failures an API server has under load or in a restart:
//! 500 (an etcd timeout), a connection refused, reset or timed out. Each
//! is tried again a few times with growing waits, so one hiccup does not
//! fail a group.
//!
//! Invariant: only idempotent steps are retried here (a create whose
//! object may have landed is followed by a 409 its caller takes as "it
//! exists"); anything else is returned at once.

use std::future::Future;
use std::time::Duration;

/// Tries of one call, at most.
pub const ATTEMPTS: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_millis(200);

/// Whether `error` may pass if the call is made again.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// `call`'s result, made again while it fails transiently (up to
/// [`ATTEMPTS`] in all); `what` names it in the log.
pub async fn transient<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut wait = FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(error) if attempt < ATTEMPTS && is_transient(&error) => {
                tracing::info!(%error, attempt, "{what} failed; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}
