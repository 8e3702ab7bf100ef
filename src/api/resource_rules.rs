//! OSMO's RESOURCE_VALIDATION rules, evaluated as OSMO evaluates them: each
//! operand is a Jinja template rendered with the task's `USER_*` variables
//! (and, for a node rule, the node's `K8_*` ones); the text it renders to is
//! a quantity with a unit (compared in Ki), a plain number, or else text;
//! then `LE`, `GE`, `LT`, `GT`, `EQ` or `NE` compares the two. A rule whose
//! first `{{…}}` in either operand names a `K8_*` variable is a node rule:
//! it must hold on some node of the task's platform (all node rules on the
//! same node); the others are static and hold once. A failing rule's
//! `assert_message` is rendered with the same variables.
//!
//! Invariants: a rule whose operands use a variable the task leaves unset
//! (`USER_CPU` without `cpu`) is skipped, as OSMO's `evaluate` documents;
//! an undefined variable, a template that does not render, or an order
//! between text and a number is an error naming the rule, never a pass.
//! Rendering is bounded (fuel) and pure.

use gantry_storage::config::resource_validation::ResourceAssertion;
use gantry_storage::plan::ResourcePlan;
use gantry_storage::NodeInventory;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Fuel for one operand or message: ample for arithmetic and conditionals.
const RENDER_FUEL: u64 = 20_000;

/// OSMO's `K8_TOKENS_SET`: what makes a rule a node rule.
const NODE_TOKENS: [&str; 6] = [
    "K8_STORAGE",
    "K8_CPU",
    "K8_MEMORY",
    "K8_GPU",
    "K8_GPU_PRODUCT",
    "K8_GPU_CUDA_DRIVER",
];

/// OSMO's binary units, as shifts relative to Gi (`resource_quantities`).
const UNITS: [(&str, i32); 14] = [
    ("T", 10),
    ("Ti", 10),
    ("TiB", 10),
    ("G", 0),
    ("Gi", 0),
    ("GiB", 0),
    ("M", -10),
    ("Mi", -10),
    ("MiB", -10),
    ("K", -20),
    ("Ki", -20),
    ("KiB", -20),
    ("B", -30),
    ("m", -40),
];
/// The units OSMO gives `USER_MEMORY_<unit>` and `USER_STORAGE_<unit>` in.
const SHORT_UNITS: [&str; 6] = ["Ti", "Gi", "Mi", "Ki", "B", "m"];

fn shift(unit: &str) -> Option<i32> {
    UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, shift)| *shift)
}

/// `size` `unit` in `target` (OSMO's `convert_resource_value`).
fn convert(size: f64, unit: &str, target: &str) -> Option<f64> {
    Some(size * 2f64.powi(shift(unit)? - shift(target)?))
}

/// One rule of a named RESOURCE_VALIDATION config.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The config's name.
    pub config: String,
    /// Its place in that config's list.
    pub index: usize,
    pub assertion: ResourceAssertion,
}

impl Rule {
    /// `RESOURCE_VALIDATION 'default_cpu' rule 0: '{{USER_CPU}}' LE '{{K8_CPU}}'`.
    pub fn describe(&self) -> String {
        format!(
            "RESOURCE_VALIDATION '{}' rule {}: '{}' {} '{}'",
            self.config,
            self.index,
            self.assertion.left_operand,
            self.assertion.operator,
            self.assertion.right_operand
        )
    }

    /// Whether the rule is checked against each node (OSMO: the first
    /// `{{…}}` of either operand mentions a `K8_*` variable).
    pub fn is_node_rule(&self) -> bool {
        [&self.assertion.left_operand, &self.assertion.right_operand]
            .iter()
            .any(|operand| {
                first_token(operand)
                    .is_some_and(|inner| NODE_TOKENS.iter().any(|token| inner.contains(token)))
            })
    }
}

/// The text inside the first `{{…}}` of `operand` (OSMO's
/// `TOKEN_MAPPING_REGEX`, `\{\{([^}]+)\}\}`).
fn first_token(operand: &str) -> Option<&str> {
    let mut rest = operand;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let inner_len = after.find('}').unwrap_or(after.len());
        if inner_len > 0 && after[inner_len..].starts_with("}}") {
            return Some(&after[..inner_len]);
        }
        rest = &rest[start + 1..];
    }
    None
}

