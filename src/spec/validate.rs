//! The rules of OSMO §1.7 that need nothing beyond the spec itself: names,
//! versions, quantities, durations, exit codes, regexes, files, credentials,
//! labels, mounts and special-token references.
//!
//! Invariant: each function checks one field (or one kind of field) and, on
//! failure, returns an `Invalid` error whose path names that field; on
//! success it returns the value in plan form, so a plan can only be built
//! from values that passed their check.

use super::error::{join, SpecError};
use super::input::SpecLimits;
use super::model::{
    CheckpointSpec, FileSpec, ResourceSpec, TaskSpec, Text, TimeoutSpec, TopologySpec,
};
use super::quantity::{parse_duration, parse_quantity};
use super::special_tokens::{probe_tokens, scan, Token};
use base64::Engine as _;
use gantry_storage::extras::{CheckpointPlan, TopologyRequirement};
use gantry_storage::plan::{CredentialUse, ExitAction, ExitActionPlan, FilePlan, ResourcePlan};
use regex::Regex;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Reserved for the in-pod sidecar container.
const RESERVED_TASK: &str = "osmo-ctrl";
const MAX_LABELS: usize = 16;

fn name_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        Regex::new(r"^[a-zA-Z]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$").expect("name regex compiles")
    })
}

/// `version` may be absent or 2 (int, `"2"`, `2.0`).
pub fn check_version(root: &Value) -> Result<(), SpecError> {
    let Some(version) = root.get("version") else {
        return Ok(());
    };
    let ok = match version {
        Value::Null => true,
        Value::Number(n) => n.as_i64() == Some(2) || n.as_f64() == Some(2.0),
        Value::String(s) => s.trim() == "2",
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            "version",
            "Unsupported workflow version",
        ))
    }
}

/// Workflow, group and task names share one pattern and length limit.
pub fn check_name(path: &str, name: &str, limits: &SpecLimits) -> Result<(), SpecError> {
    if name.chars().count() > limits.max_name_length {
        return Err(SpecError::invalid(
            path,
            format!(
                "name {name:?} is longer than {} characters",
                limits.max_name_length
            ),
        ));
    }
    if !name_regex().is_match(name) {
        return Err(SpecError::invalid(
            path,
            format!(
                "name {name:?} must start with a letter, end with a letter or digit, \
                 and contain only letters, digits, '-' and '_'"
            ),
        ));
    }
    Ok(())
}

pub fn check_task_name(path: &str, name: &str, limits: &SpecLimits) -> Result<(), SpecError> {
    check_name(path, name, limits)?;
    if normalize(name) == RESERVED_TASK {
        return Err(SpecError::invalid(
            path,
            format!("task name {name:?} is reserved"),
        ));
    }
    Ok(())
}

/// Names that differ only in case or `_` vs `-` collide (they map to the
/// same Kubernetes object names).
pub fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A resource's `topology`, checked for its own shape: keys not empty,
/// each key once, `requirementType` `required` (the default) or
/// `preferred`. Whether the pool has the keys is the submit's check.
pub fn topology(path: &str, specs: &[TopologySpec]) -> Result<Vec<TopologyRequirement>, SpecError> {
    let mut requirements: Vec<TopologyRequirement> = Vec::with_capacity(specs.len());
    for (index, topology) in specs.iter().enumerate() {
        let at = format!("{path}[{index}]");
        let key = topology.key.trim();
        if key.is_empty() {
            return Err(SpecError::invalid(
                join(&at, "key"),
                "topology key must not be empty",
            ));
        }
        // Two requirements at one level would nest a level inside itself.
        if requirements.iter().any(|earlier| earlier.key == key) {
            return Err(SpecError::invalid(
                join(&at, "key"),
                format!("topology key {key:?} is given twice; give each key once"),
            ));
        }
        let required = match topology.requirement_type.as_deref() {
            None | Some("required") => true,
            Some("preferred") => false,
            Some(kind) => {
                return Err(SpecError::invalid(
                    join(&at, "requirementType"),
                    format!("requirementType {kind:?} must be required or preferred"),
                ))
            }
        };
        let group = match topology.group.as_deref().map(str::trim) {
            None => "default".to_string(),
            Some("") => {
                return Err(SpecError::invalid(
                    join(&at, "group"),
                    "topology group must not be empty",
                ))
            }
            Some(group) => group.to_string(),
        };
        requirements.push(TopologyRequirement {
            key: key.to_string(),
            group,
            required,
            label: String::new(),
        });
    }
    Ok(requirements)
}

