//! Determinism and snapshot round-trip of the state machine, over a long,
//! pseudo-random (but fixed-seed) command sequence that exercises every
//! command kind, accepted and rejected.

use gantry_storage::plan::{
    ExitAction, ExitActionPlan, GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan,
};
use gantry_storage::{
    BackendSettings, Command, ConfigData, ConfigMeta, ConfigType, ListFilter, NodeInventory,
    Outcome, PoolRecord, Priority, Store, Submission, TaskKey, TaskReport, TaskStatus,
};
use std::collections::BTreeMap;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open");
    (dir, store)
}

/// xorshift64*: fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn task(name: &str, lead: bool) -> TaskPlan {
    TaskPlan {
        name: name.into(),
        lead,
        image: "ubuntu:24.04".into(),
        command: vec!["true".into()],
        args: Vec::new(),
        environment: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        resource: ResourcePlan {
            name: "default".into(),
            ..ResourcePlan::default()
        },
        exit_actions: Vec::new(),
        credentials: BTreeMap::new(),
        privileged: false,
        host_network: false,
        volume_mounts: Vec::new(),
    }
}

fn group(name: &str, tasks: Vec<TaskPlan>, upstream: &[&str], ignore_nonlead: bool) -> GroupPlan {
    GroupPlan {
        name: name.into(),
        tasks,
        upstream: upstream.iter().map(|s| s.to_string()).collect(),
        barrier: true,
        ignore_nonlead_status: ignore_nonlead,
    }
}

fn random_plan(rng: &mut Rng) -> WorkflowPlan {
    let ignore = rng.chance(50);
    let groups = match rng.below(5) {
        0 => vec![group("a", vec![task("a", true)], &[], ignore)],
        1 => vec![
            group("a", vec![task("a", true)], &[], ignore),
            group("b", vec![task("b", true)], &["a"], ignore),
            group("c", vec![task("c", true)], &["b"], ignore),
        ],
        2 => vec![
            group("a", vec![task("a", true)], &[], ignore),
            group("b", vec![task("b", true)], &["a"], ignore),
            group("c", vec![task("c", true)], &["a"], ignore),
            group("d", vec![task("d", true)], &["b", "c"], ignore),
        ],
        3 => {
            let mut worker = task("w1", false);
            worker.exit_actions.push(ExitActionPlan {
                action: ExitAction::Complete,
                codes: vec![(1, 1)],
            });
            vec![
                group(
                    "train",
                    vec![task("master", true), worker, task("w2", false)],
                    &[],
                    ignore,
                ),
                group("eval", vec![task("eval", true)], &["train"], ignore),
            ]
        }
        _ => vec![
            group("x", vec![task("x", true)], &[], ignore),
            group("y", vec![task("y", true)], &[], ignore),
            // An invalid plan now and then: two leads.
            group(
                "z",
                vec![task("z1", true), task("z2", rng.chance(20))],
                &["x", "y"],
                ignore,
            ),
        ],
    };
    WorkflowPlan {
        groups,
        exec_timeout_seconds: rng.chance(50).then(|| 5 + rng.below(60)),
        queue_timeout_seconds: rng.chance(30).then(|| 5 + rng.below(30)),
    }
}

/// A heartbeat (arming liveness timers that fail tasks when they fire) or a
/// config change, accepted or rejected.
fn config_or_heartbeat(rng: &mut Rng, now: i64) -> Command {
    let backend = ["local", "k8s"][rng.below(2) as usize].to_string();
    let meta = ConfigMeta {
        user: "admin".into(),
        description: format!("change at {now}"),
        tags: Vec::new(),
    };
    match rng.below(5) {
        0 | 1 => Command::BackendHeartbeat {
            now,
            backend,
            nodes: vec![NodeInventory {
                name: "n1".into(),
                cpu_millis: 1000 * (1 + rng.below(8)),
                ..NodeInventory::default()
            }],
            offline_after_ms: 2000 + rng.below(6000),
            fail_tasks_after_ms: if rng.chance(70) {
                10_000 + rng.below(20_000)
            } else {
                0
            },
        },
        2 => Command::PutConfig {
            now,
            config_type: ConfigType::Backend,
            name: backend,
            meta,
            data: Box::new(ConfigData::Backend(BackendSettings::default())),
        },
        3 => Command::RollbackConfig {
            now,
            config_type: ConfigType::Pool,
            revision: 1 + rng.below(4),
            meta,
        },
        _ => Command::DeleteConfig {
            now,
            config_type: ConfigType::Backend,
            name: backend,
            meta,
        },
    }
}

