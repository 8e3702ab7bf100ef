//! Config bodies in OSMO's JSON shapes: parsing them (unknown fields and bad
//! values refused with the field's path) into what the state machine stores,
//! and rendering stored configs back to the same shapes.
//!
//! Invariant: what `render` produces for a config, `parse` accepts for the
//! same type, so `config show -t json` output can be edited and sent back.

use crate::spec::quantity::parse_duration;
use gantry_storage::{
    BackendRecord, BackendSettings, ConfigData, ConfigRevision, ConfigType, GpuQuota,
    PlatformConfig, Policy, PolicyEffect, PoolConfig, PoolStatus, ReadView, RoleConfig,
    SchedulerType, Toleration,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Deserializes `value` as `T`, naming the offending field on failure.
pub fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            format!("{what}: {inner}")
        } else {
            format!("{what}.{path}: {inner}")
        }
    })
}

fn check_duration(field: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    parse_duration(text)
        .map(|_| ())
        .map_err(|error| format!("configs.{field}: {error}"))
}

// ---------------------------------------------------------------------------
// SERVICE and WORKFLOW
// ---------------------------------------------------------------------------

/// OSMO's `ServiceConfig`, plus Gantry's backend liveness graces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub service_base_url: String,
    pub service_auth: Value,
    pub cli_config: Value,
    pub max_pod_restart_limit: String,
    pub agent_queue_size: u64,
    /// A backend is offline when no heartbeat came for this long (OSMO: 2 min).
    pub backend_heartbeat_grace: String,
    /// After this long without a heartbeat the backend's tasks fail
    /// FAILED_BACKEND_ERROR; `"0"` never.
    pub backend_lost_grace: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            service_base_url: String::new(),
            service_auth: json!({}),
            cli_config: json!({}),
            max_pod_restart_limit: "30m".into(),
            agent_queue_size: 1024,
            backend_heartbeat_grace: "2m".into(),
            backend_lost_grace: "10m".into(),
        }
    }
}

impl ServiceConfig {
    fn check(&self) -> Result<(), String> {
        check_duration("max_pod_restart_limit", &self.max_pod_restart_limit)?;
        check_duration("backend_lost_grace", &self.backend_lost_grace)?;
        match parse_duration(&self.backend_heartbeat_grace) {
            Ok(0) => Err("configs.backend_heartbeat_grace: must be more than 0".into()),
            Ok(_) => Ok(()),
            Err(error) => Err(format!("configs.backend_heartbeat_grace: {error}")),
        }
    }

    /// `(offline after, fail tasks after)` in milliseconds.
    pub fn graces_ms(&self) -> (u64, u64) {
        let ms = |text: &str, default: u64| {
            parse_duration(text)
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(default)
        };
        (
            ms(&self.backend_heartbeat_grace, 120_000).max(1),
            ms(&self.backend_lost_grace, 600_000),
        )
    }
}

/// The SERVICE config in force (defaults when never set or unreadable).
pub fn service_config(view: &ReadView) -> ServiceConfig {
    match view.config(ConfigType::Service, "") {
        Ok(Some(ConfigRevision {
            data: Some(ConfigData::Json(text)),
            ..
        })) => serde_json::from_str(&text).unwrap_or_default(),
        _ => ServiceConfig::default(),
    }
}

