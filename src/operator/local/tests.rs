//! End-to-end tests of the local executor: real bubblewrap, real processes.
//!
//! Each test drives a `LocalOperator` through its channels exactly as the
//! control plane would. Timeouts only guard against hangs; assertions are
//! about what was reported and what the processes did.

use super::{LocalConfig, LocalOperator};
use crate::data::{DataInput, DataStore, TaskData};
use crate::protocol::{
    FromOperator, GroupLaunch, LaunchFile, LaunchInput, LogStream, TaskLaunch, ToOperator,
};
use gantry_storage::{NodeInventory, TaskKey, TaskStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const GUARD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    Status(TaskStatus, Option<i32>, Option<String>),
    Line(LogStream, String),
}

pub(super) struct Harness {
    op: Arc<LocalOperator>,
    work: TempDir,
    to_op: Option<mpsc::Sender<ToOperator>>,
    from_op: mpsc::Receiver<FromOperator>,
    serving: Option<JoinHandle<()>>,
    /// Every message received so far on the current connection, in order.
    seen: Vec<FromOperator>,
    /// Node inventories of the heartbeats received, in order.
    heartbeats: Vec<Vec<NodeInventory>>,
    next_job: u64,
}

impl Harness {
    pub(super) async fn new() -> Harness {
        Harness::with_bwrap(None).await
    }

    async fn with_bwrap(bwrap: Option<PathBuf>) -> Harness {
        let work = tempfile::tempdir().expect("tempdir");
        let op = Arc::new(LocalOperator::new(LocalConfig {
            backend: "local-test".into(),
            work_dir: work.path().to_path_buf(),
            bwrap,
            pids_max: None,
            task_root: super::TaskRoot::Host,
            cdi_dirs: Vec::new(),
        }));
        let (to_op, from_op, serving) = connect(&op);
        let mut harness = Harness {
            op,
            work,
            to_op: Some(to_op),
            from_op,
            serving: Some(serving),
            seen: Vec::new(),
            heartbeats: Vec::new(),
            next_job: 1,
        };
        match harness.recv().await {
            FromOperator::Hello {
                backend,
                version,
                running,
                executor,
            } => {
                assert_eq!(backend, "local-test");
                assert_eq!(executor, "local");
                assert_eq!(version, env!("CARGO_PKG_VERSION"));
                assert!(running.is_empty());
            }
            other => panic!("expected Hello first, got {other:?}"),
        }
        harness
    }

    /// Ends the current connection, waits for `serve` to return, then serves
    /// a new one; returns the new connection's first message.
    async fn reconnect(&mut self) -> FromOperator {
        self.to_op = None;
        if let Some(serving) = self.serving.take() {
            tokio::time::timeout(GUARD, serving)
                .await
                .expect("serve returns when its input closes")
                .expect("serve task");
        }
        let (to_op, from_op, serving) = connect(&self.op);
        self.to_op = Some(to_op);
        self.from_op = from_op;
        self.serving = Some(serving);
        self.seen.clear();
        self.recv().await
    }

    /// The next message other than a heartbeat (those are kept in `heartbeats`).
    async fn recv(&mut self) -> FromOperator {
        loop {
            let message = tokio::time::timeout(GUARD, self.from_op.recv())
                .await
                .expect("operator message before the guard timeout")
                .expect("operator channel open");
            if let FromOperator::Heartbeat { nodes } = message {
                self.heartbeats.push(nodes);
                continue;
            }
            self.seen.push(message.clone());
            return message;
        }
    }

    async fn send(&mut self, message: ToOperator) {
        let to_op = self.to_op.as_ref().expect("connected");
        to_op
            .send(message)
            .await
            .expect("operator accepts messages");
    }

