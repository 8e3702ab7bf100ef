//! The worker's dispatch loop: hands queued jobs to backend operators.
//!
//! Invariants: runs on the leader only; jobs go out in queue (id) order; a
//! job leaves the queue only when its operator reports it done
//! (`CompleteJob`), so a job lost with a connection or a leader is sent
//! again; a create job carries everything the executor needs (`launch`
//! builds it: special tokens substituted, placement, the backend's
//! scheduler settings, data stores); a group that cannot be launched fails
//! its tasks and leaves the queue instead of blocking it.

mod credentials;
mod launch;
#[cfg(test)]
mod tests;

use super::operator_hub::OperatorHub;
use crate::clock::now_ms;
use crate::data::DataStore;
use crate::protocol::ToOperator;
use gantry_raft::RaftNode;
use gantry_storage::{Command, JobKind, JobRecord, ReadView, TaskReport, TaskStatus};
use launch::{build_launch, LaunchFailure};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DISPATCH_POLL: Duration = Duration::from_millis(100);
const JOBS_PER_ROUND_MAX: usize = 512;

/// `default_data` is where task data goes while the WORKFLOW config names
/// no `workflow_data.credential` (the server's own object store).
pub async fn run(
    node: RaftNode,
    hub: OperatorHub,
    default_data: DataStore,
    stop: CancellationToken,
) {
    let mut metrics = node.metrics();
    loop {
        if let Err(error) = dispatch_round(&node, &hub, &default_data).await {
            tracing::warn!(%error, "dispatch round failed; retrying");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = metrics.changed() => {}
            _ = hub.connected.notified() => {}
            _ = tokio::time::sleep(DISPATCH_POLL) => {}
        }
    }
}

async fn dispatch_round(
    node: &RaftNode,
    hub: &OperatorHub,
    default_data: &DataStore,
) -> Result<(), gantry_raft::RaftError> {
    let view = node.read_local()?;
    // Resolved at the first job that goes out: opening the store builds an
    // S3 client, and most rounds send nothing.
    let mut data_store: Option<DataStore> = None;
    let jobs = view.jobs(JOBS_PER_ROUND_MAX)?;
    hub.forget_completed_jobs(&jobs.iter().map(|job| job.id).collect::<Vec<_>>());
    for job in jobs {
        // Checked before the launch is built: most rounds find every
        // queued job already sent.
        if !hub.wants_job(&job.backend, job.id) {
            continue;
        }
        let data_store = data_store.get_or_insert_with(|| {
            DataStore::from_workflow_config(&view).unwrap_or_else(|| default_data.clone())
        });
        match build_message(&view, &job, data_store) {
            Ok(message)
                if message.launch_extras_needed() > hub.launch_extras_level(&job.backend) =>
            {
                let failure = LaunchFailure {
                    tasks: message.create_keys(),
                    message: format!(
                        "the operator of backend '{}' is of a build that cannot honour this launch ({}); upgrade it",
                        job.backend,
                        message.extras_needed().unwrap_or_default()
                    ),
                };
                fail_unlaunchable(node, &job, failure).await?
            }
            Ok(message) => {
                hub.send_job(&job.backend, job.id, message).await;
            }
            Err(failure) => fail_unlaunchable(node, &job, failure).await?,
        }
    }
    Ok(())
}

/// The message for `job`: a cancel as queued, a create with its launch.
fn build_message(
    view: &ReadView,
    job: &JobRecord,
    data_store: &DataStore,
) -> Result<ToOperator, LaunchFailure> {
    match &job.kind {
        JobKind::CancelGroup {
            workflow_id,
            group,
            reason,
        } => Ok(ToOperator::CancelGroup {
            job_id: job.id,
            workflow_id: workflow_id.clone(),
            group: group.clone(),
            reason: reason.clone(),
        }),
        JobKind::CreateGroup { workflow_id, group } => {
            let launch = build_launch(view, &job.backend, workflow_id, group, data_store)?;
            Ok(launch.into_job(job.id))
        }
    }
}

/// A group that cannot be launched fails its tasks (as a server error) and
/// leaves the queue, instead of blocking it.
async fn fail_unlaunchable(
    node: &RaftNode,
    job: &JobRecord,
    failure: LaunchFailure,
) -> Result<(), gantry_raft::RaftError> {
    tracing::error!(job = job.id, message = %failure.message, "cannot launch group");
    for key in failure.tasks {
        node.propose_here(Command::ReportTask {
            now: now_ms(),
            report: TaskReport {
                key,
                status: TaskStatus::FailedServerError,
                exit_code: None,
                message: Some(failure.message.clone()),
                node_name: None,
                time: now_ms(),
            },
        })
        .await?;
    }
    node.propose_here(Command::CompleteJob { job_id: job.id })
        .await?;
    Ok(())
}