/// OSMO's `WorkflowConfig`: the scalar settings typed, the nested blocks
/// kept as given.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    pub workflow_data: WorkflowDataConfig,
    pub workflow_log: Value,
    pub workflow_app: Value,
    pub workflow_info: Value,
    pub backend_images: Value,
    pub workflow_alerts: Value,
    pub credential_config: Value,
    pub user_workflow_limits: Value,
    pub plugins_config: Value,
    pub labels_config: Value,
    pub max_num_tasks: u64,
    pub max_num_ports_per_task: u64,
    pub max_retry_per_task: u64,
    pub max_retry_per_job: u64,
    pub default_schedule_timeout: u64,
    pub default_exec_timeout: String,
    pub default_queue_timeout: String,
    pub max_exec_timeout: String,
    pub max_queue_timeout: String,
    pub force_cleanup_delay: String,
    pub max_log_lines: u64,
    pub max_task_log_lines: u64,
    pub max_error_log_lines: u64,
    pub max_event_log_lines: u64,
    pub task_heartbeat_frequency: String,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            workflow_data: WorkflowDataConfig::default(),
            workflow_log: json!({}),
            workflow_app: json!({}),
            workflow_info: json!({"tags": [], "max_name_length": 64}),
            backend_images: json!({}),
            workflow_alerts: json!({}),
            credential_config: json!({}),
            user_workflow_limits: json!({}),
            plugins_config: json!({}),
            labels_config: json!({}),
            max_num_tasks: 20,
            max_num_ports_per_task: 30,
            max_retry_per_task: 0,
            max_retry_per_job: 5,
            default_schedule_timeout: 30,
            default_exec_timeout: "60d".into(),
            default_queue_timeout: "60d".into(),
            max_exec_timeout: "60d".into(),
            max_queue_timeout: "60d".into(),
            force_cleanup_delay: "1h".into(),
            max_log_lines: 10_000,
            max_task_log_lines: 1000,
            max_error_log_lines: 100,
            max_event_log_lines: 100,
            task_heartbeat_frequency: "10m".into(),
        }
    }
}

impl WorkflowConfig {
    fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("default_exec_timeout", &self.default_exec_timeout),
            ("default_queue_timeout", &self.default_queue_timeout),
            ("max_exec_timeout", &self.max_exec_timeout),
            ("max_queue_timeout", &self.max_queue_timeout),
            ("force_cleanup_delay", &self.force_cleanup_delay),
            ("task_heartbeat_frequency", &self.task_heartbeat_frequency),
        ] {
            check_duration(field, value)?;
        }
        if self.max_num_tasks == 0 {
            return Err("configs.max_num_tasks: must be at least 1".into());
        }
        // The state machine reads the retention with the same function when
        // a workflow ends; what passes here, it understands.
        gantry_storage::retention::workflow_log_retention_ms(&self.workflow_log)
            .map_err(|error| format!("configs.{error}"))?;
        if let Some(credential) = &self.workflow_data.credential {
            credential.data_store("configs.workflow_data.credential")?;
        }
        Ok(())
    }
}

/// OSMO's `DataConfig` (`workflow_data`): where task data goes between
/// tasks. Without a credential, the server's own object store under `data/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowDataConfig {
    pub credential: Option<DataCredential>,
    pub base_url: String,
    pub websocket_timeout: u64,
    pub data_timeout: u64,
    pub download_type: String,
}

impl Default for WorkflowDataConfig {
    fn default() -> Self {
        WorkflowDataConfig {
            credential: None,
            base_url: String::new(),
            websocket_timeout: 1440,
            data_timeout: 10,
            download_type: "download".into(),
        }
    }
}

