//! `gantry-bench state-hash`: how long one member takes to hash its whole
//! state (what every member does once per state check), and whether apply
//! is held up meanwhile: commands are applied on another thread while the
//! hash runs, and their commit latency is compared with a run without it.

use gantry_storage::{Command, PoolRecord, Priority, Store, Submission};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Workflows per applied batch while the state is built.
const BUILD_BATCH: usize = 1_000;
/// Workflows per applied batch while latency is measured.
const PROBE_BATCH: usize = 10;

/// One invalid submission (it ends at once: a workflow row, its indexes,
/// an archive row and timers), with `padding` bytes of spec.
fn submission(n: usize, padding: &str) -> Command {
    Command::SubmitWorkflow {
        now: 1_000 + n as i64,
        submission: Submission {
            name: "hashed".into(),
            uuid: format!("u{n}"),
            pool: "default".into(),
            user: "bench".into(),
            priority: Priority::Normal,
            template_spec: padding.to_string(),
            rendered_spec: padding.to_string(),
            plan: Err("bench".into()),
        },
    }
}

/// Applies probe batches until `stop`, returning each commit's latency.
fn apply_until(store: &Store, first: usize, stop: &AtomicBool) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Command> = (next..next + PROBE_BATCH)
            .map(|n| submission(n, ""))
            .collect();
        next += PROBE_BATCH;
        let started = Instant::now();
        store.apply(&[batch.as_slice()], b"bench", false)?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort_unstable();
    format!(
        "{} commits, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

pub fn run(workflows: usize, spec_bytes: usize, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("state.redb");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(Store::open(&path)?);
    let padding = "x".repeat(spec_bytes);
    let built = Instant::now();
    let pool = Command::PutPool {
        pool: PoolRecord {
            name: "default".into(),
            description: String::new(),
            backend: "local".into(),
            default_platform: None,
            platforms: Vec::new(),
        },
    };
    store.apply(&[std::slice::from_ref(&pool)], b"bench", false)?;
    for first in (0..workflows).step_by(BUILD_BATCH) {
        let batch: Vec<Command> = (first..(first + BUILD_BATCH).min(workflows))
            .map(|n| submission(n, &padding))
            .collect();
        store.apply(&[batch.as_slice()], b"bench", false)?;
    }
    store.sync()?;
    let file_bytes = std::fs::metadata(&path)?.len();
    println!(
        "state: {workflows} workflows with {spec_bytes}-byte specs, state.redb {:.1} MiB (built in {:.1} s)",
        file_bytes as f64 / 1048576.0,
        built.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let hash = store.state_hash()?;
    let alone = started.elapsed();
    println!(
        "hash alone: {} rows in {:.3} s ({:.0} MiB/s of state.redb) = {}",
        hash.rows,
        alone.as_secs_f64(),
        file_bytes as f64 / 1048576.0 / alone.as_secs_f64().max(1e-9),
        &hash.hex()[..16]
    );

    // Apply latency for as long as one hash takes, without and with it.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = |first: usize| {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || apply_until(&store, first, &stop))
    };
    let baseline = probe(workflows);
    std::thread::sleep(alone.max(Duration::from_millis(500)));
    stop.store(true, Ordering::Relaxed);
    let baseline = baseline
        .join()
        .map_err(|_| anyhow::anyhow!("the apply thread panicked"))??;
    stop.store(false, Ordering::Relaxed);
    let expected = store.state_hash()?;
    let view = store.read()?;
    let during = probe(workflows * 2);
    let started = Instant::now();
    let concurrent = view.state_hash()?;
    let hashed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during
        .join()
        .map_err(|_| anyhow::anyhow!("the apply thread panicked"))??;
    println!(
        "hash while applying: {:.3} s ({} rows; the view's hash is the state's when it was taken, whatever was applied since: {})",
        hashed.as_secs_f64(),
        concurrent.rows,
        concurrent.digest == expected.digest
    );
    println!("apply, no hash:     {}", summary(baseline));
    println!("apply, during hash: {}", summary(during));
    drop(view);
    drop(store);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
