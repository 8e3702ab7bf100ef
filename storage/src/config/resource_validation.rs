//! The RESOURCE_VALIDATION config: a named list of OSMO
//! `ResourceAssertion`s (`left_operand <operator> right_operand`, else
//! `assert_message`) that pools and platforms apply to task resources.
//!
//! Owns the check of a body and its typed reading ([`assertions`]). The
//! list is stored as the JSON text given ([`crate::ConfigData::Json`]) and
//! shown as stored; the binary's API evaluates the assertions at submit
//! (their operands are Jinja templates, which this crate does not render).
//!
//! Invariants: every assertion has exactly the four fields, an operator of
//! LE, GE, LT, GT, EQ or NE, and operands that are not blank; errors name
//! the assertion (`configs[<index>]`). No field is a secret.

use super::typed;
use serde::Deserialize;
use serde_json::Value;

/// OSMO's `ResourceAssertion`: `left_operand <operator> right_operand`,
/// else `assert_message`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAssertion {
    /// LE, GE, LT, GT, EQ or NE.
    pub operator: String,
    pub left_operand: String,
    pub right_operand: String,
    pub assert_message: String,
}

type AssertionBody = ResourceAssertion;

/// The assertions of a stored RESOURCE_VALIDATION body.
pub fn assertions(data: &crate::ConfigData) -> Result<Vec<ResourceAssertion>, String> {
    match data {
        crate::ConfigData::Json(text) => serde_json::from_str(text)
            .map_err(|error| format!("the stored rules do not read back: {error}")),
        _ => Err("not a RESOURCE_VALIDATION body".into()),
    }
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
