//! The WORKFLOW config: OSMO's `WorkflowConfig` — workflow limits and
//! timeouts, where task data goes (`workflow_data`), log retention
//! (`workflow_log.retention`), and the credentials those blocks hold.
//!
//! Owns the typed body, its defaults and checks, the reader of the config
//! in force, the retention `apply` reads when a workflow ends, and which
//! fields are secrets.
//!
//! Invariants:
//! - A singleton (name `""`), stored as the JSON text of [`WorkflowConfig`]
//!   ([`crate::ConfigData::Json`]); unknown fields are refused, missing
//!   ones take the defaults below; the nested blocks other than
//!   `workflow_data` are kept as given.
//! - Secrets are the values at [`SECRET_POINTERS`]: stored as sent, always
//!   shown as [`MASK`]; a body sent back with [`MASK`] keeps the stored
//!   value ([`restore_masked_secrets`]), and a [`MASK`] with nothing stored
//!   behind it is refused, so the literal text is never stored as a secret.
//!   Task log lines are masked with the same values (the binary's
//!   `control::masking`).
//! - The retention is read by [`workflow_log_retention_ms`] both when a PUT
//!   is checked and when `apply` ends a workflow, so what passes the check,
//!   every replica reads the same way.
//! - A `workflow_data.credential` is checked here for what needs no I/O
//!   (endpoint scheme, override URL, a key pair or none); that it opens as
//!   a data store is checked by the data layer (`DataStore::from_credential`
//!   in the binary) before a PUT commits.

use super::{
    check_duration, parse_duration_seconds, typed, ConfigData, ConfigRevision, ConfigType,
};
use crate::store::ReadView;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a write-only secret reads back as (config API, log lines, `Debug`).
pub const MASK: &str = "[MASKED]";

/// Where the WORKFLOW config keeps secret values (JSON pointers): the data,
/// log and app store keys, the registry credential, the alert tokens.
pub const SECRET_POINTERS: &[&str] = &[
    "/workflow_data/credential/access_key",
    "/workflow_log/credential/access_key",
    "/workflow_app/credential/access_key",
    "/backend_images/credential/auth",
    "/workflow_alerts/slack_token",
    "/workflow_alerts/smtp_settings/password",
];

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
            // OSMO's code says 20, the chart it deploys with 100 (what its
            // users meet), and Gantry's former server flag said 100.
            max_num_tasks: 100,
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
        workflow_log_retention_ms(&self.workflow_log)
            .map_err(|error| format!("configs.{error}"))?;
        if let Some(credential) = &self.workflow_data.credential {
            credential.check(DATA_CREDENTIAL)?;
        }
        Ok(())
    }

    /// The WORKFLOW config a stored body holds (`None`: not a WORKFLOW
    /// body, or unreadable).
    pub fn from_data(data: &ConfigData) -> Option<WorkflowConfig> {
        match data {
            ConfigData::Json(text) => serde_json::from_str(text).ok(),
            _ => None,
        }
    }

    /// The WORKFLOW config in force (defaults when never set or unreadable).
    pub fn in_force(view: &ReadView) -> WorkflowConfig {
        match view.config(ConfigType::Workflow, "") {
            Ok(Some(ConfigRevision {
                data: Some(data), ..
            })) => WorkflowConfig::from_data(&data).unwrap_or_default(),
            _ => WorkflowConfig::default(),
        }
    }
}

/// A WORKFLOW body, checked.
pub fn parse(body: Value) -> Result<WorkflowConfig, String> {
    let config: WorkflowConfig = typed(body, "configs")?;
    config.check()?;
    Ok(config)
}

/// The field path of the data credential, as errors name it.
pub const DATA_CREDENTIAL: &str = "configs.workflow_data.credential";

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
    /// Write-only: shown as [`MASK`].
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

impl DataCredential {
    /// The data root: the endpoint without a trailing `/`.
    pub fn root(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }

    /// Path-style requests: `path` and `auto` (which every S3-compatible
    /// service and AWS accept); only `virtual` is not.
    pub fn path_style(&self) -> bool {
        self.addressing_style != Some(AddressingStyle::Virtual)
    }

    /// Checks what needs no I/O; errors name the field under `at`. After
    /// it passes, `access_key_id` and `access_key` are both set (and not
    /// empty) or both absent (the default credential chain).
    pub fn check(&self, at: &str) -> Result<(), String> {
        let endpoint = self.root();
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
        if self.access_key.as_deref() == Some(MASK) {
            return Err(format!(
                "{at}.access_key: {MASK} stands for a stored secret, and none is stored; send the secret"
            ));
        }
        match (&self.access_key_id, &self.access_key) {
            (Some(id), Some(key)) if !id.is_empty() && !key.is_empty() => Ok(()),
            (None, None) => Ok(()),
            _ => Err(format!(
                "{at}.access_key: access_key_id and access_key go together (both, or neither for the default credential chain)"
            )),
        }
    }
}

