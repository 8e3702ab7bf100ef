//! Unit tests of the parent module.

use super::*;
use gantry_storage::extras::{CheckpointPlan, TaskExtras, TopologyRequirement};
use std::path::PathBuf;

fn input(text: &str) -> SpecInput {
    SpecInput {
        text: text.to_string(),
        ..SpecInput::default()
    }
}

fn prepared(text: &str, plan: Result<WorkflowPlan, SpecError>) -> Prepared {
    Prepared {
        name: "wf".into(),
        rendered: text.into(),
        plan,
        warnings: vec!["duplicate key 'a' at line 3: the last value is used".into()],
        labels: [("team".to_string(), "robotics".to_string())].into(),
        declared_pool: Some("robots".into()),
        extras: WorkflowExtras {
            tasks: [(
                "train".to_string(),
                TaskExtras {
                    checkpoints: vec![CheckpointPlan {
                        path: "/ckpt".into(),
                        url: "s3://b/{{workflow_id}}".into(),
                        frequency_seconds: 60,
                        regex: Some(".*\\.pth".into()),
                    }],
                    topology: vec![TopologyRequirement {
                        key: "rack".into(),
                        ..TopologyRequirement::default()
                    }],
                    ..TaskExtras::default()
                },
            )]
            .into(),
        },
    }
}

