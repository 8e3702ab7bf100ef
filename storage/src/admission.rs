//! Admission: what a submission must satisfy under the configs in force,
//! beyond the spec's own rules — OSMO's submit-time policies that need no
//! node inventory and no templating: the WORKFLOW config's
//! `max_num_tasks`, the pool's GPU guarantee by priority, platforms that
//! exist, what a platform allows (`privileged`, `hostNetwork`,
//! `volumeMounts`) and what the backend's executor can honour; and why a
//! workflow accepted by an offline pool waits.
//!
//! Invariants: one set of rules with one wording, read by the API before a
//! submit is proposed (so `workflow validate`, submit, resubmit and
//! restart answer alike) and by the dispatcher when it builds a launch (the
//! configs may have changed since); never by `apply`, whose meaning of a
//! submit stays what every member of any build computes. Pure: the same
//! plan and configs give the same answer. Each refusal names the task (or
//! group), the field and the config that refuses it.

use crate::config::{
    BackendRecord, ConfigData, ConfigRevision, ConfigType, PlatformConfig, PoolConfig, PoolExtras,
    WorkflowConfig, EXECUTOR_LOCAL,
};
use crate::error::StorageError;
use crate::extras::WorkflowExtras;
use crate::plan::{TaskPlan, WorkflowPlan};
use crate::record::PoolRecord;
use crate::status::Priority;
use crate::store::ReadView;
use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

/// The configs a submission to one pool is admitted under.
#[derive(Clone, Debug)]
pub struct InForce {
    /// The pool's POOL config, else its routing row (platforms without
    /// settings); `None` when the pool does not exist.
    pub pool: Option<PoolConfig>,
    /// The POOL config's extras (its topology keys); empty without.
    pub pool_extras: PoolExtras,
    pub workflow: WorkflowConfig,
    /// The pool's backend as its operator last reported it; `None` when no
    /// operator ever connected and no admin configured it.
    pub backend: Option<BackendRecord>,
}

fn pool_of(
    revision: Option<ConfigRevision>,
    record: Option<PoolRecord>,
) -> (Option<PoolConfig>, PoolExtras) {
    let data = revision.and_then(|revision| revision.data);
    let extras = data
        .as_ref()
        .map(ConfigData::pool_extras)
        .unwrap_or_default();
    match data.and_then(ConfigData::into_pool) {
        Some(pool) => (Some(pool), extras),
        None => (
            record.map(|record| PoolConfig::from_record(&record)),
            PoolExtras::default(),
        ),
    }
}

fn workflow_of(revision: Option<ConfigRevision>) -> WorkflowConfig {
    match revision {
        Some(ConfigRevision {
            data: Some(data), ..
        }) => WorkflowConfig::from_data(&data).unwrap_or_default(),
        _ => WorkflowConfig::default(),
    }
}

impl InForce {
    /// The configs in force for `pool` in a read view (the API's side).
    pub fn read(view: &ReadView, pool: &str) -> Result<InForce, StorageError> {
        let (config, pool_extras) = pool_of(view.config(ConfigType::Pool, pool)?, view.pool(pool)?);
        let backend = match &config {
            Some(config) => view.backend(&config.backend)?,
            None => None,
        };
        Ok(InForce {
            pool: config,
            pool_extras,
            workflow: workflow_of(view.config(ConfigType::Workflow, "")?),
            backend,
        })
    }

    /// The executor that runs the pool's tasks, once an operator has said
    /// which (`None`: no operator has connected yet, so it is not known).
    pub fn executor(&self) -> Option<&str> {
        self.backend
            .as_ref()
            .filter(|backend| {
                backend.last_heartbeat.is_some() || backend.executor != EXECUTOR_LOCAL
            })
            .map(|backend| backend.executor.as_str())
    }

