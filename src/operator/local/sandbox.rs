//! Builds the bubblewrap command line for one task, and finds bubblewrap.
//!
//! Invariants: the task runs in a new user namespace as uid/gid 1000 with
//! every capability dropped and no way to make further user namespaces,
//! under the seccomp filters of `seccomp` (bubblewrap sets no-new-privs
//! before loading them). The sandbox root is a fresh tmpfs; from the host
//! only `/usr` (read-only), the root-level links or directories that point
//! into it, the task's generated `/etc` with the few host entries of
//! `etc` (read-only), its output dir (writable), its inputs and files
//! (read-only) are visible. `/` and `/tmp` are tmpfs sized by the task's
//! storage when it has one. The environment is cleared and rebuilt from the
//! launch, so nothing of the executor's own environment leaks in. The
//! network is the group's namespace (joined before bubblewrap starts), a
//! namespace of the task's own, or the host's when an administrator's pod
//! template asks for it (see `netns`).
//!
//! In image mode ([`SandboxRoot::Image`]) the root is instead the run's
//! writable overlay over the task's image (`image::root`), with the image's
//! own `/etc` and the generated files bound over it one by one; the task
//! runs as the image's user (mapped in the same user namespace, without
//! capabilities) in the image's working directory.

use gantry_storage::TaskKey;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::etc::{TASK_GID, TASK_UID};

/// Where the task's output directory appears inside the sandbox.
pub const SANDBOX_OUTPUT: &str = "/osmo/data/output";
/// Input N appears at `SANDBOX_INPUTS/N`.
pub const SANDBOX_INPUTS: &str = "/osmo/data/input";

const MISSING_BWRAP: &str = "bubblewrap (bwrap) is not installed; install it with `apt-get install bubblewrap` (Debian/Ubuntu) — tasks will not start without a sandbox";

/// Root-level entries that distributions make links into `/usr` (merged
/// `/usr`) or keep as real directories; mirrored only when the host has them.
const ROOT_LINKS: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/// The oldest bubblewrap with every option the sandbox uses
/// (`--disable-userns` came last, in 0.8.0).
const BWRAP_MIN: (u32, u32) = (0, 8);

/// The resolved bubblewrap binary, or the message every task fails with.
pub fn locate_bwrap(configured: Option<&Path>) -> Result<PathBuf, String> {
    let found = match configured {
        Some(path) => path.is_file().then(|| path.to_path_buf()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("bwrap"))
                .find(|candidate| candidate.is_file())
        }),
    };
    let bwrap = found.ok_or_else(|| MISSING_BWRAP.to_string())?;
    let output = std::process::Command::new(&bwrap)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {} --version: {e}", bwrap.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match version_of(&text) {
        Some(version) if version >= BWRAP_MIN => Ok(bwrap),
        _ => Err(format!(
            "{} is {:?}; the sandbox needs bubblewrap {}.{} or newer",
            bwrap.display(),
            text.trim(),
            BWRAP_MIN.0,
            BWRAP_MIN.1
        )),
    }
}

/// (major, minor) of `bubblewrap X.Y.Z`.
fn version_of(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Everything the command line depends on; host paths are already prepared.
#[derive(Debug)]
pub struct SandboxSpec<'a> {
    pub key: &'a TaskKey,
    pub output_dir: &'a Path,
    /// Host directory for input N, in order.
    pub inputs: &'a [PathBuf],
    /// (host file, absolute path inside the sandbox).
    pub files: &'a [(PathBuf, String)],
    pub environment: &'a BTreeMap<String, String>,
    /// Command followed by its arguments.
    pub argv: &'a [String],
    /// The task's generated `/etc` on the host, and the host entries bound
    /// over it as (host, sandbox) paths.
    pub etc_dir: &'a Path,
    pub etc_binds: &'a [(String, String)],
    /// The sandbox's host name (also in its `/etc/hosts`).
    pub hostname: &'a str,
    pub network: Network,
    /// Descriptors holding compiled seccomp filters, installed in order.
    pub seccomp_fds: &'a [RawFd],
    /// Size of the `/` and `/tmp` tmpfs; `None` leaves the kernel's default.
    pub tmpfs_bytes: Option<u64>,
    /// A descriptor of NUL-separated `--setenv` arguments (the task's
    /// credentials), read by `bwrap --args` after the launch's environment
    /// and before the task's identity.
    pub secret_args_fd: Option<RawFd>,
    /// Where `/` comes from.
    pub root: SandboxRoot<'a>,
    /// (host, sandbox) device nodes the task may use (its GPUs).
    pub devices: &'a [(String, String)],
    /// (host, sandbox) files and directories bound read-only (the GPUs'
    /// driver libraries and tools).
    pub device_binds: &'a [(String, String)],
}

/// The sandbox's root file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxRoot<'a> {
    /// A tmpfs with the host's `/usr` and the generated `/etc`; the task
    /// user, in `/tmp`.
    Host,
    /// The run's mounted root over its image (`etc_binds` then lists the
    /// generated files to bind over the image's `/etc`).
    Image {
        root: &'a Path,
        uid: u32,
        gid: u32,
        workdir: &'a str,
    },
}

