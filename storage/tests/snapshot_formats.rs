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
    // Crafted rows redb's own decoders would panic on.
    let not_utf8 = format_2(&[(
        "workflows".to_string(),
        vec![(vec![0xff, 0xfe], vec![1, 2, 3])],
    )]);
    let overrun_tuple = format_2(&[(
        "groups".to_string(),
        vec![(vec![0xff, 0xff, 0xff, 0x7f, b'a'], vec![1])],
    )]);
    for (case, image, expected) in [
        ("key not UTF-8", not_utf8.as_slice(), "table workflows"),
        (
            "tuple key overrun",
            overrun_tuple.as_slice(),
            "table groups",
        ),
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

/// The tables of a format-2 image.
fn tables_of(image: &[u8]) -> Vec<(String, Vec<Row>)> {
    let body = &image[8 + 32..];
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .expect("decode")
        .0
}

/// Whether `value` is a sealed row (format byte 1, CRC-32C trailer).
fn is_sealed(value: &[u8]) -> bool {
    value.len() >= 5 && value[0] == 1 && {
        let (body, sum) = value.split_at(value.len() - 4);
        crc32c::crc32c(body).to_le_bytes() == sum
    }
}

#[test]
fn every_bytes_value_of_an_export_is_sealed() {
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let tables = tables_of(&store.export_snapshot().expect("export"));
    for (table, rows) in &tables {
        if [
            "workflows",
            "groups",
            "tasks",
            "task_plans",
            "timers",
            "config_history",
        ]
        .contains(&table.as_str())
        {
            assert!(!rows.is_empty(), "the fixture fills {table}");
            assert!(rows.iter().all(|(_, value)| is_sealed(value)), "{table}");
        }
    }
}

#[test]
fn an_image_from_before_rows_were_sealed_installs_sealed() {
    let (_a_dir, a) = open();
    a.install_snapshot(FORMAT_1, b"m").expect("install");
    let sealed = a.export_snapshot().expect("export");
    // The same state as a format-2 image of the version before sealing.
    let legacy: Vec<(String, Vec<Row>)> = tables_of(&sealed)
        .into_iter()
        .map(|(table, rows)| {
            let rows = rows
                .into_iter()
                .filter(|(key, _)| key.as_slice() != b"\0row_format")
                .map(|(key, value)| match is_sealed(&value) {
                    true => (key, value[1..value.len() - 4].to_vec()),
                    false => (key, value),
                })
                .collect();
            (table, rows)
        })
        .collect();
    let (_b_dir, b) = open();
    b.install_snapshot(&format_2(&legacy), b"n")
        .expect("install the older image");
    assert_eq!(b.export_snapshot().expect("export"), sealed);
    assert_eq!(b.raft_meta().expect("meta").as_deref(), Some(&b"n"[..]));
}

#[test]
fn a_sealed_image_with_a_damaged_row_is_refused_naming_the_row() {
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let before = store.export_snapshot().expect("export");
    let mut tables = tables_of(&before);
    let (_, rows) = tables
        .iter_mut()
        .find(|(table, _)| table == "workflows")
        .expect("workflows");
    let (key, value) = &mut rows[0];
    let key = String::from_utf8_lossy(key).into_owned();
    value[3] ^= 0x01;
    let error = store
        .install_snapshot(&format_2(&tables), b"x")
        .expect_err("a damaged row")
        .to_string();
    assert!(
        error.contains("table `workflows`") && error.contains(&key),
        "{error}"
    );
    assert_eq!(store.export_snapshot().expect("export"), before);
}

/// Every row of every table in the format-1 fixture (written by an earlier
/// version) decodes with today's record types, through the read views the
/// server uses.
#[test]
fn every_row_of_an_older_image_decodes_today() {
    use gantry_storage::ConfigType;
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let view = store.read().expect("read");
    let (workflows, _) = view
        .list(&ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        })
        .expect("workflows");
    let mut tasks = 0;
    for workflow in &workflows {
        for group in view.groups(workflow).expect("groups") {
            for task in view.group_tasks(&group).expect("tasks") {
                view.task_runs(&workflow.id, &task.name).expect("runs");
                tasks += 1;
            }
        }
        view.workflow_archive(&workflow.id).expect("archive");
        view.log_chunks(&workflow.id, None, None).expect("chunks");
    }
    assert!(tasks > 10, "the fixture holds tasks ({tasks})");
    view.pools().expect("pools");
    view.tokens().expect("tokens");
    view.backends().expect("backends");
    view.jobs(usize::MAX).expect("jobs");
    assert!(!view
        .due_timers(i64::MAX, usize::MAX)
        .expect("timers")
        .is_empty());
    for config_type in [
        ConfigType::Service,
        ConfigType::Workflow,
        ConfigType::Backend,
        ConfigType::Pool,
        ConfigType::PodTemplate,
        ConfigType::ResourceValidation,
        ConfigType::Role,
    ] {
        view.config_history(config_type).expect("config history");
    }
}
