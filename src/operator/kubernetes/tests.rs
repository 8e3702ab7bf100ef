//! The Kubernetes executor against the recording fake API server (real
//! HTTPS, kube-rs as the client), plus OSMO's golden pod-status cases.

use super::config::{KubernetesConfig, PoolQueue, SchedulerSettings, SchedulerType};
use super::executor::KubernetesOperator;
use super::fake_api::{FakeApi, Recorded};
use super::status::pod_status;
use crate::protocol::{
    FromOperator, GroupLaunch, GroupMeta, LaunchFile, LaunchResources, LaunchScheduler, LogStream,
    TaskLaunch, TaskPlacement, ToOperator,
};
use gantry_storage::{Priority, TaskKey, TaskStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod events;
mod faults;
mod queues;
mod sessions;

const NS: &str = "gantry-test";
const PODS: &str = "/api/v1/namespaces/gantry-test/pods";
const SECRETS: &str = "/api/v1/namespaces/gantry-test/secrets";
const SERVICES: &str = "/api/v1/namespaces/gantry-test/services";
const KAI_PODGROUPS: &str = "/apis/scheduling.run.ai/v2alpha2/namespaces/gantry-test/podgroups";
const VOLCANO_PODGROUPS: &str =
    "/apis/scheduling.volcano.sh/v1beta1/namespaces/gantry-test/podgroups";
const COSCHED_PODGROUPS: &str =
    "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/gantry-test/podgroups";
const WAIT: Duration = Duration::from_secs(20);

const WF_UUID: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const GROUP_UUID: &str = "9f8e7d6c-0000-4000-8000-000000000002";

fn task_uuid(index: usize) -> String {
    format!("{index}e5e5e5e-0000-4000-8000-000000000100")
}

struct Harness {
    api: FakeApi,
    operator: Arc<KubernetesOperator>,
    to_operator: mpsc::Sender<ToOperator>,
    from_operator: mpsc::Receiver<FromOperator>,
    next_job: u64,
}

impl Harness {
    async fn start(scheduler: SchedulerSettings) -> Harness {
        let api = FakeApi::start().await;
        Harness::on(api, scheduler).await
    }

    async fn on(api: FakeApi, scheduler: SchedulerSettings) -> Harness {
        let config = KubernetesConfig {
            client: api.client(NS),
            namespace: NS.to_string(),
            backend: "k8s".to_string(),
            scheduler,
            runtime_image: "gantry:test".to_string(),
        };
        let operator = Arc::new(KubernetesOperator::new(config).await.expect("operator"));
        let (to_operator, from_server) = mpsc::channel(64);
        let (to_server, from_operator) = mpsc::channel(1024);
        let serving = Arc::clone(&operator);
        tokio::spawn(async move { serving.serve(from_server, to_server).await });
        Harness {
            api,
            operator,
            to_operator,
            from_operator,
            next_job: 0,
        }
    }

    async fn next(&mut self) -> FromOperator {
        tokio::time::timeout(WAIT, self.from_operator.recv())
            .await
            .expect("operator message in time")
            .expect("operator channel open")
    }

    async fn hello(&mut self) -> Vec<TaskKey> {
        match self.next().await {
            FromOperator::Hello {
                backend,
                running,
                executor,
                ..
            } => {
                assert_eq!(backend, "k8s");
                assert_eq!(executor, "kubernetes");
                running
            }
            other => panic!("expected Hello first, got {other:?}"),
        }
    }

    async fn send(&mut self, message: ToOperator) {
        self.to_operator.send(message).await.expect("send");
    }

    async fn create(&mut self, group: GroupLaunch) -> u64 {
        self.next_job += 1;
        let job_id = self.next_job;
        // As the dispatcher sends it: extras split out when there are any.
        self.send(group.into_job(job_id)).await;
        job_id
    }

    /// Messages until `JobDone { job_id }` (inclusive).
    async fn until_done(&mut self, job_id: u64) -> Vec<FromOperator> {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await;
            let done = matches!(message, FromOperator::JobDone { job_id: j } if j == job_id);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    /// The next status report (skipping log batches, which are returned).
    async fn status(
        &mut self,
    ) -> (
        TaskKey,
        TaskStatus,
        Option<i32>,
        Option<String>,
        Vec<String>,
    ) {
        let mut lines = Vec::new();
        loop {
            match self.next().await {
                FromOperator::TaskStatus {
                    key,
                    status,
                    exit_code,
                    message,
                    ..
                } => return (key, status, exit_code, message, lines),
                FromOperator::Logs { lines: batch, .. } => {
                    assert!(batch.iter().all(|l| l.stream == LogStream::Stdout));
                    lines.extend(batch.into_iter().map(|l| l.text));
                }
                other => panic!("expected a status, got {other:?}"),
            }
        }
    }

    /// Waits until the fake has recorded a request matching `pred`.
    async fn wait_request(&self, pred: impl Fn(&Recorded) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.api.requests().iter().any(&pred) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request not seen; got {:#?}",
                self.api.actions()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn key(task: &str) -> TaskKey {
    TaskKey {
        workflow_id: "train-7".into(),
        task: task.into(),
        retry_id: 0,
    }
}

fn task(name: &str, index: usize, lead: bool) -> TaskLaunch {
    TaskLaunch {
        key: key(name),
        group: "train-group".into(),
        lead,
        image: "nvcr.io/nvidia/pytorch:24.01-py3".into(),
        command: vec!["python".into(), "train.py".into()],
        args: vec!["--out".into(), "/osmo/data/output".into()],
        environment: BTreeMap::from([("EPOCHS".to_string(), "3".to_string())]),
        files: Vec::new(),
        inputs: Vec::new(),
        data: None,
        extras: Default::default(),
        placement: TaskPlacement {
            task_uuid: task_uuid(index),
            resources: LaunchResources {
                cpu: Some(8),
                gpu: Some(2),
                memory_bytes: Some(32 << 30),
                storage_bytes: Some(100 << 30),
            },
            platform: Some("h100".into()),
            node_selector: BTreeMap::from([(
                "nvidia.com/gpu.product".to_string(),
                "NVIDIA-H100-80GB-HBM3".to_string(),
            )]),
            tolerations: vec![
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
            ],
            pod_templates: Vec::new(),
        },
    }
}

fn group(tasks: Vec<TaskLaunch>) -> GroupLaunch {
    GroupLaunch {
        workflow_id: "train-7".into(),
        group: "train-group".into(),
        barrier: true,
        tasks,
        meta: GroupMeta {
            workflow_uuid: WF_UUID.into(),
            group_uuid: GROUP_UUID.into(),
            submitted_by: "alice@example.com".into(),
            pool: "gpu-pool".into(),
            priority: Some(Priority::High),
            scheduler: None,
        },
    }
}

fn posts(requests: &[Recorded]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| {
            let name = r.body.as_ref().map_or(String::new(), |b| {
                b["metadata"]["name"].as_str().unwrap_or("").to_string()
            });
            (r.path.clone(), name)
        })
        .collect()
}

fn posted(requests: &[Recorded], path: &str) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .filter_map(|r| r.body.clone())
        .collect()
}

fn group_labels() -> Value {
    json!({
        "osmo.workflow_id": "train-7",
        "osmo.workflow_uuid": WF_UUID,
        "osmo.group_name": "train-group",
        "osmo.group_uuid": GROUP_UUID,
        "osmo.submitted_by": super::names::label_value("alice@example.com"),
        "osmo.pool": "gpu-pool",
        "osmo.priority": "HIGH",
    })
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

const QUEUE: &str = "osmo-pool-gantry-test-gpu-pool";

/// The exact Pod the executor creates for `task(name, index)` under KAI.
fn expected_kai_pod(
    name: &str,
    index: usize,
    lead: bool,
    task_count: usize,
    files: Value,
    mounts: Value,
) -> Value {
    let uuid = task_uuid(index);
    let mut labels = merged(
        &group_labels(),
        json!({
            "osmo.task_name": name,
            "osmo.task_uuid": uuid,
            "osmo.retry_id": "0",
            "osmo.platform": "h100",
            "kai.scheduler/queue": QUEUE,
            "runai/queue": QUEUE,
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        }),
    );
    if lead {
        labels["osmo.lead_container"] = json!("true");
    }
    let mut volume_mounts = vec![
        json!({"name": "osmo-bin", "mountPath": "/osmo/bin", "readOnly": true}),
        json!({"name": "osmo-data", "mountPath": "/osmo/data"}),
    ];
    volume_mounts.extend(mounts.as_array().cloned().unwrap_or_default());
    let mut volumes = vec![
        json!({"name": "osmo-bin", "emptyDir": {}}),
        json!({"name": "osmo-data", "emptyDir": {}}),
    ];
    volumes.extend(files.as_array().cloned().unwrap_or_default());
    let quantities =
        json!({"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "2"});
    let mut spec = json!({
        "schedulerName": "kai-scheduler",
        "restartPolicy": "Never",
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "initContainers": [{
            "name": "osmo-init",
            "image": "gantry:test",
            "command": ["gantry", "task-runtime", "install", "--to", "/osmo/bin"],
            "volumeMounts": [{"name": "osmo-bin", "mountPath": "/osmo/bin"}],
            "resources": {
                "requests": {"cpu": "250m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            },
        }],
        "containers": [{
            "name": name,
            "image": "nvcr.io/nvidia/pytorch:24.01-py3",
            "command": ["/osmo/bin/gantry"],
            "args": ["task-runtime", "exec", "--inputs", "0", "--", "python", "train.py", "--out", "/osmo/data/output"],
            "env": [{"name": "EPOCHS", "value": "3"}],
            "resources": {"requests": quantities, "limits": quantities},
            "volumeMounts": volume_mounts,
        }],
        "volumes": volumes,
    });
    if task_count > 1 {
        spec["hostname"] = json!(uuid);
        spec["subdomain"] = json!(format!("osmo-{GROUP_UUID}"));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-{}", &WF_UUID[..16], &uuid[..16]),
            "namespace": NS,
            "labels": labels,
            "annotations": {
                "osmo.workflow_id": "train-7",
                "osmo.task_name": name,
                "osmo.retry_id": "0",
                "pod-group-name": GROUP_UUID,
            },
        },
        "spec": spec,
    })
}

fn pod_name(index: usize) -> String {
    format!("{}-{}", &WF_UUID[..16], &task_uuid(index)[..16])
}

/// A pod status with one container named after the task (the executor
/// reads the user container by name for logs).
fn container_status(name: &str, state: Value, phase: &str) -> Value {
    json!({"phase": phase, "containerStatuses": [{
        "name": name, "ready": phase == "Running", "restartCount": 0, "image": "i", "imageID": "",
        "state": state
    }]})
}

#[tokio::test]
async fn the_pod_gets_its_task_data_and_checkpoints_from_a_secret_file_not_its_command_line() {
    use crate::data::{DataInput, DataStore, TaskData};
    use base64::Engine;
    let mut h = Harness::start(SchedulerSettings::default()).await;
    assert_eq!(h.hello().await, Vec::<TaskKey>::new());
    let store = DataStore {
        root: "s3://data/runs".into(),
        endpoint: Some("http://minio:9000".into()),
        access_key_id: Some("AKIA".into()),
        access_key: Some("data-secret".into()),
        ..DataStore::default()
    };
    let mut single = task("train", 0, true);
    single.inputs = vec![crate::protocol::LaunchInput::Task {
        workflow_id: "train-7".into(),
        task: "prep".into(),
        regex: None,
    }];
    single.data = Some(TaskData {
        user_stores: Vec::new(),
        store: store.clone(),
        inputs: vec![DataInput {
            source: "task prep".into(),
            url: store.task_url("train-7", "prep"),
            regex: None,
        }],
        outputs: Vec::new(),
        intermediate: Some(store.task_url("train-7", "train")),
    });
    single.extras.checkpoints = vec![crate::protocol::CheckpointPlan {
        path: "/tmp/models".into(),
        url: "s3://data/ckpt/train-7".into(),
        frequency_seconds: 60,
        regex: None,
    }];
    // The runtime reads the task's data and its checkpoints, which reached
    // the operator apart from the launch (`CreateGroupWithExtras`).
    let expected = serde_json::to_vec(&super::task_runtime::RuntimeData {
        user_stores: Vec::new(),
        data: single.data.clone().expect("data"),
        checkpoints: single.extras.checkpoints.clone(),
    })
    .expect("json");
    let job = h.create(group(vec![single])).await;
    h.until_done(job).await;

    let requests = h.api.actions();
    let secrets = posted(&requests, SECRETS);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let secret_name = secrets[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let file = base64::engine::general_purpose::STANDARD
        .decode(secrets[0]["data"]["file"].as_str().expect("file"))
        .expect("base64");
    assert_eq!(file, expected, "the runtime reads exactly the task data");
    let pods = posted(&requests, PODS);
    let container = &pods[0]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "task-runtime",
            "exec",
            "--inputs",
            "1",
            "--data",
            "/osmo/run/data.json",
            "--",
            "python",
            "train.py",
            "--out",
            "/osmo/data/output"
        ])
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": "file-0", "mountPath": "/osmo/run/data.json", "subPath": "file", "readOnly": true})),
        "{container:#}"
    );
    assert!(pods[0]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["secret"]["secretName"] == secret_name.as_str()));
    assert!(
        !pods[0].to_string().contains("data-secret"),
        "no credential in the pod"
    );
}

#[tokio::test]
async fn one_task_group_creates_secret_podgroup_pod_and_reports_its_life() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    assert_eq!(h.hello().await, Vec::<TaskKey>::new());
    let mut single = task("train", 0, true);
    single.files = vec![LaunchFile {
        path: "/workspace/run.sh".into(),
        contents: b"#!/bin/sh\necho hello\n".to_vec(),
    }];
    let job = h.create(group(vec![single])).await;
    let seen = h.until_done(job).await;
    assert!(
        matches!(&seen[0], FromOperator::TaskStatus { status: TaskStatus::Scheduling, key, .. } if *key == key_of("train")),
        "{seen:?}"
    );

    // Exactly these objects, in this order: Secret, PodGroup, Pod (no Service).
    let requests = h.api.actions();
    let sha = crate::protocol::task_host::sha256_hex(b"#!/bin/sh\necho hello\n");
    let secret_name = format!("osmo-{}-{}", &GROUP_UUID[..16], &sha[..32]);
    assert_eq!(
        posts(&requests),
        vec![
            (SECRETS.to_string(), secret_name.clone()),
            (KAI_PODGROUPS.to_string(), GROUP_UUID.to_string()),
            (PODS.to_string(), pod_name(0)),
        ]
    );
    assert_eq!(
        posted(&requests, SECRETS),
        vec![json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": NS, "labels": group_labels()},
            "type": "Opaque",
            "data": {"file": "IyEvYmluL3NoCmVjaG8gaGVsbG8K"},
        })]
    );
    assert_eq!(
        posted(&requests, KAI_PODGROUPS),
        vec![json!({
            "apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
            "metadata": {
                "name": GROUP_UUID, "namespace": NS,
                "labels": merged(&group_labels(), json!({"kai.scheduler/queue": QUEUE, "runai/queue": QUEUE})),
            },
            "spec": {"queue": QUEUE, "priorityClassName": "osmo-high", "minMember": 1},
        })]
    );
    assert_eq!(
        posted(&requests, PODS),
        vec![expected_kai_pod(
            "train",
            0,
            true,
            1,
            json!([{"name": "file-0", "secret": {"secretName": secret_name, "defaultMode": 0o555}}]),
            json!([{"name": "file-0", "mountPath": "/workspace/run.sh", "subPath": "file", "readOnly": true}]),
        )]
    );

    // The kubelet's view drives the reports.
    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        json!({"phase": "Pending", "initContainerStatuses": [{
            "name": "osmo-init", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "PodInitializing"}}
        }]}),
    );
    let (k, status, ..) = h.status().await;
    assert_eq!((k, status), (key_of("train"), TaskStatus::Initializing));
    h.api.append_log(&pod_name(0), &["epoch 1", "epoch 2"]);
    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status("train", json!({"running": {}}), "Running"),
    );
    let (k, status, ..) = h.status().await;
    assert_eq!((k, status), (key_of("train"), TaskStatus::Running));
    h.api.append_log(&pod_name(0), &["epoch 3"]);
    h.api.close_log(&pod_name(0));
    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status(
            "train",
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            "Succeeded",
        ),
    );
    let (k, status, exit_code, _, lines) = h.status().await;
    assert_eq!(
        (k, status, exit_code),
        (key_of("train"), TaskStatus::Completed, Some(0))
    );
    // Every log line arrived before the final status.
    assert_eq!(lines, vec!["epoch 1", "epoch 2", "epoch 3"]);

    // Cleanup by OSMO's labels once the group finished.
    let selector = format!("osmo.workflow_uuid={WF_UUID},osmo.group_uuid={GROUP_UUID}");
    h.wait_request(|r| r.method == "DELETE" && r.path == SECRETS)
        .await;
    let deletes: Vec<(String, Option<String>)> = h
        .api
        .actions()
        .into_iter()
        .filter(|r| r.method == "DELETE" || (r.method == "GET" && r.path == SERVICES))
        .map(|r| (r.path.clone(), r.label_selector().map(str::to_string)))
        .collect();
    assert_eq!(
        deletes,
        vec![
            (PODS.to_string(), Some(selector.clone())),
            (KAI_PODGROUPS.to_string(), Some(selector.clone())),
            (SERVICES.to_string(), Some(selector.clone())),
            (SECRETS.to_string(), Some(selector.clone())),
        ]
    );
    assert!(h.api.objects(PODS).is_empty());
    assert!(h.api.objects(KAI_PODGROUPS).is_empty());
    assert!(h.api.objects(SECRETS).is_empty());
}

