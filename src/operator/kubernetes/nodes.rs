//! Node inventory: what each node of the cluster offers, as the operator
//! reports it to the control plane (allocatable resources, GPUs, labels,
//! taints, readiness).
//!
//! Invariant: pure conversion from a `Node`; a quantity Kubernetes writes in
//! a form this module cannot read counts as zero rather than failing the
//! whole inventory (and is logged).

use crate::spec::quantity::parse_quantity;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label NVIDIA's GPU feature discovery puts on GPU nodes.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInventory {
    pub name: String,
    pub allocatable_cpu_millis: u64,
    pub allocatable_memory_bytes: u64,
    pub allocatable_ephemeral_storage_bytes: u64,
    pub gpu_count: u64,
    /// `nvidia.com/gpu.product`, e.g. `NVIDIA-H100-80GB-HBM3`.
    pub gpu_model: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<NodeTaint>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Every condition type → status (`Ready` → `True`, `MemoryPressure` → `False`, …).
    pub conditions: BTreeMap<String, String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTaint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

pub fn node_inventory(node: &Node) -> NodeInventory {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    let quantity = |key: &str| allocatable.and_then(|a| a.get(key));
    let bytes = |key: &str| {
        quantity(key).map_or(0, |q| {
            parse_quantity(&q.0).unwrap_or_else(|error| {
                tracing::warn!(node = %name, resource = key, %error, "unreadable allocatable quantity");
                0
            })
        })
    };
    let conditions: BTreeMap<String, String> = status
        .and_then(|s| s.conditions.as_ref())
        .map(|conditions| {
            conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let spec = node.spec.as_ref();
    NodeInventory {
        allocatable_cpu_millis: quantity("cpu").map_or(0, cpu_millis),
        allocatable_memory_bytes: bytes("memory"),
        allocatable_ephemeral_storage_bytes: bytes("ephemeral-storage"),
        gpu_count: quantity(GPU_RESOURCE).map_or(0, |q| q.0.trim().parse().unwrap_or(0)),
        gpu_model: labels.get(GPU_PRODUCT_LABEL).cloned(),
        ready: conditions.get("Ready").is_some_and(|s| s == "True"),
        conditions,
        labels,
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .map(|taints| {
                taints
                    .iter()
                    .map(|t| NodeTaint {
                        key: t.key.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        name,
    }
}

/// CPU quantity (`"4"`, `"3800m"`, `"1.5"`) in millicores; unreadable → 0.
fn cpu_millis(quantity: &Quantity) -> u64 {
    let text = quantity.0.trim();
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse().unwrap_or(0);
    }
    match text.split_once('.') {
        Some((whole, fraction)) => {
            let whole: u64 = whole.parse().unwrap_or(0);
            let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
            whole * 1000 + digits.parse::<u64>().unwrap_or(0)
        }
        None => text.parse::<u64>().map_or(0, |cores| cores * 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inventory_of_a_gpu_node() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "a"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "191500m", "memory": "2113424Ki", "ephemeral-storage": "1Ti", "nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]
            }
        }))
        .unwrap_or_default();
        let inventory = node_inventory(&node);
        assert_eq!(inventory.name, "gpu-1");
        assert_eq!(inventory.allocatable_cpu_millis, 191_500);
        assert_eq!(inventory.allocatable_memory_bytes, 2_113_424 * 1024);
        assert_eq!(inventory.allocatable_ephemeral_storage_bytes, 1 << 40);
        assert_eq!(inventory.gpu_count, 8);
        assert_eq!(
            inventory.gpu_model.as_deref(),
            Some("NVIDIA-H100-80GB-HBM3")
        );
        assert!(inventory.ready);
        assert_eq!(inventory.taints.len(), 1);
        assert_eq!(cpu_millis(&Quantity("1.5".into())), 1500);
        assert_eq!(cpu_millis(&Quantity("4".into())), 4000);
    }
}
