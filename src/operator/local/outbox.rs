//! The executor's one way to talk to the control plane: the sender of the
//! newest connection.
//!
//! Invariants: messages are sent one at a time under a lock, so what one
//! sender sends in order arrives in order; a reconnect swaps the sender under
//! the same lock after sending `Hello`, so `Hello` is the first message of
//! every connection. A message sent while no connection is live is dropped:
//! the reconnect's `Hello` tells the control plane what still runs, and it
//! re-dispatches the rest.

use crate::operator::protocol::FromOperator;
use tokio::sync::mpsc::Sender;
use tokio::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct Outbox {
    current: Mutex<Option<Sender<FromOperator>>>,
}

impl Outbox {
    pub async fn send(&self, message: FromOperator) {
        let current = self.current.lock().await;
        if let Some(sender) = current.as_ref() {
            if sender.send(message).await.is_err() {
                tracing::debug!(
                    "control plane connection closed; report dropped until it reconnects"
                );
            }
        }
    }

    /// Holds the lock for a reconnect: nothing else is sent until the guard
    /// is used to install the new sender.
    pub async fn begin_connection(&self) -> Connecting<'_> {
        Connecting {
            current: self.current.lock().await,
        }
    }
}

pub struct Connecting<'a> {
    current: MutexGuard<'a, Option<Sender<FromOperator>>>,
}

impl Connecting<'_> {
    /// Sends `hello` on `sender`, then makes `sender` the live connection.
    pub async fn install(mut self, sender: Sender<FromOperator>, hello: FromOperator) {
        if sender.send(hello).await.is_err() {
            tracing::warn!("control plane closed the connection before Hello");
        }
        *self.current = Some(sender);
    }
}
