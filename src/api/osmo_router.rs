//! OSMO's router protocol, so OSMO's own CLI can `workflow exec` and
//! `workflow port-forward` into a Gantry task unchanged. The CLI first
//! POSTs for a ticket (`/api/workflow/{id}/exec/task/{task}`,
//! `/exec/group/{group}`, `/portforward/{task}?task_ports=`), gets
//! `{router_address, key, cookie}`, then opens a WebSocket to
//! `{router_address}/api/router/exec/{id}/client/{key}` (or
//! `/api/router/portforward/{id}/client/{key}`). Here the router is this
//! server: its WebSockets become sessions into the task, as Gantry's own
//! upgraded requests do.
//!
//! OSMO's framing: an exec socket's first message is the terminal's size
//! (`{"Rows":R,"Cols":C}`); then binary messages carry the terminal's
//! bytes both ways, a client message starting `\0RESIZE:` carries a new
//! size, and an empty message is the end. A port-forward ticket opens a
//! control socket, on which the CLI announces each new TCP connection as
//! `{"key": K, "cookie": C}` before it opens a data socket with that key;
//! a data socket carries the connection's bytes, an empty message its end.
//! A UDP ticket (`use_udp=true`) opens one socket per port whose messages
//! are datagrams prefixed with the local client's IPv4 address and port.
//!
//! Invariants: a ticket is taken once, by the user it was issued to, for
//! the workflow it names, within [`TICKET_TTL`], and is never replaced
//! by another (a data key is the client's choice); every socket is authorized
//! as its route is (`workflow:Exec` / `workflow:PortForward` on the
//! workflow's pool) before the ticket is looked at; tickets are issued and
//! sessions opened only on the leader (a follower relays the request
//! there), as Gantry's own sessions are.

use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::port_forward::{not_the_leader, running_task};
use super::workflow::{lookup, read};
use super::AppState;
use crate::protocol::exec::{ExecCodec, ExecFrame, ExecRequest};
use crate::protocol::session::SessionIo;
use crate::protocol::udp::{self, Datagram, DatagramCodec};
use crate::protocol::SessionKind;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::{SinkExt, StreamExt};
use gantry_storage::{TaskKey, TaskStatus};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

/// How long a ticket waits for its socket.
pub const TICKET_TTL: Duration = Duration::from_secs(120);
/// Tickets held at once by this server.
const TICKETS_MAX: usize = 10_000;
/// Tickets one user may hold at once, so no user can crowd out others.
const TICKETS_PER_USER_MAX: usize = 256;
/// OSMO's prefix of a client's resize message.
const RESIZE_PREFIX: &[u8] = b"\x00RESIZE:";
/// Bytes read from a port-forward session at once.
const DATA_CHUNK_BYTES: usize = 64 << 10;

/// What a ticket opens.
#[derive(Clone, Debug)]
enum TicketKind {
    Exec {
        argv: Vec<String>,
    },
    PortForwardControl {
        port: u16,
    },
    PortForwardData {
        port: u16,
    },
    /// A UDP port's socket: every message a datagram, prefixed with the
    /// local client's IPv4 address and port (6 bytes), both ways.
    PortForwardUdp {
        port: u16,
    },
}

#[derive(Clone, Debug)]
struct Ticket {
    user: String,
    workflow_id: String,
    task: String,
    kind: TicketKind,
    issued: Instant,
}

/// Tickets issued by this server and not taken yet.
#[derive(Default)]
pub struct RouterTickets {
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Woken at every issue: a data socket may arrive just before the
    /// control socket's announcement of its key is read.
    issued: tokio::sync::Notify,
}

/// How long a socket waits for its key to be announced: OSMO's CLI sends
/// a connection's key on the port's control socket and opens the data
/// socket at once, on another connection, so the data socket can win.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

