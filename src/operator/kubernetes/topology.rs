//! Topology-aware gang scheduling on KAI (OSMO's `resources.topology`):
//! the group's tasks arranged in a tree of topology domains, turned into
//! the PodGroup's `topologyConstraint` and `subGroups`, and the pool's
//! `Topology` object the constraints name.
//!
//! The tree: each task walks its requirements from the coarsest level
//! down; at each level it joins the domain named by the groups it has
//! walked so far (`z1`, then `z1-r1`), so tasks that share a group at a
//! level (under the same coarser groups) share that level's domain. The
//! levels every task shares (a chain of single children from the root)
//! become the PodGroup's own constraint, the finest one winning; below the
//! first branching, every domain becomes a subgroup: a leaf with its tasks'
//! count as `minMember`, an inner one with the count of every task below
//! it, and its children naming it as `parent`. A domain with one child and
//! no parent passes straight to its child (the finer domain lies within
//! it). This is OSMO's arrangement, so a workflow lands as it does there.
//!
//! Invariants: pure (no I/O); only tasks with requirements join a
//! subgroup; every subgroup's constraint names the pool's `Topology`
//! object; the PodGroup keeps `minMember` only when it has no subgroups
//! (KAI counts members per subgroup then).

use super::error::KubeError;
use super::names;
use crate::protocol::GroupLaunch;
use gantry_storage::extras::TopologyRequirement;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The label a pod carries to join its subgroup.
pub const LABEL_SUBGROUP: &str = "kai.scheduler/subgroup-name";

/// KAI's cluster-scoped `Topology`.
pub fn topology_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kai.scheduler", "v1alpha1", "Topology"),
        "topologies",
    )
}

/// One level constraint: the node label all members share (required) or
/// should share (preferred).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelConstraint {
    pub label: String,
    pub required: bool,
}

impl LevelConstraint {
    fn to_json(&self, topology: &str) -> Value {
        let field = if self.required {
            "requiredTopologyLevel"
        } else {
            "preferredTopologyLevel"
        };
        json!({ field: self.label, "topology": topology })
    }
}

/// One of the PodGroup's `subGroups`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubGroup {
    pub name: String,
    pub parent: Option<String>,
    pub min_member: usize,
    pub constraint: LevelConstraint,
}

/// What a group's topology adds to its gang.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyPlan {
    /// The `Topology` object's name.
    pub topology: String,
    /// Its levels: node labels, coarsest first.
    pub levels: Vec<String>,
    /// The constraint every task shares, if any.
    pub shared: Option<LevelConstraint>,
    pub subgroups: Vec<SubGroup>,
    /// Task name → the subgroup its pod joins.
    pub task_subgroups: BTreeMap<String, String>,
}

impl TopologyPlan {
    /// The PodGroup spec fields this plan sets, added to `spec`.
    pub fn apply_to_pod_group(&self, spec: &mut Map<String, Value>) {
        if let Some(shared) = &self.shared {
            spec.insert("topologyConstraint".into(), shared.to_json(&self.topology));
        }
        if !self.subgroups.is_empty() {
            spec.remove("minMember");
            let subgroups: Vec<Value> = self
                .subgroups
                .iter()
                .map(|subgroup| {
                    let mut value = json!({
                        "name": subgroup.name,
                        "minMember": subgroup.min_member,
                        "topologyConstraint": subgroup.constraint.to_json(&self.topology),
                    });
                    if let Some(parent) = &subgroup.parent {
                        value["parent"] = json!(parent);
                    }
                    value
                })
                .collect();
            spec.insert("subGroups".into(), Value::Array(subgroups));
        }
    }

    /// The pool's `Topology` object.
    pub fn topology_object(&self, namespace: &str, pool: &str) -> Result<DynamicObject, KubeError> {
        let resource = topology_resource();
        serde_json::from_value(json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {
                "name": self.topology,
                "labels": {
                    names::LABEL_NAMESPACE: names::label_value(namespace),
                    names::LABEL_POOL: names::label_value(pool),
                },
            },
            "spec": {"levels": self.levels.iter().map(|label| json!({"nodeLabel": label})).collect::<Vec<_>>()},
        }))
        .map_err(|error| KubeError::invalid("Topology", error))
    }
}

