//! Pipeline tests through [`prepare`]: table-driven rule checks, the
//! reference examples, coercions, templating limits and a no-panic property.

use super::*;
use gantry_storage::extras::CheckpointPlan;
use gantry_storage::plan::{CredentialUse, ExitAction, InputPlan};

fn input(text: &str) -> SpecInput {
    SpecInput {
        text: text.to_string(),
        ..SpecInput::default()
    }
}

fn run(text: &str) -> Result<Prepared, SpecError> {
    prepare(&input(text), &SpecLimits::default())
}

fn plan_of(text: &str) -> WorkflowPlan {
    match run(text) {
        Ok(Prepared { plan: Ok(plan), .. }) => plan,
        Ok(Prepared { plan: Err(err), .. }) => panic!("plan failed: {err}\n{text}"),
        Err(err) => panic!("prepare failed: {err}\n{text}"),
    }
}

/// A flat single-task spec with `extra` appended to the task.
fn task_with(extra: &str) -> String {
    format!(
        "workflow:\n  name: wf\n  tasks:\n  - name: t\n    image: img\n    command: [sh]\n{extra}"
    )
}

/// (spec, expected error path, fragment of the message); every spec has a
/// valid workflow name, so the error must land in `Prepared::plan`.
const INVALID: &[(&str, &str, &str)] = &[
    // structure
    ("workflow: {name: wf}", "workflow", "one of tasks or groups"),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}], groups: [{name: g, tasks: [{name: b, image: i, command: [x]}]}]}",
        "workflow",
        "not both",
    ),
    ("workflow: {name: wf, tasks: []}", "workflow.tasks", "at least one task"),
    ("workflow: {name: wf, groups: [{name: g, tasks: []}]}", "workflow.groups[0].tasks", "at least one task"),
    // version
    ("version: 3\nworkflow: {name: wf, tasks: [{name: a, image: i, command: [x]}]}", "version", "Unsupported workflow version"),
    ("version: true\nworkflow: {name: wf, tasks: [{name: a, image: i, command: [x]}]}", "version", "Unsupported workflow version"),
    ("version: \"v2\"\nworkflow: {name: wf, tasks: [{name: a, image: i, command: [x]}]}", "version", "Unsupported workflow version"),
    // unknown fields and wrong types, with paths
    ("extra: 1\nworkflow: {name: wf, tasks: [{name: a, image: i, command: [x]}]}", "extra", "unknown field `extra`"),
    ("workflow: {name: wf, bogus: 1, tasks: [{name: a, image: i, command: [x]}]}", "workflow.bogus", "unknown field `bogus`"),
    (
        "workflow: {name: wf, groups: [{name: g, tasks: [{name: a, image: i, command: [x]}]}, {name: h, tasks: [{name: b, image: i, command: [x], colour: red}]}]}",
        "workflow.groups[1].tasks[0].colour",
        "unknown field `colour`",
    ),
    (
        "workflow: {name: wf, groups: [{name: g, tasks: [{name: a, image: i, command: [x]}]}, {name: h, tasks: [{name: b, image: i, command: {a: b}}]}]}",
        "workflow.groups[1].tasks[0].command",
        "invalid type",
    ),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], args: [[1]]}]}", "workflow.tasks[0].args[0]", "invalid type"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], args: [true]}]}", "workflow.tasks[0].args[0]", "invalid type"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], privileged: maybe}]}", "workflow.tasks[0].privileged", "invalid type"),
    ("workflow: {name: wf, tasks: [{name: a, command: [x]}]}", "workflow.tasks[0]", "missing field `image`"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{dataset: {name: d}}]}]}", "workflow.tasks[0].inputs[0].dataset", "unknown field `dataset`"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}], resources: {default: {cpu: 1.5}}}", "workflow.resources.default.cpu", "invalid type"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}], resources: {default: {ram: 1}}}", "workflow.resources.default.ram", "unknown field `ram`"),
    // names
    (
        "workflow: {name: wf, tasks: [{name: Train, image: i, command: [x]}, {name: train, image: i, command: [x]}]}",
        "workflow.tasks[1].name",
        "duplicate name",
    ),
    (
        "workflow: {name: wf, tasks: [{name: my_task, image: i, command: [x]}, {name: my-task, image: i, command: [x]}]}",
        "workflow.tasks[1].name",
        "duplicate name",
    ),
    (
        "workflow: {name: wf, groups: [{name: train, tasks: [{name: Train, image: i, command: [x]}]}]}",
        "workflow.groups[0].tasks[0].name",
        "duplicate name",
    ),
    ("workflow: {name: wf, tasks: [{name: 1abc, image: i, command: [x]}]}", "workflow.tasks[0].name", "must start with a letter"),
    ("workflow: {name: wf, tasks: [{name: abc-, image: i, command: [x]}]}", "workflow.tasks[0].name", "must start with a letter"),
    ("workflow: {name: wf, tasks: [{name: 'a b', image: i, command: [x]}]}", "workflow.tasks[0].name", "must start with a letter"),
    ("workflow: {name: wf, groups: [{name: 'g!', tasks: [{name: a, image: i, command: [x]}]}]}", "workflow.groups[0].name", "must start with a letter"),
    (
        "workflow: {name: wf, tasks: [{name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, image: i, command: [x]}]}",
        "workflow.tasks[0].name",
        "longer than 64",
    ),
    ("workflow: {name: wf, tasks: [{name: osmo-ctrl, image: i, command: [x]}]}", "workflow.tasks[0].name", "reserved"),
    ("workflow: {name: wf, tasks: [{name: OSMO_ctrl, image: i, command: [x]}]}", "workflow.tasks[0].name", "reserved"),
    // leads
    (
        "workflow: {name: wf, groups: [{name: g, tasks: [{name: a, image: i, command: [x]}, {name: b, image: i, command: [x]}]}]}",
        "workflow.groups[0].tasks",
        "exactly one lead task, found 0",
    ),
    (
        "workflow: {name: wf, groups: [{name: g, tasks: [{name: a, lead: true, image: i, command: [x]}, {name: b, lead: true, image: i, command: [x]}]}]}",
        "workflow.groups[0].tasks",
        "exactly one lead task, found 2",
    ),
    // command and image
    ("workflow: {name: wf, tasks: [{name: a, image: i}]}", "workflow.tasks[0].command", "command is required"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: []}]}", "workflow.tasks[0].command", "must not be empty"),
    ("workflow: {name: wf, tasks: [{name: a, image: '', command: [x]}]}", "workflow.tasks[0].image", "must not be empty"),
    // resources
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], resource: big}]}", "workflow.tasks[0].resource", "\"big\" is not defined"),
    (
        "workflow: {name: wf, resources: {big: {cpu: 1}}, tasks: [{name: a, image: i, command: [x]}]}",
        "workflow.tasks[0].resource",
        "\"default\" is not defined",
    ),
    ("workflow: {name: wf, resources: {default: {cpu: -1}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.cpu", "must not be negative"),
    ("workflow: {name: wf, resources: {default: {gpu: -8}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.gpu", "must not be negative"),
    ("workflow: {name: wf, resources: {default: {memory: 10GB}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.memory", "invalid quantity"),
    ("workflow: {name: wf, resources: {default: {storage: -1Gi}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.storage", "invalid quantity"),
    ("workflow: {name: wf, resources: {default: {memory: 99999Ei}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.memory", "too large"),
    (
        "workflow: {name: wf, resources: {default: {topology: [{key: k, requirementType: maybe}]}}, tasks: [{name: a, image: i, command: [x]}]}",
        "workflow.resources.default.topology[0].requirementType",
        "required or preferred",
    ),
    // inputs
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{task: ghost}]}]}", "workflow.tasks[0].inputs[0].task", "not defined"),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{task: b}]}, {name: b, image: i, command: [x]}]}",
        "workflow.tasks[0].inputs[0].task",
        "defined later",
    ),
    (
        "workflow: {name: wf, groups: [{name: g, tasks: [{name: a, lead: true, image: i, command: [x]}, {name: b, image: i, command: [x], inputs: [{task: a}]}]}]}",
        "workflow.groups[0].tasks[1].inputs[0].task",
        "same group",
    ),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{task: b, url: s3://x}]}]}", "workflow.tasks[0].inputs[0]", "exactly one of task or url"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{regex: x}]}]}", "workflow.tasks[0].inputs[0]", "exactly one of task or url"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{task: ':b'}]}]}", "workflow.tasks[0].inputs[0].task", "invalid task reference"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{url: s3://b, regex: '('}]}]}", "workflow.tasks[0].inputs[0].regex", "invalid regex"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], outputs: [{url: s3://b, regex: '[a'}]}]}", "workflow.tasks[0].outputs[0].regex", "invalid regex"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], outputs: [{task: b}]}]}", "workflow.tasks[0].outputs[0].task", "unknown field `task`"),
    // exit actions
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], exitActions: {RETRY: '1'}}]}", "workflow.tasks[0].exitActions.RETRY", "unknown exit action"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], exitActions: {FAIL: '1-'}}]}", "workflow.tasks[0].exitActions.FAIL", "invalid exit codes"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], exitActions: {FAIL: '10-1'}}]}", "workflow.tasks[0].exitActions.FAIL", "range start is above its end"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], exitActions: {FAIL: '256'}}]}", "workflow.tasks[0].exitActions.FAIL", "between 0 and 255"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], exitActions: {FAIL: ''}}]}", "workflow.tasks[0].exitActions.FAIL", "invalid exit codes"),
    // durations
    ("workflow: {name: wf, timeout: {exec_timeout: 1h30m}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.timeout.exec_timeout", "invalid duration"),
    ("workflow: {name: wf, timeout: {queue_timeout: 5w}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.timeout.queue_timeout", "invalid duration"),
    ("workflow: {name: wf, timeout: {exec_timeout: 0}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.timeout.exec_timeout", "greater than zero"),
    // checkpoint
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x], checkpoint: [{path: /c, url: s3://b, frequency: often}]}]}",
        "workflow.tasks[0].checkpoint[0].frequency",
        "invalid duration",
    ),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x], checkpoint: [{path: /c, url: s3://b, frequency: 1m, regex: '*'}]}]}",
        "workflow.tasks[0].checkpoint[0].regex",
        "invalid regex",
    ),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], checkpoint: [{path: /c, frequency: 1m}]}]}", "workflow.tasks[0].checkpoint[0]", "missing field `url`"),
    // files
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: rel.txt, contents: x}]}]}", "workflow.tasks[0].files[0].path", "must be absolute"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /osmo/x, contents: x}]}]}", "workflow.tasks[0].files[0].path", "under /osmo"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: //osmo/./x, contents: x}]}]}", "workflow.tasks[0].files[0].path", "under /osmo"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /tmp/../osmo/x, contents: x}]}]}", "workflow.tasks[0].files[0].path", "'..'"),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a/b, contents: x}, {path: /a/b, contents: y}]}]}",
        "workflow.tasks[0].files[1].path",
        "more than once",
    ),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a//b, contents: x}]}]}", "workflow.tasks[0].files[0].path", "empty or '.' segments"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a/b/, contents: x}]}]}", "workflow.tasks[0].files[0].path", "names a directory"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /etc/x.conf, contents: x}]}]}", "workflow.tasks[0].files[0].path", "system directory"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: \"/tmp/a\\0\", contents: x}]}]}", "workflow.tasks[0].files[0].path", "NUL"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [\"a\\0\"]}]}", "workflow.tasks[0].command[0]", "NUL"),
    ("workflow: {name: wf, tasks: [{name: a, image: \"i\\0\", command: [x]}]}", "workflow.tasks[0].image", "NUL"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], args: [y, \"\\0\"]}]}", "workflow.tasks[0].args[1]", "NUL"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], environment: {\"A=1\": x}}]}", "workflow.tasks[0].environment.A=1", "'='"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], environment: {\"\": x}}]}", "workflow.tasks[0].environment", "must not be empty"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: {\"B=\": k}}}]}", "workflow.tasks[0].credentials.c.B=", "'='"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a, contents: '!!!', base64: true}]}]}", "workflow.tasks[0].files[0].contents", "base64"),
    // The CLI reads `localpath` into `contents`; the server cannot.
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a, localpath: ./a}]}]}", "workflow.tasks[0].files[0].localpath", "cannot be read by the server"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /a}]}]}", "workflow.tasks[0].files[0].contents", "contents is required"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: '/{{output}}/x', contents: c}]}]}", "workflow.tasks[0].files[0].path", "must not be under /osmo once its special tokens are substituted"),
    // Tokens are checked in every field they are substituted in.
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], outputs: [{url: 's3://b/{{input:0}}'}]}]}", "workflow.tasks[0].outputs[0].url", "the task has 0 input(s)"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], outputs: [{url: s3://b, regex: '{{host:z}}'}]}]}", "workflow.tasks[0].outputs[0].regex", "not in the same group"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], inputs: [{url: 's3://b/{{input:}}'}]}]}", "workflow.tasks[0].inputs[0].url", "malformed special token"),
    ("workflow: {name: wf, tasks: [{name: a, image: 'i:{{input:t}}', command: [x]}]}", "workflow.tasks[0].image", "not an input of this task"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: '/tmp/x{{input:3}}', contents: c}]}]}", "workflow.tasks[0].files[0].path", "refers to input 3"),
    // credentials, mounts, labels
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: rel}}]}", "workflow.tasks[0].credentials.c", "absolute"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: [1]}}]}", "workflow.tasks[0].credentials.c", "mount directory"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: /}}]}", "workflow.tasks[0].credentials.c", "not the root"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: /a/../etc}}]}", "workflow.tasks[0].credentials.c", "'..'"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: /osmo/x}}]}", "workflow.tasks[0].credentials.c", "/osmo"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], credentials: {c: \"/a\\0\"}}]}", "workflow.tasks[0].credentials.c", "NUL"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], volumeMounts: ['/a:/b:/c']}]}", "workflow.tasks[0].volumeMounts[0]", "invalid volume mount"),
    ("workflow: {name: wf, labels: {'bad key!': v}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.labels.bad key!", "invalid label key"),
    // OSMO fields Gantry refuses until it can honour them: never
    // accepted and ignored.
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], checkpoint: [{path: '', url: s3://b, frequency: 1m}]}]}", "workflow.tasks[0].checkpoint[0].path", "must name a directory"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], checkpoint: [{path: /c, url: 's3://b/{{input:0}}', frequency: 1m}]}]}", "workflow.tasks[0].checkpoint[0].url", "refers to input 0"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], kpis: [{index: 0, path: /k}]}]}", "workflow.tasks[0].kpis", "`kpis` is not supported yet"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], cacheSize: 50%}]}", "workflow.tasks[0].cacheSize", "USER_CACHE"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], downloadType: mount}]}", "workflow.tasks[0].downloadType", "the only one is \"download\""),
    ("workflow: {name: wf, resources: {default: {nodesExcluded: [n1]}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.nodesExcluded", "USER_EXCLUDED_NODES"),
    ("workflow: {name: wf, resources: {default: {topology: [{key: rack}, {key: rack, group: b}]}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.topology[1].key", "topology key \"rack\" is given twice"),
    ("workflow: {name: wf, resources: {default: {topology: [{key: rack, group: ' '}]}}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.resources.default.topology[0].group", "must not be empty"),
    ("workflow: {name: wf, labels: {k: ''}, tasks: [{name: a, image: i, command: [x]}]}", "workflow.labels.k", "invalid label value"),
    // special tokens
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], args: ['{{input:0}}']}]}", "workflow.tasks[0].args[0]", "refers to input 0"),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}, {name: b, image: i, command: ['{{input:1}}'], inputs: [{task: a}]}]}",
        "workflow.tasks[1].command[0]",
        "refers to input 1",
    ),
    (
        "workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}, {name: b, image: i, command: [x], environment: {D: '{{input:c}}'}, inputs: [{task: a}]}]}",
        "workflow.tasks[1].environment.D",
        "not an input",
    ),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], args: ['{{host:b}}']}, {name: b, image: i, command: [x]}]}", "workflow.tasks[0].args[0]", "not in the same group"),
    ("workflow: {name: wf, tasks: [{name: a, image: i, command: [x], files: [{path: /f, contents: 'x {{ input: }}'}]}]}", "workflow.tasks[0].files[0].contents", "malformed special token"),
];

