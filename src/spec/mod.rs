//! Workflow spec: parse, template, validate and expand OSMO version-2 YAML.
//!
//! Pipeline of [`prepare`]: `--set` items → cut out `default-values` →
//! render with Jinja (limits, tokens protected; skipped without Jinja
//! syntax) → parse YAML as OSMO does (depth and aliases bounded first; a
//! repeated key: the last value wins, with a warning) →
//! settle the workflow name → version check → typed parse → rules and
//! expansion into a [`WorkflowPlan`]. With isolation configured (the
//! server), the whole pipeline runs in a limited child process whenever
//! there is Jinja to render or the text is larger than
//! [`IN_PROCESS_BYTES_MAX`]. [`read_document`] is the first half (through
//! the YAML), for the CLI.
//!
//! Invariant: the outer `Err` of [`prepare`] means nothing can be stored
//! (no usable YAML or no valid name); once a name is known every further
//! problem is reported inside [`Prepared::plan`] so the caller can record a
//! `FAILED_SUBMISSION` workflow. No input makes this module panic.

mod defaults;
mod error;
mod expand;
mod input;
mod isolate;
mod jinja;
mod model;
pub(crate) mod quantity;
mod restart;
mod special_tokens;
mod template;
mod validate;
mod yaml;
mod yaml_bounds;

#[cfg(test)]
mod tests;

pub use error::{SpecError, SpecErrorKind};
pub use input::{RenderIsolation, SpecInput, SpecLimits};
pub use isolate::{render_worker_main, RENDER_WORKER_ARG};
pub use restart::restart_plan;
pub use special_tokens::{substitute_task, substitute_tokens, TokenContext};
pub use template::literal;

use error::render_path;
use gantry_storage::extras::WorkflowExtras;
use gantry_storage::plan::WorkflowPlan;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use yaml::DuplicateKey;

/// A spec that got far enough to be recorded under `name`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    /// The YAML after Jinja rendering, without the `default-values` block.
    pub rendered: String,
    pub plan: Result<WorkflowPlan, SpecError>,
    /// What the plan's tasks need beyond it (empty when `plan` failed).
    pub extras: WorkflowExtras,
    /// What was accepted but deserves a word (e.g. repeated keys, fields
    /// the server sets), for the submit answer's `warnings`.
    pub warnings: Vec<String>,
    /// The spec's `workflow.labels` when they are valid (otherwise `plan`
    /// says why, and there are none).
    pub labels: BTreeMap<String, String>,
    /// `workflow.pool` as written: OSMO keeps it for information only (the
    /// submit's pool decides); the caller compares it.
    pub declared_pool: Option<String>,
}

/// The spec rendered and read as YAML, before any rule is applied.
#[derive(Debug, Clone)]
pub struct Document {
    /// The YAML after Jinja rendering, without the `default-values` block.
    pub rendered: String,
    pub root: Value,
    pub warnings: Vec<String>,
}

/// Texts up to this size without Jinja are read in-process even when
/// [`SpecLimits::render_isolation`] is set: reading them is linear (see
/// `yaml_bounds`) and takes about a millisecond, less than starting a
/// worker. Larger texts and every render go to the worker, under its limits.
pub const IN_PROCESS_BYTES_MAX: usize = 64 << 10;

/// [`prepare_cancellable`] that nobody cancels.
pub fn prepare(input: &SpecInput, limits: &SpecLimits) -> Result<Prepared, SpecError> {
    prepare_cancellable(input, limits, &tokio_util::sync::CancellationToken::new())
}

