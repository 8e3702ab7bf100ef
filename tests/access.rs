//! Access control through real processes and real TLS: every route refuses
//! a request without a token (401) and one whose roles lack the permission
//! (403, naming action and resource); pool-scoped roles; expired tokens;
//! `token set|list|delete` and `login` through the CLI; the bootstrap token
//! taken from a file.

mod common;

use common::{DevServer, Pki, BINARY};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const HELLO: &str =
    "workflow:\n  name: hi\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [echo, hi]\n";

struct Cluster {
    _dir: tempfile::TempDir,
    pki: Pki,
    server: DevServer,
    admin: String,
}

fn start(extra: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path(), &[("node1", &["127.0.0.1"])]);
    let data = dir.path().join("node");
    let flags = pki.server_flags("node1");
    let mut args: Vec<&str> = vec![
        "server",
        "--bootstrap",
        "--local-backend",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    args.extend(flags.iter().map(String::as_str));
    args.extend(extra);
    let server = DevServer::start_with(&data, &args);
    let admin = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap_or_default();
    Cluster {
        _dir: dir,
        pki,
        server,
        admin,
    }
}

impl Cluster {
    fn http(&self) -> reqwest::blocking::Client {
        self.pki.client(Duration::from_secs(30))
    }

    /// `(status, body)` of a call with `token` (none: no Authorization header).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http()
            .request(method, format!("{}{path}", self.server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// The CLI against this server with `token`; `(code, stdout, stderr)`.
    fn cli(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(BINARY)
            .args(args)
            .env("GANTRY_URL", &self.server.url)
            .env("GANTRY_CA", self.pki.dir.join("ca.pem"))
            .env("GANTRY_TOKEN", token)
            .env("XDG_CONFIG_HOME", self.pki.dir.join("no-config"))
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `token set` as the admin, returning the secret.
    fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "set"];
        all.extend(args);
        all.extend(["-t", "json"]);
        let (code, stdout, stderr) = self.cli(&self.admin, &all);
        assert_eq!(code, 0, "token set {args:?}: {stderr}");
        let reply: Value = serde_json::from_str(&stdout).unwrap();
        reply["token"].as_str().unwrap().to_string()
    }
}

/// Every route, with a concrete path and body, and whether a `backend`
/// token (OSMO's osmo-backend) may call it.
fn routes() -> Vec<(&'static str, String, Option<Value>, bool)> {
    let change = json!({"configs": {}});
    vec![
        ("GET", "/api/pool".into(), None, true),
        ("GET", "/api/pool_quota".into(), None, true),
        ("GET", "/api/resources".into(), None, false),
        ("GET", "/api/resources/some-node".into(), None, false),
        (
            "POST",
            "/api/pool/default/workflow".into(),
            Some(json!({"file": HELLO})),
            false,
        ),
        ("GET", "/api/workflow".into(), None, false),
        ("GET", "/api/workflow/hi-1".into(), None, false),
        ("POST", "/api/workflow/hi-1/cancel".into(), None, false),
        (
            "GET",
            "/api/workflow/hi-1/portforward/hello?port=8000".into(),
            None,
            false,
        ),
        (
            "POST",
            "/api/workflow/hi-1/portforward/hello".into(),
            None,
            false,
        ),
        ("GET", "/api/workflow/hi-1/spec".into(), None, false),
        ("GET", "/api/workflow/hi-1/logs".into(), None, false),
        ("POST", "/api/workflow/hi-1/tag?add=x".into(), None, false),
        ("GET", "/api/tag".into(), None, false),
        ("GET", "/api/cluster/members".into(), None, false),
        ("POST", "/api/cluster/leave?id=999".into(), None, false),
        ("GET", "/api/cluster/snapshot".into(), None, false),
        ("GET", "/api/profile/settings".into(), None, true),
        ("GET", "/api/auth/access_token".into(), None, true),
        ("POST", "/api/auth/access_token/mine".into(), None, false),
        ("DELETE", "/api/auth/access_token/mine".into(), None, false),
        (
            "GET",
            "/api/auth/user/someone/access_token".into(),
            None,
            false,
        ),
        (
            "POST",
            "/api/auth/user/someone/access_token/theirs".into(),
            None,
            false,
        ),
        (
            "DELETE",
            "/api/auth/user/someone/access_token/theirs".into(),
            None,
            false,
        ),
        ("GET", "/api/configs/service".into(), None, true),
        (
            "PUT",
            "/api/configs/service".into(),
            Some(change.clone()),
            false,
        ),
        (
            "PATCH",
            "/api/configs/service".into(),
            Some(json!({"configs_dict": {}})),
            false,
        ),
        ("GET", "/api/configs/workflow".into(), None, true),
        (
            "PUT",
            "/api/configs/workflow".into(),
            Some(change.clone()),
            false,
        ),
        (
            "PATCH",
            "/api/configs/workflow".into(),
            Some(json!({"configs_dict": {}})),
            false,
        ),
        ("GET", "/api/configs/backend".into(), None, true),
        ("GET", "/api/configs/backend/local".into(), None, true),
        (
            "POST",
            "/api/configs/backend/local".into(),
            Some(change.clone()),
            false,
        ),
        ("DELETE", "/api/configs/backend/nope".into(), None, false),
        ("GET", "/api/configs/pool".into(), None, true),
        ("GET", "/api/configs/pool/default".into(), None, true),
        (
            "PUT",
            "/api/configs/pool/x".into(),
            Some(json!({"configs": {"backend": "local"}})),
            false,
        ),
        ("DELETE", "/api/configs/pool/nope".into(), None, false),
        ("GET", "/api/configs/pod_template".into(), None, true),
        ("GET", "/api/configs/pod_template/nope".into(), None, true),
        (
            "PUT",
            "/api/configs/pod_template/t".into(),
            Some(change.clone()),
            false,
        ),
        (
            "DELETE",
            "/api/configs/pod_template/nope".into(),
            None,
            false,
        ),
        ("GET", "/api/configs/resource_validation".into(), None, true),
        (
            "GET",
            "/api/configs/resource_validation/nope".into(),
            None,
            true,
        ),
        (
            "PUT",
            "/api/configs/resource_validation/v".into(),
            Some(json!({"configs": []})),
            false,
        ),
        (
            "DELETE",
            "/api/configs/resource_validation/nope".into(),
            None,
            false,
        ),
        ("GET", "/api/configs/role".into(), None, true),
        ("GET", "/api/configs/role/user".into(), None, true),
        (
            "PUT",
            "/api/configs/role/r".into(),
            Some(json!({"configs": {"policies": []}})),
            false,
        ),
        ("DELETE", "/api/configs/role/nope".into(), None, false),
        ("GET", "/api/configs/history".into(), None, true),
        (
            "POST",
            "/api/configs/history/rollback".into(),
            Some(json!({"config_type": "POOL", "revision": 1})),
            false,
        ),
        (
            "POST",
            "/api/configs/history/pool/revision/1/tags".into(),
            Some(json!({"set_tags": ["t"]})),
            false,
        ),
        (
            "DELETE",
            "/api/configs/history/pool/revision/1".into(),
            None,
            false,
        ),
        (
            "GET",
            "/api/configs/diff?config_type=POOL&first_revision=1&second_revision=1".into(),
            None,
            true,
        ),
    ]
}

#[test]
fn every_route_needs_a_token_and_the_permission() {
    let cluster = start(&[]);
    assert!(
        cluster.admin.len() >= 40,
        "bootstrap token: {:?}",
        cluster.admin
    );
    let backend = cluster.token(&["operator-a", "--service", "--roles", "osmo-backend/local"]);
    // A workflow to address, so workflow routes resolve their pool.
    let (status, body) = cluster.call(
        "POST",
        "/api/pool/default/workflow",
        Some(&cluster.admin),
        Some(&json!({"file": HELLO})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "hi-1");

    for (method, path, body, backend_may) in routes() {
        let (status, reply) = cluster.call(method, &path, None, body.as_ref());
        assert_eq!(status, 401, "{method} {path} without a token: {reply}");
        assert_eq!(
            reply["error_code"], "CREDENTIAL",
            "{method} {path}: {reply}"
        );
        let (status, reply) = cluster.call(method, &path, Some("not-a-token"), body.as_ref());
        assert_eq!(status, 401, "{method} {path} with a bad token: {reply}");
        let (status, reply) = cluster.call(method, &path, Some(&backend), body.as_ref());
        if backend_may {
            assert!(
                status != 401 && status != 403,
                "{method} {path} as backend: {status} {reply}"
            );
        } else {
            assert_eq!(status, 403, "{method} {path} as backend: {reply}");
            let message = reply["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("is not allowed") && message.contains(':'),
                "{method} {path}: {message}"
            );
        }
    }
    // Probes and the version stay open.
    for path in ["/health", "/healthz", "/readyz", "/api/version"] {
        assert_eq!(cluster.call("GET", path, None, None).0, 200, "{path}");
    }
    // The 403 names the action and the resource.
    let (_, reply) = cluster.call(
        "POST",
        "/api/pool/default/workflow",
        Some(&backend),
        Some(&json!({"file": HELLO})),
    );
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("workflow:Create on pool/default"),
        "{message}"
    );
    assert!(message.contains("operator-a"), "{message}");
}

#[test]
fn pool_scoped_roles_tokens_and_expiry() {
    let cluster = start(&[]);
    // A second pool, and a user token (role `user`: workflow:* on pool/default only).
    let (status, reply) = cluster.call(
        "PUT",
        "/api/configs/pool/gpu",
        Some(&cluster.admin),
        Some(&json!({"description": "GPUs", "configs": {"backend": "local"}})),
    );
    assert_eq!(status, 200, "{reply}");
    let ann = cluster.token(&["ann-laptop", "--user", "ann", "--roles", "user"]);
    let (status, reply) = cluster.call(
        "POST",
        "/api/pool/default/workflow",
        Some(&ann),
        Some(&json!({"file": HELLO})),
    );
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = cluster.call(
        "POST",
        "/api/pool/gpu/workflow",
        Some(&ann),
        Some(&json!({"file": HELLO})),
    );
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("workflow:Create on pool/gpu"),
        "{reply}"
    );
    // A ROLE config grants the pool; Deny beats Allow.
    let role = json!({"configs": {"name": "gpu-users", "description": "GPU pool", "policies": [
        {"effect": "Allow", "actions": ["workflow:*"], "resources": ["pool/gpu"]},
        {"effect": "Deny", "actions": ["workflow:Cancel"], "resources": ["pool/gpu"]}]}});
    let (status, reply) = cluster.call(
        "PUT",
        "/api/configs/role/gpu-users",
        Some(&cluster.admin),
        Some(&role),
    );
    assert_eq!(status, 200, "{reply}");
    let bob = cluster.token(&["bob-ci", "--user", "bob", "--roles", "user,gpu-users"]);
    let (status, reply) = cluster.call(
        "POST",
        "/api/pool/gpu/workflow",
        Some(&bob),
        Some(&json!({"file": HELLO})),
    );
    assert_eq!(status, 200, "{reply}");
    let id = reply["name"].as_str().unwrap().to_string();
    let (status, reply) = cluster.call(
        "POST",
        &format!("/api/workflow/{id}/cancel"),
        Some(&bob),
        None,
    );
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("workflow:Cancel on pool/gpu"),
        "{reply}"
    );

    // A user manages only its own tokens, and gives them only roles it holds.
    let (code, _, stderr) = cluster.cli(&ann, &["token", "set", "escalate", "--roles", "admin"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("role 'admin'"), "{stderr}");
    let (code, _, stderr) = cluster.cli(&ann, &["token", "set", "for-bob", "--user", "bob"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("token:Create on user/bob"), "{stderr}");
    let (code, _, stderr) = cluster.cli(&ann, &["token", "set", "bob-ci"]);
    assert_ne!(code, 0, "took over bob's token name");
    assert!(stderr.contains("taken"), "{stderr}");
    let (code, stdout, stderr) = cluster.cli(
        &ann,
        &[
            "token",
            "set",
            "ann-script",
            "--description",
            "scripts",
            "-t",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let script: Value = serde_json::from_str(&stdout).unwrap();
    let script = script["token"].as_str().unwrap().to_string();
    let (code, stdout, stderr) = cluster.cli(&ann, &["token", "list", "-t", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ann-laptop", "ann-script"], "{listed}");
    assert!(listed.to_string().find("hash").is_none(), "{listed}");
    assert_eq!(listed[1]["roles"], json!(["user"]));
    assert_eq!(listed[1]["description"], "scripts");
    // Service tokens are listed for admins only.
    let (code, _, stderr) = cluster.cli(&ann, &["token", "list", "--service"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not allowed"), "{stderr}");
    cluster.token(&["op-1", "--service", "--roles", "backend"]);
    let (code, stdout, _) = cluster.cli(
        &cluster.admin,
        &["token", "list", "--service", "-t", "json"],
    );
    assert_eq!(code, 0);
    let services: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
    assert_eq!(services[0]["user_name"], "op-1");
    // Deleted tokens stop working; another user's token cannot be deleted.
    let (code, _, stderr) = cluster.cli(&ann, &["token", "delete", "bob-ci"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no token 'bob-ci'"), "{stderr}");
    let (code, stdout, stderr) =
        cluster.cli(&ann, &["token", "delete", "ann-script", "-t", "json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["deleted"],
        true
    );
    assert_eq!(
        cluster.call("GET", "/api/workflow", Some(&script), None).0,
        401
    );

    // Expiry: a date in the past is refused; a token expiring in 2 s works, then is refused.
    let (code, _, stderr) = cluster.cli(
        &cluster.admin,
        &["token", "set", "old", "--expires-at", "2020-01-01"],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("expires_at"), "{stderr}");
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let brief = cluster.token(&["brief", "--expires-at", &soon]);
    assert_eq!(
        cluster.call("GET", "/api/workflow", Some(&brief), None).0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reply) = cluster.call("GET", "/api/workflow", Some(&brief), None);
        if status == 401 {
            assert!(
                reply["message"]
                    .as_str()
                    .unwrap()
                    .contains("Token is expired"),
                "{reply}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "token did not expire: {status} {reply}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn login_saves_url_token_and_ca_privately() {
    let cluster = start(&[]);
    let config_home = cluster.pki.dir.join("login-config");
    let run = |args: &[&str]| {
        Command::new(BINARY)
            .args(args)
            .env_remove("GANTRY_URL")
            .env_remove("GANTRY_TOKEN")
            .env_remove("GANTRY_CA")
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap()
    };
    let ca = cluster.pki.dir.join("ca.pem");
    let bad = run(&[
        "login",
        &cluster.server.url,
        "--token",
        "wrong",
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Token is not valid"));
    assert!(
        !config_home.join("gantry/config.json").exists(),
        "a failed login wrote the file"
    );
    let good = run(&[
        "login",
        &cluster.server.url,
        "--token",
        &cluster.admin,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("as admin"));
    let file = config_home.join("gantry/config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Later commands need no flags.
    let listed = run(&["workflow", "list", "-t", "json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed["workflows"].is_array());
}

#[test]
fn an_unattended_install_takes_the_admin_token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("admin-token");
    let secret = "unattended-install-secret-0123456789";
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let cluster = start(&["--bootstrap-token-file", secret_file.to_str().unwrap()]);
    assert!(
        cluster.admin.is_empty(),
        "a generated token was written too"
    );
    assert!(!Path::new(&cluster.server.data_dir)
        .join("bootstrap-admin-token.pending")
        .exists());
    let (status, reply) = cluster.call("GET", "/api/profile/settings", Some(secret), None);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["roles"], json!(["admin"]));
    assert!(
        !cluster.server.log().contains(secret),
        "the secret was logged"
    );
}

#[test]
fn a_restart_finishes_an_interrupted_bootstrap_with_the_pending_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let args = [
        "server",
        "--bootstrap",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let server = DevServer::start_with(&data, &args);
    let first = std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap();
    assert!(!data.join("bootstrap-admin-token.pending").exists());
    server.stop();
    // As if the node had died after writing its secret and before its token
    // was committed: the pending secret is what its admin will be given.
    let pending = "pending-secret-that-was-never-committed";
    std::fs::remove_file(data.join("bootstrap-admin-token")).unwrap();
    std::fs::write(data.join("bootstrap-admin-token.pending"), pending).unwrap();
    let server = DevServer::start_with(&data, &args);
    let api = reqwest::blocking::Client::new();
    let status_with = |token: &str| {
        api.get(format!("{}/api/workflow", server.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_with(pending) != 200 {
        assert!(
            Instant::now() < deadline,
            "the pending secret never became a token"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_to_string(data.join("bootstrap-admin-token")).unwrap(),
        pending
    );
    assert!(!data.join("bootstrap-admin-token.pending").exists());
    // Re-issued under the same name: the old secret no longer works.
    assert_eq!(status_with(&first), 401);
}
