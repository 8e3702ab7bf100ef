//! Local tasks run in their images (`--task-root image`): pulled from a real
//! OCI registry on loopback (Debian's `docker-registry`, plain HTTP, named
//! with `--insecure-registry`) serving images built here from Debian's
//! static busybox; cached, so the second task starts from the cache;
//! pinned by digest; a multi-platform index resolved for this host; the
//! image's environment, working directory and user applied; the host's
//! tools out of sight. An image that does not exist, a corrupted layer and
//! a private registry without the user's credential end the task
//! FAILED_IMAGE_PULL naming the image; with the user's REGISTRY credential
//! the private image runs.
//!
//! Needs root (the run's root is an overlay the operator mounts), bubblewrap,
//! `docker-registry` and `busybox-static`; skips, saying why, unless
//! `CI=true`.

mod common;

use common::registry::{
    busybox_layer, corrupt_blob, foreign_architecture, have_busybox, push_image, push_index,
    start_registry, Entry, ImageConfig, Layer, Registry,
};
use common::{task_of, DevServer};
use serde_json::{json, Value};
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(120);

/// Why image tasks cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("image mode needs root (the operator mounts each run's root)".into());
    }
    if !have_busybox() {
        return Some("busybox-static is not installed".into());
    }
    None
}

fn skip_unless_able() -> bool {
    match unavailable() {
        None => false,
        Some(why) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

/// A registry for one test (with `auth`), once image tasks can run here.
fn registry_for(dir: &std::path::Path, auth: Option<(&str, &str)>) -> Option<Registry> {
    if skip_unless_able() {
        return None;
    }
    start_registry(&dir.join("registry"), auth)
}

/// An image config that only sets `PATH` (busybox's applets are in /bin).
fn path_only() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

fn image_server(dir: &std::path::Path, registry: &Registry) -> DevServer {
    DevServer::start_with(
        dir,
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--task-root",
            "image",
            "--insecure-registry",
            &registry.host,
        ],
    )
}

fn spec(name: &str, image: &str, script: &str) -> String {
    format!(
        "workflow:\n  name: {name}\n  tasks:\n  - name: run\n    image: {image}\n    command: [sh, -c, {}]\n    environment:\n      FROM_SPEC: spec-value\n",
        serde_json::to_string(script).unwrap()
    )
}

/// Submits as `user`, waits for the end; (workflow, the task's log text).
fn run_as(server: &DevServer, user: &str, spec: &str) -> (Value, String) {
    let http = reqwest::blocking::Client::new();
    let reply: Value = http
        .post(format!("{}/api/pool/default/workflow", server.url))
        .header("x-osmo-user", user)
        .json(&json!({ "file": spec }))
        .send()
        .expect("submit")
        .json()
        .expect("submit answer");
    let id = reply["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string();
    let workflow = server.client().wait_finished(&id, FINISH);
    let logs = http
        .get(format!("{}/api/workflow/{id}/logs", server.url))
        .send()
        .and_then(|reply| reply.text())
        .unwrap_or_default();
    (workflow, logs)
}

/// The workflow's events, as `osmo workflow events` prints them.
fn events_of(server: &DevServer, workflow: &Value) -> String {
    let id = workflow["name"].as_str().unwrap_or_default();
    reqwest::blocking::Client::new()
        .get(format!("{}/api/workflow/{id}/events", server.url))
        .send()
        .and_then(|reply| reply.text())
        .unwrap_or_default()
}

fn status_of(workflow: &Value) -> (String, String) {
    let task = task_of(workflow, "run").unwrap_or_else(|| panic!("no task in {workflow}"));
    (
        task["status"].as_str().unwrap_or_default().to_string(),
        task["failure_message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// `ready in N ms` of the `[image]` line.
fn ready_ms(logs: &str, how: &str) -> u64 {
    logs.lines()
        .find(|line| line.contains("[image]") && line.contains(&format!(") {how}, ready in")))
        .and_then(|line| line.split("ready in ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no '{how}' image line in:\n{logs}"))
}

#[test]
fn tasks_run_in_their_images() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry_for(dir.path(), None) else {
        return;
    };
    let config = ImageConfig {
        env: vec!["GREETING=hello from the image".into(), "PATH=/bin".into()],
        working_dir: Some("/home/runner".into()),
        user: Some("runner".into()),
        ..Default::default()
    };
    let pushed = push_image(
        &registry,
        None,
        "tools/busybox",
        "1.36",
        &[busybox_layer()],
        &config,
    );
    let server = image_server(&dir.path().join("dev"), &registry);
    let image = format!("{}/tools/busybox:1.36", registry.host);

    // The image's environment, user and working directory; the spec's
    // environment on top; the host's /usr out of sight; a writable root.
    let script =
        "echo \"$GREETING\"; echo \"spec=$FROM_SPEC\"; echo uid=$(id -u); echo pwd=$(pwd); \
                  echo home=$HOME; test -e /usr/bin/python3 && echo HOST-VISIBLE; \
                  echo scratch > /root-write-test 2>/dev/null || touch /tmp/x; cat /etc/hostname";
    let (workflow, logs) = run_as(&server, "alice", &spec("in-image", &image, script));
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{workflow}\n{logs}");
    for wanted in [
        "hello from the image",
        "spec=spec-value",
        "uid=1234",
        "pwd=/home/runner",
        "home=/home/runner",
        "[image] pulling",
    ] {
        assert!(logs.contains(wanted), "{wanted} in:\n{logs}");
    }
    assert!(!logs.contains("HOST-VISIBLE"), "{logs}");
    let pulled_ms = ready_ms(&logs, "pulled");
    // The pull as the kubelet's events name it.
    let events = events_of(&server, &workflow);
    for wanted in [
        format!("[run] Pulling: Pulling image \"{image}\""),
        format!("[run] Pulled: Successfully pulled image \"{image}\" in "),
    ] {
        assert!(events.contains(&wanted), "{wanted} in:\n{events}");
    }

    // The second task starts from the cache; a digest pins the same image.
    let (workflow, logs) = run_as(&server, "alice", &spec("cached", &image, "echo again"));
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    let cached_ms = ready_ms(&logs, "cached");
    let events = events_of(&server, &workflow);
    assert!(
        events.contains(&format!(
            "[run] Pulled: Container image \"{image}\" already present on machine"
        )) && !events.contains("Pulling"),
        "{events}"
    );
    println!("image ready: pulled in {pulled_ms} ms, from the cache in {cached_ms} ms");
    let pinned = format!("{}/tools/busybox@{}", registry.host, pushed.manifest_digest);
    let (workflow, logs) = run_as(&server, "alice", &spec("pinned", &pinned, "echo pinned"));
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(logs.contains(&pushed.manifest_digest), "{logs}");

    // A multi-platform index: this host's entry is the one that runs.
    let ours = push_image(
        &registry,
        None,
        "tools/multi",
        "ours",
        &[busybox_layer()],
        &ImageConfig {
            env: vec!["PLATFORM=mine".into(), "PATH=/bin".into()],
            ..Default::default()
        },
    );
    let theirs = push_image(
        &registry,
        None,
        "tools/multi",
        "theirs",
        &[busybox_layer()],
        &ImageConfig {
            env: vec!["PLATFORM=foreign".into(), "PATH=/bin".into()],
            architecture: Some(foreign_architecture().into()),
            ..Default::default()
        },
    );
    push_index(
        &registry,
        None,
        "tools/multi",
        "1",
        &[
            (
                theirs.manifest_digest.clone(),
                theirs.manifest_size,
                foreign_architecture(),
            ),
            (
                ours.manifest_digest.clone(),
                ours.manifest_size,
                common::registry::host_architecture(),
            ),
        ],
    );
    let multi = format!("{}/tools/multi:1", registry.host);
    let (workflow, logs) = run_as(
        &server,
        "alice",
        &spec("multi", &multi, "echo platform=$PLATFORM"),
    );
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(logs.contains("platform=mine"), "{logs}");

    // Whiteouts of an upper layer hide the lower layer's files.
    let upper = Layer {
        entries: vec![
            Entry::whiteout("bin/wc"),
            Entry::file("etc/motd", "layered\n", 0o644),
        ],
        compression: common::registry::Compression::Gzip,
    };
    push_image(
        &registry,
        None,
        "tools/layered",
        "1",
        &[busybox_layer(), upper],
        &ImageConfig::default(),
    );
    let layered = format!("{}/tools/layered:1", registry.host);
    let (workflow, logs) = run_as(
        &server,
        "alice",
        &spec(
            "layered",
            &layered,
            "cat /etc/motd; test -e /bin/wc || echo wc-gone",
        ),
    );
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(
        logs.contains("layered") && logs.contains("wc-gone"),
        "{logs}"
    );

    // An image that does not exist, and one whose layer was corrupted.
    let missing = format!("{}/tools/nothing:1", registry.host);
    let (workflow, _) = run_as(&server, "alice", &spec("missing", &missing, "true"));
    let (status, message) = status_of(&workflow);
    assert_eq!(status, "FAILED_IMAGE_PULL", "{workflow}");
    assert!(message.contains("tools/nothing"), "{message}");
    let broken = push_image(
        &registry,
        None,
        "tools/broken",
        "1",
        &[Layer {
            entries: vec![Entry::file("bin/tool", "#!/bin/sh\n", 0o755)],
            compression: common::registry::Compression::None,
        }],
        &ImageConfig::default(),
    );
    corrupt_blob(&registry, &broken.layer_digests[0]);
    let corrupted = format!("{}/tools/broken:1", registry.host);
    let (workflow, _) = run_as(&server, "alice", &spec("corrupt", &corrupted, "true"));
    let (status, message) = status_of(&workflow);
    assert_eq!(status, "FAILED_IMAGE_PULL", "{workflow}");
    assert!(
        message.contains("tools/broken") && message.to_lowercase().contains("digest"),
        "{message}"
    );
    server.stop();
}

#[test]
fn private_images_need_the_users_registry_credential() {
    let dir = tempfile::tempdir().unwrap();
    let auth = ("puller", "pull-secret-1");
    let Some(registry) = registry_for(dir.path(), Some(auth)) else {
        return;
    };
    push_image(
        &registry,
        Some(auth),
        "team/private",
        "1",
        &[busybox_layer()],
        &path_only(),
    );
    let server = image_server(&dir.path().join("dev"), &registry);
    let image = format!("{}/team/private:1", registry.host);
    let (workflow, _) = run_as(&server, "alice", &spec("denied", &image, "echo inside"));
    let (status, message) = status_of(&workflow);
    assert_eq!(status, "FAILED_IMAGE_PULL", "{workflow}");
    assert!(message.contains("team/private"), "{message}");

    let set = reqwest::blocking::Client::new()
        .post(format!("{}/api/credentials/registry", server.url))
        .header("x-osmo-user", "alice")
        .json(&json!({"registry_credential": {
            "registry": registry.host, "username": auth.0, "auth": auth.1,
        }}))
        .send()
        .expect("set credential");
    assert_eq!(set.status().as_u16(), 200, "{:?}", set.text());
    let (workflow, logs) = run_as(&server, "alice", &spec("allowed", &image, "echo inside"));
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{workflow}\n{logs}");
    assert!(logs.contains("inside"), "{logs}");
    // Another user's credential is not alice's: bob is still refused.
    let (workflow, _) = run_as(&server, "bob", &spec("bobs", &image, "echo inside"));
    assert_eq!(status_of(&workflow).0, "FAILED_IMAGE_PULL", "{workflow}");
    server.stop();
}

/// Two tasks of a group talk over their shared network (`{{host:server}}`)
/// with the image's own `nc`, which the host need not have. The client
/// stops only once the server answered (a connection made before the
/// server listens may be taken by the network's edge and dropped).
#[test]
fn a_groups_tasks_talk_with_their_images_tools() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry_for(dir.path(), None) else {
        return;
    };
    let config = path_only();
    push_image(
        &registry,
        None,
        "tools/busybox",
        "1",
        &[busybox_layer()],
        &config,
    );
    let server = image_server(&dir.path().join("dev"), &registry);
    let image = format!("{}/tools/busybox:1", registry.host);
    let spec = format!(
        "workflow:\n  name: talk\n  groups:\n  - name: pair\n    tasks:\n    - name: server\n      lead: true\n      image: {image}\n      command: [sh, -c, 'until test -s /tmp/got; do echo pong | nc -l -p 9000 > /tmp/got; done; echo \"server got $(cat /tmp/got)\"']\n    - name: client\n      image: {image}\n      command: [sh, -c, 'for i in $(seq 1 40); do reply=$( (echo ping; sleep 1) | nc -w 3 {{{{host:server}}}} 9000 ); test \"$reply\" = pong && exit 0; sleep 0.5; done; exit 1']\n"
    );
    let (workflow, logs) = run_as(&server, "alice", &spec);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}\n{logs}");
    assert!(logs.contains("server got ping"), "{logs}");
    server.stop();
}

/// Past its size limit the cache evicts the least recently used image no
/// task holds (with its blobs no other image needs); the next use pulls it
/// again.
#[test]
fn the_cache_keeps_to_its_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry_for(dir.path(), None) else {
        return;
    };
    // One image's unpacked root is about busybox's size and its blob less:
    // one fits in twice that, two do not.
    let busybox = std::fs::metadata("/bin/busybox").unwrap().len();
    let limit = (2 * busybox).to_string();
    let mut images = Vec::new();
    for name in ["first", "second"] {
        let marker = Layer {
            entries: vec![Entry::file("etc/which", format!("{name}\n"), 0o644)],
            compression: common::registry::Compression::None,
        };
        let pushed = push_image(
            &registry,
            None,
            &format!("tools/{name}"),
            "1",
            &[busybox_layer(), marker],
            &path_only(),
        );
        images.push((
            format!("{}/tools/{name}:1", registry.host),
            pushed.manifest_digest,
        ));
    }
    let data = dir.path().join("dev");
    let server = DevServer::start_with(
        &data,
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--task-root",
            "image",
            "--insecure-registry",
            &registry.host,
            "--image-cache-max",
            &limit,
        ],
    );
    let unpacked = |digest: &str| {
        data.join("tasks/images/images")
            .join(digest.trim_start_matches("sha256:"))
            .is_dir()
    };
    let (workflow, logs) = run_as(
        &server,
        "alice",
        &spec("first", &images[0].0, "cat /etc/which"),
    );
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(unpacked(&images[0].1));
    let (workflow, logs) = run_as(
        &server,
        "alice",
        &spec("second", &images[1].0, "cat /etc/which"),
    );
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(
        logs.contains(&format!("[image] evicted {}", images[0].1)),
        "{logs}"
    );
    assert!(!unpacked(&images[0].1) && unpacked(&images[1].1));
    let (workflow, logs) = run_as(
        &server,
        "alice",
        &spec("again", &images[0].0, "cat /etc/which"),
    );
    assert_eq!(status_of(&workflow).0, "COMPLETED", "{logs}");
    assert!(
        logs.contains(") pulled, ready in") && logs.contains("first"),
        "{logs}"
    );
    server.stop();
}

