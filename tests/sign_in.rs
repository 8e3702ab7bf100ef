//! Single sign-on through a real OpenID provider (`oidc-provider` under
//! Node.js, tests/idp) in front of an authenticated `gantry dev`: OSMO's own
//! CLI and Gantry's sign in with the device code and with PKCE through a
//! scripted browser, refresh their short-lived ID tokens, and act with the
//! roles the IdP's groups and an admin's assignments give; users appear at
//! their first sign-in and are managed with `osmo user` and `gantry user`.
//! Expired, tampered, unsigned, foreign-issuer and foreign-audience tokens
//! are refused with OSMO's CREDENTIAL code; revoking a user's sessions
//! refuses its earlier tokens; an IdP that is down leaves signed-in users
//! working.
//!
//! Skips (saying so) where node, tests/idp/node_modules or OSMO's CLI is
//! missing, unless `CI=true`.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::idp::{approve_device, browser_command, sign_in_by_device, start_idp, Idp, CLIENT_ID};
use common::osmo::{Osmo, CALL_LIMIT};
use common::{wait_for, DevServer, BINARY};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// ID tokens live this long: every CLI call past the first seconds
/// refreshes its sign-in.
const ID_TOKEN_TTL_SECS: u64 = 5;
/// The server's tolerance for clock skew (api/idp.rs).
const LEEWAY_SECS: u64 = 30;

const HELLO: &str = "workflow:\n  name: sso-hello\n  tasks:\n  - name: greet\n    image: ubuntu\n    command: [sh, -c, 'echo hello']\n";

