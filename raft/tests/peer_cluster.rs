//! Three-member clusters over the real peer transport: TCP on 127.0.0.1,
//! HTTP/2 over mutual TLS with certificates made here by rcgen.
//!
//! Every wait is a condition polled until a generous deadline: the deadline
//! only turns a hang into a failure, the assertions are on behaviour.

use gantry_raft::node::{CheckState, MemberRole, StateVerdict};
use gantry_raft::transport::STATE_SCHEMA_PATH;
use gantry_raft::{peer_router, serve_peer, GantryNode, NodeConfig, PeerTransport, RaftNode};
use gantry_storage::{Command, Outcome, PoolRecord};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{ServerState, Vote};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Failure guard for every wait below.
const WAIT_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A cluster CA and the TLS configs of the members it signs.
struct Pki {
    /// The CA's certificate and what signs with it (its name and key).
    ca: CertifiedIssuer<'static, KeyPair>,
}

struct Tls {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        Pki { ca }
    }

    /// TLS configs of member `name`: a certificate with the URI SAN
    /// `gantry://kind/server/<name>` and IP SAN 127.0.0.1, usable as client
    /// and server; both sides trust only this CA and require a certificate.
    fn member(&self, name: &str) -> Tls {
        let key = KeyPair::generate().expect("member key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("member params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::URI(
                format!("gantry://kind/server/{name}")
                    .try_into()
                    .expect("URI SAN"),
            ),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("member certificate");
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let private = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let roots = Arc::new(roots);

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), private())
            .expect("client config");
        client.alpn_protocols = vec![b"h2".to_vec()];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .expect("client verifier");
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private())
            .expect("server config");
        server.alpn_protocols = vec![b"h2".to_vec()];
        Tls {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }
}

