//! Snapshot files: what a snapshot is on disk (`snapshot.bin`), on the
//! wire (InstallSnapshot) and in a backup file (`gantry snapshot save`).
//! Named "snapshot file", not "archive", because the workflow archive is
//! another thing.
//!
//! Format: a tar archive, zstd-compressed (with zstd's content checksum),
//! holding exactly two members in this order: `meta.json`
//! ([`SnapshotFileMeta`]: format name and version, the last log id and
//! membership the state reflects, the size of the state) and `state.bin`
//! (the storage image of [`gantry_storage::Store::export_snapshot`]).
//!
//! Invariants: [`read`] accepts only what [`write`] produces: anything else
//! (another file, a truncated or corrupted one, a newer format version) is
//! refused with a [`SnapshotFileError`] saying which; the decompressed size
//! is bounded by [`STATE_BYTES_MAX`], so a hostile file cannot exhaust
//! memory.

use crate::types::{GantryNode, LogId, NodeId, StoredMembership};
use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// `format` of every Gantry snapshot archive.
pub const FORMAT_NAME: &str = "gantry-snapshot";
/// The version [`write`] produces and the highest [`read`] accepts.
pub const FORMAT_VERSION: u32 = 1;
pub const META_MEMBER: &str = "meta.json";
pub const STATE_MEMBER: &str = "state.bin";
/// zstd level: fast, and storage images compress well.
pub const ZSTD_LEVEL: i32 = 3;
/// Largest state image accepted.
pub const STATE_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Largest `meta.json` accepted.
const META_BYTES_MAX: u64 = 1024 * 1024;
/// First bytes of every zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// `meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFileMeta {
    pub format: String,
    pub version: u32,
    /// Openraft's snapshot id (unique per snapshot).
    pub snapshot_id: String,
    /// The last log entry the state reflects (none for an empty log).
    pub last_log_id: Option<LogId>,
    /// The membership as of that entry.
    pub membership: StoredMembership,
    /// Size of `state.bin`, in bytes.
    pub state_bytes: u64,
}

impl SnapshotFileMeta {
    pub fn snapshot_meta(&self) -> SnapshotMeta<NodeId, GantryNode> {
        SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("not a Gantry snapshot: {0}")]
    Foreign(String),
    #[error("the snapshot is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("the snapshot has format version {found}; this build reads up to {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("writing the snapshot: {0}")]
    Write(#[from] std::io::Error),
}

/// The archive of `image` (a storage image) with `meta`.
pub fn write(
    meta: &SnapshotMeta<NodeId, GantryNode>,
    image: &[u8],
) -> Result<Vec<u8>, SnapshotFileError> {
    let archive_meta = SnapshotFileMeta {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        snapshot_id: meta.snapshot_id.clone(),
        last_log_id: meta.last_log_id,
        membership: meta.last_membership.clone(),
        state_bytes: image.len() as u64,
    };
    let meta_json = serde_json::to_vec_pretty(&archive_meta)
        .map_err(|e| SnapshotFileError::Write(std::io::Error::other(e)))?;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    let mut tar = tar::Builder::new(encoder);
    for (name, bytes) in [(META_MEMBER, meta_json.as_slice()), (STATE_MEMBER, image)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Reads and checks an archive: its meta and the state image.
pub fn read(bytes: &[u8]) -> Result<(SnapshotFileMeta, Vec<u8>), SnapshotFileError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Err(SnapshotFileError::Foreign(
            "it is not zstd-compressed (a snapshot is a tar archive compressed with zstd)".into(),
        ));
    }
    let decoder = zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| SnapshotFileError::Corrupt(format!("zstd: {e}")))?;
    let mut tar = tar::Archive::new(decoder);
    let (meta, state) = read_members(&mut tar)?;
    // Read to the end: the zstd checksum is checked when the frame ends.
    let mut rest = Vec::new();
    tar.into_inner()
        .take(1 << 20)
        .read_to_end(&mut rest)
        .map_err(|e| SnapshotFileError::Corrupt(format!("zstd: {e}")))?;
    Ok((meta, state))
}

