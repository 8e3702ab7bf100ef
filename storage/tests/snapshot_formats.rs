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
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    read_every_row(&store);
}

/// Reads every row of every table through the read views the server uses.
fn read_every_row(store: &Store) {
    use gantry_storage::ConfigType;
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

/// Today's format (format 2, every row sealed), written once from the
/// format-1 state plus commands that fill the tables added since, and never
/// rewritten (`GANTRY_BLESS=1` writes it when it is missing).
const SEALED_FIXTURE: &str = "testdata/snapshot-format-2-sealed.bin";

/// Tables that hold rows only in passing (emptied as their work is done).
const EMPTY_AT_REST: &[&str] = &[];

fn sealed_fixture() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SEALED_FIXTURE);
    if std::env::var_os("GANTRY_BLESS").is_some() && !path.exists() {
        std::fs::write(&path, bless_sealed_fixture()).expect("write fixture");
    }
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!("{}: {error} (run with GANTRY_BLESS=1 once)", path.display())
    })
}

/// The format-1 state plus a workflow whose task ran, was lost by its
/// executor and runs again (an ended run), an access token and an
/// idempotency key: every table has rows.
fn bless_sealed_fixture() -> Vec<u8> {
    use gantry_storage::plan::{GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan};
    use gantry_storage::{
        Command, PackedSubmission, Priority, Submission, TaskKey, TaskReport, TaskStatus,
        TokenRecord,
    };
    let now = 1_800_000_000_000;
    let task = TaskPlan {
        name: "worker".into(),
        lead: true,
        image: "ubuntu:24.04".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        environment: Default::default(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        resource: ResourcePlan::default(),
        exit_actions: Vec::new(),
        credentials: Default::default(),
        privileged: false,
        host_network: false,
        volume_mounts: Vec::new(),
    };
    let submission = Submission {
        name: "golden".into(),
        uuid: "uuid-golden".into(),
        pool: "default".into(),
        user: "alice".into(),
        priority: Priority::Normal,
        template_spec: "workflow: {name: golden}".into(),
        rendered_spec: "workflow: {name: golden}".into(),
        plan: Ok(WorkflowPlan {
            groups: vec![GroupPlan {
                name: "worker".into(),
                tasks: vec![task],
                upstream: Vec::new(),
                barrier: false,
                ignore_nonlead_status: false,
            }],
            exec_timeout_seconds: None,
            queue_timeout_seconds: None,
        }),
    };
    let key = TaskKey {
        workflow_id: "golden-1".into(),
        task: "worker".into(),
        retry_id: 0,
    };
    let commands = [
        Command::Idempotent {
            now,
            key: "alice/golden-1".into(),
            command: Box::new(Command::SubmitPackedWorkflow {
                now,
                packed: PackedSubmission::pack(&submission).expect("pack"),
            }),
        },
        Command::ReportTask {
            now: now + 1,
            report: TaskReport {
                key,
                status: TaskStatus::Running,
                exit_code: None,
                message: None,
                node_name: Some("node-a".into()),
                time: now + 1,
            },
        },
        // The executor no longer runs it: the run ends and the next starts.
        Command::OperatorHello {
            now: now + 2,
            backend: "local".into(),
            running: Vec::new(),
        },
        Command::IssueToken {
            token: TokenRecord {
                name: "ci".into(),
                service: true,
                hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                user: "ci-bot".into(),
                roles: vec!["osmo-user".into()],
                description: "CI".into(),
                created: now,
                expires: None,
            },
        },
    ];
    let (_dir, store) = open();
    store.install_snapshot(FORMAT_1, b"m").expect("install");
    let apply = |command: &Command| {
        store
            .apply(&[std::slice::from_ref(command)], b"m", true)
            .expect("apply");
    };
    let [submit, running, hello, token] = commands;
    apply(&submit);
    // The backend took every queued job (the golden workflow's launch).
    for job in store.read().expect("read").jobs(usize::MAX).expect("jobs") {
        apply(&Command::CompleteJob { job_id: job.id });
    }
    for command in [running, hello, token] {
        apply(&command);
    }
    store.export_snapshot().expect("export")
}

/// Every table of today's format has rows in the sealed fixture, and it
/// installs and reads back through the server's views:
/// a change that would misread rows some cluster holds fails here.
#[test]
fn every_table_of_the_sealed_fixture_has_rows_that_decode_today() {
    let fixture = sealed_fixture();
    let empty: Vec<String> = tables_of(&fixture)
        .into_iter()
        .filter(|(table, rows)| rows.is_empty() && !EMPTY_AT_REST.contains(&table.as_str()))
        .map(|(table, _)| table)
        .collect();
    assert!(
        empty.is_empty(),
        "the fixture holds no row of tables {empty:?}"
    );
    let (_dir, store) = open();
    store.install_snapshot(&fixture, b"m").expect("install");
    read_every_row(&store);
}

/// An image from before the list's indexes (the sealed fixture holds none
/// of their tables) installs with them built from its workflows: the list
/// by user, pool and submit time and the lookup by uuid answer as a scan
/// of the workflows would.
#[test]
fn an_image_from_before_the_list_indexes_gets_them_built() {
    let fixture = sealed_fixture();
    let tables: Vec<String> = tables_of(&fixture).into_iter().map(|(t, _)| t).collect();
    assert!(!tables.contains(&"workflows_by_user".to_string()));
    let (_dir, store) = open();
    store.install_snapshot(&fixture, b"m").expect("install");
    let view = store.read().expect("read");
    let list = |filter: ListFilter| -> Vec<String> {
        let (workflows, _) = view
            .list(&ListFilter {
                limit: usize::MAX,
                ..filter
            })
            .expect("list");
        workflows.into_iter().map(|w| w.id).collect()
    };
    let (all, _) = view
        .list(&ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        })
        .expect("list");
    assert!(all.len() > 2, "the fixture holds workflows");
    let ids = |keep: &dyn Fn(&gantry_storage::WorkflowRecord) -> bool| -> Vec<String> {
        all.iter()
            .filter(|w| keep(w))
            .map(|w| w.id.clone())
            .collect()
    };
    let user = all[0].user.clone();
    assert_eq!(
        list(ListFilter {
            users: vec![user.clone()],
            ..ListFilter::default()
        }),
        ids(&|w| w.user == user)
    );
    let pool = all[0].pool.clone();
    assert_eq!(
        list(ListFilter {
            pools: vec![pool.clone()],
            ..ListFilter::default()
        }),
        ids(&|w| w.pool == pool)
    );
    let middle = all[all.len() / 2].submit_time;
    assert_eq!(
        list(ListFilter {
            submitted_after: Some(middle),
            ..ListFilter::default()
        }),
        ids(&|w| w.submit_time >= middle)
    );
    assert_eq!(
        view.find_workflow("uuid-golden")
            .expect("find")
            .map(|w| w.id),
        Some("golden-1".to_string())
    );
}