/// OSMO's `StaticDataCredential` (with keys) or `DefaultDataCredential`
/// (without: the environment's credential chain).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCredential {
    /// `s3://bucket[/prefix]`; Gantry also takes `file:///abs/dir`.
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressing_style: Option<AddressingStyle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Write-only: shown as [`MASKED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressingStyle {
    Virtual,
    Path,
    Auto,
}

/// What a write-only secret reads back as.
pub use crate::control::masking::MASK as MASKED;
use crate::control::masking::SECRET_POINTERS;

impl DataCredential {
    /// The data store this credential names; errors name the field under
    /// `at`.
    pub fn data_store(&self, at: &str) -> Result<crate::data::DataStore, String> {
        let endpoint = self.endpoint.trim_end_matches('/');
        let scheme_ok = endpoint.starts_with("s3://") || endpoint.starts_with("file:///");
        if !scheme_ok {
            return Err(format!(
                "{at}.endpoint: '{}' is not s3://bucket[/prefix] (or file:///abs/dir)",
                self.endpoint
            ));
        }
        if let Some(url) = &self.override_url {
            let parsed = url::Url::parse(url)
                .map_err(|error| format!("{at}.override_url: '{url}': {error}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("{at}.override_url: '{url}' is not an http(s) URL"));
            }
        }
        // Also refused here: a literal [MASKED] is never a key, whatever path it came by.
        if self.access_key.as_deref() == Some(MASKED) {
            return Err(format!(
                "{at}.access_key: {MASKED} stands for a stored secret, and none is stored; send the secret"
            ));
        }
        let keys = match (&self.access_key_id, &self.access_key) {
            (Some(id), Some(key)) if !id.is_empty() && !key.is_empty() => {
                Some((id.clone(), key.clone()))
            }
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{at}.access_key: access_key_id and access_key go together (both, or neither for the default credential chain)"
                ))
            }
        };
        let store = crate::data::DataStore {
            root: endpoint.to_string(),
            region: self.region.clone(),
            endpoint: self.override_url.clone(),
            // `auto`: path style, which every S3-compatible service and AWS accept.
            path_style: self.addressing_style != Some(AddressingStyle::Virtual),
            access_key_id: keys.as_ref().map(|(id, _)| id.clone()),
            access_key: keys.map(|(_, key)| key),
        };
        store
            .open(&store.root)
            .map_err(|error| format!("{at}.endpoint: {error}"))?;
        Ok(store)
    }
}

/// The data store of the WORKFLOW config in force, if it names one.
pub fn workflow_data_store(view: &ReadView) -> Option<crate::data::DataStore> {
    let Ok(Some(ConfigRevision {
        data: Some(ConfigData::Json(text)),
        ..
    })) = view.config(ConfigType::Workflow, "")
    else {
        return None;
    };
    let config: WorkflowConfig = serde_json::from_str(&text).ok()?;
    config
        .workflow_data
        .credential?
        .data_store("configs.workflow_data.credential")
        .ok()
}

/// Write-only secrets of a config as they are shown: masked.
fn mask_secrets(value: &mut Value) {
    for pointer in SECRET_POINTERS {
        if let Some(secret) = value
            .pointer_mut(pointer)
            .filter(|secret| secret.is_string())
        {
            *secret = Value::String(MASKED.into());
        }
    }
}

/// A WORKFLOW config sent back with masked secrets keeps the secrets in
/// force (what `config show` printed can be edited and sent back); a
/// `[MASKED]` with no stored secret behind it is refused, naming the field.
pub fn restore_masked_secrets(
    body: &mut Value,
    current: Option<&ConfigData>,
) -> Result<(), String> {
    let current = current.and_then(|data| match data {
        ConfigData::Json(text) => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    });
    for pointer in SECRET_POINTERS {
        if body.pointer(pointer).and_then(Value::as_str) != Some(MASKED) {
            continue;
        }
        let kept = current
            .as_ref()
            .and_then(|current| current.pointer(pointer).cloned());
        match (body.pointer_mut(pointer), kept) {
            (Some(slot), Some(kept)) => *slot = kept,
            _ => {
                return Err(format!(
                    "configs{}: {MASKED} stands for a stored secret, and none is stored; send the secret",
                    pointer.replace('/', ".")
                ))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// BACKEND
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SchedulerTypeBody {
    Kai,
    Default,
    Volcano,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerSettingsBody {
    scheduler_type: Option<SchedulerTypeBody>,
    scheduler_name: Option<String>,
    scheduler_timeout: Option<u64>,
}

/// OSMO's `BackendConfig`: every field optional (a partial update).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendBody {
    description: Option<String>,
    dashboard_url: Option<String>,
    grafana_url: Option<String>,
    router_address: Option<String>,
    scheduler_settings: Option<SchedulerSettingsBody>,
    /// Accepted for OSMO compatibility; set by operators, not by admins.
    #[allow(dead_code)]
    k8s_uid: Option<String>,
    #[allow(dead_code)]
    tests: Option<Vec<String>>,
    #[allow(dead_code)]
    node_conditions: Option<Value>,
    /// Read-only fields of `config show` output, ignored when sent back.
    #[allow(dead_code)]
    name: Option<String>,
    #[allow(dead_code)]
    version: Option<String>,
    #[allow(dead_code)]
    k8s_namespace: Option<String>,
    #[allow(dead_code)]
    last_heartbeat: Option<Value>,
    #[allow(dead_code)]
    created_date: Option<Value>,
    #[allow(dead_code)]
    online: Option<bool>,
    #[allow(dead_code)]
    nodes: Option<Value>,
}

/// Applies a partial BACKEND body onto `current`.
pub fn merge_backend(current: &BackendSettings, body: Value) -> Result<BackendSettings, String> {
    let body: BackendBody = typed(body, "configs")?;
    let mut settings = current.clone();
    if let Some(v) = body.description {
        settings.description = v;
    }
    if let Some(v) = body.dashboard_url {
        settings.dashboard_url = v;
    }
    if let Some(v) = body.grafana_url {
        settings.grafana_url = v;
    }
    if let Some(v) = body.router_address {
        settings.router_address = v;
    }
    if let Some(scheduler) = body.scheduler_settings {
        if let Some(kind) = scheduler.scheduler_type {
            settings.scheduler_type = match kind {
                SchedulerTypeBody::Kai => SchedulerType::Kai,
                SchedulerTypeBody::Default => SchedulerType::Default,
                SchedulerTypeBody::Volcano => SchedulerType::Volcano,
            };
        }
        if let Some(name) = scheduler.scheduler_name {
            if name.trim().is_empty() {
                return Err("configs.scheduler_settings.scheduler_name: must not be empty".into());
            }
            settings.scheduler_name = name;
        }
        if let Some(timeout) = scheduler.scheduler_timeout {
            settings.scheduler_timeout_seconds = timeout;
        }
    }
    Ok(settings)
}

fn settings_json(settings: &BackendSettings) -> Value {
    json!({
        "description": settings.description,
        "dashboard_url": settings.dashboard_url,
        "grafana_url": settings.grafana_url,
        "router_address": settings.router_address,
        "scheduler_settings": {
            "scheduler_type": settings.scheduler_type.as_str(),
            "scheduler_name": settings.scheduler_name,
            "scheduler_timeout": settings.scheduler_timeout_seconds,
        },
    })
}

/// OSMO's `Backend`: settings plus what the operator reports.
pub fn backend_json(backend: &BackendRecord) -> Value {
    let mut value = settings_json(&backend.settings);
    let nodes: Vec<Value> = backend.nodes.iter().map(node_json).collect();
    if let Value::Object(map) = &mut value {
        map.insert("name".into(), json!(backend.name));
        map.insert("version".into(), json!(""));
        map.insert("k8s_uid".into(), json!(""));
        map.insert("k8s_namespace".into(), json!(""));
        map.insert("tests".into(), json!([]));
        map.insert(
            "node_conditions".into(),
            json!({"rules": {}, "prefix": "osmo.nvidia.com/"}),
        );
        map.insert(
            "last_heartbeat".into(),
            super::views::time(backend.last_heartbeat),
        );
        map.insert(
            "created_date".into(),
            super::views::time(Some(backend.created)),
        );
        map.insert("online".into(), json!(backend.online));
        map.insert("nodes".into(), Value::Array(nodes));
    }
    value
}

pub fn node_json(node: &gantry_storage::NodeInventory) -> Value {
    json!({
        "hostname": node.name,
        "allocatable": {
            "cpu": format_cpu(node.cpu_millis),
            "memory": format!("{}Ki", node.memory_bytes / 1024),
            "ephemeral-storage": format!("{}Ki", node.ephemeral_storage_bytes / 1024),
            "nvidia.com/gpu": node.gpu_count,
        },
        "gpu_model": node.gpu_model,
        "labels": node.labels,
        "taints": node.taints.iter().map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect})).collect::<Vec<_>>(),
        "conditions": node.conditions,
    })
}

/// Millicores as Kubernetes writes them: `4` or `1500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

// ---------------------------------------------------------------------------
// POOL
// ---------------------------------------------------------------------------

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
    /// Derived or unsupported in Gantry; accepted so OSMO bodies load.
    #[allow(dead_code)]
    default_mounts: Vec<String>,
    #[allow(dead_code)]
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
    topology_keys: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
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
    let bad = || format!("configs.{field}: '{codes}' is not a list of codes like \"1,2-10\"");
    for part in codes.split(',') {
        let (low, high) = part
            .trim()
            .split_once('-')
            .unwrap_or((part.trim(), part.trim()));
        let low: i64 = low.trim().parse().map_err(|_| bad())?;
        let high: i64 = high.trim().parse().map_err(|_| bad())?;
        if low > high {
            return Err(bad());
        }
    }
    Ok(())
}

