//! `gantry __sandbox-enter PID PARENT TTY -- ARGV...`: runs a command inside a
//! running task's sandbox (the local executor's side of `exec`), as a
//! process of the task: in its namespaces (user, IPC, UTS, network,
//! cgroup, PID, mount), under its root and in its `/tmp`, with the task's
//! environment (read here, and given to the command only), no
//! capability, `no_new_privs` and the task's seccomp filters. The executor
//! starts it in the task's cgroup with an empty environment.
//!
//! Why a process of its own: joining a user or mount namespace needs a
//! single-threaded caller, and a PID namespace takes only the caller's
//! children, so this runs before any async runtime exists (see `main`),
//! joins, and then starts the command as its child, whose exit status it
//! passes on (128 + N for signal N, as a shell does).
//!
//! Invariants: every namespace and the root are read through the target's
//! `/proc` entries, opened before the first join, while a pidfd shows the
//! target is still the task's process (its parent checked before, its
//! life after); the command starts only
//! once every join succeeded, and with the filters loaded (their failure
//! stops it before `exec`); nothing of the host is reachable from the
//! command that the task itself could not reach.

use super::seccomp;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};

/// The first argument that selects this entry point.
pub const ENTER_ARG: &str = "__sandbox-enter";

/// Exit code when the command cannot be started inside (as a shell's 126).
const CANNOT_RUN: i32 = 126;

/// The namespaces other than the user namespace, joined as soon as the
/// rights held allow (the mount namespace last: its root replaces ours).
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// `ioctl(NS_GET_PARENT)`: the user namespace a user namespace was made in.
const NS_GET_PARENT: u32 = 0xb702;

/// The entry point: `args` are this process's arguments after
/// [`ENTER_ARG`]. Returns the exit code.
pub fn enter_main(args: Vec<OsString>) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("exec: {error}");
            CANNOT_RUN
        }
    }
}

fn run(args: Vec<OsString>) -> Result<i32, String> {
    let usage = || format!("usage: gantry {ENTER_ARG} PID PARENT TTY(0|1) -- COMMAND [ARG...]");
    let mut args = args.into_iter();
    let mut number = || -> Result<u32, String> {
        args.next()
            .and_then(|a| a.to_str().and_then(|s| s.parse().ok()))
            .ok_or_else(usage)
    };
    let (pid, parent) = (number()?, number()?);
    let tty = match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(usage()),
    };
    if args.next().as_ref().and_then(|a| a.to_str()) != Some("--") {
        return Err(usage());
    }
    let argv: Vec<OsString> = args.collect();
    let Some((program, rest)) = argv.split_first() else {
        return Err(usage());
    };
    // Built before joining: the filters are bytes computed here.
    let filters = seccomp::programs().map_err(|error| error.to_string())?;
    let environment = join(pid, parent)?;
    let mut command = std::process::Command::new(program);
    command
        .args(rest)
        .current_dir("/tmp")
        .env_clear()
        .envs(environment);
    let filters_for_child = filters.clone();
    // SAFETY: runs in the forked child before exec; it only makes system
    // calls (setsid, ioctl, prctl, capset) on memory prepared before the
    // fork, allocating nothing and taking no lock.
    unsafe {
        command.pre_exec(move || confine(tty, &filters_for_child));
    }
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", program.to_string_lossy()))?;
    let status = child.wait().map_err(|error| error.to_string())?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(CANNOT_RUN))
}

