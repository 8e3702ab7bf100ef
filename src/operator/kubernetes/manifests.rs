//! Builds the Kubernetes objects of one group from its launch: Secrets for
//! files, for the tasks' `credentials:` (one Secret, keys `<credential>.<key>`,
//! read by `secretKeyRef` and mounted key by key as OSMO does) and for image
//! pulls (`kubernetes.io/dockerconfigjson` of the user's registry
//! credentials), the pool's KAI `Topology` (when tasks ask for topology),
//! the gang object, one Pod per task, and a headless Service.
//!
//! Invariants:
//! - Pure: no I/O; the same launch and settings give the same objects (so a
//!   re-dispatch creates the same names and meets 409s, not duplicates).
//! - Every object carries the group labels; each pod also carries its task
//!   labels and its exact task key in annotations. System labels and names
//!   are re-applied after pod templates are merged: templates cannot
//!   change how the executor finds its objects.
//! - The user command runs under `/osmo/bin/gantry task-runtime exec`, which
//!   the `osmo-init` init container installs from the runtime image, so any
//!   image works (see `super::task_runtime`).

use super::config::SchedulerSettings;
use super::config::SchedulerType;
use super::error::KubeError;
use super::names::{self, GroupNames, LABEL_GROUP_UUID};
use super::scheduler::{self, Gang};
use super::template;
use super::topology;
use crate::protocol::{GroupLaunch, TaskLaunch};
use base64::Engine;
use gantry_storage::TaskKey;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::DynamicObject;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Name of the init container that installs the runtime.
pub const INIT_CONTAINER: &str = "osmo-init";
/// Where the runtime binary lives inside every task container.
pub const RUNTIME_DIR: &str = "/osmo/bin";
pub const RUNTIME_BINARY: &str = "/osmo/bin/gantry";
/// Parent of `{{output}}` and `{{input:N}}` directories.
pub const DATA_DIR: &str = "/osmo/data";
/// The key of the single entry of a file Secret.
const FILE_KEY: &str = "file";
/// Files from the spec are readable and executable (scripts).
const FILE_MODE: i32 = 0o555;
/// Credential files are readable, whatever user the image runs as.
const CREDENTIAL_FILE_MODE: i32 = 0o444;
/// The pod volume of the group's credential Secret.
const CREDENTIALS_VOLUME: &str = "user-credentials";

/// What is fixed per backend when building a group.
pub struct BuildContext<'a> {
    pub namespace: &'a str,
    pub scheduler: &'a SchedulerSettings,
    pub runtime_image: &'a str,
}

/// The objects of one group, in creation order.
pub struct GroupManifests {
    pub secrets: Vec<Secret>,
    /// The pool's KAI `Topology`, when tasks ask for topology.
    pub topology: Option<DynamicObject>,
    pub gang: Option<Gang>,
    pub pods: Vec<(TaskKey, Pod)>,
    /// Only for groups of more than one task.
    pub service: Option<Service>,
}

