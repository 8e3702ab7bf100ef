//! Per-pool queues and OSMO's priority classes (OSMO §3.6).
//!
//! Invariants:
//! - Idempotent: each object is read, then created if missing or replaced
//!   (keeping its resourceVersion) if present, so running it again after a
//!   pool change converges.
//! - KAI: a parent queue `osmo-default-<ns>` (no quota) and per pool
//!   `osmo-pool-<ns>-<pool>` with the pool's GPU guarantee, maximum and
//!   weight; CPU and memory are unlimited. Volcano: one queue per pool with
//!   the pool's weight. `default` has no queues.
//! - PriorityClasses `osmo-high` 125, `osmo-normal` 100, `osmo-low` 50.

use super::config::{PoolQueue, SchedulerType};
use super::error::{is_conflict, is_not_found, KubeError};
use super::names::{self, LABEL_NAMESPACE};
use super::retry;
use gantry_storage::Priority;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

pub fn kai_queue_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.run.ai", "v2", "Queue"),
        "queues",
    )
}

pub fn volcano_queue_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.volcano.sh", "v1beta1", "Queue"),
        "queues",
    )
}

/// The queue objects for `pools` under a scheduler type.
pub fn queue_objects(
    scheduler: SchedulerType,
    namespace: &str,
    pools: &[PoolQueue],
) -> Result<Vec<(ApiResource, DynamicObject)>, KubeError> {
    let labels = json!({LABEL_NAMESPACE: names::label_value(namespace)});
    let unlimited = json!({"quota": -1, "limit": -1, "overQuotaWeight": 1});
    let mut objects = Vec::new();
    let mut push = |resource: &ApiResource, value: serde_json::Value| -> Result<(), KubeError> {
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|error| KubeError::invalid("Queue", error))?;
        objects.push((resource.clone(), object));
        Ok(())
    };
    match scheduler {
        SchedulerType::Kai => {
            let resource = kai_queue_resource();
            let parent = names::parent_queue(namespace);
            push(
                &resource,
                json!({
                    "apiVersion": resource.api_version, "kind": resource.kind,
                    "metadata": {"name": parent, "labels": labels},
                    "spec": {"resources": {"gpu": unlimited, "cpu": unlimited, "memory": unlimited}},
                }),
            )?;
            for pool in pools {
                push(
                    &resource,
                    json!({
                        "apiVersion": resource.api_version, "kind": resource.kind,
                        "metadata": {"name": names::pool_queue(namespace, &pool.pool), "labels": labels},
                        "spec": {
                            "parentQueue": parent,
                            "resources": {
                                "gpu": {
                                    "quota": pool.gpu_guarantee,
                                    "limit": pool.gpu_maximum,
                                    "overQuotaWeight": pool.gpu_weight,
                                },
                                "cpu": unlimited,
                                "memory": unlimited,
                            },
                        },
                    }),
                )?;
            }
        }
        SchedulerType::Volcano => {
            let resource = volcano_queue_resource();
            for pool in pools {
                push(
                    &resource,
                    json!({
                        "apiVersion": resource.api_version, "kind": resource.kind,
                        "metadata": {"name": names::pool_queue(namespace, &pool.pool), "labels": labels},
                        "spec": {"weight": pool.gpu_weight.max(1), "reclaimable": true},
                    }),
                )?;
            }
        }
        SchedulerType::Default => {}
    }
    Ok(objects)
}

pub fn priority_classes() -> Vec<PriorityClass> {
    [
        (Priority::High, 125, "OSMO HIGH priority: not preemptible"),
        (
            Priority::Normal,
            100,
            "OSMO NORMAL priority: not preemptible",
        ),
        (Priority::Low, 50, "OSMO LOW priority: preemptible"),
    ]
    .into_iter()
    .map(|(priority, value, description)| PriorityClass {
        metadata: kube::api::ObjectMeta {
            name: Some(names::priority_class(priority)),
            ..Default::default()
        },
        value,
        description: Some(description.to_string()),
        global_default: Some(false),
        ..Default::default()
    })
    .collect()
}

/// Creates or replaces the queues of `pools` and the priority classes.
pub async fn sync(
    client: &kube::Client,
    scheduler: SchedulerType,
    namespace: &str,
    pools: &[PoolQueue],
) -> Result<(), KubeError> {
    for (resource, object) in queue_objects(scheduler, namespace, pools)? {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        upsert(&api, object, "Queue").await?;
    }
    if scheduler != SchedulerType::Default {
        let api: Api<PriorityClass> = Api::all(client.clone());
        for class in priority_classes() {
            upsert(&api, class, "PriorityClass").await?;
        }
    }
    Ok(())
}

async fn upsert<K>(api: &Api<K>, mut object: K, kind: &'static str) -> Result<(), KubeError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    // A replace names the version it read: one that lost a race with
    // another writer (409) reads again and replaces again.
    let post = PostParams::default();
    let mut attempt = 1;
    loop {
        let replaced = match retry::transient("read a queue object", || api.get(&name)).await {
            Ok(existing) => {
                object.meta_mut().resource_version = existing.meta().resource_version.clone();
                retry::transient("replace a queue object", || {
                    api.replace(&name, &post, &object)
                })
                .await
                .map(|_| ())
                .map_err(|error| ("replace", error))
            }
            Err(error) if is_not_found(&error) => {
                retry::transient("create a queue object", || api.create(&post, &object))
                    .await
                    .map(|_| ())
                    .map_err(|error| ("create", error))
            }
            Err(error) => Err(("get", error)),
        };
        match replaced {
            Err((_, error)) if is_conflict(&error) && attempt < retry::ATTEMPTS => attempt += 1,
            Err((action, error)) => return Err(KubeError::api(action, kind, &name, error)),
            Ok(()) => return Ok(()),
        }
    }
}
