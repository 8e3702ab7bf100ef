//! Task host names: how the tasks of a group reach each other on the
//! Kubernetes executor. The server writes them into a launch when it
//! substitutes `{{host:<task>}}`; the executor makes them resolve (each
//! pod's hostname, under the subdomain of the group's headless Service).
//!
//! Invariants: both sides compute a name with these functions only, so the
//! name a task is given always resolves; every label is a DNS-1123 label
//! (lower case, `[a-z0-9-]`, at most 63 characters, alphanumeric at both
//! ends), mapped deterministically when the input is not one.

use sha2::{Digest, Sha256};

/// `<task label>.<group subdomain>` of a task on the Kubernetes executor.
pub fn kubernetes_task_host(group_uuid: &str, task_uuid: &str) -> String {
    format!(
        "{}.{}",
        dns_label(task_uuid),
        kubernetes_group_subdomain(group_uuid)
    )
}

/// A task run's pod name on the Kubernetes executor, as OSMO names pods:
/// `<workflow_uuid[:16]>-<task_uuid[:16]>` (what the API reports as the
/// task's `pod_name`).
pub fn kubernetes_pod_name(workflow_uuid: &str, task_uuid: &str) -> String {
    let name = format!(
        "{}-{}",
        prefix(&dns_label(workflow_uuid), 16).trim_end_matches('-'),
        prefix(&dns_label(task_uuid), 16).trim_end_matches('-')
    );
    dns_label(&name)
}

/// The subdomain (headless Service name) of a group's pods.
pub fn kubernetes_group_subdomain(group_uuid: &str) -> String {
    // A Service name must start with a letter; a UUID may not.
    dns_label(&format!("osmo-{group_uuid}"))
}

/// A DNS-1123 label for `value`.
pub fn dns_label(value: &str) -> String {
    const MAX: usize = 63;
    let lowered: String = value
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = lowered.trim_matches('-');
    if trimmed.len() <= MAX && !trimmed.is_empty() {
        return trimmed.to_string();
    }
    let hash = short_hash(value);
    let head = prefix(trimmed, MAX - hash.len() - 1).trim_end_matches('-');
    if head.is_empty() {
        format!("x{hash}")
    } else {
        format!("{head}-{hash}")
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The first 8 hex digits of `value`'s SHA-256: what makes a shortened
/// name unique.
pub fn short_hash(value: &str) -> String {
    prefix(&sha256_hex(value.as_bytes()), 8).to_string()
}

/// The first `len` characters of `value` (all of it if shorter).
pub fn prefix(value: &str, len: usize) -> &str {
    match value.char_indices().nth(len) {
        Some((index, _)) => &value[..index],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert_eq!(dns_label("Train_Step"), "train-step");
        assert_eq!(dns_label("-x-"), "x");
        assert!(dns_label(&"b".repeat(100)).len() <= 63);
        assert!(dns_label("___").starts_with('x'));
    }

    #[test]
    fn a_task_host_is_its_label_under_the_group_subdomain() {
        assert_eq!(kubernetes_task_host("G1", "T_1"), "t-1.osmo-g1");
    }
}
