//! Roles and their policies: the built-in roles, a ROLE config read as
//! policies, and evaluating Allow/Deny policies for an action on a resource.
//!
//! Invariants:
//! - Deny beats Allow; no matching Allow means refused.
//! - `admin` (also spelled `osmo-admin`) allows everything and cannot be
//!   redefined; `user` and `backend` are built in but a ROLE config of the
//!   same name replaces them; other role names come from ROLE configs only.
//! - A policy resource may say `${user}`: it stands for the caller's user,
//!   so one policy lets every user manage only their own tokens. It stands
//!   for the name literally: a `*` in a user name is no wildcard.
//! - A role may be bound to a backend, `<role>/<backend>` (e.g.
//!   `backend/local`): `${backend}` in its resources stands for that
//!   backend. Without a binding, a resource that says `${backend}` matches
//!   nothing, so the plain `backend` role connects no operator; a binding
//!   is refused on a role that never says `${backend}`.

use super::error::ApiError;
use super::names;
use gantry_storage::{ConfigData, ConfigType, Policy, PolicyEffect, ReadView};

pub const ADMIN_ROLE: &str = "admin";
pub const USER_ROLE: &str = "user";
pub const BACKEND_ROLE: &str = "backend";

/// OSMO's role names map onto Gantry's: `osmo-admin` is `admin`, and so on
/// (`osmo-backend/local` is `backend/local`).
pub fn normalize_role(name: &str) -> String {
    let name = name.trim();
    let (base, binding) = match name.split_once('/') {
        Some((base, backend)) => (base, Some(backend)),
        None => (name, None),
    };
    let base = match base.strip_prefix("osmo-") {
        Some(rest @ (ADMIN_ROLE | USER_ROLE | BACKEND_ROLE)) => rest,
        _ => base,
    };
    match binding {
        Some(backend) => format!("{base}/{backend}"),
        None => base.to_string(),
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
                    "profile:Update",
                    "credentials:*",
                ],
                &["*"],
            ),
            policy(Allow, &["workflow:*"], &["pool/default"]),
            policy(Allow, &["token:*"], &["user/${user}"]),
        ]),
        BACKEND_ROLE => Some(vec![
            policy(Allow, &["backend:Connect"], &["backend/${backend}"]),
            policy(Allow, &["config:Read", "pool:List", "profile:Read"], &["*"]),
            policy(Allow, &["token:List"], &["user/${user}"]),
        ]),
        _ => None,
    }
}

/// The policies of `role` as configured now, a backend binding
/// (`backend/local`) put in; `None` for an unknown role, a binding that is
/// no backend name, or a binding on a role that does not use one.
pub fn role_policies(view: &ReadView, role: &str) -> Result<Option<Vec<Policy>>, ApiError> {
    let role = normalize_role(role);
    let (base, binding) = match role.split_once('/') {
        Some((base, backend)) => (base, Some(backend)),
        None => (role.as_str(), None),
    };
    if binding.is_some_and(|backend| !names::is_backend_name(backend)) {
        return Ok(None);
    }
    let policies = if base == ADMIN_ROLE {
        builtin_policies(ADMIN_ROLE)
    } else {
        match view.config(ConfigType::Role, base)? {
            Some(config) => match config.data {
                Some(ConfigData::Role(config)) => Some(config.policies),
                _ => builtin_policies(base),
            },
            None => builtin_policies(base),
        }
    };
    Ok(policies.and_then(|policies| bind_backend(policies, binding)))
}

/// `${backend}` in `policies`' resources replaced by `backend`, or those
/// resources dropped without one (they match nothing then); `None` when a
/// backend is given to policies that never say `${backend}`.
fn bind_backend(policies: Vec<Policy>, backend: Option<&str>) -> Option<Vec<Policy>> {
    let uses_backend = policies
        .iter()
        .flat_map(|policy| &policy.resources)
        .any(|resource| resource.contains(BACKEND_VARIABLE));
    if backend.is_some() && !uses_backend {
        return None;
    }
    Some(
        policies
            .into_iter()
            .map(|mut policy| {
                policy.resources = policy
                    .resources
                    .into_iter()
                    .filter_map(
                        |resource| match (resource.contains(BACKEND_VARIABLE), backend) {
                            (false, _) => Some(resource),
                            // A backend name holds no wildcard (names::is_backend_name).
                            (true, Some(backend)) => {
                                Some(resource.replace(BACKEND_VARIABLE, backend))
                            }
                            (true, None) => None,
                        },
                    )
                    .collect();
                policy
            })
            .collect(),
    )
}

/// The wildcard character patterns are matched with. OSMO's `*` in a
/// policy becomes it before a name is put in, and no name, action or
/// policy text holds it, so a `*` that came from `${user}` or
/// `${backend}` matches only itself (the escaping wildmatch lacks).
const ANY: char = '\u{1}';

/// OSMO's wildcard: [`ANY`] matches any run of characters (`/` included);
/// everything else matches itself (no single-character wildcard: NUL never
/// reaches a compiled pattern, so `?` and `[` are literal too).
type Wildcard = wildmatch::WildMatchPattern<ANY, '\u{0}'>;

