//! Runs the leader-only loops while this node leads, and stops them when it
//! stops leading.
//!
//! Invariant: loops of term T are cancelled when this node observes a newer
//! term or loses leadership, and they propose with `propose_here` (never
//! forwarded), so whatever a deposed leader still proposes is refused by
//! Raft instead of reaching the new leader: effects are fenced by term.

use gantry_raft::RaftNode;
use std::future::Future;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Starts `start(token)` each time this node gains leadership; the token is
/// cancelled when leadership (or the term) changes or `shutdown` fires.
pub async fn run_while_leader<F, Fut>(node: RaftNode, shutdown: CancellationToken, start: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut metrics = node.metrics();
    let mut running: Option<(u64, CancellationToken, JoinSet<()>)> = None;
    loop {
        let term = node.leader_term(&metrics.borrow_and_update());
        let current = running.as_ref().map(|(t, _, _)| *t);
        if term != current {
            if let Some((old_term, token, mut tasks)) = running.take() {
                tracing::info!(term = old_term, "leadership lost: stopping leader loops");
                token.cancel();
                while tasks.join_next().await.is_some() {}
            }
            if let Some(term) = term {
                tracing::info!(term, "leadership gained: starting leader loops");
                let token = shutdown.child_token();
                let mut tasks = JoinSet::new();
                tasks.spawn(start(token.clone()));
                running = Some((term, token, tasks));
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    if let Some((_, token, mut tasks)) = running.take() {
        token.cancel();
        while tasks.join_next().await.is_some() {}
    }
}
