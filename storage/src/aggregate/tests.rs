use super::*;
use crate::plan::TaskPlan;
use proptest::prelude::*;

fn workflow_of(groups: &[TaskStatus]) -> WorkflowStatus {
    workflow_status(&StatusCounts::of_statuses(groups))
}

#[test]
fn workflow_aggregation_follows_osmo_precedence() {
    use TaskStatus::*;
    let cases: &[(&[TaskStatus], WorkflowStatus)] = &[
        (&[Completed, Completed], WorkflowStatus::Completed),
        (&[Completed, Running], WorkflowStatus::Running),
        (&[Completed, Processing], WorkflowStatus::Pending),
        (&[Failed, FailedUpstream], WorkflowStatus::Failed),
        (
            &[FailedEvicted, FailedUpstream],
            WorkflowStatus::FailedEvicted,
        ),
        (&[FailedEvicted, Failed], WorkflowStatus::Failed),
        (
            &[Failed, FailedExecTimeout],
            WorkflowStatus::FailedExecTimeout,
        ),
        (
            &[FailedExecTimeout, FailedCanceled],
            WorkflowStatus::FailedCanceled,
        ),
        (
            &[FailedImagePull, FailedImagePull],
            WorkflowStatus::FailedImagePull,
        ),
        (&[], WorkflowStatus::Completed),
    ];
    for (groups, expected) in cases {
        assert_eq!(workflow_of(groups), *expected, "groups {groups:?}");
    }
}

/// A group of `statuses` (the first task leads) and its tally.
fn group_of(
    statuses: &[TaskStatus],
    ignore_nonlead_status: bool,
) -> (GroupRecord, Vec<TaskRecord>, GroupTally) {
    let tasks: Vec<TaskRecord> = statuses
        .iter()
        .enumerate()
        .map(|(index, status)| {
            let plan = TaskPlan {
                name: format!("t{index}"),
                lead: index == 0,
                ..TaskPlan::default()
            };
            TaskRecord {
                status: *status,
                ..TaskRecord::unstarted("w", "g", &plan, String::new(), 0)
            }
        })
        .collect();
    let group = GroupRecord {
        workflow_id: "w".into(),
        name: "g".into(),
        uuid: String::new(),
        status: TaskStatus::Processing,
        barrier: true,
        ignore_nonlead_status,
        upstream: Vec::new(),
        downstream: Vec::new(),
        remaining_upstream: Vec::new(),
        tasks: tasks.iter().map(|task| task.name.clone()).collect(),
        processing_start_time: None,
        scheduling_start_time: None,
        initializing_start_time: None,
        start_time: None,
        end_time: None,
        failure_message: None,
        dispatched: true,
    };
    let tally = GroupTally {
        status: group.status,
        ignore_nonlead_status,
        tasks: StatusCounts::of_statuses(statuses),
        leads: StatusCounts::of_statuses(&statuses[..statuses.len().min(1)]),
    };
    (group, tasks, tally)
}

#[test]
fn mixed_failures_are_decided_in_spec_order() {
    use TaskStatus::*;
    let (group, tasks, tally) = group_of(&[Failed, FailedImagePull], false);
    assert_eq!(group_status(&tally), None);
    assert_eq!(group_status_in_order(&group, &tasks), Failed);
    let (_, _, tally) = group_of(&[Completed, FailedImagePull, Completed], true);
    assert_eq!(
        group_status(&tally),
        Some(Completed),
        "only the lead counts"
    );
}

fn any_status() -> impl Strategy<Value = TaskStatus> {
    prop::sample::select(TaskStatus::ALL.to_vec())
}

proptest! {
    /// The tally answers what the tasks in spec order answer, whenever it answers.
    #[test]
    fn tally_aggregation_agrees_with_spec_order(
        statuses in prop::collection::vec(any_status(), 0..8),
        ignore in any::<bool>(),
    ) {
        let (group, tasks, tally) = group_of(&statuses, ignore);
        let in_order = group_status_in_order(&group, &tasks);
        match group_status(&tally) {
            Some(status) => prop_assert_eq!(status, in_order),
            None => {
                let considered: Vec<TaskStatus> = tasks
                    .iter()
                    .filter(|task| task.lead || !ignore)
                    .map(|task| task.status)
                    .filter(|status| status.is_failure())
                    .collect();
                prop_assert!(considered.windows(2).any(|pair| pair[0] != pair[1]), "{:?}", considered);
            }
        }
    }
}
