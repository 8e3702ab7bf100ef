//! A real OpenID provider for the tests: the certified `oidc-provider`
//! package (tests/idp/idp.mjs only configures it) run by Node.js over HTTPS
//! on 127.0.0.1, with one public native client (`gantry-cli`: code + PKCE,
//! refresh tokens, device flow, loopback redirects on any port), the
//! accounts of a JSON file, and oidc-provider's development sign-in pages,
//! which `tests/idp/browser.py` goes through as a person would.
//!
//! Needs `node` and `tests/idp/node_modules` (`npm ci` in tests/idp). Where
//! either is missing [`start_idp`] panics under `CI=true` and otherwise
//! prints `SKIPPED: ...` and returns `None`.

use super::{repo_path, Pki};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client ID of the IdP's one client (idp.mjs's default).
pub const CLIENT_ID: &str = "gantry-cli";
/// OSMO's CLI's scope.
pub const SCOPE: &str = "openid offline_access profile";

/// A running IdP; the node process is killed when the handle drops.
pub struct Idp {
    child: Child,
    /// `https://127.0.0.1:<port>`, as in its discovery document and tokens.
    pub issuer: String,
    /// The CA (PEM) that signed the IdP's certificate.
    pub ca: PathBuf,
    /// The directory of its certificates, accounts file and log.
    pub dir: PathBuf,
    pub port: u16,
    accounts_path: PathBuf,
    log_path: PathBuf,
}

impl Idp {
    /// The node process's output (oidc-provider's notices, server errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn browser_log_path(&self) -> PathBuf {
        self.dir.join("browser.log")
    }

    /// What browser.py's callback deliveries reported: a listener that
    /// could not be reached or answered an error status (they run after
    /// browser.py has exited, so its own stderr no longer reaches anyone).
    pub fn browser_log(&self) -> String {
        std::fs::read_to_string(self.browser_log_path()).unwrap_or_default()
    }

    /// Stops the IdP now (SIGTERM, then SIGKILL after 10 s): to test an
    /// IdP that is down.
    pub fn stop(&mut self) {
        super::terminate(&mut self.child, Duration::from_secs(10));
    }

    /// Replaces the accounts (same shape as for [`start_idp`]); the IdP
    /// reads the file at every lookup, so sign-ins and refreshes from now on
    /// see the new claims (groups, name, email).
    pub fn set_accounts(&self, accounts: &Value) {
        write_accounts(&self.accounts_path, accounts);
    }

    /// An HTTPS client that trusts the IdP's CA (and nothing else).
    pub fn client(&self, timeout: Duration) -> reqwest::blocking::Client {
        super::client_trusting(&self.ca, timeout)
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        self.client(Duration::from_secs(20))
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .and_then(|reply| reply.error_for_status())
            .and_then(|reply| reply.json())
            .unwrap_or_else(|e| panic!("discovery of {}: {e}\n{}", self.issuer, self.log()))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why the IdP cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match node {
        Ok(output) if output.status.success() => {}
        _ => return Some("node (Node.js 20 or newer) is not installed".to_string()),
    }
    if !repo_path("tests/idp/node_modules/oidc-provider/package.json").is_file() {
        return Some(
            "tests/idp/node_modules/oidc-provider is missing (run `npm ci` in tests/idp)"
                .to_string(),
        );
    }
    None
}

fn write_accounts(path: &Path, accounts: &Value) {
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(accounts).unwrap()).expect("write accounts");
    std::fs::rename(&partial, path).expect("replace accounts");
}

