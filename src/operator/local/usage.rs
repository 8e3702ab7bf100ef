//! Watches the disk a task's output takes against its storage limit, as
//! kubelet watches a pod's ephemeral storage: the task's `/` and `/tmp` are
//! sized tmpfs (see `sandbox`), its output directory is on the host's disk
//! and measured here.
//!
//! Invariants: usage is the blocks files take (sparse files count what they
//! use), links are not followed; a measurement runs off the async runtime,
//! at most one at a time per task, every [`INTERVAL`].

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Time between two measurements.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Resolves, with the reason, once `dir` holds more than `limit` bytes;
/// never when `limit` is `None`.
pub async fn exceeded(dir: PathBuf, limit: Option<u64>) -> String {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(INTERVAL).await;
        let measured = dir.clone();
        let used = tokio::task::spawn_blocking(move || usage(&measured))
            .await
            .unwrap_or(0);
        if used > limit {
            return format!(
                "the task's output used {used} bytes of disk, more than its storage limit of {limit} bytes (evicted)"
            );
        }
    }
}

/// Bytes of disk the files under `dir` take. Blocking.
pub fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.blocks().saturating_mul(512))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_count_and_sparse_holes_do_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let before = usage(dir.path());
        std::fs::write(dir.path().join("data"), vec![7u8; 1 << 20]).unwrap_or_default();
        let sparse = std::fs::File::create(dir.path().join("sparse"));
        if let Ok(file) = sparse {
            file.set_len(1 << 30).unwrap_or_default();
        }
        let after = usage(dir.path());
        assert!(after - before >= 1 << 20, "{before} → {after}");
        assert!(after - before < 64 << 20, "{before} → {after}");
    }
}
