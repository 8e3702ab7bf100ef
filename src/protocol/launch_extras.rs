//! Launch extras: what a task needs beyond the fields every connection's
//! [`TaskLaunch`] carries (periodic checkpoints today).
//!
//! Why a message of their own: format 1 frames are positional bincode, so
//! a launch cannot gain a field an operator of an older build would
//! misread. The server sends a group whose tasks have extras as
//! [`ToOperator::CreateGroupWithExtras`], only to an operator that
//! announced [`LAUNCH_EXTRAS_HEADER`] on a format-2 connection (named
//! fields, so extras can grow) at a level that covers them; the operator folds them back into each
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
/// [`ToOperator::CreateGroupWithExtras`], and at which level.
pub const LAUNCH_EXTRAS_HEADER: &str = "gantry-launch-extras";

/// The extras this build honours: 1, checkpoints; 2, also topology; 3,
/// also credentials (a task's `credentials:` and registry auths). A
/// field of an extras level an operator did not announce would be decoded
/// and ignored (named fields), so a launch never goes to it.
pub const LAUNCH_EXTRAS_LEVEL: u8 = 3;

/// The level an operator announced in a header of abilities
/// ([`LAUNCH_EXTRAS_HEADER`], `session::SESSIONS_HEADER`): absent, 0;
/// present without a number, 1 (the first builds sent `1`).
pub fn announced_level(header: Option<&[u8]>) -> u8 {
    header.map_or(0, |value| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.trim().parse::<u8>().ok())
            .unwrap_or(1)
            .max(1)
    })
}

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
                        // The user's data credentials open its URLs.
                        if let Some(data) = &mut task.data {
                            data.user_stores = task_extras
                                .data_credentials
                                .iter()
                                .map(crate::data::DataStore::from_user_credential)
                                .collect();
                        }
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
            ToOperator::CreateGroupWithExtras { extras, .. } => {
                extras.iter().next().map(|(task, task_extras)| {
                    format!(
                        "task '{task}' has `{}`",
                        task_extras.features().join("` and `")
                    )
                })
            }
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

    /// The extras level an operator must have announced in
    /// [`LAUNCH_EXTRAS_HEADER`] to take this job: 0 for a job without
    /// extras, 3 when a task has credentials, 2 when one has topology,
    /// else 1.
    pub fn launch_extras_needed(&self) -> u8 {
        match self {
            ToOperator::CreateGroupWithExtras { extras, .. } => {
                if extras.values().any(|task| task.has_secrets()) {
                    3
                } else if extras.values().any(|task| !task.topology.is_empty()) {
                    2
                } else {
                    1
                }
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first builds announced `1` (checkpoints); an operator that did
    /// not announce topology never gets a launch with it.
    #[test]
    fn levels_announced_and_needed() {
        assert_eq!(announced_level(None), 0);
        assert_eq!(announced_level(Some(b"1")), 1);
        assert_eq!(announced_level(Some(b"2")), 2);
        assert_eq!(announced_level(Some(b"yes")), 1);
        assert_eq!(announced_level(Some(b"0")), 1);
        let mut extras = gantry_storage::extras::TaskExtras::default();
        extras
            .topology
            .push(gantry_storage::extras::TopologyRequirement::default());
        let job = ToOperator::CreateGroupWithExtras {
            job_id: 1,
            group: GroupLaunch {
                workflow_id: "w".into(),
                group: "g".into(),
                barrier: true,
                tasks: Vec::new(),
                meta: Default::default(),
            },
            extras: BTreeMap::from([("t".to_string(), extras)]),
        };
        assert_eq!(job.launch_extras_needed(), 2);
        assert!(job.launch_extras_needed() > announced_level(Some(b"1")));
        assert!(job.launch_extras_needed() <= LAUNCH_EXTRAS_LEVEL);
    }
}