/// The placeholder for the caller's user in a policy's resources.
pub const USER_VARIABLE: &str = "${user}";
/// The placeholder for the backend a `backend/<name>` role names.
pub const BACKEND_VARIABLE: &str = "${backend}";

/// Whether `text` can be part of a pattern: the two characters the
/// matcher gives meaning to never come from policy text or a name.
fn matchable(text: &str) -> bool {
    !text.contains([ANY, '\u{0}'])
}

/// `pattern` (OSMO's `*`, and `${user}` standing for `user`) compiled so
/// that only the pattern's own `*` are wildcards; `None` when it can match
/// nothing (a control character the matcher would take for a wildcard).
fn compile(pattern: &str, user: &str) -> Option<Wildcard> {
    if !matchable(pattern) || (pattern.contains(USER_VARIABLE) && !matchable(user)) {
        return None;
    }
    let text = pattern
        .split(USER_VARIABLE)
        .map(|part| part.replace('*', &ANY.to_string()))
        .collect::<Vec<_>>()
        .join(user);
    Some(Wildcard::new(&text))
}

/// Whether `pattern` (no variables) matches all of `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    matches_for(pattern, "", text)
}

/// Whether `pattern`, with `${user}` standing for `user` (literally: a
/// `*` in the name is no wildcard), matches all of `text`.
fn matches_for(pattern: &str, user: &str, text: &str) -> bool {
    compile(pattern, user).is_some_and(|wildcard| wildcard.matches(text))
}

/// Whether `policies` allow `action` on `resource` for `user` (Deny wins).
pub fn allows(policies: &[Policy], user: &str, action: &str, resource: &str) -> bool {
    let mut allowed = false;
    for policy in policies {
        let action_matches = policy.actions.iter().any(|a| glob_matches(a, action));
        let resource_matches = policy
            .resources
            .iter()
            .any(|r| matches_for(r, user, resource));
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
        assert!(!allows(&backend, "op", "workflow:Create", "pool/default"));
        assert!(allows(&backend, "op", "config:Read", "config/backend"));
        assert_eq!(normalize_role("osmo-backend/local"), "backend/local");
        let admin = builtin_policies(ADMIN_ROLE).unwrap();
        assert!(allows(&admin, "root", "config:Update", "config/role"));
        assert_eq!(normalize_role("osmo-backend"), BACKEND_ROLE);
        assert_eq!(normalize_role("osmo-gpu"), "osmo-gpu");
    }

    /// Probe: a user named `*` (or with `?`, `[`) put into `user/${user}`
    /// matched every user's tokens.
    #[test]
    fn user_names_in_patterns_match_only_themselves() {
        let user = builtin_policies(USER_ROLE).unwrap();
        for action in ["token:List", "token:Create", "token:Delete"] {
            assert!(allows(&user, "*", action, "user/*"));
            assert!(!allows(&user, "*", action, "user/bob"), "{action}");
            assert!(!allows(&user, "a*", action, "user/ann"), "{action}");
        }
        assert!(!allows(&user, "a?n", "token:List", "user/ann"));
        assert!(allows(&user, "a?n", "token:List", "user/a?n"));
        assert!(!allows(&user, "[a]nn", "token:List", "user/ann"));
        // The matcher's own wildcard never comes from a name or a policy.
        assert!(!allows(&user, "\u{1}", "token:List", "user/bob"));
        let sneaky = vec![policy(PolicyEffect::Allow, &["*"], &["user/\u{1}"])];
        assert!(!allows(&sneaky, "ann", "token:List", "user/bob"));
        // A policy's own `*` still is one, next to a user name.
        let own = vec![policy(PolicyEffect::Allow, &["*"], &["user/${user}/*"])];
        assert!(allows(&own, "a*", "token:List", "user/a*/x"));
        assert!(!allows(&own, "a*", "token:List", "user/ab/x"));
    }

    #[test]
    fn backend_roles_connect_only_their_backend() {
        let bound = |backend| bind_backend(builtin_policies(BACKEND_ROLE).unwrap(), backend);
        let local = bound(Some("local")).unwrap();
        assert!(allows(&local, "op", "backend:Connect", "backend/local"));
        assert!(!allows(&local, "op", "backend:Connect", "backend/gpu"));
        assert!(!allows(&local, "op", "backend:Connect", "*"));
        assert!(allows(&local, "op", "config:Read", "config/backend"));
        let unbound = bound(None).unwrap();
        assert!(!allows(&unbound, "op", "backend:Connect", "backend/local"));
        assert!(!allows(
            &unbound,
            "op",
            "backend:Connect",
            "backend/${backend}"
        ));
        assert!(allows(&unbound, "op", "pool:List", "*"));
        // A binding on a role that never names a backend is no role.
        assert!(bind_backend(builtin_policies(USER_ROLE).unwrap(), Some("local")).is_none());
    }
}
