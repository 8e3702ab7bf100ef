//! `TlsError`: every failure of the PKI and TLS-configuration code.
//!
//! Invariant: an error about a file names that file and says what is wrong with
//! it, so `gantry tls ...` and a server refusing to start can be acted on
//! without a debugger. Nothing here panics on file contents.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading, creating or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is already there; PKI files are never overwritten.
    #[error("{}: already exists; refusing to overwrite it (move it away first)", path.display())]
    Exists { path: PathBuf },
    /// The file was read but its contents are not what they must be.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A certificate name that is not a simple file-name-safe token.
    #[error("invalid certificate name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    /// A `--dns` name that cannot go into a certificate.
    #[error("invalid DNS name {name:?}: {reason}")]
    BadDnsName { name: String, reason: String },
    /// A certificate (from a handshake, not a file) without a readable Gantry kind.
    #[error("certificate: {reason}")]
    BadCertificate { reason: String },
    /// Generating a key or signing a certificate failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    /// `https` without a CA to trust.
    #[error("https needs --ca FILE or GANTRY_CA")]
    NeedCa,
    /// rustls refused the configuration (e.g. key and certificate do not match).
    #[error("TLS configuration ({}): {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

impl TlsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn bad_file(path: &Path, reason: impl Into<String>) -> Self {
        Self::BadFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
