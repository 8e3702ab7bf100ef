//! A group's objects in the cluster: created in OSMO's order, deleted by
//! label selector. Kubernetes calls only; which tasks and groups exist is
//! the caller's business (see `tracking`).
//!
//! Invariants:
//! - Objects are found by labels only: cancel deletes the group's pods, gang,
//!   Service and Secrets by `osmo.workflow_id`+`osmo.group_name`; cleanup
//!   after the group's last task finished does the same by
//!   `osmo.workflow_uuid`+`osmo.group_uuid`.
//! - Creating an object that already exists (a re-dispatch, or a retried
//!   create that landed) keeps it; a transient failure is tried again.
//! - Deleting never fails its caller: failures are logged, and a later
//!   cleanup or cancel deletes what is left.

use crate::operator::kubernetes::config::{KubernetesConfig, SchedulerSettings};
use crate::operator::kubernetes::error::{is_conflict, is_not_found, KubeError};
use crate::operator::kubernetes::manifests::GroupManifests;
use crate::operator::kubernetes::retry;
use crate::operator::kubernetes::scheduler;
use crate::operator::kubernetes::topology;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};

/// Creates the group's objects in OSMO's order; an object that already
/// exists (a re-dispatch) is kept.
pub(super) async fn create(
    config: &KubernetesConfig,
    pods: &Api<Pod>,
    built: GroupManifests,
) -> Result<(), KubeError> {
    let client = &config.client;
    let namespace = &config.namespace;
    let post = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for secret in &built.secrets {
        let name = secret.metadata.name.clone().unwrap_or_default();
        tolerate_conflict(
            retry::transient("create a Secret", || secrets.create(&post, secret)).await,
        )
        .map_err(|error| KubeError::api("create", "Secret", &name, error))?;
    }
    if let Some(topology) = &built.topology {
        ensure_topology(client, topology).await?;
    }
    if let Some(gang) = &built.gang {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &gang.resource);
        let name = gang.object.metadata.name.clone().unwrap_or_default();
        tolerate_conflict(
            retry::transient("create a PodGroup", || api.create(&post, &gang.object)).await,
        )
        .map_err(|error| KubeError::api("create", "PodGroup", &name, error))?;
    }
    for (_, pod) in &built.pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        tolerate_conflict(retry::transient("create a Pod", || pods.create(&post, pod)).await)
            .map_err(|error| KubeError::api("create", "Pod", &name, error))?;
    }
    if let Some(service) = &built.service {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let name = service.metadata.name.clone().unwrap_or_default();
        tolerate_conflict(
            retry::transient("create a Service", || services.create(&post, service)).await,
        )
        .map_err(|error| KubeError::api("create", "Service", &name, error))?;
    }
    Ok(())
}

/// Makes the pool's `Topology` what `wanted` says: created when missing,
/// kept when its levels match, else deleted and created again (KAI's
/// levels are immutable; OSMO replaces it the same way). Groups of the
/// pool share it, so it is never deleted with a group.
async fn ensure_topology(client: &kube::Client, wanted: &DynamicObject) -> Result<(), KubeError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &topology::topology_resource());
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let create = || async {
        tolerate_conflict(api.create(&PostParams::default(), wanted).await)
            .map_err(|error| KubeError::api("create", "Topology", &name, error))
    };
    match api.get(&name).await {
        Ok(existing) if topology::levels_of(&existing) == topology::levels_of(wanted) => Ok(()),
        Ok(_) => {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(KubeError::api("delete", "Topology", &name, error)),
            }
            create().await
        }
        Err(error) if is_not_found(&error) => create().await,
        Err(error) => Err(KubeError::api("get", "Topology", &name, error)),
    }
}

/// Deletes every object of a group by label selector: the PodGroups of
/// this executor's scheduler and of `scheduler` (the group's own, when
/// known). Failures are logged: a later cleanup or cancel deletes what
/// is left.
pub(super) async fn delete(
    config: &KubernetesConfig,
    pods: &Api<Pod>,
    selector: &str,
    scheduler: Option<&SchedulerSettings>,
) {
    let client = &config.client;
    let namespace = &config.namespace;
    let list = ListParams::default().labels(selector);
    let delete = DeleteParams::background();
    if let Err(error) = pods.delete_collection(&delete, &list).await {
        tracing::warn!(%selector, %error, "cannot delete the group's pods");
    }
    let mut gang_kinds: Vec<ApiResource> = Vec::new();
    for settings in std::iter::once(&config.scheduler).chain(scheduler) {
        if let Some(resource) = scheduler::pod_group_resource(settings) {
            if !gang_kinds.iter().any(|kind| kind.group == resource.group) {
                gang_kinds.push(resource);
            }
        }
    }
    for resource in &gang_kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
        if let Err(error) = api.delete_collection(&delete, &list).await {
            tracing::warn!(%selector, %error, "cannot delete the group's PodGroup");
        }
    }
    // Services have no delete-collection on older clusters: one by one.
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    match services.list(&list).await {
        Ok(found) => {
            for service in found.items {
                let name = service.metadata.name.unwrap_or_default();
                if let Err(error) = services.delete(&name, &delete).await {
                    tracing::warn!(%name, %error, "cannot delete the group's Service");
                }
            }
        }
        Err(error) => tracing::warn!(%selector, %error, "cannot list the group's Services"),
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = secrets.delete_collection(&delete, &list).await {
        tracing::warn!(%selector, %error, "cannot delete the group's Secrets");
    }
}

/// A conflict means the object exists already: a re-dispatch keeps it.
fn tolerate_conflict<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_conflict(&error) => Ok(()),
        Err(error) => Err(error),
    }
}
