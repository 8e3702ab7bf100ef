//! Reading the events backends reported of a task's runs.

use super::ReadView;
use crate::error::StorageError;
use crate::record::TaskEvent;
use crate::schema::TASK_EVENTS;

impl ReadView {
    /// The events of task `task` of workflow `workflow_id` (all its runs),
    /// oldest first; empty without any.
    pub fn task_events(
        &self,
        workflow_id: &str,
        task: &str,
    ) -> Result<Vec<TaskEvent>, StorageError> {
        let table = self.txn.open_table(TASK_EVENTS)?;
        let key = (workflow_id, task);
        let row = table.get(key)?;
        Ok(row
            .map(|v| self.row(&TASK_EVENTS, &key, v.value()))
            .transpose()?
            .unwrap_or_default())
    }
}
