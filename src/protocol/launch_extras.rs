//! Launch extras: what a task needs beyond the fields every connection's
//! [`TaskLaunch`] carries (periodic checkpoints today).
//!
//! Why a message of their own: format 1 frames are positional bincode, so
//! a launch cannot gain a field an operator of an older build would
//! misread. The server sends a group whose tasks have extras as
//! [`ToOperator::CreateGroupWithExtras`], only to an operator that
//! announced [`LAUNCH_EXTRAS_HEADER`] on a format-2 connection (named
//! fields, so extras can grow); the operator folds them back into each
//! [`TaskLaunch::extras`] on receipt, and executors read them there.
//!
//! Invariants: a group without extras travels as
//! [`ToOperator::CreateGroup`], as before, so operators of older builds keep
//! taking it; a group with extras never goes to an operator that cannot
//! honour them (its tasks fail with the reason instead).

use super::{GroupLaunch, ToOperator};
use gantry_storage::TaskKey;
use std::collections::BTreeMap;

/// The request header in which an operator says it takes
/// [`ToOperator::CreateGroupWithExtras`].
pub const LAUNCH_EXTRAS_HEADER: &str = "gantry-launch-extras";

impl GroupLaunch {
    /// The job that launches this group: with its tasks' extras split out
    /// when any has some.
    pub fn into_job(mut self, job_id: u64) -> ToOperator {
        let extras: BTreeMap<String, _> = self
            .tasks
            .iter_mut()
            .filter(|task| !task.extras.is_empty())
            .map(|task| (task.key.task.clone(), std::mem::take(&mut task.extras)))
            .collect();
        if extras.is_empty() {
            ToOperator::CreateGroup {
                job_id,
                group: self,
            }
        } else {
            ToOperator::CreateGroupWithExtras {
                job_id,
                group: self,
                extras,
            }
        }
    }
}

impl ToOperator {
    /// A create job with every task's extras back in its launch (the
    /// operator's side of [`GroupLaunch::into_job`]); other jobs as they are.
    pub fn with_extras_folded(self) -> ToOperator {
        match self {
            ToOperator::CreateGroupWithExtras {
                job_id,
                mut group,
                mut extras,
            } => {
                for task in &mut group.tasks {
                    if let Some(task_extras) = extras.remove(&task.key.task) {
                        task.extras = task_extras;
                    }
                }
                ToOperator::CreateGroup { job_id, group }
            }
            other => other,
        }
    }

    /// What an operator of an older build could not honour in this job:
    /// the first task with extras, for the failure message.
    pub fn extras_needed(&self) -> Option<String> {
        match self {
            ToOperator::CreateGroupWithExtras { extras, .. } => extras
                .keys()
                .next()
                .map(|task| format!("task '{task}' has `checkpoint`")),
            _ => None,
        }
    }

    /// The tasks a create job launches (none for other jobs).
    pub fn create_keys(&self) -> Vec<TaskKey> {
        match self {
            ToOperator::CreateGroup { group, .. }
            | ToOperator::CreateGroupWithExtras { group, .. } => {
                group.tasks.iter().map(|task| task.key.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether only an operator that announced [`LAUNCH_EXTRAS_HEADER`]
    /// can take this job.
    pub fn needs_launch_extras(&self) -> bool {
        matches!(self, ToOperator::CreateGroupWithExtras { .. })
    }
}
