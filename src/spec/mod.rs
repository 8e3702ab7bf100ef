//! Workflow spec: parse, template, validate and expand OSMO version-2 YAML.
//!
//! Pipeline of [`prepare`]: `--set` items → cut out `default-values` →
//! render with Jinja (limits, tokens protected; skipped without Jinja
//! syntax; in a limited child process when configured) → parse YAML →
//! settle the workflow name → version check → typed parse → rules and
//! expansion into a [`WorkflowPlan`].
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
mod special_tokens;
mod template;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{SpecError, SpecErrorKind};
pub use input::{SpecInput, SpecLimits};
pub use isolate::{render_worker_main, RenderIsolation, RENDER_WORKER_ARG};
pub use special_tokens::{substitute_tokens, TokenContext};

use error::render_path;
use gantry_storage::plan::WorkflowPlan;
use serde_yaml_ng::Value;

/// A spec that got far enough to be recorded under `name`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    /// The YAML after Jinja rendering, without the `default-values` block.
    pub rendered: String,
    pub plan: Result<WorkflowPlan, SpecError>,
}

pub fn prepare(input: &SpecInput, limits: &SpecLimits) -> Result<Prepared, SpecError> {
    let overrides = input::template_overrides(input)?;
    let env = input::env_overrides(input)?;
    let split = defaults::split(&input.text)?;
    let mut vars = split.defaults;
    for (key, value) in overrides {
        vars.insert(Value::String(key), value);
    }
    let rendered = template::render(&split.body, &vars, limits)?;
    let root: Value = serde_yaml_ng::from_str(&rendered).map_err(|err| SpecError {
        kind: SpecErrorKind::NotYaml,
        path: None,
        message: format!("not valid YAML: {err}"),
    })?;
    let name = workflow_name(&root, limits)?;
    let plan = plan(root, &env, limits);
    Ok(Prepared {
        name,
        rendered,
        plan,
    })
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

fn plan(
    root: Value,
    env: &std::collections::BTreeMap<String, String>,
    limits: &SpecLimits,
) -> Result<WorkflowPlan, SpecError> {
    validate::check_version(&root)?;
    let spec: model::SpecFile = serde_path_to_error::deserialize(root)
        .map_err(|err| SpecError::invalid(render_path("", err.path()), err.inner().to_string()))?;
    expand::build(&spec, env, limits)
}
