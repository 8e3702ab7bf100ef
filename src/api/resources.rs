//! Capacity: which nodes a pool's platforms cover, what runs on them, OSMO's
//! `GET /api/pool_quota` and `GET /api/resources[/{name}]` (in the shape
//! OSMO's CLI reads), and the submit-time check of task resources against
//! the pool and the configs in force: admission (`gantry_storage::admission`),
//! RESOURCE_VALIDATION rules (`resource_rules`), OSMO §3.4's default rules.
//!
//! Invariants: a node belongs to a platform when it has every label of the
//! platform and the platform tolerates each of its NoSchedule/NoExecute
//! taints (a pool without platforms covers all its backend's nodes); use is
//! the sum of the requests of unfinished tasks of dispatched groups.

use super::error::ApiError;
use super::params::Params;
use super::resource_rules::{evaluate, node_tokens, user_tokens, Rule, RuleError};
use super::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use gantry_storage::admission::{task_platform, InForce};
use gantry_storage::config::backend::format_cpu;
use gantry_storage::config::pool::pool_status;
use gantry_storage::config::resource_validation::assertions;
use gantry_storage::extras::WorkflowExtras;
use gantry_storage::plan::{ResourcePlan, TaskPlan, WorkflowPlan};
use gantry_storage::{
    BackendRecord, ConfigData, ConfigType, NodeInventory, PlatformConfig, PoolConfig, Priority,
    ReadView,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Requests or capacity of one kind each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub gpus: u64,
}

impl Amounts {
    fn add(&mut self, other: Amounts) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.storage_bytes += other.storage_bytes;
        self.gpus += other.gpus;
    }

    fn of_node(node: &NodeInventory) -> Amounts {
        Amounts {
            cpu_millis: node.cpu_millis,
            memory_bytes: node.memory_bytes,
            storage_bytes: node.ephemeral_storage_bytes,
            gpus: node.gpu_count,
        }
    }

    fn of_request(resource: &ResourcePlan) -> Amounts {
        Amounts {
            cpu_millis: resource.cpu.unwrap_or(0).saturating_mul(1000),
            memory_bytes: resource.memory_bytes.unwrap_or(0),
            storage_bytes: resource.storage_bytes.unwrap_or(0),
            gpus: resource.gpu.unwrap_or(0),
        }
    }

    /// Kubernetes' resource names (`GET /api/pool_quota`'s `capacity`, `usage`).
    fn json(&self) -> Value {
        json!({
            "cpu": format_cpu(self.cpu_millis),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
            "ephemeral-storage": format!("{}Ki", self.storage_bytes / 1024),
            "nvidia.com/gpu": self.gpus.to_string(),
        })
    }

    /// OSMO's resource fields (`GET /api/resources`): `cpu` in cores (a
    /// plain number, `0.5` for 500m), `memory` and `storage` in Ki, `gpu` a
    /// count — what OSMO's CLI converts and sums.
    fn osmo_json(&self) -> Value {
        json!({
            "cpu": cores(self.cpu_millis),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
            "storage": format!("{}Ki", self.storage_bytes / 1024),
            "gpu": self.gpus.to_string(),
        })
    }
}

/// CPU millis as cores without a unit: `2`, `0.5`, `1.25`.
fn cores(millis: u64) -> String {
    let whole = millis / 1000;
    match millis % 1000 {
        0 => whole.to_string(),
        part => format!("{whole}.{}", format!("{part:03}").trim_end_matches('0')),
    }
}

