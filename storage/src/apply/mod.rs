//! `apply`: one `match` over [`Command`], one `apply_<noun>_<verb>` per
//! variant; the appliers live in files by noun (`workflow`, `task`,
//! `operator`, `timer`, `pool`, `token`, `config`, `session`,
//! `credential`).
//!
//! Invariants: appliers read only the command and the transaction; a
//! rejection is decided before the first write, so a rejected command leaves
//! the tables untouched.

mod config;
mod credential;
mod operator;
mod pool;
mod request_key;
mod session;
mod task;
mod timer;
mod token;
mod user;
mod workflow;

use crate::command::{Command, Outcome, RejectionKind};
use crate::config::{ConfigData, ConfigType, PoolExtras};
use crate::error::StorageError;
use crate::extras::WorkflowExtras;
use crate::labels::Labels;
use crate::record::Millis;
use crate::tables::Tables;
use config::{
    apply_backend_heartbeat, apply_config_delete, apply_config_put, apply_config_revision_delete,
    apply_config_rollback, apply_config_tag,
};
use credential::{apply_credential_delete, apply_credential_put, apply_user_profile_set};
use operator::{
    apply_job_complete, apply_log_chunk_append, apply_operator_hello, apply_operator_reports,
};
use pool::apply_pool_put;
use redb::WriteTransaction;
use session::apply_session_record;
use task::{apply_task_data_times_record, apply_task_events_record, apply_task_report};
use timer::apply_timer_fire;
use token::{apply_token_issue, apply_token_revoke};
use workflow::{apply_workflow_cancel, apply_workflow_submit, apply_workflow_tag};

/// Applies one command inside `txn`, at the state's clock: the command's
/// time, or the last time applied if that is later, so time in the state
/// never runs backwards whatever the proposers' clocks do.
pub fn apply(txn: &WriteTransaction, command: &Command) -> Result<Outcome, StorageError> {
    let tables = Tables::new(txn);
    let last = tables.clock()?;
    let outcome = apply_at(txn, &tables, command, last)?;
    // A rejected command changes nothing, the clock included.
    if let (Some(time), false) = (command.time(), matches!(outcome, Outcome::Rejected(_))) {
        if time > last {
            tables.set_clock(time)?;
        }
    }
    Ok(outcome)
}

