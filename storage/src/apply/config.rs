//! Appliers for versioned configs and backend liveness: `PutConfig`,
//! `DeleteConfig`, `RollbackConfig`, `TagConfigRevision`,
//! `DeleteConfigRevision`, `BackendHeartbeat`, and the two backend timers.
//!
//! Invariants: every config change appends exactly one revision (tagging
//! or dropping an old revision changes the history, never what is in
//! force, and the revision in force cannot be dropped); the pools
//! table and the backends' settings always equal the POOL and BACKEND
//! revisions in force; a backend has at most one offline and one lost timer
//! armed, and a timer acts only if it is the one its backend still records
//! (so a heartbeat that re-armed the timers wins over a stale firing).

use crate::command::{Outcome, RejectionKind};
use crate::config::{
    BackendRecord, ConfigData, ConfigMeta, ConfigRevision, ConfigType, NodeInventory, PoolConfig,
    PoolExtras,
};
use crate::error::StorageError;
use crate::lifecycle;
use crate::record::{Millis, TimerKind};
use crate::status::TaskStatus;
use crate::tables::Tables;

/// Checks that `data` fits `config_type` and `name`; the message names the field.
fn check_config(config_type: ConfigType, name: &str, data: &ConfigData) -> Result<(), String> {
    if config_type.is_singleton() {
        if !name.is_empty() {
            return Err(format!(
                "{config_type} is a single config and takes no name"
            ));
        }
    } else if name.trim().is_empty() {
        return Err(format!("a {config_type} config needs a name"));
    }
    match (config_type, data) {
        (ConfigType::Backend, ConfigData::Backend(_)) => Ok(()),
        (ConfigType::Pool, ConfigData::Pool(pool)) => check_pool(name, pool),
        (ConfigType::Pool, ConfigData::PoolWithExtras(pool, extras)) => {
            check_pool(name, pool)?;
            PoolExtras::from_text(extras).map(drop)
        }
        (ConfigType::Role, ConfigData::Role(role)) => {
            if role.name != name {
                return Err(format!(
                    "name: the role is named '{}' but stored as '{name}'",
                    role.name
                ));
            }
            if let Some(index) = role.policies.iter().position(|p| p.actions.is_empty()) {
                return Err(format!("policies[{index}].actions: must not be empty"));
            }
            Ok(())
        }
        (
            ConfigType::Service
            | ConfigType::Workflow
            | ConfigType::PodTemplate
            | ConfigType::ResourceValidation,
            ConfigData::Json(text),
        ) => {
            if text.trim().is_empty() {
                Err("configs: must not be empty".into())
            } else {
                Ok(())
            }
        }
        _ => Err(format!("the data is not a {config_type} config")),
    }
}

fn check_pool(name: &str, pool: &PoolConfig) -> Result<(), String> {
    if pool.name != name {
        return Err(format!(
            "name: the pool is named '{}' but stored as '{name}'",
            pool.name
        ));
    }
    if pool.backend.trim().is_empty() {
        return Err("backend: a pool needs a backend".into());
    }
    if let Some(platform) = &pool.default_platform {
        if !pool.platforms.contains_key(platform) {
            return Err(format!(
                "default_platform: '{platform}' is not one of the pool's platforms"
            ));
        }
    }
    Ok(())
}

