//! The one error type of the spec module and the conversion of serde paths
//! into the user-facing `workflow.groups[1].tasks[0].command` form.
//!
//! Invariant: every error carries a kind that tells the caller whether
//! anything can be stored (see [`SpecErrorKind`]); `path`, when present, names
//! the offending field in the dotted/indexed form users see in the YAML.

use std::fmt;

/// Why a spec was rejected; decides what the API layer does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// The (rendered) text is not YAML at all.
    NotYaml,
    /// Jinja rendering failed or exceeded a limit.
    Template,
    /// A `--set`/`--set-string`/`--set-env` item is malformed or repeated.
    Usage,
    /// The spec parsed but breaks a rule.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub kind: SpecErrorKind,
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) if !path.is_empty() => write!(f, "{path}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl SpecError {
    pub fn new(kind: SpecErrorKind, message: impl Into<String>) -> Self {
        SpecError {
            kind,
            path: None,
            message: message.into(),
        }
    }

    /// An `Invalid` error at a field path.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            kind: SpecErrorKind::Invalid,
            path: Some(path.into()),
            message: message.into(),
        }
    }

    pub fn template(message: impl Into<String>) -> Self {
        Self::new(SpecErrorKind::Template, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(SpecErrorKind::Usage, message)
    }
}

/// Renders a serde_path_to_error path as `a.b[2].c`, under `prefix`.
pub fn render_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = prefix.to_string();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            // Enum variants and unknown segments carry no field name a user
            // could find in the YAML.
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Joins a field onto a path (`join("a[0]", "b") == "a[0].b"`).
pub fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}
