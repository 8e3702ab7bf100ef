//! Versioned configuration (OSMO §3.1): the config types, one revision of a
//! config, and the typed bodies the state machine acts on (backends, pools,
//! roles) next to the ones it only keeps (service, workflow, pod templates,
//! resource validations, as JSON text).
//!
//! Invariants: revisions are numbered per config type from 1 and never
//! reused; a revision is never changed once written (a rollback writes a new
//! revision equal to an old one); a delete is a revision without data.

use crate::record::{Millis, PoolRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OSMO's `ConfigHistoryType`, the kinds Gantry keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigType {
    Service,
    Workflow,
    Backend,
    Pool,
    PodTemplate,
    ResourceValidation,
    Role,
}

impl ConfigType {
    pub const ALL: [ConfigType; 7] = [
        ConfigType::Service,
        ConfigType::Workflow,
        ConfigType::Backend,
        ConfigType::Pool,
        ConfigType::PodTemplate,
        ConfigType::ResourceValidation,
        ConfigType::Role,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::Service => "SERVICE",
            ConfigType::Workflow => "WORKFLOW",
            ConfigType::Backend => "BACKEND",
            ConfigType::Pool => "POOL",
            ConfigType::PodTemplate => "POD_TEMPLATE",
            ConfigType::ResourceValidation => "RESOURCE_VALIDATION",
            ConfigType::Role => "ROLE",
        }
    }

    /// Key byte in the config tables.
    pub fn code(self) -> u8 {
        match self {
            ConfigType::Service => 1,
            ConfigType::Workflow => 2,
            ConfigType::Backend => 3,
            ConfigType::Pool => 4,
            ConfigType::PodTemplate => 5,
            ConfigType::ResourceValidation => 6,
            ConfigType::Role => 7,
        }
    }

    /// SERVICE and WORKFLOW are singletons: their one name is `""`.
    pub fn is_singleton(self) -> bool {
        matches!(self, ConfigType::Service | ConfigType::Workflow)
    }
}

impl std::fmt::Display for ConfigType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ConfigType {
    type Err = String;
    fn from_str(text: &str) -> Result<ConfigType, String> {
        let upper = text.trim().to_ascii_uppercase().replace('-', "_");
        ConfigType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == upper)
            .ok_or_else(|| {
                format!(
                    "unknown config type '{text}' (one of {})",
                    ConfigType::ALL.map(ConfigType::as_str).join(", ")
                )
            })
    }
}

/// The body of one config revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ConfigData {
    /// Kept as given (validated at the API edge): SERVICE, WORKFLOW,
    /// POD_TEMPLATE, RESOURCE_VALIDATION.
    Json(String),
    Backend(BackendSettings),
    Pool(PoolConfig),
    Role(RoleConfig),
}

/// Who changed a config, when and why (OSMO's history metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMeta {
    pub user: String,
    pub description: String,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigRevision {
    pub config_type: ConfigType,
    /// `""` for singletons.
    pub name: String,
    pub revision: u64,
    pub time: Millis,
    pub meta: ConfigMeta,
    /// `None`: this revision deleted the config.
    pub data: Option<ConfigData>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerType {
    #[default]
    Kai,
    Default,
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
    /// Durations as OSMO writes them (`"60d"`, `"2h"`), validated at the edge.
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
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyEffect {
    #[default]
    Allow,
    Deny,
}

/// One statement: `effect` on `actions` (e.g. `workflow:Create`,
/// `workflow:*`) over `resources` (e.g. `pool/default`, `*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub effect: PolicyEffect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// OSMO's `Role`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleConfig {
    pub name: String,
    pub description: String,
    pub policies: Vec<Policy>,
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
}
