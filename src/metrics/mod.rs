//! Prometheus metrics: every metric name Gantry exports, the recorder, and
//! the text served on `GET /metrics`.
//!
//! Invariants: every name recorded anywhere in the binary (and in
//! `gantry-raft`, see [`gantry_raft::metrics`]) is a constant listed in
//! [`METRICS`], which the dashboards and alert-rule tests check queries
//! against; recording goes through the `metrics` facade and is a no-op
//! until [`install`] ran; unlabelled counters are registered at zero so
//! they exist before anything happens. Submodules: `http` (API requests by
//! route template), `raft` (follows openraft's metrics watch), `state`
//! (gauges computed from the replicated state when scraped).

pub mod http;
pub mod raft;
pub mod state;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Gauge, always 1, labels `version` and `git_hash`.
pub const BUILD_INFO: &str = "gantry_build_info";
/// Gauge: the Raft term this member is in.
pub const RAFT_TERM: &str = "gantry_raft_term";
/// Gauge: 1 while this member leads.
pub const RAFT_IS_LEADER: &str = "gantry_raft_is_leader";
/// Gauge: 1 while this member knows a leader.
pub const RAFT_HAS_LEADER: &str = "gantry_raft_has_leader";
/// Gauge: index of the last entry in this member's log.
pub const RAFT_LAST_LOG_INDEX: &str = "gantry_raft_last_log_index";
/// Gauge: index of the last entry applied to this member's state.
pub const RAFT_APPLIED_INDEX: &str = "gantry_raft_applied_index";
/// Gauge: highest log index this member knows committed (recorded in `raft/`).
pub const RAFT_COMMIT_INDEX: &str = gantry_raft::metrics::COMMIT_INDEX;
/// Histogram: commands per proposed log entry (recorded in `raft/`).
pub const RAFT_PROPOSAL_BATCH_COMMANDS: &str = gantry_raft::metrics::PROPOSAL_BATCH_COMMANDS;
/// Histogram: encoded bytes per proposed log entry (recorded in `raft/`).
pub const RAFT_PROPOSAL_BATCH_BYTES: &str = gantry_raft::metrics::PROPOSAL_BATCH_BYTES;
/// Histogram: seconds from proposing a batch to its outcome (recorded in `raft/`).
pub const RAFT_PROPOSAL_SECONDS: &str = gantry_raft::metrics::PROPOSAL_SECONDS;
/// Histogram: seconds per durable log append (recorded in `raft/`).
pub const RAFT_LOG_FSYNC_SECONDS: &str = gantry_raft::metrics::LOG_FSYNC_SECONDS;
/// Counter: times this member saw the leader change (elections won by anyone).
pub const RAFT_LEADER_CHANGES: &str = "gantry_raft_leader_changes_total";
/// Gauge (on the leader only), label `follower`: log entries a member lags
/// behind the leader's last log index.
pub const RAFT_FOLLOWER_LAG_ENTRIES: &str = "gantry_raft_follower_lag_entries";
/// Counter, labels `method`, `route` (the matched path template) and `status`.
pub const API_REQUESTS: &str = "gantry_api_requests_total";
/// Histogram, labels `method`, `route` and `status`.
pub const API_REQUEST_SECONDS: &str = "gantry_api_request_seconds";
/// Gauge, label `status`: workflows in the replicated state.
pub const WORKFLOWS: &str = "gantry_workflows";
/// Gauge, labels `status` and `pool`: tasks of workflows that have not finished.
pub const TASKS: &str = "gantry_tasks";
/// Gauge: seconds the earliest due timer is overdue (0 when none is).
pub const TIMER_LAG_SECONDS: &str = "gantry_timer_lag_seconds";
/// Gauge, label `backend`: operator connections to this member.
pub const OPERATOR_CONNECTIONS: &str = "gantry_operator_connections";
/// Counter, labels `backend` and `kind`: messages received from operators.
pub const OPERATOR_MESSAGES_RECEIVED: &str = "gantry_operator_messages_received_total";
/// Counter, labels `backend` and `kind`: operator reports about work not
/// dispatched to that backend, dropped.
pub const OPERATOR_REPORTS_DROPPED: &str = "gantry_operator_reports_dropped_total";
/// Counter, label `backend`: jobs sent to operators.
pub const OPERATOR_MESSAGES_SENT: &str = "gantry_operator_messages_sent_total";
/// Counter: bytes of task log lines received from operators.
pub const LOG_RECEIVED_BYTES: &str = "gantry_log_received_bytes_total";
/// Counter: log chunks written to object storage (the chunk store comes
/// with the logs stage; registered at zero until then).
pub const LOG_CHUNKS_WRITTEN: &str = "gantry_log_chunks_written_total";
/// Counter: failed object-store calls (registered at zero until the
/// object store arrives).
pub const OBJECT_STORE_ERRORS: &str = "gantry_object_store_errors_total";
/// Gauge: other members whose object store this member's last probe
/// exchange found not shared with its own (`control::store_probe`).
pub const OBJECT_STORE_DIVERGED_MEMBERS: &str = "gantry_object_store_diverged_members";