#[test]
fn invalid_specs_are_rejected_with_path_and_reason() {
    for (text, path, fragment) in INVALID {
        let prepared = match run(text) {
            Ok(prepared) => prepared,
            Err(err) => panic!("outer error {err:?} for\n{text}"),
        };
        assert_eq!(prepared.name, "wf", "{text}");
        let err = match prepared.plan {
            Err(err) => err,
            Ok(_) => panic!("accepted:\n{text}"),
        };
        assert_eq!(err.kind, SpecErrorKind::Invalid, "{text}");
        assert_eq!(err.path.as_deref().unwrap_or(""), *path, "{text}\n{err}");
        assert!(
            err.message.contains(fragment),
            "{text}\nmessage: {}",
            err.message
        );
    }
}

/// Failures that leave nothing to store: (spec, kind, fragment).
const UNSTORABLE: &[(&str, SpecErrorKind, &str)] = &[
    (
        "workflow: [unclosed",
        SpecErrorKind::NotYaml,
        "not valid YAML",
    ),
    // A repeated key is no longer a YAML error (OSMO: the last value wins).
    ("a: 1\na: 2\n", SpecErrorKind::Invalid, "is required"),
    ("just text", SpecErrorKind::Invalid, "mapping"),
    ("", SpecErrorKind::Invalid, "mapping"),
    ("version: 2", SpecErrorKind::Invalid, "is required"),
    (
        "workflow: {tasks: []}",
        SpecErrorKind::Invalid,
        "is required",
    ),
    (
        "workflow: {name: 5}",
        SpecErrorKind::Invalid,
        "must be a string",
    ),
    (
        "workflow: {name: 'bad name'}",
        SpecErrorKind::Invalid,
        "must start with a letter",
    ),
    (
        "workflow: {name: '{{ missing }}'}",
        SpecErrorKind::Template,
        "undefined",
    ),
    (
        "workflow: {name: '{% if %}'}",
        SpecErrorKind::Template,
        "syntax error",
    ),
    (
        "default-values: [1]\nworkflow: {name: x}",
        SpecErrorKind::Template,
        "mapping",
    ),
    (
        "default-values: {a: [}\nworkflow: {name: x}",
        SpecErrorKind::NotYaml,
        "",
    ),
    (
        "default-values: {a: 1}\nworkflow: {name: x}\ndefault-values: {b: 1}",
        SpecErrorKind::Template,
        "more than once",
    ),
    (
        "workflow: {name: \u{E000}}",
        SpecErrorKind::Template,
        "reserved",
    ),
];

