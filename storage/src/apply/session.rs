//! `RecordSession`: a session a user opened into a task, kept with its
//! workflow as an event.
//!
//! Invariants: only for a workflow that exists; every field within its
//! bound (so a proposer cannot grow the state without limit through one
//! event); the time is the command's; a workflow keeps the newest
//! [`SESSION_EVENTS_MAX`](crate::record::SESSION_EVENTS_MAX).

use crate::command::{Outcome, RejectionKind};
use crate::error::StorageError;
use crate::record::{
    Millis, SessionEvent, SessionEventInput, SESSION_DETAIL_BYTES_MAX, SESSION_NAME_BYTES_MAX,
};
use crate::tables::Tables;

pub(super) fn apply_session_record(
    tables: &Tables,
    now: Millis,
    workflow_id: &str,
    input: &SessionEventInput,
) -> Result<Outcome, StorageError> {
    for (field, value, limit) in [
        ("user", &input.user, SESSION_NAME_BYTES_MAX),
        ("task", &input.task, SESSION_NAME_BYTES_MAX),
        ("kind", &input.kind, SESSION_NAME_BYTES_MAX),
        ("detail", &input.detail, SESSION_DETAIL_BYTES_MAX),
    ] {
        if value.len() > limit {
            return Ok(Outcome::rejected(
                RejectionKind::Invalid,
                format!(
                    "session {field} of {} bytes is over the limit of {limit}",
                    value.len()
                ),
            ));
        }
    }
    if input.user.is_empty() || input.task.is_empty() || input.kind.is_empty() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a session needs a user, a task and a kind",
        ));
    }
    if tables.workflow_row(workflow_id)?.is_none() {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("workflow {workflow_id} not found"),
        ));
    }
    tables.append_session(
        workflow_id,
        SessionEvent {
            time: now,
            user: input.user.clone(),
            task: input.task.clone(),
            retry_id: input.retry_id,
            kind: input.kind.clone(),
            detail: input.detail.clone(),
        },
    )?;
    Ok(Outcome::Applied)
}
