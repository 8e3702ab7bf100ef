//! `gantry-bench`: load generators that print figures; they assert
//! nothing. A binary of its own, built by the `ops/bench/` scripts, so the
//! product binary carries no load generator.
//!
//! - `submit`: committed one-task workflow submits against Gantry servers.
//! - `etcd`: puts of the same size through etcd's v3 JSON gateway, printed
//!   in the same format, so the two can be compared line by line.
//! - `failover`: the time from an instant the caller gives (when it
//!   SIGKILLed the leader) to the first write acknowledged by a survivor.
//! - `startup` (in `startup`): cold start to `/health` and idle RSS.
//! - `flood` (in `flood`): query latency and server memory under a log
//!   flood with hundreds of followers.
//! - `list` (in `list`): a page of the workflow list from a state of many
//!   workflows, filter by filter.
//!
//! Load shape of `submit` and `etcd`: `--concurrency` clients, each with one
//! request outstanding; with several URLs, client `i` uses URL
//! `i % urls` (round-robin). Without `--rate` they send back to back (peak
//! throughput). With `--rate N`, request `k` is due at `start + k/N` and is
//! not sent earlier; its latency is measured from the time it was due, so a
//! run whose clients fall behind reports the queueing too instead of hiding
//! it (no coordinated omission).

mod flood;
mod list;
mod operator;
mod startup;
mod state_hash;
mod training_log;

