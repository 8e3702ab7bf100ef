//! The BACKEND config: OSMO's `BackendConfig` (what an admin sets on a
//! backend, incl. its scheduler) and the backend row it lives in, next to
//! what the backend's operator reports (liveness, executor, nodes).
//!
//! Owns the typed settings and their defaults, the one [`SchedulerType`]
//! (the API's settings and the Kubernetes executor's), parsing a body as a
//! partial update ([`merge_backend`]), and the JSON of a backend, its
//! settings and its nodes.
//!
//! Invariants: a BACKEND body is a partial update — fields it leaves out
//! keep the settings in force; `scheduler_name` is never empty; the
//! read-only fields `config show` prints are accepted and ignored. The row
//! ([`BackendRecord`]) is bincode without field defaults: a new field
//! needs a new row shape and a decode of the older one (`BackendRecord::decode`).
//! No field is a secret.

use super::typed;
use crate::record::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// OSMO's `scheduler_settings.scheduler_type`.
///
/// Spelled in lowercase in JSON (OSMO's `kai`, `default`, `volcano`);
/// bincode (rows, commands, launches) encodes the variant's index, so the
/// variants keep their order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerType {
    /// KAI Scheduler: a `scheduling.run.ai/v2alpha2` PodGroup per group.
    #[default]
    Kai,
    /// The Kubernetes default scheduler: plain pods; a group of more than one
    /// task needs co-scheduling (scheduler-plugins) or is refused.
    Default,
    /// Volcano: a `scheduling.volcano.sh/v1beta1` PodGroup per group.
    Volcano,
}

impl SchedulerType {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerType::Kai => "kai",
            SchedulerType::Default => "default",
            SchedulerType::Volcano => "volcano",
        }
    }
}

impl std::str::FromStr for SchedulerType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "kai" => Ok(SchedulerType::Kai),
            "default" => Ok(SchedulerType::Default),
            "volcano" => Ok(SchedulerType::Volcano),
            _ => Err(format!(
                "unknown scheduler_type {text:?}: use kai, default or volcano"
            )),
        }
    }
}

/// OSMO's `BackendConfig`: what an admin sets on a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSettings {
    pub description: String,
    pub dashboard_url: String,
    pub grafana_url: String,
    pub router_address: String,
    pub scheduler_type: SchedulerType,
    pub scheduler_name: String,
    pub scheduler_timeout_seconds: u64,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            description: String::new(),
            dashboard_url: String::new(),
            grafana_url: String::new(),
            router_address: String::new(),
            scheduler_type: SchedulerType::Kai,
            scheduler_name: "kai-scheduler".to_string(),
            scheduler_timeout_seconds: 30,
        }
    }
}

/// One node as an operator last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInventory {
    pub name: String,
    /// Allocatable CPU in millicores.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub gpu_count: u64,
    pub gpu_model: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Conditions that hold, e.g. `Ready`.
    pub conditions: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A backend: admin settings plus what its operator reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub name: String,
    pub settings: BackendSettings,
    /// Whether an admin config exists for it (else it exists only because
    /// its operator connected).
    pub configured: bool,
    pub created: Millis,
    pub last_heartbeat: Option<Millis>,
    pub online: bool,
    pub nodes: Vec<NodeInventory>,
    /// The armed liveness timers, `(due, id)`, replaced on every heartbeat.
    pub offline_timer: Option<(Millis, u64)>,
    pub lost_timer: Option<(Millis, u64)>,
    /// The executor its operator last announced (`local`, `kubernetes`);
    /// [`EXECUTOR_LOCAL`] until an operator says otherwise.
    pub executor: String,
}

/// The executor a backend is assumed to run until its operator names one.
pub const EXECUTOR_LOCAL: &str = "local";

/// A backend row as written before operators announced their executor.
/// Rows are bincode, which has no field defaults: an old row decodes only
/// as this shape.
#[derive(Serialize, Deserialize)]
struct BackendRecordV1 {
    name: String,
    settings: BackendSettings,
    configured: bool,
    created: Millis,
    last_heartbeat: Option<Millis>,
    online: bool,
    nodes: Vec<NodeInventory>,
    offline_timer: Option<(Millis, u64)>,
    lost_timer: Option<(Millis, u64)>,
}

