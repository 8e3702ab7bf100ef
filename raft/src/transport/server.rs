//! The server half of the peer transport: the peer routes and the TLS
//! HTTP/2 listener that serves them.
//!
//! Invariants: a route only decodes its body (bounded by
//! [`REQUEST_BODY_MAX`]) and hands it to this member's openraft instance or
//! proposer; `/gantry/*` calls are carried out here or answered
//! `NotLeader`, never forwarded again, so a call cannot loop between
//! members. Who may call is decided by the TLS server config (client
//! certificates required), which the caller supplies.

use super::{
    BuildInfo, StateHashReply, StateVerdictReply, StoreProbe, StoreProbeAnswer, BUILD_PATH,
};
use super::{
    ForwardError, MembersReply, MembershipChange, MembershipReply, ProposeReply, ReadIndexReply,
    API_CONNECTIONS_MAX, APPEND_PATH, CLOCK_PATH, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    MEMBERSHIP_PATH, MEMBERS_PATH, PEER_CONNECTIONS_MAX, PEER_STREAMS_MAX, PROPOSE_PATH,
    READ_INDEX_PATH, REQUEST_BODY_MAX, SHUTDOWN_GRACE, SNAPSHOT_PATH, STATE_HASH_PATH,
    STATE_SCHEMA_PATH, STATE_VERDICT_PATH, STATE_VERDICT_SCHEMA_PATH, STORE_PROBE_PATH,
    TLS_HANDSHAKE_TIMEOUT, VOTE_PATH,
};
use crate::node::RaftNode;
use crate::types::{decode, encode, NodeId, TypeConfig};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use gantry_storage::Command;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The peer routes of `node`. Serve them only behind mutual TLS
/// ([`serve_peer`]).
pub fn peer_router(node: RaftNode) -> Router {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(PROPOSE_PATH, post(propose))
        .route(READ_INDEX_PATH, post(read_index))
        .route(MEMBERSHIP_PATH, post(membership))
        .route(MEMBERS_PATH, post(members))
        .route(CLOCK_PATH, post(clock))
        .route(STATE_HASH_PATH, post(state_hash))
        .route(STATE_VERDICT_PATH, post(state_verdict))
        .route(STATE_VERDICT_SCHEMA_PATH, post(state_verdict_with_schema))
        .route(STATE_SCHEMA_PATH, post(state_schema))
        .route(BUILD_PATH, post(build))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_MAX))
        .with_state(node)
}

fn reply<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

/// Decodes a request body, or gives the `400` to answer instead.
fn request<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    decode(body).map_err(|error| Box::new((StatusCode::BAD_REQUEST, error).into_response()))
}

async fn append(State(node): State<RaftNode>, body: Bytes) -> Response {
    let rpc: AppendEntriesRequest<TypeConfig> = match request(&body) {
        Ok(rpc) => rpc,
        Err(response) => return *response,
    };
    let result: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        node.raft().append_entries(rpc).await;
    reply(&result)
}

async fn vote(State(node): State<RaftNode>, body: Bytes) -> Response {
    let rpc: VoteRequest<NodeId> = match request(&body) {
        Ok(rpc) => rpc,
        Err(response) => return *response,
    };
    let result: Result<VoteResponse<NodeId>, RaftError<NodeId>> = node.raft().vote(rpc).await;
    reply(&result)
}

async fn snapshot(State(node): State<RaftNode>, body: Bytes) -> Response {
    let rpc: InstallSnapshotRequest<TypeConfig> = match request(&body) {
        Ok(rpc) => rpc,
        Err(response) => return *response,
    };
    let result: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        crate::snapshot_receive::install_snapshot_chunk(node.raft(), rpc).await;
    reply(&result)
}

async fn propose(State(node): State<RaftNode>, body: Bytes) -> Response {
    let command: Command = match request(&body) {
        Ok(command) => command,
        Err(response) => return *response,
    };
    let result: ProposeReply = node.propose_here(command).await.map_err(ForwardError::from);
    reply(&result)
}

async fn membership(State(node): State<RaftNode>, body: Bytes) -> Response {
    let change: MembershipChange = match request(&body) {
        Ok(change) => change,
        Err(response) => return *response,
    };
    // Forwarded to the leader if need be (at most a few hops, bounded).
    let result: MembershipReply = node
        .change_membership(change)
        .await
        .map_err(ForwardError::from);
    reply(&result)
}

async fn build() -> Response {
    reply(&BuildInfo::this_build())
}

async fn members(State(node): State<RaftNode>) -> Response {
    let result: MembersReply = node.members_here().map_err(ForwardError::from);
    reply(&result)
}

