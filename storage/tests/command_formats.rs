//! Every kind of command, as the Raft log stores it, decodes forever.
//!
//! `testdata/commands/NN-kind.bin` holds one command of variant `NN` in the
//! log's encoding (bincode of the serde form, the bytes inside each entry's
//! batch), written once and never rewritten. The test decodes each fixture
//! and encodes it again to the very same bytes, so a change that would
//! misread entries already in some cluster's log (a field added to a
//! variant, variants reordered) fails here; and it checks that a fixture
//! exists for every variant the enum has, so a new command kind cannot
//! ship without one. `GANTRY_BLESS=1` writes the fixtures that are missing
//! (new kinds) from the samples below; existing ones are never replaced.

use gantry_storage::plan::{GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan};
use gantry_storage::{
    Command, ConfigData, ConfigMeta, ConfigType, LogChunk, NodeInventory, PackedSubmission,
    PoolRecord, Priority, Submission, TaskDataTimes, TaskKey, TaskReport, TaskStatus, TokenRecord,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/commands")
}

fn encode(command: &Command) -> Vec<u8> {
    bincode::serde::encode_to_vec(command, bincode::config::standard()).expect("encode")
}

fn decode(bytes: &[u8]) -> Result<Command, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(command, _)| command)
        .map_err(|error| error.to_string())
}

/// The variant index: the first byte of the encoding (a varint, one byte
/// below 251).
fn variant(bytes: &[u8]) -> u8 {
    assert!(bytes[0] < 251, "a variant index of one byte");
    bytes[0]
}

fn key() -> TaskKey {
    TaskKey {
        workflow_id: "train-1".into(),
        task: "worker".into(),
        retry_id: 1,
    }
}

fn submission() -> Submission {
    let task = TaskPlan {
        name: "worker".into(),
        lead: true,
        image: "ubuntu:24.04".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hi".into()],
        environment: BTreeMap::from([("SEED".into(), "7".into())]),
        inputs: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        resource: ResourcePlan::default(),
        exit_actions: Vec::new(),
        credentials: BTreeMap::new(),
        privileged: false,
        host_network: false,
        volume_mounts: Vec::new(),
    };
    Submission {
        name: "train".into(),
        uuid: "5a0b5e2c1d3f4e6a8b9c0d1e2f3a4b5c".into(),
        pool: "default".into(),
        user: "alice".into(),
        priority: Priority::Normal,
        template_spec: "workflow: {name: train}".into(),
        rendered_spec: "workflow: {name: train}".into(),
        plan: Ok(WorkflowPlan {
            groups: vec![GroupPlan {
                name: "worker-group".into(),
                tasks: vec![task],
                upstream: Vec::new(),
                barrier: false,
                ignore_nonlead_status: false,
            }],
            exec_timeout_seconds: Some(3600),
            queue_timeout_seconds: None,
        }),
    }
}

fn meta() -> ConfigMeta {
    ConfigMeta {
        user: "admin".into(),
        description: "raise the quota".into(),
        tags: vec!["ops".into()],
    }
}