impl RouterTickets {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Ticket>> {
        // Every update is one insert or remove: a poisoned map is consistent.
        self.tickets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Self::take`], waiting up to [`ANNOUNCE_WAIT`] for the key to be
    /// issued.
    async fn take_when_issued(&self, key: &str, caller: &str, workflow: &str) -> Option<Ticket> {
        let deadline = tokio::time::Instant::now() + ANNOUNCE_WAIT;
        loop {
            // Registered before the check, so an issue between the check
            // and the wait still wakes it.
            let issued = self.issued.notified();
            if let Some(ticket) = self.take(key, caller, workflow) {
                return Some(ticket);
            }
            if tokio::time::timeout_at(deadline, issued).await.is_err() {
                return None;
            }
        }
    }

    /// Holds `ticket` under `key`, unless a live ticket holds the key
    /// already (a key a client chose never replaces another's ticket), or
    /// its user or this server holds as many as allowed (nothing is
    /// evicted, so no one can push out another's tickets).
    fn issue(&self, key: String, ticket: Ticket) -> Result<(), String> {
        let mut tickets = self.lock();
        tickets.retain(|_, t| t.issued.elapsed() < TICKET_TTL);
        if tickets.contains_key(&key) {
            return Err(format!("router session '{key}' is taken"));
        }
        let held = tickets.values().filter(|t| t.user == ticket.user).count();
        if held >= TICKETS_PER_USER_MAX {
            return Err(format!(
                "{} holds {held} unopened router sessions, the most one user may; open or let them expire ({} s) first",
                ticket.user,
                TICKET_TTL.as_secs()
            ));
        }
        if tickets.len() >= TICKETS_MAX {
            return Err(
                "this server holds as many unopened router sessions as it takes; try again shortly"
                    .into(),
            );
        }
        tickets.insert(key, ticket);
        drop(tickets);
        self.issued.notify_waiters();
        Ok(())
    }

    /// The ticket `key`, taken, if `caller` may use it for `workflow`.
    fn take(&self, key: &str, caller: &str, workflow: &str) -> Option<Ticket> {
        let mut tickets = self.lock();
        let fits = tickets.get(key).is_some_and(|t| {
            t.user == caller && t.workflow_id == workflow && t.issued.elapsed() < TICKET_TTL
        });
        fits.then(|| tickets.remove(key)).flatten()
    }
}

fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The WebSocket address of this server, as OSMO's `router_address`.
fn router_address(state: &AppState) -> String {
    let base = state.config.base_url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    }
}

fn ticket_json(state: &AppState, key: &str) -> Value {
    json!({"router_address": router_address(state), "key": key, "cookie": ""})
}

/// Issues a ticket of `kind` for `user` into `task` of `workflow_id`;
/// OSMO's answer for it.
fn issue(
    state: &AppState,
    user: &str,
    (workflow_id, task): (&str, &str),
    kind: TicketKind,
) -> Result<Value, ApiError> {
    let key = new_key();
    state
        .router_tickets
        .issue(
            key.clone(),
            Ticket {
                user: user.to_string(),
                workflow_id: workflow_id.to_string(),
                task: task.to_string(),
                kind,
                issued: Instant::now(),
            },
        )
        .map_err(|reason| ApiError::new(StatusCode::TOO_MANY_REQUESTS, "USER", reason))?;
    Ok(ticket_json(state, &key))
}

fn entry_argv(params: &Params) -> Result<Vec<String>, ApiError> {
    let entry = params.get("entry_command").ok_or_else(|| {
        ApiError::bad_request("USAGE", "entry_command: the command to run is required")
    })?;
    shlex::split(entry)
        .filter(|argv| !argv.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "USAGE",
                format!("entry_command: {entry:?} is not a command (quotes must close)"),
            )
        })
}

/// OSMO's `POST /api/workflow/{id}/exec/task/{task}?entry_command=`.
pub async fn exec_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, task)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // A ticket lives on the server that issued it, and sessions open on
    // the leader.
    if let Some(elsewhere) = not_the_leader(&state) {
        return Ok(elsewhere);
    }
    let params = Params::parse(query.as_deref());
    let argv = entry_argv(&params)?;
    let (workflow, _) = running_task(&state, &params, &name, &task).await?;
    let kind = TicketKind::Exec { argv };
    let ticket = issue(&state, &caller.user, (&workflow.id, &task), kind)?;
    Ok(Json(ticket).into_response())
}

/// OSMO's `POST /api/workflow/{id}/exec/group/{group}`: a ticket per
/// running task of the group, by task name.
pub async fn exec_group(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, group)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // A ticket lives on the server that issued it, and sessions open on
    // the leader.
    if let Some(elsewhere) = not_the_leader(&state) {
        return Ok(elsewhere);
    }
    let params = Params::parse(query.as_deref());
    let argv = entry_argv(&params)?;
    let workflow = lookup(&state, &params, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{name}' not found")))?;
    let view = read(&state, &params).await?;
    let group_record = view.group(&workflow.id, &group)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "Group '{group}' not found in workflow '{}'",
            workflow.id
        ))
    })?;
    let tasks: Vec<String> = view
        .group_tasks(&group_record)?
        .into_iter()
        .filter(|task| task.status == TaskStatus::Running)
        .map(|task| task.name)
        .collect();
    if tasks.is_empty() {
        return Err(ApiError::not_found(format!(
            "Group '{group}' of workflow '{}' has no running task",
            workflow.id
        )));
    }
    let mut answer = serde_json::Map::new();
    for task in tasks {
        let kind = TicketKind::Exec { argv: argv.clone() };
        let ticket = issue(&state, &caller.user, (&workflow.id, &task), kind)?;
        answer.insert(task, ticket);
    }
    Ok(Json(Value::Object(answer)).into_response())
}

/// OSMO's `POST /api/workflow/{id}/portforward/{task}?task_ports=&use_udp=`:
/// a control ticket per port, in order.
pub async fn port_forward(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, task)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // A ticket lives on the server that issued it, and sessions open on
    // the leader.
    if let Some(elsewhere) = not_the_leader(&state) {
        return Ok(elsewhere);
    }
    let params = Params::parse(query.as_deref());
    let udp = params.flag("use_udp")?;
    let mut ports = Vec::new();
    for text in params.all("task_ports") {
        for item in text.split(',').filter(|item| !item.trim().is_empty()) {
            let port = item
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "USAGE",
                        format!("task_ports: '{item}' is not a port number (1-65535)"),
                    )
                })?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "USAGE",
            "task_ports: name at least one port of the task",
        ));
    }
    // OSMO's limit per call, from the WORKFLOW config in force.
    let limit = state
        .node
        .read_local()?
        .config(gantry_storage::ConfigType::Workflow, "")?
        .and_then(|revision| revision.data)
        .and_then(|data| gantry_storage::config::WorkflowConfig::from_data(&data))
        .unwrap_or_default()
        .max_num_ports_per_task;
    if ports.len() as u64 > limit {
        return Err(ApiError::bad_request(
            "USER",
            format!(
                "task_ports: {} ports exceed the limit of {limit} per call (the WORKFLOW config's max_num_ports_per_task)",
                ports.len()
            ),
        ));
    }
    let (workflow, _) = running_task(&state, &params, &name, &task).await?;
    let tickets = ports
        .into_iter()
        .map(|port| {
            let kind = if udp {
                TicketKind::PortForwardUdp { port }
            } else {
                TicketKind::PortForwardControl { port }
            };
            issue(&state, &caller.user, (&workflow.id, &task), kind)
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(Value::Array(tickets)).into_response())
}

/// `GET /api/router/version`: what OSMO's CLI asks for a connection's
/// cookie (none is needed here).
pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "router": "gantry"}))
}

/// The ticket of a socket, or why there is none.
async fn ticket_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    key: &str,
) -> Result<Ticket, ApiError> {
    let workflow = lookup(state, &Params::parse(None), name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{name}' not found")))?;
    state
        .router_tickets
        .take_when_issued(key, &caller.user, &workflow.id)
        .await
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no router session '{key}' of workflow '{}' waits for {} (it was taken, or is older than {} s)",
                workflow.id,
                caller.user,
                TICKET_TTL.as_secs()
            ))
        })
}

/// `GET /api/router/exec/{id}/client/{key}` (WebSocket).
pub async fn exec_socket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, key)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = ticket_for(&state, &caller, &name, &key).await?;
    let TicketKind::Exec { argv } = ticket.kind.clone() else {
        return Err(ApiError::not_found(format!(
            "router session '{key}' is not an exec"
        )));
    };
    tracing::info!(user = %caller.user, workflow = %ticket.workflow_id, task = %ticket.task, command = ?argv, "exec session opening (OSMO's router protocol)");
    Ok(upgrade.on_upgrade(move |socket| exec_session(state, ticket, argv, socket)))
}

/// `GET /api/router/portforward/{id}/client/{key}` (WebSocket): a control
/// socket for a port's ticket, a data socket for a connection's key.
pub async fn port_forward_socket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, key)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ticket = ticket_for(&state, &caller, &name, &key).await?;
    Ok(match ticket.kind {
        TicketKind::PortForwardControl { port } => {
            upgrade.on_upgrade(move |socket| control_session(state, ticket, port, socket))
        }
        TicketKind::PortForwardData { port } => {
            tracing::info!(user = %caller.user, workflow = %ticket.workflow_id, task = %ticket.task, port, "port-forward session opening (OSMO's router protocol)");
            upgrade.on_upgrade(move |socket| data_session(state, ticket, port, socket))
        }
        TicketKind::PortForwardUdp { port } => {
            tracing::info!(user = %caller.user, workflow = %ticket.workflow_id, task = %ticket.task, port, "UDP port-forward session opening (OSMO's router protocol)");
            upgrade.on_upgrade(move |socket| udp_session(state, ticket, port, socket))
        }
        TicketKind::Exec { .. } => {
            return Err(ApiError::not_found(format!(
                "router session '{key}' is not a port-forward"
            )))
        }
    })
}

/// Opens the ticket's session on this server (the leader's hub).
async fn open(state: &AppState, ticket: &Ticket, kind: SessionKind) -> Result<SessionIo, String> {
    if not_the_leader(state).is_some() {
        return Err(
            "this server is not the leader: sessions into tasks go through the leader".into(),
        );
    }
    let view = state.node.read_local().map_err(|error| error.to_string())?;
    let workflow = view
        .workflow_core(&ticket.workflow_id)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("workflow {} is gone", ticket.workflow_id))?;
    let task = view
        .task(&ticket.workflow_id, &ticket.task)
        .map_err(|error| error.to_string())?
        .filter(|task| task.status == TaskStatus::Running)
        .ok_or_else(|| format!("task '{}' is no longer running", ticket.task))?;
    let key = TaskKey {
        workflow_id: ticket.workflow_id.clone(),
        task: ticket.task.clone(),
        retry_id: task.retry_id,
    };
    let end = state
        .hub
        .open_session(&workflow.backend, key.clone(), kind.clone())
        .await
        .map_err(|error| error.to_string())?;
    state
        .session_events
        .record(&state.node, &state.bulk, &ticket.user, &key, &kind);
    Ok(end)
}

/// Ends an OSMO socket: `text` (if any) for the user, then the empty
/// message OSMO's CLI takes as the end, then the close.
async fn finish(socket: &mut WebSocket, text: Option<String>) {
    if let Some(text) = text {
        let _ = socket.send(Message::Binary(text.into_bytes().into())).await;
    }
    let _ = socket.send(Message::Binary(Vec::new().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// `{"Rows": R, "Cols": C}` as `(columns, rows)`.
fn terminal_size(bytes: &[u8]) -> Option<(u16, u16)> {
    let size: Value = serde_json::from_slice(bytes).ok()?;
    let dimension = |field: &str| size[field].as_u64().and_then(|n| u16::try_from(n).ok());
    Some((dimension("Cols")?, dimension("Rows")?))
}

/// What a client's message means.
enum Incoming {
    /// Bytes (empty: OSMO's end of the stream).
    Data(Vec<u8>),
    /// A ping or pong (answered by the WebSocket layer).
    Control,
    /// The socket closed or broke.
    Closed,
}

fn incoming(message: Option<Result<Message, axum::Error>>) -> Incoming {
    match message {
        Some(Ok(Message::Binary(bytes))) => Incoming::Data(bytes.to_vec()),
        Some(Ok(Message::Text(text))) => Incoming::Data(text.as_bytes().to_vec()),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Ok(Message::Close(_)) | Err(_)) | None => Incoming::Closed,
    }
}

async fn exec_session(state: AppState, ticket: Ticket, argv: Vec<String>, mut socket: WebSocket) {
    // OSMO's CLI sends the terminal's size first.
    let size = loop {
        match incoming(socket.recv().await) {
            Incoming::Data(bytes) => break terminal_size(&bytes),
            Incoming::Control => {}
            Incoming::Closed => return,
        }
    };
    let request = ExecRequest {
        argv,
        tty: true,
        size,
    };
    let io = match open(&state, &ticket, SessionKind::Exec(request)).await {
        Ok(io) => io,
        Err(reason) => {
            finish(&mut socket, Some(format!("exec: {reason}\r\n"))).await;
            return;
        }
    };
    let (mut to_task, mut from_task) = Framed::new(io, ExecCodec).split();
    loop {
        tokio::select! {
            message = socket.recv() => {
                let bytes = match incoming(message) {
                    Incoming::Data(bytes) => bytes,
                    Incoming::Control => continue,
                    Incoming::Closed => break,
                };
                let frame = match bytes.strip_prefix(RESIZE_PREFIX).map(terminal_size) {
                    Some(Some((columns, rows))) => ExecFrame::Resize { columns, rows },
                    Some(None) => continue,
                    None if bytes.is_empty() => continue,
                    None => ExecFrame::Stdin(bytes),
                };
                if to_task.send(frame).await.is_err() {
                    break;
                }
            }
            frame = from_task.next() => match frame {
                Some(Ok(ExecFrame::Stdout(bytes) | ExecFrame::Stderr(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(ExecFrame::Failed(reason))) => {
                    finish(&mut socket, Some(format!("exec: {reason}\r\n"))).await;
                    return;
                }
                Some(Ok(ExecFrame::Exit(_))) | None | Some(Err(_)) => {
                    finish(&mut socket, None).await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A port's control socket: each connection the CLI announces gets a data
/// ticket of its own, until the socket closes.
async fn control_session(state: AppState, ticket: Ticket, port: u16, mut socket: WebSocket) {
    loop {
        let bytes = match incoming(socket.recv().await) {
            Incoming::Data(bytes) => bytes,
            Incoming::Control => continue,
            Incoming::Closed => break,
        };
        let announced: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let Some(key) = announced["key"]
            .as_str()
            .filter(|key| !key.is_empty() && key.len() <= 256)
        else {
            continue;
        };
        // A refused key is the client's to see: its data socket finds no
        // session (404).
        if let Err(reason) = state.router_tickets.issue(
            key.to_string(),
            Ticket {
                kind: TicketKind::PortForwardData { port },
                issued: Instant::now(),
                ..ticket.clone()
            },
        ) {
            tracing::info!(user = %ticket.user, workflow = %ticket.workflow_id, %reason, "port-forward connection refused");
        }
    }
}

/// One forwarded connection: the socket's messages to the task's port and
/// back; an empty message (or a close) ends a direction.
async fn data_session(state: AppState, ticket: Ticket, port: u16, mut socket: WebSocket) {
    let io = match open(&state, &ticket, SessionKind::PortForward { port }).await {
        Ok(io) => io,
        Err(reason) => {
            tracing::info!(workflow = %ticket.workflow_id, task = %ticket.task, port, %reason, "port-forward session refused");
            finish(&mut socket, None).await;
            return;
        }
    };
    let (mut from_task, mut to_task) = tokio::io::split(io);
    let mut buffer = vec![0; DATA_CHUNK_BYTES];
    let mut user_open = true;
    loop {
        tokio::select! {
            message = socket.recv(), if user_open => {
                match incoming(message) {
                    Incoming::Data(bytes) if !bytes.is_empty() => {
                        if to_task.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Incoming::Control => {}
                    Incoming::Data(_) | Incoming::Closed => {
                        user_open = false;
                        let _ = to_task.shutdown().await;
                    }
                }
            }
            read = from_task.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    finish(&mut socket, None).await;
                    return;
                }
                Ok(n) => {
                    if socket.send(Message::Binary(buffer[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
}

/// A UDP port: OSMO's messages (the client's address, then the datagram)
/// to and from the task's port, as `protocol::udp` frames of the session.
async fn udp_session(state: AppState, ticket: Ticket, port: u16, mut socket: WebSocket) {
    let io = match open(&state, &ticket, SessionKind::UdpForward { port }).await {
        Ok(io) => io,
        Err(reason) => {
            tracing::info!(workflow = %ticket.workflow_id, task = %ticket.task, port, %reason, "UDP port-forward session refused");
            finish(&mut socket, None).await;
            return;
        }
    };
    let (mut to_task, mut from_task) = Framed::new(io, DatagramCodec).split();
    loop {
        tokio::select! {
            message = socket.recv() => match incoming(message) {
                Incoming::Data(bytes) if bytes.len() >= UDP_ADDRESS_BYTES => {
                    let (address, payload) = bytes.split_at(UDP_ADDRESS_BYTES);
                    let client = SocketAddrV4::new(
                        Ipv4Addr::new(address[0], address[1], address[2], address[3]),
                        u16::from_be_bytes([address[4], address[5]]),
                    );
                    let datagram = Datagram { flow: udp::flow_of(client), payload: payload.to_vec() };
                    if to_task.send(datagram).await.is_err() {
                        break;
                    }
                }
                Incoming::Data(bytes) if bytes.is_empty() => break,
                Incoming::Data(_) | Incoming::Control => {}
                Incoming::Closed => break,
            },
            datagram = from_task.next() => {
                let Some(Ok(datagram)) = datagram else { break };
                let client = udp::address_of(datagram.flow);
                let mut message = Vec::with_capacity(UDP_ADDRESS_BYTES + datagram.payload.len());
                message.extend_from_slice(&client.ip().octets());
                message.extend_from_slice(&client.port().to_be_bytes());
                message.extend_from_slice(&datagram.payload);
                if socket.send(Message::Binary(message.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    finish(&mut socket, None).await;
}

/// OSMO's UDP messages start with the client's IPv4 address and port.
const UDP_ADDRESS_BYTES: usize = 6;

/// The shared tickets of a server.
pub fn tickets() -> Arc<RouterTickets> {
    Arc::new(RouterTickets::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(user: &str) -> Ticket {
        Ticket {
            user: user.into(),
            workflow_id: "wf-1".into(),
            task: "t".into(),
            kind: TicketKind::PortForwardData { port: 80 },
            issued: Instant::now(),
        }
    }

    /// A hostile user who learns another's key cannot take it, nor make
    /// it theirs by announcing it on a control socket of their own.
    #[test]
    fn a_ticket_is_its_users_once_and_never_replaced() {
        let tickets = RouterTickets::default();
        assert!(tickets.issue("k".into(), ticket("alice")).is_ok());
        assert!(tickets.issue("k".into(), ticket("mallory")).is_err());
        assert!(tickets.take("k", "mallory", "wf-1").is_none());
        assert!(tickets.take("k", "alice", "wf-2").is_none());
        assert!(tickets.take("k", "alice", "wf-1").is_some());
        assert!(tickets.take("k", "alice", "wf-1").is_none(), "taken once");
    }

    /// One user cannot fill the table: beyond their share they are
    /// refused, and others' tickets stay.
    #[test]
    fn one_user_cannot_crowd_out_the_others() {
        let tickets = RouterTickets::default();
        assert!(tickets.issue("a".into(), ticket("alice")).is_ok());
        for n in 0..TICKETS_PER_USER_MAX {
            assert!(tickets.issue(format!("m{n}"), ticket("mallory")).is_ok());
        }
        let refused = tickets
            .issue("one-more".into(), ticket("mallory"))
            .unwrap_err();
        assert!(refused.contains("the most one user may"), "{refused}");
        assert!(tickets.take("a", "alice", "wf-1").is_some());
    }
}