fn tolerated(platform: &PlatformConfig, node: &NodeInventory) -> bool {
    node.taints
        .iter()
        .filter(|taint| matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute"))
        .all(|taint| {
            platform.tolerations.iter().any(|toleration| {
                toleration.key == taint.key
                    && toleration
                        .effect
                        .as_ref()
                        .is_none_or(|effect| effect.is_empty() || *effect == taint.effect)
                    && (toleration.operator == "Exists"
                        || toleration.value.as_deref().unwrap_or("") == taint.value)
            })
        })
}

pub fn on_platform(platform: &PlatformConfig, node: &NodeInventory) -> bool {
    platform
        .labels
        .iter()
        .all(|(key, value)| node.labels.get(key) == Some(value))
        && tolerated(platform, node)
}

/// The platforms of `pool` that `node` belongs to (`[""]` for a pool without platforms).
fn platforms_of(pool: &PoolConfig, node: &NodeInventory) -> Vec<String> {
    if pool.platforms.is_empty() {
        return vec![String::new()];
    }
    pool.platforms
        .iter()
        .filter(|(_, platform)| on_platform(platform, node))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Requests of unfinished tasks of `backend`'s dispatched groups, by node
/// (a task the operator did not place on a known node counts on the only
/// node, if there is one), and by pool.
struct Usage {
    by_node: BTreeMap<String, Amounts>,
    by_pool: BTreeMap<String, Amounts>,
}

fn usage(view: &ReadView, backend: &BackendRecord) -> Result<Usage, ApiError> {
    let mut result = Usage {
        by_node: BTreeMap::new(),
        by_pool: BTreeMap::new(),
    };
    for (workflow_id, group_name) in view.active_groups(&backend.name)? {
        let (Some(workflow), Some(group)) = (
            view.workflow(&workflow_id)?,
            view.group(&workflow_id, &group_name)?,
        ) else {
            continue;
        };
        for task in view.group_tasks(&group)? {
            if task.status.is_finished() {
                continue;
            }
            let request = Amounts::of_request(&task.plan.resource);
            let node = match &task.node_name {
                Some(name) if backend.nodes.iter().any(|n| &n.name == name) => Some(name.clone()),
                _ if backend.nodes.len() == 1 => Some(backend.nodes[0].name.clone()),
                _ => None,
            };
            if let Some(node) = node {
                result.by_node.entry(node).or_default().add(request);
            }
            result
                .by_pool
                .entry(workflow.pool.clone())
                .or_default()
                .add(request);
        }
    }
    Ok(result)
}

fn pool_configs(view: &ReadView) -> Result<Vec<PoolConfig>, ApiError> {
    Ok(view
        .configs(ConfigType::Pool)?
        .into_iter()
        .filter_map(|config| config.data.and_then(ConfigData::into_pool))
        .collect())
}

/// OSMO's `GET /api/pool_quota` → `{node_sets: [{pools: [...]}], resource_sum}`,
/// with Gantry's `capacity` and `usage` of every kind per pool.
pub async fn pool_quota(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let wanted = params.list("pools");
    let view = state.node.read().await?;
    let mut node_sets: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let (mut sum_capacity, mut sum_usage, mut sum_quota, mut sum_quota_used) =
        (0u64, 0u64, 0i64, 0u64);
    for pool in pool_configs(&view)? {
        if !wanted.is_empty() && !wanted.contains(&pool.name) {
            continue;
        }
        let backend = view.backend(&pool.backend)?;
        let mut capacity = Amounts::default();
        let mut on_nodes = Amounts::default();
        let mut nodes = 0;
        let mut pool_used = Amounts::default();
        if let Some(backend) = &backend {
            let used = usage(&view, backend)?;
            for node in &backend.nodes {
                if platforms_of(&pool, node).is_empty() {
                    continue;
                }
                nodes += 1;
                capacity.add(Amounts::of_node(node));
                on_nodes.add(used.by_node.get(&node.name).copied().unwrap_or_default());
            }
            pool_used = used.by_pool.get(&pool.name).copied().unwrap_or_default();
        }
        let online = backend.as_ref().is_some_and(|b| b.online);
        let quota_limit = pool.gpu.guarantee;
        let quota_free = if quota_limit < 0 {
            "-".to_string()
        } else {
            (quota_limit - pool_used.gpus as i64).max(0).to_string()
        };
        sum_capacity += capacity.gpus;
        sum_usage += on_nodes.gpus;
        sum_quota_used += pool_used.gpus;
        sum_quota += quota_limit.max(0);
        node_sets.entry(pool.backend.clone()).or_default().push(json!({
            "name": pool.name,
            "description": pool.description,
            "status": pool_status(&pool, online).as_str(),
            "enable_maintenance": pool.enable_maintenance,
            "backend": pool.backend,
            "default_platform": pool.default_platform,
            "platforms": pool.platforms.keys().map(|name| (name.clone(), json!({}))).collect::<Map<_, _>>(),
            "resources": {"gpu": {"guarantee": pool.gpu.guarantee, "maximum": pool.gpu.maximum, "weight": pool.gpu.weight}},
            "resource_usage": {
                "quota_used": pool_used.gpus.to_string(),
                "quota_free": quota_free,
                "quota_limit": if quota_limit < 0 { "-".to_string() } else { quota_limit.to_string() },
                "total_usage": on_nodes.gpus.to_string(),
                "total_capacity": capacity.gpus.to_string(),
                "total_free": capacity.gpus.saturating_sub(on_nodes.gpus).to_string(),
            },
            "nodes": nodes,
            "capacity": capacity.json(),
            "usage": on_nodes.json(),
        }));
    }
    Ok(Json(json!({
        "node_sets": node_sets.into_values().map(|pools| json!({"pools": pools})).collect::<Vec<_>>(),
        "resource_sum": {
            "quota_used": sum_quota_used.to_string(),
            "quota_free": (sum_quota - sum_quota_used as i64).max(0).to_string(),
            "quota_limit": sum_quota.to_string(),
            "total_usage": sum_usage.to_string(),
            "total_capacity": sum_capacity.to_string(),
            "total_free": sum_capacity.saturating_sub(sum_usage).to_string(),
        },
    })))
}

/// OSMO's `GET /api/resources?pools=&platforms=&all_pools=` → `{resources: [ResourcesEntry]}`.
pub async fn resources(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref());
    let wanted_pools = params.list("pools");
    let wanted_platforms = params.list("platforms");
    let view = state.node.read().await?;
    let entries = resource_entries(&view, |_| true)?
        .into_iter()
        .filter(|entry| {
            let pool_platforms = entry["pool_platform_labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let in_wanted_pool = wanted_pools.is_empty()
                || wanted_pools
                    .iter()
                    .any(|pool| pool_platforms.contains_key(pool));
            let in_wanted_platform = wanted_platforms.is_empty()
                || pool_platforms.values().any(|platforms| {
                    platforms.as_array().is_some_and(|list| {
                        list.iter()
                            .any(|p| wanted_platforms.iter().any(|w| p.as_str() == Some(w)))
                    })
                });
            in_wanted_pool && in_wanted_platform
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({ "resources": entries })))
}

/// OSMO's `GET /api/resources/{name}` → `{resources: [ResourcesEntry]}`:
/// the nodes of that name (one per backend reporting it; none when unknown).
pub async fn resource(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.node.read().await?;
    let entries = resource_entries(&view, |node| node.name == name)?;
    Ok(Json(json!({ "resources": entries })))
}

/// One `ResourcesEntry` per node that `keep` keeps, of every backend, in
/// OSMO's shape: allocatable, used and per-platform fields with OSMO's names
/// (`cpu`, `memory`, `storage`, `gpu`), `exposed_fields` with the node and
/// its `pool/platform` pairs, `pool_platform_labels`, and `config_fields`
/// (what each platform allows) — and Gantry's `online` (its backend's).
fn resource_entries(
    view: &ReadView,
    keep: impl Fn(&NodeInventory) -> bool,
) -> Result<Vec<Value>, ApiError> {
    let pools = pool_configs(view)?;
    let mut entries = Vec::new();
    for backend in view.backends()? {
        let used = usage(view, &backend)?;
        for node in backend.nodes.iter().filter(|node| keep(node)) {
            let allocatable = Amounts::of_node(node);
            let mut pool_platforms: Map<String, Value> = Map::new();
            let mut pairs: Vec<String> = Vec::new();
            let mut per_platform: Map<String, Value> = Map::new();
            let mut config_fields: Map<String, Value> = Map::new();
            for pool in pools.iter().filter(|pool| pool.backend == backend.name) {
                let platforms = platforms_of(pool, node);
                if platforms.is_empty() {
                    continue;
                }
                let mut allocatables = Map::new();
                let mut configs = Map::new();
                for platform in &platforms {
                    pairs.push(format!("{}/{platform}", pool.name));
                    allocatables.insert(platform.clone(), allocatable.osmo_json());
                    let config = pool.platforms.get(platform);
                    configs.insert(
                        platform.clone(),
                        json!({
                            "host_network": config.is_some_and(|c| c.host_network_allowed),
                            "privileged": config.is_some_and(|c| c.privileged_allowed),
                            "default_mounts": [],
                            "allowed_mounts": config.map(|c| c.allowed_mounts.clone()).unwrap_or_default(),
                        }),
                    );
                }
                pool_platforms.insert(pool.name.clone(), json!(platforms));
                per_platform.insert(pool.name.clone(), Value::Object(allocatables));
                config_fields.insert(pool.name.clone(), Value::Object(configs));
            }
            let node_used = used.by_node.get(&node.name).copied().unwrap_or_default();
            let mut exposed = Map::new();
            exposed.insert("node".into(), json!(node.name));
            exposed.insert("pool/platform".into(), json!(pairs));
            if let Value::Object(fields) = allocatable.osmo_json() {
                exposed.extend(fields);
            }
            exposed.insert("gpu_model".into(), json!(node.gpu_model));
            entries.push(json!({
                "hostname": node.name,
                "backend": backend.name,
                "resource_type": "SHARED",
                "allocatable_fields": allocatable.osmo_json(),
                "usage_fields": node_used.osmo_json(),
                "non_workflow_usage_fields": Amounts::default().osmo_json(),
                "platform_allocatable_fields": per_platform,
                "exposed_fields": exposed,
                "config_fields": config_fields,
                "label_fields": node.labels,
                "taints": node.taints.iter().map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect})).collect::<Vec<_>>(),
                "conditions": node.conditions,
                "pool_platform_labels": pool_platforms,
                "online": backend.online,
            }));
        }
    }
    Ok(entries)
}

