//! Special tokens (`{{output}}`, `{{input:N}}`, `{{input:<task>}}`,
//! `{{workflow_id}}`, `{{host:<task>}}`): finding them, checking them at
//! submit time, and substituting them at launch time.
//!
//! Invariant: one regex ([`token_regex`]) defines what a token is, so the
//! template stage protects exactly what validation checks and launch
//! substitutes. Text in `{{ ... }}` that is not one of these families is not
//! a token and is left alone.

use super::error::{SpecError, SpecErrorKind};
use regex::{Captures, Regex};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Mount points inside a task container.
pub const OUTPUT_DIR: &str = "/osmo/data/output";
pub const INPUT_DIR: &str = "/osmo/data/input";

/// A parsed special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    Output,
    WorkflowId,
    InputIndex(usize),
    /// `{{input:<task>}}`; may be `<wfid>:<task>` for cross-workflow inputs.
    InputTask(&'a str),
    Host(&'a str),
    /// Right family, unusable argument (e.g. `{{input:}}`, huge index).
    Malformed(&'a str),
}

/// Matches every token, whitespace tolerated inside the braces.
pub fn token_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // The pattern is a constant, so failure here is a programming error
        // caught by every test run, never by user input.
        #[allow(clippy::expect_used)]
        Regex::new(r"\{\{\s*(output|workflow_id|input:[^{}\s]*|host:[^{}\s]*)\s*\}\}")
            .expect("token regex compiles")
    })
}

fn classify(body: &str) -> Token<'_> {
    match body {
        "output" => Token::Output,
        "workflow_id" => Token::WorkflowId,
        _ => {
            if let Some(arg) = body.strip_prefix("input:") {
                if arg.is_empty() {
                    Token::Malformed(body)
                } else if arg.bytes().all(|b| b.is_ascii_digit()) {
                    arg.parse()
                        .map_or(Token::Malformed(body), Token::InputIndex)
                } else {
                    Token::InputTask(arg)
                }
            } else if let Some(arg) = body.strip_prefix("host:") {
                if arg.is_empty() {
                    Token::Malformed(body)
                } else {
                    Token::Host(arg)
                }
            } else {
                Token::Malformed(body)
            }
        }
    }
}

/// Every token in `text`, in order, with its source text.
pub fn scan(text: &str) -> Vec<(&str, Token<'_>)> {
    token_regex()
        .captures_iter(text)
        .filter_map(|caps| {
            let whole = caps.get(0)?.as_str();
            let body = caps.get(1)?.as_str();
            Some((whole, classify(body)))
        })
        .collect()
}

/// What a task needs to have its tokens substituted.
pub struct TokenContext<'a> {
    pub workflow_id: &'a str,
    /// Input index → upstream task name (for `{{input:<task>}}`).
    pub inputs: &'a [String],
    /// Task name → host name.
    pub hosts: &'a BTreeMap<String, String>,
}

/// Replaces every token in `text`; a token that cannot be resolved is an
/// error rather than being left for the container to trip over.
pub fn substitute_tokens(text: &str, ctx: &TokenContext) -> Result<String, SpecError> {
    let mut failure: Option<SpecError> = None;
    let out = token_regex().replace_all(text, |caps: &Captures| {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let body = caps.get(1).map_or("", |m| m.as_str());
        let resolved = match classify(body) {
            Token::Output => Some(OUTPUT_DIR.to_string()),
            Token::WorkflowId => Some(ctx.workflow_id.to_string()),
            Token::InputIndex(index) if index < ctx.inputs.len() => {
                Some(format!("{INPUT_DIR}/{index}"))
            }
            Token::InputTask(task) => ctx
                .inputs
                .iter()
                .position(|name| name == task)
                .map(|index| format!("{INPUT_DIR}/{index}")),
            Token::Host(task) => ctx.hosts.get(task).cloned(),
            Token::InputIndex(_) | Token::Malformed(_) => None,
        };
        resolved.unwrap_or_else(|| {
            if failure.is_none() {
                failure = Some(SpecError::new(
                    SpecErrorKind::Invalid,
                    format!("cannot resolve special token {whole}"),
                ));
            }
            String::new()
        })
    });
    match failure {
        Some(err) => Err(err),
        None => Ok(out.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_all_families() {
        let inputs = vec!["produce".to_string(), "other".to_string()];
        let mut hosts = BTreeMap::new();
        hosts.insert("master".to_string(), "m.svc".to_string());
        let ctx = TokenContext {
            workflow_id: "wf-3",
            inputs: &inputs,
            hosts: &hosts,
        };
        let text = "{{output}} {{ input:1 }} {{input:produce}} {{workflow_id}} {{host:master}} {{ other }}";
        assert_eq!(
            substitute_tokens(text, &ctx).ok().as_deref(),
            Some("/osmo/data/output /osmo/data/input/1 /osmo/data/input/0 wf-3 m.svc {{ other }}")
        );
    }

    #[test]
    fn unknown_tokens_fail() {
        let hosts = BTreeMap::new();
        let ctx = TokenContext {
            workflow_id: "wf-1",
            inputs: &[],
            hosts: &hosts,
        };
        for text in [
            "{{input:0}}",
            "{{input:x}}",
            "{{host:m}}",
            "{{input:}}",
            "{{input:99999999999999999999999}}",
        ] {
            let err = substitute_tokens(text, &ctx).err();
            assert!(err.is_some(), "{text}");
        }
    }
}
