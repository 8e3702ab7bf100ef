//! Names, labels and selectors of the Kubernetes objects of a group.
//!
//! Invariants:
//! - Every object of a group carries the group labels (`osmo.workflow_id`,
//!   `osmo.workflow_uuid`, `osmo.group_name`, `osmo.group_uuid`, …), so
//!   cancel and cleanup find all of them by label selector alone.
//! - Label values are valid Kubernetes label values: a value that is not
//!   is mapped deterministically ([`label_value`]), so the selector built
//!   from the same input always matches the labels written from it.
//! - The exact workflow ID, task name and retry of a pod are kept in
//!   annotations, so a task key read back from a pod is never a lossy copy.

use crate::protocol::task_host::{
    dns_label, kubernetes_group_subdomain, kubernetes_pod_name, kubernetes_task_host, prefix,
    sha256_hex, short_hash,
};
use crate::protocol::{GroupLaunch, TaskLaunch};
use gantry_storage::{Priority, TaskKey};
use std::collections::BTreeMap;

pub const LABEL_WORKFLOW_ID: &str = "osmo.workflow_id";
pub const LABEL_WORKFLOW_UUID: &str = "osmo.workflow_uuid";
pub const LABEL_GROUP_NAME: &str = "osmo.group_name";
pub const LABEL_GROUP_UUID: &str = "osmo.group_uuid";
pub const LABEL_SUBMITTED_BY: &str = "osmo.submitted_by";
pub const LABEL_TASK_NAME: &str = "osmo.task_name";
pub const LABEL_TASK_UUID: &str = "osmo.task_uuid";
pub const LABEL_RETRY_ID: &str = "osmo.retry_id";
pub const LABEL_LEAD: &str = "osmo.lead_container";
pub const LABEL_POOL: &str = "osmo.pool";
pub const LABEL_PLATFORM: &str = "osmo.platform";
pub const LABEL_PRIORITY: &str = "osmo.priority";
pub const LABEL_NAMESPACE: &str = "osmo.namespace";
pub const LABEL_KAI_QUEUE: &str = "kai.scheduler/queue";
pub const LABEL_RUNAI_QUEUE: &str = "runai/queue";

/// KAI reads the pod group of a pod from this annotation.
pub const ANNOTATION_POD_GROUP: &str = "pod-group-name";
/// Volcano reads the pod group of a pod from this annotation.
pub const ANNOTATION_VOLCANO_GROUP: &str = "scheduling.k8s.io/group-name";
/// The co-scheduling plugin of scheduler-plugins reads this label.
pub const LABEL_COSCHEDULING_GROUP: &str = "scheduling.x-k8s.io/pod-group";

/// The selector every executor-managed pod matches.
pub const MANAGED_SELECTOR: &str = LABEL_TASK_UUID;

/// Identity of a group as the executor names its objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupNames {
    pub workflow_id: String,
    pub workflow_uuid: String,
    pub group: String,
    pub group_uuid: String,
    pub submitted_by: String,
    pub pool: String,
    pub priority: Priority,
}

impl GroupNames {
    /// Names for `group`; missing UUIDs (from an older server) are derived
    /// from the names, so they are still stable across re-dispatches.
    pub fn of(group: &GroupLaunch) -> GroupNames {
        let meta = &group.meta;
        GroupNames {
            workflow_id: group.workflow_id.clone(),
            workflow_uuid: or_derived(&meta.workflow_uuid, &[&group.workflow_id]),
            group: group.group.clone(),
            group_uuid: or_derived(&meta.group_uuid, &[&group.workflow_id, &group.group]),
            submitted_by: meta.submitted_by.clone(),
            pool: meta.pool.clone(),
            priority: meta.priority.unwrap_or(Priority::Normal),
        }
    }

    /// Labels every object of the group carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            labels.insert(key.to_string(), label_value(value));
        };
        put(LABEL_WORKFLOW_ID, &self.workflow_id);
        put(LABEL_WORKFLOW_UUID, &self.workflow_uuid);
        put(LABEL_GROUP_NAME, &self.group);
        put(LABEL_GROUP_UUID, &self.group_uuid);
        put(LABEL_SUBMITTED_BY, &self.submitted_by);
        put(LABEL_POOL, &self.pool);
        put(LABEL_PRIORITY, self.priority.as_str());
        labels
    }

    /// OSMO's cleanup selector: the workflow and group UUIDs.
    pub fn cleanup_selector(&self) -> String {
        format!(
            "{LABEL_WORKFLOW_UUID}={},{LABEL_GROUP_UUID}={}",
            label_value(&self.workflow_uuid),
            label_value(&self.group_uuid)
        )
    }

    /// The PodGroup's name (OSMO: the group UUID).
    pub fn pod_group(&self) -> String {
        dns_label(&self.group_uuid)
    }

    /// The headless Service's name, which is also every pod's `subdomain`.
    pub fn subdomain(&self) -> String {
        kubernetes_group_subdomain(&self.group_uuid)
    }

    /// Name of the Secret holding one file of the group.
    pub fn file_secret(&self, contents_sha256_hex: &str) -> String {
        format!(
            "osmo-{}-{}",
            prefix(&dns_label(&self.group_uuid), 16),
            prefix(contents_sha256_hex, 32)
        )
    }

    /// Name of the Secret holding the values of the group's `credentials:`
    /// (OSMO's name).
    pub fn user_secrets(&self) -> String {
        format!("{}-user-secrets", dns_label(&self.group_uuid))
    }

    /// Name of the group's image pull Secret of the user's registry
    /// credentials (OSMO's name).
    pub fn user_pull_secret(&self) -> String {
        format!("{}-user", dns_label(&self.group_uuid))
    }

    /// The KAI (or Volcano) queue of the group's pool.
    pub fn queue(&self, namespace: &str) -> String {
        pool_queue(namespace, &self.pool)
    }
}

