//! Tallies: each group's tasks counted by status, each workflow's groups
//! counted by status, kept in step with the rows in the same transaction,
//! so aggregating after a task report reads O(1) rows however large the
//! group or workflow is (OSMO's aggregation itself is in `aggregate`).
//!
//! Invariants:
//! - `group_tallies[(w, g)]` counts exactly the current runs of group `g`'s
//!   tasks by status (all of them in `tasks`, the lead apart in `leads`)
//!   and holds `g`'s status as its row holds it.
//! - `workflow_tallies[w]` counts exactly `w`'s group rows by status, holds
//!   `w`'s status as its row holds it, and `w`'s [`WorkflowCore`].
//! - Only [`Tables::put_task`], [`Tables::put_group`] and
//!   [`Tables::put_workflow`] write rows that are counted, and each moves
//!   the counts with the row; no row they count is ever removed.
//! - The counter `TALLY_VERSION_KEY` equals [`TALLY_VERSION`] exactly when
//!   the tallies follow this version's rules. A store or snapshot image
//!   written before the tallies existed lacks it: [`rebuild_if_stale`]
//!   recomputes every tally from the rows before anything reads them (at
//!   open and at every snapshot install), so an older image installs as if
//!   its tallies had always been kept.

use crate::error::StorageError;
use crate::record::{GroupRecord, TaskRecord, WorkflowCore, WorkflowRecord};
use crate::row::{decode_row, encode_row};
use crate::status::{TaskStatus, WorkflowStatus};
use crate::store::Store;
use crate::tables::{Tables, COUNTERS, GROUPS, GROUP_TALLIES, TASKS, WORKFLOWS, WORKFLOW_TALLIES};
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counter naming the rules the stored tallies were built by.
const TALLY_VERSION_KEY: &str = "\0tally_version";
/// Raised whenever what a tally counts changes, so stores rebuild them.
pub(crate) const TALLY_VERSION: u64 = 1;

/// How many rows hold each [`TaskStatus`] (indexed by declaration order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusCounts([u32; TaskStatus::ALL.len()]);

impl StatusCounts {
    pub fn of(&self, status: TaskStatus) -> u32 {
        self.0[status as usize]
    }

    /// The statuses at least one row holds, in declaration order.
    pub fn present(&self) -> impl Iterator<Item = TaskStatus> + '_ {
        TaskStatus::ALL
            .into_iter()
            .filter(|status| self.of(*status) > 0)
    }

    pub fn unfinished(&self) -> u64 {
        self.count_where(|status| !status.is_finished())
    }

    pub fn finished(&self) -> u64 {
        self.count_where(TaskStatus::is_finished)
    }

    pub fn failures(&self) -> u64 {
        self.count_where(TaskStatus::is_failure)
    }

    fn count_where(&self, predicate: impl Fn(TaskStatus) -> bool) -> u64 {
        self.present()
            .filter(|status| predicate(*status))
            .map(|status| u64::from(self.of(status)))
            .sum()
    }

    /// The counts of `statuses` (tests build tallies by hand).
    #[cfg(test)]
    pub fn of_statuses(statuses: &[TaskStatus]) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for status in statuses {
            counts.0[*status as usize] += 1;
        }
        counts
    }

    fn add(&mut self, status: TaskStatus) -> Result<(), StorageError> {
        let slot = &mut self.0[status as usize];
        *slot = slot
            .checked_add(1)
            .ok_or_else(|| StorageError::Tally(format!("more than u32::MAX rows {status}")))?;
        Ok(())
    }

    fn remove(&mut self, status: TaskStatus) -> Result<(), StorageError> {
        let slot = &mut self.0[status as usize];
        *slot = slot
            .checked_sub(1)
            .ok_or_else(|| StorageError::Tally(format!("no row {status} left to uncount")))?;
        Ok(())
    }

    /// Moves one row from `from` to `to`.
    fn shift(&mut self, from: TaskStatus, to: TaskStatus) -> Result<(), StorageError> {
        self.remove(from)?;
        self.add(to)
    }
}

