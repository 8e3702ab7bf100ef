//! Streams a task container's log (`pods/log` with `follow`) to the control
//! plane as `FromOperator::Logs` batches.
//!
//! Invariants: lines go out in order, batched by what is ready (at most
//! [`LOG_BATCH_LINES_MAX`] per message); the stream ends when the container
//! ends (the API closes a followed log then), so awaiting the streaming task
//! means every line has been handed to the outbox.

use crate::operator::local::Outbox;
use crate::protocol::{FromOperator, LogLine, LogStream};
use futures::{AsyncBufReadExt, StreamExt};
use gantry_storage::TaskKey;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use std::sync::Arc;
use std::time::Duration;

pub const LOG_BATCH_LINES_MAX: usize = 256;
/// A log request can fail while the kubelet catches up with a container
/// that just started; it is retried this many times.
const OPEN_ATTEMPTS_MAX: u32 = 10;
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(500);

pub async fn stream(
    pods: Api<Pod>,
    pod: String,
    container: String,
    key: TaskKey,
    outbox: Arc<Outbox>,
) {
    let params = LogParams {
        follow: true,
        container: Some(container),
        ..LogParams::default()
    };
    let mut attempt = 0;
    let reader = loop {
        attempt += 1;
        match pods.log_stream(&pod, &params).await {
            Ok(reader) => break reader,
            Err(error) if attempt < OPEN_ATTEMPTS_MAX => {
                tracing::debug!(%pod, %error, attempt, "log stream not ready; retrying");
                tokio::time::sleep(OPEN_RETRY_DELAY).await;
            }
            Err(error) => {
                tracing::warn!(%pod, %error, "cannot read the task's log");
                return;
            }
        }
    };
    // Counted from 0: a re-read of the pod's log (after this operator
    // restarted) re-sends the same lines at the same offsets, dropped as resends.
    let mut next_offset: u64 = 0;
    let mut batches = reader.lines().ready_chunks(LOG_BATCH_LINES_MAX);
    while let Some(batch) = batches.next().await {
        let time = crate::clock::now_ms();
        let mut lines = Vec::with_capacity(batch.len());
        let mut broken = None;
        for line in batch {
            match line {
                Ok(text) => lines.push(LogLine {
                    offset: {
                        next_offset += 1;
                        next_offset - 1
                    },
                    stream: LogStream::Stdout,
                    time,
                    text,
                }),
                Err(error) => {
                    broken = Some(error);
                    break;
                }
            }
        }
        if !lines.is_empty() {
            outbox
                .send(FromOperator::Logs {
                    key: key.clone(),
                    lines,
                })
                .await;
        }
        if let Some(error) = broken {
            tracing::warn!(%pod, %error, "task log stream broke off");
            return;
        }
    }
}
