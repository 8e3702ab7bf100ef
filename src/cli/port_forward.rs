//! `gantry workflow port-forward WF TASK --port LOCAL[:REMOTE]`: listens on
//! local ports and carries each accepted TCP connection to the task's port
//! as a session of its own through the control plane
//! (`GET /api/workflow/{name}/portforward/{task_name}?port=N`, upgraded to
//! the byte stream). With `--udp`, each local port's datagrams travel in
//! one session (`udp=true`, `protocol::udp` frames), each local client a
//! flow of its own, so the task's replies reach the client they answer.
//!
//! Invariants: `--port` takes OSMO's forms (`8000`, `8000:2000`,
//! `8000-8010:9000-9010,8015`; repeatable); one session per accepted
//! connection, any number at once, each closed on its own when either end
//! closes; a server answering 421 names the leader, which is asked from
//! then on; an unreachable server is skipped for the next URL. The task is
//! checked to be RUNNING before anything listens, so a wrong name fails at
//! once; a session refused later closes only its own connection, with the
//! server's reason printed.

use super::session_client::{check_running, Opener};
use super::ClientArgs;
use crate::protocol::session::PORT_FORWARD_PROTOCOL;
use crate::protocol::udp::{self, Datagram, DatagramCodec, DATAGRAM_BYTES_MAX};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::codec::Framed;

/// Bytes copied at once each way between a connection and its session.
const SPLICE_BUFFER_BYTES: usize = 64 << 10;

/// `gantry workflow port-forward` (OSMO's flags).
#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    /// The ID or UUID of the workflow
    pub workflow_id: String,
    /// Name of the task in the workflow
    pub task: String,
    /// LOCAL[:TASK] ports, ranges `A-B[:C-D]`, comma-separated; repeatable
    #[arg(long = "port", required = true, value_parser = parse_ports)]
    pub ports: Vec<Vec<(u16, u16)>>,
    /// The address local ports are bound on
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Forward UDP instead of TCP: each local client's datagrams reach
    /// the task's port from a socket of their own, and its replies come back
    #[arg(long)]
    pub udp: bool,
    /// Seconds a session may take to open
    #[arg(long = "connect-timeout", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
}

/// OSMO's `--port` forms: `L`, `L:R`, `A-B`, `A-B:C-D`, comma-separated.
pub fn parse_ports(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut pairs = Vec::new();
    for item in text.split(',') {
        let (local, remote) = match item.split_once(':') {
            Some((local, remote)) => (parse_range(local)?, parse_range(remote)?),
            None => (parse_range(item)?, parse_range(item)?),
        };
        if local.len() != remote.len() {
            return Err(format!(
                "'{item}': {} local ports but {} task ports",
                local.len(),
                remote.len()
            ));
        }
        pairs.extend(local.into_iter().zip(remote));
    }
    Ok(pairs)
}

fn parse_range(text: &str) -> Result<Vec<u16>, String> {
    let port = |part: &str| {
        part.trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("'{part}' is not a port (1-65535)"))
    };
    match text.split_once('-') {
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            if start >= end {
                return Err(format!(
                    "'{text}': a range goes from a lower port to a higher"
                ));
            }
            Ok((start..=end).collect())
        }
        None => Ok(vec![port(text)?]),
    }
}

/// Forwards until Ctrl-C (or every listener failed).
pub async fn run(client_args: &ClientArgs, args: PortForwardArgs) -> anyhow::Result<()> {
    let pairs: Vec<(u16, u16)> = args.ports.iter().flatten().copied().collect();
    check_running(client_args, &args.workflow_id, &args.task).await?;
    let path = format!(
        "/api/workflow/{}/portforward/{}",
        super::client::encode_segment(&args.workflow_id),
        super::client::encode_segment(&args.task)
    );
    let timeout = Duration::from_secs(args.connect_timeout);
    let opener = Arc::new(Opener::new(client_args, path, timeout)?);
    let host = if args.host == "localhost" {
        "127.0.0.1"
    } else {
        args.host.as_str()
    };
    let mut listeners = tokio::task::JoinSet::new();
    for (local, remote) in pairs {
        if args.udp {
            let socket = UdpSocket::bind((host, local))
                .await
                .with_context(|| format!("binding UDP {host}:{local}"))?;
            let bound = socket.local_addr()?;
            println!(
                "Forwarding UDP from {bound} to port {remote} of {}/{}",
                args.workflow_id, args.task
            );
            listeners.spawn(serve_udp(socket, Arc::clone(&opener), remote, timeout));
            continue;
        }
        let listener = TcpListener::bind((host, local))
            .await
            .with_context(|| format!("listening on {host}:{local}"))?;
        let bound = listener.local_addr()?;
        println!(
            "Forwarding from {bound} to port {remote} of {}/{}",
            args.workflow_id, args.task
        );
        listeners.spawn(serve(listener, Arc::clone(&opener), remote, timeout));
    }
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(ended) = listeners.join_next() => match ended {
            Ok(error) => Err(error.into()),
            Err(error) => Err(anyhow::anyhow!("a listener stopped: {error}")),
        },
    }
}