/// Produces the next command from the state of `store` (the generator's model).
fn next_command(rng: &mut Rng, store: &Store, now: i64, seq: &mut u64) -> Command {
    let read = store.read().expect("read");
    let roll = rng.below(100);
    if roll < 15 {
        *seq += 1;
        let name = ["etl", "train", "eval"][rng.below(3) as usize];
        let pool = if rng.chance(5) {
            "nowhere"
        } else {
            ["default", "gpu"][rng.below(2) as usize]
        };
        let plan = if rng.chance(8) {
            Err("workflow.tasks[0].command: must not be empty".to_string())
        } else {
            Ok(random_plan(rng))
        };
        return Command::SubmitWorkflow {
            now,
            submission: Submission {
                name: name.into(),
                uuid: format!("uuid-{seq}"),
                pool: pool.into(),
                user: ["alice", "bob"][rng.below(2) as usize].into(),
                priority: Priority::Normal,
                template_spec: String::new(),
                rendered_spec: String::new(),
                plan,
            },
        };
    }
    if roll < 25 {
        let due = read.due_timers(now, 8).expect("timers");
        if let Some(timer) = due.first() {
            return Command::FireTimer {
                now,
                timer_id: timer.id,
                due: timer.due,
            };
        }
    }
    if roll < 35 {
        let jobs = read.jobs(4).expect("jobs");
        if !jobs.is_empty() {
            let job = &jobs[rng.below(jobs.len() as u64) as usize];
            return Command::CompleteJob { job_id: job.id };
        }
        return Command::CompleteJob { job_id: 999_999 };
    }
    let (workflows, _) = read
        .list(&ListFilter {
            limit: usize::MAX,
            ..ListFilter::default()
        })
        .expect("list");
    if roll < 40 {
        if let Some(w) = workflows.get(rng.below(workflows.len().max(1) as u64) as usize) {
            return Command::CancelWorkflow {
                now,
                workflow_id: w.id.clone(),
                user: "carol".into(),
                message: rng.chance(50).then(|| "stop".to_string()),
                force: rng.chance(30),
            };
        }
    }
    // Unfinished tasks of alive workflows.
    let mut live = Vec::new();
    for w in workflows.iter().filter(|w| w.status.is_alive()) {
        for g in read.groups(w).expect("groups") {
            for t in read.group_tasks(&g).expect("tasks") {
                if !t.status.is_finished() {
                    live.push((w.backend.clone(), t));
                }
            }
        }
    }
    if roll < 45 {
        let backend = ["local", "k8s"][rng.below(2) as usize];
        let running = live
            .iter()
            .filter(|(b, _)| b == backend && rng.chance(70))
            .map(|(_, t)| TaskKey {
                workflow_id: t.workflow_id.clone(),
                task: t.name.clone(),
                retry_id: t.retry_id,
            })
            .collect();
        if rng.chance(50) {
            return Command::OperatorHelloWithExecutor {
                now,
                backend: backend.into(),
                running,
                executor: ["local", "kubernetes"][rng.below(2) as usize].into(),
            };
        }
        return Command::OperatorHello {
            now,
            backend: backend.into(),
            running,
        };
    }
    if roll < 48 {
        return config_or_heartbeat(rng, now);
    }
    let Some((_, t)) = (!live.is_empty()).then(|| &live[rng.below(live.len() as u64) as usize])
    else {
        return Command::ReportTask {
            now,
            report: TaskReport {
                key: TaskKey {
                    workflow_id: "ghost-1".into(),
                    task: "ghost".into(),
                    retry_id: 0,
                },
                status: TaskStatus::Running,
                exit_code: None,
                message: None,
                node_name: None,
                time: now,
            },
        };
    };
    if rng.chance(20) {
        // Log chunks at random offsets: overlaps and repeats are rejected.
        let first = rng.below(8) * 10;
        let chunk = Command::AppendLogChunk {
            chunk: gantry_storage::LogChunk {
                workflow_id: t.workflow_id.clone(),
                task: t.name.clone(),
                retry_id: t.retry_id,
                first_offset: first,
                last_offset: first + rng.below(15),
                key: format!("{}/logs/{}/{first}.zst", t.workflow_id, t.name),
                raw_bytes: 100,
                stored_bytes: 20,
                lines: 10,
            },
        };
        return sequenced(rng, chunk, now);
    }
    let (status, exit_code) = match t.status {
        TaskStatus::Running => match rng.below(6) {
            0..=2 => (TaskStatus::Completed, Some(0)),
            3 => (TaskStatus::Failed, Some(1)),
            4 => (TaskStatus::FailedEvicted, None),
            _ => (TaskStatus::Scheduling, None), // backwards: rejected
        },
        TaskStatus::Initializing => (TaskStatus::Running, None),
        TaskStatus::Scheduling => (
            [TaskStatus::Initializing, TaskStatus::Running][rng.below(2) as usize],
            None,
        ),
        TaskStatus::Waiting => (TaskStatus::Running, None),
        _ => (
            [TaskStatus::Scheduling, TaskStatus::Running][rng.below(2) as usize],
            None,
        ),
    };
    let report = Command::ReportTask {
        now,
        report: TaskReport {
            key: TaskKey {
                workflow_id: t.workflow_id.clone(),
                task: t.name.clone(),
                retry_id: t.retry_id,
            },
            status,
            exit_code,
            message: None,
            node_name: Some(format!("node-{}", rng.below(4))),
            time: now - 10,
        },
    };
    sequenced(rng, report, now)
}