pub fn build_group(
    ctx: &BuildContext<'_>,
    group: &GroupLaunch,
) -> Result<GroupManifests, KubeError> {
    let names = GroupNames::of(group);
    let task_count = group.tasks.len();
    let topology = topology::plan(group, ctx.namespace)?;
    if topology.is_some() && ctx.scheduler.scheduler_type != SchedulerType::Kai {
        return Err(KubeError::Unschedulable(format!(
            "group '{}' asks for topology (resources.topology), which only the kai scheduler places by; this backend uses scheduler_type '{}'",
            group.group,
            ctx.scheduler.scheduler_type.as_str()
        )));
    }
    let mut gang = scheduler::gang(ctx.scheduler, &names, ctx.namespace, task_count)?;
    if let (Some(plan), Some(gang)) = (&topology, &mut gang) {
        if let Some(spec) = gang
            .object
            .data
            .get_mut("spec")
            .and_then(Value::as_object_mut)
        {
            plan.apply_to_pod_group(spec);
        }
    }
    let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();
    let mut pods = Vec::with_capacity(task_count);
    for task in &group.tasks {
        let mut mounts = Vec::new();
        for file in &task.files {
            let secret_name =
                names.file_secret(&crate::protocol::task_host::sha256_hex(&file.contents));
            if !secrets.contains_key(&secret_name) {
                secrets.insert(
                    secret_name.clone(),
                    file_secret(ctx, &names, &secret_name, &file.contents)?,
                );
            }
            mounts.push((secret_name, file.path.clone()));
        }
        // The task's data description (with the store's credential) reaches
        // the runtime as a Secret file, never on the command line.
        if let Some(data) = &task.data {
            let runtime_data = super::task_runtime::RuntimeData {
                data: data.clone(),
                checkpoints: task.extras.checkpoints.clone(),
                user_stores: data.user_stores.clone(),
            };
            let contents = serde_json::to_vec(&runtime_data)
                .map_err(|error| KubeError::invalid("task data", error))?;
            let secret_name = names.file_secret(&crate::protocol::task_host::sha256_hex(&contents));
            if !secrets.contains_key(&secret_name) {
                secrets.insert(
                    secret_name.clone(),
                    file_secret(ctx, &names, &secret_name, &contents)?,
                );
            }
            mounts.push((secret_name, super::task_runtime::DATA_SPEC_PATH.to_string()));
        }
        let mut pod = build_pod(ctx, &names, task, task_count, &mounts)?;
        add_credentials(&mut pod, &names, task)?;
        if let Some(subgroup) = topology
            .as_ref()
            .and_then(|plan| plan.task_subgroups.get(&task.key.task))
        {
            pod.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(topology::LABEL_SUBGROUP.to_string(), subgroup.clone());
        }
        pods.push((task.key.clone(), pod));
    }
    if let Some(secret) = credentials_secret(ctx, &names, group)? {
        secrets.insert(names.user_secrets(), secret);
    }
    if let Some(secret) = pull_secret(ctx, &names, group)? {
        secrets.insert(names.user_pull_secret(), secret);
        for (_, pod) in &mut pods {
            if let Some(spec) = pod.spec.as_mut() {
                spec.image_pull_secrets.get_or_insert_with(Vec::new).push(
                    k8s_openapi::api::core::v1::LocalObjectReference {
                        name: names.user_pull_secret(),
                    },
                );
            }
        }
    }
    let service = if task_count > 1 {
        Some(headless_service(ctx, &names)?)
    } else {
        None
    };
    let topology = match &topology {
        Some(plan) => Some(plan.topology_object(ctx.namespace, &group.meta.pool)?),
        None => None,
    };
    Ok(GroupManifests {
        secrets: secrets.into_values().collect(),
        topology,
        gang,
        pods,
        service,
    })
}

fn file_secret(
    ctx: &BuildContext<'_>,
    names: &GroupNames,
    name: &str,
    contents: &[u8],
) -> Result<Secret, KubeError> {
    let mut data = Map::new();
    data.insert(
        FILE_KEY.to_string(),
        json!(base64::engine::general_purpose::STANDARD.encode(contents)),
    );
    secret(ctx, names, name, "Opaque", data)
}

/// A Secret of the group (its labels) with `data` (values base64).
fn secret(
    ctx: &BuildContext<'_>,
    names: &GroupNames,
    name: &str,
    kind: &str,
    data: Map<String, Value>,
) -> Result<Secret, KubeError> {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": names.labels()},
        "type": kind,
        "data": data,
    }))
    .map_err(|error| KubeError::invalid(format!("Secret {name}"), error))
}

/// The key of a credential's value in the group's credential Secret.
fn credential_key(credential: &str, key: &str) -> String {
    format!("{credential}.{key}")
}

