//! Signing in through the server's identity provider, as OSMO's CLI does:
//! the authorization code flow with PKCE (a browser, a callback on
//! loopback) and the device code flow (a code to enter elsewhere), and
//! refreshing the ID token with the refresh token when it expires.
//!
//! Invariants: the IdP's endpoints and client ids come from the server's
//! `/api/auth/login`; everything sent to the IdP goes over HTTPS (system
//! roots plus `--idp-ca`); a PKCE callback is taken only with the state
//! this sign-in sent, and an ID token only with the nonce it sent; tokens
//! are kept only in the 0600 login file, never printed.

use super::config::{write_config_file, IdpLogin};
use anyhow::{bail, Context};
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What OSMO's CLI asks the IdP for.
pub const DEFAULT_SCOPE: &str = "openid offline_access profile";
/// How long one request to the IdP may take.
const IDP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a PKCE sign-in waits for the browser to come back.
const CALLBACK_WAIT: Duration = Duration::from_secs(300);
/// An ID token this close to its expiry is refreshed first.
const EXPIRY_MARGIN_SECS: i64 = 30;

/// How `gantry login` signs in when no token is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// An access token (`--token`)
    Token,
    /// The browser: authorization code with PKCE, back to a loopback port
    Pkce,
    /// A code to enter on another device (headless machines)
    Device,
}

/// The IdP as the server describes it (`/api/auth/login`).
struct LoginInfo {
    device_endpoint: Option<String>,
    device_client_id: Option<String>,
    browser_endpoint: Option<String>,
    browser_client_id: Option<String>,
    token_endpoint: String,
}

fn field(info: &Value, name: &str) -> Option<String> {
    info[name]
        .as_str()
        .filter(|text| !text.is_empty())
        .map(str::to_string)
}

fn login_info(info: &Value) -> anyhow::Result<LoginInfo> {
    let Some(token_endpoint) = field(info, "token_endpoint") else {
        bail!("this server names no identity provider (its /api/auth/login has no token_endpoint): sign in with --token");
    };
    Ok(LoginInfo {
        device_endpoint: field(info, "device_endpoint"),
        device_client_id: field(info, "device_client_id"),
        browser_endpoint: field(info, "browser_endpoint"),
        browser_client_id: field(info, "browser_client_id"),
        token_endpoint,
    })
}

/// The HTTPS client for the IdP.
pub fn idp_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let pem = match ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    crate::tls::public_https_client(pem.as_deref(), IDP_TIMEOUT).map_err(|error| match ca {
        Some(path) => anyhow::anyhow!("--idp-ca {}: {error}", path.display()),
        None => anyhow::anyhow!("{error}"),
    })
}

