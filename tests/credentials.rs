//! User credentials end to end on a `gantry dev` server (a cluster of one
//! with its own cluster key): `gantry credential set|list|delete`, a task
//! that reads a generic credential from its environment and from files,
//! and the probe that the value is nowhere else — not in any file of the
//! data directory (Raft log, state, chunks), not in a snapshot, not in the
//! task's logs (masked), not in an API answer. Submits naming a credential
//! or a key that does not exist are refused with OSMO's messages.

mod common;

use common::{cli, files_holding, DevServer};
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "hf_SECRET_TOKEN_4b1d9c";
const AWS_KEY: &str = "AWS_SECRET_KEY_77aa0e";

fn ok(url: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(url, args);
    assert_eq!(code, 0, "gantry {args:?}:\n{stdout}\n{stderr}");
    stdout
}

/// The spec compares digests: the values themselves must not be in it
/// (a spec is stored as given).
const SPEC: &str = r#"
workflow:
  name: creds
  tasks:
  - name: read
    image: ubuntu
    command: [sh, -c]
    args:
    - |
      set -e
      test "$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-64)" = "TOKEN_DIGEST"
      test "$(sha256sum < /creds/aws/secret_key | cut -c1-64)" = "AWS_KEY_DIGEST"
      test "$(cat /creds/aws/region)" = "eu-1"
      test "$(cat /etc/ngc/username)" = '$oauthtoken'
      test "$(cat /etc/ngc/registry)" = nvcr.io
      echo "token is $HF_TOKEN"
      echo "key is $(cat /creds/aws/secret_key)"
      echo "region is $(cat /creds/aws/region)"
      ls /creds/aws
    credentials:
      hf: {HF_TOKEN: token}
      aws: /creds/aws
      ngc: /etc/ngc
"#;

