//! Idempotency keys: a command wrapped in `Idempotent` is carried out at
//! most once per key while the key is remembered, a repeat returns the first
//! outcome (accepted or rejected), and the key is forgotten by its timer.

use gantry_storage::plan::WorkflowPlan;
use gantry_storage::{
    Command, ListFilter, Outcome, PackedSubmission, PoolRecord, Priority, Store, Submission,
    TimerKind, REQUEST_KEY_RETENTION_MS,
};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open");
    (dir, store)
}

fn apply(store: &Store, command: Command) -> Outcome {
    store
        .apply(&[std::slice::from_ref(&command)], b"m", true)
        .expect("apply")
        .remove(0)
        .remove(0)
}

fn submit(now: i64, name: &str) -> Command {
    let submission = Submission {
        name: name.into(),
        uuid: format!("uuid-{name}-{now}"),
        pool: "default".into(),
        user: "alice".into(),
        priority: Priority::Normal,
        template_spec: String::new(),
        rendered_spec: String::new(),
        plan: Ok(WorkflowPlan {
            groups: Vec::new(),
            exec_timeout_seconds: None,
            queue_timeout_seconds: None,
        }),
    };
    Command::SubmitPackedWorkflow {
        now,
        packed: PackedSubmission::pack(&submission).expect("pack"),
    }
}

fn keyed(now: i64, key: &str, command: Command) -> Command {
    Command::Idempotent {
        now,
        key: key.into(),
        command: Box::new(command),
    }
}

fn workflows(store: &Store) -> usize {
    let filter = ListFilter {
        limit: usize::MAX,
        ..ListFilter::default()
    };
    store
        .read()
        .expect("read")
        .list(&filter)
        .expect("list")
        .0
        .len()
}

#[test]
fn a_key_carries_out_its_command_once_until_it_is_forgotten() {
    let (_dir, store) = open();
    apply(
        &store,
        Command::PutPool {
            pool: PoolRecord {
                name: "default".into(),
                description: String::new(),
                backend: "local".into(),
                default_platform: None,
                platforms: Vec::new(),
            },
        },
    );
    let first = apply(&store, keyed(1_000, "alice/k1", submit(1_000, "wf")));
    // (A plan without groups is recorded as FAILED_SUBMISSION: a workflow.)
    assert!(matches!(first, Outcome::Submitted { .. }), "{first:?}");
    // The retry (a later time, even another body) returns the first answer.
    let again = apply(&store, keyed(5_000, "alice/k1", submit(5_000, "wf")));
    assert_eq!(again, first);
    assert_eq!(workflows(&store), 1);

    // Another key is another request.
    let other = apply(&store, keyed(6_000, "alice/k2", submit(6_000, "wf")));
    assert_ne!(other, first);
    assert_eq!(workflows(&store), 2);

    // A rejected command's answer is remembered too.
    let refused = apply(&store, keyed(7_000, "alice/k3", submit(7_000, "BAD NAME")));
    let retried = apply(&store, keyed(8_000, "alice/k3", submit(8_000, "wf")));
    assert_eq!(retried, refused);
    assert_eq!(
        workflows(&store),
        2 + usize::from(matches!(refused, Outcome::Submitted { .. }))
    );

    // Wrappers do not nest; empty keys are refused.
    let nested = apply(
        &store,
        keyed(9_000, "alice/k4", keyed(9_000, "x", submit(9_000, "wf"))),
    );
    assert!(matches!(nested, Outcome::Rejected(_)), "{nested:?}");
    let empty = apply(&store, keyed(9_000, "", submit(9_000, "wf")));
    assert!(matches!(empty, Outcome::Rejected(_)), "{empty:?}");

    // The forget timer of k1 comes due after the retention; firing it
    // forgets the key, and the same key is then a new request.
    let due = 1_000 + REQUEST_KEY_RETENTION_MS;
    let timers = store
        .read()
        .expect("read")
        .due_timers(due, usize::MAX)
        .expect("timers");
    let forget = timers
        .iter()
        .find(|t| matches!(&t.kind, TimerKind::ForgetRequestKey { key } if key == "alice/k1"))
        .expect("a forget timer for k1");
    assert_eq!(forget.due, due);
    let fired = apply(
        &store,
        Command::FireTimer {
            now: due,
            timer_id: forget.id,
            due,
        },
    );
    assert_eq!(fired, Outcome::Applied);
    let before = workflows(&store);
    let fresh = apply(&store, keyed(due + 1, "alice/k1", submit(due + 1, "wf")));
    assert_ne!(fresh, first);
    assert_eq!(workflows(&store), before + 1);
}
