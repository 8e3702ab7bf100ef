//! Prepares a task's host directories before its sandbox starts: the output
//! dir, the staged `files`, and one empty directory per input (filled from
//! object storage by `crate::data` before the command starts).
//!
//! Layout under the executor's work dir, per run of a task:
//! `<work_dir>/<workflow_id>/<task>/<retry>/output` (the task's output, uploaded
//! after exit), `.../files/N` (launch file N), `.../inputs/N` (input N) and
//! `.../etc` (the task's `/etc`, see `etc`; launch files under `/etc` are
//! written into it) and `.../credentials/N-M` (key M of the task's mounted
//! credential N, mode 0600 in a 0700 directory, bound read-only at
//! `<dir>/<key>` as OSMO mounts each key). [`remove`] deletes the task's
//! directory once its run is over.
//!
//! Invariants: every name taken from a launch is checked to be one plain path
//! component (or, for file paths, a clean absolute path) before it touches the
//! host file system, so a launch can never reach outside the work dir.
//! Preparing again for the same task starts from empty directories: a rerun
//! must not see a previous attempt's output or inputs.

use super::error::ExecError;
use super::etc;
use super::sandbox::{SANDBOX_INPUTS, SANDBOX_OUTPUT};
use crate::protocol::TaskLaunch;
use gantry_storage::TaskKey;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Host paths of a prepared task, ready to be mounted.
#[derive(Debug)]
pub struct Prepared {
    pub output_dir: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// (host file, absolute path inside the sandbox).
    pub files: Vec<(PathBuf, String)>,
    /// The task's `/etc`, and the host entries to bind over it.
    pub etc_dir: PathBuf,
    pub etc_binds: Vec<(String, String)>,
    /// In image mode: the run's writable root over its image (see
    /// `image::root`), unmounted by [`remove`].
    pub image_root: Option<PathBuf>,
}

/// A run's own directory: two runs of a task (retries the control plane
/// started while an older one was still winding down) never share one, so
/// the end of one never removes the other's output.
fn task_dir(work_dir: &Path, key: &TaskKey) -> Result<PathBuf, ExecError> {
    check_component("workflow id", &key.workflow_id)?;
    check_component("task name", &key.task)?;
    Ok(work_dir
        .join(&key.workflow_id)
        .join(&key.task)
        .join(key.retry_id.to_string()))
}

/// Blocking: creates and fills the task's directories, and with `image`
/// (an unpacked image root) mounts the run's root over it. Run off the
/// runtime.
pub fn prepare(
    work_dir: &Path,
    launch: &TaskLaunch,
    image: Option<&Path>,
) -> Result<Prepared, ExecError> {
    // In an image the command may come from the image's entrypoint.
    check_launch(launch, image.is_none())?;
    let dir = task_dir(work_dir, &launch.key)?;
    super::image::root::unmount(&dir.join("image"));
    let output_dir = dir.join("output");
    let files_dir = dir.join("files");
    let inputs_dir = dir.join("inputs");
    let etc_dir = dir.join("etc");
    let credentials_dir = dir.join("credentials");
    for fresh in [
        &output_dir,
        &files_dir,
        &inputs_dir,
        &etc_dir,
        &credentials_dir,
    ] {
        remove_dir_if_present(fresh)?;
        fs::create_dir_all(fresh).map_err(|e| ExecError::io("cannot create", fresh, e))?;
    }

    let etc_binds = etc::write(&etc_dir, &hostname(&launch.key.task))?;
    let mut files = Vec::with_capacity(launch.files.len());
    for (index, file) in launch.files.iter().enumerate() {
        // The task's /etc is its own: a file there is written into it (and
        // is read-only with the rest of it).
        if let Ok(relative) = Path::new(&file.path).strip_prefix("/etc") {
            let host = etc_dir.join(relative);
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| ExecError::io("cannot create", parent, e))?;
            }
            fs::write(&host, &file.contents)
                .map_err(|e| ExecError::io("cannot write", &host, e))?;
            continue;
        }
        // One staged file per entry, named by index, so two launch paths can
        // never collide on the host.
        let host = files_dir.join(index.to_string());
        fs::write(&host, &file.contents).map_err(|e| ExecError::io("cannot write", &host, e))?;
        files.push((host, file.path.clone()));
    }

    stage_credentials((&credentials_dir, &etc_dir), launch, &mut files)?;

    let mut inputs = Vec::with_capacity(launch.inputs.len());
    for index in 0..launch.inputs.len() {
        let staged = inputs_dir.join(index.to_string());
        fs::create_dir_all(&staged).map_err(|e| ExecError::io("cannot create", &staged, e))?;
        inputs.push(staged);
    }
    let image_root = match image {
        Some(lower) => {
            let image_dir = dir.join("image");
            remove_dir_if_present(&image_dir)?;
            Some(
                super::image::root::mount(lower, &image_dir)
                    .map_err(ExecError::Image)?
                    .merged,
            )
        }
        None => None,
    };
    Ok(Prepared {
        output_dir,
        inputs,
        files,
        etc_dir,
        etc_binds,
        image_root,
    })
}

