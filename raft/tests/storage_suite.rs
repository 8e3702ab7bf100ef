//! openraft's storage conformance suite against the redb log store and the
//! state machine over gantry-storage.

use gantry_raft::log_store::LogStore;
use gantry_raft::state_machine::StateMachine;
use gantry_raft::TypeConfig;
use gantry_storage::Store;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = LogStore::open(&dir.path().join("log.redb"))
            .map_err(|e| openraft::StorageIOError::write(&e))?;
        let store = Store::open(&dir.path().join("state.redb"))
            .map_err(|e| openraft::StorageIOError::write(&e))?;
        let machine = StateMachine::new(
            Arc::new(store),
            dir.path().join("snapshot.bin"),
            Default::default(),
        );
        Ok((dir, log, machine))
    }
}

#[test]
fn redb_stores_pass_openraft_suite() {
    if let Err(error) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}