pub fn resource(path: &str, name: &str, spec: &ResourceSpec) -> Result<ResourcePlan, SpecError> {
    let count = |field: &str, value: Option<i64>| -> Result<Option<u64>, SpecError> {
        match value {
            None => Ok(None),
            Some(v) => u64::try_from(v).map(Some).map_err(|_| {
                SpecError::invalid(
                    join(path, field),
                    format!("{field} must not be negative, got {v}"),
                )
            }),
        }
    };
    let quantity = |field: &str, value: &Option<Text>| -> Result<Option<u64>, SpecError> {
        match value {
            None => Ok(None),
            Some(Text(text)) => parse_quantity(text)
                .map(Some)
                .map_err(|msg| SpecError::invalid(join(path, field), msg)),
        }
    };
    if !spec.nodes_excluded.is_empty() {
        return Err(SpecError::invalid(
            join(path, "nodesExcluded"),
            not_yet(
                "nodesExcluded",
                "it sets the pod template variable USER_EXCLUDED_NODES, which Gantry's pod templates do not have",
            ),
        ));
    }
    Ok(ResourcePlan {
        name: name.to_string(),
        cpu: count("cpu", spec.cpu)?,
        gpu: count("gpu", spec.gpu)?,
        memory_bytes: quantity("memory", &spec.memory)?,
        storage_bytes: quantity("storage", &spec.storage)?,
        platform: spec.platform.clone(),
    })
}

/// The message for a field OSMO has and Gantry refuses until it can honour
/// it: never accepted and ignored.
pub fn not_yet(field: &str, why: &str) -> String {
    format!("`{field}` is not supported yet: {why}; remove it from the spec")
}

/// The task fields Gantry refuses (saying why) once
/// their shape has been checked: `kpis`, `cacheSize`; and `downloadType`
/// other than `download`, OSMO's only one.
pub fn unsupported_task_fields(path: &str, task: &TaskSpec) -> Result<(), SpecError> {
    if !task.kpis.is_empty() {
        return Err(SpecError::invalid(
            join(path, "kpis"),
            not_yet("kpis", "Gantry does not upload KPI files"),
        ));
    }
    if task.cache_size.is_some() {
        return Err(SpecError::invalid(
            join(path, "cacheSize"),
            not_yet(
                "cacheSize",
                "it sets the pod template variable USER_CACHE, which Gantry's pod templates do not have",
            ),
        ));
    }
    match task.download_type.as_deref() {
        None | Some("download") => Ok(()),
        Some(other) => Err(SpecError::invalid(
            join(path, "downloadType"),
            format!("downloadType {other:?} is not a download type: the only one is \"download\""),
        )),
    }
}

fn duration(path: &str, text: &Text) -> Result<u64, SpecError> {
    let seconds = parse_duration(&text.0).map_err(|msg| SpecError::invalid(path, msg))?;
    if seconds == 0 {
        return Err(SpecError::invalid(
            path,
            "duration must be greater than zero",
        ));
    }
    Ok(seconds)
}

/// Exec and queue timeouts in seconds, clamped to the configured maxima.
pub fn timeouts(
    spec: Option<&TimeoutSpec>,
    limits: &SpecLimits,
) -> Result<(Option<u64>, Option<u64>), SpecError> {
    let Some(spec) = spec else {
        return Ok((None, None));
    };
    let one =
        |field: &str, value: &Option<Text>, max: Option<u64>| -> Result<Option<u64>, SpecError> {
            let given = match value {
                Some(text) => Some(duration(&format!("workflow.timeout.{field}"), text)?),
                None => None,
            };
            // Clamped, not rejected: OSMO caps values above the configured
            // maximum. Absent stays absent; defaults are the caller's business.
            Ok(match (given, max) {
                (Some(g), Some(m)) => Some(g.min(m)),
                (g, _) => g,
            })
        };
    Ok((
        one(
            "exec_timeout",
            &spec.exec_timeout,
            limits.max_exec_timeout_seconds,
        )?,
        one(
            "queue_timeout",
            &spec.queue_timeout,
            limits.max_queue_timeout_seconds,
        )?,
    ))
}

/// `{COMPLETE|FAIL|RESCHEDULE: "0,1-10,16"}` in plan form.
pub fn exit_actions(
    path: &str,
    actions: &BTreeMap<String, Text>,
) -> Result<Vec<ExitActionPlan>, SpecError> {
    let mut out = Vec::with_capacity(actions.len());
    for (key, Text(codes)) in actions {
        let at = join(path, key);
        let action = match key.as_str() {
            "COMPLETE" => ExitAction::Complete,
            "FAIL" => ExitAction::Fail,
            "RESCHEDULE" => ExitAction::Reschedule,
            _ => {
                return Err(SpecError::invalid(
                    at,
                    format!("unknown exit action {key:?} (expected COMPLETE, FAIL or RESCHEDULE)"),
                ))
            }
        };
        out.push(ExitActionPlan {
            action,
            codes: exit_codes(&at, codes)?,
        });
    }
    Ok(out)
}