/// `meta.json` (checked) and `state.bin`, in that order.
fn read_members<R: Read>(
    tar: &mut tar::Archive<R>,
) -> Result<(SnapshotFileMeta, Vec<u8>), SnapshotFileError> {
    let mut entries = tar
        .entries()
        .map_err(|e| SnapshotFileError::Corrupt(format!("tar: {e}")))?;
    let mut member = |expected: &str, limit: u64| -> Result<Vec<u8>, SnapshotFileError> {
        let mut entry = match entries.next() {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                return Err(SnapshotFileError::Corrupt(format!(
                    "reading {expected}: {e}"
                )))
            }
            None => {
                return Err(SnapshotFileError::Corrupt(format!(
                    "the archive ends before {expected}"
                )))
            }
        };
        let path = entry
            .path()
            .map_err(|e| SnapshotFileError::Corrupt(format!("tar: {e}")))?
            .to_string_lossy()
            .into_owned();
        if path != expected {
            return Err(SnapshotFileError::Foreign(format!(
                "the archive holds {path:?} where {expected} belongs"
            )));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > limit {
            return Err(SnapshotFileError::Corrupt(format!(
                "{expected} claims {size} bytes, more than the {limit} accepted"
            )));
        }
        let mut data = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
        entry
            .read_to_end(&mut data)
            .map_err(|e| SnapshotFileError::Corrupt(format!("reading {expected}: {e}")))?;
        if data.len() as u64 != size {
            return Err(SnapshotFileError::Corrupt(format!(
                "{expected} holds {} of its {size} bytes",
                data.len()
            )));
        }
        Ok(data)
    };
    let meta_json = member(META_MEMBER, META_BYTES_MAX)?;
    let meta: SnapshotFileMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| SnapshotFileError::Foreign(format!("{META_MEMBER}: {e}")))?;
    if meta.format != FORMAT_NAME {
        return Err(SnapshotFileError::Foreign(format!(
            "{META_MEMBER} names format {:?}",
            meta.format
        )));
    }
    if meta.version > FORMAT_VERSION {
        return Err(SnapshotFileError::Version {
            found: meta.version,
        });
    }
    let state = member(STATE_MEMBER, STATE_BYTES_MAX.min(meta.state_bytes))?;
    Ok((meta, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta<NodeId, GantryNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "3-42-7".into(),
        }
    }

    #[test]
    fn archives_round_trip() {
        let image = b"GNTSNAP1".repeat(1000);
        let bytes = write(&meta(), &image).expect("writes");
        assert!(bytes.starts_with(&ZSTD_MAGIC));
        assert!(bytes.len() < image.len());
        let (read_meta, state) = read(&bytes).expect("reads");
        assert_eq!(state, image);
        assert_eq!(read_meta.snapshot_meta(), meta());
        assert_eq!(read_meta.version, FORMAT_VERSION);
    }

    #[test]
    fn truncated_corrupt_and_foreign_files_are_refused() {
        let image: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let bytes = write(&meta(), &image).expect("writes");
        for cut in [bytes.len() - 1, bytes.len() / 2, 10, 4] {
            let error = read(&bytes[..cut]).expect_err("truncated");
            assert!(
                matches!(error, SnapshotFileError::Corrupt(_)),
                "cut at {cut}: {error}"
            );
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        let error = read(&flipped).expect_err("corrupt");
        assert!(matches!(error, SnapshotFileError::Corrupt(_)), "{error}");
        let error = read(b"hello, world").expect_err("foreign");
        assert!(
            error.to_string().contains("not a Gantry snapshot"),
            "{error}"
        );
        // zstd, but not a tar archive.
        let not_tar = zstd::bulk::compress(b"just some text, long enough", 3).unwrap();
        assert!(read(&not_tar).is_err());
        // A tar + zstd archive of something else.
        let mut other = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_cksum();
        other
            .append_data(&mut header, "README", &b"hi\n"[..])
            .unwrap();
        let other = zstd::bulk::compress(&other.into_inner().unwrap(), 3).unwrap();
        let error = read(&other).expect_err("foreign archive");
        assert!(matches!(error, SnapshotFileError::Foreign(_)), "{error}");
    }
}
