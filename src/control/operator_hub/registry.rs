//! The connection registry: each backend's current operator connection, the
//! jobs sent on it, and the frames that go down to it.
//!
//! Invariants:
//! - One connection per backend: a new one replaces the older, and an
//!   ending connection removes only itself (by generation), never the one
//!   that replaced it.
//! - A connection receives jobs only after a `Hello` of its own is
//!   committed, so everything the operator resent before it (done jobs,
//!   finished tasks) is applied first; the hub remembers which jobs went
//!   out on the current connection so none is sent twice on one connection.
//! - Acknowledgements never wait on the operator (a watch, not a queue), so
//!   a slow reader cannot stall the batch loop that reads its reports.

use super::{Accepted, OperatorHub};
use crate::protocol::wire::Down;
use crate::protocol::ToOperator;
use futures::Stream;
use gantry_raft::RaftError;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, watch};

/// Jobs buffered per operator connection, at most.
pub const OPERATOR_QUEUE_MAX: usize = 1024;

/// A backend's current connection, as the dispatcher sees it.
pub(super) struct Connection {
    generation: u64,
    pub(super) jobs: mpsc::Sender<ToOperator>,
    sent_jobs: HashSet<u64>,
    /// A hello of this connection is committed: jobs may go out.
    pub(super) ready: bool,
    pub(super) abilities: OperatorAbilities,
    /// The queues last sent down this connection (`queues`).
    pub(super) sent_queues: Option<Vec<crate::protocol::PoolQueue>>,
}

/// What an operator's build announced it takes, beyond the jobs every
/// build takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperatorAbilities {
    /// The kinds of `ToOperator::OpenSession` it answers
    /// (`protocol::session::SESSIONS_LEVEL`); 0: none.
    pub sessions: u8,
    /// The level of `ToOperator::CreateGroupWithExtras` it takes (see
    /// `protocol::launch_extras::LAUNCH_EXTRAS_LEVEL`); 0: none.
    pub launch_extras: u8,
    /// The level of `ToOperator::SyncQueues` it takes
    /// (`protocol::QUEUES_LEVEL`); 0: none.
    pub queues: u8,
}

impl OperatorHub {
    /// Registers a connection of `backend`'s operator `instance` (replacing
    /// an older one of the same backend) and returns it with the frames to
    /// send down: `Resume` first, then jobs and acknowledgements.
    pub async fn accept(
        &self,
        backend: &str,
        instance: u64,
        follow_leader: bool,
        abilities: OperatorAbilities,
    ) -> Result<(Accepted, impl Stream<Item = Down> + Send + 'static), RaftError> {
        let acked = self.node.read().await?.operator_seq(backend, instance)?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (jobs, job_receiver) = mpsc::channel(OPERATOR_QUEUE_MAX);
        let (acks, ack_receiver) = watch::channel(acked);
        self.lock().insert(
            backend.to_string(),
            Connection {
                generation,
                jobs,
                sent_jobs: HashSet::new(),
                ready: false,
                abilities,
                sent_queues: None,
            },
        );
        tracing::info!(%backend, instance, acked, "operator connected");
        let accepted = Accepted {
            backend: backend.to_string(),
            instance,
            generation,
            acked,
            acks,
            follow_leader,
        };
        Ok((accepted, down_frames(acked, job_receiver, ack_receiver)))
    }

    /// A hello of connection `generation` is committed: jobs may go out on
    /// it (unless it was replaced meanwhile).
    pub(super) fn hello_committed(&self, backend: &str, generation: u64) {
        if let Some(connection) = self
            .lock()
            .get_mut(backend)
            .filter(|connection| connection.generation == generation)
        {
            connection.ready = true;
        }
        // Re-queued groups (and everything queued meanwhile) can go out.
        self.connected.notify_waiters();
    }

    /// Removes connection `generation` of `backend`, unless a newer one
    /// replaced it.
    pub(super) fn unregister(&self, backend: &str, generation: u64) {
        let mut connections = self.lock();
        if connections
            .get(backend)
            .is_some_and(|c| c.generation == generation)
        {
            connections.remove(backend);
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sends a job to the backend's operator unless it was already sent on
    /// the current connection. Returns false if no operator is ready.
    pub async fn send_job(&self, backend: &str, job_id: u64, message: ToOperator) -> bool {
        let sender = {
            let mut connections = self.lock();
            let Some(connection) = connections.get_mut(backend).filter(|c| c.ready) else {
                return false;
            };
            if !connection.sent_jobs.insert(job_id) {
                return true;
            }
            connection.jobs.clone()
        };
        metrics::counter!(crate::metrics::OPERATOR_MESSAGES_SENT, "backend" => backend.to_string())
            .increment(1);
        sender.send(message).await.is_ok()
    }

    /// The level of launch extras `backend`'s operator takes (0: none).
    pub fn launch_extras_level(&self, backend: &str) -> u8 {
        self.lock()
            .get(backend)
            .map_or(0, |c| c.abilities.launch_extras)
    }

    /// Whether job `job_id` should go to `backend` now: its operator is
    /// ready here and has not been sent the job on this connection.
    pub fn wants_job(&self, backend: &str, job_id: u64) -> bool {
        self.lock()
            .get(backend)
            .is_some_and(|c| c.ready && !c.sent_jobs.contains(&job_id))
    }

    /// Forgets sent jobs that left the queue. `queued` is a prefix of the
    /// queue in id order, read after those jobs were sent: a sent id at or
    /// below its last id that it does not list was completed. (Forgetting
    /// on completion instead would let a dispatcher holding an older view
    /// send the job again.)
    pub fn forget_completed_jobs(&self, queued: &[u64]) {
        let Some(&last) = queued.last() else {
            for connection in self.lock().values_mut() {
                connection.sent_jobs.clear();
            }
            return;
        };
        let listed: HashSet<u64> = queued.iter().copied().collect();
        for connection in self.lock().values_mut() {
            connection
                .sent_jobs
                .retain(|id| *id > last || listed.contains(id));
        }
    }
}

/// `Resume { acked }`, then jobs and acknowledgements as they come; ends
/// when the connection is replaced or dropped (its job sender goes away).
fn down_frames(
    acked: u64,
    jobs: mpsc::Receiver<ToOperator>,
    acks: watch::Receiver<u64>,
) -> impl Stream<Item = Down> + Send + 'static {
    struct State {
        resumed: bool,
        jobs: mpsc::Receiver<ToOperator>,
        acks: watch::Receiver<u64>,
        acks_open: bool,
    }
    let state = State {
        resumed: false,
        jobs,
        acks,
        acks_open: true,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if !state.resumed {
            state.resumed = true;
            state.acks.borrow_and_update();
            return Some((Down::Resume { acked }, state));
        }
        loop {
            tokio::select! {
                job = state.jobs.recv() => return job.map(|job| (Down::Job(job), state)),
                changed = state.acks.changed(), if state.acks_open => match changed {
                    Ok(()) => {
                        let seq = *state.acks.borrow_and_update();
                        return Some((Down::Ack { seq }, state));
                    }
                    Err(_) => state.acks_open = false,
                },
            }
        }
    })
}