fn exit_codes(path: &str, text: &str) -> Result<Vec<(i32, i32)>, SpecError> {
    let bad = |why: &str| {
        SpecError::invalid(
            path,
            format!("invalid exit codes {text:?}: {why} (expected e.g. \"0,1-10,16\")"),
        )
    };
    let ranges = gantry_storage::plan::parse_exit_codes(text).map_err(|why| bad(&why))?;
    if ranges.iter().any(|&(_, high)| high > 255) {
        return Err(bad("codes must be between 0 and 255"));
    }
    Ok(ranges)
}

/// Compiles a user regex with a size cap so a pathological pattern costs
/// bounded memory; empty means "no filter". Special tokens are substituted
/// at launch, so the pattern is compiled as it will be then.
pub fn regex(path: &str, pattern: &Option<String>) -> Result<Option<String>, SpecError> {
    match pattern.as_deref() {
        None | Some("") => Ok(None),
        Some(p) => regex::RegexBuilder::new(&probe_tokens(p))
            .size_limit(1 << 20)
            .build()
            .map(|_| Some(p.to_string()))
            .map_err(|err| SpecError::invalid(path, format!("invalid regex {p:?}: {err}"))),
    }
}

/// `<wfid>:<task>` references a task of another workflow.
pub fn cross_workflow(path: &str, reference: &str, limits: &SpecLimits) -> Result<(), SpecError> {
    match reference.split_once(':') {
        Some((workflow, task)) if !workflow.is_empty() && !task.contains(':') => {
            check_name(path, task, limits)
        }
        _ => Err(SpecError::invalid(
            path,
            format!(
                "invalid task reference {reference:?} (expected <task> or <workflow_id>:<task>)"
            ),
        )),
    }
}

/// Absolute, unique paths outside `/osmo`; contents given (a `localpath`
/// is the CLI's to read, never the server's); base64 contents must decode.
pub fn files(path: &str, files: &[FileSpec]) -> Result<Vec<FilePlan>, SpecError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let at = format!("{path}[{index}]");
        if file.localpath.is_some() {
            return Err(SpecError::invalid(
                join(&at, "localpath"),
                "a local file cannot be read by the server; submit with the CLI \
                 (`gantry workflow submit` or `osmo workflow submit`), which reads it \
                 into `contents`",
            ));
        }
        let Some(contents) = &file.contents else {
            return Err(SpecError::invalid(
                join(&at, "contents"),
                "contents is required",
            ));
        };
        let path_at = join(&at, "path");
        if let Some(problem) = file_path_problem(&file.path) {
            let message = match problem {
                "must name a file" => "file path must name a file".to_string(),
                _ => format!("file path {:?} {problem}", file.path),
            };
            return Err(SpecError::invalid(path_at, message));
        }
        // Tokens substitute to known directories (`{{output}}` → /osmo/…),
        // so the path as launched must pass too.
        let launched = probe_tokens(&file.path);
        if let Some(problem) = file_path_problem(&launched) {
            return Err(SpecError::invalid(
                path_at,
                format!(
                    "file path {:?} {problem} once its special tokens are substituted ({launched:?})",
                    file.path
                ),
            ));
        }
        if !seen.insert(normal_path(&file.path)) {
            return Err(SpecError::invalid(
                path_at,
                format!("file path {:?} is given more than once", file.path),
            ));
        }
        if file.base64
            && base64::engine::general_purpose::STANDARD
                .decode(contents.trim())
                .is_err()
        {
            return Err(SpecError::invalid(
                join(&at, "contents"),
                "contents are not valid base64",
            ));
        }
        out.push(FilePlan {
            path: file.path.clone(),
            contents: contents.clone(),
            base64: file.base64,
        });
    }
    Ok(out)
}

