//! How the fake API server misbehaves when a test asks, as real ones do:
//! planned failures of matching requests (429 with `Retry-After`, 500,
//! 503, or a slow answer), watches that expire (a watch from before the
//! compaction point gets 410 `Expired`, as after etcd compacts) or drop
//! (every open watch ends; the client watches again from where it was),
//! and bookmarks.
//!
//! Invariant: a planned fault fires only for its method and collection,
//! at most its number of times, in the order planned; a refused request
//! changes nothing.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

/// What a planned fault does to a request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and no change: 409 (a replace that lost a
    /// race), 429 (with `Retry-After` seconds), 500, 503.
    Status { code: u16, retry_after: Option<u32> },
    /// Answer after this long (then as usual).
    Delay(Duration),
}

#[derive(Debug)]
pub(super) struct Planned {
    method: String,
    collection: String,
    fault: Fault,
    times: usize,
}

/// The faults planned and not yet spent.
#[derive(Debug, Default)]
pub(super) struct Plan(Vec<Planned>);

impl Plan {
    pub(super) fn add(&mut self, method: &str, collection: &str, fault: Fault, times: usize) {
        self.0.push(Planned {
            method: method.to_string(),
            collection: collection.to_string(),
            fault,
            times,
        });
    }

    /// The first fault planned for `method` on `collection`, spent once.
    pub(super) fn take(&mut self, method: &str, collection: &str) -> Option<Fault> {
        let index = self
            .0
            .iter()
            .position(|p| p.method == method && p.collection == collection && p.times > 0)?;
        let planned = &mut self.0[index];
        planned.times -= 1;
        let fault = planned.fault.clone();
        if planned.times == 0 {
            self.0.remove(index);
        }
        Some(fault)
    }
}

/// The answer of a status fault, shaped as the API server's `Status`.
pub(super) fn status_answer(code: u16, retry_after: Option<u32>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = match code {
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    };
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the fake API server planned a {code}"),
        "reason": reason, "code": code,
    });
    if let Some(seconds) = retry_after {
        body["details"] = json!({"retryAfterSeconds": seconds});
    }
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        if let Ok(value) = seconds.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

/// The one event of a watch that asks for a version compacted away.
pub(super) fn expired_event(since: u64, oldest: u64) -> String {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {since} ({oldest})"),
        "reason": "Expired", "code": 410,
    }})
    .to_string()
        + "\n"
}

/// A bookmark event at `version` for objects of `kind` (`apiVersion`).
pub(super) fn bookmark_event(api_version: &str, kind: &str, version: u64) -> String {
    json!({"type": "BOOKMARK", "object": {
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": version.to_string()},
    }})
    .to_string()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_for_its_request_only_its_number_of_times() {
        let mut plan = Plan::default();
        plan.add(
            "POST",
            "/api/v1/namespaces/w/pods",
            Fault::Status {
                code: 500,
                retry_after: None,
            },
            2,
        );
        assert!(plan.take("GET", "/api/v1/namespaces/w/pods").is_none());
        assert!(plan.take("POST", "/api/v1/namespaces/w/secrets").is_none());
        assert!(plan.take("POST", "/api/v1/namespaces/w/pods").is_some());
        assert!(plan.take("POST", "/api/v1/namespaces/w/pods").is_some());
        assert!(plan.take("POST", "/api/v1/namespaces/w/pods").is_none());
    }
}