/// Accepts connections on `listener`, each carried by a session of its own.
async fn serve(
    listener: TcpListener,
    opener: Arc<Opener>,
    remote: u16,
    timeout: Duration,
) -> std::io::Error {
    loop {
        let (connection, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => return error,
        };
        let opener = Arc::clone(&opener);
        tokio::spawn(async move {
            if let Err(reason) = forward(connection, &opener, remote, timeout).await {
                eprintln!("connection from {peer} to port {remote}: {reason}");
            }
        });
    }
}

/// Carries the datagrams of `socket`'s clients to UDP port `remote` of the
/// task, and the task's replies back to the client each answers; one
/// session at a time, opened at the first datagram and again at the next
/// one after a session ended.
async fn serve_udp(
    socket: UdpSocket,
    opener: Arc<Opener>,
    remote: u16,
    timeout: Duration,
) -> std::io::Error {
    let mut buffer = vec![0; DATAGRAM_BYTES_MAX];
    loop {
        let (n, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => return error,
        };
        let SocketAddr::V4(from) = from else { continue };
        let query = [("port", remote.to_string()), ("udp", "true".to_string())];
        let opened =
            tokio::time::timeout(timeout, opener.open(&query, PORT_FORWARD_PROTOCOL)).await;
        let session = match opened {
            Ok(Ok(session)) => session,
            Ok(Err(reason)) => {
                eprintln!("UDP to port {remote}: {reason}");
                continue;
            }
            Err(_) => {
                eprintln!(
                    "UDP to port {remote}: no session within {} s",
                    timeout.as_secs()
                );
                continue;
            }
        };
        let (mut to_task, mut from_task) = Framed::new(session, DatagramCodec).split();
        let mut first = Some(Datagram {
            flow: udp::flow_of(from),
            payload: buffer[..n].to_vec(),
        });
        loop {
            if let Some(datagram) = first.take() {
                if to_task.send(datagram).await.is_err() {
                    break;
                }
            }
            tokio::select! {
                received = socket.recv_from(&mut buffer) => match received {
                    Ok((n, SocketAddr::V4(from))) => {
                        first = Some(Datagram { flow: udp::flow_of(from), payload: buffer[..n].to_vec() });
                    }
                    Ok(_) => {}
                    Err(error) => return error,
                },
                reply = from_task.next() => match reply {
                    Some(Ok(datagram)) => {
                        let _ = socket.send_to(&datagram.payload, udp::address_of(datagram.flow)).await;
                    }
                    _ => {
                        eprintln!("UDP to port {remote}: the session ended; the next datagram opens another");
                        break;
                    }
                },
            }
        }
    }
}

async fn forward(
    mut connection: TcpStream,
    opener: &Opener,
    remote: u16,
    timeout: Duration,
) -> Result<(), String> {
    let _ = connection.set_nodelay(true);
    let query = [("port", remote.to_string())];
    let upgraded = tokio::time::timeout(timeout, opener.open(&query, PORT_FORWARD_PROTOCOL))
        .await
        .map_err(|_| format!("no session within {} s", timeout.as_secs()))??;
    let mut session = upgraded;
    tokio::io::copy_bidirectional_with_sizes(
        &mut connection,
        &mut session,
        SPLICE_BUFFER_BYTES,
        SPLICE_BUFFER_BYTES,
    )
    .await
    .map(drop)
    .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_take_osmos_forms() {
        assert_eq!(parse_ports("8000").unwrap(), [(8000, 8000)]);
        assert_eq!(parse_ports("8000:2000").unwrap(), [(8000, 2000)]);
        assert_eq!(
            parse_ports("8000-8002:9000-9002,8015").unwrap(),
            [(8000, 9000), (8001, 9001), (8002, 9002), (8015, 8015)]
        );
        assert!(parse_ports("8000-8002:9000")
            .unwrap_err()
            .contains("3 local ports but 1"));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("9-8").is_err());
        assert!(parse_ports("http").is_err());
    }
}
