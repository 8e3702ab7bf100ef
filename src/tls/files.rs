//! Reading PEM files: certificates, chains and private keys.
//!
//! Invariant: every failure names the file and the reason (missing, unreadable,
//! not PEM, no item of the wanted type); contents are never trusted to parse.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;

pub fn read_bytes(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::io(path, error))
}

/// All `CERTIFICATE` sections of a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from_pem(path, &read_bytes(path)?)
}

/// All `CERTIFICATE` sections of PEM text read from `path`; at least one.
pub fn certs_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::bad_file(path, format!("bad PEM: {error}")))?;
    if certs.is_empty() {
        return Err(TlsError::bad_file(path, "no PEM CERTIFICATE in it"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read_bytes(path)?).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::bad_file(path, "no PEM private key in it")
        }
        error => TlsError::bad_file(path, format!("bad PEM: {error}")),
    })
}
