//! The namespace's Kubernetes events about task pods, forwarded as task
//! events (`FromOperator::TaskEvents`): the scheduler's
//! (`FailedScheduling: 0/4 nodes are available: 4 Insufficient
//! nvidia.com/gpu`), the kubelet's (`Pulling`, `Pulled`, `BackOff`,
//! `Killing`), KAI's. What users read to learn why a task waits.
//!
//! Invariants: only events about a pod of a task this executor tracks
//! (by name, and by uid where both the event and the tracking know it); each occurrence is sent
//! once (an event is remembered by uid and count, so a relist after an
//! expired watch or a resent event repeats nothing; the memory is bounded
//! and forgets wholesale past [`REMEMBERED_MAX`]); an event's time is its
//! last occurrence as Kubernetes recorded it, else now.

use super::Shared;
use gantry_storage::{TaskEventInput, TaskKey};
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::HashSet;
use std::sync::Arc;

/// Occurrences remembered, at most (then forgotten together: a repeat
/// after that is the lesser harm).
pub(super) const REMEMBERED_MAX: usize = 16_384;

/// Which occurrences of events were sent.
#[derive(Default)]
pub(super) struct Sent(HashSet<(String, i32)>);

impl Sent {
    /// Whether this occurrence is new (and notes it).
    fn first_time(&mut self, uid: &str, count: i32) -> bool {
        if self.0.len() >= REMEMBERED_MAX {
            self.0.clear();
        }
        self.0.insert((uid.to_string(), count))
    }
}

impl Shared {
    /// Follows the namespace's events about pods for as long as the
    /// operator runs; a failed watch retries with backoff.
    pub(super) async fn watch_events(self: Arc<Self>, events: Api<Event>) {
        use futures::StreamExt;
        let config = watcher::Config::default().fields("involvedObject.kind=Pod");
        let mut stream = watcher(events, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(event) | watcher::Event::InitApply(event)) => {
                    if let Some((key, reported)) = self.task_event(&event) {
                        self.outbox
                            .send(crate::protocol::FromOperator::TaskEvents {
                                key,
                                events: vec![reported],
                            })
                            .await;
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "event watch failed; retrying"),
            }
        }
    }

    /// The task an event is about and the event as reported, if it is
    /// about a tracked task's pod and was not sent before.
    fn task_event(&self, event: &Event) -> Option<(TaskKey, TaskEventInput)> {
        let object = &event.involved_object;
        if object.kind.as_deref() != Some("Pod") {
            return None;
        }
        let pod = object.name.as_deref()?;
        let uid = event.metadata.uid.as_deref()?;
        let mut state = self.lock();
        let key = state
            .tasks
            .iter()
            .find(|(_, tracked)| {
                tracked.pod == pod
                    && (object.uid.is_none()
                        || tracked.pod_uid.is_none()
                        || tracked.pod_uid == object.uid)
            })
            .map(|(key, _)| key.clone())?;
        if !state.events_sent.first_time(uid, event.count.unwrap_or(1)) {
            return None;
        }
        let time = event
            .last_timestamp
            .as_ref()
            .map(|time| time.0.as_millisecond())
            .or_else(|| {
                event
                    .event_time
                    .as_ref()
                    .map(|time| time.0.as_millisecond())
            })
            .or_else(|| {
                event
                    .first_timestamp
                    .as_ref()
                    .map(|time| time.0.as_millisecond())
            })
            .unwrap_or_else(crate::clock::now_ms);
        Some((
            key,
            TaskEventInput {
                time,
                reason: event.reason.clone().unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
            },
        ))
    }
}
