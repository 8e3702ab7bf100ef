//! `gantry-bench flood`: the log flood of `tests/flood.rs` against a running
//! server, with figures from whatever build that server is.
//!
//! Load: the WORKFLOW config's log limits raised so every line is kept;
//! [`USERS`] users share `--flooders` workflows whose one task prints a
//! training-log-like line without end (`yes`); `--followers-per-workflow`
//! followers per flooding workflow, each on a connection of its own,
//! reading `GET /api/workflow/{id}/logs`; `--submitters` clients, each
//! submitting a quick one-task workflow, then querying it
//! (`GET /api/workflow/{id}`), then pausing [`SUBMIT_PAUSE`], over and over.
//! While that runs for `--seconds`, the server's VmRSS is sampled from
//! `/proc/PID/status`; at the end its VmHWM (peak RSS) is read.
//!
//! Prints the followers and what they read, the submits, submit and query
//! latency (p50/p90/p99/max), the peak and highest sampled RSS, and one
//! verdict line against [`QUERY_P99_GOAL`] and [`PEAK_RSS_GOAL_BYTES`]. It
//! asserts nothing else.
//!
//! Invariants: every flooding workflow it submitted is cancelled before it
//! returns, also when the flood phase fails; each query's latency is one
//! GET, from send to the whole body read, so the figures are what a client
//! waits for.

use anyhow::Context;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct FloodBench {
    /// Server URL (a `gantry dev --auth` server: pool `default`, backend local)
    #[arg(long, default_value = "http://127.0.0.1:8470")]
    url: String,
    /// Admin token (sets the WORKFLOW config, creates the users' tokens)
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Process ID of the server, for its RSS in /proc/PID/status
    #[arg(long)]
    server_pid: u32,
    /// Seconds the flood runs once every follower and submitter started
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Log followers of each flooding workflow, each on its own connection
    #[arg(long, default_value_t = 10)]
    followers_per_workflow: usize,
    /// Workflows whose task prints log lines as fast as it can
    #[arg(long, default_value_t = 20)]
    flooders: usize,
    /// Clients submitting a quick workflow and querying it, over and over
    #[arg(long, default_value_t = 20)]
    submitters: usize,
    /// Query with `stale=true` (the server's own state, no read index):
    /// against a default run, shows how much of the query latency is the
    /// wait for Raft to apply up to the read index
    #[arg(long)]
    stale: bool,
}

/// Users the flooding workflows and the submitters are spread over.
const USERS: usize = 4;
/// Pause of a submitter between its query and its next submit.
const SUBMIT_PAUSE: Duration = Duration::from_millis(100);
/// The query latency goal: p99 under this.
const QUERY_P99_GOAL: Duration = Duration::from_millis(100);
/// The memory goal: the server's peak RSS under this.
const PEAK_RSS_GOAL_BYTES: u64 = 1024 << 20;
/// Longest a submit, query or setup request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the flooding workflows may take to be RUNNING.
const RUNNING_WAIT_MAX: Duration = Duration::from_secs(120);
/// Between two RSS samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Longest a follower's stream may take to end once its workflow is cancelled.
const FOLLOWER_END_WAIT_MAX: Duration = Duration::from_secs(30);

/// Prints without end, in lines shaped like a training log.
const FLOODER: &str = r#"workflow:
  name: flood
  tasks:
  - name: flood
    image: ubuntu
    command: [yes, 'step 1000 loss=0.4521 lr=0.0003 throughput=1843.2 samples/s grad_norm=1.02']
"#;

const QUICK: &str =
    "workflow:\n  name: quick\n  tasks:\n  - name: t\n    image: ubuntu\n    command: [\"true\"]\n";

/// What one submitter measured.
#[derive(Default)]
struct SubmitterFigures {
    submit_latencies: Vec<Duration>,
    query_latencies: Vec<Duration>,
    errors: Vec<String>,
}

