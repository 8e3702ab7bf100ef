//! This host as a node: what the local executor reports in its heartbeats.
//!
//! Invariant: reading the inventory never fails; a value that cannot be read
//! is reported as 0 (and logged), so a heartbeat always goes out.

use gantry_storage::NodeInventory;
use std::collections::BTreeMap;
use std::path::Path;

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn memory_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// Size of the filesystem holding `dir`, in bytes.
fn disk_bytes(dir: &Path) -> u64 {
    if let Err(error) = std::fs::create_dir_all(dir) {
        tracing::warn!(%error, dir = %dir.display(), "cannot create the work directory");
    }
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stats) => stats.blocks().saturating_mul(stats.fragment_size()),
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), "statvfs failed");
            0
        }
    }
}

fn hostname(fallback: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// Kubernetes' name for this machine's architecture.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// This host: CPUs this process may use, total memory, the work directory's
/// filesystem size, and the GPUs its CDI specs describe (`gpu`).
pub fn this_host(fallback_name: &str, work_dir: &Path, gpus: u64) -> NodeInventory {
    let name = hostname(fallback_name);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    NodeInventory {
        name,
        cpu_millis: cpus * 1000,
        memory_bytes: memory_bytes(),
        ephemeral_storage_bytes: disk_bytes(work_dir),
        gpu_count: gpus,
        gpu_model: String::new(),
        labels,
        taints: Vec::new(),
        conditions: vec!["Ready".to_string()],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_host_has_cpus_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let node = super::this_host("fallback", &dir.path().join("work"), 0);
        assert!(node.cpu_millis >= 1000, "{node:?}");
        assert!(node.memory_bytes > 64 << 20, "{node:?}");
        assert!(node.ephemeral_storage_bytes > 0, "{node:?}");
        assert_eq!(node.gpu_count, 0);
        assert_eq!(node.labels["kubernetes.io/hostname"], node.name);
        assert_eq!(node.conditions, vec!["Ready".to_string()]);
    }
}