fn digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn a_task_reads_its_credentials_and_their_values_are_nowhere_else() {
    let spec = SPEC
        .replace("TOKEN_DIGEST", &digest(TOKEN))
        .replace("AWS_KEY_DIGEST", &digest(AWS_KEY));
    let spec = spec.as_str();
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let url = server.url.clone();
    let api = server.client();
    let secret_file = dir.path().join("aws-key");
    std::fs::write(&secret_file, format!("{AWS_KEY}\n")).unwrap();

    let text = ok(
        &url,
        &[
            "credential",
            "set",
            "hf",
            "--type",
            "GENERIC",
            "--payload",
            &format!("token={TOKEN}"),
        ],
    );
    assert!(text.contains("Set GENERIC credential hf."), "{text}");
    ok(
        &url,
        &[
            "credential",
            "set",
            "aws",
            "--type",
            "GENERIC",
            "--payload-file",
            &format!("secret_key={}", secret_file.display()),
        ],
    );
    // Replaced with the same type: the region is added.
    let region_file = dir.path().join("region");
    std::fs::write(&region_file, "eu-1").unwrap();
    ok(
        &url,
        &[
            "credential",
            "set",
            "aws",
            "--type",
            "GENERIC",
            "--payload-file",
            &format!("secret_key={}", secret_file.display()),
            &format!("region={}", region_file.display()),
        ],
    );
    ok(
        &url,
        &[
            "credential",
            "set",
            "ngc",
            "--type",
            "REGISTRY",
            "--payload",
            "registry=https://nvcr.io/",
            "username=$oauthtoken",
            "auth=NGC_SECRET_5150",
        ],
    );
    let listed: Value =
        serde_json::from_str(&ok(&url, &["credential", "list", "-t", "json"])).unwrap();
    assert_eq!(
        listed,
        json!({"credentials": [
            {"cred_name": "ngc", "cred_type": "REGISTRY", "profile": "nvcr.io"},
            {"cred_name": "aws", "cred_type": "GENERIC", "profile": null},
            {"cred_name": "hf", "cred_type": "GENERIC", "profile": null},
        ]})
    );
    let table = ok(&url, &["credential", "list"]);
    assert!(
        table.contains("nvcr.io") && !table.contains("NGC_SECRET"),
        "{table}"
    );

    // Bad input names the field and writes nothing.
    for (args, wanted) in [
        (
            vec![
                "credential",
                "set",
                "hf",
                "--type",
                "REGISTRY",
                "--payload",
                "auth=x",
            ],
            "exists with type GENERIC",
        ),
        (
            vec![
                "credential",
                "set",
                "9hf",
                "--type",
                "GENERIC",
                "--payload",
                "a=b",
            ],
            "cred_name",
        ),
        (
            vec![
                "credential",
                "set",
                "ngc2",
                "--type",
                "REGISTRY",
                "--payload",
                "registry=nvcr.io",
                "auth=y",
            ],
            "already for nvcr.io",
        ),
        (
            vec![
                "credential",
                "set",
                "bad",
                "--type",
                "GENERIC",
                "--payload",
                "../x=y",
            ],
            "generic_credential.credential.../x",
        ),
        (
            vec!["credential", "delete", "nosuch"],
            "Credential nosuch does not exist",
        ),
    ] {
        let (code, stdout, stderr) = cli(&url, &args);
        assert_ne!(code, 0, "{args:?} accepted: {stdout}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
    let unchanged: Value =
        serde_json::from_str(&ok(&url, &["credential", "list", "-t", "json"])).unwrap();
    assert_eq!(unchanged, listed);

    // A submit naming a credential or key the user lacks is refused as OSMO does.
    let unknown = api.submit(&spec.replace("hf: {HF_TOKEN: token}", "wandb: {WANDB_API_KEY: key}"));
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(
        unknown
            .body
            .contains("Could not find the credential: wandb."),
        "{}",
        unknown.body
    );
    let bad_key = api.submit(&spec.replace("{HF_TOKEN: token}", "{HF_TOKEN: tokn}"));
    assert_eq!(bad_key.status, 400, "{}", bad_key.body);
    assert!(
        bad_key
            .body
            .contains("tokn is not a valid credential key please choose from [token]"),
        "{}",
        bad_key.body
    );

    let id = api.submit_ok(spec);
    let done = api.wait_finished(&id, Duration::from_secs(120));
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    assert_eq!(done["status"], "COMPLETED", "{done}\n{logs}");
    assert!(logs.contains("token is [MASKED]"), "{logs}");
    assert!(logs.contains("key is [MASKED]"), "{logs}");
    // Shorter than eight characters: not masked, as OSMO.
    assert!(logs.contains("region is eu-1"), "{logs}");
    assert!(logs.contains("secret_key"), "the keys are files: {logs}");

    // The probe: no plaintext in any answer, file or snapshot.
    let archive = reqwest::blocking::get(format!("{url}/api/cluster/snapshot"))
        .expect("snapshot")
        .bytes()
        .expect("snapshot bytes");
    let (_meta, image) = gantry_raft::snapshot_file::read(&archive).expect("a snapshot");
    for secret in [TOKEN, AWS_KEY, "NGC_SECRET_5150"] {
        assert!(
            !image.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the snapshot"
        );
        assert_eq!(
            files_holding(&server.data_dir, secret.as_bytes()),
            Vec::<String>::new(),
            "{secret} in the data directory"
        );
        let events = api.get(&format!("/api/workflow/{id}/events")).body;
        assert!(!events.contains(secret), "{events}");
        assert!(!api
            .get(&format!("/api/workflow/{id}?verbose=true"))
            .body
            .contains(secret));
    }

    // A profile update that is not JSON: OSMO's error shape, naming why.
    let bad = api.post_raw("/api/profile/settings", b"{pool:".to_vec());
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error_code"], "USAGE", "{}", bad.body);

    let text = ok(&url, &["credential", "delete", "hf"]);
    assert!(text.contains("Deleted credential hf."), "{text}");
    let after: Value =
        serde_json::from_str(&ok(&url, &["credential", "list", "-t", "json"])).unwrap();
    assert_eq!(
        after["credentials"].as_array().map(Vec::len),
        Some(2),
        "{after}"
    );
    // The next submit that names it is refused.
    let gone = api.submit(spec);
    assert_eq!(gone.status, 400, "{}", gone.body);
    server.stop();
}

/// The probe of a masking gap: with a cluster key the WORKFLOW config's
/// secrets are stored sealed, and the masker was built from the sealed
/// text, so a task that printed the Slack token showed it in the clear.
#[test]
fn a_sealed_workflow_config_secret_is_still_masked_in_task_logs() {
    const SLACK_TOKEN: &str = "xoxb-MASK-PROBE-31337";
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();
    let reply = api.put(
        "/api/configs/workflow",
        &json!({"configs": {"workflow_alerts": {"slack_token": SLACK_TOKEN}}, "description": "alerts"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let spec = format!(
        "workflow:\n  name: leak\n  tasks:\n  - name: echo\n    image: ubuntu\n    command: [sh, -c, 'echo token {SLACK_TOKEN} here']\n"
    );
    let id = api.submit_ok(&spec);
    let done = api.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    assert!(logs.contains("token [MASKED] here"), "{logs}");
    assert!(!logs.contains(SLACK_TOKEN), "{logs}");
    server.stop();
}

/// A user's DATA credential opens that user's `s3://` URLs: the task's
/// output goes to a bucket that only the credential's endpoint (an S3
/// server on loopback) has; without the credential the same submit fails
/// its upload (no such endpoint otherwise).
#[test]
fn a_users_data_credential_opens_their_bucket() {
    let Some(moto) = common::start_moto("team-bucket") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto_server is not installed (pip install 'moto[server]')"
        );
        println!("SKIPPED: moto_server is not installed (pip install 'moto[server]')");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // No AWS_* in the server's environment: nothing but the credential
    // reaches the bucket.
    let server = DevServer::start_wrapped(
        &[
            "env",
            "-u",
            "AWS_ENDPOINT_URL",
            "-u",
            "AWS_ACCESS_KEY_ID",
            "-u",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_EC2_METADATA_DISABLED=true",
        ],
        &dir.path().join("dev"),
        &["dev", "--listen", "127.0.0.1:0"],
    );
    let url = server.url.clone();
    let api = server.client();
    let spec = "workflow:\n  name: export\n  tasks:\n  - name: make\n    image: ubuntu\n    command: [sh, -c, 'echo result > {{output}}/result.txt']\n    outputs:\n    - url: s3://team-bucket/exports/{{workflow_id}}\n";
    ok(
        &url,
        &[
            "credential",
            "set",
            "team",
            "--type",
            "DATA",
            "--payload",
            "endpoint=s3://team-bucket",
            &format!("override_url={}", moto.url),
            "region=us-east-1",
            "addressing_style=path",
            "access_key_id=team-key",
            "access_key=team-secret-value",
        ],
    );
    let id = api.submit_ok(spec);
    let done = api.wait_finished(&id, Duration::from_secs(120));
    let logs = api.get(&format!("/api/workflow/{id}/logs")).body;
    assert_eq!(done["status"], "COMPLETED", "{done}\n{logs}");
    let listing = reqwest::blocking::get(format!("{}/team-bucket?list-type=2", moto.url))
        .expect("list the bucket")
        .text()
        .expect("listing");
    assert!(
        listing.contains(&format!("<Key>exports/{id}/result.txt</Key>")),
        "{listing}\n{logs}"
    );
    assert!(files_holding(&server.data_dir, b"team-secret-value").is_empty());

    ok(&url, &["credential", "delete", "team"]);
    let id = api.submit_ok(spec);
    let done = api.wait_finished(&id, Duration::from_secs(120));
    assert_eq!(done["status"], "FAILED", "without the credential: {done}");
    server.stop();
}
