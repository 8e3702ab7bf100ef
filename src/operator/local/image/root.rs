//! A run's root filesystem in image mode: an overlay whose lower layer is
//! the image's unpacked root (shared, never written) and whose upper layer
//! is the run's own directory, mounted by the operator (root) before the
//! sandbox starts and unmounted before the run's directory goes.
//!
//! Invariants: the overlay is mounted `nodev` and `nosuid`; paths that
//! overlayfs options cannot carry (`,`, `:`, `=`) are refused rather than
//! mangled; unmounting is lazy (a process still inside cannot keep the
//! run's directory from going).

use std::path::{Path, PathBuf};

/// The mounted root of one run.
#[derive(Debug)]
pub struct RunRoot {
    pub merged: PathBuf,
}

fn option_safe(path: &Path) -> Result<&str, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains([',', ':', '=']) {
        return Err(format!(
            "{text}: an overlay cannot be mounted on a path holding ',', ':' or '='; choose another --work-dir"
        ));
    }
    Ok(text)
}

/// Mounts `lower` (read-only) under `dir/upper` as `dir/root`. Blocking.
pub fn mount(lower: &Path, dir: &Path) -> Result<RunRoot, String> {
    let (upper, work, merged) = (
        dir.join("upper"),
        dir.join("overlay-work"),
        dir.join("root"),
    );
    for made in [&upper, &work, &merged] {
        std::fs::create_dir_all(made).map_err(|e| format!("{}: {e}", made.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        option_safe(lower)?,
        option_safe(&upper)?,
        option_safe(&work)?
    );
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(options.as_str()),
    )
    .map_err(|errno| {
        format!(
            "mounting the task's root (overlay over {}): {errno}{}",
            lower.display(),
            if nix::unistd::geteuid().is_root() {
                ""
            } else {
                " (image mode needs the operator to run as root)"
            }
        )
    })?;
    Ok(RunRoot { merged })
}

/// Unmounts the run root under `dir`, if one is mounted. Blocking.
pub fn unmount(dir: &Path) {
    let merged = dir.join("root");
    if merged.is_dir() {
        // EINVAL: nothing mounted there (host mode, or already gone).
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Makes every mount destination of the sandbox safe to create under the
/// run's root before bubblewrap sets it up: each directory on the way is a
/// real directory (made when missing), never a link, and a link where the
/// destination itself goes is removed. An image's links could otherwise
/// lead bubblewrap, which still sees the host while it builds the sandbox,
/// to create a mount point outside the image. Blocking.
pub fn prepare_mount_points(merged: &Path, destinations: &[&str]) -> Result<(), String> {
    for destination in destinations {
        let parts: Vec<&str> = destination
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(format!("mount point {destination} leaves the root"));
        }
        let mut at = merged.to_path_buf();
        for (index, part) in parts.iter().enumerate() {
            at.push(part);
            let last = index + 1 == parts.len();
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    std::fs::remove_file(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                    if !last {
                        std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                    }
                }
                Ok(meta) if !last && !meta.is_dir() => {
                    return Err(format!(
                        "mount point {destination}: /{} in the image is not a directory",
                        parts[..=index].join("/")
                    ))
                }
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if !last {
                        std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                    }
                }
                Err(error) => return Err(format!("{}: {error}", at.display())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_on_the_way_to_a_mount_point_are_replaced() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let merged = root.path();
        std::os::unix::fs::symlink(outside.path(), merged.join("osmo")).unwrap();
        std::fs::create_dir(merged.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", merged.join("etc/hosts")).unwrap();
        prepare_mount_points(merged, &["/osmo/data/output", "/etc/hosts", "/proc"]).unwrap();
        assert!(merged.join("osmo/data").is_dir());
        assert!(!std::fs::symlink_metadata(merged.join("osmo"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            std::fs::symlink_metadata(merged.join("etc/hosts")).is_err(),
            "link removed"
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing outside"
        );
        std::fs::write(merged.join("file"), b"").unwrap();
        assert!(prepare_mount_points(merged, &["/file/x"]).is_err());
        assert!(prepare_mount_points(merged, &["/a/../../x"]).is_err());
    }
}
