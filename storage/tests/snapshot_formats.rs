//! Snapshot formats: every earlier format still installs (golden files under
//! `testdata/`), and a damaged or foreign image is refused whole, naming
//! what is wrong, before anything changes.

use gantry_storage::{ListFilter, Store};
use sha2::{Digest, Sha256};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open");
    (dir, store)
}

/// A format-1 snapshot written by the version before the table registry.
const FORMAT_1: &[u8] = include_bytes!("../testdata/snapshot-format-1.bin");

fn workflow_count(store: &Store) -> usize {
    store
        .read()
        .expect("read")
        .list(&ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        })
        .expect("list")
        .0
        .len()
}

/// A format-2 image of `tables` (name, rows), checksummed as the store does.
/// (key bytes, value bytes).
type Row = (Vec<u8>, Vec<u8>);

fn format_2(tables: &[(String, Vec<Row>)]) -> Vec<u8> {
    let body = bincode::serde::encode_to_vec(tables, bincode::config::standard()).expect("encode");
    let mut image = b"GNTSNAP2".to_vec();
    image.extend_from_slice(&Sha256::digest(&body));
    image.extend_from_slice(&body);
    image
}

#[test]
fn format_1_installs_and_round_trips_through_format_2() {
    let (_a_dir, a) = open();
    a.install_snapshot(FORMAT_1, b"m")
        .expect("install format 1");
    let workflows = workflow_count(&a);
    assert!(workflows > 10, "the fixture holds workflows ({workflows})");
    let image = a.export_snapshot().expect("export");
    assert!(image.starts_with(b"GNTSNAP2"));

    let (_b_dir, b) = open();
    b.install_snapshot(&image, b"n").expect("install format 2");
    assert_eq!(b.export_snapshot().expect("export"), image);
    assert_eq!(workflow_count(&b), workflows);
    assert_eq!(b.raft_meta().expect("meta").as_deref(), Some(&b"n"[..]));
}

#[test]
fn export_state_carries_the_raft_row_separately() {
    let (_dir, store) = open();
    store
        .install_snapshot(FORMAT_1, b"position")
        .expect("install");
    let export = store.export_state().expect("export");
    assert_eq!(export.raft_meta.as_deref(), Some(&b"position"[..]));
    assert!(
        !export
            .image
            .windows(b"position".len())
            .any(|w| w == b"position"),
        "the Raft row is not part of the image"
    );
}

#[test]
fn damaged_images_are_refused_and_change_nothing() {
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let before = store.export_snapshot().expect("export");

    let mut flipped = before.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let truncated = &before[..before.len() - 7];
    let unknown = format_2(&[("tables_from_the_future".to_string(), Vec::new())]);
    let bad_width = format_2(&[(
        "counters".to_string(),
        vec![(b"name".to_vec(), vec![1, 2, 3])],
    )]);
    for (case, image, expected) in [
        ("bit flip", flipped.as_slice(), "checksum mismatch"),
        ("truncated", truncated, "checksum mismatch"),
        ("short", &before[..20], "truncated"),
        (
            "unknown table",
            unknown.as_slice(),
            "tables_from_the_future",
        ),
        ("wrong width", bad_width.as_slice(), "table counters"),
        ("garbage", b"garbage".as_slice(), "bad magic"),
    ] {
        let error = store
            .install_snapshot(image, b"x")
            .expect_err(case)
            .to_string();
        assert!(error.contains(expected), "{case}: {error}");
        assert_eq!(store.export_snapshot().expect("export"), before, "{case}");
    }
}
