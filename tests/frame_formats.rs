//! Every kind of operator frame, as it travels, decodes forever, in both
//! frame formats; and format 2 lets operators and servers one version
//! apart talk.
//!
//! `testdata/frames/NN-name.vF.bin` holds one frame body (without its
//! length prefix) in format F, written once and never rewritten. The test
//! decodes each and encodes it again to the very same bytes, so a change
//! that would misread frames of a running peer (a field added without a
//! default, a variant renamed or reordered) fails here; and it checks that
//! every sample has both fixtures, so a new kind of frame cannot ship
//! without them. `GANTRY_BLESS=1` writes the fixtures that are missing.

use gantry::data::{DataInput, DataOutput, DataStore, TaskData};
use gantry::protocol::wire::{decode_frame, encode_frame_into, Down, FrameFormat, Up};
use gantry::protocol::{
    CheckpointPlan, FromOperator, GroupLaunch, GroupMeta, LaunchFile, LaunchInput, LaunchResources,
    LaunchScheduler, LogLine, LogStream, NodeInventory, SessionKind, TaskExtras, TaskLaunch,
    TaskPlacement, ToOperator,
};
use gantry_storage::{Priority, SchedulerType, TaskDataTimes, TaskKey, TaskStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/frames")
}

fn key() -> TaskKey {
    TaskKey {
        workflow_id: "train-1".into(),
        task: "worker".into(),
        retry_id: 1,
    }
}

fn node() -> NodeInventory {
    NodeInventory {
        name: "gpu-node-1".into(),
        cpu_millis: 64_000,
        memory_bytes: 512 << 30,
        ephemeral_storage_bytes: 1 << 40,
        gpu_count: 8,
        gpu_model: "H100".into(),
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        taints: Vec::new(),
        conditions: vec!["Ready".into()],
    }
}

/// A launch; `json_values`: with tolerations and pod templates, which are
/// JSON values that only format 2 carries (format 1's bincode cannot
/// decode a self-describing value).
fn launch(json_values: bool) -> GroupLaunch {
    let json = |value: serde_json::Value| if json_values { vec![value] } else { Vec::new() };
    let task = TaskLaunch {
        key: key(),
        group: "training".into(),
        lead: true,
        image: "nvcr.io/nvidia/pytorch:24.01".into(),
        command: vec!["torchrun".into()],
        args: vec!["train.py".into()],
        environment: BTreeMap::from([("SEED".into(), "7".into())]),
        files: vec![LaunchFile {
            path: "/tmp/config.yaml".into(),
            contents: b"lr: 0.1\n".to_vec(),
        }],
        inputs: vec![
            LaunchInput::Task {
                workflow_id: "train-1".into(),
                task: "prepare".into(),
                regex: None,
            },
            LaunchInput::Url {
                url: "s3://bucket/data".into(),
                regex: Some(".*\\.tar".into()),
            },
        ],
        placement: TaskPlacement {
            task_uuid: "5b0c".into(),
            resources: LaunchResources {
                cpu: Some(8),
                gpu: Some(1),
                memory_bytes: Some(32 << 30),
                storage_bytes: None,
            },
            platform: Some("dgx".into()),
            node_selector: BTreeMap::from([("gpu".into(), "h100".into())]),
            tolerations: json(serde_json::json!({"key": "nvidia.com/gpu", "operator": "Exists"})),
            pod_templates: json(serde_json::json!({"spec": {"hostIPC": true}})),
        },
        data: Some(TaskData {
            user_stores: Vec::new(),
            store: DataStore {
                root: "s3://bucket/workflows".into(),
                ..DataStore::default()
            },
            inputs: vec![DataInput {
                source: "task prepare".into(),
                url: "s3://bucket/workflows/train-1/prepare/".into(),
                regex: None,
            }],
            outputs: vec![DataOutput {
                url: "s3://bucket/out/".into(),
                regex: None,
            }],
            intermediate: Some("s3://bucket/workflows/train-1/worker/".into()),
        }),
        // Never in a launch's own encoding: see `down-create-group-with-extras`.
        extras: TaskExtras::default(),
    };
    GroupLaunch {
        workflow_id: "train-1".into(),
        group: "training".into(),
        barrier: true,
        tasks: vec![task],
        meta: GroupMeta {
            workflow_uuid: "9f1e".into(),
            group_uuid: "77aa".into(),
            submitted_by: "alice".into(),
            pool: "default".into(),
            priority: Some(Priority::High),
            scheduler: Some(LaunchScheduler {
                scheduler_type: SchedulerType::Kai,
                scheduler_name: "kai-scheduler".into(),
                scheduler_timeout_seconds: 30,
            }),
        },
    }
}