fn key_of(task: &str) -> TaskKey {
    key(task)
}

#[tokio::test]
async fn four_task_kai_group_objects_and_cancel_by_labels() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let names = ["master", "worker-1", "worker-2", "worker-3"];
    let tasks: Vec<TaskLaunch> = names
        .iter()
        .enumerate()
        .map(|(i, n)| task(n, i, i == 0))
        .collect();
    let job = h.create(group(tasks)).await;
    let seen = h.until_done(job).await;
    let scheduling = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                FromOperator::TaskStatus {
                    status: TaskStatus::Scheduling,
                    ..
                }
            )
        })
        .count();
    assert_eq!(scheduling, 4);

    let requests = h.api.actions();
    let service = format!("osmo-{GROUP_UUID}");
    assert_eq!(
        posts(&requests),
        vec![
            (KAI_PODGROUPS.to_string(), GROUP_UUID.to_string()),
            (PODS.to_string(), pod_name(0)),
            (PODS.to_string(), pod_name(1)),
            (PODS.to_string(), pod_name(2)),
            (PODS.to_string(), pod_name(3)),
            (SERVICES.to_string(), service.clone()),
        ]
    );
    assert_eq!(
        posted(&requests, KAI_PODGROUPS)[0]["spec"],
        json!({"queue": QUEUE, "priorityClassName": "osmo-high", "minMember": 4})
    );
    let pods = posted(&requests, PODS);
    for (index, name) in names.iter().enumerate() {
        assert_eq!(
            pods[index],
            expected_kai_pod(name, index, index == 0, 4, json!([]), json!([])),
            "pod of {name}"
        );
    }
    assert_eq!(
        posted(&requests, SERVICES),
        vec![json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": NS, "labels": group_labels()},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"osmo.group_uuid": GROUP_UUID}},
        })]
    );
    assert_eq!(
        super::names::task_host(
            &super::names::GroupNames::of(&group(Vec::new())),
            &task_uuid(1)
        ),
        format!("{}.osmo-{GROUP_UUID}", task_uuid(1))
    );

    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status("master", json!({"running": {}}), "Running"),
    );
    let (k, status, ..) = h.status().await;
    assert_eq!((k, status), (key_of("master"), TaskStatus::Running));

    h.api.clear_requests();
    h.next_job += 1;
    let cancel_job = h.next_job;
    h.send(ToOperator::CancelGroup {
        job_id: cancel_job,
        workflow_id: "train-7".into(),
        group: "train-group".into(),
        reason: "canceled by alice".into(),
    })
    .await;
    let seen = h.until_done(cancel_job).await;
    let mut canceled: Vec<TaskKey> = seen
        .iter()
        .filter_map(|m| match m {
            FromOperator::TaskStatus {
                key,
                status: TaskStatus::Failed,
                message: Some(message),
                ..
            } if message.contains("canceled by alice") => Some(key.clone()),
            _ => None,
        })
        .collect();
    canceled.sort();
    let mut expected: Vec<TaskKey> = names.iter().map(|n| key_of(n)).collect();
    expected.sort();
    assert_eq!(canceled, expected);

    let selector = "osmo.workflow_id=train-7,osmo.group_name=train-group".to_string();
    let deletes: Vec<(String, String, Option<String>)> = h
        .api
        .actions()
        .into_iter()
        .filter(|r| r.method == "DELETE" || r.path == SERVICES)
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.label_selector().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        deletes,
        vec![
            ("DELETE".into(), PODS.to_string(), Some(selector.clone())),
            (
                "DELETE".into(),
                KAI_PODGROUPS.to_string(),
                Some(selector.clone())
            ),
            ("GET".into(), SERVICES.to_string(), Some(selector.clone())),
            ("DELETE".into(), format!("{SERVICES}/{service}"), None),
            ("DELETE".into(), SECRETS.to_string(), Some(selector)),
        ]
    );
    assert!(h.api.objects(PODS).is_empty());
    assert!(h.api.objects(SERVICES).is_empty());
    assert!(h.api.objects(KAI_PODGROUPS).is_empty());
}

