//! Gantry's OpenAPI document, as a running `gantry dev` serves it, held
//! against OSMO's (`shared/osmo/openapi.json` beside the repository):
//! every route both have keeps OSMO's path, parameter names and body; and
//! the document lists exactly what the server answers.

mod common;

use common::DevServer;
use serde_json::Value;
use std::collections::BTreeSet;

fn osmo_document() -> Value {
    let path = common::osmo_reference("openapi.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading OSMO's document {}: {error}", path.display()));
    serde_json::from_str(&text).expect("OSMO's document is JSON")
}

/// `/api/workflow/{}/logs` for `/api/workflow/{name}/logs`: the shape of a
/// path whatever its parameters are called.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(name, where, required)` of an operation's parameters, headers left out
/// (OSMO's `x-osmo-*` headers come from its gateway, not from callers).
fn parameters(operation: &Value) -> BTreeSet<(String, String, bool)> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] != "header")
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["in"].as_str().unwrap_or_default().to_string(),
                p["required"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn gantry_only(operation: &Value, name: &str) -> bool {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == name && p["x-gantry-only"] == true)
}

#[test]
fn routes_osmo_also_has_keep_osmo_paths_parameters_and_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let ours = server.client().get("/api/openapi.json").json();
    let osmo = osmo_document();
    let osmo_paths = osmo["paths"].as_object().expect("OSMO's paths");
    let ours_paths = ours["paths"].as_object().expect("Gantry's paths");

    let mut problems = Vec::new();
    let mut shared = 0;
    for (path, item) in ours_paths {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            // The same route in OSMO's document: same shape and method.
            let Some((osmo_path, osmo_operation)) = osmo_paths.iter().find_map(|(p, i)| {
                (shape(p) == shape(path)).then_some(())?;
                Some((p, i.get(method)?))
            }) else {
                continue;
            };
            shared += 1;
            let at = format!("{} {path}", method.to_uppercase());
            if osmo_path != path {
                problems.push(format!("{at}: OSMO spells the path {osmo_path}"));
            }
            let theirs = parameters(osmo_operation);
            let mine = parameters(operation);
            for (name, place, required) in &mine {
                if gantry_only(operation, name) {
                    continue;
                }
                match theirs.iter().find(|(n, p, _)| n == name && p == place) {
                    None => problems.push(format!(
                        "{at}: {place} parameter `{name}` is not OSMO's (mark it Gantry's own or drop it)"
                    )),
                    Some((_, _, theirs_required)) if theirs_required != required => problems
                        .push(format!(
                            "{at}: `{name}` is required={required}, OSMO says {theirs_required}"
                        )),
                    Some(_) => {}
                }
            }
            for (name, place, required) in &theirs {
                let have = mine.iter().any(|(n, p, _)| n == name && p == place);
                if *required && !have {
                    problems.push(format!("{at}: OSMO requires {place} parameter `{name}`"));
                }
            }
            let body = |op: &Value| -> Option<BTreeSet<String>> {
                op["requestBody"]["content"]
                    .as_object()
                    .map(|content| content.keys().cloned().collect())
            };
            if body(osmo_operation).is_some() && body(operation).is_none() {
                problems.push(format!(
                    "{at}: OSMO takes a request body, Gantry declares none"
                ));
            }
            if let (Some(theirs), Some(mine)) = (body(osmo_operation), body(operation)) {
                if theirs.is_disjoint(&mine) {
                    problems.push(format!("{at}: body {mine:?}, OSMO's {theirs:?}"));
                }
            }
        }
    }
    server.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Most of Gantry's API is OSMO's: a document that shares little with it
    // would mean the comparison found nothing to compare.
    assert!(shared >= 30, "only {shared} routes matched OSMO's document");
}

#[test]
fn the_document_lists_what_the_server_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = DevServer::start(dir.path());
    let api = server.client();
    let document = api.get("/api/openapi.json").json();
    let paths = document["paths"].as_object().expect("paths");
    // Every documented GET without path parameters answers (not 404/405).
    for (path, item) in paths {
        if item.get("get").is_none() || path.contains('{') || path == "/api/cluster/snapshot" {
            continue;
        }
        let reply = api.get(path);
        assert!(
            reply.status != 404 && reply.status != 405,
            "GET {path} is documented but answers {}",
            reply.status
        );
    }
    // And a path the document does not have is unknown to the server.
    assert!(!paths.contains_key("/api/no-such-route"));
    assert_eq!(api.get("/api/no-such-route").status, 404);
    server.stop();
}
