//! What Gantry answers, held against OSMO's response schemas
//! (`shared/osmo/openapi.json` beside the repository): every GET route both
//! have, asked of a `gantry dev` that ran a workflow, and the submit
//! answer, validate as JSON Schema (2020-12, OSMO's components resolved)
//! against the 200 response OSMO documents for that route. Scripts written
//! against OSMO read these answers.

mod common;

use common::{osmo_reference, DevServer};
use serde_json::{json, Value};
use std::time::Duration;

const FINISH_LIMIT: Duration = Duration::from_secs(60);

const SPEC: &str = "\
workflow:
  name: shapes
  resources:
    default: {cpu: 1, memory: 64Mi}
  tasks:
  - name: hello
    image: ubuntu
    command: [sh, -c, 'echo hello']
";

fn osmo_document() -> Value {
    let path = osmo_reference("openapi.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading OSMO's document {}: {error}", path.display()));
    serde_json::from_str(&text).expect("OSMO's document is JSON")
}

/// The schema of OSMO's 200 JSON answer to `method path`, as a document of
/// its own that carries OSMO's components (so its `$ref`s resolve).
fn response_schema(osmo: &Value, method: &str, path: &str) -> Value {
    let schema = osmo["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        ["schema"]
        .clone();
    assert!(
        schema.is_object(),
        "OSMO documents no JSON answer for {method} {path}"
    );
    let mut document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": osmo["components"].clone(),
    });
    if let (Some(document), Some(schema)) = (document.as_object_mut(), schema.as_object()) {
        for (key, value) in schema {
            document.insert(key.clone(), value.clone());
        }
    }
    document
}

/// Fields Gantry adds where OSMO's schema forbids any it does not name:
/// (route, where — `*` for every element of an array —, field, why). Each
/// is taken out before the answer is validated; anything else that does not
/// fit fails the test.
const GANTRY_ADDITIONS: &[(&str, &str, &str, &str)] = &[
    (
        "/api/workflow/{name}",
        "",
        "failure_message",
        "why a workflow failed as a whole (e.g. FAILED_SUBMISSION, which OSMO never stores)",
    ),
    (
        "/api/pool_quota",
        "/node_sets/*/pools/*",
        "capacity",
        "the pool's node capacity, which `gantry pool list` shows",
    ),
    (
        "/api/pool_quota",
        "/node_sets/*/pools/*",
        "usage",
        "what the pool's running tasks request, for `gantry pool list`",
    ),
    (
        "/api/pool_quota",
        "/node_sets/*/pools/*",
        "nodes",
        "how many nodes the pool covers, for `gantry pool list`",
    ),
    (
        "/api/resources",
        "/resources/*",
        "online",
        "whether the node's backend is online (a node of a lost operator stays listed)",
    ),
    (
        "/api/resources/{name}",
        "/resources/*",
        "online",
        "as for /api/resources",
    ),
];

/// Routes whose answers cannot fit OSMO's schema yet, and why.
const NOT_YET: &[(&str, &str)] = &[(
    "/api/configs/service",
    "OSMO's SERVICE config requires its JWT signing keys (`service_auth.keys`, `active_key`, \
     `issuer`, `audience`); Gantry signs its JWTs with the cluster key, so its service_auth holds \
     the identity provider instead, and operator graces beside it",
)];

