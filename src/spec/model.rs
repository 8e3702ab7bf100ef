//! Serde structs mirroring OSMO's version-2 spec, field names as users write
//! them.
//!
//! Invariants: every struct denies unknown fields (OSMO models are
//! `extra='forbid'`); scalar coercions OSMO performs happen here and only
//! here ([`Text`]: numbers → strings; [`EnvValue`]: numbers and bools →
//! strings). Semantic checks (names, references, quantities) are left to
//! `validate`, which can name the rule that failed.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::fmt;

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Checked before typed parsing (see `validate::check_version`).
    #[serde(default)]
    pub version: Option<Value>,
    pub workflow: WorkflowSpec,
    /// Normally cut out before rendering; tolerated if it survives (e.g. in
    /// a flow-style document).
    #[serde(rename = "default-values", default)]
    pub default_values: Option<Value>,
}

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub name: String,
    #[serde(default)]
    pub tasks: Option<Vec<TaskSpec>>,
    #[serde(default)]
    pub groups: Option<Vec<GroupSpec>>,
    #[serde(default)]
    pub resources: Option<BTreeMap<String, ResourceSpec>>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub backend: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub tasks: Vec<TaskSpec>,
    #[serde(default)]
    pub barrier: Option<bool>,
    #[serde(rename = "ignoreNonleadStatus", default)]
    pub ignore_nonlead_status: Option<bool>,
}

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpec {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Option<Vec<Text>>,
    #[serde(default)]
    pub args: Vec<Text>,
    #[serde(default)]
    pub lead: bool,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, EnvValue>,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Shape (`"/dir"` or `{ENV: key}`) is checked in `validate`, which can
    /// give a clearer message than an untagged enum.
    #[serde(default)]
    pub credentials: BTreeMap<String, Value>,
    /// Keys are checked in `validate` so a bad key gets its own path.
    #[serde(default)]
    pub exit_actions: BTreeMap<String, Text>,
    #[serde(default)]
    pub checkpoint: Vec<CheckpointSpec>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub volume_mounts: Vec<String>,
    #[serde(default)]
    pub download_type: Option<String>,
    #[serde(default)]
    pub cache_size: Option<Text>,
    #[serde(default)]
    pub kpis: Vec<KpiSpec>,
    /// Internal OSMO fields that the service overwrites; accepted, ignored.
    #[serde(default)]
    pub backend: Option<Value>,
    #[serde(default)]
    pub resources: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub url: String,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    /// Required; checked in `validate` so that a `localpath` gets its own
    /// message rather than "missing field `contents`".
    #[serde(default)]
    pub contents: Option<String>,
    #[serde(default)]
    pub base64: bool,
    /// A file on the submitting machine: the CLI reads it into `contents`
    /// before submitting; the server cannot, so `validate` refuses it.
    #[serde(default)]
    pub localpath: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    pub path: String,
    pub url: String,
    pub frequency: Text,
    #[serde(default)]
    pub regex: Option<String>,
}

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiSpec {
    pub index: Text,
    pub path: String,
}

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceSpec {
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub gpu: Option<i64>,
    #[serde(default)]
    pub memory: Option<Text>,
    #[serde(default)]
    pub storage: Option<Text>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub nodes_excluded: Vec<String>,
    #[serde(default)]
    pub topology: Vec<TopologySpec>,
}

// Some fields are accepted for OSMO compatibility (unknown keys are errors)
// but not used by the plan.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologySpec {
    pub key: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub requirement_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    #[serde(default)]
    pub exec_timeout: Option<Text>,
    #[serde(default)]
    pub queue_timeout: Option<Text>,
}

/// A string; YAML numbers are accepted and kept in their written form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// An environment value; numbers and bools are accepted as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

/// Python-like float text: `2.0` stays `2.0` rather than Rust's `2`.
fn float_text(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        value.to_string()
    }
}

struct ScalarVisitor {
    allow_bool: bool,
}

impl Visitor<'_> for ScalarVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_bool {
            f.write_str("a string, number or boolean")
        } else {
            f.write_str("a string or number")
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(float_text(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        if self.allow_bool {
            Ok(v.to_string())
        } else {
            Err(E::invalid_type(de::Unexpected::Bool(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor { allow_bool: false })
            .map(Text)
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor { allow_bool: true })
            .map(EnvValue)
    }
}
