//! HTTP client for Gantry's OSMO-compatible REST API.
//!
//! Owns request construction (paths, query parameter and body field names as in
//! OSMO's OpenAPI), failover across several server URLs, bearer authentication
//! and decoding of OSMO's error body `{message, error_code, workflow_id}`.
//!
//! Invariants:
//! - A request is sent again (to the next URL) only when it certainly had no
//!   effect: the connection could not be made, or the server answered `503`
//!   with `Retry-After` (it found no leader to take the call). Any other
//!   answer, even a 5xx, is final, because a submit or cancel may already
//!   have taken effect. When every URL said "no leader", the client pauses
//!   (`NOT_READY_PAUSE_MIN` doubling up to the server's `Retry-After`) and
//!   goes round again, for at most `NOT_READY_WAIT_MAX`.
//! - Submit, restart and cancel carry an `Idempotency-Key` made once per
//!   call and sent unchanged on every retry, to every URL: the server
//!   carries them out at most once and answers a retry with the first
//!   outcome. So a write is also sent again when its outcome is unknown
//!   (`503`: proposed but not seen to commit; or the connection failed after
//!   sending; a `503` without `Retry-After`), for up to `KEYED_WAIT_MAX`.
//! - The URL that last answered is tried first next time, so a client talking
//!   to a cluster with a dead member pays the connect failure once.
//! - Responses are returned as `serde_json::Value` unchanged, so `-t json` can
//!   print exactly what the API sent.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::config;
pub use super::error::ClientError;
use super::ClientArgs;

/// Bound on establishing a connection (TCP and TLS); past it the next URL
/// is tried. A live host refuses a dead server's port at once; this bounds
/// the wait for a host that is down or cut off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First pause after every URL answered "no leader" (`503` + `Retry-After`).
const NOT_READY_PAUSE_MIN: Duration = Duration::from_millis(100);
/// Longest pause between rounds, whatever `Retry-After` says.
const NOT_READY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long the client keeps going round while no server finds a leader
/// (each server already waits out an election before answering so).
const NOT_READY_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a write with its idempotency key keeps being retried while its
/// outcome is unknown or no leader is found (a cluster regaining quorum).
const KEYED_WAIT_MAX: Duration = Duration::from_secs(90);
/// Bound on a whole non-streaming request. A submit goes through Raft and
/// template rendering, so leave generous room; log streams have no bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A handle on one Gantry deployment (one or more equivalent server URLs).
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Normalized without a trailing slash, so `base + "/api/..."` is the URL.
    base_urls: Vec<String>,
    token: Option<String>,
    /// The login file's IdP sign-in (and the file), when the token is its
    /// ID token: refreshed when it expires.
    idp: Option<std::sync::Arc<tokio::sync::Mutex<(super::config::IdpLogin, std::path::PathBuf)>>>,
    /// Index into `base_urls` of the server that answered last.
    preferred: AtomicUsize,
}

impl Client {
    /// `base_urls` empty → the config file's URL, else [`config::DEFAULT_URL`].
    /// `token` is used as given (None: no `Authorization` header), which suits
    /// `gantry dev` and benchmarks; [`Client::from_args`] resolves it fully.
    pub fn new(base_urls: Vec<String>, token: Option<String>) -> Result<Client, ClientError> {
        let urls = if base_urls.iter().all(|u| u.trim().is_empty()) {
            config::resolve_from_env(&[])?.urls
        } else {
            config::resolve(&base_urls, None, None)?.urls
        };
        Self::with_resolved(
            config::Resolved {
                urls,
                token,
                ca: None,
                idp: None,
            },
            None,
        )
    }

    /// URLs from `--url`/`GANTRY_URL`/config file/default, token from
    /// `GANTRY_TOKEN`/config file (design §9).
    pub fn from_args(args: &ClientArgs) -> Result<Client, ClientError> {
        let resolved = config::resolve_from_env(&args.url)?;
        let ca = args.ca.clone().or_else(|| resolved.ca.clone());
        Self::with_resolved(resolved, ca.as_deref())
    }

