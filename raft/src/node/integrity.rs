//! This member's own standing after state checks: whether its state was
//! found to differ from the majority's, and so must not be read.
//!
//! Invariants: the mark is set and cleared only on the leader's verdict
//! (`/gantry/state-verdict`, or the leader's own) or by a rebuild, which
//! removes the file while the member is stopped; it survives a restart
//! (`<raft dir>/state-corrupt` holds the reason, written before the mark
//! takes effect in memory), so a corrupt member does not serve reads again
//! just because it restarted; while it is set, [`RaftNode::read`] refuses
//! and `gantry_state_corrupt` is 1.

use super::RaftNode;
use crate::error::RaftError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The mark's file in the Raft data directory.
pub const CORRUPT_MARK_FILE: &str = "state-corrupt";

/// The leader's verdict on one member's state after a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateVerdict {
    /// Its hash matched the majority's: any earlier mark is cleared.
    Healthy { index: u64 },
    /// Its hash differed from the majority's: it stops serving reads.
    Corrupt { index: u64, reason: String },
}

/// The mark, in memory and on disk.
#[derive(Clone)]
pub(crate) struct Integrity {
    path: PathBuf,
    corrupt: Arc<Mutex<Option<String>>>,
}

impl Integrity {
    /// Reads the mark left in `raft_dir`, if any.
    pub(crate) fn open(raft_dir: &Path) -> Result<Integrity, RaftError> {
        let path = raft_dir.join(CORRUPT_MARK_FILE);
        let corrupt = match std::fs::read_to_string(&path) {
            Ok(reason) => Some(reason.trim().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error.into()),
        };
        if let Some(reason) = &corrupt {
            tracing::error!(%reason, path = %path.display(), "this member's state is marked corrupt: it refuses reads until it is rebuilt");
        }
        record(corrupt.is_some());
        Ok(Integrity {
            path,
            corrupt: Arc::new(Mutex::new(corrupt)),
        })
    }

    pub(crate) fn corrupt(&self) -> Option<String> {
        self.corrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn mark(&self, reason: &str) -> Result<(), RaftError> {
        crate::private_fs::create_file(&self.path).and_then(|mut file| {
            use std::io::Write;
            file.write_all(reason.as_bytes())?;
            file.sync_all()
        })?;
        let mut corrupt = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
        if corrupt.is_none() {
            tracing::error!(%reason, "this member's state differs from the majority's: refusing reads until it is rebuilt (`gantry cluster rebuild`)");
        }
        *corrupt = Some(reason.to_string());
        record(true);
        Ok(())
    }

    fn clear(&self) -> Result<(), RaftError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        let mut corrupt = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
        if corrupt.take().is_some() {
            tracing::info!("this member's state matches the majority's again: serving reads");
        }
        record(false);
        Ok(())
    }
}

fn record(corrupt: bool) {
    metrics::gauge!(crate::metrics::STATE_CORRUPT).set(if corrupt { 1.0 } else { 0.0 });
}

impl RaftNode {
    /// Why this member's state must not be read, if a state check found it
    /// to differ from the majority's.
    pub fn state_corrupt(&self) -> Option<String> {
        self.integrity.corrupt()
    }

    /// Takes the leader's verdict on this member's state. What
    /// `/gantry/state-verdict` runs.
    pub fn take_verdict(&self, verdict: &StateVerdict) -> Result<(), RaftError> {
        match verdict {
            StateVerdict::Healthy { .. } => self.integrity.clear(),
            StateVerdict::Corrupt { reason, .. } => self.integrity.mark(reason),
        }
    }
}
