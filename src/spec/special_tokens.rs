//! Special tokens (`{{output}}`, `{{input:N}}`, `{{input:<task>}}`,
//! `{{workflow_id}}`, `{{host:<task>}}`): finding them, checking them at
//! submit time, and substituting them at launch time.
//!
//! Invariants: one regex ([`token_regex`]) defines what a token is, so the
//! template stage protects exactly what validation checks and launch
//! substitutes. Text in `{{ ... }}` that is not one of these families is not
//! a token and is left alone. [`substitute_task`] substitutes in the task
//! fields a launch uses (OSMO substitutes in its whole task): image,
//! command, args, environment values, file paths and (not base64) contents,
//! input URLs and regexes, output URLs and regexes; `expand` checks the
//! tokens of exactly those fields at submit time.

use super::error::{SpecError, SpecErrorKind};
use gantry_storage::plan::{InputPlan, TaskPlan};
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

/// `text` with every well-formed token replaced by a value of its kind
/// (the real directories for `{{output}}` and `{{input:…}}`, stand-ins for
/// the workflow ID and hosts): how a field will look once launched, for
/// checks at submit time.
pub fn probe_tokens(text: &str) -> String {
    token_regex()
        .replace_all(text, |caps: &Captures| {
            let whole = caps.get(0).map_or("", |m| m.as_str());
            match classify(caps.get(1).map_or("", |m| m.as_str())) {
                Token::Output => OUTPUT_DIR.to_string(),
                Token::InputIndex(index) => format!("{INPUT_DIR}/{index}"),
                Token::InputTask(_) => format!("{INPUT_DIR}/0"),
                Token::WorkflowId => "workflow-1".to_string(),
                Token::Host(_) => "host".to_string(),
                Token::Malformed(_) => whole.to_string(),
            }
        })
        .into_owned()
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

/// `plan` with the tokens of every launched field substituted (see the
/// module doc); an error names the field (`outputs[0].url: cannot resolve
/// ...`).
pub fn substitute_task(plan: &TaskPlan, ctx: &TokenContext) -> Result<TaskPlan, SpecError> {
    let field = |at: String, text: &str| {
        substitute_tokens(text, ctx).map_err(|error| SpecError {
            path: Some(at),
            ..error
        })
    };
    let optional = |at: String, text: &Option<String>| match text {
        Some(text) => field(at, text).map(Some),
        None => Ok(None),
    };
    let mut out = plan.clone();
    out.image = field("image".into(), &plan.image)?;
    for (index, part) in out.command.iter_mut().enumerate() {
        *part = field(format!("command[{index}]"), part)?;
    }
    for (index, part) in out.args.iter_mut().enumerate() {
        *part = field(format!("args[{index}]"), part)?;
    }
    for (name, value) in out.environment.iter_mut() {
        *value = field(format!("environment.{name}"), value)?;
    }
    for (index, file) in out.files.iter_mut().enumerate() {
        file.path = field(format!("files[{index}].path"), &file.path)?;
        // Base64 contents are opaque bytes.
        if !file.base64 {
            file.contents = field(format!("files[{index}].contents"), &file.contents)?;
        }
    }
    for (index, input) in out.inputs.iter_mut().enumerate() {
        match input {
            InputPlan::Task { regex, .. } => {
                *regex = optional(format!("inputs[{index}].regex"), regex)?;
            }
            InputPlan::Url { url, regex } => {
                *url = field(format!("inputs[{index}].url"), url)?;
                *regex = optional(format!("inputs[{index}].regex"), regex)?;
            }
        }
    }
    for (index, output) in out.outputs.iter_mut().enumerate() {
        output.url = field(format!("outputs[{index}].url"), &output.url)?;
        output.regex = optional(format!("outputs[{index}].regex"), &output.regex)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_storage::plan::{FilePlan, OutputPlan};

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
    fn every_launched_field_is_substituted() {
        let inputs = vec!["up".to_string(), "s3://b/in".to_string()];
        let hosts = BTreeMap::from([("t".to_string(), "localhost".to_string())]);
        let ctx = TokenContext {
            workflow_id: "wf-2",
            inputs: &inputs,
            hosts: &hosts,
        };
        let plan = TaskPlan {
            name: "t".into(),
            lead: true,
            image: "repo/{{workflow_id}}".into(),
            command: vec!["{{output}}".into()],
            args: vec!["{{input:up}}".into()],
            environment: BTreeMap::from([("H".to_string(), "{{host:t}}".to_string())]),
            inputs: vec![
                InputPlan::Task {
                    task: "up".into(),
                    regex: Some(".*{{workflow_id}}".into()),
                },
                InputPlan::Url {
                    url: "s3://b/{{workflow_id}}/in".into(),
                    regex: None,
                },
            ],
            outputs: vec![OutputPlan {
                url: "s3://b/{{ workflow_id }}/out/".into(),
                regex: Some("{{workflow_id}}.*".into()),
            }],
            files: vec![
                FilePlan {
                    path: "/tmp/{{workflow_id}}.sh".into(),
                    contents: "cd {{input:1}}".into(),
                    base64: false,
                },
                FilePlan {
                    path: "/tmp/b".into(),
                    contents: "e3t3b3JrZmxvd19pZH19".into(),
                    base64: true,
                },
            ],
            resource: Default::default(),
            exit_actions: Vec::new(),
            credentials: BTreeMap::new(),
            privileged: false,
            host_network: false,
            volume_mounts: Vec::new(),
        };
        let out = substitute_task(&plan, &ctx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.image, "repo/wf-2");
        assert_eq!(out.command, vec!["/osmo/data/output"]);
        assert_eq!(out.args, vec!["/osmo/data/input/0"]);
        assert_eq!(out.environment["H"], "localhost");
        assert_eq!(
            out.inputs,
            vec![
                InputPlan::Task {
                    task: "up".into(),
                    regex: Some(".*wf-2".into())
                },
                InputPlan::Url {
                    url: "s3://b/wf-2/in".into(),
                    regex: None
                },
            ]
        );
        assert_eq!(out.outputs[0].url, "s3://b/wf-2/out/");
        assert_eq!(out.outputs[0].regex.as_deref(), Some("wf-2.*"));
        assert_eq!(out.files[0].path, "/tmp/wf-2.sh");
        assert_eq!(out.files[0].contents, "cd /osmo/data/input/1");
        assert_eq!(out.files[1], plan.files[1]);

        let mut bad = plan.clone();
        bad.outputs[0].url = "s3://b/{{input:7}}".into();
        let err = substitute_task(&bad, &ctx).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("outputs[0].url: cannot resolve special token {{input:7}}")
        );
    }

    #[test]
    fn probes_look_like_the_launched_text() {
        assert_eq!(
            probe_tokens(
                "{{output}}/a {{input:2}} {{input:t}} {{workflow_id}} {{host:t}} {{input:}}"
            ),
            "/osmo/data/output/a /osmo/data/input/2 /osmo/data/input/0 workflow-1 host {{input:}}"
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
