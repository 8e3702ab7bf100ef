//! Versioned configuration (OSMO §3.1): the config types, one revision of a
//! config, and the one place a config body is parsed, validated and
//! rendered. Each type has its file — `service`, `workflow`, `backend`,
//! `pool`, `pod_template`, `resource_validation`, `role` — holding its typed
//! body, parsing and validation, defaults and JSON rendering; this module
//! holds what they share and the dispatch over them ([`parse`], [`render`]).
//!
//! Invariants:
//! - Revisions are numbered per config type from 1 and never reused; a
//!   revision is never changed once written (a rollback writes a new
//!   revision equal to an old one); a delete is a revision without data.
//! - [`parse`] refuses unknown fields and bad values with the field's path
//!   (`configs.<path>: ...`) and is pure: the API calls it before a change is
//!   proposed, so `apply` only ever sees bodies that passed it.
//! - What [`render`] produces for a config, [`parse`] accepts for the same
//!   type, so `config show -t json` output can be edited and sent back
//!   (write-only secrets come back as [`workflow::MASK`] and are restored by
//!   [`workflow::restore_masked_secrets`]).
//! - [`ConfigData`] is stored (bincode, by variant index): its variants and
//!   their order never change; new types add variants at the end.
//! - Every duration in a config (and in a workflow spec) is read by the one
//!   [`parse_duration_seconds`].

pub mod backend;
pub mod pod_template;
pub mod pool;
pub mod pool_extras;
pub mod resource_validation;
pub mod role;
pub mod service;
pub mod workflow;

pub use backend::{
    BackendRecord, BackendSettings, NodeInventory, SchedulerType, Taint, EXECUTOR_LOCAL,
};
pub use pool::{GpuQuota, PlatformConfig, PoolConfig, PoolStatus, Toleration};
pub use pool_extras::{PoolExtras, TopologyKey};
pub use role::{Policy, PolicyEffect, RoleConfig};
pub use service::{IdpConfig, LoginInfo, ServiceAuth, ServiceConfig};
pub use workflow::WorkflowConfig;

use crate::record::Millis;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Kept as JSON text, as [`parse`] wrote it: SERVICE, WORKFLOW,
    /// POD_TEMPLATE, RESOURCE_VALIDATION.
    Json(String),
    Backend(BackendSettings),
    Pool(PoolConfig),
    Role(RoleConfig),
    /// A pool with extras (`pool_extras`): the JSON text as its proposer
    /// sent it. Only [`crate::Command::PutPoolWithExtras`] writes one.
    PoolWithExtras(PoolConfig, String),
}

impl ConfigData {
    /// The pool config, with or without extras.
    pub fn as_pool(&self) -> Option<&PoolConfig> {
        match self {
            ConfigData::Pool(pool) | ConfigData::PoolWithExtras(pool, _) => Some(pool),
            _ => None,
        }
    }

    /// The pool config, with or without extras, owned.
    pub fn into_pool(self) -> Option<PoolConfig> {
        match self {
            ConfigData::Pool(pool) | ConfigData::PoolWithExtras(pool, _) => Some(pool),
            _ => None,
        }
    }

    /// A pool's extras: empty for a pool without (and for other types).
    /// A stored text always reads (the applier refuses one that does
    /// not), so an unreadable one reads as none.
    pub fn pool_extras(&self) -> PoolExtras {
        match self {
            ConfigData::PoolWithExtras(_, text) => PoolExtras::from_text(text).unwrap_or_default(),
            _ => PoolExtras::default(),
        }
    }

    /// A pool config and its extras as they are stored: without extras as
    /// [`ConfigData::Pool`], as every build reads it.
    pub fn pool(pool: PoolConfig, extras: &PoolExtras) -> ConfigData {
        if extras.is_empty() {
            ConfigData::Pool(pool)
        } else {
            ConfigData::PoolWithExtras(pool, extras.to_text())
        }
    }
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

/// Parses the `configs` of a PUT into what is stored. BACKEND bodies are
/// partial updates: here they apply onto the defaults; onto the settings
/// in force with [`backend::merge_backend`].
pub fn parse(config_type: ConfigType, name: &str, body: Value) -> Result<ConfigData, String> {
    match config_type {
        ConfigType::Service => service::parse(body)
            .and_then(|config| to_text(&config))
            .map(ConfigData::Json),
        ConfigType::Workflow => workflow::parse(body)
            .and_then(|config| to_text(&config))
            .map(ConfigData::Json),
        ConfigType::Pool => {
            pool::parse(name, body).map(|(pool, extras)| ConfigData::pool(pool, &extras))
        }
        ConfigType::Role => role::parse(name, body).map(ConfigData::Role),
        ConfigType::PodTemplate => pod_template::parse(body)
            .and_then(|body| to_text(&body))
            .map(ConfigData::Json),
        ConfigType::ResourceValidation => resource_validation::parse(body)
            .and_then(|body| to_text(&body))
            .map(ConfigData::Json),
        ConfigType::Backend => {
            backend::merge_backend(&BackendSettings::default(), body).map(ConfigData::Backend)
        }
    }
}

/// A stored config as OSMO shows it (history `data`, or `config show`).
/// JSON-kept configs are shown with the WORKFLOW config's secrets masked
/// (the data does not say which type it is; the secrets' paths are the
/// WORKFLOW config's own).
pub fn render(data: &ConfigData) -> Value {
    match data {
        ConfigData::Json(text) => {
            let mut value = serde_json::from_str(text).unwrap_or(Value::Null);
            workflow::mask_secrets(&mut value);
            value
        }
        ConfigData::Backend(settings) => backend::settings_json(settings),
        ConfigData::Pool(pool) | ConfigData::PoolWithExtras(pool, _) => {
            pool::pool_json(pool, &data.pool_extras(), pool.status)
        }
        ConfigData::Role(role) => role::role_json(role, false),
    }
}

/// Deserializes `value` as `T`, naming the offending field on failure
/// (`<what>.<path>: <error>`).
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

fn to_text<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|error| format!("configs: {error}"))
}

