//! OSMO's cookbook through `gantry dev`: every workflow file of
//! `shared/osmo/cookbook` is validated with the CLI, as its README says to
//! submit it (`--set` for the values it has no default for), and is either
//! accepted without warnings or refused with a message that says why
//! (credentials Gantry does not store yet, a platform the dev pool lacks,
//! more CPU or GPUs than its node has); a file added to the cookbook and
//! missing from the table fails. Four GPU-less tutorials then run on the
//! local executor to COMPLETED, each printing the line that shows its
//! command, tokens and task data worked.

mod common;

use common::{cli, osmo_reference, wait_for, DevServer};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const FINISH_LIMIT: Duration = Duration::from_secs(30);

/// `--set` the cookbook's READMEs give for files that need a bucket.
const STORAGE: &[&str] = &["storage_url=s3://my-bucket/osmo-data"];

/// What `gantry workflow validate` answers for a cookbook file on the dev
/// pool (one GPU-less node, no platforms).
enum Outcome {
    Accepted,
    /// Refused with a message containing this fragment.
    Refused(&'static str),
    /// Refused for a user who lacks the credential the task names (the
    /// test's user has none): OSMO's message naming it.
    Credentials(&'static str),
    /// Refused by the resource check: the message starts with this
    /// (`workflow.resources.R (task 'T'): `). Which resource it names
    /// first depends on the host's CPUs, so only the check is pinned.
    TooLarge(&'static str),
    /// A GPU-less request that fits a node with this many CPUs and GiB of
    /// memory: TooLarge on a smaller one, accepted on a larger one.
    TooLargeBelow(&'static str, u64, u64),
}

use Outcome::{Accepted, Credentials, Refused, TooLarge, TooLargeBelow};

/// Every cookbook file: path under `cookbook/`, `--set` values, outcome.
#[rustfmt::skip]
const COOKBOOK: &[(&str, &[&str], Outcome)] = &[
    ("cosmos/predict/cosmos_video2world.yaml", STORAGE, Credentials("huggingface_token")),
    ("cosmos/reason/cosmos_reason.yaml", STORAGE, Credentials("huggingface_token")),
    ("cosmos/transfer/cosmos_transfer.yaml", STORAGE, Credentials("huggingface_token")),
    ("dnn_training/deepspeed_multinode/train.yaml", &["storage_url=s3://my-bucket/osmo-data", "n_nodes=2", "n_gpus_per_node=4", "n_epochs=10"], TooLarge("workflow.resources.default (task 'master'): ")),
    ("dnn_training/single_node/train.yaml", STORAGE, TooLarge("workflow.resources.default (task 'train'): ")),
    ("dnn_training/torchrun_elastic/train.yaml", &["storage_url=s3://my-bucket/osmo-data", "min_nodes=2", "max_nodes=4", "n_epochs=10"], TooLarge("workflow.resources.default (task 'master'): ")),
    ("dnn_training/torchrun_multinode/train.yaml", STORAGE, TooLarge("workflow.resources.default (task 'master'): ")),
    ("dnn_training/torchrun_multinode/train_template.yaml", STORAGE, TooLarge("workflow.resources.default (task 'master'): ")),
    ("dnn_training/torchrun_reschedule/train.yaml", &["upload_location=s3://my-bucket/path", "checkpoint_cadence=2m"], TooLarge("workflow.resources.default (task 'master'): ")),
    ("groot/groot_finetune/groot_finetune.yaml", STORAGE, TooLarge("workflow.resources.default (task 'groot-finetune'): ")),
    ("groot/groot_mimic/groot_mimic.yaml", STORAGE, TooLarge("workflow.resources.default (task 'mimic'): ")),
    ("groot/groot_notebook/groot_notebook.yaml", &[], TooLarge("workflow.resources.default (task 'tutorial'): ")),
    ("hil/hil_isaac_lab.yaml", &[], Refused("task 'locomotion-policy': platform 'agx-orin-jp7' (workflow.resources.jetson.platform) is not a platform of pool 'default'")),
    ("integration_and_tools/filebrowser/filebrowser.yaml", &[], Accepted),
    ("integration_and_tools/github/github.yaml", &[], Credentials("github-pat")),
    ("integration_and_tools/isaacsim/sim.yaml", &[], TooLarge("workflow.resources.default (task 'stream'): ")),
    ("integration_and_tools/jupyterlab/jupyter.yaml", &[], TooLargeBelow("workflow.resources.default (task 'notebook'): ", 4, 10)),
    ("integration_and_tools/ray/ray.yaml", &[], TooLarge("workflow.resources.default (task 'master'): ")),
    ("integration_and_tools/vscode/vscode.yaml", &[], Accepted),
    ("integration_and_tools/wandb/train.yaml", STORAGE, Credentials("wandb")),
    ("mobility_gen/cosmos_augmentation.yaml", STORAGE, Credentials("hf_token")),
    ("mobility_gen/mobility_gen.yaml", &[], TooLarge("workflow.resources.default (task 'mobilitygen_interactive'): ")),
    // Its client names `{{host:nim-server}}`, the server task's resource; the
    // task is `run-server`, and a host token names a task of the group.
    ("nims/use_nim.yaml", &[], Refused("{{host:nim-server}}: task \"nim-server\" is not in the same group")),
    ("nut_pouring/01_mimic_generation.yaml", STORAGE, TooLarge("workflow.resources.default (task 'mimic_task'): ")),
    ("nut_pouring/02_hdf5_to_mp4.yaml", STORAGE, Credentials("huggingface_token")),
    ("nut_pouring/03_cosmos_augmentation.yaml", STORAGE, Credentials("huggingface_token")),
    ("nut_pouring/04_mp4_to_hdf5.yaml", STORAGE, Credentials("huggingface_token")),
    ("nut_pouring/05_lerobot_conversion.yaml", STORAGE, TooLarge("workflow.resources.default (task 'master'): ")),
    ("nut_pouring/06_groot_finetune.yaml", STORAGE, TooLarge("workflow.resources.default (task 'master'): ")),
    ("reinforcement_learning/multi_gpu/train_policy.yaml", STORAGE, TooLarge("workflow.resources.default (task 'train'): ")),
    ("reinforcement_learning/multi_node/train_policy.yaml", STORAGE, TooLarge("workflow.resources.default (task 'master'): ")),
    ("reinforcement_learning/single_gpu/train_policy.yaml", STORAGE, TooLarge("workflow.resources.default (task 'train'): ")),
    ("ros/comm/ros2_comm.yaml", &[], Accepted),
    ("ros/turtlebot/turtlebot_demo.yaml", &[], Accepted),
    ("synthetic_data_generation/gazebo/gazebo_sdg.yaml", STORAGE, Refused("task 'gazebo-sdg': platform 'ovx-a40' (workflow.resources.default.platform) is not a platform of pool 'default'")),
    ("synthetic_data_generation/isaac_sim/isaac_sim_sdg.yaml", STORAGE, TooLarge("workflow.resources.default (task 'isaac-sim-sdg'): ")),
    ("tutorials/combination_workflow_complex.yaml", &[], Accepted),
    ("tutorials/combination_workflow_simple.yaml", &[], Accepted),
    ("tutorials/data_download.yaml", &[], Accepted),
    ("tutorials/data_filter.yaml", &["storage_url=s3://my-bucket"], Accepted),
    ("tutorials/data_upload.yaml", &[], Accepted),
    ("tutorials/group_tasks.yaml", &[], Accepted),
    ("tutorials/group_tasks_communication.yaml", &[], Accepted),
    ("tutorials/hello_world.yaml", &[], Accepted),
    ("tutorials/parallel_tasks.yaml", &[], Accepted),
    ("tutorials/resources_basic.yaml", &[], Accepted),
    ("tutorials/resources_multiple.yaml", &[], TooLarge("workflow.resources.gpu_resource (task 'gpu-task'): ")),
    ("tutorials/resources_platforms.yaml", &[], Refused("task 'cpu-task': platform 'ovx-l40' (workflow.resources.default.platform) is not a platform of pool 'default'")),
    ("tutorials/robot_simulation.yaml", &[], Refused("task 'model-training': platform 'ovx-a40' (workflow.resources.gpu-enabled.platform) is not a platform of pool 'default'")),
    ("tutorials/serial_workflow.yaml", &[], Accepted),
    ("tutorials/template_hello_world.yaml", &[], Accepted),
    ("tutorials/token_example.yaml", &[], Accepted),
];

/// The cheapest GPU-less files, run to COMPLETED: file, a log line that
/// shows the run did its work (`{id}` is the workflow ID).
const RUNS: &[(&str, &str)] = &[
    ("tutorials/hello_world.yaml", "[hello] Hello from OSMO!"),
    // The `{{workflow_id}}` token and a Jinja default.
    (
        "tutorials/token_example.yaml",
        "[experiment] Workflow ID: {id}",
    ),
    // Task outputs read as inputs by later tasks.
    (
        "tutorials/serial_workflow.yaml",
        "[task3] a line: Data from task 2",
    ),
    // Groups with leads; a group's input from another group's task. The
    // lead's line: a non-lead (train-model-b) is stopped when its lead
    // finishes, so whether its own lines come first is a race.
    (
        "tutorials/combination_workflow_simple.yaml",
        "[train-model-a] sample_10,value_10",
    ),
];

/// The `.yaml`/`.yml` files under `dir`, relative to it.
fn workflow_files(dir: &Path, under: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            workflow_files(&path, under, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            let relative = path.strip_prefix(under).unwrap();
            found.push(relative.to_str().unwrap().to_string());
        }
    }
}

/// A Kubernetes quantity (`2`, `24683772Ki`, `16Gi`) in bytes or units.
fn quantity(text: &str) -> u64 {
    let (digits, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unexpected unit {other} in {text}"),
    };
    digits.parse::<u64>().unwrap() * scale
}

/// The dev pool's one node: (CPUs, memory bytes, storage bytes, GPUs).
fn dev_node(server: &DevServer) -> (u64, u64, u64, u64) {
    let api = server.client();
    // The operator reports its node shortly after the server starts.
    let node = wait_for(Duration::from_secs(20), "the dev node", || {
        let reply = api.get("/api/resources");
        reply.json()["resources"]
            .as_array()
            .and_then(|nodes| nodes.first().cloned())
            .ok_or(reply.body)
    });
    let field = |name: &str| quantity(node["allocatable_fields"][name].as_str().unwrap());
    (
        field("cpu"),
        field("memory"),
        field("storage"),
        field("gpu"),
    )
}

fn validate(server: &DevServer, file: &Path, sets: &[&str]) -> (i32, String, String) {
    let mut args = vec!["workflow", "validate", file.to_str().unwrap(), "-t", "json"];
    for set in sets {
        args.extend(["--set", set]);
    }
    cli(&server.url, &args)
}

#[test]
fn every_cookbook_file_is_accepted_or_refused_with_its_reason_and_the_tutorials_run() {
    let cookbook = osmo_reference("cookbook");
    let dir = tempfile::tempdir().unwrap();
    let server = DevServer::start(&dir.path().join("dev"));

    // The table is written for a GPU-less node that fits the accepted
    // files (vscode asks 2 CPUs and 6Gi, resources_basic 10Gi storage).
    let (cpus, memory, storage, gpus) = dev_node(&server);
    assert!(
        gpus == 0 && cpus >= 2 && memory >= 6 << 30 && storage >= 10 << 30,
        "this test expects a GPU-less host with 2+ CPUs, 6+ GiB memory and 10+ GiB storage; \
         the dev node has {cpus} CPUs, {memory} B memory, {storage} B storage, {gpus} GPUs"
    );

    // A file added to (or removed from) the cookbook must get an outcome.
    let mut found = Vec::new();
    workflow_files(&cookbook, &cookbook, &mut found);
    found.sort();
    let listed: Vec<String> = COOKBOOK.iter().map(|(path, ..)| path.to_string()).collect();
    assert_eq!(found, listed, "cookbook files and the table differ");

    let mut wrong = Vec::new();
    for (path, sets, outcome) in COOKBOOK {
        let (code, stdout, stderr) = validate(&server, &cookbook.join(path), sets);
        let accepted = code == 0;
        let problem = match outcome {
            TooLargeBelow(prefix, need_cpus, need_gib)
                if cpus < *need_cpus || memory < need_gib << 30 =>
            {
                too_large(accepted, &stderr, prefix)
            }
            TooLargeBelow(..) | Accepted => accepted_cleanly(accepted, &stdout, &stderr),
            Refused(fragment) => refused(accepted, &stderr, fragment),
            Credentials(name) => refused(
                accepted,
                &stderr,
                &format!("credentials.{name}: Could not find the credential: {name}."),
            ),
            TooLarge(prefix) => too_large(accepted, &stderr, prefix),
        };
        if let Some(problem) = problem {
            wrong.push(format!(
                "{path}: {problem}\n  exit {code}\n  stdout: {stdout}\n  stderr: {stderr}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Submitted together: the local executor runs them side by side.
    let mut ids = Vec::new();
    for (path, _) in RUNS {
        let file = cookbook.join(path);
        let (code, stdout, stderr) = cli(
            &server.url,
            &["workflow", "submit", file.to_str().unwrap(), "-t", "json"],
        );
        assert_eq!(code, 0, "{path}: {stderr}");
        let reply: Value = serde_json::from_str(&stdout).unwrap();
        ids.push(reply["name"].as_str().unwrap().to_string());
    }
    let api = server.client();
    for ((path, line), id) in RUNS.iter().zip(&ids) {
        let workflow = api.wait_finished(id, FINISH_LIMIT);
        assert_eq!(workflow["status"], "COMPLETED", "{path}: {workflow}");
        let expected = line.replace("{id}", id);
        // Log chunks may land just after the final status.
        wait_for(
            Duration::from_secs(10),
            &format!("{path}: {expected:?} in the logs"),
            || {
                let (code, stdout, stderr) = cli(&server.url, &["workflow", "logs", id]);
                (code == 0 && stdout.contains(&expected))
                    .then_some(())
                    .ok_or(format!("exit {code}\n{stdout}{stderr}"))
            },
        );
    }
}

fn accepted_cleanly(accepted: bool, stdout: &str, stderr: &str) -> Option<String> {
    if !accepted {
        return Some(format!("expected acceptance, refused: {stderr}"));
    }
    let reply: Value = serde_json::from_str(stdout).unwrap_or_default();
    // A cookbook file should not need any warning to be accepted.
    match (reply["logs"].as_str(), reply["warnings"].as_array()) {
        (Some("Workflow validation succeeded."), Some(warnings)) if warnings.is_empty() => None,
        _ => Some("expected a clean acceptance".to_string()),
    }
}

fn refused(accepted: bool, stderr: &str, fragment: &str) -> Option<String> {
    (accepted || !stderr.contains(fragment))
        .then(|| format!("expected a refusal containing {fragment:?}"))
}

fn too_large(accepted: bool, stderr: &str, prefix: &str) -> Option<String> {
    let refused = !accepted
        && stderr.contains(prefix)
        && stderr.contains("is more than any node of pool 'default'");
    (!refused).then(|| format!("expected a resource refusal starting {prefix:?}"))
}
