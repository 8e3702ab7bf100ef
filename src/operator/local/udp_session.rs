//! UDP port-forward sessions on the local executor: the session's stream
//! carries `protocol::udp` frames; each flow (one local client of the
//! user's) gets a UDP socket of its own in the task's network, connected
//! to the task's port, so the task's replies go back to that client.
//!
//! Invariants: at most [`FLOWS_MAX`] flows per session (a new client's
//! datagrams are dropped while it is full) and a flow idle for
//! [`FLOW_IDLE`] is closed, so a session's sockets, and the sockets it
//! makes per minute, stay bounded; a datagram the task's port refuses
//! (nothing listens) is dropped, as UDP drops it; the session ends when
//! the user's stream does.

use super::netns::{self, GroupNet};
use crate::protocol::session::SessionAnswer;
use crate::protocol::udp::{Datagram, DatagramCodec, DATAGRAM_BYTES_MAX};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

/// Flows of one session at once, at most.
pub const FLOWS_MAX: usize = 256;
/// A flow without a datagram either way for this long is closed.
pub const FLOW_IDLE: Duration = Duration::from_secs(120);
/// Bytes buffered between the session's stream and the sockets.
const SESSION_BUFFER_BYTES: usize = 256 << 10;
/// Replies waiting to be framed, at most (beyond, a flow's reader waits).
const REPLIES_QUEUED_MAX: usize = 256;

/// Where a session's sockets are made.
#[derive(Clone)]
pub enum UdpTarget {
    /// The host's network (a task with host networking).
    Host,
    /// The task group's namespace.
    Group(Arc<GroupNet>),
}

impl UdpTarget {
    async fn socket(&self, port: u16) -> Result<UdpSocket, String> {
        match self {
            UdpTarget::Host => netns::udp_to_loopback(port)
                .and_then(|socket| UdpSocket::from_std(socket).map_err(|error| error.to_string())),
            UdpTarget::Group(net) => netns::udp_inside(Arc::clone(net), port).await,
        }
    }
}

/// The session's end: datagrams to and from UDP `port` of the task.
pub async fn open(target: UdpTarget, port: u16) -> SessionAnswer {
    // Made now, so a network that cannot be entered is the answer.
    let first = target
        .socket(port)
        .await
        .map_err(|error| format!("cannot reach UDP port {port} in the task: {error}"))?;
    let (user_end, our_end) = tokio::io::duplex(SESSION_BUFFER_BYTES);
    tokio::spawn(pump(
        Framed::new(our_end, DatagramCodec),
        target,
        port,
        first,
    ));
    Ok(Box::new(user_end))
}

struct Flow {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    last: Instant,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn pump(
    session: Framed<tokio::io::DuplexStream, DatagramCodec>,
    target: UdpTarget,
    port: u16,
    first: UdpSocket,
) {
    let (mut to_user, mut from_user) = session.split();
    let (replies, mut replies_for_user) = mpsc::channel::<Datagram>(REPLIES_QUEUED_MAX);
    let mut flows: HashMap<u64, Flow> = HashMap::new();
    let mut spare = Some(first);
    let mut sweep = tokio::time::interval(FLOW_IDLE / 4);
    loop {
        tokio::select! {
            frame = from_user.next() => {
                let Some(Ok(datagram)) = frame else { break };
                if !flows.contains_key(&datagram.flow) {
                    // Full: a new client's datagram is dropped, not made
                    // room for (evicting would let a stream of made-up
                    // clients make a socket, and a thread to enter the
                    // task's network, per datagram).
                    if flows.len() >= FLOWS_MAX {
                        continue;
                    }
                    let socket = match spare.take() {
                        Some(socket) => socket,
                        None => match target.socket(port).await {
                            Ok(socket) => socket,
                            Err(error) => {
                                tracing::info!(port, %error, "UDP port-forward: no socket for a new flow");
                                continue;
                            }
                        },
                    };
                    let socket = Arc::new(socket);
                    let reader = tokio::spawn(read_replies(Arc::clone(&socket), datagram.flow, replies.clone()));
                    flows.insert(datagram.flow, Flow { socket, reader, last: Instant::now() });
                }
                if let Some(flow) = flows.get_mut(&datagram.flow) {
                    flow.last = Instant::now();
                    // Refused (nothing listens) or full: dropped, as UDP drops it.
                    let _ = flow.socket.send(&datagram.payload).await;
                }
            }
            Some(reply) = replies_for_user.recv() => {
                if let Some(flow) = flows.get_mut(&reply.flow) {
                    flow.last = Instant::now();
                }
                if to_user.send(reply).await.is_err() {
                    break;
                }
            }
            _ = sweep.tick() => {
                flows.retain(|_, flow| flow.last.elapsed() < FLOW_IDLE);
            }
        }
    }
}

/// The task's replies on one flow's socket, until it is closed.
async fn read_replies(socket: Arc<UdpSocket>, flow: u64, replies: mpsc::Sender<Datagram>) {
    let mut buffer = vec![0; DATAGRAM_BYTES_MAX];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(n) => {
                let datagram = Datagram {
                    flow,
                    payload: buffer[..n].to_vec(),
                };
                if replies.send(datagram).await.is_err() {
                    return;
                }
            }
            // An earlier datagram found nothing listening (ICMP).
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probe: made-up clients beyond the bound get no socket (each socket
    /// in a group's network costs a thread to enter it), and the clients
    /// that have one keep being answered.
    #[tokio::test]
    async fn clients_beyond_the_bound_are_dropped_not_made_room_for() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut buffer = vec![0; 64];
            while let Ok((n, peer)) = echo.recv_from(&mut buffer).await {
                let _ = echo.send_to(&buffer[..n], peer).await;
            }
        });
        let end = open(UdpTarget::Host, port).await.expect("session");
        let (mut to_task, mut from_task) = Framed::new(end, DatagramCodec).split();
        let flows = FLOWS_MAX as u64 + 44;
        for flow in 0..flows {
            let datagram = Datagram {
                flow,
                payload: flow.to_be_bytes().to_vec(),
            };
            to_task.send(datagram).await.expect("send");
        }
        // The first client again, after the made-up ones.
        to_task
            .send(Datagram {
                flow: 0,
                payload: b"again".to_vec(),
            })
            .await
            .expect("send");
        let mut answered = std::collections::BTreeSet::new();
        let mut again = false;
        while !again {
            let reply = tokio::time::timeout(Duration::from_secs(10), from_task.next())
                .await
                .expect("replies in time")
                .expect("a reply")
                .expect("a frame");
            again |= reply.payload == b"again";
            answered.insert(reply.flow);
        }
        assert!(
            answered.len() <= FLOWS_MAX,
            "{} flows answered",
            answered.len()
        );
        assert!(
            answered.iter().all(|flow| *flow < FLOWS_MAX as u64),
            "{answered:?}"
        );
        let _ = to_task.close().await;
    }
}