/// One frame of every kind, in a fixed order (append only).
#[allow(clippy::large_enum_variant)] // samples, built once
enum Sample {
    Up(Up),
    Down(Down),
}

fn samples(format: FrameFormat) -> Vec<(&'static str, Sample)> {
    let mut samples = every_sample(format);
    samples.retain(|(name, _)| format == FrameFormat::Named || !NAMED_ONLY.contains(name));
    samples
}

/// Frames that never travel in format 1, so have no format-1 fixture: a
/// launch with extras goes only to an operator that announced them on a
/// format-2 connection (its format-1 fixture was retired when task extras
/// grew their topology fields: format 1 is positional). Named-only samples
/// come last, so every other fixture keeps its number.
const NAMED_ONLY: [&str; 1] = ["down-create-group-with-extras"];

fn every_sample(format: FrameFormat) -> Vec<(&'static str, Sample)> {
    let up = |seq, message| Sample::Up(Up::report(seq, message));
    vec![
        (
            "up-hello",
            up(
                1,
                FromOperator::Hello {
                    backend: "dgx".into(),
                    version: "0.1.0".into(),
                    running: vec![key()],
                    executor: "kubernetes".into(),
                },
            ),
        ),
        ("up-job-done", up(2, FromOperator::JobDone { job_id: 42 })),
        (
            "up-task-status",
            up(
                3,
                FromOperator::TaskStatus {
                    key: key(),
                    status: TaskStatus::Running,
                    exit_code: None,
                    message: Some("started".into()),
                    time: 1_700_000_000_000,
                },
            ),
        ),
        (
            "up-logs",
            up(
                4,
                FromOperator::Logs {
                    key: key(),
                    lines: vec![LogLine {
                        offset: 1,
                        stream: LogStream::Stdout,
                        time: 1_700_000_000_001,
                        text: "epoch 1 loss 0.25".into(),
                    }],
                },
            ),
        ),
        (
            "up-heartbeat",
            up(
                5,
                FromOperator::Heartbeat {
                    nodes: vec![node()],
                },
            ),
        ),
        (
            "up-data-times",
            up(
                6,
                FromOperator::DataTimes {
                    key: key(),
                    times: TaskDataTimes {
                        input_download_start: Some(1),
                        input_download_end: Some(2),
                        ..TaskDataTimes::default()
                    },
                },
            ),
        ),
        ("down-resume", Sample::Down(Down::Resume { acked: 6 })),
        ("down-ack", Sample::Down(Down::Ack { seq: 6 })),
        (
            "down-create-group",
            Sample::Down(Down::Job(ToOperator::CreateGroup {
                job_id: 43,
                group: launch(format == FrameFormat::Named),
            })),
        ),
        (
            "down-cancel-group",
            Sample::Down(Down::Job(ToOperator::CancelGroup {
                job_id: 44,
                workflow_id: "train-1".into(),
                group: "training".into(),
                reason: "canceled by alice".into(),
            })),
        ),
        (
            "down-open-session",
            Sample::Down(Down::Job(ToOperator::OpenSession {
                session: "0b3c6f7e-2a51-4d8e-9c1f-5e6a7b8c9d0e".into(),
                key: key(),
                kind: SessionKind::PortForward { port: 8888 },
            })),
        ),
        (
            "down-create-group-with-extras",
            Sample::Down(Down::Job(ToOperator::CreateGroupWithExtras {
                job_id: 45,
                group: launch(format == FrameFormat::Named),
                extras: BTreeMap::from([(
                    "worker".into(),
                    TaskExtras {
                        checkpoints: vec![CheckpointPlan {
                            path: "/tmp/models".into(),
                            url: "s3://bucket/ckpt/train-1".into(),
                            frequency_seconds: 600,
                            regex: Some(r".*\.pth".into()),
                        }],
                        ..TaskExtras::default()
                    },
                )]),
            })),
        ),
    ]
}

const FORMATS: [FrameFormat; 2] = [FrameFormat::Bincode, FrameFormat::Named];

fn body<T: Serialize>(value: &T, format: FrameFormat) -> Vec<u8> {
    let mut buffer = bytes::BytesMut::new();
    encode_frame_into(value, format, &mut buffer).expect("encode");
    buffer[4..].to_vec()
}

fn encoded(sample: &Sample, format: FrameFormat) -> Vec<u8> {
    match sample {
        Sample::Up(up) => body(up, format),
        Sample::Down(down) => body(down, format),
    }
}

