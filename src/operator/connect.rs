//! Dialing the control plane: one HTTP/2 stream per link to
//! `POST /api/agent/connect`, over mutual TLS with an operator certificate.
//!
//! Sessions into tasks (the router's data path) are requests of their own
//! on the link's HTTP/2 connection, `POST /api/agent/session/{id}`, each
//! with its own flow control, so a slow session never holds another back
//! nor the stream of reports.
//!
//! Invariants: servers never dial operators; the connector moves to the
//! next URL when one fails, jumps straight to the leader when a member
//! answers 421 with its URL, and backs off (bounded, growing) between
//! rounds of failures, so a down cluster is not hammered; a refused
//! credential is logged as such, never retried in a tight loop.

use crate::protocol::byte_queue;
use crate::protocol::session::{self, AttachSession, SessionAnswer};
use crate::protocol::wire::{self, Down, Link, Up};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;

/// Operator frames queued toward the server per link.
const UP_QUEUE_MAX: usize = 1024;
/// Server frames queued toward the session per link, at most.
const DOWN_QUEUE_MAX: usize = 1024;
/// Encoded bytes of the server frames queued toward the session, at most
/// (jobs carry their tasks' files).
const DOWN_QUEUE_BYTES_MAX: usize = 32 << 20;
/// Chunks of a session's task bytes queued toward its request body.
const SESSION_CHUNKS_MAX: usize = 4;
/// Bytes read from a task's socket at once, at most.
const SESSION_CHUNK_BYTES: usize = 64 << 10;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a server to answer the stream request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a dead server (or a cut network) within about
/// interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Leader redirects followed in a row before backing off.
const REDIRECTS_MAX: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no server URL given (--servers)")]
    NoServers,
    #[error("server URL '{0}' must start with http:// or https://")]
    BadUrl(String),
    #[error("https server URLs need --tls-ca, --tls-cert and --tls-key")]
    NeedTls,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct ConnectorConfig {
    pub urls: Vec<String>,
    pub backend: String,
    pub token: Option<String>,
    /// Client TLS with the operator certificate, for https URLs.
    pub tls: Option<rustls::ClientConfig>,
}

pub struct Connector {
    client: reqwest::Client,
    urls: Vec<String>,
    backend: String,
    token: Option<String>,
    next: usize,
    /// A leader URL learned from a 421, tried first.
    leader: Option<String>,
    backoff: Duration,
}

/// How one attempt went.
enum Attempt {
    /// A member that is not the leader named the leader.
    Redirect(String),
    /// The server refused the credentials: wrong token, role or certificate.
    Refused(String),
    Failed(String),
}

