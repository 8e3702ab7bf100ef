//! The ROLE config: OSMO's `Role` — a named list of policies, each an
//! effect (Allow or Deny) on actions over resources.
//!
//! Owns the typed role, parsing and checking a body, and the JSON OSMO
//! shows. Evaluating policies, and the built-in roles (`admin`, `user`,
//! `backend`), belong to the API's access layer.
//!
//! Invariants: the name in the path wins (a different `name` in the body is
//! refused); every policy has at least one action, each `*` or
//! `<type>:<Action>` (the action may be `*`); an absent effect is Allow and
//! absent resources are `["*"]`; a resource holds no control character
//! and no `${...}` but `${user}` and `${backend}`. `immutable`, `sync_mode` and
//! `external_roles` are shown as OSMO shows them; sent back, `immutable`
//! is ignored (it is the built-ins'), and `sync_mode` other than `import` or
//! `external_roles` other than null are refused: IdP groups map to roles in
//! the SERVICE config (`service_auth.idp.group_roles`). No field is a secret.

use super::typed;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    sync_mode: Option<String>,
    #[serde(default)]
    external_roles: Option<Vec<String>>,
}

/// The variables a policy resource may say.
pub const RESOURCE_VARIABLES: [&str; 2] = ["${user}", "${backend}"];

/// Why `resource` cannot be a policy resource: a control character (the
/// matcher keeps those for itself) or a `${...}` that is no variable.
fn check_resource(resource: &str) -> Result<(), String> {
    if resource.chars().any(char::is_control) {
        return Err("holds a control character".to_string());
    }
    let mut rest = resource;
    while let Some(at) = rest.find("${") {
        let after = &rest[at..];
        match RESOURCE_VARIABLES.iter().find(|v| after.starts_with(**v)) {
            Some(variable) => rest = &after[variable.len()..],
            None => {
                return Err(format!(
                    "names an unknown variable (known: {})",
                    RESOURCE_VARIABLES.join(", ")
                ))
            }
        }
    }
    Ok(())
}

/// Parses a ROLE body stored under `name`.
pub fn parse(name: &str, body: Value) -> Result<RoleConfig, String> {
    let body: RoleBody = typed(body, "configs")?;
    if body.external_roles.is_some() {
        return Err("configs.external_roles: Gantry maps identity provider groups to roles in the SERVICE config (service_auth.idp.group_roles); send null".into());
    }
    if let Some(mode) = body.sync_mode.as_deref().filter(|mode| *mode != "import") {
        return Err(format!(
            "configs.sync_mode: '{mode}' is not supported: roles from identity provider groups hold while the provider's token says so (service_auth.idp.group_roles); send import"
        ));
    }
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
        let resources = policy.resources.unwrap_or_else(|| vec!["*".to_string()]);
        for resource in &resources {
            check_resource(resource).map_err(|reason| {
                format!(
                    "configs.policies[{index}].resources: '{}' {reason}",
                    resource.escape_debug()
                )
            })?;
        }
        policies.push(Policy {
            effect,
            actions: policy.actions,
            resources,
        });
    }
    Ok(RoleConfig {
        name: name.to_string(),
        description: body.description,
        policies,
    })
}

/// OSMO's `Role` as shown; `immutable` for the built-in roles.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_resource(resource: &str) -> Result<RoleConfig, String> {
        parse(
            "r",
            json!({"policies": [{"actions": ["token:*"], "resources": [resource]}]}),
        )
    }

    #[test]
    fn group_mappings_in_a_role_are_refused_not_ignored() {
        let role = |extra: Value| {
            let mut body = json!({"policies": [{"actions": ["workflow:*"]}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse("r", body)
        };
        // OSMO's own answer sent back as it is.
        assert!(
            role(json!({"immutable": false, "sync_mode": "import", "external_roles": null}))
                .is_ok()
        );
        let error = role(json!({"external_roles": ["team-a"]})).unwrap_err();
        assert!(error.contains("service_auth.idp.group_roles"), "{error}");
        let error = role(json!({"sync_mode": "force"})).unwrap_err();
        assert!(error.contains("configs.sync_mode"), "{error}");
    }

    #[test]
    fn resources_say_only_known_variables_and_no_control_characters() {
        for good in [
            "*",
            "user/${user}",
            "backend/${backend}",
            "pool/a?b[c]",
            "x/${user}/${backend}",
        ] {
            assert!(with_resource(good).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("user/${usr}", "unknown variable"),
            ("user/${", "unknown variable"),
            ("user/\u{1}", "control character"),
            ("user/a\0b", "control character"),
        ] {
            let error = with_resource(bad).unwrap_err();
            assert!(
                error.starts_with("configs.policies[0].resources: "),
                "{error}"
            );
            assert!(error.contains(reason), "{bad:?}: {error}");
        }
    }
}
