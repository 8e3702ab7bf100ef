//! The tallies (each group's tasks and each workflow's groups counted by
//! status) agree with the rows after every command of random sequences of
//! submits, reports, retries, lead decisions, timeouts, cancels, lost
//! backends and operator restarts; and a state written before the tallies
//! existed (an older snapshot image, an older state file) has them counted
//! from its rows, to the same bytes the incremental upkeep writes.

use gantry_storage::plan::{
    ExitAction, ExitActionPlan, GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan,
};
use gantry_storage::{
    Command, ConfigData, ConfigMeta, ConfigType, ListFilter, PoolRecord, Priority, Store,
    Submission, TaskKey, TaskRecord, TaskReport, TaskStatus,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open");
    (dir, store)
}

fn task(name: &str, lead: bool) -> TaskPlan {
    TaskPlan {
        name: name.into(),
        lead,
        image: "ubuntu".into(),
        command: vec!["true".into()],
        resource: ResourcePlan {
            name: "default".into(),
            ..ResourcePlan::default()
        },
        // Exit code 2 asks for a retry, 3 counts as success.
        exit_actions: vec![
            ExitActionPlan {
                action: ExitAction::Reschedule,
                codes: vec![(2, 2)],
            },
            ExitActionPlan {
                action: ExitAction::Complete,
                codes: vec![(3, 3)],
            },
        ],
        ..TaskPlan::default()
    }
}

fn group(name: &str, tasks: &[&str], upstream: &[&str], ignore: bool) -> GroupPlan {
    GroupPlan {
        name: name.into(),
        tasks: tasks
            .iter()
            .enumerate()
            .map(|(index, task_name)| task(task_name, index == 0))
            .collect(),
        upstream: upstream.iter().map(|s| s.to_string()).collect(),
        barrier: true,
        ignore_nonlead_status: ignore,
    }
}

fn plan(shape: u8, ignore: bool, timeouts: bool) -> WorkflowPlan {
    let groups = match shape % 4 {
        0 => vec![group("a", &["a1", "a2", "a3", "a4"], &[], ignore)],
        1 => vec![
            group("a", &["a1"], &[], ignore),
            group("b", &["b1", "b2"], &["a"], ignore),
            group("c", &["c1"], &["b"], ignore),
        ],
        2 => vec![
            group("a", &["a1"], &[], ignore),
            group("b", &["b1"], &[], ignore),
            group("c", &["c1", "c2", "c3"], &["a", "b"], ignore),
            group("d", &["d1"], &["a"], ignore),
        ],
        _ => (0..6)
            .map(|index| {
                let name = format!("g{index}");
                let task_name = format!("g{index}t");
                group(&name, &[task_name.as_str()], &[], ignore)
            })
            .collect(),
    };
    WorkflowPlan {
        groups,
        exec_timeout_seconds: timeouts.then_some(30),
        queue_timeout_seconds: timeouts.then_some(10),
    }
}

fn setup() -> Vec<Command> {
    vec![
        Command::PutPool {
            pool: PoolRecord {
                name: "default".into(),
                description: String::new(),
                backend: "local".into(),
                default_platform: None,
                platforms: Vec::new(),
            },
        },
        Command::PutConfig {
            now: 1,
            config_type: ConfigType::Workflow,
            name: String::new(),
            meta: ConfigMeta {
                user: "admin".into(),
                description: "retries".into(),
                tags: Vec::new(),
            },
            data: Box::new(ConfigData::Json(r#"{"max_retry_per_task":2}"#.into())),
        },
    ]
}

/// One step of a run, resolved against the state when it is applied.
#[derive(Clone, Debug)]
enum Step {
    Submit {
        shape: u8,
        ignore: bool,
        timeouts: bool,
    },
    Report {
        pick: usize,
        outcome: u8,
    },
    FireTimer {
        pick: usize,
    },
    CompleteJob {
        pick: usize,
    },
    Cancel {
        pick: usize,
        force: bool,
    },
    /// An operator restart that still runs the tasks `keep` selects.
    Hello {
        keep: u8,
    },
    /// A heartbeat whose lost timer fails the backend's groups when it fires.
    Heartbeat,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(shape, ignore, timeouts)| Step::Submit { shape, ignore, timeouts }),
        12 => (any::<usize>(), any::<u8>()).prop_map(|(pick, outcome)| Step::Report { pick, outcome }),
        2 => any::<usize>().prop_map(|pick| Step::FireTimer { pick }),
        1 => any::<usize>().prop_map(|pick| Step::CompleteJob { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, force)| Step::Cancel { pick, force }),
        1 => any::<u8>().prop_map(|keep| Step::Hello { keep }),
        1 => Just(Step::Heartbeat),
    ]
}

