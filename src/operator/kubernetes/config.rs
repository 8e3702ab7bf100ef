//! Configuration of the Kubernetes executor: the client, the namespace, the
//! backend's scheduler settings and the runtime image.
//!
//! Invariant: everything the executor decides per backend (scheduler, queue
//! names, runtime image) is here; per-task placement comes in the launch, and
//! so do the backend's admin-set scheduler settings, which win over
//! [`KubernetesConfig::scheduler`] for that group.

use super::error::KubeError;
use crate::protocol::LaunchScheduler;

/// OSMO's `scheduler_settings.scheduler_type`: the one the BACKEND config
/// stores and launches carry.
pub use gantry_storage::SchedulerType;

/// A backend's `scheduler_settings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub scheduler_type: SchedulerType,
    /// The pods' `schedulerName`.
    pub scheduler_name: String,
    /// Seconds a gang may wait to be scheduled as a whole (Volcano and
    /// co-scheduling PodGroups); KAI ignores it, as OSMO does.
    pub scheduler_timeout_seconds: u64,
    /// With `default`: the co-scheduling plugin of scheduler-plugins is
    /// installed, so multi-task groups get a `scheduling.x-k8s.io` PodGroup.
    pub coscheduling: bool,
}

impl SchedulerSettings {
    /// OSMO's defaults for a scheduler type.
    pub fn for_type(scheduler_type: SchedulerType) -> SchedulerSettings {
        let scheduler_name = match scheduler_type {
            SchedulerType::Kai => "kai-scheduler",
            SchedulerType::Default => "default-scheduler",
            SchedulerType::Volcano => "volcano",
        };
        SchedulerSettings {
            scheduler_type,
            scheduler_name: scheduler_name.to_string(),
            scheduler_timeout_seconds: 30,
            coscheduling: false,
        }
    }
}

impl SchedulerSettings {
    /// The settings a launch carries from its backend's config; what the
    /// launch cannot say (co-scheduling) stays as this executor has it.
    pub fn from_launch(launch: &LaunchScheduler, coscheduling: bool) -> SchedulerSettings {
        let mut settings = SchedulerSettings::for_type(launch.scheduler_type);
        if !launch.scheduler_name.trim().is_empty() {
            settings.scheduler_name = launch.scheduler_name.clone();
        }
        settings.scheduler_timeout_seconds = launch.scheduler_timeout_seconds;
        settings.coscheduling = coscheduling;
        settings
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings::for_type(SchedulerType::Kai)
    }
}

pub use crate::protocol::PoolQueue;

#[derive(Clone)]
pub struct KubernetesConfig {
    pub client: kube::Client,
    /// Where every object of this backend lives.
    pub namespace: String,
    /// Backend name announced in `Hello`.
    pub backend: String,
    /// Used for groups whose launch carries no scheduler settings (the
    /// backend has no BACKEND config, or the server is older).
    pub scheduler: SchedulerSettings,
    /// Image holding the `gantry` binary, run as the init container that
    /// installs the task runtime into each pod.
    pub runtime_image: String,
}

impl KubernetesConfig {
    /// A configuration from the environment: in a pod, its service account;
    /// elsewhere `KUBECONFIG` or `~/.kube/config`. KAI scheduling and the
    /// runtime image from [`default_runtime_image`].
    pub async fn infer(backend: &str, namespace: &str) -> Result<KubernetesConfig, KubeError> {
        let config = kube::Config::infer()
            .await
            .map_err(|error| KubeError::Config(error.to_string()))?;
        let client =
            kube::Client::try_from(config).map_err(|error| KubeError::Config(error.to_string()))?;
        Ok(KubernetesConfig {
            client,
            namespace: namespace.to_string(),
            backend: backend.to_string(),
            scheduler: SchedulerSettings::default(),
            runtime_image: default_runtime_image(),
        })
    }
}

/// Environment variable naming the runtime image (the operator's manifests
/// set it to the image the operator itself runs from).
pub const RUNTIME_IMAGE_ENV: &str = "GANTRY_RUNTIME_IMAGE";

/// `$GANTRY_RUNTIME_IMAGE`, else `gantry:<this version>`.
pub fn default_runtime_image() -> String {
    std::env::var(RUNTIME_IMAGE_ENV)
        .ok()
        .filter(|image| !image.trim().is_empty())
        .unwrap_or_else(|| format!("gantry:{}", env!("CARGO_PKG_VERSION")))
}
