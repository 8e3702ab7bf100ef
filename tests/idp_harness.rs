//! The test OpenID provider itself (tests/idp: oidc-provider under Node.js,
//! driven by the scripted browser tests/idp/browser.py), exercised with the
//! requests OSMO's CLI sends: discovery; authorization code with PKCE to a
//! `http://localhost:<port>` listener, the code exchange and a refresh; the
//! device flow with and without a typed user code. The ID tokens carry the
//! accounts' claims and are signed with the IdP's RS256 key. Skips (saying
//! so) where node or tests/idp/node_modules is missing, unless `CI=true`.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::idp::{
    self, device_authorization, poll_device, start_idp, token_request, Idp, CLIENT_ID, SCOPE,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON payload")
}

/// Checks the ID token's RS256 signature against the IdP's JWKS (by `kid`),
/// its issuer and audience; returns its claims.
fn verified_claims(http: &reqwest::blocking::Client, discovery: &Value, jwt: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).expect("JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.expect("kid in the ID token header");
    let jwks: Value = http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .and_then(|reply| reply.json())
        .expect("JWKS");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(key["kty"], "RSA");
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .expect("RSA key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(jwt, &decoding, &validation)
        .expect("ID token verifies")
        .claims
}

/// Accepts the browser's request on the loopback listener, answers 200 and
/// returns the request target (`/?code=...`). Panics if the browser ends
/// without making it.
fn accept_callback(idp: &Idp, listener: &TcpListener, mut browser: Option<&mut Child>) -> String {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("accept: {error}"),
        }
        if let Some(browser) = browser.as_deref_mut() {
            if let Ok(Some(status)) = browser.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = browser.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!(
                    "browser.py ended ({status}) without the callback:\n{stderr}\nIdP output:\n{}",
                    idp.log()
                );
            }
        }
        assert!(Instant::now() < deadline, "no callback after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).expect("read callback request");
        assert!(read > 0, "callback request cut short");
        request.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let line = text.lines().next().unwrap_or_default();
    let target = line
        .strip_prefix("GET ")
        .and_then(|rest| rest.strip_suffix(" HTTP/1.1"))
        .unwrap_or_else(|| panic!("not a GET callback: {line}"))
        .to_string();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        .expect("answer callback");
    target
}

fn query_of(target: &str) -> Vec<(String, String)> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {name} in {pairs:?}"))
}