fn apply_at(
    txn: &WriteTransaction,
    tables: &Tables,
    command: &Command,
    last: Millis,
) -> Result<Outcome, StorageError> {
    let at = |now: &Millis| (*now).max(last);
    match command {
        Command::Idempotent { now, key, command } => {
            request_key::apply_idempotent(tables, at(now), key, command, |inner| apply(txn, inner))
        }
        Command::AppendLogChunk { chunk } => apply_log_chunk_append(tables, chunk),
        #[cfg(feature = "upgrade-drill")]
        Command::UpgradeDrill { .. } => Ok(Outcome::Applied),
        Command::SubmitWorkflow { now, submission } => {
            apply_workflow_submit(tables, at(now), submission, &Labels::new())
        }
        Command::SubmitPackedWorkflow { now, packed } => match packed.unpack() {
            Ok(submission) => apply_workflow_submit(tables, at(now), &submission, &Labels::new()),
            // Refused, not fatal: a bad entry must not stop every replica.
            Err(error) => Ok(Outcome::rejected(RejectionKind::Invalid, error.to_string())),
        },
        Command::SubmitWorkflowWithLabels {
            now,
            packed,
            labels,
        } => match packed.unpack() {
            Ok(submission) => apply_workflow_submit(tables, at(now), &submission, labels),
            Err(error) => Ok(Outcome::rejected(RejectionKind::Invalid, error.to_string())),
        },
        Command::SubmitWorkflowWithExtras {
            now,
            packed,
            labels,
            extras,
        } => match (packed.unpack(), WorkflowExtras::from_text(extras)) {
            (Ok(submission), Ok(_)) => {
                let outcome = apply_workflow_submit(tables, at(now), &submission, labels)?;
                // Stored as sent (see `crate::extras`), for a workflow that
                // was recorded with a plan.
                if let Outcome::Submitted {
                    workflow_id,
                    failure: None,
                } = &outcome
                {
                    tables.put_workflow_extras(workflow_id, extras)?;
                }
                Ok(outcome)
            }
            (Err(error), _) => Ok(Outcome::rejected(RejectionKind::Invalid, error.to_string())),
            (_, Err(message)) => Ok(Outcome::rejected(RejectionKind::Invalid, message)),
        },
        Command::TagWorkflow {
            workflow_id,
            add,
            remove,
        } => apply_workflow_tag(tables, workflow_id, add, remove),
        Command::TagConfigRevision {
            config_type,
            revision,
            set,
            delete,
        } => apply_config_tag(tables, *config_type, *revision, set, delete),
        Command::DeleteConfigRevision {
            config_type,
            revision,
        } => apply_config_revision_delete(tables, *config_type, *revision),
        Command::CancelWorkflow {
            now,
            workflow_id,
            user,
            message,
            force,
        } => apply_workflow_cancel(
            tables,
            at(now),
            workflow_id,
            user,
            message.as_deref(),
            *force,
        ),
        Command::ReportTask { now, report } => apply_task_report(tables, at(now), report),
        Command::RecordTaskDataTimes { key, times } => {
            apply_task_data_times_record(tables, key, times)
        }
        Command::RecordTaskEvents { key, events } => apply_task_events_record(tables, key, events),
        Command::RecordSession {
            now,
            workflow_id,
            event,
        } => apply_session_record(tables, at(now), workflow_id, event),
        Command::PutCredential {
            now,
            user,
            name,
            only_if_sealed,
            credential,
        } => apply_credential_put(
            tables,
            at(now),
            (user, name),
            only_if_sealed.as_deref(),
            credential,
        ),
        Command::DeleteCredential { user, name } => apply_credential_delete(tables, user, name),
        Command::SetUserProfile { user, profile } => apply_user_profile_set(tables, user, profile),
        Command::PutUser {
            now,
            user,
            by,
            roles,
            mode,
        } => user::apply_user_put(tables, at(now), (user, by), roles, *mode),
        Command::RemoveUserRole { user, role } => user::apply_user_role_remove(tables, user, role),
        Command::DeleteUser { user } => user::apply_user_delete(tables, user),
        Command::RevokeUserSessions { now, user } => {
            user::apply_user_sessions_revoke(tables, at(now), user)
        }
        Command::CompleteJob { job_id } => apply_job_complete(tables, *job_id),
        Command::FireTimer { now, timer_id, due } => {
            apply_timer_fire(tables, at(now), *timer_id, *due)
        }
        Command::PutPool { pool } => apply_pool_put(tables, pool),
        Command::OperatorHello {
            now,
            backend,
            running,
        } => apply_operator_hello(tables, at(now), backend, running, None),
        Command::OperatorHelloWithExecutor {
            now,
            backend,
            running,
            executor,
        } => apply_operator_hello(tables, at(now), backend, running, Some(executor)),
        Command::IssueToken { token } => apply_token_issue(tables, token),
        Command::RevokeToken { name } => apply_token_revoke(tables, name),
        Command::OperatorReports {
            now,
            backend,
            instance,
            last_seq,
            commands,
        } => apply_operator_reports(
            txn,
            tables,
            at(now),
            backend,
            *instance,
            *last_seq,
            commands,
        ),
        Command::PutConfig {
            now,
            config_type,
            name,
            meta,
            data,
        } => match **data {
            // Only the gated kind carries extras: a member of an older
            // build could not read them.
            ConfigData::PoolWithExtras(..) => Ok(Outcome::rejected(
                RejectionKind::Invalid,
                "a pool with extras is written by PutPoolWithExtras only",
            )),
            _ => apply_config_put(tables, at(now), *config_type, name, meta, data),
        },
        Command::PutPoolWithExtras {
            now,
            name,
            meta,
            pool,
            extras,
        } => match PoolExtras::from_text(extras) {
            // Stored as sent (see `crate::config::pool_extras`).
            Ok(_) => {
                let data = ConfigData::PoolWithExtras((**pool).clone(), extras.clone());
                apply_config_put(tables, at(now), ConfigType::Pool, name, meta, &data)
            }
            Err(message) => Ok(Outcome::rejected(
                RejectionKind::Invalid,
                format!("topology_keys: {message}"),
            )),
        },
        Command::DeleteConfig {
            now,
            config_type,
            name,
            meta,
        } => apply_config_delete(tables, at(now), *config_type, name, meta),
        Command::RollbackConfig {
            now,
            config_type,
            revision,
            meta,
        } => apply_config_rollback(tables, at(now), *config_type, *revision, meta),
        Command::BackendHeartbeat {
            now,
            backend,
            nodes,
            offline_after_ms,
            fail_tasks_after_ms,
        } => apply_backend_heartbeat(
            tables,
            at(now),
            backend,
            nodes,
            *offline_after_ms,
            *fail_tasks_after_ms,
        ),
    }
}
