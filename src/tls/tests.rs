//! Tests of the PKI and of the rustls configurations: real files in temporary
//! directories and real TLS handshakes over 127.0.0.1 with tokio-rustls.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

use super::config::peer_identity;
use super::error::TlsError;
use super::files::{read_certs, read_key};
use super::kind::cert_kind;
use super::*;

/// A CA in a temporary directory; certificates are issued into the same directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn issue(&self, name: &str, kind: CertKind, dns: &[&str], ips: &[&str]) -> TlsFiles {
        let dns: Vec<String> = dns.iter().map(|host| host.to_string()).collect();
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        create_cert(self.path(), name, kind, &dns, &ips, self.path()).unwrap();
        TlsFiles::in_dir(self.path(), name)
    }

    fn ca(&self) -> std::path::PathBuf {
        ca_paths(self.path()).0
    }

    /// An API client presenting `files`' certificate (any kind), trusting this CA.
    fn client_with(&self, files: &TlsFiles) -> Arc<rustls::ClientConfig> {
        Arc::new(api_client_config(Some(&self.ca()), Some((&files.cert, &files.key))).unwrap())
    }

    /// An API client without a certificate, trusting this CA.
    fn anonymous_client(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(api_client_config(Some(&self.ca()), None).unwrap())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A server config with no kind checks at all, serving whatever `files` holds
/// (to test that clients refuse what a misconfigured peer presents).
fn raw_server_config(files: &TlsFiles) -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        read_certs(&files.cert).unwrap(),
        read_key(&files.key).unwrap(),
    )
    .unwrap();
    Arc::new(config)
}

/// One TLS connection over 127.0.0.1: the server writes two bytes once the
/// handshake is done and the client reads them (in TLS 1.3 the client learns
/// that its certificate was refused only then). `Ok` carries who the server
/// saw; `Err` each side's failure, prefixed `client:` / `server:`.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<Option<(CertKind, String)>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|error| format!("server: {error}"))?;
        let identity = tls.get_ref().1.peer_certificates().and_then(peer_identity);
        tls.write_all(b"ok")
            .await
            .map_err(|error| format!("server: {error}"))?;
        let _ = tls.shutdown().await;
        Ok::<_, String>(identity)
    });
    let server_name = ServerName::try_from(server_name.to_string()).unwrap();
    let client_side = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(server_name, tcp)
            .await
            .map_err(|error| format!("client: {error}"))?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf)
            .await
            .map_err(|error| format!("client: {error}"))?;
        Ok::<_, String>(())
    };
    let (client_result, server_result) = tokio::time::timeout(Duration::from_secs(20), async {
        let client_result = client_side.await;
        (client_result, server_task.await.unwrap())
    })
    .await
    .expect("handshake timed out");
    match (client_result, server_result) {
        (Ok(()), Ok(identity)) => Ok(identity),
        (Ok(()), Err(server)) => Err(server),
        (Err(client), Ok(_)) => Err(client),
        (Err(client), Err(server)) => Err(format!("{client}; {server}")),
    }
}

#[test]
fn ca_and_certs_are_written_with_private_keys_0600() {
    let pki = Pki::new();
    let (ca_cert, ca_key) = ca_paths(pki.path());
    assert_eq!(mode(&ca_key), 0o600);
    let ca_der = read_certs(&ca_cert).unwrap().remove(0);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert_eq!(
        ca.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "Gantry CA"
    );
    let years = |validity: &x509_parser::certificate::Validity| {
        (validity.not_after.timestamp() - validity.not_before.timestamp()) / (365 * 86400)
    };
    assert_eq!(years(ca.validity()), 10);

    for (name, kind) in [
        ("node1", CertKind::Server),
        ("op1", CertKind::Operator),
        ("cli", CertKind::Client),
    ] {
        let out = pki.path().join("issued");
        create_cert(pki.path(), name, kind, &[], &[], &out).unwrap();
        let (cert, key) = leaf_paths(&out, name);
        assert_eq!(cert, out.join(format!("{name}.pem")));
        assert_eq!(key, out.join(format!("{name}-key.pem")));
        assert_eq!(mode(&key), 0o600, "{name}");
        let der = read_certs(&cert).unwrap().remove(0);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!leaf.is_ca());
        assert_eq!(years(leaf.validity()), 2);
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth, "{name}");
        assert_eq!(eku.server_auth, kind == CertKind::Server, "{name}");
    }
}