/// Writes a new revision and keeps the typed tables in step with it.
fn write_revision(
    tables: &Tables,
    now: Millis,
    config_type: ConfigType,
    name: &str,
    meta: &ConfigMeta,
    data: Option<ConfigData>,
) -> Result<u64, StorageError> {
    let revision = tables.next_config_revision(config_type)?;
    match &data {
        Some(ConfigData::Pool(pool) | ConfigData::PoolWithExtras(pool, _)) => {
            tables.put_pool(&pool.record())?
        }
        Some(ConfigData::Backend(settings)) => {
            let mut backend = tables
                .backend(name)?
                .unwrap_or_else(|| BackendRecord::new(name, now));
            backend.settings = settings.clone();
            backend.configured = true;
            tables.put_backend(&backend)?;
        }
        None if config_type == ConfigType::Pool => {
            tables.remove_pool(name)?;
        }
        None if config_type == ConfigType::Backend => {
            if let Some(backend) = tables.backend(name)? {
                for (due, id) in [backend.offline_timer, backend.lost_timer]
                    .into_iter()
                    .flatten()
                {
                    tables.take_timer(due, id)?;
                }
            }
            tables.remove_backend(name)?;
        }
        _ => {}
    }
    tables.put_config_revision(&ConfigRevision {
        config_type,
        name: name.to_string(),
        revision,
        time: now,
        meta: meta.clone(),
        data,
    })?;
    Ok(revision)
}

pub(crate) fn apply_config_put(
    tables: &Tables,
    now: Millis,
    config_type: ConfigType,
    name: &str,
    meta: &ConfigMeta,
    data: &ConfigData,
) -> Result<Outcome, StorageError> {
    if let Err(message) = check_config(config_type, name, data) {
        return Ok(Outcome::rejected(RejectionKind::Invalid, message));
    }
    let revision = write_revision(tables, now, config_type, name, meta, Some(data.clone()))?;
    Ok(Outcome::Revision { revision })
}

pub(crate) fn apply_config_delete(
    tables: &Tables,
    now: Millis,
    config_type: ConfigType,
    name: &str,
    meta: &ConfigMeta,
) -> Result<Outcome, StorageError> {
    if config_type.is_singleton() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!("{config_type} cannot be deleted, only updated"),
        ));
    }
    if tables.config_current(config_type, name)?.is_none() {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("{config_type} '{name}' does not exist"),
        ));
    }
    if config_type == ConfigType::Backend {
        let users: Vec<String> = tables
            .pools()?
            .into_iter()
            .filter(|pool| pool.backend == name)
            .map(|pool| pool.name)
            .collect();
        if !users.is_empty() {
            return Ok(Outcome::rejected(
                RejectionKind::Conflict,
                format!(
                    "backend '{name}' is used by pool(s) {}; delete or move them first",
                    users.join(", ")
                ),
            ));
        }
    }
    let revision = write_revision(tables, now, config_type, name, meta, None)?;
    Ok(Outcome::Revision { revision })
}

pub(crate) fn apply_config_rollback(
    tables: &Tables,
    now: Millis,
    config_type: ConfigType,
    revision: u64,
    meta: &ConfigMeta,
) -> Result<Outcome, StorageError> {
    let Some(old) = tables.config_revision(config_type, revision)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("{config_type} has no revision {revision}"),
        ));
    };
    let Some(data) = old.data else {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            format!(
                "revision {revision} of {config_type} deleted '{}'; roll back to a revision with data",
                old.name
            ),
        ));
    };
    apply_config_put(tables, now, config_type, &old.name, meta, &data)
}

pub(crate) fn apply_backend_heartbeat(
    tables: &Tables,
    now: Millis,
    name: &str,
    nodes: &[NodeInventory],
    offline_after_ms: u64,
    fail_tasks_after_ms: u64,
) -> Result<Outcome, StorageError> {
    if name.trim().is_empty() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a heartbeat needs a backend name",
        ));
    }
    if offline_after_ms == 0 {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "offline_after_ms must be positive",
        ));
    }
    let mut backend = tables
        .backend(name)?
        .unwrap_or_else(|| BackendRecord::new(name, now));
    for (due, id) in [backend.offline_timer.take(), backend.lost_timer.take()]
        .into_iter()
        .flatten()
    {
        tables.take_timer(due, id)?;
    }
    let offline_due = now.saturating_add(i64::try_from(offline_after_ms).unwrap_or(i64::MAX));
    let id = tables.add_timer(
        offline_due,
        TimerKind::BackendOffline {
            backend: name.to_string(),
        },
    )?;
    backend.offline_timer = Some((offline_due, id));
    if fail_tasks_after_ms > 0 {
        let lost_due = now.saturating_add(i64::try_from(fail_tasks_after_ms).unwrap_or(i64::MAX));
        let id = tables.add_timer(
            lost_due,
            TimerKind::BackendLost {
                backend: name.to_string(),
            },
        )?;
        backend.lost_timer = Some((lost_due, id));
    }
    backend.last_heartbeat = Some(now);
    backend.online = true;
    backend.nodes = nodes.to_vec();
    tables.put_backend(&backend)?;
    Ok(Outcome::Applied)
}