fn random_token(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| anyhow::anyhow!("random bytes: {error}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

/// The claims of a JWT's payload, unverified (the server verifies).
fn claims(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `id_token` expires within the margin (or cannot be read).
pub fn expiring(id_token: &str) -> bool {
    let now = chrono::Utc::now().timestamp();
    claims(id_token)
        .and_then(|claims| claims.get("exp").and_then(Value::as_i64))
        .is_none_or(|exp| exp - EXPIRY_MARGIN_SECS <= now)
}

/// POSTs a form to the IdP's token endpoint; its JSON answer, or the
/// IdP's error.
async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let response = http
        .post(endpoint)
        .form(form)
        .send()
        .await
        .with_context(|| format!("reaching the identity provider at {endpoint}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{endpoint} answered {status} without JSON"))?;
    if !status.is_success() && body.get("error").is_none() {
        bail!("{endpoint} answered {status}: {body}");
    }
    Ok(body)
}

fn id_token_of(answer: &Value, endpoint: &str) -> anyhow::Result<String> {
    if let Some(error) = answer["error"].as_str() {
        let description = answer["error_description"].as_str().unwrap_or("");
        bail!("the identity provider refused: {error} {description}");
    }
    field(answer, "id_token")
        .with_context(|| format!("{endpoint} returned no ID token (is `openid` in the scope?)"))
}

/// The device code flow: prints where to go and the code, then waits.
async fn device(
    http: &reqwest::Client,
    info: &LoginInfo,
    scope: &str,
) -> anyhow::Result<(String, Option<String>, String)> {
    let endpoint = info.device_endpoint.as_deref().context(
        "this server's identity provider offers no device code sign-in: use --method pkce",
    )?;
    let client_id = info
        .device_client_id
        .clone()
        .context("this server names no device client id")?;
    let start = token_request(
        http,
        endpoint,
        &[("client_id", &client_id), ("scope", scope)],
    )
    .await?;
    if let Some(error) = start["error"].as_str() {
        bail!("the identity provider refused the device sign-in: {error}");
    }
    let device_code = field(&start, "device_code").context("no device_code in the answer")?;
    let mut interval = start["interval"].as_u64().unwrap_or(5).max(1);
    let expires_in = start["expires_in"].as_u64().unwrap_or(600);
    match (
        field(&start, "verification_uri_complete"),
        field(&start, "verification_uri"),
    ) {
        (Some(complete), _) => println!("Visit {complete} and complete authentication."),
        (None, Some(uri)) => println!(
            "Visit {uri} and enter the following code: {}",
            field(&start, "user_code").unwrap_or_default()
        ),
        (None, None) => bail!("the identity provider gave no verification URI"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(expires_in);
    loop {
        if tokio::time::Instant::now() > deadline {
            bail!("the device sign-in was not completed in time");
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let answer = token_request(
            http,
            &info.token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
                ("client_id", &client_id),
            ],
        )
        .await?;
        match answer["error"].as_str() {
            Some("authorization_pending") => continue,
            Some("slow_down") => interval += 5,
            _ => {
                let id_token = id_token_of(&answer, &info.token_endpoint)?;
                return Ok((id_token, field(&answer, "refresh_token"), client_id));
            }
        }
    }
}

/// Opens `url` in the user's browser: `$BROWSER` (with `%s` for the URL,
/// as Python's `webbrowser`), else `xdg-open`; false when neither runs.
fn open_browser(url: &str) -> bool {
    let spawn = |program: &str, args: Vec<String>| {
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .is_ok()
    };
    if let Ok(browsers) = std::env::var("BROWSER") {
        for browser in browsers.split(':').filter(|b| !b.trim().is_empty()) {
            let Some(mut words) = shlex::split(browser) else {
                continue;
            };
            if words.is_empty() {
                continue;
            }
            if words.iter().any(|word| word.contains("%s")) {
                words = words
                    .into_iter()
                    .map(|word| word.replace("%s", url))
                    .collect();
            } else {
                words.push(url.to_string());
            }
            let program = words.remove(0);
            if spawn(&program, words) {
                return true;
            }
        }
    }
    spawn("xdg-open", vec![url.to_string()])
}

/// What the browser brought back to the loopback callback.
type Callback = std::collections::HashMap<String, String>;

/// The authorization code flow with PKCE: a one-route listener on
/// loopback, the browser sent to the IdP, the code exchanged.
async fn pkce(
    http: &reqwest::Client,
    info: &LoginInfo,
    scope: &str,
    callback_port: u16,
) -> anyhow::Result<(String, Option<String>, String)> {
    let endpoint = info.browser_endpoint.as_deref().context(
        "this server's identity provider offers no browser sign-in: use --method device",
    )?;
    let client_id = info
        .browser_client_id
        .clone()
        .context("this server names no browser client id")?;
    let verifier = random_token(64)?;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    let (state, nonce) = (random_token(32)?, random_token(32)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", callback_port))
        .await
        .with_context(|| format!("listening for the sign-in callback on port {callback_port}"))?;
    let redirect_uri = format!("http://localhost:{}", listener.local_addr()?.port());
    let mut url =
        url::Url::parse(endpoint).with_context(|| format!("authorization endpoint {endpoint}"))?;
    url.query_pairs_mut()
        .append_pair("client_id", &client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_mode", "query")
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Callback>(4);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(
            move |axum::extract::Query(params): axum::extract::Query<Callback>| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(params).await;
                    "Signed in to Gantry: you may close this window."
                }
            },
        ),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("Complete authentication in your browser. If it does not open, visit:");
    println!("{url}");
    open_browser(url.as_str());
    let callback = loop {
        let params = tokio::time::timeout(CALLBACK_WAIT, receiver.recv())
            .await
            .context("the browser did not come back in time")?
            .context("the callback listener stopped")?;
        // Another page's request (or a stale tab) is not this sign-in's.
        if params.get("state") == Some(&state) {
            break params;
        }
    };
    server.abort();
    if let Some(error) = callback.get("error") {
        bail!(
            "browser authentication failed ({error}: {})",
            callback.get("error_description").map_or("", String::as_str)
        );
    }
    let code = callback
        .get("code")
        .context("the browser came back without an authorization code")?;
    let answer = token_request(
        http,
        &info.token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", code),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
        ],
    )
    .await?;
    let id_token = id_token_of(&answer, &info.token_endpoint)?;
    let sent_nonce = claims(&id_token).and_then(|claims| {
        claims
            .get("nonce")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if sent_nonce.as_deref() != Some(nonce.as_str()) {
        bail!("the identity provider returned an ID token for another sign-in (its nonce differs)");
    }
    Ok((id_token, field(&answer, "refresh_token"), client_id))
}

/// Signs in with `method` (Pkce or Device) against the IdP the server at
/// `/api/auth/login` (`info`) names.
pub async fn sign_in(
    method: Method,
    info: &Value,
    idp_ca: Option<PathBuf>,
    scope: &str,
    callback_port: u16,
) -> anyhow::Result<IdpLogin> {
    let info = login_info(info)?;
    let http = idp_client(idp_ca.as_deref())?;
    let (id_token, refresh_token, client_id) = match method {
        Method::Device => device(&http, &info, scope).await?,
        Method::Pkce => pkce(&http, &info, scope, callback_port).await?,
        Method::Token => bail!("--method token needs --token"),
    };
    Ok(IdpLogin {
        id_token,
        refresh_token,
        token_endpoint: info.token_endpoint,
        client_id,
        idp_ca,
    })
}

/// A fresh ID token for `login` from its refresh token; the login file at
/// `path` rewritten with it (another command may read it next).
pub async fn refresh(
    login: &IdpLogin,
    rewrite: impl FnOnce(&IdpLogin) -> std::io::Result<()>,
) -> anyhow::Result<IdpLogin> {
    let Some(refresh_token) = login.refresh_token.as_deref() else {
        bail!("the sign-in has expired and holds no refresh token: run `gantry login` again");
    };
    let http = idp_client(login.idp_ca.as_deref())?;
    let answer = token_request(
        &http,
        &login.token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &login.client_id),
        ],
    )
    .await?;
    let id_token = id_token_of(&answer, &login.token_endpoint)
        .context("refreshing the sign-in failed: run `gantry login` again")?;
    let refreshed = IdpLogin {
        id_token,
        refresh_token: field(&answer, "refresh_token").or_else(|| login.refresh_token.clone()),
        ..login.clone()
    };
    rewrite(&refreshed).context("saving the refreshed sign-in")?;
    Ok(refreshed)
}

/// Writes `login` into the login file at `path`, keeping its other fields.
pub fn save_refreshed(path: &Path, login: &IdpLogin) -> std::io::Result<()> {
    let mut file = super::config::load_config_file(path)
        .map_err(|error| std::io::Error::other(error.to_string()))?
        .unwrap_or_default();
    file.idp = Some(login.clone());
    write_config_file(path, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let part = |value: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        format!("{}.{}.sig", part(&json!({"alg": "RS256"})), part(&claims))
    }

    #[test]
    fn tokens_near_their_expiry_are_refreshed() {
        let now = chrono::Utc::now().timestamp();
        assert!(!expiring(&jwt(json!({"exp": now + 600}))));
        assert!(expiring(&jwt(json!({"exp": now + 10}))));
        assert!(expiring(&jwt(json!({}))));
        assert!(expiring("not-a-jwt"));
    }

    #[test]
    fn a_server_without_an_idp_is_told_apart() {
        let error = login_info(&json!({"token_endpoint": null})).err().unwrap();
        assert!(error.to_string().contains("--token"), "{error}");
        let info = login_info(&json!({"token_endpoint": "https://idp/token", "device_endpoint": "https://idp/device"})).unwrap();
        assert_eq!(info.device_endpoint.as_deref(), Some("https://idp/device"));
        assert!(info.browser_endpoint.is_none());
    }
}