impl Connector {
    pub fn new(config: ConnectorConfig) -> Result<Connector, ConnectError> {
        let urls: Vec<String> = config
            .urls
            .iter()
            .flat_map(|url| url.split(','))
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ConnectError::NoServers);
        }
        if let Some(bad) = urls
            .iter()
            .find(|url| !url.starts_with("http://") && !url.starts_with("https://"))
        {
            return Err(ConnectError::BadUrl(bad.clone()));
        }
        let any_https = urls.iter().any(|url| url.starts_with("https://"));
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let builder = match config.tls {
            Some(mut tls) => {
                // The stream is full duplex: HTTP/2 only.
                tls.alpn_protocols = vec![b"h2".to_vec()];
                builder.use_preconfigured_tls(tls)
            }
            None if any_https => return Err(ConnectError::NeedTls),
            None => builder.http2_prior_knowledge(),
        };
        let client = builder
            .build()
            .map_err(|error| ConnectError::Client(error.to_string()))?;
        Ok(Connector {
            client,
            urls,
            backend: config.backend,
            token: config.token,
            next: 0,
            leader: None,
            backoff: BACKOFF_MIN,
        })
    }

    /// Connects to some server, trying URLs in turn and following the
    /// leader; retries until it succeeds.
    pub async fn connect(&mut self, instance: u64) -> Link {
        let mut redirects = 0;
        loop {
            let url = match self.leader.take() {
                Some(leader) => leader,
                None => {
                    let url = self.urls[self.next % self.urls.len()].clone();
                    self.next = self.next.wrapping_add(1);
                    url
                }
            };
            match self.attempt(&url, instance).await {
                Ok(link) => {
                    tracing::info!(%url, backend = %self.backend, "connected to the control plane");
                    crate::supervisor::operator_connected(&url, &self.backend);
                    self.backoff = BACKOFF_MIN;
                    // Reconnect here first next time: it was the leader.
                    self.leader = Some(url);
                    return link;
                }
                Err(Attempt::Redirect(leader)) if redirects < REDIRECTS_MAX => {
                    tracing::info!(%url, %leader, "not the leader; following");
                    redirects += 1;
                    self.leader = Some(leader);
                    continue;
                }
                Err(Attempt::Redirect(leader)) => {
                    tracing::warn!(%url, %leader, "leader redirects keep changing; backing off");
                }
                Err(Attempt::Refused(reason)) => {
                    tracing::error!(%url, "the control plane refused this operator: {reason}");
                    crate::supervisor::operator_status(&format!("refused by {url}: {reason}"));
                    self.backoff = BACKOFF_MAX;
                }
                Err(Attempt::Failed(reason)) => {
                    tracing::warn!(%url, "cannot connect: {reason}");
                    crate::supervisor::operator_status(&format!(
                        "cannot connect to {url}: {reason}"
                    ));
                }
            }
            redirects = 0;
            // A full round over every URL failed: wait before the next.
            if self.next.is_multiple_of(self.urls.len()) || self.backoff == BACKOFF_MAX {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Forgets the remembered leader (after its link broke).
    pub fn link_lost(&mut self) {
        self.leader = None;
    }

    async fn attempt(&self, url: &str, instance: u64) -> Result<Link, Attempt> {
        // The body carries encoded chunks; frames are encoded only once the
        // server has named the format (no frame can be sent before: the
        // link is handed out after the answer).
        let (body_sender, body_chunks) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        let mut request = self
            .client
            .post(format!("{url}/api/agent/connect"))
            .query(&[
                ("backend", self.backend.clone()),
                ("instance", instance.to_string()),
            ])
            .header(
                wire::FRAME_FORMAT_HEADER,
                wire::FrameFormat::NEWEST.number().to_string(),
            )
            .header(
                session::SESSIONS_HEADER,
                session::SESSIONS_LEVEL.to_string(),
            )
            .header(
                crate::protocol::launch_extras::LAUNCH_EXTRAS_HEADER,
                crate::protocol::launch_extras::LAUNCH_EXTRAS_LEVEL.to_string(),
            )
            .header(
                crate::protocol::QUEUES_HEADER,
                crate::protocol::QUEUES_LEVEL.to_string(),
            )
            .body(reqwest::Body::wrap_stream(ReceiverStream::new(body_chunks)));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = tokio::time::timeout(CONNECT_TIMEOUT, request.send())
            .await
            .map_err(|_| Attempt::Failed("no answer in time".to_string()))?
            .map_err(|error| Attempt::Failed(error_chain(&error)))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let message = body["message"].as_str().unwrap_or("no message").to_string();
            return Err(match status.as_u16() {
                421 => match body["leader_url"].as_str() {
                    Some(leader) if leader != url => Attempt::Redirect(leader.to_string()),
                    _ => Attempt::Failed(message),
                },
                401 | 403 => Attempt::Refused(format!("{status}: {message}")),
                _ => Attempt::Failed(format!("{status}: {message}")),
            });
        }
        // A server that names no format is of a build from before formats
        // were negotiated: format 1.
        let format = wire::FrameFormat::from_header(
            response
                .headers()
                .get(wire::FRAME_FORMAT_HEADER)
                .and_then(|value| value.to_str().ok()),
        );
        let reports_level = response
            .headers()
            .get(wire::REPORTS_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u8>().ok())
            .unwrap_or(0);
        if format != wire::FrameFormat::NEWEST {
            tracing::info!(%url, format = format.number(), "the control plane speaks an older frame format");
        }
        let (up, up_frames) = mpsc::channel::<Up>(UP_QUEUE_MAX);
        tokio::spawn(async move {
            let mut chunks =
                std::pin::pin!(wire::body_chunks(ReceiverStream::new(up_frames), format));
            while let Some(chunk) = chunks.next().await {
                if body_sender.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let (down_sender, down) = byte_queue::channel::<Down>(DOWN_QUEUE_MAX, DOWN_QUEUE_BYTES_MAX);
        let reader = StreamReader::new(
            response
                .bytes_stream()
                .map(|chunk| chunk.map_err(|error| std::io::Error::other(error_chain(&error)))),
        );
        tokio::spawn(async move {
            let reason = wire::pump_frames(reader, format, down_sender).await;
            tracing::info!("control plane stream closed: {reason}");
        });
        let sessions = session_attacher(SessionTarget {
            client: self.client.clone(),
            url: url.to_string(),
            backend: self.backend.clone(),
            token: self.token.clone(),
        });
        Ok(Link {
            up,
            down,
            sessions,
            reports_level,
        })
    }
}

/// Where this link's operator attaches its ends of sessions: a request of
/// its own on the same HTTP/2 connection, to the server the link is on.
#[derive(Clone)]
struct SessionTarget {
    client: reqwest::Client,
    url: String,
    backend: String,
    token: Option<String>,
}

fn session_attacher(target: SessionTarget) -> AttachSession {
    Arc::new(move |session: String, answer: SessionAnswer| {
        let target = target.clone();
        Box::pin(async move {
            if let Err(reason) = attach(&target, &session, answer).await {
                tracing::info!(%session, "session ended: {reason}");
            }
        })
    })
}

/// `POST /api/agent/session/{id}`: the request body carries the task's
/// bytes up, the response body the user's bytes down, until either side
/// ends; a refusal is the header [`session::SESSION_REFUSED_HEADER`] and
/// the reason as the body.
async fn attach(
    target: &SessionTarget,
    session: &str,
    answer: SessionAnswer,
) -> Result<(), String> {
    let mut request = target
        .client
        .post(format!("{}/api/agent/session/{session}", target.url))
        .query(&[("backend", target.backend.as_str())]);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let mut task = match answer {
        Ok(task) => task,
        Err(mut reason) => {
            truncate_at_char(&mut reason, session::SESSION_REASON_BYTES_MAX);
            let response = request
                .header(session::SESSION_REFUSED_HEADER, "1")
                .body(reason)
                .send()
                .await
                .map_err(|error| error_chain(&error))?;
            return match response.status() {
                status if status.is_success() => Ok(()),
                status => Err(format!("the server answered the refusal with {status}")),
            };
        }
    };
    // Task → user: the task's bytes as the request body, read as the
    // server's flow control allows; user → task: the response body.
    let (mut task_reader, mut task_writer) = tokio::io::split(&mut task);
    let (up, up_chunks) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(SESSION_CHUNKS_MAX);
    let request = request.body(reqwest::Body::wrap_stream(ReceiverStream::new(up_chunks)));
    let upward = async move {
        let mut buffer = bytes::BytesMut::with_capacity(SESSION_CHUNK_BYTES);
        loop {
            buffer.reserve(SESSION_CHUNK_BYTES);
            match task_reader.read_buf(&mut buffer).await {
                Ok(0) => return,
                Ok(_) => {
                    if up.send(Ok(buffer.split().freeze())).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = up.send(Err(error)).await;
                    return;
                }
            }
        }
    };
    let downward = async move {
        let response = request.send().await.map_err(|error| error_chain(&error))?;
        if !response.status().is_success() {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(format!(
                "{status}: {}",
                body["message"].as_str().unwrap_or("no message")
            ));
        }
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| error_chain(&error))?;
            task_writer
                .write_all(&chunk)
                .await
                .map_err(|error| format!("writing to the task: {error}"))?;
        }
        // The user closed its side: so does the task's.
        task_writer
            .shutdown()
            .await
            .map_err(|error| format!("closing toward the task: {error}"))
    };
    // Both directions run until each ends (half-closes pass through).
    let (_, down) = tokio::join!(upward, downward);
    down
}

/// Cuts `text` to at most `bytes` bytes, at a character boundary.
fn truncate_at_char(text: &mut String, bytes: usize) {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::FrameFormat;
    use crate::protocol::FromOperator;
    use axum::body::Body;
    use axum::http::HeaderMap;

    /// A server of a build from before frame formats were negotiated: it
    /// names no format and speaks format 1 both ways.
    async fn older_server(
        offers: mpsc::Sender<Option<String>>,
        ups: byte_queue::Sender<Up>,
    ) -> String {
        let handler = move |headers: HeaderMap, body: Body| {
            let (offers, ups) = (offers.clone(), ups.clone());
            async move {
                let offer = headers
                    .get(wire::FRAME_FORMAT_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                let _ = offers.send(offer).await;
                let reader = StreamReader::new(
                    body.into_data_stream()
                        .map(|chunk| chunk.map_err(std::io::Error::other)),
                );
                tokio::spawn(wire::pump_frames(reader, FrameFormat::Bincode, ups));
                let down = futures::stream::iter([Down::Resume { acked: 0 }])
                    .chain(futures::stream::pending());
                Body::from_stream(wire::body_chunks(down, FrameFormat::Bincode))
            }
        };
        let app = axum::Router::new().route("/api/agent/connect", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn an_operator_offers_format_2_and_speaks_format_1_to_an_older_server() {
        let (offers, mut offered) = mpsc::channel(1);
        let (ups, mut received) = byte_queue::channel(8, 1 << 20);
        let url = older_server(offers, ups).await;
        let mut connector = Connector::new(ConnectorConfig {
            urls: vec![url],
            backend: "lab".into(),
            token: None,
            tls: None,
        })
        .unwrap();
        let mut link = connector.connect(7).await;
        assert_eq!(offered.recv().await.unwrap().as_deref(), Some("2"));
        // Nor does it decode task events: the operator keeps them back.
        assert_eq!(link.reports_level, 0);
        let events = FromOperator::TaskEvents {
            key: gantry_storage::TaskKey {
                workflow_id: "wf-1".into(),
                task: "a".into(),
                retry_id: 0,
            },
            events: Vec::new(),
        };
        assert!(!link.takes(&events));
        assert!(link.takes(&FromOperator::JobDone { job_id: 5 }));
        assert!(matches!(
            link.down.recv().await,
            Some(Down::Resume { acked: 0 })
        ));
        link.up
            .send(Up::report(1, FromOperator::JobDone { job_id: 5 }))
            .await
            .unwrap();
        let Up::Report { seq, message } = received.recv().await.unwrap();
        assert_eq!(seq, 1);
        assert!(matches!(*message, FromOperator::JobDone { job_id: 5 }));
    }
}
