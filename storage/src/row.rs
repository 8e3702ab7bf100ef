//! The row envelope: every value of a bytes-valued table is sealed with its
//! format and a checksum, and checked on every read.
//!
//! A sealed value is `[ROW_FORMAT][payload][CRC-32C of format and payload,
//! little endian]`. CRC-32C finds every flip of up to 32 adjacent bits and
//! costs a few nanoseconds per row with the CPU's instruction, so checking
//! every read is cheap. A value whose checksum or format is wrong is never
//! decoded: the read fails with [`StorageError::Corrupt`] naming the table
//! and the key, and the store notes it (`Store::corruption`).
//!
//! Invariants:
//! - Every value of a table whose value type is bytes is sealed, the Raft
//!   layer's row included, and so is every value of the Raft log's own
//!   file (`gantry-raft`'s `log_store`); fixed-width and index tables (counters, the
//!   status index, …) are covered by redb's page checksums, checked when the
//!   file is opened, and by the replicas' state comparison.
//! - A store, or a snapshot image, written before rows were sealed has no
//!   [`FORMAT_MARKER_KEY`] row in `meta`; [`seal_legacy_rows`] seals every
//!   value once and writes the marker in the same transaction.

use crate::error::StorageError;
use crate::tables::{decode, encode, META};
use redb::{ReadableTable, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// The envelope's format byte: the first and only one so far.
pub(crate) const ROW_FORMAT: u8 = 1;
const CHECKSUM_BYTES: usize = 4;
/// `meta` row whose presence says every value is sealed.
pub(crate) const FORMAT_MARKER_KEY: &str = "\0row_format";

/// `payload` in the envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(1 + payload.len() + CHECKSUM_BYTES);
    sealed.push(ROW_FORMAT);
    sealed.extend_from_slice(payload);
    let checksum = crc32c::crc32c(&sealed);
    sealed.extend_from_slice(&checksum.to_le_bytes());
    sealed
}

/// A record encoded and sealed, ready to insert.
pub(crate) fn encode_row<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    Ok(seal(&encode(value)?))
}

/// The payload of a sealed value, checked; `table` and `key` name the row
/// in the error.
pub fn unseal<'a>(
    table: &impl TableHandle,
    key: &dyn Debug,
    sealed: &'a [u8],
) -> Result<&'a [u8], StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        table: table.name().to_string(),
        key: format!("{key:?}"),
        reason,
    };
    if sealed.len() < 1 + CHECKSUM_BYTES {
        return Err(corrupt(format!(
            "a value of {} bytes is shorter than its envelope",
            sealed.len()
        )));
    }
    let (body, stored) = sealed.split_at(sealed.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    match body[0] {
        ROW_FORMAT => Ok(&body[1..]),
        other => Err(corrupt(format!(
            "row format {other}, which this version does not know"
        ))),
    }
}

/// A sealed value checked and decoded.
pub(crate) fn decode_row<T: DeserializeOwned>(
    table: &impl TableHandle,
    key: &dyn Debug,
    sealed: &[u8],
) -> Result<T, StorageError> {
    decode(unseal(table, key, sealed)?).map_err(|error| {
        StorageError::Decode(format!("table `{}`, key {key:?}: {error}", table.name()))
    })
}

/// Whether every value of the open write transaction's tables is sealed.
pub(crate) fn is_sealed(txn: &WriteTransaction) -> Result<bool, StorageError> {
    Ok(txn.open_table(META)?.get(FORMAT_MARKER_KEY)?.is_some())
}

/// Seals every value of a store or image written before rows were sealed,
/// once: a no-op when the marker is present. A table that holds no rows
/// costs nothing, so a new store only gains the marker.
pub(crate) fn seal_legacy_rows(txn: &WriteTransaction) -> Result<(), StorageError> {
    if is_sealed(txn)? {
        return Ok(());
    }
    for table in crate::schema::ALL {
        table.seal_values(txn)?;
    }
    txn.open_table(META)?
        .insert(FORMAT_MARKER_KEY, seal(&[ROW_FORMAT]).as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::WORKFLOWS;

    #[test]
    fn a_sealed_value_round_trips() {
        let sealed = seal(b"payload");
        assert_eq!(
            unseal(&WORKFLOWS, &"wf-1", &sealed).expect("unseal"),
            b"payload"
        );
        assert_eq!(unseal(&WORKFLOWS, &"wf-1", &seal(&[])).expect("empty"), b"");
    }

    #[test]
    fn every_single_bit_flip_is_caught_and_names_the_row() {
        let sealed = seal(b"a workflow row of some length");
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let error = unseal(&WORKFLOWS, &"wf-1", &flipped).expect_err("a flip is caught");
            let text = error.to_string();
            assert!(
                text.contains("workflows") && text.contains("wf-1"),
                "{text}"
            );
        }
    }

    #[test]
    fn truncated_and_zeroed_values_are_refused() {
        let sealed = seal(b"row");
        for cut in 0..sealed.len() {
            assert!(unseal(&WORKFLOWS, &"k", &sealed[..cut]).is_err(), "{cut}");
        }
        assert!(unseal(&WORKFLOWS, &"k", &vec![0u8; sealed.len()]).is_err());
    }

    #[test]
    fn an_unknown_format_is_refused_by_name() {
        let mut body = vec![ROW_FORMAT + 1, 7];
        body.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        let error = unseal(&WORKFLOWS, &"k", &body).expect_err("unknown format");
        assert!(error.to_string().contains("row format 2"), "{error}");
    }
}
