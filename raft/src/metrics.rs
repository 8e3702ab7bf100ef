//! Names of the metrics this crate records, through the `metrics` facade.
//!
//! Invariants: recording is a no-op until the binary installs a recorder;
//! the binary's `metrics` module lists these names with the rest of
//! Gantry's, so dashboards and alert rules are checked against them. Only
//! what the binary cannot see from outside is recorded here (openraft's
//! term, log and applied indexes are read from its metrics watch instead).

/// Histogram: commands carried by one proposed log entry (group commit).
pub const PROPOSAL_BATCH_COMMANDS: &str = "gantry_raft_proposal_batch_commands";
/// Histogram: encoded bytes of the commands of one proposed log entry.
pub const PROPOSAL_BATCH_BYTES: &str = "gantry_raft_proposal_batch_bytes";
/// Histogram: seconds from proposing a batch to its outcome (committed and
/// applied, or failed).
pub const PROPOSAL_SECONDS: &str = "gantry_raft_proposal_seconds";
/// Histogram: seconds one log append takes to become durable (the redb
/// commit, which fsyncs).
pub const LOG_FSYNC_SECONDS: &str = "gantry_raft_log_fsync_seconds";
/// Gauge: the highest log index this member knows to be committed.
pub const COMMIT_INDEX: &str = "gantry_raft_commit_index";

/// Gauge: 1 while a state check has this member's state marked corrupt
/// (it refuses reads).
pub const STATE_CORRUPT: &str = "gantry_state_corrupt";
/// Gauge, label `member` (on the leader): 1 when the member's state hash
/// differed from the majority's, or from another's with no majority, in
/// the last state check.
pub const STATE_HASH_MISMATCH: &str = "gantry_state_hash_mismatch";
/// Counter, label `outcome` (`agreed`, `mismatch`, `undecided`): state
/// checks the leader ran.
pub const STATE_CHECKS: &str = "gantry_state_checks_total";
/// Histogram: seconds one hash of this member's whole state took.
pub const STATE_HASH_SECONDS: &str = "gantry_state_hash_seconds";

/// Every name above (the binary describes them for Prometheus).
pub const ALL: [&str; 9] = [
    PROPOSAL_BATCH_COMMANDS,
    PROPOSAL_BATCH_BYTES,
    PROPOSAL_SECONDS,
    LOG_FSYNC_SECONDS,
    COMMIT_INDEX,
    STATE_CORRUPT,
    STATE_HASH_MISMATCH,
    STATE_CHECKS,
    STATE_HASH_SECONDS,
];
