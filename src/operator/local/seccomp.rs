//! The seccomp filters every task runs under, compiled with `seccompiler`
//! and handed to bubblewrap (`--add-seccomp-fd`) as raw BPF.
//!
//! Invariants:
//! - Everything not listed is allowed: the filters refuse what reaches the
//!   kernel's attack surface or the host (mounts, handles to host files,
//!   tracing, keyrings, BPF, modules, kexec, swap, reboot, namespaces,
//!   perf, userfaultfd, io_uring, terminal injection) with `EPERM`, so a
//!   program sees an ordinary permission error.
//! - `clone3` answers `ENOSYS`: its flags live in memory a filter cannot
//!   read, and `ENOSYS` makes libc fall back to `clone`, whose namespace
//!   flags are refused.
//! - On x86_64 the x32 numbering of every refused call is refused too, and
//!   calls of another architecture (i386) kill the process
//!   (`seccompiler`'s architecture check).

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls refused outright.
const REFUSED: &[i64] = &[
    // Mounts, and the new mount API.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // Handles that open any file of a mounted file system.
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // Tracing and other processes' memory.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    // Kernel keyrings.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Kernel and machine.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_fanotify_init,
    // Namespaces: no new ones, no joining others.
    libc::SYS_setns,
    libc::SYS_unshare,
];

/// `clone` flags that make a new namespace.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The x32 ABI's system call numbers are the x86_64 ones with this bit.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub struct SeccompError(String);

/// The filters as bytes for bubblewrap, in the order they are installed.
pub fn programs() -> Result<Vec<Vec<u8>>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
    let refuse = with_x32(arch, refused_rules()?);
    let enosys = with_x32(arch, BTreeMap::from([(libc::SYS_clone3, Vec::new())]));
    [(refuse, libc::EPERM as u32), (enosys, libc::ENOSYS as u32)]
        .into_iter()
        .map(|(rules, errno)| {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                arch,
            )
            .map_err(err)?;
            let program: BpfProgram = filter.try_into().map_err(err)?;
            Ok(to_bytes(&program))
        })
        .collect()
}

fn refused_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|&nr| (nr, Vec::new())).collect();
    // clone with any namespace flag (an empty rule list matches always; a
    // list matches when any rule does).
    let clone = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(err)?;
            SeccompRule::new(vec![condition]).map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone);
    // TIOCSTI pushes input into a terminal's queue. Its type differs
    // between libc targets (an unsigned long on glibc, an int on musl).
    #[allow(clippy::unnecessary_cast)]
    let tiocsti = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::TIOCSTI as u64,
    )
    .map_err(err)?;
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![tiocsti]).map_err(err)?],
    );
    Ok(rules)
}

fn with_x32(
    arch: TargetArch,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
) -> BTreeMap<i64, Vec<SeccompRule>> {
    if arch != TargetArch::x86_64 {
        return rules;
    }
    let x32: Vec<(i64, Vec<SeccompRule>)> = rules
        .iter()
        .map(|(nr, chain)| (nr | X32_SYSCALL_BIT, chain.clone()))
        .collect();
    rules.into_iter().chain(x32).collect()
}

/// `struct sock_filter` in the kernel's layout, native byte order.
fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

fn err(error: impl std::fmt::Display) -> SeccompError {
    SeccompError(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_to_whole_instructions() {
        let programs = programs().unwrap_or_default();
        assert_eq!(programs.len(), 2);
        for program in programs {
            assert!(!program.is_empty() && program.len() % 8 == 0);
        }
    }
}