/// Parses a POOL body stored under `name`.
pub fn parse_pool(name: &str, body: Value) -> Result<PoolConfig, String> {
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
    if !body.topology_keys.is_empty() {
        return Err("configs.topology_keys: topology-aware scheduling is not supported yet".into());
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
        if !matches!(action.as_str(), "COMPLETE" | "FAIL" | "RESCHEDULE") {
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
    Ok(PoolConfig {
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
    })
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
pub fn pool_json(pool: &PoolConfig, status: PoolStatus) -> Value {
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
        "platforms": platforms,
    })
}

// ---------------------------------------------------------------------------
// ROLE, POD_TEMPLATE, RESOURCE_VALIDATION
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default)]
    effect: Option<String>,
    actions: Vec<String>,
    #[serde(default)]
    resources: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    policies: Vec<PolicyBody>,
    #[serde(default)]
    #[allow(dead_code)]
    immutable: bool,
    #[serde(default)]
    #[allow(dead_code)]
    sync_mode: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    external_roles: Option<Vec<String>>,
}

pub fn parse_role(name: &str, body: Value) -> Result<RoleConfig, String> {
    let body: RoleBody = typed(body, "configs")?;
    if let Some(named) = body.name.as_deref().filter(|n| *n != name) {
        return Err(format!(
            "configs.name: '{named}' differs from the role name '{name}' in the path"
        ));
    }
    let mut policies = Vec::new();
    for (index, policy) in body.policies.into_iter().enumerate() {
        let effect = match policy.effect.as_deref().unwrap_or("Allow") {
            "Allow" => PolicyEffect::Allow,
            "Deny" => PolicyEffect::Deny,
            other => {
                return Err(format!(
                    "configs.policies[{index}].effect: '{other}' is not Allow or Deny"
                ))
            }
        };
        if policy.actions.is_empty() {
            return Err(format!(
                "configs.policies[{index}].actions: must not be empty"
            ));
        }
        for action in &policy.actions {
            let well_formed = action == "*"
                || action.split_once(':').is_some_and(|(kind, verb)| {
                    !kind.is_empty()
                        && !verb.is_empty()
                        && action
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '*' | '_'))
                });
            if !well_formed {
                return Err(format!(
                    "configs.policies[{index}].actions: '{action}' is not '<type>:<Action>' (e.g. workflow:Create, workflow:*)"
                ));
            }
        }
        policies.push(Policy {
            effect,
            actions: policy.actions,
            resources: policy.resources.unwrap_or_else(|| vec!["*".to_string()]),
        });
    }
    Ok(RoleConfig {
        name: name.to_string(),
        description: body.description,
        policies,
    })
}