#[test]
fn unstorable_specs_fail_outright() {
    for (text, kind, fragment) in UNSTORABLE {
        match run(text) {
            Err(err) => {
                assert_eq!(err.kind, *kind, "{text}: {err}");
                assert!(err.to_string().contains(fragment), "{text}: {err}");
            }
            Ok(prepared) => panic!("accepted {text:?}: {:?}", prepared.plan),
        }
    }
}

#[test]
fn long_workflow_name_is_unstorable() {
    let text = format!("workflow: {{name: {}}}", "a".repeat(65));
    let err = run(&text).err();
    assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Invalid));
}

const EXAMPLE_A: &str = r#"
workflow:
  name: serial
  resources: {default: {cpu: 1, memory: 1Gi, storage: 1Gi}}
  tasks:
  - name: produce
    image: ubuntu:22.04
    command: [sh, -c]
    args: ["echo hi > {{output}}/a.txt"]
  - name: consume
    image: ubuntu:22.04
    command: [sh, -c]
    args: ["cat {{input:0}}/a.txt"]
    inputs: [{task: produce}]
    outputs: [{url: s3://bucket/out/}]
"#;

const EXAMPLE_B: &str = r#"
workflow:
  name: "{{name}}"
  resources: {default: {gpu: 8, cpu: 32, memory: 200Gi, storage: 100Gi}}
  timeout: {exec_timeout: 8h, queue_timeout: 2h}
  groups:
  - name: training
    ignoreNonleadStatus: false
    tasks:
    - name: master
      lead: true
      image: nvcr.io/nvidia/pytorch:24.08-py3
      command: [torchrun]
      args: ["--nnodes={{n}}", "--master_addr={{host:master}}", "train.py"]
    {% for i in range(1, n) %}
    - name: worker-{{i}}
      image: nvcr.io/nvidia/pytorch:24.08-py3
      command: [torchrun]
      args: ["--nnodes={{n}}", "--master_addr={{host:master}}", "train.py"]
      exitActions: {RESCHEDULE: "1-255"}
    {% endfor %}
default-values: {name: ddp, n: 2}
"#;

const EXAMPLE_C: &str = r#"
workflow:
  name: ckpt
  tasks:
  - name: train
    image: python:3.11
    command: [python, /tmp/train.py]
    files: [{path: /tmp/train.py, contents: "print('hi')"}]
    credentials:
      wandb: {WANDB_API_KEY: key}      # env var from generic credential
      aws_keys: /root/.aws              # each key mounted as a file
    checkpoint: [{path: /ckpt, url: s3://b/ckpt, frequency: 30m, regex: '.*\.pth'}]
"#;

const EXAMPLE_D: &str = r#"
workflow:
  name: hetero
  resources:
    default: {cpu: 4, memory: 16Gi, storage: 10Gi, platform: ovx-l40}
    big: {gpu: 8, platform: gb200, topology: [{key: gpu-clique}]}
  tasks:
  - {name: sim, image: isaac-sim, command: [run.sh]}
  - {name: train, image: pytorch, command: [train.sh], resource: big, inputs: [{task: sim}]}
"#;

#[test]
fn example_a_serial_pipeline() {
    let plan = plan_of(EXAMPLE_A);
    let names: Vec<_> = plan.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["produce-group", "consume-group"]);
    assert!(plan
        .groups
        .iter()
        .all(|g| g.tasks.len() == 1 && g.tasks[0].lead));
    assert!(plan.groups[0].upstream.is_empty());
    assert_eq!(plan.groups[1].upstream, ["produce-group"]);
    let consume = &plan.groups[1].tasks[0];
    assert_eq!(consume.args, ["cat {{input:0}}/a.txt"]);
    assert_eq!(
        consume.inputs,
        [InputPlan::Task {
            task: "produce".into(),
            regex: None
        }]
    );
    assert_eq!(consume.resource.memory_bytes, Some(1 << 30));
    assert_eq!(consume.resource.cpu, Some(1));
    assert_eq!(plan.groups[0].tasks[0].args, ["echo hi > {{output}}/a.txt"]);
}

#[test]
fn example_b_templated_gang() {
    let prepared = run(EXAMPLE_B).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prepared.name, "ddp");
    assert!(!prepared.rendered.contains("default-values"));
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.exec_timeout_seconds, Some(8 * 3600));
    assert_eq!(plan.queue_timeout_seconds, Some(2 * 3600));
    let group = &plan.groups[0];
    assert!(!group.ignore_nonlead_status);
    assert!(group.barrier);
    let names: Vec<_> = group.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["master", "worker-1"]);
    assert!(group.tasks[0].lead && !group.tasks[1].lead);
    assert_eq!(group.tasks[1].args[0], "--nnodes=2");
    assert_eq!(group.tasks[1].args[1], "--master_addr={{host:master}}");
    assert_eq!(
        group.tasks[1].exit_actions[0].action,
        ExitAction::Reschedule
    );
    assert_eq!(group.tasks[1].exit_actions[0].codes, [(1, 255)]);
    assert_eq!(group.tasks[0].resource.memory_bytes, Some(200 << 30));
    assert_eq!(group.tasks[0].resource.gpu, Some(8));
}