    /// Every rule of this module, in OSMO's order: the task limit, the GPU
    /// guarantee, each task's platform and what it allows, then the
    /// topology the tasks ask for.
    pub fn check(
        &self,
        plan: &WorkflowPlan,
        extras: &WorkflowExtras,
        priority: Priority,
    ) -> Result<(), String> {
        let limit = self.workflow.max_num_tasks;
        let count = plan.task_count() as u64;
        if count > limit {
            return Err(format!(
                "workflow: {count} tasks exceed the limit of {limit} (the WORKFLOW config's max_num_tasks)"
            ));
        }
        let Some(pool) = &self.pool else {
            // Unknown pools are refused by the caller (404 / not found).
            return Ok(());
        };
        check_gpu_guarantee(pool, plan, priority)?;
        for group in &plan.groups {
            for task in &group.tasks {
                let platform = task_platform(pool, task)?;
                check_allowed(pool, platform, task)?;
                if let (Some(executor), Some(backend)) = (self.executor(), &self.backend) {
                    check_executor(executor, &backend.name, task)?;
                }
            }
        }
        check_topology(pool, &self.pool_extras, plan, extras)
    }

    /// Why a workflow accepted now would wait: its pool's backend is
    /// offline (no operator connected, or none heard from within the
    /// grace). `None` when the backend is online, or the pool unknown.
    pub fn waiting_reason(&self) -> Option<String> {
        let pool = self.pool.as_ref()?;
        let why = match &self.backend {
            Some(backend) if backend.online => return None,
            Some(BackendRecord {
                last_heartbeat: Some(last),
                ..
            }) => format!(
                "has not been heard from since {}",
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_millis((*last).max(0) as u64)
                )
            ),
            _ => "has never had an operator connected".to_string(),
        };
        Some(format!(
            "pool '{}' is OFFLINE: its backend '{}' {why}; the workflow stays PENDING until the backend's operator connects",
            pool.name, pool.backend
        ))
    }
}

