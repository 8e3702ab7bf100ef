//! Reading a directory of a file system the reader does not trust (a
//! running task's, reached through `/proc/<pid>/root`), without ever being
//! led outside it by a link the task planted.
//!
//! Invariants: the directory is resolved with `openat2` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so its path's links resolve
//! inside the given root and never through `/proc` magic links; below it,
//! every entry is opened one name at a time relative to its parent's
//! descriptor with `O_NOFOLLOW`, so no link is ever followed (links are
//! counted and skipped, as an output upload skips them) and a directory
//! swapped for a link between listing and opening is refused, not
//! followed; only regular files are handed out; the walk is bounded in
//! depth and entries, so a hostile tree cannot exhaust the reader; nothing
//! on a kernel file system (`/proc`, `/sys` and their kin) is read, so a
//! privileged reader never hands out what only its privilege could read
//! (`/proc/kcore`, say).

use nix::dir::{Dir, Type};
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statfs::{self, fstatfs, FsType};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// Deepest directory below the walked one.
const DEPTH_MAX: usize = 64;
/// Most entries one walk looks at.
const ENTRIES_MAX: usize = 100_000;

/// File systems of the kernel's own state, never read: their files are
/// no task's data, and a privileged reader would see more than the task.
fn kernel_file_system(fs: FsType) -> Option<&'static str> {
    // Types libc names no constant for: cgroup2, configfs, efivarfs,
    // pstore, mqueue, binfmt_misc.
    const OTHERS: [(i64, &str); 6] = [
        (0x6367_7270, "cgroup2"),
        (0x6265_6570, "configfs"),
        (0xde5e_81e4, "efivarfs"),
        (0x6165_676c, "pstore"),
        (0x1980_0202, "mqueue"),
        (0x4249_4e4d, "binfmt_misc"),
    ];
    let named = [
        (statfs::PROC_SUPER_MAGIC, "proc"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::DEBUGFS_MAGIC, "debugfs"),
        (statfs::TRACEFS_MAGIC, "tracefs"),
        (statfs::SECURITYFS_MAGIC, "securityfs"),
        (statfs::SELINUX_MAGIC, "selinuxfs"),
        (statfs::SMACK_MAGIC, "smackfs"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroup"),
        (statfs::BPF_FS_MAGIC, "bpf"),
        (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
        (statfs::NSFS_MAGIC, "nsfs"),
        (statfs::RDTGROUP_SUPER_MAGIC, "resctrl"),
    ];
    named
        .iter()
        .find(|(magic, _)| *magic == fs)
        .map(|(_, name)| *name)
        .or_else(|| {
            OTHERS
                .iter()
                .find(|(magic, _)| magic_number(fs) == *magic)
                .map(|(_, name)| *name)
        })
}

/// A file system's type as a number. Its C type's width and sign differ
/// by C library (glibc: i64; musl, the shipped static build: u64).
#[allow(clippy::unnecessary_cast)]
fn magic_number(fs: FsType) -> i64 {
    fs.0 as i64
}

/// Refuses a descriptor on a kernel file system.
fn not_kernel_state(fd: &OwnedFd) -> io::Result<()> {
    let fs = fstatfs(fd).map_err(io::Error::from)?.filesystem_type();
    match kernel_file_system(fs) {
        Some(name) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("on the kernel file system {name}: not read"),
        )),
        None => Ok(()),
    }
}

/// A regular file found by [`regular_files`], opened when it is read.
pub struct TreeFile {
    /// Its path below the walked directory, `/`-separated.
    pub relative: String,
    parent: Arc<OwnedFd>,
    name: std::ffi::OsString,
}

impl TreeFile {
    /// Opens the file for reading: refused if it became a link or
    /// anything but a regular file since it was listed.
    pub fn open(&self) -> io::Result<std::fs::File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = openat(
            self.parent.as_fd(),
            self.name.as_os_str(),
            flags,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        not_kernel_state(&fd)?;
        let stat = fstat(&fd).map_err(io::Error::from)?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no longer a regular file",
            ));
        }
        Ok(std::fs::File::from(fd))
    }
}

/// The directory at `path` (absolute or not, read from `root`) with every
/// link on the way resolved inside `root`.
pub fn open_dir_beneath(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let dir = openat2(root.as_fd(), path, how).map_err(io::Error::from)?;
    not_kernel_state(&dir)?;
    Ok(dir)
}

