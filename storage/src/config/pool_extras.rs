//! A POOL config's extras: what a pool has beyond the bincode
//! [`PoolConfig`] (its topology keys today), kept as JSON so they can grow.
//!
//! Why apart from the config: a [`PoolConfig`] is stored and logged as
//! bincode, which is positional, so a field added to it would misread
//! every revision and log entry written before it. A pool with extras is
//! proposed as [`crate::Command::PutPoolWithExtras`] (gated: only once
//! every member's build knows it) and stored as
//! [`super::ConfigData::PoolWithExtras`] with the proposer's text exactly
//! as sent, so members of two builds store the same bytes and a field a
//! member's build does not know is kept, not dropped by re-encoding.
//!
//! Invariants: a stored text parses as [`PoolExtras`] (the applier refuses
//! one that does not); a pool without extras is stored as
//! [`super::ConfigData::Pool`], as before; topology keys are non-empty,
//! unique by key and by node label, ordered coarsest first (zone before
//! rack before host), at most 16, with `kubernetes.io/hostname` only last,
//! as KAI's `Topology` levels must be.

use serde::{Deserialize, Serialize};

/// Most topology levels a pool may have (KAI's `Topology` takes 16).
pub const TOPOLOGY_LEVELS_MAX: usize = 16;
/// The node label of a node's own name: only ever the finest level.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Longest extras text a pool may carry, in bytes.
pub const POOL_EXTRAS_BYTES_MAX: usize = 64 * 1024;

/// OSMO's pool `topology_keys[]`: a name workflows use for a level of the
/// cluster's topology, and the Kubernetes node label that level is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyKey {
    /// What a workflow's `resources.<r>.topology[].key` names (`rack`).
    pub key: String,
    /// The node label of the level (`topology.kubernetes.io/rack`).
    pub label: String,
}

/// What a pool has beyond its [`super::PoolConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolExtras {
    /// Coarsest first.
    pub topology_keys: Vec<TopologyKey>,
}

impl PoolExtras {
    pub fn is_empty(&self) -> bool {
        self.topology_keys.is_empty()
    }

    /// The JSON text a change carries.
    pub fn to_text(&self) -> String {
        // Strings only: always encodable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored or proposed text, checked.
    pub fn from_text(text: &str) -> Result<PoolExtras, String> {
        if text.len() > POOL_EXTRAS_BYTES_MAX {
            return Err(format!(
                "pool extras of {} bytes are larger than the limit of {POOL_EXTRAS_BYTES_MAX}",
                text.len()
            ));
        }
        let extras: PoolExtras = serde_json::from_str(text)
            .map_err(|error| format!("malformed pool extras: {error}"))?;
        check_topology_keys(&extras.topology_keys)?;
        Ok(extras)
    }

    /// The node label of topology key `key`, and its level (0 is the
    /// coarsest).
    pub fn topology_level(&self, key: &str) -> Option<(usize, &str)> {
        self.topology_keys
            .iter()
            .position(|k| k.key == key)
            .map(|level| (level, self.topology_keys[level].label.as_str()))
    }
}

/// Checks topology keys as a POOL body gives them; the message names the
/// field (`configs.topology_keys[1].label`).
pub fn check_topology_keys(keys: &[TopologyKey]) -> Result<(), String> {
    if keys.len() > TOPOLOGY_LEVELS_MAX {
        return Err(format!(
            "configs.topology_keys: {} keys, more than the {TOPOLOGY_LEVELS_MAX} levels KAI's Topology takes",
            keys.len()
        ));
    }
    for (index, topology_key) in keys.iter().enumerate() {
        if topology_key.label == HOSTNAME_LABEL && index + 1 != keys.len() {
            return Err(format!(
                "configs.topology_keys[{index}].label: {HOSTNAME_LABEL} can only be the last (finest) level"
            ));
        }
        let at = format!("configs.topology_keys[{index}]");
        if topology_key.key.trim().is_empty() {
            return Err(format!("{at}.key: must not be empty"));
        }
        if crate::labels::check_key(&topology_key.label).is_err() {
            return Err(format!(
                "{at}.label: '{}' is not a Kubernetes node label key (an optional DNS prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.')",
                topology_key.label
            ));
        }
        if let Some(earlier) = keys[..index].iter().position(|k| k.key == topology_key.key) {
            return Err(format!(
                "{at}.key: '{}' is already topology_keys[{earlier}]",
                topology_key.key
            ));
        }
        if let Some(earlier) = keys[..index]
            .iter()
            .position(|k| k.label == topology_key.label)
        {
            return Err(format!(
                "{at}.label: '{}' is already the label of topology_keys[{earlier}]",
                topology_key.label
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str, label: &str) -> TopologyKey {
        TopologyKey {
            key: key.into(),
            label: label.into(),
        }
    }

    #[test]
    fn a_text_with_fields_of_a_later_build_still_reads() {
        let text = r#"{"topology_keys":[{"key":"zone","label":"topology.kubernetes.io/zone"}],"default_variables":{"X":1}}"#;
        let extras = PoolExtras::from_text(text).expect("reads");
        assert_eq!(
            extras.topology_level("zone"),
            Some((0, "topology.kubernetes.io/zone"))
        );
        assert_eq!(extras.topology_level("rack"), None);
    }

    #[test]
    fn bad_topology_keys_are_refused_by_field() {
        for (keys, field) in [
            (vec![key("", "a")], "configs.topology_keys[0].key"),
            (
                vec![key("z", "bad label!")],
                "configs.topology_keys[0].label",
            ),
            (vec![key("z", "")], "configs.topology_keys[0].label"),
            (
                vec![key("z", "a"), key("z", "b")],
                "configs.topology_keys[1].key",
            ),
            (
                vec![key("z", "a"), key("r", "a")],
                "configs.topology_keys[1].label",
            ),
            (
                vec![key("h", "kubernetes.io/hostname"), key("r", "a")],
                "configs.topology_keys[0].label",
            ),
            (
                (0..17)
                    .map(|i| key(&format!("k{i}"), &format!("l{i}")))
                    .collect(),
                "configs.topology_keys:",
            ),
        ] {
            let error = check_topology_keys(&keys).unwrap_err();
            assert!(error.starts_with(field), "{error}");
        }
        assert!(check_topology_keys(&[
            key("zone", "topology.kubernetes.io/zone"),
            key("rack", "example.com/rack"),
            key("host", "kubernetes.io/hostname"),
        ])
        .is_ok());
    }
}
