//! The wall clock, read in one place. State never reads it: the edge that
//! proposes a command reads the time here and carries it in the command,
//! so every replica applies the same value.

/// Wall-clock time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
