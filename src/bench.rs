//! `gantry bench submit`: committed submits per second and latency
//! percentiles against a running server. A benchmark prints figures; it
//! asserts nothing.

use crate::cli::Client;
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Submit N one-task workflows with C concurrent clients
    Submit {
        /// Server URL
        #[arg(long, env = "GANTRY_URL", default_value = "http://127.0.0.1:8470")]
        url: String,
        /// Workflows to submit
        #[arg(short = 'n', long, default_value_t = 10_000)]
        count: usize,
        /// Concurrent clients
        #[arg(short = 'c', long, default_value_t = 64)]
        concurrency: usize,
        /// Pool to submit to
        #[arg(long, default_value = "default")]
        pool: String,
        /// Submit with validation_only (measures the API without Raft)
        #[arg(long)]
        validate_only: bool,
    },
}

const BENCH_SPEC: &str = "workflow:\n  name: bench\n  tasks:\n  - name: t\n    image: ubuntu:24.04\n    command: [\"true\"]\n";

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Submit {
        url,
        count,
        concurrency,
        pool,
        validate_only,
    } = command;
    let client = Arc::new(Client::new(
        vec![url.clone()],
        std::env::var("GANTRY_TOKEN").ok(),
    )?);
    let concurrency = concurrency.max(1);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let pool = pool.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let sent = Instant::now();
                match client
                    .submit(&pool, BENCH_SPEC, &[], &[], &[], false, validate_only)
                    .await
                {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(count);
    let mut errors = 0;
    while let Some(result) = workers.join_next().await {
        let (mut part, part_errors) = result.context("a benchmark client panicked")?;
        latencies.append(&mut part);
        errors += part_errors;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("server:       {url}");
    println!(
        "submitted:    {} ok, {errors} failed, {concurrency} clients",
        latencies.len()
    );
    println!("elapsed:      {:.2} s", elapsed.as_secs_f64());
    println!(
        "throughput:   {:.0} committed submits/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!("latency p50:  {:.2} ms", percentile(0.50));
    println!("latency p99:  {:.2} ms", percentile(0.99));
    Ok(())
}
