//! An operator reports only on its own backend's work: statuses, data
//! times and log lines of tasks of workflows that run on its backend, and
//! the completion of jobs queued for it.
//!
//! Invariants:
//! - A report on anything else is dropped, never turned into a command,
//!   with a warning and `gantry_operator_reports_dropped_total{backend,
//!   kind}`; its batch goes on (and is acknowledged), since refusing the
//!   batch would only make the operator send it again forever.
//! - A workflow's backend is fixed at submit, so one answer per workflow
//!   holds for a whole batch. A workflow or job this replica does not hold
//!   yet is looked up again with a linearizable read before anything is
//!   decided from its absence.
//! - A job that is no longer queued was completed already: completing it
//!   again changes nothing, so that report passes.

use super::{ConnectionEnd, OperatorHub};
use gantry_raft::RaftError;
use gantry_storage::ReadView;
use std::collections::HashMap;

/// What one batch of a connection of `backend` found out so far.
pub(super) struct Scope<'a> {
    backend: &'a str,
    /// Per workflow: whether it runs on `backend`.
    workflows: HashMap<String, bool>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(backend: &'a str) -> Scope<'a> {
        Scope {
            backend,
            workflows: HashMap::new(),
        }
    }
}

fn read_error(error: gantry_storage::StorageError) -> ConnectionEnd {
    ConnectionEnd::Propose(RaftError::from(error))
}

impl OperatorHub {
    /// Whether the connection may report on a task of `workflow_id`;
    /// counts and logs a drop (`kind` of message) when not.
    pub(super) async fn reports_on_workflow(
        &self,
        scope: &mut Scope<'_>,
        workflow_id: &str,
        kind: &'static str,
    ) -> Result<bool, ConnectionEnd> {
        if let Some(owned) = scope.workflows.get(workflow_id) {
            return Ok(self.allowed(scope.backend, *owned, kind, workflow_id));
        }
        // The core (a few bytes), not the row: a workflow of many groups has
        // a large row, and each batch of its reports asks once.
        let lookup = |view: ReadView| view.workflow_core(workflow_id).map_err(read_error);
        let local = self.node.read_local().map_err(ConnectionEnd::Propose)?;
        let workflow = match lookup(local)? {
            Some(workflow) => Some(workflow),
            None => lookup(self.node.read().await.map_err(ConnectionEnd::Propose)?)?,
        };
        let owned = workflow.is_some_and(|workflow| workflow.backend == scope.backend);
        scope.workflows.insert(workflow_id.to_string(), owned);
        Ok(self.allowed(scope.backend, owned, kind, workflow_id))
    }

    /// Whether the connection may complete job `job_id`.
    pub(super) async fn completes_job(
        &self,
        scope: &Scope<'_>,
        job_id: u64,
    ) -> Result<bool, ConnectionEnd> {
        let lookup = |view: ReadView| view.job(job_id).map_err(read_error);
        let local = self.node.read_local().map_err(ConnectionEnd::Propose)?;
        let job = match lookup(local)? {
            Some(job) => Some(job),
            None => lookup(self.node.read().await.map_err(ConnectionEnd::Propose)?)?,
        };
        let owned = job.is_none_or(|job| job.backend == scope.backend);
        Ok(self.allowed(scope.backend, owned, "job_done", &format!("job {job_id}")))
    }

    fn allowed(&self, backend: &str, owned: bool, kind: &'static str, what: &str) -> bool {
        if !owned {
            tracing::warn!(
                %backend,
                kind,
                about = what,
                "dropped an operator report about work not dispatched to its backend"
            );
            metrics::counter!(
                crate::metrics::OPERATOR_REPORTS_DROPPED,
                "backend" => backend.to_string(),
                "kind" => kind,
            )
            .increment(1);
        }
        owned
    }
}
