//! The air-gapped PKI behind `gantry tls ca create` and `gantry tls cert create`.
//!
//! Owns the on-disk layout (`DIR/ca.pem`, `DIR/ca-key.pem`, `DIR/NAME.pem`,
//! `DIR/NAME-key.pem`) and what goes into each certificate. Invariants:
//! - keys are ECDSA P-256 (verified by rustls with the `ring` provider);
//! - existing files are never overwritten: both outputs are checked before
//!   anything is generated, and each file is created exclusively;
//! - private keys are created with mode 0600 from the start (never widened);
//! - the CA (CN "Gantry CA", OU unique per CA) is valid 10 years with
//!   path length 0; leaves 2 years, never past
//!   the CA; both start one hour back to absorb clock skew between hosts;
//! - every leaf carries its kind twice: as Extended Key Usage (server:
//!   serverAuth + clientAuth, since servers dial peers; operator/client:
//!   clientAuth) and as the URI SAN read by [`super::kind::cert_kind`];
//! - a server leaf always names addresses: the given ones, else `localhost`
//!   and 127.0.0.1 (said on stderr);
//! - a leaf is only signed if the CA key matches the CA certificate.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::error::TlsError;
use super::files::certs_from_pem;
use super::kind::{validate_name, CertKind};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CA_COMMON_NAME: &str = "Gantry CA";
const CA_VALID_DAYS: i64 = 3650;
const LEAF_VALID_DAYS: i64 = 730;
const BACKDATE: Duration = Duration::hours(1);
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// `(DIR/ca.pem, DIR/ca-key.pem)`.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE))
}

/// `(DIR/NAME.pem, DIR/NAME-key.pem)`.
pub fn leaf_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// Creates a new CA in `out` (created if missing): `ca.pem` and `ca-key.pem`.
pub fn create_ca(out: &Path) -> Result<(), TlsError> {
    let (cert_path, key_path) = ca_paths(out);
    refuse_existing(&[&cert_path, &key_path])?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    // Every CA gets its own subject, so a certificate from another Gantry CA
    // fails as "unknown issuer" instead of as a bad signature under this one.
    params.distinguished_name.push(
        DnType::OrganizationalUnitName,
        format!("ca-{}", uuid::Uuid::new_v4().simple()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALID_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "the CA certificate",
            source,
        })?;
    write_pair(
        out,
        &cert_path,
        &cert.pem(),
        &key_path,
        &key.serialize_pem(),
    )
}

/// Issues a `kind` certificate for `name`, signed by the CA in `ca_dir`, into
/// `out` (created if missing): `NAME.pem` and `NAME-key.pem`.
pub fn create_cert(
    ca_dir: &Path,
    name: &str,
    kind: CertKind,
    dns: &[String],
    ips: &[IpAddr],
    out: &Path,
) -> Result<(), TlsError> {
    issue(ca_dir, name, kind, dns, ips, out, kind_usages(kind))
}

/// The Extended Key Usages a certificate of `kind` gets.
pub fn kind_usages(kind: CertKind) -> Vec<ExtendedKeyUsagePurpose> {
    match kind {
        CertKind::Server => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        CertKind::Operator | CertKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
}

/// [`create_cert`] with the Extended Key Usages given (tests use it to forge
/// a certificate whose EKU and kind disagree).
pub(super) fn issue(
    ca_dir: &Path,
    name: &str,
    kind: CertKind,
    dns: &[String],
    ips: &[IpAddr],
    out: &Path,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(), TlsError> {
    validate_name(name)?;
    let (cert_path, key_path) = leaf_paths(out, name);
    refuse_existing(&[&cert_path, &key_path])?;
    let ca = load_ca(ca_dir)?;

    let mut sans = Vec::new();
    let (dns, ips): (Vec<String>, Vec<IpAddr>) =
        if kind == CertKind::Server && dns.is_empty() && ips.is_empty() {
            eprintln!(
                "note: server certificate {name:?} has no --dns or --ip; \
                 it names localhost and 127.0.0.1 only"
            );
            (
                vec!["localhost".to_string()],
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )
        } else {
            (dns.to_vec(), ips.to_vec())
        };
    for host in &dns {
        let ia5 = host
            .as_str()
            .try_into()
            .map_err(|error: rcgen::Error| TlsError::BadDnsName {
                name: host.clone(),
                reason: error.to_string(),
            })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    let uri = kind
        .uri(name)
        .as_str()
        .try_into()
        .map_err(|source| TlsError::Generate {
            what: "the kind URI",
            source,
        })?;
    sans.push(SanType::URI(uri));

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages;
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = (now + Duration::days(LEAF_VALID_DAYS)).min(ca.not_after);

    let key = new_key()?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| TlsError::Generate {
            what: "the certificate",
            source,
        })?;
    write_pair(
        out,
        &cert_path,
        &cert.pem(),
        &key_path,
        &key.serialize_pem(),
    )
}

struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

fn load_ca(dir: &Path) -> Result<LoadedCa, TlsError> {
    let (cert_path, key_path) = ca_paths(dir);
    let cert_pem = read_text(&cert_path)?;
    let key_pem = read_text(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|error| {
        TlsError::bad_file(&key_path, format!("not a PEM private key: {error}"))
    })?;
    let der = certs_from_pem(&cert_path, cert_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::bad_file(&cert_path, "no PEM CERTIFICATE in it"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|error| {
        TlsError::bad_file(&cert_path, format!("not an X.509 certificate: {error}"))
    })?;
    if !parsed.is_ca() {
        return Err(TlsError::bad_file(&cert_path, "not a CA certificate"));
    }
    if parsed.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key)
    {
        return Err(TlsError::bad_file(
            &key_path,
            format!("this key does not belong to {}", cert_path.display()),
        ));
    }
    let not_after = OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
        .map_err(|error| TlsError::bad_file(&cert_path, format!("bad notAfter: {error}")))?;
    if not_after <= OffsetDateTime::now_utc() {
        return Err(TlsError::bad_file(
            &cert_path,
            format!("the CA expired at {not_after}; create a new one"),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|error| {
        TlsError::bad_file(&cert_path, format!("unusable CA certificate: {error}"))
    })?;
    Ok(LoadedCa { issuer, not_after })
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|error| TlsError::io(path, error))
}

fn new_key() -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
        what: "a P-256 key",
        source,
    })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    for path in paths {
        // symlink_metadata: a dangling symlink is "existing" too.
        if path.symlink_metadata().is_ok() {
            return Err(TlsError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Writes the key (0600) then the certificate (0644), both exclusively; if the
/// certificate cannot be written, the key just written is removed again.
fn write_pair(
    dir: &Path,
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::io(dir, error))?;
    write_new(key_path, key_pem, KEY_MODE)?;
    if let Err(error) = write_new(cert_path, cert_pem, CERT_MODE) {
        let _ = std::fs::remove_file(key_path);
        return Err(error);
    }
    Ok(())
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::Exists {
                path: path.to_path_buf(),
            },
            _ => TlsError::io(path, error),
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| TlsError::io(path, error))
}