    pub(super) async fn create(&mut self, barrier: bool, tasks: Vec<TaskLaunch>) -> u64 {
        let job_id = self.job();
        let workflow_id = tasks
            .first()
            .map(|t| t.key.workflow_id.clone())
            .unwrap_or_default();
        let group = tasks.first().map(|t| t.group.clone()).unwrap_or_default();
        self.send(ToOperator::CreateGroup {
            job_id,
            group: GroupLaunch {
                workflow_id,
                group,
                barrier,
                tasks,
                meta: Default::default(),
            },
        })
        .await;
        job_id
    }

    async fn cancel(&mut self, workflow_id: &str, group: &str) -> u64 {
        let job_id = self.job();
        self.send(ToOperator::CancelGroup {
            job_id,
            workflow_id: workflow_id.into(),
            group: group.into(),
            reason: "test cancel".into(),
        })
        .await;
        job_id
    }

    fn job(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    async fn wait_job_done(&mut self, job_id: u64) {
        let done =
            |m: &FromOperator| matches!(m, FromOperator::JobDone { job_id: j } if *j == job_id);
        while !self.seen.iter().any(done) {
            self.recv().await;
        }
    }

    /// Receives until `key` reports `status` (or any final status).
    async fn wait_status(
        &mut self,
        key: &TaskKey,
        wanted: impl Fn(TaskStatus) -> bool,
    ) -> Vec<Event> {
        // Heartbeats keep arriving, so each receive's guard alone would
        // never end a wait for a status that does not come.
        let deadline = Instant::now() + GUARD;
        loop {
            let events = self.events(key);
            if events
                .iter()
                .any(|e| matches!(e, Event::Status(s, _, _) if wanted(*s) || s.is_finished()))
            {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no such status of {key:?} within {GUARD:?}: {events:?}"
            );
            self.recv().await;
        }
    }

    pub(super) async fn run_to_end(&mut self, key: &TaskKey) -> Vec<Event> {
        self.wait_status(key, TaskStatus::is_finished).await
    }

    fn events(&self, key: &TaskKey) -> Vec<Event> {
        let mut events = Vec::new();
        for message in &self.seen {
            match message {
                FromOperator::TaskStatus {
                    key: k,
                    status,
                    exit_code,
                    message,
                    ..
                } if k == key => events.push(Event::Status(*status, *exit_code, message.clone())),
                FromOperator::Logs { key: k, lines } if k == key => {
                    events.extend(lines.iter().map(|l| Event::Line(l.stream, l.text.clone())))
                }
                _ => {}
            }
        }
        events
    }
}

fn connect(
    op: &Arc<LocalOperator>,
) -> (
    mpsc::Sender<ToOperator>,
    mpsc::Receiver<FromOperator>,
    JoinHandle<()>,
) {
    let (to_op, op_in) = mpsc::channel(16);
    let (op_out, from_op) = mpsc::channel(1024);
    let op = Arc::clone(op);
    let serving = tokio::spawn(async move { op.serve(op_in, op_out).await });
    (to_op, from_op, serving)
}

pub(super) fn key(workflow_id: &str, task: &str) -> TaskKey {
    TaskKey {
        workflow_id: workflow_id.into(),
        task: task.into(),
        retry_id: 0,
    }
}

pub(super) fn launch(workflow_id: &str, task: &str, script: &str) -> TaskLaunch {
    TaskLaunch {
        key: key(workflow_id, task),
        group: format!("{task}-group"),
        lead: true,
        image: "ubuntu:22.04".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![script.into()],
        environment: BTreeMap::new(),
        files: Vec::new(),
        inputs: Vec::new(),
        placement: Default::default(),
        data: None,
        extras: Default::default(),
    }
}

pub(super) fn statuses(events: &[Event]) -> Vec<TaskStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Status(s, _, _) => Some(*s),
            Event::Line(..) => None,
        })
        .collect()
}

pub(super) fn lines(events: &[Event], stream: LogStream) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Line(s, text) if *s == stream => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn final_of(events: &[Event]) -> (TaskStatus, Option<i32>, String) {
    match events.last() {
        Some(Event::Status(status, code, message)) => {
            (*status, *code, message.clone().unwrap_or_default())
        }
        other => panic!("last event is not a status: {other:?}"),
    }
}

