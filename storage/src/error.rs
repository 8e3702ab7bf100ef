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
    /// A stored value failed its check: the disk or the file changed under
    /// the database. The store notes it and the node reports itself unhealthy.
    #[error("corrupt row in table `{table}`, key {key}: {reason}")]
    Corrupt {
        table: String,
        key: String,
        reason: String,
    },
    /// The state file failed redb's page checks when it was opened.
    #[error(
        "{path} is corrupt ({reason}); nothing was served from it. Rebuild this member \
         from a healthy one: `gantry cluster rebuild --data-dir DIR` with the server \
         stopped (ops/runbooks/rebuild-a-corrupt-member.md)"
    )]
    CorruptFile { path: String, reason: String },
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
