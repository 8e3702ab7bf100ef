//! Building a `GroupLaunch`: everything an executor needs to run one group
//! of a workflow, read from the replicated state at dispatch time.
//!
//! Invariants: a create job carries everything the executor needs, with
//! special tokens substituted in every field it uses (image, command, args,
//! environment, files, input and output URLs and regexes; `{{host:<task>}}`
//! as the backend's executor
//! addresses tasks: `localhost` locally, the pod's name under the group's
//! headless Service on Kubernetes), the platform placement and pod
//! templates of the workflow's pool, the backend's scheduler settings (only
//! when an admin's BACKEND config sets them), and where each task's data
//! comes from and goes (the data store in force), and the spec's
//! `privileged`, `hostNetwork` and `volumeMounts` as the task's last pod
//! template (`protocol::host_access`) once the platform still allows them
//! and the executor can honour them; each task's extras (checkpoints, with
//! special tokens substituted; its credentials, opened: `credentials`). A group that cannot be built names the
//! tasks that fail with it.

use super::credentials::UserCredentials;
use crate::control::placement::PoolPlacement;
use crate::data::{DataInput, DataOutput, DataStore, TaskData};
use crate::protocol::host_access;
use crate::protocol::task_host::kubernetes_task_host;
use crate::protocol::{
    GroupLaunch, GroupMeta, LaunchFile, LaunchInput, LaunchResources, LaunchScheduler, TaskLaunch,
    TaskPlacement, EXECUTOR_KUBERNETES, EXECUTOR_LOCAL,
};
use crate::spec::{substitute_task, substitute_tokens, TokenContext};
use base64::Engine;
use gantry_storage::admission::{check_allowed, check_executor, task_platform, InForce};
use gantry_storage::extras::{TaskExtras, WorkflowExtras};
use gantry_storage::plan::InputPlan;
use gantry_storage::PoolExtras;
use gantry_storage::{ReadView, TaskKey};
use std::collections::{BTreeMap, BTreeSet};

/// Why a group could not be turned into a launch: its tasks fail with it.
pub(super) struct LaunchFailure {
    pub(super) tasks: Vec<TaskKey>,
    pub(super) message: String,
}