/// The whole pipeline: in a limited child process when `limits` say so and
/// the input needs rendering or is large, else here. `cancel` stops the
/// child (a caller that left).
pub fn prepare_cancellable(
    input: &SpecInput,
    limits: &SpecLimits,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Prepared, SpecError> {
    let Some(isolation) = &limits.render_isolation else {
        return prepare_here(input, limits);
    };
    // Usage errors first wherever the work runs (cheap, no YAML document).
    input::template_overrides(input)?;
    input::env_overrides(input)?;
    let render = template::needs_render(&input.text);
    if !render && input.text.len() <= IN_PROCESS_BYTES_MAX {
        return prepare_here(input, limits);
    }
    if !render {
        // Unrendered, the text is what gets parsed (body and defaults
        // block alike): a bomb is refused here in linear time, without a
        // worker.
        yaml_bounds::check(&input.text).map_err(bounds_error)?;
    }
    isolate::prepare(input, limits, isolation, cancel)
}

/// The answer to a text past a bound of `yaml_bounds`.
fn bounds_error(exceeded: yaml_bounds::Exceeded) -> SpecError {
    SpecError::new(SpecErrorKind::NotYaml, format!("YAML refused: {exceeded}"))
}

/// The pipeline in this process (the worker's side of `isolate`).
fn prepare_here(input: &SpecInput, limits: &SpecLimits) -> Result<Prepared, SpecError> {
    // Usage errors first, `--set` before `--set-env`, whatever the spec.
    input::template_overrides(input)?;
    let env = input::env_overrides(input)?;
    let document = read_document(input, limits)?;
    let name = workflow_name(&document.root, limits)?;
    let labels = spec_labels(&document.root);
    let mut warnings = document.warnings;
    let (plan, extras, declared_pool) = match parse(document.root) {
        Ok(spec) => {
            warnings.extend(server_set_fields(&spec));
            let (plan, extras) = match expand::build(&spec, &env, limits) {
                Ok((plan, extras)) => (Ok(plan), extras),
                Err(error) => (Err(error), WorkflowExtras::default()),
            };
            (plan, extras, spec.workflow.pool.clone())
        }
        Err(error) => (Err(error), WorkflowExtras::default(), None),
    };
    Ok(Prepared {
        name,
        rendered: document.rendered,
        plan,
        extras,
        warnings,
        labels,
        declared_pool,
    })
}

/// `--set` items applied, `default-values` cut, Jinja rendered, YAML read:
/// what [`prepare`] validates, as a YAML value. A repeated mapping key
/// keeps its last value (as OSMO's PyYAML) and gives a warning naming the
/// key and its line.
pub fn read_document(input: &SpecInput, limits: &SpecLimits) -> Result<Document, SpecError> {
    let overrides = input::template_overrides(input)?;
    let split = defaults::split(&input.text)?;
    let mut vars = split.defaults;
    for (key, value) in overrides {
        vars.insert(Value::String(key), value);
    }
    let rendered = template::render(&split.body, &vars, limits, split.lines)?;
    let parsed = yaml::parse(&rendered).map_err(|err| match err {
        yaml::ParseError::Bounds(exceeded) => bounds_error(exceeded),
        yaml::ParseError::Yaml(err) => {
            SpecError::new(SpecErrorKind::NotYaml, format!("not valid YAML: {err}"))
        }
    })?;
    let mut warnings = duplicate_warnings(&split.duplicates, |line| format!("line {line}"));
    // A line Jinja left in place (same line count, same text) is the
    // input's line less the cut block; any other is the rendered text's.
    let same_shape = rendered.lines().count() == split.body.lines().count();
    let kept = |line: usize| {
        let index = line.saturating_sub(1);
        same_shape && rendered.lines().nth(index) == split.body.lines().nth(index)
    };
    warnings.extend(duplicate_warnings(&parsed.duplicates, |line| {
        if kept(line) {
            format!("line {}", split.lines.input_line(line))
        } else {
            format!("line {line} of the rendered spec")
        }
    }));
    Ok(Document {
        rendered,
        root: parsed.value,
        warnings,
    })
}

/// One warning per located duplicate, then one for the rest.
fn duplicate_warnings(duplicates: &[DuplicateKey], at: impl Fn(usize) -> String) -> Vec<String> {
    let mut warnings: Vec<String> = duplicates
        .iter()
        .filter_map(|duplicate| {
            let line = duplicate.line?;
            let within = if duplicate.path.is_empty() {
                String::new()
            } else {
                format!(" in {}", duplicate.path)
            };
            Some(format!(
                "duplicate key '{}'{within} at {}: the last value is used",
                duplicate.key,
                at(line)
            ))
        })
        .collect();
    let unlocated = duplicates.len() - warnings.len();
    if unlocated > 0 {
        warnings.push(format!(
            "{unlocated} more duplicate key(s): the last value of each is used"
        ));
    }
    warnings
}

/// The name must be settled before anything can be stored under it.
fn workflow_name(root: &Value, limits: &SpecLimits) -> Result<String, SpecError> {
    let workflow = match root {
        Value::Mapping(_) => root.get("workflow"),
        _ => {
            return Err(SpecError::new(
                SpecErrorKind::Invalid,
                "the spec must be a mapping with a `workflow` key",
            ))
        }
    };
    let Some(workflow) = workflow else {
        return Err(SpecError::invalid("workflow", "is required"));
    };
    match workflow.get("name") {
        Some(Value::String(name)) => {
            validate::check_name("workflow.name", name, limits)?;
            Ok(name.clone())
        }
        Some(_) => Err(SpecError::invalid("workflow.name", "must be a string")),
        None => Err(SpecError::invalid("workflow.name", "is required")),
    }
}

/// `workflow.labels` as a map of strings, if it is one that passes the
/// label rules (the plan reports any other).
fn spec_labels(root: &Value) -> BTreeMap<String, String> {
    let labels: Option<BTreeMap<String, String>> = root
        .get("workflow")
        .and_then(|workflow| workflow.get("labels"))
        .and_then(|labels| serde_yaml_ng::from_value(labels.clone()).ok());
    match labels {
        Some(labels) if validate::labels(Some(&labels)).is_ok() => labels,
        _ => BTreeMap::new(),
    }
}

fn parse(root: Value) -> Result<model::SpecFile, SpecError> {
    validate::check_version(&root)?;
    serde_path_to_error::deserialize(root)
        .map_err(|err| SpecError::invalid(render_path("", err.path()), err.inner().to_string()))
}

/// OSMO's internal fields, which its service overwrites (`workflow.backend`:
/// the pool's; a task's `backend` and `resources`: the pool's backend and
/// the `workflow.resources` entry it names): accepted as OSMO accepts
/// them, and the answer says the value is not used.
fn server_set_fields(spec: &model::SpecFile) -> Vec<String> {
    let set = |value: &Option<Value>| {
        value
            .as_ref()
            .is_some_and(|v| !matches!(v, Value::Null) && v.as_str() != Some(""))
    };
    let mut warnings = Vec::new();
    if spec
        .workflow
        .backend
        .as_deref()
        .is_some_and(|b| !b.is_empty())
    {
        warnings.push(
            "workflow.backend is set by the server (the pool's backend); the spec's value is not used, as OSMO"
                .to_string(),
        );
    }
    let tasks: Vec<(String, &model::TaskSpec)> = match (&spec.workflow.tasks, &spec.workflow.groups)
    {
        (Some(tasks), _) => tasks
            .iter()
            .enumerate()
            .map(|(i, task)| (format!("workflow.tasks[{i}]"), task))
            .collect(),
        (None, Some(groups)) => groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                group
                    .tasks
                    .iter()
                    .enumerate()
                    .map(move |(t, task)| (format!("workflow.groups[{g}].tasks[{t}]"), task))
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    for (path, task) in tasks {
        if set(&task.backend) {
            warnings.push(format!(
                "{path}.backend is set by the server (the pool's backend); the spec's value is not used, as OSMO"
            ));
        }
        if set(&task.resources) {
            warnings.push(format!(
                "{path}.resources is set by the server from workflow.resources (`resource` names the entry); the spec's value is not used, as OSMO"
            ));
        }
    }
    warnings
}
