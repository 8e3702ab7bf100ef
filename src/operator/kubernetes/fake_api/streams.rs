//! The fake's streaming subresources, as the API server and kubelet serve
//! them to `kubectl` and kube-rs: `pods/{name}/exec` (the command run as a
//! process here, standing in for the container) and `pods/{name}/portforward`
//! (a TCP connection to an address a test registered for the pod's port),
//! over WebSocket with the `v5.channel.k8s.io` / `v4.channel.k8s.io`
//! channel framing: one byte of channel, then the bytes.
//!
//! Invariants: the checks a real API server makes before upgrading are
//! made here too (the pod exists and runs, the container is the pod's);
//! an exec ends with a `Status` on channel 3 shaped as the kubelet's
//! (`NonZeroExitCode` with an `ExitCode` cause); port-forward opens both
//! of the port's channels with the port number, as the kubelet does.

use super::{status, Recorded, Shared};
use crate::protocol::exec::read_output;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
/// v5: the client closed one of its channels (the next byte names it).
const CLOSE: u8 = 255;

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Query pairs in order, repeated names kept (`command` is one per word).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn record(shared: &Shared, path: String, pairs: &[(String, String)]) {
    let query: BTreeMap<String, String> = pairs.iter().cloned().collect();
    shared.lock().requests.push(Recorded {
        method: "GET".into(),
        path,
        query,
        body: None,
    });
}

/// The pod, if it exists and runs; else the API server's refusal.
fn running_pod(shared: &Shared, namespace: &str, pod: &str) -> Result<Value, Box<Response>> {
    let collection = format!("/api/v1/namespaces/{namespace}/pods");
    let object = shared
        .lock()
        .objects
        .get(&collection)
        .and_then(|pods| pods.get(pod))
        .cloned()
        .ok_or_else(|| {
            Box::new(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pods \"{pod}\" not found"),
            ))
        })?;
    if object["status"]["phase"].as_str() != Some("Running") {
        return Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("pod {pod} is not running, cannot stream into it"),
        )));
    }
    Ok(object)
}

fn binary(channel: u8, bytes: &[u8]) -> Message {
    let mut framed = Vec::with_capacity(bytes.len() + 1);
    framed.push(channel);
    framed.extend_from_slice(bytes);
    Message::Binary(framed.into())
}

/// `GET .../pods/{pod}/exec?command=...&container=...&stdin=..&tty=..`
pub(super) async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    record(
        &shared,
        format!("/api/v1/namespaces/{namespace}/pods/{pod}/exec"),
        &pairs,
    );
    let object = match running_pod(&shared, &namespace, &pod) {
        Ok(object) => object,
        Err(refusal) => return *refusal,
    };
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let container = value("container").unwrap_or("");
    let known = object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"].as_str() == Some(container));
    if !known {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let argv: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key == "command")
        .map(|(_, value)| value.clone())
        .collect();
    let tty = value("tty") == Some("true");
    upgrade
        .protocols(PROTOCOLS)
        .on_upgrade(move |socket| run_exec(socket, shared, pod, argv, tty))
}

async fn run_exec(
    socket: WebSocket,
    shared: Arc<Shared>,
    pod: String,
    argv: Vec<String>,
    tty: bool,
) {
    let (mut sink, mut from_client) = socket.split();
    let Some((program, args)) = argv.split_first() else {
        let _ = sink
            .send(binary(
                STATUS,
                failure("you must specify at least one command for the container").as_bytes(),
            ))
            .await;
        return;
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let message = format!("failed to exec in container: exec: \"{program}\": {error}");
            let _ = sink
                .send(binary(STATUS, failure(&message).as_bytes()))
                .await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    // With a terminal there is one output stream, as a kubelet's pty has.
    let error_channel = if tty { STDOUT } else { STDERR };
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            message = from_client.next() => match message {
                Some(Ok(Message::Binary(bytes))) => match bytes.first() {
                    Some(&STDIN) => {
                        if let Some(pipe) = stdin.as_mut() {
                            let _ = pipe.write_all(&bytes[1..]).await;
                        }
                    }
                    Some(&CLOSE) if bytes.get(1) == Some(&STDIN) => stdin = None,
                    Some(&RESIZE) => {
                        if let Ok(size) = serde_json::from_slice::<Value>(&bytes[1..]) {
                            let columns = size["Width"].as_u64().unwrap_or(0);
                            let rows = size["Height"].as_u64().unwrap_or(0);
                            shared.lock().resizes.push((pod.clone(), columns, rows));
                        }
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            bytes = read_output(&mut stdout), if stdout.is_some() => {
                if let Some(bytes) = bytes {
                    if sink.send(binary(STDOUT, &bytes)).await.is_err() {
                        return;
                    }
                }
            }
            bytes = read_output(&mut stderr), if stderr.is_some() => {
                if let Some(bytes) = bytes {
                    if sink.send(binary(error_channel, &bytes)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let status = match child.wait().await.ok().and_then(|status| status.code()) {
        Some(0) => json!({"metadata": {}, "status": "Success"}).to_string(),
        Some(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string(),
        None => failure("the command was killed"),
    };
    let _ = sink.send(binary(STATUS, status.as_bytes())).await;
    let _ = sink.send(Message::Close(None)).await;
}

fn failure(message: &str) -> String {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
        .to_string()
}

/// `GET .../pods/{pod}/portforward?ports=N`: one port per request here.
pub(super) async fn port_forward(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    record(
        &shared,
        format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward"),
        &pairs,
    );
    if let Err(refusal) = running_pod(&shared, &namespace, &pod) {
        return *refusal;
    }
    let port = pairs
        .iter()
        .find(|(key, _)| key == "ports")
        .and_then(|(_, value)| value.parse::<u16>().ok());
    let Some(port) = port else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "query parameter ports must be one port number here".into(),
        );
    };
    let target = shared.lock().pod_ports.get(&(pod.clone(), port)).copied();
    upgrade
        .protocols(PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let (mut sink, mut from_client) = socket.split();
            let number = port.to_le_bytes();
            let opened = sink.send(binary(0, &number)).await.is_ok()
                && sink.send(binary(1, &number)).await.is_ok();
            if !opened {
                return;
            }
            let connection = match target {
                Some(address) => tokio::net::TcpStream::connect(address).await.ok(),
                None => None,
            };
            let Some(connection) = connection else {
                let message =
                    format!("error forwarding port {port} to pod {pod}: connection refused");
                let _ = sink.send(binary(1, message.as_bytes())).await;
                let _ = sink.send(Message::Close(None)).await;
                return;
            };
            let (reader, mut writer) = connection.into_split();
            let mut reader = Some(reader);
            loop {
                tokio::select! {
                    message = from_client.next() => match message {
                        Some(Ok(Message::Binary(bytes))) if bytes.first() == Some(&0) => {
                            if writer.write_all(&bytes[1..]).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                    bytes = read_output(&mut reader) => match bytes {
                        Some(bytes) => {
                            if sink.send(binary(0, &bytes)).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = writer.shutdown().await;
            let _ = sink.send(Message::Close(None)).await;
        })
}
