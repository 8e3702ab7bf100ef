//! A server's data directory: the lock that gives it to one process, and
//! the node ID kept in it.
//!
//! Invariants: one process at a time uses a data directory (an exclusive
//! `flock` on `<data>/gantry.lock`, which goes with the process, so a killed
//! server leaves nothing to clean up); a node's ID is chosen once, on its
//! first start, and read back on every later one (`<data>/node-id`).

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::path::Path;

/// The lock file in a data directory: held (`flock`, exclusive) by the one
/// process using the directory, and holding its process ID for messages.
pub const DATA_DIR_LOCK_FILE: &str = "gantry.lock";

/// The file holding a node's Raft ID.
pub const NODE_ID_FILE: &str = "node-id";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("another gantry process is using {dir} ({holder}); stop it first")]
    Busy { dir: String, holder: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> DataDirError {
    move |source| DataDirError::Io { what, source }
}

/// How long [`lock`] waits for a holder to let go. A process that was
/// just killed (a supervisor restarting a crashed server, a test killing a
/// whole cluster) can hold the lock for a moment while the kernel tears it
/// down; a live server holds it for good, and the wait then ends in
/// [`DataDirError::Busy`].
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the data directory's exclusive lock, waiting up to [`LOCK_WAIT`]
/// for a holder to go, or says which process holds it. Held until the
/// returned handle is dropped.
pub fn lock(data_dir: &Path) -> Result<Flock<std::fs::File>, DataDirError> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(DATA_DIR_LOCK_FILE);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut waiting_noted = false;
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(gantry_raft::private_fs::FILE_MODE)
            .open(&path)
            .map_err(io(format!(
                "opening the data directory's lock file {}",
                path.display()
            )))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let mut file: &std::fs::File = &lock;
                let noted = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                if let Err(error) = noted {
                    tracing::warn!(path = %path.display(), %error, "cannot note this process in the lock file");
                }
                return Ok(lock);
            }
            Err((file, Errno::EWOULDBLOCK)) => {
                // The holder is described only when it is told: at the
                // first wait and when the wait gives up.
                if std::time::Instant::now() >= deadline {
                    return Err(DataDirError::Busy {
                        dir: data_dir.display().to_string(),
                        holder: describe_holder(file, &path),
                    });
                }
                if !waiting_noted {
                    waiting_noted = true;
                    let holder = describe_holder(file, &path);
                    tracing::debug!(dir = %data_dir.display(), %holder, wait = ?LOCK_WAIT, "the data directory is locked; waiting for its holder to go");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err((_, errno)) => {
                return Err(DataDirError::Invalid(format!(
                    "cannot lock the data directory {} through {}: {}",
                    data_dir.display(),
                    path.display(),
                    errno.desc()
                )))
            }
        }
    }
}

/// Names the process noted in the lock file, and whether it still runs
/// (a holder that is gone points at a descendant that inherited the lock).
fn describe_holder(mut file: std::fs::File, path: &Path) -> String {
    use std::io::Read;
    let mut noted = String::new();
    let _ = file.read_to_string(&mut noted);
    match noted.trim().parse::<u32>() {
        Ok(pid) => {
            let state = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                Ok(name) => format!("running as {}", name.trim()),
                Err(_) => "no longer running".to_string(),
            };
            format!("pid {pid}, {state}, holds {}", path.display())
        }
        Err(_) => format!("it holds {}", path.display()),
    }
}

/// This node's Raft ID: random on first start, kept in `<data>/node-id`.
/// (A data directory from before IDs were kept belongs to node 1.)
pub fn node_id(data_dir: &Path) -> Result<u64, DataDirError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            DataDirError::Invalid(format!("{} does not hold a node ID", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = if data_dir.join("raft").exists() {
                1
            } else {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes)
                    .map_err(|e| DataDirError::Invalid(format!("generating a node ID: {e}")))?;
                // Small enough to read, large enough never to collide in one cluster.
                u64::from_le_bytes(bytes) % 1_000_000_000 + 1
            };
            gantry_raft::private_fs::write_file(&path, id.to_string().as_bytes())
                .map_err(io(format!("writing {}", path.display())))?;
            Ok(id)
        }
        Err(error) => Err(io(format!("reading {}", path.display()))(error)),
    }
}

/// The node ID kept in `data_dir`, without choosing one.
pub fn existing_node_id(data_dir: &Path) -> Result<u64, DataDirError> {
    let path = data_dir.join(NODE_ID_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(format!(
        "reading {} (is this a server's data directory?)",
        path.display()
    )))?;
    text.trim()
        .parse()
        .map_err(|_| DataDirError::Invalid(format!("{} does not hold a node ID", path.display())))
}
