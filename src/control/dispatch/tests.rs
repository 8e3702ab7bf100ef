//! `build_launch` against a real redb store that applied real commands,
//! with configs parsed from OSMO-shaped bodies as the API parses them.

use super::launch::{build_launch, task_data, LaunchFailure};
use crate::data::DataStore;
use crate::protocol::{GroupLaunch, LaunchScheduler, TaskLaunch};
use crate::spec::{prepare, SpecInput, SpecLimits};
use gantry_storage::plan::InputPlan;
use gantry_storage::{
    Command, ConfigMeta, ConfigType, Outcome, PackedSubmission, Priority, Store, Submission,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
      outputs: [{url: "s3://out/{{workflow_id}}/", regex: "{{workflow_id}}.*"}]
      files: [{path: "/tmp/{{workflow_id}}.txt", contents: "{{output}}"}]
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
    /// A fresh store with nothing in it.
    fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.redb")).expect("store");
        Fixture {
            _dir: dir,
            store,
            workflow_id: String::new(),
        }
    }

    /// Submits `spec` to pool `gpu` as alice; it must be accepted.
    fn submit(&mut self, spec: &str, uuid: &str) {
        let prepared = prepare(
            &SpecInput {
                text: spec.into(),
                ..SpecInput::default()
            },
            &SpecLimits::default(),
        )
        .expect("spec");
        let submission = Submission {
            name: prepared.name,
            uuid: uuid.into(),
            pool: "gpu".into(),
            user: "alice".into(),
            priority: Priority::Normal,
            template_spec: spec.into(),
            rendered_spec: prepared.rendered,
            plan: prepared.plan.map_err(|error| error.to_string()),
        };
        // As the API proposes it: extras need the newer kind.
        let outcome = if prepared.extras.is_empty() {
            self.apply(Command::SubmitWorkflow { now: 3, submission })
        } else {
            self.apply(Command::SubmitWorkflowWithExtras {
                now: 3,
                packed: PackedSubmission::pack(&submission).expect("pack"),
                labels: BTreeMap::new(),
                extras: prepared.extras.to_text(),
            })
        };
        let Outcome::Submitted {
            workflow_id,
            failure: None,
        } = outcome
        else {
            panic!("not submitted: {outcome:?}");
        };
        self.workflow_id = workflow_id;
    }

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
        let outcome = self.apply(Command::put_config(
            1,
            config_type,
            name.to_string(),
            admin(),
            data,
        ));
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
    let mut fixture = Fixture::empty();
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
    fixture.submit(SPEC, "0a1b2c3d4e5f");
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
fn tokens_are_substituted_in_output_urls_and_every_launched_field() {
    let f = fixture();
    let launch = f.launch().map_err(|f| f.message).expect("launch");
    let worker = task(&launch, "worker");
    let id = &f.workflow_id;
    let data = worker.data.as_ref().expect("task data");
    assert_eq!(data.outputs[0].url, format!("s3://out/{id}/"));
    assert_eq!(data.outputs[0].regex, Some(format!("{id}.*")));
    assert_eq!(worker.files[0].path, format!("/tmp/{id}.txt"));
    assert_eq!(worker.files[0].contents, b"/osmo/data/output");
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

const PRIVILEGED_SPEC: &str = r#"
workflow:
  name: sim
  groups:
  - name: train
    tasks:
    - name: master
      lead: true
      image: ubuntu:24.04
      command: ["true"]
      privileged: true
      hostNetwork: true
      volumeMounts: [/data, "/scratch:/mnt/scratch"]
    - name: worker
      image: ubuntu:24.04
      command: ["true"]
"#;

/// Pool `gpu` whose only platform allows privileged tasks, the host's
/// network and two host mounts, on a Kubernetes backend, and
/// [`PRIVILEGED_SPEC`] submitted to it.
fn privileged_fixture() -> Fixture {
    let mut fixture = Fixture::empty();
    fixture.put(
        ConfigType::Pool,
        "gpu",
        json!({"name": "gpu", "backend": "k8s", "default_platform": "dgx",
               "platforms": {"dgx": {"privileged_allowed": true, "host_network_allowed": true,
                                     "allowed_mounts": ["/data", "/scratch"]}}}),
    );
    fixture.hello("kubernetes");
    fixture.submit(PRIVILEGED_SPEC, "5e5e5e5e");
    fixture
}

#[test]
fn privileged_host_network_and_mounts_reach_a_kubernetes_launch_while_allowed() {
    let f = privileged_fixture();
    let launch = f.launch().map_err(|f| f.message).expect("launch");
    let master = &task(&launch, "master").placement;
    assert_eq!(
        master.pod_templates.last(),
        crate::protocol::host_access::pod_template(
            true,
            true,
            &["/data".into(), "/scratch:/mnt/scratch".into()]
        )
        .as_ref()
    );
    let worker = &task(&launch, "worker").placement;
    assert!(
        worker.pod_templates.is_empty(),
        "{:?}",
        worker.pod_templates
    );

    // The backend now runs the local executor: its sandbox cannot.
    f.hello("local");
    let failure = f.launch().expect_err("refused");
    assert_eq!(failure.tasks.len(), 2);
    assert!(
        failure
            .message
            .starts_with("task 'master': privileged: the local executor (backend 'k8s')"),
        "{}",
        failure.message
    );

    // The platform no longer allows it: the group fails naming it.
    f.hello("kubernetes");
    f.put(
        ConfigType::Pool,
        "gpu",
        json!({"name": "gpu", "backend": "k8s", "default_platform": "dgx",
               "platforms": {"dgx": {"host_network_allowed": true,
                                     "allowed_mounts": ["/data", "/scratch"]}}}),
    );
    let failure = f.launch().expect_err("refused");
    assert_eq!(
        failure.message,
        "task 'master': privileged: platform 'dgx' of pool 'gpu' does not allow it (privileged_allowed is false)"
    );
}

const CHECKPOINT_SPEC: &str = r#"
workflow:
  name: ckpt
  groups:
  - name: train
    tasks:
    - name: master
      lead: true
      image: ubuntu:24.04
      command: [sh, -c, "train"]
      checkpoint:
      - {path: models, url: "s3://ckpt/{{workflow_id}}/models", frequency: 5m, regex: '.*\.pth'}
    - name: worker
      image: ubuntu:24.04
      command: [sh, -c, "work"]
"#;

#[test]
fn checkpoints_reach_the_launch_with_tokens_substituted_and_travel_apart_from_it() {
    let mut f = Fixture::empty();
    f.put(
        ConfigType::Pool,
        "gpu",
        json!({"name": "gpu", "backend": "k8s"}),
    );
    f.hello("kubernetes");
    f.submit(CHECKPOINT_SPEC, "c0c0c0c0");
    let launch = f.launch().map_err(|f| f.message).expect("launch");
    let master = &task(&launch, "master").extras;
    assert_eq!(
        master.checkpoints,
        vec![crate::protocol::CheckpointPlan {
            path: "/models".into(),
            url: format!("s3://ckpt/{}/models", f.workflow_id),
            frequency_seconds: 300,
            regex: Some(r".*\.pth".into()),
        }]
    );
    assert!(task(&launch, "worker").extras.is_empty());
    // The job carries them apart from the launch, and the operator folds
    // them back in.
    let job = launch.clone().into_job(7);
    assert_eq!(job.launch_extras_needed(), 1, "checkpoints only");
    match job.with_extras_folded() {
        crate::protocol::ToOperator::CreateGroup { group, .. } => {
            assert_eq!(&task(&group, "master").extras, master);
            assert!(task(&group, "worker").extras.is_empty());
        }
        other => panic!("{other:?}"),
    }

    // The local executor takes them too (it reads the sandbox's files).
    f.hello("local");
    let launch = f.launch().map_err(|f| f.message).expect("launch");
    assert_eq!(&task(&launch, "master").extras, master);
}

/// A task's topology reaches the launch coarsest first, with the node
/// labels and levels of the pool's topology keys as they are at launch; a
/// key the pool has lost since the submit fails the group, naming it.
#[test]
fn topology_reaches_the_launch_with_the_pools_labels_and_levels() {
    let mut f = Fixture::empty();
    let keys = |keys: Value| json!({"name": "gpu", "backend": "k8s", "topology_keys": keys});
    f.put(
        ConfigType::Pool,
        "gpu",
        keys(json!([
            {"key": "zone", "label": "topology.kubernetes.io/zone"},
            {"key": "clique", "label": "nvidia.com/gpu-clique"},
        ])),
    );
    f.hello("kubernetes");
    f.submit(
        r#"
workflow:
  name: shards
  resources:
    default: {topology: [{key: clique, group: m1}, {key: zone, requirementType: preferred}]}
  groups:
  - name: train
    tasks:
    - {name: a, image: i, command: [x]}
"#,
        "d0d0d0d0",
    );
    let launch = f.launch().map_err(|f| f.message).expect("launch");
    let extras = &task(&launch, "a").extras;
    let levels: Vec<(&str, &str, &str, bool)> = extras
        .topology
        .iter()
        .map(|r| {
            (
                r.key.as_str(),
                r.label.as_str(),
                r.group.as_str(),
                r.required,
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("zone", "topology.kubernetes.io/zone", "default", false),
            ("clique", "nvidia.com/gpu-clique", "m1", true),
        ]
    );
    assert_eq!(
        extras.topology_levels,
        ["topology.kubernetes.io/zone", "nvidia.com/gpu-clique"]
    );
    assert_eq!(launch.clone().into_job(1).launch_extras_needed(), 2);

    f.put(
        ConfigType::Pool,
        "gpu",
        keys(json!([{"key": "zone", "label": "topology.kubernetes.io/zone"}])),
    );
    let failure = f.launch().expect_err("the key is gone");
    assert!(
        failure
            .message
            .contains("topology key \"clique\" is no longer one of the pool's topology_keys"),
        "{}",
        failure.message
    );
}