/// A group's tasks counted by status (table `group_tallies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupTally {
    /// The group's status as its row holds it.
    pub status: TaskStatus,
    pub ignore_nonlead_status: bool,
    /// Every task's current run.
    pub tasks: StatusCounts,
    /// The lead's current run (one task; counted apart for lead semantics).
    pub leads: StatusCounts,
}

impl GroupTally {
    fn empty(group: &GroupRecord) -> GroupTally {
        GroupTally {
            status: group.status,
            ignore_nonlead_status: group.ignore_nonlead_status,
            tasks: StatusCounts::default(),
            leads: StatusCounts::default(),
        }
    }

    fn count(&mut self, task: &TaskRecord) -> Result<(), StorageError> {
        self.tasks.add(task.status)?;
        if task.lead {
            self.leads.add(task.status)?;
        }
        Ok(())
    }

    fn uncount(&mut self, task: &TaskRecord) -> Result<(), StorageError> {
        self.tasks.remove(task.status)?;
        if task.lead {
            self.leads.remove(task.status)?;
        }
        Ok(())
    }
}

/// A workflow's groups counted by status (table `workflow_tallies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkflowTally {
    /// The workflow's status as its row holds it.
    pub status: WorkflowStatus,
    pub core: WorkflowCore,
    pub groups: StatusCounts,
}

impl WorkflowTally {
    fn empty(workflow: &WorkflowRecord) -> WorkflowTally {
        WorkflowTally {
            status: workflow.status,
            core: workflow.core(),
            groups: StatusCounts::default(),
        }
    }
}

impl Tables<'_> {
    pub fn group_tally(
        &self,
        workflow_id: &str,
        group: &str,
    ) -> Result<Option<GroupTally>, StorageError> {
        let table = self.txn.open_table(GROUP_TALLIES)?;
        let row = table.get((workflow_id, group))?;
        row.map(|v| decode_row(&GROUP_TALLIES, &(workflow_id, group), v.value()))
            .transpose()
    }

    pub fn workflow_tally(&self, workflow_id: &str) -> Result<Option<WorkflowTally>, StorageError> {
        let table = self.txn.open_table(WORKFLOW_TALLIES)?;
        let row = table.get(workflow_id)?;
        row.map(|v| decode_row(&WORKFLOW_TALLIES, &workflow_id, v.value()))
            .transpose()
    }

    /// A workflow's lifecycle fields, without reading its whole row.
    pub fn workflow_core(&self, workflow_id: &str) -> Result<Option<WorkflowCore>, StorageError> {
        Ok(self.workflow_tally(workflow_id)?.map(|tally| tally.core))
    }

    fn put_group_tally(
        &self,
        workflow_id: &str,
        group: &str,
        tally: &GroupTally,
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(GROUP_TALLIES)?
            .insert((workflow_id, group), encode_row(tally)?.as_slice())?;
        Ok(())
    }

    fn put_workflow_tally(&self, tally: &WorkflowTally) -> Result<(), StorageError> {
        self.txn
            .open_table(WORKFLOW_TALLIES)?
            .insert(tally.core.id.as_str(), encode_row(tally)?.as_slice())?;
        Ok(())
    }

    /// Moves `task` in its group's tally from `previous` (its row before
    /// this write, if any) to what it is now.
    pub(crate) fn count_task(
        &self,
        previous: Option<&TaskRecord>,
        task: &TaskRecord,
    ) -> Result<(), StorageError> {
        if let Some(previous) = previous {
            if previous.status == task.status && previous.lead == task.lead {
                return Ok(());
            }
        }
        let mut tally = self
            .group_tally(&task.workflow_id, &task.group)?
            .ok_or_else(|| {
                StorageError::Tally(format!(
                    "task {} of {} written before its group {}",
                    task.name, task.workflow_id, task.group
                ))
            })?;
        if let Some(previous) = previous {
            tally.uncount(previous)?;
        }
        tally.count(task)?;
        self.put_group_tally(&task.workflow_id, &task.group, &tally)
    }

    /// Records `group`'s status in its tally (creating it with the group's
    /// first write) and moves the group in its workflow's tally.
    pub(crate) fn count_group(&self, group: &GroupRecord) -> Result<(), StorageError> {
        let previous = self.group_tally(&group.workflow_id, &group.name)?;
        let previous_status = previous.as_ref().map(|tally| tally.status);
        if previous_status == Some(group.status) {
            return Ok(());
        }
        let mut tally = previous.unwrap_or_else(|| GroupTally::empty(group));
        tally.status = group.status;
        self.put_group_tally(&group.workflow_id, &group.name, &tally)?;
        let mut workflow = self.workflow_tally(&group.workflow_id)?.ok_or_else(|| {
            StorageError::Tally(format!(
                "group {} written before its workflow {}",
                group.name, group.workflow_id
            ))
        })?;
        match previous_status {
            Some(previous) => workflow.groups.shift(previous, group.status)?,
            None => workflow.groups.add(group.status)?,
        }
        self.put_workflow_tally(&workflow)
    }

    /// Records `workflow`'s status and core in its tally (creating it at
    /// submit); workflow writes are few, so the core is compared each time.
    pub(crate) fn count_workflow(&self, workflow: &WorkflowRecord) -> Result<(), StorageError> {
        let core = workflow.core();
        let tally = match self.workflow_tally(&workflow.id)? {
            Some(tally) if tally.status == workflow.status && tally.core == core => return Ok(()),
            Some(tally) => WorkflowTally {
                status: workflow.status,
                core,
                ..tally
            },
            None => WorkflowTally::empty(workflow),
        };
        self.put_workflow_tally(&tally)
    }
}