/// In image mode the image keeps its own `/etc`: the generated files the
/// task needs (`hosts`, `hostname`, `resolv.conf`) and those the launch
/// and its credentials put there are bound over it one by one, as
/// (host, sandbox) paths. The generated users and name service files are
/// the image's own business. Blocking.
pub fn image_etc_binds(etc_dir: &Path) -> Result<Vec<(String, String)>, ExecError> {
    const IMAGE_OWNS: [&str; 3] = ["passwd", "group", "nsswitch.conf"];
    let mut binds = Vec::new();
    for entry in walkdir::WalkDir::new(etc_dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| ExecError::io("cannot read", etc_dir, e.into()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(etc_dir) else {
            continue;
        };
        if IMAGE_OWNS.iter().any(|owned| relative == Path::new(owned)) {
            continue;
        }
        let (Some(host), Some(relative)) = (entry.path().to_str(), relative.to_str()) else {
            continue;
        };
        binds.push((host.to_string(), format!("/etc/{relative}")));
    }
    Ok(binds)
}

/// Each key of each mounted credential as its own file, readable by the
/// executor's user only, to be bound at `<dir>/<key>` in the sandbox.
fn stage_credentials(
    (dir, etc_dir): (&Path, &Path),
    launch: &TaskLaunch,
    files: &mut Vec<(PathBuf, String)>,
) -> Result<(), ExecError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| ExecError::io("cannot restrict", dir, e))?;
    for (index, credential) in launch.extras.credentials.iter().enumerate() {
        let Some(mount) = &credential.mount else {
            continue;
        };
        for (key_index, (key, value)) in credential.values.iter().enumerate() {
            let path = format!("{}/{key}", mount.trim_end_matches('/'));
            check_sandbox_path(&path)?;
            // As launch files: the task's /etc is its own, written into.
            let host = match Path::new(&path).strip_prefix("/etc") {
                Ok(relative) => {
                    let host = etc_dir.join(relative);
                    if let Some(parent) = host.parent() {
                        fs::create_dir_all(parent)
                            .map_err(|e| ExecError::io("cannot create", parent, e))?;
                    }
                    // Written afresh, never through what is there.
                    remove_file_if_present(&host)?;
                    Some(host)
                }
                Err(_) => None,
            };
            let in_etc = host.is_some();
            let host = host.unwrap_or_else(|| dir.join(format!("{index}-{key_index}")));
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&host)
                .and_then(|mut file| file.write_all(value.as_bytes()))
                .map_err(|e| ExecError::io("cannot write", &host, e))?;
            if !in_etc {
                files.push((host, path));
            }
        }
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> Result<(), ExecError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExecError::io("cannot replace", path, e)),
    }
}

/// The `bwrap` arguments that set a task's credential environment
/// variables, NUL-separated for `--args FD` (so the values never appear on
/// a command line another process of the host can read).
pub fn credential_env_args(launch: &TaskLaunch) -> Vec<u8> {
    let mut args = Vec::new();
    for credential in &launch.extras.credentials {
        for (variable, key) in &credential.env {
            let Some(value) = credential.values.get(key) else {
                continue;
            };
            for part in ["--setenv", variable.as_str(), value.as_str()] {
                args.extend_from_slice(part.as_bytes());
                args.push(0);
            }
        }
    }
    args
}

/// The sandbox's host name: the task's name as a DNS label.
pub fn hostname(task: &str) -> String {
    crate::protocol::task_host::dns_label(task)
}

/// Blocking: deletes the run's directory (and its task's and workflow's,
/// once empty). Its output was uploaded, or is not kept.
pub fn remove(work_dir: &Path, key: &TaskKey) -> Result<(), ExecError> {
    let dir = task_dir(work_dir, key)?;
    // Never delete through a mounted root into the image beneath.
    super::image::root::unmount(&dir.join("image"));
    remove_dir_if_present(&dir)?;
    // Each fails while another run of the task, or another task of the
    // workflow, still has its directory.
    if let Some(task_dir) = dir.parent() {
        if fs::remove_dir(task_dir).is_ok() {
            if let Some(workflow_dir) = task_dir.parent() {
                let _ = fs::remove_dir(workflow_dir);
            }
        }
    }
    Ok(())
}

