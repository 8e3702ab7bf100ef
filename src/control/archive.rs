//! The object-store work behind the archive and purge timers, done by the
//! leader before it fires them.
//!
//! Archive: `<wf_id>/workflow_spec.yaml` (the rendered spec),
//! `<wf_id>/templated_workflow_spec.yaml` (the spec as submitted) and
//! `<wf_id>/workflow_events.txt` (see [`super::events`]), OSMO's names. Purge:
//! every object under `<wf_id>/logs/` and those three. Invariants: both are
//! idempotent (puts overwrite with the same bytes, a missing object counts as
//! deleted), so a retry or a new leader may run them again; an archive of a
//! workflow whose logs were already purged writes nothing, so a late archive
//! never re-creates files retention removed. Only the log store's own keys
//! are deleted, so task data sharing the store is left alone.

use super::events;
use crate::object_storage::{ObjectStorage, ObjectStorageError};
use gantry_raft::RaftNode;
use gantry_storage::{ARCHIVE_EVENTS, ARCHIVE_RENDERED_SPEC, ARCHIVE_TEMPLATE_SPEC};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the state: {0}")]
    State(String),
    #[error("{key}: {source}")]
    Store {
        key: String,
        source: ObjectStorageError,
    },
}

/// Deletes proceeding at once during a purge, at most.
const DELETES_IN_FLIGHT_MAX: usize = 16;

pub fn archive_key(workflow_id: &str, name: &str) -> String {
    format!("{workflow_id}/{name}")
}

/// Writes the archive of an ended workflow (nothing if it is gone or its
/// logs were purged).
pub async fn write(
    node: &RaftNode,
    objects: &ObjectStorage,
    workflow_id: &str,
) -> Result<(), ArchiveError> {
    let state = |error: &dyn std::fmt::Display| ArchiveError::State(error.to_string());
    let (workflow, events_text) = {
        let view = node.read_local().map_err(|e| state(&e))?;
        let Some(workflow) = view.workflow(workflow_id).map_err(|e| state(&e))? else {
            return Ok(());
        };
        let purged = view
            .workflow_archive(workflow_id)
            .map_err(|e| state(&e))?
            .is_some_and(|archive| archive.logs_purged_at.is_some());
        if purged {
            return Ok(());
        }
        let text = events::render_workflow(&view, &workflow).map_err(|e| state(&e))?;
        (workflow, text)
    };
    for (name, bytes) in [
        (ARCHIVE_RENDERED_SPEC, workflow.rendered_spec.into_bytes()),
        (ARCHIVE_TEMPLATE_SPEC, workflow.template_spec.into_bytes()),
        (ARCHIVE_EVENTS, events_text.into_bytes()),
    ] {
        let key = archive_key(workflow_id, name);
        objects
            .put(&key, bytes)
            .await
            .map_err(|source| ArchiveError::Store { key, source })?;
    }
    Ok(())
}

/// Deletes a workflow's log chunks and archive; returns how many objects
/// were listed or named.
pub async fn purge(objects: &ObjectStorage, workflow_id: &str) -> Result<usize, ArchiveError> {
    use futures::StreamExt;
    let logs_prefix = format!("{workflow_id}/logs/");
    let mut keys = objects
        .list(&logs_prefix)
        .await
        .map_err(|source| ArchiveError::Store {
            key: logs_prefix.clone(),
            source,
        })?;
    keys.extend(
        [ARCHIVE_RENDERED_SPEC, ARCHIVE_TEMPLATE_SPEC, ARCHIVE_EVENTS]
            .map(|name| archive_key(workflow_id, name)),
    );
    let count = keys.len();
    let mut deletes = futures::stream::iter(keys)
        .map(|key| async move {
            objects
                .delete(&key)
                .await
                .map_err(|source| ArchiveError::Store { key, source })
        })
        .buffer_unordered(DELETES_IN_FLIGHT_MAX);
    while let Some(result) = deletes.next().await {
        result?;
    }
    Ok(count)
}