/// An OSMO workflow naming a public image (`ubuntu:22.04`, Docker Hub) runs
/// unchanged on a site without the Internet: `--registry-mirror
/// docker.io=...` sends the pull to the site's registry (here holding a
/// busybox image under that name).
#[test]
fn public_images_come_from_the_sites_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry_for(dir.path(), None) else {
        return;
    };
    let extra = Layer {
        entries: vec![Entry::symlink("bin/hostname", "busybox")],
        compression: common::registry::Compression::Gzip,
    };
    push_image(
        &registry,
        None,
        "library/ubuntu",
        "22.04",
        &[busybox_layer(), extra],
        &path_only(),
    );
    let mirror = format!("docker.io={}", registry.host);
    let server = DevServer::start_with(
        &dir.path().join("dev"),
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--task-root",
            "image",
            "--insecure-registry",
            &registry.host,
            "--registry-mirror",
            &mirror,
        ],
    );
    let spec = std::fs::read_to_string(common::osmo_reference(
        "cookbook/tutorials/serial_workflow.yaml",
    ))
    .expect("OSMO's serial workflow");
    let (workflow, logs) = run_as(&server, "alice", &spec);
    assert_eq!(workflow["status"], "COMPLETED", "{workflow}\n{logs}");
    for wanted in [
        "from the mirror",
        "Hello from task1",
        "a line: Data from task 1",
        "Hello from task3",
    ] {
        assert!(logs.contains(wanted), "{wanted} in:\n{logs}");
    }
    server.stop();
}

