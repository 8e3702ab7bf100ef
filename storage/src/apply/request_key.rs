//! `Idempotent`: a command carried out at most once per idempotency key.
//!
//! Invariants: a key's first command applies and its outcome (accepted or
//! rejected) is stored with the key, together with the timer that forgets
//! it; while the key is remembered, a repeat applies nothing and returns the
//! stored outcome, whatever command it carries. Wrappers do not nest.

use crate::command::{
    Command, Outcome, RejectionKind, REQUEST_KEY_BYTES_MAX, REQUEST_KEY_RETENTION_MS,
};
use crate::error::StorageError;
use crate::record::{Millis, TimerKind};
use crate::tables::Tables;

pub(super) fn apply_idempotent(
    tables: &Tables,
    now: Millis,
    key: &str,
    command: &Command,
    apply: impl FnOnce(&Command) -> Result<Outcome, StorageError>,
) -> Result<Outcome, StorageError> {
    if key.is_empty() || key.len() > REQUEST_KEY_BYTES_MAX {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!("an idempotency key has 1 to {REQUEST_KEY_BYTES_MAX} bytes"),
        ));
    }
    if matches!(command, Command::Idempotent { .. }) {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "idempotent commands do not nest",
        ));
    }
    if let Some(outcome) = tables.remembered_outcome(key)? {
        return Ok(outcome);
    }
    let outcome = apply(command)?;
    tables.remember_outcome(key, &outcome)?;
    tables.add_timer(
        now.saturating_add(REQUEST_KEY_RETENTION_MS),
        TimerKind::ForgetRequestKey {
            key: key.to_string(),
        },
    )?;
    Ok(outcome)
}
