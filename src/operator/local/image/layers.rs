//! Unpacking image layers into a root filesystem, as the OCI image spec
//! says ("Applying Changesets"): layers in order, each a tar (plain, gzip
//! or zstd); `.wh.NAME` removes NAME from the layers below, `.wh..wh..opq`
//! empties its directory of what the layers below put there.
//!
//! Invariants: nothing is written outside the root (the `tar` crate's
//! `unpack_in` refuses `..` and absolute paths and checks each parent
//! directory's real path); device nodes are never made (the sandbox brings
//! its own `/dev`); setuid and setgid bits are dropped and files belong to
//! the operator's user (inside the task's user namespace that is the
//! task's own user); a layer's bytes are checked against its digest while
//! they are read, and a mismatch fails the unpack.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";
/// A whiteout's prefix.
const WHITEOUT: &str = ".wh.";

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(media_type: &str) -> Result<Compression, String> {
        if media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") {
            Ok(Compression::Gzip)
        } else if media_type.ends_with("tar+zstd") {
            Ok(Compression::Zstd)
        } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
            Ok(Compression::None)
        } else {
            Err(format!(
                "layer media type '{media_type}' is not a tar layer this executor can unpack"
            ))
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// The path of a tar entry relative to the root, refused when it leaves it.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Removes `path` whatever it is (a directory with its contents); absent is
/// fine. Never follows a link.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Whether `path` (relative) lies under a directory that is a link, in
/// `root`: a whiteout there would act outside the directory it names.
fn through_link(root: &Path, path: &Path) -> bool {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = path.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

/// Applies one layer from `blob` (compressed as `compression`) to `root`,
/// checking that the blob's bytes hash to `digest` (`sha256:<hex>`).
/// Blocking.
pub fn apply(
    root: &Path,
    blob: impl Read,
    compression: Compression,
    digest: &str,
) -> Result<(), String> {
    let mut hashing = Hashing {
        inner: blob,
        hasher: Sha256::new(),
    };
    {
        let reader: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut hashing),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut hashing)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut hashing)
                    .map_err(|error| format!("layer {digest}: {error}"))?,
            ),
        };
        unpack(root, reader).map_err(|error| format!("layer {digest}: {error}"))?;
    }
    // What the tar reader left unread (padding) still counts.
    io::copy(&mut hashing, &mut io::sink()).map_err(|error| format!("layer {digest}: {error}"))?;
    let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    if actual != digest {
        return Err(format!(
            "layer {digest} does not match its digest (read {actual}): refused"
        ));
    }
    Ok(())
}

fn unpack(root: &Path, reader: impl Read) -> Result<(), String> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // What this layer made: whiteouts remove only what lay below.
    let mut made: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Some(path) = relative(&raw) else {
            return Err(format!("entry {} leaves the root", raw.display()));
        };
        let Some(name) = path
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if through_link(root, &path) {
            return Err(format!("entry {} lies under a link", path.display()));
        }
        if name == OPAQUE {
            let dir = root.join(&parent);
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.flatten() {
                    let relative_child = parent.join(child.file_name());
                    if !made.contains(&relative_child) {
                        remove(&child.path()).map_err(|e| e.to_string())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let target = parent.join(hidden);
            if !made.contains(&target) {
                remove(&root.join(&target)).map_err(|e| e.to_string())?;
            }
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
            continue;
        }
        let host = root.join(&path);
        // A file over a directory, or a directory over a file, replaces it.
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.is_dir() && !kind.is_dir() => {
                remove(&host).map_err(|e| e.to_string())?
            }
            Ok(meta) if !meta.is_dir() && kind.is_dir() => {
                remove(&host).map_err(|e| e.to_string())?
            }
            _ => {}
        }
        // Permissions without setuid, setgid and sticky... but sticky stays
        // (a world-writable /tmp needs it).
        let mode = entry.header().mode().unwrap_or(0o644) & 0o1777;
        if !entry
            .unpack_in(root)
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            return Err(format!("entry {} leaves the root", path.display()));
        }
        if !kind.is_symlink() && !kind.is_hard_link() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        made.insert(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Item<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn layer(items: &[Item]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            match item {
                Item::File(path, bytes, mode) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(*mode);
                    builder.append_data(&mut header, path, *bytes).unwrap();
                }
                Item::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, path, &[][..]).unwrap();
                }
                Item::Link(path, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, path, target).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    fn apply_plain(root: &Path, bytes: &[u8]) -> Result<(), String> {
        apply(root, bytes, Compression::None, &digest(bytes))
    }

    #[test]
    fn whiteouts_remove_what_lower_layers_made() {
        let root = tempfile::tempdir().unwrap();
        let lower = layer(&[
            Item::Dir("etc"),
            Item::File("etc/a", b"a", 0o644),
            Item::File("etc/b", b"b", 0o644),
            Item::Dir("opt"),
            Item::File("opt/old", b"old", 0o644),
            Item::File("bin/tool", b"#!", 0o4755),
        ]);
        apply_plain(root.path(), &lower).unwrap();
        let upper = layer(&[
            Item::File("etc/.wh.a", b"", 0o644),
            Item::File("opt/new", b"new", 0o644),
            Item::File("opt/.wh..wh..opq", b"", 0o644),
        ]);
        apply_plain(root.path(), &upper).unwrap();
        assert!(!root.path().join("etc/a").exists());
        assert!(root.path().join("etc/b").exists());
        assert!(
            !root.path().join("opt/old").exists(),
            "opaque hides the lower layer"
        );
        assert!(
            root.path().join("opt/new").exists(),
            "but keeps its own layer's"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.path().join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "no setuid");
    }

    #[test]
    fn a_layer_that_does_not_match_its_digest_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let bytes = layer(&[Item::File("a", b"a", 0o644)]);
        let error = apply(
            root.path(),
            &bytes[..],
            Compression::None,
            &digest(b"other"),
        )
        .unwrap_err();
        assert!(error.contains("does not match its digest"), "{error}");
    }

    #[test]
    fn nothing_is_written_through_a_link_or_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let lower = layer(&[Item::Link("escape", &target)]);
        apply_plain(root.path(), &lower).unwrap();
        for upper in [
            layer(&[Item::File("escape/owned", b"x", 0o644)]),
            layer(&[Item::File("escape/.wh.victim", b"", 0o644)]),
        ] {
            std::fs::write(outside.path().join("victim"), b"keep").unwrap();
            assert!(apply_plain(root.path(), &upper).is_err());
            assert!(!outside.path().join("owned").exists());
            assert!(outside.path().join("victim").exists());
        }
        // A `..` path in the header itself.
        let mut raw = layer(&[Item::File("xx/evil", b"x", 0o644)]);
        raw[..6].copy_from_slice(b"../evi");
        let mut header = tar::Header::from_byte_slice(&raw[..512]).clone();
        header.set_cksum();
        raw[..512].copy_from_slice(header.as_bytes());
        assert!(apply_plain(root.path(), &raw).is_err());
    }

    #[test]
    fn gzip_and_zstd_layers_unpack() {
        use std::io::Write;
        let bytes = layer(&[Item::File("hello", b"world", 0o644)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&bytes[..], 1).unwrap();
        for (blob, compression) in [(gz, Compression::Gzip), (zst, Compression::Zstd)] {
            let root = tempfile::tempdir().unwrap();
            apply(root.path(), &blob[..], compression, &digest(&blob)).unwrap();
            assert_eq!(std::fs::read(root.path().join("hello")).unwrap(), b"world");
        }
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        );
        assert!(Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+lz4").is_err());
    }
}