/// The launch of group `group_name` of `workflow_id` on `backend_name`:
/// its unfinished tasks, with data in `data_store`.
pub(super) fn build_launch(
    view: &ReadView,
    backend_name: &str,
    workflow_id: &str,
    group_name: &str,
    data_store: &DataStore,
) -> Result<GroupLaunch, LaunchFailure> {
    let failure = |message: String| LaunchFailure {
        tasks: Vec::new(),
        message,
    };
    let group = view
        .group(workflow_id, group_name)
        .map_err(|e| failure(e.to_string()))?
        .ok_or_else(|| failure(format!("group {group_name} vanished")))?;
    let tasks = view
        .group_tasks(&group)
        .map_err(|e| failure(e.to_string()))?;
    // The core, not the row: launching each of many groups must not read
    // the workflow's specs each time.
    let workflow = view
        .workflow_core(workflow_id)
        .map_err(|e| failure(e.to_string()))?
        .ok_or_else(|| failure(format!("workflow {workflow_id} vanished")))?;
    let backend = view
        .backend(backend_name)
        .map_err(|e| failure(e.to_string()))?;
    let on_kubernetes = backend
        .as_ref()
        .is_some_and(|backend| backend.executor == EXECUTOR_KUBERNETES);
    let executor = backend
        .as_ref()
        .map_or(EXECUTOR_LOCAL, |backend| backend.executor.as_str())
        .to_string();
    // Tasks of one local group share the host's network; on Kubernetes each
    // pod is named by the group's headless Service.
    let hosts: BTreeMap<String, String> = tasks
        .iter()
        .map(|task| {
            let host = if on_kubernetes {
                kubernetes_task_host(&group.uuid, &task.uuid)
            } else {
                "localhost".to_string()
            };
            (task.name.clone(), host)
        })
        .collect();
    let keys: Vec<TaskKey> = tasks
        .iter()
        .map(|task| TaskKey {
            workflow_id: workflow_id.to_string(),
            task: task.name.clone(),
            retry_id: task.retry_id,
        })
        .collect();
    let mut pool = PoolPlacement::load(view, &workflow.pool).map_err(|message| LaunchFailure {
        tasks: keys.clone(),
        message,
    })?;
    let in_force =
        InForce::read(view, &workflow.pool).map_err(|error| failure(error.to_string()))?;
    let extras = view
        .workflow_extras(workflow_id)
        .map_err(|error| failure(error.to_string()))?;
    // Only a task with `outputs` needs to know whether others consume it.
    let consumed = if tasks.iter().any(|task| !task.plan.outputs.is_empty()) {
        let workflow = view
            .workflow(workflow_id)
            .map_err(|e| failure(e.to_string()))?
            .ok_or_else(|| failure(format!("workflow {workflow_id} vanished")))?;
        consumed_tasks(view, &workflow).map_err(|e| failure(e.to_string()))?
    } else {
        BTreeSet::new()
    };
    // Read once per launch: every task of a group is the same user's.
    let mut credentials = UserCredentials::read(view, &workflow.user).map_err(failure)?;
    let mut launches = Vec::with_capacity(tasks.len());
    for task in tasks.iter().filter(|task| !task.status.is_finished()) {
        let key = TaskKey {
            workflow_id: workflow_id.to_string(),
            task: task.name.clone(),
            retry_id: task.retry_id,
        };
        let input_names: Vec<String> = task
            .plan
            .inputs
            .iter()
            .map(|input| match input {
                InputPlan::Task { task, .. } => task.clone(),
                InputPlan::Url { url, .. } => url.clone(),
            })
            .collect();
        let context = TokenContext {
            workflow_id,
            inputs: &input_names,
            hosts: &hosts,
        };
        let placed = pool
            .resolve(view, task.plan.resource.platform.as_deref())
            .map_err(|error| LaunchFailure {
                tasks: keys.clone(),
                message: format!("task '{}': {error}", task.name),
            })?;
        // What the platform allows and the executor can honour, as at
        // submit: the configs may have changed since (OSMO checks again
        // when it builds the pod).
        if task.plan.privileged || task.plan.host_network || !task.plan.volume_mounts.is_empty() {
            let allowed = match &in_force.pool {
                Some(pool_config) => task_platform(pool_config, &task.plan)
                    .and_then(|platform| check_allowed(pool_config, platform, &task.plan)),
                None => Ok(()),
            };
            allowed
                .and_then(|()| check_executor(&executor, backend_name, &task.plan))
                .map_err(|message| LaunchFailure {
                    tasks: keys.clone(),
                    message,
                })?;
        }
        // Every field a launch uses, tokens substituted (OSMO substitutes
        // in the whole task; outputs' URLs included).
        let plan = substitute_task(&task.plan, &context).map_err(|error| LaunchFailure {
            tasks: keys.clone(),
            message: format!("task '{}': {error}", task.name),
        })?;
        let plan = &plan;
        let mut files = Vec::with_capacity(plan.files.len());
        for file in &plan.files {
            let contents = if file.base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(file.contents.trim())
                    .map_err(|error| LaunchFailure {
                        tasks: keys.clone(),
                        message: format!(
                            "task '{}': file {} is not valid base64: {error}",
                            task.name, file.path
                        ),
                    })?
            } else {
                file.contents.clone().into_bytes()
            };
            files.push(LaunchFile {
                path: file.path.clone(),
                contents,
            });
        }
        launches.push(TaskLaunch {
            key,
            group: group.name.clone(),
            lead: task.lead,
            image: plan.image.clone(),
            command: plan.command.clone(),
            args: plan.args.clone(),
            environment: plan.environment.clone(),
            files,
            inputs: plan
                .inputs
                .iter()
                .map(|input| match input {
                    InputPlan::Task { task, regex } => {
                        let (source_workflow, source_task) = task_reference(workflow_id, task);
                        LaunchInput::Task {
                            workflow_id: source_workflow.to_string(),
                            task: source_task.to_string(),
                            regex: regex.clone(),
                        }
                    }
                    InputPlan::Url { url, regex } => LaunchInput::Url {
                        url: url.clone(),
                        regex: regex.clone(),
                    },
                })
                .collect(),
            data: Some(task_data(
                data_store,
                workflow_id,
                &task.name,
                plan,
                consumed.contains(&task.name),
            )),
            placement: TaskPlacement {
                task_uuid: task.uuid.clone(),
                resources: LaunchResources {
                    cpu: plan.resource.cpu,
                    gpu: plan.resource.gpu,
                    memory_bytes: plan.resource.memory_bytes,
                    storage_bytes: plan.resource.storage_bytes,
                },
                platform: placed.platform,
                node_selector: placed.node_selector,
                tolerations: placed.tolerations,
                pod_templates: placed
                    .pod_templates
                    .into_iter()
                    .chain(host_access::pod_template(
                        plan.privileged,
                        plan.host_network,
                        &plan.volume_mounts,
                    ))
                    .collect(),
            },
            extras: task_extras(&extras, &task.name, &context, &in_force.pool_extras)
                .and_then(|mut extras| {
                    extras.credentials = credentials.for_task(plan)?;
                    extras.data_credentials =
                        credentials.data_credentials(&task_urls(plan, &extras))?;
                    // Both executors pull images (the local one in image mode).
                    extras.registry_auths = credentials.registry_auths(&plan.image)?;
                    Ok(extras)
                })
                .map_err(|message| LaunchFailure {
                    tasks: keys.clone(),
                    message,
                })?,
        });
    }
    Ok(GroupLaunch {
        workflow_id: workflow_id.to_string(),
        group: group.name.clone(),
        barrier: group.barrier,
        tasks: launches,
        meta: GroupMeta {
            workflow_uuid: workflow.uuid.clone(),
            group_uuid: group.uuid.clone(),
            submitted_by: workflow.user.clone(),
            pool: workflow.pool.clone(),
            priority: Some(workflow.priority),
            // Only an admin's BACKEND config overrides the executor's own.
            scheduler: backend.filter(|backend| backend.configured).map(|backend| {
                LaunchScheduler {
                    scheduler_type: backend.settings.scheduler_type,
                    scheduler_name: backend.settings.scheduler_name,
                    scheduler_timeout_seconds: backend.settings.scheduler_timeout_seconds,
                }
            }),
        },
    })
}

