//! The workflow list's indexes by user, pool, uuid and submit time, and
//! the tags a workflow carries.
//!
//! Invariants: the user, pool, uuid and time indexes are a function of the
//! workflows table alone: written once per workflow when it is first put
//! (they hold only what never changes) and, for a state written before they
//! existed, built from the workflows once ([`rebuild_if_stale`], on open and
//! after a snapshot install), so every replica holds the same rows; a uuid
//! names the first workflow that had it (uuids are random, so a second is a
//! replayed submit, which must not re-point it).

use crate::error::StorageError;
use crate::record::WorkflowRecord;
use crate::row::decode_row;
use crate::tables::{BY_POOL, BY_TIME, BY_USER, BY_UUID, COUNTERS, WORKFLOWS};
use redb::{ReadableTable, WriteTransaction};

/// Counter key: the version of the indexes built over the workflows table
/// (absent: a state from before them).
const INDEXES_VERSION_KEY: &str = "\0workflow_indexes_version";
const INDEXES_VERSION: u64 = 1;

/// Indexes a workflow put for the first time.
pub(crate) fn index_new_workflow(
    txn: &WriteTransaction,
    workflow: &WorkflowRecord,
) -> Result<(), StorageError> {
    let (id, seq) = (workflow.id.as_str(), workflow.submit_seq);
    txn.open_table(BY_USER)?
        .insert((workflow.user.as_str(), seq), id)?;
    txn.open_table(BY_POOL)?
        .insert((workflow.pool.as_str(), seq), id)?;
    let mut by_uuid = txn.open_table(BY_UUID)?;
    if by_uuid.get(workflow.uuid.as_str())?.is_none() {
        by_uuid.insert(workflow.uuid.as_str(), id)?;
    }
    txn.open_table(BY_TIME)?
        .insert((workflow.submit_time, seq), id)?;
    Ok(())
}

/// Builds the indexes from the workflows table if this state predates
/// them; returns whether it did.
pub(crate) fn rebuild_if_stale(txn: &WriteTransaction) -> Result<bool, StorageError> {
    let version = txn
        .open_table(COUNTERS)?
        .get(INDEXES_VERSION_KEY)?
        .map(|v| v.value());
    if version == Some(INDEXES_VERSION) {
        return Ok(false);
    }
    for table in [BY_USER, BY_POOL] {
        txn.delete_table(table)?;
        txn.open_table(table)?;
    }
    txn.delete_table(BY_UUID)?;
    txn.open_table(BY_UUID)?;
    txn.delete_table(BY_TIME)?;
    txn.open_table(BY_TIME)?;
    let mut workflows = Vec::new();
    {
        let table = txn.open_table(WORKFLOWS)?;
        for row in table.iter()? {
            let (key, value) = row?;
            let workflow: WorkflowRecord = decode_row(&WORKFLOWS, &key.value(), value.value())?;
            workflows.push(workflow);
        }
    }
    // In submit order, so a repeated uuid names its first workflow.
    workflows.sort_unstable_by_key(|workflow| workflow.submit_seq);
    for workflow in &workflows {
        index_new_workflow(txn, workflow)?;
    }
    txn.open_table(COUNTERS)?
        .insert(INDEXES_VERSION_KEY, INDEXES_VERSION)?;
    Ok(true)
}

/// A workflow's tags from the `workflow_tags` table, in tag order.
pub(crate) fn tags_of(
    table: &impl ReadableTable<(&'static str, &'static str), ()>,
    id: &str,
) -> Result<Vec<String>, StorageError> {
    let mut tags = Vec::new();
    for row in table.range((id, "")..)? {
        let (key, _) = row?;
        let (workflow, tag) = key.value();
        if workflow != id {
            break;
        }
        tags.push(tag.to_string());
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use crate::list::ListFilter;
    use crate::record::{Millis, PoolRecord, Submission};
    use crate::status::Priority;
    use crate::store::Store;
    use crate::tables::{BY_POOL, BY_TIME, BY_USER, BY_UUID, COUNTERS};

    /// A state written before the user, pool, uuid and time indexes
    /// existed gets them when it is opened, once.
    #[test]
    fn opening_an_older_state_builds_the_missing_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let submit = |n: u64, user: &str, now: Millis| Command::SubmitWorkflow {
            now,
            submission: Submission {
                name: "wf".into(),
                uuid: format!("u{n}"),
                pool: "default".into(),
                user: user.into(),
                priority: Priority::Normal,
                template_spec: String::new(),
                rendered_spec: String::new(),
                plan: Err("no".into()),
            },
        };
        {
            let store = Store::open(&path).expect("open");
            let commands = vec![
                Command::PutPool {
                    pool: PoolRecord {
                        name: "default".into(),
                        description: String::new(),
                        backend: "local".into(),
                        default_platform: None,
                        platforms: Vec::new(),
                    },
                },
                submit(1, "ann", 100),
                submit(2, "bob", 200),
            ];
            store
                .apply(&[commands.as_slice()], b"m", true)
                .expect("apply");
            // As an older version left it: no such indexes, no version.
            let txn = store.database().begin_write().expect("write");
            for table in [BY_USER, BY_POOL] {
                txn.delete_table(table).expect("delete");
            }
            txn.delete_table(BY_UUID).expect("delete");
            txn.delete_table(BY_TIME).expect("delete");
            txn.open_table(COUNTERS)
                .expect("counters")
                .remove(super::INDEXES_VERSION_KEY)
                .expect("remove");
            txn.commit().expect("commit");
        }
        let store = Store::open(&path).expect("reopen");
        let read = store.read().expect("read");
        let list = |filter: ListFilter| {
            let (workflows, _) = read.list(&filter).expect("list");
            workflows.into_iter().map(|w| w.id).collect::<Vec<_>>()
        };
        let all = || ListFilter {
            limit: 10,
            ..ListFilter::default()
        };
        assert_eq!(
            list(ListFilter {
                users: vec!["bob".into()],
                ..all()
            }),
            ["wf-2"]
        );
        assert_eq!(
            list(ListFilter {
                pools: vec!["default".into()],
                submitted_after: Some(150),
                ..all()
            }),
            ["wf-2"]
        );
        assert_eq!(
            read.find_workflow("u1").expect("find").map(|w| w.id),
            Some("wf-1".to_string())
        );
        // Built once: a later submit is indexed by apply, not rebuilt.
        drop(read);
        store
            .apply(&[&[submit(3, "ann", 300)]], b"m", true)
            .expect("apply");
        let read = store.read().expect("read");
        let (workflows, _) = read
            .list(&ListFilter {
                users: vec!["ann".into()],
                limit: 10,
                ..ListFilter::default()
            })
            .expect("list");
        assert_eq!(
            workflows.into_iter().map(|w| w.id).collect::<Vec<_>>(),
            ["wf-1", "wf-3"]
        );
    }
}