/// Starts the IdP with the accounts `accounts`
/// (`{"alice": {"name": "Alice A", "email": "alice@example.com",
/// "groups": ["team-a"]}, ...}`: the login name is the account ID; claims
/// the account does not have are left out of its tokens) and ID tokens valid
/// for `id_token_ttl_secs`. `dir` is the IdP's own: its CA (`ca.pem`),
/// certificate (`idp.pem`, `idp-key.pem`), accounts file and log go there.
/// `None` (after printing SKIPPED) when node or oidc-provider is missing and
/// `CI` is not `true`.
pub fn start_idp(dir: &Path, accounts: &Value, id_token_ttl_secs: u64) -> Option<Idp> {
    if let Some(why) = unavailable() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the test IdP cannot run: {why}"
        );
        println!("SKIPPED: the test IdP cannot run: {why}");
        return None;
    }
    std::fs::create_dir_all(dir).expect("create IdP dir");
    Pki::create(dir, &[("idp", &["127.0.0.1"])]);
    let accounts_path = dir.join("idp-accounts.json");
    write_accounts(&accounts_path, accounts);
    let log_path = dir.join("idp.log");
    let log = std::fs::File::create(&log_path).expect("create IdP log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("node")
        .arg(repo_path("tests/idp/idp.mjs"))
        .env("IDP_PORT", port.to_string())
        .env("IDP_CERT", dir.join("idp.pem"))
        .env("IDP_KEY", dir.join("idp-key.pem"))
        .env("IDP_ACCOUNTS", &accounts_path)
        .env("IDP_ID_TOKEN_TTL", id_token_ttl_secs.to_string())
        .env("IDP_CLIENT_ID", CLIENT_ID)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn node tests/idp/idp.mjs");
    // Owned by the handle at once, so a failed start is still killed on drop.
    let mut idp = Idp {
        child,
        issuer: String::new(),
        ca: dir.join("ca.pem"),
        dir: dir.to_path_buf(),
        port,
        accounts_path,
        log_path,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let marker = "IDP READY ";
    loop {
        let text = idp.log();
        if let Some(position) = text.find(marker) {
            if let Some((line, _)) = text[position + marker.len()..].split_once('\n') {
                idp.issuer = line.trim().to_string();
                assert_eq!(idp.issuer, format!("https://127.0.0.1:{port}"));
                return Some(idp);
            }
        }
        if let Ok(Some(status)) = idp.child.try_wait() {
            panic!("the test IdP exited ({status}) before it was ready; output:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the test IdP was not ready after 60 s; output:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn browser_script() -> PathBuf {
    repo_path("tests/idp/browser.py")
}

/// `BROWSER` for a child process whose Python `webbrowser.open` should sign
/// in as `login` (`python3 /…/tests/idp/browser.py %s`), and the variables
/// to set on that child beside it (`IDP_CA`, `IDP_LOGIN`, `IDP_BROWSER_LOG`).
///
/// browser.py sends the loopback callback request and exits at once,
/// before the answer: `webbrowser.open` waits for the browser to exit and
/// a CLI such as OSMO's serves its callback listener only after that. A
/// forked child of browser.py waits for the answer, holding none of the
/// caller's stdio; see [`Idp::browser_log`].
pub fn browser_command(idp: &Idp, login: &str) -> (String, Vec<(String, String)>) {
    let script = browser_script().display().to_string();
    // webbrowser splits BROWSER at os.pathsep, then each entry with shlex.
    assert!(!script.contains(':'), "a ':' in {script} breaks BROWSER");
    let browser = format!("python3 {} %s", shell_quote(&script));
    (browser, browser_env(idp, login))
}

fn browser_env(idp: &Idp, login: &str) -> Vec<(String, String)> {
    vec![
        ("IDP_CA".to_string(), idp.ca.display().to_string()),
        ("IDP_LOGIN".to_string(), login.to_string()),
        (
            "IDP_BROWSER_LOG".to_string(),
            idp.browser_log_path().display().to_string(),
        ),
    ]
}

fn shell_quote(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=@,".contains(c));
    if plain && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// browser.py on the authorization URL `url`, signing in as `login`
/// (stdout and stderr piped): it follows the pages and requests the
/// loopback redirect target, so the caller must accept that request.
pub fn spawn_browser(idp: &Idp, login: &str, url: &str) -> Child {
    Command::new("python3")
        .arg(browser_script())
        .arg(url)
        .envs(browser_env(idp, login))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 tests/idp/browser.py")
}

/// Approves a device authorization as `login`: browser.py on the
/// verification page, entering `user_code` (or on `verification_uri_complete`
/// with `None`), signing in and confirming; panics unless the IdP says the
/// sign-in succeeded.
pub fn approve_device(idp: &Idp, login: &str, verification_uri: &str, user_code: Option<&str>) {
    let mut command = Command::new("python3");
    command
        .arg(browser_script())
        .args(["--device", verification_uri])
        .envs(browser_env(idp, login))
        .stdin(Stdio::null());
    if let Some(code) = user_code {
        command.args(["--user-code", code]);
    }
    let output = command
        .output()
        .expect("run python3 tests/idp/browser.py --device");
    assert!(
        output.status.success(),
        "device approval as {login} at {verification_uri} failed ({}):\n{}{}\nIdP output:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        idp.log()
    );
}

/// Posts a form to the token endpoint: (status, JSON body).
pub fn token_request(
    http: &reqwest::blocking::Client,
    discovery: &Value,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let reply = http
        .post(discovery["token_endpoint"].as_str().unwrap())
        .form(form)
        .send()
        .expect("token endpoint");
    let status = reply.status().as_u16();
    (status, reply.json().unwrap_or(Value::Null))
}

/// Starts a device authorization as OSMO's CLI does.
pub fn device_authorization(http: &reqwest::blocking::Client, discovery: &Value) -> Value {
    let reply = http
        .post(
            discovery["device_authorization_endpoint"]
                .as_str()
                .expect("device endpoint"),
        )
        .form(&[("client_id", CLIENT_ID), ("scope", SCOPE)])
        .send()
        .expect("device authorization");
    assert_eq!(reply.status().as_u16(), 200);
    reply.json().expect("device authorization JSON")
}

pub fn poll_device(
    http: &reqwest::blocking::Client,
    discovery: &Value,
    device_code: &str,
) -> (u16, Value) {
    token_request(
        http,
        discovery,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", CLIENT_ID),
        ],
    )
}

/// A whole device sign-in as `login`, straight against the IdP: the token
/// endpoint's answer (`id_token`, `refresh_token`, ...).
pub fn sign_in_by_device(idp: &Idp, login: &str) -> Value {
    let http = idp.client(Duration::from_secs(20));
    let discovery = idp.discovery();
    let started = device_authorization(&http, &discovery);
    approve_device(
        idp,
        login,
        started["verification_uri_complete"]
            .as_str()
            .expect("complete URI"),
        None,
    );
    let device_code = started["device_code"].as_str().expect("device_code");
    let (status, answer) = poll_device(&http, &discovery, device_code);
    assert_eq!(status, 200, "{answer}");
    answer
}
