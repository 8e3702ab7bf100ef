//! GPUs for local tasks, as the Container Device Interface describes them:
//! the CDI specs the NVIDIA container toolkit writes (`nvidia-ctk cdi
//! generate`, in `/etc/cdi` or `/var/run/cdi`) name each GPU of kind
//! `nvidia.com/gpu` with the edits a container needs (its device nodes, the
//! driver's libraries and tools, environment); a task asking `gpu: N` gets
//! N devices of its own, with the spec-wide edits and each device's.
//!
//! Invariants: a GPU is held by one task at a time (a lease returns it
//! when the run ends); only named devices are handed out (never the
//! aggregate `all`); device nodes and mounts are bound read-only apart from
//! the nodes themselves (a task can never write the host's driver files);
//! CDI hooks (ldcache updates, symlinks) are not run, and a plan says so; a
//! spec that does not read is skipped with a warning, never fatal.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The CDI kind of NVIDIA's GPUs.
pub const GPU_KIND: &str = "nvidia.com/gpu";
/// Where CDI specs live (static, then generated at boot).
pub const CDI_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// The path in the container.
    pub path: String,
    /// The host's path, when it differs.
    #[serde(default)]
    pub host_path: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One CDI spec file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

impl Spec {
    /// A spec's text, JSON or YAML (CDI allows both).
    pub fn parse(text: &str) -> Result<Spec, String> {
        serde_yaml_ng::from_str(text).map_err(|error| error.to_string())
    }
}

/// What a run with some GPUs needs: (host, sandbox) device nodes to bind
/// as devices, (host, sandbox) files and directories to bind read-only,
/// and variables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuPlan {
    pub devices: Vec<(String, String)>,
    pub binds: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    /// The hooks the spec asks for and this executor does not run.
    pub hooks_skipped: usize,
}

/// The plan for the devices `names` of `spec`: the spec-wide edits, then
/// each device's, without repeats.
pub fn plan(spec: &Spec, names: &[String]) -> GpuPlan {
    let mut plan = GpuPlan::default();
    let mut edits = vec![&spec.container_edits];
    edits.extend(
        spec.devices
            .iter()
            .filter(|device| names.contains(&device.name))
            .map(|device| &device.container_edits),
    );
    for edit in edits {
        for node in &edit.device_nodes {
            let host = node.host_path.clone().unwrap_or_else(|| node.path.clone());
            let pair = (host, node.path.clone());
            if !plan.devices.contains(&pair) {
                plan.devices.push(pair);
            }
        }
        for mount in &edit.mounts {
            let pair = (mount.host_path.clone(), mount.container_path.clone());
            if !plan.binds.contains(&pair) {
                plan.binds.push(pair);
            }
        }
        for entry in &edit.env {
            if let Some((name, value)) = entry.split_once('=') {
                plan.env.retain(|(known, _)| known != name);
                plan.env.push((name.to_string(), value.to_string()));
            }
        }
        plan.hooks_skipped += edit.hooks.len();
    }
    plan
}

/// This host's GPUs and which are free.
#[derive(Debug)]
pub struct Gpus {
    spec: Option<Spec>,
    free: Arc<Mutex<BTreeSet<String>>>,
}

/// A run's GPUs, returned when dropped.
#[derive(Debug)]
pub struct GpuLease {
    pub names: Vec<String>,
    pub plan: GpuPlan,
    free: Arc<Mutex<BTreeSet<String>>>,
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.extend(self.names.drain(..));
    }
}

/// The devices a spec hands out one by one: every named device but `all`.
fn handed_out(spec: &Spec) -> BTreeSet<String> {
    spec.devices
        .iter()
        .map(|device| device.name.clone())
        .filter(|name| name != "all")
        // nvidia-ctk names each GPU twice (index and UUID): by index when
        // it does, so one GPU is never handed out twice.
        .filter(|name| {
            let by_index = spec.devices.iter().any(|d| d.name.parse::<u32>().is_ok());
            !by_index || name.parse::<u32>().is_ok()
        })
        .collect()
}