    /// One server with an explicit token and CA (`gantry login` checks them).
    pub fn for_login(
        url: &str,
        token: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        Self::with_resolved(
            config::Resolved {
                urls: vec![url.to_string()],
                token: Some(token.to_string()),
                ca: None,
                idp: None,
            },
            ca,
        )
    }

    /// The same servers, calling with `token` instead.
    pub fn with_token(mut self, token: String) -> Client {
        self.token = Some(token);
        self.idp = None;
        self
    }

    /// The same servers, calling without a token (public routes).
    pub fn without_token(mut self) -> Client {
        self.token = None;
        self.idp = None;
        self
    }

    /// The bearer token to send: the IdP sign-in's ID token, refreshed
    /// first when it is about to expire, or the token as given.
    async fn bearer(&self) -> Result<Option<String>, ClientError> {
        let Some(idp) = &self.idp else {
            return Ok(self.token.clone());
        };
        let mut held = idp.lock().await;
        if super::sign_in::expiring(&held.0.id_token) {
            let path = held.1.clone();
            let refreshed = super::sign_in::refresh(&held.0, |login| {
                super::sign_in::save_refreshed(&path, login)
            })
            .await
            .map_err(|error| ClientError::SignIn {
                reason: format!("{error:#}"),
            })?;
            held.0 = refreshed;
        }
        Ok(Some(held.0.id_token.clone()))
    }