const RAN: [TaskStatus; 4] = [
    TaskStatus::Scheduling,
    TaskStatus::Initializing,
    TaskStatus::Running,
    TaskStatus::Completed,
];

/// A number only this test's processes carry on their command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("600.{}{:09}", std::process::id(), nanos)
}

fn processes_with(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"sleep"))
                && String::from_utf8_lossy(cmdline).contains(marker)
        })
        .count()
}

async fn wait_for_processes(marker: &str, wanted: impl Fn(usize) -> bool) -> usize {
    let start = Instant::now();
    loop {
        let count = processes_with(marker);
        if wanted(count) || start.elapsed() > GUARD {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stdout_and_stderr_arrive_in_order_then_completed() {
    let mut h = Harness::new().await;
    let task = launch(
        "wf-logs",
        "hello",
        "echo one; echo two; echo err1 >&2; echo three; echo err2 >&2",
    );
    let job = h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-logs", "hello")).await;
    h.wait_job_done(job).await;

    assert_eq!(statuses(&events), RAN);
    assert_eq!(final_of(&events).1, Some(0));
    assert_eq!(lines(&events, LogStream::Stdout), ["one", "two", "three"]);
    assert_eq!(lines(&events, LogStream::Stderr), ["err1", "err2"]);
    let osmo = lines(&events, LogStream::Osmo);
    assert!(
        osmo.iter()
            .any(|l| l.contains("ubuntu:22.04") && l.contains("not pulled")),
        "{osmo:?}"
    );
}

#[tokio::test]
async fn many_lines_arrive_complete_in_bounded_batches() {
    let mut h = Harness::new().await;
    h.create(false, vec![launch("wf-many", "seq", "seq 1 5000")])
        .await;
    let task_key = key("wf-many", "seq");
    let events = h.run_to_end(&task_key).await;
    assert_eq!(statuses(&events), RAN);
    let expected: Vec<String> = (1..=5000).map(|n| n.to_string()).collect();
    assert_eq!(lines(&events, LogStream::Stdout), expected);
    let largest_batch = h
        .seen
        .iter()
        .filter_map(|m| match m {
            FromOperator::Logs { key, lines } if *key == task_key => Some(lines.len()),
            _ => None,
        })
        .max();
    assert!(largest_batch.is_some_and(|n| n <= 256), "{largest_batch:?}");
}

#[tokio::test]
async fn nonzero_exit_is_failed_with_its_code() {
    let mut h = Harness::new().await;
    h.create(false, vec![launch("wf-exit", "fails", "echo bye; exit 3")])
        .await;
    let events = h.run_to_end(&key("wf-exit", "fails")).await;
    let (status, code, _) = final_of(&events);
    assert_eq!((status, code), (TaskStatus::Failed, Some(3)));
    assert_eq!(lines(&events, LogStream::Stdout), ["bye"]);
}

#[tokio::test]
async fn files_are_placed_read_only_at_their_paths() {
    let mut h = Harness::new().await;
    let mut task = launch(
        "wf-files",
        "reader",
        "cat /tmp/gantry-test/conf.txt /opt/data/in.txt; \
         if (echo x > /opt/data/in.txt) 2>/dev/null; then echo writable; else echo read-only; fi",
    );
    task.files = vec![
        LaunchFile {
            path: "/tmp/gantry-test/conf.txt".into(),
            contents: b"conf line\n".to_vec(),
        },
        LaunchFile {
            path: "/opt/data/in.txt".into(),
            contents: b"data line\n".to_vec(),
        },
    ];
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-files", "reader")).await;
    assert_eq!(statuses(&events), RAN, "{events:?}");
    assert_eq!(
        lines(&events, LogStream::Stdout),
        ["conf line", "data line", "read-only"]
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_placed_fails_the_start() {
    let mut h = Harness::new().await;
    let mut task = launch("wf-badfile", "t", "true");
    task.files = vec![LaunchFile {
        path: "/usr/gantry-test/new.conf".into(),
        contents: b"x".to_vec(),
    }];
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-badfile", "t")).await;
    let (status, code, message) = final_of(&events);
    assert_eq!((status, code), (TaskStatus::FailedStartError, Some(3003)));
    assert!(message.contains("/usr/gantry-test/new.conf"), "{message}");
}

#[tokio::test]
async fn environment_is_exactly_the_launch_and_identity() {
    let mut h = Harness::new().await;
    let mut task = launch("wf-env", "printenv", "");
    task.command = vec!["/usr/bin/env".into()];
    task.args = Vec::new();
    task.key.retry_id = 4;
    task.environment.insert("FOO".into(), "bar baz".into());
    h.create(false, vec![task.clone()]).await;
    let events = h.run_to_end(&task.key).await;
    assert_eq!(statuses(&events), RAN);

    let env: BTreeMap<String, String> = lines(&events, LogStream::Stdout)
        .iter()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let names: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "FOO",
        "HOME",
        "PATH",
        "OSMO_WORKFLOW_ID",
        "OSMO_TASK_NAME",
        "OSMO_RETRY_ID",
        // Set by bwrap's --chdir; a value of the sandbox, not of the host.
        "PWD",
        // Empty for a task without GPUs, as OSMO sets it on Kubernetes.
        "NVIDIA_VISIBLE_DEVICES",
    ]
    .into();
    assert_eq!(names, expected, "no host variable may leak in");
    assert_eq!(env["FOO"], "bar baz");
    assert_eq!(env["HOME"], "/tmp");
    assert_eq!(env["PWD"], "/tmp");
    assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(env["OSMO_WORKFLOW_ID"], "wf-env");
    assert_eq!(env["OSMO_TASK_NAME"], "printenv");
    assert_eq!(env["OSMO_RETRY_ID"], "4");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "");
}

/// A `file://` data store inside the harness's work dir.
fn store_of(h: &Harness) -> DataStore {
    DataStore {
        root: format!("file://{}/store", h.work.path().display()),
        ..DataStore::default()
    }
}

/// `task` with data through `store`: inputs read task outputs (or URLs),
/// and its output is published to its intermediate prefix.
fn with_data(mut task: TaskLaunch, store: &DataStore, inputs: Vec<DataInput>) -> TaskLaunch {
    task.inputs = inputs
        .iter()
        .map(|input| LaunchInput::Url {
            url: input.url.clone(),
            regex: input.regex.clone(),
        })
        .collect();
    task.data = Some(TaskData {
        user_stores: Vec::new(),
        store: store.clone(),
        inputs,
        outputs: Vec::new(),
        intermediate: Some(store.task_url(&task.key.workflow_id, &task.key.task)),
    });
    task
}

fn task_input(store: &DataStore, workflow_id: &str, task: &str, regex: Option<&str>) -> DataInput {
    DataInput {
        source: format!("task {task}"),
        url: store.task_url(workflow_id, task),
        regex: regex.map(str::to_string),
    }
}

fn data_times(h: &Harness, key: &TaskKey) -> Vec<gantry_storage::TaskDataTimes> {
    h.seen
        .iter()
        .filter_map(|message| match message {
            FromOperator::DataTimes { key: k, times } if k == key => Some(times.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn output_of_one_task_is_a_read_only_input_of_the_next() {
    let mut h = Harness::new().await;
    let store = store_of(&h);
    let writer = launch(
        "wf-data",
        "a",
        "echo result > /osmo/data/output/result.txt && mkdir /osmo/data/output/sub && echo deep > /osmo/data/output/sub/x",
    );
    h.create(false, vec![with_data(writer, &store, Vec::new())])
        .await;
    let events = h.run_to_end(&key("wf-data", "a")).await;
    assert_eq!(statuses(&events), RAN);
    // Published to the intermediate prefix, with the marker.
    let published = h.work.path().join("store/wf-data/a");
    assert_eq!(
        std::fs::read_to_string(published.join("result.txt"))
            .ok()
            .as_deref(),
        Some("result\n")
    );
    assert!(published.join(".gantry-output").is_file());
    let osmo = lines(&events, LogStream::Osmo);
    assert!(
        osmo.iter()
            .any(|l| l.starts_with("[upload] intermediate output: 2 files, 12 B in ")),
        "{osmo:?}"
    );
    let times = data_times(&h, &key("wf-data", "a"));
    assert!(
        times.iter().any(
            |t| t.output_upload_start.is_some() && t.output_upload_end >= t.output_upload_start
        ),
        "{times:?}"
    );

    let reader = launch(
        "wf-data",
        "b",
        "cat /osmo/data/input/0/result.txt /osmo/data/input/0/sub/x; \
         ls -A /osmo/data/input/0; \
         if (echo x > /osmo/data/input/0/new) 2>/dev/null; then echo writable; else echo read-only; fi",
    );
    let inputs = vec![task_input(&store, "wf-data", "a", None)];
    h.create(false, vec![with_data(reader, &store, inputs)])
        .await;
    let events = h.run_to_end(&key("wf-data", "b")).await;
    assert_eq!(statuses(&events), RAN);
    assert_eq!(
        lines(&events, LogStream::Stdout),
        ["result", "deep", "result.txt", "sub", "read-only"],
        "the marker is not data"
    );
    let osmo = lines(&events, LogStream::Osmo);
    assert!(
        osmo.iter()
            .any(|l| l.starts_with("[download] input 0 (task a): 2 files, 12 B in ")),
        "{osmo:?}"
    );
    let times = data_times(&h, &key("wf-data", "b"));
    assert!(
        times
            .iter()
            .any(|t| t.input_download_start.is_some() && t.input_download_end.is_some()),
        "{times:?}"
    );
}

#[tokio::test]
async fn regex_input_holds_only_matching_paths() {
    let mut h = Harness::new().await;
    let store = store_of(&h);
    let writer = launch(
        "wf-regex",
        "a",
        "cd /osmo/data/output && mkdir sub && echo 1 > a.csv && echo 2 > b.txt && echo 3 > sub/c.csv",
    );
    h.create(false, vec![with_data(writer, &store, Vec::new())])
        .await;
    assert_eq!(statuses(&h.run_to_end(&key("wf-regex", "a")).await), RAN);

    let reader = launch(
        "wf-regex",
        "b",
        "cd /osmo/data/input/0 && find . -type f | sort",
    );
    let inputs = vec![task_input(&store, "wf-regex", "a", Some(r"\.csv$"))];
    h.create(false, vec![with_data(reader, &store, inputs)])
        .await;
    let events = h.run_to_end(&key("wf-regex", "b")).await;
    assert_eq!(statuses(&events), RAN);
    assert_eq!(
        lines(&events, LogStream::Stdout),
        ["./a.csv", "./sub/c.csv"]
    );
}

#[tokio::test]
async fn a_missing_input_fails_with_2010_naming_it() {
    let mut h = Harness::new().await;
    let store = store_of(&h);
    let task = launch("wf-miss", "t", "echo should not run");
    let inputs = vec![task_input(&store, "wf-miss", "ghost", None)];
    h.create(false, vec![with_data(task, &store, inputs)]).await;
    let events = h.run_to_end(&key("wf-miss", "t")).await;
    let (status, code, message) = final_of(&events);
    assert_eq!((status, code), (TaskStatus::Failed, Some(2010)));
    let prefix = store.task_url("wf-miss", "ghost");
    assert_eq!(
        message,
        format!("input 0 (task ghost): nothing is stored at {prefix} (the task never published its output)")
    );
    assert!(!statuses(&events).contains(&TaskStatus::Running));
    assert!(lines(&events, LogStream::Stdout).is_empty());
    assert!(
        lines(&events, LogStream::Osmo)
            .iter()
            .any(|l| l.starts_with("[download] failed: input 0 (task ghost)")),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_upload_failure_fails_with_2012_and_a_cancel_uploads_nothing() {
    let mut h = Harness::new().await;
    let store = store_of(&h);
    let mut task = with_data(
        launch("wf-up", "t", "echo x > /osmo/data/output/x"),
        &store,
        Vec::new(),
    );
    if let Some(data) = task.data.as_mut() {
        data.outputs.push(crate::data::DataOutput {
            url: "gs://elsewhere/out".into(),
            regex: None,
        });
    }
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-up", "t")).await;
    let (status, code, message) = final_of(&events);
    assert_eq!((status, code), (TaskStatus::Failed, Some(2012)));
    assert!(
        message.starts_with("output upload to gs://elsewhere/out:")
            && message.contains("unsupported scheme 'gs'"),
        "{message}"
    );

    let task = with_data(
        launch("wf-up", "c", "echo x > /osmo/data/output/x; sleep 30"),
        &store,
        Vec::new(),
    );
    h.create(false, vec![task]).await;
    h.wait_status(&key("wf-up", "c"), |s| s == TaskStatus::Running)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.cancel("wf-up", "c-group").await;
    let (status, _, _) = final_of(&h.run_to_end(&key("wf-up", "c")).await);
    assert_eq!(status, TaskStatus::Failed);
    assert!(!h.work.path().join("store/wf-up/c").exists());
}

#[tokio::test]
async fn command_and_args_get_kubelets_var_expansion() {
    let mut h = Harness::new().await;
    let mut task = launch(
        "wf-refs",
        "t",
        "echo '$(GREETING)' '$$(GREETING)' '$(UNSET)' \"$GREETING\"",
    );
    task.command = vec!["$(SHELL_PATH)".into(), "-c".into()];
    task.environment = BTreeMap::from([
        ("GREETING".to_string(), "hello".to_string()),
        ("SHELL_PATH".to_string(), "/bin/sh".to_string()),
    ]);
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-refs", "t")).await;
    assert_eq!(statuses(&events), RAN);
    assert_eq!(
        lines(&events, LogStream::Stdout),
        ["hello $(GREETING) $(UNSET) hello"]
    );
}

#[tokio::test]
async fn output_is_writable_and_host_paths_are_hidden() {
    let mut h = Harness::new().await;
    // `$$$$`: kubelet's expansion (which the executor applies) turns `$$`
    // into `$`, so the shell's `$$` is written `$$$$`, as on Kubernetes.
    let task = launch(
        "wf-iso",
        "t",
        "for p in /root /home /work /var /opt; do test -e $p && echo visible $p; done; \
         echo $$$$ > /osmo/data/output/pid; cat /osmo/data/output/pid",
    );
    h.create(false, vec![task]).await;
    let events = h.run_to_end(&key("wf-iso", "t")).await;
    assert_eq!(statuses(&events), RAN);
    // A fresh PID namespace: the task's shell is not the host's view of it.
    let out = lines(&events, LogStream::Stdout);
    assert!(
        out.len() == 1 && out[0].parse::<u32>().is_ok_and(|pid| pid < 10),
        "{out:?}"
    );
    // The run is over: its host directory is gone.
    assert!(!h.work.path().join("wf-iso/t").exists());
}

#[tokio::test]
async fn cancel_kills_the_whole_process_tree() {
    let mut h = Harness::new().await;
    let mark = marker();
    let task = launch(
        "wf-cancel",
        "sleeper",
        &format!("sleep {mark} & sleep {mark}"),
    );
    h.create(false, vec![task]).await;
    let task_key = key("wf-cancel", "sleeper");
    h.wait_status(&task_key, |s| s == TaskStatus::Running).await;
    assert_eq!(
        wait_for_processes(&mark, |n| n == 2).await,
        2,
        "both sleeps started"
    );

    let started = Instant::now();
    let job = h.cancel("wf-cancel", "sleeper-group").await;
    let events = h.run_to_end(&task_key).await;
    let took = started.elapsed();
    h.wait_job_done(job).await;

    let (status, code, message) = final_of(&events);
    assert_eq!((status, code), (TaskStatus::Failed, Some(128 + 9)));
    assert!(message.contains("test cancel"), "{message}");
    assert_eq!(
        wait_for_processes(&mark, |n| n == 0).await,
        0,
        "no sleep survives"
    );
    eprintln!("cancel reported after {took:?}");
}

#[tokio::test]
async fn missing_bwrap_fails_every_task_with_the_install_hint() {
    let mut h = Harness::with_bwrap(Some(PathBuf::from("/nonexistent/bwrap"))).await;
    let tasks = vec![
        launch("wf-nobwrap", "a", "true"),
        launch("wf-nobwrap", "b", "true"),
    ];
    h.create(false, tasks).await;
    for task in ["a", "b"] {
        let events = h.run_to_end(&key("wf-nobwrap", task)).await;
        assert_eq!(
            statuses(&events),
            [TaskStatus::Scheduling, TaskStatus::FailedStartError]
        );
        let (_, code, message) = final_of(&events);
        assert_eq!(code, Some(3003));
        assert!(message.contains("apt-get install bubblewrap"), "{message}");
    }
}

#[tokio::test]
async fn hello_lists_running_tasks_after_a_reconnect() {
    let mut h = Harness::new().await;
    let mark = marker();
    let task_key = key("wf-reconnect", "long");
    h.create(
        false,
        vec![launch("wf-reconnect", "long", &format!("sleep {mark}"))],
    )
    .await;
    h.wait_status(&task_key, |s| s == TaskStatus::Running).await;

    match h.reconnect().await {
        FromOperator::Hello { running, .. } => assert_eq!(running, vec![task_key.clone()]),
        other => panic!("expected Hello first, got {other:?}"),
    }
    // Reports of the still-running task now arrive on the new connection.
    h.cancel("wf-reconnect", "long-group").await;
    let (status, _, _) = final_of(&h.run_to_end(&task_key).await);
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(wait_for_processes(&mark, |n| n == 0).await, 0);
}

#[tokio::test]
async fn duplicate_dispatch_is_acked_and_a_finished_key_runs_again() {
    let mut h = Harness::new().await;
    let mark = marker();
    let task = launch("wf-dup", "t", &format!("sleep {mark}"));
    let task_key = task.key.clone();
    h.create(false, vec![task.clone()]).await;
    h.wait_status(&task_key, |s| s == TaskStatus::Running).await;
    assert_eq!(wait_for_processes(&mark, |n| n == 1).await, 1);

    let again = h.create(false, vec![task]).await;
    h.wait_job_done(again).await;
    assert_eq!(processes_with(&mark), 1);
    h.cancel("wf-dup", "t-group").await;
    let events = h.run_to_end(&task_key).await;
    let scheduled = statuses(&events)
        .iter()
        .filter(|s| **s == TaskStatus::Scheduling)
        .count();
    assert_eq!(scheduled, 1, "the duplicate did not start a second run");

    // Once finished, the same key is a re-dispatch and runs again.
    h.seen.clear();
    h.create(false, vec![launch("wf-dup", "t", "echo rerun")])
        .await;
    let events = h.run_to_end(&task_key).await;
    assert_eq!(statuses(&events), RAN);
    assert_eq!(lines(&events, LogStream::Stdout), ["rerun"]);
}

#[tokio::test]
async fn barrier_group_prepares_all_before_any_runs() {
    let mut h = Harness::new().await;
    let mut a = launch("wf-gang", "a", "echo a");
    let mut b = launch("wf-gang", "b", "echo b");
    a.group = "gang".into();
    b.group = "gang".into();
    h.create(true, vec![a, b]).await;
    for task in ["a", "b"] {
        assert_eq!(statuses(&h.run_to_end(&key("wf-gang", task)).await), RAN);
    }
    let first_running = h
        .seen
        .iter()
        .position(|m| {
            matches!(
                m,
                FromOperator::TaskStatus {
                    status: TaskStatus::Running,
                    ..
                }
            )
        })
        .unwrap_or(usize::MAX);
    let initializing: Vec<usize> = h
        .seen
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            matches!(
                m,
                FromOperator::TaskStatus {
                    status: TaskStatus::Initializing,
                    ..
                }
            )
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(initializing.len(), 2);
    assert!(initializing.iter().all(|&i| i < first_running));
}

#[tokio::test]
async fn cancel_of_an_unknown_group_is_acked() {
    let mut h = Harness::new().await;
    let job = h.cancel("wf-none", "nothing").await;
    h.wait_job_done(job).await;
}

#[tokio::test]
async fn shutdown_kills_running_tasks() {
    let mut h = Harness::new().await;
    let mark = marker();
    let task_key = key("wf-shutdown", "t");
    h.create(
        false,
        vec![launch("wf-shutdown", "t", &format!("sleep {mark}"))],
    )
    .await;
    h.wait_status(&task_key, |s| s == TaskStatus::Running).await;
    h.op.shutdown().await;
    let (status, _, _) = final_of(&h.run_to_end(&task_key).await);
    assert_eq!(status, TaskStatus::Failed);
    assert_eq!(wait_for_processes(&mark, |n| n == 0).await, 0);
}

#[tokio::test]
async fn a_heartbeat_with_this_host_follows_hello() {
    let mut h = Harness::new().await;
    let deadline = tokio::time::Instant::now() + GUARD;
    while h.heartbeats.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat");
        let message = tokio::time::timeout(GUARD, h.from_op.recv())
            .await
            .expect("a message")
            .expect("channel open");
        if let FromOperator::Heartbeat { nodes } = message {
            h.heartbeats.push(nodes);
        }
    }
    let nodes = &h.heartbeats[0];
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].cpu_millis >= 1000, "{nodes:?}");
    assert!(nodes[0].memory_bytes > 0, "{nodes:?}");
    assert!(nodes[0].ephemeral_storage_bytes > 0, "{nodes:?}");
}

#[tokio::test]
async fn a_group_shares_one_network_namespace_even_across_launches() {
    let mut h = Harness::new().await;
    let mark = marker();
    let netns = "readlink /proc/self/ns/net";
    let mut first = launch("wf-net", "a", &format!("{netns}; sleep {mark}"));
    first.group = "g".into();
    h.create(false, vec![first]).await;
    h.wait_status(&key("wf-net", "a"), |s| s == TaskStatus::Running)
        .await;
    assert_eq!(wait_for_processes(&mark, |n| n == 1).await, 1);

    // A task of the same group launched on its own (as a retry is) joins
    // the running one's namespace; another group has its own, and neither
    // is this host's.
    let mut second = launch("wf-net", "b", netns);
    second.group = "g".into();
    h.create(false, vec![second]).await;
    let other = launch("wf-net", "c", netns);
    h.create(false, vec![other]).await;
    let b = lines(&h.run_to_end(&key("wf-net", "b")).await, LogStream::Stdout);
    let c = lines(&h.run_to_end(&key("wf-net", "c")).await, LogStream::Stdout);
    h.cancel("wf-net", "g").await;
    let a = lines(&h.run_to_end(&key("wf-net", "a")).await, LogStream::Stdout);
    let host = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].starts_with("net:["), "{a:?}");
    assert_eq!(a, b, "same group, same namespace");
    assert_ne!(a, c, "another group, another namespace");
    assert_ne!(a[0], host);
    assert_ne!(c[0], host);
}

#[tokio::test]
async fn a_pod_template_with_host_network_gives_the_hosts_network() {
    let mut h = Harness::new().await;
    let mut task = launch("wf-hostnet", "hil", "readlink /proc/self/ns/net");
    task.placement.pod_templates = vec![serde_json::json!({"spec": {"hostNetwork": true}})];
    h.create(false, vec![task]).await;
    let out = lines(
        &h.run_to_end(&key("wf-hostnet", "hil")).await,
        LogStream::Stdout,
    );
    let host = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    assert_eq!(out, [host]);
}