/// Every regular file below `dir`, in name order per directory, and how
/// many links were skipped.
pub fn regular_files(dir: OwnedFd) -> io::Result<(Vec<TreeFile>, u64)> {
    let mut files = Vec::new();
    let mut links = 0;
    let mut entries = 0;
    let mut pending = vec![(Arc::new(dir), String::new(), 0usize)];
    while let Some((parent, prefix, depth)) = pending.pop() {
        // A fresh open file description: a `dup` would share the offset
        // of every other copy, and a copy already listed to its end lists
        // nothing.
        let listing = Dir::openat(
            parent.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let mut names: Vec<(std::ffi::OsString, Option<Type>)> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io::Error::from)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            entries += 1;
            if entries > ENTRIES_MAX {
                return Err(io::Error::other(format!("more than {ENTRIES_MAX} entries")));
            }
            names.push((name.to_os_string(), entry.file_type()));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names.into_iter().rev() {
            let Some(text) = name.to_str() else {
                continue;
            };
            let relative = if prefix.is_empty() {
                text.to_string()
            } else {
                format!("{prefix}/{text}")
            };
            match kind {
                Some(Type::Symlink) => links += 1,
                Some(Type::File) => files.push(TreeFile {
                    relative,
                    parent: Arc::clone(&parent),
                    name,
                }),
                Some(Type::Directory) if depth < DEPTH_MAX => {
                    let flags =
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                    // Gone or swapped for a link since it was listed:
                    // skipped, never followed.
                    if let Ok(child) =
                        openat(parent.as_fd(), name.as_os_str(), flags, Mode::empty())
                    {
                        pending.push((Arc::new(child), relative, depth + 1));
                    }
                }
                // Devices, sockets, pipes, and what the file system does
                // not type: not data to upload.
                _ => {}
            }
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok((files, links))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_root(path: &std::path::Path) -> OwnedFd {
        std::fs::File::open(path).expect("root").into()
    }

    #[test]
    fn links_never_lead_outside_the_root() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (temp.path().join("root"), temp.path().join("outside"));
        std::fs::create_dir_all(root.join("ckpt/deep")).expect("dirs");
        std::fs::create_dir_all(&outside).expect("dirs");
        std::fs::write(outside.join("secret"), b"host file").expect("write");
        std::fs::write(root.join("ckpt/a.pth"), b"a").expect("write");
        std::fs::write(root.join("ckpt/deep/b.pth"), b"b").expect("write");
        // Links a hostile task plants: absolute, relative and up-and-out.
        std::os::unix::fs::symlink(&outside, root.join("ckpt/abs")).expect("link");
        std::os::unix::fs::symlink("../../outside/secret", root.join("ckpt/rel")).expect("link");
        std::os::unix::fs::symlink(&outside, root.join("escape")).expect("link");

        let root_fd = open_root(&root);
        let dir = open_dir_beneath(&root_fd, "/ckpt").expect("dir");
        let (files, links) = regular_files(dir).expect("walk");
        let names: Vec<&str> = files.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(names, ["a.pth", "deep/b.pth"]);
        assert_eq!(links, 2);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut files[1].open().expect("open"), &mut text)
            .expect("read");
        assert_eq!(text, "b");

        // A path through a link to an absolute host directory resolves
        // inside the root, where there is no such directory.
        let escaped = open_dir_beneath(&root_fd, "/escape");
        assert!(escaped.is_err(), "followed out of the root");
        assert!(
            open_dir_beneath(&root_fd, "../../outside").is_err() || {
                // `..` at the root stays at the root (RESOLVE_IN_ROOT).
                let (files, _) = regular_files(open_dir_beneath(&root_fd, "../..").expect("root"))
                    .expect("walk");
                files.iter().all(|f| !f.relative.contains("secret"))
            }
        );

        // A file swapped for a link after the walk is refused on open.
        std::fs::remove_file(root.join("ckpt/a.pth")).expect("remove");
        std::os::unix::fs::symlink(outside.join("secret"), root.join("ckpt/a.pth")).expect("link");
        assert!(files[0].open().is_err(), "opened through a link");
    }

    /// Copies of one descriptor share its offset: a walk through one must
    /// not leave the next walk through another with nothing to list (the
    /// last checkpoint upload of a task reads a copy kept while it ran).
    #[test]
    fn a_directory_walked_once_is_walked_whole_again_through_a_copy() {
        let temp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(temp.path().join("ckpt")).expect("dirs");
        std::fs::write(temp.path().join("ckpt/a.pth"), b"a").expect("write");
        let dir = open_dir_beneath(&open_root(temp.path()), "/ckpt").expect("dir");
        let copy = dir.try_clone().expect("dup");
        for walked in [dir, copy] {
            let (files, _) = regular_files(walked).expect("walk");
            assert_eq!(files.len(), 1);
        }
    }

    #[test]
    fn kernel_file_systems_are_never_read() {
        let host_root = open_root(std::path::Path::new("/"));
        for path in ["/proc", "/proc/self", "/sys", "/sys/kernel"] {
            let error = open_dir_beneath(&host_root, path).map(drop).unwrap_err();
            assert!(
                error.to_string().contains("kernel file system"),
                "{path}: {error}"
            );
        }
        assert!(open_dir_beneath(&host_root, "/usr").is_ok());
    }
}