#[test]
fn the_test_idp_signs_in_by_code_with_pkce_and_by_device() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let accounts = json!({
        "alice": {"name": "Alice A", "email": "alice@example.com", "groups": ["team-a"]},
        "bob": {"name": "Bob B", "email": "bob@example.com"},
    });
    let Some(mut idp) = start_idp(&dir.path().join("idp"), &accounts, 300) else {
        return;
    };
    let http = idp.client(Duration::from_secs(20));

    let discovery = idp.discovery();
    assert_eq!(discovery["issuer"], idp.issuer.as_str());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
        "jwks_uri",
        "revocation_endpoint",
    ] {
        let url = discovery[endpoint].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&format!("{}/", idp.issuer)),
            "{endpoint}: {discovery}"
        );
    }

    // Authorization code with PKCE, as OSMO's CLI asks for it: redirect to
    // http://localhost:<its listener's port>, no path.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let redirect_uri = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random_token(), random_token());
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri),
            ("response_mode", "query"),
            ("scope", SCOPE),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let url = format!(
        "{}?{query}",
        discovery["authorization_endpoint"].as_str().unwrap()
    );
    let mut browser = idp::spawn_browser(&idp, "alice", &url);
    let target = accept_callback(&idp, &listener, Some(&mut browser));
    let output = browser.wait_with_output().expect("browser.py");
    assert!(
        output.status.success(),
        "browser.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let callback = query_of(&target);
    assert_eq!(param(&callback, "state"), state);
    assert_eq!(param(&callback, "iss"), idp.issuer);
    let code = param(&callback, "code");

    let (status, tokens) = token_request(
        &http,
        &discovery,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", code),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
            ("scope", SCOPE),
        ],
    );
    assert_eq!(status, 200, "code exchange: {tokens}\n{}", idp.log());
    let id_token = verified_claims(&http, &discovery, tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["sub"], "alice");
    assert_eq!(id_token["preferred_username"], "alice");
    assert_eq!(id_token["name"], "Alice A");
    assert_eq!(id_token["groups"], json!(["team-a"]));
    assert_eq!(id_token["nonce"], nonce.as_str());
    let lifetime = id_token["exp"].as_i64().unwrap() - id_token["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 300, "IDP_ID_TOKEN_TTL: {id_token}");
    let refresh_token = tokens["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token without prompt=consent: {tokens}"));

    // Refresh, as OSMO's CLI does it: a new ID token (and a rotated
    // refresh token, which the CLI keeps).
    let (status, refreshed) = token_request(
        &http,
        &discovery,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
        ],
    );
    assert_eq!(status, 200, "refresh: {refreshed}\n{}", idp.log());
    let new_id_token = refreshed["id_token"].as_str().expect("refreshed id_token");
    assert_ne!(new_id_token, tokens["id_token"].as_str().unwrap());
    let renewed = verified_claims(&http, &discovery, new_id_token);
    assert_eq!(renewed["preferred_username"], "alice");
    assert_eq!(renewed["groups"], json!(["team-a"]));
    assert!(refreshed["refresh_token"].is_string(), "{refreshed}");

    // As BROWSER for Python's webbrowser.open, the way OSMO's CLI opens
    // it: webbrowser waits for the browser to exit, and only then does the
    // CLI serve its listener (bound before). browser.py must not wait for
    // the callback's answer.
    let (browser_value, browser_env) = idp::browser_command(&idp, "bob");
    let opened = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 1)",
            &url.replace(&state, "second"),
        ])
        .env("BROWSER", &browser_value)
        .envs(browser_env)
        .output()
        .expect("python3 webbrowser");
    assert!(
        opened.status.success(),
        "webbrowser.open with BROWSER={browser_value}: {}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let callback = query_of(&accept_callback(&idp, &listener, None));
    assert_eq!(param(&callback, "state"), "second");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(idp.browser_log(), "", "the callback's delivery");
    let (status, tokens) = token_request(
        &http,
        &discovery,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("code", param(&callback, "code")),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
            ("scope", SCOPE),
        ],
    );
    assert_eq!(status, 200, "code exchange: {tokens}");
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["preferred_username"],
        "bob"
    );

    // A login that is no account: the sign-in page comes back, the browser
    // gives up.
    let mut stranger = idp::spawn_browser(&idp, "mallory", &url.replace(&state, "other"));
    let status = stranger.wait().expect("browser.py");
    let mut stderr = String::new();
    stranger
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success() && stderr.contains("refused"),
        "{status}: {stderr}"
    );

    // Device flow for bob, typing the user code.
    let device = device_authorization(&http, &discovery);
    let device_code = device["device_code"].as_str().unwrap();
    let (status, pending) = poll_device(&http, &discovery, device_code);
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    idp::approve_device(
        &idp,
        "bob",
        device["verification_uri"].as_str().unwrap(),
        Some(device["user_code"].as_str().unwrap()),
    );
    let interval = device["interval"].as_u64().unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(30);
    let bob = loop {
        std::thread::sleep(Duration::from_secs(interval));
        let (status, body) = poll_device(&http, &discovery, device_code);
        if status == 200 {
            break body;
        }
        assert!(
            matches!(
                body["error"].as_str(),
                Some("authorization_pending" | "slow_down")
            ),
            "device poll: {status} {body}"
        );
        assert!(Instant::now() < deadline, "device poll: {body}");
    };
    let bob_id = verified_claims(&http, &discovery, bob["id_token"].as_str().unwrap());
    assert_eq!(bob_id["preferred_username"], "bob");
    assert_eq!(bob_id["name"], "Bob B");
    assert!(
        bob_id.get("groups").is_none(),
        "bob has no groups: {bob_id}"
    );
    assert!(bob["refresh_token"].is_string(), "{bob}");

    // Device flow through verification_uri_complete (no typing), after a
    // change of alice's groups, which the IdP reads at once.
    idp.set_accounts(&json!({
        "alice": {"name": "Alice A", "email": "alice@example.com", "groups": ["team-a", "team-b"]},
    }));
    let device = device_authorization(&http, &discovery);
    idp::approve_device(
        &idp,
        "alice",
        device["verification_uri_complete"].as_str().unwrap(),
        None,
    );
    let (status, body) = poll_device(&http, &discovery, device["device_code"].as_str().unwrap());
    assert_eq!(status, 200, "{body}");
    let alice = claims(body["id_token"].as_str().unwrap());
    assert_eq!(alice["groups"], json!(["team-a", "team-b"]));

    // An IdP that is down answers nothing.
    idp.stop();
    assert!(http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .is_err());
    println!("IdP harness test took {:?}", started.elapsed());
}