#[tokio::test]
async fn volcano_group_uses_a_volcano_podgroup() {
    let mut h = Harness::start(SchedulerSettings::for_type(SchedulerType::Volcano)).await;
    h.hello().await;
    let job = h
        .create(group(vec![task("a", 0, true), task("b", 1, false)]))
        .await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert_eq!(
        posted(&requests, VOLCANO_PODGROUPS),
        vec![json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": GROUP_UUID, "namespace": NS, "labels": group_labels()},
            "spec": {"queue": QUEUE, "priorityClassName": "osmo-high", "minMember": 2},
        })]
    );
    for pod in posted(&requests, PODS) {
        assert_eq!(pod["spec"]["schedulerName"], "volcano");
        assert_eq!(
            pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"],
            GROUP_UUID
        );
        assert!(pod["metadata"]["labels"]["kai.scheduler/queue"].is_null());
    }
    assert!(posted(&requests, KAI_PODGROUPS).is_empty());
}

#[tokio::test]
async fn default_scheduler_runs_single_tasks_and_refuses_gangs_without_coscheduling() {
    let mut h = Harness::start(SchedulerSettings::for_type(SchedulerType::Default)).await;
    h.hello().await;
    let job = h.create(group(vec![task("solo", 0, true)])).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert_eq!(posts(&requests), vec![(PODS.to_string(), pod_name(0))]);
    let pod = &posted(&requests, PODS)[0];
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert!(pod["metadata"]["annotations"]["pod-group-name"].is_null());

    h.api.clear_requests();
    let mut gang = group(vec![
        task("a", 1, true),
        task("b", 2, false),
        task("c", 3, false),
    ]);
    gang.group = "gang".into();
    gang.meta.group_uuid = "11111111-0000-4000-8000-000000000003".into();
    let job = h.create(gang).await;
    let seen = h.until_done(job).await;
    let failed: Vec<(String, Option<i32>, String)> = seen
        .iter()
        .filter_map(|m| match m {
            FromOperator::TaskStatus {
                key,
                status: TaskStatus::FailedBackendError,
                exit_code,
                message: Some(message),
                ..
            } => Some((key.task.clone(), *exit_code, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 3, "{seen:?}");
    for (_, code, message) in &failed {
        assert_eq!(*code, Some(3001));
        assert!(message.contains("scheduler_type 'default'"), "{message}");
        assert!(message.contains("3 tasks"), "{message}");
    }
    assert!(
        posts(&h.api.actions()).is_empty(),
        "nothing created for a refused gang"
    );

    // With co-scheduling installed, the same gang gets a PodGroup.
    let mut settings = SchedulerSettings::for_type(SchedulerType::Default);
    settings.coscheduling = true;
    let mut h = Harness::start(settings).await;
    h.hello().await;
    let job = h
        .create(group(vec![task("a", 1, true), task("b", 2, false)]))
        .await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert_eq!(
        posted(&requests, COSCHED_PODGROUPS)[0]["spec"],
        json!({"minMember": 2, "scheduleTimeoutSeconds": 30})
    );
    for pod in posted(&requests, PODS) {
        assert_eq!(
            pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"],
            GROUP_UUID
        );
    }
}

#[tokio::test]
async fn the_backend_scheduler_in_the_launch_wins_over_the_executor_config() {
    // Configured for KAI; the backend's settings travel in each launch.
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let mut gang = group(vec![task("a", 0, true), task("b", 1, false)]);
    gang.meta.scheduler = Some(LaunchScheduler {
        scheduler_type: gantry_storage::SchedulerType::Volcano,
        scheduler_name: "volcano-custom".into(),
        scheduler_timeout_seconds: 90,
    });
    let job = h.create(gang).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert!(posted(&requests, KAI_PODGROUPS).is_empty());
    let gangs = posted(&requests, VOLCANO_PODGROUPS);
    assert_eq!(gangs.len(), 1, "{:#?}", posts(&requests));
    assert_eq!(gangs[0]["spec"]["minMember"], 2);
    assert_eq!(gangs[0]["metadata"]["name"], GROUP_UUID);
    let pods = posted(&requests, PODS);
    assert_eq!(pods.len(), 2);
    for pod in pods {
        assert_eq!(pod["spec"]["schedulerName"], "volcano-custom");
        assert_eq!(
            pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"],
            GROUP_UUID
        );
        assert!(pod["metadata"]["labels"]["kai.scheduler/queue"].is_null());
    }

    // Cancel finds the group's Volcano PodGroup, not only the configured kind.
    h.api.clear_requests();
    h.next_job += 1;
    let cancel_job = h.next_job;
    h.send(ToOperator::CancelGroup {
        job_id: cancel_job,
        workflow_id: "train-7".into(),
        group: "train-group".into(),
        reason: "canceled by alice".into(),
    })
    .await;
    h.until_done(cancel_job).await;
    let deleted: Vec<String> = h
        .api
        .actions()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert!(
        deleted.contains(&VOLCANO_PODGROUPS.to_string()),
        "{deleted:?}"
    );
    assert!(h.api.objects(VOLCANO_PODGROUPS).is_empty());

    // `default` with no name: plain pods for the default scheduler.
    h.api.clear_requests();
    let mut solo = group(vec![task("solo", 2, true)]);
    solo.group = "solo".into();
    solo.meta.group_uuid = "11111111-0000-4000-8000-000000000004".into();
    solo.meta.scheduler = Some(LaunchScheduler {
        scheduler_type: gantry_storage::SchedulerType::Default,
        scheduler_name: String::new(),
        scheduler_timeout_seconds: 30,
    });
    let job = h.create(solo).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert_eq!(posts(&requests), vec![(PODS.to_string(), pod_name(2))]);
    let pod = &posted(&requests, PODS)[0];
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert!(pod["metadata"]["annotations"]["pod-group-name"].is_null());
}

#[tokio::test]
async fn failures_and_restart_adoption() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let job = h
        .create(group(vec![task("a", 0, true), task("b", 1, false)]))
        .await;
    h.until_done(job).await;
    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status("a", json!({"running": {}}), "Running"),
    );
    let (k, status, ..) = h.status().await;
    assert_eq!((k, status), (key_of("a"), TaskStatus::Running));
    h.api.set_pod_status(
        PODS,
        &pod_name(1),
        container_status(
            "b",
            json!({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}),
            "Pending",
        ),
    );
    let (k, status, code, message, _) = h.status().await;
    assert_eq!(
        (k, status, code),
        (key_of("b"), TaskStatus::FailedImagePull, Some(301))
    );
    assert!(message.is_some_and(|m| m.contains("ImagePullBackOff")));

    // A new operator (after a restart) finds the running task by its labels.
    h.operator.shutdown().await;
    let api = h.api;
    let mut again = Harness::on(api, SchedulerSettings::default()).await;
    assert_eq!(again.hello().await, vec![key_of("a")]);
    // It repeats what it sees (the control plane drops repeats): a's latest
    // status, and b's final one if its watch saw it after connecting.
    loop {
        let (k, status, ..) = again.status().await;
        if (&k, status) == (&key_of("a"), TaskStatus::Running) {
            break;
        }
        assert_eq!((k, status), (key_of("b"), TaskStatus::FailedImagePull));
    }
    again.api.close_log(&pod_name(0));
    again.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status(
            "a",
            json!({"terminated": {"exitCode": 3, "reason": "Error", "message": "bad"}}),
            "Failed",
        ),
    );
    let (k, status, code, ..) = loop {
        let report = again.status().await;
        if report.0 == key_of("a") {
            break report;
        }
    };
    assert_eq!(
        (k, status, code),
        (key_of("a"), TaskStatus::Failed, Some(3))
    );
    // Both tasks are final: the group is cleaned up by its UUID labels.
    let selector = format!("osmo.workflow_uuid={WF_UUID},osmo.group_uuid={GROUP_UUID}");
    again
        .wait_request(|r| {
            r.method == "DELETE" && r.path == PODS && r.label_selector() == Some(&selector)
        })
        .await;
}