/// Every submit-time check of a plan against its pool, in OSMO's order:
/// the configs in force (`admission`: the WORKFLOW config's
/// `max_num_tasks`, the GPU guarantee for `priority`, each task's platform
/// and what it allows, what the executor can honour), then each task's
/// resources against the RESOURCE_VALIDATION rules its pool and platform
/// name (OSMO's expressions: static rules once, node rules on some node of
/// the platform), or, where they name none, OSMO's default rules (§3.4:
/// some node has at least the CPU, memory and GPUs and more than the
/// storage asked for). Node checks wait until an operator has reported the
/// backend's nodes. Submit, `validation_only`, resubmit and restart all
/// call this; `Ok` holds the warnings for the answer (an offline pool),
/// `Err` names the task and the rule.
pub fn check_resources(
    view: &ReadView,
    pool_name: &str,
    (plan, extras): (&WorkflowPlan, &WorkflowExtras),
    priority: Priority,
) -> Result<Vec<String>, String> {
    let in_force = InForce::read(view, pool_name).map_err(|error| error.to_string())?;
    in_force.check(plan, extras, priority)?;
    let Some(pool) = &in_force.pool else {
        return Ok(Vec::new());
    };
    let nodes: &[NodeInventory] = in_force
        .backend
        .as_ref()
        .map_or(&[], |backend| backend.nodes.as_slice());
    // A resource profile on a platform is checked once (OSMO caches it too).
    let mut passed: BTreeSet<(Option<String>, String)> = BTreeSet::new();
    for group in &plan.groups {
        for task in &group.tasks {
            let platform = task_platform(pool, task)?;
            let key = (
                platform.map(|(name, _)| name.to_string()),
                task.resource.name.clone(),
            );
            if passed.contains(&key) {
                continue;
            }
            let candidates: Vec<&NodeInventory> = match platform {
                Some((_, config)) => nodes.iter().filter(|n| on_platform(config, n)).collect(),
                None => nodes.iter().collect(),
            };
            let rules = named_rules(view, pool, platform)?;
            if rules.is_empty() {
                default_rules(pool_name, nodes, &candidates, task)?;
            } else {
                configured_rules(pool_name, platform, nodes, &candidates, &rules, task)?;
            }
            passed.insert(key);
        }
    }
    Ok(in_force.waiting_reason().into_iter().collect())
}

