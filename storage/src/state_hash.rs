//! The state hash: one SHA-256 over the whole replicated state, so replicas
//! can compare their states without shipping them.
//!
//! Invariants:
//! - The hash covers every table of [`crate::schema::ALL`] (a table cannot
//!   be left out) as redb's own key and value bytes, in key order, read in
//!   one read transaction: it is the state at exactly one applied position.
//! - The Raft layer's metadata row (last applied log id and membership) is
//!   hashed like any other row, so two replicas agree only at the same
//!   applied position; it is also returned, so the caller learns which
//!   position the hash is of from the same transaction.
//! - The input is unambiguous: every name, key and value is preceded by its
//!   length and every table ends with its row count, so no two different
//!   states feed the hasher the same bytes.
//! - Rows are streamed into the hasher, never held in memory together; the
//!   read transaction does not block writers (redb's MVCC), so a long hash
//!   never stalls apply.

use crate::error::StorageError;
use crate::schema;
use crate::store::{ReadView, Store};
use crate::tables;

use sha2::{Digest, Sha256};

/// Domain separation: a future change of what is hashed changes this tag.
const HASH_DOMAIN: &[u8] = b"gantry-state-hash-1\0";

/// What this build's state hash covers: a fingerprint of the hash's domain
/// tag and every table's name, in order. Two builds whose fingerprints
/// differ hash different things, so their hashes of one state differ and
/// must not be compared (a rolling upgrade that adds a table).
pub fn state_schema() -> String {
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    for table in schema::ALL {
        feed(&mut hasher, table.table_name().as_bytes());
    }
    let digest: [u8; 32] = hasher.finalize().into();
    hex_of(&digest[..8])
}

/// The hash of a state and the position it was taken at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHash {
    /// The Raft layer's metadata row read with the tables (absent in a
    /// store nothing was applied to).
    pub raft_meta: Option<Vec<u8>>,
    pub digest: [u8; 32],
    /// Rows hashed, over every table.
    pub rows: u64,
}

impl StateHash {
    /// The digest as lowercase hex.
    pub fn hex(&self) -> String {
        hex_of(&self.digest)
    }
}

/// `bytes` as lowercase hex.
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn feed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

impl ReadView {
    /// The hash of the state this view sees (see the module doc).
    pub fn state_hash(&self) -> Result<StateHash, StorageError> {
        let txn = self.transaction();
        let raft_meta = txn
            .open_table(tables::META)?
            .get(tables::RAFT_META_KEY)?
            .map(|value| {
                crate::row::unseal(&tables::META, &tables::RAFT_META_KEY, value.value())
                    .map(<[u8]>::to_vec)
            })
            .transpose()?;
        let mut hasher = Sha256::new();
        hasher.update(HASH_DOMAIN);
        let mut rows = 0;
        for table in schema::ALL {
            feed(&mut hasher, table.table_name().as_bytes());
            let count = table.visit_rows(txn, &mut |key, value| {
                feed(&mut hasher, key);
                feed(&mut hasher, value);
            })?;
            hasher.update(count.to_le_bytes());
            rows += count;
        }
        Ok(StateHash {
            raft_meta,
            digest: hasher.finalize().into(),
            rows,
        })
    }
}

impl Store {
    /// The hash of the committed state, now.
    pub fn state_hash(&self) -> Result<StateHash, StorageError> {
        self.read()?.state_hash()
    }
}

#[cfg(test)]
mod tests;