/// Joins every namespace of process `pid` that differs from ours, then
/// its root. A namespace is joined with the rights of the user namespace
/// it belongs to, and a task's user namespace may be nested in another
/// (bubblewrap's `--disable-userns`) while its network namespace belongs
/// to the host's (a group's): so the user namespaces are joined from the
/// outermost in, and after each step (and before the first) every other
/// namespace the rights held now allow.
fn join(pid: u32, parent: u32) -> Result<Vec<(OsString, OsString)>, String> {
    let open = |path: String| File::open(&path).map_err(|error| format!("{path}: {error}"));
    // The process itself, whatever becomes of its id: checked to be the
    // task's (its parent) now, and to be alive once everything is open,
    // so nothing opened belongs to a process that reused the id.
    // SAFETY: the syscall returns a new descriptor we then own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(format!(
            "the task's process {pid} is gone: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor just returned by the kernel, owned by no one.
    let pidfd = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(pidfd as RawFd) };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if super::task_files::parent_of(&stat) != Some(parent) {
        return Err(format!("process {pid} is no longer the task's"));
    }
    let same = |theirs: &File, name: &str| -> Result<bool, String> {
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(|error| format!("/proc/self/ns/{name}: {error}"))?;
        Ok(theirs
            .metadata()
            .is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev()))
    };
    let mut pending = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = open(format!("/proc/{pid}/ns/{name}"))?;
        if !same(&theirs, name)? {
            pending.push((name, flag, theirs));
        }
    }
    let users = user_namespaces(open(format!("/proc/{pid}/ns/user"))?, &same)?;
    let root = open(format!("/proc/{pid}/root"))?;
    let environment = super::task_files::environment_of(pid)
        .map_err(|error| format!("the task's environment: {error}"))?;
    // SAFETY: signal 0 only asks whether the process is alive.
    if unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, 0, 0) } != 0 {
        return Err(format!("the task's process {pid} ended"));
    }
    join_allowed(&mut pending);
    for user in &users {
        // SAFETY: plain system call on a descriptor we own.
        if unsafe { libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
            return Err(format!(
                "cannot join the task's user namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        join_allowed(&mut pending);
    }
    if let Some((name, flag, file)) = pending.first() {
        // SAFETY: as above; only for the error.
        unsafe { libc::setns(file.as_raw_fd(), *flag) };
        return Err(format!(
            "cannot join the task's {name} namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: plain system calls on a descriptor we own.
    let rooted = unsafe { libc::fchdir(root.as_raw_fd()) == 0 && libc::chroot(c".".as_ptr()) == 0 };
    if !rooted {
        return Err(format!(
            "cannot enter the task's root: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(environment)
}

/// The user namespaces from just inside ours down to `innermost`,
/// outermost first (empty when it is ours).
fn user_namespaces(
    innermost: File,
    same: &dyn Fn(&File, &str) -> Result<bool, String>,
) -> Result<Vec<File>, String> {
    let mut chain = Vec::new();
    let mut current = innermost;
    while !same(&current, "user")? {
        // SAFETY: the ioctl returns a new descriptor we then own.
        let parent = unsafe { libc::ioctl(current.as_raw_fd(), NS_GET_PARENT as _) };
        chain.push(current);
        if parent < 0 {
            // Its parent is outside what we may see: ours is above it.
            break;
        }
        // SAFETY: a descriptor just returned by the kernel, owned by no one.
        current = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(parent) };
    }
    chain.reverse();
    Ok(chain)
}

/// Joins each pending namespace the rights held now allow; keeps the rest.
fn join_allowed(pending: &mut Vec<(&str, libc::c_int, File)>) {
    // SAFETY: plain system calls on descriptors we own.
    pending.retain(|(_, flag, file)| unsafe { libc::setns(file.as_raw_fd(), *flag) } != 0);
}

/// The child's confinement, between fork and exec: its own session (with
/// the terminal on stdin as its controlling one), no capability left in
/// any set, `no_new_privs`, then the task's seccomp filters.
fn confine(tty: bool, filters: &[Vec<u8>]) -> std::io::Result<()> {
    let check = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: system calls with constant arguments or pointers to memory
    // that lives for the whole call.
    unsafe {
        if tty {
            check(libc::setsid() >= 0)?;
            check(libc::ioctl(0, libc::TIOCSCTTY, 0) == 0)?;
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) == 0,
        )?;
        let mut cap = 0;
        // Until the kernel says there are no more capabilities.
        while libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) >= 0 {
            check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)?;
            cap += 1;
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()) == 0)?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)?;
        for program in filters {
            let filter = libc::sock_fprog {
                len: (program.len() / std::mem::size_of::<libc::sock_filter>()) as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            check(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &filter as *const libc::sock_fprog,
                ) == 0,
            )?;
        }
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