#[tokio::test]
async fn nodes_inventory_and_pool_queues() {
    let api = FakeApi::start().await;
    api.insert(
        "/api/v1/nodes",
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "96", "memory": "1Ti", "ephemeral-storage": "2Ti", "nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }),
    );
    let h = Harness::on(api, SchedulerSettings::default()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let nodes = loop {
        let nodes = h.operator.nodes();
        if !nodes.is_empty() {
            break nodes;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node inventory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].gpu_count, 8);
    assert_eq!(nodes[0].allocatable_cpu_millis, 96_000);
    assert_eq!(nodes[0].gpu_model.as_deref(), Some("NVIDIA-H100-80GB-HBM3"));
    assert!(nodes[0].ready);

    let pools = [PoolQueue {
        pool: "gpu-pool".into(),
        gpu_guarantee: 16,
        gpu_maximum: 32,
        gpu_weight: 2,
    }];
    h.operator.sync_pools(&pools).await.expect("first sync");
    let queues = h.api.objects("/apis/scheduling.run.ai/v2/queues");
    assert_eq!(queues.len(), 2);
    let pool_queue = queues
        .iter()
        .find(|q| q["metadata"]["name"] == QUEUE)
        .expect("pool queue");
    assert_eq!(
        pool_queue["spec"]["parentQueue"],
        "osmo-default-gantry-test"
    );
    assert_eq!(
        pool_queue["spec"]["resources"]["gpu"],
        json!({"quota": 16, "limit": 32, "overQuotaWeight": 2})
    );
    let classes: BTreeMap<String, i64> = h
        .api
        .objects("/apis/scheduling.k8s.io/v1/priorityclasses")
        .iter()
        .map(|c| {
            (
                c["metadata"]["name"].as_str().unwrap_or("").to_string(),
                c["value"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        classes,
        BTreeMap::from([
            ("osmo-high".into(), 125),
            ("osmo-low".into(), 50),
            ("osmo-normal".into(), 100)
        ])
    );
    // Again after a pool change: replaced in place, not duplicated.
    h.api.clear_requests();
    let changed = [PoolQueue {
        gpu_guarantee: 8,
        ..pools[0].clone()
    }];
    h.operator.sync_pools(&changed).await.expect("second sync");
    assert!(posts(&h.api.actions()).is_empty());
    let puts = h.api.actions().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 5);
    let queues = h.api.objects("/apis/scheduling.run.ai/v2/queues");
    let pool_queue = queues
        .iter()
        .find(|q| q["metadata"]["name"] == QUEUE)
        .expect("pool queue");
    assert_eq!(pool_queue["spec"]["resources"]["gpu"]["quota"], 8);
}

#[tokio::test]
async fn pod_templates_merge_and_cannot_move_system_labels() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let mut templated = task("train", 0, true);
    templated.placement.pod_templates = vec![
        json!({"metadata": {"labels": {"osmo.task_name": "forged", "team": "robotics"}},
               "spec": {"nodeSelector": {"zone": "{{ WF_POOL }}-a"},
                        "containers": [{"name": "{{ USER_CONTAINER_NAME }}",
                                        "resources": {"requests": {"cpu": "{% if USER_CPU > 4 %}4{% else %}{{ USER_CPU }}{% endif %}"}}}]}}),
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}),
    ];
    let job = h.create(group(vec![templated])).await;
    h.until_done(job).await;
    let pod = &posted(&h.api.actions(), PODS)[0];
    assert_eq!(pod["metadata"]["labels"]["osmo.task_name"], "train");
    assert_eq!(pod["metadata"]["labels"]["team"], "robotics");
    assert_eq!(pod["spec"]["nodeSelector"]["zone"], "gpu-pool-a");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "4"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "8"
    );
    assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn privileged_host_network_and_host_mounts_reach_the_pod_as_osmo_sets_them() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let mut sim = task("train", 0, true);
    sim.placement.pod_templates = crate::protocol::host_access::pod_template(
        true,
        true,
        &["/data".into(), "/scratch:/mnt/scratch".into()],
    )
    .into_iter()
    .collect();
    let plain = task("worker", 1, false);
    let job = h.create(group(vec![sim, plain])).await;
    h.until_done(job).await;
    let pods = posted(&h.api.actions(), PODS);
    let pod = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["osmo.task_name"] == "train")
        .expect("train pod");
    assert_eq!(pod["spec"]["hostNetwork"], true);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["securityContext"], json!({"privileged": true}));
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.contains(&json!({"name": "host-mount-0", "mountPath": "/data"})));
    assert!(mounts.contains(&json!({"name": "host-mount-1", "mountPath": "/mnt/scratch"})));
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.contains(&json!({"name": "host-mount-0", "hostPath": {"path": "/data"}})));
    assert!(volumes.contains(&json!({"name": "host-mount-1", "hostPath": {"path": "/scratch"}})));
    // The init container gets none of it.
    assert!(pod["spec"]["initContainers"][0]
        .get("securityContext")
        .is_none());
    // A task that asks for nothing gets nothing.
    let worker = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["osmo.task_name"] == "worker")
        .expect("worker pod");
    assert!(worker["spec"].get("hostNetwork").is_none());
    assert!(worker["spec"]["containers"][0]
        .get("securityContext")
        .is_none());
    assert!(!worker["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v.get("hostPath").is_some()));
}

/// A task's `credentials:` become one Secret read by `secretKeyRef` and
/// mounted key by key; the user's registry credentials become the group's
/// `kubernetes.io/dockerconfigjson` pull Secret, named by every pod; no
/// value is on a pod.
#[tokio::test]
async fn credentials_become_secret_refs_mounts_and_an_image_pull_secret() {
    use base64::Engine;
    use gantry_storage::extras::{LaunchCredential, RegistryAuth};
    let engine = base64::engine::general_purpose::STANDARD;
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let mut train = task("train", 0, true);
    train.image = "nvcr.io/nvidia/pytorch:24.01".into();
    train
        .environment
        .insert("HF_TOKEN".into(), "from-the-spec".into());
    train.extras.credentials = vec![
        LaunchCredential {
            name: "hf".into(),
            mount: None,
            env: [("HF_TOKEN".to_string(), "token".to_string())].into(),
            values: [("token".to_string(), "hf_SECRET_VALUE".to_string())].into(),
        },
        LaunchCredential {
            name: "aws".into(),
            mount: Some("/root/.aws".into()),
            env: BTreeMap::new(),
            values: [
                ("config".to_string(), "[default]".to_string()),
                ("credentials".to_string(), "AWS_SECRET_VALUE".to_string()),
            ]
            .into(),
        },
    ];
    train.extras.registry_auths = vec![RegistryAuth {
        scope: "nvcr.io".into(),
        username: "$oauthtoken".into(),
        password: "NGC_SECRET_VALUE".into(),
    }];
    let plain = task("worker", 1, false);
    let job = h.create(group(vec![train, plain])).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    let secrets = posted(&requests, SECRETS);
    let by_name = |name: &str| {
        secrets
            .iter()
            .find(|secret| secret["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Secret {name}: {secrets:?}"))
            .clone()
    };
    let values = by_name(&format!("{GROUP_UUID}-user-secrets"));
    assert_eq!(values["type"], "Opaque");
    let decoded = |value: &Value| {
        String::from_utf8(
            engine
                .decode(value.as_str().expect("base64 text"))
                .expect("base64"),
        )
        .expect("utf-8")
    };
    assert_eq!(decoded(&values["data"]["hf.token"]), "hf_SECRET_VALUE");
    assert_eq!(
        decoded(&values["data"]["aws.credentials"]),
        "AWS_SECRET_VALUE"
    );
    let pull = by_name(&format!("{GROUP_UUID}-user"));
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let config: Value =
        serde_json::from_str(&decoded(&pull["data"][".dockerconfigjson"])).expect("docker config");
    assert_eq!(
        decoded(&config["auths"]["nvcr.io"]["auth"]),
        "$oauthtoken:NGC_SECRET_VALUE"
    );
    let pods = posted(&requests, PODS);
    for pod in &pods {
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": format!("{GROUP_UUID}-user")}]),
            "every pod of the group pulls with it"
        );
        let text = pod.to_string();
        for secret in ["hf_SECRET_VALUE", "AWS_SECRET_VALUE", "NGC_SECRET_VALUE"] {
            assert!(!text.contains(secret), "a value on a pod: {text}");
        }
    }
    let pod = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["osmo.task_name"] == "train")
        .expect("train pod");
    let container = &pod["spec"]["containers"][0];
    let env = container["env"].as_array().expect("env");
    let hf: Vec<&Value> = env.iter().filter(|e| e["name"] == "HF_TOKEN").collect();
    assert_eq!(
        hf,
        vec![&json!({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": format!("{GROUP_UUID}-user-secrets"), "key": "hf.token", "optional": false}}})],
        "the credential's variable replaces the spec's"
    );
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for key in ["config", "credentials"] {
        assert!(
            mounts.contains(&json!({"name": "user-credentials", "mountPath": format!("/root/.aws/{key}"), "subPath": format!("aws.{key}"), "readOnly": true})),
            "{mounts:?}"
        );
    }
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.contains(&json!({"name": "user-credentials", "secret": {"secretName": format!("{GROUP_UUID}-user-secrets"), "defaultMode": 0o444}})));
    let worker = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["osmo.task_name"] == "worker")
        .expect("worker pod");
    assert!(!worker.to_string().contains("user-credentials"));
}

