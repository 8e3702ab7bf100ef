//! A workflow's plan extras: what its tasks need beyond the [`TaskPlan`]
//! (periodic checkpoints, topology requirements), kept as JSON so they
//! can grow.
//!
//! Why apart from the plan: task plans are stored and logged as bincode,
//! which is positional, so a field added to [`TaskPlan`] would misread
//! every row and log entry written before it. Extras travel in
//! [`crate::Command::SubmitWorkflowWithExtras`] and are stored in table
//! `workflow_extras` as the proposer's JSON text, exactly as sent: a field
//! a member's build does not know is kept (not dropped by re-encoding), so
//! members of two builds store the same bytes, and a later build reads it.
//!
//! Invariants: a stored text parses as [`WorkflowExtras`]; a workflow
//! without extras has no row; every field has a default, so a text written
//! by an older build reads with the newer fields empty.
//!
//! [`TaskPlan`]: crate::plan::TaskPlan

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest extras text a submit may carry, in bytes.
pub const EXTRAS_BYTES_MAX: usize = 1 << 20;

/// The extras of one workflow, by task name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowExtras {
    /// Only tasks that have any.
    pub tasks: BTreeMap<String, TaskExtras>,
}

/// What one task needs beyond its plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskExtras {
    /// OSMO's `checkpoint`: directories uploaded while the task runs.
    pub checkpoints: Vec<CheckpointPlan>,
    /// OSMO's `resources.<r>.topology` of the task's resource: where it
    /// runs relative to its group's other tasks, coarsest level first once
    /// launched. Left out when empty, so extras without it encode as an
    /// older build wrote them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology: Vec<TopologyRequirement>,
    /// Set at launch only, on a task with `topology`: the pool's topology
    /// levels (node labels, coarsest first) as the pool's `topology_keys`
    /// are then, which the scheduler's topology object lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology_levels: Vec<String>,
    /// Set at launch only, never stored (a stored or proposed text with
    /// them is refused): the task's `credentials:`, opened, for its
    /// operator to deliver.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<LaunchCredential>,
    /// Set at launch only, never stored: the user's registry credentials
    /// that cover the task's image, most specific first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_auths: Vec<RegistryAuth>,
    /// Set at launch only, never stored: the user's DATA credentials that
    /// cover the task's URLs (inputs, outputs, checkpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_credentials: Vec<UserDataCredential>,
}

/// A user's DATA credential as launched: the store it opens and its keys.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserDataCredential {
    /// `s3://bucket[/prefix]`: the URLs it covers.
    pub endpoint: String,
    pub region: Option<String>,
    pub override_url: Option<String>,
    pub path_style: bool,
    pub access_key_id: String,
    pub access_key: String,
}

impl std::fmt::Debug for UserDataCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDataCredential")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl UserDataCredential {
    /// Whether `url` is at or below this credential's endpoint.
    pub fn covers(&self, url: &str) -> bool {
        let root = self.endpoint.trim_end_matches('/');
        url.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// One entry of a task's `credentials:` as launched: where its values go
/// and the values themselves (only those the task uses).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LaunchCredential {
    /// The user's credential name.
    pub name: String,
    /// `name: /dir`: every key a file under this directory.
    pub mount: Option<String>,
    /// `name: {ENV: key}`: environment variable → key.
    pub env: BTreeMap<String, String>,
    /// Key → value.
    pub values: BTreeMap<String, String>,
}

/// A registry credential as launched, for image pulls.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryAuth {
    /// The registry scope it covers (`nvcr.io`, `ghcr.io/team`).
    pub scope: String,
    pub username: String,
    pub password: String,
}

// Values never reach a log through `Debug`.
impl std::fmt::Debug for LaunchCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchCredential")
            .field("name", &self.name)
            .field("mount", &self.mount)
            .field("env", &self.env)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("scope", &self.scope)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One entry of a resource's `topology`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopologyRequirement {
    /// One of the pool's `topology_keys[].key`.
    pub key: String,
    /// Tasks naming the same group (under the same groups of the coarser
    /// levels) share one domain of this level: OSMO's default is
    /// `default`, so all of them.
    pub group: String,
    /// `requirementType: required` (the default): the scheduler must;
    /// `preferred`: it tries.
    pub required: bool,
    /// Set at launch only: the node label the pool gives `key`.
    pub label: String,
}

