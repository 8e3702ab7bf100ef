//! `PutPool`: a pool the server creates, recorded as a POOL config revision.
//!
//! Invariant: the pools table changes only through a POOL revision (see
//! [`super::config`]), so the config history is complete.

use super::config::apply_config_put;
use crate::command::{Outcome, RejectionKind};
use crate::config::{ConfigData, ConfigMeta, ConfigType, PoolConfig};
use crate::error::StorageError;
use crate::record::PoolRecord;
use crate::tables::Tables;

pub(super) fn apply_pool_put(tables: &Tables, pool: &PoolRecord) -> Result<Outcome, StorageError> {
    if pool.name.trim().is_empty() || pool.backend.trim().is_empty() {
        return Ok(Outcome::rejected(
            RejectionKind::Invalid,
            "a pool needs a name and a backend",
        ));
    }
    // Recorded as a POOL revision too, so the config history is complete.
    let meta = ConfigMeta {
        user: "system".to_string(),
        description: "pool created by the server".to_string(),
        tags: Vec::new(),
    };
    let data = ConfigData::Pool(PoolConfig::from_record(pool));
    // PutPool carries no time: its revision is stamped 0.
    match apply_config_put(tables, 0, ConfigType::Pool, &pool.name, &meta, &data)? {
        rejected @ Outcome::Rejected(_) => Ok(rejected),
        _ => Ok(Outcome::Applied),
    }
}