/// The levels of a `Topology` object as stored (for a changed pool, whose
/// object must be replaced: KAI's levels are immutable).
pub fn levels_of(object: &DynamicObject) -> Vec<String> {
    object.data["spec"]["levels"]
        .as_array()
        .map(|levels| {
            levels
                .iter()
                .filter_map(|level| level["nodeLabel"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A domain of the tree.
#[derive(Default)]
struct Node {
    /// `None` for the root.
    constraint: Option<LevelConstraint>,
    /// The namespaced name (`z1-r1`); empty for the root.
    name: String,
    children: Vec<usize>,
    tasks: Vec<String>,
}

/// The group's topology plan; `None` when no task asks for topology.
pub fn plan(group: &GroupLaunch, namespace: &str) -> Result<Option<TopologyPlan>, KubeError> {
    let Some(with_topology) = group
        .tasks
        .iter()
        .find(|task| !task.extras.topology.is_empty())
    else {
        return Ok(None);
    };
    let levels = with_topology.extras.topology_levels.clone();
    if levels.is_empty() {
        return Err(KubeError::Unschedulable(format!(
            "task '{}' asks for topology, but its launch names no topology levels",
            with_topology.key.task
        )));
    }
    let mut nodes = vec![Node::default()];
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for task in &group.tasks {
        let mut current = 0;
        for requirement in &task.extras.topology {
            check_requirement(&task.key.task, requirement, &levels)?;
            let name = if nodes[current].name.is_empty() {
                requirement.group.clone()
            } else {
                format!("{}-{}", nodes[current].name, requirement.group)
            };
            let next = match by_name.get(&name) {
                Some(&index) => index,
                None => {
                    nodes.push(Node {
                        constraint: Some(LevelConstraint {
                            label: requirement.label.clone(),
                            required: requirement.required,
                        }),
                        name: name.clone(),
                        ..Node::default()
                    });
                    let index = nodes.len() - 1;
                    nodes[current].children.push(index);
                    by_name.insert(name, index);
                    index
                }
            };
            current = next;
        }
        nodes[current].tasks.push(task.key.task.clone());
    }
    // The levels every task shares: a chain of single children.
    let mut shared = None;
    let mut branching = 0;
    while let [only] = nodes[branching].children[..] {
        shared.clone_from(&nodes[only].constraint);
        branching = only;
    }
    let mut plan = TopologyPlan {
        topology: names::pool_topology(namespace, &group.meta.pool),
        levels,
        shared,
        subgroups: Vec::new(),
        task_subgroups: BTreeMap::new(),
    };
    for &child in &nodes[branching].children {
        add_subgroups(&nodes, child, None, &mut plan);
    }
    Ok(Some(plan))
}

/// A requirement as the launch must carry it: a label that is one of the
/// levels.
fn check_requirement(
    task: &str,
    requirement: &TopologyRequirement,
    levels: &[String],
) -> Result<(), KubeError> {
    if requirement.label.is_empty() || !levels.contains(&requirement.label) {
        return Err(KubeError::Unschedulable(format!(
            "task '{task}': topology key '{}' has no level in the pool's topology",
            requirement.key
        )));
    }
    Ok(())
}

fn count_tasks(nodes: &[Node], index: usize) -> usize {
    nodes[index].tasks.len()
        + nodes[index]
            .children
            .iter()
            .map(|&child| count_tasks(nodes, child))
            .sum::<usize>()
}

fn add_subgroups(nodes: &[Node], index: usize, parent: Option<&str>, plan: &mut TopologyPlan) {
    let node = &nodes[index];
    let Some(constraint) = &node.constraint else {
        return;
    };
    // Pods name their subgroup in a label, so its name is a label value.
    let name = names::label_value(&node.name);
    if node.children.is_empty() {
        for task in &node.tasks {
            plan.task_subgroups.insert(task.clone(), name.clone());
        }
        plan.subgroups.push(SubGroup {
            name,
            parent: parent.map(str::to_string),
            min_member: node.tasks.len(),
            constraint: constraint.clone(),
        });
        return;
    }
    if node.children.len() == 1 && parent.is_none() {
        // The finer domain lies within this one: its constraint is enough.
        add_subgroups(nodes, node.children[0], None, plan);
        return;
    }
    plan.subgroups.push(SubGroup {
        name: name.clone(),
        parent: parent.map(str::to_string),
        min_member: count_tasks(nodes, index),
        constraint: constraint.clone(),
    });
    for &child in &node.children {
        add_subgroups(nodes, child, Some(&name), plan);
    }
}
