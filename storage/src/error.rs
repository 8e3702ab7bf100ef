//! The storage crate's one error type: failures of the database or of
//! encoding, never domain rejections (those are [`crate::Outcome::Rejected`]).

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database: {0}")]
    Database(String),
    #[error("encode: {0}")]
    Encode(String),
    #[error("decode: {0}")]
    Decode(String),
    /// A tally disagrees with the rows it counts: a bug, never a user's
    /// doing; applying stops rather than aggregate from wrong counts.
    #[error("tally: {0}")]
    Tally(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StorageError {
            fn from(error: $ty) -> Self {
                StorageError::Database(error.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
