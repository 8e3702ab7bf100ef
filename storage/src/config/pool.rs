//! The POOL config: OSMO's `Pool` — its backend, platforms (which nodes,
//! tolerations, what they allow), GPU quota, timeouts, default exit
//! actions, and the pod templates and resource validations it applies.
//!
//! Owns the typed config, parsing and checking a body, the derived status
//! and the JSON OSMO shows.
//!
//! Invariants: the name in the path wins (a different `name` in the body is
//! refused); a pool has a backend; `default_platform` is one of its
//! platforms; durations are [`super::parse_duration_seconds`]'s; `status`
//! is derived ([`pool_status`]: maintenance, the backend's liveness) and a
//! `status` sent in a body is only checked for a valid value, then ignored.
//! Storing a POOL revision keeps the `pools` routing table in step
//! ([`PoolConfig::record`]). The pod templates and resource validations a
//! pool names must exist when it is stored: [`PoolConfig::references`]
//! lists them for the caller to look up. No field is a secret.

use super::pool_extras::{check_topology_keys, PoolExtras, TopologyKey};
use super::{check_duration, typed, ConfigType};
use crate::record::PoolRecord;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolStatus {
    #[default]
    Online,
    Offline,
    Maintenance,
}

impl PoolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Online => "ONLINE",
            PoolStatus::Offline => "OFFLINE",
            PoolStatus::Maintenance => "MAINTENANCE",
        }
    }
}

/// OSMO's `PoolResourceCountable`; -1 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuQuota {
    pub guarantee: i64,
    pub maximum: i64,
    pub weight: i64,
}

impl Default for GpuQuota {
    fn default() -> Self {
        GpuQuota {
            guarantee: -1,
            maximum: -1,
            weight: 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    pub key: String,
    /// `Equal` or `Exists`.
    pub operator: String,
    pub value: Option<String>,
    pub effect: Option<String>,
}

/// A platform of a pool: which nodes it covers and what it allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformConfig {
    pub description: String,
    /// Node selector: a node belongs to the platform when it has every label.
    pub labels: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub host_network_allowed: bool,
    pub privileged_allowed: bool,
    pub allowed_mounts: Vec<String>,
    pub override_pod_template: Vec<String>,
    pub resource_validations: Vec<String>,
}

/// OSMO's `Pool`: the full admin config of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    pub description: String,
    pub backend: String,
    pub default_platform: Option<String>,
    pub platforms: BTreeMap<String, PlatformConfig>,
    /// `ONLINE` unless an admin set `OFFLINE` or `MAINTENANCE`.
    pub status: PoolStatus,
    pub enable_maintenance: bool,
    pub gpu: GpuQuota,
    /// Durations as OSMO writes them (`"60d"`, `"2h"`), validated by [`parse`].
    pub default_exec_timeout: String,
    pub default_queue_timeout: String,
    pub max_exec_timeout: String,
    pub max_queue_timeout: String,
    /// Action (`COMPLETE`, `FAIL`, `RESCHEDULE`) → exit codes (`"1-10,255"`).
    pub default_exit_actions: BTreeMap<String, String>,
    pub common_pod_template: Vec<String>,
    pub common_resource_validations: Vec<String>,
}

impl PoolConfig {
    /// The full config of a pool known only by its routing record.
    pub fn from_record(record: &PoolRecord) -> PoolConfig {
        PoolConfig {
            name: record.name.clone(),
            description: record.description.clone(),
            backend: record.backend.clone(),
            default_platform: record.default_platform.clone(),
            platforms: record
                .platforms
                .iter()
                .map(|name| (name.clone(), PlatformConfig::default()))
                .collect(),
            status: PoolStatus::Online,
            enable_maintenance: false,
            gpu: GpuQuota::default(),
            default_exec_timeout: String::new(),
            default_queue_timeout: String::new(),
            max_exec_timeout: String::new(),
            max_queue_timeout: String::new(),
            default_exit_actions: BTreeMap::new(),
            common_pod_template: Vec::new(),
            common_resource_validations: Vec::new(),
        }
    }

