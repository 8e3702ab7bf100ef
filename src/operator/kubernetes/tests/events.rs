//! Kubernetes events about a task's pod become the task's events, once
//! each: a relist or a resent event repeats nothing, and events about
//! other pods are not the executor's to report.

use super::*;

const EVENTS: &str = "/api/v1/namespaces/gantry-test/events";

fn event(uid: &str, pod: &str, reason: &str, message: &str, count: i32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{pod}.{uid}"), "namespace": NS, "uid": uid},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS},
        "reason": reason, "message": message, "count": count, "type": "Warning",
        "lastTimestamp": "2026-12-07T10:00:00Z",
    })
}

/// The next task events (skipping statuses and logs).
async fn next_events(h: &mut Harness) -> (TaskKey, Vec<(String, String, i64)>) {
    loop {
        if let FromOperator::TaskEvents { key, events } = h.next().await {
            let events = events
                .into_iter()
                .map(|e| (e.reason, e.message, e.time))
                .collect();
            return (key, events);
        }
    }
}

#[tokio::test]
async fn a_pods_events_become_its_tasks_events_once() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let job = h.create(group(vec![task("train", 0, true)])).await;
    h.until_done(job).await;
    let insufficient = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.";
    // Another pod's event is not this executor's; the task's is.
    h.api
        .insert(EVENTS, event("e0", "someone-else", "Scheduled", "x", 1));
    h.api.insert(
        EVENTS,
        event("e1", &pod_name(0), "FailedScheduling", insufficient, 1),
    );
    let (key, events) = next_events(&mut h).await;
    assert_eq!(key, key_of("train"));
    assert_eq!(
        events,
        vec![(
            "FailedScheduling".to_string(),
            insufficient.to_string(),
            1_796_637_600_000
        )]
    );
    // The same occurrence again (a relist after an expired watch) is not
    // sent; the next occurrence (count 2) and the next event are.
    h.api.expire_watches();
    h.api.insert(
        EVENTS,
        event("e1", &pod_name(0), "FailedScheduling", insufficient, 1),
    );
    h.api.insert(
        EVENTS,
        event("e1", &pod_name(0), "FailedScheduling", insufficient, 2),
    );
    let (_, events) = next_events(&mut h).await;
    assert_eq!(events[0].0, "FailedScheduling");
    h.api.insert(
        EVENTS,
        event("e2", &pod_name(0), "Pulled", "Successfully pulled image", 1),
    );
    let (_, events) = next_events(&mut h).await;
    assert_eq!(events[0].0, "Pulled", "no repeat came between: {events:?}");
}
