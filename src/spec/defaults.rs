//! Finding the top-level `default-values:` block in raw (pre-Jinja) text.
//!
//! The file need not be YAML before rendering (it may hold `{% for %}`
//! lines), so the block is cut out textually: from a column-0
//! `default-values:` line up to the next column-0 line that is not a comment.
//! Invariants: the returned body plus the block reassemble the input
//! exactly; nothing outside the block is altered; [`LineMap`] takes a line
//! of the body back to its line in the input. The block is read as OSMO
//! reads it (a repeated key: the last value wins, reported with its line in
//! the input).

use super::error::{SpecError, SpecErrorKind};
use super::yaml::{self, DuplicateKey};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

pub const KEY: &str = "default-values";

/// The input split into the template body (everything but the block) and the
/// parsed defaults (empty when there is no block).
pub struct Split {
    pub body: String,
    pub defaults: Mapping,
    /// Keys the block repeats, lines counted in the input.
    pub duplicates: Vec<DuplicateKey>,
    pub lines: LineMap,
}

/// Where the block was cut out of the input, to report body lines as the
/// user's lines. The default maps every line to itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineMap {
    /// The body line (1-based) that follows the cut; 0 when nothing was cut.
    pub cut_at: usize,
    /// How many lines the block had.
    pub cut_lines: usize,
}

impl LineMap {
    /// The input's line of body line `line` (1-based).
    pub fn input_line(&self, line: usize) -> usize {
        if self.cut_at > 0 && line >= self.cut_at {
            line + self.cut_lines
        } else {
            line
        }
    }
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
    let mut body_lines = 0usize;
    let mut lines = LineMap::default();
    for line in text.split_inclusive('\n') {
        if starts_block(line) {
            blocks += 1;
            inside = true;
            block.push_str(line);
            lines.cut_at = body_lines + 1;
            lines.cut_lines += 1;
            continue;
        }
        if inside && ends_block(line) {
            inside = false;
        }
        if inside {
            block.push_str(line);
            lines.cut_lines += 1;
        } else {
            body.push_str(line);
            body_lines += 1;
        }
    }
    if blocks > 1 {
        return Err(SpecError {
            kind: SpecErrorKind::Template,
            path: Some(KEY.into()),
            message: "given more than once".into(),
        });
    }
    let (defaults, mut duplicates) = if blocks == 0 {
        (Mapping::new(), Vec::new())
    } else {
        parse_block(&block)?
    };
    // The block is contiguous and starts at input line `cut_at` (the
    // lines before it are the body's first `cut_at - 1`).
    for duplicate in &mut duplicates {
        duplicate.line = duplicate.line.map(|line| lines.cut_at + line - 1);
    }
    Ok(Split {
        body,
        defaults,
        duplicates,
        lines,
    })
}

fn parse_block(block: &str) -> Result<(Mapping, Vec<DuplicateKey>), SpecError> {
    let parsed = yaml::parse(block).map_err(|err| SpecError {
        kind: SpecErrorKind::NotYaml,
        path: Some(KEY.into()),
        message: err.to_string(),
    })?;
    let duplicates = parsed.duplicates;
    let value = match parsed.value {
        Value::Mapping(mut map) => map.remove(KEY).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    match value {
        Value::Null => Ok((Mapping::new(), duplicates)),
        Value::Mapping(map) => {
            if map.keys().all(|key| key.is_string()) {
                Ok((map, duplicates))
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
    fn body_lines_map_back_to_the_input() {
        let text = "# top\ndefault-values:\n  a: 1\n  a: 2\n\nworkflow:\n  name: x\n";
        let split = split(text).ok();
        let split = split.as_ref();
        assert_eq!(
            split.map(|s| s.body.as_str()),
            Some("# top\nworkflow:\n  name: x\n")
        );
        let lines = split.map(|s| s.lines).unwrap_or_default();
        assert_eq!(
            (1..=3).map(|l| lines.input_line(l)).collect::<Vec<_>>(),
            vec![1, 6, 7]
        );
        // The last value wins, reported at its line in the input.
        assert_eq!(
            split.map(|s| s.defaults.get("a").cloned()),
            Some(Some(Value::from(2)))
        );
        let found: Vec<_> = split
            .map(|s| {
                s.duplicates
                    .iter()
                    .map(|d| (format!("{}.{}", d.path, d.key), d.line))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(found, vec![("default-values.a".to_string(), Some(4))]);
        // Without a block, lines are the input's.
        let plain = super::split("workflow: {}\n").ok().map(|s| s.lines);
        assert_eq!(plain.map(|l| l.input_line(5)), Some(5));
    }

    #[test]
    fn no_block_and_similar_keys() {
        let split = split("default-values-x: 1\n").ok();
        assert_eq!(split.map(|s| s.defaults.len()), Some(0));
    }
}