#[test]
fn example_b_with_set_overrides() {
    let prepared = prepare(
        &SpecInput {
            text: EXAMPLE_B.into(),
            set_variables: vec!["n=4".into()],
            set_string_variables: vec!["name=big-run".into()],
            set_env: vec!["NCCL_DEBUG=INFO".into()],
        },
        &SpecLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prepared.name, "big-run");
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.task_count(), 4);
    assert!(plan.groups[0].tasks.iter().all(|t| t
        .environment
        .get("NCCL_DEBUG")
        .map(String::as_str)
        == Some("INFO")));
}

/// Example C's credentials, checkpoint and files are planned (whether the
/// credentials exist is the submit's check, against its user's).
#[test]
fn example_c_credentials_checkpoint_and_files_are_planned() {
    let prepared = run(EXAMPLE_C).expect("prepared");
    let plan = prepared.plan.expect("planned");
    let task = &plan.groups[0].tasks[0];
    assert_eq!(task.files[0].path, "/tmp/train.py");
    assert!(!task.files[0].base64);
    assert_eq!(
        task.credentials["wandb"],
        CredentialUse::Env([("WANDB_API_KEY".to_string(), "key".to_string())].into())
    );
    assert_eq!(
        task.credentials["aws_keys"],
        CredentialUse::Mount("/root/.aws".into())
    );
    assert_eq!(task.resource.name, "default");
    assert_eq!(
        prepared.extras.tasks["train"].checkpoints,
        vec![CheckpointPlan {
            path: "/ckpt".into(),
            url: "s3://b/ckpt".into(),
            frequency_seconds: 30 * 60,
            regex: Some(r".*\.pth".into()),
        }]
    );
}