/// The path's parts without empty and `.` segments.
fn normal_path(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Top directories a task cannot place a file in: the kernel's (`/proc`,
/// `/sys`, `/dev`) and the system trees the local sandbox binds read-only
/// (a file there fails at launch).
const SYSTEM_TREES: [&str; 11] = [
    "proc", "sys", "dev", "etc", "usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32",
];

/// What is wrong with a file path, if anything: it must be absolute,
/// written plainly (no `..`, `.`, empty segments or NUL), name a file (not
/// a directory), and lie outside `/osmo` and the system trees.
fn file_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be absolute");
    }
    if path.contains('\0') {
        return Some("must not contain a NUL character");
    }
    if path.split('/').all(str::is_empty) {
        return Some("must name a file");
    }
    if path.ends_with('/') {
        return Some("names a directory (it ends with '/'), not a file");
    }
    let mut parts = Vec::new();
    let mut plain = true;
    for part in path.split('/').skip(1) {
        match part {
            ".." => return Some("must not contain '..'"),
            "" | "." => plain = false,
            other => parts.push(other),
        }
    }
    match parts.first() {
        None => Some("must name a file"),
        Some(&"osmo") => Some("must not be under /osmo"),
        Some(top) if SYSTEM_TREES.contains(top) => {
            Some("is inside a system directory tasks cannot write (use e.g. /tmp or /opt)")
        }
        // The executor takes the path as written.
        Some(_) if !plain => Some("must not contain empty or '.' segments"),
        Some(_) => None,
    }
}

