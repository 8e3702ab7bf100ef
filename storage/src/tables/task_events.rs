//! The rows of task events: what backends reported of each task's runs.
//!
//! Invariant: a task keeps the newest [`TASK_EVENTS_MAX`] of all its runs
//! together, oldest first.

use super::*;
use crate::record::{TaskEvent, TASK_EVENTS_MAX};
use crate::schema::TASK_EVENTS;

impl<'a> Tables<'a> {
    /// Adds `events` to task `task` of workflow `workflow_id`, keeping the
    /// newest [`TASK_EVENTS_MAX`].
    pub fn append_task_events(
        &self,
        workflow_id: &str,
        task: &str,
        events: impl IntoIterator<Item = TaskEvent>,
    ) -> Result<(), StorageError> {
        let mut table = self.txn.open_table(TASK_EVENTS)?;
        let key = (workflow_id, task);
        let mut kept: Vec<TaskEvent> = match table.get(key)? {
            Some(row) => decode_row(&TASK_EVENTS, &key, row.value())?,
            None => Vec::new(),
        };
        kept.extend(events);
        let excess = kept.len().saturating_sub(TASK_EVENTS_MAX);
        kept.drain(..excess);
        table.insert(key, encode_row(&kept)?.as_slice())?;
        Ok(())
    }
}