/// Rejects launch fields bwrap or the host would misinterpret, before any
/// directory is touched.
fn check_launch(launch: &TaskLaunch, needs_command: bool) -> Result<(), ExecError> {
    if needs_command && launch.command.is_empty() {
        return Err(ExecError::InvalidName {
            what: "command",
            value: String::new(),
            why: "a task needs a command",
        });
    }
    for word in launch.command.iter().chain(&launch.args) {
        if word.contains('\0') {
            return Err(invalid("argument", word, "contains a NUL byte"));
        }
    }
    for (name, value) in &launch.environment {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(invalid(
                "environment name",
                name,
                "must be non-empty without '=' or NUL",
            ));
        }
        if value.contains('\0') {
            return Err(invalid("environment value of", name, "contains a NUL byte"));
        }
    }
    for file in &launch.files {
        check_sandbox_path(&file.path)?;
    }
    // A NUL would end a value early in `--args`, and what followed would
    // be read as more of the sandbox's arguments.
    for credential in &launch.extras.credentials {
        for (variable, key) in &credential.env {
            if variable.is_empty() || variable.contains(['=', '\0']) {
                return Err(invalid(
                    "credential environment name",
                    variable,
                    "must be non-empty without '=' or NUL",
                ));
            }
            if !credential.values.contains_key(key) {
                return Err(invalid("credential key", key, "has no value in the launch"));
            }
        }
        for (key, value) in &credential.values {
            check_component("credential key", key)?;
            if value.contains('\0') {
                return Err(invalid(
                    "credential value of",
                    &format!("{}.{key}", credential.name),
                    "contains a NUL byte",
                ));
            }
        }
        if let Some(mount) = &credential.mount {
            check_sandbox_path(mount)?;
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<(), ExecError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExecError::io("cannot clear", dir, e)),
    }
}

fn check_component(what: &'static str, value: &str) -> Result<(), ExecError> {
    let mut components = Path::new(value).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !value.contains('/') && !value.contains('\0') => {
            Ok(())
        }
        _ => Err(invalid(what, value, "must be a single path component")),
    }
}

fn check_sandbox_path(path: &str) -> Result<(), ExecError> {
    let parsed = Path::new(path);
    // Checked on the raw segments: `Path::components` silently drops `.`.
    let clean = parsed.is_absolute()
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if !clean {
        return Err(invalid(
            "file path",
            path,
            "must be an absolute path without '.' or '..'",
        ));
    }
    // The data dirs are host bind mounts: a file bound inside one would be
    // hidden by it or leave an empty mount-point file in a task's output.
    if parsed.starts_with(SANDBOX_INPUTS) || parsed.starts_with(SANDBOX_OUTPUT) {
        return Err(invalid(
            "file path",
            path,
            "must not be inside /osmo/data/input or /osmo/data/output",
        ));
    }
    // Host entries bound into the task's /etc: read-only host trees.
    if etc::HOST_ENTRIES
        .iter()
        .any(|entry| parsed.starts_with(entry) && parsed != Path::new(entry))
    {
        return Err(invalid(
            "file path",
            path,
            "is inside a host directory the task reads read-only (CA certificates, loader configuration, alternatives)",
        ));
    }
    // Trees bound read-only from the host (or by the kernel): bwrap cannot
    // create a mount point inside them, only mount over a file already there.
    if READ_ONLY_TREES.iter().any(|tree| parsed.starts_with(tree)) {
        let replaces_a_file = fs::symlink_metadata(parsed).is_ok_and(|meta| meta.is_file());
        if !replaces_a_file {
            return Err(invalid(
                "file path",
                path,
                "is inside a read-only host directory and replaces no existing file there; use e.g. /tmp or /opt",
            ));
        }
    }
    Ok(())
}

/// Directories that are read-only in the sandbox (see `sandbox`).
const READ_ONLY_TREES: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/proc",
];

fn invalid(what: &'static str, value: &str, why: &'static str) -> ExecError {
    ExecError::InvalidName {
        what,
        value: value.to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_the_work_dir_are_rejected() {
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(check_component("task name", bad).is_err(), "{bad:?}");
        }
        assert!(check_component("task name", "train-1").is_ok());
        for bad in [
            "relative",
            "/",
            "/a/../b",
            "/a/./b",
            "/osmo/data/input/0/x",
            "/osmo/data/output/f",
            "/etc/ssl/certs/extra.pem",
            "/usr/new",
        ] {
            assert!(check_sandbox_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_sandbox_path("/opt/app/config.yaml").is_ok());
        assert!(check_sandbox_path("/tmp/config.yaml").is_ok());
        assert!(check_sandbox_path("/etc/app/new.conf").is_ok());
    }
}
