//! Corruption is detected, never served: a value changed under the store is
//! refused on read naming its table and key (and noted, so the node reports
//! itself unhealthy); a flipped bit or a zeroed page in the file is refused
//! when the store opens; a store written before rows were sealed is sealed
//! once on open and reads as before.

use gantry_storage::{ListFilter, Store};
use redb::{ReadableTable, TableDefinition};
use std::path::Path;

const FORMAT_1: &[u8] = include_bytes!("../testdata/snapshot-format-1.bin");
const WORKFLOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("workflows");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A store filled from the golden image, closed; returns its workflow IDs.
fn filled_store(path: &Path) -> Vec<String> {
    let store = Store::open(path).expect("open");
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let ids = all_workflows(&store).expect("list");
    assert!(ids.len() > 10, "the fixture holds workflows");
    ids
}

fn all_workflows(store: &Store) -> Result<Vec<String>, gantry_storage::StorageError> {
    let filter = ListFilter {
        limit: usize::MAX,
        ..ListFilter::default()
    };
    let (workflows, _) = store.read()?.list(&filter)?;
    Ok(workflows.into_iter().map(|w| w.id).collect())
}

/// Rewrites every value of `table` through redb itself (so redb's own
/// checksums stay valid) with `change`.
fn rewrite<K: redb::Key + 'static>(
    path: &Path,
    table: TableDefinition<K, &[u8]>,
    change: impl Fn(&[u8]) -> Vec<u8>,
) where
    for<'a> K::SelfType<'a>: ToOwned,
    for<'a> <K::SelfType<'a> as ToOwned>::Owned: std::borrow::Borrow<K::SelfType<'a>>,
{
    let db = redb::Database::create(path).expect("open redb");
    let txn = db.begin_write().expect("write");
    {
        let mut rows = txn.open_table(table).expect("table");
        let mut changed = Vec::new();
        for row in rows.iter().expect("iter") {
            let (key, value) = row.expect("row");
            changed.push((
                K::as_bytes(&key.value()).as_ref().to_vec(),
                change(value.value()),
            ));
        }
        for (key, value) in &changed {
            rows.insert(K::from_bytes(key), value.as_slice())
                .expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[test]
fn a_value_changed_under_the_store_is_refused_naming_table_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let ids = filled_store(&path);
    let victim = ids[0].clone();
    {
        let db = redb::Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(WORKFLOWS).expect("table");
            let mut value = table
                .get(victim.as_str())
                .expect("get")
                .expect("row")
                .value()
                .to_vec();
            value[2] ^= 0x04;
            table
                .insert(victim.as_str(), value.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = Store::open(&path).expect("redb's own checks pass");
    assert_eq!(store.corruption(), None);
    let error = store
        .read()
        .expect("read")
        .workflow(&victim)
        .expect_err("the changed row is refused")
        .to_string();
    assert!(
        error.contains("table `workflows`") && error.contains(&victim),
        "{error}"
    );
    let noted = store.corruption().expect("the store notes it");
    assert!(noted.contains(&victim), "{noted}");
    assert!(all_workflows(&store).is_err(), "a list meets it too");
    // Other rows still read.
    assert!(store.read().expect("read").workflow(&ids[1]).is_ok());
}

#[test]
fn a_flipped_bit_or_a_zeroed_page_in_the_file_is_refused_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let ids = filled_store(&path);
    let pristine = std::fs::read(&path).expect("read file");
    let needle = ids[0].as_bytes();
    let at = pristine
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the workflow's key is in the file");
    let page = 4096;
    let start = at / page * page;
    let damaged = [
        ("a flipped bit", {
            let mut bytes = pristine.clone();
            bytes[at] ^= 0x01;
            bytes
        }),
        ("a zeroed page", {
            let mut bytes = pristine.clone();
            bytes[start..(start + page).min(pristine.len())].fill(0);
            bytes
        }),
    ];
    for (case, bytes) in damaged {
        std::fs::write(&path, &bytes).expect("write damage");
        let error = match Store::open(&path) {
            Ok(store) => panic!(
                "{case}: opened; corruption noted: {:?}, workflows: {:?}",
                store.corruption(),
                all_workflows(&store).map(|ids| ids.len())
            ),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("corrupt"), "{case}: {error}");
        assert!(error.contains("state.redb"), "{case}: {error}");
    }
    std::fs::write(&path, &pristine).expect("restore");
    let store = Store::open(&path).expect("the pristine file opens");
    assert_eq!(all_workflows(&store).expect("list"), ids);
}

#[test]
fn a_store_written_before_rows_were_sealed_is_sealed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let ids = filled_store(&path);
    let sealed_image = Store::open(&path)
        .expect("open")
        .export_snapshot()
        .expect("export");
    // Make it the store of the version before: no marker, bare values.
    let unseal = |value: &[u8]| value[1..value.len() - 4].to_vec();
    macro_rules! unseal_tables {
        ($($name:literal: $key:ty),*) => {$(
            rewrite(&path, TableDefinition::<$key, &[u8]>::new($name), unseal);
        )*};
    }
    {
        let db = redb::Database::create(&path).expect("open redb");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .remove("\0row_format")
            .expect("remove the marker");
        txn.commit().expect("commit");
    }
    unseal_tables!(
        "meta": &str, "workflows": &str, "groups": (&str, &str), "tasks": (&str, &str),
        "task_plans": (&str, &str), "timers": (i64, u64), "jobs": u64, "pools": &str,
        "tokens": &str, "config_history": (u8, u64), "backends": &str,
        "log_chunks": (&str, &str, u32, u64), "workflow_archive": &str,
        "task_runs": (&str, &str, u32), "request_keys": &str,
        "group_tallies": (&str, &str), "workflow_tallies": &str,
        "workflow_specs": &str
    );
    let store = Store::open(&path).expect("the older store opens");
    assert_eq!(all_workflows(&store).expect("list"), ids);
    assert_eq!(store.raft_meta().expect("meta").as_deref(), Some(&b"m"[..]));
    assert_eq!(store.export_snapshot().expect("export"), sealed_image);
    drop(store);
    // Sealing happens once: opening again changes nothing.
    let store = Store::open(&path).expect("open again");
    assert_eq!(store.export_snapshot().expect("export"), sealed_image);
}