/// Now and then sends a report the way an operator connection does: in a
/// sequenced batch, sometimes as a resend of an older sequence (dropped).
fn sequenced(rng: &mut Rng, report: Command, now: i64) -> Command {
    if !rng.chance(30) {
        return report;
    }
    let seq = u64::try_from(now)
        .unwrap_or(0)
        .saturating_sub(if rng.chance(20) { 1_000 } else { 0 });
    Command::OperatorReports {
        now,
        backend: "local".into(),
        instance: 1 + rng.below(3),
        last_seq: seq + rng.below(3),
        commands: vec![(seq, report)],
    }
}

fn pools() -> Vec<Command> {
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
        Command::PutPool {
            pool: PoolRecord {
                name: "gpu".into(),
                description: "GPUs".into(),
                backend: "k8s".into(),
                default_platform: None,
                platforms: Vec::new(),
            },
        },
        // Finished workflows get purge timers, which drop chunk indexes.
        Command::PutConfig {
            now: 1,
            config_type: ConfigType::Workflow,
            name: String::new(),
            meta: ConfigMeta {
                user: "admin".into(),
                description: "log retention".into(),
                tags: Vec::new(),
            },
            data: Box::new(ConfigData::Json(
                r#"{"workflow_log":{"retention":"20s"}}"#.into(),
            )),
        },
    ]
}

/// Drives `store` one command per apply call for `count` steps, returning
/// every command and its outcome.
fn drive(
    store: &Store,
    rng: &mut Rng,
    now: &mut i64,
    seq: &mut u64,
    count: usize,
) -> Vec<(Command, Outcome)> {
    let mut history = Vec::with_capacity(count);
    for _ in 0..count {
        *now += 100 + rng.below(4000) as i64;
        let command = next_command(rng, store, *now, seq);
        let outcome = store
            .apply(&[std::slice::from_ref(&command)], b"m", true)
            .expect("apply")
            .remove(0)
            .remove(0);
        history.push((command, outcome));
    }
    history
}