/// OSMO's topology rules: every key a task asks for is one of the pool's
/// `topology_keys`, and every task that asks for any asks for the same set
/// of keys (so the tasks form one tree of levels).
fn check_topology(
    pool: &PoolConfig,
    pool_extras: &PoolExtras,
    plan: &WorkflowPlan,
    extras: &WorkflowExtras,
) -> Result<(), String> {
    let mut first_set: Option<(&str, BTreeSet<&str>)> = None;
    for group in &plan.groups {
        for task in &group.tasks {
            let Some(requirements) = extras
                .tasks
                .get(&task.name)
                .map(|task_extras| &task_extras.topology)
                .filter(|requirements| !requirements.is_empty())
            else {
                continue;
            };
            for requirement in requirements {
                if pool_extras.topology_level(&requirement.key).is_none() {
                    let available: Vec<&str> = pool_extras
                        .topology_keys
                        .iter()
                        .map(|key| key.key.as_str())
                        .collect();
                    let available = if available.is_empty() {
                        "it has no topology_keys".to_string()
                    } else {
                        format!("its topology keys are {}", available.join(", "))
                    };
                    return Err(format!(
                        "task '{}': resources.{}.topology: topology key \"{}\" is not available in pool '{}' ({available})",
                        task.name, task.resource.name, requirement.key, pool.name
                    ));
                }
            }
            let keys: BTreeSet<&str> = requirements.iter().map(|r| r.key.as_str()).collect();
            match &first_set {
                None => first_set = Some((&task.name, keys)),
                Some((first_task, first_keys)) if *first_keys != keys => {
                    let list =
                        |keys: &BTreeSet<&str>| keys.iter().copied().collect::<Vec<_>>().join(", ");
                    return Err(format!(
                        "task '{}': resources.{}.topology: all tasks must use the same topology keys, but task '{first_task}' uses {} and task '{}' uses {}; give every task with topology requirements the same keys",
                        task.name,
                        task.resource.name,
                        list(first_keys),
                        task.name,
                        list(&keys)
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// OSMO: a NORMAL or HIGH priority group may ask for at most the pool's
/// guaranteed GPUs (`resources.gpu.guarantee`, -1: no limit); LOW priority
/// workflows may borrow beyond it (they are preemptible).
fn check_gpu_guarantee(
    pool: &PoolConfig,
    plan: &WorkflowPlan,
    priority: Priority,
) -> Result<(), String> {
    let guarantee = pool.gpu.guarantee;
    if priority == Priority::Low || guarantee < 0 {
        return Ok(());
    }
    for group in &plan.groups {
        let gpus: u64 = group
            .tasks
            .iter()
            .map(|task| task.resource.gpu.unwrap_or(0))
            .sum();
        if gpus > guarantee as u64 {
            return Err(format!(
                "Pool {} has {guarantee} GPUs guaranteed for NORMAL/HIGH priority workflows and group {} requires {gpus} GPUs. Higher gpu counts must be submitted with LOW priority",
                pool.name, group.name
            ));
        }
    }
    Ok(())
}

fn platform_list(pool: &PoolConfig) -> String {
    if pool.platforms.is_empty() {
        "it has none".to_string()
    } else {
        format!(
            "its platforms: {}",
            pool.platforms
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The platform `task` runs on in `pool`: its resource's `platform`, else
/// the pool's `default_platform`. A pool without platforms covers all its
/// backend's nodes (`Ok(None)`), so naming a platform there is an error,
/// as naming one the pool does not have; a pool with platforms needs one
/// (OSMO: "Resource X does not have a platform!").
pub fn task_platform<'p>(
    pool: &'p PoolConfig,
    task: &TaskPlan,
) -> Result<Option<(&'p str, &'p PlatformConfig)>, String> {
    let resource = &task.resource;
    if pool.platforms.is_empty() {
        return match &resource.platform {
            None => Ok(None),
            Some(name) => Err(format!(
                "task '{}': platform '{name}' (workflow.resources.{}.platform) is not a platform of pool '{}' ({})",
                task.name,
                resource.name,
                pool.name,
                platform_list(pool)
            )),
        };
    }
    let Some(name) = resource
        .platform
        .as_ref()
        .or(pool.default_platform.as_ref())
    else {
        return Err(format!(
            "Resource {} does not have a platform! task '{}': workflow.resources.{}.platform is not set and pool '{}' has no default_platform ({})",
            resource.name,
            task.name,
            resource.name,
            pool.name,
            platform_list(pool)
        ));
    };
    match pool.platforms.get_key_value(name) {
        Some((name, platform)) => Ok(Some((name.as_str(), platform))),
        None => Err(format!(
            "task '{}': platform '{name}' (workflow.resources.{}.platform) is not a platform of pool '{}' ({})",
            task.name,
            resource.name,
            pool.name,
            platform_list(pool)
        )),
    }
}

/// The source of a `volumeMounts` entry (`/src` or `/src:/dst`).
pub fn mount_source(mount: &str) -> &str {
    mount.split(':').next().unwrap_or(mount)
}

/// OSMO's `validate_privilege_host_mount`: `privileged`, `hostNetwork` and
/// each `volumeMounts` source must be allowed by the task's platform
/// (`privileged_allowed`, `host_network_allowed`, `allowed_mounts`).
pub fn check_allowed(
    pool: &PoolConfig,
    platform: Option<(&str, &PlatformConfig)>,
    task: &TaskPlan,
) -> Result<(), String> {
    let refuse = |field: &str, setting: &str| {
        match platform {
        Some((name, _)) => format!(
            "task '{}': {field}: platform '{name}' of pool '{}' does not allow it ({setting} is false)",
            task.name, pool.name
        ),
        None => format!(
            "task '{}': {field}: pool '{}' has no platforms, so none allows it (a platform's {setting})",
            task.name, pool.name
        ),
    }
    };
    let allows = |flag: fn(&PlatformConfig) -> bool| platform.is_some_and(|(_, p)| flag(p));
    if task.privileged && !allows(|p| p.privileged_allowed) {
        return Err(refuse("privileged", "privileged_allowed"));
    }
    if task.host_network && !allows(|p| p.host_network_allowed) {
        return Err(refuse("hostNetwork", "host_network_allowed"));
    }
    for (index, mount) in task.volume_mounts.iter().enumerate() {
        let source = mount_source(mount);
        let allowed = platform.is_some_and(|(_, p)| p.allowed_mounts.iter().any(|m| m == source));
        if !allowed {
            let field = format!("volumeMounts[{index}] '{mount}'");
            return Err(match platform {
                Some((name, config)) => format!(
                    "task '{}': {field}: platform '{name}' of pool '{}' does not allow mounting '{source}' (allowed_mounts: {})",
                    task.name,
                    pool.name,
                    if config.allowed_mounts.is_empty() {
                        "none".to_string()
                    } else {
                        config.allowed_mounts.join(", ")
                    }
                ),
                None => format!(
                    "task '{}': {field}: pool '{}' has no platforms, so none allows mounting '{source}' (a platform's allowed_mounts)",
                    task.name, pool.name
                ),
            });
        }
    }
    Ok(())
}

/// What the local executor cannot honour: `privileged` (tasks run
/// unprivileged in a bubblewrap sandbox) and `volumeMounts` (the sandbox
/// mounts no host paths). `hostNetwork` has its meaning there already: a
/// local task shares the host's network.
pub fn check_executor(executor: &str, backend: &str, task: &TaskPlan) -> Result<(), String> {
    if executor != EXECUTOR_LOCAL {
        return Ok(());
    }
    if task.privileged {
        return Err(format!(
            "task '{}': privileged: the local executor (backend '{backend}') cannot honour it: tasks run unprivileged in a bubblewrap sandbox; submit to a pool of a Kubernetes backend",
            task.name
        ));
    }
    if !task.volume_mounts.is_empty() {
        return Err(format!(
            "task '{}': volumeMounts: the local executor (backend '{backend}') cannot honour it: its sandbox mounts no host paths; submit to a pool of a Kubernetes backend",
            task.name
        ));
    }
    Ok(())
}

/// A task's `credentials:` against its user's credentials (OSMO's
/// `validate_generic_cred`): every name must be one of the user's
/// credentials (of any type, as OSMO), and every key an environment
/// variable takes from it one of that credential's keys. Reads only names
/// and keys: nothing is opened.
pub fn check_credentials(view: &ReadView, user: &str, plan: &WorkflowPlan) -> Result<(), String> {
    use crate::plan::CredentialUse;
    for group in &plan.groups {
        for task in &group.tasks {
            for (name, usage) in &task.credentials {
                let at = format!("task '{}': credentials.{name}", task.name);
                let credential = view
                    .credential(user, name)
                    .map_err(|error| error.to_string())?
                    .ok_or_else(|| format!("{at}: Could not find the credential: {name}."))?;
                if let CredentialUse::Env(env) = usage {
                    for (variable, key) in env {
                        if !credential.keys.contains(key) {
                            return Err(format!(
                                "{at}.{variable}: {key} is not a valid credential key please choose from [{}]",
                                credential.keys.join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{GroupPlan, ResourcePlan};

    fn task(name: &str) -> TaskPlan {
        TaskPlan {
            name: name.into(),
            lead: true,
            resource: ResourcePlan {
                name: "default".into(),
                ..ResourcePlan::default()
            },
            ..TaskPlan::default()
        }
    }

    fn plan(tasks: Vec<TaskPlan>) -> WorkflowPlan {
        WorkflowPlan {
            groups: vec![GroupPlan {
                name: "g".into(),
                tasks,
                upstream: Vec::new(),
                barrier: true,
                ignore_nonlead_status: true,
            }],
            exec_timeout_seconds: None,
            queue_timeout_seconds: None,
        }
    }

    fn pool(platforms: &[(&str, PlatformConfig)], default: Option<&str>) -> PoolConfig {
        let mut pool = PoolConfig::from_record(&PoolRecord {
            name: "gpu".into(),
            description: String::new(),
            backend: "k8s".into(),
            default_platform: default.map(str::to_string),
            platforms: Vec::new(),
        });
        pool.platforms = platforms
            .iter()
            .map(|(name, config)| (name.to_string(), config.clone()))
            .collect();
        pool
    }

    fn in_force(pool: PoolConfig) -> InForce {
        InForce {
            pool_extras: PoolExtras::default(),
            pool: Some(pool),
            workflow: WorkflowConfig::default(),
            backend: None,
        }
    }

    /// OSMO's rules: keys the pool has, and one set of keys for every task
    /// that asks for any.
    #[test]
    fn topology_keys_must_be_the_pools_and_the_same_for_every_task() {
        use crate::config::TopologyKey;
        use crate::extras::{TaskExtras, TopologyRequirement};
        let asking = |keys: &[&str]| TaskExtras {
            topology: keys
                .iter()
                .map(|key| TopologyRequirement {
                    key: key.to_string(),
                    ..TopologyRequirement::default()
                })
                .collect(),
            ..TaskExtras::default()
        };
        let extras = |tasks: &[(&str, &[&str])]| WorkflowExtras {
            tasks: tasks
                .iter()
                .map(|(name, keys)| (name.to_string(), asking(keys)))
                .collect(),
        };
        let wanted = plan(vec![task("a"), task("b"), task("c")]);
        let mut configs = in_force(pool(&[], None));
        let none = configs
            .check(&wanted, &extras(&[("a", &["rack"])]), Priority::Normal)
            .unwrap_err();
        assert!(
            none.contains(
                "topology key \"rack\" is not available in pool 'gpu' (it has no topology_keys)"
            ),
            "{none}"
        );
        configs.pool_extras.topology_keys = ["zone", "rack"]
            .iter()
            .map(|key| TopologyKey {
                key: key.to_string(),
                label: format!("example.com/{key}"),
            })
            .collect();
        let unknown = configs
            .check(&wanted, &extras(&[("a", &["host"])]), Priority::Normal)
            .unwrap_err();
        assert!(
            unknown.contains("its topology keys are zone, rack"),
            "{unknown}"
        );
        let mixed = configs
            .check(
                &wanted,
                &extras(&[("a", &["zone", "rack"]), ("b", &["zone"])]),
                Priority::Normal,
            )
            .unwrap_err();
        assert!(
            mixed.starts_with("task 'b'")
                && mixed.contains("all tasks must use the same topology keys"),
            "{mixed}"
        );
        // A task without topology (c) may sit beside those with it.
        assert_eq!(
            configs.check(
                &wanted,
                &extras(&[("a", &["rack", "zone"]), ("b", &["zone", "rack"])]),
                Priority::Normal
            ),
            Ok(())
        );
    }

    #[test]
    fn the_workflow_configs_task_limit_decides() {
        let tasks: Vec<TaskPlan> = (0..101).map(|i| task(&format!("t{i}"))).collect();
        let mut configs = in_force(pool(&[], None));
        let error = configs.check(
            &plan(tasks.clone()),
            &WorkflowExtras::default(),
            Priority::Normal,
        );
        assert_eq!(
            error,
            Err(
                "workflow: 101 tasks exceed the limit of 100 (the WORKFLOW config's max_num_tasks)"
                    .into()
            )
        );
        configs.workflow.max_num_tasks = 101;
        assert_eq!(
            configs.check(&plan(tasks), &WorkflowExtras::default(), Priority::Normal),
            Ok(())
        );
    }

    #[test]
    fn normal_and_high_fit_the_guarantee_low_may_borrow() {
        let mut gpu_pool = pool(&[], None);
        gpu_pool.gpu.guarantee = 8;
        let configs = in_force(gpu_pool);
        let mut a = task("a");
        a.resource.gpu = Some(6);
        let mut b = task("b");
        b.lead = false;
        b.resource.gpu = Some(4);
        let wanted = plan(vec![a, b]);
        for priority in [Priority::Normal, Priority::High] {
            let error = configs
                .check(&wanted, &WorkflowExtras::default(), priority)
                .unwrap_err();
            assert!(
                error.contains("Pool gpu has 8 GPUs guaranteed")
                    && error.contains("group g requires 10 GPUs")
                    && error.contains("LOW priority"),
                "{error}"
            );
        }
        assert_eq!(
            configs.check(&wanted, &WorkflowExtras::default(), Priority::Low),
            Ok(())
        );
        // -1: no guarantee, no limit.
        let configs = in_force(pool(&[], None));
        assert_eq!(
            configs.check(&wanted, &WorkflowExtras::default(), Priority::High),
            Ok(())
        );
    }

    #[test]
    fn platforms_must_exist() {
        let configs = in_force(pool(
            &[
                ("a100", PlatformConfig::default()),
                ("l40", PlatformConfig::default()),
            ],
            Some("a100"),
        ));
        let mut t = task("train");
        assert_eq!(
            configs.check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal
            ),
            Ok(())
        );
        t.resource.platform = Some("h100".into());
        assert_eq!(
            configs.check(&plan(vec![t.clone()]), &WorkflowExtras::default(), Priority::Normal),
            Err("task 'train': platform 'h100' (workflow.resources.default.platform) is not a platform of pool 'gpu' (its platforms: a100, l40)".into())
        );
        let bare = in_force(pool(&[], None));
        assert!(bare
            .check(&plan(vec![t]), &WorkflowExtras::default(), Priority::Normal)
            .unwrap_err()
            .contains("is not a platform of pool 'gpu' (it has none)"));
        let no_default = in_force(pool(&[("a100", PlatformConfig::default())], None));
        assert!(no_default
            .check(
                &plan(vec![task("x")]),
                &WorkflowExtras::default(),
                Priority::Normal
            )
            .unwrap_err()
            .starts_with("Resource default does not have a platform! task 'x'"));
    }

    #[test]
    fn platform_settings_allow_privileged_host_network_and_mounts() {
        let open = PlatformConfig {
            privileged_allowed: true,
            host_network_allowed: true,
            allowed_mounts: vec!["/data".into()],
            ..PlatformConfig::default()
        };
        let configs = in_force(pool(
            &[("open", open), ("closed", PlatformConfig::default())],
            Some("closed"),
        ));
        let mut t = task("sim");
        t.privileged = true;
        t.host_network = true;
        t.volume_mounts = vec!["/data:/mnt/data".into()];
        assert_eq!(
            configs.check(&plan(vec![t.clone()]), &WorkflowExtras::default(), Priority::Normal),
            Err("task 'sim': privileged: platform 'closed' of pool 'gpu' does not allow it (privileged_allowed is false)".into())
        );
        t.resource.platform = Some("open".into());
        assert_eq!(
            configs.check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal
            ),
            Ok(())
        );
        t.volume_mounts.push("/etc".into());
        assert_eq!(
            configs.check(&plan(vec![t]), &WorkflowExtras::default(), Priority::Normal),
            Err("task 'sim': volumeMounts[1] '/etc': platform 'open' of pool 'gpu' does not allow mounting '/etc' (allowed_mounts: /data)".into())
        );
    }

    #[test]
    fn the_local_executor_refuses_what_its_sandbox_cannot_honour() {
        let open = PlatformConfig {
            privileged_allowed: true,
            host_network_allowed: true,
            allowed_mounts: vec!["/data".into()],
            ..PlatformConfig::default()
        };
        let mut configs = in_force(pool(&[("open", open)], Some("open")));
        let mut backend = BackendRecord::new("k8s", 0);
        // Unknown until an operator has connected: the dispatch checks then.
        configs.backend = Some(backend.clone());
        let mut t = task("sim");
        t.privileged = true;
        assert_eq!(
            configs.check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal
            ),
            Ok(())
        );
        backend.last_heartbeat = Some(5);
        configs.backend = Some(backend.clone());
        let error = configs
            .check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal,
            )
            .unwrap_err();
        assert!(
            error.starts_with("task 'sim': privileged: the local executor (backend 'k8s')"),
            "{error}"
        );
        t.privileged = false;
        t.host_network = true;
        assert_eq!(
            configs.check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal
            ),
            Ok(())
        );
        t.volume_mounts = vec!["/data".into()];
        assert!(configs
            .check(
                &plan(vec![t.clone()]),
                &WorkflowExtras::default(),
                Priority::Normal
            )
            .unwrap_err()
            .contains("volumeMounts: the local executor"));
        backend.executor = "kubernetes".into();
        configs.backend = Some(backend);
        t.privileged = true;
        assert_eq!(
            configs.check(&plan(vec![t]), &WorkflowExtras::default(), Priority::Normal),
            Ok(())
        );
    }

    #[test]
    fn an_offline_backend_is_a_reason_to_wait() {
        let mut configs = in_force(pool(&[], None));
        assert_eq!(
            configs.waiting_reason().as_deref(),
            Some("pool 'gpu' is OFFLINE: its backend 'k8s' has never had an operator connected; the workflow stays PENDING until the backend's operator connects")
        );
        let mut backend = BackendRecord::new("k8s", 0);
        backend.last_heartbeat = Some(1_700_000_000_000);
        configs.backend = Some(backend.clone());
        assert!(configs
            .waiting_reason()
            .unwrap()
            .contains("has not been heard from since 2023-11-14T22:13:20Z"));
        backend.online = true;
        configs.backend = Some(backend);
        assert_eq!(configs.waiting_reason(), None);
    }
}
