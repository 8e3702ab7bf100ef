//! The control plane's `SyncQueues` makes the scheduler's queues what the
//! POOL configs say, beside the jobs (not one of them: no `JobDone`).

use super::*;

const KAI_QUEUES: &str = "/apis/scheduling.run.ai/v2/queues";

#[tokio::test]
async fn sync_queues_makes_the_pools_queues() {
    let mut h = Harness::start(SchedulerSettings::default()).await;
    h.hello().await;
    let quota = |guarantee: i64| crate::protocol::PoolQueue {
        pool: "gpu-pool".into(),
        gpu_guarantee: guarantee,
        gpu_maximum: 32,
        gpu_weight: 2,
    };
    h.send(ToOperator::SyncQueues {
        pools: vec![quota(16)],
    })
    .await;
    let gpu_quota = |api: &FakeApi| {
        api.objects(KAI_QUEUES)
            .iter()
            .filter(|q| q["spec"]["parentQueue"].is_string())
            .map(|q| q["spec"]["resources"]["gpu"]["quota"].clone())
            .collect::<Vec<Value>>()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while gpu_quota(&h.api) != vec![json!(16)] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            h.api.objects(KAI_QUEUES)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A changed quota replaces the queue.
    h.send(ToOperator::SyncQueues {
        pools: vec![quota(8)],
    })
    .await;
    while gpu_quota(&h.api) != vec![json!(8)] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            h.api.objects(KAI_QUEUES)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing answers it: it is no job.
    let job = h.create(group(vec![task("a", 0, true)])).await;
    for message in h.until_done(job).await {
        assert!(
            !matches!(message, FromOperator::JobDone { job_id } if job_id != job),
            "{message:?}"
        );
    }
}