/// What bubblewrap does about the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Stay in the namespace bubblewrap starts in: the group's (joined
    /// before exec) or, when allowed, the host's.
    Inherit,
    /// A new namespace for this task alone.
    Own,
}

/// The arguments passed to bwrap (not including the bwrap binary itself).
pub fn bwrap_args(spec: &SandboxSpec<'_>) -> Vec<OsString> {
    let mut args = Args::default();
    args.push([
        "--die-with-parent",
        "--new-session",
        "--unshare-user",
        "--disable-userns",
        "--cap-drop",
        "ALL",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    let (uid, gid) = match spec.root {
        SandboxRoot::Host => (TASK_UID, TASK_GID),
        SandboxRoot::Image { uid, gid, .. } => (uid, gid),
    };
    let (uid, gid) = (uid.to_string(), gid.to_string());
    args.push(["--uid", uid.as_str(), "--gid", gid.as_str()]);
    args.push(["--hostname", spec.hostname]);
    if spec.network == Network::Own {
        args.push(["--unshare-net"]);
    }
    for fd in spec.seccomp_fds {
        let fd = fd.to_string();
        args.push(["--add-seccomp-fd", fd.as_str()]);
    }
    let size = spec.tmpfs_bytes.map(|bytes| bytes.to_string());
    match spec.root {
        SandboxRoot::Host => host_root(&mut args, spec, size.as_deref()),
        SandboxRoot::Image { root, .. } => {
            args.push(["--bind"]);
            args.push_os(root.as_os_str().to_os_string());
            args.push(["/"]);
            for (host, inside) in spec.etc_binds {
                args.push(["--ro-bind", host.as_str(), inside.as_str()]);
            }
            args.push(["--proc", "/proc", "--dev", "/dev"]);
        }
    }
    for (host, inside) in spec.devices {
        args.push(["--dev-bind", host.as_str(), inside.as_str()]);
    }
    for (host, inside) in spec.device_binds {
        args.push(["--ro-bind", host.as_str(), inside.as_str()]);
    }
    data_mounts(&mut args, spec);
    environment(&mut args, spec);
    let workdir = match spec.root {
        SandboxRoot::Host => "/tmp",
        SandboxRoot::Image { workdir, .. } => workdir,
    };
    args.push(["--chdir", workdir, "--"]);
    args.push(spec.argv.iter().map(String::as_str));
    args.0
}

/// `/` as a tmpfs with the host's `/usr`, the generated `/etc` and a `/tmp`.
fn host_root(args: &mut Args, spec: &SandboxSpec<'_>, size: Option<&str>) {
    if let Some(size) = size {
        args.push(["--size", size]);
    }
    args.push(["--tmpfs", "/", "--ro-bind", "/usr", "/usr"]);
    for entry in ROOT_LINKS {
        let host = Path::new(entry);
        // A link is recreated as the same link, so it resolves into the
        // read-only /usr inside; a real directory is bound read-only.
        if let Ok(target) = std::fs::read_link(host) {
            args.push(["--symlink"]);
            args.push_os(target.into_os_string());
            args.push([entry]);
        } else if host.is_dir() {
            args.push(["--ro-bind", entry, entry]);
        }
    }
    args.push(["--ro-bind"]);
    args.push_os(spec.etc_dir.as_os_str().to_os_string());
    args.push(["/etc"]);
    for (host, inside) in spec.etc_binds {
        args.push(["--ro-bind", host.as_str(), inside.as_str()]);
    }
    args.push(["--proc", "/proc", "--dev", "/dev"]);
    if let Some(size) = size {
        args.push(["--size", size]);
    }
    args.push(["--tmpfs", "/tmp"]);
}

/// The output, inputs and files.
fn data_mounts(args: &mut Args, spec: &SandboxSpec<'_>) {
    args.push(["--bind"]);
    args.push_os(spec.output_dir.as_os_str().to_os_string());
    args.push([SANDBOX_OUTPUT]);
    for (index, dir) in spec.inputs.iter().enumerate() {
        args.push(["--ro-bind"]);
        args.push_os(dir.as_os_str().to_os_string());
        args.push_os(format!("{SANDBOX_INPUTS}/{index}").into());
    }
    // Files come after the data mounts so a file may be placed inside them.
    for (host, path) in spec.files {
        args.push(["--ro-bind"]);
        args.push_os(host.as_os_str().to_os_string());
        args.push([path.as_str()]);
    }
}

/// A cleared environment rebuilt from the launch, the credentials and the
/// task's identity, in that order.
fn environment(args: &mut Args, spec: &SandboxSpec<'_>) {
    args.push(["--clearenv"]);
    // Defaults first so the launch may override them; the OSMO_* identity
    // last so a task cannot pretend to be another one.
    let retry = spec.key.retry_id.to_string();
    let mut env: Vec<(&str, &str)> =
        vec![("PATH", "/usr/local/bin:/usr/bin:/bin"), ("HOME", "/tmp")];
    env.extend(
        spec.environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    env.push(("OSMO_WORKFLOW_ID", spec.key.workflow_id.as_str()));
    env.push(("OSMO_TASK_NAME", spec.key.task.as_str()));
    env.push(("OSMO_RETRY_ID", retry.as_str()));
    let (launch_env, identity) = env.split_at(env.len() - 3);
    for (name, value) in launch_env {
        args.push(["--setenv", name, value]);
    }
    if let Some(fd) = spec.secret_args_fd {
        args.push(["--args"]);
        args.push_os(fd.to_string().into());
    }
    for (name, value) in identity {
        args.push(["--setenv", name, value]);
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) {
        self.0.extend(items.into_iter().map(OsString::from));
    }

    fn push_os(&mut self, item: OsString) {
        self.0.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_follows_the_separator_and_identity_wins() {
        let key = TaskKey {
            workflow_id: "wf-1".into(),
            task: "train".into(),
            retry_id: 2,
        };
        let mut environment = BTreeMap::new();
        environment.insert("OSMO_TASK_NAME".to_string(), "spoofed".to_string());
        environment.insert("HOME".to_string(), "/work".to_string());
        let argv = vec!["echo".to_string(), "--chdir".to_string()];
        let args = bwrap_args(&SandboxSpec {
            secret_args_fd: None,
            key: &key,
            output_dir: Path::new("/w/out"),
            inputs: &[PathBuf::from("/w/in0")],
            files: &[(PathBuf::from("/w/f0"), "/etc/app.conf".to_string())],
            environment: &environment,
            argv: &argv,
            etc_dir: Path::new("/w/etc"),
            etc_binds: &[("/etc/ssl/certs".into(), "/etc/ssl/certs".into())],
            hostname: "train",
            network: Network::Inherit,
            seccomp_fds: &[7, 8],
            tmpfs_bytes: Some(1 << 20),
            root: SandboxRoot::Host,
            devices: &[("/dev/nvidia0".into(), "/dev/nvidia0".into())],
            device_binds: &[("/usr/bin/nvidia-smi".into(), "/usr/bin/nvidia-smi".into())],
        });
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let sep = args.iter().position(|a| a == "--").unwrap_or(usize::MAX);
        assert_eq!(&args[sep + 1..], &["echo", "--chdir"]);
        assert!(!args.iter().any(|a| a == "--unshare-net"));
        // The user namespace, its ids and the dropped capabilities come
        // before anything runs; both filters are installed.
        for window in [
            &["--cap-drop", "ALL"][..],
            &["--uid", "1000", "--gid", "1000"],
            &["--add-seccomp-fd", "7"],
            &["--add-seccomp-fd", "8"],
            &["--ro-bind", "/w/etc", "/etc"],
            &["--dev-bind", "/dev/nvidia0", "/dev/nvidia0"],
            &["--ro-bind", "/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"],
            &["--size", "1048576", "--tmpfs", "/tmp"],
            &["--size", "1048576", "--tmpfs", "/"],
        ] {
            assert!(
                args.windows(window.len()).any(|w| w == window),
                "{window:?} in {args:?}"
            );
        }
        assert!(args[..sep].iter().any(|a| a == "--unshare-user"));
        assert!(args[..sep].iter().any(|a| a == "--disable-userns"));
        assert!(
            !args[..sep]
                .windows(3)
                .any(|w| w == ["--ro-bind", "/etc", "/etc"]),
            "the host's /etc is never bound"
        );
        let setenv = |name: &str| -> Vec<String> {
            args.windows(3)
                .filter(|w| w[0] == "--setenv" && w[1] == name)
                .map(|w| w[2].clone())
                .collect()
        };
        // bwrap applies --setenv in order, so the last value is the one seen.
        assert_eq!(
            setenv("OSMO_TASK_NAME").last().map(String::as_str),
            Some("train")
        );
        assert_eq!(setenv("HOME").last().map(String::as_str), Some("/work"));
        assert_eq!(setenv("OSMO_RETRY_ID"), vec!["2"]);
        assert!(args
            .windows(3)
            .any(|w| w == ["--ro-bind", "/w/in0", "/osmo/data/input/0"]));
        assert!(args
            .windows(3)
            .any(|w| w == ["--bind", "/w/out", "/osmo/data/output"]));
    }

    #[test]
    fn versions_are_read_from_bwraps_answer() {
        assert_eq!(version_of("bubblewrap 0.8.0\n"), Some((0, 8)));
        assert_eq!(version_of("bubblewrap 0.11.1"), Some((0, 11)));
        assert!(version_of("bubblewrap 0.6.1").is_some_and(|v| v < BWRAP_MIN));
        assert_eq!(version_of("something else"), None);
    }

    #[test]
    fn missing_configured_bwrap_names_the_install_hint() {
        let err = locate_bwrap(Some(Path::new("/nonexistent/bwrap")))
            .err()
            .unwrap_or_default();
        assert!(err.contains("apt-get install bubblewrap"), "{err}");
    }
}
