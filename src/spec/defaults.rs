//! Finding the top-level `default-values:` block in raw (pre-Jinja) text.
//!
//! The file need not be YAML before rendering (it may hold `{% for %}`
//! lines), so the block is cut out textually: from a column-0
//! `default-values:` line up to the next column-0 line that is not a comment.
//! Invariant: the returned body plus the block reassemble the input exactly;
//! nothing outside the block is altered.

use super::error::{SpecError, SpecErrorKind};
use serde_yaml_ng::{Mapping, Value};

pub const KEY: &str = "default-values";

/// The input split into the template body (everything but the block) and the
/// parsed defaults (empty when there is no block).
pub struct Split {
    pub body: String,
    pub defaults: Mapping,
}

fn starts_block(line: &str) -> bool {
    line.strip_prefix(KEY)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// A column-0 line that ends the block: anything but blank lines, comments
/// and indented continuation lines.
fn ends_block(line: &str) -> bool {
    match line.chars().next() {
        None => false,
        Some(c) => !(c.is_whitespace() || c == '#'),
    }
}

pub fn split(text: &str) -> Result<Split, SpecError> {
    let mut body = String::with_capacity(text.len());
    let mut block = String::new();
    let mut blocks = 0usize;
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if starts_block(line) {
            blocks += 1;
            inside = true;
            block.push_str(line);
            continue;
        }
        if inside && ends_block(line) {
            inside = false;
        }
        if inside {
            block.push_str(line);
        } else {
            body.push_str(line);
        }
    }
    if blocks > 1 {
        return Err(SpecError {
            kind: SpecErrorKind::Template,
            path: Some(KEY.into()),
            message: "given more than once".into(),
        });
    }
    let defaults = if blocks == 0 {
        Mapping::new()
    } else {
        parse_block(&block)?
    };
    Ok(Split { body, defaults })
}

fn parse_block(block: &str) -> Result<Mapping, SpecError> {
    let parsed: Value = serde_yaml_ng::from_str(block).map_err(|err| SpecError {
        kind: SpecErrorKind::NotYaml,
        path: Some(KEY.into()),
        message: err.to_string(),
    })?;
    let value = match parsed {
        Value::Mapping(mut map) => map.remove(KEY).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    match value {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(map) => {
            if map.keys().all(|key| key.is_string()) {
                Ok(map)
            } else {
                Err(SpecError {
                    kind: SpecErrorKind::Template,
                    path: Some(KEY.into()),
                    message: "keys must be strings".into(),
                })
            }
        }
        _ => Err(SpecError {
            kind: SpecErrorKind::Template,
            path: Some(KEY.into()),
            message: "must be a mapping of variable names to values".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_block_between_keys() {
        let text =
            "workflow:\n  name: x\ndefault-values:\n  a: 1\n  # note\n\n  b: two\nversion: 2\n";
        let split = split(text).ok();
        let split = split.as_ref();
        assert_eq!(
            split.map(|s| s.body.as_str()),
            Some("workflow:\n  name: x\nversion: 2\n")
        );
        assert_eq!(split.map(|s| s.defaults.len()), Some(2));
    }

    #[test]
    fn flow_block_at_end_without_newline() {
        let split = split("workflow: {}\ndefault-values: {name: ddp, n: 2}").ok();
        assert_eq!(split.map(|s| s.defaults.len()), Some(2));
    }

    #[test]
    fn no_block_and_similar_keys() {
        let split = split("default-values-x: 1\n").ok();
        assert_eq!(split.map(|s| s.defaults.len()), Some(0));
    }
}