pub async fn run(args: FloodBench) -> anyhow::Result<()> {
    let url = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let admin = args.admin_token.trim().to_string();
    let every_line_kept = json!({
        "configs": {"max_task_log_lines": 1_000_000_000u64, "max_log_lines": 1_000_000_000u64},
        "description": "the flood benchmark keeps every line",
    });
    let put = http.put(format!("{url}/api/configs/workflow"));
    call(put.json(&every_line_kept), &admin)
        .await
        .context("raising the WORKFLOW config's log limits")?;
    // Token names are unique on a server, so each run names its own.
    let run_id = std::process::id();
    let mut tokens = Vec::with_capacity(USERS);
    for n in 0..USERS {
        let user = format!("flood-{n}");
        let reply = call(
            http.post(format!(
                "{url}/api/auth/user/{user}/access_token/{user}-{run_id}?roles=user"
            )),
            &admin,
        )
        .await
        .with_context(|| format!("creating a token for {user}"))?;
        let secret = reply.as_str().context("the token reply is not a string")?;
        tokens.push(secret.to_string());
    }

    let mut flooders: Vec<(String, String)> = Vec::with_capacity(args.flooders);
    let mut submitted = Ok(());
    for n in 0..args.flooders {
        let token = &tokens[n % USERS];
        match submit(&http, &url, token, FLOODER).await {
            Ok(id) => flooders.push((token.clone(), id)),
            Err(error) => {
                submitted = Err(error.context("submitting a flooding workflow"));
                break;
            }
        }
    }
    let result = match submitted {
        Ok(()) => flood(&args, &url, &http, &tokens, &flooders).await,
        Err(error) => Err(error),
    };
    // The flood ends whatever happened, so the server is left idle.
    let mut cancel_errors = Vec::new();
    for (token, id) in &flooders {
        let cancel = http.post(format!("{url}/api/workflow/{id}/cancel"));
        if let Err(error) = call(cancel, token).await {
            cancel_errors.push(format!("{id}: {error:#}"));
        }
    }
    let (report, followers) = result?;
    followers.finish().await;
    report.print(&args);
    anyhow::ensure!(
        cancel_errors.is_empty(),
        "cancelling the flood: {}",
        cancel_errors.join("; ")
    );
    Ok(())
}

/// The running followers, and what they read.
struct Followers {
    tasks: tokio::task::JoinSet<Result<(), String>>,
}

impl Followers {
    /// Waits for the streams to end (their workflows were cancelled); a
    /// follower still reading after [`FOLLOWER_END_WAIT_MAX`] is dropped.
    async fn finish(mut self) {
        let deadline = tokio::time::Instant::now() + FOLLOWER_END_WAIT_MAX;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {}
        self.tasks.abort_all();
    }
}

/// Figures of one flood.
struct Report {
    followers: usize,
    follower_errors: Vec<String>,
    followed_bytes: u64,
    elapsed: Duration,
    submitters: SubmitterFigures,
    peak_rss_bytes: u64,
    highest_rss_bytes: u64,
}