    /// The routing part `apply` uses on submit.
    pub fn record(&self) -> PoolRecord {
        PoolRecord {
            name: self.name.clone(),
            description: self.description.clone(),
            backend: self.backend.clone(),
            default_platform: self.default_platform.clone(),
            platforms: self.platforms.keys().cloned().collect(),
        }
    }

    /// The configs this pool names, in order, each with the field that
    /// names it (`common_pod_template`,
    /// `platforms.<platform>.override_pod_template`, ...).
    pub fn references(&self) -> Vec<(String, ConfigType, &str)> {
        let mut wanted: Vec<(String, ConfigType, &str)> = Vec::new();
        for name in &self.common_pod_template {
            wanted.push(("common_pod_template".into(), ConfigType::PodTemplate, name));
        }
        for name in &self.common_resource_validations {
            wanted.push((
                "common_resource_validations".into(),
                ConfigType::ResourceValidation,
                name,
            ));
        }
        for (platform_name, platform) in &self.platforms {
            for name in &platform.override_pod_template {
                wanted.push((
                    format!("platforms.{platform_name}.override_pod_template"),
                    ConfigType::PodTemplate,
                    name,
                ));
            }
            for name in &platform.resource_validations {
                wanted.push((
                    format!("platforms.{platform_name}.resource_validations"),
                    ConfigType::ResourceValidation,
                    name,
                ));
            }
        }
        wanted
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TolerationBody {
    key: String,
    #[serde(default = "equal")]
    operator: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    effect: Option<String>,
}

fn equal() -> String {
    "Equal".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PlatformBody {
    description: String,
    host_network_allowed: bool,
    privileged_allowed: bool,
    allowed_mounts: Vec<String>,
    tolerations: Vec<TolerationBody>,
    labels: BTreeMap<String, String>,
    resource_validations: Vec<String>,
    override_pod_template: Vec<String>,
    /// Derived (from the platform's pod templates, as OSMO derives it);
    /// accepted so OSMO bodies load.
    #[allow(dead_code)]
    default_mounts: Vec<String>,
    /// Refused unless empty (see `parse`).
    default_variables: Map<String, Value>,
    #[allow(dead_code)]
    parsed_resource_validations: Value,
    #[allow(dead_code)]
    parsed_pod_template: Value,
    #[allow(dead_code)]
    parsed_pod_template_for_accounting: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GpuBody {
    guarantee: Option<i64>,
    maximum: Option<i64>,
    weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PoolResourcesBody {
    gpu: Option<GpuBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    backend: String,
    #[serde(default)]
    default_platform: Option<String>,
    #[serde(default)]
    platforms: BTreeMap<String, PlatformBody>,
    /// Read-only (derived); checked for a valid value and ignored.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    enable_maintenance: bool,
    #[serde(default)]
    resources: PoolResourcesBody,
    #[serde(default)]
    default_exec_timeout: String,
    #[serde(default)]
    default_queue_timeout: String,
    #[serde(default)]
    max_exec_timeout: String,
    #[serde(default)]
    max_queue_timeout: String,
    #[serde(default)]
    default_exit_actions: BTreeMap<String, String>,
    #[serde(default)]
    common_pod_template: Vec<String>,
    #[serde(default)]
    common_resource_validations: Vec<String>,
    /// Derived, or not supported yet; accepted so OSMO bodies load.
    #[serde(default)]
    #[allow(dead_code)]
    download_type: Option<Value>,
    #[serde(default)]
    topology_keys: Vec<TopologyKey>,
    /// Refused unless empty (see `parse`).
    #[serde(default)]
    common_default_variables: Map<String, Value>,
    #[serde(default)]
    common_group_templates: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    parsed_resource_validations: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parsed_pod_template: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parsed_pod_template_for_accounting: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parsed_group_templates: Value,
    #[serde(default)]
    #[allow(dead_code)]
    last_heartbeat: Value,
}

/// Exit codes like `"0,1-10,255"`.
fn check_codes(field: &str, codes: &str) -> Result<(), String> {
    crate::plan::parse_exit_codes(codes)
        .map(|_| ())
        .map_err(|_| format!("configs.{field}: '{codes}' is not a list of codes like \"1,2-10\""))
}

/// Parses a POOL body stored under `name`: the config and its extras
/// (`pool_extras`).
pub fn parse(name: &str, body: Value) -> Result<(PoolConfig, PoolExtras), String> {
    let body: PoolBody = typed(body, "configs")?;
    if !body.name.is_empty() && body.name != name {
        return Err(format!(
            "configs.name: '{}' differs from the pool name '{name}' in the path",
            body.name
        ));
    }
    if body.backend.trim().is_empty() {
        return Err("configs.backend: a pool needs a backend".into());
    }
    check_topology_keys(&body.topology_keys)?;
    // Pod template and validation variables' defaults: stored, they would
    // change what a pool record is; refused until they are, never accepted
    // and ignored.
    let variables_refused = |field: String| {
        format!(
            "{field}: default variables are not supported yet: Gantry's pod templates and resource validations see only the task's own values; remove them (or set the resources in the workflow)"
        )
    };
    if !body.common_default_variables.is_empty() {
        return Err(variables_refused("configs.common_default_variables".into()));
    }
    for (platform_name, platform) in &body.platforms {
        if !platform.default_variables.is_empty() {
            return Err(variables_refused(format!(
                "configs.platforms.{platform_name}.default_variables"
            )));
        }
    }
    if !body.common_group_templates.is_empty() {
        return Err("configs.common_group_templates: group templates are not supported yet".into());
    }
    if let Some(status) = &body.status {
        if !matches!(status.as_str(), "ONLINE" | "OFFLINE" | "MAINTENANCE") {
            return Err(format!(
                "configs.status: '{status}' is not ONLINE, OFFLINE or MAINTENANCE"
            ));
        }
    }
    if let Some(platform) = &body.default_platform {
        if !body.platforms.contains_key(platform) {
            return Err(format!(
                "configs.default_platform: '{platform}' is not one of the pool's platforms"
            ));
        }
    }
    for (field, value) in [
        ("default_exec_timeout", &body.default_exec_timeout),
        ("default_queue_timeout", &body.default_queue_timeout),
        ("max_exec_timeout", &body.max_exec_timeout),
        ("max_queue_timeout", &body.max_queue_timeout),
    ] {
        check_duration(field, value)?;
    }
    for (action, codes) in &body.default_exit_actions {
        if crate::plan::ExitAction::from_name(action).is_none() {
            return Err(format!(
                "configs.default_exit_actions.{action}: the action must be COMPLETE, FAIL or RESCHEDULE"
            ));
        }
        check_codes(&format!("default_exit_actions.{action}"), codes)?;
    }
    let gpu = body.resources.gpu.unwrap_or_default();
    let defaults = GpuQuota::default();
    let gpu = GpuQuota {
        guarantee: gpu.guarantee.unwrap_or(defaults.guarantee),
        maximum: gpu.maximum.unwrap_or(defaults.maximum),
        weight: gpu.weight.unwrap_or(defaults.weight),
    };
    if gpu.guarantee < -1 || gpu.maximum < -1 || gpu.weight < 0 {
        return Err("configs.resources.gpu: guarantee and maximum must be -1 (no limit) or more, weight 0 or more".into());
    }
    if gpu.maximum >= 0 && gpu.guarantee > gpu.maximum {
        return Err("configs.resources.gpu.guarantee: must not exceed maximum".into());
    }
    let mut platforms = BTreeMap::new();
    for (platform_name, platform) in body.platforms {
        let mut tolerations = Vec::new();
        for (index, toleration) in platform.tolerations.into_iter().enumerate() {
            if !matches!(toleration.operator.as_str(), "Equal" | "Exists") {
                return Err(format!(
                    "configs.platforms.{platform_name}.tolerations[{index}].operator: must be Equal or Exists"
                ));
            }
            tolerations.push(Toleration {
                key: toleration.key,
                operator: toleration.operator,
                value: toleration.value,
                effect: toleration.effect,
            });
        }
        platforms.insert(
            platform_name,
            PlatformConfig {
                description: platform.description,
                labels: platform.labels,
                tolerations,
                host_network_allowed: platform.host_network_allowed,
                privileged_allowed: platform.privileged_allowed,
                allowed_mounts: platform.allowed_mounts,
                override_pod_template: platform.override_pod_template,
                resource_validations: platform.resource_validations,
            },
        );
    }
    let extras = PoolExtras {
        topology_keys: body.topology_keys,
    };
    let pool = PoolConfig {
        name: name.to_string(),
        description: body.description,
        backend: body.backend,
        default_platform: body.default_platform,
        platforms,
        // Derived (as OSMO): from `enable_maintenance` and the backend's
        // heartbeats; a `status` sent back from `config show` is ignored.
        status: PoolStatus::Online,
        enable_maintenance: body.enable_maintenance,
        gpu,
        default_exec_timeout: body.default_exec_timeout,
        default_queue_timeout: body.default_queue_timeout,
        max_exec_timeout: body.max_exec_timeout,
        max_queue_timeout: body.max_queue_timeout,
        default_exit_actions: body.default_exit_actions,
        common_pod_template: body.common_pod_template,
        common_resource_validations: body.common_resource_validations,
    };
    Ok((pool, extras))
}

/// The status OSMO shows: MAINTENANCE if set so, else OFFLINE if set so or
/// its backend is offline, else ONLINE.
pub fn pool_status(pool: &PoolConfig, backend_online: bool) -> PoolStatus {
    if pool.enable_maintenance || pool.status == PoolStatus::Maintenance {
        PoolStatus::Maintenance
    } else if pool.status == PoolStatus::Offline || !backend_online {
        PoolStatus::Offline
    } else {
        PoolStatus::Online
    }
}

/// OSMO's `PoolEditable`, with `status` as it is now.
pub fn pool_json(pool: &PoolConfig, extras: &PoolExtras, status: PoolStatus) -> Value {
    let platforms: Map<String, Value> = pool
        .platforms
        .iter()
        .map(|(name, platform)| {
            (
                name.clone(),
                json!({
                    "description": platform.description,
                    "host_network_allowed": platform.host_network_allowed,
                    "privileged_allowed": platform.privileged_allowed,
                    "allowed_mounts": platform.allowed_mounts,
                    "tolerations": platform.tolerations.iter().map(|t| json!({
                        "key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
                    })).collect::<Vec<_>>(),
                    "labels": platform.labels,
                    "resource_validations": platform.resource_validations,
                    "override_pod_template": platform.override_pod_template,
                }),
            )
        })
        .collect();
    json!({
        "name": pool.name,
        "description": pool.description,
        "status": status.as_str(),
        "enable_maintenance": pool.enable_maintenance,
        "backend": pool.backend,
        "default_platform": pool.default_platform,
        "default_exec_timeout": pool.default_exec_timeout,
        "default_queue_timeout": pool.default_queue_timeout,
        "max_exec_timeout": pool.max_exec_timeout,
        "max_queue_timeout": pool.max_queue_timeout,
        "default_exit_actions": pool.default_exit_actions,
        "resources": {"gpu": {
            "guarantee": pool.gpu.guarantee,
            "maximum": pool.gpu.maximum,
            "weight": pool.gpu.weight,
        }},
        "common_pod_template": pool.common_pod_template,
        "common_resource_validations": pool.common_resource_validations,
        "topology_keys": extras.topology_keys,
        "platforms": platforms,
    })
}
