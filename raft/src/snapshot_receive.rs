//! Receiving an InstallSnapshot chunk: the chunk counts as hearing from the
//! leader, as an AppendEntries does.
//!
//! openraft 0.9 resets a member's election timer on AppendEntries and on a
//! snapshot's last chunk only, and its leader sends a member no heartbeat
//! while a snapshot to it is in flight. A snapshot that takes the member's
//! election timeout or longer to stream (or to install) therefore makes the
//! member campaign in the middle of it; the higher term it campaigns in
//! deposes the leader, the next leader streams the snapshot again from its
//! first byte, and a member that needs the snapshot never catches up.
//!
//! Invariant: as a chunk from a leader arrives, and every heartbeat interval
//! while it is written (or the snapshot installed), the member hears from
//! that leader by an empty AppendEntries carrying the chunk's vote, with no
//! previous log id and no commit index: it matches any log, appends and
//! commits nothing, and is the heartbeat openraft's leader sends a member it
//! has no log position for. A chunk whose vote the member has already left
//! behind is refused by the heartbeat as by the install.

use crate::types::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
};
use openraft::Raft;
use std::time::Duration;

/// Hands `rpc` to `raft`, telling it meanwhile that the chunk's sender
/// leads (see the module doc).
pub async fn install_snapshot_chunk(
    raft: &Raft<TypeConfig>,
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
    let vote = rpc.vote;
    // Only a leader's vote is committed, and an AppendEntries may carry only
    // a leader's vote.
    if !vote.is_committed() {
        return raft.install_snapshot(rpc).await;
    }
    let every = Duration::from_millis(raft.config().heartbeat_interval.max(1));
    let leader_heard = async {
        loop {
            let heartbeat = AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            };
            match raft.append_entries(heartbeat).await {
                Ok(AppendEntriesResponse::Success) => {}
                // The member holds a higher vote (the install refuses the
                // chunk too) or is stopping: nothing more to tell it.
                _ => return,
            }
            tokio::time::sleep(every).await;
        }
    };
    let install = raft.install_snapshot(rpc);
    tokio::pin!(install);
    // Biased: no random draw, so a seeded simulation replays the same way.
    tokio::select! {
        biased;
        result = &mut install => result,
        () = leader_heard => install.await,
    }
}