fn key(task: &TaskRecord) -> TaskKey {
    TaskKey {
        workflow_id: task.workflow_id.clone(),
        task: task.name.clone(),
        retry_id: task.retry_id,
    }
}

/// Unfinished tasks of every workflow, in a stable order.
fn live_tasks(store: &Store) -> Vec<TaskRecord> {
    let read = store.read().expect("read");
    let (workflows, _) = read
        .list(&ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        })
        .expect("list");
    let mut live = Vec::new();
    for workflow in &workflows {
        for group in read.groups(workflow).expect("groups") {
            for task in read.group_tasks(&group).expect("tasks") {
                if !task.status.is_finished() {
                    live.push(task);
                }
            }
        }
    }
    live
}

fn command(store: &Store, step: &Step, now: i64, submits: &mut u64) -> Command {
    let read = store.read().expect("read");
    match step {
        Step::Submit {
            shape,
            ignore,
            timeouts,
        } => {
            *submits += 1;
            Command::SubmitWorkflow {
                now,
                submission: Submission {
                    name: "wf".into(),
                    uuid: format!("uuid-{submits}"),
                    pool: "default".into(),
                    user: "alice".into(),
                    priority: Priority::Normal,
                    template_spec: String::new(),
                    rendered_spec: String::new(),
                    plan: Ok(plan(*shape, *ignore, *timeouts)),
                },
            }
        }
        Step::Report { pick, outcome } => {
            let live = live_tasks(store);
            let Some(task) = live.get(pick % live.len().max(1)) else {
                return Command::CompleteJob { job_id: 0 };
            };
            let (status, exit_code) = match outcome % 12 {
                0 => (TaskStatus::Scheduling, None),
                1 => (TaskStatus::Initializing, None),
                2 | 3 => (TaskStatus::Running, None),
                4 | 5 => (TaskStatus::Completed, Some(0)),
                6 => (TaskStatus::Failed, Some(1)),
                7 => (TaskStatus::Failed, Some(2)),
                8 => (TaskStatus::Failed, Some(3)),
                9 => (TaskStatus::FailedEvicted, None),
                10 => (TaskStatus::FailedImagePull, None),
                _ => (TaskStatus::FailedPreempted, None),
            };
            Command::ReportTask {
                now,
                report: TaskReport {
                    key: key(task),
                    status,
                    exit_code,
                    message: Some(format!("outcome {outcome}")),
                    node_name: None,
                    time: now,
                },
            }
        }
        Step::FireTimer { pick } => {
            let due = read.due_timers(now, 16).expect("timers");
            match due.get(pick % due.len().max(1)) {
                Some(timer) => Command::FireTimer {
                    now,
                    timer_id: timer.id,
                    due: timer.due,
                },
                None => Command::CompleteJob { job_id: 0 },
            }
        }
        Step::CompleteJob { pick } => {
            let jobs = read.jobs(16).expect("jobs");
            Command::CompleteJob {
                job_id: jobs.get(pick % jobs.len().max(1)).map_or(0, |job| job.id),
            }
        }
        Step::Cancel { pick, force } => {
            let (workflows, _) = read
                .list(&ListFilter {
                    limit: usize::MAX,
                    ..ListFilter::default()
                })
                .expect("list");
            Command::CancelWorkflow {
                now,
                workflow_id: workflows
                    .get(pick % workflows.len().max(1))
                    .map_or_else(String::new, |workflow| workflow.id.clone()),
                user: "carol".into(),
                message: None,
                force: *force,
            }
        }
        Step::Hello { keep } => Command::OperatorHello {
            now,
            backend: "local".into(),
            running: live_tasks(store)
                .iter()
                .enumerate()
                .filter(|(index, _)| (keep >> (index % 8)) & 1 == 1)
                .map(|(_, task)| key(task))
                .collect(),
        },
        Step::Heartbeat => Command::BackendHeartbeat {
            now,
            backend: "local".into(),
            nodes: Vec::new(),
            offline_after_ms: 5_000,
            fail_tasks_after_ms: 20_000,
        },
    }
}

fn apply(store: &Store, command: Command) {
    store
        .apply(&[std::slice::from_ref(&command)], b"m", false)
        .expect("apply");
}

