//! The minijinja render proper, under hard limits: the one set of
//! semantics used in-process and by the isolated worker alike.
//!
//! Invariants: rendering is bounded by fuel (instructions), recursion depth
//! and output size, so a template bomb fails fast with a `Template` error;
//! undefined variables and attributes are errors (strict undefined), which
//! also rejects Python-style escapes such as `''.__class__`.

use super::error::SpecError;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::io;

/// The minijinja limits of one render; travels to the isolated worker as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderLimits {
    /// Jinja instructions one render may execute.
    pub fuel: u64,
    /// Bytes of rendered text.
    pub output_bytes: usize,
    pub recursion: usize,
}

/// Whether `text` holds anything minijinja would interpret. With the
/// default syntax (no line statements) only these three openers start a
/// tag; any other text, stray `}}` included, is emitted verbatim.
pub fn has_jinja(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

pub fn check_output_size(len: usize, cap: usize) -> Result<(), SpecError> {
    if len > cap {
        return Err(SpecError::template(format!(
            "rendered spec exceeds {cap} bytes"
        )));
    }
    Ok(())
}

/// The minijinja render proper, of a body whose tokens are already
/// protected; used in-process and by the isolated worker alike, so both
/// paths share one set of semantics and limits.
pub fn render_protected(
    protected: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: RenderLimits,
) -> Result<String, SpecError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_keep_trailing_newline(true);
    let template = env
        .template_from_str(protected)
        .map_err(|err| SpecError::template(format!("template error: {err}")))?;

    let mut out = CappedWriter {
        buf: Vec::new(),
        cap: limits.output_bytes,
        overflowed: false,
    };
    let result = template.render_captured_to(vars, &mut out);
    if out.overflowed {
        return Err(SpecError::template(format!(
            "rendered spec exceeds {} bytes",
            limits.output_bytes
        )));
    }
    result.map_err(|err| SpecError::template(format!("template error: {err}")))?;
    String::from_utf8(out.buf).map_err(|_| SpecError::template("rendered spec is not valid UTF-8"))
}

/// Collects output and fails once it would exceed `cap`, which makes
/// minijinja abort the render.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.overflowed = true;
            return Err(io::Error::other("rendered output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