struct Api {
    url: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request.send().expect("request");
        let status = reply.status().as_u16();
        (status, reply.json().unwrap_or(Value::Null))
    }

    fn ok(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Value {
        let (status, reply) = self.call(method, path, Some(token), body);
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply
    }

    /// The refusal of a request signed with `token`: (status, message).
    fn refused(&self, token: &str) -> (u16, String) {
        let (status, reply) = self.call("GET", "/api/profile/settings", Some(token), None);
        assert_eq!(reply["error_code"], "CREDENTIAL", "{reply}");
        (
            status,
            reply["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

fn unsigned(header: &Value, claims: &Value) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", part(header), part(claims))
}

/// The lines `file` holds once one of them contains `marker`.
fn wait_for_line(file: &Path, marker: &str, limit: Duration) -> String {
    wait_for(limit, &format!("'{marker}' in {}", file.display()), || {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .find(|line| line.contains(marker))
            .map(str::to_string)
            .ok_or(text)
    })
}

/// The verification URL of a "Visit URL and complete authentication." line.
fn visit_url(line: &str) -> String {
    line.split_whitespace()
        .find(|word| word.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string()
}

/// OSMO's CLI, trusting the IdP's CA, its output unbuffered.
fn osmo_for(idp: &Idp) -> Option<Osmo> {
    let mut osmo = Osmo::find()?;
    osmo.envs = vec![
        ("REQUESTS_CA_BUNDLE".into(), idp.ca.display().to_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    Some(osmo)
}

/// `osmo login URL --method code`, approved in the scripted browser as
/// `login`.
fn osmo_device_login(osmo: &Osmo, idp: &Idp, url: &str, login: &str) {
    std::thread::scope(|scope| {
        let running = scope.spawn(|| osmo.run(&["login", url, "--method", "code"]));
        let stdout = osmo.home.path().join("stdout");
        let line = wait_for(CALL_LIMIT, "osmo login to say where to go", || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains("Visit ")) {
                return Ok(line.to_string());
            }
            assert!(
                !running.is_finished(),
                "osmo login ended early:\n{text}\n{}",
                std::fs::read_to_string(osmo.home.path().join("stderr")).unwrap_or_default()
            );
            Err(text)
        });
        approve_device(idp, login, &visit_url(&line), None);
        let output = running.join().expect("osmo login thread");
        assert_eq!(
            output.code, 0,
            "osmo login --method code:\n{}\n{}",
            output.stdout, output.stderr
        );
        assert!(output.stdout.contains("Welcome"), "{}", output.stdout);
    });
}

/// `gantry` with its own config directory and `envs`; (code, stdout, stderr).
fn gantry(config: &Path, envs: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_URL")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run gantry");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn saved_login(config: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(config.join("gantry/config.json")).expect("login file"))
        .expect("login JSON")
}

#[test]
fn users_sign_in_through_the_identity_provider() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = json!({
        "alice": {"name": "Alice A", "email": "alice@example.com", "groups": ["robots"]},
        "bob": {"name": "Bob B"},
        "carol": {"name": "Carol C", "groups": ["robots"]},
    });
    let Some(mut idp) = start_idp(&dir.path().join("idp"), &accounts, ID_TOKEN_TTL_SECS) else {
        return;
    };
    let Some(osmo) = osmo_for(&idp) else { return };
    let idp_ca = idp.ca.display().to_string();
    let server = DevServer::start_with(
        &dir.path().join("dev"),
        &[
            "dev",
            "--auth",
            "--listen",
            "127.0.0.1:0",
            "--idp-ca",
            &idp_ca,
        ],
    );
    let admin = std::fs::read_to_string(server.data_dir.join("bootstrap-admin-token"))
        .expect("admin token")
        .trim()
        .to_string();
    let api = Api {
        url: server.url.clone(),
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };

    // The IdP in the SERVICE config: signed-in users hold no role of their
    // own; the group `robots` brings `osmo-user` (pool default).
    let service_auth = |client_ids: &[&str]| {
        json!({"configs_dict": {"service_auth": {
            "user_roles": [],
            "idp": {"issuer": idp.issuer, "client_ids": client_ids, "group_roles": {"robots": ["osmo-user"]}},
        }}})
    };
    api.ok(
        "PATCH",
        "/api/configs/service",
        &admin,
        Some(&service_auth(&[CLIENT_ID])),
    );
    for (bad, field) in [
        (
            json!({"idp": {"issuer": "http://idp.example", "client_ids": ["x"]}}),
            "service_auth.idp.issuer",
        ),
        (
            json!({"idp": {"issuer": "https://idp.example", "client_ids": []}}),
            "service_auth.idp.client_ids",
        ),
        (json!({"keys": {"k": {}}}), "service_auth.keys"),
    ] {
        let (status, reply) = api.call(
            "PATCH",
            "/api/configs/service",
            Some(&admin),
            Some(&json!({"configs_dict": {"service_auth": bad}})),
        );
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }

    // Where a CLI signs in: public, from the IdP's discovery document.
    let (status, info) = api.call("GET", "/api/auth/login", None, None);
    assert_eq!(status, 200, "{info}");
    let discovery = idp.discovery();
    assert_eq!(
        info["device_endpoint"],
        discovery["device_authorization_endpoint"]
    );
    assert_eq!(
        info["browser_endpoint"],
        discovery["authorization_endpoint"]
    );
    assert_eq!(info["token_endpoint"], discovery["token_endpoint"]);
    assert_eq!(info["device_client_id"], CLIENT_ID);
    assert_eq!(info["browser_client_id"], CLIENT_ID);

    // OSMO's CLI, device code, as alice: her group lets her submit; the
    // CLI refreshes her 5-second ID token on its own.
    osmo_device_login(&osmo, &idp, &server.url, "alice");
    std::thread::sleep(Duration::from_secs(ID_TOKEN_TTL_SECS));
    let text = osmo.ok(&["profile", "list"]);
    assert!(text.contains("alice"), "{text}");
    let hello = dir.path().join("hello.yaml");
    std::fs::write(&hello, HELLO).unwrap();
    let hello = hello.display().to_string();
    let text = osmo.ok(&["workflow", "submit", &hello, "--pool", "default"]);
    assert!(text.contains("sso-hello-"), "{text}");
    // Her first sign-in made her a user.
    let alice = wait_for(Duration::from_secs(20), "alice recorded", || {
        match api.call("GET", "/api/auth/user/alice", Some(&admin), None) {
            (200, user) => Ok(user),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(alice["created_by"], "idp", "{alice}");

    // OSMO's CLI, PKCE through the scripted browser, as bob: no group, so
    // no pool; an admin's role assignment (OSMO's `user update`) lets him.
    let Some(mut bobs) = osmo_for(&idp) else {
        return;
    };
    let (browser, browser_env) = browser_command(&idp, "bob");
    bobs.envs.push(("BROWSER".into(), browser));
    bobs.envs.extend(browser_env);
    let text = bobs.ok(&["login", &server.url, "--method", "pkce"]);
    assert!(text.contains("Welcome"), "{text}");
    let refused = bobs.run(&["workflow", "submit", &hello, "--pool", "default"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("pool/default"),
        "{}\n{}",
        refused.stdout,
        refused.stderr
    );
    let Some(admins) = Osmo::find() else { return };
    admins.ok(&["login", &server.url, "--method", "token", "--token", &admin]);
    let text = admins.ok(&["user", "update", "bob", "--add-roles", "osmo-user"]);
    assert!(text.contains("Added role: osmo-user"), "{text}");
    let text = bobs.ok(&["workflow", "submit", &hello, "--pool", "default"]);
    assert!(text.contains("sso-hello-"), "{text}");
    let text = admins.ok(&["user", "get", "bob"]);
    assert!(text.contains("user (assigned by admin"), "{text}");
    admins.ok(&["user", "update", "bob", "--remove-roles", "osmo-user"]);
    assert_ne!(
        bobs.run(&["workflow", "submit", &hello, "--pool", "default"])
            .code,
        0
    );
    let text = admins.ok(&["user", "create", "svc-ci", "--roles", "osmo-user"]);
    assert!(text.contains("User created: svc-ci"), "{text}");
    let text = admins.ok(&["user", "list"]);
    for user in ["alice", "bob", "svc-ci"] {
        assert!(text.contains(user), "{user}: {text}");
    }
    let holders = api.ok("GET", "/api/auth/roles/osmo-user/users", &admin, None);
    assert_eq!(holders["role_name"], "user");
    assert_eq!(holders["users"][0]["id"], "svc-ci", "{holders}");
    admins.ok(&["user", "delete", "svc-ci", "--force"]);
    let (status, _) = api.call("GET", "/api/auth/user/svc-ci", Some(&admin), None);
    assert_eq!(status, 404);
    let (status, reply) = api.call(
        "POST",
        "/api/auth/user",
        Some(&admin),
        Some(&json!({"id": "alice"})),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{reply}"
    );
    let (status, reply) = api.call(
        "POST",
        "/api/auth/user/alice/roles",
        Some(&admin),
        Some(&json!({"role_name": "no-such-role"})),
    );
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("role_name: unknown role"),
        "{reply}"
    );

    // Gantry's CLI: device code as carol, then every call refreshes the
    // 5-second token and saves the new one.
    let carol_config = dir.path().join("carol");
    let mut login = Command::new(BINARY)
        .args([
            "login",
            &server.url,
            "--method",
            "device",
            "--idp-ca",
            &idp_ca,
        ])
        .env("XDG_CONFIG_HOME", &carol_config)
        .env_remove("GANTRY_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("carol-login.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("carol-login.err")).unwrap())
        .spawn()
        .expect("gantry login");
    let line = wait_for_line(
        &dir.path().join("carol-login.out"),
        "Visit ",
        Duration::from_secs(60),
    );
    approve_device(&idp, "carol", &visit_url(&line), None);
    let status = login.wait().expect("gantry login");
    let printed = std::fs::read_to_string(dir.path().join("carol-login.out")).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("carol-login.err")).unwrap_or_default();
    assert!(status.success(), "{printed}");
    assert!(printed.contains("as carol"), "{printed}");
    let saved = saved_login(&carol_config);
    assert!(
        saved["token"].is_null() && saved["idp"]["refresh_token"].is_string(),
        "{saved}"
    );
    let (code, out, err) = gantry(&carol_config, &[], &["profile", "list", "-t", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["profile"]["username"],
        "carol"
    );
    assert_ne!(
        saved_login(&carol_config)["idp"]["id_token"],
        saved["idp"]["id_token"],
        "refreshed"
    );
    let (code, _, err) = gantry(&carol_config, &[], &["user", "list"]);
    assert_ne!(code, 0);
    assert!(err.contains("user:List"), "{err}");

    // Gantry's CLI, PKCE through the scripted browser, as alice.
    let alice_config = dir.path().join("alice");
    let (browser, mut envs) = browser_command(&idp, "alice");
    envs.push(("BROWSER".into(), browser));
    let (code, out, err) = gantry(
        &alice_config,
        &envs,
        &[
            "login",
            &server.url,
            "--method",
            "pkce",
            "--idp-ca",
            &idp_ca,
        ],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", idp.browser_log());
    assert!(out.contains("as alice"), "{out}");
    // Admins read users with Gantry's CLI too.
    let admin_env = [
        ("GANTRY_TOKEN".to_string(), admin.clone()),
        ("GANTRY_URL".to_string(), server.url.clone()),
    ];
    let (code, out, err) = gantry(
        &dir.path().join("admin"),
        &admin_env,
        &["user", "get", "alice", "-t", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], "alice");

    // Raw ID tokens: good, then spoiled every way.
    let token = sign_in_by_device(&idp, "alice")["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = api.ok("GET", "/api/profile/settings", &token, None);
    assert_eq!(me["profile"]["username"], "alice");
    assert_eq!(me["roles"], json!(["user"]), "{me}");
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut forged = claims(&token);
    forged["preferred_username"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    let (status, message) = api.refused(&parts.join("."));
    assert_eq!(status, 401);
    assert!(message.contains("Token is not valid"), "{message}");
    let (_, message) = api.refused(&unsigned(&json!({"alg": "none"}), &forged));
    assert!(message.contains("not valid"), "{message}");
    let mut foreign = claims(&token);
    foreign["iss"] = json!("https://idp.elsewhere.example");
    let (_, message) = api.refused(&unsigned(&json!({"alg": "RS256"}), &foreign));
    assert!(message.contains("wrong issuer"), "{message}");
    api.ok(
        "PATCH",
        "/api/configs/service",
        &admin,
        Some(&service_auth(&["another-client"])),
    );
    let (_, message) = api.refused(&token);
    assert!(message.contains("wrong audience"), "{message}");
    api.ok(
        "PATCH",
        "/api/configs/service",
        &admin,
        Some(&service_auth(&[CLIENT_ID])),
    );
    api.ok("GET", "/api/profile/settings", &token, None);

    // Revoking alice's sessions refuses what she holds; a new sign-in works.
    let revoked = api.ok("POST", "/api/auth/user/alice/sessions/revoke", &admin, None);
    assert!(revoked["sessions_valid_from"].is_string(), "{revoked}");
    let (_, message) = api.refused(&token);
    assert!(message.contains("revoked"), "{message}");
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = sign_in_by_device(&idp, "alice")["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    api.ok("GET", "/api/profile/settings", &fresh, None);

    // The IdP down: signed-in users go on until their tokens expire.
    idp.stop();
    api.ok("GET", "/api/profile/settings", &fresh, None);
    let expires = claims(&fresh)["exp"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(
        (expires + LEEWAY_SECS + 1).saturating_sub(now),
    ));
    let (status, message) = api.refused(&fresh);
    assert_eq!(status, 401);
    assert!(message.contains("Token is expired"), "{message}");
}