/// Write-only secrets of a config as they are shown: masked.
pub fn mask_secrets(value: &mut Value) {
    for pointer in SECRET_POINTERS {
        if let Some(secret) = value
            .pointer_mut(pointer)
            .filter(|secret| secret.is_string())
        {
            *secret = Value::String(MASK.into());
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
        if body.pointer(pointer).and_then(Value::as_str) != Some(MASK) {
            continue;
        }
        let kept = current
            .as_ref()
            .and_then(|current| current.pointer(pointer).cloned());
        match (body.pointer_mut(pointer), kept) {
            (Some(slot), Some(kept)) => *slot = kept,
            _ => {
                return Err(format!(
                "configs{}: {MASK} stands for a stored secret, and none is stored; send the secret",
                pointer.replace('/', ".")
            ))
            }
        }
    }
    Ok(())
}

/// The retention in milliseconds of a WORKFLOW config body's `workflow_log`
/// block: how long a finished workflow's log chunks and archive are kept
/// (`None`: forever — absent, empty or `"0"`). The value is a duration like
/// the config's others (`"30d"`, `"12h"`, `"90m"`, `"2s"`, or plain
/// seconds). Errors name the field.
pub fn workflow_log_retention_ms(workflow_log: &Value) -> Result<Option<u64>, String> {
    let retention = match workflow_log {
        Value::Null => return Ok(None),
        Value::Object(block) => match block.get("retention") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(format!(
                    "workflow_log.retention: must be a duration string like \"30d\", not {other}"
                ))
            }
        },
        other => return Err(format!("workflow_log: must be an object, not {other}")),
    };
    if retention.trim().is_empty() {
        return Ok(None);
    }
    let seconds = parse_duration_seconds(retention)
        .map_err(|error| format!("workflow_log.retention: {error}"))?;
    match seconds.checked_mul(1000) {
        Some(0) => Ok(None),
        Some(ms) if i64::try_from(ms).is_ok() => Ok(Some(ms)),
        _ => Err(format!(
            "workflow_log.retention: duration {retention:?} is too large"
        )),
    }
}

/// The retention of a stored WORKFLOW config (its JSON text), as `apply`
/// reads it when a workflow ends; a text that does not parse keeps logs
/// forever (the API never stores one).
pub fn retention_of_config_text(text: &str) -> Option<u64> {
    let body: Value = serde_json::from_str(text).ok()?;
    workflow_log_retention_ms(body.get("workflow_log").unwrap_or(&Value::Null))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::super::{parse, render, ConfigType};
    use super::*;

    #[test]
    fn retention_is_read_from_the_workflow_log_block() {
        assert_eq!(workflow_log_retention_ms(&json!({})), Ok(None));
        assert_eq!(workflow_log_retention_ms(&Value::Null), Ok(None));
        assert_eq!(
            workflow_log_retention_ms(&json!({"retention": "0"})),
            Ok(None)
        );
        assert_eq!(
            workflow_log_retention_ms(&json!({"retention": "2s"})),
            Ok(Some(2000))
        );
        let error = workflow_log_retention_ms(&json!({"retention": "soon"})).unwrap_err();
        assert!(
            error.starts_with("workflow_log.retention: invalid duration"),
            "{error}"
        );
        let error = workflow_log_retention_ms(&json!({"retention": 30})).unwrap_err();
        assert!(error.contains("duration string"), "{error}");
        assert!(workflow_log_retention_ms(&json!("x")).is_err());
        assert_eq!(
            retention_of_config_text(r#"{"workflow_log":{"retention":"1m"}}"#),
            Some(60_000)
        );
        assert_eq!(retention_of_config_text("not json"), None);
    }

    #[test]
    fn every_credential_value_is_shown_masked_and_kept_when_sent_back() {
        let stored = json!({
            "workflow_alerts": {"slack_token": "xoxb-1", "smtp_settings": {"password": "pw", "host": "h"}},
            "backend_images": {"credential": {"auth": "a", "registry": "r"}},
        });
        let mut shown = stored.clone();
        mask_secrets(&mut shown);
        assert_eq!(shown["workflow_alerts"]["slack_token"], MASK);
        assert_eq!(shown["workflow_alerts"]["smtp_settings"]["password"], MASK);
        assert_eq!(shown["workflow_alerts"]["smtp_settings"]["host"], "h");
        assert_eq!(shown["backend_images"]["credential"]["auth"], MASK);
        restore_masked_secrets(&mut shown, Some(&ConfigData::Json(stored.to_string())))
            .expect("restored");
        assert_eq!(shown, stored);
        let mut unbacked = json!({"workflow_alerts": {"slack_token": MASK}});
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
                json!({"endpoint": "s3://b", "access_key_id": "id", "access_key": MASK}),
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
        assert_eq!(shown["workflow_data"]["credential"]["access_key"], MASK);
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
}