/// Words handed to the program (`command`, `args`): a NUL would end the C
/// string the executor passes on, so it cannot launch.
pub fn exec_words(path: &str, words: &[String]) -> Result<(), SpecError> {
    for (index, word) in words.iter().enumerate() {
        if word.contains('\0') {
            return Err(SpecError::invalid(
                format!("{path}[{index}]"),
                "must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

/// Environment names are non-empty, without `=` or NUL, and values without
/// NUL: anything else cannot be put in a process environment.
pub fn environment(path: &str, environment: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (name, value) in environment {
        let at = join(path, name);
        if name.is_empty() {
            return Err(SpecError::invalid(
                path,
                "environment variable names must not be empty",
            ));
        }
        if name.contains('=') || name.contains('\0') {
            return Err(SpecError::invalid(
                at,
                format!("environment variable name {name:?} must not contain '=' or NUL"),
            ));
        }
        if value.contains('\0') {
            return Err(SpecError::invalid(
                at,
                "environment variable value must not contain a NUL character",
            ));
        }
    }
    Ok(())
}

/// Most `checkpoint` entries one task may have.
pub const CHECKPOINTS_PER_TASK_MAX: usize = 16;

pub fn checkpoints(
    path: &str,
    checkpoints: &[CheckpointSpec],
) -> Result<Vec<CheckpointPlan>, SpecError> {
    // Each is a loop of uploads on the executor: a bound keeps one task
    // from keeping it busy.
    if checkpoints.len() > CHECKPOINTS_PER_TASK_MAX {
        return Err(SpecError::invalid(
            path,
            format!(
                "{} checkpoints; at most {CHECKPOINTS_PER_TASK_MAX} per task",
                checkpoints.len()
            ),
        ));
    }
    let mut plans = Vec::with_capacity(checkpoints.len());
    for (index, checkpoint) in checkpoints.iter().enumerate() {
        let at = format!("{path}[{index}]");
        if checkpoint.path.trim().is_empty() || checkpoint.path.contains('\0') {
            return Err(SpecError::invalid(
                join(&at, "path"),
                "checkpoint path must name a directory",
            ));
        }
        if checkpoint.url.trim().is_empty() {
            return Err(SpecError::invalid(
                join(&at, "url"),
                "checkpoint url must not be empty",
            ));
        }
        // OSMO reads a relative path from the file system's root.
        let absolute = if checkpoint.path.starts_with('/') {
            checkpoint.path.clone()
        } else {
            format!("/{}", checkpoint.path)
        };
        plans.push(CheckpointPlan {
            path: absolute,
            url: checkpoint.url.clone(),
            frequency_seconds: duration(&join(&at, "frequency"), &checkpoint.frequency)?,
            regex: regex(&join(&at, "regex"), &checkpoint.regex)?,
        });
    }
    Ok(plans)
}

/// A credential's mount directory: absolute (checked by the caller), not
/// the root, no `..`, NUL or `/osmo` (the executor's own files).
fn mount_dir(at: &str, dir: &str) -> Result<String, SpecError> {
    let trimmed = dir.trim_end_matches('/');
    let refuse = |why: &str| {
        Err(SpecError::invalid(
            at,
            format!("credential mount directory '{dir}' {why}"),
        ))
    };
    if trimmed.is_empty() {
        return refuse("must be a directory, not the root");
    }
    if dir.contains('\0') {
        return refuse("must not contain NUL");
    }
    if trimmed.split('/').any(|part| part == ".." || part == ".") {
        return refuse("must not contain '.' or '..'");
    }
    if trimmed == "/osmo" || trimmed.starts_with("/osmo/") {
        return refuse("must not be under /osmo");
    }
    Ok(trimmed.to_string())
}

/// `name: "/dir"` mounts every key; `name: {ENV: key}` maps keys to env.
pub fn credentials(
    path: &str,
    credentials: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, CredentialUse>, SpecError> {
    let mut out = BTreeMap::new();
    for (name, value) in credentials {
        let at = join(path, name);
        if name.trim().is_empty() {
            return Err(SpecError::invalid(at, "credential name must not be empty"));
        }
        let shape = "must be a mount directory (\"/dir\") or a map of ENV_VAR: key";
        let usage = match value {
            Value::String(dir) if dir.starts_with('/') => {
                CredentialUse::Mount(mount_dir(&at, dir)?)
            }
            Value::String(_) => {
                return Err(SpecError::invalid(
                    at,
                    "credential mount directory must be absolute",
                ))
            }
            Value::Mapping(map) => {
                let mut env = BTreeMap::new();
                for (key, value) in map {
                    match (key, value) {
                        (Value::String(k), Value::String(v)) if !k.is_empty() && !v.is_empty() => {
                            env.insert(k.clone(), v.clone());
                        }
                        _ => return Err(SpecError::invalid(at, shape)),
                    }
                }
                // The keys become environment names of the task.
                let names = env.keys().map(|k| (k.clone(), String::new()));
                environment(&at, &names.collect())?;
                CredentialUse::Env(env)
            }
            _ => return Err(SpecError::invalid(at, shape)),
        };
        out.insert(name.clone(), usage);
    }
    Ok(out)
}

fn label_part_ok(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        Regex::new(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$").expect("label regex compiles")
    });
    text.len() <= 63 && re.is_match(text)
}

/// Kubernetes label syntax, non-empty values, at most 16 labels.
pub fn labels(labels: Option<&BTreeMap<String, String>>) -> Result<(), SpecError> {
    let Some(labels) = labels else {
        return Ok(());
    };
    if labels.len() > MAX_LABELS {
        return Err(SpecError::invalid(
            "workflow.labels",
            format!(
                "at most {MAX_LABELS} labels are allowed, got {}",
                labels.len()
            ),
        ));
    }
    for (key, value) in labels {
        let at = join("workflow.labels", key);
        let name = match key.rsplit_once('/') {
            Some((prefix, name)) if !prefix.is_empty() && prefix.len() <= 253 => name,
            Some(_) => "",
            None => key.as_str(),
        };
        if !label_part_ok(name) {
            return Err(SpecError::invalid(at, format!("invalid label key {key:?}")));
        }
        if !label_part_ok(value) {
            return Err(SpecError::invalid(
                at,
                format!("invalid label value {value:?} (non-empty, at most 63 characters)"),
            ));
        }
    }
    Ok(())
}

/// `"/src"` or `"/src:/dst"`, both absolute.
pub fn volume_mounts(path: &str, mounts: &[String]) -> Result<(), SpecError> {
    for (index, mount) in mounts.iter().enumerate() {
        let parts: Vec<&str> = mount.split(':').collect();
        if parts.len() > 2 || parts.iter().any(|part| !part.starts_with('/')) {
            return Err(SpecError::invalid(
                format!("{path}[{index}]"),
                format!("invalid volume mount {mount:?} (expected /src or /src:/dst)"),
            ));
        }
    }
    Ok(())
}

/// What a task's special tokens may refer to.
pub struct TokenScope<'a> {
    pub input_count: usize,
    /// Task references among this task's inputs.
    pub input_tasks: &'a [String],
    /// Tasks of the same group.
    pub group_tasks: &'a [String],
}

/// Checks every special token in `text` against the task's scope.
pub fn tokens(path: &str, text: &str, scope: &TokenScope) -> Result<(), SpecError> {
    for (whole, token) in scan(text) {
        let problem = match token {
            Token::Output | Token::WorkflowId => None,
            Token::InputIndex(n) if n < scope.input_count => None,
            Token::InputIndex(n) => Some(format!(
                "{whole} refers to input {n}, but the task has {} input(s)",
                scope.input_count
            )),
            Token::InputTask(task) if scope.input_tasks.iter().any(|t| t == task) => None,
            Token::InputTask(task) => Some(format!(
                "{whole}: task {task:?} is not an input of this task"
            )),
            Token::Host(task) if scope.group_tasks.iter().any(|t| t == task) => None,
            Token::Host(task) => Some(format!("{whole}: task {task:?} is not in the same group")),
            Token::Malformed(_) => Some(format!("malformed special token {whole}")),
        };
        if let Some(message) = problem {
            return Err(SpecError::invalid(path, message));
        }
    }
    Ok(())
}