/// One command of every kind, in variant order.
fn samples() -> Vec<Command> {
    let now = 1_765_000_000_000;
    let report = Command::ReportTask {
        now,
        report: TaskReport {
            key: key(),
            status: TaskStatus::Running,
            exit_code: None,
            message: Some("started".into()),
            node_name: Some("node-a".into()),
            time: now,
        },
    };
    vec![
        Command::SubmitWorkflow {
            now,
            submission: submission(),
        },
        Command::CancelWorkflow {
            now,
            workflow_id: "train-1".into(),
            user: "alice".into(),
            message: Some("wrong data".into()),
            force: false,
        },
        report.clone(),
        Command::CompleteJob { job_id: 12 },
        Command::FireTimer {
            now,
            timer_id: 3,
            due: now - 5,
        },
        Command::PutPool {
            pool: PoolRecord {
                name: "default".into(),
                description: "lab".into(),
                backend: "local".into(),
                default_platform: Some("cpu".into()),
                platforms: vec!["cpu".into()],
            },
        },
        Command::OperatorHello {
            now,
            backend: "local".into(),
            running: vec![key()],
        },
        Command::IssueToken {
            token: TokenRecord {
                name: "ci".into(),
                service: true,
                hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                user: "ci-bot".into(),
                roles: vec!["osmo-user".into()],
                description: "CI".into(),
                created: now,
                expires: Some(now + 86_400_000),
            },
        },
        Command::RevokeToken { name: "ci".into() },
        Command::PutConfig {
            now,
            config_type: ConfigType::Service,
            name: String::new(),
            meta: meta(),
            data: Box::new(ConfigData::Json("{\"max_pod_restart_limit\": 3}".into())),
        },
        Command::DeleteConfig {
            now,
            config_type: ConfigType::Pool,
            name: "old".into(),
            meta: meta(),
        },
        Command::RollbackConfig {
            now,
            config_type: ConfigType::Workflow,
            revision: 4,
            meta: meta(),
        },
        Command::BackendHeartbeat {
            now,
            backend: "local".into(),
            nodes: vec![NodeInventory::default()],
            offline_after_ms: 30_000,
            fail_tasks_after_ms: 600_000,
        },
        Command::OperatorReports {
            now,
            backend: "local".into(),
            instance: 77,
            last_seq: 2,
            commands: vec![(2, report)],
        },
        Command::AppendLogChunk {
            chunk: LogChunk {
                workflow_id: "train-1".into(),
                task: "worker".into(),
                retry_id: 1,
                first_offset: 0,
                last_offset: 99,
                key: "logs/train-1/worker/1/0".into(),
                raw_bytes: 4096,
                stored_bytes: 812,
                lines: 100,
            },
        },
        Command::OperatorHelloWithExecutor {
            now,
            backend: "local".into(),
            running: vec![key()],
            executor: "local".into(),
        },
        Command::RecordTaskDataTimes {
            key: key(),
            times: TaskDataTimes {
                input_download_start: Some(now),
                input_download_end: Some(now + 10),
                output_upload_start: None,
                output_upload_end: None,
            },
        },
        Command::SubmitPackedWorkflow {
            now,
            packed: PackedSubmission::pack(&submission()).expect("pack"),
        },
        Command::Idempotent {
            now,
            key: "5:alice/key-1".into(),
            command: Box::new(Command::CancelWorkflow {
                now,
                workflow_id: "train-1".into(),
                user: "alice".into(),
                message: None,
                force: true,
            }),
        },
        Command::SubmitWorkflowWithLabels {
            now,
            packed: PackedSubmission::pack(&submission()).expect("pack"),
            labels: BTreeMap::from([
                ("project".into(), "sim_cars".into()),
                ("example.com/team".into(), "robotics".into()),
            ]),
        },
        Command::TagWorkflow {
            workflow_id: "train-1".into(),
            add: vec!["nightly".into()],
            remove: vec!["sim".into()],
        },
        Command::TagConfigRevision {
            config_type: ConfigType::Pool,
            revision: 7,
            set: vec!["stable".into()],
            delete: vec!["candidate".into()],
        },
        Command::DeleteConfigRevision {
            config_type: ConfigType::Pool,
            revision: 6,
        },
        Command::SubmitWorkflowWithExtras {
            now,
            packed: PackedSubmission::pack(&submission()).expect("pack"),
            labels: BTreeMap::from([("project".into(), "sim_cars".into())]),
            extras: r#"{"tasks":{"worker":{"checkpoints":[{"path":"/ckpt","url":"s3://b/ckpt","frequency_seconds":60,"regex":".*\\.pth"}]}}}"#.into(),
        },
        Command::PutPoolWithExtras {
            now,
            name: "gpu".into(),
            meta: meta(),
            pool: Box::new(gantry_storage::PoolConfig::from_record(&PoolRecord {
                name: "gpu".into(),
                description: "rack-aware".into(),
                backend: "k8s".into(),
                default_platform: None,
                platforms: vec!["a100".into()],
            })),
            extras: r#"{"topology_keys":[{"key":"zone","label":"topology.kubernetes.io/zone"},{"key":"rack","label":"example.com/rack"}]}"#.into(),
        },
        Command::RecordSession {
            now,
            workflow_id: "train-1".into(),
            event: gantry_storage::SessionEventInput {
                user: "alice".into(),
                task: "worker".into(),
                retry_id: 1,
                kind: "exec".into(),
                detail: "/bin/bash".into(),
            },
        },
        Command::PutCredential {
            now,
            user: "alice".into(),
            name: "hf".into(),
            only_if_sealed: Some("gantry-sealed:1:0123456789ab:AAAA".into()),
            credential: gantry_storage::CredentialRecord {
                kind: gantry_storage::CredentialKind::Registry,
                profile: "nvcr.io".into(),
                keys: vec!["auth".into(), "username".into()],
                sealed: "gantry-sealed:1:0123456789ab:AAAA".into(),
                updated: 0,
            },
        },
        Command::DeleteCredential {
            user: "alice".into(),
            name: "hf".into(),
        },
        Command::SetUserProfile {
            user: "alice".into(),
            profile: r#"{"pool":"robots","email_notification":false}"#.into(),
        },
        Command::PutUser {
            now: 1_700_000_000_000,
            user: "alice@example.com".into(),
            by: "admin".into(),
            roles: vec!["user".into(), "team-a".into()],
            mode: gantry_storage::UserWrite::Ensure,
        },
        Command::RemoveUserRole {
            user: "alice@example.com".into(),
            role: "team-a".into(),
        },
        Command::DeleteUser {
            user: "alice@example.com".into(),
        },
        Command::RevokeUserSessions {
            now: 1_700_000_000_000,
            user: "alice@example.com".into(),
        },
        Command::RecordTaskEvents {
            key: key(),
            events: vec![gantry_storage::TaskEventInput {
                time: 1_700_000_000_000,
                reason: "Pulled".into(),
                message: "Successfully pulled image \"busybox:1.36\" in 429ms".into(),
            }],
        },
    ]
}