use anyhow::Context;
use base64::Engine;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Parser)]
#[command(
    name = "gantry-bench",
    about = "Benchmarks against running Gantry servers (they print figures; they are not tests)"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Submit N one-task workflows with C concurrent clients
    Submit {
        #[command(flatten)]
        target: GantryTarget,
        #[command(flatten)]
        load: Load,
        /// Pool to submit to
        #[arg(long, default_value = "default")]
        pool: String,
        /// Submit with validation_only (measures the API without Raft)
        #[arg(long)]
        validate_only: bool,
    },
    /// Put N keys through etcd's v3 JSON gateway with C concurrent clients
    Etcd {
        /// etcd client URLs (repeatable or comma-separated), e.g. http://127.0.0.1:2379
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        #[command(flatten)]
        load: Load,
        /// Bytes of each value (a submitted one-task workflow is about 200)
        #[arg(long, default_value_t = 200)]
        value_bytes: usize,
    },
    /// Operator status ingest through the real stream (TLS, acks after commit)
    Operator(crate::operator::OperatorBench),
    /// Query latency and server memory while tasks flood logs to hundreds
    /// of followers and clients submit and query workflows
    Flood(crate::flood::FloodBench),
    /// Time from --since-ms (e.g. when the leader was killed) to the first
    /// submit acknowledged through any of the URLs
    Failover {
        #[command(flatten)]
        target: GantryTarget,
        /// Pool to submit to
        #[arg(long, default_value = "default")]
        pool: String,
        /// Start of the measured interval, in milliseconds since the Unix
        /// epoch (default: when this command starts)
        #[arg(long)]
        since_ms: Option<u64>,
        /// A new probe is sent every this many milliseconds until one is
        /// acknowledged
        #[arg(long, default_value_t = 10)]
        probe_every_ms: u64,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Node ID of the killed leader: also report when a survivor first
        /// names another leader (splits the failover into the election and
        /// the write path)
        #[arg(long)]
        killed_id: Option<u64>,
    },
    /// How long a page of the workflow list takes from a state of many
    /// workflows, filter by filter
    List {
        /// Workflows in the state
        #[arg(long, default_value_t = 100_000)]
        workflows: usize,
        /// Users who submitted them, in turn
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Directory for the state file (removed afterwards)
        #[arg(long, default_value = "target/bench-list")]
        dir: PathBuf,
    },
    /// Time to hash a member's whole state (as each state check does), and
    /// apply latency with and without a hash running
    StateHash {
        /// Workflows in the state
        #[arg(long, default_value_t = 100_000)]
        workflows: usize,
        /// Bytes of each workflow's spec (stored twice: template and rendered)
        #[arg(long, default_value_t = 1_000)]
        spec_bytes: usize,
        /// Directory for the state file (removed afterwards)
        #[arg(long, default_value = "target/bench-state-hash")]
        dir: PathBuf,
    },
    /// Cold start of `gantry server --bootstrap` on new data directories to
    /// /health answering, then the idle RSS of the last one
    Startup {
        /// Cold starts to time
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Seconds the last server idles before its RSS is read
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
        /// The gantry binary to start (default: `gantry` beside this one)
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Where the Gantry servers are and how to authenticate to them.
#[derive(clap::Args, Debug)]
pub struct GantryTarget {
    /// Server URLs (repeatable or comma-separated), used round-robin
    #[arg(
        long = "url",
        env = "GANTRY_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8470"
    )]
    urls: Vec<String>,
    /// CA certificate that signed the servers' certificates (https URLs)
    #[arg(long, env = "GANTRY_CA")]
    ca: Option<PathBuf>,
    /// Bearer token
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// How much load, and how fast.
#[derive(clap::Args, Debug)]
pub struct Load {
    /// Writes to send
    #[arg(short = 'n', long, default_value_t = 10_000)]
    count: usize,
    /// Concurrent clients
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Send at most this many writes per second in total (default: as fast
    /// as the clients go)
    #[arg(long)]
    rate: Option<f64>,
}

const BENCH_SPEC: &str = "workflow:\n  name: bench\n  tasks:\n  - name: t\n    image: ubuntu:24.04\n    command: [\"true\"]\n";

/// Longest one benchmark request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Probes of `failover` outstanding at once, at most.
const PROBES_IN_FLIGHT_MAX: usize = 256;

/// One write of a run: `(client index, request index)` → its future.
type Write = Arc<dyn Fn(usize, usize) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

fn main() {
    use clap::Parser;
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(cli.command)) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Operator(bench) => crate::operator::run(bench).await,
        BenchCommand::Flood(bench) => crate::flood::run(bench).await,
        BenchCommand::Startup {
            runs,
            idle_secs,
            binary,
        } => startup::run(runs, idle_secs, binary).await,
        BenchCommand::List {
            workflows,
            users,
            dir,
        } => tokio::task::spawn_blocking(move || list::run(workflows, users, &dir))
            .await
            .context("the list benchmark")?,
        BenchCommand::StateHash {
            workflows,
            spec_bytes,
            dir,
        } => tokio::task::spawn_blocking(move || state_hash::run(workflows, spec_bytes, &dir))
            .await
            .context("the state-hash benchmark")?,
        BenchCommand::Submit {
            target,
            load,
            pool,
            validate_only,
        } => {
            let submit = Submitter::new(&target, &pool, validate_only)?;
            let label = format!("gantry {}", target.urls.join(","));
            let write: Write = Arc::new(move |client, _| {
                let submit = submit.clone();
                Box::pin(async move { submit.submit(client).await })
            });
            run_load(&label, &load, write).await
        }
        BenchCommand::Etcd {
            endpoints,
            load,
            value_bytes,
        } => {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(load.concurrency.max(1))
                .timeout(REQUEST_TIMEOUT)
                .build()?;
            let endpoints: Arc<Vec<String>> = Arc::new(
                endpoints
                    .iter()
                    .map(|e| format!("{}/v3/kv/put", e.trim_end_matches('/')))
                    .collect(),
            );
            let b64 = base64::engine::general_purpose::STANDARD;
            let value = Arc::new(b64.encode(vec![b'x'; value_bytes]));
            // Keys unique per run, so runs do not overwrite each other.
            let run_id = unix_ms(SystemTime::now());
            let label = format!("etcd {}", endpoints.join(","));
            let write: Write = Arc::new(move |client, k| {
                let http = http.clone();
                let url = endpoints[client % endpoints.len()].clone();
                let body = serde_json::json!({
                    "key": b64.encode(format!("bench/{run_id}/{k:09}")),
                    "value": value.as_str(),
                });
                Box::pin(async move {
                    let response = http
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| format!("{url}: {e}"))?;
                    let status = response.status();
                    let text = response.text().await.map_err(|e| e.to_string())?;
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("{url}: {status}: {text}"))
                    }
                })
            });
            run_load(&label, &load, write).await
        }
        BenchCommand::Failover {
            target,
            pool,
            since_ms,
            probe_every_ms,
            timeout_secs,
            killed_id,
        } => {
            let submit = Submitter::new(&target, &pool, false)?;
            failover(
                submit,
                since_ms,
                Duration::from_millis(probe_every_ms.max(1)),
                Duration::from_secs(timeout_secs),
                killed_id,
            )
            .await
        }
    }
}

/// Submits the benchmark workflow (and reads membership); one HTTP client (so one HTTP/2
/// connection per server over TLS) shared by every benchmark client.
#[derive(Clone)]
struct Submitter {
    http: reqwest::Client,
    /// Base URL of each server.
    urls: Arc<Vec<String>>,
    /// `{url}/api/pool/{pool}/workflow?...` for each server.
    endpoints: Arc<Vec<String>>,
    token: Option<Arc<str>>,
}

impl Submitter {
    fn new(target: &GantryTarget, pool: &str, validate_only: bool) -> anyhow::Result<Submitter> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2));
        if let Some(ca) = &target.ca {
            let tls = gantry::tls::api_client_config(Some(ca), None)
                .with_context(|| format!("loading the CA {}", ca.display()))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let urls: Vec<String> = target
            .urls
            .iter()
            .map(|url| gantry::cli::client::normalize_url(url))
            .collect::<Result<_, _>>()?;
        let endpoints = urls
            .iter()
            .map(|url| {
                format!(
                    "{url}/api/pool/{pool}/workflow?dry_run=false&validation_only={validate_only}"
                )
            })
            .collect();
        Ok(Submitter {
            http: builder.build()?,
            urls: Arc::new(urls),
            endpoints: Arc::new(endpoints),
            token: target.token.as_deref().map(Arc::from),
        })
    }

    /// The body `gantry workflow submit` sends (OSMO's `TemplateSpec`).
    async fn submit(&self, client: usize) -> Result<(), String> {
        let url = &self.endpoints[client % self.endpoints.len()];
        let mut request = self.http.post(url).json(&serde_json::json!({
            "file": BENCH_SPEC,
            "set_variables": [],
            "set_string_variables": [],
        }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{url}: {status}: {text}"))
        }
    }
}

