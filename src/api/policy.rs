//! Roles and their policies: the built-in roles, a ROLE config read as
//! policies, and evaluating Allow/Deny policies for an action on a resource.
//!
//! Invariants:
//! - Deny beats Allow; no matching Allow means refused.
//! - `admin` (also spelled `osmo-admin`) allows everything and cannot be
//!   redefined; `user` and `backend` are built in but a ROLE config of the
//!   same name replaces them; other role names come from ROLE configs only.
//! - A policy resource may say `${user}`: it stands for the caller's user,
//!   so one policy lets every user manage only their own tokens.

use super::error::ApiError;
use gantry_storage::{ConfigData, ConfigType, Policy, PolicyEffect, ReadView};

pub const ADMIN_ROLE: &str = "admin";
pub const USER_ROLE: &str = "user";
pub const BACKEND_ROLE: &str = "backend";

/// OSMO's role names map onto Gantry's: `osmo-admin` is `admin`, and so on.
pub fn normalize_role(name: &str) -> String {
    let name = name.trim();
    match name.strip_prefix("osmo-") {
        Some(rest @ (ADMIN_ROLE | USER_ROLE | BACKEND_ROLE)) => rest.to_string(),
        _ => name.to_string(),
    }
}

fn policy(effect: PolicyEffect, actions: &[&str], resources: &[&str]) -> Policy {
    Policy {
        effect,
        actions: actions.iter().map(|a| a.to_string()).collect(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
    }
}

/// The built-in definition of `role`, if it is one.
pub fn builtin_policies(role: &str) -> Option<Vec<Policy>> {
    use PolicyEffect::Allow;
    match role {
        ADMIN_ROLE => Some(vec![policy(Allow, &["*"], &["*"])]),
        USER_ROLE => Some(vec![
            policy(
                Allow,
                &[
                    "workflow:List",
                    "workflow:Read",
                    "pool:List",
                    "resources:Read",
                    "profile:Read",
                ],
                &["*"],
            ),
            policy(Allow, &["workflow:*"], &["pool/default"]),
            policy(Allow, &["token:*"], &["user/${user}"]),
        ]),
        BACKEND_ROLE => Some(vec![
            policy(
                Allow,
                &[
                    "backend:Connect",
                    "config:Read",
                    "pool:List",
                    "profile:Read",
                ],
                &["*"],
            ),
            policy(Allow, &["token:List"], &["user/${user}"]),
        ]),
        _ => None,
    }
}

/// The policies of `role` as configured now; `None` for an unknown role.
pub fn role_policies(view: &ReadView, role: &str) -> Result<Option<Vec<Policy>>, ApiError> {
    let role = normalize_role(role);
    if role == ADMIN_ROLE {
        return Ok(builtin_policies(ADMIN_ROLE));
    }
    if let Some(config) = view.config(ConfigType::Role, &role)? {
        if let Some(ConfigData::Role(config)) = config.data {
            return Ok(Some(config.policies));
        }
    }
    Ok(builtin_policies(&role))
}

/// OSMO's wildcard: `*` matches any run of characters (`/` included);
/// everything else matches itself (no single-character wildcard: NUL never
/// occurs in an action or a resource).
pub type Wildcard = wildmatch::WildMatchPattern<'*', '\u{0}'>;

/// Whether `pattern` matches all of `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    Wildcard::new(pattern).matches(text)
}

/// Whether `policies` allow `action` on `resource` for `user` (Deny wins).
pub fn allows(policies: &[Policy], user: &str, action: &str, resource: &str) -> bool {
    let mut allowed = false;
    for policy in policies {
        let action_matches = policy.actions.iter().any(|a| glob_matches(a, action));
        let resource_matches = policy
            .resources
            .iter()
            .any(|r| glob_matches(&r.replace("${user}", user), resource));
        if action_matches && resource_matches {
            match policy.effect {
                PolicyEffect::Deny => return false,
                PolicyEffect::Allow => allowed = true,
            }
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything/at:all"));
        assert!(glob_matches("workflow:*", "workflow:Create"));
        assert!(!glob_matches("workflow:*", "pool:List"));
        assert!(glob_matches("pool/*", "pool/gpu-h100"));
        assert!(glob_matches("*:Read", "config:Read"));
        assert!(!glob_matches("pool/default", "pool/default2"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        // `?` is no wildcard here.
        assert!(!glob_matches("pool/a?c", "pool/abc"));
        assert!(glob_matches("pool/a?c", "pool/a?c"));
    }

    #[test]
    fn deny_beats_allow_and_user_placeholders_expand() {
        let policies = vec![
            policy(PolicyEffect::Allow, &["workflow:*"], &["pool/*"]),
            policy(PolicyEffect::Deny, &["workflow:Cancel"], &["pool/prod"]),
            policy(PolicyEffect::Allow, &["token:*"], &["user/${user}"]),
        ];
        assert!(allows(&policies, "ann", "workflow:Cancel", "pool/dev"));
        assert!(!allows(&policies, "ann", "workflow:Cancel", "pool/prod"));
        assert!(allows(&policies, "ann", "workflow:Create", "pool/prod"));
        assert!(allows(&policies, "ann", "token:Create", "user/ann"));
        assert!(!allows(&policies, "ann", "token:Create", "user/bob"));
        assert!(!allows(&policies, "ann", "config:Update", "config/pool"));
    }

    #[test]
    fn builtin_roles() {
        let user = builtin_policies(USER_ROLE).unwrap();
        assert!(allows(&user, "u", "workflow:Create", "pool/default"));
        assert!(!allows(&user, "u", "workflow:Create", "pool/gpu"));
        assert!(allows(&user, "u", "workflow:Read", "pool/gpu"));
        assert!(!allows(&user, "u", "config:Update", "config/pool"));
        let backend = builtin_policies(BACKEND_ROLE).unwrap();
        assert!(allows(&backend, "op", "backend:Connect", "*"));
        assert!(!allows(&backend, "op", "workflow:Create", "pool/default"));
        let admin = builtin_policies(ADMIN_ROLE).unwrap();
        assert!(allows(&admin, "root", "config:Update", "config/role"));
        assert_eq!(normalize_role("osmo-backend"), BACKEND_ROLE);
        assert_eq!(normalize_role("osmo-gpu"), "osmo-gpu");
    }
}
