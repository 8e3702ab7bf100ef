//! Kubernetes executor: runs each group as a gang of pods in one namespace.
//!
//! `executor` owns task tracking and the operator loop; `objects` builds a
//! group's Secrets, gang object, Pods and Service from its launch (with
//! `names` for names and labels, `scheduler` for the KAI, Volcano and
//! default variants, and `template` for pod templates); `status` maps pod
//! state to OSMO statuses; `logs` streams container logs; `nodes` turns
//! Nodes into inventory; `queues` keeps per-pool queues and priority
//! classes. `fake_api` (tests only) is a recording Kubernetes API server
//! over HTTPS that the tests point kube-rs at.

mod config;
mod error;
mod executor;
#[cfg(test)]
mod fake_api;
mod logs;
mod names;
mod nodes;
mod objects;
mod queues;
mod scheduler;
mod status;
mod template;
#[cfg(test)]
mod tests;

pub use config::{
    default_runtime_image, KubernetesConfig, PoolQueue, SchedulerSettings, SchedulerType,
    RUNTIME_IMAGE_ENV,
};
pub use error::KubeError;
pub use executor::KubernetesOperator;
pub use names::{task_host, task_host_of};
pub use nodes::{node_inventory, NodeInventory, NodeTaint};