/// One Secret with every credential value the group's tasks use.
fn credentials_secret(
    ctx: &BuildContext<'_>,
    names: &GroupNames,
    group: &GroupLaunch,
) -> Result<Option<Secret>, KubeError> {
    let mut data = Map::new();
    for task in &group.tasks {
        for credential in &task.extras.credentials {
            for (key, value) in &credential.values {
                data.insert(
                    credential_key(&credential.name, key),
                    json!(base64::engine::general_purpose::STANDARD.encode(value)),
                );
            }
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    secret(ctx, names, &names.user_secrets(), "Opaque", data).map(Some)
}

/// The Docker config of the group's registry credentials, keyed by scope
/// as OSMO writes it (the most specific first wins a pull).
fn pull_secret(
    ctx: &BuildContext<'_>,
    names: &GroupNames,
    group: &GroupLaunch,
) -> Result<Option<Secret>, KubeError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut auths = Map::new();
    for task in &group.tasks {
        for auth in &task.extras.registry_auths {
            auths.entry(auth.scope.clone()).or_insert_with(|| {
                json!({
                    "username": auth.username,
                    "password": auth.password,
                    "auth": engine.encode(format!("{}:{}", auth.username, auth.password)),
                })
            });
        }
    }
    if auths.is_empty() {
        return Ok(None);
    }
    let config = serde_json::to_vec(&json!({ "auths": auths }))
        .map_err(|error| KubeError::invalid("image pull secret", error))?;
    let mut data = Map::new();
    data.insert(
        ".dockerconfigjson".to_string(),
        json!(engine.encode(config)),
    );
    secret(
        ctx,
        names,
        &names.user_pull_secret(),
        "kubernetes.io/dockerconfigjson",
        data,
    )
    .map(Some)
}

/// The task's `credentials:` in its container: environment variables by
/// `secretKeyRef`, mounted keys as read-only files by `subPath`, all from
/// the group's credential Secret.
fn add_credentials(pod: &mut Pod, names: &GroupNames, task: &TaskLaunch) -> Result<(), KubeError> {
    use k8s_openapi::api::core::v1::{
        EnvVar, EnvVarSource, SecretKeySelector, Volume, VolumeMount,
    };
    if task.extras.credentials.is_empty() {
        return Ok(());
    }
    let secret = names.user_secrets();
    let container_name = names::container_name(&task.key.task);
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| KubeError::invalid("Pod", "has no spec"))?;
    let container = spec
        .containers
        .iter_mut()
        .find(|container| container.name == container_name)
        .ok_or_else(|| KubeError::invalid("Pod", "has no task container"))?;
    let mut mounted = false;
    for credential in &task.extras.credentials {
        for (variable, key) in &credential.env {
            let env = container.env.get_or_insert_with(Vec::new);
            // A credential's variable wins over the spec's of the same name.
            env.retain(|existing| existing.name != *variable);
            env.push(EnvVar {
                name: variable.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: credential_key(&credential.name, key),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
        if let Some(dir) = &credential.mount {
            for key in credential.values.keys() {
                mounted = true;
                container
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(VolumeMount {
                        name: CREDENTIALS_VOLUME.to_string(),
                        mount_path: format!("{}/{key}", dir.trim_end_matches('/')),
                        sub_path: Some(credential_key(&credential.name, key)),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    });
            }
        }
    }
    if mounted {
        let volume: Volume = serde_json::from_value(json!({
            "name": CREDENTIALS_VOLUME,
            "secret": {"secretName": secret, "defaultMode": CREDENTIAL_FILE_MODE},
        }))
        .map_err(|error| KubeError::invalid("credential volume", error))?;
        spec.volumes.get_or_insert_with(Vec::new).push(volume);
    }
    Ok(())
}

fn headless_service(ctx: &BuildContext<'_>, names: &GroupNames) -> Result<Service, KubeError> {
    let name = names.subdomain();
    let labels = names.labels();
    let group_uuid = labels.get(LABEL_GROUP_UUID).cloned().unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ctx.namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            // Tasks look each other up while starting, before they are ready.
            "publishNotReadyAddresses": true,
            "selector": {LABEL_GROUP_UUID: group_uuid},
        },
    }))
    .map_err(|error| KubeError::invalid(format!("Service {name}"), error))
}