    /// Any JSON call: `query` pairs and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.json(method, path, |r| {
            let r = r.query(query);
            match body {
                Some(body) => r.json(body),
                None => r,
            }
        })
        .await
    }

    /// `ca`: the cluster CA for https URLs (only that CA is trusted).
    fn with_resolved(
        resolved: config::Resolved,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        let base_urls = resolved
            .urls
            .iter()
            .map(|u| normalize_url(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("gantry-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            let tls = crate::tls::api_client_config(Some(ca), None).map_err(|e| {
                ClientError::InvalidUrl {
                    url: base_urls.join(","),
                    reason: e.to_string(),
                }
            })?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let http = builder.build().map_err(|e| ClientError::InvalidUrl {
            url: base_urls.join(","),
            reason: e.to_string(),
        })?;
        Ok(Client {
            http,
            base_urls,
            token: resolved.token,
            idp: resolved
                .idp
                .map(|login| std::sync::Arc::new(tokio::sync::Mutex::new(login))),
            preferred: AtomicUsize::new(0),
        })
    }

    /// `POST /api/pool/{pool}/workflow`.
    // The argument list is the public API agreed with callers; `submit_request`
    // is the structured form.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit(
        &self,
        pool: &str,
        file_text: &str,
        set: &[String],
        set_string: &[String],
        set_env: &[String],
        dry_run: bool,
        validation_only: bool,
    ) -> Result<Value, ClientError> {
        self.submit_request(&SubmitRequest {
            pool,
            file_text,
            set,
            set_string,
            set_env,
            priority: None,
            labels: &[],
            dry_run,
            validation_only,
        })
        .await
    }

    /// `POST /api/pool/{pool}/workflow` with every option.
    pub async fn submit_request(&self, req: &SubmitRequest<'_>) -> Result<Value, ClientError> {
        let path = format!("/api/pool/{}/workflow", encode_segment(req.pool));
        let mut query: Vec<(&str, String)> = vec![
            ("dry_run", req.dry_run.to_string()),
            ("validation_only", req.validation_only.to_string()),
        ];
        if let Some(p) = req.priority {
            query.push(("priority", p.to_owned()));
        }
        query.extend(req.set_env.iter().map(|kv| ("env_vars", kv.clone())));
        query.extend(req.labels.iter().map(|kv| ("label", kv.clone())));
        let body = TemplateSpec {
            file: req.file_text,
            set_variables: req.set,
            set_string_variables: req.set_string,
        };
        self.json(Method::POST, &path, |r| r.query(&query).json(&body))
            .await
    }

    /// `POST /api/pool/{pool}/workflow?workflow_id=ID`: that workflow's
    /// spec submitted again.
    pub async fn resubmit(
        &self,
        pool: &str,
        id: &str,
        priority: Option<&str>,
        labels: &[String],
    ) -> Result<Value, ClientError> {
        let path = format!("/api/pool/{}/workflow", encode_segment(pool));
        let mut query: Vec<(&str, String)> = vec![("workflow_id", id.to_owned())];
        if let Some(p) = priority {
            query.push(("priority", p.to_owned()));
        }
        query.extend(labels.iter().map(|kv| ("label", kv.clone())));
        self.json(Method::POST, &path, |r| r.query(&query)).await
    }

    /// `POST /api/pool/{pool}/workflow/{id}/restart`.
    pub async fn restart(&self, pool: &str, id: &str) -> Result<Value, ClientError> {
        let path = format!(
            "/api/pool/{}/workflow/{}/restart",
            encode_segment(pool),
            encode_segment(id)
        );
        self.json(Method::POST, &path, |r| r).await
    }

    /// `GET /api/workflow` with OSMO's filters and paging.
    pub async fn list(&self, list: &ListQuery) -> Result<Value, ClientError> {
        self.json(Method::GET, "/api/workflow", |r| r.query(&list.pairs()))
            .await
    }

    /// `GET /api/workflow/{name}`.
    pub async fn query(&self, id: &str) -> Result<Value, ClientError> {
        let path = format!("/api/workflow/{}", encode_segment(id));
        self.json(Method::GET, &path, |r| r).await
    }

    /// `POST /api/workflow/{name}/cancel?message=&force=`.
    pub async fn cancel(
        &self,
        id: &str,
        message: Option<&str>,
        force: bool,
    ) -> Result<Value, ClientError> {
        let path = format!("/api/workflow/{}/cancel", encode_segment(id));
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(m) = message {
            query.push(("message", m.to_owned()));
        }
        query.push(("force", force.to_string()));
        self.json(Method::POST, &path, |r| r.query(&query)).await
    }

    /// `GET /api/workflow/{name}/spec?use_template=`; the body is YAML text.
    pub async fn spec(&self, id: &str, template: bool) -> Result<String, ClientError> {
        let path = format!("/api/workflow/{}/spec", encode_segment(id));
        self.text(&path, &[("use_template", template.to_string())])
            .await
    }

    /// GETs `path` with `query` (bounded) and returns the body as text.
    async fn text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let (url, resp) = self
            .send(Method::GET, path, true, |r| r.query(query))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Request { url, source })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /api/workflow/{name}/events[?task_name=&retry_id=]`; text, one event a line.
    pub async fn events(
        &self,
        id: &str,
        task: Option<&str>,
        retry_id: Option<u32>,
    ) -> Result<String, ClientError> {
        let path = format!("/api/workflow/{}/events", encode_segment(id));
        let query = LogQuery {
            task,
            retry_id,
            ..LogQuery::default()
        };
        self.text(&path, &query.params()).await
    }

    /// Streams the text/plain log body, calling `on_chunk` for each piece as it arrives (the server keeps the response open while the workflow runs).
    pub async fn logs(
        &self,
        id: &str,
        task: Option<&str>,
        last_n_lines: Option<u64>,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        self.logs_until(id, task, last_n_lines, |c| {
            on_chunk(c);
            ControlFlow::Continue(())
        })
        .await
    }

    /// Like [`Client::logs`], but `on_chunk` can stop reading early (e.g.
    /// stdout was closed by `| head`), which drops the connection.
    pub async fn logs_until(
        &self,
        id: &str,
        task: Option<&str>,
        last_n_lines: Option<u64>,
        on_chunk: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let query = LogQuery {
            task,
            last_n_lines,
            ..LogQuery::default()
        };
        self.logs_query(id, &query, on_chunk).await
    }

    /// Streams `/logs` (or `/error_logs` with `errors_only`) with `query`.
    pub async fn logs_query(
        &self,
        id: &str,
        log_query: &LogQuery<'_>,
        on_chunk: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let endpoint = if log_query.errors_only {
            "error_logs"
        } else {
            "logs"
        };
        let path = format!("/api/workflow/{}/{endpoint}", encode_segment(id));
        self.stream(&path, &log_query.params(), on_chunk).await
    }

    /// GETs `path` with `query` and hands the body on chunk by chunk, with
    /// no overall timeout (a running workflow's log stream stays open).
    pub async fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut on_chunk: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let (url, mut resp) = self
            .send(Method::GET, path, false, |r| r.query(query))
            .await?;
        while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Request {
            url: url.clone(),
            source,
        })? {
            if on_chunk(&chunk).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// `GET /api/cluster/members`.
    pub async fn members(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/api/cluster/members", |r| r).await
    }

    /// `POST /api/cluster/leave[?id=N]`.
    pub async fn leave(&self, id: Option<u64>) -> Result<Value, ClientError> {
        self.json(Method::POST, "/api/cluster/leave", |r| match id {
            Some(id) => r.query(&[("id", id.to_string())]),
            None => r,
        })
        .await
    }

    /// `POST /api/cluster/key/reseal`: the stored credentials sealed with
    /// the newest cluster key.
    pub async fn reseal(&self) -> Result<Value, ClientError> {
        self.json(Method::POST, "/api/cluster/key/reseal", |r| r)
            .await
    }

    /// `POST /api/cluster/init`: makes the node a new cluster of one.
    pub async fn init(&self) -> Result<Value, ClientError> {
        self.json(Method::POST, "/api/cluster/init", |r| r).await
    }

    /// `POST /api/cluster/join?peer=ADDR`: makes the node join the cluster
    /// through the member at peer address `peer`.
    pub async fn join(&self, peer: &str) -> Result<Value, ClientError> {
        self.json(Method::POST, "/api/cluster/join", |r| {
            r.query(&[("peer", peer)])
        })
        .await
    }

    /// `GET /api/cluster/snapshot`: the zstd-compressed state image.
    pub async fn snapshot(&self) -> Result<Vec<u8>, ClientError> {
        let (url, resp) = self
            .send(Method::GET, "/api/cluster/snapshot", false, |r| r)
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Request { url, source })?;
        Ok(bytes.to_vec())
    }

    /// `GET /api/version` → `{major, minor, revision, hash}`.
    pub async fn version(&self) -> Result<Value, ClientError> {
        self.json(Method::GET, "/api/version", |r| r).await
    }

    /// Sends a request and decodes a JSON success body.
    async fn json(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Value, ClientError> {
        let (url, resp) = self.send(method, path, true, build).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Request {
            url: url.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { url, source })
    }

    /// Tries each base URL, starting with the preferred one, until one accepts
    /// the connection; returns the full URL used and the successful response.
    /// `build` is called once per attempt because a request body cannot be
    /// replayed from a consumed builder.
    async fn send(
        &self,
        method: Method,
        path: &str,
        bounded: bool,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<(String, Response), ClientError> {
        let key = honours_request_key(&method, path).then(|| uuid::Uuid::new_v4().to_string());
        let wait_max = match key {
            Some(_) => KEYED_WAIT_MAX,
            None => NOT_READY_WAIT_MAX,
        };
        let deadline = tokio::time::Instant::now() + wait_max;
        let mut pause = NOT_READY_PAUSE_MIN;
        loop {
            let round = self
                .send_round(&method, path, bounded, key.as_deref(), &build)
                .await?;
            let retry_after = match round {
                Round::Answered(url, response) => return Ok((url, response)),
                Round::NotReady(error, retry_after) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(error);
                    }
                    retry_after
                }
            };
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(retry_after.clamp(NOT_READY_PAUSE_MIN, NOT_READY_PAUSE_MAX));
        }
    }

    /// One round over the URLs (from the preferred one): the first answer
    /// that settles the request, or "not ready" when every server that
    /// answered found no leader (and the others could not be reached).
    async fn send_round(
        &self,
        method: &Method,
        path: &str,
        bounded: bool,
        key: Option<&str>,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Round, ClientError> {
        let count = self.base_urls.len();
        let start = self.preferred.load(Ordering::Relaxed) % count;
        let token = self.bearer().await?;
        let mut unreachable: Vec<(String, String)> = Vec::new();
        let mut not_ready: Option<(ClientError, Duration)> = None;
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let url = format!("{}{}", self.base_urls[index], path);
            let mut request = build(self.http.request(method.clone(), &url));
            if bounded {
                request = request.timeout(REQUEST_TIMEOUT);
            }
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            match request.send().await {
                Ok(resp) => {
                    if let Some(retry_after) = may_send_again(&resp, key.is_some()) {
                        let error = check_status(url, resp).await.err().unwrap_or_else(|| {
                            ClientError::InvalidUrl {
                                url: String::new(),
                                reason: "a 503 answer was taken for a success".into(),
                            }
                        });
                        not_ready = Some((error, retry_after));
                        continue;
                    }
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(Round::Answered(url.clone(), check_status(url, resp).await?));
                }
                Err(source) if source.is_connect() => {
                    unreachable.push((
                        self.base_urls[index].clone(),
                        super::error::connect_reason(&source),
                    ));
                }
                // Sent, then the connection failed or time ran out: the
                // outcome is unknown, and only a keyed write may be resent.
                Err(source) if key.is_some() => {
                    not_ready = Some((ClientError::Request { url, source }, NOT_READY_PAUSE_MAX));
                }
                Err(source) => return Err(ClientError::Request { url, source }),
            }
        }
        if let Some((error, retry_after)) = not_ready {
            return Ok(Round::NotReady(error, retry_after));
        }
        // `base_urls` is never empty (config::resolve guarantees a default);
        // should that ever change, say so instead of panicking.
        if unreachable.is_empty() {
            return Err(ClientError::InvalidUrl {
                url: String::new(),
                reason: "no server URL to try".into(),
            });
        }
        Err(ClientError::Connect { tried: unreachable })
    }
}

/// How one round over the URLs ended, short of an error to return.
enum Round {
    /// A server settled the request (success or a final error status).
    Answered(String, Response),
    /// No server could take the request now; the last such answer, and the
    /// pause it asked for.
    NotReady(ClientError, Duration),
}

/// `Some(pause)` when `resp` says the request was certainly not carried
/// out and may be sent again: `503` with `Retry-After` (in seconds).
/// Whether the server carries this call out at most once per
/// `Idempotency-Key`: submit (and resubmit), restart and cancel. Other
/// writes get no key, so they are never resent when their outcome is
/// unknown.
fn honours_request_key(method: &Method, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    *method == Method::POST
        && matches!(
            segments.as_slice(),
            ["api", "pool", _, "workflow"]
                | ["api", "pool", _, "workflow", _, "restart"]
                | ["api", "workflow", _, "cancel"]
        )
}

/// Whether a `503` may be sent again, and after how long: when it was not
/// carried out (`Retry-After`), or, for a write under an idempotency key,
/// also when its outcome is unknown (no `Retry-After`): the retry answers
/// the first outcome instead of carrying it out twice.
fn may_send_again(resp: &Response, keyed: bool) -> Option<Duration> {
    if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match (retry_after, keyed) {
        (Some(after), _) => Some(after),
        (None, true) => Some(NOT_READY_PAUSE_MAX),
        (None, false) => None,
    }
}

/// Turns a non-success response into [`ClientError::Http`].
async fn check_status(url: String, resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Request { url, source })?;
    Err(ClientError::from_response_body(status, &body))
}

/// Accepts `host:port` as shorthand for `http://host:port` and strips a
/// trailing slash so paths can be appended.
pub fn normalize_url(raw: &str) -> Result<String, ClientError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let parsed = reqwest::Url::parse(&with_scheme).map_err(|e| ClientError::InvalidUrl {
        url: raw.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl {
            url: raw.to_owned(),
            reason: format!("unsupported scheme {:?}", parsed.scheme()),
        });
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

/// Percent-encodes one path segment (workflow IDs and pool names are
/// normally `[a-z0-9-]`, but a stray `/` or `?` must not change the route).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
impl ClientError {
    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
impl Client {
    /// The server URLs in the order they are tried on a fresh client.
    pub fn base_urls(&self) -> &[String] {
        &self.base_urls
    }
}

mod queries;
#[cfg(test)]
mod tests;

use queries::TemplateSpec;
pub use queries::{ListQuery, LogQuery, SubmitRequest};
