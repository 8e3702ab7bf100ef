//! Rendering the spec body: special tokens protected, Jinja rendered,
//! tokens restored.
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
//!   [`SpecLimits::render_isolation`] set the caller ([`super::prepare`])
//!   runs this whole step in a child process under address-space, CPU and
//!   wall-clock limits (see `isolate`), and [`needs_render`] tells it when;
//! - [`literal`] of a text renders back to that text, so text that was
//!   rendered once (by the CLI, before inlining local files) is not
//!   rendered again by the server.

use super::defaults::LineMap;
use super::error::SpecError;
use super::input::SpecLimits;
use super::jinja::{check_output_size, has_jinja, render_protected};
use super::special_tokens::token_regex;

/// Placeholder delimiters; the input may not contain them, so restoring a
/// placeholder can only ever restore a token this module protected.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Renders `body` with `vars`, keeping special tokens intact; errors name
/// lines through `lines` (the body's line → the input's).
pub fn render(
    body: &str,
    vars: &serde_yaml_ng::Mapping,
    limits: &SpecLimits,
    lines: LineMap,
) -> Result<String, SpecError> {
    // Two single-character searches (memchr) rather than one over a set of
    // characters, which decodes every character.
    if body.contains(OPEN) || body.contains(CLOSE) {
        return Err(SpecError::template(
            "the spec contains reserved characters U+E000/U+E001",
        ));
    }
    let mut saved: Vec<String> = Vec::new();
    let protected = token_regex().replace_all(body, |caps: &regex::Captures| {
        saved.push(caps.get(0).map_or("", |m| m.as_str()).to_string());
        format!("{OPEN}{}{CLOSE}", saved.len() - 1)
    });
    let render_limits = limits.render_limits();

    if !has_jinja(&protected) {
        // Measured on the protected text, like a real render's output, so
        // skipping the render changes nothing but the cost.
        check_output_size(protected.len(), render_limits.output_bytes)?;
        // Restoring every placeholder of an unrendered text gives `body`
        // back, so return it directly.
        return Ok(body.to_string());
    }

    let rendered = render_protected(&protected, vars, render_limits, lines)?;
    Ok(restore(&rendered, &saved))
}

/// Whether [`render`] would run Jinja on `text` (or a body cut from it):
/// any Jinja syntax besides special tokens.
pub fn needs_render(text: &str) -> bool {
    has_jinja(&token_regex().replace_all(text, " "))
}

/// A template whose rendering is `text` itself: `text` when it holds no
/// Jinja syntax besides special tokens, else `text` in a raw block (left
/// as is if it holds `endraw`, which a raw block cannot carry).
pub fn literal(text: &str) -> String {
    if !needs_render(text) || text.contains("endraw") {
        return text.to_string();
    }
    format!("{{% raw %}}{text}{{% endraw %}}")
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
