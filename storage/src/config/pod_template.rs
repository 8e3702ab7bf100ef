//! The POD_TEMPLATE config: part of a Kubernetes Pod manifest, named, that
//! pools and platforms apply to their tasks (`common_pod_template`,
//! `override_pod_template`).
//!
//! Owns the check of a body. The template is stored as the JSON text given
//! ([`crate::ConfigData::Json`]) and shown as stored; merging templates
//! into a pod (OSMO's order, its variables) belongs to the dispatcher and
//! the Kubernetes executor.
//!
//! Invariants: a template is a JSON object; a pool may name only templates
//! that exist when the pool is stored. No field is a secret.

use serde_json::Value;

/// A POD_TEMPLATE body, checked: what is stored.
pub fn parse(body: Value) -> Result<Value, String> {
    if !body.is_object() {
        return Err(
            "configs: a pod template must be a JSON object (part of a Pod manifest)".into(),
        );
    }
    Ok(body)
}
