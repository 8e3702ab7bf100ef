//! Resource limits of local tasks through cgroups, v1 or v2: one cgroup per
//! task run under the operator's own subtree, with the task's CPU, memory
//! and process limits, joined by the sandbox before bubblewrap starts.
//!
//! Layout: v1, per controller (cpu, memory, pids), `<mount><own
//! cgroup>/gantry-<pid>-<n>/<task>`; v2, `<own cgroup>/gantry-<pid>-<n>/<task>`
//! when this process's own cgroup is delegated (the process moves itself
//! into a leaf `gantry-<pid>-operator` so the subtree may enable
//! controllers), else, as root, `<mount>/gantry-<pid>-<n>/<task>`. `<n>`
//! numbers the executors of one process, so each removes only its own.
//!
//! Invariants:
//! - A task's processes are in its cgroup from before bubblewrap runs (the
//!   child writes `0`, itself, to each `cgroup.procs` between fork and
//!   exec), so nothing of the task escapes its limits.
//! - Memory limits leave no swap (`memory.swap.max` 0, or v1's `memsw`
//!   equal to the limit where swap accounting exists).
//! - [`TaskCgroup::remove`] kills whatever is left inside before removing
//!   the directories; the operator's subtree goes when the operator ends
//!   ([`Cgroups`] on drop), and subtrees of operators that died are removed
//!   at start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// CFS period for `cpu.max` / `cpu.cfs_period_us`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy with the cpu, memory and pids controllers is mounted")]
    NoHierarchy,
    #[error("{what} {path}: {source}", path = path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'p {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What a task's cgroup enforces; `None` leaves that resource unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Whole CPUs of bandwidth.
    pub cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids_max: Option<u64>,
}

#[derive(Debug)]
enum Kind {
    /// Each controller's subtree of this operator.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
    },
    /// This operator's subtree in the unified hierarchy.
    V2 { base: PathBuf },
}

/// The operator's cgroup subtree.
#[derive(Debug)]
pub struct Cgroups {
    kind: Kind,
}

/// One task run's cgroup.
#[derive(Debug)]
pub struct TaskCgroup {
    v2: bool,
    /// Every directory made for the task (one per v1 controller).
    dirs: Vec<PathBuf>,
    /// Where the memory controller's files are.
    memory_dir: PathBuf,
    /// `cgroup.procs` of each directory, open for the child to join.
    procs: Vec<File>,
}

impl Cgroups {
    /// Finds the hierarchy this process lives in and makes its subtree.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        static EXECUTORS: AtomicU64 = AtomicU64::new(0);
        let mountinfo = read("/proc/self/mountinfo")?;
        let membership = read("/proc/self/cgroup")?;
        let n = EXECUTORS.fetch_add(1, Ordering::Relaxed);
        Cgroups::detect_in(&mountinfo, &membership, std::process::id(), n)
    }

    fn detect_in(
        mountinfo: &str,
        membership: &str,
        pid: u32,
        n: u64,
    ) -> Result<Cgroups, CgroupError> {
        let name = format!("gantry-{pid}-{n}");
        let leaf = format!("gantry-{pid}-operator");
        let mounts = parse_mounts(mountinfo);
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let mount = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))?;
            let own = membership.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.to_string())
            })?;
            Some(join(&mount.point, &own))
        };
        if let (Some(cpu), Some(memory), Some(pids)) =
            (v1_dir("cpu"), v1_dir("memory"), v1_dir("pids"))
        {
            let kind = Kind::V1 {
                cpu: cpu.join(&name),
                memory: memory.join(&name),
                pids: pids.join(&name),
            };
            for parent in [&cpu, &memory, &pids] {
                remove_dead_subtrees(parent);
            }
            let cgroups = Cgroups { kind };
            for dir in cgroups.base_dirs() {
                create_dir(dir)?;
            }
            return Ok(cgroups);
        }
        let unified = mounts
            .iter()
            .find(|m| m.v2 && has_controllers(&m.point))
            .ok_or(CgroupError::NoHierarchy)?;
        let own = membership
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .unwrap_or("/");
        let own_dir = join(&unified.point, own);
        let base = match delegate(&own_dir, &name, &leaf) {
            Ok(base) => base,
            // Not delegated to us: as root, a subtree of the hierarchy's root.
            Err(error) if nix::unistd::geteuid().is_root() && own_dir != unified.point => {
                tracing::info!(%error, "own cgroup not delegated; using the hierarchy's root");
                let base = unified.point.join(&name);
                create_dir(&base)?;
                enable_controllers(&base)?;
                base
            }
            Err(error) => return Err(error),
        };
        remove_dead_subtrees(base.parent().unwrap_or(&base));
        Ok(Cgroups {
            kind: Kind::V2 { base },
        })
    }

    fn base_dirs(&self) -> Vec<&PathBuf> {
        match &self.kind {
            Kind::V1 { cpu, memory, pids } => vec![cpu, memory, pids],
            Kind::V2 { base } => vec![base],
        }
    }

    /// Makes the task's cgroup with its limits. Blocking.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<TaskCgroup, CgroupError> {
        let (v2, dir_of): (bool, Box<dyn Fn(Controller) -> PathBuf>) = match &self.kind {
            Kind::V1 { cpu, memory, pids } => {
                let (cpu, memory, pids) = (cpu.join(name), memory.join(name), pids.join(name));
                (
                    false,
                    Box::new(move |controller| match controller {
                        Controller::Cpu => cpu.clone(),
                        Controller::Memory => memory.clone(),
                        Controller::Pids => pids.clone(),
                    }),
                )
            }
            Kind::V2 { base } => {
                let dir = base.join(name);
                (true, Box::new(move |_| dir.clone()))
            }
        };
        let mut task = TaskCgroup {
            v2,
            dirs: Vec::new(),
            memory_dir: dir_of(Controller::Memory),
            procs: Vec::new(),
        };
        for controller in [Controller::Cpu, Controller::Memory, Controller::Pids] {
            let dir = dir_of(controller);
            if !task.dirs.contains(&dir) {
                fresh_dir(&dir)?;
                task.dirs.push(dir);
            }
        }
        for setting in limit_files(v2, limits) {
            let path = dir_of(setting.controller).join(setting.file);
            // Swap files exist only where swap accounting is on.
            if setting.if_present && !path.exists() {
                continue;
            }
            write(&path, &setting.value)?;
        }
        task.open_procs()?;
        Ok(task)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Controller {
    Cpu,
    Memory,
    Pids,
}

