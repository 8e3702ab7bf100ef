//! The worker's dispatch loop: hands queued jobs to backend operators.
//!
//! Invariants: runs on the leader only; jobs go out in queue (id) order; a
//! job leaves the queue only when its operator reports it done
//! (`CompleteJob`), so a job lost with a connection or a leader is sent
//! again; a create job carries everything the executor needs, with special
//! tokens substituted (`{{host:<task>}}` as the backend's executor addresses
//! tasks), the platform placement and pod templates of the workflow's pool,
//! and the backend's scheduler settings.

use super::operator_hub::OperatorHub;
use super::placement::PoolPlacement;
use crate::clock::now_ms;
use crate::data::{DataInput, DataOutput, DataStore, TaskData};
use crate::protocol::task_host::kubernetes_task_host;
use crate::protocol::{
    GroupLaunch, GroupMeta, LaunchFile, LaunchInput, LaunchResources, LaunchScheduler, TaskLaunch,
    TaskPlacement, ToOperator, EXECUTOR_KUBERNETES,
};
use crate::spec::{substitute_tokens, TokenContext};
use base64::Engine;
use gantry_raft::RaftNode;
use gantry_storage::plan::InputPlan;
use gantry_storage::{Command, JobKind, JobRecord, ReadView, TaskKey, TaskReport, TaskStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DISPATCH_POLL: Duration = Duration::from_millis(100);
const JOBS_PER_ROUND_MAX: usize = 512;

/// `default_data` is where task data goes while the WORKFLOW config names
/// no `workflow_data.credential` (the server's own object store).
pub async fn run(
    node: RaftNode,
    hub: OperatorHub,
    default_data: DataStore,
    stop: CancellationToken,
) {
    let mut metrics = node.metrics();
    loop {
        if let Err(error) = dispatch_round(&node, &hub, &default_data).await {
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

async fn dispatch_round(
    node: &RaftNode,
    hub: &OperatorHub,
    default_data: &DataStore,
) -> Result<(), gantry_raft::RaftError> {
    let view = node.read_local()?;
    // Resolved at the first job that goes out: opening the store builds an
    // S3 client, and most rounds send nothing.
    let mut data_store: Option<DataStore> = None;
    let jobs = view.jobs(JOBS_PER_ROUND_MAX)?;
    hub.forget_completed_jobs(&jobs.iter().map(|job| job.id).collect::<Vec<_>>());
    for job in jobs {
        // Checked before the launch is built: most rounds find every
        // queued job already sent.
        if !hub.wants_job(&job.backend, job.id) {
            continue;
        }
        let data_store = data_store.get_or_insert_with(|| {
            DataStore::from_workflow_config(&view).unwrap_or_else(|| default_data.clone())
        });
        match build_message(&view, &job, data_store) {
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

fn build_message(
    view: &ReadView,
    job: &JobRecord,
    data_store: &DataStore,
) -> Result<ToOperator, LaunchFailure> {
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
            let launch = build_launch(view, &job.backend, workflow_id, group, data_store)?;
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
    // Only a task with `outputs` needs to know whether others consume it.
    let consumed = if tasks.iter().any(|task| !task.plan.outputs.is_empty()) {
        consumed_tasks(view, &workflow).map_err(|e| failure(e.to_string()))?
    } else {
        BTreeSet::new()
    };
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
fn task_data(
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
    }
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

#[cfg(test)]
mod tests {
    //! `build_launch` against a real redb store that applied real commands,
    //! with configs parsed from OSMO-shaped bodies as the API parses them.

    use super::*;
    use crate::spec::{prepare, SpecInput, SpecLimits};
    use gantry_storage::{ConfigMeta, ConfigType, Outcome, Priority, Store, Submission};
    use serde_json::{json, Value};

    const SPEC: &str = r#"
workflow:
  name: wiring
  resources:
    default: {cpu: 2}
    small: {cpu: 1, platform: a100}
  groups:
  - name: train
    tasks:
    - name: master
      lead: true
      image: ubuntu:24.04
      command: [sh, -c, "echo {{host:worker}}"]
      environment: {PEER: "{{host:master}}"}
    - name: worker
      image: ubuntu:24.04
      command: [sh, -c, "echo worker"]
      resource: small
"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        workflow_id: String,
    }

    fn admin() -> ConfigMeta {
        ConfigMeta {
            user: "admin".into(),
            description: String::new(),
            tags: Vec::new(),
        }
    }

    impl Fixture {
        fn apply(&self, command: Command) -> Outcome {
            let mut outcomes = self.store.apply(&[&[command]], b"", false).expect("apply");
            outcomes.remove(0).remove(0)
        }

        fn put(&self, config_type: ConfigType, name: &str, body: Value) {
            let data = match config_type {
                ConfigType::Backend => gantry_storage::config::backend::merge_backend(
                    &gantry_storage::BackendSettings::default(),
                    body,
                )
                .map(gantry_storage::ConfigData::Backend),
                _ => gantry_storage::config::parse(config_type, name, body),
            }
            .expect("a valid config body");
            let outcome = self.apply(Command::PutConfig {
                now: 1,
                config_type,
                name: name.to_string(),
                meta: admin(),
                data: Box::new(data),
            });
            assert!(matches!(outcome, Outcome::Revision { .. }), "{outcome:?}");
        }

        fn hello(&self, executor: &str) {
            let outcome = self.apply(Command::OperatorHelloWithExecutor {
                now: 2,
                backend: "k8s".into(),
                running: Vec::new(),
                executor: executor.into(),
            });
            assert_eq!(outcome, Outcome::Applied);
        }

        fn launch(&self) -> Result<GroupLaunch, LaunchFailure> {
            let view = self.store.read().expect("read");
            let data = DataStore {
                root: "s3://data/root".into(),
                ..DataStore::default()
            };
            build_launch(&view, "k8s", &self.workflow_id, "train", &data)
        }
    }

    /// A pool `gpu` on backend `k8s` (platforms h100, the default, and a100;
    /// common templates `base` and `shm`, h100 override `h100-extra`) and
    /// the workflow [`SPEC`] submitted to it.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.redb")).expect("store");
        let mut fixture = Fixture {
            _dir: dir,
            store,
            workflow_id: String::new(),
        };
        fixture.put(
            ConfigType::PodTemplate,
            "base",
            json!({"spec": {"containers": [{"name": "{{USER_CONTAINER_NAME}}",
                "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}]}}),
        );
        fixture.put(
            ConfigType::PodTemplate,
            "shm",
            json!({"spec": {"volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]}}),
        );
        fixture.put(
            ConfigType::PodTemplate,
            "h100-extra",
            json!({"spec": {"runtimeClassName": "nvidia"}}),
        );
        fixture.put(
            ConfigType::Pool,
            "gpu",
            json!({
                "name": "gpu",
                "backend": "k8s",
                "default_platform": "h100",
                "common_pod_template": ["base", "shm"],
                "platforms": {
                    "h100": {
                        "labels": {"nvidia.com/gpu.product": "H100"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                         "effect": "NoSchedule"}],
                        "override_pod_template": ["h100-extra"],
                    },
                    "a100": {"labels": {"nvidia.com/gpu.product": "A100"}},
                },
            }),
        );
        let prepared = prepare(
            &SpecInput {
                text: SPEC.into(),
                ..SpecInput::default()
            },
            &SpecLimits::default(),
        )
        .expect("spec");
        let outcome = fixture.apply(Command::SubmitWorkflow {
            now: 3,
            submission: Submission {
                name: prepared.name,
                uuid: "0a1b2c3d4e5f".into(),
                pool: "gpu".into(),
                user: "alice".into(),
                priority: Priority::Normal,
                template_spec: SPEC.into(),
                rendered_spec: prepared.rendered,
                plan: prepared.plan.map_err(|error| error.to_string()),
            },
        });
        let Outcome::Submitted {
            workflow_id,
            failure: None,
        } = outcome
        else {
            panic!("not submitted: {outcome:?}");
        };
        fixture.workflow_id = workflow_id;
        fixture
    }

    fn task<'a>(launch: &'a GroupLaunch, name: &str) -> &'a TaskLaunch {
        launch
            .tasks
            .iter()
            .find(|task| task.key.task == name)
            .expect("task in launch")
    }

    #[test]
    fn task_data_names_prefixes_under_the_root() {
        use gantry_storage::plan::{OutputPlan, TaskPlan};
        let store = DataStore {
            root: "s3://data/root/".into(),
            ..DataStore::default()
        };
        let plan = TaskPlan {
            inputs: vec![
                InputPlan::Task {
                    task: "produce".into(),
                    regex: Some(r"\.csv$".into()),
                },
                InputPlan::Task {
                    task: "old-3:train".into(),
                    regex: None,
                },
                InputPlan::Url {
                    url: "s3://other/x".into(),
                    regex: None,
                },
            ],
            outputs: vec![OutputPlan {
                url: "s3://out/y".into(),
                regex: None,
            }],
            ..TaskPlan::default()
        };
        let data = task_data(&store, "wf-1", "consume", &plan, false);
        let urls: Vec<&str> = data.inputs.iter().map(|i| i.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "s3://data/root/wf-1/produce",
                "s3://data/root/old-3/train",
                "s3://other/x"
            ]
        );
        assert_eq!(data.inputs[0].source, "task produce");
        assert_eq!(data.inputs[0].regex.as_deref(), Some(r"\.csv$"));
        assert_eq!(data.outputs[0].url, "s3://out/y");
        assert_eq!(data.intermediate, None, "outputs and no consumers");
        let consumed = task_data(&store, "wf-1", "consume", &plan, true);
        assert_eq!(
            consumed.intermediate.as_deref(),
            Some("s3://data/root/wf-1/consume")
        );
        let bare = task_data(&store, "wf-1", "t", &TaskPlan::default(), false);
        assert_eq!(bare.intermediate.as_deref(), Some("s3://data/root/wf-1/t"));
    }

    #[test]
    fn placement_follows_the_pool_platforms_and_templates() {
        let f = fixture();
        let launch = f.launch().map_err(|f| f.message).expect("launch");
        let master = &task(&launch, "master").placement;
        assert_eq!(master.platform.as_deref(), Some("h100"), "the default");
        assert_eq!(
            master.node_selector,
            BTreeMap::from([("nvidia.com/gpu.product".into(), "H100".into())])
        );
        assert_eq!(
            master.tolerations,
            vec![json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})]
        );
        // OSMO's order: pool common templates as listed, then the
        // platform's overrides.
        assert_eq!(
            master.pod_templates,
            vec![
                json!({"spec": {"containers": [{"name": "{{USER_CONTAINER_NAME}}",
                    "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}]}}),
                json!({"spec": {"volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}]}}),
                json!({"spec": {"runtimeClassName": "nvidia"}}),
            ]
        );
        let worker = &task(&launch, "worker").placement;
        assert_eq!(worker.platform.as_deref(), Some("a100"), "the spec's");
        assert_eq!(
            worker.node_selector,
            BTreeMap::from([("nvidia.com/gpu.product".into(), "A100".into())])
        );
        assert!(worker.tolerations.is_empty());
        assert_eq!(
            worker.pod_templates,
            master.pod_templates[..2],
            "common only"
        );
        assert_eq!(worker.resources.cpu, Some(1));
        // No BACKEND config: the executor keeps its own scheduler.
        assert_eq!(launch.meta.scheduler, None);
    }

    #[test]
    fn hosts_are_localhost_until_the_backend_runs_kubernetes() {
        let f = fixture();
        let launch = f.launch().map_err(|f| f.message).expect("launch");
        assert_eq!(
            task(&launch, "master").command,
            vec!["sh", "-c", "echo localhost"]
        );

        f.hello("kubernetes");
        let launch = f.launch().map_err(|f| f.message).expect("launch");
        let worker_uuid = &task(&launch, "worker").placement.task_uuid;
        let master_uuid = &task(&launch, "master").placement.task_uuid;
        let group_uuid = &launch.meta.group_uuid;
        assert!(!worker_uuid.is_empty() && !group_uuid.is_empty());
        let master = task(&launch, "master");
        assert_eq!(
            master.command[2],
            format!("echo {worker_uuid}.osmo-{group_uuid}")
        );
        assert_eq!(
            master.environment["PEER"],
            crate::protocol::task_host::kubernetes_task_host(group_uuid, master_uuid)
        );

        f.hello("local");
        let launch = f.launch().map_err(|f| f.message).expect("launch");
        assert_eq!(task(&launch, "master").command[2], "echo localhost");
    }

    #[test]
    fn the_backend_config_sets_the_scheduler_of_the_launch() {
        let f = fixture();
        f.put(
            ConfigType::Backend,
            "k8s",
            json!({"scheduler_settings": {"scheduler_type": "volcano",
                "scheduler_name": "volcano-x", "scheduler_timeout": 90}}),
        );
        let launch = f.launch().map_err(|f| f.message).expect("launch");
        assert_eq!(
            launch.meta.scheduler,
            Some(LaunchScheduler {
                scheduler_type: gantry_storage::SchedulerType::Volcano,
                scheduler_name: "volcano-x".into(),
                scheduler_timeout_seconds: 90,
            })
        );
    }

    #[test]
    fn a_missing_template_or_platform_fails_every_task_with_its_name() {
        let f = fixture();
        f.apply(Command::DeleteConfig {
            now: 4,
            config_type: ConfigType::PodTemplate,
            name: "h100-extra".into(),
            meta: admin(),
        });
        let failure = f.launch().expect_err("a failure");
        assert_eq!(failure.tasks.len(), 2);
        assert!(
            failure.message.contains("pod template 'h100-extra'")
                && failure.message.contains("override_pod_template"),
            "{}",
            failure.message
        );

        // The pool loses platform a100 after submission.
        f.put(
            ConfigType::PodTemplate,
            "h100-extra",
            json!({"spec": {"runtimeClassName": "nvidia"}}),
        );
        f.put(
            ConfigType::Pool,
            "gpu",
            json!({"name": "gpu", "backend": "k8s", "default_platform": "h100",
                   "platforms": {"h100": {}}}),
        );
        let failure = f.launch().expect_err("a failure");
        assert_eq!(failure.tasks.len(), 2);
        assert!(
            failure
                .message
                .contains("task 'worker': platform 'a100' is not a platform of pool 'gpu'"),
            "{}",
            failure.message
        );
    }
}
