//! Outbound network for a group's namespace, where an administrator allows
//! it: `pasta` (of the passt project, Podman's user-mode network) gives the
//! namespace an interface whose connections leave from the host's own
//! sockets, as any program of the host would open them.
//!
//! Invariants:
//! - Outbound only: no port of the host is forwarded into the namespace and
//!   none of the namespace's to the host (`-t/-u/-T/-U none`), and the
//!   gateway address is not mapped to the host (`--no-map-gw`), so the
//!   host's loopback (where `gantry dev` and other local services listen)
//!   stays out of reach. What the host reaches on its network, its own
//!   non-loopback addresses included, the tasks reach too.
//! - The namespace is ready when `pasta` has daemonized (it configures the
//!   interface first); the daemon lives exactly as long as the [`Outbound`]
//!   handle, which kills it when dropped.
//! - Asked for and impossible (no `pasta`, no privilege) is an error the
//!   group's tasks fail with, never a namespace quietly left without it.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Command;

/// The annotation of a pod template (the POOL's or the platform's) that
/// allows a group outbound network on the local executor. On Kubernetes it
/// is an annotation like any other: pods have outbound network there.
pub const OUTBOUND_ANNOTATION: &str = "gantry.io/outbound-network";

/// The `pasta` daemon serving one group namespace.
#[derive(Debug)]
pub struct Outbound {
    pid: Pid,
}

/// Attaches `pasta` to the namespace open as `namespace_fd` in this process.
/// Blocking: returns once the namespace's interface is configured.
pub fn attach(namespace_fd: i32, scratch: &Path) -> Result<Outbound, String> {
    attach_with(Path::new("pasta"), namespace_fd, scratch)
}

fn attach_with(program: &Path, namespace_fd: i32, scratch: &Path) -> Result<Outbound, String> {
    let stem = format!("pasta-{}-{namespace_fd}", std::process::id());
    let pid_file = scratch.join(format!("{stem}.pid"));
    // pasta opens the namespace by path once it has dropped its privileges,
    // which `/proc/PID/fd/N` needs: a bind mount of it (what `ip netns`
    // makes) opens without them. Unmounted once pasta is in.
    let namespace = scratch.join(format!("{stem}.netns"));
    std::fs::File::create(&namespace)
        .map_err(|error| format!("creating {}: {error}", namespace.display()))?;
    let bound = nix::mount::mount(
        Some(Path::new(&format!("/proc/self/fd/{namespace_fd}"))),
        &namespace,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
    if let Err(errno) = bound {
        let _ = std::fs::remove_file(&namespace);
        return Err(format!("binding the namespace to a file: {errno}"));
    }
    let started = run_pasta(program, &namespace, &pid_file);
    let _ = nix::mount::umount2(&namespace, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&namespace);
    started
}

fn run_pasta(program: &Path, namespace: &Path, pid_file: &Path) -> Result<Outbound, String> {
    let mut command = Command::new(program);
    command.args([
        "--config-net",
        "--quiet",
        "--no-map-gw",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        // The namespace's file goes once pasta is in; pasta stays.
        "--no-netns-quit",
    ]);
    // As root, pasta would switch to `nobody`, who may not enter the
    // namespace; the operator is root exactly when it can make namespaces.
    if nix::unistd::geteuid().is_root() {
        command.args(["--runas", "0:0"]);
    }
    let output = command
        .arg("--pid")
        .arg(pid_file)
        .arg("--netns")
        .arg(namespace)
        .output()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => "outbound network needs `pasta` on the operator's \
                 host (Debian and Ubuntu: the `passt` package)"
                .to_string(),
            _ => format!("starting pasta: {error}"),
        })?;
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let _ = std::fs::remove_file(pid_file);
    match (output.status.success(), pid) {
        (true, Some(pid)) => Ok(Outbound {
            pid: Pid::from_raw(pid),
        }),
        (true, None) => Err("pasta started but wrote no process ID".to_string()),
        (false, _) => Err(format!(
            "pasta failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .filter(|line| !line.contains("syslog"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_pasta_the_error_says_what_to_install() {
        let scratch = tempfile::tempdir().unwrap();
        let missing = scratch.path().join("no-pasta-here");
        let namespace = scratch.path().join("netns");
        let pid_file = scratch.path().join("pid");
        let error = run_pasta(&missing, &namespace, &pid_file).unwrap_err();
        assert!(error.contains("needs `pasta`"), "{error}");
        assert!(error.contains("passt"), "{error}");
    }
}