/// OSMO's 35 shared cases. The fixture belongs to the OSMO reference
/// material, which sits in `shared/osmo/` beside the repository (it is not
/// copied into the project); the test looks for it in the ancestors of the
/// crate directory.
fn golden_cases_path() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/osmo/pod_status_cases.json"))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "shared/osmo/pod_status_cases.json not found beside {}; the golden pod-status cases need OSMO's reference material",
                manifest.display()
            )
        })
}

/// Turns a case's input (OSMO's snake_case pod summary) into a Pod.
fn case_pod(input: &Value, now_ms: i64) -> Pod {
    let time = |text: &str| {
        let minutes: i64 = text
            .strip_prefix("now-")
            .and_then(|t| t.strip_suffix('m'))
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let ms = now_ms - minutes * 60_000;
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .expect("time")
            .to_string()
    };
    let container = |c: &Value| {
        let mut state = c["state"].clone();
        if let Some(terminated) = state.get_mut("terminated") {
            if let Some(code) = terminated.get("exit_code").cloned() {
                terminated["exitCode"] = code;
            }
            if let Some(object) = terminated.as_object_mut() {
                object.remove("exit_code");
            }
        }
        json!({"name": c["name"], "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": state})
    };
    let containers = |key: &str| -> Value {
        input[key]
            .as_array()
            .map(|list| Value::Array(list.iter().map(container).collect()))
            .unwrap_or(Value::Null)
    };
    let conditions = input["conditions"].as_array().map(|list| {
        list.iter()
            .map(|c| {
                json!({
                    "type": c["type"], "status": c["status"], "reason": c["reason"], "message": c["message"],
                    "lastTransitionTime": time(c["last_transition_time"].as_str().unwrap_or("now")),
                })
            })
            .collect::<Vec<_>>()
    });
    serde_json::from_value(json!({
        "metadata": {"name": input.get("pod_name").cloned().unwrap_or(json!("test-pod"))},
        "status": {
            "phase": input["phase"],
            "reason": input["reason"],
            "message": input["message"],
            "conditions": conditions,
            "containerStatuses": containers("container_statuses"),
            "initContainerStatuses": containers("init_container_statuses"),
        }
    }))
    .expect("case input is a Pod")
}