/// OSMO reads a relative checkpoint path from the root; a frequency may be
/// a number of seconds; a task without checkpoints has no extras.
#[test]
fn checkpoint_paths_and_frequencies_as_osmo_reads_them() {
    let prepared = run(&task_with(
        "    checkpoint:\n    - {path: experiments/checkpoints, url: 's3://b/{{workflow_id}}', frequency: 10}\n",
    ))
    .expect("prepared");
    assert!(prepared.plan.is_ok(), "{:?}", prepared.plan);
    let checkpoint = &prepared.extras.tasks["t"].checkpoints[0];
    assert_eq!(checkpoint.path, "/experiments/checkpoints");
    assert_eq!(checkpoint.url, "s3://b/{{workflow_id}}");
    assert_eq!(checkpoint.frequency_seconds, 10);
    assert_eq!(checkpoint.regex, None);
    assert!(run(&task_with("")).expect("prepared").extras.is_empty());
    let many: String = (0..=validate::CHECKPOINTS_PER_TASK_MAX)
        .map(|n| format!("    - {{path: /c{n}, url: s3://b/{n}, frequency: 1s}}\n"))
        .collect();
    match run(&task_with(&format!("    checkpoint:\n{many}"))) {
        Ok(Prepared { plan: Err(err), .. }) => {
            assert_eq!(err.path.as_deref(), Some("workflow.tasks[0].checkpoint"));
            assert!(err.message.contains("at most 16 per task"), "{err}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn example_d_platforms() {
    // The resource's topology travels in the train task's extras, in the
    // spec's order, `required` and in group `default` unless it says;
    // whether the pool has the key is the submit's check.
    let prepared = run(EXAMPLE_D).expect("prepared");
    assert!(prepared.plan.is_ok(), "{:?}", prepared.plan);
    let train = &prepared.extras.tasks["train"];
    assert_eq!(train.topology.len(), 1);
    assert_eq!(
        (
            train.topology[0].key.as_str(),
            train.topology[0].group.as_str(),
            train.topology[0].required
        ),
        ("gpu-clique", "default", true)
    );
    assert!(!prepared.extras.tasks.contains_key("sim"));
    let preferred = run(&EXAMPLE_D.replace(
        "{key: gpu-clique}",
        "{key: zone, group: g1, requirementType: preferred}, {key: gpu-clique}",
    ))
    .expect("prepared");
    let keys: Vec<(&str, &str, bool)> = preferred.extras.tasks["train"]
        .topology
        .iter()
        .map(|r| (r.key.as_str(), r.group.as_str(), r.required))
        .collect();
    assert_eq!(
        keys,
        [("zone", "g1", false), ("gpu-clique", "default", true)]
    );
    let plan = plan_of(&EXAMPLE_D.replace(", topology: [{key: gpu-clique}]", ""));
    assert_eq!(
        plan.groups[1].tasks[0].resource.platform.as_deref(),
        Some("gb200")
    );
    assert_eq!(plan.groups[1].tasks[0].resource.gpu, Some(8));
    assert_eq!(
        plan.groups[0].tasks[0].resource.storage_bytes,
        Some(10 << 30)
    );
    assert_eq!(plan.groups[1].upstream, ["sim-group"]);
}

#[test]
fn versions_accepted() {
    for version in ["2", "\"2\"", "2.0", "null"] {
        let text = format!("version: {version}\n{}", task_with(""));
        plan_of(&text);
    }
}

#[test]
fn coercions() {
    let plan = plan_of(&task_with(
        "    args: [1, 2.5, 3.0, -4, text]\n    environment: {A: true, B: 7, C: 1.5, D: 'x', E: false}\n    exitActions: {COMPLETE: 0, FAIL: '1,3-4'}\n",
    ));
    let task = &plan.groups[0].tasks[0];
    assert_eq!(task.args, ["1", "2.5", "3.0", "-4", "text"]);
    let env: Vec<_> = task
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(env, ["A=true", "B=7", "C=1.5", "D=x", "E=false"]);
    assert_eq!(task.exit_actions[0].action, ExitAction::Complete);
    assert_eq!(task.exit_actions[0].codes, [(0, 0)]);
    assert_eq!(task.exit_actions[1].codes, [(1, 1), (3, 4)]);
    assert_eq!(task.exit_action_for(4), Some(ExitAction::Fail));
}

#[test]
fn defaults_and_accepted_extras() {
    let plan = plan_of(&task_with(
        "    lead: false\n    privileged: true\n    hostNetwork: true\n    volumeMounts: [/data, /a:/b]\n    downloadType: download\n    inputs: [{url: s3://b/in, regex: '.*'}, {task: 'other-1:prep'}]\n",
    ));
    let group = &plan.groups[0];
    assert_eq!(group.name, "t-group");
    assert!(group.barrier && group.ignore_nonlead_status);
    assert!(
        group.upstream.is_empty(),
        "cross-workflow inputs are not upstream"
    );
    let task = &group.tasks[0];
    assert!(task.lead, "a lone task leads its group");
    assert!(task.privileged && task.host_network);
    assert_eq!(task.volume_mounts, ["/data", "/a:/b"]);
    assert_eq!(task.resource.name, "default");
    assert_eq!(task.resource.cpu, None);
    assert_eq!(plan.exec_timeout_seconds, None);
}

#[test]
fn upstream_is_derived_from_inputs_across_groups() {
    let plan = plan_of(
        "workflow:\n  name: wf\n  groups:\n  - {name: a, tasks: [{name: a1, image: i, command: [x]}]}\n  - {name: b, tasks: [{name: b1, image: i, command: [x]}]}\n  - name: c\n    barrier: false\n    tasks:\n    - {name: c1, lead: true, image: i, command: [x], inputs: [{task: b1}, {task: a1}], args: ['{{input:a1}}', '{{host:c2}}', '{{ workflow_id }}']}\n    - {name: c2, image: i, command: [x], inputs: [{task: a1}]}\n",
    );
    assert_eq!(plan.groups[2].upstream, ["a", "b"]);
    assert!(!plan.groups[2].barrier);
}

#[test]
fn timeouts_are_clamped_and_accept_seconds() {
    let limits = SpecLimits {
        max_exec_timeout_seconds: Some(3600),
        ..SpecLimits::default()
    };
    let text = "workflow: {name: wf, timeout: {exec_timeout: 2d, queue_timeout: 90}, tasks: [{name: a, image: i, command: [x]}]}";
    let plan = prepare(&input(text), &limits)
        .ok()
        .and_then(|p| p.plan.ok());
    let plan = plan.unwrap_or_else(|| panic!("rejected"));
    assert_eq!(plan.exec_timeout_seconds, Some(3600));
    assert_eq!(plan.queue_timeout_seconds, Some(90));
}

#[test]
fn max_tasks_is_enforced() {
    let limits = SpecLimits {
        max_tasks: 1,
        ..SpecLimits::default()
    };
    let text = "workflow: {name: wf, tasks: [{name: a, image: i, command: [x]}, {name: b, image: i, command: [x]}]}";
    let err = prepare(&input(text), &limits)
        .ok()
        .and_then(|p| p.plan.err());
    let err = err.unwrap_or_else(|| panic!("accepted"));
    assert_eq!(err.path.as_deref(), Some("workflow.tasks"));
    assert!(err.message.contains("exceed the limit of 1"));
}

#[test]
fn set_variables_are_typed_like_yaml() {
    let text = "workflow:\n  name: wf\n  tasks:\n  - name: t\n    image: i\n    command: [x]\n    args: ['{{ n + 1 }}', '{{ f * 2 }}', '{{ 1 if b is sameas true else 0 }}', '{{ s ~ \"!\" }}', '{{ q }}']\ndefault-values:\n  n: 0\n";
    let prepared = prepare(
        &SpecInput {
            text: text.into(),
            set_variables: vec![
                "n=41".into(),
                "f=1.5".into(),
                "b=true".into(),
                "s=hello world".into(),
            ],
            set_string_variables: vec!["q=007".into()],
            set_env: vec![],
        },
        &SpecLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        plan.groups[0].tasks[0].args,
        ["42", "3.0", "1", "hello world!", "007"]
    );
}

#[test]
fn bad_set_items_are_usage_errors() {
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&["novalue"], &[], &[]),
        (&["=1"], &[], &[]),
        (&["a=1", "a=2"], &[], &[]),
        (&["a=1"], &["a=2"], &[]),
        (&[], &["b=1", "b=1"], &[]),
        (&[], &[], &["NOEQUALS"]),
        (&[], &[], &["A=1", "A=2"]),
    ];
    for (set, strings, env) in cases {
        let result = prepare(
            &SpecInput {
                text: task_with(""),
                set_variables: set.iter().map(|s| s.to_string()).collect(),
                set_string_variables: strings.iter().map(|s| s.to_string()).collect(),
                set_env: env.iter().map(|s| s.to_string()).collect(),
            },
            &SpecLimits::default(),
        );
        assert_eq!(
            result.err().map(|e| e.kind),
            Some(SpecErrorKind::Usage),
            "{set:?} {strings:?} {env:?}"
        );
    }
}

#[test]
fn tokens_survive_jinja() {
    let text = "workflow:\n  name: wf\n  tasks:\n  - name: a\n    image: i\n    command: [x]\n  - name: t\n    image: i\n    inputs: [{task: a}]\n    command: ['{{ output }}', '{{input:0}}', '{{input:a}}', '{{workflow_id}}', '{{ host:t }}']\n    environment:\n      P: \"{{ '{{output}}' }}\"\n";
    let prepared = run(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(prepared.rendered.contains(
        "'{{ output }}', '{{input:0}}', '{{input:a}}', '{{workflow_id}}', '{{ host:t }}'"
    ));
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    let task = &plan.groups[1].tasks[0];
    assert_eq!(
        task.command,
        [
            "{{ output }}",
            "{{input:0}}",
            "{{input:a}}",
            "{{workflow_id}}",
            "{{ host:t }}"
        ]
    );
    assert_eq!(
        task.environment.get("P").map(String::as_str),
        Some("{{output}}")
    );
}

#[test]
fn template_bombs_and_escapes_fail_as_template_errors() {
    let bombs = [
        "{% for i in range(100000000) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
        "{{ 'a' * 1000000000 }}",
        "{{ 'a' * 99999999 }}",
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% include 'x' %}",
        "{{ undefined_var }}",
    ];
    for bomb in bombs {
        let text = format!("workflow:\n  name: wf\n  pool: \"{bomb}\"\n");
        let err = run(&text).err();
        assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template), "{bomb}");
    }
}

