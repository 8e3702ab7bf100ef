//! Scheduler variants: the gang object each scheduler type needs for a
//! group, and what each pod carries to join it.
//!
//! Invariants:
//! - `kai`: one `scheduling.run.ai/v2alpha2` PodGroup (name = group UUID,
//!   `minMember` = task count, queue `osmo-pool-<ns>-<pool>`, priority class
//!   `osmo-<priority>`); pods carry the queue labels and `pod-group-name`.
//! - `volcano`: one `scheduling.volcano.sh/v1beta1` PodGroup with the same
//!   `minMember`, queue and priority class; pods carry
//!   `scheduling.k8s.io/group-name`.
//! - `default`: no gang object for one task; a larger group gets a
//!   scheduler-plugins `scheduling.x-k8s.io/v1alpha1` PodGroup when
//!   co-scheduling is on, and is refused otherwise (never half-started).

use super::config::{SchedulerSettings, SchedulerType};
use super::error::KubeError;
use super::names::{
    self, GroupNames, ANNOTATION_POD_GROUP, ANNOTATION_VOLCANO_GROUP, LABEL_COSCHEDULING_GROUP,
    LABEL_KAI_QUEUE, LABEL_RUNAI_QUEUE,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// KAI's PodGroup.
pub fn kai_pod_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.run.ai", "v2alpha2", "PodGroup"),
        "podgroups",
    )
}

/// Volcano's PodGroup.
pub fn volcano_pod_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.volcano.sh", "v1beta1", "PodGroup"),
        "podgroups",
    )
}

/// scheduler-plugins' co-scheduling PodGroup.
pub fn coscheduling_pod_group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        "podgroups",
    )
}

/// The PodGroup kind a scheduler setting uses, if any (for cleanup, which
/// must find gangs of any size).
pub fn pod_group_resource(settings: &SchedulerSettings) -> Option<ApiResource> {
    match settings.scheduler_type {
        SchedulerType::Kai => Some(kai_pod_group_resource()),
        SchedulerType::Volcano => Some(volcano_pod_group_resource()),
        SchedulerType::Default if settings.coscheduling => Some(coscheduling_pod_group_resource()),
        SchedulerType::Default => None,
    }
}

/// A gang object to create before the pods.
pub struct Gang {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

/// The gang object for a group of `task_count` tasks, or why the group
/// cannot run with these settings.
pub fn gang(
    settings: &SchedulerSettings,
    group: &GroupNames,
    namespace: &str,
    task_count: usize,
) -> Result<Option<Gang>, KubeError> {
    let labels = group.labels();
    let queue = group.queue(namespace);
    let name = group.pod_group();
    let priority_class = names::priority_class(group.priority);
    let (resource, spec, extra_labels) = match settings.scheduler_type {
        SchedulerType::Kai => (
            kai_pod_group_resource(),
            json!({
                "queue": queue,
                "priorityClassName": priority_class,
                "minMember": task_count,
            }),
            vec![
                (LABEL_KAI_QUEUE.to_string(), queue.clone()),
                (LABEL_RUNAI_QUEUE.to_string(), queue.clone()),
            ],
        ),
        SchedulerType::Volcano => (
            volcano_pod_group_resource(),
            json!({
                "queue": queue,
                "priorityClassName": priority_class,
                "minMember": task_count,
            }),
            Vec::new(),
        ),
        SchedulerType::Default if task_count <= 1 => return Ok(None),
        SchedulerType::Default if settings.coscheduling => (
            coscheduling_pod_group_resource(),
            json!({
                "minMember": task_count,
                "scheduleTimeoutSeconds": settings.scheduler_timeout_seconds,
            }),
            Vec::new(),
        ),
        SchedulerType::Default => {
            return Err(KubeError::Unschedulable(format!(
                "group '{}' has {task_count} tasks, but this backend uses scheduler_type \
                 'default', which cannot start a group's pods together; set scheduler_type \
                 to 'kai' or 'volcano', or install the co-scheduling plugin and enable it",
                group.group
            )))
        }
    };
    let mut all_labels = labels;
    all_labels.extend(extra_labels);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
        },
        "spec": spec,
    }))
    .map_err(|error| KubeError::invalid("PodGroup", error))?;
    Ok(Some(Gang { resource, object }))
}

/// Key-value pairs added to a pod's labels or annotations.
pub type Pairs = Vec<(String, String)>;

/// Labels and annotations a pod carries to join its group's gang.
pub fn pod_membership(
    settings: &SchedulerSettings,
    group: &GroupNames,
    namespace: &str,
    task_count: usize,
) -> (Pairs, Pairs) {
    let queue = group.queue(namespace);
    let pod_group = group.pod_group();
    match settings.scheduler_type {
        SchedulerType::Kai => (
            vec![
                (LABEL_KAI_QUEUE.to_string(), queue.clone()),
                (LABEL_RUNAI_QUEUE.to_string(), queue),
            ],
            vec![(ANNOTATION_POD_GROUP.to_string(), pod_group)],
        ),
        SchedulerType::Volcano => (
            Vec::new(),
            vec![(ANNOTATION_VOLCANO_GROUP.to_string(), pod_group)],
        ),
        SchedulerType::Default if settings.coscheduling && task_count > 1 => (
            vec![(LABEL_COSCHEDULING_GROUP.to_string(), pod_group)],
            Vec::new(),
        ),
        SchedulerType::Default => (Vec::new(), Vec::new()),
    }
}