/// Decodes a fixture as the sample's type and encodes it again.
fn reencoded(sample: &Sample, bytes: &[u8], format: FrameFormat) -> Result<Vec<u8>, String> {
    match sample {
        Sample::Up(_) => decode_frame::<Up>(bytes, format).map(|up| body(&up, format)),
        Sample::Down(_) => decode_frame::<Down>(bytes, format).map(|down| body(&down, format)),
    }
    .map_err(|error| error.to_string())
}

#[test]
fn every_frame_fixture_decodes_and_encodes_to_the_same_bytes_in_both_formats() {
    let bless = std::env::var_os("GANTRY_BLESS").is_some();
    for format in FORMATS {
        for (n, (name, sample)) in samples(format).iter().enumerate() {
            let path = fixtures().join(format!("{n:02}-{name}.v{}.bin", format.number()));
            if bless && !path.exists() {
                std::fs::create_dir_all(fixtures()).expect("mkdir");
                std::fs::write(&path, encoded(sample, format)).expect("write fixture");
            }
            let stored = std::fs::read(&path).unwrap_or_else(|error| {
                panic!(
                    "{}: {error} (new kinds of frame: run with GANTRY_BLESS=1)",
                    path.display()
                )
            });
            let again = reencoded(sample, &stored, format)
                .unwrap_or_else(|error| panic!("{} no longer decodes: {error}", path.display()));
            assert_eq!(again, stored, "{}: encodes differently now", path.display());
            assert_eq!(
                encoded(sample, format),
                stored,
                "{}: the sample encodes differently now",
                path.display()
            );
        }
    }
    let files = std::fs::read_dir(fixtures()).expect("fixtures").count();
    let expected: usize = FORMATS.iter().map(|format| samples(*format).len()).sum();
    assert_eq!(files, expected, "a fixture without a sample");
}

/// Tolerations and pod templates are JSON values: format 1 sends them but
/// cannot read them back, so a remote operator of format 1 cannot take a
/// launch that has them; format 2 carries them.
#[test]
fn json_values_in_a_launch_travel_in_format_2_only() {
    let job = Down::Job(ToOperator::CreateGroup {
        job_id: 1,
        group: launch(true),
    });
    let error = decode_frame::<Down>(&body(&job, FrameFormat::Bincode), FrameFormat::Bincode)
        .expect_err("format 1 reads no JSON value");
    assert!(error.to_string().contains("Any"), "{error}");
    let Down::Job(ToOperator::CreateGroup { group, .. }) =
        decode_frame::<Down>(&body(&job, FrameFormat::Named), FrameFormat::Named)
            .expect("format 2 carries JSON values")
    else {
        panic!("not a launch");
    };
    assert_eq!(group.tasks[0].placement, launch(true).tasks[0].placement);
}

// What an operator one version newer sends: a message with a field this
// build does not know.
#[derive(Serialize)]
enum NewerUp {
    Report { seq: u64, message: NewerMessage },
}
#[derive(Serialize)]
enum NewerMessage {
    JobDone { job_id: u64, took_ms: u64 },
}

// What an operator one version older sends: `Hello` from before it carried
// `executor`.
#[derive(Serialize)]
enum OlderUp {
    Report { seq: u64, message: OlderMessage },
}
#[derive(Serialize)]
enum OlderMessage {
    Hello {
        backend: String,
        version: String,
        running: Vec<TaskKey>,
    },
}

#[test]
fn in_format_2_an_unknown_field_is_skipped_and_a_missing_one_takes_its_default() {
    let newer = NewerUp::Report {
        seq: 9,
        message: NewerMessage::JobDone {
            job_id: 42,
            took_ms: 17,
        },
    };
    let Up::Report { seq, message } =
        decode_frame::<Up>(&body(&newer, FrameFormat::Named), FrameFormat::Named)
            .expect("a newer operator's frame");
    assert_eq!(seq, 9);
    assert!(matches!(*message, FromOperator::JobDone { job_id: 42 }));

    let older = OlderUp::Report {
        seq: 1,
        message: OlderMessage::Hello {
            backend: "lab".into(),
            version: "0.0.9".into(),
            running: Vec::new(),
        },
    };
    let Up::Report { message, .. } =
        decode_frame::<Up>(&body(&older, FrameFormat::Named), FrameFormat::Named)
            .expect("an older operator's frame");
    let FromOperator::Hello {
        backend, executor, ..
    } = &*message
    else {
        panic!("not a hello: {message:?}");
    };
    assert_eq!(backend, "lab");
    assert_eq!(executor, "local", "the default executor");

    // Format 1 is positional: the same older frame does not decode there,
    // which is why peers that both speak format 2 use it.
    assert!(decode_frame::<Up>(&body(&older, FrameFormat::Bincode), FrameFormat::Bincode).is_err());
}
