//! A running task's files as the executor reads them for checkpoints:
//! through the root of the task's sandbox, never the host's paths.
//!
//! The sandbox's root is a tmpfs that exists only while its processes do,
//! so a checkpoint's last upload (after the command exits) reads the
//! directory through a descriptor opened while the task ran: every open
//! of a directory is kept, and the keeper refreshes them each
//! [`REFRESH_INTERVAL`].
//!
//! Invariants: the task's root is that of the sandbox's first process,
//! reached through its `/proc` directory after checking that its parent is
//! the sandbox's `bwrap` (so a recycled process id is never read); every
//! lookup below the root goes through `data::beneath`, so nothing the task
//! links to leads outside its own file system.

use crate::data::beneath::open_dir_beneath;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the directories of a running task's checkpoints are opened
/// again, so the last upload reads what is there at most this long
/// before the command exits.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The files of one running task, by the process id of its `bwrap`.
pub struct TaskFiles {
    sandbox_pid: u32,
    /// The directories opened so far, by path in the task.
    opened: Mutex<HashMap<String, Arc<OwnedFd>>>,
}

impl TaskFiles {
    pub fn new(sandbox_pid: u32) -> TaskFiles {
        TaskFiles {
            sandbox_pid,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The directory at `path` in the task's file system: opened afresh
    /// while the task runs, else the one opened last.
    pub fn open_dir(&self, path: &str) -> io::Result<OwnedFd> {
        match self.root().and_then(|root| open_dir_beneath(&root, path)) {
            Ok(dir) => {
                let kept = dir.try_clone()?;
                self.lock().insert(path.to_string(), Arc::new(kept));
                Ok(dir)
            }
            Err(error) => match self.lock().get(path) {
                // Its own open file description, so what one reader listed
                // never moves another's offset.
                Some(kept) => openat(
                    kept.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io::Error::from),
                None => Err(error),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OwnedFd>>> {
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The root directory of the sandbox's first process.
    fn root(&self) -> io::Result<OwnedFd> {
        let pid = self.sandbox_pid;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
        let child = children
            .split_whitespace()
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the sandbox has no process"))?;
        let process = std::fs::File::open(format!("/proc/{child}"))?;
        // From here on `process` names that very process: if it exits, what
        // is read through it fails rather than reading another's.
        let stat = openat(
            process.as_fd(),
            "stat",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let mut stat_text = String::new();
        io::Read::read_to_string(&mut std::fs::File::from(stat), &mut stat_text)?;
        let stat = stat_text;
        if parent_of(&stat) != Some(pid) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the sandbox's process is gone",
            ));
        }
        openat(
            process.as_fd(),
            "root",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }
}

/// The first child of process `parent`, checked to be its child (so a
/// recycled process id is never taken for it).
fn first_child(parent: u32) -> io::Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))?;
    let child: u32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the sandbox has no process"))?;
    let stat = std::fs::read_to_string(format!("/proc/{child}/stat"))?;
    if parent_of(&stat) != Some(parent) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the sandbox's process is gone",
        ));
    }
    Ok(child)
}

/// A process of a task, with the parent it was found under.
#[derive(Clone, Copy, Debug)]
pub struct TaskProcess {
    pub pid: u32,
    pub parent: u32,
}

/// The task's own process (the command `bwrap` started, else the
/// sandbox's first process): what an exec enters.
pub fn task_process(sandbox_pid: u32) -> io::Result<TaskProcess> {
    let init = first_child(sandbox_pid)?;
    let process = match first_child(init) {
        Ok(command) => TaskProcess {
            pid: command,
            parent: init,
        },
        Err(_) => TaskProcess {
            pid: init,
            parent: sandbox_pid,
        },
    };
    Ok(process)
}

/// The environment of process `pid`, as it holds it now (the task's own:
/// only ever given to a command that runs inside the task).
pub fn environment_of(pid: u32) -> io::Result<Vec<(OsString, OsString)>> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let text = std::str::from_utf8(entry).ok()?;
            let (name, value) = text.split_once('=')?;
            Some((OsString::from(name), OsString::from(value)))
        })
        .collect())
}

/// The parent process id in a `/proc/<pid>/stat` line (the field after
/// the command, which may itself hold spaces and parentheses).
pub fn parent_of(stat: &str) -> Option<u32> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_with_spaces_and_parentheses() {
        assert_eq!(parent_of("42 (a (b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("garbage"), None);
    }
}
