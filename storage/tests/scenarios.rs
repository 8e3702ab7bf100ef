//! Data-driven scenarios for the pure state machine, in the spirit of
//! etcd-io/raft's `testdata` scripts.
//!
//! Every `storage/testdata/*.txt` file is run. A file is a sequence of
//! cases; each case starts with a `case <title>` line and runs against a
//! fresh, empty store. One line is one step. `#` starts a comment (outside
//! quotes). Arguments are words, `key=value` pairs and `key~=value` pairs
//! (substring match in expectations); a value may be double-quoted to hold
//! spaces. A value of `none` in an expectation means "absent".
//!
//! Commands (each becomes one `Store::apply` call; `at` is the proposer's
//! clock, `now` in the command):
//!
//! ```text
//! case <title>                         fresh store
//! pool NAME backend=B [description=D]  PutPool
//! submit name=N at=T groups=SPEC [pool=default] [user=alice] [priority=NORMAL]
//!        [ignore_nonlead=true] [barrier=true] [exec_timeout=S] [queue_timeout=S]
//!        [exit_actions=TASK:ACTION=CODES;...]
//!     SPEC is `;`-separated groups: `name[tasks]<-up1,up2`. Without `[tasks]`
//!     the group has one lead task named like the group; with it, tasks are
//!     `,`-separated and `*` marks the lead (so `g[x,y]` has no lead).
//!     Shorthand for one group: `group=train tasks=master*,w1,w2`.
//!     CODES: `1`, `1-10`, `0,2-5`; ACTION: COMPLETE | FAIL | RESCHEDULE.
//!     Every task runs `["true"]` with the image `ubuntu:24.04`.
//!     [labels=KEY=VALUE,...]  SubmitWorkflowWithLabels instead of SubmitWorkflow
//! submit-invalid name=N at=T error=MSG [pool=default] [labels=...]  plan = Err(MSG)
//! tag WF [add=a,b] [remove=c,d]        TagWorkflow
//! config-tag TYPE revision=N [set=a,b] [delete=c]   TagConfigRevision
//! config-delete-revision TYPE revision=N            DeleteConfigRevision
//! report WF TASK STATUS at=T [exit=N] [message=M] [node=X] [time=T] [retry=N]
//! cancel WF by=USER at=T [force] [message=M]
//! fire-due at=T                        FireTimer for every timer due at or before T,
//!                                      earliest first, all in one apply call
//! fire id=N due=D at=T                 one raw FireTimer
//! complete-jobs                        CompleteJob for every queued job, in one apply call
//! complete-job id=N                    one raw CompleteJob
//! hello backend=B at=T [running=WF/TASK/RETRY,...] [executor=E]
//!     OperatorHello, or OperatorHelloWithExecutor with `executor`
//! config-put TYPE [NAME] at=T by=U [description=D] [tags=a,b] ...   PutConfig
//!     POOL: backend=B [platforms=p,q] [default_platform=P] [maintenance=true]
//!           [default_exit_actions=ACTION:CODES;...] [default_exec_timeout=D]
//!           [default_queue_timeout=D] [max_exec_timeout=D] [max_queue_timeout=D]
//!     BACKEND: [scheduler=kai|default|volcano] [dashboard=URL]
//!     ROLE: [effect=Allow|Deny] actions=a,b [resources=r,s]
//!     WORKFLOW: retention=DURATION (its `workflow_log.retention`) or json=TEXT
//!     other types: json=TEXT
//! config-delete TYPE NAME at=T by=U    DeleteConfig
//! config-rollback TYPE revision=N at=T by=U   RollbackConfig
//! log-chunk WF/TASK/RETRY first=N last=N   AppendLogChunk (one line per offset)
//! heartbeat backend=B at=T offline_after=MS [fail_after=MS]
//!           [nodes=NAME:CPU_MILLIS:MEMORY_BYTES:GPUS,...]   BackendHeartbeat
//! events WF TASK [retry=N] [count=N] TIME:REASON:MESSAGE ...   RecordTaskEvents
//!     (`\\n` in a reason stands for a newline; `count` repeats the events)
//! dump [WF]                            print state to stderr (debugging aid)
//! ```
//!
//! Expectations (about the previous command or the current state):
//!
//! ```text
//! expect outcome applied | submitted ID [failure=M] | canceled ID
//!              | rejected not-found|conflict|invalid [message=M | message~=M]
//!     every outcome of the previous command must match (at least one)
//!              | revision N
//! expect outcomes none                 the previous command produced no outcome
//! expect unchanged                     export_snapshot equals the one taken
//! expect task-events WF TASK -> RETRY@TIME:REASON:MESSAGE ... | none
//! expect task-events-count WF TASK N [first=TIME:REASON:MESSAGE] [last=...]
//!                                      just before the previous command
//! expect workflow ID STATUS [cancelled_by=U] [cancel_message=M] [failure=M]
//!                 [submit=T] [start=T] [end=T] [pool=P] [backend=B]
//! expect group WF NAME STATUS [dispatched=BOOL] [start=T] [end=T] [failure=M]
//!                 [remaining_upstream=a,b]
//! expect task WF NAME STATUS [exit=N] [failure=M] [start=T] [end=T] [node=X] [retry=N]
//! expect runs WF TASK -> RETRY:STATUS[:EXIT] ... | none   earlier (ended) runs, oldest first
//! expect jobs none | KIND:WF/GROUP[@BACKEND] ...    exact queue, oldest first
//!     KIND is CreateGroup or CancelGroup
//! expect timers N | none | exec:WF/GROUP@DUE queue:WF/GROUP@DUE
//!               offline:BACKEND@DUE lost:BACKEND@DUE archive:WF@DUE purge:WF@DUE ...
//!     pending timers (earliest first) from due_timers(i64::MAX, ...)
//! expect next-timer T | none
//! expect list [status=A,B] [name=S] [pool=P,Q] [user=U,V] [tag=T,U] [priority=P,Q]
//!             [after=T] [before=T] [label=KEY=SEL;KEY=SEL] [no_label=K,L]
//!             [offset=N] [limit=N] [desc] -> ID... [+more]
//! expect find ID-OR-UUID -> ID | none  the workflow a lookup by ID or uuid finds
//! expect labels WF -> KEY:VALUE ... | none
//! expect tags WF -> TAG ... | none
//! expect history-tags TYPE revision=N -> TAG ... | none
//! expect counts none | STATUS=N ...    exact count_by_status (any order)
//! expect tasks [status=A,B] [workflow=S] [user=U,V] [pool=P,Q] [node=N,M]
//!              [priority=HIGH,..] [after=T] [before=T] [limit=N] -> WF/TASK/RETRY ...
//!     the task list (`visit_tasks`) in its order, the first `limit` runs
//! expect config TYPE [NAME] revision=N|none [user=U] [description=D] [backend=B]
//! expect history TYPE -> REV:NAME:put|delete ... | none
//! expect backend NAME none | [online=BOOL] [last_heartbeat=T] [nodes=N]
//!                [configured=BOOL] [scheduler=S] [executor=E]
//! expect pool NAME none | [backend=B]     the routing row submit uses
//! expect archive WF none | [end=T] [retention=MS|none] [purge_due=T|none]
//!                [archived=T|none] [purged=T|none]     the workflow_archive row
//! expect log-chunks WF [task=T] [retry=N] -> TASK/RETRY:FIRST-LAST ... | none
//!     indexed chunks in commit order
//!     (batch items may hold `SEQ:chunk:WF/TASK/RETRY:FIRST:LAST`)
//! ```
//!
//! After every command the runner checks two lifecycle invariants (every
//! finished group has only finished tasks; every finished workflow has only
//! finished groups), and at the end of each case it replays every command the
//! case applied into a fresh store in a single `apply` call and requires the
//! same outcomes and the same snapshot bytes (replay determinism).
//!
//! `storage/testdata/KNOWN_DIFFERENCES.md` holds scenarios (fenced
//! ```` ```scenario ```` blocks) where the state machine is believed to
//! differ from the OSMO reference. They are run too, and must still FAIL: when
//! one starts passing, move it into a `.txt` file.

