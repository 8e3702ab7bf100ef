//! Running a task in its image: `store` pulls images (an OCI registry
//! client, the user's registry credentials, insecure registries for
//! air-gapped sites) into a content-addressed cache and unpacks each once
//! (`layers`: whiteouts, digests checked as they are read); `run_config`
//! decides what runs, as Kubernetes does (command over entrypoint, args
//! over cmd, the image's environment, working directory and user); `root`
//! gives each run a writable root over the read-only unpacked image.

pub mod layers;
pub mod root;
pub mod run_config;
pub mod store;

pub use run_config::{ImageRunConfig, RunAs};
pub use store::{ImageStore, PulledImage};

/// `--task-root`: what a local task's root file system is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskRootMode {
    /// The task's image, pulled from its registry and cached
    Image,
    /// The host's /usr; the spec's image is not used
    Host,
}

impl TaskRootMode {
    /// The setting, with the image cache under `work_dir` in image mode.
    pub fn with(self, work_dir: &std::path::Path, registries: &RegistryArgs) -> TaskRoot {
        match self {
            TaskRootMode::Host => TaskRoot::Host,
            TaskRootMode::Image => TaskRoot::Image {
                cache_dir: work_dir.join("images"),
                insecure_registries: registries.insecure_registries.clone(),
                mirrors: registries.registry_mirrors.clone(),
                cache_max_bytes: registries.image_cache_max,
            },
        }
    }
}

/// The image flags `gantry dev` and `gantry operator` share.
#[derive(clap::Args, Clone, Debug)]
pub struct RegistryArgs {
    /// A registry (HOST:PORT) reached over plain HTTP or unverified TLS
    /// (repeatable), as Docker's setting of the same name
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// REGISTRY=MIRROR (repeatable): images of REGISTRY (e.g. docker.io)
    /// are asked of MIRROR first (e.g. registry.lab:5000), for sites
    /// without the Internet
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR", value_parser = parse_mirror)]
    pub registry_mirrors: Vec<(String, String)>,
    /// The image cache's size limit (e.g. 50Gi): past it, the least
    /// recently used images no task is using are evicted
    #[arg(long, value_name = "SIZE", default_value = "50Gi", value_parser = parse_cache_size)]
    pub image_cache_max: u64,
}

/// `REGISTRY=MIRROR`.
fn parse_mirror(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((registry, mirror)) if !registry.trim().is_empty() && !mirror.trim().is_empty() => {
            Ok((registry.trim().to_string(), mirror.trim().to_string()))
        }
        _ => Err(format!(
            "'{text}' is not REGISTRY=MIRROR (e.g. docker.io=registry.lab:5000)"
        )),
    }
}

/// `--image-cache-max`: a size as Kubernetes writes quantities (`50Gi`).
pub fn parse_cache_size(text: &str) -> Result<u64, String> {
    crate::spec::quantity::parse_quantity(text).and_then(|bytes| {
        if bytes == 0 {
            Err("the image cache needs room for at least one image".to_string())
        } else {
            Ok(bytes)
        }
    })
}

/// Where a local task's root filesystem comes from (`--task-root`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskRoot {
    /// The host's `/usr`, as before images: the spec's `image` is not used.
    Host,
    /// The task's image, pulled into the cache at `cache_dir`.
    Image {
        cache_dir: std::path::PathBuf,
        /// `HOST:PORT` of registries reached over plain HTTP or unverified TLS.
        insecure_registries: Vec<String>,
        /// (registry, mirror) pairs: a registry's images are asked of its
        /// mirrors first.
        mirrors: Vec<(String, String)>,
        /// Past this many bytes the least recently used images no run
        /// holds are evicted.
        cache_max_bytes: u64,
    },
}