/// One value written into a task's cgroup.
#[derive(Debug, PartialEq, Eq)]
struct Setting {
    controller: Controller,
    file: &'static str,
    value: String,
    if_present: bool,
}

/// The files and values that carry `limits`, in the order they are
/// written (v1's `memsw` may not be below the memory limit, so it follows).
fn limit_files(v2: bool, limits: &Limits) -> Vec<Setting> {
    let set = |controller, file, value: String, if_present| Setting {
        controller,
        file,
        value,
        if_present,
    };
    let mut out = Vec::new();
    if let Some(cpus) = limits.cpus {
        let quota = cpus.saturating_mul(CPU_PERIOD_US);
        if v2 {
            out.push(set(
                Controller::Cpu,
                "cpu.max",
                format!("{quota} {CPU_PERIOD_US}"),
                false,
            ));
        } else {
            out.push(set(
                Controller::Cpu,
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
                false,
            ));
            out.push(set(
                Controller::Cpu,
                "cpu.cfs_quota_us",
                quota.to_string(),
                false,
            ));
        }
    }
    if let Some(bytes) = limits.memory_bytes {
        if v2 {
            out.push(set(
                Controller::Memory,
                "memory.max",
                bytes.to_string(),
                false,
            ));
            out.push(set(Controller::Memory, "memory.swap.max", "0".into(), true));
        } else {
            out.push(set(
                Controller::Memory,
                "memory.limit_in_bytes",
                bytes.to_string(),
                false,
            ));
            out.push(set(
                Controller::Memory,
                "memory.memsw.limit_in_bytes",
                bytes.to_string(),
                true,
            ));
        }
    }
    if let Some(max) = limits.pids_max {
        out.push(set(Controller::Pids, "pids.max", max.to_string(), false));
    }
    out
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.base_dirs() {
            remove_tree(dir);
        }
    }
}

impl TaskCgroup {
    fn open_procs(&mut self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("cannot open", &path))?;
            self.procs.push(file);
        }
        Ok(())
    }

    /// The `cgroup.procs` files a later process of the task (an exec)
    /// writes itself into.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Descriptors the child writes `0` to, to join the cgroup.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    /// Blocking.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.memory_dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills what is left inside and removes the directories. Blocking.
    pub fn remove(self) {
        for dir in &self.dirs {
            remove_tree(dir);
        }
    }
}

/// Makes `<own>/<name>` the operator's subtree of a delegated cgroup: moves
/// this process into a leaf beside it so `own` may hand controllers down.
fn delegate(own: &Path, name: &str, leaf: &str) -> Result<PathBuf, CgroupError> {
    let base = own.join(name);
    if !has_all(&own.join("cgroup.subtree_control")) {
        let leaf = own.join(leaf);
        create_dir(&leaf)?;
        write(&leaf.join("cgroup.procs"), "0")?;
        enable_controllers(own)?;
    }
    create_dir(&base)?;
    enable_controllers(&base)?;
    Ok(base)
}

fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.subtree_control"), "+cpu +memory +pids")
}

fn has_controllers(mount: &Path) -> bool {
    has_all(&mount.join("cgroup.controllers"))
}

fn has_all(list: &Path) -> bool {
    let text = fs::read_to_string(list).unwrap_or_default();
    let present: Vec<&str> = text.split_whitespace().collect();
    ["cpu", "memory", "pids"]
        .iter()
        .all(|wanted| present.contains(wanted))
}

/// A mounted cgroup hierarchy.
#[derive(Debug)]
struct Mount {
    point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                v2,
                controllers: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest.get(index + 1..index + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn join(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

fn read(path: &str) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(io("cannot read", Path::new(path)))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    // One write(2): cgroup files take a value per write.
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("cannot open", path))?;
    file.write_all(value.as_bytes())
        .map_err(io("cannot write", path))
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("cannot create", dir)(e)),
    }
}

/// A task's directory, emptied of an earlier run of the same name first.
fn fresh_dir(dir: &Path) -> Result<(), CgroupError> {
    remove_tree(dir);
    fs::create_dir(dir).map_err(io("cannot create", dir))
}

/// Kills every process under `dir` and removes it, children first. A
/// cgroup directory goes with rmdir(2) once no process is left in it.
fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        kill_all(dir);
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!(dir = %dir.display(), "a task cgroup could not be removed");
}

fn kill_all(dir: &Path) {
    let kill = dir.join("cgroup.kill");
    if kill.exists() && write(&kill, "1").is_ok() {
        return;
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Subtrees `gantry-<pid>-…` of processes that are no longer running.
fn remove_dead_subtrees(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gantry-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_tree(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
34 25 0:30 / /mnt/with\\040space rw - ext4 /dev/sda rw";

    #[test]
    fn mountinfo_names_each_hierarchy_and_its_controllers() {
        let mounts = parse_mounts(V1_MOUNTS);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(mounts[1].controllers.contains(&"memory".to_string()));
        assert!(mounts[3].v2);
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
    }

    #[test]
    fn v2_writes_its_limits_into_a_delegated_subtree() {
        // A v2 hierarchy's files, as plain files: what gets written where.
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mount = root.path();
        let own = mount.join("system.slice/op.service");
        fs::create_dir_all(&own).unwrap_or_default();
        for (file, text) in [
            ("cgroup.controllers", "cpu memory pids io"),
            ("system.slice/op.service/cgroup.subtree_control", ""),
        ] {
            fs::write(mount.join(file), text).unwrap_or_default();
        }
        // The leaf the operator moves into, and the subtree's files, exist
        // before the writes in a real hierarchy; plain files stand in.
        let pid = std::process::id();
        for dir in [format!("gantry-{pid}-operator"), format!("gantry-{pid}-3")] {
            fs::create_dir_all(own.join(&dir)).unwrap_or_default();
            fs::write(own.join(&dir).join("cgroup.procs"), "").unwrap_or_default();
            fs::write(own.join(&dir).join("cgroup.subtree_control"), "").unwrap_or_default();
        }
        let mountinfo = format!(
            "33 25 0:29 / {} rw,relatime - cgroup2 cgroup2 rw",
            mount.display()
        );
        let cgroups = Cgroups::detect_in(&mountinfo, "0::/system.slice/op.service\n", pid, 3)
            .unwrap_or_else(|e| panic!("{e}"));
        let read = |p: &str| fs::read_to_string(own.join(p)).unwrap_or_default();
        assert_eq!(read(&format!("gantry-{pid}-operator/cgroup.procs")), "0");
        assert_eq!(read("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(
            read(&format!("gantry-{pid}-3/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );

        // Plain directories cannot be removed the way cgroups are.
        std::mem::forget(cgroups);
    }

    #[test]
    fn limits_map_onto_each_versions_files() {
        let limits = Limits {
            cpus: Some(2),
            memory_bytes: Some(16 << 20),
            pids_max: Some(64),
        };
        let v2: Vec<(&str, String)> = limit_files(true, &limits)
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect();
        assert_eq!(
            v2,
            [
                ("cpu.max", "200000 100000".to_string()),
                ("memory.max", "16777216".to_string()),
                ("memory.swap.max", "0".to_string()),
                ("pids.max", "64".to_string()),
            ]
        );
        let v1: Vec<(&str, String)> = limit_files(false, &limits)
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect();
        assert_eq!(
            v1,
            [
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "200000".to_string()),
                ("memory.limit_in_bytes", "16777216".to_string()),
                ("memory.memsw.limit_in_bytes", "16777216".to_string()),
                ("pids.max", "64".to_string()),
            ]
        );
        assert!(limit_files(true, &Limits::default()).is_empty());
    }
}