/// `value` without the field `field` in each object `at` points to.
fn without(value: &mut Value, at: &str, field: &str) {
    let mut parts = at.split('/').skip(1);
    match parts.next() {
        None => {
            if let Some(object) = value.as_object_mut() {
                object.remove(field);
            }
        }
        Some(step) => {
            let rest: String = parts.map(|part| format!("/{part}")).collect();
            match (step, value) {
                ("*", Value::Array(items)) => {
                    for item in items {
                        without(item, &rest, field);
                    }
                }
                (key, Value::Object(object)) => {
                    if let Some(inner) = object.get_mut(key) {
                        without(inner, &rest, field);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Why `answer` does not fit OSMO's schema for `method path`, if it does not.
fn misfit(osmo: &Value, method: &str, path: &str, answer: &Value) -> Option<String> {
    let mut answer = answer.clone();
    for (route, at, field, _why) in GANTRY_ADDITIONS {
        if *route == path {
            without(&mut answer, at, field);
        }
    }
    let answer = &answer;
    let schema = response_schema(osmo, method, path);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap_or_else(|error| panic!("OSMO's schema for {method} {path}: {error}"));
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .take(5)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| format!("{method} {path}: {}", errors.join("; ")))
}

#[test]
fn answers_fit_osmos_response_schemas() {
    let osmo = osmo_document();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(&dir.path().join("dev"));
    let api = server.client();

    let submitted = api.submit(SPEC);
    assert_eq!(submitted.status, 200, "{}", submitted.body);
    let mut problems = Vec::new();
    problems.extend(misfit(
        &osmo,
        "post",
        "/api/pool/{pool_name}/workflow",
        &submitted.json(),
    ));
    let id = submitted.json()["name"]
        .as_str()
        .expect("workflow id")
        .to_string();
    let finished = api.wait_finished(&id, FINISH_LIMIT);
    assert_eq!(finished["status"], "COMPLETED", "{finished}");
    // The local node, once reported, for `/api/resources/{name}`.
    let node = common::wait_for(Duration::from_secs(30), "a node reported", || {
        api.get("/api/resources").json()["resources"][0]["hostname"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "none yet".to_string())
    });

    // A credential of each type, and one removed, for `/api/credentials`.
    for (name, body) in [
        (
            "hf",
            serde_json::json!({"generic_credential": {"credential": {"token": "t0ken-value"}}}),
        ),
        (
            "ngc",
            serde_json::json!({"registry_credential": {"registry": "nvcr.io", "auth": "a"}}),
        ),
        (
            "bucket",
            serde_json::json!({"data_credential": {"endpoint": "s3://b", "access_key_id": "k", "access_key": "s"}}),
        ),
    ] {
        let reply = api.post(&format!("/api/credentials/{name}"), Some(&body));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let removed = api.delete("/api/credentials/bucket");
    assert_eq!(removed.status, 200, "{}", removed.body);
    problems.extend(misfit(
        &osmo,
        "delete",
        "/api/credentials/{cred_name}",
        &removed.json(),
    ));

    // A user with roles, for `/api/auth/user...` and `/api/users`.
    for (method, template, path, body) in [
        (
            "post",
            "/api/auth/user",
            "/api/auth/user",
            serde_json::json!({"id": "alice", "roles": ["osmo-user"]}),
        ),
        (
            "post",
            "/api/auth/user/{user_id}/roles",
            "/api/auth/user/alice/roles",
            serde_json::json!({"role_name": "osmo-admin"}),
        ),
        (
            "post",
            "/api/auth/roles/{role_name}/users",
            "/api/auth/roles/user/users",
            serde_json::json!({"user_ids": ["alice", "nobody"]}),
        ),
    ] {
        let reply = api.post(path, Some(&body));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        problems.extend(misfit(&osmo, method, template, &reply.json()));
    }

    // (OSMO's path template, the request that fills it.)
    let asked = [
        ("/api/credentials", "/api/credentials".to_string()),
        ("/api/auth/user", "/api/auth/user".to_string()),
        (
            "/api/auth/user",
            "/api/auth/user?id_prefix=al&roles=osmo-admin".to_string(),
        ),
        (
            "/api/auth/user/{user_id}",
            "/api/auth/user/alice".to_string(),
        ),
        (
            "/api/auth/user/{user_id}/roles",
            "/api/auth/user/alice/roles".to_string(),
        ),
        (
            "/api/auth/roles/{role_name}/users",
            "/api/auth/roles/admin/users".to_string(),
        ),
        ("/api/users", "/api/users".to_string()),
        ("/api/version", "/api/version".to_string()),
        ("/api/workflow", "/api/workflow".to_string()),
        (
            "/api/workflow",
            "/api/workflow?all_users=true&all_pools=true".to_string(),
        ),
        ("/api/workflow/{name}", format!("/api/workflow/{id}")),
        (
            "/api/workflow/{name}",
            format!("/api/workflow/{id}?verbose=true"),
        ),
        (
            "/api/workflow/{name}/task/{task_name}",
            format!("/api/workflow/{id}/task/hello"),
        ),
        ("/api/task", "/api/task?all_users=true".to_string()),
        ("/api/task", "/api/task?summary=true".to_string()),
        (
            "/api/task",
            "/api/task?aggregate_by_workflow=true".to_string(),
        ),
        ("/api/pool", "/api/pool".to_string()),
        ("/api/pool_quota", "/api/pool_quota".to_string()),
        ("/api/resources", "/api/resources".to_string()),
        ("/api/resources/{name}", format!("/api/resources/{node}")),
        ("/api/profile/settings", "/api/profile/settings".to_string()),
        ("/api/tag", "/api/tag".to_string()),
        ("/api/configs/service", "/api/configs/service".to_string()),
        ("/api/configs/workflow", "/api/configs/workflow".to_string()),
        ("/api/configs/backend", "/api/configs/backend".to_string()),
        (
            "/api/configs/backend/{name}",
            "/api/configs/backend/local".to_string(),
        ),
        (
            "/api/auth/access_token",
            "/api/auth/access_token".to_string(),
        ),
        ("/api/configs/pool", "/api/configs/pool".to_string()),
        (
            "/api/configs/pool/{name}",
            "/api/configs/pool/default".to_string(),
        ),
        ("/api/configs/role", "/api/configs/role".to_string()),
        (
            "/api/configs/resource_validation",
            "/api/configs/resource_validation".to_string(),
        ),
        (
            "/api/configs/pod_template",
            "/api/configs/pod_template".to_string(),
        ),
        ("/api/configs/history", "/api/configs/history".to_string()),
    ];
    for (template, request) in asked {
        if NOT_YET.iter().any(|(route, _why)| *route == template) {
            continue;
        }
        let reply = api.get(&request);
        if reply.status != 200 {
            problems.push(format!("GET {request}: {} {}", reply.status, reply.body));
            continue;
        }
        if let Some(problem) = misfit(&osmo, "get", template, &reply.json()) {
            problems.push(format!("{problem} (asked {request})"));
        }
    }
    server.stop();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