/// The rules of the RESOURCE_VALIDATION configs `pool` names in
/// `common_resource_validations`, then those `platform` names in its
/// `resource_validations`; one that does not exist is an error naming it.
fn named_rules(
    view: &ReadView,
    pool: &PoolConfig,
    platform: Option<(&str, &PlatformConfig)>,
) -> Result<Vec<Rule>, String> {
    let mut named: Vec<(String, &str)> = pool
        .common_resource_validations
        .iter()
        .map(|name| ("common_resource_validations".to_string(), name.as_str()))
        .collect();
    if let Some((platform_name, config)) = platform {
        named.extend(config.resource_validations.iter().map(|name| {
            (
                format!("platforms.{platform_name}.resource_validations"),
                name.as_str(),
            )
        }));
    }
    let mut rules = Vec::new();
    for (field, name) in named {
        let revision = view
            .config(ConfigType::ResourceValidation, name)
            .map_err(|error| error.to_string())?;
        let Some(data) = revision.and_then(|revision| revision.data) else {
            return Err(format!(
                "pool '{}' names RESOURCE_VALIDATION '{name}' in {field}, which does not exist; ask an admin to restore it or change the pool",
                pool.name
            ));
        };
        let assertions =
            assertions(&data).map_err(|error| format!("RESOURCE_VALIDATION '{name}': {error}"))?;
        rules.extend(
            assertions
                .into_iter()
                .enumerate()
                .map(|(index, assertion)| Rule {
                    config: name.to_string(),
                    index,
                    assertion,
                }),
        );
    }
    Ok(rules)
}

