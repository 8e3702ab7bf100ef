//! The worker's dispatch loop: hands queued jobs to backend operators.
//!
//! Invariants: runs on the leader only; jobs go out in queue (id) order; a
//! job leaves the queue only when its operator reports it done
//! (`CompleteJob`), so a job lost with a connection or a leader is sent
//! again; a create job carries everything the executor needs, with special
//! tokens substituted (`{{host:<task>}}` as the backend's executor addresses
//! tasks), the platform placement and pod templates of the workflow's pool,
//! and the backend's scheduler settings.

use super::agent::AgentHub;
use super::now_ms;
use super::placement::PoolPlacement;
use crate::operator::kubernetes::task_host_of;
use crate::operator::protocol::{
    GroupLaunch, GroupMeta, LaunchFile, LaunchInput, LaunchResources, LaunchScheduler,
    TaskLaunch, TaskPlacement, ToOperator, EXECUTOR_KUBERNETES,
};
use crate::spec::{substitute_tokens, TokenContext};
use base64::Engine;
use gantry_raft::RaftNode;
use gantry_storage::plan::InputPlan;
use gantry_storage::{Command, JobKind, JobRecord, ReadView, TaskKey, TaskReport, TaskStatus};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DISPATCH_POLL: Duration = Duration::from_millis(100);
const JOBS_PER_ROUND_MAX: usize = 512;

pub async fn run(node: RaftNode, hub: AgentHub, stop: CancellationToken) {
    let mut metrics = node.metrics();
    loop {
        if let Err(error) = dispatch_round(&node, &hub).await {
            tracing::warn!(%error, "dispatch round failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = metrics.changed() => {}
            _ = hub.connected.notified() => {}
            _ = tokio::time::sleep(DISPATCH_POLL) => {}
        }
    }
}

async fn dispatch_round(node: &RaftNode, hub: &AgentHub) -> Result<(), gantry_raft::RaftError> {
    let view = node.read_local()?;
    let jobs = view.jobs(JOBS_PER_ROUND_MAX)?;
    hub.forget_completed_jobs(&jobs.iter().map(|job| job.id).collect::<Vec<_>>());
    for job in jobs {
        // Checked before the launch is built: most rounds find every
        // queued job already sent.
        if !hub.wants_job(&job.backend, job.id) {
            continue;
        }
        match build_message(&view, &job) {
            Ok(message) => {
                hub.send_job(&job.backend, job.id, message).await;
            }
            Err(failure) => fail_unlaunchable(node, &job, failure).await?,
        }
    }
    Ok(())
}

/// Why a group could not be turned into a launch: its tasks fail with it.
struct LaunchFailure {
    tasks: Vec<TaskKey>,
    message: String,
}

fn build_message(view: &ReadView, job: &JobRecord) -> Result<ToOperator, LaunchFailure> {
    match &job.kind {
        JobKind::CancelGroup {
            workflow_id,
            group,
            reason,
        } => Ok(ToOperator::CancelGroup {
            job_id: job.id,
            workflow_id: workflow_id.clone(),
            group: group.clone(),
            reason: reason.clone(),
        }),
        JobKind::CreateGroup { workflow_id, group } => {
            let launch = build_launch(view, &job.backend, workflow_id, group)?;
            Ok(ToOperator::CreateGroup {
                job_id: job.id,
                group: launch,
            })
        }
    }
}

fn build_launch(
    view: &ReadView,
    backend_name: &str,
    workflow_id: &str,
    group_name: &str,
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
    let workflow = view
        .workflow(workflow_id)
        .map_err(|e| failure(e.to_string()))?
        .ok_or_else(|| failure(format!("workflow {workflow_id} vanished")))?;
    let backend = view
        .backend(backend_name)
        .map_err(|e| failure(e.to_string()))?;
    let on_kubernetes = backend
        .as_ref()
        .is_some_and(|backend| backend.executor == EXECUTOR_KUBERNETES);
    // Tasks of one local group share the host's network; on Kubernetes each
    // pod is named by the group's headless Service.
    let hosts: BTreeMap<String, String> = tasks
        .iter()
        .map(|task| {
            let host = if on_kubernetes {
                task_host_of(&group.uuid, &task.uuid)
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
    let mut launches = Vec::with_capacity(tasks.len());
    for task in tasks.iter().filter(|task| !task.status.is_finished()) {
        let key = TaskKey {
            workflow_id: workflow_id.to_string(),
            task: task.name.clone(),
            retry_id: task.retry_id,
        };
        let plan = &task.plan;
        let input_names: Vec<String> = plan
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
        let substitute = |text: &str| {
            substitute_tokens(text, &context).map_err(|error| LaunchFailure {
                tasks: keys.clone(),
                message: format!("task '{}': {error}", task.name),
            })
        };
        let placed = pool
            .resolve(view, plan.resource.platform.as_deref())
            .map_err(|error| LaunchFailure {
                tasks: keys.clone(),
                message: format!("task '{}': {error}", task.name),
            })?;
        let mut environment = BTreeMap::new();
        for (name, value) in &plan.environment {
            environment.insert(name.clone(), substitute(value)?);
        }
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
                substitute(&file.contents)?.into_bytes()
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
            command: plan
                .command
                .iter()
                .map(|part| substitute(part))
                .collect::<Result<_, _>>()?,
            args: plan
                .args
                .iter()
                .map(|part| substitute(part))
                .collect::<Result<_, _>>()?,
            environment,
            files,
            inputs: plan
                .inputs
                .iter()
                .map(|input| match input {
                    InputPlan::Task { task, regex } => {
                        let (source_workflow, source_task) = match task.split_once(':') {
                            Some((workflow, task)) => (workflow.to_string(), task.to_string()),
                            None => (workflow_id.to_string(), task.clone()),
                        };
                        LaunchInput::Task {
                            workflow_id: source_workflow,
                            task: source_task,
                            regex: regex.clone(),
                        }
                    }
                    InputPlan::Url { url, regex } => LaunchInput::Url {
                        url: url.clone(),
                        regex: regex.clone(),
                    },
                })
                .collect(),
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
                pod_templates: placed.pod_templates,
            },
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
            scheduler: backend
                .filter(|backend| backend.configured)
                .map(|backend| LaunchScheduler {
                    scheduler_type: backend.settings.scheduler_type,
                    scheduler_name: backend.settings.scheduler_name,
                    scheduler_timeout_seconds: backend.settings.scheduler_timeout_seconds,
                }),
        },
    })
}

/// A group that cannot be launched fails its tasks (as a server error) and
/// leaves the queue, instead of blocking it.
async fn fail_unlaunchable(
    node: &RaftNode,
    job: &JobRecord,
    failure: LaunchFailure,
) -> Result<(), gantry_raft::RaftError> {
    tracing::error!(job = job.id, message = %failure.message, "cannot launch group");
    for key in failure.tasks {
        node.propose_here(Command::ReportTask {
            now: now_ms(),
            report: TaskReport {
                key,
                status: TaskStatus::FailedServerError,
                exit_code: None,
                message: Some(failure.message.clone()),
                node_name: None,
                time: now_ms(),
            },
        })
        .await?;
    }
    node.propose_here(Command::CompleteJob { job_id: job.id })
        .await?;
    Ok(())
}
