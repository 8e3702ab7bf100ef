//! An HTTPS client for servers outside the cluster's own PKI (an identity
//! provider): the system's CA roots, plus a private CA where a site runs
//! one. HTTPS only; redirects are not followed (an OAuth endpoint answers
//! where it is asked).

use std::time::Duration;

/// A client trusting the system's roots and the PEM certificates of
/// `extra_ca_pem`, each request bounded by `timeout`.
pub fn public_https_client(
    extra_ca_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")));
    for certificate in rustls_native_certs::load_native_certs().certs {
        if let Ok(certificate) = reqwest::Certificate::from_der(certificate.as_ref()) {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(pem) = extra_ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|error| format!("no PEM certificate in it: {error}"))?;
        if certificates.is_empty() {
            return Err("no PEM certificate in it".into());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|error| format!("building the HTTPS client: {error}"))
}
