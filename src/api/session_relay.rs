//! Sessions asked of a follower, relayed to the leader: the leader
//! dispatches every job, so the operator running a task is linked there,
//! and sessions open there. A follower passes the request on as it came
//! (method, path, query, the caller's credentials, the upgrade headers and
//! a ticket request's body) and, once the leader switches protocols,
//! splices the caller's upgraded connection with its own to the leader.
//! So a user (or OSMO's CLI, which never follows a redirect) may use any
//! member's URL, behind a load balancer or after the one it used died.
//!
//! Invariants: only the routes the table marks as sessions are relayed;
//! the leader is the one Raft names and its URL is the one it advertised
//! (never anything the caller sent), reached over TLS checked against the
//! cluster's CA when TLS is on; the leader authenticates and authorizes
//! the request itself; a relayed request is never relayed again (a
//! leader that changed meanwhile answers 421, which the caller sees);
//! hop-by-hop headers are not passed on, except the upgrade's own.

use super::error::ApiError;
use super::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use std::path::Path;
use std::time::Duration;

/// Marks a request a member relayed (its value: the member's id), so the
/// leader never passes it on again.
pub const RELAYED_HEADER: &str = "gantry-relayed-by";

/// Bytes copied at once each way on a relayed session.
const SPLICE_BUFFER_BYTES: usize = 64 << 10;
/// How long the leader may take to be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client a follower relays with: HTTP/1.1 (an upgrade is an HTTP/1.1
/// feature), trusting the cluster's CA.
pub struct SessionRelay {
    http: reqwest::Client,
}

impl SessionRelay {
    /// `ca`: the cluster CA (TLS on), else the members speak plain HTTP.
    pub fn new(ca: Option<&Path>) -> Result<SessionRelay, String> {
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gantry-relay/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let mut tls = crate::tls::api_client_config(Some(ca), None)
                .map_err(|error| format!("the session relay's TLS: {error}"))?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder
            .build()
            .map_err(|error| format!("the session relay's HTTP client: {error}"))?;
        Ok(SessionRelay { http })
    }
}

/// Middleware of the session routes: the leader serves them; a follower
/// relays them to it.
pub async fn to_leader(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let node = state.hub.node();
    if node.leader_term(&node.metrics().borrow()).is_some() {
        return next.run(request).await;
    }
    if request.headers().contains_key(RELAYED_HEADER) {
        // Relayed here by a member that took this node for the leader.
        return super::operator_stream::leader_elsewhere(&state, "sessions into tasks go");
    }
    let Some((id, leader)) = node.leader() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER",
            "no leader yet: try again shortly",
        )
        .into_response();
    };
    match relay(&state, &leader.api, request).await {
        Ok(response) => response,
        Err(reason) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SERVER",
            format!(
                "the leader (node {id}) at {} could not be reached: {reason}",
                leader.api
            ),
        )
        .into_response(),
    }
}

/// Headers that belong to one connection (RFC 9110, 7.6.1), never passed
/// on as they are; an upgrade's `Connection` and `Upgrade` are set again.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &header::HeaderValue)> {
    headers.iter().filter(|(name, _)| !hop_by_hop(name))
}

async fn relay(state: &AppState, leader_api: &str, request: Request) -> Result<Response, String> {
    let (mut parts, body) = request.into_parts();
    let user_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let upgrade_protocol = parts.headers.get(header::UPGRADE).cloned();
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let url = format!("{}{path}", leader_api.trim_end_matches('/'));
    let body = axum::body::to_bytes(body, state.config.body_bytes_max)
        .await
        .map_err(|error| format!("reading the request: {error}"))?;
    let mut outgoing = state.relay.http.request(parts.method.clone(), url);
    for (name, value) in end_to_end(&parts.headers) {
        outgoing = outgoing.header(name, value);
    }
    outgoing = outgoing.header(RELAYED_HEADER, state.hub.node().id().to_string());
    if let Some(protocol) = &upgrade_protocol {
        outgoing = outgoing
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, protocol);
    }
    let answer = outgoing
        .body(body)
        .send()
        .await
        .map_err(|error| innermost_reason(&error))?;
    let status = answer.status();
    let mut response = Response::builder().status(status);
    for (name, value) in end_to_end(answer.headers()) {
        response = response.header(name, value);
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let stream = answer.bytes_stream().map_err(std::io::Error::other);
        return response
            .body(Body::from_stream(stream))
            .map_err(|error| error.to_string());
    }
    let (Some(user_upgrade), Some(protocol)) = (user_upgrade, upgrade_protocol) else {
        return Err("the leader switched protocols on a request that asked for none".into());
    };
    tracing::info!(path = %parts.uri.path(), leader = %leader_api, "session relayed to the leader");
    let leader_end = answer
        .upgrade()
        .await
        .map_err(|error| format!("the upgrade failed: {error}"))?;
    state.bulk.spawn(async move {
        let Ok(user_end) = user_upgrade.await else {
            return;
        };
        let mut user_end = hyper_util::rt::TokioIo::new(user_end);
        let mut leader_end = leader_end;
        if let Err(error) = tokio::io::copy_bidirectional_with_sizes(
            &mut user_end,
            &mut leader_end,
            SPLICE_BUFFER_BYTES,
            SPLICE_BUFFER_BYTES,
        )
        .await
        {
            tracing::debug!(%error, "relayed session ended");
        }
    });
    response
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(Body::empty())
        .map_err(|error| error.to_string())
}

/// The innermost cause of a failed request ("connection refused"), which
/// says more than reqwest's outer "error sending request".
fn innermost_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}