use gantry_storage::labels::LabelSelector;
use gantry_storage::plan::{
    ExitAction, ExitActionPlan, GroupPlan, ResourcePlan, TaskPlan, WorkflowPlan,
};
use gantry_storage::{
    BackendSettings, Command, ConfigData, ConfigMeta, ConfigType, JobKind, ListFilter, LogChunk,
    NodeInventory, Outcome, PackedSubmission, Policy, PolicyEffect, PoolConfig, PoolExtras,
    PoolRecord, Priority, RejectionKind, RoleConfig, SchedulerType, Store, Submission,
    TaskDataTimes, TaskFilter, TaskKey, TaskReport, TaskStatus, TimerKind, TopologyKey,
    WorkflowStatus,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Res<T = ()> = Result<T, String>;

const META: &[u8] = b"scenario-meta";

// ---------------------------------------------------------------------------
// Line parsing
// ---------------------------------------------------------------------------

/// One step's arguments: positional words and `key=value` / `key~=value` pairs.
#[derive(Debug, Default)]
struct Args {
    pos: Vec<String>,
    /// (key, value, is_substring_match)
    kv: Vec<(String, String, bool)>,
}

impl Args {
    fn parse(tokens: Vec<String>) -> Args {
        let mut args = Args::default();
        for token in tokens {
            // Positional words may contain '=' only if quoted from the start.
            match token.split_once('=') {
                Some((key, value))
                    if !key.is_empty()
                        && !key.starts_with('"')
                        && !key.contains(char::is_whitespace) =>
                {
                    let (key, contains) = match key.strip_suffix('~') {
                        Some(key) => (key, true),
                        None => (key, false),
                    };
                    args.kv.push((key.to_string(), unquote(value), contains));
                }
                _ => args.pos.push(unquote(&token)),
            }
        }
        args
    }

    fn allow(&self, keys: &[&str]) -> Res {
        for (key, _, _) in &self.kv {
            if !keys.contains(&key.as_str()) {
                return Err(format!(
                    "unknown argument '{key}' (allowed: {})",
                    keys.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.kv
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    fn entry(&self, key: &str) -> Option<(&str, bool)> {
        self.kv
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, contains)| (v.as_str(), *contains))
    }

    fn need(&self, key: &str) -> Res<&str> {
        self.get(key)
            .ok_or_else(|| format!("missing argument '{key}='"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Res<Option<T>> {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| format!("'{key}={v}' is not a number"))
            })
            .transpose()
    }

    fn need_num<T: std::str::FromStr>(&self, key: &str) -> Res<T> {
        self.num(key)?
            .ok_or_else(|| format!("missing argument '{key}='"))
    }

    fn flag(&self, word: &str) -> bool {
        self.pos.iter().any(|p| p == word)
    }

    fn bool(&self, key: &str, default: bool) -> Res<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(format!("'{key}={other}' is not true/false")),
        }
    }

    fn pos(&self, index: usize, what: &str) -> Res<&str> {
        self.pos
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {what}"))
    }
}

/// `a,b,c` as a list (nothing for `None`).
fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The words after `->`, without a lone `none`.
fn after_arrow(args: &Args, missing: &str) -> Res<Vec<String>> {
    let arrow = args
        .pos
        .iter()
        .position(|p| p == "->")
        .ok_or_else(|| missing.to_string())?;
    Ok(args.pos[arrow + 1..]
        .iter()
        .filter(|w| *w != "none")
        .cloned()
        .collect())
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map_or_else(|| s.to_string(), str::to_string)
}

/// Splits on whitespace, keeping double-quoted parts (quotes included) together
/// and dropping a `#` comment that starts outside quotes.
fn tokenize(line: &str) -> Res<Vec<String>> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '#' if !quoted && current.is_empty() => break,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Building commands
// ---------------------------------------------------------------------------

/// A task with `command: ["true"]` and every other field at its default.
fn task_plan(name: &str, lead: bool) -> TaskPlan {
    TaskPlan {
        name: name.to_string(),
        lead,
        image: "ubuntu:24.04".into(),
        command: vec!["true".into()],
        args: Vec::new(),
        environment: BTreeMap::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        files: Vec::new(),
        resource: ResourcePlan {
            name: "default".into(),
            ..ResourcePlan::default()
        },
        exit_actions: Vec::new(),
        credentials: BTreeMap::new(),
        privileged: false,
        host_network: false,
        volume_mounts: Vec::new(),
    }
}

fn parse_tasks(spec: &str) -> Vec<TaskPlan> {
    spec.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| match t.strip_suffix('*') {
            Some(name) => task_plan(name, true),
            None => task_plan(t, false),
        })
        .collect()
}

fn parse_groups(spec: &str, ignore_nonlead: bool, barrier: bool) -> Res<Vec<GroupPlan>> {
    let mut groups = Vec::new();
    for part in spec.split(';').filter(|p| !p.is_empty()) {
        let (head, upstream) = match part.split_once("<-") {
            Some((head, ups)) => (head, ups.split(',').map(str::to_string).collect()),
            None => (part, Vec::new()),
        };
        let (name, tasks) = match head.split_once('[') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("group spec '{part}': missing ']'"))?;
                (name, parse_tasks(inner))
            }
            None => (head, vec![task_plan(head, true)]),
        };
        groups.push(GroupPlan {
            name: name.to_string(),
            tasks,
            upstream,
            barrier,
            ignore_nonlead_status: ignore_nonlead,
        });
    }
    Ok(groups)
}

fn parse_codes(spec: &str) -> Res<Vec<(i32, i32)>> {
    spec.split(',')
        .map(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            let parse = |s: &str| {
                s.parse::<i32>()
                    .map_err(|_| format!("bad exit code range '{range}'"))
            };
            Ok((parse(low)?, parse(high)?))
        })
        .collect()
}

fn apply_exit_actions(groups: &mut [GroupPlan], spec: &str) -> Res {
    for rule in spec.split(';').filter(|r| !r.is_empty()) {
        let (task, rest) = rule
            .split_once(':')
            .ok_or_else(|| format!("exit action '{rule}': want TASK:ACTION=CODES"))?;
        let (action, codes) = rest
            .split_once('=')
            .ok_or_else(|| format!("exit action '{rule}': want TASK:ACTION=CODES"))?;
        let action = match action {
            "COMPLETE" => ExitAction::Complete,
            "FAIL" => ExitAction::Fail,
            "RESCHEDULE" => ExitAction::Reschedule,
            other => return Err(format!("unknown exit action '{other}'")),
        };
        let plan = groups
            .iter_mut()
            .flat_map(|g| g.tasks.iter_mut())
            .find(|t| t.name == task)
            .ok_or_else(|| format!("exit action for unknown task '{task}'"))?;
        plan.exit_actions.push(ExitActionPlan {
            action,
            codes: parse_codes(codes)?,
        });
    }
    Ok(())
}

/// One `SEQ:ITEM` of a `batch` step: `report:WF/TASK/RETRY:STATUS[:EXIT]`,
/// `job:ID`, `hello:BACKEND:KEY,KEY`, `hello-with:BACKEND:EXECUTOR:KEY,KEY`,
/// `event:WF/TASK/RETRY:REASON:MESSAGE`, or `pool:NAME` (not a report; the
/// batch must be refused).
/// `AppendLogChunk` for lines `first..=last` of a task run (one line per offset).
fn log_chunk(key: TaskKey, first: &str, last: &str) -> Res<Command> {
    let first: u64 = first
        .parse()
        .map_err(|_| format!("bad first offset '{first}'"))?;
    let last: u64 = last
        .parse()
        .map_err(|_| format!("bad last offset '{last}'"))?;
    Ok(Command::AppendLogChunk {
        chunk: LogChunk {
            key: format!(
                "{}/logs/{}/{}/{first:020}.zst",
                key.workflow_id, key.task, key.retry_id
            ),
            workflow_id: key.workflow_id,
            task: key.task,
            retry_id: key.retry_id,
            first_offset: first,
            last_offset: last,
            raw_bytes: 10 * (last.saturating_sub(first) + 1),
            stored_bytes: 4,
            lines: last.saturating_sub(first) + 1,
        },
    })
}

/// `START-END` of downloads, then of uploads (`-` for an unknown time),
/// e.g. `data:wf-1/a/0:100-200:300-400` or `data:wf-1/a/0:100-200`.
fn parse_data_times(times: &[&str]) -> Res<TaskDataTimes> {
    let time = |text: &str| -> Res<Option<i64>> {
        match text {
            "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| format!("bad time '{text}'")),
        }
    };
    let span = |text: Option<&&str>| -> Res<(Option<i64>, Option<i64>)> {
        match text {
            None => Ok((None, None)),
            Some(text) => {
                let (start, end) = text
                    .split_once('-')
                    .ok_or_else(|| format!("data times '{text}': want START-END"))?;
                Ok((time(start)?, time(end)?))
            }
        }
    };
    if times.len() > 2 {
        return Err("data times: at most a download and an upload span".into());
    }
    let (input_download_start, input_download_end) = span(times.first())?;
    let (output_upload_start, output_upload_end) = span(times.get(1))?;
    Ok(TaskDataTimes {
        input_download_start,
        input_download_end,
        output_upload_start,
        output_upload_end,
    })
}

fn parse_batch_item(item: &str, now: i64) -> Res<(u64, Command)> {
    let (seq, rest) = item
        .split_once(':')
        .ok_or_else(|| format!("batch item '{item}': want SEQ:ITEM"))?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| format!("batch item '{item}': bad sequence"))?;
    let parts: Vec<&str> = rest.split(':').collect();
    let command = match parts.as_slice() {
        ["report", key, status, exit @ ..] => Command::ReportTask {
            now,
            report: TaskReport {
                key: parse_task_key(key)?,
                status: status.parse()?,
                exit_code: match exit {
                    [] => None,
                    [code] => Some(code.parse().map_err(|_| format!("bad exit in '{item}'"))?),
                    _ => return Err(format!("batch item '{item}': too many fields")),
                },
                message: None,
                node_name: None,
                time: now,
            },
        },
        ["chunk", key, first, last] => log_chunk(parse_task_key(key)?, first, last)?,
        ["data", key, times @ ..] => Command::RecordTaskDataTimes {
            key: parse_task_key(key)?,
            times: parse_data_times(times)?,
        },
        ["event", key, reason, message] => Command::RecordTaskEvents {
            key: parse_task_key(key)?,
            events: vec![gantry_storage::TaskEventInput {
                time: now,
                reason: reason.to_string(),
                message: message.to_string(),
            }],
        },
        ["job", id] => Command::CompleteJob {
            job_id: id.parse().map_err(|_| format!("bad job id in '{item}'"))?,
        },
        ["hello-with", backend, executor, running @ ..] => Command::OperatorHelloWithExecutor {
            now,
            backend: backend.to_string(),
            executor: executor.to_string(),
            running: running
                .first()
                .unwrap_or(&"")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(parse_task_key)
                .collect::<Res<Vec<_>>>()?,
        },
        ["hello", backend, running @ ..] => Command::OperatorHello {
            now,
            backend: backend.to_string(),
            running: running
                .first()
                .unwrap_or(&"")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(parse_task_key)
                .collect::<Res<Vec<_>>>()?,
        },
        ["pool", name] => Command::PutPool {
            pool: PoolRecord {
                name: name.to_string(),
                description: String::new(),
                backend: "local".to_string(),
                default_platform: None,
                platforms: Vec::new(),
            },
        },
        _ => return Err(format!("batch item '{item}': unknown form")),
    };
    Ok((seq, command))
}

