//! Restarting a failed workflow as OSMO does: a new workflow of the groups
//! that did not complete, whose inputs from completed groups read the old
//! workflow's outputs.
//!
//! Invariants: a restart keeps no group that completed and every group
//! that did not; a kept task's input of a dropped task becomes the
//! cross-workflow reference `<old workflow>:<task>`, in the input list and
//! in the `{{input:<task>}}` tokens of every field, so what it reads is
//! exactly what the old run wrote; upstream edges to dropped groups go (they
//! completed).

use super::special_tokens::token_regex;
use gantry_storage::plan::{InputPlan, TaskPlan, WorkflowPlan};
use std::collections::BTreeSet;

/// The plan of `old_workflow_id`'s restart, given the names of its groups
/// that completed. `Err` says why there is nothing to restart.
pub fn restart_plan(
    plan: WorkflowPlan,
    completed_groups: &BTreeSet<String>,
    old_workflow_id: &str,
) -> Result<WorkflowPlan, String> {
    let dropped_tasks: BTreeSet<String> = plan
        .groups
        .iter()
        .filter(|group| completed_groups.contains(&group.name))
        .flat_map(|group| group.tasks.iter().map(|task| task.name.clone()))
        .collect();
    let mut groups = Vec::new();
    for mut group in plan.groups {
        if completed_groups.contains(&group.name) {
            continue;
        }
        group
            .upstream
            .retain(|upstream| !completed_groups.contains(upstream));
        for task in &mut group.tasks {
            point_inputs_at(task, &dropped_tasks, old_workflow_id);
        }
        groups.push(group);
    }
    if groups.is_empty() {
        return Err(format!(
            "every group of workflow '{old_workflow_id}' completed: there is nothing to restart"
        ));
    }
    Ok(WorkflowPlan { groups, ..plan })
}

/// Inputs (and `{{input:<task>}}` tokens) naming a task in `dropped` read
/// `old_workflow_id`'s output of it instead.
fn point_inputs_at(task: &mut TaskPlan, dropped: &BTreeSet<String>, old_workflow_id: &str) {
    for input in &mut task.inputs {
        if let InputPlan::Task { task: source, .. } = input {
            if dropped.contains(source.as_str()) {
                *source = format!("{old_workflow_id}:{source}");
            }
        }
    }
    let rewrite = |text: &mut String| {
        let rewritten = token_regex().replace_all(text, |found: &regex::Captures| {
            let body = found.get(1).map_or("", |m| m.as_str());
            match body.strip_prefix("input:") {
                Some(name) if dropped.contains(name) => {
                    format!("{{{{input:{old_workflow_id}:{name}}}}}")
                }
                _ => found.get(0).map_or("", |m| m.as_str()).to_string(),
            }
        });
        if let std::borrow::Cow::Owned(rewritten) = rewritten {
            *text = rewritten;
        }
    };
    task.command.iter_mut().for_each(rewrite);
    task.args.iter_mut().for_each(rewrite);
    task.environment.values_mut().for_each(rewrite);
    for file in task.files.iter_mut().filter(|file| !file.base64) {
        rewrite(&mut file.contents);
    }
    for output in &mut task.outputs {
        rewrite(&mut output.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_storage::plan::GroupPlan;

    fn task(name: &str, inputs: &[&str], command: &str) -> TaskPlan {
        TaskPlan {
            name: name.into(),
            lead: true,
            command: vec![command.into()],
            inputs: inputs
                .iter()
                .map(|input| InputPlan::Task {
                    task: input.to_string(),
                    regex: None,
                })
                .collect(),
            ..TaskPlan::default()
        }
    }

    fn group(name: &str, upstream: &[&str], tasks: Vec<TaskPlan>) -> GroupPlan {
        GroupPlan {
            name: name.into(),
            tasks,
            upstream: upstream.iter().map(|u| u.to_string()).collect(),
            barrier: false,
            ignore_nonlead_status: true,
        }
    }

    fn pipeline() -> WorkflowPlan {
        WorkflowPlan {
            groups: vec![
                group("prep", &[], vec![task("prep", &[], "make")]),
                group(
                    "train",
                    &["prep"],
                    vec![task(
                        "train",
                        &["prep"],
                        "fit {{input:prep}} {{ input:prep }} {{input:0}}",
                    )],
                ),
                group(
                    "eval",
                    &["train"],
                    vec![task("eval", &["train"], "score {{input:train}}")],
                ),
            ],
            exec_timeout_seconds: Some(60),
            queue_timeout_seconds: None,
        }
    }

    #[test]
    fn completed_groups_go_and_their_outputs_are_read_from_the_old_run() {
        let completed: BTreeSet<String> = ["prep".to_string()].into();
        let plan = restart_plan(pipeline(), &completed, "pipe-1").expect("restart");
        let names: Vec<&str> = plan.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["train", "eval"]);
        let train = &plan.groups[0];
        assert!(train.upstream.is_empty());
        assert_eq!(
            train.tasks[0].inputs[0],
            InputPlan::Task {
                task: "pipe-1:prep".into(),
                regex: None
            }
        );
        assert_eq!(
            train.tasks[0].command[0],
            "fit {{input:pipe-1:prep}} {{input:pipe-1:prep}} {{input:0}}"
        );
        // A kept upstream stays within the new workflow.
        let eval = &plan.groups[1];
        assert_eq!(eval.upstream, ["train"]);
        assert_eq!(eval.tasks[0].command[0], "score {{input:train}}");
        assert_eq!(plan.exec_timeout_seconds, Some(60));
    }

    #[test]
    fn a_workflow_whose_groups_all_completed_has_nothing_to_restart() {
        let completed: BTreeSet<String> = ["prep", "train", "eval"].map(str::to_string).into();
        let error = restart_plan(pipeline(), &completed, "pipe-1").unwrap_err();
        assert!(error.contains("nothing to restart"), "{error}");
    }
}
