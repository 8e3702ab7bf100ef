//! Directories and files only their owner can use: a data directory
//! (0700) and what it holds — the Raft log, the state, snapshots, secrets
//! (0600) — whatever the process umask.
//!
//! Invariant: each function leaves its path with exactly its mode, whether
//! it created the path or found it (an older version or another umask may
//! have made it wider).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A private directory's mode.
pub const DIR_MODE: u32 = 0o700;
/// A private file's mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents (0700), and sets `path` 0700.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Makes sure `path` is a 0600 file (created empty if missing), for a
/// library that opens the file itself (redb initializes an empty file).
pub fn prepare_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// Opens `path` for writing, created or truncated, 0600.
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `bytes` to `path` (created or truncated, 0600).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_file(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|meta| meta.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn modes_are_exact_for_new_and_found_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("a/b");
        create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&data), DIR_MODE);
        std::fs::set_permissions(&data, Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&data), DIR_MODE);

        let file = data.join("f");
        std::fs::write(&file, b"kept").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, Permissions::from_mode(0o666))
            .unwrap_or_else(|e| panic!("{e}"));
        prepare_file(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(std::fs::read(&file).ok().as_deref(), Some(&b"kept"[..]));

        let written = data.join("w");
        write_file(&written, b"x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&written), FILE_MODE);
    }
}
