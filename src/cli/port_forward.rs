//! `gantry workflow port-forward WF TASK --port LOCAL[:REMOTE]`: listens on
//! local ports and carries each accepted TCP connection to the task's port
//! as a session of its own through the control plane
//! (`GET /api/workflow/{name}/portforward/{task_name}?port=N`, upgraded to
//! the byte stream).
//!
//! Invariants: `--port` takes OSMO's forms (`8000`, `8000:2000`,
//! `8000-8010:9000-9010,8015`; repeatable); one session per accepted
//! connection, any number at once, each closed on its own when either end
//! closes; a server answering 421 names the leader, which is asked from
//! then on; an unreachable server is skipped for the next URL. The task is
//! checked to be RUNNING before anything listens, so a wrong name fails at
//! once; a session refused later closes only its own connection, with the
//! server's reason printed.

use super::client::{Client, ClientError};
use super::config;
use super::ClientArgs;
use crate::protocol::session::PORT_FORWARD_PROTOCOL;
use anyhow::Context;
use reqwest::header::{CONNECTION, UPGRADE};
use reqwest::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Servers redirected to (421) in a row before giving up on a session.
const REDIRECTS_MAX: usize = 3;

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
    /// Forward UDP instead of TCP (not supported yet)
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

/// Opens sessions: an HTTP/1.1 client (an upgrade is an HTTP/1.1 feature),
/// the server URLs, and the one that answered last (or the leader named).
struct Opener {
    http: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    preferred: Mutex<Option<String>>,
    path: String,
}

impl Opener {
    fn new(args: &ClientArgs, path: String, timeout: Duration) -> anyhow::Result<Opener> {
        let resolved = config::resolve_from_env(&args.url)?;
        let ca = args.ca.clone().or(resolved.ca);
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("gantry-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let mut tls = crate::tls::api_client_config(Some(&ca), None)
                .with_context(|| format!("loading the CA {}", ca.display()))?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            builder = builder.use_preconfigured_tls(tls);
        }
        let urls = resolved
            .urls
            .iter()
            .map(|url| crate::cli::client::normalize_url(url))
            .collect::<Result<_, _>>()?;
        Ok(Opener {
            http: builder.build().context("building the HTTP client")?,
            urls,
            token: resolved.token,
            preferred: Mutex::new(None),
            path,
        })
    }

    fn preferred(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.preferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A session to task port `port`: the upgraded connection.
    async fn open(&self, port: u16) -> Result<reqwest::Upgraded, String> {
        let mut candidates: Vec<String> = self.preferred().iter().cloned().collect();
        candidates.extend(self.urls.iter().cloned());
        let mut unreachable = Vec::new();
        let mut redirects = 0;
        while let Some(url) = candidates.first().cloned() {
            candidates.remove(0);
            let mut request = self
                .http
                .get(format!("{url}{}", self.path))
                .query(&[("port", port.to_string())])
                .header(CONNECTION, "upgrade")
                .header(UPGRADE, PORT_FORWARD_PROTOCOL);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) if error.is_connect() => {
                    unreachable.push(format!("{url}: {}", super::error::connect_reason(&error)));
                    continue;
                }
                Err(error) => return Err(format!("{url}: {error}")),
            };
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                *self.preferred() = Some(url.clone());
                return response
                    .upgrade()
                    .await
                    .map_err(|error| format!("{url}: the upgrade failed: {error}"));
            }
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let message = body["message"].as_str().unwrap_or("no message");
            match body["leader_url"].as_str() {
                Some(leader)
                    if status == StatusCode::MISDIRECTED_REQUEST && redirects < REDIRECTS_MAX =>
                {
                    redirects += 1;
                    candidates.insert(0, leader.trim_end_matches('/').to_string());
                }
                _ => return Err(format!("{status}: {message}")),
            }
        }
        Err(format!(
            "no server could be reached: {}",
            unreachable.join("; ")
        ))
    }
}

/// Forwards until Ctrl-C (or every listener failed).
pub async fn run(client_args: &ClientArgs, args: PortForwardArgs) -> anyhow::Result<()> {
    if args.udp {
        anyhow::bail!("--udp: UDP port-forward is not supported yet");
    }
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

/// The task exists and is RUNNING (else the server's 404, or its status).
async fn check_running(args: &ClientArgs, workflow: &str, task: &str) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    let path = format!(
        "/api/workflow/{}/task/{}",
        super::client::encode_segment(workflow),
        super::client::encode_segment(task)
    );
    let answer = client
        .call(reqwest::Method::GET, &path, &[], None)
        .await
        .map_err(|error: ClientError| anyhow::anyhow!(error))?;
    let status = answer["status"].as_str().unwrap_or("UNKNOWN");
    if status != "RUNNING" {
        anyhow::bail!("task '{task}' of {workflow} is {status}, not RUNNING");
    }
    Ok(())
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

async fn forward(
    mut connection: TcpStream,
    opener: &Opener,
    remote: u16,
    timeout: Duration,
) -> Result<(), String> {
    let _ = connection.set_nodelay(true);
    let upgraded = tokio::time::timeout(timeout, opener.open(remote))
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