async fn flood(
    args: &FloodBench,
    url: &str,
    http: &reqwest::Client,
    tokens: &[String],
    flooders: &[(String, String)],
) -> anyhow::Result<(Report, Followers)> {
    let deadline = Instant::now() + RUNNING_WAIT_MAX;
    for (token, id) in flooders {
        loop {
            let workflow = call(http.get(format!("{url}/api/workflow/{id}")), token).await?;
            match workflow["status"].as_str() {
                Some("RUNNING") => break,
                status => anyhow::ensure!(
                    Instant::now() < deadline,
                    "{id} not RUNNING within {RUNNING_WAIT_MAX:?} (status {status:?})"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let status_path = format!("/proc/{}/status", args.server_pid);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let followed_bytes = Arc::new(AtomicU64::new(0));
    let mut followers = Followers {
        tasks: tokio::task::JoinSet::new(),
    };
    for (token, id) in flooders {
        for _ in 0..args.followers_per_workflow {
            // A client of its own: one connection per follower.
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?;
            let request = client
                .get(format!("{url}/api/workflow/{id}/logs"))
                .bearer_auth(token);
            followers
                .tasks
                .spawn(follow(request, followed_bytes.clone()));
        }
    }
    let mut submitters = tokio::task::JoinSet::new();
    for n in 0..args.submitters {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        submitters.spawn(submit_and_query(
            client,
            url.to_string(),
            tokens[n % tokens.len()].clone(),
            args.stale,
            stopped.clone(),
        ));
    }

    let started = Instant::now();
    let flood_for = Duration::from_secs(args.seconds);
    let mut highest_rss_bytes = 0;
    let mut follower_errors = Vec::new();
    while started.elapsed() < flood_for {
        if let Some((rss, _)) = rss_and_peak(&status_path) {
            highest_rss_bytes = highest_rss_bytes.max(rss);
        }
        // A follower done before the flood ends failed or was cut off.
        while let Some(done) = followers.tasks.try_join_next() {
            follower_errors.push(match done {
                Ok(Ok(())) => "a stream ended before the flood did".to_string(),
                Ok(Err(error)) => error,
                Err(error) => format!("a follower panicked: {error}"),
            });
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let (rss, peak_rss_bytes) = rss_and_peak(&status_path)
        .with_context(|| format!("reading {status_path} (is --server-pid right?)"))?;
    highest_rss_bytes = highest_rss_bytes.max(rss);
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    let mut figures = SubmitterFigures::default();
    while let Some(done) = submitters.join_next().await {
        let mut part = done.context("a submitter panicked")?;
        figures.submit_latencies.append(&mut part.submit_latencies);
        figures.query_latencies.append(&mut part.query_latencies);
        figures.errors.append(&mut part.errors);
    }
    let report = Report {
        followers: flooders.len() * args.followers_per_workflow,
        follower_errors,
        followed_bytes: followed_bytes.load(Ordering::Relaxed),
        elapsed,
        submitters: figures,
        peak_rss_bytes,
        highest_rss_bytes,
    };
    Ok((report, followers))
}

/// Reads one follower's stream to its end, counting the bytes.
async fn follow(request: reqwest::RequestBuilder, read: Arc<AtomicU64>) -> Result<(), String> {
    let mut response = request.send().await.map_err(|e| format!("follow: {e}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("follow answered {}", response.status()));
    }
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("follow: {e}"))? {
        read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// One submitter: submit, query, pause, until `stopped`.
async fn submit_and_query(
    http: reqwest::Client,
    url: String,
    token: String,
    stale: bool,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> SubmitterFigures {
    let mut figures = SubmitterFigures::default();
    while !*stopped.borrow() {
        let sent = Instant::now();
        match submit(&http, &url, &token, QUICK).await {
            Ok(id) => {
                figures.submit_latencies.push(sent.elapsed());
                let sent = Instant::now();
                let stale = if stale { "?stale=true" } else { "" };
                let query = http.get(format!("{url}/api/workflow/{id}{stale}"));
                match call(query, &token).await {
                    Ok(_) => figures.query_latencies.push(sent.elapsed()),
                    Err(error) => figures.errors.push(format!("query: {error:#}")),
                }
            }
            Err(error) => figures.errors.push(format!("submit: {error:#}")),
        }
        tokio::select! {
            _ = tokio::time::sleep(SUBMIT_PAUSE) => {}
            _ = stopped.changed() => {}
        }
    }
    figures
}

/// Submits `spec` to pool `default`; the new workflow's ID.
async fn submit(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    spec: &str,
) -> anyhow::Result<String> {
    let request = http
        .post(format!("{url}/api/pool/default/workflow"))
        .json(&json!({ "file": spec }));
    let reply = call(request, token).await?;
    reply["name"]
        .as_str()
        .map(str::to_string)
        .context("the submit reply names no workflow")
}

/// Sends `request` with `token`; the JSON body of a 200, else an error with
/// the status and body.
async fn call(request: reqwest::RequestBuilder, token: &str) -> anyhow::Result<Value> {
    let response = request.bearer_auth(token).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status == reqwest::StatusCode::OK, "{status}: {body}");
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// VmRSS and VmHWM of a process, in bytes.
fn rss_and_peak(status_path: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let field = |name: &str| -> Option<u64> {
        let value = text.lines().find_map(|line| line.strip_prefix(name))?;
        let kib: u64 = value.split_whitespace().next()?.parse().ok()?;
        Some(kib << 10)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// p50, p90, p99 and max of `latencies` in ms, as one line.
fn latency_line(latencies: &mut [Duration]) -> String {
    if latencies.is_empty() {
        return "none measured".to_string();
    }
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        ms(percentile(latencies, 0.50)),
        ms(percentile(latencies, 0.90)),
        ms(percentile(latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        latencies.len()
    )
}

/// The nearest-rank percentile of sorted, non-empty `latencies`.
fn percentile(latencies: &[Duration], fraction: f64) -> Duration {
    let rank = (latencies.len() as f64 * fraction).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

impl Report {
    fn print(mut self, args: &FloodBench) {
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        let seconds = self.elapsed.as_secs_f64();
        println!(
            "flood:            {} workflows printing logs for {seconds:.1} s, {} submitters{}",
            args.flooders,
            args.submitters,
            if args.stale { " (stale queries)" } else { "" }
        );
        println!(
            "followers:        {} ({} per workflow), {} failed or cut off",
            self.followers,
            args.followers_per_workflow,
            self.follower_errors.len()
        );
        println!(
            "followers read:   {:.1} MiB ({:.1} MiB/s)",
            mib(self.followed_bytes),
            mib(self.followed_bytes) / seconds
        );
        println!(
            "submits:          {} done, {} requests failed",
            self.submitters.submit_latencies.len(),
            self.submitters.errors.len()
        );
        println!(
            "submit latency:   {}",
            latency_line(&mut self.submitters.submit_latencies)
        );
        println!(
            "query latency:    {}",
            latency_line(&mut self.submitters.query_latencies)
        );
        println!(
            "server RSS:       peak (VmHWM) {:.0} MiB, highest sampled (VmRSS) {:.0} MiB",
            mib(self.peak_rss_bytes),
            mib(self.highest_rss_bytes)
        );
        if let Some(error) = self.follower_errors.first() {
            println!("first follower error: {error}");
        }
        if let Some(error) = self.submitters.errors.first() {
            println!("first submitter error: {error}");
        }
        let queries = &self.submitters.query_latencies;
        let query_p99 = (!queries.is_empty()).then(|| percentile(queries, 0.99));
        let mut missed = Vec::new();
        match query_p99 {
            Some(p99) if p99 < QUERY_P99_GOAL => {}
            Some(p99) => missed.push(format!(
                "query p99 {:.1} ms >= {} ms",
                p99.as_secs_f64() * 1000.0,
                QUERY_P99_GOAL.as_millis()
            )),
            None => missed.push("no query answered".to_string()),
        }
        if self.peak_rss_bytes >= PEAK_RSS_GOAL_BYTES {
            missed.push(format!(
                "peak RSS {:.0} MiB >= {} MiB",
                mib(self.peak_rss_bytes),
                PEAK_RSS_GOAL_BYTES >> 20
            ));
        }
        if missed.is_empty() {
            println!(
                "verdict:          PASS (query p99 < {} ms, peak RSS < {} MiB)",
                QUERY_P99_GOAL.as_millis(),
                PEAK_RSS_GOAL_BYTES >> 20
            );
        } else {
            println!("verdict:          FAIL ({})", missed.join("; "));
        }
    }
}
