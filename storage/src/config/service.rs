//! The SERVICE config: OSMO's `ServiceConfig` plus Gantry's backend
//! liveness graces.
//!
//! Owns the typed body, its defaults, its checks and the reader of the
//! config in force. It is a singleton (name `""`), stored as the JSON text
//! of [`ServiceConfig`] ([`crate::ConfigData::Json`]); `render` shows it as
//! stored. It holds no secrets.
//!
//! Invariants: unknown fields are refused and missing ones take the
//! defaults below; durations are [`super::parse_duration_seconds`]'s;
//! `backend_heartbeat_grace` is never 0. The graces travel inside each
//! `BackendHeartbeat` command (read at the edge with [`ServiceConfig::graces_ms`]),
//! so `apply` never reads this config.

use super::{
    check_duration, parse_duration_seconds, typed, ConfigData, ConfigRevision, ConfigType,
};
use crate::store::ReadView;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
        match parse_duration_seconds(&self.backend_heartbeat_grace) {
            Ok(0) => Err("configs.backend_heartbeat_grace: must be more than 0".into()),
            Ok(_) => Ok(()),
            Err(error) => Err(format!("configs.backend_heartbeat_grace: {error}")),
        }
    }

    /// `(offline after, fail tasks after)` in milliseconds.
    pub fn graces_ms(&self) -> (u64, u64) {
        let ms = |text: &str, default: u64| {
            parse_duration_seconds(text)
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(default)
        };
        (
            ms(&self.backend_heartbeat_grace, 120_000).max(1),
            ms(&self.backend_lost_grace, 600_000),
        )
    }

    /// The SERVICE config in force (defaults when never set or unreadable).
    pub fn in_force(view: &ReadView) -> ServiceConfig {
        match view.config(ConfigType::Service, "") {
            Ok(Some(ConfigRevision {
                data: Some(ConfigData::Json(text)),
                ..
            })) => serde_json::from_str(&text).unwrap_or_default(),
            _ => ServiceConfig::default(),
        }
    }
}

/// A SERVICE body, checked.
pub fn parse(body: Value) -> Result<ServiceConfig, String> {
    let config: ServiceConfig = typed(body, "configs")?;
    config.check()?;
    Ok(config)
}
