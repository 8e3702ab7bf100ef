//! A workflow's specs and group list, kept apart from its row (table
//! `workflow_specs`).
//!
//! Why apart: a workflow's status follows its groups (OSMO §2.2: RUNNING
//! while a group runs, else PENDING), so a workflow of many short groups
//! changes status about twice per group. Its specs and group list grow
//! with the workflow (megabytes for 10,000 groups); held in its row, each
//! of those changes read and rewrote them all. Apart, a status change
//! rewrites a row of a few hundred bytes, whatever the workflow's size.
//!
//! Invariants:
//! - A `workflows` row written by [`Tables::put_workflow`] holds neither
//!   specs nor group list; they are in `workflow_specs` under the same id
//!   (no row there when all three are empty). They are fixed at submit.
//! - A row written before the split still holds them and has no
//!   `workflow_specs` row: reads take them from the row, and its first
//!   write moves them out.
//! - [`Tables::workflow`] and `ReadView::workflow` give the whole record;
//!   [`Tables::workflow_row`] the row alone, for status work.

use crate::error::StorageError;
use crate::record::WorkflowRecord;
use crate::row::{decode_row, encode_row};
use crate::tables::{Tables, WORKFLOWS, WORKFLOW_SPECS};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// The parts of a [`WorkflowRecord`] that grow with the workflow, as
/// stored.
#[derive(Debug, Default, PartialEq, Deserialize)]
struct WorkflowSpecs {
    template_spec: String,
    rendered_spec: String,
    groups: Vec<String>,
}

/// The same parts borrowed from a record, for writing (encoded as
/// [`WorkflowSpecs`] is: a `str` as a `String`, a slice as a `Vec`).
#[derive(Serialize)]
struct CarriedSpecs<'a> {
    template_spec: &'a str,
    rendered_spec: &'a str,
    groups: &'a [String],
}

impl CarriedSpecs<'_> {
    fn of(workflow: &WorkflowRecord) -> CarriedSpecs<'_> {
        CarriedSpecs {
            template_spec: &workflow.template_spec,
            rendered_spec: &workflow.rendered_spec,
            groups: &workflow.groups,
        }
    }

    fn is_empty(&self) -> bool {
        self.template_spec.is_empty() && self.rendered_spec.is_empty() && self.groups.is_empty()
    }
}

/// `workflow` (a row) with its specs and group list from `specs`, if that
/// table holds them (a row from before the split holds its own).
pub(crate) fn attach_specs(
    specs: &impl ReadableTable<&'static str, &'static [u8]>,
    mut workflow: WorkflowRecord,
) -> Result<WorkflowRecord, StorageError> {
    if let Some(row) = specs.get(workflow.id.as_str())? {
        let parts: WorkflowSpecs = decode_row(&WORKFLOW_SPECS, &workflow.id.as_str(), row.value())?;
        workflow.template_spec = parts.template_spec;
        workflow.rendered_spec = parts.rendered_spec;
        workflow.groups = parts.groups;
    }
    Ok(workflow)
}

/// `workflow` without its specs and group list: what its row holds.
fn row_of(workflow: &WorkflowRecord) -> WorkflowRecord {
    WorkflowRecord {
        id: workflow.id.clone(),
        name: workflow.name.clone(),
        uuid: workflow.uuid.clone(),
        submit_seq: workflow.submit_seq,
        pool: workflow.pool.clone(),
        backend: workflow.backend.clone(),
        user: workflow.user.clone(),
        priority: workflow.priority,
        status: workflow.status,
        submit_time: workflow.submit_time,
        start_time: workflow.start_time,
        end_time: workflow.end_time,
        cancelled_by: workflow.cancelled_by.clone(),
        cancel_message: workflow.cancel_message.clone(),
        failure_message: workflow.failure_message.clone(),
        template_spec: String::new(),
        rendered_spec: String::new(),
        exec_timeout_seconds: workflow.exec_timeout_seconds,
        queue_timeout_seconds: workflow.queue_timeout_seconds,
        groups: Vec::new(),
    }
}

impl Tables<'_> {
    /// The whole workflow: its row, specs and group list.
    pub fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StorageError> {
        match self.workflow_row(id)? {
            Some(row) => attach_specs(&self.txn.open_table(WORKFLOW_SPECS)?, row).map(Some),
            None => Ok(None),
        }
    }

    /// The workflow's row alone: status and times, without specs or group
    /// list (unless the row predates the split). Writing it back with
    /// [`Tables::put_workflow`] leaves the specs as they are.
    pub fn workflow_row(&self, id: &str) -> Result<Option<WorkflowRecord>, StorageError> {
        let table = self.txn.open_table(WORKFLOWS)?;
        let row = table.get(id)?;
        row.map(|v| decode_row(&WORKFLOWS, &id, v.value()))
            .transpose()
    }

    /// Writes `workflow`'s row; the specs and group list it carries, if
    /// any (at submit, or a row from before the split), go to
    /// `workflow_specs`.
    pub(crate) fn put_workflow_row(&self, workflow: &WorkflowRecord) -> Result<(), StorageError> {
        self.txn.open_table(WORKFLOWS)?.insert(
            workflow.id.as_str(),
            encode_row(&row_of(workflow))?.as_slice(),
        )?;
        let carried = CarriedSpecs::of(workflow);
        if !carried.is_empty() {
            self.txn
                .open_table(WORKFLOW_SPECS)?
                .insert(workflow.id.as_str(), encode_row(&carried)?.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