/// A disk that fills during a pull, and a registry that is not there, end
/// the task FAILED_IMAGE_PULL naming the image and the cause; nothing half
/// pulled is left to be used.
#[test]
fn a_full_disk_or_an_absent_registry_fails_the_pull() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry_for(dir.path(), None) else {
        return;
    };
    push_image(
        &registry,
        None,
        "tools/busybox",
        "1",
        &[busybox_layer()],
        &path_only(),
    );
    // The image cache on a file system far smaller than the image.
    let data = dir.path().join("dev");
    let cache = data.join("tasks/images");
    std::fs::create_dir_all(&cache).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &cache,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k"),
    )
    .expect("mount a small tmpfs (root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(cache.clone());
    let server = image_server(&data, &registry);
    let image = format!("{}/tools/busybox:1", registry.host);
    let (workflow, _) = run_as(&server, "alice", &spec("full", &image, "true"));
    let (status, message) = status_of(&workflow);
    assert_eq!(status, "FAILED_IMAGE_PULL", "{workflow}");
    assert!(
        message.contains("tools/busybox") && message.contains("No space left"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("tmp")).unwrap().count(),
        0,
        "nothing half pulled kept"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );

    let absent = "127.0.0.1:1/tools/busybox:1";
    let (workflow, _) = run_as(&server, "alice", &spec("absent", absent, "true"));
    let (status, message) = status_of(&workflow);
    assert_eq!(status, "FAILED_IMAGE_PULL", "{workflow}");
    assert!(message.contains(absent), "{message}");
    let events = events_of(&server, &workflow);
    assert!(
        events.contains(&format!(
            "[run] Failed: Failed to pull image \"{absent}\": "
        )),
        "{events}"
    );
    server.stop();
}
