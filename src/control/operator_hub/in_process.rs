//! The in-process link: an operator running in this process (`gantry dev`,
//! `--local-backend`) connects through channels instead of a socket.
//!
//! Invariant: the link gets the same frames and the same batch loop as a
//! remote stream, but does not follow the leader: on a follower its
//! reports are forwarded to the leader like any proposal. A session's end
//! is handed to the hub directly (no HTTP request to itself).

use super::{OperatorAbilities, OperatorHub};
use crate::protocol::byte_queue;
use crate::protocol::session::AttachSession;
use crate::protocol::wire::Link;
use futures::StreamExt;
use gantry_raft::RaftError;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Frames queued between the in-process operator and the hub.
const IN_PROCESS_QUEUE_MAX: usize = 1024;

impl OperatorHub {
    /// A link for an operator in this process (`gantry dev`, `--local-backend`):
    /// the same frames and the same batch loop as a remote stream, minus the
    /// socket. It does not follow the leader: on a follower its reports are
    /// forwarded to the leader like any proposal.
    pub async fn link_in_process(&self, backend: &str, instance: u64) -> Result<Link, RaftError> {
        let (accepted, down_frames) = self
            .accept(
                backend,
                instance,
                false,
                OperatorAbilities {
                    sessions: crate::protocol::session::SESSIONS_LEVEL,
                    launch_extras: crate::protocol::launch_extras::LAUNCH_EXTRAS_LEVEL,
                    queues: crate::protocol::QUEUES_LEVEL,
                },
            )
            .await?;
        // The frames share their messages with the operator's backlog, which
        // counts their bytes.
        let (up, up_receiver) = mpsc::channel(IN_PROCESS_QUEUE_MAX);
        let up_receiver = byte_queue::Receiver::from_counted(up_receiver);
        let (down_sender, down) = mpsc::channel(IN_PROCESS_QUEUE_MAX);
        tokio::spawn(async move {
            let mut down_frames = std::pin::pin!(down_frames);
            while let Some(frame) = down_frames.next().await {
                if down_sender.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let hub = self.clone();
        tokio::spawn(async move { hub.serve(accepted, up_receiver).await });
        // A session's end is handed over as it is: the task's own socket.
        let (hub, backend) = (self.clone(), backend.to_string());
        let sessions: AttachSession = Arc::new(move |session: String, answer| {
            if hub.answer_session(&backend, &session, answer).is_err() {
                tracing::debug!(%session, "a session answered after its opener left");
            }
            Box::pin(async {})
        });
        Ok(Link {
            up,
            down: byte_queue::Receiver::from_counted(down),
            sessions,
            reports_level: crate::protocol::wire::REPORTS_LEVEL,
        })
    }
}
