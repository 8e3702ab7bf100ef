//! The executor against an API server that misbehaves as real ones do:
//! throttled (429 with `Retry-After`), failing (500) and slow writes,
//! replace conflicts (409), watches that expire (410, a relist) or drop,
//! bookmarks, and pods that end OOMKilled. Every task report arrives, once.

use super::*;
use crate::operator::kubernetes::fake_api::Fault;

/// Reports until each of `keys` has its final status: the statuses each
/// task was reported with, in order.
async fn reports_until_final(
    h: &mut Harness,
    keys: &[TaskKey],
) -> BTreeMap<String, Vec<TaskStatus>> {
    let mut seen: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
    while keys.iter().any(|key| {
        !seen
            .get(&key.task)
            .and_then(|s| s.last())
            .is_some_and(|s| s.is_finished())
    }) {
        let (key, status, ..) = h.status().await;
        seen.entry(key.task).or_default().push(status);
    }
    seen
}

#[tokio::test]
async fn faults_of_the_api_server_lose_and_repeat_no_report() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    // The first pod create is throttled, the PodGroup's fails twice, the
    // second pod's is slow.
    h.api.fail(
        "POST",
        PODS,
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        1,
    );
    h.api.fail(
        "POST",
        KAI_PODGROUPS,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        2,
    );
    h.api
        .fail("POST", PODS, Fault::Delay(Duration::from_millis(800)), 1);
    let job = h
        .create(group(vec![task("a", 0, true), task("b", 1, false)]))
        .await;
    let seen = h.until_done(job).await;
    let scheduling: Vec<&TaskKey> = seen
        .iter()
        .filter_map(|m| match m {
            FromOperator::TaskStatus {
                key,
                status: TaskStatus::Scheduling,
                ..
            } => Some(key),
            FromOperator::TaskStatus { status, .. } => panic!("{status} before the pods ran"),
            _ => None,
        })
        .collect();
    assert_eq!(scheduling, vec![&key_of("a"), &key_of("b")]);
    assert_eq!(h.api.objects(PODS).len(), 2, "both pods despite the faults");
    assert_eq!(h.api.objects(KAI_PODGROUPS).len(), 1);
    let tries = |path: &str| {
        h.api
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .count()
    };
    assert_eq!((tries(PODS), tries(KAI_PODGROUPS)), (3, 3), "retried");

    // The watch expires; meanwhile both pods start. The relist reports each once.
    let calls = |api: &FakeApi, watch: bool| {
        api.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == PODS && r.is_watch() == watch)
            .count()
    };
    let (lists, watches) = (calls(&h.api, false), calls(&h.api, true));
    h.api.expire_watches();
    for (index, name) in [(0, "a"), (1, "b")] {
        h.api.set_pod_status(
            PODS,
            &pod_name(index),
            container_status(name, json!({"running": {}}), "Running"),
        );
    }
    let mut running = Vec::new();
    for _ in 0..2 {
        let (key, status, ..) = h.status().await;
        running.push((key.task, status));
    }
    running.sort();
    assert_eq!(
        running,
        vec![
            ("a".to_string(), TaskStatus::Running),
            ("b".to_string(), TaskStatus::Running)
        ]
    );
    // The watch drops and bookmarks come; a ends well, b is OOMKilled.
    h.api.drop_watches();
    h.api.bookmark();
    for index in [0, 1] {
        h.api.append_log(&pod_name(index), &["step"]);
        h.api.close_log(&pod_name(index));
    }
    h.api.set_pod_status(
        PODS,
        &pod_name(0),
        container_status(
            "a",
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            "Succeeded",
        ),
    );
    h.api.set_pod_status(
        PODS,
        &pod_name(1),
        container_status(
            "b",
            json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
            "Failed",
        ),
    );
    let reports = reports_until_final(&mut h, &[key_of("a"), key_of("b")]).await;
    assert_eq!(
        reports,
        BTreeMap::from([
            ("a".to_string(), vec![TaskStatus::Completed]),
            ("b".to_string(), vec![TaskStatus::FailedEvicted]),
        ])
    );
    assert!(
        calls(&h.api, false) > lists,
        "the expired watch listed again"
    );
    assert!(
        calls(&h.api, true) >= watches + 2,
        "the watch was opened again"
    );
    // Another expiry, drop and bookmark after the end repeat nothing.
    h.api.expire_watches();
    h.api.bookmark();
    h.api.drop_watches();
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match h.from_operator.recv().await {
                Some(FromOperator::TaskStatus { key, status, .. }) => return (key, status),
                Some(_) => continue,
                None => std::future::pending().await,
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a report repeated: {quiet:?}");
}

#[tokio::test]
async fn a_queue_replaced_under_a_concurrent_writer_is_read_again() {
    let h = Harness::start(SchedulerSettings::default()).await;
    let pools = vec![PoolQueue {
        pool: "gpu-pool".into(),
        gpu_guarantee: 16,
        gpu_maximum: 32,
        gpu_weight: 2,
    }];
    h.operator.sync_pools(&pools).await.expect("first sync");
    let queues = "/apis/scheduling.run.ai/v2/queues";
    h.api.fail(
        "PUT",
        queues,
        Fault::Status {
            code: 409,
            retry_after: None,
        },
        1,
    );
    h.api.fail(
        "GET",
        queues,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        1,
    );
    h.operator
        .sync_pools(&pools)
        .await
        .expect("a conflict and a failed read are tried again");
    let puts = h
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(queues))
        .count();
    assert!(puts >= 2, "{puts} replaces");
}

fn node(name: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "allocatable": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

/// The node inventory follows the cluster through an expired and a
/// dropped watch: a node added, one gone, one no longer ready.
#[tokio::test]
async fn the_node_inventory_follows_changes_through_watch_faults() {
    let api = FakeApi::start().await;
    api.insert("/api/v1/nodes", node("gpu-1", true));
    let h = Harness::on(api, SchedulerSettings::default()).await;
    let until = |wanted: Vec<(&'static str, bool)>| {
        let operator = Arc::clone(&h.operator);
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let mut nodes: Vec<(String, bool)> = operator
                    .nodes()
                    .into_iter()
                    .map(|n| (n.name, n.ready))
                    .collect();
                nodes.sort();
                let wanted: Vec<(String, bool)> =
                    wanted.iter().map(|(n, r)| (n.to_string(), *r)).collect();
                if nodes == wanted {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nodes {nodes:?}, not {wanted:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(vec![("gpu-1", true)]).await;
    h.api.expire_watches();
    h.api.insert("/api/v1/nodes", node("gpu-2", true));
    h.api.delete("/api/v1/nodes", "gpu-1");
    until(vec![("gpu-2", true)]).await;
    h.api.drop_watches();
    h.api.insert("/api/v1/nodes", node("gpu-2", false));
    until(vec![("gpu-2", false)]).await;
}