fn config_meta(args: &Args) -> Res<ConfigMeta> {
    Ok(ConfigMeta {
        user: args.need("by")?.to_string(),
        description: args.get("description").unwrap_or("").to_string(),
        tags: args
            .get("tags")
            .map(|t| t.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// The body of `config-put TYPE NAME ...` from its arguments.
fn config_data(config_type: ConfigType, name: &str, args: &Args) -> Res<ConfigData> {
    Ok(match config_type {
        ConfigType::Pool => {
            let mut pool = PoolConfig::from_record(&PoolRecord {
                name: name.to_string(),
                description: args.get("description").unwrap_or("").to_string(),
                backend: args.get("backend").unwrap_or("").to_string(),
                default_platform: args.get("default_platform").map(str::to_string),
                platforms: args
                    .get("platforms")
                    .map(|p| p.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            });
            pool.enable_maintenance = args.bool("maintenance", false)?;
            for (field, value) in [
                (&mut pool.default_exec_timeout, "default_exec_timeout"),
                (&mut pool.default_queue_timeout, "default_queue_timeout"),
                (&mut pool.max_exec_timeout, "max_exec_timeout"),
                (&mut pool.max_queue_timeout, "max_queue_timeout"),
            ] {
                *field = args.get(value).unwrap_or("").to_string();
            }
            for rule in args.get("default_exit_actions").unwrap_or("").split(';') {
                if let Some((action, codes)) = rule.split_once(':') {
                    pool.default_exit_actions
                        .insert(action.to_string(), codes.to_string());
                }
            }
            ConfigData::Pool(pool)
        }
        ConfigType::Backend => {
            let scheduler_type = match args.get("scheduler").unwrap_or("kai") {
                "kai" => SchedulerType::Kai,
                "default" => SchedulerType::Default,
                "volcano" => SchedulerType::Volcano,
                other => return Err(format!("unknown scheduler '{other}'")),
            };
            ConfigData::Backend(BackendSettings {
                scheduler_type,
                dashboard_url: args.get("dashboard").unwrap_or("").to_string(),
                ..BackendSettings::default()
            })
        }
        ConfigType::Role => ConfigData::Role(RoleConfig {
            name: name.to_string(),
            description: String::new(),
            policies: vec![Policy {
                effect: match args.get("effect").unwrap_or("Allow") {
                    "Allow" => PolicyEffect::Allow,
                    "Deny" => PolicyEffect::Deny,
                    other => return Err(format!("unknown effect '{other}'")),
                },
                actions: args
                    .get("actions")
                    .unwrap_or("")
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
                resources: args
                    .get("resources")
                    .unwrap_or("*")
                    .split(',')
                    .map(str::to_string)
                    .collect(),
            }],
        }),
        ConfigType::Workflow if args.get("retention").is_some() => ConfigData::Json(format!(
            r#"{{"workflow_log":{{"retention":"{}"}}}}"#,
            args.get("retention").unwrap_or("")
        )),
        // `\"` in the quoted value stands for `"`.
        _ => ConfigData::Json(args.get("json").unwrap_or("").replace("\\\"", "\"")),
    })
}

/// `NAME:CPU_MILLIS:MEMORY_BYTES:GPUS`.
fn parse_node(spec: &str) -> Res<NodeInventory> {
    let parts: Vec<&str> = spec.split(':').collect();
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("node '{spec}': '{s}' is not a number"))
    };
    match parts.as_slice() {
        [name, cpu, memory, gpus] => Ok(NodeInventory {
            name: name.to_string(),
            cpu_millis: number(cpu)?,
            memory_bytes: number(memory)?,
            gpu_count: number(gpus)?,
            ..NodeInventory::default()
        }),
        _ => Err(format!(
            "node '{spec}': want NAME:CPU_MILLIS:MEMORY_BYTES:GPUS"
        )),
    }
}

fn parse_task_key(spec: &str) -> Res<TaskKey> {
    let parts: Vec<&str> = spec.split('/').collect();
    match parts.as_slice() {
        [workflow_id, task, retry] => Ok(TaskKey {
            workflow_id: workflow_id.to_string(),
            task: task.to_string(),
            retry_id: retry
                .parse()
                .map_err(|_| format!("bad retry in '{spec}'"))?,
        }),
        _ => Err(format!("task key '{spec}': want WF/TASK/RETRY")),
    }
}

// ---------------------------------------------------------------------------
// Rendering state for comparison
// ---------------------------------------------------------------------------

fn render_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Applied => "applied".into(),
        Outcome::Submitted {
            workflow_id,
            failure: None,
        } => format!("submitted {workflow_id}"),
        Outcome::Submitted {
            workflow_id,
            failure: Some(f),
        } => format!("submitted {workflow_id} failure={f:?}"),
        Outcome::Canceled { workflow_id } => format!("canceled {workflow_id}"),
        Outcome::Revision { revision } => format!("revision {revision}"),
        Outcome::Rejected(r) => format!("rejected {} message={:?}", kind_name(r.kind), r.message),
    }
}

fn kind_name(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::NotFound => "not-found",
        RejectionKind::Conflict => "conflict",
        RejectionKind::Invalid => "invalid",
        RejectionKind::Stale => "stale",
    }
}

fn render_job(kind: &JobKind, backend: &str) -> String {
    match kind {
        JobKind::CreateGroup { workflow_id, group } => {
            format!("CreateGroup:{workflow_id}/{group}@{backend}")
        }
        JobKind::CancelGroup {
            workflow_id, group, ..
        } => format!("CancelGroup:{workflow_id}/{group}@{backend}"),
    }
}

fn render_timer(kind: &TimerKind, due: i64) -> String {
    match kind {
        TimerKind::ExecTimeout { workflow_id, group } => {
            format!("exec:{workflow_id}/{group}@{due}")
        }
        TimerKind::QueueTimeout { workflow_id, group } => {
            format!("queue:{workflow_id}/{group}@{due}")
        }
        TimerKind::BackendOffline { backend } => format!("offline:{backend}@{due}"),
        TimerKind::BackendLost { backend } => format!("lost:{backend}@{due}"),
        TimerKind::ArchiveWorkflow { workflow_id } => format!("archive:{workflow_id}@{due}"),
        TimerKind::PurgeWorkflowLogs { workflow_id } => format!("purge:{workflow_id}@{due}"),
        TimerKind::ForgetRequestKey { key } => format!("forget:{key}@{due}"),
    }
}

/// A table's name and its (key, value) rows as bytes.
type TableRows = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// A snapshot image's tables without the state's clock row, which every
/// applied command may move (`expect unchanged` means nothing else moved).
fn without_clock(image: &[u8]) -> Result<Vec<TableRows>, String> {
    // Format 2: magic (8), SHA-256 (32), bincode body.
    let body = image.get(40..).ok_or("short snapshot image")?;
    let (mut tables, _): (Vec<TableRows>, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| e.to_string())?;
    for (name, rows) in &mut tables {
        if name == "counters" {
            rows.retain(|(key, _)| key.as_slice() != b"\0clock");
        }
    }
    Ok(tables)
}

/// Lower-case hex of a name's bytes (a stand-in token hash).
fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{:x}", b & 0xf)).collect()
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "none".to_string(), T::to_string)
}

/// Compares one optional field against an expectation (`none`, exact, or `~=` substring).
fn check_field(what: &str, actual: String, expected: Option<(&str, bool)>) -> Res {
    let Some((expected, contains)) = expected else {
        return Ok(());
    };
    let ok = if contains {
        actual.contains(expected)
    } else {
        actual == expected
    };
    if ok {
        Ok(())
    } else {
        let op = if contains { "~=" } else { "=" };
        Err(format!("{what}: expected {op}{expected:?}, got {actual:?}"))
    }
}

// ---------------------------------------------------------------------------
// The case runner
// ---------------------------------------------------------------------------

struct Case {
    _dir: tempfile::TempDir,
    store: Store,
    /// Snapshot taken just before the last command.
    before: Vec<u8>,
    last: Option<Vec<Outcome>>,
    /// Every command applied, with its outcome, for the replay check.
    history: Vec<(Command, Outcome)>,
    submissions: u64,
}

fn open_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open store");
    (dir, store)
}

impl Case {
    fn new() -> Case {
        let (dir, store) = open_store();
        Case {
            _dir: dir,
            store,
            before: Vec::new(),
            last: None,
            history: Vec::new(),
            submissions: 0,
        }
    }

    fn run(&mut self, commands: Vec<Command>) -> Res {
        self.before = self.store.export_snapshot().map_err(|e| e.to_string())?;
        let outcomes = if commands.is_empty() {
            Vec::new()
        } else {
            let batch = commands.as_slice();
            let mut all = self
                .store
                .apply(&[batch], META, true)
                .map_err(|e| e.to_string())?;
            all.pop().unwrap_or_default()
        };
        self.history
            .extend(commands.into_iter().zip(outcomes.iter().cloned()));
        self.last = Some(outcomes);
        self.check_invariants()
    }