/// Runs `steps` on a fresh store, checking the tallies after every command.
fn run(steps: &[Step]) -> Result<(tempfile::TempDir, Store), TestCaseError> {
    let (dir, store) = open();
    for command in setup() {
        apply(&store, command);
    }
    let (mut now, mut submits) = (1_000, 0);
    for (index, step) in steps.iter().enumerate() {
        now += 3_000;
        let command = command(&store, step, now, &mut submits);
        apply(&store, command);
        let mismatches = store.tally_mismatches().expect("recount");
        prop_assert!(
            mismatches.is_empty(),
            "after step {index} ({step:?}): {mismatches:#?}"
        );
    }
    Ok((dir, store))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn tallies_agree_with_the_rows_after_every_command(
        steps in prop::collection::vec(step(), 1..90),
    ) {
        run(&steps)?;
    }
}

/// A format-2 image with `drop` tables and the tally version counter left
/// out, as a version before the tallies wrote it.
fn without_tallies(image: &[u8]) -> Vec<u8> {
    type Tables = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;
    let body = &image[8 + 32..];
    let (mut tables, _): (Tables, _) =
        bincode::serde::decode_from_slice(body, bincode::config::standard()).expect("decode");
    let before = tables.len();
    tables.retain(|(name, _)| name != "group_tallies" && name != "workflow_tallies");
    assert_eq!(tables.len(), before - 2, "the image holds both tallies");
    for (name, rows) in &mut tables {
        if name == "counters" {
            rows.retain(|(key, _)| !key.ends_with(b"tally_version"));
        }
    }
    let body = bincode::serde::encode_to_vec(&tables, bincode::config::standard()).expect("encode");
    let mut old = b"GNTSNAP2".to_vec();
    old.extend_from_slice(&Sha256::digest(&body));
    old.extend_from_slice(&body);
    old
}

/// A busy state: workflows of every shape, part run, part failed, part done.
fn busy_state() -> (tempfile::TempDir, Store) {
    let mut steps = Vec::new();
    for shape in 0..4 {
        steps.push(Step::Submit {
            shape,
            ignore: shape % 2 == 0,
            timeouts: shape == 1,
        });
    }
    for index in 0..60usize {
        steps.push(Step::Report {
            pick: index * 7,
            outcome: (index * 5 % 12) as u8,
        });
    }
    // And one that has not started yet.
    steps.push(Step::Submit {
        shape: 0,
        ignore: true,
        timeouts: false,
    });
    match run(&steps) {
        Ok(state) => state,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn an_image_from_before_the_tallies_installs_with_them_counted_from_its_rows() {
    let (_dir, store) = busy_state();
    let image = store.export_snapshot().expect("export");
    let old = without_tallies(&image);

    let (_other_dir, other) = open();
    other.install_snapshot(&old, b"n").expect("install");
    assert_eq!(
        other.tally_mismatches().expect("recount"),
        Vec::<String>::new()
    );
    assert_eq!(
        other.export_snapshot().expect("export"),
        image,
        "counted from the rows, the tallies are those kept command by command"
    );
    // And they go on being kept.
    let live = live_tasks(&other);
    let task = live.first().expect("a task still runs");
    apply(
        &other,
        Command::ReportTask {
            now: 10_000_000,
            report: TaskReport {
                key: key(task),
                status: TaskStatus::Failed,
                exit_code: Some(1),
                message: None,
                node_name: None,
                time: 10_000_000,
            },
        },
    );
    assert_eq!(
        other.tally_mismatches().expect("recount"),
        Vec::<String>::new()
    );
}

#[test]
fn a_state_file_from_before_the_tallies_has_them_counted_when_opened() {
    let (dir, store) = busy_state();
    let image = store.export_snapshot().expect("export");
    drop(store);
    let path = dir.path().join("state.redb");
    {
        let db = redb::Database::create(&path).expect("redb");
        let txn = db.begin_write().expect("write");
        for name in ["group_tallies", "workflow_tallies"] {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new(name);
            assert!(txn.delete_table(table).expect("delete"), "{name} existed");
        }
        let counters: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("counters");
        txn.open_table(counters)
            .expect("counters")
            .remove("\0tally_version")
            .expect("remove")
            .expect("the version was recorded");
        txn.commit().expect("commit");
    }
    let reopened = Store::open(&path).expect("open");
    assert_eq!(
        reopened.tally_mismatches().expect("recount"),
        Vec::<String>::new()
    );
    assert_eq!(reopened.export_snapshot().expect("export"), image);
}
