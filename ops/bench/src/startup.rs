//! `gantry-bench startup`: cold start of `gantry server --bootstrap` on a
//! new data directory, to `/health` answering, and the idle RSS of the
//! last server started. Prints figures; asserts nothing.
//!
//! Invariants: every server it starts is stopped and every data directory
//! it creates is removed, also when a run fails; the clock starts before
//! the process is spawned, so exec, runtime start, opening redb,
//! bootstrapping Raft and binding the API all count.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one start may take before the run counts as failed.
const START_WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause between two `/health` probes.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// A started server, stopped (SIGTERM, then SIGKILL) and its data removed on drop.
struct Started {
    child: Child,
    data_dir: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn run(runs: u32, idle_secs: u64, binary: Option<PathBuf>) -> anyhow::Result<()> {
    let binary = match binary {
        Some(binary) => binary,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("gantry"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()?;
    let mut times_ms = Vec::new();
    let mut last = None;
    for run in 0..runs.max(1) {
        let (started, elapsed) = cold_start(&binary, &http, run).await?;
        times_ms.push(elapsed.as_secs_f64() * 1000.0);
        last = Some(started);
    }
    times_ms.sort_by(f64::total_cmp);
    let median = times_ms[times_ms.len() / 2];
    println!(
        "cold start to /health (new data dir, --bootstrap): median {median:.1} ms, min {:.1} ms, max {:.1} ms over {} runs",
        times_ms[0],
        times_ms[times_ms.len() - 1],
        times_ms.len()
    );
    if let Some(started) = last {
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let status = std::fs::read_to_string(format!("/proc/{}/status", started.child.id()))
            .context("reading the server's /proc status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map_or("?".to_string(), |value| value.trim().to_string())
        };
        println!(
            "idle server after {idle_secs} s: RSS {}, peak RSS {}, threads {}",
            field("VmRSS:"),
            field("VmHWM:"),
            field("Threads:")
        );
    }
    Ok(())
}

/// Starts one server on a new data directory and times it to `/health`.
async fn cold_start(
    binary: &Path,
    http: &reqwest::Client,
    run: u32,
) -> anyhow::Result<(Started, Duration)> {
    let data_dir =
        std::env::temp_dir().join(format!("gantry-bench-startup-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let begun = Instant::now();
    let child = Command::new(binary)
        .args(["server", "--bootstrap", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--peer-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("GANTRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut started = Started { child, data_dir };
    loop {
        if let Ok(response) = http.get(&url).send().await {
            if response.status().is_success() {
                return Ok((started, begun.elapsed()));
            }
        }
        if let Ok(Some(status)) = started.child.try_wait() {
            anyhow::bail!("the server exited during start-up: {status}");
        }
        if begun.elapsed() > START_WAIT_MAX {
            anyhow::bail!("/health did not answer within {START_WAIT_MAX:?}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
