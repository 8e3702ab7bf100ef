//! Sign-in through an OpenID provider: the IdP's ID tokens verified by
//! every member on its own, against the keys the IdP publishes.
//!
//! Invariants: an ID token is taken only when it is signed with an
//! asymmetric algorithm (never `none` or HMAC, whatever its header says) by
//! a key of the configured issuer's JWKS, names that issuer and one of the
//! configured client ids as audience, and has not expired (30 s leeway for
//! clocks); its user comes from the configured claim and must be a Gantry
//! name. Discovery and keys are fetched over HTTPS only and kept: a member
//! keeps verifying with the keys it holds while the IdP is down, and asks
//! again for an unknown key at most once per [`REFETCH_INTERVAL`], so a
//! stream of made-up key ids cannot make it hammer the IdP.

use super::error::ApiError;
use super::names;
use axum::http::StatusCode;
use gantry_storage::config::IdpConfig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Least time between two fetches of the IdP's keys for a key it did not
/// publish before.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch with nothing kept, the failure is answered again
/// for this long instead of asking the IdP (unauthenticated requests reach
/// discovery through `/api/auth/login`; they must not keep a member
/// waiting on an IdP that is down).
const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// How long one request to the IdP may take.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated between the IdP and this member.
const LEEWAY_SECONDS: u64 = 30;

/// The parts of the IdP's discovery document Gantry uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

/// Who an ID token says signed in.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// When the IdP issued the token (`iat`), in milliseconds.
    pub issued_at_ms: i64,
}

struct Provider {
    discovery: Discovery,
    keys: Arc<Vec<(Option<String>, DecodingKey)>>,
    fetched_at: Instant,
}

/// The IdP's discovery and keys, fetched on first use and kept.
pub struct IdpKeys {
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Provider>>,
    /// The last fetch that failed with nothing kept: when, and why.
    failure: std::sync::Mutex<Option<(Instant, String)>>,
    /// Users whose first sign-in this member is recording now.
    first_sign_ins: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn credential_error(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "CREDENTIAL", message)
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVER", message)
}

/// The algorithms an IdP may sign ID tokens with.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl IdpKeys {
    /// A client trusting the system's roots and, if given, the CA
    /// certificates of `extra_ca_pem` (an IdP with a private CA).
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<IdpKeys, String> {
        let http = crate::tls::public_https_client(extra_ca_pem, IDP_TIMEOUT)
            .map_err(|error| format!("--idp-ca: {error}"))?;
        Ok(IdpKeys {
            http,
            provider: tokio::sync::Mutex::new(None),
            failure: std::sync::Mutex::new(None),
            first_sign_ins: Default::default(),
        })
    }

    /// Whether the caller should record `user`'s first sign-in (no one on
    /// this member is recording it already); [`Self::end_first_sign_in`]
    /// when done.
    pub fn begin_first_sign_in(&self, user: &str) -> bool {
        self.first_sign_ins
            .lock()
            .is_ok_and(|mut users| users.insert(user.to_string()))
    }

    pub fn end_first_sign_in(&self, user: &str) {
        if let Ok(mut users) = self.first_sign_ins.lock() {
            users.remove(user);
        }
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|error| format!("{url}: not the JSON expected: {error}"))
    }

    async fn fetch(&self, config: &IdpConfig) -> Result<Provider, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json(&url).await?;
        if discovery.issuer != config.issuer {
            return Err(format!(
                "{url} names issuer '{}', not the configured '{}'",
                discovery.issuer, config.issuer
            ));
        }
        let set: Value = self.fetch_json(&discovery.jwks_uri).await?;
        // Keys this build cannot read (another key type, a key for
        // encryption) are skipped, not fatal: the IdP may publish several.
        let keys: Vec<(Option<String>, DecodingKey)> = set["keys"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
            .filter(|jwk| {
                !matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                )
            })
            .filter_map(|jwk| {
                DecodingKey::from_jwk(&jwk)
                    .ok()
                    .map(|key| (jwk.common.key_id.clone(), key))
            })
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "{} publishes no signing key Gantry can use",
                discovery.jwks_uri
            ));
        }
        Ok(Provider {
            discovery,
            keys: Arc::new(keys),
            fetched_at: Instant::now(),
        })
    }

    /// The discovery document and keys of `config`'s issuer: the ones kept,
    /// or fetched now when none are kept for that issuer, or when `refresh`
    /// and the kept ones are older than [`REFETCH_INTERVAL`].
    async fn provider(
        &self,
        config: &IdpConfig,
        refresh: bool,
    ) -> Result<(Discovery, Arc<Vec<(Option<String>, DecodingKey)>>), String> {
        let mut kept = self.provider.lock().await;
        let usable = kept
            .as_ref()
            .filter(|provider| provider.discovery.issuer == config.issuer);
        if let Some(provider) = usable {
            if !refresh || provider.fetched_at.elapsed() < REFETCH_INTERVAL {
                return Ok((provider.discovery.clone(), provider.keys.clone()));
            }
        }
        if usable.is_none() {
            let recent = self.failure.lock().ok().and_then(|failure| {
                failure
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < FAILURE_HOLD)
                    .map(|(_, error)| error.clone())
            });
            if let Some(error) = recent {
                return Err(error);
            }
        }
        match self.fetch(config).await {
            Ok(provider) => {
                let answer = (provider.discovery.clone(), provider.keys.clone());
                *kept = Some(provider);
                Ok(answer)
            }
            Err(error) => match kept
                .as_mut()
                .filter(|p| p.discovery.issuer == config.issuer)
            {
                // The IdP is down: keep verifying with what was fetched,
                // and wait a full interval before asking again.
                Some(provider) => {
                    provider.fetched_at = Instant::now();
                    tracing::warn!(%error, "the IdP's keys could not be fetched again");
                    Ok((provider.discovery.clone(), provider.keys.clone()))
                }
                None => {
                    if let Ok(mut failure) = self.failure.lock() {
                        *failure = Some((Instant::now(), error.clone()));
                    }
                    Err(error)
                }
            },
        }
    }

    /// The IdP's discovery document (for `/api/auth/login`).
    pub async fn discovery(&self, config: &IdpConfig) -> Result<Discovery, ApiError> {
        self.provider(config, false)
            .await
            .map(|(discovery, _)| discovery)
            .map_err(|error| {
                unavailable(format!("the identity provider cannot be reached: {error}"))
            })
    }

    /// Who `token` signs in, if it is a valid ID token of `config`'s IdP.
    pub async fn verify(&self, config: &IdpConfig, token: &str) -> Result<Identity, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| credential_error(format!("Token is not valid: {error}")))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(credential_error(format!(
                "Token is not valid: an ID token signed with {:?} is not accepted",
                header.alg
            )));
        }
        let pick = |keys: &[(Option<String>, DecodingKey)]| -> Option<DecodingKey> {
            match &header.kid {
                Some(kid) => keys
                    .iter()
                    .find(|(id, _)| id.as_deref() == Some(kid.as_str()))
                    .map(|(_, key)| key.clone()),
                None if keys.len() == 1 => Some(keys[0].1.clone()),
                None => None,
            }
        };
        let (_, keys) = self.provider(config, false).await.map_err(|error| {
            unavailable(format!(
                "the identity provider's keys cannot be fetched to check this token: {error}"
            ))
        })?;
        let key = match pick(&keys) {
            Some(key) => key,
            // A key the IdP did not publish before: it may have rotated.
            None => {
                let (_, keys) = self.provider(config, true).await.map_err(|error| {
                    unavailable(format!(
                        "the identity provider's keys cannot be fetched: {error}"
                    ))
                })?;
                pick(&keys).ok_or_else(|| {
                    credential_error(format!(
                        "Token is not valid: signed with key {:?}, which the identity provider does not publish",
                        header.kid.as_deref().unwrap_or("(none named)")
                    ))
                })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&config.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(super::jwt::refusal)?
            .claims;
        identity(config, &claims)
    }
}

