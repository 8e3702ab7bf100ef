//! A validated, expanded workflow: what the spec parser hands to the state
//! machine inside a submit command.
//!
//! Invariants (checked by the spec validator before a plan exists, and
//! re-checked by `apply` so a bad command is rejected, never half-applied):
//! group and task names are unique within a workflow, every group has exactly
//! one lead, every `upstream` names a group that appears earlier in `groups`.
//! Special tokens (`{{output}}`, `{{input:N}}`, ...) are still present in
//! `command`, `args`, `environment` and file contents: they are substituted
//! when a task is launched, once its workflow ID and placement are known.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowPlan {
    pub groups: Vec<GroupPlan>,
    /// Seconds; `None` means no limit.
    pub exec_timeout_seconds: Option<u64>,
    /// Seconds; `None` means no limit.
    pub queue_timeout_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub name: String,
    pub tasks: Vec<TaskPlan>,
    /// Names of groups that must complete before this one starts.
    pub upstream: Vec<String>,
    pub barrier: bool,
    pub ignore_nonlead_status: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlan {
    pub name: String,
    pub lead: bool,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub inputs: Vec<InputPlan>,
    pub outputs: Vec<OutputPlan>,
    pub files: Vec<FilePlan>,
    pub resource: ResourcePlan,
    pub exit_actions: Vec<ExitActionPlan>,
    /// Credential name → mount directory or env mapping, kept as given.
    pub credentials: BTreeMap<String, CredentialUse>,
    pub privileged: bool,
    pub host_network: bool,
    pub volume_mounts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputPlan {
    /// Output of a task: `task` is `<name>` (this workflow) or `<wf_id>:<name>`.
    Task {
        task: String,
        regex: Option<String>,
    },
    Url {
        url: String,
        regex: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputPlan {
    pub url: String,
    pub regex: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    pub path: String,
    pub contents: String,
    /// `contents` is base64 and is decoded when the file is written.
    pub base64: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePlan {
    /// Name of the resource profile in `workflow.resources`.
    pub name: String,
    pub cpu: Option<u64>,
    pub gpu: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    pub platform: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitAction {
    Complete,
    Fail,
    Reschedule,
}

impl ExitAction {
    /// `COMPLETE`, `FAIL` or `RESCHEDULE`, as specs and pools write them.
    pub fn from_name(name: &str) -> Option<ExitAction> {
        match name {
            "COMPLETE" => Some(ExitAction::Complete),
            "FAIL" => Some(ExitAction::Fail),
            "RESCHEDULE" => Some(ExitAction::Reschedule),
            _ => None,
        }
    }
}

/// Inclusive code ranges of `"0,1-10,16"` (spaces around parts allowed, as
/// OSMO's `int()` allows them); the error says what is wrong with the text.
pub fn parse_exit_codes(text: &str) -> Result<Vec<(i32, i32)>, String> {
    let code = |part: &str| -> Result<i32, String> {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{part:?} is not a number"));
        }
        part.parse::<i32>()
            .map_err(|_| format!("{part} is too large"))
    };
    let mut ranges = Vec::new();
    for item in text.split(',') {
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (code(low)?, code(high)?),
            None => {
                let n = code(item)?;
                (n, n)
            }
        };
        if low > high {
            return Err(format!("range start is above its end ({low}-{high})"));
        }
        ranges.push((low, high));
    }
    Ok(ranges)
}

/// The first action of `actions` (action → code ranges text) whose codes
/// hold `exit_code`; texts that do not parse match nothing.
pub fn exit_action_in<'a>(
    actions: impl IntoIterator<Item = (&'a String, &'a String)>,
    exit_code: i32,
) -> Option<ExitAction> {
    actions.into_iter().find_map(|(name, codes)| {
        let action = ExitAction::from_name(name)?;
        parse_exit_codes(codes)
            .ok()?
            .iter()
            .any(|&(low, high)| (low..=high).contains(&exit_code))
            .then_some(action)
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitActionPlan {
    pub action: ExitAction,
    /// Inclusive code ranges, e.g. `"0,1-10"` → `[(0,0),(1,10)]`.
    pub codes: Vec<(i32, i32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialUse {
    /// Every key of the credential mounted as a file under this directory.
    Mount(String),
    /// Environment variable name → credential key.
    Env(BTreeMap<String, String>),
}

impl WorkflowPlan {
    pub fn task_count(&self) -> usize {
        self.groups.iter().map(|group| group.tasks.len()).sum()
    }
}

impl TaskPlan {
    /// The action an exit code selects, if any rule names it.
    pub fn exit_action_for(&self, exit_code: i32) -> Option<ExitAction> {
        self.exit_actions
            .iter()
            .find(|rule| {
                rule.codes
                    .iter()
                    .any(|&(low, high)| (low..=high).contains(&exit_code))
            })
            .map(|rule| rule.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_parse_as_osmo_reads_them() {
        assert_eq!(
            parse_exit_codes("0,1-10,16"),
            Ok(vec![(0, 0), (1, 10), (16, 16)])
        );
        // OSMO's int() takes spaces around a number.
        assert_eq!(parse_exit_codes("1, 2 - 3"), Ok(vec![(1, 1), (2, 3)]));
        for bad in ["", "1-", "a", "1,,2", "-1", "99999999999"] {
            assert!(parse_exit_codes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_exit_codes("10-1")
            .unwrap_err()
            .contains("range start is above its end"));
    }

    #[test]
    fn the_first_matching_rule_of_a_pool_wins() {
        let actions: std::collections::BTreeMap<String, String> = [
            ("COMPLETE".to_string(), "1-3".to_string()),
            ("RESCHEDULE".to_string(), "3,137".to_string()),
            ("BOGUS".to_string(), "5".to_string()),
        ]
        .into();
        assert_eq!(exit_action_in(&actions, 2), Some(ExitAction::Complete));
        assert_eq!(exit_action_in(&actions, 3), Some(ExitAction::Complete));
        assert_eq!(exit_action_in(&actions, 137), Some(ExitAction::Reschedule));
        assert_eq!(exit_action_in(&actions, 5), None);
    }
}
