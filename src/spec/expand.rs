//! Turns a parsed spec into a [`WorkflowPlan`]: flat tasks become one group
//! each, leads are settled, upstream groups are derived from task inputs,
//! `--set-env` is merged, and every §1.7 rule is applied on the way.
//!
//! Invariants: rules run in one fixed order (structure, counts, names,
//! resources, timeouts, labels, then group by group and task by task in
//! document order), so the first error reported is deterministic; a plan is
//! returned only when every rule passed, and it satisfies the storage
//! invariants (unique names, one lead per group, upstream groups earlier).

use super::error::{join, SpecError};
use super::input::SpecLimits;
use super::model::{GroupSpec, SpecFile, TaskSpec};
use super::validate::{self, TokenScope};
use gantry_storage::extras::{TaskExtras, TopologyRequirement, WorkflowExtras};
use gantry_storage::plan::{
    GroupPlan, InputPlan, OutputPlan, ResourcePlan, TaskPlan, WorkflowPlan,
};
use std::collections::{BTreeMap, BTreeSet};

const DEFAULT_RESOURCE: &str = "default";

/// A group as the rest of the pipeline sees it, whether written as a group
/// or derived from a flat task.
struct GroupView<'a> {
    name: String,
    /// Path of the written group, `None` for a group derived from a task.
    path: Option<String>,
    tasks: Vec<(String, &'a TaskSpec)>,
    barrier: bool,
    ignore_nonlead_status: bool,
}

fn views<'a>(spec: &'a SpecFile) -> Result<Vec<GroupView<'a>>, SpecError> {
    let workflow = &spec.workflow;
    match (&workflow.tasks, &workflow.groups) {
        (Some(_), Some(_)) => Err(SpecError::invalid(
            "workflow",
            "give either tasks or groups, not both",
        )),
        (None, None) => Err(SpecError::invalid(
            "workflow",
            "one of tasks or groups is required",
        )),
        (Some(tasks), None) => {
            if tasks.is_empty() {
                return Err(SpecError::invalid(
                    "workflow.tasks",
                    "at least one task is required",
                ));
            }
            Ok(tasks
                .iter()
                .enumerate()
                .map(|(index, task)| GroupView {
                    name: format!("{}-group", task.name),
                    path: None,
                    tasks: vec![(format!("workflow.tasks[{index}]"), task)],
                    barrier: true,
                    ignore_nonlead_status: true,
                })
                .collect())
        }
        (None, Some(groups)) => {
            if groups.is_empty() {
                return Err(SpecError::invalid(
                    "workflow.groups",
                    "at least one group is required",
                ));
            }
            Ok(groups
                .iter()
                .enumerate()
                .map(|(g, group)| group_view(g, group))
                .collect())
        }
    }
}

fn group_view(index: usize, group: &GroupSpec) -> GroupView<'_> {
    let path = format!("workflow.groups[{index}]");
    GroupView {
        name: group.name.clone(),
        tasks: group
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| (format!("{path}.tasks[{t}]"), task))
            .collect(),
        path: Some(path),
        barrier: group.barrier.unwrap_or(true),
        ignore_nonlead_status: group.ignore_nonlead_status.unwrap_or(true),
    }
}

/// Names: pattern, length, reserved, and uniqueness after normalisation.
fn check_names(groups: &[GroupView], limits: &SpecLimits) -> Result<(), SpecError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |path: String, name: &str| -> Result<(), SpecError> {
        if let Some(first) = seen.get(&validate::normalize(name)) {
            return Err(SpecError::invalid(
                path,
                format!("duplicate name {name:?} (already used at {first})"),
            ));
        }
        seen.insert(validate::normalize(name), path);
        Ok(())
    };
    for group in groups {
        if let Some(path) = &group.path {
            let at = join(path, "name");
            validate::check_name(&at, &group.name, limits)?;
            claim(at, &group.name)?;
        }
        for (path, task) in &group.tasks {
            let at = join(path, "name");
            validate::check_task_name(&at, &task.name, limits)?;
            claim(at, &task.name)?;
        }
    }
    Ok(())
}

/// Index of the group each same-workflow task lives in.
fn task_groups(groups: &[GroupView]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (index, group) in groups.iter().enumerate() {
        for (_, task) in &group.tasks {
            out.insert(task.name.clone(), index);
        }
    }
    out
}

