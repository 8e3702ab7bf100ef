//! rustls configurations for the two ports and for the API's clients.
//!
//! Owns which certificate kind is accepted where:
//! - peer (Raft) port, both directions: only `server` certificates from the
//!   cluster CA, TLS 1.3 only, ALPN `h2`; operator and client certificates can
//!   never join the Raft group;
//! - API port: a client certificate is optional; if one is presented it must
//!   chain to the cluster CA and carry a Gantry kind (operator, client, or
//!   server for a peer forwarding a request); ALPN `h2`, `http/1.1`;
//! - API clients (CLI, operators): trust only the given CA file, standard
//!   hostname checks; no system roots.
//!
//! Invariants: the crypto provider is always `ring`, passed explicitly, so no
//! process-wide default provider is ever installed or needed (static musl
//! builds have no aws-lc); the kind check runs after, never instead of, the
//! webpki chain and EKU checks; this node's own certificate must be of kind
//! `server` for the server-side and peer configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};

use super::error::TlsError;
use super::files::{read_certs, read_key};
use super::kind::{cert_kind, CertKind};

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";
const PEER_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const API_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The three files a node or operator is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// This holder's certificate (`NAME.pem`).
    pub cert: PathBuf,
    /// This holder's private key (`NAME-key.pem`).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The layout `gantry tls` writes when the CA and the certificate share
    /// one directory: `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME-key.pem`.
    #[cfg(test)]
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        let (ca, _) = super::pki::ca_paths(dir);
        let (cert, key) = super::pki::leaf_paths(dir, name);
        Self { ca, cert, key }
    }
}

/// The Raft peer port: mutual TLS, server-kind certificates only.
pub fn peer_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let roots = load_roots(&files.ca)?;
    let (chain, key) = load_identity(&files.cert, &files.key, &[CertKind::Server])?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| config_error(&files.ca, error))?;
    let verifier = Arc::new(KindClientVerifier {
        inner,
        accepted: &[CertKind::Server],
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PEER_VERSIONS)
        .map_err(|error| config_error(&files.cert, error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| config_error(&files.key, error))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Dialing a Raft peer: trusts only the cluster CA, presents this node's
/// certificate, and accepts only a server-kind peer.
pub fn peer_client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let roots = load_roots(&files.ca)?;
    let (chain, key) = load_identity(&files.cert, &files.key, &[CertKind::Server])?;
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| config_error(&files.ca, error))?;
    let verifier = Arc::new(KindServerVerifier {
        inner,
        accepted: &[CertKind::Server],
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PEER_VERSIONS)
        .map_err(|error| config_error(&files.cert, error))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|error| config_error(&files.key, error))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The API port: client certificate optional; if presented, it must chain to
/// the cluster CA and carry a Gantry kind (any: operator, client, or a server
/// forwarding for a peer).
pub fn api_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let roots = load_roots(&files.ca)?;
    let (chain, key) = load_identity(&files.cert, &files.key, &[CertKind::Server])?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|error| config_error(&files.ca, error))?;
    let verifier = Arc::new(KindClientVerifier {
        inner,
        accepted: &[CertKind::Operator, CertKind::Client, CertKind::Server],
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(API_VERSIONS)
        .map_err(|error| config_error(&files.cert, error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| config_error(&files.key, error))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// For the CLI (`--ca FILE` / `GANTRY_CA`) and operators (with `identity` =
/// `(cert, key)`). Trusts only `ca`; system roots are not supported yet, so
/// `ca = None` is an error.
pub fn api_client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let ca = ca.ok_or(TlsError::NeedCa)?;
    let provider = provider();
    let roots = load_roots(ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(API_VERSIONS)
        .map_err(|error| config_error(ca, error))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let (chain, key_der) = load_identity(cert, key, &CertKind::ALL)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|error| config_error(key, error))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Who is on the other end of an accepted connection: the kind and name of
/// the end-entity certificate it presented (`None` if none or no kind).
#[cfg(test)]
pub fn peer_identity(conn_certs: &[CertificateDer<'_>]) -> Option<(CertKind, String)> {
    cert_kind(conn_certs.first()?).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .map_err(|error| TlsError::bad_file(ca, format!("unusable CA certificate: {error}")))?;
    }
    Ok(Arc::new(roots))
}

/// Loads a certificate chain and its key, checking the end-entity's kind.
fn load_identity(
    cert: &Path,
    key: &Path,
    kinds: &[CertKind],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(cert)?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::bad_file(cert, "no PEM CERTIFICATE in it"))?;
    let (kind, name) =
        cert_kind(leaf).map_err(|error| TlsError::bad_file(cert, error.to_string()))?;
    if !kinds.contains(&kind) {
        return Err(TlsError::bad_file(
            cert,
            format!(
                "a {kind} certificate (for {name:?}) cannot be used here; \
                 it needs a {} certificate",
                kinds_text(kinds)
            ),
        ));
    }
    Ok((chain, read_key(key)?))
}

fn kinds_text(kinds: &[CertKind]) -> String {
    kinds
        .iter()
        .map(|kind| kind.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The kind check run after webpki accepted the chain.
fn check_kind(end_entity: &CertificateDer<'_>, accepted: &[CertKind]) -> Result<(), rustls::Error> {
    let refuse = |reason: String| {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            TlsError::BadCertificate { reason },
        ))))
    };
    let (kind, name) = cert_kind(end_entity).map_err(|error| refuse(error.to_string()))?;
    if accepted.contains(&kind) {
        Ok(())
    } else {
        Err(refuse(format!(
            "{kind} certificate {name:?} is not accepted here (only {})",
            kinds_text(accepted)
        )))
    }
}

/// webpki's client verification, then the kind check.
#[derive(Debug)]
struct KindClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: &'static [CertKind],
}

impl ClientCertVerifier for KindClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_kind(end_entity, self.accepted)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki's server verification (chain, EKU, name), then the kind check.
#[derive(Debug)]
struct KindServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    accepted: &'static [CertKind],
}

impl ServerCertVerifier for KindServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_kind(end_entity, self.accepted)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