#[test]
fn yaml_alias_bomb_is_rejected() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    text.push_str("workflow: {name: wf, pool: *a11}\n");
    let result = run(&text);
    assert!(
        matches!(&result, Err(e) if e.kind == SpecErrorKind::NotYaml),
        "{:?}",
        result.as_ref().map(|p| p.plan.is_ok())
    );
}

#[test]
fn output_cap_is_configurable() {
    let limits = SpecLimits {
        template_output_bytes: 64,
        ..SpecLimits::default()
    };
    let err = prepare(&input(&task_with("")), &limits).err();
    assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
}

#[test]
fn display_includes_path() {
    let err = SpecError::invalid("workflow.tasks[0].command", "command is required");
    assert_eq!(
        err.to_string(),
        "workflow.tasks[0].command: command is required"
    );
    assert_eq!(SpecError::usage("x").to_string(), "x");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn never_panics(text: &str) {
        let limits = SpecLimits {
            template_fuel: 20_000,
            ..SpecLimits::default()
        };
        let _ = prepare(&input(text), &limits);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text(text in ".{0,400}") {
            never_panics(&text);
        }

        #[test]
        fn mutated_examples(
            which in 0usize..4,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[ -~\n]{0,6}"), 1..6),
        ) {
            let mut text = [EXAMPLE_A, EXAMPLE_B, EXAMPLE_C, EXAMPLE_D][which].to_string();
            for (at, op, piece) in edits {
                let chars: Vec<char> = text.chars().collect();
                let pos = if chars.is_empty() { 0 } else { at.index(chars.len()) };
                let (head, tail) = chars.split_at(pos);
                let head: String = head.iter().collect();
                let tail: String = tail.iter().collect();
                text = match op {
                    0 => format!("{head}{piece}{tail}"),
                    1 => format!("{head}{}", tail.chars().skip(piece.len().max(1)).collect::<String>()),
                    _ => format!("{head}{piece}{}", tail.chars().skip(piece.len()).collect::<String>()),
                };
            }
            never_panics(&text);
        }
    }
}