/// The workflow and task a `{task: ...}` input names: `<name>` is a task of
/// `workflow_id`, `<wf_id>:<name>` one of workflow `wf_id`.
fn task_reference<'a>(workflow_id: &'a str, source: &'a str) -> (&'a str, &'a str) {
    source.split_once(':').unwrap_or((workflow_id, source))
}

/// Names of this workflow's tasks that some task of it reads as an input.
fn consumed_tasks(
    view: &ReadView,
    workflow: &gantry_storage::WorkflowRecord,
) -> Result<BTreeSet<String>, gantry_storage::StorageError> {
    let mut consumed = BTreeSet::new();
    for group in view.groups(workflow)? {
        for task in view.group_tasks(&group)? {
            for input in &task.plan.inputs {
                if let InputPlan::Task { task: source, .. } = input {
                    let (source_workflow, name) = task_reference(&workflow.id, source);
                    if source_workflow == workflow.id {
                        consumed.insert(name.to_string());
                    }
                }
            }
        }
    }
    Ok(consumed)
}

/// Where a task's inputs come from and its outputs go (OSMO: a task input
/// is `<data root>/<wf_id>/<task>`; the output goes to the intermediate
/// prefix when the task has consumers or no `outputs`).
pub(super) fn task_data(
    store: &DataStore,
    workflow_id: &str,
    task: &str,
    plan: &gantry_storage::plan::TaskPlan,
    consumed: bool,
) -> TaskData {
    let inputs = plan
        .inputs
        .iter()
        .map(|input| match input {
            InputPlan::Task {
                task: source,
                regex,
            } => {
                let (source_workflow, source_task) = task_reference(workflow_id, source);
                DataInput {
                    source: format!("task {source}"),
                    url: store.task_url(source_workflow, source_task),
                    regex: regex.clone(),
                }
            }
            InputPlan::Url { url, regex } => DataInput {
                source: format!("url {url}"),
                url: url.clone(),
                regex: regex.clone(),
            },
        })
        .collect();
    TaskData {
        store: store.clone(),
        inputs,
        outputs: plan
            .outputs
            .iter()
            .map(|output| DataOutput {
                url: output.url.clone(),
                regex: output.regex.clone(),
            })
            .collect(),
        intermediate: (consumed || plan.outputs.is_empty())
            .then(|| store.task_url(workflow_id, task)),
        user_stores: Vec::new(),
    }
}

/// Every object-store URL a task reads or writes itself (inputs by URL,
/// outputs, checkpoints), tokens already substituted.
fn task_urls(plan: &gantry_storage::plan::TaskPlan, extras: &TaskExtras) -> Vec<String> {
    plan.inputs
        .iter()
        .filter_map(|input| match input {
            InputPlan::Url { url, .. } => Some(url.clone()),
            InputPlan::Task { .. } => None,
        })
        .chain(plan.outputs.iter().map(|output| output.url.clone()))
        .chain(
            extras
                .checkpoints
                .iter()
                .map(|checkpoint| checkpoint.url.clone()),
        )
        .collect()
}

/// Task `name`'s extras for its launch: special tokens substituted in the
/// checkpoints' paths and URLs, as in the task's other fields; topology
/// requirements given their node labels by the pool's topology keys as
/// they are now (coarsest first), with the pool's levels.
fn task_extras(
    extras: &WorkflowExtras,
    name: &str,
    context: &TokenContext,
    pool_extras: &PoolExtras,
) -> Result<TaskExtras, String> {
    let Some(task) = extras.tasks.get(name) else {
        return Ok(TaskExtras::default());
    };
    let substitute = |field: &str, text: &str| {
        substitute_tokens(text, context)
            .map_err(|error| format!("task '{name}': checkpoint {field}: {error}"))
    };
    let mut substituted = task.clone();
    for checkpoint in &mut substituted.checkpoints {
        checkpoint.path = substitute("path", &checkpoint.path)?;
        checkpoint.url = substitute("url", &checkpoint.url)?;
    }
    if !substituted.topology.is_empty() {
        let mut levelled = Vec::with_capacity(substituted.topology.len());
        for mut requirement in std::mem::take(&mut substituted.topology) {
            // The pool's keys may have changed since the submit.
            let (level, label) = pool_extras.topology_level(&requirement.key).ok_or_else(|| {
                format!(
                    "task '{name}': topology key \"{}\" is no longer one of the pool's topology_keys",
                    requirement.key
                )
            })?;
            requirement.label = label.to_string();
            levelled.push((level, requirement));
        }
        levelled.sort_by_key(|(level, _)| *level);
        substituted.topology = levelled.into_iter().map(|(_, r)| r).collect();
        substituted.topology_levels = pool_extras
            .topology_keys
            .iter()
            .map(|key| key.label.clone())
            .collect();
    }
    Ok(substituted)
}