#[test]
fn osmo_golden_pod_status_cases() {
    let path = golden_cases_path();
    let text = std::fs::read_to_string(&path).expect("read cases");
    let fixture: Value = serde_json::from_str(&text).expect("cases are JSON");
    let cases = fixture["test_cases"].as_array().expect("test_cases");
    assert_eq!(cases.len(), 35);
    let now_ms = 1_790_000_000_000;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let expected = &case["expected"];
        let pod = case_pod(&case["input"], now_ms);
        let Some(outcome) = pod_status(&pod, now_ms) else {
            failures.push(format!("{name}: no outcome"));
            continue;
        };
        let want_status: TaskStatus = expected["status"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("expected status parses");
        let want_code = expected["exit_code"].as_i64().map(|c| c as i32);
        if outcome.status != want_status || outcome.exit_code != want_code {
            failures.push(format!(
                "{name}: got {} {:?}, want {want_status} {want_code:?}",
                outcome.status, outcome.exit_code
            ));
        }
        for fragment in expected["message_contains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let fragment = fragment.as_str().unwrap_or("");
            if !outcome.message.as_deref().unwrap_or("").contains(fragment) {
                failures.push(format!(
                    "{name}: message {:?} lacks {fragment:?}",
                    outcome.message
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 35 cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn pods_without_news_and_project_cases() {
    let pod = |status: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    };
    let now = 1_790_000_000_000;
    assert_eq!(pod_status(&pod(json!({"phase": "Unknown"})), now), None);
    // The init container running means the pod is initializing.
    let initializing = pod(json!({"phase": "Pending", "initContainerStatuses": [{
        "name": "osmo-init", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}
    }]}));
    assert_eq!(
        pod_status(&initializing, now).map(|o| o.status),
        Some(TaskStatus::Initializing)
    );
    // Kubernetes marks preemption as a DisruptionTarget with a preemption reason.
    let preempted = pod(json!({"phase": "Running", "conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "preempted by high"
    }]}));
    assert_eq!(
        pod_status(&preempted, now).map(|o| (o.status, o.exit_code)),
        Some((TaskStatus::FailedPreempted, Some(3006)))
    );
}

/// The example manifests parse as the Kubernetes objects they claim to be,
/// and the operator's RBAC allows every call the executor makes.
#[test]
fn operator_manifests_parse_and_grant_what_the_executor_uses() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    use serde::Deserialize;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ops/kubernetes/operator");
    let mut rules = Vec::new();
    let mut deployment = None;
    for file in [
        "namespaces.yaml",
        "rbac.yaml",
        "deployment.yaml",
        "secrets.example.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("manifest");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).expect("YAML document");
            let kind = value["kind"].as_str().unwrap_or("").to_string();
            match kind.as_str() {
                "Role" => rules.extend(
                    serde_json::from_value::<Role>(value)
                        .expect("Role")
                        .rules
                        .unwrap_or_default(),
                ),
                "ClusterRole" => rules.extend(
                    serde_json::from_value::<ClusterRole>(value)
                        .expect("ClusterRole")
                        .rules
                        .unwrap_or_default(),
                ),
                "Deployment" => {
                    deployment =
                        Some(serde_json::from_value::<Deployment>(value).expect("Deployment"))
                }
                "Namespace" | "ServiceAccount" | "RoleBinding" | "ClusterRoleBinding"
                | "Secret" => {}
                other => panic!("unexpected kind {other:?} in {file}"),
            }
        }
    }
    let allowed = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|rule| {
            rule.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g == group))
                && rule
                    .resources
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|r| r == resource))
                && rule.verbs.iter().any(|v| v == verb)
        })
    };
    let needed = [
        ("", "pods", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "deletecollection"),
        ("", "pods/log", "get"),
        ("", "pods/exec", "create"),
        ("", "pods/portforward", "create"),
        ("", "services", "create"),
        ("", "services", "list"),
        ("", "services", "delete"),
        ("", "secrets", "create"),
        ("", "secrets", "deletecollection"),
        ("scheduling.run.ai", "podgroups", "create"),
        ("scheduling.run.ai", "podgroups", "deletecollection"),
        ("scheduling.volcano.sh", "podgroups", "create"),
        ("scheduling.x-k8s.io", "podgroups", "create"),
        ("", "nodes", "watch"),
        ("scheduling.run.ai", "queues", "update"),
        ("scheduling.k8s.io", "priorityclasses", "create"),
        ("scheduling.k8s.io", "priorityclasses", "update"),
    ];
    for (group, resource, verb) in needed {
        assert!(
            allowed(group, resource, verb),
            "RBAC lacks {verb} {group}/{resource}"
        );
    }
    let deployment = deployment.expect("a Deployment");
    let spec = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let args = spec.containers[0].args.clone().unwrap_or_default();
    for flag in [
        "--executor=kubernetes",
        "--namespace=gantry-workflows",
        "--token-file=/etc/gantry/token/token",
    ] {
        assert!(args.iter().any(|a| a == flag), "deployment lacks {flag}");
    }
}

