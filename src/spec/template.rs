//! Jinja rendering of the spec body with minijinja, under hard limits.
//!
//! Invariants:
//! - special tokens survive rendering byte for byte: they are swapped for
//!   private-use placeholders before Jinja sees the text and swapped back
//!   after, so `{{output}}` is never treated as a variable;
//! - rendering is bounded by fuel (instructions), recursion depth and output
//!   size, so a template bomb fails fast with a `Template` error;
//! - undefined variables and attributes are errors (strict undefined), which
//!   also rejects Python-style escapes such as `''.__class__`;
//! - a body with no Jinja syntax left once the tokens are protected is not
//!   rendered at all (its rendering would be the identity), so plain specs
//!   never pay for an environment, let alone a worker process;
//! - fuel bounds instructions, not bytes, so with
//!   [`SpecLimits::render_isolation`] set the render runs in a child process
//!   under address-space, CPU and wall-clock limits (see `isolate`); the
//!   token protection and restoration stay in the caller either way.

use super::error::SpecError;
use super::input::SpecLimits;
use super::isolate;
use super::tokens::token_regex;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::io;

/// Placeholder delimiters; the input may not contain them, so restoring a
/// placeholder can only ever restore a token this module protected.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The minijinja limits of one render; travels to the isolated worker as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderLimits {
    /// Jinja instructions one render may execute.
    pub fuel: u64,
    /// Bytes of rendered text.
    pub output_bytes: usize,
    pub recursion: usize,
}

impl RenderLimits {
    pub fn of(limits: &SpecLimits) -> Self {
        RenderLimits {
            fuel: limits.template_fuel,
            output_bytes: limits.template_output_bytes,
            recursion: limits.template_recursion,
        }
    }
}

/// Renders `body` with `vars`, keeping special tokens intact.
pub fn render(
    body: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: &SpecLimits,
) -> Result<String, SpecError> {
    if body.contains([OPEN, CLOSE]) {
        return Err(SpecError::template(
            "the spec contains reserved characters U+E000/U+E001",
        ));
    }
    let mut saved: Vec<String> = Vec::new();
    let protected = token_regex().replace_all(body, |caps: &regex::Captures| {
        saved.push(caps.get(0).map_or("", |m| m.as_str()).to_string());
        format!("{OPEN}{}{CLOSE}", saved.len() - 1)
    });
    let render_limits = RenderLimits::of(limits);

    if !has_jinja(&protected) {
        // Measured on the protected text, like a real render's output, so
        // skipping the render changes nothing but the cost.
        check_output_size(protected.len(), render_limits.output_bytes)?;
        // Restoring every placeholder of an unrendered text gives `body`
        // back, so return it directly.
        return Ok(body.to_string());
    }

    let rendered = match &limits.render_isolation {
        Some(isolation) => isolate::render(&protected, vars, render_limits, isolation)?,
        None => render_protected(&protected, vars, render_limits)?,
    };
    Ok(restore(&rendered, &saved))
}

/// Whether `text` holds anything minijinja would interpret. With the
/// default syntax (no line statements) only these three openers start a
/// tag; any other text, stray `}}` included, is emitted verbatim.
pub fn has_jinja(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

fn check_output_size(len: usize, cap: usize) -> Result<(), SpecError> {
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

/// Puts the protected tokens back.
fn restore(rendered: &str, saved: &[String]) -> String {
    let mut out = String::with_capacity(rendered.len());
    let mut rest = rendered;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len_utf8()..];
        let token = after.find(CLOSE).and_then(|end| {
            let index: usize = after[..end].parse().ok()?;
            Some((saved.get(index)?, end))
        });
        match token {
            Some((text, end)) => {
                out.push_str(text);
                rest = &after[end + CLOSE.len_utf8()..];
            }
            // Jinja split or altered a placeholder (e.g. a filter sliced
            // it); keep the text as produced rather than guess.
            None => {
                out.push(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
