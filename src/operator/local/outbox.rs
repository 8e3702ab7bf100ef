//! The executor's one way to talk to the control plane: the sender of the
//! newest connection.
//!
//! Invariants:
//! - `Hello` is the first message of every connection: the new sender becomes
//!   visible to tasks only after `Hello` is in its channel.
//! - The lock is never held while waiting on a slow connection (only to copy
//!   the sender out), so a stuck old connection cannot block a reconnect.
//!   Order is still kept: each task sends one message at a time, so what one
//!   task sends arrives in the order it sent it.
//! - A message sent while no connection is live is dropped: the reconnect's
//!   `Hello` tells the control plane what still runs, and it re-dispatches
//!   the rest.

use crate::protocol::FromOperator;
use gantry_storage::{TaskKey, TaskStatus};
use tokio::sync::mpsc::Sender;
use tokio::sync::Mutex;

#[derive(Debug, Default)]
pub struct Outbox {
    current: Mutex<Option<Sender<FromOperator>>>,
}

impl Outbox {
    pub async fn send(&self, message: FromOperator) {
        let Some(sender) = self.current.lock().await.clone() else {
            return;
        };
        if sender.send(message).await.is_err() {
            tracing::debug!("control plane connection closed; report dropped until it reconnects");
        }
    }

    /// Reports task `key`'s status, stamped now: what both executors send.
    pub async fn task_status(
        &self,
        key: &TaskKey,
        status: TaskStatus,
        exit_code: Option<i32>,
        message: Option<String>,
    ) {
        self.send(FromOperator::TaskStatus {
            key: key.clone(),
            status,
            exit_code,
            message,
            time: crate::clock::now_ms(),
        })
        .await;
    }

    /// Reports an event of task run `key`, stamped now, as Kubernetes names
    /// it (`reason`: `Pulling`, `Pulled`, `Failed`, …).
    pub async fn task_event(&self, key: &TaskKey, reason: &str, message: String) {
        self.send(FromOperator::TaskEvents {
            key: key.clone(),
            events: vec![gantry_storage::TaskEventInput {
                time: crate::clock::now_ms(),
                reason: reason.to_string(),
                message,
            }],
        })
        .await;
    }

    /// Makes `sender` the live connection, with `hello()` as its first
    /// message. `hello` runs under the lock, so whatever it reads about task
    /// state is consistent with which connection later reports go to.
    pub async fn connect(
        &self,
        sender: Sender<FromOperator>,
        hello: impl FnOnce() -> FromOperator,
    ) {
        let mut current = self.current.lock().await;
        // The channel is fresh, so this does not wait in practice; the lock
        // only holds back other reports until Hello is queued.
        if sender.send(hello()).await.is_err() {
            tracing::warn!("control plane closed the connection before Hello");
        }
        *current = Some(sender);
    }
}
