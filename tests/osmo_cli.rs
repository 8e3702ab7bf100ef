//! OSMO's own CLI as a client of Gantry: the launcher beside the repository
//! (`shared/osmo/client/osmo`, OSMO's unchanged `src/cli`, run from source)
//! against a real `gantry dev`, each everyday command checked by what it
//! prints — the workflow ID a submit names, the status a query shows, the
//! log line, the pool, the node, the user — not only by its exit code.
//!
//! The CLI needs Python >= 3.12 and its virtual environment (`.ci/run`
//! makes it once). Under `CI=true` a CLI that cannot run fails the tests;
//! elsewhere they skip, saying why. The tests of the `x-osmo-user` header
//! itself speak HTTP and always run.

mod common;

use common::osmo::Osmo;
use common::DevServer;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A spec file in `dir`.
fn spec_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write spec");
    path.display().to_string()
}

/// The ID in a submit's output (`Workflow ID        - hello-1`).
fn submitted_id(text: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix("Workflow ID"))
        .and_then(|rest| rest.split_once("- "))
        .map(|(_, id)| id.trim().to_string())
        .unwrap_or_else(|| panic!("no workflow ID in the submit's output:\n{text}"))
}

/// The table row (a line) of `text` that starts with `first`.
fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row for {first}:\n{text}"))
}

const HELLO: &str = "workflow:\n  name: osmo-hello\n  tasks:\n  - name: greet\n    image: ubuntu\n    command: [sh, -c, 'echo hello from the osmo cli']\n";
const SLEEPER: &str = "workflow:\n  name: osmo-sleeper\n  tasks:\n  - name: nap\n    image: ubuntu\n    command: [sleep, '600']\n";

