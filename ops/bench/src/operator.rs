//! `gantry-bench operator`: status ingest through the real operator stream.
//!
//! Submits `--workflows` workflows of `--groups` independent groups with
//! `--tasks` tasks each (the first task of a group leads it) to a pool of
//! the backend, then connects as that backend's operator (TLS, HTTP/2, the
//! same frames as `gantry operator`) and answers every CreateGroup job at
//! once: JobDone, then SCHEDULING, INITIALIZING, RUNNING and COMPLETED for
//! each task. It prints the messages acknowledged per second
//! (acknowledged = committed through Raft and applied), measured from the
//! first job to the last acknowledgement; the completion time, measured
//! from the moment every submit was acknowledged to the last
//! acknowledgement (a `completion_seconds=` line for scripts); and checks
//! that every workflow ended COMPLETED. It asserts nothing about speed.
//!
//! With `--log-lines N` each task also sends N lines of synthetic training
//! log between RUNNING and COMPLETED (in messages of
//! [`LOG_LINES_PER_MESSAGE`]), so the figure includes writing them as zstd
//! chunks to object storage and indexing them; `--redis-resp FILE` writes
//! the same lines as Redis `XADD` commands for comparison.

use anyhow::Context;
use gantry::cli::Client;
use gantry::operator::connect::{Connector, ConnectorConfig};
use gantry::protocol::wire::{Down, Up};
use gantry::protocol::{FromOperator, LogLine, LogStream, ToOperator};
use gantry_storage::TaskStatus;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct OperatorBench {
    /// Server URLs (repeatable or comma-separated); the stream follows the leader
    #[arg(long = "url", value_delimiter = ',', required = true)]
    urls: Vec<String>,
    /// CA certificate of the cluster
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Operator certificate and key (`gantry tls cert create --kind operator`)
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Token with the backend (or admin) role; also used to submit
    #[arg(env = "GANTRY_TOKEN", hide_env_values = true, long)]
    token: Option<String>,
    /// Backend to act as, and the pool to submit to
    #[arg(long, default_value = "local")]
    backend: String,
    #[arg(long, default_value = "default")]
    pool: String,
    /// Workflows to submit
    #[arg(long, default_value_t = 400)]
    workflows: usize,
    /// Groups per workflow, independent of each other (all start at once)
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Tasks per group (each gets four status messages)
    #[arg(long, default_value_t = 25)]
    tasks: usize,
    /// Log lines each task sends while RUNNING
    #[arg(long, default_value_t = 0)]
    log_lines: u64,
    /// Also write every task's log lines as Redis XADD commands (RESP) here
    #[arg(long, value_name = "FILE")]
    redis_resp: Option<PathBuf>,
    /// Longest the run may take before it gives up, in seconds
    #[arg(long, default_value_t = 600)]
    limit_seconds: u64,
}

/// Log lines per `Logs` message, as an executor batches a busy task's output.
const LOG_LINES_PER_MESSAGE: u64 = 1_000;

/// Workflow submits outstanding at once while preparing.
const SUBMITS_IN_FLIGHT: usize = 32;