pub fn role_json(role: &RoleConfig, immutable: bool) -> Value {
    json!({
        "name": role.name,
        "description": role.description,
        "policies": role.policies.iter().map(|p| json!({
            "effect": match p.effect { PolicyEffect::Allow => "Allow", PolicyEffect::Deny => "Deny" },
            "actions": p.actions,
            "resources": p.resources,
        })).collect::<Vec<_>>(),
        "immutable": immutable,
        "sync_mode": "import",
        "external_roles": Value::Null,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionBody {
    operator: String,
    left_operand: String,
    right_operand: String,
    assert_message: String,
}

/// A list of OSMO `ResourceAssertion`s.
fn check_resource_validation(body: &Value) -> Result<(), String> {
    let assertions: Vec<AssertionBody> = typed(body.clone(), "configs")?;
    for (index, assertion) in assertions.iter().enumerate() {
        if !matches!(
            assertion.operator.as_str(),
            "LE" | "GE" | "LT" | "GT" | "EQ" | "NE"
        ) {
            return Err(format!(
                "configs[{index}].operator: '{}' is not LE, GE, LT, GT, EQ or NE",
                assertion.operator
            ));
        }
        if assertion.left_operand.trim().is_empty() || assertion.right_operand.trim().is_empty() {
            return Err(format!("configs[{index}]: operands must not be empty"));
        }
        let _ = &assertion.assert_message;
    }
    Ok(())
}

/// Parses the `configs` of a PUT into what is stored, for every type but
/// BACKEND (a partial update, see [`merge_backend`]).
pub fn parse(config_type: ConfigType, name: &str, body: Value) -> Result<ConfigData, String> {
    match config_type {
        ConfigType::Service => {
            let config: ServiceConfig = typed(body, "configs")?;
            config.check()?;
            Ok(ConfigData::Json(to_text(&config)?))
        }
        ConfigType::Workflow => {
            let config: WorkflowConfig = typed(body, "configs")?;
            config.check()?;
            Ok(ConfigData::Json(to_text(&config)?))
        }
        ConfigType::Pool => parse_pool(name, body).map(ConfigData::Pool),
        ConfigType::Role => parse_role(name, body).map(ConfigData::Role),
        ConfigType::PodTemplate => {
            if !body.is_object() {
                return Err(
                    "configs: a pod template must be a JSON object (part of a Pod manifest)".into(),
                );
            }
            Ok(ConfigData::Json(to_text(&body)?))
        }
        ConfigType::ResourceValidation => {
            check_resource_validation(&body)?;
            Ok(ConfigData::Json(to_text(&body)?))
        }
        ConfigType::Backend => {
            merge_backend(&BackendSettings::default(), body).map(ConfigData::Backend)
        }
    }
}

fn to_text<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|error| format!("configs: {error}"))
}

/// A stored config as OSMO shows it (history `data`, or `config show`).
pub fn render(data: &ConfigData) -> Value {
    match data {
        ConfigData::Json(text) => {
            let mut value = serde_json::from_str(text).unwrap_or(Value::Null);
            mask_secrets(&mut value);
            value
        }
        ConfigData::Backend(settings) => settings_json(settings),
        ConfigData::Pool(pool) => pool_json(pool, pool.status),
        ConfigData::Role(role) => role_json(role, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_value_is_shown_masked_and_kept_when_sent_back() {
        let stored = json!({
            "workflow_alerts": {"slack_token": "xoxb-1", "smtp_settings": {"password": "pw", "host": "h"}},
            "backend_images": {"credential": {"auth": "a", "registry": "r"}},
        });
        let mut shown = stored.clone();
        mask_secrets(&mut shown);
        assert_eq!(shown["workflow_alerts"]["slack_token"], MASKED);
        assert_eq!(
            shown["workflow_alerts"]["smtp_settings"]["password"],
            MASKED
        );
        assert_eq!(shown["workflow_alerts"]["smtp_settings"]["host"], "h");
        assert_eq!(shown["backend_images"]["credential"]["auth"], MASKED);
        restore_masked_secrets(&mut shown, Some(&ConfigData::Json(stored.to_string())))
            .expect("restored");
        assert_eq!(shown, stored);
        let mut unbacked = json!({"workflow_alerts": {"slack_token": MASKED}});
        let error = restore_masked_secrets(&mut unbacked, None).expect_err("refused");
        assert!(
            error.starts_with("configs.workflow_alerts.slack_token:"),
            "{error}"
        );
    }

    #[test]
    fn workflow_data_credentials_are_checked_and_their_secret_masked() {
        let with = |credential: Value| {
            parse(
                ConfigType::Workflow,
                "",
                json!({"workflow_data": {"credential": credential}}),
            )
        };
        for (credential, field) in [
            (
                json!({}),
                "configs.workflow_data.credential: missing field `endpoint`",
            ),
            (
                json!({"endpoint": "gs://b"}),
                "configs.workflow_data.credential.endpoint: 'gs://b' is not s3://",
            ),
            (
                json!({"endpoint": "s3://b", "override_url": "ftp://x"}),
                "configs.workflow_data.credential.override_url",
            ),
            (
                json!({"endpoint": "s3://b", "access_key_id": "id"}),
                "configs.workflow_data.credential.access_key",
            ),
            (
                json!({"endpoint": "s3://b", "addressing_style": "sideways"}),
                "configs.workflow_data.credential.addressing_style",
            ),
            (json!({"endpoint": "s3://b", "colour": 1}), "colour"),
            (
                json!({"endpoint": "s3://b", "access_key_id": "id", "access_key": MASKED}),
                "none is stored",
            ),
        ] {
            let error = with(credential.clone()).expect_err("refused");
            assert!(error.contains(field), "{credential}: {error}");
        }
        let data = with(json!({"endpoint": "s3://bucket/pre", "region": "eu-1",
            "override_url": "http://127.0.0.1:9000", "addressing_style": "path",
            "access_key_id": "id", "access_key": "secret"}))
        .expect("valid");
        let shown = render(&data);
        assert_eq!(shown["workflow_data"]["credential"]["access_key"], MASKED);
        assert!(!shown.to_string().contains("secret"));

        // Sent back as shown, the secret in force is kept.
        let mut body = shown.clone();
        restore_masked_secrets(&mut body, Some(&data)).expect("restored");
        let again = parse(ConfigType::Workflow, "", body).expect("valid");
        let ConfigData::Json(text) = &again else {
            panic!("json");
        };
        assert!(text.contains("\"access_key\":\"secret\""), "{text}");
    }

    #[test]
    fn field_errors_name_the_field() {
        let error = parse(
            ConfigType::Backend,
            "b",
            json!({"scheduler_settings": {"scheduler_type": "slurm"}}),
        )
        .unwrap_err();
        assert!(
            error.contains("configs.scheduler_settings.scheduler_type"),
            "{error}"
        );
        let error = parse(ConfigType::Pool, "p", json!({"backend": "b", "colour": 1})).unwrap_err();
        assert!(error.contains("colour"), "{error}");
        let error = parse(ConfigType::Pool, "p", json!({"description": "x"})).unwrap_err();
        assert!(error.contains("backend"), "{error}");
        let error = parse(
            ConfigType::Pool,
            "p",
            json!({"backend": "b", "default_exec_timeout": "soon"}),
        )
        .unwrap_err();
        assert!(error.contains("configs.default_exec_timeout"), "{error}");
        let error = parse(
            ConfigType::Service,
            "",
            json!({"backend_heartbeat_grace": "0s"}),
        )
        .unwrap_err();
        assert!(error.contains("backend_heartbeat_grace"), "{error}");
        let error = parse(
            ConfigType::Workflow,
            "",
            json!({"workflow_log": {"retention": "forever"}}),
        )
        .unwrap_err();
        assert!(
            error.starts_with("configs.workflow_log.retention: invalid duration"),
            "{error}"
        );
        assert!(parse(
            ConfigType::Workflow,
            "",
            json!({"workflow_log": {"retention": "30d"}})
        )
        .is_ok());
        let error = parse(
            ConfigType::Role,
            "r",
            json!({"policies": [{"actions": ["create everything"]}]}),
        )
        .unwrap_err();
        assert!(error.contains("configs.policies[0].actions"), "{error}");
        let error = parse(
            ConfigType::ResourceValidation,
            "v",
            json!([{"operator": "ABOUT", "left_operand": "a", "right_operand": "b", "assert_message": "m"}]),
        )
        .unwrap_err();
        assert!(error.contains("configs[0].operator"), "{error}");
    }

    #[test]
    fn rendered_configs_parse_back_unchanged() {
        let pool = parse(
            ConfigType::Pool,
            "gpu",
            json!({
                "backend": "k8s",
                "default_platform": "dgx",
                "platforms": {"dgx": {"labels": {"nvidia.com/gpu.product": "H100"},
                    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
                "resources": {"gpu": {"guarantee": 8, "maximum": 16, "weight": 2}},
                "default_exit_actions": {"RESCHEDULE": "137,143"},
                "enable_maintenance": true,
            }),
        )
        .unwrap();
        let again = parse(ConfigType::Pool, "gpu", render(&pool)).unwrap();
        assert_eq!(pool, again);
        let backend = parse(
            ConfigType::Backend,
            "b",
            json!({"scheduler_settings": {"scheduler_type": "volcano", "scheduler_name": "volcano"}}),
        )
        .unwrap();
        assert_eq!(
            parse(ConfigType::Backend, "b", render(&backend)).unwrap(),
            backend
        );
        let service = parse(
            ConfigType::Service,
            "",
            json!({"backend_heartbeat_grace": "5s"}),
        )
        .unwrap();
        assert_eq!(
            parse(ConfigType::Service, "", render(&service)).unwrap(),
            service
        );
        let role = parse(
            ConfigType::Role,
            "gpu-users",
            json!({"name": "gpu-users", "description": "d", "policies": [
                {"effect": "Deny", "actions": ["workflow:Cancel"], "resources": ["pool/prod"]}]}),
        )
        .unwrap();
        assert_eq!(
            parse(ConfigType::Role, "gpu-users", render(&role)).unwrap(),
            role
        );
    }
}