/// The probe-exchange route (`/gantry/store-probe`), answered by `answer`:
/// the binary owns the object store, so it merges this into the peer
/// router it serves. Serve it only behind mutual TLS, as [`peer_router`].
pub fn store_probe_router<F, Fut>(answer: F) -> Router
where
    F: Fn(StoreProbe) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = StoreProbeAnswer> + Send + 'static,
{
    Router::new().route(
        STORE_PROBE_PATH,
        post(move |body: Bytes| async move {
            let probe: StoreProbe = match request(&body) {
                Ok(probe) => probe,
                Err(response) => return *response,
            };
            reply(&answer(probe).await)
        }),
    )
}

async fn clock() -> Response {
    reply(&crate::node::wall_clock_ms())
}

async fn state_hash(State(node): State<RaftNode>, body: Bytes) -> Response {
    let index: u64 = match request(&body) {
        Ok(index) => index,
        Err(response) => return *response,
    };
    let result: StateHashReply = node.state_hash_at(index).await.map_err(ForwardError::from);
    reply(&result)
}

/// A verdict from a leader of a build from before state schemas were
/// announced: its hashes may cover other tables than this build's (a
/// rolling upgrade), so only its clearing is taken, never a mark.
async fn state_verdict(State(node): State<RaftNode>, body: Bytes) -> Response {
    let verdict: crate::node::StateVerdict = match request(&body) {
        Ok(verdict) => verdict,
        Err(response) => return *response,
    };
    let result: StateVerdictReply = match verdict {
        crate::node::StateVerdict::Healthy { .. } => {
            node.take_verdict(&verdict).map_err(ForwardError::from)
        }
        crate::node::StateVerdict::Corrupt { index, reason } => {
            tracing::warn!(index, %reason, "state check: a corrupt verdict from a leader of an older build, whose hash covers other tables, is ignored");
            Ok(())
        }
    };
    reply(&result)
}

/// A verdict judged under a state schema: taken when it is this build's.
async fn state_verdict_with_schema(State(node): State<RaftNode>, body: Bytes) -> Response {
    let (schema, verdict): (String, crate::node::StateVerdict) = match request(&body) {
        Ok(judged) => judged,
        Err(response) => return *response,
    };
    let result: StateVerdictReply = if schema == gantry_storage::state_hash::state_schema() {
        node.take_verdict(&verdict).map_err(ForwardError::from)
    } else {
        tracing::warn!(leader_schema = %schema, ?verdict, "state check: a verdict judged under another state schema is ignored");
        Ok(())
    };
    reply(&result)
}

async fn state_schema() -> Response {
    reply(&gantry_storage::state_hash::state_schema())
}

async fn read_index(State(node): State<RaftNode>) -> Response {
    let result: ReadIndexReply = node.read_index_here().await.map_err(ForwardError::from);
    reply(&result)
}

/// Serves `router` over TLS + HTTP/2 on `listener` until `shutdown`
/// completes, then lets open connections finish for up to
/// [`SHUTDOWN_GRACE`]. `tls` must require client certificates of the
/// cluster CA and offer ALPN `h2`.
pub async fn serve_peer(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_tls(listener, tls, router, shutdown, HttpVersions::Http2).await
}

/// The client certificate of the TLS connection a request came on (a
/// request extension on every route served by [`serve_tls`]).
#[derive(Clone, Debug)]
pub struct TlsPeer {
    /// The end-entity certificate, if the client presented one.
    pub certificate: Option<rustls::pki_types::CertificateDer<'static>>,
}

/// Which HTTP versions a TLS listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersions {
    /// Peers: HTTP/2 only.
    Http2,
    /// The API: HTTP/1.1 and HTTP/2 (by ALPN), for curl and browsers too.
    Http1And2,
}

impl HttpVersions {
    /// Connections a listener of this kind serves at once.
    pub fn connections_max(self) -> usize {
        match self {
            HttpVersions::Http2 => PEER_CONNECTIONS_MAX,
            HttpVersions::Http1And2 => API_CONNECTIONS_MAX,
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then
/// lets open connections finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    versions: HttpVersions,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(versions.connections_max()));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "peer listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let router = router.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(acceptor, tcp, remote, router, stopped, versions).await;
        });
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("peer listener: connections still open after the grace period");
    }
    connections.abort_all();
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    router: Router,
    mut stopped: watch::Receiver<bool>,
    versions: HttpVersions,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::warn!(%remote, %error, "peer connection refused: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "peer connection refused: TLS handshake timed out");
            return;
        }
    };
    // Handlers that care who is calling (the operator endpoint) read the
    // client certificate from the request; it was verified in the handshake.
    let peer = TlsPeer {
        certificate: tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned()),
    };
    let io = TokioIo::new(tls);
    let service = TowerToHyperService::new(router.layer(axum::Extension(peer)));
    // One builder for both: peers speak only HTTP/2; the API also HTTP/1.1.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if versions == HttpVersions::Http2 {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(PEER_STREAMS_MAX)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    // With upgrades: an API request may become a raw byte stream (a
    // port-forward session over HTTP/1.1).
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async {
            // The guard wait_for returns must not live across the drain below.
            let _ = stopped.wait_for(|stop| *stop).await;
        } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "peer connection ended");
    }
}