    fn check_invariants(&self) -> Res {
        let read = self.store.read().map_err(|e| e.to_string())?;
        let (workflows, _) = read
            .list(&ListFilter {
                limit: usize::MAX,
                ..ListFilter::default()
            })
            .map_err(|e| e.to_string())?;
        for workflow in workflows {
            let groups = read.groups(&workflow).map_err(|e| e.to_string())?;
            if groups.len() != workflow.groups.len() {
                return Err(format!(
                    "invariant: workflow {} lost a group row",
                    workflow.id
                ));
            }
            for group in groups {
                if !workflow.status.is_alive() && !group.status.is_finished() {
                    return Err(format!(
                        "invariant: workflow {} is {} but group {} is {}",
                        workflow.id, workflow.status, group.name, group.status
                    ));
                }
                if group.status.is_finished() {
                    for task in read.group_tasks(&group).map_err(|e| e.to_string())? {
                        if !task.status.is_finished() {
                            return Err(format!(
                                "invariant: group {}/{} is {} but task {} is {}",
                                workflow.id, group.name, group.status, task.name, task.status
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Replays the whole history into a fresh store in one apply call.
    fn check_replay(&self) -> Res {
        let (_dir, replica) = open_store();
        let commands: Vec<Command> = self.history.iter().map(|(c, _)| c.clone()).collect();
        let outcomes = replica
            .apply(&[commands.as_slice()], META, true)
            .map_err(|e| e.to_string())?
            .pop()
            .unwrap_or_default();
        let expected: Vec<Outcome> = self.history.iter().map(|(_, o)| o.clone()).collect();
        if outcomes != expected {
            return Err(
                "replay determinism: outcomes differ when the case is replayed in one batch".into(),
            );
        }
        let a = self.store.export_snapshot().map_err(|e| e.to_string())?;
        let b = replica.export_snapshot().map_err(|e| e.to_string())?;
        if a != b {
            return Err(
                "replay determinism: snapshot bytes differ when the case is replayed in one batch"
                    .into(),
            );
        }
        Ok(())
    }

    fn step(&mut self, verb: &str, args: &Args) -> Res {
        match verb {
            "pool" => {
                args.allow(&["backend", "description"])?;
                let pool = PoolRecord {
                    name: args.pos(0, "pool name")?.to_string(),
                    description: args.get("description").unwrap_or("").to_string(),
                    backend: args.need("backend")?.to_string(),
                    default_platform: None,
                    platforms: Vec::new(),
                };
                self.run(vec![Command::PutPool { pool }])
            }
            "submit" | "submit-invalid" => {
                let invalid = verb == "submit-invalid";
                if invalid {
                    args.allow(&["name", "at", "pool", "user", "error", "labels"])?;
                } else {
                    args.allow(&[
                        "name",
                        "at",
                        "pool",
                        "user",
                        "labels",
                        "priority",
                        "groups",
                        "group",
                        "tasks",
                        "ignore_nonlead",
                        "barrier",
                        "exec_timeout",
                        "queue_timeout",
                        "exit_actions",
                    ])?;
                }
                let name = args.need("name")?.to_string();
                let now: i64 = args.need_num("at")?;
                let plan = if invalid {
                    Err(args.need("error")?.to_string())
                } else {
                    let ignore = args.bool("ignore_nonlead", true)?;
                    let barrier = args.bool("barrier", true)?;
                    let spec = match (args.get("groups"), args.get("group"), args.get("tasks")) {
                        (Some(spec), None, None) => spec.to_string(),
                        (None, Some(group), Some(tasks)) => format!("{group}[{tasks}]"),
                        _ => return Err("submit needs groups=SPEC or group=NAME tasks=LIST".into()),
                    };
                    let mut groups = parse_groups(&spec, ignore, barrier)?;
                    if let Some(actions) = args.get("exit_actions") {
                        apply_exit_actions(&mut groups, actions)?;
                    }
                    Ok(WorkflowPlan {
                        groups,
                        exec_timeout_seconds: args.num("exec_timeout")?,
                        queue_timeout_seconds: args.num("queue_timeout")?,
                    })
                };
                self.submissions += 1;
                let priority: Priority = args.get("priority").unwrap_or("NORMAL").parse()?;
                let submission = Submission {
                    name: name.clone(),
                    uuid: format!("uuid-{}-{name}", self.submissions),
                    pool: args.get("pool").unwrap_or("default").to_string(),
                    user: args.get("user").unwrap_or("alice").to_string(),
                    priority,
                    template_spec: format!("workflow: {{name: {name}}}"),
                    rendered_spec: format!("workflow: {{name: {name}}}"),
                    plan,
                };
                match args.get("labels") {
                    None => self.run(vec![Command::SubmitWorkflow { now, submission }]),
                    Some(text) => {
                        let labels = text
                            .split(',')
                            .filter(|pair| !pair.is_empty())
                            .map(|pair| {
                                pair.split_once('=')
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .ok_or_else(|| format!("label '{pair}' is not KEY=VALUE"))
                            })
                            .collect::<Res<BTreeMap<_, _>>>()?;
                        let packed = PackedSubmission::pack(&submission)
                            .map_err(|e| format!("pack: {e}"))?;
                        self.run(vec![Command::SubmitWorkflowWithLabels {
                            now,
                            packed,
                            labels,
                        }])
                    }
                }
            }
            "tag" => {
                args.allow(&["add", "remove"])?;
                self.run(vec![Command::TagWorkflow {
                    workflow_id: args.pos(0, "workflow id")?.to_string(),
                    add: split_list(args.get("add")),
                    remove: split_list(args.get("remove")),
                }])
            }
            "config-tag" => {
                args.allow(&["revision", "set", "delete"])?;
                self.run(vec![Command::TagConfigRevision {
                    config_type: args.pos(0, "config type")?.parse()?,
                    revision: args.need_num("revision")?,
                    set: split_list(args.get("set")),
                    delete: split_list(args.get("delete")),
                }])
            }
            "config-delete-revision" => {
                args.allow(&["revision"])?;
                self.run(vec![Command::DeleteConfigRevision {
                    config_type: args.pos(0, "config type")?.parse()?,
                    revision: args.need_num("revision")?,
                }])
            }
            "data" => {
                args.allow(&["retry", "download", "upload"])?;
                let key = TaskKey {
                    workflow_id: args.pos(0, "workflow id")?.to_string(),
                    task: args.pos(1, "task name")?.to_string(),
                    retry_id: args.num("retry")?.unwrap_or(0),
                };
                let spans: Vec<&str> = vec![
                    args.get("download").unwrap_or("-"),
                    args.get("upload").unwrap_or("-"),
                ];
                let times = parse_data_times(&spans)?;
                self.run(vec![Command::RecordTaskDataTimes { key, times }])
            }
            "events" => {
                // events WF TASK [retry=N] [count=N] TIME:REASON:MESSAGE ...
                args.allow(&["retry", "count"])?;
                let mut events = Vec::new();
                for event in args.pos.iter().skip(2) {
                    let mut parts = event.splitn(3, ':');
                    let (Some(time), Some(reason), Some(message)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(format!("event {event}: want TIME:REASON:MESSAGE"));
                    };
                    events.push(gantry_storage::TaskEventInput {
                        time: time.parse().map_err(|_| format!("event time {time}"))?,
                        reason: reason.replace("\\n", "\n"),
                        message: message.to_string(),
                    });
                }
                // `count=N` repeats the events N times (for the bounds).
                let events = match args.num::<usize>("count")? {
                    Some(count) => events
                        .iter()
                        .cycle()
                        .take(events.len() * count)
                        .cloned()
                        .collect(),
                    None => events,
                };
                self.run(vec![Command::RecordTaskEvents {
                    key: TaskKey {
                        workflow_id: args.pos(0, "workflow id")?.to_string(),
                        task: args.pos(1, "task name")?.to_string(),
                        retry_id: args.num("retry")?.unwrap_or(0),
                    },
                    events,
                }])
            }
            "session" => {
                args.allow(&["at", "user", "kind", "detail", "retry"])?;
                self.run(vec![Command::RecordSession {
                    now: args.need_num("at")?,
                    workflow_id: args.pos(0, "workflow id")?.to_string(),
                    event: gantry_storage::SessionEventInput {
                        user: args.get("user").unwrap_or("").to_string(),
                        task: args.pos(1, "task name")?.to_string(),
                        retry_id: args.num("retry")?.unwrap_or(0),
                        kind: args.get("kind").unwrap_or("").to_string(),
                        detail: args.get("detail").unwrap_or("").to_string(),
                    },
                }])
            }
            "credential" => {
                // credential USER NAME at=.. type=generic|registry|data keys=a,b sealed=.. if=SEALED
                args.allow(&["at", "type", "keys", "sealed", "profile", "if"])?;
                let kind = match args.get("type").unwrap_or("generic") {
                    "generic" => gantry_storage::CredentialKind::Generic,
                    "registry" => gantry_storage::CredentialKind::Registry,
                    "data" => gantry_storage::CredentialKind::Data,
                    other => return Err(format!("unknown credential type {other}")),
                };
                self.run(vec![Command::PutCredential {
                    now: args.need_num("at")?,
                    user: args.pos(0, "user")?.to_string(),
                    name: args.pos(1, "credential name")?.to_string(),
                    only_if_sealed: args.get("if").map(str::to_string),
                    credential: gantry_storage::CredentialRecord {
                        kind,
                        profile: args.get("profile").unwrap_or("").to_string(),
                        keys: args
                            .get("keys")
                            .unwrap_or("")
                            .split(',')
                            .filter(|key| !key.is_empty())
                            .map(str::to_string)
                            .collect(),
                        sealed: args
                            .get("sealed")
                            .unwrap_or("gantry-sealed:1:k:AAAA")
                            .to_string(),
                        updated: 0,
                    },
                }])
            }
            "profile" => {
                // profile USER text=RAW (stored as sent) or pool=.. email=..
                args.allow(&["pool", "email", "text"])?;
                let text = match args.get("text") {
                    Some(raw) => raw.to_string(),
                    None => gantry_storage::UserProfile {
                        pool: args.get("pool").map(str::to_string),
                        email_notification: args.get("email").map(|v| v == "true"),
                        slack_notification: None,
                    }
                    .to_text(),
                };
                self.run(vec![Command::SetUserProfile {
                    user: args.pos(0, "user")?.to_string(),
                    profile: text,
                }])
            }
            "user" => {
                // user NAME at=.. by=.. roles=a,b mode=create|ensure|existing
                args.allow(&["at", "by", "roles", "mode"])?;
                let mode = match args.get("mode").unwrap_or("ensure") {
                    "create" => gantry_storage::UserWrite::Create,
                    "ensure" => gantry_storage::UserWrite::Ensure,
                    "existing" => gantry_storage::UserWrite::Existing,
                    other => return Err(format!("unknown user mode {other}")),
                };
                self.run(vec![Command::PutUser {
                    now: args.need_num("at")?,
                    user: args.pos(0, "user")?.to_string(),
                    by: args.get("by").unwrap_or("admin").to_string(),
                    roles: args
                        .get("roles")
                        .unwrap_or("")
                        .split(',')
                        .filter(|role| !role.is_empty())
                        .map(str::to_string)
                        .collect(),
                    mode,
                }])
            }
            "unrole" => {
                args.allow(&[])?;
                self.run(vec![Command::RemoveUserRole {
                    user: args.pos(0, "user")?.to_string(),
                    role: args.pos(1, "role")?.to_string(),
                }])
            }
            "deluser" => {
                args.allow(&[])?;
                self.run(vec![Command::DeleteUser {
                    user: args.pos(0, "user")?.to_string(),
                }])
            }
            "revoke-sessions" => {
                args.allow(&["at"])?;
                self.run(vec![Command::RevokeUserSessions {
                    now: args.need_num("at")?,
                    user: args.pos(0, "user")?.to_string(),
                }])
            }
            "token" => {
                // token USER NAME: an access token (a fixed hash per name)
                args.allow(&[])?;
                let name = args.pos(1, "token name")?.to_string();
                let hash = format!("{:0>64}", hex_of(&name));
                self.run(vec![Command::IssueToken {
                    token: gantry_storage::TokenRecord {
                        name,
                        service: false,
                        hash,
                        user: args.pos(0, "user")?.to_string(),
                        roles: vec!["user".into()],
                        description: String::new(),
                        created: 0,
                        expires: None,
                    },
                }])
            }
            "uncredential" => {
                args.allow(&[])?;
                self.run(vec![Command::DeleteCredential {
                    user: args.pos(0, "user")?.to_string(),
                    name: args.pos(1, "credential name")?.to_string(),
                }])
            }
            "report" => {
                args.allow(&["at", "exit", "message", "node", "time", "retry"])?;
                let now: i64 = args.need_num("at")?;
                let status: TaskStatus = args.pos(2, "status")?.parse()?;
                let report = TaskReport {
                    key: TaskKey {
                        workflow_id: args.pos(0, "workflow id")?.to_string(),
                        task: args.pos(1, "task name")?.to_string(),
                        retry_id: args.num("retry")?.unwrap_or(0),
                    },
                    status,
                    exit_code: args.num("exit")?,
                    message: args.get("message").map(str::to_string),
                    node_name: args.get("node").map(str::to_string),
                    time: args.num("time")?.unwrap_or(now),
                };
                self.run(vec![Command::ReportTask { now, report }])
            }
            "cancel" => {
                args.allow(&["by", "at", "message"])?;
                let command = Command::CancelWorkflow {
                    now: args.need_num("at")?,
                    workflow_id: args.pos(0, "workflow id")?.to_string(),
                    user: args.need("by")?.to_string(),
                    message: args.get("message").map(str::to_string),
                    force: args.flag("force"),
                };
                self.run(vec![command])
            }
            "fire-due" => {
                args.allow(&["at"])?;
                let now: i64 = args.need_num("at")?;
                let timers = self
                    .store
                    .read()
                    .and_then(|r| r.due_timers(now, usize::MAX))
                    .map_err(|e| e.to_string())?;
                let commands = timers
                    .into_iter()
                    .map(|t| Command::FireTimer {
                        now,
                        timer_id: t.id,
                        due: t.due,
                    })
                    .collect();
                self.run(commands)
            }
            "fire" => {
                args.allow(&["id", "due", "at"])?;
                self.run(vec![Command::FireTimer {
                    now: args.need_num("at")?,
                    timer_id: args.need_num("id")?,
                    due: args.need_num("due")?,
                }])
            }
            "complete-jobs" => {
                args.allow(&[])?;
                let jobs = self
                    .store
                    .read()
                    .and_then(|r| r.jobs(usize::MAX))
                    .map_err(|e| e.to_string())?;
                self.run(
                    jobs.into_iter()
                        .map(|j| Command::CompleteJob { job_id: j.id })
                        .collect(),
                )
            }
            "complete-job" => {
                args.allow(&["id"])?;
                self.run(vec![Command::CompleteJob {
                    job_id: args.need_num("id")?,
                }])
            }
            "hello" => {
                args.allow(&["backend", "at", "running", "executor"])?;
                let running = args
                    .get("running")
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(parse_task_key)
                    .collect::<Res<Vec<_>>>()?;
                let now = args.need_num("at")?;
                let backend = args.need("backend")?.to_string();
                self.run(vec![match args.get("executor") {
                    None => Command::OperatorHello {
                        now,
                        backend,
                        running,
                    },
                    Some(executor) => Command::OperatorHelloWithExecutor {
                        now,
                        backend,
                        running,
                        executor: executor.to_string(),
                    },
                }])
            }
            "log-chunk" => {
                args.allow(&["first", "last"])?;
                let key = parse_task_key(args.pos(0, "task key WF/TASK/RETRY")?)?;
                self.run(vec![log_chunk(
                    key,
                    args.need("first")?,
                    args.need("last")?,
                )?])
            }
            "batch" => {
                args.allow(&["backend", "instance", "at", "last", "items"])?;
                let now: i64 = args.need_num("at")?;
                let commands = args
                    .get("items")
                    .unwrap_or("")
                    .split(';')
                    .filter(|item| !item.is_empty())
                    .map(|item| parse_batch_item(item, now))
                    .collect::<Res<Vec<_>>>()?;
                self.run(vec![Command::OperatorReports {
                    now,
                    backend: args.need("backend")?.to_string(),
                    instance: args.need_num("instance")?,
                    last_seq: args.need_num("last")?,
                    commands,
                }])
            }
            "config-put" => {
                args.allow(&[
                    "at",
                    "by",
                    "description",
                    "tags",
                    "backend",
                    "platforms",
                    "default_platform",
                    "maintenance",
                    "scheduler",
                    "dashboard",
                    "effect",
                    "actions",
                    "resources",
                    "json",
                    "retention",
                    "default_exit_actions",
                    "default_exec_timeout",
                    "default_queue_timeout",
                    "max_exec_timeout",
                    "max_queue_timeout",
                    "topology",
                    "extras",
                ])?;
                let config_type: ConfigType = args.pos(0, "config type")?.parse()?;
                let name = args.pos.get(1).cloned().unwrap_or_default();
                let data = config_data(config_type, &name, args)?;
                let now = args.need_num("at")?;
                let meta = config_meta(args)?;
                let command = match (args.get("topology"), args.get("extras"), data) {
                    // `topology=zone:zone-label,rack:rack-label`: the API's way.
                    (Some(keys), None, ConfigData::Pool(pool)) => {
                        let extras = PoolExtras {
                            topology_keys: keys
                                .split(',')
                                .filter_map(|pair| pair.split_once(':'))
                                .map(|(key, label)| TopologyKey {
                                    key: key.to_string(),
                                    label: label.to_string(),
                                })
                                .collect(),
                        };
                        Command::put_config(
                            now,
                            config_type,
                            name,
                            meta,
                            ConfigData::pool(pool, &extras),
                        )
                    }
                    // `extras="<text>"`: the gated kind with any text.
                    (None, Some(text), ConfigData::Pool(pool)) => Command::PutPoolWithExtras {
                        now,
                        name,
                        meta,
                        pool: Box::new(pool),
                        extras: text.replace("\\\"", "\""),
                    },
                    (None, None, data) => Command::PutConfig {
                        now,
                        config_type,
                        name,
                        meta,
                        data: Box::new(data),
                    },
                    _ => return Err("topology= or extras= only on a POOL config-put".into()),
                };
                self.run(vec![command])
            }
            "config-delete" => {
                args.allow(&["at", "by", "description", "tags"])?;
                self.run(vec![Command::DeleteConfig {
                    now: args.need_num("at")?,
                    config_type: args.pos(0, "config type")?.parse()?,
                    name: args.pos.get(1).cloned().unwrap_or_default(),
                    meta: config_meta(args)?,
                }])
            }
            "config-rollback" => {
                args.allow(&["at", "by", "description", "tags", "revision"])?;
                self.run(vec![Command::RollbackConfig {
                    now: args.need_num("at")?,
                    config_type: args.pos(0, "config type")?.parse()?,
                    revision: args.need_num("revision")?,
                    meta: config_meta(args)?,
                }])
            }
            "heartbeat" => {
                args.allow(&["backend", "at", "offline_after", "fail_after", "nodes"])?;
                let nodes = args
                    .get("nodes")
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(parse_node)
                    .collect::<Res<Vec<_>>>()?;
                self.run(vec![Command::BackendHeartbeat {
                    now: args.need_num("at")?,
                    backend: args.need("backend")?.to_string(),
                    nodes,
                    offline_after_ms: args.need_num("offline_after")?,
                    fail_tasks_after_ms: args.num("fail_after")?.unwrap_or(0),
                }])
            }
            "dump" => {
                eprintln!("{}", self.dump(args.pos.first().map(String::as_str))?);
                Ok(())
            }
            "expect" => self.expect(args),
            other => Err(format!("unknown step '{other}'")),
        }
    }

    fn dump(&self, only: Option<&str>) -> Res<String> {
        let read = self.store.read().map_err(|e| e.to_string())?;
        let (workflows, _) = read
            .list(&ListFilter {
                limit: usize::MAX,
                ..ListFilter::default()
            })
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        for workflow in workflows
            .iter()
            .filter(|w| only.is_none_or(|id| id == w.id))
        {
            let _ = writeln!(out, "workflow {} {}", workflow.id, workflow.status);
            for group in read.groups(workflow).map_err(|e| e.to_string())? {
                let _ = writeln!(
                    out,
                    "  group {} {} dispatched={}",
                    group.name, group.status, group.dispatched
                );
                for task in read.group_tasks(&group).map_err(|e| e.to_string())? {
                    let _ = writeln!(
                        out,
                        "    task {} {} exit={}",
                        task.name,
                        task.status,
                        opt(&task.exit_code)
                    );
                }
            }
        }
        for job in read.jobs(usize::MAX).map_err(|e| e.to_string())? {
            let _ = writeln!(
                out,
                "job {} {}",
                job.id,
                render_job(&job.kind, &job.backend)
            );
        }
        for timer in read
            .due_timers(i64::MAX, usize::MAX)
            .map_err(|e| e.to_string())?
        {
            let _ = writeln!(
                out,
                "timer {} {}",
                timer.id,
                render_timer(&timer.kind, timer.due)
            );
        }
        Ok(out)
    }

    fn expect(&mut self, args: &Args) -> Res {
        let what = args.pos(0, "what to expect")?;
        let read = self.store.read().map_err(|e| e.to_string())?;
        match what {
            "outcome" => {
                args.allow(&["failure", "message"])?;
                let outcomes = self.last.as_ref().ok_or("no command ran yet")?;
                if outcomes.is_empty() {
                    return Err("the previous command produced no outcome".into());
                }
                for outcome in outcomes {
                    self.check_outcome(outcome, args)
                        .map_err(|e| format!("{e}; got {}", render_outcome(outcome)))?;
                }
                Ok(())
            }
            "outcomes" => {
                let outcomes = self.last.as_ref().ok_or("no command ran yet")?;
                if args.pos(1, "none")? != "none" || !outcomes.is_empty() {
                    return Err(format!(
                        "expected no outcomes, got [{}]",
                        outcomes
                            .iter()
                            .map(render_outcome)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(())
            }
            "operator-seq" => {
                args.allow(&["backend", "instance"])?;
                let seq = read
                    .operator_seq(args.need("backend")?, args.need_num("instance")?)
                    .map_err(|e| e.to_string())?;
                let wanted: u64 = args
                    .pos(1, "sequence")?
                    .parse()
                    .map_err(|_| "operator-seq wants a number".to_string())?;
                if seq != wanted {
                    return Err(format!("operator sequence: expected {wanted}, got {seq}"));
                }
                Ok(())
            }
            "unchanged" => {
                let now = self.store.export_snapshot().map_err(|e| e.to_string())?;
                if without_clock(&now)? != without_clock(&self.before)? {
                    return Err(format!("state changed:\n{}", self.dump(None)?));
                }
                Ok(())
            }
            "workflow" => {
                args.allow(&[
                    "cancelled_by",
                    "cancel_message",
                    "failure",
                    "submit",
                    "start",
                    "end",
                    "pool",
                    "backend",
                ])?;
                let id = args.pos(1, "workflow id")?;
                let w = read
                    .workflow(id)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("workflow {id} does not exist"))?;
                let status: WorkflowStatus = args.pos(2, "status")?.parse()?;
                if w.status != status {
                    return Err(format!(
                        "workflow {id}: expected {status}, got {}",
                        w.status
                    ));
                }
                check_field(
                    "cancelled_by",
                    opt(&w.cancelled_by),
                    args.entry("cancelled_by"),
                )?;
                check_field(
                    "cancel_message",
                    opt(&w.cancel_message),
                    args.entry("cancel_message"),
                )?;
                check_field("failure", opt(&w.failure_message), args.entry("failure"))?;
                check_field("submit", w.submit_time.to_string(), args.entry("submit"))?;
                check_field("start", opt(&w.start_time), args.entry("start"))?;
                check_field("end", opt(&w.end_time), args.entry("end"))?;
                check_field("pool", w.pool.clone(), args.entry("pool"))?;
                check_field("backend", w.backend.clone(), args.entry("backend"))
            }
            "group" => {
                args.allow(&[
                    "dispatched",
                    "start",
                    "end",
                    "failure",
                    "remaining_upstream",
                ])?;
                let (id, name) = (args.pos(1, "workflow id")?, args.pos(2, "group name")?);
                let g = read
                    .group(id, name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("group {id}/{name} does not exist"))?;
                let status: TaskStatus = args.pos(3, "status")?.parse()?;
                if g.status != status {
                    return Err(format!(
                        "group {id}/{name}: expected {status}, got {}",
                        g.status
                    ));
                }
                check_field(
                    "dispatched",
                    g.dispatched.to_string(),
                    args.entry("dispatched"),
                )?;
                check_field("start", opt(&g.start_time), args.entry("start"))?;
                check_field("end", opt(&g.end_time), args.entry("end"))?;
                check_field("failure", opt(&g.failure_message), args.entry("failure"))?;
                check_field(
                    "remaining_upstream",
                    g.remaining_upstream.join(","),
                    args.entry("remaining_upstream"),
                )
            }
            "task" => {
                args.allow(&[
                    "exit", "failure", "start", "end", "node", "download", "upload", "retry",
                ])?;
                let (id, name) = (args.pos(1, "workflow id")?, args.pos(2, "task name")?);
                let t = read
                    .task(id, name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("task {id}/{name} does not exist"))?;
                let status: TaskStatus = args.pos(3, "status")?.parse()?;
                if t.status != status {
                    return Err(format!(
                        "task {id}/{name}: expected {status}, got {}",
                        t.status
                    ));
                }
                check_field("exit", opt(&t.exit_code), args.entry("exit"))?;
                check_field("failure", opt(&t.failure_message), args.entry("failure"))?;
                check_field("start", opt(&t.start_time), args.entry("start"))?;
                check_field("end", opt(&t.end_time), args.entry("end"))?;
                check_field("node", opt(&t.node_name), args.entry("node"))?;
                check_field("retry", t.retry_id.to_string(), args.entry("retry"))?;
                let span = |start: Option<i64>, end: Option<i64>| {
                    let show = |t: Option<i64>| t.map(|t| t.to_string()).unwrap_or_default();
                    format!("{}-{}", show(start), show(end))
                };
                check_field(
                    "download",
                    span(t.input_download_start_time, t.input_download_end_time),
                    args.entry("download"),
                )?;
                check_field(
                    "upload",
                    span(t.output_upload_start_time, t.output_upload_end_time),
                    args.entry("upload"),
                )
            }
            "runs" => {
                args.allow(&[])?;
                let (id, name) = (args.pos(1, "workflow id")?, args.pos(2, "task name")?);
                let arrow = args
                    .pos
                    .iter()
                    .position(|word| word == "->")
                    .ok_or("expect runs WF TASK -> RETRY:STATUS[:EXIT] ... | none")?;
                let want: Vec<String> = args.pos[arrow + 1..].to_vec();
                let runs = read.task_runs(id, name).map_err(|e| e.to_string())?;
                let got: Vec<String> = runs
                    .iter()
                    .map(|run| match run.exit_code {
                        Some(code) => format!("{}:{}:{code}", run.retry_id, run.status),
                        None => format!("{}:{}", run.retry_id, run.status),
                    })
                    .collect();
                let want = if want == ["none"] { Vec::new() } else { want };
                if got != want {
                    return Err(format!(
                        "runs of {id}/{name}: expected {want:?}, got {got:?}"
                    ));
                }
                Ok(())
            }
            "config" => {
                args.allow(&["revision", "user", "description", "backend", "topology"])?;
                let config_type: ConfigType = args.pos(1, "config type")?.parse()?;
                let name = args.pos.get(2).map(String::as_str).unwrap_or("");
                let config = read.config(config_type, name).map_err(|e| e.to_string())?;
                let revision = config.as_ref().map(|c| c.revision);
                check_field("revision", opt(&revision), args.entry("revision"))?;
                if let Some(config) = config {
                    check_field("user", config.meta.user.clone(), args.entry("user"))?;
                    check_field(
                        "description",
                        config.meta.description.clone(),
                        args.entry("description"),
                    )?;
                    if let Some(data) = &config.data {
                        if let Some(pool) = data.as_pool() {
                            check_field("backend", pool.backend.clone(), args.entry("backend"))?;
                        }
                        // `key:label,...`; empty for a pool without extras.
                        let topology: Vec<String> = data
                            .pool_extras()
                            .topology_keys
                            .iter()
                            .map(|key| format!("{}:{}", key.key, key.label))
                            .collect();
                        check_field("topology", topology.join(","), args.entry("topology"))?;
                    }
                }
                Ok(())
            }
            "history" => {
                args.allow(&[])?;
                let config_type: ConfigType = args.pos(1, "config type")?.parse()?;
                let actual: Vec<String> = read
                    .config_history(config_type)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|r| {
                        let what = if r.data.is_some() { "put" } else { "delete" };
                        format!("{}:{}:{what}", r.revision, r.name)
                    })
                    .collect();
                let arrow = args
                    .pos
                    .iter()
                    .position(|p| p == "->")
                    .ok_or("expect history needs '-> REV:NAME:put|delete ...'")?;
                let wanted: Vec<String> = args.pos[arrow + 1..]
                    .iter()
                    .filter(|w| *w != "none")
                    .cloned()
                    .collect();
                if actual != wanted {
                    return Err(format!(
                        "history: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "log-chunks" => {
                args.allow(&["task", "retry"])?;
                let workflow = args.pos(1, "workflow id")?;
                let retry = args.num("retry")?;
                let chunks = read
                    .log_chunks(workflow, args.get("task"), retry)
                    .map_err(|e| e.to_string())?;
                let actual: Vec<String> = chunks
                    .iter()
                    .map(|c| {
                        format!(
                            "{}/{}:{}-{}",
                            c.chunk.task,
                            c.chunk.retry_id,
                            c.chunk.first_offset,
                            c.chunk.last_offset
                        )
                    })
                    .collect();
                let arrow = args
                    .pos
                    .iter()
                    .position(|p| p == "->")
                    .ok_or("expect log-chunks needs '-> TASK/RETRY:FIRST-LAST ... | none'")?;
                let wanted: Vec<String> = args.pos[arrow + 1..]
                    .iter()
                    .filter(|w| *w != "none")
                    .cloned()
                    .collect();
                if actual != wanted {
                    return Err(format!(
                        "log chunks: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "archive" => {
                args.allow(&["end", "retention", "purge_due", "archived", "purged"])?;
                let workflow = args.pos(1, "workflow id")?;
                let archive = read.workflow_archive(workflow).map_err(|e| e.to_string())?;
                if args.pos.get(2).is_some_and(|w| w == "none") {
                    return match archive {
                        None => Ok(()),
                        Some(row) => Err(format!("workflow {workflow} has an archive row {row:?}")),
                    };
                }
                let a = archive.ok_or_else(|| format!("workflow {workflow} has no archive row"))?;
                check_field("end", a.end_time.to_string(), args.entry("end"))?;
                check_field("retention", opt(&a.retention_ms), args.entry("retention"))?;
                check_field("purge_due", opt(&a.purge_due), args.entry("purge_due"))?;
                check_field("archived", opt(&a.archived_at), args.entry("archived"))?;
                check_field("purged", opt(&a.logs_purged_at), args.entry("purged"))
            }
            "backend" => {
                args.allow(&[
                    "online",
                    "last_heartbeat",
                    "nodes",
                    "configured",
                    "scheduler",
                    "executor",
                ])?;
                let name = args.pos(1, "backend name")?;
                let backend = read.backend(name).map_err(|e| e.to_string())?;
                if args.pos.get(2).is_some_and(|w| w == "none") {
                    return match backend {
                        None => Ok(()),
                        Some(_) => Err(format!("backend {name} exists")),
                    };
                }
                let b = backend.ok_or_else(|| format!("backend {name} does not exist"))?;
                check_field("online", b.online.to_string(), args.entry("online"))?;
                check_field(
                    "last_heartbeat",
                    opt(&b.last_heartbeat),
                    args.entry("last_heartbeat"),
                )?;
                check_field("nodes", b.nodes.len().to_string(), args.entry("nodes"))?;
                check_field(
                    "configured",
                    b.configured.to_string(),
                    args.entry("configured"),
                )?;
                check_field(
                    "scheduler",
                    b.settings.scheduler_type.as_str().to_string(),
                    args.entry("scheduler"),
                )?;
                check_field("executor", b.executor, args.entry("executor"))
            }
            "pool" => {
                args.allow(&["backend"])?;
                let name = args.pos(1, "pool name")?;
                let pool = read.pool(name).map_err(|e| e.to_string())?;
                if args.pos.get(2).is_some_and(|w| w == "none") {
                    return match pool {
                        None => Ok(()),
                        Some(_) => Err(format!("pool {name} exists")),
                    };
                }
                let pool = pool.ok_or_else(|| format!("pool {name} does not exist"))?;
                check_field("backend", pool.backend, args.entry("backend"))
            }
            "jobs" => {
                args.allow(&[])?;
                let jobs = read.jobs(usize::MAX).map_err(|e| e.to_string())?;
                let actual: Vec<String> = jobs
                    .iter()
                    .map(|j| render_job(&j.kind, &j.backend))
                    .collect();
                let wanted: Vec<&str> = args.pos[1..]
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != "none")
                    .collect();
                let matches = actual.len() == wanted.len()
                    && actual.iter().zip(&wanted).all(|(a, w)| {
                        if w.contains('@') {
                            a == w
                        } else {
                            a.split('@').next() == Some(*w)
                        }
                    });
                if !matches {
                    return Err(format!(
                        "jobs: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "timers" => {
                args.allow(&[])?;
                let timers = read
                    .due_timers(i64::MAX, usize::MAX)
                    .map_err(|e| e.to_string())?;
                let actual: Vec<String> = timers
                    .iter()
                    .map(|t| render_timer(&t.kind, t.due))
                    .collect();
                let wanted: Vec<&str> = args.pos[1..].iter().map(String::as_str).collect();
                let ok = match wanted.as_slice() {
                    ["none"] => actual.is_empty(),
                    [n] if n.parse::<usize>().is_ok() => {
                        actual.len() == n.parse::<usize>().unwrap_or(0)
                    }
                    _ => actual == wanted,
                };
                if !ok {
                    return Err(format!(
                        "timers: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "next-timer" => {
                args.allow(&[])?;
                let actual = opt(&read.next_timer_due().map_err(|e| e.to_string())?);
                let wanted = args.pos(1, "due time or none")?;
                if actual != wanted {
                    return Err(format!("next-timer: expected {wanted}, got {actual}"));
                }
                Ok(())
            }
            "list" => {
                args.allow(&[
                    "status", "name", "pool", "user", "tag", "priority", "after", "before",
                    "label", "no_label", "offset", "limit",
                ])?;
                let filter = ListFilter {
                    statuses: split_list(args.get("status"))
                        .iter()
                        .map(|s| s.parse::<WorkflowStatus>())
                        .collect::<Result<_, _>>()?,
                    name: args.get("name").map(str::to_string),
                    pools: split_list(args.get("pool")),
                    users: split_list(args.get("user")),
                    tags: split_list(args.get("tag")),
                    priorities: split_list(args.get("priority"))
                        .iter()
                        .map(|p| p.parse::<Priority>())
                        .collect::<Result<_, _>>()?,
                    submitted_after: args.num("after")?,
                    submitted_before: args.num("before")?,
                    labels: args
                        .get("label")
                        .unwrap_or("")
                        .split(';')
                        .filter(|s| !s.is_empty())
                        .map(LabelSelector::parse)
                        .collect::<Result<_, _>>()?,
                    no_labels: split_list(args.get("no_label")),
                    offset: args.num("offset")?.unwrap_or(0),
                    limit: args.num("limit")?.unwrap_or(1000),
                    descending: args.flag("desc"),
                };
                let arrow = args
                    .pos
                    .iter()
                    .position(|p| p == "->")
                    .ok_or("expect list needs '-> IDS'")?;
                let mut wanted: Vec<String> = args.pos[arrow + 1..].to_vec();
                let wanted_more = wanted.last().is_some_and(|w| w == "+more");
                if wanted_more {
                    wanted.pop();
                }
                let (workflows, more) = read.list(&filter).map_err(|e| e.to_string())?;
                let actual: Vec<String> = workflows.into_iter().map(|w| w.id).collect();
                if actual != wanted || more != wanted_more {
                    return Err(format!(
                        "list: expected [{}] more={wanted_more}, got [{}] more={more}",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "find" => {
                args.allow(&[])?;
                let wanted = after_arrow(args, "expect find needs '-> ID|none'")?;
                let wanted = if wanted.is_empty() {
                    "none".to_string()
                } else {
                    wanted.join(" ")
                };
                let found = read
                    .find_workflow(args.pos(1, "workflow id or uuid")?)
                    .map_err(|e| e.to_string())?
                    .map_or_else(|| "none".to_string(), |w| w.id);
                if found != wanted {
                    return Err(format!("find: expected {wanted}, got {found}"));
                }
                Ok(())
            }
            "profile" => {
                args.allow(&[])?;
                let user = args.pos(1, "user")?;
                let profile = read.user_profile(user).map_err(|e| e.to_string())?;
                let actual = vec![format!(
                    "pool:{},email:{}",
                    opt(&profile.pool),
                    opt(&profile.email_notification)
                )];
                let wanted = after_arrow(args, "expect profile needs '-> ...'")?;
                if actual != wanted {
                    return Err(format!(
                        "profile of {user}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "user" => {
                args.allow(&[])?;
                let user = args.pos(1, "user")?;
                let actual: Vec<String> = match read.user(user).map_err(|e| e.to_string())? {
                    None => Vec::new(),
                    Some(record) => {
                        let mut words = vec![format!("{}@{}", record.created_by, record.created)];
                        words.extend(record.roles.iter().map(|grant| {
                            format!("{}:{}@{}", grant.role, grant.assigned_by, grant.assigned_at)
                        }));
                        words.push(format!("from:{}", opt(&record.sessions_valid_from)));
                        words
                    }
                };
                let wanted = after_arrow(args, "expect user needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "user {user}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "tokens" => {
                args.allow(&[])?;
                let user = args.pos(1, "user")?;
                let actual: Vec<String> = read
                    .tokens()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|token| token.user == user)
                    .map(|token| token.name)
                    .collect();
                let wanted = after_arrow(args, "expect tokens needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "tokens of {user}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "credentials" => {
                args.allow(&[])?;
                let user = args.pos(1, "user")?;
                let actual: Vec<String> = read
                    .credentials(user)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(name, c)| {
                        format!(
                            "{name}:{}:{}:{}@{}",
                            c.kind.as_str(),
                            c.profile,
                            c.keys.join(","),
                            c.updated
                        )
                    })
                    .collect();
                let wanted = after_arrow(args, "expect credentials needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "credentials of {user}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "task-events-count" => {
                args.allow(&["first", "last"])?;
                let id = args.pos(1, "workflow id")?;
                let task = args.pos(2, "task name")?;
                let wanted: usize = args
                    .pos(3, "count")?
                    .parse()
                    .map_err(|_| "count is not a number".to_string())?;
                let events = read.task_events(id, task).map_err(|e| e.to_string())?;
                let show = |e: &gantry_storage::TaskEvent| {
                    format!("{}:{}:{}", e.time, e.reason, e.message)
                };
                let (first, last) = (events.first().map(show), events.last().map(show));
                if events.len() != wanted
                    || args
                        .get("first")
                        .is_some_and(|f| first.as_deref() != Some(f))
                    || args.get("last").is_some_and(|l| last.as_deref() != Some(l))
                {
                    return Err(format!(
                        "task events of {id}/{task}: expected {wanted} (first {:?}, last {:?}), got {} (first {first:?}, last {last:?})",
                        args.get("first"), args.get("last"), events.len()
                    ));
                }
                Ok(())
            }
            "task-events" => {
                args.allow(&[])?;
                let id = args.pos(1, "workflow id")?;
                let task = args.pos(2, "task name")?;
                let actual: Vec<String> = read
                    .task_events(id, task)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|e| format!("{}@{}:{}:{}", e.retry_id, e.time, e.reason, e.message))
                    .collect();
                let wanted = after_arrow(args, "expect task-events needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "task events of {id}/{task}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "sessions" => {
                args.allow(&[])?;
                let id = args.pos(1, "workflow id")?;
                let actual: Vec<String> = read
                    .workflow_sessions(id)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|e| {
                        format!(
                            "{}@{}:{}/{}:{}:{}",
                            e.user, e.time, e.task, e.retry_id, e.kind, e.detail
                        )
                    })
                    .collect();
                let wanted = after_arrow(args, "expect sessions needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "sessions of {id}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "labels" | "tags" => {
                args.allow(&[])?;
                let id = args.pos(1, "workflow id")?;
                let actual: Vec<String> = if what == "labels" {
                    read.workflow_labels(id)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect()
                } else {
                    read.workflow_tags(id).map_err(|e| e.to_string())?
                };
                let wanted = after_arrow(args, "expect labels|tags needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "{what} of {id}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "history-tags" => {
                args.allow(&["revision"])?;
                let config_type: ConfigType = args.pos(1, "config type")?.parse()?;
                let revision: u64 = args.need_num("revision")?;
                let actual = read
                    .config_revision(config_type, revision)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{config_type} has no revision {revision}"))?
                    .meta
                    .tags;
                let wanted = after_arrow(args, "expect history-tags needs '-> ...|none'")?;
                if actual != wanted {
                    return Err(format!(
                        "tags of {config_type}:{revision}: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            "counts" => {
                let actual: BTreeMap<String, u64> = read
                    .count_by_status()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(s, n)| (s.to_string(), n))
                    .collect();
                let mut wanted = BTreeMap::new();
                for (key, value, _) in &args.kv {
                    let status: WorkflowStatus = key.parse()?;
                    wanted.insert(
                        status.to_string(),
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("bad count '{value}'"))?,
                    );
                }
                if actual != wanted {
                    return Err(format!("counts: expected {wanted:?}, got {actual:?}"));
                }
                Ok(())
            }
            "tasks" => {
                args.allow(&[
                    "status", "workflow", "user", "pool", "node", "priority", "after", "before",
                    "limit",
                ])?;
                let split = |v: Option<&str>| -> Vec<String> {
                    v.map(|v| v.split(',').map(str::to_string).collect())
                        .unwrap_or_default()
                };
                let filter = TaskFilter {
                    workflow_id: args.get("workflow").map(str::to_string),
                    statuses: split(args.get("status"))
                        .iter()
                        .map(|s| s.parse::<TaskStatus>())
                        .collect::<Result<_, _>>()?,
                    users: split(args.get("user")),
                    pools: split(args.get("pool")),
                    nodes: split(args.get("node")),
                    started_after: args.num("after")?,
                    started_before: args.num("before")?,
                    priorities: split(args.get("priority"))
                        .iter()
                        .map(|s| s.parse::<Priority>())
                        .collect::<Result<_, _>>()?,
                };
                let limit: usize = args.num("limit")?.unwrap_or(usize::MAX);
                let arrow = args
                    .pos
                    .iter()
                    .position(|p| p == "->")
                    .ok_or("expect tasks needs '-> RUNS'")?;
                let wanted: Vec<String> = args.pos[arrow + 1..].to_vec();
                let mut actual: Vec<String> = Vec::new();
                read.visit_tasks(&filter, |workflow, task| {
                    actual.push(format!("{}/{}/{}", workflow.id, task.name, task.retry_id));
                    Ok(if actual.len() >= limit {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    })
                })
                .map_err(|e| e.to_string())?;
                if actual != wanted {
                    return Err(format!(
                        "tasks: expected [{}], got [{}]",
                        wanted.join(" "),
                        actual.join(" ")
                    ));
                }
                Ok(())
            }
            other => Err(format!("unknown expectation '{other}'")),
        }
    }

    fn check_outcome(&self, outcome: &Outcome, args: &Args) -> Res {
        let kind = args.pos(1, "outcome kind")?;
        match (kind, outcome) {
            ("applied", Outcome::Applied) => Ok(()),
            (
                "submitted",
                Outcome::Submitted {
                    workflow_id,
                    failure,
                },
            ) => {
                check_field(
                    "workflow id",
                    workflow_id.clone(),
                    Some((args.pos(2, "workflow id")?, false)),
                )?;
                check_field(
                    "failure",
                    opt(failure),
                    args.entry("failure").or(Some(("none", false))),
                )
            }
            ("revision", Outcome::Revision { revision }) => check_field(
                "revision",
                revision.to_string(),
                Some((args.pos(2, "revision")?, false)),
            ),
            ("canceled", Outcome::Canceled { workflow_id }) => check_field(
                "workflow id",
                workflow_id.clone(),
                Some((args.pos(2, "workflow id")?, false)),
            ),
            ("rejected", Outcome::Rejected(rejection)) => {
                let wanted = args.pos(2, "rejection kind")?;
                if kind_name(rejection.kind) != wanted {
                    return Err(format!("expected rejected {wanted}"));
                }
                check_field("message", rejection.message.clone(), args.entry("message"))
            }
            _ => Err(format!("expected outcome {kind}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Driving files
// ---------------------------------------------------------------------------

struct Stats {
    cases: usize,
    steps: usize,
}

/// Runs a script; returns the failures (one per failed case) and counts.
fn run_script(origin: &str, text: &str, first_line: usize) -> (Vec<String>, Stats) {
    let mut failures = Vec::new();
    let mut stats = Stats { cases: 0, steps: 0 };
    let mut case: Option<(String, Case)> = None;
    let mut skipping = false;
    let finish = |case: &mut Option<(String, Case)>, failures: &mut Vec<String>, skipping: bool| {
        if let Some((title, c)) = case.take() {
            if !skipping {
                if let Err(e) = c.check_replay() {
                    failures.push(format!("{origin}: case '{title}': {e}"));
                }
            }
        }
    };
    for (index, raw) in text.lines().enumerate() {
        let line_no = first_line + index;
        let tokens = match tokenize(raw) {
            Ok(tokens) => tokens,
            Err(e) => {
                failures.push(format!("{origin}:{line_no}: {e}"));
                continue;
            }
        };
        let Some((verb, rest)) = tokens.split_first() else {
            continue;
        };
        if verb == "case" {
            finish(&mut case, &mut failures, skipping);
            let title = raw.trim().trim_start_matches("case").trim().to_string();
            case = Some((title, Case::new()));
            stats.cases += 1;
            skipping = false;
            continue;
        }
        stats.steps += 1;
        if skipping {
            continue;
        }
        let Some((title, current)) = case.as_mut() else {
            failures.push(format!(
                "{origin}:{line_no}: step before the first 'case' line"
            ));
            skipping = true;
            continue;
        };
        if let Err(e) = current.step(verb, &Args::parse(rest.to_vec())) {
            failures.push(format!(
                "{origin}:{line_no}: case '{title}': `{}`\n    {e}",
                raw.trim()
            ));
            skipping = true;
        }
    }
    finish(&mut case, &mut failures, skipping);
    (failures, stats)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

#[test]
fn scenarios() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("storage/testdata exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in storage/testdata");
    let mut failures = Vec::new();
    let (mut cases, mut steps) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read scenario file");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut errors, stats) = run_script(&name, &text, 1);
        assert!(stats.cases > 0, "{name} has no cases");
        cases += stats.cases;
        steps += stats.steps;
        failures.append(&mut errors);
    }
    eprintln!(
        "scenarios: {} files, {cases} cases, {steps} steps",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} scenario failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fenced ```` ```scenario ```` blocks of KNOWN_DIFFERENCES.md, with the line of their first step.
fn known_difference_blocks() -> Vec<(usize, String)> {
    let Ok(text) = std::fs::read_to_string(testdata().join("KNOWN_DIFFERENCES.md")) else {
        return Vec::new();
    };
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        match (&mut current, line.trim()) {
            (None, "```scenario") => current = Some((index + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn known_differences_still_differ() {
    for (line, block) in known_difference_blocks() {
        let (failures, stats) = run_script("KNOWN_DIFFERENCES.md", &block, line);
        assert!(
            stats.cases > 0,
            "KNOWN_DIFFERENCES.md:{line}: block has no case"
        );
        eprintln!("known difference still present:\n{}", failures.join("\n"));
        assert!(
            failures.len() == stats.cases,
            "KNOWN_DIFFERENCES.md:{line}: a known difference now passes (move it into a .txt file); \
             {} of {} case(s) failed:\n{}",
            failures.len(),
            stats.cases,
            failures.join("\n")
        );
    }
}

#[test]
fn the_language_catches_its_own_mistakes() {
    let script = "case typo\npool default backend=local\nexpect workflow nope-1 PENDING\n";
    let (failures, _) = run_script("inline", script, 1);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let script = "case bad argument\npool default backend=local bogus=1\n";
    let (failures, _) = run_script("inline", script, 1);
    assert!(
        failures[0].contains("unknown argument 'bogus'"),
        "{failures:?}"
    );
}
