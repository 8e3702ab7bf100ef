//! Certificate kinds and how a certificate says which kind it is.
//!
//! Every certificate the Gantry CA issues names its kind and holder in exactly
//! one URI subject-alternative name, `gantry://kind/<server|operator|client>/<name>`.
//! That URI is what verification reads (the Extended Key Usage set at issue
//! time is a second, independent fence enforced by webpki). Invariants:
//! - `name` is a simple token (see [`validate_name`]), so it is also a safe
//!   file name and a safe path segment in the URI;
//! - a certificate with no Gantry kind URI, or with more than one, has no kind.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;

use super::error::TlsError;

/// The URI scheme and authority that carries the kind.
pub const KIND_URI_PREFIX: &str = "gantry://kind/";

/// Longest certificate name.
pub const NAME_LEN_MAX: usize = 64;

/// Who holds a certificate, and so where it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum CertKind {
    /// A control-plane node: serves the API and Raft peer ports, dials peers.
    Server,
    /// A backend operator dialing into the API (mTLS + token).
    Operator,
    /// A user or tool calling the API.
    Client,
}

impl CertKind {
    pub const ALL: [CertKind; 3] = [CertKind::Server, CertKind::Operator, CertKind::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Server => "server",
            CertKind::Operator => "operator",
            CertKind::Client => "client",
        }
    }

    /// The URI SAN naming this kind and holder.
    pub fn uri(self, name: &str) -> String {
        format!("{KIND_URI_PREFIX}{}/{name}", self.as_str())
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown certificate kind {s:?} (server, operator or client)"))
    }
}

/// Checks that `name` is a simple token: 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), TlsError> {
    let bad = |reason: &str| TlsError::BadName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > NAME_LEN_MAX {
        return Err(bad("it is longer than 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("it must start with a letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Reads the kind and holder name from a DER certificate's Gantry URI SAN.
pub fn cert_kind(der: &[u8]) -> Result<(CertKind, String), TlsError> {
    let bad = |reason: String| TlsError::BadCertificate { reason };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| bad(format!("not an X.509 certificate: {error}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|error| bad(format!("unreadable subject alternative names: {error}")))?;
    let mut found = None;
    for general_name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::URI(uri) = general_name else {
            continue;
        };
        let Some(rest) = uri.strip_prefix(KIND_URI_PREFIX) else {
            continue;
        };
        if found.is_some() {
            return Err(bad("more than one Gantry kind URI".to_string()));
        }
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| bad(format!("malformed Gantry kind URI {uri:?}")))?;
        let kind = kind
            .parse::<CertKind>()
            .map_err(|error| bad(format!("{uri:?}: {error}")))?;
        validate_name(name).map_err(|error| bad(format!("{uri:?}: {error}")))?;
        found = Some((kind, name.to_string()));
    }
    found.ok_or_else(|| {
        bad(format!(
            "no Gantry kind URI ({KIND_URI_PREFIX}...); not issued by `gantry tls cert create`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_text_round_trips() {
        for kind in CertKind::ALL {
            assert_eq!(kind.to_string().parse::<CertKind>(), Ok(kind));
        }
        assert!("admin".parse::<CertKind>().is_err());
        assert_eq!(
            CertKind::Operator.uri("op-1"),
            "gantry://kind/operator/op-1"
        );
    }

    #[test]
    fn names_are_simple_tokens() {
        for good in ["node1", "a", "op.west-2_b", "9lives"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../ca",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_has_no_kind() {
        assert!(matches!(
            cert_kind(b"not a certificate"),
            Err(TlsError::BadCertificate { .. })
        ));
    }
}
