//! API request counts and latency by route.
//!
//! Invariant: the `route` label is the matched path template
//! (`/api/workflow/{name}`), never the raw URI, so workflow IDs cannot blow
//! up the number of series; requests that match no route count as
//! `unmatched`.

use super::{API_REQUESTS, API_REQUEST_SECONDS};
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Middleware: counts the request and records its latency (to the
/// response head; streamed bodies such as followed logs are not waited for).
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_string(), |path| {
            path.as_str().to_string()
        });
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!(API_REQUESTS, &labels).increment(1);
    metrics::histogram!(API_REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
}