pub fn build(
    spec: &SpecFile,
    env_overrides: &BTreeMap<String, String>,
    limits: &SpecLimits,
) -> Result<(WorkflowPlan, WorkflowExtras), SpecError> {
    let groups = views(spec)?;
    let task_count: usize = groups.iter().map(|g| g.tasks.len()).sum();
    if task_count > limits.max_tasks {
        let at = if spec.workflow.tasks.is_some() {
            "workflow.tasks"
        } else {
            "workflow.groups"
        };
        return Err(SpecError::invalid(
            at,
            format!(
                "{task_count} tasks exceed the limit of {} (the WORKFLOW config's max_num_tasks)",
                limits.max_tasks
            ),
        ));
    }
    check_names(&groups, limits)?;

    let mut resources: BTreeMap<String, ResourcePlan> = BTreeMap::new();
    // Apart from the plans: a resource plan is stored as bincode, which
    // cannot grow a field; topology travels in the extras.
    let mut topologies: BTreeMap<String, Vec<TopologyRequirement>> = BTreeMap::new();
    match &spec.workflow.resources {
        Some(specs) => {
            for (name, resource) in specs {
                let at = join("workflow.resources", name);
                resources.insert(name.clone(), validate::resource(&at, name, resource)?);
                let requirements = validate::topology(&join(&at, "topology"), &resource.topology)?;
                if !requirements.is_empty() {
                    topologies.insert(name.clone(), requirements);
                }
            }
        }
        None => {
            resources.insert(
                DEFAULT_RESOURCE.to_string(),
                ResourcePlan {
                    name: DEFAULT_RESOURCE.to_string(),
                    ..ResourcePlan::default()
                },
            );
        }
    }
    let (exec_timeout_seconds, queue_timeout_seconds) =
        validate::timeouts(spec.workflow.timeout.as_ref(), limits)?;
    validate::labels(spec.workflow.labels.as_ref())?;

    let placement = task_groups(&groups);
    let mut plans = Vec::with_capacity(groups.len());
    let mut extras = WorkflowExtras::default();
    for (index, group) in groups.iter().enumerate() {
        plans.push(build_group(
            index,
            group,
            (&placement, &groups),
            &Resources {
                plans: &resources,
                topologies: &topologies,
            },
            env_overrides,
            limits,
            &mut extras,
        )?);
    }
    let plan = WorkflowPlan {
        groups: plans,
        exec_timeout_seconds,
        queue_timeout_seconds,
    };
    Ok((plan, extras))
}

/// The workflow's resources by name: their plans, and the topology of
/// those that have one.
struct Resources<'a> {
    plans: &'a BTreeMap<String, ResourcePlan>,
    topologies: &'a BTreeMap<String, Vec<TopologyRequirement>>,
}

fn build_group(
    index: usize,
    group: &GroupView,
    (placement, groups): (&BTreeMap<String, usize>, &[GroupView]),
    resources: &Resources,
    env_overrides: &BTreeMap<String, String>,
    limits: &SpecLimits,
    extras: &mut WorkflowExtras,
) -> Result<GroupPlan, SpecError> {
    let group_path = group.path.clone().unwrap_or_default();
    if group.tasks.is_empty() {
        return Err(SpecError::invalid(
            join(&group_path, "tasks"),
            "a group needs at least one task",
        ));
    }
    // A single task leads its group whatever it says; otherwise exactly one
    // task must claim the lead.
    if group.tasks.len() > 1 {
        let leads = group.tasks.iter().filter(|(_, task)| task.lead).count();
        if leads != 1 {
            return Err(SpecError::invalid(
                join(&group_path, "tasks"),
                format!("a group with several tasks needs exactly one lead task, found {leads}"),
            ));
        }
    }
    let group_tasks: Vec<String> = group.tasks.iter().map(|(_, t)| t.name.clone()).collect();
    let mut upstream = BTreeSet::new();
    let mut tasks = Vec::with_capacity(group.tasks.len());
    for (path, task) in &group.tasks {
        let inputs = task_inputs(path, task, index, placement, &mut upstream, limits)?;
        let lead = group.tasks.len() == 1 || task.lead;
        let (plan, task_extras) = build_task(
            path,
            task,
            lead,
            inputs,
            &group_tasks,
            resources,
            env_overrides,
        )?;
        if !task_extras.is_empty() {
            extras.tasks.insert(plan.name.clone(), task_extras);
        }
        tasks.push(plan);
    }
    Ok(GroupPlan {
        name: group.name.clone(),
        tasks,
        upstream: upstream
            .into_iter()
            .filter_map(|g| groups.get(g))
            .map(|g| g.name.clone())
            .collect(),
        barrier: group.barrier,
        ignore_nonlead_status: group.ignore_nonlead_status,
    })
}