fn same(a: &Result<Prepared, SpecError>, b: &Result<Prepared, SpecError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.name == b.name
                && a.rendered == b.rendered
                && a.plan == b.plan
                && a.warnings == b.warnings
                && a.labels == b.labels
                && a.declared_pool == b.declared_pool
                && a.extras == b.extras
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

#[test]
fn requests_round_trip_without_isolation() {
    let input = SpecInput {
        text: "workflow: {{ name }}\u{E000}0\u{E001}\n\0".into(),
        set_variables: vec!["a=1".into()],
        set_string_variables: vec!["b=x".into()],
        set_env: vec!["C=y".into()],
    };
    let limits = SpecLimits {
        max_tasks: 7,
        template_fuel: 99,
        max_exec_timeout_seconds: Some(5),
        render_isolation: Some(RenderIsolation::new(PathBuf::from("/bin/gantry"))),
        ..SpecLimits::default()
    };
    let bytes = encode_request(&input, &limits).unwrap_or_else(|e| panic!("{e}"));
    let request = decode_request(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(request.input, input);
    assert_eq!(
        request.limits,
        SpecLimits {
            render_isolation: None,
            ..limits
        }
    );
}

#[test]
fn replies_round_trip() {
    let invalid = SpecError::invalid("workflow.tasks[0].name", "is required");
    let hello = super::super::prepare(
        &input(include_str!("../../../examples/hello.yaml")),
        &SpecLimits::default(),
    );
    let plan = hello.map(|hello| hello.plan);
    assert!(matches!(plan, Ok(Ok(_))), "{plan:?}");
    for result in [
        Ok(prepared("a: 1", plan.unwrap_or_else(Err))),
        Ok(prepared("a: \"\\u0000\"", Err(invalid.clone()))),
        Err(SpecError::template("template error: boom")),
        Err(SpecError::usage("u")),
        Err(invalid),
    ] {
        let back = decode_reply(&encode_reply(&result));
        assert!(same(&back, &result), "{back:?} != {result:?}");
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [
        &b""[..],
        b"null",
        b"{\"status\":\"prepared\"}",
        b"{\"status\":\"other\",\"text\":\"x\"}",
        b"\xff\xfe",
    ] {
        assert_eq!(
            decode_reply(bytes).err().map(|e| e.kind),
            Some(SpecErrorKind::Template)
        );
        assert!(decode_request(bytes).is_err());
    }
}

#[test]
fn limit_formatting() {
    assert_eq!(mebibytes(512 << 20), "512 MiB");
    assert_eq!(mebibytes(1000), "1000 bytes");
    assert_eq!(seconds(Duration::from_secs(2)), "2 s");
    assert_eq!(seconds(Duration::from_millis(500)), "500 ms");
    assert_eq!(cpu_seconds(Duration::from_millis(500)), 1);
    assert_eq!(cpu_seconds(Duration::from_millis(2500)), 3);
    assert_eq!(cpu_seconds(Duration::from_secs(2)), 2);
    assert_eq!(cpu_seconds(Duration::ZERO), 1);
}

fn run(text: &str, isolation: &RenderIsolation) -> Result<Prepared, SpecError> {
    prepare(
        &input(text),
        &SpecLimits::default(),
        isolation,
        &CancellationToken::new(),
    )
}

#[test]
fn missing_executable_is_a_template_error() {
    let isolation = RenderIsolation::new(PathBuf::from("/nonexistent/gantry"));
    let err = run("{{ 1 }}", &isolation).err();
    assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
}

#[test]
fn a_foreign_child_failing_is_a_template_error() {
    // `sh __render-template` finds no such script in `/`, ignores its
    // stdin and exits 127: classified, not a panic or a hang.
    let isolation = RenderIsolation::new(PathBuf::from("/bin/sh"));
    let err = run("{{ 1 }}", &isolation).err();
    assert_eq!(err.map(|e| e.kind), Some(SpecErrorKind::Template));
}

#[test]
fn worker_logic_matches_in_process() {
    // What the worker does with a request, minus the process.
    let text = "workflow:\n  name: wf\n  tasks: [{name: t, image: i, command: ['{% for i in range(3) %}{{ i }}{% endfor %}']}]\n";
    let bytes =
        encode_request(&input(text), &SpecLimits::default()).unwrap_or_else(|e| panic!("{e}"));
    let request = decode_request(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let reply = encode_reply(&super::super::prepare_here(&request.input, &request.limits));
    let back = decode_reply(&reply).unwrap_or_else(|e| panic!("{e}"));
    assert!(back.rendered.contains("'012'"), "{}", back.rendered);
    assert!(back.plan.is_ok(), "{:?}", back.plan);
}

/// The built gantry binary next to this test binary
/// (`target/debug/deps/gantry-*` → `target/debug/gantry`); these tests
/// need it up to date, so run `cargo build` first.
fn gantry() -> Option<RenderIsolation> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("gantry");
    if path.is_file() {
        Some(RenderIsolation::new(path))
    } else {
        eprintln!("skipped: no gantry binary at {}", path.display());
        None
    }
}

fn isolated_limits(isolation: RenderIsolation) -> SpecLimits {
    SpecLimits {
        render_isolation: Some(isolation),
        ..SpecLimits::default()
    }
}

fn prepare_with(text: &str, limits: &SpecLimits) -> Result<String, SpecError> {
    super::super::prepare(&input(text), limits).map(|prepared| prepared.rendered)
}

#[test]
fn doubling_bomb_hits_the_memory_limit() {
    let Some(isolation) = gantry() else { return };
    // The bomb needs ~0.5 s of CPU (faulting in ~300 MB) alone, but on
    // a loaded 2-core machine running the other tests it can take over
    // the default 2 s, and then fails on time instead; give it room so
    // this checks the memory limit specifically.
    let limits = isolated_limits(RenderIsolation {
        time_max: Duration::from_secs(4),
        ..isolation
    });
    let bomb = format!(
        "workflow:\n  name: wf\n  pool: \"{{% set a = 'a' * 99999999 %}}{}{{{{ a|length }}}}\"\n",
        "{% set a = a ~ a %}".repeat(10)
    );
    let started = Instant::now();
    let err = prepare_with(&bomb, &limits).err();
    let elapsed = started.elapsed();
    assert_eq!(
        err.as_ref().map(|e| e.message.as_str()),
        Some("reading the spec exceeded its memory limit (512 MiB)"),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    eprintln!("bomb rejected in {elapsed:?}");
}

const LOOPS: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";

#[test]
fn long_loops_hit_fuel_or_the_time_limit() {
    let Some(isolation) = gantry() else { return };
    let text = format!("workflow:\n  name: wf\n  pool: \"{LOOPS}\"\n");
    // Default fuel stops it inside the worker, as in-process.
    let err = prepare_with(&text, &isolated_limits(isolation.clone())).err();
    assert_eq!(err.as_ref().map(|e| e.kind), Some(SpecErrorKind::Template));
    assert!(
        err.as_ref()
            .is_some_and(|e| e.message.contains("fuel") || e.message.contains("limit")),
        "{err:?}"
    );
    // Without fuel, the wall clock stops it.
    let isolation = RenderIsolation {
        time_max: Duration::from_millis(500),
        ..isolation
    };
    let unlimited = SpecLimits {
        template_fuel: 1 << 40,
        ..isolated_limits(isolation)
    };
    let started = Instant::now();
    let err = prepare_with(&text, &unlimited).err();
    let elapsed = started.elapsed();
    assert_eq!(
        err.as_ref().map(|e| e.message.as_str()),
        Some("reading the spec exceeded its time limit (500 ms)"),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn a_cancel_kills_the_worker() {
    let Some(isolation) = gantry() else { return };
    let isolation = RenderIsolation {
        time_max: Duration::from_secs(30),
        ..isolation
    };
    let limits = SpecLimits {
        template_fuel: 1 << 40,
        ..SpecLimits::default()
    };
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let text = format!("workflow:\n  name: wf\n  pool: \"{LOOPS}\"\n");
    let err = prepare(&input(&text), &limits, &isolation, &cancel).err();
    let elapsed = started.elapsed();
    let _ = canceller.join();
    assert_eq!(
        err.as_ref().map(|e| e.message.as_str()),
        Some("reading the spec was cancelled: its caller left"),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn isolated_and_in_process_agree() {
    let Some(isolation) = gantry() else { return };
    let isolated = isolated_limits(isolation);
    let in_process = SpecLimits::default();
    // Large enough to be read in the child without any Jinja.
    let large = format!(
        "workflow:\n  name: big\n  tasks:\n  - name: t\n    image: i\n    command: [sh]\n    args: [\"{}\"]\n",
        "x".repeat(2 * super::super::IN_PROCESS_BYTES_MAX)
    );
    let texts = [
        include_str!("../../../examples/templated.yaml"),
        include_str!("../../../examples/hello.yaml"),
        "workflow:\n  name: \"{{ n }}-{{ '{{output}}' }}\"\n  tasks: [{name: t, image: i, command: ['{{output}}', '{{ input:0 }}']}]\ndefault-values: {n: 7}\n",
        "{{ undefined }}",
        "workflow:\n  name: \"{{ 'bad name!' }}\"\n",
        "workflow:\n  name: wf{{ '' }}\n  tasks: [{name: t}]\n",
        &large,
    ];
    for text in texts {
        let want = super::super::prepare(&input(text), &in_process);
        let got = super::super::prepare(&input(text), &isolated);
        assert!(same(&got, &want), "{text}: {got:?} != {want:?}");
    }
}
