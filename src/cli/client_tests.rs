//! Client tests against a real axum server on 127.0.0.1:0: what goes on the
//! wire for submit, list and cancel, streamed logs, error bodies and failover.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::{Client, ClientError, ListQuery, SubmitRequest};
use super::{ClientArgs, OutputFormat, PoolCommand, WorkflowCommand};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    body: Option<Value>,
}

#[derive(Clone, Default)]
struct TestState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The logs handler sends its second chunk only after the client has
    /// received the first, which proves the client does not buffer the body.
    log_acks: Arc<Mutex<Option<mpsc::UnboundedReceiver<()>>>>,
}

fn decode_query(uri: &Uri) -> Vec<(String, String)> {
    let raw = uri.query().unwrap_or("");
    decode_pairs(raw)
}

/// Minimal `application/x-www-form-urlencoded` decoder (no extra dependency).
fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    fn unescape(s: &str) -> String {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

async fn record(
    State(state): State<TestState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: decode_query(&uri),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).ok(),
    };
    state.seen.lock().unwrap().push(seen);
    let path = uri.path();
    match (method, path) {
        (Method::POST, "/api/pool/gpu/workflow") => Json(json!({
            "name": "train-7", "overview": "http://x/workflows/train-7",
            "logs": null, "spec": null, "dashboard_url": null, "warnings": []
        }))
        .into_response(),
        (Method::GET, "/api/workflow") => {
            Json(json!({"workflows": [], "more_entries": false})).into_response()
        }
        (Method::POST, "/api/workflow/train-7/cancel") => {
            Json(json!({"name": "train-7"})).into_response()
        }
        (Method::POST, "/api/workflow/done-1/cancel") => (
            StatusCode::CONFLICT,
            Json(json!({"message": "Workflow done-1 already finished",
                        "error_code": "USER", "workflow_id": "done-1"})),
        )
            .into_response(),
        (Method::GET, "/api/version") => {
            Json(json!({"major": "0", "minor": "1", "revision": "0", "hash": ""})).into_response()
        }
        (Method::GET, "/api/pool") => Json(json!({"pools": {
            "default": {"name": "default", "description": "", "status": "ONLINE",
                        "backend": "local"}}}))
        .into_response(),
        (Method::GET, "/api/pool_quota") => Json(json!({"node_sets": [{"pools": [
            {"name": "default", "status": "ONLINE", "backend": "local", "nodes": 1,
             "resource_usage": {"quota_used": "0", "quota_limit": "-",
                                "total_usage": "0", "total_capacity": "0"}}]}]}))
        .into_response(),
        (Method::GET, "/api/workflow/train-7/spec") => "workflow:\n  name: train\n".into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"message": format!("{path} not found"), "error_code": "USER",
                        "workflow_id": null}),
            ),
        )
            .into_response(),
    }
}

async fn logs(State(state): State<TestState>, Path(name): Path<String>, uri: Uri) -> Response {
    state.seen.lock().unwrap().push(Seen {
        method: Method::GET,
        path: format!("/api/workflow/{name}/logs"),
        query: decode_query(&uri),
        authorization: None,
        body: None,
    });
    let acks = state
        .log_acks
        .lock()
        .unwrap()
        .take()
        .expect("one logs call");
    let stream = futures::stream::unfold((0u8, acks), |(step, mut acks)| async move {
        let chunk = match step {
            0 => "2025/03/01 10:00:00 [train] epoch 1\n",
            1 => {
                acks.recv().await?;
                "2025/03/01 10:00:01 [train] epoch 2\n"
            }
            _ => return None,
        };
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), (step + 1, acks)))
    });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Starts the test server; returns its base URL and shared state.
async fn start_server() -> (String, TestState, mpsc::UnboundedSender<()>) {
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let state = TestState::default();
    *state.log_acks.lock().unwrap() = Some(ack_rx);
    let app = Router::new()
        .route("/api/workflow/{name}/logs", get(logs))
        .fallback(record)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state, ack_tx)
}