/// A workflow's core from its tally, in a read transaction.
pub(crate) fn workflow_core(
    txn: &redb::ReadTransaction,
    workflow_id: &str,
) -> Result<Option<WorkflowCore>, StorageError> {
    let table = txn.open_table(WORKFLOW_TALLIES)?;
    let row = table.get(workflow_id)?;
    row.map(|v| {
        decode_row::<WorkflowTally>(&WORKFLOW_TALLIES, &workflow_id, v.value())
            .map(|tally| tally.core)
    })
    .transpose()
}

/// Every tally as the rows say it should be.
#[derive(Debug, Default, PartialEq)]
struct Recounted {
    groups: BTreeMap<(String, String), GroupTally>,
    workflows: BTreeMap<String, WorkflowTally>,
}

/// Counts the rows from scratch.
fn recount(
    workflows: &impl ReadableTable<&'static str, &'static [u8]>,
    groups: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tasks: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Recounted, StorageError> {
    let mut recounted = Recounted::default();
    for row in workflows.iter()? {
        let (key, value) = row?;
        let workflow: WorkflowRecord = decode_row(&WORKFLOWS, &key.value(), value.value())?;
        recounted
            .workflows
            .insert(workflow.id.clone(), WorkflowTally::empty(&workflow));
    }
    for row in groups.iter()? {
        let (key, value) = row?;
        let group: GroupRecord = decode_row(&GROUPS, &key.value(), value.value())?;
        let workflow = recounted
            .workflows
            .get_mut(&group.workflow_id)
            .ok_or_else(|| {
                StorageError::Tally(format!(
                    "group {} of missing workflow {}",
                    group.name, group.workflow_id
                ))
            })?;
        workflow.groups.add(group.status)?;
        recounted.groups.insert(
            (group.workflow_id.clone(), group.name.clone()),
            GroupTally::empty(&group),
        );
    }
    for row in tasks.iter()? {
        let (key, value) = row?;
        let task: TaskRecord = decode_row(&TASKS, &key.value(), value.value())?;
        recounted
            .groups
            .get_mut(&(task.workflow_id.clone(), task.group.clone()))
            .ok_or_else(|| {
                StorageError::Tally(format!(
                    "task {} of missing group {} of {}",
                    task.name, task.group, task.workflow_id
                ))
            })?
            .count(&task)?;
    }
    Ok(recounted)
}

/// The tallies as stored.
fn stored(
    group_tallies: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    workflow_tallies: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Recounted, StorageError> {
    let mut stored = Recounted::default();
    for row in group_tallies.iter()? {
        let (key, value) = row?;
        let (workflow_id, group) = key.value();
        stored.groups.insert(
            (workflow_id.to_string(), group.to_string()),
            decode_row(&GROUP_TALLIES, &(workflow_id, group), value.value())?,
        );
    }
    for row in workflow_tallies.iter()? {
        let (key, value) = row?;
        stored.workflows.insert(
            key.value().to_string(),
            decode_row(&WORKFLOW_TALLIES, &key.value(), value.value())?,
        );
    }
    Ok(stored)
}

/// Recomputes every tally from the rows unless they follow this version's
/// rules already; true if it did. Deterministic: a function of the rows.
pub(crate) fn rebuild_if_stale(txn: &WriteTransaction) -> Result<bool, StorageError> {
    let version = txn
        .open_table(COUNTERS)?
        .get(TALLY_VERSION_KEY)?
        .map(|v| v.value());
    if version == Some(TALLY_VERSION) {
        return Ok(false);
    }
    let recounted = recount(
        &txn.open_table(WORKFLOWS)?,
        &txn.open_table(GROUPS)?,
        &txn.open_table(TASKS)?,
    )?;
    txn.delete_table(GROUP_TALLIES)?;
    txn.delete_table(WORKFLOW_TALLIES)?;
    // Created even when empty: read transactions must find every table.
    txn.open_table(GROUP_TALLIES)?;
    txn.open_table(WORKFLOW_TALLIES)?;
    let tables = Tables::new(txn);
    for ((workflow_id, group), tally) in &recounted.groups {
        tables.put_group_tally(workflow_id, group, tally)?;
    }
    for tally in recounted.workflows.values() {
        tables.put_workflow_tally(tally)?;
    }
    txn.open_table(COUNTERS)?
        .insert(TALLY_VERSION_KEY, TALLY_VERSION)?;
    Ok(true)
}

impl Store {
    /// Recounts every tally from the committed rows and names each stored
    /// one that differs (empty: the tallies agree with the rows). For tests
    /// and audits; it reads the whole state.
    pub fn tally_mismatches(&self) -> Result<Vec<String>, StorageError> {
        let txn = self.database().begin_read()?;
        let recounted = recount(
            &txn.open_table(WORKFLOWS)?,
            &txn.open_table(GROUPS)?,
            &txn.open_table(TASKS)?,
        )?;
        let stored = stored(
            &txn.open_table(GROUP_TALLIES)?,
            &txn.open_table(WORKFLOW_TALLIES)?,
        )?;
        let mut mismatches = Vec::new();
        let version = txn
            .open_table(COUNTERS)?
            .get(TALLY_VERSION_KEY)?
            .map(|v| v.value());
        if version != Some(TALLY_VERSION) {
            mismatches.push(format!("tally version {version:?}, not {TALLY_VERSION}"));
        }
        differences(&recounted.groups, &stored.groups, &mut mismatches);
        differences(&recounted.workflows, &stored.workflows, &mut mismatches);
        Ok(mismatches)
    }
}

fn differences<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    recounted: &BTreeMap<K, V>,
    stored: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    for (key, expected) in recounted {
        match stored.get(key) {
            Some(found) if found == expected => {}
            found => out.push(format!("{key:?}: stored {found:?}, rows say {expected:?}")),
        }
    }
    for key in stored.keys().filter(|key| !recounted.contains_key(*key)) {
        out.push(format!("{key:?}: stored, but no such row"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_counts_in_its_own_slot() {
        for (slot, status) in TaskStatus::ALL.into_iter().enumerate() {
            assert_eq!(status as usize, slot, "{status}");
        }
        let mut counts = StatusCounts::default();
        counts.add(TaskStatus::Running).expect("add");
        counts
            .shift(TaskStatus::Running, TaskStatus::Failed)
            .expect("shift");
        assert_eq!(counts.of(TaskStatus::Failed), 1);
        assert_eq!((counts.finished(), counts.failures()), (1, 1));
        assert!(counts.remove(TaskStatus::Running).is_err());
    }
}