/// Most nodes a refusal lists, one line each.
const NODES_LISTED_MAX: usize = 10;

/// OSMO's rule evaluation for one task: every static rule holds, and some
/// node of the task's platform satisfies every node rule (once nodes are
/// reported).
fn configured_rules(
    pool_name: &str,
    platform: Option<(&str, &PlatformConfig)>,
    nodes: &[NodeInventory],
    candidates: &[&NodeInventory],
    rules: &[Rule],
    task: &TaskPlan,
) -> Result<(), String> {
    let failed = |detail: String| {
        format!(
            "Resource validation failed for task: {}\n{detail}",
            task.name
        )
    };
    let user = user_tokens(&task.resource);
    let (node_rules, static_rules): (Vec<&Rule>, Vec<&Rule>) =
        rules.iter().partition(|rule| rule.is_node_rule());
    for rule in static_rules {
        match evaluate(rule, &user, &task.name) {
            Ok(()) => {}
            Err(RuleError::Failed(message) | RuleError::Broken(message)) => {
                return Err(failed(message))
            }
        }
    }
    if node_rules.is_empty() || nodes.is_empty() {
        return Ok(());
    }
    let place = match platform {
        Some((name, _)) => format!("platform '{name}' of pool '{pool_name}'"),
        None => format!("pool '{pool_name}'"),
    };
    if candidates.is_empty() {
        return Err(failed(format!("There are no resources in {place}!")));
    }
    let mut reasons = Vec::new();
    'nodes: for node in candidates {
        let mut tokens = user.clone();
        tokens.extend(node_tokens(node));
        for rule in &node_rules {
            match evaluate(rule, &tokens, &task.name) {
                Ok(()) => {}
                Err(RuleError::Broken(message)) => return Err(failed(message)),
                Err(RuleError::Failed(message)) => {
                    reasons.push(format!("  {}: {message}", node.name));
                    continue 'nodes;
                }
            }
        }
        return Ok(());
    }
    let more = reasons.len().saturating_sub(NODES_LISTED_MAX);
    reasons.truncate(NODES_LISTED_MAX);
    if more > 0 {
        reasons.push(format!("  ... and {more} more nodes"));
    }
    Err(failed(format!(
        "no node of {place} passes its RESOURCE_VALIDATION rules:\n{}\nPlease check available resources with \"resource list\".",
        reasons.join("\n")
    )))
}

