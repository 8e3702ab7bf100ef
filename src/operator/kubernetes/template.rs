//! Pod templates (OSMO §3.3): rendering their variables and merging them.
//!
//! Invariants:
//! - Merge order is the order given (pool common templates, then platform
//!   overrides); later wins. Maps merge key by key; lists merge items that
//!   share a `name` (recursively) and append the rest; anything else is
//!   replaced.
//! - Only string leaves are rendered, each on its own, so a variable can
//!   never break the template's structure. A string that fails to render is
//!   an error naming the template and the text, never a silently kept `{{`.

use super::error::KubeError;
use minijinja::Environment;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Fuel for rendering one string: plenty for conditionals and loops over
/// small values, bounded so a hostile template cannot spin.
const RENDER_FUEL: u64 = 50_000;

/// Renders every string leaf of `template` with `variables`.
pub fn render(
    template: &Value,
    variables: &BTreeMap<String, Value>,
    index: usize,
) -> Result<Value, KubeError> {
    let mut env = Environment::new();
    env.set_fuel(Some(RENDER_FUEL));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    render_value(&env, template, variables, index)
}

fn render_value(
    env: &Environment<'_>,
    value: &Value,
    variables: &BTreeMap<String, Value>,
    index: usize,
) -> Result<Value, KubeError> {
    Ok(match value {
        Value::String(text) if text.contains("{{") || text.contains("{%") => {
            let rendered = env.render_str(text, variables).map_err(|error| {
                KubeError::invalid(
                    format!("pod template {index}"),
                    format!("cannot render {text:?}: {error}"),
                )
            })?;
            Value::String(rendered)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(env, item, variables, index))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                out.insert(key.clone(), render_value(env, item, variables, index)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Merges `overlay` into `base` (OSMO's pod-template merge).
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(overlay)) => {
            for item in overlay {
                let named = item.get("name").and_then(Value::as_str);
                let existing = named.and_then(|name| {
                    base.iter_mut().find(|candidate| {
                        candidate.get("name").and_then(Value::as_str) == Some(name)
                    })
                });
                match existing {
                    Some(existing) => merge(existing, item),
                    None => base.push(item.clone()),
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_maps_and_named_lists() {
        let mut base = json!({
            "spec": {
                "containers": [{"name": "user", "image": "a", "env": [{"name": "X", "value": "1"}]}],
                "tolerations": [{"key": "a"}],
                "nodeSelector": {"zone": "1"}
            }
        });
        merge(
            &mut base,
            &json!({
                "spec": {
                    "containers": [
                        {"name": "user", "env": [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]},
                        {"name": "sidecar", "image": "s"}
                    ],
                    "tolerations": [{"key": "b"}],
                    "nodeSelector": {"gpu": "h100"}
                }
            }),
        );
        assert_eq!(
            base,
            json!({
                "spec": {
                    "containers": [
                        {"name": "user", "image": "a", "env": [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]},
                        {"name": "sidecar", "image": "s"}
                    ],
                    "tolerations": [{"key": "a"}, {"key": "b"}],
                    "nodeSelector": {"zone": "1", "gpu": "h100"}
                }
            })
        );
    }

    #[test]
    fn renders_string_leaves_and_rejects_unknown_variables() {
        let mut variables = BTreeMap::new();
        variables.insert("USER_CPU".to_string(), json!(4));
        let template =
            json!({"cpu": "{% if USER_CPU > 2 %}2{% else %}{{USER_CPU}}{% endif %}", "n": 1});
        assert_eq!(
            render(&template, &variables, 0).ok(),
            Some(json!({"cpu": "2", "n": 1}))
        );
        let bad = json!({"x": "{{ NOPE }}"});
        let error = render(&bad, &variables, 3).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("pod template 3")),
            "{error:?}"
        );
    }
}