#[test]
fn plain_specs_skip_rendering() {
    // An executable that cannot start: any render attempt fails, so
    // success proves the render (and the process spawn) was skipped.
    let limits = SpecLimits {
        render_isolation: Some(RenderIsolation::new("/nonexistent/gantry".into())),
        ..SpecLimits::default()
    };
    let plain = task_with("    args: ['{{output}}', '{{ input:t }}', '{ {x} }']\n# }} %} #} { {\n");
    let prepared = prepare(&input(&plain), &limits).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prepared.rendered, plain);
    for templated in [
        task_with("    args: ['{{ 1 }}']"),
        task_with("    args: ['{% if true %}x{% endif %}']"),
        task_with("# {# comment #}"),
    ] {
        let err = prepare(&input(&templated), &limits).err();
        assert_eq!(
            err.map(|e| e.kind),
            Some(SpecErrorKind::Template),
            "{templated}"
        );
    }
}

#[test]
fn skipping_the_render_changes_nothing() {
    // Texts without Jinja openers come out of minijinja unchanged, which is
    // what makes the fast path sound; the output cap still applies.
    let vars = serde_yaml_ng::Mapping::new();
    let limits = SpecLimits::default().render_limits();
    for text in [
        "",
        "a: b\n",
        "}} %} #} { { {x}\n\n",
        "{\n{\n%}",
        "x: '{ {'\ny: \"}}{\"\n",
        "tail without newline",
        "\u{E000}0\u{E001} {\u{E000}1\u{E001}}",
    ] {
        assert!(!jinja::has_jinja(text), "{text:?}");
        assert_eq!(
            jinja::render_protected(text, &vars, limits, defaults::LineMap::default())
                .ok()
                .as_deref(),
            Some(text)
        );
    }
    let small = SpecLimits {
        template_output_bytes: 10,
        ..SpecLimits::default()
    };
    let err = prepare(&input(&task_with("")), &small).err();
    assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
}