/// Gauge: 1 while a state check has this member's state marked corrupt (recorded in `raft/`).
pub const STATE_CORRUPT: &str = gantry_raft::metrics::STATE_CORRUPT;
/// Gauge, label `member` (leader): 1 when the member's state hash differed
/// in the last state check (recorded in `raft/`).
pub const STATE_HASH_MISMATCH: &str = gantry_raft::metrics::STATE_HASH_MISMATCH;
/// Counter, label `outcome`: state checks the leader ran (recorded in `raft/`).
pub const STATE_CHECKS: &str = gantry_raft::metrics::STATE_CHECKS;
/// Histogram: seconds one hash of this member's whole state took (recorded in `raft/`).
pub const STATE_HASH_SECONDS: &str = gantry_raft::metrics::STATE_HASH_SECONDS;

/// Gauge: seconds the last scrape spent computing the state gauges.
pub const SCRAPE_STATE_SECONDS: &str = "gantry_scrape_state_seconds";
/// Gauge: unfinished workflows whose tasks the last scrape did not count
/// (more than [`state::ACTIVE_WORKFLOWS_SCANNED_MAX`]).
pub const SCRAPE_WORKFLOWS_SKIPPED: &str = "gantry_scrape_workflows_skipped";

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: its name, kind, labels and help text.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Labels Gantry sets (Prometheus adds `instance` and `job`; histogram
    /// buckets add `le`). Read by the dashboards and alert-rules tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric Gantry exports.
#[rustfmt::skip]
pub const METRICS: [Metric; 32] = [
    metric(BUILD_INFO, Kind::Gauge, &["version", "git_hash"], "Gantry's version and git hash (always 1)"),
    metric(RAFT_TERM, Kind::Gauge, &[], "Raft term this member is in"),
    metric(RAFT_IS_LEADER, Kind::Gauge, &[], "1 while this member leads"),
    metric(RAFT_HAS_LEADER, Kind::Gauge, &[], "1 while this member knows a leader"),
    metric(RAFT_LAST_LOG_INDEX, Kind::Gauge, &[], "Index of the last entry in this member's Raft log"),
    metric(RAFT_APPLIED_INDEX, Kind::Gauge, &[], "Index of the last Raft entry applied to this member's state"),
    metric(RAFT_COMMIT_INDEX, Kind::Gauge, &[], "Highest Raft log index this member knows to be committed"),
    metric(RAFT_LEADER_CHANGES, Kind::Counter, &[], "Leader changes this member saw"),
    metric(RAFT_FOLLOWER_LAG_ENTRIES, Kind::Gauge, &["follower"], "Log entries a member lags behind the leader (reported by the leader)"),
    metric(RAFT_PROPOSAL_BATCH_COMMANDS, Kind::Histogram, &[], "Commands carried by one proposed Raft log entry"),
    metric(RAFT_PROPOSAL_BATCH_BYTES, Kind::Histogram, &[], "Encoded bytes of the commands of one proposed Raft log entry (at most 1 MiB)"),
    metric(RAFT_PROPOSAL_SECONDS, Kind::Histogram, &[], "Seconds from proposing a batch to its outcome"),
    metric(RAFT_LOG_FSYNC_SECONDS, Kind::Histogram, &[], "Seconds one Raft log append takes to become durable (fsync)"),
    metric(API_REQUESTS, Kind::Counter, &["method", "route", "status"], "API requests by method, route template and status"),
    metric(API_REQUEST_SECONDS, Kind::Histogram, &["method", "route", "status"], "API request latency by method, route template and status"),
    metric(WORKFLOWS, Kind::Gauge, &["status"], "Workflows by status"),
    metric(TASKS, Kind::Gauge, &["status", "pool"], "Tasks of unfinished workflows by status and pool"),
    metric(TIMER_LAG_SECONDS, Kind::Gauge, &[], "Seconds the earliest due timer is overdue"),
    metric(OPERATOR_CONNECTIONS, Kind::Gauge, &["backend"], "Operator connections to this member by backend"),
    metric(OPERATOR_MESSAGES_RECEIVED, Kind::Counter, &["backend", "kind"], "Messages received from operators by backend and kind"),
    metric(OPERATOR_REPORTS_DROPPED, Kind::Counter, &["backend", "kind"], "Operator reports about work not dispatched to their backend, dropped"),
    metric(OPERATOR_MESSAGES_SENT, Kind::Counter, &["backend"], "Jobs sent to operators by backend"),
    metric(LOG_RECEIVED_BYTES, Kind::Counter, &[], "Bytes of task log lines received from operators"),
    metric(LOG_CHUNKS_WRITTEN, Kind::Counter, &[], "Log chunks written to object storage"),
    metric(OBJECT_STORE_ERRORS, Kind::Counter, &[], "Failed object-store calls"),
    metric(OBJECT_STORE_DIVERGED_MEMBERS, Kind::Gauge, &[], "Other members whose object store the last probe exchange found not shared with this member's"),
    metric(STATE_CORRUPT, Kind::Gauge, &[], "1 while a state check has this member's state marked corrupt (it refuses reads)"),
    metric(STATE_HASH_MISMATCH, Kind::Gauge, &["member"], "1 when the member's state hash differed from the majority's (or from another's, with no majority) in the leader's last state check"),
    metric(STATE_CHECKS, Kind::Counter, &["outcome"], "State checks the leader ran, by outcome (agreed, mismatch, undecided)"),
    metric(STATE_HASH_SECONDS, Kind::Histogram, &[], "Seconds one hash of this member's whole state took"),
    metric(SCRAPE_STATE_SECONDS, Kind::Gauge, &[], "Seconds the last scrape spent reading the replicated state"),
    metric(SCRAPE_WORKFLOWS_SKIPPED, Kind::Gauge, &[], "Unfinished workflows left out of gantry_tasks in the last scrape (over the scan bound)"),
];

/// Latency buckets, in seconds, for every `_seconds` histogram: 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets for commands per log entry, up to the proposer's batch bound.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Buckets for encoded bytes per log entry, up to the entry limit (1 MiB)
/// and past it, so an entry over the limit would show.
const BATCH_BYTES_BUCKETS: [f64; 9] = [
    256.0, 4096.0, 16384.0, 65536.0, 262144.0, 524288.0, 1048576.0, 2097152.0, 4194304.0,
];

/// How often histograms are drained when nobody scrapes (bounds memory).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("building the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("another metrics recorder is installed already")]
    RecorderTaken,
}

