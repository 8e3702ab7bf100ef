//! Task events as an operator reported them, fitted to what the state
//! machine keeps: at most `TASK_EVENTS_PER_COMMAND_MAX` per message (the
//! newest), each reason and message one printable line within its bound,
//! an empty reason named `Unknown`.
//!
//! Invariant: what [`fit`] returns passes `TaskEventInput::refusal`, so a
//! careless or hostile operator's text cannot fail the batch it rides in.

use crate::text::one_line;
use gantry_storage::{
    TaskEventInput, TASK_EVENTS_PER_COMMAND_MAX, TASK_EVENT_MESSAGE_BYTES_MAX,
    TASK_EVENT_REASON_BYTES_MAX,
};

pub(super) fn fit(mut events: Vec<TaskEventInput>) -> Vec<TaskEventInput> {
    let excess = events.len().saturating_sub(TASK_EVENTS_PER_COMMAND_MAX);
    events.drain(..excess);
    events
        .into_iter()
        .map(|event| {
            let reason = one_line(&event.reason, TASK_EVENT_REASON_BYTES_MAX);
            TaskEventInput {
                time: event.time,
                reason: if reason.is_empty() {
                    "Unknown".to_string()
                } else {
                    reason
                },
                message: one_line(&event.message, TASK_EVENT_MESSAGE_BYTES_MAX),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_events_fit_what_the_state_keeps() {
        let hostile = TaskEventInput {
            time: 1,
            reason: "\n".repeat(500),
            message: "x\n2026/01/01 00:00:00 [task] COMPLETED".repeat(100),
        };
        let fitted = fit(vec![hostile; TASK_EVENTS_PER_COMMAND_MAX + 5]);
        assert_eq!(fitted.len(), TASK_EVENTS_PER_COMMAND_MAX);
        for event in &fitted {
            assert_eq!(event.refusal(), None, "{event:?}");
        }
        let empty = TaskEventInput {
            time: 1,
            reason: String::new(),
            message: String::new(),
        };
        assert_eq!(fit(vec![empty])[0].reason, "Unknown");
    }
}
