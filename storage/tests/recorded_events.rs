//! Recorded workflow events (`RecordWorkflowEvent`): kept in order per
//! workflow, refused for an unknown workflow, past their fields' bounds,
//! or past the per-workflow limit, and a refused one writes nothing.

use gantry_storage::plan::WorkflowPlan;
use gantry_storage::{
    Command, Outcome, PackedSubmission, PoolRecord, Priority, RecordedEvent, Store, Submission,
    EVENT_DETAIL_BYTES_MAX, WORKFLOW_EVENTS_MAX,
};

fn apply(store: &Store, command: Command) -> Outcome {
    store
        .apply(&[std::slice::from_ref(&command)], b"m", true)
        .expect("apply")
        .remove(0)
        .remove(0)
}

fn event(time: i64, detail: &str) -> RecordedEvent {
    RecordedEvent {
        time,
        source: "train".into(),
        reason: "PORT_FORWARD".into(),
        detail: Some(detail.into()),
    }
}

fn record(store: &Store, workflow_id: &str, event: RecordedEvent) -> Outcome {
    apply(
        store,
        Command::RecordWorkflowEvent {
            now: event.time,
            workflow_id: workflow_id.into(),
            event,
        },
    )
}

#[test]
fn events_are_kept_in_order_within_their_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open");
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
    let submission = Submission {
        name: "wf".into(),
        uuid: "uuid-wf".into(),
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
    let Outcome::Submitted { workflow_id, .. } = apply(
        &store,
        Command::SubmitPackedWorkflow {
            now: 1,
            packed: PackedSubmission::pack(&submission).expect("pack"),
        },
    ) else {
        panic!("not submitted");
    };

    assert_eq!(
        record(&store, &workflow_id, event(2, "opened")),
        Outcome::Applied
    );
    assert_eq!(
        record(&store, &workflow_id, event(3, "closed")),
        Outcome::Applied
    );
    assert!(matches!(
        record(&store, "ghost-1", event(4, "x")),
        Outcome::Rejected(_)
    ));
    let long = "x".repeat(EVENT_DETAIL_BYTES_MAX + 1);
    match record(&store, &workflow_id, event(5, &long)) {
        Outcome::Rejected(rejection) => {
            assert!(rejection.message.contains("event detail"), "{rejection:?}")
        }
        other => panic!("{other:?}"),
    }
    let read = store.read().expect("read");
    assert_eq!(
        read.workflow_events(&workflow_id).expect("events"),
        [event(2, "opened"), event(3, "closed")]
    );
    assert!(read.workflow_events("ghost-1").expect("events").is_empty());
    drop(read);

    // Up to the limit (in one batch), then refused.
    let fill: Vec<Command> = (2..WORKFLOW_EVENTS_MAX)
        .map(|n| Command::RecordWorkflowEvent {
            now: 10,
            workflow_id: workflow_id.clone(),
            event: event(10, &format!("session {n}")),
        })
        .collect();
    let outcomes = store.apply(&[&fill], b"m", true).expect("apply");
    assert!(outcomes[0]
        .iter()
        .all(|outcome| *outcome == Outcome::Applied));
    match record(&store, &workflow_id, event(11, "one too many")) {
        Outcome::Rejected(rejection) => {
            assert!(
                rejection.message.contains("recorded events already"),
                "{rejection:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let kept = store
        .read()
        .expect("read")
        .workflow_events(&workflow_id)
        .expect("events");
    assert_eq!(kept.len() as u64, WORKFLOW_EVENTS_MAX);
}
