//! Sessions into running tasks as the CLI opens them (`port-forward`,
//! `exec`): an HTTP/1.1 request upgraded to the session's stream.
//!
//! Invariants: a server answering 421 names the leader, which is asked
//! from then on; an unreachable server is skipped for the next URL; every
//! other refusal is the server's message.

use super::client::{Client, ClientError};
use super::config;
use super::ClientArgs;
use anyhow::Context;
use reqwest::header::{CONNECTION, UPGRADE};
use reqwest::StatusCode;
use std::sync::Mutex;
use std::time::Duration;

/// Servers redirected to (421) in a row before giving up on a session.
const REDIRECTS_MAX: usize = 3;

/// Opens sessions: an HTTP/1.1 client (an upgrade is an HTTP/1.1 feature),
/// the server URLs, and the one that answered last (or the leader named).
pub struct Opener {
    http: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    preferred: Mutex<Option<String>>,
    path: String,
}

impl Opener {
    pub fn new(args: &ClientArgs, path: String, timeout: Duration) -> anyhow::Result<Opener> {
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

    /// A session: the request with `query`, upgraded to `protocol`.
    pub async fn open(
        &self,
        query: &[(&str, String)],
        protocol: &'static str,
    ) -> Result<reqwest::Upgraded, String> {
        let mut candidates: Vec<String> = self.preferred().iter().cloned().collect();
        candidates.extend(self.urls.iter().cloned());
        let mut unreachable = Vec::new();
        let mut redirects = 0;
        while let Some(url) = candidates.first().cloned() {
            candidates.remove(0);
            let mut request = self
                .http
                .get(format!("{url}{}", self.path))
                .query(query)
                .header(CONNECTION, "upgrade")
                .header(UPGRADE, protocol);
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

/// The task exists and is RUNNING (else the server's 404, or its status).
pub async fn check_running(args: &ClientArgs, workflow: &str, task: &str) -> anyhow::Result<()> {
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