/// Fixtures on disk as (variant index, file name, bytes), in index order.
fn stored() -> Vec<(u8, String, Vec<u8>)> {
    let mut found: Vec<(u8, String, Vec<u8>)> = std::fs::read_dir(fixtures())
        .map(|entries| {
            entries
                .map(|entry| {
                    let entry = entry.expect("fixture entry");
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let index = name
                        .split('-')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("fixture {name}: no NN- prefix"));
                    (index, name, std::fs::read(entry.path()).expect("read"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The kind's name as a file name: `SubmitWorkflow` → `submit-workflow`.
fn kind_file_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    let kind: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut name = String::new();
    for (i, c) in kind.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    format!("{:02}-{name}.bin", variant(&encode(command)))
}

#[test]
fn every_command_fixture_decodes_and_encodes_to_the_same_bytes() {
    if std::env::var_os("GANTRY_BLESS").is_some() {
        std::fs::create_dir_all(fixtures()).expect("mkdir");
        for command in samples() {
            let path = fixtures().join(kind_file_name(&command));
            if !path.exists() {
                std::fs::write(&path, encode(&command)).expect("write fixture");
            }
        }
    }
    let stored = stored();
    assert!(!stored.is_empty(), "no fixtures: run with GANTRY_BLESS=1");
    for (n, (index, name, bytes)) in stored.iter().enumerate() {
        assert_eq!(
            usize::from(*index),
            n,
            "{name}: fixtures numbered 00, 01, …"
        );
        let command = decode(bytes).unwrap_or_else(|e| panic!("{name} no longer decodes: {e}"));
        assert_eq!(variant(bytes), *index, "{name}");
        assert_eq!(&encode(&command), bytes, "{name}: encodes differently now");
        assert_eq!(&kind_file_name(&command), name, "{name}: another kind now");
    }
    // The enum has no variant past the last fixture: a new kind needs one.
    let next = u8::try_from(stored.len()).expect("fewer than 251 kinds");
    let error = decode(&[next]).expect_err("no command kind past the fixtures");
    assert!(
        error.contains("variant"),
        "variant {next} exists without a fixture (run with GANTRY_BLESS=1): {error}"
    );
}

#[test]
fn the_samples_cover_every_kind_in_order() {
    for (n, command) in samples().iter().enumerate() {
        assert_eq!(usize::from(variant(&encode(command))), n, "{command:?}");
        // The kind version gating compares is the one the log carries.
        assert_eq!(usize::from(command.kind()), n, "{command:?}");
    }
    assert_eq!(
        usize::from(gantry_storage::COMMAND_KINDS),
        samples().len(),
        "COMMAND_KINDS counts every kind"
    );
}

/// A wrapper is as new as the newest command it carries: a leader gates an
/// idempotent or batched command by what is inside.
#[test]
fn a_wrapped_command_is_as_new_as_what_it_carries() {
    let samples = samples();
    let newest = samples.last().expect("samples").clone();
    let wrapped = Command::Idempotent {
        now: 1,
        key: "k".into(),
        command: Box::new(newest.clone()),
    };
    assert_eq!(wrapped.newest_kind(), newest.kind().max(wrapped.kind()));
    let batch = Command::OperatorReports {
        now: 1,
        backend: "local".into(),
        instance: 7,
        last_seq: 2,
        commands: vec![(1, samples[14].clone()), (2, samples[16].clone())],
    };
    assert_eq!(batch.newest_kind(), 16);
    assert_eq!(samples[0].newest_kind(), 0);
}