/// A URL on which nothing listens: bind a free port, then release it.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn submit_sends_osmo_request() {
    let (url, state, _ack) = start_server().await;
    let client = Client::new(vec![url], Some("secret".into())).unwrap();
    let response = client
        .submit_request(&SubmitRequest {
            pool: "gpu",
            file_text: "workflow:\n  name: train\n",
            set: &["epochs=3".into()],
            set_string: &["tag=007".into()],
            set_env: &["A=1".into(), "B=x y".into()],
            priority: Some("HIGH"),
            labels: &["team=robotics".into()],
            dry_run: false,
            validation_only: false,
        })
        .await
        .unwrap();
    assert_eq!(response["name"], "train-7");

    let seen = state.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/pool/gpu/workflow");
    assert_eq!(
        seen.query,
        pairs(&[
            ("dry_run", "false"),
            ("validation_only", "false"),
            ("priority", "HIGH"),
            ("env_vars", "A=1"),
            ("env_vars", "B=x y"),
            ("label", "team=robotics"),
        ])
    );
    assert_eq!(seen.authorization.as_deref(), Some("Bearer secret"));
    assert_eq!(
        seen.body,
        Some(json!({
            "file": "workflow:\n  name: train\n",
            "set_variables": ["epochs=3"],
            "set_string_variables": ["tag=007"],
        }))
    );

    // The short form used by `validate`.
    client
        .submit("gpu", "x", &[], &[], &[], false, true)
        .await
        .unwrap();
    let seen = state.seen.lock().unwrap()[1].clone();
    assert_eq!(
        seen.query,
        pairs(&[("dry_run", "false"), ("validation_only", "true")])
    );
}