/// OSMO §3.4's default rules, for pools and platforms that name no
/// RESOURCE_VALIDATION: some node of the task's platform has at least the
/// CPU, memory and GPUs and (more than) the storage it asks for. Skipped
/// while no operator has reported nodes for the pool's backend.
fn default_rules(
    pool_name: &str,
    nodes: &[NodeInventory],
    candidates: &[&NodeInventory],
    task: &TaskPlan,
) -> Result<(), String> {
    if nodes.is_empty() {
        return Ok(());
    }
    if candidates.is_empty() {
        return Err(format!(
            "task '{}': no node of pool '{pool_name}' matches its platform",
            task.name
        ));
    }
    let resource = &task.resource;
    let request = Amounts::of_request(resource);
    let fits = |node: &&NodeInventory| {
        request.cpu_millis <= node.cpu_millis
            && request.memory_bytes <= node.memory_bytes
            && request.gpus <= node.gpu_count
            && (resource.storage_bytes.is_none()
                || request.storage_bytes < node.ephemeral_storage_bytes)
    };
    if candidates.iter().any(fits) {
        return Ok(());
    }
    let largest = |f: fn(&NodeInventory) -> u64| candidates.iter().map(|n| f(n)).max().unwrap_or(0);
    let prefix = format!(
        "workflow.resources.{} (task '{}')",
        resource.name, task.name
    );
    let message = if request.cpu_millis > largest(|n| n.cpu_millis) {
        format!(
            "{prefix}: cpu {} is more than any node of pool '{pool_name}' can allocate (largest: {})",
            format_cpu(request.cpu_millis),
            format_cpu(largest(|n| n.cpu_millis))
        )
    } else if request.memory_bytes > largest(|n| n.memory_bytes) {
        format!(
            "{prefix}: memory {}Ki is more than any node of pool '{pool_name}' can allocate (largest: {}Ki)",
            request.memory_bytes / 1024,
            largest(|n| n.memory_bytes) / 1024
        )
    } else if request.gpus > largest(|n| n.gpu_count) {
        format!(
            "{prefix}: gpu {} is more than any node of pool '{pool_name}' has (largest: {})",
            request.gpus,
            largest(|n| n.gpu_count)
        )
    } else if request.storage_bytes >= largest(|n| n.ephemeral_storage_bytes) {
        format!(
            "{prefix}: storage {}Ki is not less than any node of pool '{pool_name}' has (largest: {}Ki)",
            request.storage_bytes / 1024,
            largest(|n| n.ephemeral_storage_bytes) / 1024
        )
    } else {
        format!("{prefix}: no single node of pool '{pool_name}' has all of cpu, memory, gpu and storage requested")
    };
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_plain_numbers() {
        assert_eq!(cores(0), "0");
        assert_eq!(cores(2000), "2");
        assert_eq!(cores(500), "0.5");
        assert_eq!(cores(1250), "1.25");
        assert_eq!(cores(1001), "1.001");
    }

    #[test]
    fn resource_fields_have_osmos_names() {
        let amounts = Amounts {
            cpu_millis: 1500,
            memory_bytes: 2 * 1024 * 1024,
            storage_bytes: 4096,
            gpus: 8,
        };
        assert_eq!(
            amounts.osmo_json(),
            json!({"cpu": "1.5", "memory": "2048Ki", "storage": "4Ki", "gpu": "8"})
        );
    }
}