impl BackendRecord {
    /// Decodes a backend row of either shape.
    pub(crate) fn decode(bytes: &[u8]) -> Result<BackendRecord, crate::error::StorageError> {
        match crate::tables::decode::<BackendRecord>(bytes) {
            Ok(record) => Ok(record),
            Err(error) => {
                let Ok(old) = crate::tables::decode::<BackendRecordV1>(bytes) else {
                    return Err(error);
                };
                Ok(BackendRecord {
                    name: old.name,
                    settings: old.settings,
                    configured: old.configured,
                    created: old.created,
                    last_heartbeat: old.last_heartbeat,
                    online: old.online,
                    nodes: old.nodes,
                    offline_timer: old.offline_timer,
                    lost_timer: old.lost_timer,
                    executor: EXECUTOR_LOCAL.to_string(),
                })
            }
        }
    }

    pub fn new(name: &str, created: Millis) -> BackendRecord {
        BackendRecord {
            name: name.to_string(),
            settings: BackendSettings::default(),
            configured: false,
            created,
            last_heartbeat: None,
            online: false,
            nodes: Vec::new(),
            offline_timer: None,
            lost_timer: None,
            executor: EXECUTOR_LOCAL.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerSettingsBody {
    scheduler_type: Option<SchedulerType>,
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
            settings.scheduler_type = kind;
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

/// The settings as OSMO's `BackendConfig` shows them.
pub fn settings_json(settings: &BackendSettings) -> Value {
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

/// OSMO's `Backend`: settings plus what the operator reports. Times are
/// shown with `time`, the caller's one time format.
pub fn backend_json(backend: &BackendRecord, time: impl Fn(Option<Millis>) -> Value) -> Value {
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
        map.insert("last_heartbeat".into(), time(backend.last_heartbeat));
        map.insert("created_date".into(), time(Some(backend.created)));
        map.insert("online".into(), json!(backend.online));
        map.insert("nodes".into(), Value::Array(nodes));
    }
    value
}

pub fn node_json(node: &NodeInventory) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_rows_of_the_older_shape_still_decode() {
        let old = BackendRecordV1 {
            name: "k8s".into(),
            settings: BackendSettings::default(),
            configured: true,
            created: 5,
            last_heartbeat: Some(9),
            online: true,
            nodes: vec![NodeInventory::default()],
            offline_timer: Some((10, 1)),
            lost_timer: None,
        };
        let bytes = crate::tables::encode(&old).expect("encode");
        let record = BackendRecord::decode(&bytes).expect("an old row decodes");
        assert_eq!(record.executor, EXECUTOR_LOCAL);
        assert_eq!(record.last_heartbeat, Some(9));
        assert_eq!(record.offline_timer, Some((10, 1)));

        let mut current = BackendRecord::new("k8s", 5);
        current.executor = "kubernetes".into();
        let bytes = crate::tables::encode(&current).expect("encode");
        assert_eq!(BackendRecord::decode(&bytes).expect("decode"), current);
        assert!(BackendRecord::decode(&[1, 2]).is_err());
    }

    #[test]
    fn scheduler_types_are_stored_by_index_and_written_in_lowercase() {
        for (kind, index, text) in [
            (SchedulerType::Kai, 0u8, "kai"),
            (SchedulerType::Default, 1, "default"),
            (SchedulerType::Volcano, 2, "volcano"),
        ] {
            assert_eq!(crate::tables::encode(&kind).expect("encode"), vec![index]);
            assert_eq!(serde_json::to_value(kind).expect("json"), json!(text));
            assert_eq!(text.parse::<SchedulerType>(), Ok(kind));
        }
        let error = typed::<SchedulerSettingsBody>(json!({"scheduler_type": "slurm"}), "configs")
            .unwrap_err();
        assert_eq!(
            error,
            "configs.scheduler_type: unknown variant `slurm`, expected one of `kai`, `default`, `volcano`"
        );
    }
}
