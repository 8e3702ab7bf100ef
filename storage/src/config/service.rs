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
//! so `apply` never reads this config. `service_auth` names the OpenID
//! provider users sign in with (an `https` issuer, at least one client id)
//! and the roles sign-ins bring; OSMO's own JWT keys in it are refused
//! (Gantry signs its JWTs with the cluster key), never silently dropped.

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
    pub service_auth: ServiceAuth,
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
            service_auth: ServiceAuth::default(),
            cli_config: json!({}),
            max_pod_restart_limit: "30m".into(),
            agent_queue_size: 1024,
            backend_heartbeat_grace: "2m".into(),
            backend_lost_grace: "10m".into(),
        }
    }
}

/// How users sign in: OSMO's `AuthenticationConfig` without its JWT keys,
/// plus the OpenID provider (`idp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceAuth {
    /// Roles every user signed in through the IdP holds (OSMO's).
    pub user_roles: Vec<String>,
    /// What CLIs are told by `/api/auth/login`; a field left out comes
    /// from the IdP's discovery document.
    pub login_info: LoginInfo,
    /// The OpenID provider whose ID tokens sign users in; without one,
    /// only access tokens (and their JWTs) do.
    pub idp: Option<IdpConfig>,
    /// OSMO's own JWT signing keys and claims: refused (see `check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_key: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_roles: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_token_duration: Option<Value>,
}

impl Default for ServiceAuth {
    fn default() -> Self {
        ServiceAuth {
            user_roles: vec!["osmo-user".into()],
            login_info: LoginInfo::default(),
            idp: None,
            keys: None,
            active_key: None,
            issuer: None,
            audience: None,
            ctrl_roles: None,
            max_token_duration: None,
        }
    }
}

/// OSMO's `LoginInfo`: where a CLI signs in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginInfo {
    pub device_endpoint: Option<String>,
    pub device_client_id: Option<String>,
    pub browser_endpoint: Option<String>,
    pub browser_client_id: Option<String>,
    pub token_endpoint: Option<String>,
    pub logout_endpoint: Option<String>,
}

/// The OpenID provider users sign in with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdpConfig {
    /// The issuer (`iss` of its ID tokens; discovery at
    /// `<issuer>/.well-known/openid-configuration`), `https`.
    pub issuer: String,
    /// The clients (device and browser) whose ID tokens are accepted: an
    /// ID token's audience must be one of them.
    pub client_ids: Vec<String>,
    /// The claim that names the user.
    pub user_claim: String,
    /// The claim listing the user's groups (absent: no groups).
    pub groups_claim: String,
    /// Roles a group brings: IdP group → Gantry roles.
    pub group_roles: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            issuer: String::new(),
            client_ids: Vec::new(),
            user_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            group_roles: Default::default(),
        }
    }
}

/// Why `role` cannot name a role in the SERVICE config, if it cannot.
fn check_role_name(field: &str, role: &str) -> Result<(), String> {
    if role.is_empty()
        || role.len() > 128
        || role.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{field}: '{}' is not a role name (1-128 characters, no spaces)",
            role.escape_debug()
        ));
    }
    Ok(())
}

impl ServiceAuth {
    fn check(&self) -> Result<(), String> {
        for (field, present) in [
            ("keys", self.keys.is_some()),
            ("active_key", self.active_key.is_some()),
            ("issuer", self.issuer.is_some()),
            ("audience", self.audience.is_some()),
        ] {
            if present {
                return Err(format!(
                    "configs.service_auth.{field}: Gantry signs its JWTs with the cluster key (`gantry cluster key rotate`), not keys in the SERVICE config; the IdP's issuer goes in service_auth.idp.issuer"
                ));
            }
        }
        if self.ctrl_roles.is_some() {
            return Err("configs.service_auth.ctrl_roles: Gantry's tasks hold no tokens of their own, so there are no task roles to set".into());
        }
        if self.max_token_duration.is_some() {
            return Err("configs.service_auth.max_token_duration: not supported; give access tokens an expiry (expires_at) when creating them".into());
        }
        for role in &self.user_roles {
            check_role_name("configs.service_auth.user_roles", role)?;
        }
        for (field, url) in [
            ("device_endpoint", &self.login_info.device_endpoint),
            ("browser_endpoint", &self.login_info.browser_endpoint),
            ("token_endpoint", &self.login_info.token_endpoint),
            ("logout_endpoint", &self.login_info.logout_endpoint),
        ] {
            if let Some(url) = url {
                check_https(&format!("configs.service_auth.login_info.{field}"), url)?;
            }
        }
        let Some(idp) = &self.idp else {
            return Ok(());
        };
        check_https("configs.service_auth.idp.issuer", &idp.issuer)?;
        if idp.client_ids.is_empty() || idp.client_ids.iter().any(|id| id.trim().is_empty()) {
            return Err("configs.service_auth.idp.client_ids: name at least one client id (the audience of the IdP's ID tokens), none blank".into());
        }
        if idp.user_claim.trim().is_empty() {
            return Err("configs.service_auth.idp.user_claim: must name a claim (e.g. preferred_username, email)".into());
        }
        for (group, roles) in &idp.group_roles {
            for role in roles {
                check_role_name(
                    &format!("configs.service_auth.idp.group_roles.{group}"),
                    role,
                )?;
            }
        }
        Ok(())
    }
}

/// `url` is an absolute `https` URL with a host.
fn check_https(field: &str, url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!("{field}: '{url}' must be an https URL (OSMO's CLI and Gantry's refuse to send credentials over plain HTTP)")),
        Err(error) => Err(format!("{field}: '{url}' is not a URL: {error}")),
    }
}

impl ServiceConfig {
    fn check(&self) -> Result<(), String> {
        self.service_auth.check()?;
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