/// An optional duration field (`""`: not set), its error under
/// `configs.<field>`.
pub(crate) fn check_duration(field: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    parse_duration_seconds(text)
        .map(|_| ())
        .map_err(|error| format!("configs.{field}: {error}"))
}

/// Seconds of a duration as configs and workflow specs write it: digits
/// with an optional unit `s`, `m`, `h` or `d` (`"30s"`, `"10m"`, `"8h"`,
/// `"2d"`); plain digits are seconds. Surrounding whitespace is ignored.
///
/// The unit arithmetic and its overflow checks are `humantime`'s. Its
/// grammar is wider — `2w`, `1M` (a month, next to `1m`, a minute), `1y`,
/// `1.5h`, `1h30m`, `500ms`, `1 hour` — and all of that stays refused, as
/// it always was: durations are kept as text in replicated configs and read
/// again by `apply` on every replica (a WORKFLOW config's retention decides
/// when logs are purged), so a value one version accepts and another
/// refuses would have replicas of a mixed-version cluster disagree, and a
/// spec or config that validated yesterday must mean the same today.
pub fn parse_duration_seconds(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("invalid duration {text:?} (expected e.g. 30s, 10m, 8h, 2d or seconds)");
    let digits_end = trimmed
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() || !matches!(unit, "" | "s" | "m" | "h" | "d") {
        return Err(bad());
    }
    let unit = if unit.is_empty() { "s" } else { unit };
    match humantime::parse_duration(&format!("{digits}{unit}")) {
        Ok(duration) => Ok(duration.as_secs()),
        Err(humantime::DurationError::NumberOverflow) => {
            Err(format!("duration {text:?} is too large"))
        }
        Err(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_their_errors() {
        for (text, seconds) in [
            ("2s", 2),
            ("90m", 5400),
            ("12h", 43_200),
            ("30d", 2_592_000),
        ] {
            assert_eq!(parse_duration_seconds(text), Ok(seconds), "{text}");
        }
        assert_eq!(parse_duration_seconds("45"), Ok(45));
        for bad in ["", "s", "2w", "-3s", "1.5h", "x9"] {
            assert!(parse_duration_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_keep_their_narrow_grammar_and_bounds() {
        assert_eq!(parse_duration_seconds(" 7d "), Ok(604_800));
        assert_eq!(parse_duration_seconds("0"), Ok(0));
        assert_eq!(parse_duration_seconds("18446744073709551615"), Ok(u64::MAX));
        // What humantime alone would take.
        for wider in [
            "1M", "1y", "1h30m", "1h 30m", "500ms", "1 hour", "2 d", "3min",
        ] {
            assert!(parse_duration_seconds(wider).is_err(), "{wider}");
        }
        for huge in [
            "99999999999999999999d",
            "9999999999999999d",
            "18446744073709551616",
        ] {
            let error = parse_duration_seconds(huge).unwrap_err();
            assert!(error.contains("too large"), "{huge}: {error}");
        }
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
        // Accepted and ignored would be a defect: refused, naming the field.
        let error = parse(
            ConfigType::Pool,
            "p",
            json!({"backend": "b", "common_default_variables": {"USER_CPU": 1}}),
        )
        .unwrap_err();
        assert!(
            error.starts_with(
                "configs.common_default_variables: default variables are not supported yet"
            ),
            "{error}"
        );
        let error = parse(
            ConfigType::Pool,
            "p",
            json!({"backend": "b", "platforms": {"gpu": {"default_variables": {"USER_GPU": 0}}}}),
        )
        .unwrap_err();
        assert!(
            error.starts_with("configs.platforms.gpu.default_variables:"),
            "{error}"
        );
        // Empty, and the derived `default_mounts`, load as OSMO writes them.
        assert!(parse(
            ConfigType::Pool,
            "p",
            json!({"backend": "b", "common_default_variables": {},
                   "platforms": {"gpu": {"default_variables": {}, "default_mounts": ["/data"]}}}),
        )
        .is_ok());
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