pub async fn run(args: OperatorBench) -> anyhow::Result<()> {
    // The token reaches the client through GANTRY_TOKEN, as for every verb.
    let client = Client::from_args(&gantry::cli::ClientArgs {
        url: args.urls.clone(),
        ca: args.ca.clone(),
        format: gantry::cli::OutputFormat::Text,
    })
    .context("building the API client")?;
    let spec = spec(args.groups, args.tasks);
    let shape = format!(
        "{} workflow(s) x {} group(s) x {} task(s)",
        args.workflows, args.groups, args.tasks
    );
    eprintln!("bench operator: submitting {shape}");
    let submit_started = Instant::now();
    let mut ids = Vec::with_capacity(args.workflows);
    for chunk in (0..args.workflows)
        .collect::<Vec<_>>()
        .chunks(SUBMITS_IN_FLIGHT)
    {
        let submits = chunk
            .iter()
            .map(|_| client.submit(&args.pool, &spec, &[], &[], &[], false, false));
        for response in futures::future::join_all(submits).await {
            let response = response.context("submitting a benchmark workflow")?;
            ids.push(response["name"].as_str().unwrap_or_default().to_string());
        }
    }

    let submit_elapsed = submit_started.elapsed();
    let submitted = Instant::now();

    let tls = match (&args.ca, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            Some(gantry::tls::api_client_config(Some(ca), Some((cert, key)))?)
        }
        _ => None,
    };
    let mut connector = Connector::new(ConnectorConfig {
        urls: args.urls.clone(),
        backend: args.backend.clone(),
        token: args.token.clone(),
        tls,
    })?;
    let instance = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1);
    let mut link = connector.connect(instance).await;
    match link.down.recv().await {
        Some(Down::Resume { .. }) => {}
        other => anyhow::bail!("the server did not resume the stream: {other:?}"),
    }
    let mut seq = 1u64;
    link.up
        .send(Up::report(
            seq,
            FromOperator::Hello {
                backend: args.backend.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                running: Vec::new(),
                executor: gantry::protocol::EXECUTOR_LOCAL.to_string(),
            },
        ))
        .await
        .context("sending hello")?;

    let expected_groups = args.workflows * args.groups;
    let mut groups_done = 0usize;
    let mut started: Option<Instant> = None;
    let mut messages = 0u64;
    let (mut log_lines, mut log_bytes) = (0u64, 0u64);
    // Generated before the clock starts: the figure is the server's ingest.
    let (mut prepared_logs, prepared_bytes) = log_messages(args.log_lines);
    let deadline = Instant::now() + Duration::from_secs(args.limit_seconds);
    let mut acked = 0u64;
    while groups_done < expected_groups || acked < seq {
        let frame = tokio::time::timeout_at(deadline.into(), link.down.recv())
            .await
            .context("the benchmark ran out of time")?
            .context("the server closed the stream")?;
        match frame {
            Down::Ack { seq: up_to } | Down::Resume { acked: up_to } => acked = up_to,
            Down::Job(
                ToOperator::CreateGroup { job_id, group }
                | ToOperator::CreateGroupWithExtras { job_id, group, .. },
            ) => {
                started.get_or_insert_with(Instant::now);
                groups_done += 1;
                let mut reports = vec![FromOperator::JobDone { job_id }];
                for status in [
                    TaskStatus::Scheduling,
                    TaskStatus::Initializing,
                    TaskStatus::Running,
                    TaskStatus::Completed,
                ] {
                    if status == TaskStatus::Completed {
                        for (index, task) in group.tasks.iter().enumerate() {
                            // The last run moves the prepared lines: with one
                            // task (ops/bench/logs.sh) nothing is copied on the clock.
                            let last =
                                groups_done == expected_groups && index + 1 == group.tasks.len();
                            let batches = if last {
                                std::mem::take(&mut prepared_logs)
                            } else {
                                prepared_logs.clone()
                            };
                            for lines in batches {
                                reports.push(FromOperator::Logs {
                                    key: task.key.clone(),
                                    lines,
                                });
                            }
                            log_bytes += prepared_bytes;
                            log_lines += args.log_lines;
                        }
                    }
                    for task in &group.tasks {
                        reports.push(FromOperator::TaskStatus {
                            key: task.key.clone(),
                            status,
                            exit_code: (status == TaskStatus::Completed).then_some(0),
                            message: None,
                            time: chrono::Utc::now().timestamp_millis(),
                        });
                    }
                }
                for message in reports {
                    seq += 1;
                    messages += 1;
                    link.up
                        .send(Up::report(seq, message))
                        .await
                        .context("the server closed the stream")?;
                }
            }
            Down::Job(ToOperator::CancelGroup { job_id, .. }) => {
                seq += 1;
                messages += 1;
                link.up
                    .send(Up::report(seq, FromOperator::JobDone { job_id }))
                    .await?;
            }
            // The benchmark opens no sessions.
            Down::Job(ToOperator::OpenSession { .. } | ToOperator::SyncQueues { .. }) => {}
        }
    }
    let completion = submitted.elapsed();
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    let per_second = messages as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "operator ingest: {messages} messages acknowledged in {:.2} s = {per_second:.0} messages/s",
        elapsed.as_secs_f64()
    );
    println!(
        "{shape}: submitted in {:.2} s, completed {:.2} s after submit",
        submit_elapsed.as_secs_f64(),
        completion.as_secs_f64()
    );
    println!("completion_seconds={:.2}", completion.as_secs_f64());
    if log_lines > 0 {
        println!(
            "log ingest: {log_lines} lines ({:.1} MiB) durable in {:.2} s = {:.0} lines/s",
            log_bytes as f64 / (1024.0 * 1024.0),
            elapsed.as_secs_f64(),
            log_lines as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    if let Some(path) = &args.redis_resp {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let now = chrono::Utc::now().timestamp_millis();
        for id in &ids {
            for name in task_names(args.groups, args.tasks) {
                crate::training_log::write_redis_xadd(&mut out, id, &name, args.log_lines, now)?;
            }
        }
        std::io::Write::flush(&mut out)?;
    }
    let mut unfinished = 0;
    for id in &ids {
        let workflow = client.query(id).await?;
        if workflow["status"] != "COMPLETED" {
            unfinished += 1;
        }
    }
    println!(
        "workflows COMPLETED: {}/{}",
        ids.len() - unfinished,
        ids.len()
    );
    Ok(())
}

/// `count` lines of synthetic log in `Logs`-message batches, and their
/// bytes (with newlines, as a task would print them).
fn log_messages(count: u64) -> (Vec<Vec<LogLine>>, u64) {
    let time = chrono::Utc::now().timestamp_millis();
    let mut bytes = 0;
    let mut batches = Vec::new();
    let mut offset = 1;
    while offset <= count {
        let last = (offset + LOG_LINES_PER_MESSAGE - 1).min(count);
        batches.push(
            (offset..=last)
                .map(|i| {
                    let text = crate::training_log::line(i);
                    bytes += text.len() as u64 + 1;
                    LogLine {
                        offset: i,
                        stream: LogStream::Stdout,
                        time,
                        text,
                    }
                })
                .collect(),
        );
        offset = last + 1;
    }
    (batches, bytes)
}

/// Task names of every group, in spec order: `t<i>` with one group (as
/// earlier runs named them), `g<j>t<i>` with several.
fn task_names(groups: usize, tasks: usize) -> Vec<String> {
    (0..groups)
        .flat_map(|group| {
            (0..tasks).map(move |index| match groups {
                1 => format!("t{index}"),
                _ => format!("g{group}t{index}"),
            })
        })
        .collect()
}

/// A workflow of `groups` independent groups of `tasks` tasks each.
fn spec(groups: usize, tasks: usize) -> String {
    let names = task_names(groups, tasks);
    let mut spec = String::from("workflow:\n  name: ingest\n  groups:\n");
    for group in 0..groups {
        spec.push_str(&format!(
            "  - name: g{}\n    tasks:\n",
            if groups == 1 {
                String::new()
            } else {
                group.to_string()
            }
        ));
        for (index, name) in names[group * tasks..(group + 1) * tasks].iter().enumerate() {
            spec.push_str(&format!(
                "    - name: {name}\n      image: ubuntu\n      command: [\"true\"]\n{}",
                if index == 0 { "      lead: true\n" } else { "" }
            ));
        }
    }
    spec
}