#[test]
fn existing_files_are_never_overwritten() {
    let pki = Pki::new();
    let (ca_cert, _) = ca_paths(pki.path());
    let before = std::fs::read(&ca_cert).unwrap();
    let error = create_ca(pki.path()).unwrap_err();
    assert!(
        matches!(&error, TlsError::Exists { path } if *path == ca_cert),
        "{error}"
    );
    assert!(
        error.to_string().contains("refusing to overwrite"),
        "{error}"
    );
    assert_eq!(std::fs::read(&ca_cert).unwrap(), before);

    pki.issue("node1", CertKind::Server, &[], &[]);
    let (cert, key) = leaf_paths(pki.path(), "node1");
    let before = std::fs::read(&key).unwrap();
    let error =
        create_cert(pki.path(), "node1", CertKind::Client, &[], &[], pki.path()).unwrap_err();
    assert!(
        matches!(&error, TlsError::Exists { path } if *path == cert),
        "{error}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // A stale key alone also blocks issuing, and nothing is written.
    let (cert2, key2) = leaf_paths(pki.path(), "node2");
    std::fs::write(&key2, "stale").unwrap();
    let error =
        create_cert(pki.path(), "node2", CertKind::Server, &[], &[], pki.path()).unwrap_err();
    assert!(
        matches!(&error, TlsError::Exists { path } if *path == key2),
        "{error}"
    );
    assert!(!cert2.exists());
}

#[test]
fn bad_names_missing_or_mismatched_ca_are_refused_with_the_file_named() {
    let pki = Pki::new();
    for name in ["../evil", "", ".x", "a/b"] {
        let error =
            create_cert(pki.path(), name, CertKind::Client, &[], &[], pki.path()).unwrap_err();
        assert!(
            matches!(error, TlsError::BadName { .. }),
            "{name:?}: {error}"
        );
    }

    let empty = tempfile::tempdir().unwrap();
    let error =
        create_cert(empty.path(), "x", CertKind::Client, &[], &[], empty.path()).unwrap_err();
    assert!(error.to_string().contains("ca.pem"), "{error}");

    // Another CA's key next to this CA's certificate.
    let other = Pki::new();
    let mixed = tempfile::tempdir().unwrap();
    std::fs::copy(pki.ca(), mixed.path().join("ca.pem")).unwrap();
    std::fs::copy(ca_paths(other.path()).1, mixed.path().join("ca-key.pem")).unwrap();
    let error =
        create_cert(mixed.path(), "x", CertKind::Client, &[], &[], mixed.path()).unwrap_err();
    assert!(
        matches!(&error, TlsError::BadFile { path, reason }
            if path.ends_with("ca-key.pem") && reason.contains("does not belong")),
        "{error}"
    );
    assert!(!mixed.path().join("x-key.pem").exists());

    std::fs::write(mixed.path().join("junk.pem"), "not pem at all").unwrap();
    let error = read_certs(&mixed.path().join("junk.pem")).unwrap_err();
    assert!(error.to_string().contains("junk.pem"), "{error}");
}

#[test]
fn cert_kind_reads_each_kind_back() {
    let pki = Pki::new();
    for (name, kind) in [
        ("node-1", CertKind::Server),
        ("op.west", CertKind::Operator),
        ("ci_bot", CertKind::Client),
    ] {
        let files = pki.issue(name, kind, &[], &[]);
        let der = read_certs(&files.cert).unwrap().remove(0);
        assert_eq!(cert_kind(&der).unwrap(), (kind, name.to_string()));
        assert_eq!(peer_identity(&[der]), Some((kind, name.to_string())));
    }
    // The CA certificate has no kind.
    let ca = read_certs(&pki.ca()).unwrap();
    assert!(matches!(
        cert_kind(&ca[0]),
        Err(TlsError::BadCertificate { .. })
    ));
    assert_eq!(peer_identity(&ca), None);
    assert_eq!(peer_identity(&[]), None);
}

fn sans(files: &TlsFiles) -> (Vec<String>, Vec<IpAddr>, Vec<String>) {
    let der = read_certs(&files.cert).unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (mut dns, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new());
    for name in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match name {
            GeneralName::DNSName(host) => dns.push(host.to_string()),
            GeneralName::IPAddress(bytes) => {
                let octets: [u8; 4] = (*bytes).try_into().unwrap();
                ips.push(IpAddr::from(octets));
            }
            GeneralName::URI(uri) => uris.push(uri.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips, uris)
}

#[test]
fn server_certificates_always_name_addresses() {
    let pki = Pki::new();
    let bare = pki.issue("node1", CertKind::Server, &[], &[]);
    assert_eq!(
        sans(&bare),
        (
            vec!["localhost".to_string()],
            vec!["127.0.0.1".parse().unwrap()],
            vec!["gantry://kind/server/node1".to_string()]
        )
    );
    let given = pki.issue(
        "node2",
        CertKind::Server,
        &["node2", "n2.example"],
        &["127.0.0.2"],
    );
    assert_eq!(
        sans(&given),
        (
            vec!["node2".to_string(), "n2.example".to_string()],
            vec!["127.0.0.2".parse().unwrap()],
            vec!["gantry://kind/server/node2".to_string()]
        )
    );
    // Operators and clients get no default addresses.
    let op = pki.issue("op1", CertKind::Operator, &[], &[]);
    assert_eq!(sans(&op).0, Vec::<String>::new());
}

#[tokio::test]
async fn peer_port_accepts_only_server_certificates_from_the_cluster_ca() {
    let pki = Pki::new();
    let node1 = pki.issue("node1", CertKind::Server, &[], &[]);
    let node2 = pki.issue("node2", CertKind::Server, &[], &[]);
    let op = pki.issue("op1", CertKind::Operator, &[], &[]);
    let cli = pki.issue("cli", CertKind::Client, &[], &[]);
    let other = Pki::new();
    let stranger = other.issue("node9", CertKind::Server, &[], &[]);
    let server = peer_server_config(&node1).unwrap();

    let seen = handshake(
        server.clone(),
        peer_client_config(&node2).unwrap(),
        "localhost",
    )
    .await;
    assert_eq!(seen, Ok(Some((CertKind::Server, "node2".to_string()))));

    for (files, kind) in [(&op, "operator"), (&cli, "client")] {
        let error = handshake(server.clone(), pki.client_with(files), "localhost")
            .await
            .unwrap_err();
        assert!(
            error.contains("server: invalid peer certificate"),
            "{error}"
        );
        assert!(
            error.contains(&format!("{kind} certificate")) && error.contains("not accepted"),
            "{error}"
        );
    }

    // No certificate at all.
    let error = handshake(server.clone(), pki.anonymous_client(), "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("server: peer sent no certificates"),
        "{error}"
    );

    // A server certificate from another CA (client trusts our CA for the server side).
    let error = handshake(server.clone(), pki.client_with(&stranger), "localhost")
        .await
        .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn peer_client_refuses_a_peer_presenting_a_non_server_certificate() {
    let pki = Pki::new();
    let node1 = pki.issue("node1", CertKind::Server, &[], &[]);
    let client = peer_client_config(&node1).unwrap();

    // An honest operator certificate fails already on its EKU (no serverAuth).
    let op = pki.issue("op1", CertKind::Operator, &["localhost"], &[]);
    let error = handshake(raw_server_config(&op), client.clone(), "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("client: invalid peer certificate"),
        "{error}"
    );

    // A forged one with serverAuth but the operator kind fails on the kind.
    super::pki::issue(
        pki.path(),
        "forged",
        CertKind::Operator,
        &["localhost".to_string()],
        &[],
        pki.path(),
        super::pki::kind_usages(CertKind::Server),
    )
    .unwrap();
    let forged = TlsFiles::in_dir(pki.path(), "forged");
    let error = handshake(raw_server_config(&forged), client.clone(), "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("operator certificate") && error.contains("not accepted"),
        "{error}"
    );

    // The same forged certificate as a client on the peer port fails the same way.
    let error = handshake(
        peer_server_config(&node1).unwrap(),
        pki.client_with(&forged),
        "localhost",
    )
    .await
    .unwrap_err();
    assert!(error.contains("operator certificate"), "{error}");
}

#[tokio::test]
async fn api_port_takes_no_certificate_or_a_gantry_one_from_the_cluster_ca() {
    let pki = Pki::new();
    let node1 = pki.issue("node1", CertKind::Server, &[], &[]);
    let node2 = pki.issue("node2", CertKind::Server, &[], &[]);
    let op = pki.issue("op1", CertKind::Operator, &[], &[]);
    let cli = pki.issue("cli", CertKind::Client, &[], &[]);
    let server = api_server_config(&node1).unwrap();

    assert_eq!(
        handshake(server.clone(), pki.anonymous_client(), "localhost").await,
        Ok(None)
    );
    for (files, kind, name) in [
        (&op, CertKind::Operator, "op1"),
        (&cli, CertKind::Client, "cli"),
        (&node2, CertKind::Server, "node2"),
    ] {
        assert_eq!(
            handshake(server.clone(), pki.client_with(files), "localhost").await,
            Ok(Some((kind, name.to_string())))
        );
    }

    let other = Pki::new();
    let stranger = other.issue("op9", CertKind::Operator, &[], &[]);
    let error = handshake(server.clone(), pki.client_with(&stranger), "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("server: invalid peer certificate: UnknownIssuer"),
        "{error}"
    );

    // A client trusting another CA refuses this server.
    let wrong_trust = Arc::new(api_client_config(Some(&other.ca()), None).unwrap());
    let error = handshake(server.clone(), wrong_trust, "localhost")
        .await
        .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn server_certificate_verifies_for_its_names_only() {
    let pki = Pki::new();
    let node2 = pki.issue("node2", CertKind::Server, &["node2"], &["127.0.0.2"]);
    let node3 = pki.issue("node3", CertKind::Server, &[], &[]);
    let api = api_server_config(&node2).unwrap();
    let peer = peer_server_config(&node2).unwrap();
    for name in ["node2", "127.0.0.2"] {
        assert!(
            handshake(api.clone(), pki.anonymous_client(), name)
                .await
                .is_ok(),
            "{name}"
        );
        assert!(
            handshake(peer.clone(), peer_client_config(&node3).unwrap(), name)
                .await
                .is_ok(),
            "{name}"
        );
    }
    for name in ["node3", "localhost", "127.0.0.1", "node2.example"] {
        let error = handshake(api.clone(), pki.anonymous_client(), name)
            .await
            .unwrap_err();
        assert!(error.contains("not valid for name"), "{name}: {error}");
        let error = handshake(peer.clone(), peer_client_config(&node3).unwrap(), name)
            .await
            .unwrap_err();
        assert!(error.contains("not valid for name"), "{name}: {error}");
    }
}

#[test]
fn configs_refuse_own_certificates_of_the_wrong_kind_and_name_missing_files() {
    let pki = Pki::new();
    let op = pki.issue("op1", CertKind::Operator, &[], &[]);
    for result in [
        peer_server_config(&op).map(|_| ()),
        peer_client_config(&op).map(|_| ()),
        api_server_config(&op).map(|_| ()),
    ] {
        let error = result.unwrap_err();
        assert!(
            matches!(&error, TlsError::BadFile { path, reason }
                if *path == op.cert && reason.contains("operator certificate")),
            "{error}"
        );
    }
    // Operators use their certificate as API clients.
    assert!(api_client_config(Some(&op.ca), Some((&op.cert, &op.key))).is_ok());

    let error = api_client_config(None, None).unwrap_err();
    assert_eq!(error.to_string(), "https needs --ca FILE or GANTRY_CA");

    let missing = TlsFiles::in_dir(&pki.path().join("nowhere"), "node1");
    let error = peer_server_config(&missing).unwrap_err();
    assert!(
        matches!(&error, TlsError::Io { path, .. } if *path == missing.ca),
        "{error}"
    );

    // A key that does not match the certificate.
    let node1 = pki.issue("node1", CertKind::Server, &[], &[]);
    let mismatched = TlsFiles {
        key: pki.issue("node2", CertKind::Server, &[], &[]).key,
        ..node1
    };
    let error = api_server_config(&mismatched).unwrap_err();
    assert!(
        matches!(&error, TlsError::Config { path, .. } if *path == mismatched.key),
        "{error}"
    );
}

#[derive(clap::Parser)]
struct TestCli {
    #[command(subcommand)]
    command: TestTop,
}

#[derive(clap::Subcommand)]
enum TestTop {
    /// As main.rs wires it.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

fn parse(args: &[&str]) -> TlsCommand {
    let TestTop::Tls { command } = TestCli::try_parse_from(args).unwrap().command;
    command
}

#[test]
fn command_line_is_the_fixed_interface() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("certs");
    let ca_text = ca.to_str().unwrap();
    let out_text = out.to_str().unwrap();
    run_tls(parse(&["gantry", "tls", "ca", "create", "--out", ca_text])).unwrap();
    assert!(ca.join("ca.pem").is_file() && ca.join("ca-key.pem").is_file());

    let command = parse(&[
        "gantry",
        "tls",
        "cert",
        "create",
        "--ca",
        ca_text,
        "--name",
        "node2",
        "--kind",
        "server",
        "--dns",
        "node2",
        "--dns",
        "node2.lan",
        "--ip",
        "127.0.0.2",
        "--ip",
        "::1",
        "--out",
        out_text,
    ]);
    let TlsCommand::Cert {
        command: CertCommand::Create {
            ref dns, ref ip, ..
        },
    } = command
    else {
        panic!("parsed {command:?}");
    };
    assert_eq!(dns, &["node2", "node2.lan"]);
    assert_eq!(ip.len(), 2);
    run_tls(command).unwrap();
    assert!(out.join("node2.pem").is_file() && out.join("node2-key.pem").is_file());
    assert!(run_tls(parse(&[
        "gantry", "tls", "cert", "create", "--ca", ca_text, "--name", "node2", "--kind", "client",
        "--out", out_text,
    ]))
    .is_err());
    assert!(TestCli::try_parse_from([
        "gantry", "tls", "cert", "create", "--ca", ca_text, "--name", "x", "--kind", "admin",
        "--out", out_text,
    ])
    .is_err());
}
