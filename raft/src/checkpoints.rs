//! Checkpoints: read views of the state at the log indexes where replicas
//! compare state hashes.
//!
//! A checkpoint is a log entry that carries an empty batch (the leader's
//! state check writes one; proposals never do). Every replica applies it as
//! a no-op, ends its apply transaction right after it and keeps a read view
//! of the state at exactly that index. The hash itself is computed later,
//! off the apply path, from that view (redb's MVCC keeps it as it was while
//! applies go on), so hashing a large state never stalls apply.
//!
//! Invariants: a view is the committed state at exactly its index (it is
//! opened after the transaction that ends with the checkpoint entry commits
//! and before the next one begins); an open view keeps the pages it sees
//! from being reused, so views are few and short-lived: at most
//! [`CHECKPOINTS_KEPT`], each handed out once ([`Checkpoints::take`]) and
//! dropped after [`CHECKPOINT_VIEW_MAX_AGE`] if nobody asked for it; an
//! installed snapshot drops them all.

use crate::types::{Entry, LogId};
use gantry_storage::ReadView;
use openraft::EntryPayload;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Read views kept, at most: a state check asks for the newest one within
/// seconds of writing it, so a few cover rounds that overlap.
pub const CHECKPOINTS_KEPT: usize = 4;
/// Longest a view nobody asked for is kept (the leader asks within its
/// hash timeout of writing the checkpoint, or its round was cut short).
pub const CHECKPOINT_VIEW_MAX_AGE: Duration = Duration::from_secs(60);

/// Whether applying `entry` ends at a checkpoint.
pub fn is_checkpoint(entry: &Entry) -> bool {
    matches!(&entry.payload, EntryPayload::Normal(batch) if batch.commands.is_empty())
}

/// The read views of the last few checkpoints, shared by the state machine
/// (which records them) and the node (which hashes them).
#[derive(Clone, Default)]
pub struct Checkpoints {
    views: Arc<Mutex<VecDeque<(LogId, ReadView, Instant)>>>,
}

impl Checkpoints {
    pub fn record(&self, log_id: LogId, view: ReadView) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if views.len() == CHECKPOINTS_KEPT {
            views.pop_front();
        }
        views.push_back((log_id, view, Instant::now()));
    }

    /// The view at log index `index`, handed out once.
    pub fn take(&self, index: u64) -> Option<(LogId, ReadView)> {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let position = views
            .iter()
            .position(|(log_id, _, _)| log_id.index == index)?;
        views
            .remove(position)
            .map(|(log_id, view, _)| (log_id, view))
    }

    /// Drops views older than [`CHECKPOINT_VIEW_MAX_AGE`].
    pub fn expire(&self) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.retain(|(_, _, taken)| taken.elapsed() < CHECKPOINT_VIEW_MAX_AGE);
    }

    pub fn clear(&self) {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