impl Default for TopologyRequirement {
    fn default() -> Self {
        TopologyRequirement {
            key: String::new(),
            group: "default".into(),
            required: true,
            label: String::new(),
        }
    }
}

/// One `checkpoint` entry of a task, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointPlan {
    /// Absolute path in the task's file system (OSMO puts a `/` before a
    /// relative one).
    pub path: String,
    /// Where the directory's files go; special tokens are substituted at
    /// launch.
    pub url: String,
    /// Seconds from the end of one upload to the start of the next.
    pub frequency_seconds: u64,
    /// Only files whose path below `path` matches are uploaded.
    pub regex: Option<String>,
}

impl TaskExtras {
    /// The spec fields that gave these extras.
    pub fn features(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if !self.checkpoints.is_empty() {
            names.push("checkpoint");
        }
        if !self.topology.is_empty() {
            names.push("topology");
        }
        if self.has_secrets() {
            names.push("credentials");
        }
        names
    }

    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty()
            && self.topology.is_empty()
            && self.topology_levels.is_empty()
            && !self.has_secrets()
    }

    /// Whether launch-only secret values are set.
    pub fn has_secrets(&self) -> bool {
        !self.credentials.is_empty()
            || !self.registry_auths.is_empty()
            || !self.data_credentials.is_empty()
    }
}

impl WorkflowExtras {
    pub fn is_empty(&self) -> bool {
        self.tasks.values().all(TaskExtras::is_empty)
    }

    /// The spec fields that gave these extras, for messages
    /// (`checkpoint and topology`).
    pub fn feature_names(&self) -> String {
        let mut names: Vec<&str> = self.tasks.values().flat_map(TaskExtras::features).collect();
        names.sort_unstable();
        names.dedup();
        names.join(" and ")
    }

    /// The JSON text a submit carries.
    pub fn to_text(&self) -> String {
        // Strings, numbers and maps with string keys: always encodable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored or proposed text.
    pub fn from_text(text: &str) -> Result<WorkflowExtras, String> {
        if text.len() > EXTRAS_BYTES_MAX {
            return Err(format!(
                "plan extras of {} bytes are larger than the limit of {EXTRAS_BYTES_MAX}",
                text.len()
            ));
        }
        let extras: WorkflowExtras = serde_json::from_str(text)
            .map_err(|error| format!("malformed plan extras: {error}"))?;
        // Credentials are opened at launch and must never be stored.
        if extras.tasks.values().any(TaskExtras::has_secrets) {
            return Err("plan extras must not carry credential values".into());
        }
        Ok(extras)
    }

    /// The extras of the tasks `keep` names (a restart's kept tasks).
    pub fn retain_tasks(&mut self, keep: impl Fn(&str) -> bool) {
        self.tasks.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_with_fields_of_a_newer_build_reads_and_one_of_an_older_build_takes_defaults() {
        let newer = r#"{"tasks":{"train":{"checkpoints":[{"path":"/ckpt","url":"s3://b/c","frequency_seconds":60,"regex":null,"compress":true}],"topology":[]}},"future":1}"#;
        let extras = WorkflowExtras::from_text(newer).unwrap();
        assert_eq!(extras.tasks["train"].checkpoints[0].frequency_seconds, 60);
        let older = r#"{"tasks":{"train":{}}}"#;
        assert!(WorkflowExtras::from_text(older).unwrap().is_empty());
    }

    #[test]
    fn malformed_or_oversized_texts_are_refused() {
        assert!(WorkflowExtras::from_text("{").is_err());
        assert!(WorkflowExtras::from_text(r#"{"tasks":[]}"#).is_err());
        let big = format!(
            r#"{{"tasks":{{}},"pad":"{}"}}"#,
            "x".repeat(EXTRAS_BYTES_MAX)
        );
        assert!(WorkflowExtras::from_text(&big)
            .unwrap_err()
            .contains("larger than the limit"));
    }
}