/// Inputs in plan form; same-workflow task inputs add their group to
/// `upstream` and must point at an earlier group.
fn task_inputs(
    path: &str,
    task: &TaskSpec,
    group_index: usize,
    placement: &BTreeMap<String, usize>,
    upstream: &mut BTreeSet<usize>,
    limits: &SpecLimits,
) -> Result<Vec<InputPlan>, SpecError> {
    let mut out = Vec::with_capacity(task.inputs.len());
    for (i, input) in task.inputs.iter().enumerate() {
        let at = format!("{path}.inputs[{i}]");
        let regex = validate::regex(&join(&at, "regex"), &input.regex)?;
        match (&input.task, &input.url) {
            (Some(source), None) => {
                let task_at = join(&at, "task");
                if source.contains(':') {
                    validate::cross_workflow(&task_at, source, limits)?;
                } else {
                    match placement.get(source) {
                        None => {
                            return Err(SpecError::invalid(
                                task_at,
                                format!("input task {source:?} is not defined in this workflow"),
                            ))
                        }
                        Some(&g) if g == group_index => {
                            return Err(SpecError::invalid(
                                task_at,
                                format!("input task {source:?} is in the same group; a task cannot read a sibling's output"),
                            ))
                        }
                        Some(&g) if g > group_index => {
                            return Err(SpecError::invalid(
                                task_at,
                                format!("input task {source:?} is defined later; inputs must name earlier tasks"),
                            ))
                        }
                        Some(&g) => {
                            upstream.insert(g);
                        }
                    }
                }
                out.push(InputPlan::Task {
                    task: source.clone(),
                    regex,
                });
            }
            (None, Some(url)) => {
                if url.trim().is_empty() {
                    return Err(SpecError::invalid(
                        join(&at, "url"),
                        "input url must not be empty",
                    ));
                }
                out.push(InputPlan::Url {
                    url: url.clone(),
                    regex,
                });
            }
            _ => {
                return Err(SpecError::invalid(
                    at,
                    "an input needs exactly one of task or url",
                ));
            }
        }
    }
    Ok(out)
}

