//! Gauges computed from the replicated state when `/metrics` is scraped:
//! workflows by status, tasks of unfinished workflows by status and pool,
//! and timer lag.
//!
//! Invariants: reads this replica's applied state (no leader round trip, so
//! a scrape works during an election); runs on a blocking thread; scans at
//! most [`ACTIVE_WORKFLOWS_SCANNED_MAX`] unfinished workflows and reports
//! how many it left out; a label set seen in an earlier scrape and gone now
//! reads 0 rather than keeping its old value.

use super::{SCRAPE_STATE_SECONDS, SCRAPE_WORKFLOWS_SKIPPED, TASKS, TIMER_LAG_SECONDS, WORKFLOWS};
use gantry_raft::RaftNode;
use gantry_storage::{ListFilter, TaskStatus, WorkflowStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Unfinished workflows whose tasks one scrape counts, at most.
pub const ACTIVE_WORKFLOWS_SCANNED_MAX: usize = 10_000;

/// Task label sets reported by the previous scrape (the recorder is
/// process-wide, so this is too).
static PREVIOUS_TASKS: Mutex<BTreeSet<(TaskStatus, String)>> = Mutex::new(BTreeSet::new());

/// Recomputes the gauges from `node`'s applied state.
pub async fn refresh(node: &RaftNode, now_ms: i64) -> Result<(), String> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let result = refresh_blocking(&node, now_ms, &PREVIOUS_TASKS);
        metrics::gauge!(SCRAPE_STATE_SECONDS).set(started.elapsed().as_secs_f64());
        result
    })
    .await
    .map_err(|error| error.to_string())?
}

fn refresh_blocking(
    node: &RaftNode,
    now_ms: i64,
    previous: &Mutex<BTreeSet<(TaskStatus, String)>>,
) -> Result<(), String> {
    let view = node.read_local().map_err(|error| error.to_string())?;

    let counts: BTreeMap<WorkflowStatus, u64> = view
        .count_by_status()
        .map_err(|error| error.to_string())?
        .into_iter()
        .collect();
    for status in WorkflowStatus::ALL {
        let count = counts.get(&status).copied().unwrap_or(0);
        metrics::gauge!(WORKFLOWS, "status" => status.as_str()).set(count as f64);
    }

    let filter = ListFilter {
        statuses: WorkflowStatus::ALL
            .into_iter()
            .filter(|status| status.is_alive())
            .collect(),
        limit: ACTIVE_WORKFLOWS_SCANNED_MAX,
        ..ListFilter::default()
    };
    let (workflows, _) = view.list(&filter).map_err(|error| error.to_string())?;
    let alive: u64 = counts
        .iter()
        .filter(|(status, _)| status.is_alive())
        .map(|(_, count)| count)
        .sum();
    metrics::gauge!(SCRAPE_WORKFLOWS_SKIPPED)
        .set(alive.saturating_sub(workflows.len() as u64) as f64);
    let mut tasks: BTreeMap<(TaskStatus, String), u64> = BTreeMap::new();
    for workflow in &workflows {
        for group in view.groups(workflow).map_err(|error| error.to_string())? {
            for task in view
                .group_tasks(&group)
                .map_err(|error| error.to_string())?
            {
                *tasks
                    .entry((task.status, workflow.pool.clone()))
                    .or_default() += 1;
            }
        }
    }
    let mut previous = previous.lock().unwrap_or_else(|poison| poison.into_inner());
    for key in previous.iter() {
        if !tasks.contains_key(key) {
            metrics::gauge!(TASKS, "status" => key.0.as_str(), "pool" => key.1.clone()).set(0.0);
        }
    }
    for ((status, pool), count) in &tasks {
        metrics::gauge!(TASKS, "status" => status.as_str(), "pool" => pool.clone())
            .set(*count as f64);
    }
    *previous = tasks.into_keys().collect();

    let lag_ms = view
        .next_timer_due()
        .map_err(|error| error.to_string())?
        .map_or(0, |due| now_ms.saturating_sub(due).max(0));
    metrics::gauge!(TIMER_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
    Ok(())
}
