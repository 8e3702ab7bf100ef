//! The delayed-job monitor: fires replicated timers when they come due.
//!
//! Invariants: runs on the leader only; a timer fires by proposing
//! `FireTimer` with the time it was seen due, so it fires at most once
//! (the state machine removes it) and survives restarts (it is a row in
//! redb until fired). Due timers fire within [`TIMER_POLL`] of their time.
//!
//! Timers that need object-store work first (archive, purge: see
//! [`super::archive`]) run that work in background tasks, at most
//! [`STORAGE_WORK_IN_FLIGHT_MAX`] at once, and fire only once it succeeded;
//! a failure is retried with exponential backoff (up to
//! [`STORAGE_RETRY_MAX`]) while other timers keep firing. The work is
//! idempotent, so a new leader simply does it again.

use super::archive;
use crate::clock::now_ms;
use crate::object_storage::ObjectStorage;
use gantry_raft::RaftNode;
use gantry_storage::{Command, Millis, TimerKind, TimerRecord};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub const TIMER_POLL: Duration = Duration::from_millis(200);
const TIMERS_PER_ROUND_MAX: usize = 256;
/// Due timers looked at per round, at most (storage timers waiting for a
/// retry are skipped, not fired, so a round may look past many).
const TIMERS_SCANNED_PER_ROUND_MAX: usize = 4096;
pub const STORAGE_WORK_IN_FLIGHT_MAX: usize = 16;
const STORAGE_RETRY_FIRST: Duration = Duration::from_secs(1);
pub const STORAGE_RETRY_MAX: Duration = Duration::from_secs(60);

