//! The local operator's task table: the tasks accepted and not yet
//! finished, each with the switch that cancels it.
//!
//! Invariants:
//! - A task is in the table from the moment its CreateGroup is accepted
//!   until just before its final status is sent; the table is what `Hello`
//!   reports as running, and what makes a duplicate CreateGroup a no-op
//!   while a finished key may run again (a re-dispatch after a restart).
//! - A task's network is recorded once chosen, so a session into the task
//!   connects where the task listens.
//! - Every removal wakes `drained`, so a shutdown waits exactly as long as
//!   tasks are left.

use super::super::exec_session::SandboxEntry;
use super::super::netns::TaskNet;
use crate::protocol::{GroupLaunch, TaskLaunch};
use gantry_storage::TaskKey;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

#[derive(Default)]
pub(super) struct TaskTable {
    tasks: Mutex<HashMap<TaskKey, Tracked>>,
    /// Signalled whenever a task leaves `tasks`.
    left: Notify,
}

/// A task accepted and not yet finished.
struct Tracked {
    workflow_id: String,
    group: String,
    /// The task's network, once chosen (what a session connects in).
    net: Option<TaskNet>,
    /// The task's sandbox, once started (what an exec enters).
    sandbox: Option<SandboxEntry>,
    /// Set to `Some(reason)` to stop the task wherever it is.
    cancel: watch::Sender<Option<String>>,
}

impl TaskTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskKey, Tracked>> {
        // A panic elsewhere while holding the lock leaves the map consistent
        // (every update is a single insert or remove), so poison is ignored.
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tasks accepted and not finished, sorted: what `Hello` lists.
    pub(super) fn running(&self) -> Vec<TaskKey> {
        let mut keys: Vec<TaskKey> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Registers the group's tasks that are not already running here; each
    /// comes with the receiver its cancel arrives on.
    pub(super) fn accept(
        &self,
        group: &GroupLaunch,
    ) -> Vec<(TaskLaunch, watch::Receiver<Option<String>>)> {
        let mut tasks = self.lock();
        let mut accepted = Vec::new();
        for launch in &group.tasks {
            if tasks.contains_key(&launch.key) {
                tracing::debug!(task = %launch.key.task, "duplicate dispatch of a running task ignored");
                continue;
            }
            let (cancel, canceled) = watch::channel(None);
            tasks.insert(
                launch.key.clone(),
                Tracked {
                    workflow_id: group.workflow_id.clone(),
                    group: group.group.clone(),
                    net: None,
                    sandbox: None,
                    cancel,
                },
            );
            accepted.push((launch.clone(), canceled));
        }
        accepted
    }

    /// Records the sandbox task `key` runs in.
    pub(super) fn set_sandbox(&self, key: &TaskKey, sandbox: SandboxEntry) {
        if let Some(tracked) = self.lock().get_mut(key) {
            tracked.sandbox = Some(sandbox);
        }
    }

    /// The sandbox of task `key`: `None` for a task not running here,
    /// `Some(None)` while it starts.
    pub(super) fn sandbox_of(&self, key: &TaskKey) -> Option<Option<SandboxEntry>> {
        self.lock().get(key).map(|tracked| tracked.sandbox.clone())
    }

    /// Records the network task `key` runs in.
    pub(super) fn set_net(&self, key: &TaskKey, net: &TaskNet) {
        if let Some(tracked) = self.lock().get_mut(key) {
            tracked.net = Some(net.clone());
        }
    }

    /// The network of task `key` while it is tracked here; `None` for a
    /// task not running here (finished, or never sent to this operator).
    pub(super) fn net_of(&self, key: &TaskKey) -> Option<Option<TaskNet>> {
        self.lock().get(key).map(|tracked| tracked.net.clone())
    }

    /// Cancels the running tasks of one group (every dispatch of it).
    pub(super) fn cancel_group(&self, workflow_id: &str, group: &str, reason: &str) {
        let tasks = self.lock();
        let mut hit = 0;
        for tracked in tasks.values() {
            if tracked.workflow_id == workflow_id && tracked.group == group {
                tracked.cancel.send_replace(Some(reason.to_string()));
                hit += 1;
            }
        }
        tracing::info!(
            workflow = workflow_id,
            group,
            reason,
            tasks = hit,
            "group canceled"
        );
    }

    /// Cancels every running task.
    pub(super) fn cancel_all(&self, reason: &str) {
        for tracked in self.lock().values() {
            tracked.cancel.send_replace(Some(reason.to_string()));
        }
    }

    /// Takes a task out before its final report (see the invariant above).
    pub(super) fn remove(&self, key: &TaskKey) {
        self.lock().remove(key);
        self.left.notify_waiters();
    }

    /// Returns once no task is left.
    pub(super) async fn drained(&self) {
        loop {
            // Registered before the check, so a removal in between is not
            // missed.
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            left.await;
        }
    }
}
