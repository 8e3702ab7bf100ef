//! The client half of the peer transport: [`PeerTransport`] is openraft's
//! network factory and the handle [`crate::RaftNode`] forwards calls with.
//!
//! Invariants: one HTTP/2 connection per peer address at a time, opened by
//! a task of its own (so an RPC cancelled by openraft's TTL does not waste a
//! half-done handshake) and replaced once hyper reports it closed; failures
//! to reach a peer become `RPCError::Unreachable` (openraft backs off), a
//! reply the transport cannot read becomes `RPCError::Network`, and a Raft
//! error from the peer becomes `RPCError::RemoteError`. Nothing from the
//! network is unwrapped.

use super::{
    ForwardError, ProposeReply, ReadIndexReply, APPEND_PATH, CONNECT_TIMEOUT, FORWARD_TIMEOUT,
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, PROPOSE_PATH, READ_INDEX_PATH, REQUEST_BODY_MAX,
    RESPONSE_BODY_MAX, RPC_TIMEOUT_MAX, SNAPSHOT_PATH, VOTE_PATH,
};
use crate::error::RaftError as GantryError;
use crate::types::{decode, encode, GantryNode, LogId, NodeId, TypeConfig};
use bytes::Bytes;
use gantry_storage::{Command, Outcome};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Sender = SendRequest<Full<Bytes>>;
type Slot = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// Cloneable handle on the per-peer connection pool.
#[derive(Clone)]
pub struct PeerTransport {
    connector: TlsConnector,
    peers: Arc<Mutex<HashMap<String, Slot>>>,
    /// When each member last answered an append-entries RPC (heartbeats
    /// included): openraft 0.9 does not publish it.
    contacts: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

/// How a call to a peer failed.
#[derive(Debug)]
enum CallError {
    /// Never sent: safe to retry anywhere.
    NotSent(String),
    /// Sent (or maybe sent) and then the connection failed or time ran out.
    Lost(String),
    /// The peer answered something that is not a reply of this protocol.
    Protocol(String),
    /// The request is larger than [`REQUEST_BODY_MAX`].
    TooLarge(usize),
    /// The peer has no such route (404): a member of an older build.
    NoRoute,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(reason) => write!(f, "not sent: {reason}"),
            CallError::Lost(reason) => write!(f, "lost: {reason}"),
            CallError::Protocol(reason) => write!(f, "bad reply: {reason}"),
            CallError::TooLarge(size) => {
                write!(f, "request of {size} bytes exceeds {REQUEST_BODY_MAX}")
            }
            CallError::NoRoute => write!(f, "no such route (an older build)"),
        }
    }
}

impl CallError {
    fn into_gantry(self, peer: &str) -> GantryError {
        let peer = peer.to_string();
        match self {
            CallError::NotSent(reason) => GantryError::PeerUnreachable { peer, reason },
            other => GantryError::Peer {
                peer,
                reason: other.to_string(),
            },
        }
    }

    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, GantryNode, E> {
        let error = std::io::Error::other(self.to_string());
        match self {
            // A peer that is down or a connection that died: back off.
            CallError::NotSent(_) | CallError::Lost(_) => {
                RPCError::Unreachable(Unreachable::new(&error))
            }
            CallError::Protocol(_) | CallError::TooLarge(_) | CallError::NoRoute => {
                RPCError::Network(NetworkError::new(&error))
            }
        }
    }
}

/// The TLS server name of `host:port` (or `[v6]:port`): an IP address when
/// the host is one, else a DNS name.
fn server_name(peer: &str) -> Result<ServerName<'static>, CallError> {
    let host = match peer.rsplit_once(':') {
        Some((host, _port)) => host,
        None => return Err(CallError::NotSent(format!("{peer:?} is not host:port"))),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|e| CallError::NotSent(format!("{host:?} is not a server name: {e}")))
}

async fn connect(connector: TlsConnector, peer: String) -> Result<Sender, CallError> {
    let name = server_name(&peer)?;
    let tcp = TcpStream::connect(&peer)
        .await
        .map_err(|e| CallError::NotSent(format!("connect: {e}")))?;
    // Raft messages are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| CallError::NotSent(format!("tls: {e}")))?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| CallError::NotSent(format!("http/2 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "peer connection closed");
        }
    });
    Ok(sender)
}