impl Gpus {
    /// The NVIDIA GPUs the CDI specs in `dirs` describe (none without one).
    pub fn discover(dirs: &[PathBuf]) -> Gpus {
        let mut found: Option<Spec> = None;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                let readable = matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("json" | "yaml" | "yml")
                );
                if !readable {
                    continue;
                }
                match std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Spec::parse(&t))
                {
                    Ok(spec) if spec.kind == GPU_KIND && found.is_none() => found = Some(spec),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "a CDI spec that does not read is skipped")
                    }
                }
            }
        }
        Gpus::from_spec(found)
    }

    pub fn from_spec(spec: Option<Spec>) -> Gpus {
        let free = spec.as_ref().map(handed_out).unwrap_or_default();
        Gpus {
            spec,
            free: Arc::new(Mutex::new(free)),
        }
    }

    /// How many GPUs this host hands out.
    pub fn count(&self) -> u64 {
        self.spec
            .as_ref()
            .map_or(0, |spec| handed_out(spec).len() as u64)
    }

    /// `count` GPUs of this host's free ones, held until the lease drops.
    pub fn allocate(&self, count: u64) -> Result<GpuLease, String> {
        let spec = self.spec.as_ref().ok_or_else(|| {
            format!("the task asks for {count} GPU(s) and this host describes none (no CDI spec of kind {GPU_KIND} in /etc/cdi or /var/run/cdi: `nvidia-ctk cdi generate`)")
        })?;
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = usize::try_from(count).unwrap_or(usize::MAX);
        if free.len() < wanted {
            return Err(format!(
                "the task asks for {count} GPU(s) and {} of this host's {} are free",
                free.len(),
                self.count()
            ));
        }
        let names: Vec<String> = free.iter().take(wanted).cloned().collect();
        for name in &names {
            free.remove(name);
        }
        Ok(GpuLease {
            plan: plan(spec, &names),
            names,
            free: self.free.clone(),
        })
    }
}

/// Whether `path` exists on this host (a plan's nodes and mounts are
/// checked before a run binds them).
pub fn missing_on_host(plan: &GpuPlan) -> Option<String> {
    plan.devices
        .iter()
        .chain(&plan.binds)
        .map(|(host, _)| host)
        .find(|host| !Path::new(host).exists())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as `nvidia-ctk cdi generate` writes it for a host with two
    /// GPUs (index and UUID names, an `all` device, driver libraries and
    /// a hook).
    const RECORDED: &str = r#"
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: GPU-9f2b7a51-5c1e-3d2a-88a2-0d6e1b4f7a90
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidia-modeset
  - path: /dev/nvidia-uvm
  - path: /dev/nvidia-uvm-tools
  - path: /dev/nvidiactl
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    options: [ro, nosuid, nodev, bind]
  - hostPath: /usr/bin/nvidia-smi
    containerPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, bind]
  - hostPath: /run/nvidia-persistenced/socket
    containerPath: /run/nvidia-persistenced/socket
    options: [ro, nosuid, nodev, bind, noexec]
"#;

    fn recorded() -> Spec {
        Spec::parse(RECORDED).unwrap()
    }

    #[test]
    fn a_recorded_spec_reads_and_counts_each_gpu_once() {
        let spec = recorded();
        assert_eq!(spec.kind, GPU_KIND);
        let gpus = Gpus::from_spec(Some(spec));
        assert_eq!(gpus.count(), 2, "by index, never `all` or the UUID twins");
        let json =
            serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(RECORDED).unwrap())
                .unwrap();
        assert_eq!(
            Spec::parse(&json).unwrap(),
            recorded(),
            "JSON reads the same"
        );
    }

    #[test]
    fn tasks_never_share_a_gpu_and_leases_return_them() {
        let gpus = Gpus::from_spec(Some(recorded()));
        let first = gpus.allocate(1).unwrap();
        let second = gpus.allocate(1).unwrap();
        assert_ne!(first.names, second.names);
        let error = gpus.allocate(1).unwrap_err();
        assert!(error.contains("0 of this host's 2 are free"), "{error}");
        drop(first);
        let again = gpus.allocate(1).unwrap();
        assert_eq!(again.names, vec!["0".to_string()]);
        assert!(gpus.allocate(2).is_err());
        assert!(Gpus::from_spec(None)
            .allocate(1)
            .unwrap_err()
            .contains("nvidia-ctk cdi generate"));
    }

    #[test]
    fn a_plan_binds_the_devices_libraries_and_environment() {
        let plan = plan(&recorded(), &["1".to_string()]);
        let inside: Vec<&str> = plan
            .devices
            .iter()
            .map(|(_, inside)| inside.as_str())
            .collect();
        assert!(
            inside.contains(&"/dev/nvidia1") && inside.contains(&"/dev/nvidiactl"),
            "{inside:?}"
        );
        assert!(
            !inside.contains(&"/dev/nvidia0"),
            "only the leased GPU: {inside:?}"
        );
        assert!(plan
            .binds
            .iter()
            .any(|(host, _)| host == "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"));
        assert_eq!(
            plan.env,
            vec![("NVIDIA_VISIBLE_DEVICES".to_string(), "void".to_string())]
        );
        assert_eq!(plan.hooks_skipped, 1);
    }

    #[test]
    fn specs_are_found_in_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvidia.yaml"), RECORDED).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let gpus = Gpus::discover(&[dir.path().to_path_buf(), PathBuf::from("/nonexistent")]);
        assert_eq!(gpus.count(), 2);
        assert_eq!(Gpus::discover(&[]).count(), 0);
    }
}