#[test]
fn workflows_through_osmos_cli() {
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    osmo.login(&server.url, "alice");
    let hello = spec_file(dir.path(), "hello.yaml", HELLO);

    let text = osmo.ok(&["workflow", "validate", &hello]);
    assert!(text.contains("Workflow validation succeeded"), "{text}");

    // Submit without --pool: the CLI takes the profile's default pool.
    let text = osmo.ok(&["workflow", "submit", &hello]);
    assert!(text.contains("Workflow submit successful"), "{text}");
    let id = submitted_id(&text);
    assert!(id.starts_with("osmo-hello-"), "{text}");
    assert!(text.contains(&format!("/workflows/{id}")), "{text}");
    let workflow = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    // The user the CLI logged in as (its x-osmo-user header).
    assert_eq!(workflow["submitted_by"], "alice");

    let text = osmo.ok(&["workflow", "query", &id]);
    assert!(text.contains(&format!("Workflow ID : {id}")), "{text}");
    assert!(text.contains("Status      : COMPLETED"), "{text}");
    assert!(text.contains("User        : alice"), "{text}");
    // Times as OSMO's CLI renders them from the API's (naive UTC) form.
    assert!(
        text.contains("Submit Time : ") && text.contains(" UTC"),
        "{text}"
    );
    let task = row(&text, "greet");
    assert!(task.contains("COMPLETED") && task.contains("UTC"), "{task}");

    let text = osmo.ok(&["workflow", "logs", &id]);
    assert!(text.contains(&format!("Workflow {id} has logs:")), "{text}");
    assert!(text.contains("[greet] hello from the osmo cli"), "{text}");
    let text = osmo.ok(&["workflow", "logs", &id, "-t", "greet", "-n", "5"]);
    assert!(text.contains("hello from the osmo cli"), "{text}");

    let text = osmo.ok(&["workflow", "events", &id]);
    assert!(
        text.contains(&format!("Workflow {id} has events:")),
        "{text}"
    );
    assert!(
        text.contains("SUBMITTED: by alice to pool default"),
        "{text}"
    );
    assert!(text.contains("[greet] COMPLETED: exit code 0"), "{text}");

    let text = osmo.ok(&["workflow", "spec", &id]);
    assert!(text.contains("echo hello from the osmo cli"), "{text}");
    assert!(text.contains("name: osmo-hello"), "{text}");

    // A running workflow, cancelled.
    let sleeper = spec_file(dir.path(), "sleeper.yaml", SLEEPER);
    let text = osmo.ok(&["workflow", "submit", &sleeper, "--pool", "default"]);
    let sleeping = submitted_id(&text);
    api.wait_task(&sleeping, "nap", "RUNNING", Duration::from_secs(60));
    let text = osmo.ok(&["workflow", "query", &sleeping]);
    assert!(text.contains("Status      : RUNNING"), "{text}");
    let text = osmo.ok(&["workflow", "cancel", &sleeping, "-m", "enough"]);
    assert!(
        text.contains(&format!("Cancel job for workflow {sleeping} is submitted!")),
        "{text}"
    );
    let cancelled = api.wait_finished(&sleeping, Duration::from_secs(60));
    assert_eq!(cancelled["status"], "FAILED_CANCELED", "{cancelled}");
    assert_eq!(cancelled["cancelled_by"], "alice");
    let text = osmo.ok(&["workflow", "query", &sleeping]);
    assert!(text.contains("Status      : FAILED_CANCELED"), "{text}");

    // The list: newest last (the CLI's default order), with user and status.
    let text = osmo.ok(&["workflow", "list"]);
    let first = row(&text, "alice");
    assert!(first.contains(&id) && first.contains("COMPLETED"), "{text}");
    assert!(
        text.find(&id).unwrap() < text.find(&sleeping).unwrap(),
        "{text}"
    );
    let text = osmo.ok(&["workflow", "list", "-s", "FAILED_CANCELED"]);
    assert!(text.contains(&sleeping) && !text.contains(&id), "{text}");
    let text = osmo.ok(&["workflow", "list", "-t", "json"]);
    let listed: Value = serde_json::from_str(&text).expect("list -t json");
    let names: Vec<&str> = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [id.as_str(), sleeping.as_str()], "{text}");

    // Scoped as OSMO's list is: the caller's own workflows, another user's
    // with -u, everyone's with -a; and a submit-time window of days.
    let bobs = submit_as(&server.url, "bob", HELLO);
    let text = osmo.ok(&["workflow", "list"]);
    assert!(text.contains(&id) && !text.contains(&bobs), "{text}");
    let text = osmo.ok(&["workflow", "list", "-u", "bob"]);
    assert!(text.contains(&bobs) && !text.contains(&id), "{text}");
    let text = osmo.ok(&["workflow", "list", "-a"]);
    assert!(text.contains(&bobs) && text.contains(&id), "{text}");
    let today = chrono::Local::now().date_naive();
    let day = |date: chrono::NaiveDate| date.format("%Y-%m-%d").to_string();
    let (yesterday, tomorrow) = (
        day(today.pred_opt().unwrap()),
        day(today.succ_opt().unwrap()),
    );
    let text = osmo.ok(&["workflow", "list", "-a", "--submitted-after", &yesterday]);
    assert!(text.contains(&bobs) && text.contains(&id), "{text}");
    let text = osmo.ok(&["workflow", "list", "-a", "--submitted-after", &tomorrow]);
    assert!(text.contains("There are no workflows to view."), "{text}");
    let text = osmo.ok(&["workflow", "list", "--submitted-before", &yesterday]);
    assert!(text.contains("There are no workflows to view."), "{text}");

    // Tags: the ones the WORKFLOW config allows, set and listed by.
    let reply = api.put(
        "/api/configs/workflow",
        &json!({"configs": {"workflow_info": {"tags": ["nightly", "sim"]}}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let text = osmo.ok(&["workflow", "tag"]);
    assert!(
        text.contains("- nightly") && text.contains("- sim"),
        "{text}"
    );
    let text = osmo.ok(&["workflow", "tag", "-w", &id, "-a", "nightly", "sim"]);
    assert!(text.contains(&format!("Workflow {id} updated.")), "{text}");
    osmo.ok(&["workflow", "tag", "-w", &id, "-r", "sim"]);
    let text = osmo.ok(&["workflow", "list", "--tags", "nightly"]);
    assert!(text.contains(&id) && !text.contains(&sleeping), "{text}");
    let text = osmo.ok(&["workflow", "list", "--tags", "sim"]);
    assert!(text.contains("There are no workflows to view."), "{text}");
    let text = osmo.ok(&["workflow", "query", &id, "-t", "json"]);
    let queried: Value = serde_json::from_str(&text).expect("query -t json");
    assert_eq!(queried["tags"], json!(["nightly"]), "{text}");

    // A cancelled (failed) workflow restarted, and one resubmitted by ID.
    let text = osmo.ok(&["workflow", "restart", &sleeping]);
    assert!(
        text.contains(&format!("Workflow {sleeping} restarted.")),
        "{text}"
    );
    let restarted = submitted_id(&text);
    assert_ne!(restarted, sleeping);
    api.wait_task(&restarted, "nap", "RUNNING", Duration::from_secs(60));
    api.post(&format!("/api/workflow/{restarted}/cancel"), None);
    let text = osmo.ok(&["workflow", "submit", &id]);
    assert!(text.contains("Workflow submit successful"), "{text}");
    let again = submitted_id(&text);
    let workflow = api.wait_finished(&again, Duration::from_secs(60));
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}");
    server.stop();
}

#[test]
fn pools_nodes_profile_tokens_and_configs_through_osmos_cli() {
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    osmo.login(&server.url, "alice");

    let text = osmo.ok(&["version"]);
    let version = api.get("/api/version").json();
    assert!(
        text.contains(&format!(
            "OSMO service version: {}.{}.{}",
            version["major"].as_str().unwrap(),
            version["minor"].as_str().unwrap(),
            version["revision"].as_str().unwrap()
        )),
        "{text} (server: {version})"
    );

    let text = osmo.ok(&["pool", "list"]);
    let pool = row(&text, "default");
    assert!(pool.contains("ONLINE"), "{text}");

    // The node the local operator reports, with its CPUs as used/total.
    let node = common::wait_for(Duration::from_secs(30), "a node", || {
        let resources = api.get("/api/resources").json();
        match resources["resources"][0].as_object() {
            Some(node) => Ok(Value::Object(node.clone())),
            None => Err(resources.to_string()),
        }
    });
    let hostname = node["hostname"].as_str().unwrap();
    let cpus: f64 = node["allocatable_fields"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = osmo.ok(&["resource", "list"]);
    let line = row(&text, hostname);
    assert!(
        line.contains("default") && line.contains("SHARED"),
        "{text}"
    );
    // Nothing runs: CPU [#] is 0 of the node's whole cores.
    let cpu = format!("0/{}", cpus.floor());
    assert!(line.split_whitespace().any(|cell| cell == cpu), "{text}");
    let text = osmo.ok(&["resource", "list", "--mode", "free"]);
    assert!(row(&text, hostname).contains("default"), "{text}");
    let text = osmo.ok(&["resource", "info", hostname]);
    assert!(
        text.contains(&format!("Resource Name: {hostname}")),
        "{text}"
    );
    assert!(text.contains(&format!("cpu: {}", cpus.floor())), "{text}");

    let text = osmo.ok(&["profile", "list"]);
    assert!(text.contains("name: alice"), "{text}");
    assert!(text.contains("email: alice"), "{text}");
    assert!(text.contains("default: default"), "{text}");
    assert!(text.contains("- default"), "{text}");

    // Tokens: made, listed, deleted — alice's own.
    let text = osmo.ok(&["token", "set", "laptop", "-e", "2099-01-31", "-d", "mine"]);
    let secret = text
        .lines()
        .find_map(|line| line.strip_prefix("Access token: "))
        .unwrap_or_else(|| panic!("no secret in:\n{text}"));
    assert!(secret.len() >= 32, "{text}");
    let text = osmo.ok(&["token", "list"]);
    let token = row(&text, "laptop");
    assert!(
        token.contains("mine") && token.contains("Active") && token.contains("2099-01-31"),
        "{text}"
    );
    let tokens = api.get("/api/auth/user/alice/access_token").json();
    assert_eq!(tokens[0]["token_name"], "laptop", "{tokens}");
    let text = osmo.ok(&["token", "delete", "laptop"]);
    assert!(text.contains("Access token laptop deleted"), "{text}");
    let text = osmo.ok(&["token", "list"]);
    assert!(text.contains("No tokens found"), "{text}");

    // Configs: shown, changed (as alice), their history.
    let text = osmo.ok(&["config", "show", "SERVICE"]);
    let service: Value = serde_json::from_str(&text).expect("config show is JSON");
    assert_eq!(service["backend_heartbeat_grace"], "2m", "{text}");
    let text = osmo.ok(&["config", "show", "POOL", "default"]);
    let pool: Value = serde_json::from_str(&text).expect("config show is JSON");
    assert_eq!(pool["backend"], "local", "{text}");
    let change = spec_file(
        dir.path(),
        "service.json",
        r#"{"backend_heartbeat_grace": "90s"}"#,
    );
    // A second that lies after the first revisions and before the update
    // (the CLI sends whole seconds).
    std::thread::sleep(Duration::from_millis(1100));
    let mark = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let text = osmo.ok(&[
        "config",
        "update",
        "SERVICE",
        "--file",
        &change,
        "--description",
        "longer grace",
    ]);
    assert!(
        text.contains("Successfully updated SERVICE config"),
        "{text}"
    );
    let text = osmo.ok(&["config", "show", "SERVICE", "backend_heartbeat_grace"]);
    assert_eq!(text.trim(), "\"90s\"");
    let text = osmo.ok(&["config", "history"]);
    let pool = row(&text, "POOL");
    assert!(pool.contains("default") && pool.contains("UTC"), "{text}");
    let service = row(&text, "SERVICE");
    assert!(
        service.contains("alice") && service.contains("longer grace"),
        "{text}"
    );
    // The history filtered in time: what was in force at the mark, what
    // was written after it.
    let descriptions = |config: &str, args: &[&str]| -> Vec<String> {
        let mut all = vec!["config", "history", config, "-t", "json"];
        all.extend(args);
        let text = osmo.ok(&all);
        let history: Value = serde_json::from_str(&text).expect("history -t json");
        history["configs"]
            .as_array()
            .unwrap_or_else(|| panic!("{text}"))
            .iter()
            .map(|c| c["description"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // SERVICE was first written by the update; the pool long before.
    assert!(descriptions("SERVICE", &["--at-timestamp", &mark]).is_empty());
    assert_eq!(descriptions("POOL", &["--at-timestamp", &mark]).len(), 1);
    assert_eq!(
        descriptions("SERVICE", &["--created-after", &mark]),
        ["longer grace"]
    );
    assert!(descriptions("SERVICE", &["--created-before", &mark]).is_empty());
    assert!(descriptions("POOL", &["--created-after", &mark]).is_empty());

    // Revisions as OSMO's CLI names them (TYPE:REV): shown, tagged,
    // compared with the current one and with each other, removed.
    let change = spec_file(
        dir.path(),
        "service2.json",
        r#"{"backend_heartbeat_grace": "100s"}"#,
    );
    osmo.ok(&[
        "config",
        "update",
        "SERVICE",
        "--file",
        &change,
        "--description",
        "longer still",
    ]);
    let revisions: Vec<u64> = api.get("/api/configs/history?config_types=SERVICE").json()
        ["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["revision"].as_u64().unwrap())
        .collect();
    let [old, current] = revisions[..] else {
        panic!("two SERVICE revisions: {revisions:?}")
    };
    let (old_ref, current_ref) = (format!("SERVICE:{old}"), format!("SERVICE:{current}"));
    let text = osmo.ok(&["config", "show", &old_ref, "backend_heartbeat_grace"]);
    assert_eq!(text.trim(), "\"90s\"");
    let text = osmo.ok(&["config", "tag", &old_ref, "--set", "stable", "old"]);
    assert!(
        text.contains(&format!("Successfully updated tags for {old_ref}")),
        "{text}"
    );
    osmo.ok(&["config", "tag", &old_ref, "--delete", "old"]);
    let text = osmo.ok(&["config", "history", "SERVICE", "--tags", "stable"]);
    let tagged = row(&text, "SERVICE");
    assert!(
        tagged.contains("longer grace") && tagged.contains("stable") && !tagged.contains("old"),
        "{text}"
    );
    let text = osmo.ok(&["config", "diff", &old_ref]);
    assert!(
        text.contains("-  \"backend_heartbeat_grace\": \"90s\"")
            && text.contains("+  \"backend_heartbeat_grace\": \"100s\""),
        "{text}"
    );
    let text = osmo.ok(&["config", "diff", &old_ref, &old_ref]);
    assert!(
        text.contains("No differences were found between the two revisions"),
        "{text}"
    );
    let text = osmo.ok(&["config", "list"]);
    let service = row(&text, "SERVICE");
    assert!(
        service.contains(&current.to_string()) && service.contains("alice"),
        "{text}"
    );
    let refused = osmo.run(&["config", "delete", &current_ref]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("current revision of SERVICE"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    let text = osmo.ok(&["config", "delete", &old_ref]);
    assert!(
        text.contains(&format!(
            "Successfully deleted revision {old} of SERVICE config"
        )),
        "{text}"
    );
    let gone = osmo.run(&["config", "show", &old_ref]);
    assert_ne!(gone.code, 0, "{}", gone.stdout);
    // `config set`: OSMO's generated pool role, stored as a ROLE config.
    let text = osmo.ok(&[
        "config",
        "set",
        "ROLE",
        "osmo-default",
        "pool",
        "--description",
        "default's users",
    ]);
    assert!(
        text.contains("Successfully set ROLE config \"osmo-default\""),
        "{text}"
    );
    let role = api.get("/api/configs/role/osmo-default").json();
    assert_eq!(
        role["policies"][0]["resources"],
        json!(["pool/default*"]),
        "{role}"
    );
    server.stop();
}

#[test]
fn with_auth_on_a_dev_login_names_nobody() {
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start_with(
        &dir.path().join("dev"),
        &["dev", "--auth", "--listen", "127.0.0.1:0"],
    );
    // The CLI's dev login only saves the name; every call then needs a token.
    osmo.ok(&[
        "login",
        &server.url,
        "--method",
        "dev",
        "--username",
        "admin",
    ]);
    let output = osmo.run(&["profile", "list"]);
    assert_ne!(output.code, 0, "{}", output.stdout);
    assert!(
        output.stderr.contains("requires a token") || output.stdout.contains("requires a token"),
        "stdout:\n{}\nstderr:\n{}",
        output.stdout,
        output.stderr
    );
    server.stop();
}

/// `osmo login --method token`: OSMO's CLI exchanges an access token for
/// Gantry's JWT (`POST /api/auth/jwt/access_token`) and calls with it;
/// the JWT names the token's user and roles. Revoking the access token
/// revokes the JWT; a tampered, foreign-audience or expired JWT is refused
/// with OSMO's messages.
#[test]
fn token_login_through_osmos_cli() {
    use base64::Engine;
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start_with(
        &dir.path().join("dev"),
        &["dev", "--auth", "--listen", "127.0.0.1:0"],
    );
    let admin = std::fs::read_to_string(server.data_dir.join("bootstrap-admin-token"))
        .expect("admin token")
        .trim()
        .to_string();
    let http = reqwest::blocking::Client::new();
    let made = http
        .post(format!(
            "{}/api/auth/user/ann/access_token/laptop?roles=user&expires_at=2099-01-31",
            server.url
        ))
        .bearer_auth(&admin)
        .send()
        .expect("token");
    assert_eq!(made.status().as_u16(), 200);
    let secret: String = made.json().expect("secret");

    let text = osmo.ok(&[
        "login",
        &server.url,
        "--method",
        "token",
        "--token",
        &secret,
    ]);
    assert!(!text.contains("rror"), "{text}");
    let profile = osmo.ok(&["profile", "list"]);
    assert!(profile.contains("email: ann"), "{profile}");
    assert!(profile.contains("- user"), "{profile}");
    let hello = spec_file(dir.path(), "hello.yaml", HELLO);
    let id = submitted_id(&osmo.ok(&["workflow", "submit", &hello]));
    let workflow = http
        .get(format!("{}/api/workflow/{id}", server.url))
        .bearer_auth(&admin)
        .send()
        .expect("query")
        .json::<Value>()
        .expect("workflow");
    assert_eq!(workflow["submitted_by"], "ann");

    // The JWT itself, as the CLI got it.
    let reply: Value = http
        .post(format!("{}/api/auth/jwt/access_token", server.url))
        .json(&json!({"token": secret}))
        .send()
        .expect("jwt")
        .json()
        .expect("jwt answer");
    let jwt = reply["token"].as_str().expect("a JWT").to_string();
    assert!(reply["expires_at"].as_i64().is_some(), "{reply}");
    let status_with = |token: &str| {
        http.get(format!("{}/api/profile/settings", server.url))
            .bearer_auth(token)
            .send()
            .expect("profile")
    };
    assert_eq!(status_with(&jwt).status().as_u16(), 200);
    // Tampered: another user in the claims, the old signature.
    let parts: Vec<&str> = jwt.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value =
        serde_json::from_slice(&engine.decode(parts[1]).expect("claims")).expect("claims json");
    claims["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    );
    let refused = status_with(&forged);
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().expect("error body");
    assert_eq!(body["error_code"], "CREDENTIAL", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Token is not valid"),
        "{body}"
    );
    // Signed with a key Gantry never had.
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not the cluster key"),
    )
    .expect("foreign jwt");
    assert_eq!(status_with(&foreign).status().as_u16(), 401);
    // Signed with the cluster's own JWT key (derived from the key file as
    // the server derives it), but expired, or for another audience or
    // issuer: refused with the reason.
    let key_line = std::fs::read_to_string(server.data_dir.join("cluster-key")).expect("key file");
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(
            key_line
                .lines()
                .find(|l| !l.trim().is_empty())
                .expect("a key")
                .trim(),
        )
        .expect("base64 key");
    let jwt_key = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
        b"gantry access JWT v1",
    );
    let header: Value =
        serde_json::from_slice(&engine.decode(parts[0]).expect("header")).expect("header json");
    let mut signed_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    signed_header.kid = header["kid"].as_str().map(str::to_string);
    let sign = |claims: &Value| {
        jsonwebtoken::encode(
            &signed_header,
            claims,
            &jsonwebtoken::EncodingKey::from_secret(&jwt_key.as_ref()[..32]),
        )
        .expect("sign")
    };
    let mut own: Value =
        serde_json::from_slice(&engine.decode(parts[1]).expect("claims")).expect("claims json");
    assert_eq!(
        status_with(&sign(&own)).status().as_u16(),
        200,
        "the derivation is the server's"
    );
    for (field, value, wanted) in [
        ("exp", json!(1_000_000), "Token is expired"),
        ("aud", json!("someone-else"), "wrong audience"),
        ("iss", json!("https://idp.example"), "wrong issuer"),
    ] {
        let original = own[field].clone();
        own[field] = value;
        let refused = status_with(&sign(&own));
        assert_eq!(refused.status().as_u16(), 401);
        let body: Value = refused.json().expect("error body");
        assert_eq!(body["error_code"], "CREDENTIAL", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(wanted),
            "{field}: {body}"
        );
        own[field] = original;
    }
    // A bad access token gets no JWT.
    let bad = http
        .post(format!("{}/api/auth/jwt/access_token", server.url))
        .json(&json!({"token": "not-a-token"}))
        .send()
        .expect("jwt");
    assert_eq!(bad.status().as_u16(), 401);
    // Revoking the access token revokes the JWT made from it.
    let revoked = http
        .delete(format!(
            "{}/api/auth/user/ann/access_token/laptop",
            server.url
        ))
        .bearer_auth(&admin)
        .send()
        .expect("revoke");
    assert_eq!(revoked.status().as_u16(), 200);
    let refused = status_with(&jwt);
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().expect("error body");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );
    // A new token under the revoked one's name does not revive its JWTs.
    let again = http
        .post(format!(
            "{}/api/auth/user/ann/access_token/laptop?roles=admin&expires_at=2099-01-31",
            server.url
        ))
        .bearer_auth(&admin)
        .send()
        .expect("token");
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(status_with(&jwt).status().as_u16(), 401);
    let output = osmo.run(&["profile", "list"]);
    assert_ne!(output.code, 0, "{}", output.stdout);
    server.stop();
}

/// Submits `spec` to pool `default` as `user` (its `x-osmo-user`); the ID.
fn submit_as(url: &str, user: &str, spec: &str) -> String {
    let reply = reqwest::blocking::Client::new()
        .post(format!("{url}/api/pool/default/workflow"))
        .header("x-osmo-user", user)
        .json(&json!({ "file": spec }))
        .send()
        .expect("submit");
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().expect("submit answer");
    body["name"].as_str().expect("name").to_string()
}

/// A GET with `x-osmo-user` (and a token, if given).
fn get_as(url: &str, path: &str, user: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .header("x-osmo-user", user);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("GET");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn with_auth_off_the_osmo_user_header_names_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let (status, profile) = get_as(&server.url, "/api/profile/settings", "bob", None);
    assert_eq!(status, 200, "{profile}");
    // OSMO's ProfileResponse.
    assert_eq!(
        profile,
        json!({
            "profile": {"username": "bob", "email_notification": false,
                        "slack_notification": false, "pool": "default"},
            "roles": [],
            "pools": ["default"],
            "token": null,
        })
    );
    // Without the header: anonymous, as before.
    let profile = server.client().get("/api/profile/settings").json();
    assert_eq!(profile["profile"]["username"], "anonymous");

    // The header's user submits, cancels and owns tokens.
    let reply = reqwest::blocking::Client::new()
        .post(format!("{}/api/pool/default/workflow", server.url))
        .header("x-osmo-user", "bob")
        .json(&json!({"file": SLEEPER}))
        .send()
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let id = reply.json::<Value>().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, workflow) = get_as(&server.url, &format!("/api/workflow/{id}"), "bob", None);
    assert_eq!(workflow["submitted_by"], "bob");
    let (_, listed) = get_as(&server.url, "/api/workflow", "bob", None);
    assert_eq!(listed["workflows"][0]["user"], "bob");
    // Times in OSMO's form: naive UTC with microseconds.
    let submitted = workflow["submit_time"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(submitted, "%Y-%m-%dT%H:%M:%S%.6f").is_ok()
            && submitted.len() == "2026-12-06T07:50:53.571000".len(),
        "{submitted}"
    );
    let reply = reqwest::blocking::Client::new()
        .post(format!("{}/api/workflow/{id}/cancel", server.url))
        .header("x-osmo-user", "carol")
        .send()
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let workflow = server.client().wait_finished(&id, Duration::from_secs(60));
    assert_eq!(workflow["cancelled_by"], "carol");
    server.stop();
}

#[test]
fn with_auth_on_the_osmo_user_header_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let server = DevServer::start_with(&data, &["dev", "--auth", "--listen", "127.0.0.1:0"]);
    let admin = std::fs::read_to_string(data.join("bootstrap-admin-token"))
        .expect("the admin token")
        .trim()
        .to_string();
    // A header alone is no credential.
    let (status, reply) = get_as(&server.url, "/api/profile/settings", "admin", None);
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error_code"], "CREDENTIAL");
    // With a token, the token's user, whatever the header says.
    let (status, profile) = get_as(
        &server.url,
        "/api/profile/settings",
        "mallory",
        Some(&admin),
    );
    assert_eq!(status, 200, "{profile}");
    assert_ne!(profile["profile"]["username"], "mallory", "{profile}");
    assert_eq!(profile["roles"], json!(["admin"]), "{profile}");
    assert_eq!(profile["token"]["name"], "bootstrap-admin", "{profile}");
    let reply = reqwest::blocking::Client::new()
        .post(format!("{}/api/pool/default/workflow", server.url))
        .bearer_auth(&admin)
        .header("x-osmo-user", "mallory")
        .json(&json!({"file": HELLO}))
        .send()
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let id = reply.json::<Value>().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, workflow) = get_as(
        &server.url,
        &format!("/api/workflow/{id}"),
        "mallory",
        Some(&admin),
    );
    assert_eq!(workflow["submitted_by"], profile["profile"]["username"]);
    server.stop();
}

#[test]
fn task_list_through_osmos_cli() {
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    osmo.login(&server.url, "alice");
    let hello = spec_file(dir.path(), "hello.yaml", HELLO);
    let sleeper = spec_file(dir.path(), "sleeper.yaml", SLEEPER);
    let done = submitted_id(&osmo.ok(&["workflow", "submit", &hello]));
    let sleeping = submitted_id(&osmo.ok(&["workflow", "submit", &sleeper]));
    api.wait_finished(&done, Duration::from_secs(60));
    api.wait_task(&sleeping, "nap", "RUNNING", Duration::from_secs(60));

    // The CLI's default: the caller's tasks in the live statuses.
    let text = osmo.ok(&["task", "list"]);
    let nap = row(&text, "alice");
    assert!(
        nap.contains(&sleeping) && nap.contains("nap") && nap.contains("RUNNING"),
        "{text}"
    );
    assert!(!text.contains(&done), "{text}");
    let text = osmo.ok(&["task", "list", "-s", "COMPLETED", "RUNNING"]);
    assert!(text.contains(&done) && text.contains("greet"), "{text}");
    assert!(text.contains(&sleeping), "{text}");
    let text = osmo.ok(&["task", "list", "-S"]);
    assert!(row(&text, "alice").contains("default"), "{text}");
    let text = osmo.ok(&["task", "list", "-t", "json"]);
    let listed: Value = serde_json::from_str(&text).expect("task list -t json");
    assert_eq!(listed["tasks"][0]["task_name"], "nap", "{text}");
    assert_eq!(listed["tasks"][0]["workflow_id"], sleeping.as_str());

    api.post(&format!("/api/workflow/{sleeping}/cancel"), None);
    server.stop();
}

/// `osmo credential set|list|delete` against Gantry: the three types in
/// OSMO's envelopes, the list as OSMO's table and JSON, a workflow whose
/// task takes a generic credential as an environment variable (its value
/// masked in `osmo workflow logs`), and deletes answering what they
/// removed. Then `osmo profile set`: a saved default pool that a submit
/// without `--pool` uses; notifications only off.
#[test]
fn credentials_and_profile_through_osmos_cli() {
    let Some(osmo) = Osmo::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    osmo.login(&server.url, "alice");
    let text = osmo.ok(&[
        "credential",
        "set",
        "wandb",
        "--type",
        "GENERIC",
        "--payload",
        "key=wandb-SECRET-0xC0FFEE",
    ]);
    assert!(text.contains("Set GENERIC credential wandb."), "{text}");
    osmo.ok(&[
        "credential",
        "set",
        "ngc",
        "--type",
        "REGISTRY",
        "--payload",
        "registry=nvcr.io",
        "username=$oauthtoken",
        "auth=ngc-SECRET",
    ]);
    osmo.ok(&[
        "credential",
        "set",
        "bucket",
        "--type",
        "DATA",
        "--payload",
        "endpoint=s3://team-bucket/",
        "access_key_id=AKIAEXAMPLE",
        "access_key=data-SECRET-KEY",
    ]);
    let listed: Value =
        serde_json::from_str(&osmo.ok(&["credential", "--format-type", "json", "list"]))
            .expect("credential list json");
    assert_eq!(
        listed["credentials"],
        json!([
            {"cred_name": "bucket", "cred_type": "DATA", "profile": "s3://team-bucket"},
            {"cred_name": "ngc", "cred_type": "REGISTRY", "profile": "nvcr.io"},
            {"cred_name": "wandb", "cred_type": "GENERIC", "profile": null},
        ])
    );
    let table = osmo.ok(&["credential", "list"]);
    assert!(row(&table, "ngc").contains("nvcr.io"), "{table}");
    // The CLI kept the data credential in its own config: "Local" is Yes.
    assert!(row(&table, "bucket").contains("Yes"), "{table}");
    assert!(!table.contains("SECRET"), "{table}");

    let spec = spec_file(
        dir.path(),
        "wandb.yaml",
        "workflow:\n  name: osmo-creds\n  tasks:\n  - name: train\n    image: ubuntu\n    command: [sh, -c, 'test -n \"$WANDB_API_KEY\" && echo key=$WANDB_API_KEY']\n    credentials:\n      wandb: {WANDB_API_KEY: key}\n",
    );
    let id = submitted_id(&osmo.ok(&["workflow", "submit", &spec]));
    let done = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let logs = osmo.ok(&["workflow", "logs", &id]);
    assert!(logs.contains("key=[MASKED]"), "{logs}");
    assert!(!logs.contains("0xC0FFEE"), "{logs}");

    let text = osmo.ok(&["credential", "delete", "bucket"]);
    assert!(text.contains("Deleted credential bucket."), "{text}");
    let missing = osmo.run(&["credential", "delete", "bucket"]);
    assert_ne!(missing.code, 0);
    assert!(
        format!("{}{}", missing.stdout, missing.stderr)
            .contains("Credential bucket does not exist"),
        "{}{}",
        missing.stdout,
        missing.stderr
    );

    // A saved default pool: `profile set pool`, then a submit without
    // --pool goes there.
    let reply = api.put(
        "/api/configs/pool/robots",
        &json!({"description": "bench robots", "configs": {"backend": "local"}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(osmo
        .ok(&["profile", "set", "pool", "robots"])
        .contains("Profile Set"));
    let text = osmo.ok(&["profile", "list"]);
    assert!(text.contains("default: robots"), "{text}");
    assert!(text.contains("- robots"), "{text}");
    let hello = spec_file(dir.path(), "hello.yaml", HELLO);
    let id = submitted_id(&osmo.ok(&["workflow", "submit", &hello]));
    assert_eq!(api.workflow(&id)["pool"], "robots");
    let refused = osmo.run(&["profile", "set", "pool", "nowhere"]);
    assert_ne!(refused.code, 0);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("pool: 'nowhere'"),
        "{}",
        refused.stderr
    );
    let refused = osmo.run(&["profile", "set", "notifications", "email", "true"]);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("sends no notifications"),
        "{}",
        refused.stderr
    );
    assert!(osmo
        .ok(&["profile", "set", "notifications", "slack", "false"])
        .contains("Profile Set"));
    assert!(osmo.ok(&["profile", "list"]).contains("default: robots"));
    server.stop();
}

/// OSMO's router protocol, as OSMO's CLI speaks it to Gantry:
/// `osmo workflow port-forward` (a ticket per port, a control socket, a
/// data socket per connection: 20 connections at once each get their own
/// answer) and `osmo workflow exec` (typed into through tmux, as a user
/// types: the task's files, its user, the window's size and its changes;
/// `exit` ends the CLI); UDP is refused by name.
#[test]
fn exec_and_port_forward_through_osmos_cli() {
    let Some(osmo) = Osmo::find() else { return };
    let tmux_present = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        tmux_present || std::env::var("CI").as_deref() != Ok("true"),
        "tmux is missing (CI installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    osmo.login(&server.url, "alice");
    let spec = spec_file(
        dir.path(),
        "router.yaml",
        r#"workflow:
  name: router
  tasks:
  - name: web
    image: ubuntu
    command: [sh, -c]
    args:
    - |
      echo from-the-task > /tmp/state
      mkdir -p /tmp/site && echo site-index > /tmp/site/index.html
      python3 -c 'import socket
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
      s.bind(("127.0.0.1", 7001))
      while True:
          data, peer = s.recvfrom(65535)
          s.sendto(data.upper(), peer)' &
      exec python3 -m http.server 7000 --bind 127.0.0.1 --directory /tmp/site
"#,
    );
    let id = submitted_id(&osmo.ok(&["workflow", "submit", &spec]));
    server
        .client()
        .wait_task(&id, "web", "RUNNING", Duration::from_secs(90));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut forward = Command::new(&osmo.launcher)
        .args(["workflow", "port-forward", &id, "web", "--port"])
        .arg(format!("{port}:7000"))
        .env("XDG_CONFIG_HOME", osmo.home.path().join("config"))
        .env("XDG_STATE_HOME", osmo.home.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fetch = |port: u16| -> Result<String, String> {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/index.html"))
            .timeout(Duration::from_secs(20))
            .send()
            .and_then(|response| response.text())
            .map_err(|error| error.to_string())
    };
    let first = common::wait_for(Duration::from_secs(60), "the forwarded port", || {
        fetch(port).and_then(|text| {
            if text.contains("site-index") {
                Ok(text)
            } else {
                Err(text)
            }
        })
    });
    assert_eq!(first.trim(), "site-index");
    let answers: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| fetch(port))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in answers {
        assert_eq!(answer.as_deref().map(str::trim), Ok("site-index"));
    }
    let _ = forward.kill();
    let _ = forward.wait();
    // UDP (`--udp`): each local client's datagrams answered to it alone.
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut udp_forward = Command::new(&osmo.launcher)
        .args(["workflow", "port-forward", &id, "web", "--port"])
        .arg(format!("{udp_port}:7001"))
        .arg("--udp")
        .env("XDG_CONFIG_HOME", osmo.home.path().join("config"))
        .env("XDG_STATE_HOME", osmo.home.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exchange = |word: &str| -> Result<String, String> {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        client
            .send_to(word.as_bytes(), ("127.0.0.1", udp_port))
            .map_err(|e| e.to_string())?;
        let mut reply = [0u8; 64];
        let (n, _) = client.recv_from(&mut reply).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
    };
    let first = common::wait_for(Duration::from_secs(60), "a UDP reply", || exchange("alpha"));
    assert_eq!(first, "ALPHA");
    assert_eq!(exchange("beta").as_deref(), Ok("BETA"));
    let _ = udp_forward.kill();
    let _ = udp_forward.wait();

    if !tmux_present {
        eprintln!("skipped the exec half: tmux is not installed");
        return;
    }
    let socket = format!("osmo-exec-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let status = Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "tmux {args:?}");
    };
    let pane = || {
        let output = Command::new("tmux")
            .args(["-L", &socket, "capture-pane", "-p", "-t", "osmo"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let wait_pane = |what: &str, wanted: &str| {
        common::wait_for(Duration::from_secs(60), what, || {
            let text = pane();
            if text.contains(wanted) {
                Ok(())
            } else {
                Err(text)
            }
        });
    };
    let command = format!(
        "XDG_CONFIG_HOME={config} XDG_STATE_HOME={state} TZ=UTC {launcher} workflow exec {id} web --entry /bin/sh; echo EXITED; sleep 60",
        config = osmo.home.path().join("config").display(),
        state = osmo.home.path().join("state").display(),
        launcher = osmo.launcher.display(),
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "osmo",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .status();
        }
    }
    let _kill = Kill(socket.clone());
    wait_pane("the shell's prompt", "$");
    tmux(&[
        "send-keys",
        "-t",
        "osmo",
        "cat /tmp/state; id -u; stty size",
        "Enter",
    ]);
    wait_pane("the task's file", "from-the-task");
    wait_pane("the task's user", "\n1000");
    wait_pane("the window's size", "30 100");
    tmux(&["resize-window", "-t", "osmo", "-x", "80", "-y", "20"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", "osmo", "stty size", "Enter"]);
    wait_pane("the new size", "20 80");
    tmux(&["send-keys", "-t", "osmo", "exit", "Enter"]);
    wait_pane("the CLI to end with the shell", "EXITED");

    // Both sessions, opened through OSMO's router protocol, are events of
    // the workflow with OSMO's user.
    common::wait_for_events(
        &reqwest::blocking::Client::new(),
        &server.url,
        None,
        &id,
        None,
        &["PORT-FORWARD: by alice to port 7000", "EXEC: by alice: "],
    );
}