impl PeerTransport {
    /// `tls` must verify servers against the cluster CA, present this
    /// member's certificate and offer ALPN `h2`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> PeerTransport {
        PeerTransport {
            connector: TlsConnector::from(tls),
            peers: Arc::new(Mutex::new(HashMap::new())),
            contacts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Time since member `id` last answered an append-entries RPC sent
    /// through this transport (so only meaningful on the leader).
    pub fn since_last_contact(&self, id: NodeId) -> Option<Duration> {
        let contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        contacts.get(&id).map(Instant::elapsed)
    }

    fn record_contact(&self, id: NodeId) {
        let mut contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        contacts.insert(id, Instant::now());
    }

    fn slot(&self, peer: &str) -> Slot {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(peer.to_string()).or_default().clone()
    }

    /// The pooled connection to `peer`, opened if there is none or it closed.
    async fn sender(&self, peer: &str) -> Result<Sender, CallError> {
        let mut slot = self.slot(peer).lock_owned().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *slot = None;
        let connector = self.connector.clone();
        let peer = peer.to_string();
        // Its own task, holding the slot: finishes (and pools the connection)
        // even if the RPC that asked for it is cancelled meanwhile.
        let opening = tokio::spawn(async move {
            let sender = tokio::time::timeout(CONNECT_TIMEOUT, connect(connector, peer))
                .await
                .map_err(|_| {
                    CallError::NotSent(format!("connect timed out ({CONNECT_TIMEOUT:?})"))
                })??;
            *slot = Some(sender.clone());
            Ok(sender)
        });
        opening
            .await
            .map_err(|e| CallError::NotSent(format!("connect task: {e}")))?
    }

    /// POSTs `body` to `path` on `peer` and decodes the reply, within `ttl`
    /// (capped at [`RPC_TIMEOUT_MAX`]).
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: &str,
        path: &str,
        body: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let ttl = ttl.min(RPC_TIMEOUT_MAX);
        let body = encode(body).map_err(CallError::NotSent)?;
        if body.len() > REQUEST_BODY_MAX {
            return Err(CallError::TooLarge(body.len()));
        }
        let request = http::Request::post(format!("https://{peer}{path}"))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::NotSent(format!("request: {e}")))?;
        let exchange = async {
            let mut sender = self.sender(peer).await?;
            sender
                .ready()
                .await
                .map_err(|e| CallError::NotSent(format!("connection: {e}")))?;
            // `try_send_request` hands the request back when it never
            // left (the connection closed first, as when the leader dies),
            // which is safe to send elsewhere; anything else may have
            // been carried out.
            let response = sender.try_send_request(request).await.map_err(|mut e| {
                let unsent = e.take_message().is_some();
                let reason = e.into_error().to_string();
                if unsent {
                    CallError::NotSent(format!("connection: {reason}"))
                } else {
                    CallError::Lost(reason)
                }
            })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), RESPONSE_BODY_MAX)
                .collect()
                .await
                .map_err(|e| CallError::Lost(format!("reading reply: {e}")))?
                .to_bytes();
            if status == http::StatusCode::NOT_FOUND {
                return Err(CallError::NoRoute);
            }
            if status != http::StatusCode::OK {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(CallError::Protocol(format!("{status}: {text}")));
            }
            decode::<Resp>(&bytes).map_err(CallError::Protocol)
        };
        tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| CallError::Lost(format!("no reply within {ttl:?}")))?
    }

    /// Asks `peer` to propose `command` as leader. A `NotLeader` answer means
    /// the command was not proposed there.
    pub async fn forward_propose(
        &self,
        peer: &str,
        command: &Command,
    ) -> Result<Result<Outcome, ForwardError>, GantryError> {
        self.call::<_, ProposeReply>(peer, PROPOSE_PATH, command, FORWARD_TIMEOUT)
            .await
            .map_err(|e| e.into_gantry(peer))
    }

    /// Asks `peer` to carry out a membership change (it forwards to the
    /// leader if need be).
    pub async fn change_membership(
        &self,
        peer: &str,
        change: &super::MembershipChange,
    ) -> Result<Result<Vec<NodeId>, ForwardError>, GantryError> {
        self.call::<_, super::MembershipReply>(
            peer,
            super::MEMBERSHIP_PATH,
            change,
            super::MEMBERSHIP_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_gantry(peer))
    }

    /// Asks `peer`, as leader, for its view of the members (who it hears
    /// from, how far each has replicated); `NotLeader` when it does not lead.
    pub async fn members(
        &self,
        peer: &str,
    ) -> Result<Result<Vec<crate::node::MemberInfo>, ForwardError>, GantryError> {
        self.call::<_, super::MembersReply>(peer, super::MEMBERS_PATH, &(), super::MEMBERS_TIMEOUT)
            .await
            .map_err(|e| e.into_gantry(peer))
    }

    /// What `peer`'s build understands; `None` from a member of a build
    /// from before version gating (which has no such route).
    pub async fn build_info(&self, peer: &str) -> Result<Option<super::BuildInfo>, GantryError> {
        match self
            .call::<_, super::BuildInfo>(peer, super::BUILD_PATH, &(), super::BUILD_PROBE_TIMEOUT)
            .await
        {
            Ok(build) => Ok(Some(build)),
            Err(CallError::NoRoute) => Ok(None),
            Err(other) => Err(other.into_gantry(peer)),
        }
    }

    /// `peer`'s wall clock, in Unix milliseconds.
    pub async fn clock(&self, peer: &str) -> Result<i64, GantryError> {
        self.call::<_, i64>(
            peer,
            super::CLOCK_PATH,
            &(),
            crate::node::CLOCK_PROBE_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_gantry(peer))
    }

    /// Exchanges object-store probes with `peer` (any member, or a node
    /// waiting to join): it reads `probe` from its store and names its own.
    pub async fn store_probe(
        &self,
        peer: &str,
        probe: &super::StoreProbe,
    ) -> Result<super::StoreProbeAnswer, GantryError> {
        self.call::<_, super::StoreProbeAnswer>(
            peer,
            super::STORE_PROBE_PATH,
            probe,
            super::STORE_PROBE_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_gantry(peer))
    }

    /// The hash of `peer`'s state at checkpoint `index` (it waits to apply
    /// that far first).
    pub async fn state_hash(
        &self,
        peer: &str,
        index: u64,
    ) -> Result<super::StateHashReply, GantryError> {
        self.call::<_, super::StateHashReply>(
            peer,
            super::STATE_HASH_PATH,
            &index,
            crate::node::STATE_HASH_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_gantry(peer))
    }

    /// Hands `peer` the leader's verdict on its state, judged under the
    /// state schema `schema`.
    pub async fn state_verdict(
        &self,
        peer: &str,
        schema: &str,
        verdict: &crate::node::StateVerdict,
    ) -> Result<super::StateVerdictReply, GantryError> {
        self.call::<_, super::StateVerdictReply>(
            peer,
            super::STATE_VERDICT_SCHEMA_PATH,
            &(schema, verdict),
            super::MEMBERS_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_gantry(peer))
    }

    /// What `peer`'s state hash covers; `None` from a build from before
    /// state schemas were announced.
    pub async fn state_schema(&self, peer: &str) -> Result<Option<String>, GantryError> {
        match self
            .call::<_, String>(
                peer,
                super::STATE_SCHEMA_PATH,
                &(),
                super::BUILD_PROBE_TIMEOUT,
            )
            .await
        {
            Ok(schema) => Ok(Some(schema)),
            Err(CallError::NoRoute) => Ok(None),
            Err(other) => Err(other.into_gantry(peer)),
        }
    }

    /// Asks `peer`, as leader, for a linearizable read index.
    pub async fn read_index(
        &self,
        peer: &str,
    ) -> Result<Result<Option<LogId>, ForwardError>, GantryError> {
        self.call::<_, ReadIndexReply>(peer, READ_INDEX_PATH, &(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| e.into_gantry(peer))
    }
}