fn setup_and_drive(
    count: usize,
) -> (
    tempfile::TempDir,
    Store,
    Vec<(Command, Outcome)>,
    Rng,
    i64,
    u64,
) {
    let (dir, store) = open();
    let setup = pools();
    let outcomes = store
        .apply(&[setup.as_slice()], b"m", true)
        .expect("pools")
        .remove(0);
    let mut history: Vec<(Command, Outcome)> = setup.into_iter().zip(outcomes).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut now, mut seq) = (1_000_000, 0);
    history.extend(drive(&store, &mut rng, &mut now, &mut seq, count));
    (dir, store, history, rng, now, seq)
}

fn outcome_kinds(history: &[(Command, Outcome)]) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    for (_, outcome) in history {
        let kind = match outcome {
            Outcome::Submitted { failure: None, .. } => "submitted",
            Outcome::Submitted {
                failure: Some(_), ..
            } => "failed_submission",
            Outcome::Canceled { .. } => "canceled",
            Outcome::Applied | Outcome::Revision { .. } => "applied",
            Outcome::Rejected(_) => "rejected",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

#[test]
fn same_commands_give_same_bytes_whatever_the_batching() {
    let (_a_dir, a, history, ..) = setup_and_drive(1500);
    let kinds = outcome_kinds(&history);
    for kind in [
        "submitted",
        "failed_submission",
        "canceled",
        "applied",
        "rejected",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 5,
            "sequence too thin: {kinds:?}"
        );
    }
    {
        let read = a.read().expect("read");
        let (workflows, _) = read
            .list(&ListFilter {
                limit: usize::MAX,
                ..ListFilter::default()
            })
            .expect("list");
        let archives: Vec<_> = workflows
            .iter()
            .filter_map(|w| read.workflow_archive(&w.id).expect("archive"))
            .collect();
        let archived = archives.iter().filter(|a| a.archived_at.is_some()).count();
        let purged = archives
            .iter()
            .filter(|a| a.logs_purged_at.is_some())
            .count();
        assert!(
            archived > 5 && purged > 5,
            "archived {archived}, purged {purged}"
        );
    }
    let commands: Vec<Command> = history.iter().map(|(c, _)| c.clone()).collect();
    let expected: Vec<Outcome> = history.iter().map(|(_, o)| o.clone()).collect();

    // B: the whole sequence as one apply call of one batch.
    let (_b_dir, b) = open();
    let b_outcomes = b
        .apply(&[commands.as_slice()], b"m", true)
        .expect("apply")
        .remove(0);
    assert_eq!(b_outcomes, expected);

    // C: uneven batches, several per apply call.
    let (_c_dir, c) = open();
    let mut c_outcomes = Vec::new();
    let mut rest = commands.as_slice();
    let mut size = 1;
    while !rest.is_empty() {
        let mut batches: Vec<&[Command]> = Vec::new();
        for _ in 0..3 {
            let take = size.min(rest.len());
            let (head, tail) = rest.split_at(take);
            batches.push(head);
            rest = tail;
            size = size % 17 + 1;
        }
        for batch in c.apply(&batches, b"m", true).expect("apply") {
            c_outcomes.extend(batch);
        }
    }
    assert_eq!(c_outcomes, expected);

    let bytes = a.export_snapshot().expect("export");
    assert_eq!(
        bytes,
        b.export_snapshot().expect("export"),
        "A and B differ"
    );
    assert_eq!(
        bytes,
        c.export_snapshot().expect("export"),
        "A and C differ"
    );
}

fn assert_same_reads(a: &Store, b: &Store) {
    let (ra, rb) = (a.read().expect("read"), b.read().expect("read"));
    let all = ListFilter {
        limit: usize::MAX,
        ..ListFilter::default()
    };
    let (wa, more_a) = ra.list(&all).expect("list");
    let (wb, more_b) = rb.list(&all).expect("list");
    assert_eq!((&wa, more_a), (&wb, more_b));
    assert!(!wa.is_empty());
    for w in &wa {
        assert_eq!(
            ra.workflow(&w.id).expect("wf"),
            rb.workflow(&w.id).expect("wf")
        );
        assert_eq!(
            ra.log_chunks(&w.id, None, None).expect("chunks"),
            rb.log_chunks(&w.id, None, None).expect("chunks")
        );
        assert_eq!(
            ra.workflow_archive(&w.id).expect("archive"),
            rb.workflow_archive(&w.id).expect("archive")
        );
        let (ga, gb) = (ra.groups(w).expect("groups"), rb.groups(w).expect("groups"));
        assert_eq!(ga, gb);
        for g in &ga {
            assert_eq!(
                ra.group_tasks(g).expect("tasks"),
                rb.group_tasks(g).expect("tasks")
            );
            assert_eq!(
                ra.group(&w.id, &g.name).expect("g"),
                rb.group(&w.id, &g.name).expect("g")
            );
        }
    }
    let descending = ListFilter {
        descending: true,
        offset: 3,
        limit: 7,
        ..ListFilter::default()
    };
    assert_eq!(
        ra.list(&descending).expect("list"),
        rb.list(&descending).expect("list")
    );
    assert_eq!(ra.pools().expect("pools"), rb.pools().expect("pools"));
    assert_eq!(
        ra.backends().expect("backends"),
        rb.backends().expect("backends")
    );
    for config_type in ConfigType::ALL {
        assert_eq!(
            ra.config_history(config_type).expect("history"),
            rb.config_history(config_type).expect("history")
        );
        assert_eq!(
            ra.configs(config_type).expect("configs"),
            rb.configs(config_type).expect("configs")
        );
    }
    assert_eq!(
        ra.jobs(usize::MAX).expect("jobs"),
        rb.jobs(usize::MAX).expect("jobs")
    );
    assert_eq!(
        ra.due_timers(i64::MAX, usize::MAX).expect("timers"),
        rb.due_timers(i64::MAX, usize::MAX).expect("timers")
    );
    assert_eq!(
        ra.next_timer_due().expect("next"),
        rb.next_timer_due().expect("next")
    );
    assert_eq!(
        ra.count_by_status().expect("counts"),
        rb.count_by_status().expect("counts")
    );
}

#[test]
fn snapshot_round_trip_preserves_state_and_counters() {
    let (_a_dir, a, _, mut rng, mut now, mut seq) = setup_and_drive(800);
    let image = a.export_snapshot().expect("export");

    // Install into a store that already holds unrelated state: it must be replaced.
    let (_b_dir, b) = open();
    let (_scratch, scratch) = open();
    let mut scratch_rng = Rng(42);
    let (mut scratch_now, mut scratch_seq) = (5, 0);
    b.apply(&[pools().as_slice()], b"x", true).expect("pools");
    scratch
        .apply(&[pools().as_slice()], b"x", true)
        .expect("pools");
    for (command, _) in drive(
        &scratch,
        &mut scratch_rng,
        &mut scratch_now,
        &mut scratch_seq,
        100,
    ) {
        b.apply(&[std::slice::from_ref(&command)], b"x", true)
            .expect("apply");
    }
    b.install_snapshot(&image, b"installed-meta")
        .expect("install");
    assert_eq!(
        b.raft_meta().expect("meta").as_deref(),
        Some(&b"installed-meta"[..])
    );
    assert_eq!(b.export_snapshot().expect("export"), image);
    assert_same_reads(&a, &b);

    // Both continue identically: ID, job and timer counters travelled too.
    let more = drive(&a, &mut rng, &mut now, &mut seq, 300);
    for (command, expected) in &more {
        let got = b
            .apply(&[std::slice::from_ref(command)], b"m", true)
            .expect("apply")
            .remove(0)
            .remove(0);
        assert_eq!(&got, expected, "after install, {command:?}");
    }
    assert_eq!(
        a.export_snapshot().expect("export"),
        b.export_snapshot().expect("export")
    );
    assert_same_reads(&a, &b);

    // A snapshot of a fresh store installs as a fresh store.
    let (_e_dir, empty) = open();
    let blank = empty.export_snapshot().expect("export");
    b.install_snapshot(&blank, b"m").expect("install");
    assert_eq!(b.export_snapshot().expect("export"), blank);
    assert!(b.install_snapshot(b"garbage", b"m").is_err());
    assert_eq!(
        b.export_snapshot().expect("export"),
        blank,
        "a bad image changed the store"
    );
}