/// The user, groups and issue time an ID token's verified claims give.
fn identity(config: &IdpConfig, claims: &Map<String, Value>) -> Result<Identity, ApiError> {
    let user = claims
        .get(&config.user_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            credential_error(format!(
                "Token is not valid: it has no claim '{}' naming the user (service_auth.idp.user_claim)",
                config.user_claim
            ))
        })?;
    if !names::is_name(user) {
        return Err(credential_error(format!(
            "Token is not valid: the user it names, {user:?}, is not a Gantry user name ({})",
            names::NAME_CHARS
        )));
    }
    let groups = match claims.get(&config.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(group)) => vec![group.clone()],
        _ => Vec::new(),
    };
    let issued_at_ms = claims
        .get("iat")
        .and_then(Value::as_i64)
        .map_or(0, |seconds| seconds.saturating_mul(1000));
    Ok(Identity {
        user: user.to_string(),
        groups,
        issued_at_ms,
    })
}

/// The `iss` a JWT's payload names, read without checking anything (to
/// tell an IdP's ID token from Gantry's own JWT before verifying it).
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> IdpConfig {
        IdpConfig {
            issuer: "https://idp.example".into(),
            client_ids: vec!["gantry-cli".into()],
            ..IdpConfig::default()
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_claims_name_the_user_groups_and_issue_time() {
        let who = identity(
            &config(),
            &claims(json!({"preferred_username": "alice", "groups": ["a", "b"], "iat": 5})),
        )
        .unwrap();
        assert_eq!(
            (who.user.as_str(), who.groups, who.issued_at_ms),
            ("alice", vec!["a".to_string(), "b".to_string()], 5000)
        );
        let who = identity(
            &config(),
            &claims(json!({"preferred_username": "bob", "groups": "a"})),
        )
        .unwrap();
        assert_eq!((who.groups, who.issued_at_ms), (vec!["a".to_string()], 0));
    }

    #[test]
    fn a_missing_or_unusable_user_claim_is_refused() {
        let error = identity(&config(), &claims(json!({"sub": "x"}))).unwrap_err();
        assert!(error.message.contains("preferred_username"), "{error:?}");
        let error = identity(&config(), &claims(json!({"preferred_username": "a b"}))).unwrap_err();
        assert!(
            error.message.contains("not a Gantry user name"),
            "{error:?}"
        );
    }

    #[test]
    fn the_issuer_is_read_from_the_payload() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://idp.example","sub":"x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(unverified_issuer("e30.!!.sig"), None);
    }
}