/// The connection openraft uses to replicate to one member.
pub struct PeerClient {
    transport: PeerTransport,
    target: NodeId,
    node: GantryNode,
}

impl PeerClient {
    fn remote<E: std::error::Error>(&self, error: E) -> RemoteError<NodeId, GantryNode, E> {
        RemoteError::new_with_node(self.target, self.node.clone(), error)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerTransport {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &GantryNode) -> PeerClient {
        PeerClient {
            transport: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// How many of `entries`, from the first, fit in `budget` encoded bytes (the
/// first always does): what one AppendEntries request carries.
pub fn entries_within(entries: &[crate::types::Entry], budget: usize) -> usize {
    if entries.len() <= 1 {
        return entries.len();
    }
    let mut used = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        used = used.saturating_add(crate::proposer::encoded_bytes(entry));
        if used > budget {
            return index.max(1);
        }
    }
    entries.len()
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>>
    {
        let entries = rpc.entries.len() as u64;
        // openraft gives the whole request one heartbeat interval: more
        // bytes than fit in it would time out and be resent forever.
        let fitting = entries_within(&rpc.entries, super::APPEND_BYTES_TARGET);
        if fitting < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting.max(1) as u64),
            ));
        }
        let reply: Result<_, RaftError<NodeId>> = match self
            .transport
            .call(&self.node.peer, APPEND_PATH, &rpc, option.hard_ttl())
            .await
        {
            Ok(reply) => reply,
            // openraft retries with fewer entries per request.
            Err(CallError::TooLarge(_)) if entries > 1 => {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries / 2),
                ))
            }
            Err(error) => return Err(error.into_rpc()),
        };
        self.transport.record_contact(self.target);
        reply.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, GantryNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let reply: Result<_, RaftError<NodeId, InstallSnapshotError>> = self
            .transport
            .call(&self.node.peer, SNAPSHOT_PATH, &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)?;
        reply.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, GantryNode, RaftError<NodeId>>> {
        let reply: Result<_, RaftError<NodeId>> = self
            .transport
            .call(&self.node.peer, VOTE_PATH, &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)?;
        reply.map_err(|e| RPCError::RemoteError(self.remote(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_peer_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:7000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:7000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("node-1.gantry:7000"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("no-port").is_err());
    }

    #[test]
    fn remote_raft_errors_cross_the_wire() {
        let error: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
        let bytes = encode(&error).expect("encodes");
        let back: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&bytes).expect("decodes");
        assert_eq!(back, error);
    }
}