#[test]
fn repeated_keys_keep_the_last_value_with_a_warning() {
    // As the cookbook's github.yaml: a file entry repeats `path`.
    let text = "\
default-values:
  repo: r1
  repo: r2
workflow:
  name: wf
  tasks:
  - name: t
    image: img
    image: ubuntu
    command: [sh, -c, 'echo {{repo}}']
    files:
    - path: /tmp/a
      contents: x
      path: /tmp/b
";
    let prepared = run(text).unwrap_or_else(|e| panic!("{e}"));
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    let task = &plan.groups[0].tasks[0];
    assert_eq!(task.image, "ubuntu");
    assert_eq!(task.command, vec!["sh", "-c", "echo r2"]);
    assert_eq!(task.files[0].path, "/tmp/b");
    // Lines are the file's: the Jinja left these lines in place, and the
    // cut `default-values` block is counted back in.
    assert_eq!(
        prepared.warnings,
        vec![
            "duplicate key 'repo' in default-values at line 3: the last value is used",
            "duplicate key 'image' in workflow.tasks[0] at line 9: the last value is used",
            "duplicate key 'path' in workflow.tasks[0].files[0] at line 14: the last value is used",
        ]
    );
}

#[test]
fn repeated_keys_made_by_jinja_name_the_rendered_line() {
    let text = "\
workflow:
  name: wf
  tasks:
  - name: t
    image: img
{% for i in range(2) %}
    command: [echo, '{{ i }}']
{% endfor %}
";
    let prepared = run(text).unwrap_or_else(|e| panic!("{e}"));
    let plan = prepared.plan.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.groups[0].tasks[0].command, vec!["echo", "1"]);
    assert_eq!(
        prepared.warnings,
        vec![
            "duplicate key 'command' in workflow.tasks[0] at line 9 of the rendered spec: the last value is used"
        ]
    );
    // A spec without repeats has no warnings.
    assert!(run(&task_with(""))
        .map(|p| p.warnings.is_empty())
        .unwrap_or(false));
}

#[test]
fn template_errors_name_the_variable_and_the_users_line() {
    let text = "default-values:\n  a: 1\nworkflow:\n  name: wf\n  pool: '{{ foo }}'\n";
    let err = run(text).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("template error: undefined variable 'foo' (line 5)")
    );
}

#[test]
fn literal_templates_render_to_themselves() {
    let plain = task_with("    args: ['{{output}}', '{{ input:t }}']\n");
    assert_eq!(literal(&plain), plain);
    for text in [
        task_with("    args: ['echo ${#A[@]}', '{{ x }}', '{% if %}', '{{output}}']\n"),
        task_with("    args: ['{%- raw %}']\n"),
    ] {
        let wrapped = literal(&text);
        assert_ne!(wrapped, text);
        let prepared = run(&wrapped).unwrap_or_else(|e| panic!("{e}\n{wrapped}"));
        assert_eq!(prepared.rendered, text);
    }
    // A raw block cannot hold its own end: left as is.
    let ends = task_with("    args: ['{% endraw %}']\n");
    assert_eq!(literal(&ends), ends);
}