/// Selector for the objects of a group named by workflow ID and group name
/// (what a cancel message carries).
pub fn group_name_selector(workflow_id: &str, group: &str) -> String {
    format!(
        "{LABEL_WORKFLOW_ID}={},{LABEL_GROUP_NAME}={}",
        label_value(workflow_id),
        label_value(group)
    )
}

/// `osmo-pool-<namespace>-<pool>`, OSMO's per-pool queue name.
pub fn pool_queue(namespace: &str, pool: &str) -> String {
    dns_label(&format!("osmo-pool-{namespace}-{pool}"))
}

/// `osmo-pool-<namespace>-<pool>-topology`, KAI's `Topology` of a pool
/// with topology keys (cluster-scoped, so named by namespace too).
pub fn pool_topology(namespace: &str, pool: &str) -> String {
    dns_label(&format!("osmo-pool-{namespace}-{pool}-topology"))
}

/// `osmo-default-<namespace>`, the parent of every pool queue.
pub fn parent_queue(namespace: &str) -> String {
    dns_label(&format!("osmo-default-{namespace}"))
}

/// `osmo-high|normal|low`.
pub fn priority_class(priority: Priority) -> String {
    format!("osmo-{}", priority.as_str().to_ascii_lowercase())
}

/// The task UUID of `task`, derived from its key when the server sent none.
pub fn task_uuid(task: &TaskLaunch) -> String {
    or_derived(
        &task.placement.task_uuid,
        &[
            &task.key.workflow_id,
            &task.key.task,
            &task.key.retry_id.to_string(),
        ],
    )
}

/// Pod name: `<workflow_uuid[:16]>-<task_uuid[:16]>`, as OSMO names pods.
pub fn pod_name(group: &GroupNames, task_uuid: &str) -> String {
    kubernetes_pod_name(&group.workflow_uuid, task_uuid)
}

/// The host name of a task inside its group: `<task_uuid>.<subdomain>`,
/// resolved by the headless Service (`.<namespace>.svc.cluster.local` is
/// implied by the pod's DNS search path).
pub fn task_host(group: &GroupNames, task_uuid: &str) -> String {
    kubernetes_task_host(&group.group_uuid, task_uuid)
}

/// The user container's name: the task name as a DNS label.
pub fn container_name(task: &str) -> String {
    dns_label(task)
}

/// Labels of one task's pod on top of the group labels.
pub fn task_labels(task: &TaskLaunch, task_uuid: &str) -> Vec<(String, String)> {
    let mut labels = vec![
        (LABEL_TASK_NAME.to_string(), label_value(&task.key.task)),
        (LABEL_TASK_UUID.to_string(), label_value(task_uuid)),
        (LABEL_RETRY_ID.to_string(), task.key.retry_id.to_string()),
    ];
    if task.lead {
        labels.push((LABEL_LEAD.to_string(), "true".to_string()));
    }
    if let Some(platform) = &task.placement.platform {
        labels.push((LABEL_PLATFORM.to_string(), label_value(platform)));
    }
    labels
}

/// Annotations with the exact (unsanitized) task key.
pub fn key_annotations(key: &TaskKey) -> Vec<(String, String)> {
    vec![
        (LABEL_WORKFLOW_ID.to_string(), key.workflow_id.clone()),
        (LABEL_TASK_NAME.to_string(), key.task.clone()),
        (LABEL_RETRY_ID.to_string(), key.retry_id.to_string()),
    ]
}

/// The task key a pod was created for, read from its annotations.
pub fn key_of(annotations: Option<&BTreeMap<String, String>>) -> Option<TaskKey> {
    let annotations = annotations?;
    Some(TaskKey {
        workflow_id: annotations.get(LABEL_WORKFLOW_ID)?.clone(),
        task: annotations.get(LABEL_TASK_NAME)?.clone(),
        retry_id: annotations.get(LABEL_RETRY_ID)?.parse().ok()?,
    })
}

/// A valid label value for `value`: unchanged when already valid, else
/// invalid characters become `-`, ends are trimmed to alphanumerics, and a
/// value still too long is cut and suffixed with a hash of the original.
pub fn label_value(value: &str) -> String {
    const MAX: usize = 63;
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let is_valid = value.len() <= MAX
        && value.chars().all(valid_char)
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric());
    if is_valid {
        return value.to_string();
    }
    let replaced: String = value
        .chars()
        .map(|c| if valid_char(c) { c } else { '-' })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = short_hash(value);
    let head = prefix(trimmed, MAX - hash.len() - 1);
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// `value`, or a UUID-shaped hex string derived from `parts` when empty.
fn or_derived(value: &str, parts: &[&str]) -> String {
    if !value.is_empty() {
        return value.to_string();
    }
    let hex = sha256_hex(parts.join("\u{0}").as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid_and_stable() {
        assert_eq!(label_value("train-3"), "train-3");
        assert_eq!(label_value(""), "");
        let email = label_value("alice@example.com");
        assert!(email.starts_with("alice-example.com-"), "{email}");
        assert_eq!(email, label_value("alice@example.com"));
        let long = "a".repeat(80);
        let mapped = label_value(&long);
        assert!(mapped.len() <= 63);
        assert_ne!(mapped, label_value(&"a".repeat(81)));
    }
}