#[test]
fn command_and_args_reach_kubelet_verbatim_for_its_var_expansion() {
    // kubelet expands `$(VAR)` in a container's command and args from its
    // env; the executor must pass them through untouched (no shell, no
    // quoting, nothing after `--` rewritten) with the task's environment on
    // the container, so the user's command sees kubelet's expansion.
    let mut single = task("refs", 0, true);
    single.command = vec!["sh".into()];
    single.args = vec![
        "$(FILE_PATH)".into(),
        "$$(FILE_PATH)".into(),
        "--data".into(),
    ];
    single
        .environment
        .insert("FILE_PATH".into(), "/tmp/run.sh".into());
    let scheduler = SchedulerSettings::default();
    let ctx = super::manifests::BuildContext {
        namespace: NS,
        scheduler: &scheduler,
        runtime_image: "gantry:test",
    };
    let built = super::manifests::build_group(&ctx, &group(vec![single]))
        .map_err(|e| e.to_string())
        .expect("built");
    let pod = serde_json::to_value(&built.pods[0].1).expect("json");
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let user = args.iter().position(|a| *a == "--").expect("separator") + 1;
    assert_eq!(
        &args[user..],
        ["sh", "$(FILE_PATH)", "$$(FILE_PATH)", "--data"]
    );
    assert!(
        args[..user].iter().all(|a| !a.contains('$')),
        "the runtime's own arguments hold no references: {args:?}"
    );
    let env = container["env"].as_array().expect("env");
    assert!(
        env.contains(&json!({"name": "FILE_PATH", "value": "/tmp/run.sh"})),
        "{env:?}"
    );
}

const TOPOLOGIES: &str = "/apis/kai.scheduler/v1alpha1/topologies";
const TOPOLOGY_NAME: &str = "osmo-pool-gantry-test-gpu-pool-topology";
const ZONE: &str = "topology.kubernetes.io/zone";
const CLIQUE: &str = "nvidia.com/gpu-clique";

/// A task asking for `(key, group, required)` levels of the pool's
/// zone → gpu-clique topology, as the dispatcher launches it.
fn topology_task(
    name: &str,
    index: usize,
    lead: bool,
    levels: &[(&str, &str, bool)],
) -> TaskLaunch {
    let mut launched = task(name, index, lead);
    launched.extras.topology = levels
        .iter()
        .map(
            |(key, group, required)| gantry_storage::extras::TopologyRequirement {
                key: key.to_string(),
                group: group.to_string(),
                required: *required,
                label: if *key == "zone" { ZONE } else { CLIQUE }.to_string(),
            },
        )
        .collect();
    launched.extras.topology_levels = vec![ZONE.to_string(), CLIQUE.to_string()];
    launched
}

