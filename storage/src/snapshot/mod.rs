//! Snapshot export and install: the whole state as one consistent image.
//!
//! Invariants:
//! - An export reads the Raft layer's metadata row and every table in one
//!   read transaction, so the image is exactly the state at the applied
//!   position the metadata names — never ahead of it.
//! - An install checks the image whole (magic, checksum, known tables,
//!   every sealed row's checksum) before it changes anything, then replaces every registered table in one
//!   write transaction: a reader sees the old state or the new one.
//! - Tables come from [`crate::schema::ALL`]: a table with rows cannot be
//!   missing from an export, and none survives an install. An empty table
//!   is left out of the image; a table the image lacks (empty, or written
//!   before the table existed) is installed empty — the tallies and the
//!   list's indexes, derived from the rows, are then built from them
//!   (`tally::rebuild_if_stale`, `indexes::rebuild_if_stale`); new tables
//!   go at the end of the registry, so at the end of an image;
//!   a table this version does not know is refused by name.
//!
//! Format 2: `GNTSNAP2`, the SHA-256 of the body, then the body: bincode of
//! the tables' names and raw rows. Format 1 ([`format1`]) is still read.
//!
//! Failpoint (with the `failpoints` feature): `storage::export::after_meta`,
//! between reading the metadata and reading the tables.

mod format1;

use crate::error::StorageError;
use crate::row;
use crate::schema::{self, RawRows, RegisteredTable};
use crate::store::Store;
use crate::tables::{self, decode, encode, Tables};
use redb::{ReadableDatabase, TableHandle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"GNTSNAP2";
const CHECKSUM_LEN: usize = 32;

#[derive(Serialize, Deserialize)]
struct TableImage {
    name: String,
    rows: RawRows,
}

/// The state and the Raft layer's metadata, read at one moment.
#[derive(Debug)]
pub struct StateExport {
    /// The Raft layer's row (absent in a store nothing was applied to).
    pub raft_meta: Option<Vec<u8>>,
    /// The snapshot image of every table (the Raft row left out).
    pub image: Vec<u8>,
}

impl Store {
    /// The committed state and the Raft metadata from one read transaction.
    pub fn export_state(&self) -> Result<StateExport, StorageError> {
        let txn = self.database().begin_read()?;
        let raft_meta = txn
            .open_table(tables::META)?
            .get(tables::RAFT_META_KEY)?
            .map(|value| {
                row::unseal(&tables::META, &tables::RAFT_META_KEY, value.value())
                    .map(<[u8]>::to_vec)
            })
            .transpose();
        let raft_meta = self.note(raft_meta)?;
        fail::fail_point!("storage::export::after_meta");
        let mut images = Vec::with_capacity(schema::ALL.len());
        for table in schema::ALL {
            let mut rows = table.export(&txn)?;
            if table.table_name() == tables::META.name() {
                rows.retain(|(key, _)| key.as_slice() != tables::RAFT_META_KEY.as_bytes());
            }
            // Installed empty where the image lacks it, so nothing is lost;
            // and a member of an older build, which refuses a table it does
            // not know, still installs the image of a newer one until the
            // new table holds rows (written only by a gated command, so
            // once every member understands it).
            if rows.is_empty() {
                continue;
            }
            images.push(TableImage {
                name: table.table_name().to_string(),
                rows,
            });
        }
        let body = encode(&images)?;
        let mut image = Vec::with_capacity(MAGIC.len() + CHECKSUM_LEN + body.len());
        image.extend_from_slice(MAGIC);
        image.extend_from_slice(&Sha256::digest(&body));
        image.extend_from_slice(&body);
        Ok(StateExport { raft_meta, image })
    }

    /// Serializes the committed state (without the Raft metadata).
    pub fn export_snapshot(&self) -> Result<Vec<u8>, StorageError> {
        Ok(self.export_state()?.image)
    }

    /// Replaces the whole state with a snapshot image and `raft_meta`.
    pub fn install_snapshot(&self, bytes: &[u8], raft_meta: &[u8]) -> Result<(), StorageError> {
        if let Some(body) = bytes.strip_prefix(format1::MAGIC.as_slice()) {
            return format1::install(self, body, raft_meta);
        }
        let images = decode_image(bytes)?;
        let rows_of = |table: &dyn RegisteredTable| {
            images
                .iter()
                .find(|image| image.name == table.table_name())
                .map(|image| image.rows.as_slice())
                .unwrap_or_default()
        };
        let sealed = rows_of(&tables::META)
            .iter()
            .any(|(key, _)| key.as_slice() == row::FORMAT_MARKER_KEY.as_bytes());
        if sealed {
            for table in schema::ALL {
                table.check_sealed(rows_of(*table))?;
            }
        }
        let txn = self.database().begin_write()?;
        for table in schema::ALL {
            table.replace(&txn, rows_of(*table))?;
        }
        // An image from before rows were sealed is sealed here, once.
        row::seal_legacy_rows(&txn)?;
        Tables::new(&txn).set_meta(tables::RAFT_META_KEY, raft_meta)?;
        // An image from before the tallies holds none: counted from its rows.
        crate::tally::rebuild_if_stale(&txn)?;
        // And none of the list's indexes: built from its workflows.
        crate::indexes::rebuild_if_stale(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

/// The tables of a format-2 image, checked: magic, checksum, known names.
fn decode_image(bytes: &[u8]) -> Result<Vec<TableImage>, StorageError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| StorageError::Snapshot("not a Gantry state snapshot (bad magic)".into()))?;
    if rest.len() < CHECKSUM_LEN {
        return Err(StorageError::Snapshot(
            "truncated state snapshot (no checksum)".into(),
        ));
    }
    let (checksum, body) = rest.split_at(CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(StorageError::Snapshot(
            "state snapshot checksum mismatch: the image is corrupt or truncated".into(),
        ));
    }
    let images: Vec<TableImage> = decode(body)?;
    for image in &images {
        if schema::table_named(&image.name).is_none() {
            return Err(StorageError::Snapshot(format!(
                "the snapshot holds table `{}`, which this version does not know; \
                 upgrade this node before installing it",
                image.name
            )));
        }
    }
    Ok(images)
}