/// Installs the Prometheus recorder for this process (once; later calls
/// do nothing), describes every metric and registers the unlabelled
/// counters at zero.
pub fn install() -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(RAFT_PROPOSAL_BATCH_COMMANDS.to_string()),
            &BATCH_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(RAFT_PROPOSAL_BATCH_BYTES.to_string()),
            &BATCH_BYTES_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return Err(MetricsError::RecorderTaken);
    }
    // A second caller racing this one lost at set_global_recorder above.
    let _ = HANDLE.set(handle);
    for Metric {
        name, kind, help, ..
    } in METRICS
    {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for name in [
        RAFT_LEADER_CHANGES,
        LOG_RECEIVED_BYTES,
        LOG_CHUNKS_WRITTEN,
        OBJECT_STORE_ERRORS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "git_hash" => crate::GIT_HASH,
    )
    .set(1.0);
    Ok(())
}

/// The Prometheus text exposition of everything recorded, or `None`
/// before [`install`].
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Drains histograms every [`UPKEEP_INTERVAL`] until `stop`.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_INTERVAL) => {}
        }
        if let Some(handle) = HANDLE.get() {
            handle.run_upkeep();
        }
    }
}

/// The metric a series name belongs to (histograms expose `<name>_bucket`,
/// `<name>_sum` and `<name>_count`), with whether it is a `_bucket` series.
#[cfg(test)]
pub fn exported(series: &str) -> Option<(Metric, bool)> {
    METRICS.iter().find_map(|metric| {
        if series == metric.name {
            return Some((*metric, false));
        }
        if metric.kind != Kind::Histogram {
            return None;
        }
        let rest = series.strip_prefix(metric.name)?;
        match rest {
            "_bucket" => Some((*metric, true)),
            "_sum" | "_count" => Some((*metric, false)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod dashboards_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_with_gantry_prefix() {
        let mut seen = std::collections::HashSet::new();
        for Metric {
            name, kind, help, ..
        } in METRICS
        {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(name.starts_with("gantry_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert!(!help.is_empty(), "{name} has no help");
            // Prometheus conventions: counters end in _total, nothing else does.
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        }
        for name in gantry_raft::metrics::ALL {
            assert!(seen.contains(name), "raft's {name} is not listed");
        }
    }

    #[test]
    fn histogram_series_are_recognised() {
        assert!(matches!(
            exported("gantry_api_request_seconds_bucket"),
            Some((
                Metric {
                    name: API_REQUEST_SECONDS,
                    ..
                },
                true
            ))
        ));
        assert!(exported("gantry_raft_log_fsync_seconds_count").is_some());
        assert!(exported("gantry_workflows").is_some());
        assert!(exported("gantry_workflows_bucket").is_none());
        assert!(exported("gantry_no_such_metric").is_none());
    }
}
