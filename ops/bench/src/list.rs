//! `gantry-bench list`: how long a page of the workflow list takes from a
//! member's state of many workflows, for the filters OSMO's CLI sends (one
//! user's page, everyone's, a submit-time window, a label selector, a pool
//! a user never used) and, for scale, a name no workflow has (every ID is
//! read: what a filter the indexes do not hold costs).

use gantry_storage::labels::{LabelSelector, Labels};
use gantry_storage::{
    Command, ListFilter, PackedSubmission, PoolRecord, Priority, Store, Submission,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// Workflows per applied batch while the state is built.
const BUILD_BATCH: usize = 1_000;
/// Times each query runs; the median is printed.
const RUNS: usize = 21;
/// Every this many workflows carries a `team` label.
const LABELLED_EVERY: usize = 10;

fn pool(name: &str) -> Command {
    Command::PutPool {
        pool: PoolRecord {
            name: name.into(),
            description: String::new(),
            backend: "local".into(),
            default_platform: None,
            platforms: Vec::new(),
        },
    }
}

/// Workflow `n`: user `u<n % users>`, pool `gpu` for one in four of user
/// 0's and `default` otherwise, a `team` label on every tenth; invalid, so
/// it ends at once (a workflow row, its indexes, an archive row).
fn submission(n: usize, users: usize) -> anyhow::Result<Command> {
    let user = n % users;
    let pool = if user == 0 && n.is_multiple_of(4) {
        "gpu"
    } else {
        "default"
    };
    let submission = Submission {
        name: "listed".into(),
        uuid: format!("u{n}"),
        pool: pool.into(),
        user: format!("u{user}"),
        priority: Priority::Normal,
        template_spec: String::new(),
        rendered_spec: String::new(),
        plan: Err("bench".into()),
    };
    let now = 1_000 + n as i64;
    if !n.is_multiple_of(LABELLED_EVERY) {
        return Ok(Command::SubmitWorkflow { now, submission });
    }
    let labels = Labels::from([("team".to_string(), format!("team-{}", n % 7))]);
    Ok(Command::SubmitWorkflowWithLabels {
        now,
        packed: PackedSubmission::pack(&submission)?,
        labels,
    })
}

fn median(store: &Store, filter: &ListFilter) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::with_capacity(RUNS);
    let mut found = 0;
    for _ in 0..RUNS {
        let view = store.read()?;
        let started = Instant::now();
        let (workflows, _) = view.list(filter)?;
        times.push(started.elapsed());
        found = workflows.len();
    }
    times.sort_unstable();
    Ok((times[RUNS / 2], found))
}

pub fn run(workflows: usize, users: usize, dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(users > 1, "--users must be at least 2");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("state.redb");
    let _ = std::fs::remove_file(&path);
    let store = Store::open(&path)?;
    store.apply(&[&[pool("default"), pool("gpu")]], b"bench", false)?;
    let built = Instant::now();
    for first in (0..workflows).step_by(BUILD_BATCH) {
        let batch = (first..(first + BUILD_BATCH).min(workflows))
            .map(|n| submission(n, users))
            .collect::<anyhow::Result<Vec<_>>>()?;
        store.apply(&[batch.as_slice()], b"bench", false)?;
    }
    store.sync()?;
    println!(
        "state: {workflows} workflows of {users} users, state.redb {:.1} MiB (built in {:.1} s)",
        std::fs::metadata(&path)?.len() as f64 / 1048576.0,
        built.elapsed().as_secs_f64()
    );
    let page = |filter: ListFilter| ListFilter {
        limit: 20,
        descending: true,
        ..filter
    };
    let last_percent = 1_000 + (workflows - workflows / 100) as i64;
    let queries = [
        (
            "one user's newest page (the CLI's default)",
            page(ListFilter {
                users: vec!["u1".into()],
                ..ListFilter::default()
            }),
        ),
        ("everyone's newest page (-a)", page(ListFilter::default())),
        (
            "everyone's oldest page (-a, ascending)",
            ListFilter {
                limit: 20,
                ..ListFilter::default()
            },
        ),
        (
            "the last 1% of submit times, first page",
            ListFilter {
                limit: 20,
                submitted_after: Some(last_percent),
                ..ListFilter::default()
            },
        ),
        (
            "a label selector (team=team-3, 1 in 70)",
            page(ListFilter {
                labels: vec![LabelSelector::parse("team=team-3").map_err(anyhow::Error::msg)?],
                ..ListFilter::default()
            }),
        ),
        (
            "a user and a pool they use rarely (u0 in gpu)",
            page(ListFilter {
                users: vec!["u0".into()],
                pools: vec!["gpu".into()],
                ..ListFilter::default()
            }),
        ),
        (
            "a user and a pool they never used (u1 in gpu)",
            page(ListFilter {
                users: vec!["u1".into()],
                pools: vec!["gpu".into()],
                ..ListFilter::default()
            }),
        ),
        (
            "a name no workflow has (every ID read)",
            page(ListFilter {
                name: Some("absent".into()),
                ..ListFilter::default()
            }),
        ),
    ];
    for (what, filter) in queries {
        let (time, found) = median(&store, &filter)?;
        println!(
            "{what}: {:.3} ms median of {RUNS} ({found} listed)",
            time.as_secs_f64() * 1e3
        );
    }
    drop(store);
    std::fs::remove_file(&path)?;
    Ok(())
}