fn build_task(
    path: &str,
    task: &TaskSpec,
    lead: bool,
    inputs: Vec<InputPlan>,
    group_tasks: &[String],
    resources: &Resources,
    env_overrides: &BTreeMap<String, String>,
) -> Result<(TaskPlan, TaskExtras), SpecError> {
    if task.image.trim().is_empty() {
        return Err(SpecError::invalid(
            join(path, "image"),
            "image must not be empty",
        ));
    }
    let command: Vec<String> = match &task.command {
        Some(items) if !items.is_empty() => items.iter().map(|t| t.0.clone()).collect(),
        Some(_) => {
            return Err(SpecError::invalid(
                join(path, "command"),
                "command must not be empty",
            ))
        }
        None => {
            return Err(SpecError::invalid(
                join(path, "command"),
                "command is required",
            ))
        }
    };
    let resource_name = task.resource.as_deref().unwrap_or(DEFAULT_RESOURCE);
    let topology = resources
        .topologies
        .get(resource_name)
        .cloned()
        .unwrap_or_default();
    let resource = resources.plans.get(resource_name).cloned().ok_or_else(|| {
        SpecError::invalid(
            join(path, "resource"),
            format!("resource {resource_name:?} is not defined in workflow.resources"),
        )
    })?;
    let mut outputs = Vec::with_capacity(task.outputs.len());
    for (i, output) in task.outputs.iter().enumerate() {
        let at = format!("{path}.outputs[{i}]");
        if output.url.trim().is_empty() {
            return Err(SpecError::invalid(
                join(&at, "url"),
                "output url must not be empty",
            ));
        }
        let regex = validate::regex(&join(&at, "regex"), &output.regex)?;
        outputs.push(OutputPlan {
            url: output.url.clone(),
            regex,
        });
    }
    let files = validate::files(&join(path, "files"), &task.files)?;
    let exit_actions = validate::exit_actions(&join(path, "exitActions"), &task.exit_actions)?;
    let checkpoints = validate::checkpoints(&join(path, "checkpoint"), &task.checkpoint)?;
    let credentials = validate::credentials(&join(path, "credentials"), &task.credentials)?;
    validate::volume_mounts(&join(path, "volumeMounts"), &task.volume_mounts)?;
    validate::unsupported_task_fields(path, task)?;

    let mut environment: BTreeMap<String, String> = task
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    environment.extend(env_overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let args: Vec<String> = task.args.iter().map(|t| t.0.clone()).collect();

    let input_tasks: Vec<String> = inputs
        .iter()
        .filter_map(|input| match input {
            InputPlan::Task { task, .. } => Some(task.clone()),
            InputPlan::Url { .. } => None,
        })
        .collect();
    let scope = TokenScope {
        input_count: inputs.len(),
        input_tasks: &input_tasks,
        group_tasks,
    };
    if task.image.contains('\0') {
        return Err(SpecError::invalid(
            join(path, "image"),
            "must not contain a NUL character",
        ));
    }
    validate::exec_words(&join(path, "command"), &command)?;
    validate::exec_words(&join(path, "args"), &args)?;
    validate::environment(&join(path, "environment"), &environment)?;
    // The fields `special_tokens::substitute_task` substitutes at launch.
    validate::tokens(&join(path, "image"), &task.image, &scope)?;
    for (i, item) in command.iter().enumerate() {
        validate::tokens(&format!("{path}.command[{i}]"), item, &scope)?;
    }
    for (i, item) in args.iter().enumerate() {
        validate::tokens(&format!("{path}.args[{i}]"), item, &scope)?;
    }
    for (key, value) in &environment {
        validate::tokens(&join(&join(path, "environment"), key), value, &scope)?;
    }
    for (i, file) in files.iter().enumerate() {
        validate::tokens(&format!("{path}.files[{i}].path"), &file.path, &scope)?;
        // Base64 contents are opaque bytes; tokens are not substituted there.
        if !file.base64 {
            validate::tokens(
                &format!("{path}.files[{i}].contents"),
                &file.contents,
                &scope,
            )?;
        }
    }
    for (i, input) in inputs.iter().enumerate() {
        let (url, regex) = match input {
            InputPlan::Task { regex, .. } => (None, regex),
            InputPlan::Url { url, regex } => (Some(url), regex),
        };
        if let Some(url) = url {
            validate::tokens(&format!("{path}.inputs[{i}].url"), url, &scope)?;
        }
        if let Some(regex) = regex {
            validate::tokens(&format!("{path}.inputs[{i}].regex"), regex, &scope)?;
        }
    }
    for (i, output) in outputs.iter().enumerate() {
        validate::tokens(&format!("{path}.outputs[{i}].url"), &output.url, &scope)?;
        if let Some(regex) = &output.regex {
            validate::tokens(&format!("{path}.outputs[{i}].regex"), regex, &scope)?;
        }
    }
    for (i, checkpoint) in checkpoints.iter().enumerate() {
        let at = format!("{path}.checkpoint[{i}]");
        validate::tokens(&join(&at, "url"), &checkpoint.url, &scope)?;
        validate::tokens(&join(&at, "path"), &checkpoint.path, &scope)?;
    }

    let plan = TaskPlan {
        name: task.name.clone(),
        lead,
        image: task.image.clone(),
        command,
        args,
        environment,
        inputs,
        outputs,
        files,
        resource,
        exit_actions,
        credentials,
        privileged: task.privileged,
        host_network: task.host_network,
        volume_mounts: task.volume_mounts.clone(),
    };
    Ok((
        plan,
        TaskExtras {
            checkpoints,
            topology,
            ..TaskExtras::default()
        },
    ))
}
