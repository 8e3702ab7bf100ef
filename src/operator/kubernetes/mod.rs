//! Kubernetes executor: runs each group as a gang of pods in one namespace.
//!
//! `executor` is the operator: its job loop and public API, with its parts
//! below it (`tracking` of tasks and groups, `group_jobs` for CreateGroup and
//! CancelGroup, `group_objects` creating and deleting a group's objects by
//! label, `pod_watch` turning pod changes into reports); `manifests` builds a
//! group's Secrets, gang object, Pods and Service from its launch (with
//! `names` for names and labels, `scheduler` for the KAI, Volcano and
//! default variants, and `template` for pod templates); `status` maps pod
//! state to OSMO statuses; `pod_logs` streams container logs; `nodes` turns
//! Nodes into inventory; `queues` keeps per-pool queues and priority
//! classes; `retry` tries transient API failures again; `sessions` opens exec and port-forward sessions through the
//! API server's streaming subresources. `fake_api` (tests only) is a
//! recording Kubernetes API server over HTTPS that the tests point kube-rs
//! at; it speaks the exec and port-forward WebSocket protocols too.

mod config;
mod error;
mod executor;
#[cfg(test)]
mod fake_api;
mod manifests;
mod names;
mod nodes;
mod pod_logs;
mod queues;
mod retry;
mod scheduler;
mod sessions;
mod status;
pub mod task_runtime;
mod template;
#[cfg(test)]
mod tests;
mod topology;

pub use config::{
    default_runtime_image, KubernetesConfig, PoolQueue, SchedulerSettings, SchedulerType,
    RUNTIME_IMAGE_ENV,
};
pub use error::KubeError;
pub use executor::KubernetesOperator;
pub use names::task_host;
pub use nodes::{node_inventory, NodeInventory, NodeTaint};
