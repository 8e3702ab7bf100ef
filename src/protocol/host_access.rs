//! A task's access to its host — the spec's `privileged`, `hostNetwork` and
//! `volumeMounts` — as one pod template, the last of the task's launch.
//!
//! Invariants: the settings travel as a pod template, not as fields of
//! their own, so the frames of the operator stream keep their shape (a
//! field added to a launch would break format 1's positional encoding);
//! the template names the task's container by `{{USER_CONTAINER_NAME}}`,
//! which both executors resolve; only a platform that allows each setting
//! lets it reach a launch (the dispatcher checks before it appends this).
//! On Kubernetes it becomes the pod's `hostNetwork`, the container's
//! `securityContext.privileged` and `hostPath` volumes `host-mount-<i>`,
//! as OSMO sets them; the local executor reads `spec.hostNetwork` as any
//! pod template's and is refused the rest before launch.

use serde_json::{json, Map, Value};

/// The template for these settings, or `None` when the task asks for none.
/// `mounts` are `/src` or `/src:/dst` (the spec's form, already checked).
pub fn pod_template(privileged: bool, host_network: bool, mounts: &[String]) -> Option<Value> {
    if !privileged && !host_network && mounts.is_empty() {
        return None;
    }
    let mut spec = Map::new();
    if host_network {
        spec.insert("hostNetwork".into(), json!(true));
    }
    let mut container = Map::new();
    container.insert("name".into(), json!("{{USER_CONTAINER_NAME}}"));
    if privileged {
        container.insert("securityContext".into(), json!({"privileged": true}));
    }
    if !mounts.is_empty() {
        let mut volumes = Vec::with_capacity(mounts.len());
        let mut volume_mounts = Vec::with_capacity(mounts.len());
        for (index, mount) in mounts.iter().enumerate() {
            let (source, target) = mount.split_once(':').unwrap_or((mount, mount));
            let name = format!("host-mount-{index}");
            volumes.push(json!({"name": name, "hostPath": {"path": source}}));
            volume_mounts.push(json!({"name": name, "mountPath": target}));
        }
        container.insert("volumeMounts".into(), Value::Array(volume_mounts));
        spec.insert("volumes".into(), Value::Array(volumes));
    }
    if container.len() > 1 {
        spec.insert("containers".into(), json!([container]));
    }
    Some(json!({ "spec": spec }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_is_no_template() {
        assert_eq!(pod_template(false, false, &[]), None);
    }

    #[test]
    fn each_setting_lands_where_a_pod_has_it() {
        assert_eq!(
            pod_template(false, true, &[]),
            Some(json!({"spec": {"hostNetwork": true}}))
        );
        assert_eq!(
            pod_template(
                true,
                false,
                &["/data".into(), "/scratch:/mnt/scratch".into()]
            ),
            Some(json!({"spec": {
                "containers": [{
                    "name": "{{USER_CONTAINER_NAME}}",
                    "securityContext": {"privileged": true},
                    "volumeMounts": [
                        {"name": "host-mount-0", "mountPath": "/data"},
                        {"name": "host-mount-1", "mountPath": "/mnt/scratch"},
                    ],
                }],
                "volumes": [
                    {"name": "host-mount-0", "hostPath": {"path": "/data"}},
                    {"name": "host-mount-1", "hostPath": {"path": "/scratch"}},
                ],
            }}))
        );
    }
}
