//! This member's own standing after state checks: whether its state was
//! found to differ from the majority's, and so must not be read.
//!
//! Invariants: the mark is set and cleared only on the leader's verdict
//! (`/gantry/state-verdict`, or the leader's own) or by a rebuild, which
//! removes the file while the member is stopped; it survives a restart
//! (`<raft dir>/state-corrupt` holds the state schema it was judged under
//! and the reason, written before the mark takes effect in memory), so a
//! corrupt member does not serve reads again just because it restarted;
//! while it is set, [`RaftNode::read`] refuses and `gantry_state_corrupt`
//! is 1. A mark judged under another state schema (left by another build,
//! mid-upgrade, whose hashes covered other tables) is set aside at start:
//! the next state check judges this build's state again.

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
            Ok(text) => match mark_of_this_schema(&text) {
                Some(reason) => Some(reason),
                None => {
                    tracing::warn!(mark = %text.trim(), path = %path.display(), "a corrupt mark judged under another state schema (another build's tables) is set aside; the next state check judges again");
                    std::fs::remove_file(&path)?;
                    None
                }
            },
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
            let schema = gantry_storage::state_hash::state_schema();
            file.write_all(format!("{SCHEMA_PREFIX}{schema}\n{reason}").as_bytes())?;
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

/// The first line of a mark: the state schema it was judged under.
const SCHEMA_PREFIX: &str = "schema ";

/// The reason of a mark judged under this build's state schema.
fn mark_of_this_schema(text: &str) -> Option<String> {
    let (first, reason) = text.split_once('\n')?;
    let schema = first.strip_prefix(SCHEMA_PREFIX)?;
    (schema == gantry_storage::state_hash::state_schema()).then(|| reason.trim().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_holds_across_a_restart_of_this_build_and_not_of_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let integrity = Integrity::open(dir.path()).expect("open");
        assert_eq!(integrity.corrupt(), None);
        integrity.mark("hashes differ").expect("mark");
        let reopened = Integrity::open(dir.path()).expect("reopen");
        assert_eq!(reopened.corrupt().as_deref(), Some("hashes differ"));

        // Marks of other builds: one from before schemas, one judged under
        // other tables. Each is set aside, and its file goes.
        let path = dir.path().join(CORRUPT_MARK_FILE);
        for other in ["hashes differ", "schema 0123456789abcdef\nhashes differ"] {
            std::fs::write(&path, other).expect("write mark");
            let reopened = Integrity::open(dir.path()).expect("reopen");
            assert_eq!(reopened.corrupt(), None, "{other:?}");
            assert!(!path.exists());
        }
    }
}
