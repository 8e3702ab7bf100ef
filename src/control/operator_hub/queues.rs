//! The queues of a backend's pools, sent down its operator's connection
//! (`ToOperator::SyncQueues`): once the connection is ready and whenever
//! the POOL configs change them, checked at each heartbeat of the backend
//! (every few seconds), so a quota an admin sets reaches the scheduler
//! without a job in the log.
//!
//! Invariants: only to a ready connection whose operator announced
//! `gantry-queues`; the same queues are not sent twice down one
//! connection; a send that finds the connection's queue full is forgotten,
//! so the next heartbeat tries again.

use super::OperatorHub;
use crate::protocol::{PoolQueue, ToOperator};
use gantry_storage::{ConfigData, ConfigType, ReadView, StorageError};

/// The queues of `backend`'s pools as the POOL configs say, by pool name.
pub(super) fn pool_queues(view: &ReadView, backend: &str) -> Result<Vec<PoolQueue>, StorageError> {
    let mut queues: Vec<PoolQueue> = view
        .configs(ConfigType::Pool)?
        .into_iter()
        .filter_map(|config| config.data.and_then(ConfigData::into_pool))
        .filter(|pool| pool.backend == backend)
        .map(|pool| PoolQueue {
            pool: pool.name,
            gpu_guarantee: pool.gpu.guarantee,
            gpu_maximum: pool.gpu.maximum,
            gpu_weight: pool.gpu.weight,
        })
        .collect();
    queues.sort_by(|a, b| a.pool.cmp(&b.pool));
    Ok(queues)
}

impl OperatorHub {
    /// Sends `backend`'s queues down its connection if they changed since
    /// they were last sent there.
    pub(super) fn sync_queues(&self, backend: &str, view: &ReadView) -> Result<(), StorageError> {
        let wanted = pool_queues(view, backend)?;
        let sender = {
            let mut connections = self.lock();
            let Some(connection) = connections
                .get_mut(backend)
                .filter(|c| c.ready && c.abilities.queues >= crate::protocol::QUEUES_LEVEL)
            else {
                return Ok(());
            };
            if connection.sent_queues.as_ref() == Some(&wanted) {
                return Ok(());
            }
            connection.sent_queues = Some(wanted.clone());
            connection.jobs.clone()
        };
        if sender
            .try_send(ToOperator::SyncQueues { pools: wanted })
            .is_err()
        {
            if let Some(connection) = self.lock().get_mut(backend) {
                connection.sent_queues = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_storage::{Command, ConfigMeta, Outcome, Store};
    use serde_json::json;

    /// The POOL configs of a backend, as an admin writes them in OSMO's
    /// shape, become its queues; another backend's pools do not.
    #[test]
    fn a_backends_pools_become_its_queues() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        for (name, backend, gpu) in [
            (
                "train",
                "k8s",
                json!({"guarantee": 16, "maximum": 32, "weight": 2}),
            ),
            (
                "sim",
                "k8s",
                json!({"guarantee": -1, "maximum": 8, "weight": 1}),
            ),
            (
                "bench",
                "lab",
                json!({"guarantee": 1, "maximum": 1, "weight": 1}),
            ),
        ] {
            let body = json!({"name": name, "backend": backend, "resources": {"gpu": gpu}});
            let data = gantry_storage::config::parse(ConfigType::Pool, name, body).unwrap();
            let meta = ConfigMeta {
                user: "admin".into(),
                description: String::new(),
                tags: Vec::new(),
            };
            let command = Command::put_config(1, ConfigType::Pool, name.into(), meta, data);
            let outcome = store
                .apply(&[&[command]], b"", false)
                .unwrap()
                .remove(0)
                .remove(0);
            assert!(matches!(outcome, Outcome::Revision { .. }), "{outcome:?}");
        }
        let view = store.read().unwrap();
        let queue = |pool: &str, gpu_guarantee, gpu_maximum, gpu_weight| PoolQueue {
            pool: pool.into(),
            gpu_guarantee,
            gpu_maximum,
            gpu_weight,
        };
        assert_eq!(
            pool_queues(&view, "k8s").unwrap(),
            vec![queue("sim", -1, 8, 1), queue("train", 16, 32, 2)]
        );
        assert_eq!(
            pool_queues(&view, "lab").unwrap(),
            vec![queue("bench", 1, 1, 1)]
        );
        assert!(pool_queues(&view, "other").unwrap().is_empty());
    }
}