/// One running member: its node and its peer server.
struct Member {
    id: u64,
    port: u16,
    dir: PathBuf,
    node: RaftNode,
    transport: PeerTransport,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

fn address(port: u16) -> GantryNode {
    GantryNode {
        peer: format!("127.0.0.1:{port}"),
        api: format!("https://127.0.0.1:{port}"),
    }
}

/// Snapshot policy of every member here: low, so tests can force one.
const SNAPSHOT_EVERY: u64 = 50;

async fn start(id: u64, dir: &Path, listener: TcpListener, tls: &Tls) -> Member {
    start_serving(id, dir, listener, tls, |router| router).await
}

/// [`start`], with the peer routes passed through `wrap` (to play a
/// member of another build).
async fn start_serving(
    id: u64,
    dir: &Path,
    listener: TcpListener,
    tls: &Tls,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> Member {
    let port = listener.local_addr().expect("local address").port();
    let mut config = NodeConfig::new(id, dir, address(port));
    config.snapshot_every_logs = SNAPSHOT_EVERY;
    config.logs_kept_after_snapshot = 0;
    let transport = PeerTransport::new(tls.client.clone());
    // A member just shut down may still be releasing its databases.
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    let node = loop {
        match RaftNode::open(config.clone(), Some(transport.clone())).await {
            Ok(node) => break node,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("reopening member {id}: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("opening member {id}: {error}"),
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_peer(
        listener,
        tls.server.clone(),
        wrap(peer_router(node.clone())),
        async move {
            let _ = stopped.await;
        },
    ));
    Member {
        id,
        port,
        dir: dir.to_path_buf(),
        node,
        transport,
        stop: Some(stop),
        server: Some(server),
    }
}

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

impl Member {
    /// Stops Raft and the peer server; returns where to restart it.
    async fn stop(mut self) -> (u64, u16, PathBuf) {
        self.node.shutdown().await.expect("shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("peer server task");
        }
        (self.id, self.port, self.dir.clone())
    }
}

fn pool(name: &str) -> Command {
    Command::PutPool {
        pool: PoolRecord {
            name: name.to_string(),
            description: String::new(),
            backend: "test".into(),
            default_platform: None,
            platforms: Vec::new(),
        },
    }
}

fn pool_names_local(node: &RaftNode) -> BTreeSet<String> {
    node.read_local()
        .expect("read view")
        .pools()
        .expect("pools")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn pool_names(node: &RaftNode) -> BTreeSet<String> {
    node.read()
        .await
        .expect("linearizable read")
        .pools()
        .expect("pools")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Starts three members, bootstraps the first and makes all three voters.
async fn cluster(pki: &Pki, root: &Path) -> Vec<Member> {
    let mut members = Vec::new();
    for id in 1..=3 {
        let tls = pki.member(&format!("n{id}"));
        members.push(start(id, &root.join(format!("n{id}")), listen().await, &tls).await);
    }
    let leader = &members[0].node;
    leader.bootstrap().await.expect("bootstrap");
    wait_until("member 1 leads", || {
        leader.metrics().borrow().state == ServerState::Leader
    })
    .await;
    for member in &members[1..] {
        leader
            .add_learner(member.id, address(member.port))
            .await
            .expect("add learner");
    }
    leader
        .change_voters(BTreeSet::from([1, 2, 3]))
        .await
        .expect("change voters");
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_replicate_forward_and_read_linearizably() {
    let pki = Pki::new("cluster CA");
    let root = TempDir::new().expect("temp dir");
    let members = cluster(&pki, root.path()).await;
    let (n1, n2, n3) = (&members[0].node, &members[1].node, &members[2].node);

    assert_eq!(n3.leader().map(|(id, _)| id), Some(1));
    let seen = n1.members();
    assert_eq!(seen.len(), 3);
    for info in &seen {
        assert!(info.voter, "{info:?}");
        assert_eq!(info.node, address(members[info.id as usize - 1].port));
        let role = if info.id == 1 {
            MemberRole::Leader
        } else {
            MemberRole::Follower
        };
        assert_eq!(info.role, role);
        assert!(
            info.matched.is_some(),
            "the leader knows {info:?}'s progress"
        );
    }
    assert!(n2.members().iter().all(|info| info.matched.is_none()));

    assert_eq!(
        n1.propose(pool("on-leader"))
            .await
            .expect("propose on leader"),
        Outcome::Applied
    );
    // Member 2 follows: its proposal is forwarded to member 1.
    assert_eq!(
        n2.propose(pool("on-follower")).await.expect("forwarded"),
        Outcome::Applied
    );
    // Acknowledged through member 2, read through member 3 at once.
    assert!(pool_names(n3).await.contains("on-follower"));
    assert_eq!(
        n3.propose(pool("from-3")).await.expect("forwarded"),
        Outcome::Applied
    );
    assert!(pool_names(n2).await.contains("from-3"));

    let expected: BTreeSet<String> = ["on-leader", "on-follower", "from-3"]
        .into_iter()
        .map(String::from)
        .collect();
    for member in &members {
        wait_until(&format!("member {} converges", member.id), || {
            pool_names_local(&member.node) == expected
        })
        .await;
    }
    for member in members {
        member.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_is_elected_and_writes_continue() {
    let pki = Pki::new("cluster CA");
    let root = TempDir::new().expect("temp dir");
    let mut members = cluster(&pki, root.path()).await;
    members[0]
        .node
        .propose(pool("before"))
        .await
        .expect("propose");
    let old_leader = members.remove(0);
    old_leader.stop().await;

    wait_until("a new leader", || {
        members.iter().any(|m| {
            let metrics = m.node.metrics().borrow().clone();
            metrics.state == ServerState::Leader && metrics.current_leader == Some(m.id)
        })
    })
    .await;
    // Whichever survivor is asked, the write lands (forwarded if need be).
    for (i, member) in members.iter().enumerate() {
        let name = format!("after-{i}");
        assert_eq!(
            member.node.propose(pool(&name)).await.expect("propose"),
            Outcome::Applied
        );
    }
    let expected: BTreeSet<String> = ["before", "after-0", "after-1"]
        .into_iter()
        .map(String::from)
        .collect();
    for member in &members {
        assert_eq!(pool_names(&member.node).await, expected);
    }
    for member in members {
        member.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_kept_down_catches_up_from_a_snapshot() {
    let pki = Pki::new("cluster CA");
    let root = TempDir::new().expect("temp dir");
    let mut members = cluster(&pki, root.path()).await;
    let lagging = members.remove(2);
    let lagging_last_log = lagging.node.metrics().borrow().last_log_index.unwrap_or(0);
    let (id, port, dir) = lagging.stop().await;

    let writes = 3 * SNAPSHOT_EVERY;
    for i in 0..writes {
        members[0]
            .node
            .propose(pool(&format!("pool-{i}")))
            .await
            .expect("propose");
    }
    // The leader's log no longer holds what the lagging member lacks.
    let leader = &members[0].node;
    wait_until("the leader purges its log past the lagging member", || {
        leader
            .metrics()
            .borrow()
            .purged
            .is_some_and(|purged| purged.index > lagging_last_log)
    })
    .await;

    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let tls = pki.member("n3");
    let restarted = start(id, &dir, listener, &tls).await;
    wait_until(
        "the restarted member installs a snapshot and catches up",
        || pool_names_local(&restarted.node).len() == writes as usize,
    )
    .await;
    let metrics = restarted.node.metrics().borrow().clone();
    assert!(
        metrics
            .snapshot
            .is_some_and(|snapshot| snapshot.index > lagging_last_log),
        "caught up through a snapshot: {metrics:?}"
    );
    // The snapshot it keeps on disk is the zstd-compressed image.
    let file = std::fs::read(dir.join("snapshot.bin")).expect("snapshot file");
    assert!(
        file.windows(4).any(|w| w == [0x28, 0xB5, 0x2F, 0xFD]),
        "snapshot.bin holds a zstd frame"
    );
    // And it serves linearizable reads and forwards writes again.
    assert_eq!(
        restarted
            .node
            .propose(pool("after-restart"))
            .await
            .expect("propose"),
        Outcome::Applied
    );
    assert_eq!(pool_names(&restarted.node).await.len(), writes as usize + 1);
    members.push(restarted);
    for member in members {
        member.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_ca_is_refused() {
    let pki = Pki::new("cluster CA");
    let rogue_pki = Pki::new("rogue CA");
    let root = TempDir::new().expect("temp dir");
    let members = cluster(&pki, root.path()).await;
    members[0]
        .node
        .propose(pool("cluster"))
        .await
        .expect("propose");

    let rogue_tls = rogue_pki.member("n4");
    let rogue = start(4, &root.path().join("n4"), listen().await, &rogue_tls).await;

    // The rogue's RPCs to a member fail at the TLS handshake...
    let mut factory = rogue.transport.clone();
    let mut client = factory.new_client(1, &address(members[0].port)).await;
    let vote = VoteRequest::new(Vote::new(1_000, 4), None);
    let refused = client
        .vote(vote, RPCOption::new(Duration::from_secs(5)))
        .await;
    assert!(
        matches!(refused, Err(RPCError::Unreachable(_))),
        "{refused:?}"
    );
    let forwarded = rogue
        .transport
        .forward_propose(&address(members[0].port).peer, &pool("rogue"))
        .await;
    assert!(
        matches!(
            forwarded,
            Err(gantry_raft::RaftError::PeerUnreachable { .. })
        ),
        "{forwarded:?}"
    );

    // ...and the cluster cannot replicate to it: added as a learner, it
    // never receives anything.
    let leader = &members[0].node;
    leader
        .raft()
        .add_learner(4, address(rogue.port), false)
        .await
        .expect("membership change commits without the learner");
    // Many heartbeats and retries pass meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let progress = leader
        .members()
        .into_iter()
        .find(|info| info.id == 4)
        .expect("learner listed");
    assert_eq!(progress.role, MemberRole::Learner);
    assert_eq!(progress.matched, None);
    assert_eq!(progress.last_contact_ms, None);
    let rogue_metrics = rogue.node.metrics().borrow().clone();
    assert_eq!(rogue_metrics.last_applied, None);
    assert_eq!(rogue_metrics.current_leader, None);
    assert!(pool_names_local(&rogue.node).is_empty());
    assert!(!pool_names_local(leader).contains("rogue"));

    rogue.stop().await;
    for member in members {
        member.stop().await;
    }
}

/// Answers the state-schema probe as a build whose state hash covers other
/// tables would (one table more, mid-upgrade).
async fn another_schema(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().path() == STATE_SCHEMA_PATH {
        let bytes = bincode::serde::encode_to_vec("0123456789abcdef", bincode::config::standard())
            .expect("encode");
        return bytes.into_response();
    }
    next.run(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_checks_compare_only_members_that_hash_the_same_tables() {
    let pki = Pki::new("cluster CA");
    let root = TempDir::new().expect("temp dir");
    let mut members = cluster(&pki, root.path()).await;
    members[0]
        .node
        .propose(pool("before"))
        .await
        .expect("propose");
    let round = members[0].node.check_states().await.expect("round");
    assert!(
        round
            .checks
            .values()
            .all(|c| c.state == CheckState::Healthy),
        "{round:?}"
    );

    // Member 3 comes back as a build whose hash covers other tables: the
    // round compares nothing and marks nobody.
    let (id, port, dir) = members.remove(2).stop().await;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let tls = pki.member("n3");
    members.push(
        start_serving(id, &dir, listener, &tls, |router| {
            router.layer(axum::middleware::from_fn(another_schema))
        })
        .await,
    );
    let last_log = || members[0].node.metrics().borrow().last_log_index;
    let before = last_log();
    let round = members[0].node.check_states().await.expect("round");
    assert_eq!(
        last_log(),
        before,
        "a round that compares nothing writes no checkpoint"
    );
    assert_eq!(Some(round.index), before);
    assert_eq!(round.checks.len(), 3, "{round:?}");
    for check in round.checks.values() {
        assert_eq!(check.state, CheckState::Uncompared, "{round:?}");
        assert!(
            check
                .detail
                .contains("node 3 hashes schema 0123456789abcdef"),
            "{}",
            check.detail
        );
    }
    assert!(members.iter().all(|m| m.node.state_corrupt().is_none()));

    // A verdict judged under another schema is not taken; under this
    // build's it is, and a healthy one clears it.
    let peer = address(members[1].port).peer;
    let corrupt = StateVerdict::Corrupt {
        index: round.index,
        reason: "a test verdict".into(),
    };
    let transport = &members[0].transport;
    let taken = transport
        .state_verdict(&peer, "0123456789abcdef", &corrupt)
        .await
        .expect("delivered");
    assert!(taken.is_ok());
    assert!(members[1].node.state_corrupt().is_none());
    let schema = gantry_storage::state_hash::state_schema();
    let taken = transport
        .state_verdict(&peer, &schema, &corrupt)
        .await
        .expect("delivered");
    assert!(taken.is_ok());
    assert!(members[1].node.state_corrupt().is_some());
    let healthy = StateVerdict::Healthy { index: round.index };
    let taken = transport
        .state_verdict(&peer, &schema, &healthy)
        .await
        .expect("delivered");
    assert!(taken.is_ok());
    assert!(members[1].node.state_corrupt().is_none());
    for member in members {
        member.stop().await;
    }
}
