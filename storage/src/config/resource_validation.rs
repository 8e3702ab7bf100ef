//! The RESOURCE_VALIDATION config: a named list of OSMO
//! `ResourceAssertion`s (`left_operand <operator> right_operand`, else
//! `assert_message`) that pools and platforms apply to task resources.
//!
//! Owns the check of a body. The list is stored as the JSON text given
//! ([`crate::ConfigData::Json`]) and shown as stored; evaluating the
//! assertions against a task is not done yet (submit applies OSMO's
//! default resource rules only).
//!
//! Invariants: every assertion has exactly the four fields, an operator of
//! LE, GE, LT, GT, EQ or NE, and operands that are not blank; errors name
//! the assertion (`configs[<index>]`). No field is a secret.

use super::typed;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionBody {
    operator: String,
    left_operand: String,
    right_operand: String,
    assert_message: String,
}

/// A RESOURCE_VALIDATION body, checked: what is stored.
pub fn parse(body: Value) -> Result<Value, String> {
    let assertions: Vec<AssertionBody> = typed(body.clone(), "configs")?;
    for (index, assertion) in assertions.iter().enumerate() {
        if !matches!(
            assertion.operator.as_str(),
            "LE" | "GE" | "LT" | "GT" | "EQ" | "NE"
        ) {
            return Err(format!(
                "configs[{index}].operator: '{}' is not LE, GE, LT, GT, EQ or NE",
                assertion.operator
            ));
        }
        if assertion.left_operand.trim().is_empty() || assertion.right_operand.trim().is_empty() {
            return Err(format!("configs[{index}]: operands must not be empty"));
        }
        let _ = &assertion.assert_message;
    }
    Ok(body)
}