/// OSMO's "multiple NVL72 racks in the same zone": every task shares the
/// zone (the PodGroup's own constraint), each model's shards a gpu-clique
/// (a subgroup each, with its shards as members), and the pool's
/// `Topology` lists the levels, coarsest first.
#[tokio::test]
async fn topology_requirements_become_the_pod_groups_constraint_and_subgroups() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let tasks = vec![
        topology_task(
            "m1-a",
            0,
            true,
            &[("zone", "wf", true), ("gpu-clique", "model-1", true)],
        ),
        topology_task(
            "m1-b",
            1,
            false,
            &[("zone", "wf", true), ("gpu-clique", "model-1", true)],
        ),
        topology_task(
            "m2-a",
            2,
            false,
            &[("zone", "wf", true), ("gpu-clique", "model-2", false)],
        ),
    ];
    let job = h.create(group(tasks)).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    let order: Vec<String> = posts(&requests).into_iter().map(|(path, _)| path).collect();
    assert_eq!(
        &order[..2],
        [TOPOLOGIES, KAI_PODGROUPS],
        "the Topology first"
    );
    assert_eq!(
        posted(&requests, TOPOLOGIES),
        vec![json!({
            "apiVersion": "kai.scheduler/v1alpha1", "kind": "Topology",
            "metadata": {"name": TOPOLOGY_NAME, "labels": {"osmo.namespace": NS, "osmo.pool": "gpu-pool"}},
            "spec": {"levels": [{"nodeLabel": ZONE}, {"nodeLabel": CLIQUE}]},
        })]
    );
    let spec = &posted(&requests, KAI_PODGROUPS)[0]["spec"];
    assert_eq!(
        *spec,
        json!({
            "queue": QUEUE, "priorityClassName": "osmo-high",
            "topologyConstraint": {"requiredTopologyLevel": ZONE, "topology": TOPOLOGY_NAME},
            "subGroups": [
                {"name": "wf-model-1", "minMember": 2,
                 "topologyConstraint": {"requiredTopologyLevel": CLIQUE, "topology": TOPOLOGY_NAME}},
                {"name": "wf-model-2", "minMember": 1,
                 "topologyConstraint": {"preferredTopologyLevel": CLIQUE, "topology": TOPOLOGY_NAME}},
            ],
        }),
        "no minMember beside subgroups: KAI counts them per subgroup"
    );
    let subgroups: Vec<(String, String)> = posted(&requests, PODS)
        .iter()
        .map(|pod| {
            (
                pod["metadata"]["annotations"]["osmo.task_name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                pod["metadata"]["labels"]["kai.scheduler/subgroup-name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        subgroups,
        [
            ("m1-a".to_string(), "wf-model-1".to_string()),
            ("m1-b".to_string(), "wf-model-1".to_string()),
            ("m2-a".to_string(), "wf-model-2".to_string()),
        ]
    );
}

/// The tree's other shapes: one shared clique (no subgroups, `minMember`
/// kept); two zones with cliques below (inner subgroups with parents);
/// a zone with a single clique passes straight to it.
#[test]
fn topology_trees_of_every_shape() {
    let plan_of = |tasks: Vec<TaskLaunch>| {
        super::topology::plan(&group(tasks), NS)
            .expect("plan")
            .expect("topology")
    };
    let shared = plan_of(vec![
        topology_task("a", 0, true, &[("gpu-clique", "default", true)]),
        topology_task("b", 1, false, &[("gpu-clique", "default", true)]),
    ]);
    assert_eq!(
        shared.shared.as_ref().map(|c| c.label.as_str()),
        Some(CLIQUE)
    );
    assert!(shared.subgroups.is_empty() && shared.task_subgroups.is_empty());

    let nested = plan_of(vec![
        topology_task(
            "a",
            0,
            true,
            &[("zone", "z1", true), ("gpu-clique", "c1", true)],
        ),
        topology_task(
            "b",
            1,
            false,
            &[("zone", "z1", true), ("gpu-clique", "c2", true)],
        ),
        topology_task(
            "c",
            2,
            false,
            &[("zone", "z2", true), ("gpu-clique", "c1", true)],
        ),
        topology_task(
            "d",
            3,
            false,
            &[("zone", "z2", true), ("gpu-clique", "c1", true)],
        ),
    ]);
    assert_eq!(nested.shared, None);
    let shape: Vec<(String, Option<String>, usize, String)> = nested
        .subgroups
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.parent.clone(),
                s.min_member,
                s.constraint.label.clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("z1".into(), None, 2, ZONE.into()),
            ("z1-c1".into(), Some("z1".into()), 1, CLIQUE.into()),
            ("z1-c2".into(), Some("z1".into()), 1, CLIQUE.into()),
            // z2 has one clique: its constraint is enough (it lies in z2).
            ("z2-c1".into(), None, 2, CLIQUE.into()),
        ]
    );
    assert_eq!(nested.task_subgroups["c"], "z2-c1");

    // A task without topology joins no subgroup.
    let mixed = plan_of(vec![
        topology_task("a", 0, true, &[("gpu-clique", "x", true)]),
        topology_task("b", 1, false, &[("gpu-clique", "y", true)]),
        task("c", 2, false),
    ]);
    assert_eq!(mixed.subgroups.len(), 2);
    assert!(!mixed.task_subgroups.contains_key("c"));
    assert!(super::topology::plan(&group(vec![task("a", 0, true)]), NS)
        .expect("plan")
        .is_none());
}

/// The pool's levels changed since its `Topology` was made: KAI's levels
/// are immutable, so it is replaced; an unchanged one is kept. A scheduler
/// other than KAI cannot place by topology: the group fails, saying so.
#[tokio::test]
async fn a_changed_pool_topology_is_replaced_and_other_schedulers_refuse_topology() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let job = h
        .create(group(vec![topology_task(
            "a",
            0,
            true,
            &[("gpu-clique", "g", true)],
        )]))
        .await;
    h.until_done(job).await;
    // Again with the same levels: kept (no delete, no second create).
    h.api.clear_requests();
    let mut again = group(vec![topology_task(
        "b",
        1,
        true,
        &[("gpu-clique", "g", true)],
    )]);
    again.meta.group_uuid = "11111111-0000-4000-8000-000000000004".into();
    again.group = "again".into();
    let job = h.create(again).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    assert_eq!(
        posted(&requests, KAI_PODGROUPS).len(),
        1,
        "the group was created"
    );
    assert!(posted(&requests, TOPOLOGIES).is_empty());
    assert!(!requests.iter().any(|r| r.method == "DELETE"));
    // The pool lost its zone level: replaced.
    h.api.clear_requests();
    let mut changed = topology_task("c", 2, true, &[("gpu-clique", "g", true)]);
    changed.extras.topology_levels = vec![CLIQUE.to_string()];
    let mut later = group(vec![changed]);
    later.meta.group_uuid = "11111111-0000-4000-8000-000000000005".into();
    later.group = "later".into();
    let job = h.create(later).await;
    h.until_done(job).await;
    let requests = h.api.actions();
    let calls: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert!(
        calls.contains(&(
            "DELETE".to_string(),
            format!("{TOPOLOGIES}/{TOPOLOGY_NAME}")
        )),
        "{calls:?}"
    );
    assert_eq!(
        posted(&requests, TOPOLOGIES)[0]["spec"],
        json!({"levels": [{"nodeLabel": CLIQUE}]})
    );

    let mut h = Harness::start(SchedulerSettings::for_type(SchedulerType::Volcano)).await;
    h.hello().await;
    let job = h
        .create(group(vec![topology_task(
            "a",
            0,
            true,
            &[("gpu-clique", "g", true)],
        )]))
        .await;
    let seen = h.until_done(job).await;
    let message = seen
        .iter()
        .find_map(|m| match m {
            FromOperator::TaskStatus {
                status: TaskStatus::FailedBackendError,
                message: Some(message),
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no failure: {seen:?}"));
    assert!(message.contains("only the kai scheduler"), "{message}");
    assert!(posts(&h.api.actions()).is_empty(), "nothing created");
}
