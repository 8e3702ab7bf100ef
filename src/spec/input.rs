//! What the caller hands in: the spec text with its `--set` items, and the
//! limits that bound templating and validation; plus parsing of the `--set`
//! items themselves.
//!
//! Invariant: a key may be given once across `--set` and `--set-string`
//! (and once within `--set-env`); anything else is a usage error, so the
//! outcome never depends on argument order.

use super::error::SpecError;
use super::jinja::RenderLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInput {
    pub text: String,
    /// `k=v`, value typed like a YAML scalar (int, float, bool, else string).
    pub set_variables: Vec<String>,
    /// `k=v`, value always a string.
    pub set_string_variables: Vec<String>,
    /// `K=V`, merged into every task's environment.
    pub set_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecLimits {
    pub max_tasks: usize,
    pub max_name_length: usize,
    /// Jinja instructions one render may execute.
    pub template_fuel: u64,
    /// Bytes of rendered text.
    pub template_output_bytes: usize,
    pub template_recursion: usize,
    /// Larger timeouts are clamped to these (not rejected).
    pub max_exec_timeout_seconds: Option<u64>,
    pub max_queue_timeout_seconds: Option<u64>,
    /// Render and read large specs in a resource-limited child process
    /// (the server sets this: fuel does not bound memory); `None` works
    /// in-process, which is what unit tests and the CLI-side tooling want.
    /// Never sent to the child, which must not isolate again.
    #[serde(skip)]
    pub render_isolation: Option<RenderIsolation>,
}

impl SpecLimits {
    /// The minijinja limits of one render under these limits.
    pub fn render_limits(&self) -> RenderLimits {
        RenderLimits {
            fuel: self.template_fuel,
            output_bytes: self.template_output_bytes,
            recursion: self.template_recursion,
        }
    }
}

impl Default for SpecLimits {
    fn default() -> Self {
        SpecLimits {
            max_tasks: 100,
            max_name_length: 64,
            template_fuel: 1_000_000,
            template_output_bytes: 4 << 20,
            template_recursion: 100,
            max_exec_timeout_seconds: None,
            max_queue_timeout_seconds: None,
            render_isolation: None,
        }
    }
}

/// Default address-space limit. Measured with `prlimit --as` on the debug
/// binary (the larger one): rendering `examples/templated.yaml` needs
/// 36 MiB of address space (15 MiB resident), a 1000-task render of
/// 3.4 MB, near the 4 MiB output cap, needs 46 MiB (25 MiB resident).
/// 512 MiB is over ten times that, for large requests and allocator
/// slack, while the doubling bomb of the module doc dies at its ~400 MB
/// step, about 0.5 s in.
pub const MEMORY_BYTES_MAX_DEFAULT: u64 = 512 << 20;

/// Default wall-clock limit; a normal render takes a few milliseconds.
pub const TIME_MAX_DEFAULT: Duration = Duration::from_secs(2);

/// How to run renders out of process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderIsolation {
    /// The program to run with [`RENDER_WORKER_ARG`]; normally
    /// `std::env::current_exe()`.
    pub executable: PathBuf,
    /// `RLIMIT_AS` of the child, in bytes.
    pub memory_bytes_max: u64,
    /// Wall-clock limit; `RLIMIT_CPU` is set just above it as a backstop.
    pub time_max: Duration,
}

impl RenderIsolation {
    pub fn new(executable: PathBuf) -> Self {
        RenderIsolation {
            executable,
            memory_bytes_max: MEMORY_BYTES_MAX_DEFAULT,
            time_max: TIME_MAX_DEFAULT,
        }
    }
}

fn split_item<'a>(flag: &str, item: &'a str) -> Result<(&'a str, &'a str), SpecError> {
    let (key, value) = item
        .split_once('=')
        .ok_or_else(|| SpecError::usage(format!("{flag} {item:?}: expected KEY=VALUE")))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(SpecError::usage(format!("{flag} {item:?}: empty key")));
    }
    Ok((key, value))
}

/// Types a `--set` value the way YAML would type a plain scalar; anything
/// that is not a bool or number stays the literal string.
fn typed_value(raw: &str) -> serde_yaml_ng::Value {
    // Bounded first: a nesting bomb in a `--set` value is just a string.
    let parsed = match super::yaml_bounds::check(raw) {
        Ok(()) => serde_yaml_ng::from_str::<serde_yaml_ng::Value>(raw),
        Err(_) => return serde_yaml_ng::Value::String(raw.to_string()),
    };
    match parsed {
        Ok(value @ (serde_yaml_ng::Value::Bool(_) | serde_yaml_ng::Value::Number(_))) => value,
        _ => serde_yaml_ng::Value::String(raw.to_string()),
    }
}

/// Template variables from `--set` and `--set-string`.
pub fn template_overrides(
    input: &SpecInput,
) -> Result<BTreeMap<String, serde_yaml_ng::Value>, SpecError> {
    let mut out = BTreeMap::new();
    let typed = input.set_variables.iter().map(|item| ("--set", item, true));
    let strings = input
        .set_string_variables
        .iter()
        .map(|item| ("--set-string", item, false));
    for (flag, item, cast) in typed.chain(strings) {
        let (key, raw) = split_item(flag, item)?;
        let value = if cast {
            typed_value(raw)
        } else {
            serde_yaml_ng::Value::String(raw.to_string())
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(SpecError::usage(format!(
                "variable {key:?} is set more than once"
            )));
        }
    }
    Ok(out)
}

/// Environment entries from `--set-env`.
pub fn env_overrides(input: &SpecInput) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for item in &input.set_env {
        let (key, value) = split_item("--set-env", item)?;
        if out.insert(key.to_string(), value.to_string()).is_some() {
            return Err(SpecError::usage(format!(
                "environment variable {key:?} is set more than once"
            )));
        }
    }
    Ok(out)
}
