//! A workflow's status changes rewrite its small row, never its specs; the
//! whole record still reads back, from rows of either layout.

use super::*;
use crate::command::{Command, Outcome, TaskKey, TaskReport};
use crate::plan::{GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan};
use crate::record::{PoolRecord, Submission};
use crate::row::encode_row;
use crate::status::{Priority, TaskStatus, WorkflowStatus};
use crate::store::{ListFilter, Store};
use redb::ReadableDatabase;

/// `groups` independent groups of one task each, and a spec text that
/// grows with them as a user's would.
fn submission(groups: usize) -> Submission {
    let names: Vec<String> = (0..groups).map(|index| format!("g{index}")).collect();
    let spec: String = names
        .iter()
        .map(|name| {
            format!("  - name: {name}\n    tasks:\n    - name: {name}t\n      image: ubuntu\n")
        })
        .collect();
    Submission {
        name: "wide".into(),
        uuid: "u1".into(),
        pool: "default".into(),
        user: "alice".into(),
        priority: Priority::Normal,
        template_spec: spec.clone(),
        rendered_spec: spec,
        plan: Ok(WorkflowPlan {
            groups: names
                .iter()
                .map(|name| GroupPlan {
                    name: name.clone(),
                    tasks: vec![TaskPlan {
                        name: format!("{name}t"),
                        lead: true,
                        image: "ubuntu".into(),
                        resource: ResourcePlan {
                            name: "default".into(),
                            ..ResourcePlan::default()
                        },
                        ..TaskPlan::default()
                    }],
                    upstream: Vec::new(),
                    barrier: true,
                    ignore_nonlead_status: false,
                })
                .collect(),
            exec_timeout_seconds: None,
            queue_timeout_seconds: None,
        }),
    }
}

fn apply(store: &Store, command: Command) -> Outcome {
    let mut outcomes = store
        .apply(&[std::slice::from_ref(&command)], b"position", false)
        .expect("apply");
    outcomes.remove(0).remove(0)
}

/// A store holding one submitted workflow of `groups` groups; its id.
fn submitted(dir: &std::path::Path, groups: usize) -> (Store, String) {
    let store = Store::open(&dir.join(format!("{groups}.redb"))).expect("open");
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
    let outcome = apply(
        &store,
        Command::SubmitWorkflow {
            now: 10,
            submission: submission(groups),
        },
    );
    let Outcome::Submitted {
        workflow_id,
        failure: None,
    } = outcome
    else {
        panic!("not submitted: {outcome:?}");
    };
    (store, workflow_id)
}

fn report(store: &Store, workflow_id: &str, task: &str, status: TaskStatus, now: i64) {
    let outcome = apply(
        store,
        Command::ReportTask {
            now,
            report: TaskReport {
                key: TaskKey {
                    workflow_id: workflow_id.into(),
                    task: task.into(),
                    retry_id: 0,
                },
                status,
                exit_code: (status == TaskStatus::Completed).then_some(0),
                message: None,
                node_name: None,
                time: now,
            },
        },
    );
    assert_eq!(outcome, Outcome::Applied);
}

/// The stored bytes of `table`'s row `id`, if any.
fn stored(store: &Store, table: redb::TableDefinition<&str, &[u8]>, id: &str) -> Option<Vec<u8>> {
    let txn = store.database().begin_read().expect("read");
    let table = txn.open_table(table).expect("table");
    let row = table.get(id).expect("get");
    row.map(|value| value.value().to_vec())
}

#[test]
fn a_status_change_rewrites_a_row_of_the_same_size_whatever_the_workflow_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    for groups in [2, 2000] {
        let (store, id) = submitted(dir.path(), groups);
        let spec = submission(groups).rendered_spec;
        let mut sizes = Vec::new();
        // A group running makes the workflow RUNNING; its end with others
        // still unstarted makes it PENDING again (OSMO §2.2).
        for (status, workflow_status) in [
            (TaskStatus::Running, WorkflowStatus::Running),
            (TaskStatus::Completed, WorkflowStatus::Pending),
        ] {
            report(&store, &id, "g0t", status, 20);
            let view = store.read().expect("read");
            let workflow = view.workflow(&id).expect("workflow").expect("exists");
            assert_eq!(workflow.status, workflow_status);
            assert_eq!(workflow.rendered_spec, spec);
            assert_eq!(workflow.template_spec, spec);
            assert_eq!(workflow.groups.len(), groups);
            let (listed, _) = view
                .list(&ListFilter {
                    limit: 10,
                    ..ListFilter::default()
                })
                .expect("list");
            assert_eq!(listed, vec![workflow]);
            sizes.push(stored(&store, WORKFLOWS, &id).expect("row").len());
        }
        assert!(stored(&store, WORKFLOW_SPECS, &id).is_some());
        assert!(sizes.iter().all(|&size| size < 512), "{sizes:?}");
        rows.push(sizes);
    }
    assert_eq!(rows[0], rows[1]);
}

#[test]
fn a_row_from_before_the_split_reads_whole_and_its_first_write_moves_its_specs_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, id) = submitted(dir.path(), 3);
    let whole = store
        .read()
        .expect("read")
        .workflow(&id)
        .expect("workflow")
        .expect("exists");
    // As an older version stored it: everything in the row.
    let txn = store.database().begin_write().expect("write");
    txn.open_table(WORKFLOWS)
        .expect("table")
        .insert(id.as_str(), encode_row(&whole).expect("encode").as_slice())
        .expect("insert");
    txn.open_table(WORKFLOW_SPECS)
        .expect("table")
        .remove(id.as_str())
        .expect("remove");
    txn.commit().expect("commit");
    let read = |store: &Store| {
        store
            .read()
            .expect("read")
            .workflow(&id)
            .expect("workflow")
            .expect("exists")
    };
    assert_eq!(read(&store), whole);
    let inline = stored(&store, WORKFLOWS, &id).expect("row").len();

    report(&store, &id, "g0t", TaskStatus::Running, 20);
    let running = read(&store);
    assert_eq!(running.status, WorkflowStatus::Running);
    assert_eq!(
        (running.template_spec, running.rendered_spec, running.groups),
        (whole.template_spec, whole.rendered_spec, whole.groups)
    );
    assert!(stored(&store, WORKFLOW_SPECS, &id).is_some());
    assert!(stored(&store, WORKFLOWS, &id).expect("row").len() < inline);
}