fn build_pod(
    ctx: &BuildContext<'_>,
    names: &GroupNames,
    task: &TaskLaunch,
    task_count: usize,
    files: &[(String, String)],
) -> Result<Pod, KubeError> {
    let task_uuid = names::task_uuid(task);
    let pod_name = names::pod_name(names, &task_uuid);
    let container = names::container_name(&task.key.task);

    let mut labels = names.labels();
    labels.extend(names::task_labels(task, &task_uuid));
    let (gang_labels, gang_annotations) =
        scheduler::pod_membership(ctx.scheduler, names, ctx.namespace, task_count);
    labels.extend(gang_labels);
    // OSMO copies the platform's node selector into the pod labels too.
    for (key, value) in &task.placement.node_selector {
        labels
            .entry(key.clone())
            .or_insert_with(|| names::label_value(value));
    }
    let mut annotations: BTreeMap<String, String> =
        names::key_annotations(&task.key).into_iter().collect();
    annotations.extend(gang_annotations);

    let resources = &task.placement.resources;
    let mut quantities = Map::new();
    if let Some(cpu) = resources.cpu {
        quantities.insert("cpu".into(), json!(cpu.to_string()));
    }
    if let Some(memory) = resources.memory_bytes {
        quantities.insert("memory".into(), json!(quantity_bytes(memory)));
    }
    if let Some(storage) = resources.storage_bytes {
        quantities.insert("ephemeral-storage".into(), json!(quantity_bytes(storage)));
    }
    let gpus = resources.gpu.unwrap_or(0);
    if gpus > 0 {
        quantities.insert("nvidia.com/gpu".into(), json!(gpus.to_string()));
    }

    let mut env: Vec<Value> = task
        .environment
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    // Without GPUs, keep the NVIDIA runtime from exposing the node's GPUs.
    if gpus == 0 && !task.environment.contains_key("NVIDIA_VISIBLE_DEVICES") {
        env.push(json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": ""}));
    }

    let mut volume_mounts = vec![
        json!({"name": "osmo-bin", "mountPath": RUNTIME_DIR, "readOnly": true}),
        json!({"name": "osmo-data", "mountPath": DATA_DIR}),
    ];
    let mut volumes = vec![
        json!({"name": "osmo-bin", "emptyDir": {}}),
        json!({"name": "osmo-data", "emptyDir": {}}),
    ];
    for (index, (secret, path)) in files.iter().enumerate() {
        let volume = format!("file-{index}");
        volume_mounts.push(json!({
            "name": volume, "mountPath": path, "subPath": FILE_KEY, "readOnly": true,
        }));
        volumes.push(json!({
            "name": volume,
            "secret": {"secretName": secret, "defaultMode": FILE_MODE},
        }));
    }

    let mut args = vec![
        "task-runtime".to_string(),
        "exec".to_string(),
        "--inputs".to_string(),
        task.inputs.len().to_string(),
    ];
    if task.data.is_some() {
        args.extend([
            "--data".to_string(),
            super::task_runtime::DATA_SPEC_PATH.to_string(),
        ]);
    }
    args.push("--".to_string());
    args.extend(task.command.iter().cloned());
    args.extend(task.args.iter().cloned());

    let mut spec = json!({
        "schedulerName": ctx.scheduler.scheduler_name,
        "restartPolicy": "Never",
        "initContainers": [{
            "name": INIT_CONTAINER,
            "image": ctx.runtime_image,
            "command": ["gantry", "task-runtime", "install", "--to", RUNTIME_DIR],
            "volumeMounts": [{"name": "osmo-bin", "mountPath": RUNTIME_DIR}],
            "resources": {
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            },
        }],
        "containers": [{
            "name": container,
            "image": task.image,
            "command": [RUNTIME_BINARY],
            "args": args,
            "env": env,
            "resources": {"requests": quantities.clone(), "limits": quantities},
            "volumeMounts": volume_mounts,
        }],
        "volumes": volumes,
    });
    if task_count > 1 {
        spec["hostname"] = json!(crate::protocol::task_host::dns_label(&task_uuid));
        spec["subdomain"] = json!(names.subdomain());
    }
    if !task.placement.node_selector.is_empty() {
        spec["nodeSelector"] = json!(task.placement.node_selector);
    }
    if !task.placement.tolerations.is_empty() {
        spec["tolerations"] = json!(task.placement.tolerations);
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": ctx.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    });

    if !task.placement.pod_templates.is_empty() {
        let variables = template_variables(names, task, &task_uuid, &container);
        for (index, raw) in task.placement.pod_templates.iter().enumerate() {
            let rendered = template::render(raw, &variables, index)?;
            template::merge(&mut pod, &rendered);
        }
        // Names and system labels are the executor's, whatever a template says.
        pod["metadata"]["name"] = json!(pod_name);
        pod["metadata"]["namespace"] = json!(ctx.namespace);
        for (key, value) in &labels {
            pod["metadata"]["labels"][key] = json!(value);
        }
        for (key, value) in &annotations {
            pod["metadata"]["annotations"][key] = json!(value);
        }
        pod["spec"]["restartPolicy"] = json!("Never");
    }
    serde_json::from_value(pod)
        .map_err(|error| KubeError::invalid(format!("Pod {pod_name}"), error))
}

/// OSMO's pod-template variables (§3.3) for one task.
fn template_variables(
    names: &GroupNames,
    task: &TaskLaunch,
    task_uuid: &str,
    container: &str,
) -> BTreeMap<String, Value> {
    let resources = &task.placement.resources;
    let mut variables = BTreeMap::new();
    let mut put = |key: &str, value: Value| {
        variables.insert(key.to_string(), value);
    };
    put("USER_CPU", json!(resources.cpu));
    put("USER_GPU", json!(resources.gpu.unwrap_or(0)));
    put(
        "USER_MEMORY",
        json!(resources.memory_bytes.map(quantity_bytes)),
    );
    put(
        "USER_STORAGE",
        json!(resources.storage_bytes.map(quantity_bytes)),
    );
    put("USER_CONTAINER_NAME", json!(container));
    put("WF_ID", json!(names.workflow_id));
    put("WF_UUID", json!(names.workflow_uuid));
    put("WF_GROUP_NAME", json!(names.group));
    put("WF_GROUP_UUID", json!(names.group_uuid));
    put("WF_TASK_NAME", json!(task.key.task));
    put("WF_TASK_UUID", json!(task_uuid));
    put("WF_RETRY_ID", json!(task.key.retry_id));
    put("WF_SUBMITTED_BY", json!(names.submitted_by));
    put("WF_POOL", json!(names.pool));
    put("WF_PLATFORM", json!(task.placement.platform));
    put("WF_PRIORITY", json!(names.priority.as_str()));
    variables
}

/// A byte count as a Kubernetes quantity, in the largest binary unit that
/// divides it exactly.
pub fn quantity_bytes(bytes: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        let size = 1u64 << shift;
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes(16 << 30), "16Gi");
        assert_eq!(quantity_bytes(1536 << 20), "1536Mi");
        assert_eq!(quantity_bytes(1000), "1000");
        assert_eq!(quantity_bytes(0), "0");
    }
}