#[tokio::test]
async fn list_sends_filters_and_paging() {
    let (url, state, _ack) = start_server().await;
    let client = Client::new(vec![format!("{url}/")], None).unwrap();
    let response = client
        .list(&ListQuery {
            statuses: vec!["RUNNING".into(), "PENDING".into()],
            name: Some("train".into()),
            pools: vec!["gpu".into()],
            users: vec!["ann".into(), "bob".into()],
            tags: vec!["nightly".into()],
            priorities: vec!["HIGH".into()],
            labels: vec!["team=robotics_(a|b)".into()],
            no_labels: vec!["project".into()],
            submitted_after: Some("2026-05-03T00:00:00".into()),
            offset: 40,
            limit: 20,
            order_desc: true,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(response, json!({"workflows": [], "more_entries": false}));
    let seen = state.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, "/api/workflow");
    assert_eq!(seen.authorization, None);
    assert_eq!(
        seen.query,
        pairs(&[
            ("statuses", "RUNNING"),
            ("statuses", "PENDING"),
            ("name", "train"),
            ("pools", "gpu"),
            ("users", "ann"),
            ("users", "bob"),
            ("tags", "nightly"),
            ("priority", "HIGH"),
            ("label", "team=robotics_(a|b)"),
            ("no_label", "project"),
            ("submitted_after", "2026-05-03T00:00:00"),
            ("offset", "40"),
            ("limit", "20"),
            ("order", "DESC"),
        ])
    );
}

#[tokio::test]
async fn cancel_sends_message_and_force_and_decodes_errors() {
    let (url, state, _ack) = start_server().await;
    let client = Client::new(vec![url], None).unwrap();
    let response = client
        .cancel("train-7", Some("wrong data"), true)
        .await
        .unwrap();
    assert_eq!(response, json!({"name": "train-7"}));
    let seen = state.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/workflow/train-7/cancel");
    assert_eq!(
        seen.query,
        pairs(&[("message", "wrong data"), ("force", "true")])
    );

    match client.cancel("done-1", None, false).await.unwrap_err() {
        ClientError::Http {
            status,
            message,
            error_code,
            workflow_id,
        } => {
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(message, "Workflow done-1 already finished");
            assert_eq!(error_code.as_deref(), Some("USER"));
            assert_eq!(workflow_id.as_deref(), Some("done-1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = client.query("nope-1").await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(err.to_string(), "/api/workflow/nope-1 not found");
}

#[tokio::test]
async fn logs_are_streamed_chunk_by_chunk() {
    let (url, state, ack) = start_server().await;
    let client = Client::new(vec![url], None).unwrap();
    let mut received: Vec<String> = Vec::new();
    let call = client.logs("train-7", Some("train"), Some(100), |chunk| {
        received.push(String::from_utf8(chunk.to_vec()).unwrap());
        // Only now may the server send the next chunk: if the client waited
        // for the whole body, this would never run and the test would time out.
        let _ = ack.send(());
    });
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("logs were buffered instead of streamed")
        .unwrap();
    assert_eq!(
        received.concat(),
        "2025/03/01 10:00:00 [train] epoch 1\n2025/03/01 10:00:01 [train] epoch 2\n"
    );
    assert!(received.len() >= 2, "{received:?}");
    let seen = state.seen.lock().unwrap()[0].clone();
    assert_eq!(
        seen.query,
        pairs(&[("last_n_lines", "100"), ("task_name", "train")])
    );
}

#[tokio::test]
async fn spec_returns_text() {
    let (url, state, _ack) = start_server().await;
    let client = Client::new(vec![url], None).unwrap();
    let spec = client.spec("train-7", true).await.unwrap();
    assert_eq!(spec, "workflow:\n  name: train\n");
    let seen = state.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.query, pairs(&[("use_template", "true")]));
}

#[tokio::test]
async fn fails_over_to_next_url_on_refused_connection() {
    let (url, state, _ack) = start_server().await;
    let dead = refused_url();
    let client = Client::new(vec![dead.clone(), url.clone()], None).unwrap();
    assert_eq!(client.base_urls(), [dead.as_str(), url.as_str()]);
    let version = client.version().await.unwrap();
    assert_eq!(version["major"], "0");
    // The live server is preferred from now on.
    client.version().await.unwrap();
    assert_eq!(state.seen.lock().unwrap().len(), 2);

    let only_dead = Client::new(vec![refused_url(), dead], None).unwrap();
    let err = only_dead.version().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

/// What `main` prints for a refused connection (`error: {error:#}`): one
/// line naming each server URL once, why, and what to check.
#[tokio::test]
async fn refused_connections_name_each_url_once_with_a_hint() {
    let dead = refused_url();
    let err = Client::new(vec![dead.clone()], None)
        .unwrap()
        .list(&ListQuery {
            limit: 20,
            all_users: true,
            ..ListQuery::default()
        })
        .await
        .unwrap_err();
    let printed = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(
        printed,
        format!(
            "cannot connect to {dead} (connection refused): is a gantry server running there? set --url or GANTRY_URL"
        )
    );

    let other = refused_url();
    let err = Client::new(vec![dead.clone(), other.clone()], None)
        .unwrap()
        .version()
        .await
        .unwrap_err();
    let printed = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(
        printed,
        format!(
            "cannot connect to {dead}, {other} (connection refused): is a gantry server running at any of them? set --url or GANTRY_URL"
        )
    );
    assert!(!printed.contains('\n'));
}

#[test]
fn query_decoder_handles_escapes() {
    assert_eq!(
        decode_pairs("a=1%3D2&b=x+y&c=%2F"),
        pairs(&[("a", "1=2"), ("b", "x y"), ("c", "/")])
    );
}

/// The verbs end to end against the test server, in both output formats:
/// what they send, and that server errors come back as `Err` with the
/// server's message (the caller prints `error: <message>`).
#[tokio::test]
async fn verbs_drive_the_api() {
    let (url, state, _ack) = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wf.yaml");
    std::fs::write(&file, "workflow:\n  name: train\n").unwrap();
    for format in [OutputFormat::Text, OutputFormat::Json] {
        let args = ClientArgs {
            ca: None,
            url: vec![url.clone()],
            format,
        };
        super::run_workflow(
            &args,
            WorkflowCommand::Submit {
                file: file.clone(),
                pool: Some("gpu".into()),
                set: vec![],
                set_string: vec![],
                set_env: vec!["A=1".into()],
                dry_run: false,
                priority: Some(gantry_storage::Priority::Low),
                labels: vec![],
                output: super::FormatArg { format },
            },
        )
        .await
        .unwrap();
        super::run_workflow(
            &args,
            WorkflowCommand::List {
                statuses: vec!["RUNNING".into()],
                count: 20,
                offset: 0,
                name: None,
                pools: vec![],
                users: vec![],
                all_users: false,
                submitted_after: None,
                submitted_before: None,
                tags: vec![],
                priorities: vec![],
                labels: vec![],
                no_labels: vec![],
                order: super::workflow::ListOrder::Asc,
                output: super::FormatArg { format },
            },
        )
        .await
        .unwrap();
        super::run_pool(
            &args,
            PoolCommand::List {
                pools: vec![],
                output: super::FormatArg { format },
            },
        )
        .await
        .unwrap();
        super::run_version(&args).await.unwrap();
        let err = super::run_workflow(
            &args,
            WorkflowCommand::Cancel {
                ids: vec!["done-1".into()],
                message: None,
                force: false,
                output: super::FormatArg { format },
            },
        )
        .await
        .unwrap_err();
        assert_eq!(format!("{err:#}"), "Workflow done-1 already finished");
    }
    let seen = state.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/pool/gpu/workflow",
            "/api/workflow",
            "/api/pool_quota",
            "/api/version",
            "/api/workflow/done-1/cancel"
        ]
        .repeat(2)
    );
    assert!(seen[0].query.contains(&("priority".into(), "LOW".into())));
    assert!(seen[0].query.contains(&("env_vars".into(), "A=1".into())));

    let missing = ClientArgs {
        ca: None,
        url: vec![url],
        format: OutputFormat::Text,
    };
    let err = super::run_workflow(
        &missing,
        WorkflowCommand::Submit {
            file: dir.path().join("absent.yaml"),
            pool: Some("gpu".into()),
            set: vec![],
            set_string: vec![],
            set_env: vec![],
            dry_run: false,
            priority: None,
            labels: vec![],
            output: super::FormatArg {
                format: OutputFormat::Text,
            },
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("cannot read workflow spec"),
        "{err:#}"
    );
}

/// A server that answers `503` with `Retry-After` (no leader took the call)
/// for its first `refusals` requests, then 200; counts what it saw.
async fn start_not_ready_server(refusals: usize, retry_after: bool) -> (String, Arc<Mutex<usize>>) {
    let seen = Arc::new(Mutex::new(0usize));
    let counter = seen.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let mut count = counter.lock().unwrap();
            *count += 1;
            if *count <= refusals {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"message": "the control plane is not ready: not the leader", "error_code": "SERVER"})),
                )
                    .into_response();
                if retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                }
                response
            } else {
                Json(json!({"pools": {}})).into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn no_leader_answers_move_on_and_come_round_again() {
    // Two servers without a leader at first: the client tries both, pauses,
    // and goes round until one answers.
    let (first, first_seen) = start_not_ready_server(2, true).await;
    let (second, second_seen) = start_not_ready_server(2, true).await;
    let client = Client::new(vec![refused_url(), first, second], None).unwrap();
    let started = std::time::Instant::now();
    let pools = client
        .members()
        .await
        .expect("answered once a leader is there");
    assert_eq!(pools, json!({"pools": {}}));
    assert_eq!(
        *first_seen.lock().unwrap(),
        3,
        "first server: two refusals, then the answer"
    );
    assert_eq!(
        *second_seen.lock().unwrap(),
        2,
        "second server: asked in each round that failed"
    );
    // Two pauses (100 ms, 200 ms), far below the Retry-After cap of 1 s each.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A 503 without Retry-After may have had an effect: final, not resent.
    let (plain, plain_seen) = start_not_ready_server(1, false).await;
    let (other, other_seen) = start_not_ready_server(0, false).await;
    let client = Client::new(vec![plain, other], None).unwrap();
    let error = client.members().await.expect_err("a plain 503 is final");
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(*plain_seen.lock().unwrap(), 1);
    assert_eq!(*other_seen.lock().unwrap(), 0);
}

/// `workflow cancel A B` as OSMO's CLI takes it: every ID is tried, the
/// one that fails does not stop the next, and the exit status says which
/// failed.
#[tokio::test]
async fn cancel_takes_several_workflows_and_names_the_ones_that_failed() {
    let (url, state, _ack) = start_server().await;
    let args = ClientArgs {
        ca: None,
        url: vec![url],
        format: OutputFormat::Text,
    };
    let err = super::run_workflow(
        &args,
        WorkflowCommand::Cancel {
            ids: vec!["done-1".into(), "train-7".into()],
            message: None,
            force: false,
            output: super::FormatArg {
                format: OutputFormat::Text,
            },
        },
    )
    .await
    .unwrap_err();
    assert_eq!(format!("{err:#}"), "1 of 2 cancellations failed: done-1");
    let seen = state.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/workflow/done-1/cancel",
            "/api/workflow/train-7/cancel"
        ]
    );
}