pub async fn run(node: RaftNode, objects: ObjectStorage, stop: CancellationToken) {
    let mut storage = StorageWork::default();
    let mut clock = TimerClock {
        offset_ms: 0,
        refreshed: None,
    };
    loop {
        storage.reap();
        clock.refresh(&node).await;
        if let Err(error) = fire_due(&node, &objects, &mut storage, &clock).await {
            tracing::warn!(%error, "timer round failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TIMER_POLL) => {}
        }
    }
}

/// The time timers are judged by: this leader's wall clock corrected by
/// the voters' median offset ([`RaftNode::voters_clock_offset`]), so a
/// leader whose clock runs fast fires nothing early. Refreshed every
/// [`CLOCK_REFRESH`]; a cluster of one is its own clock.
struct TimerClock {
    offset_ms: i64,
    refreshed: Option<Instant>,
}

/// How often the voters' clock offset is measured again.
const CLOCK_REFRESH: Duration = Duration::from_secs(2);

impl TimerClock {
    async fn refresh(&mut self, node: &RaftNode) {
        if self
            .refreshed
            .is_some_and(|at| at.elapsed() < CLOCK_REFRESH)
        {
            return;
        }
        let offset = node.voters_clock_offset().await;
        if (offset - self.offset_ms).abs() > 1_000 {
            tracing::warn!(
                offset_ms = offset,
                "this leader's clock differs from the voters' median; timers follow the median"
            );
        }
        self.offset_ms = offset;
        self.refreshed = Some(Instant::now());
    }

    fn now(&self) -> Millis {
        now_ms().saturating_add(self.offset_ms)
    }
}

/// Object-store work of storage timers: running, or waiting for a retry.
#[derive(Default)]
struct StorageWork {
    running: JoinSet<(u64, Result<(), String>)>,
    in_flight: HashSet<u64>,
    /// timer id → (failures so far, earliest next attempt).
    retry: HashMap<u64, (u32, Instant)>,
}

impl StorageWork {
    /// Collects finished work: successes are forgotten, failures back off.
    fn reap(&mut self) {
        while let Some(joined) = self.running.try_join_next() {
            let Ok((timer_id, result)) = joined else {
                continue;
            };
            self.in_flight.remove(&timer_id);
            match result {
                Ok(()) => {
                    self.retry.remove(&timer_id);
                }
                Err(error) => {
                    let failures = self.retry.get(&timer_id).map_or(0, |(n, _)| *n) + 1;
                    let pause = STORAGE_RETRY_FIRST
                        .saturating_mul(1 << failures.min(16).saturating_sub(1))
                        .min(STORAGE_RETRY_MAX);
                    tracing::warn!(timer_id, failures, retry_in_ms = pause.as_millis() as u64, %error,
                        "timer's object-store work failed; will retry");
                    metrics::counter!(crate::metrics::OBJECT_STORE_ERRORS).increment(1);
                    self.retry
                        .insert(timer_id, (failures, Instant::now() + pause));
                }
            }
        }
    }

    /// Whether the timer's work may start now.
    fn may_start(&self, timer_id: u64) -> bool {
        !self.in_flight.contains(&timer_id)
            && self.in_flight.len() < STORAGE_WORK_IN_FLIGHT_MAX
            && self
                .retry
                .get(&timer_id)
                .is_none_or(|(_, at)| Instant::now() >= *at)
    }

    /// `now`: the timer clock's time when the timer was seen due.
    fn start(&mut self, node: &RaftNode, objects: &ObjectStorage, timer: TimerRecord, now: Millis) {
        self.in_flight.insert(timer.id);
        let (node, objects) = (node.clone(), objects.clone());
        self.running.spawn(async move {
            // A panic must come back as this timer's failure: otherwise its
            // id would stay in flight, never retried, until the next term.
            let work =
                std::panic::AssertUnwindSafe(storage_then_fire(&node, &objects, &timer, now));
            let result = futures::FutureExt::catch_unwind(work)
                .await
                .unwrap_or_else(|_| Err("the object-store work panicked".to_string()));
            (timer.id, result)
        });
    }
}

/// Does the timer's object-store work, then proposes its firing.
async fn storage_then_fire(
    node: &RaftNode,
    objects: &ObjectStorage,
    timer: &TimerRecord,
    now: Millis,
) -> Result<(), String> {
    match &timer.kind {
        TimerKind::ArchiveWorkflow { workflow_id } => {
            archive::write(node, objects, workflow_id)
                .await
                .map_err(|error| format!("archiving workflow {workflow_id}: {error}"))?;
            tracing::info!(workflow_id, "workflow archived");
        }
        TimerKind::PurgeWorkflowLogs { workflow_id } => {
            // After the archive only: a late archive would otherwise write
            // files again that the purge had already deleted.
            let archived = node
                .read_local()
                .and_then(|view| Ok(view.workflow_archive(workflow_id)?))
                .map_err(|error| error.to_string())?
                .is_none_or(|archive| archive.archived_at.is_some());
            if !archived {
                return Err(format!(
                    "purging the logs of workflow {workflow_id}: its archive is not written yet"
                ));
            }
            let objects_deleted = archive::purge(objects, workflow_id)
                .await
                .map_err(|error| format!("purging the logs of workflow {workflow_id}: {error}"))?;
            tracing::info!(
                workflow_id,
                objects_deleted,
                "workflow logs purged (retention)"
            );
        }
        _ => {}
    }
    fire(node, timer, now)
        .await
        .map_err(|error| error.to_string())
}

async fn fire(
    node: &RaftNode,
    timer: &TimerRecord,
    now: Millis,
) -> Result<(), gantry_raft::RaftError> {
    node.propose_here(Command::FireTimer {
        now: now.max(timer.due),
        timer_id: timer.id,
        due: timer.due,
    })
    .await
    .map(|_| ())
}

/// Due timers of this round: plain ones to fire now, storage ones whose
/// work may start; at most [`TIMERS_SCANNED_PER_ROUND_MAX`] looked at.
fn due_this_round(
    node: &RaftNode,
    now: Millis,
    storage: &StorageWork,
) -> Result<(Vec<TimerRecord>, Vec<TimerRecord>), gantry_raft::RaftError> {
    let view = node.read_local()?;
    let (mut plain, mut with_storage) = (Vec::new(), Vec::new());
    let mut after = None;
    let mut scanned = 0;
    loop {
        let page = match after {
            None => view.due_timers(now, TIMERS_PER_ROUND_MAX)?,
            Some(after) => view.due_timers_after(now, after, TIMERS_PER_ROUND_MAX)?,
        };
        let full = page.len() == TIMERS_PER_ROUND_MAX;
        scanned += page.len();
        after = page.last().map(|timer| (timer.due, timer.id));
        for timer in page {
            if !timer.kind.needs_storage_work() {
                plain.push(timer);
            } else if storage.may_start(timer.id)
                && storage.in_flight.len() + with_storage.len() < STORAGE_WORK_IN_FLIGHT_MAX
            {
                with_storage.push(timer);
            }
        }
        if !full || plain.len() >= TIMERS_PER_ROUND_MAX || scanned >= TIMERS_SCANNED_PER_ROUND_MAX {
            return Ok((plain, with_storage));
        }
    }
}

async fn fire_due(
    node: &RaftNode,
    objects: &ObjectStorage,
    storage: &mut StorageWork,
    clock: &TimerClock,
) -> Result<(), gantry_raft::RaftError> {
    loop {
        let now = clock.now();
        let (plain, with_storage) = due_this_round(node, now, storage)?;
        for timer in with_storage {
            storage.start(node, objects, timer, now);
        }
        if plain.is_empty() {
            return Ok(());
        }
        let fired = plain.len();
        let proposals = plain.into_iter().map(|timer| {
            node.propose_here(Command::FireTimer {
                now,
                timer_id: timer.id,
                due: timer.due,
            })
        });
        for result in futures::future::join_all(proposals).await {
            result?;
        }
        if fired < TIMERS_PER_ROUND_MAX {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn finish(work: &mut StorageWork, timer_id: u64, result: Result<(), String>) {
        work.in_flight.insert(timer_id);
        work.running.spawn(async move { (timer_id, result) });
        while !work.running.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            work.reap();
        }
    }

    #[tokio::test]
    async fn failed_storage_work_backs_off_without_holding_up_others() {
        let mut work = StorageWork::default();
        finish(&mut work, 7, Err("store down".into())).await;
        assert!(!work.may_start(7), "retried at once");
        assert!(work.may_start(8), "another timer is held up");
        assert_eq!(work.retry.get(&7).map(|(n, _)| *n), Some(1));
        finish(&mut work, 7, Err("store down".into())).await;
        let (failures, at) = work.retry[&7];
        assert_eq!(failures, 2);
        let pause = at.saturating_duration_since(Instant::now());
        assert!(
            pause > Duration::from_millis(1500) && pause <= Duration::from_secs(2),
            "{pause:?}"
        );
        finish(&mut work, 7, Ok(())).await;
        assert!(work.retry.is_empty() && work.in_flight.is_empty());
        assert!(work.may_start(7));
        for id in 0..STORAGE_WORK_IN_FLIGHT_MAX as u64 {
            work.in_flight.insert(100 + id);
        }
        assert!(!work.may_start(9), "more than the in-flight bound");
    }
}
