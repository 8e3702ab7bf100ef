//! The state hash: equal states hash equal, and a change of any stored
//! byte, an added row or another applied position changes the hash.

use super::*;
use crate::command::Command;
use crate::error::StorageError;
use crate::record::{PoolRecord, Submission};
use crate::schema::RegisteredTable;
use crate::status::Priority;
use redb::ReadableDatabase;

/// A store with a pool and three (invalid, so at once ended) workflows:
/// rows in the workflow, index, timer, archive and counter tables.
fn store_with_rows(dir: &std::path::Path, name: &str) -> Store {
    let store = Store::open(&dir.join(name)).expect("open");
    let mut commands = vec![Command::PutPool {
        pool: PoolRecord {
            name: "default".into(),
            description: "the pool".into(),
            backend: "local".into(),
            default_platform: None,
            platforms: Vec::new(),
        },
    }];
    for n in 1..=3 {
        commands.push(Command::SubmitWorkflow {
            now: 100 * n,
            submission: Submission {
                name: "bad".into(),
                uuid: format!("u{n}"),
                pool: "default".into(),
                user: "alice".into(),
                priority: Priority::Normal,
                template_spec: "spec".into(),
                rendered_spec: "spec".into(),
                plan: Err("no".into()),
            },
        });
    }
    store
        .apply(&[commands.as_slice()], b"position-7", true)
        .expect("apply");
    store
}

/// Replaces table `table`'s rows in one write transaction (not durable:
/// the test only reads them back).
fn replace_rows(store: &Store, table: &dyn RegisteredTable, rows: &[(Vec<u8>, Vec<u8>)]) {
    let mut txn = store.database().begin_write().expect("write");
    txn.set_durability(redb::Durability::None)
        .expect("durability");
    table.replace(&txn, rows).expect("replace");
    txn.commit().expect("commit");
}

#[test]
fn equal_states_hash_equal_and_name_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = store_with_rows(dir.path(), "one.redb");
    let two = store_with_rows(dir.path(), "two.redb");
    let (a, b) = (
        one.state_hash().expect("hash"),
        two.state_hash().expect("hash"),
    );
    assert_eq!(a, b);
    assert!(a.rows > 10, "{} rows", a.rows);
    assert_eq!(a.raft_meta.as_deref(), Some(b"position-7".as_slice()));
    assert_eq!(a.hex().len(), 64);
    // Hashing again changes nothing (a read has no effect).
    assert_eq!(one.state_hash().expect("hash"), a);
}

#[test]
fn any_changed_byte_an_added_row_or_another_position_changes_the_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_rows(dir.path(), "state.redb");
    let original = store.state_hash().expect("hash").digest;
    let mut flips = 0;
    for table in schema::ALL {
        let txn = store.database().begin_read().expect("read");
        let rows = table.export(&txn).expect("export");
        drop(txn);
        for (row, (_, value)) in rows.iter().enumerate() {
            // Every byte of every value. XOR 1 keeps ASCII text ASCII, so
            // each changed row still reads back as its type.
            for position in 0..value.len() {
                let mut changed = rows.clone();
                changed[row].1[position] ^= 1;
                replace_rows(&store, *table, &changed);
                // A changed Raft row fails its own check before it is
                // hashed; any other change changes the hash.
                match store.state_hash() {
                    Ok(hash) => assert_ne!(
                        hash.digest,
                        original,
                        "table {} row {row} byte {position} changed, hash did not",
                        table.table_name()
                    ),
                    Err(error) => assert!(
                        matches!(error, StorageError::Corrupt { .. }),
                        "table {} row {row} byte {position}: {error}",
                        table.table_name()
                    ),
                }
                flips += 1;
            }
        }
        replace_rows(&store, *table, &rows);
        assert_eq!(store.state_hash().expect("hash").digest, original);
    }
    assert!(flips > 100, "only {flips} bytes tried");

    // A row more (a counter nobody keeps), or the same state at another
    // applied position.
    let counters = schema::table_named("counters").expect("counters");
    let txn = store.database().begin_read().expect("read");
    let mut rows = counters.export(&txn).expect("export");
    drop(txn);
    let before = rows.clone();
    rows.push((b"zz-extra".to_vec(), 1u64.to_le_bytes().to_vec()));
    replace_rows(&store, counters, &rows);
    assert_ne!(store.state_hash().expect("hash").digest, original);
    replace_rows(&store, counters, &before);
    assert_eq!(store.state_hash().expect("hash").digest, original);
    store
        .apply(&[], b"position-8", true)
        .expect("apply nothing");
    let moved = store.state_hash().expect("hash");
    assert_ne!(moved.digest, original);
    assert_eq!(moved.raft_meta.as_deref(), Some(b"position-8".as_slice()));
}

#[test]
fn a_row_moved_between_tables_changes_the_hash() {
    // The same bytes under another table name must not hash the same: the
    // table names and row counts separate the tables.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_with_rows(dir.path(), "state.redb");
    let original = store.state_hash().expect("hash").digest;
    let workflows = schema::table_named("workflows").expect("workflows");
    let archive = schema::table_named("workflow_archive").expect("archive");
    let txn = store.database().begin_read().expect("read");
    let mut from = workflows.export(&txn).expect("export");
    let mut to = archive.export(&txn).expect("export");
    drop(txn);
    let moved = from.pop().expect("a workflow");
    to.retain(|(key, _)| *key != moved.0);
    to.push(moved);
    to.sort();
    replace_rows(&store, workflows, &from);
    replace_rows(&store, archive, &to);
    assert_ne!(store.state_hash().expect("hash").digest, original);
}