/// Why a rule did not pass.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleError {
    /// The comparison is false: the rendered `assert_message`, with the rule.
    Failed(String),
    /// The rule cannot be evaluated (undefined variable, bad template,
    /// text ordered against a number): what is wrong, with the rule.
    Broken(String),
}

/// A number or a quantity in Ki (OSMO keeps both as Python numbers), or text.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operand::Number(n) => write!(f, "{n}"),
            Operand::Text(t) => write!(f, "'{t}'"),
        }
    }
}

/// OSMO's `process_operand` after rendering.
fn read_operand(text: &str) -> Result<Operand, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let is_number = {
        let mut parts = number.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next();
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    let letters = unit.bytes().all(|b| b.is_ascii_alphabetic());
    if is_number && letters && !unit.is_empty() && UNITS.iter().any(|(u, _)| text.ends_with(u)) {
        let size: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a quantity"))?;
        let ki = convert(size, unit, "Ki").ok_or_else(|| {
            format!("'{text}': unit '{unit}' is not one of B, Ki, Mi, Gi, Ti (or K, M, G, T, m)")
        })?;
        return Ok(Operand::Number(ki.trunc()));
    }
    if is_number && unit.is_empty() {
        let value: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a number"))?;
        return Ok(Operand::Number(value));
    }
    Ok(Operand::Text(text.to_string()))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(RENDER_FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Python renders None as `None` (OSMO's messages).
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            out.write_str("None").map_err(minijinja::Error::from)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

/// Variables a rule is evaluated with.
pub type Tokens = BTreeMap<String, Value>;

/// A byte count in the largest binary unit that divides it, else in bytes
/// (a unit always, so a rule compares it in Ki).
fn quantity_text(bytes: u64) -> String {
    for (bits, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        let size = 1u64 << bits;
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// A float as Python prints it (`2.0`, `0.5`).
fn python_float(value: f64) -> Value {
    json!(value)
}

/// OSMO's `get_allocatable_tokens` for a task's resource: `USER_CPU`
/// (a float), `USER_GPU`, `USER_MEMORY` and `USER_STORAGE` (with `_VAL`,
/// `_UNIT` and one per unit: `_Ti`, `_Gi`, `_Mi`, `_Ki`, `_B`, `_m`),
/// `USER_CACHE` (90% of the storage) and `USER_EXCLUDED_NODES`. A value the
/// spec leaves out (or a zero CPU or GPU count) is `None`, as OSMO's.
pub fn user_tokens(resource: &ResourcePlan) -> Tokens {
    let mut tokens = Tokens::new();
    tokens.insert(
        "USER_CPU".into(),
        match resource.cpu {
            Some(cpu) if cpu > 0 => python_float(cpu as f64),
            _ => Value::Null,
        },
    );
    tokens.insert(
        "USER_GPU".into(),
        match resource.gpu {
            Some(gpu) if gpu > 0 => json!(gpu),
            _ => Value::Null,
        },
    );
    let mut quantity = |prefix: &str, bytes: Option<u64>| -> Option<(String, String)> {
        let text = bytes.map(quantity_text);
        let split = text.as_ref().map(|text| {
            let at = text
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(text.len());
            (text[..at].to_string(), text[at..].to_string())
        });
        tokens.insert(prefix.into(), json!(text));
        tokens.insert(format!("{prefix}_VAL"), json!(split.as_ref().map(|s| &s.0)));
        tokens.insert(
            format!("{prefix}_UNIT"),
            json!(split.as_ref().map(|s| &s.1)),
        );
        for unit in SHORT_UNITS {
            let converted = split.as_ref().and_then(|(number, from)| {
                convert(number.parse::<f64>().ok()?, from, unit).map(python_float)
            });
            tokens.insert(format!("{prefix}_{unit}"), converted.unwrap_or(Value::Null));
        }
        split
    };
    quantity("USER_MEMORY", resource.memory_bytes);
    let storage = quantity("USER_STORAGE", resource.storage_bytes);
    // No `cacheSize` (it is refused at submit): 90% of the storage.
    let (number, unit) = storage.unwrap_or_else(|| ("0".into(), "MiB".into()));
    let cache = (number.parse::<f64>().unwrap_or(0.0) * 0.9).floor();
    tokens.insert("USER_CACHE".into(), json!(format!("{cache}{unit}")));
    tokens.insert("USER_EXCLUDED_NODES".into(), json!("ARRAY:[]"));
    tokens
}

/// A node's `K8_*` variables: `K8_CPU` in whole cores (rounded down),
/// `K8_GPU`, and `K8_MEMORY`, `K8_STORAGE` in Ki (`"16384Ki"`).
pub fn node_tokens(node: &NodeInventory) -> Tokens {
    let mut tokens = Tokens::new();
    tokens.insert("K8_CPU".into(), json!(node.cpu_millis / 1000));
    tokens.insert("K8_GPU".into(), json!(node.gpu_count));
    tokens.insert(
        "K8_MEMORY".into(),
        json!(format!("{}Ki", node.memory_bytes / 1024)),
    );
    tokens.insert(
        "K8_STORAGE".into(),
        json!(format!("{}Ki", node.ephemeral_storage_bytes / 1024)),
    );
    tokens
}

/// Evaluates `rule` for task `task` with `tokens`.
pub fn evaluate(rule: &Rule, tokens: &Tokens, task: &str) -> Result<(), RuleError> {
    let env = environment();
    let broken = |what: String| RuleError::Broken(format!("{}: {what}", rule.describe()));
    let assertion = &rule.assertion;
    let mut operands = Vec::with_capacity(2);
    for (side, text) in [
        ("left_operand", &assertion.left_operand),
        ("right_operand", &assertion.right_operand),
    ] {
        let template = env
            .template_from_str(text)
            .map_err(|error| broken(format!("{side} is not a template: {error}")))?;
        // A variable the task leaves unset: the rule does not apply.
        let unset = template
            .undeclared_variables(false)
            .iter()
            .any(|name| tokens.get(name).is_some_and(Value::is_null));
        if unset {
            return Ok(());
        }
        let rendered = template
            .render(tokens)
            .map_err(|error| broken(format!("{side} does not render: {error}")))?;
        operands.push(
            read_operand(rendered.trim()).map_err(|error| broken(format!("{side}: {error}")))?,
        );
    }
    let (left, right) = (&operands[0], &operands[1]);
    let order = match (left, right) {
        (Operand::Number(a), Operand::Number(b)) => a.partial_cmp(b),
        (Operand::Text(a), Operand::Text(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let holds = match (assertion.operator.as_str(), order) {
        ("EQ", order) => order == Some(Ordering::Equal),
        ("NE", order) => order != Some(Ordering::Equal),
        ("LT", Some(order)) => order == Ordering::Less,
        ("LE", Some(order)) => order != Ordering::Greater,
        ("GT", Some(order)) => order == Ordering::Greater,
        ("GE", Some(order)) => order != Ordering::Less,
        ("LT" | "LE" | "GT" | "GE", None) => {
            return Err(broken(format!("{left} and {right} cannot be ordered")))
        }
        (other, _) => return Err(broken(format!("unknown operator '{other}'"))),
    };
    if holds {
        return Ok(());
    }
    let message = env
        .render_str(&assertion.assert_message, tokens)
        .unwrap_or_else(|_| assertion.assert_message.clone());
    Err(RuleError::Failed(format!(
        "Assertion failed for task {task}: {message} ({})",
        rule.describe()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(left: &str, operator: &str, right: &str, message: &str) -> Rule {
        Rule {
            config: "limits".into(),
            index: 0,
            assertion: ResourceAssertion {
                operator: operator.into(),
                left_operand: left.into(),
                right_operand: right.into(),
                assert_message: message.into(),
            },
        }
    }

    fn resource(cpu: Option<u64>, memory: Option<u64>) -> ResourcePlan {
        ResourcePlan {
            name: "default".into(),
            cpu,
            memory_bytes: memory,
            ..ResourcePlan::default()
        }
    }

    fn node(cpu_millis: u64, memory_bytes: u64) -> NodeInventory {
        NodeInventory {
            name: "n1".into(),
            cpu_millis,
            memory_bytes,
            ..NodeInventory::default()
        }
    }

    #[test]
    fn operands_read_as_osmo_reads_them() {
        assert_eq!(
            read_operand("8Gi"),
            Ok(Operand::Number(8.0 * 1024.0 * 1024.0))
        );
        assert_eq!(read_operand("1536Mi"), Ok(Operand::Number(1536.0 * 1024.0)));
        assert_eq!(read_operand("1000B"), Ok(Operand::Number(0.0)));
        assert_eq!(
            read_operand("2G"),
            Ok(Operand::Number(2.0 * 1024.0 * 1024.0))
        );
        assert_eq!(read_operand("2.0"), Ok(Operand::Number(2.0)));
        assert_eq!(read_operand("16"), Ok(Operand::Number(16.0)));
        assert_eq!(read_operand("-1"), Ok(Operand::Text("-1".into())));
        assert_eq!(read_operand("H100"), Ok(Operand::Text("H100".into())));
        assert!(read_operand("5xB").unwrap_err().contains("unit 'xB'"));
    }

    #[test]
    fn the_first_token_makes_a_node_rule() {
        assert!(rule("{{USER_CPU}}", "LE", "{{K8_CPU}}", "").is_node_rule());
        assert!(rule("{{ K8_MEMORY }}", "GT", "0", "").is_node_rule());
        assert!(!rule("{{USER_GPU}}", "LE", "8", "").is_node_rule());
        // OSMO looks at the first `{{…}}` of each operand only.
        assert!(!rule("{{USER_CPU}} {{K8_CPU}}", "LE", "8", "").is_node_rule());
    }

    #[test]
    fn static_and_node_rules_compare_numbers_and_quantities() {
        let tokens = user_tokens(&resource(Some(16), Some(64 << 30)));
        assert_eq!(tokens["USER_CPU"], json!(16.0));
        assert_eq!(tokens["USER_MEMORY"], json!("64Gi"));
        assert_eq!(tokens["USER_MEMORY_Mi"], json!(65536.0));
        let cpu = rule(
            "{{USER_CPU}}",
            "LE",
            "{{K8_CPU}}",
            "CPU {{USER_CPU}} exceeds node capacity {{K8_CPU}}",
        );
        let mut on_node = tokens.clone();
        on_node.extend(node_tokens(&node(8_500, 32 << 30)));
        assert_eq!(
            evaluate(&cpu, &on_node, "train"),
            Err(RuleError::Failed(
                "Assertion failed for task train: CPU 16.0 exceeds node capacity 8 (RESOURCE_VALIDATION 'limits' rule 0: '{{USER_CPU}}' LE '{{K8_CPU}}')".into()
            ))
        );
        let memory = rule("{{USER_MEMORY}}", "LT", "{{K8_MEMORY}}", "too much memory");
        assert!(matches!(
            evaluate(&memory, &on_node, "train"),
            Err(RuleError::Failed(_))
        ));
        on_node.extend(node_tokens(&node(32_000, 128 << 30)));
        assert_eq!(evaluate(&cpu, &on_node, "train"), Ok(()));
        assert_eq!(evaluate(&memory, &on_node, "train"), Ok(()));
        // Jinja arithmetic in an operand, units on a static value.
        let headroom = rule(
            "{{ USER_CPU * 1.5 }}",
            "LE",
            "{{ K8_CPU - 2 }}",
            "no headroom",
        );
        assert_eq!(evaluate(&headroom, &on_node, "train"), Ok(()));
        let at_least = rule("{{USER_MEMORY}}", "GE", "100Gi", "at least 100Gi");
        assert!(matches!(
            evaluate(&at_least, &tokens, "train"),
            Err(RuleError::Failed(message)) if message.contains("at least 100Gi")
        ));
    }

    #[test]
    fn unset_values_skip_a_rule_and_broken_rules_are_errors() {
        let tokens = user_tokens(&resource(None, None));
        assert_eq!(tokens["USER_CPU"], Value::Null);
        let positive = rule("{{USER_CPU}}", "GT", "0", "CPU must be positive");
        assert_eq!(evaluate(&positive, &tokens, "t"), Ok(()));
        let typo = rule("{{USER_CPUS}}", "GT", "0", "");
        assert!(matches!(
            evaluate(&typo, &tokens, "t"),
            Err(RuleError::Broken(message)) if message.contains("left_operand does not render") && message.contains("'limits' rule 0")
        ));
        let tokens = user_tokens(&resource(Some(2), None));
        let mixed = rule("{{USER_CPU}}", "LE", "lots", "");
        assert!(matches!(
            evaluate(&mixed, &tokens, "t"),
            Err(RuleError::Broken(message)) if message.contains("cannot be ordered")
        ));
        let equal_text = rule("{{USER_CPU}}", "NE", "lots", "");
        assert_eq!(evaluate(&equal_text, &tokens, "t"), Ok(()));
    }
}