impl Submitter {
    /// The leader server `index` names (`/api/cluster/members`), if any.
    async fn leader(&self, index: usize) -> Option<u64> {
        let url = format!("{}/api/cluster/members", self.urls[index]);
        let mut request = self.http.get(url).timeout(Duration::from_secs(1));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let members: serde_json::Value = request.send().await.ok()?.json().await.ok()?;
        members["leader_id"].as_u64()
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn run_load(label: &str, load: &Load, write: Write) -> anyhow::Result<()> {
    let count = load.count;
    let concurrency = load.concurrency.max(1);
    let interval = match load.rate {
        Some(rate) if rate > 0.0 => Some(Duration::from_secs_f64(1.0 / rate)),
        Some(rate) => anyhow::bail!("--rate must be positive, not {rate}"),
        None => None,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let write = write.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    break;
                }
                let sent = match interval {
                    Some(interval) => {
                        let due = started + interval.mul_f64(k as f64);
                        tokio::time::sleep_until(due).await;
                        due
                    }
                    None => tokio::time::Instant::now(),
                };
                match write(client, k).await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(error) => errors.push(error),
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(count);
    let mut errors = Vec::new();
    while let Some(result) = workers.join_next().await {
        let (mut part, mut part_errors) = result.context("a benchmark client panicked")?;
        latencies.append(&mut part);
        errors.append(&mut part_errors);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    if let Some(first) = errors.first() {
        eprintln!("first error: {first}");
    }
    let rate = load
        .rate
        .map_or(String::new(), |rate| format!(", rate limit {rate:.0}/s"));
    println!("target:       {label}");
    println!(
        "writes:       {} ok, {} failed, {concurrency} clients{rate}",
        latencies.len(),
        errors.len()
    );
    println!("elapsed:      {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:   {:.0} writes/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!("latency p50:  {:.2} ms", percentile(0.50));
    println!("latency p99:  {:.2} ms", percentile(0.99));
    Ok(())
}

/// Sends a probe every `every`, round-robin over the URLs, each with its own
/// timeout, until one is acknowledged; a probe stuck on a dead server never
/// delays the next one.
async fn failover(
    submit: Submitter,
    since_ms: Option<u64>,
    every: Duration,
    timeout: Duration,
    killed_id: Option<u64>,
) -> anyhow::Result<()> {
    let since_ms = since_ms.unwrap_or_else(|| unix_ms(SystemTime::now()));
    // When a survivor first names a leader other than the killed one.
    let elected = Arc::new(std::sync::OnceLock::<(u64, u64, String)>::new());
    let mut watchers = tokio::task::JoinSet::new();
    if let Some(killed) = killed_id {
        for index in 0..submit.urls.len() {
            let submit = submit.clone();
            let elected = elected.clone();
            watchers.spawn(async move {
                while elected.get().is_none() {
                    match submit.leader(index).await {
                        Some(leader) if leader != killed => {
                            let at = unix_ms(SystemTime::now());
                            let _ = elected.set((at, leader, submit.urls[index].clone()));
                        }
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            });
        }
    }
    let deadline = Instant::now() + timeout;
    let mut probes = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(every);
    let mut sent = 0usize;
    let mut failed = 0usize;
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = ticker.tick(), if probes.len() < PROBES_IN_FLIGHT_MAX => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no write acknowledged within {timeout:?} ({sent} probes, {failed} failed; last error: {})",
                    last_error.as_deref().unwrap_or("none")
                );
                let submit = submit.clone();
                let client = sent;
                probes.spawn(async move {
                    let result = submit.submit(client).await;
                    (client, result, SystemTime::now())
                });
                sent += 1;
            }
            Some(done) = probes.join_next() => {
                let (client, result, at) = done.context("a probe panicked")?;
                match result {
                    Ok(()) => {
                        let url = &submit.urls[client % submit.urls.len()];
                        if let Some((elected_at, leader, seen_by)) = elected.get() {
                            println!(
                                "new leader:   {} ms (node {leader}, as {seen_by} reported it)",
                                elected_at.saturating_sub(since_ms)
                            );
                        }
                        println!(
                            "failover:     {} ms to the first acknowledged write (via {url}; {sent} probes, {failed} failed)",
                            unix_ms(at).saturating_sub(since_ms)
                        );
                        if let Some(error) = &last_error {
                            println!("last failure: {error}");
                        }
                        return Ok(());
                    }
                    Err(error) => {
                        failed += 1;
                        last_error = Some(error);
                    }
                }
            }
        }
    }
}