/// Registers a backend whose operator connected, unless it is known.
pub(crate) fn ensure_backend(tables: &Tables, now: Millis, name: &str) -> Result<(), StorageError> {
    if tables.backend(name)?.is_none() {
        tables.put_backend(&BackendRecord::new(name, now))?;
    }
    Ok(())
}

/// A backend timer came due: `timer` is `(due, id)` of the fired timer.
pub(crate) fn fire_backend_timer(
    tables: &Tables,
    now: Millis,
    name: &str,
    timer: (Millis, u64),
    lost: bool,
) -> Result<(), StorageError> {
    let Some(mut backend) = tables.backend(name)? else {
        return Ok(());
    };
    if !lost {
        if backend.offline_timer == Some(timer) {
            backend.offline_timer = None;
            backend.online = false;
            tables.put_backend(&backend)?;
        }
        return Ok(());
    }
    if backend.lost_timer != Some(timer) {
        return Ok(());
    }
    backend.lost_timer = None;
    backend.online = false;
    tables.put_backend(&backend)?;
    let silent_seconds = backend
        .last_heartbeat
        .map_or(0, |last| (now - last).max(0) / 1000);
    let reason =
        format!("backend '{name}' sent no heartbeat for {silent_seconds} s; its tasks are lost");
    for (workflow_id, group_name) in tables.active_groups(name)? {
        let (Some(workflow), Some(mut group)) = (
            tables.workflow_core(&workflow_id)?,
            tables.group(&workflow_id, &group_name)?,
        ) else {
            continue;
        };
        if group.status.is_finished() {
            continue;
        }
        lifecycle::finish_group(
            tables,
            &workflow,
            &mut group,
            TaskStatus::FailedBackendError,
            &reason,
            now,
            true,
        )?;
        lifecycle::settle_workflow(tables, &workflow_id, now)?;
    }
    Ok(())
}

/// Tags of one revision in the history: `set` added (once each), then
/// `delete` removed. What is in force does not change.
pub(super) fn apply_config_tag(
    tables: &Tables,
    config_type: ConfigType,
    revision: u64,
    set: &[String],
    delete: &[String],
) -> Result<Outcome, StorageError> {
    let Some(mut entry) = tables.config_revision(config_type, revision)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("No config history entry found for type {config_type} at revision {revision}"),
        ));
    };
    for tag in set {
        if !entry.meta.tags.contains(tag) {
            entry.meta.tags.push(tag.clone());
        }
    }
    entry.meta.tags.retain(|tag| !delete.contains(tag));
    tables.replace_config_revision(&entry)?;
    Ok(Outcome::Revision { revision })
}

/// Drops a revision from the history; the revision in force for its name
/// (OSMO's current revision) stays.
pub(super) fn apply_config_revision_delete(
    tables: &Tables,
    config_type: ConfigType,
    revision: u64,
) -> Result<Outcome, StorageError> {
    let Some(entry) = tables.config_revision(config_type, revision)? else {
        return Ok(Outcome::rejected(
            RejectionKind::NotFound,
            format!("No config history entry found for type {config_type} at revision {revision}"),
        ));
    };
    if tables.config_revision_in_force(config_type, &entry.name)? == Some(revision) {
        return Ok(Outcome::rejected(
            RejectionKind::Conflict,
            format!("Cannot delete the current revision {revision} for config type {config_type}"),
        ));
    }
    tables.remove_config_revision(config_type, revision)?;
    Ok(Outcome::Revision { revision })
}
