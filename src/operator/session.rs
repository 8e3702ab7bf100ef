//! The operator's side of the stream: numbers every executor message, keeps
//! it until the server acknowledges it, and resends after a reconnect.
//!
//! Invariants:
//! - A message leaves the backlog only when the server acknowledged its
//!   sequence number (after the command it became is committed), so a lost
//!   connection or a leader change loses nothing: the next link resends the
//!   backlog, in order, before anything new.
//! - Sequence numbers belong to this operator instance (`instance`, chosen
//!   at random per process) and never repeat within it; the server drops
//!   what it had already applied.
//! - The executor is served once per link and greets each link with a
//!   `Hello`, which therefore follows the resent backlog: the server has
//!   applied every earlier report (finished tasks, done jobs) before the
//!   hello re-queues what the executor does not run, and it hands out jobs
//!   only after that hello is committed.
//! - A `ToOperator::OpenSession` does not queue behind jobs: the executor
//!   opens its end and the link attaches it (`protocol::session`) at once.
//! - At most [`BACKLOG_MAX`] messages, and about [`BACKLOG_BYTES_MAX`]
//!   bytes (`FromOperator::approx_bytes`; the last message may pass the
//!   bound), wait unacknowledged; beyond that the executor waits (its channel
//!   fills), nothing is dropped.

use super::Executor;
use crate::protocol::wire::{Down, Link, Up};
use crate::protocol::{FromOperator, ToOperator};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Unacknowledged messages kept at most before the executor is held back.
pub const BACKLOG_MAX: usize = 65_536;
/// Bytes of unacknowledged messages kept before the executor is held back:
/// a few seconds of a fast log stream, while a commit or a reconnect takes
/// its time.
pub const BACKLOG_BYTES_MAX: usize = 64 << 20;
/// Executor messages buffered before they get a sequence number.
pub const EXECUTOR_QUEUE_MAX: usize = 4_096;
/// Jobs buffered for the executor per link.
const JOBS_QUEUE_MAX: usize = 1_024;
/// How long a new link may take to send its `Resume`.
const RESUME_WAIT_MAX: Duration = Duration::from_secs(30);

/// Why a link ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// The server or the network closed it; connect again.
    Closed,
    /// The server's first frame was not `Resume` (or never came).
    NoResume,
}

pub struct Session {
    instance: u64,
    executor: Executor,
    from_executor: mpsc::Receiver<FromOperator>,
    to_session: mpsc::Sender<FromOperator>,
    backlog: Backlog,
    next_seq: u64,
}

/// Messages sent and not yet acknowledged, in sequence order, with their
/// bytes counted.
#[derive(Default)]
struct Backlog {
    messages: VecDeque<(u64, Arc<FromOperator>)>,
    /// `approx_bytes` of `messages`.
    bytes: usize,
}

impl Backlog {
    fn has_room(&self) -> bool {
        self.messages.len() < BACKLOG_MAX && self.bytes < BACKLOG_BYTES_MAX
    }

    fn push(&mut self, seq: u64, message: Arc<FromOperator>) {
        self.bytes += message.approx_bytes();
        self.messages.push_back((seq, message));
    }

    fn acknowledge(&mut self, acked: u64) {
        while self.messages.front().is_some_and(|(seq, _)| *seq <= acked) {
            if let Some((_, message)) = self.messages.pop_front() {
                self.bytes -= message.approx_bytes();
            }
        }
    }
}

impl Session {
    pub fn new(executor: Executor) -> Session {
        let (to_session, from_executor) = mpsc::channel(EXECUTOR_QUEUE_MAX);
        Session {
            instance: new_instance(),
            executor,
            from_executor,
            to_session,
            backlog: Backlog::default(),
            next_seq: 1,
        }
    }

    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Messages sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.backlog.messages.len()
    }

    /// About the bytes of the messages sent and not yet acknowledged.
    pub fn unacknowledged_bytes(&self) -> usize {
        self.backlog.bytes
    }

    /// Serves one link until it closes.
    pub async fn serve_link(&mut self, mut link: Link) -> LinkEnd {
        match tokio::time::timeout(RESUME_WAIT_MAX, link.down.recv()).await {
            Ok(Some(Down::Resume { acked })) => self.backlog.acknowledge(acked),
            Ok(Some(other)) => {
                tracing::warn!(?other, "server did not start the stream with Resume");
                return LinkEnd::NoResume;
            }
            Ok(None) | Err(_) => return LinkEnd::NoResume,
        }
        for (seq, message) in &self.backlog.messages {
            if !link.takes(message) {
                continue; // acknowledged with the next one this server takes
            }
            let frame = Up::Report {
                seq: *seq,
                message: Arc::clone(message),
            };
            if link.up.send(frame).await.is_err() {
                return LinkEnd::Closed;
            }
        }
        if !self.backlog.messages.is_empty() {
            tracing::info!(
                resent = self.backlog.messages.len(),
                "resent unacknowledged messages"
            );
        }
        let (jobs, jobs_for_executor) = mpsc::channel::<ToOperator>(JOBS_QUEUE_MAX);
        let executor = self.executor.clone();
        let to_session = self.to_session.clone();
        // Ends when `jobs` is dropped below; tasks it started keep reporting
        // through `to_session`, which outlives every link.
        tokio::spawn(async move { executor.serve(jobs_for_executor, to_session).await });
        let mut pending_jobs: VecDeque<ToOperator> = VecDeque::new();
        loop {
            tokio::select! {
                frame = link.down.recv() => match frame {
                    Some(Down::Ack { seq }) | Some(Down::Resume { acked: seq }) => self.backlog.acknowledge(seq),
                    // A session is answered at once, beside the jobs.
                    Some(Down::Job(ToOperator::OpenSession { session, key, kind })) => {
                        let (executor, attach) = (self.executor.clone(), link.sessions.clone());
                        tokio::spawn(async move {
                            let answer = executor.open_session(&key, &kind).await;
                            if let Err(reason) = &answer {
                                tracing::info!(workflow = %key.workflow_id, task = %key.task, ?kind, "session refused: {reason}");
                            }
                            attach(session, answer).await;
                        });
                    }
                    Some(Down::Job(job)) => pending_jobs.push_back(job),
                    None => return LinkEnd::Closed,
                },
                // Never block the loop on a busy executor: jobs wait here.
                permit = jobs.reserve(), if !pending_jobs.is_empty() => match (permit, pending_jobs.pop_front()) {
                    (Ok(permit), Some(job)) => permit.send(job),
                    _ => return LinkEnd::Closed,
                },
                message = self.from_executor.recv(), if self.backlog.has_room() => {
                    let Some(message) = message else { return LinkEnd::Closed };
                    if !link.takes(&message) {
                        continue; // this server's build does not decode it
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let message = Arc::new(message);
                    self.backlog.push(seq, Arc::clone(&message));
                    if link.up.send(Up::Report { seq, message }).await.is_err() {
                        return LinkEnd::Closed;
                    }
                }
            }
        }
    }
}

/// A random, non-zero instance number.
fn new_instance() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Falls back to the clock: still distinct between restarts.
        return u64::try_from(crate::clock::now_ms()).unwrap_or(1).max(1);
    }
    u64::from_le_bytes(bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LogLine, LogStream};
    use gantry_storage::TaskKey;

    fn log_batch(text_bytes: usize) -> Arc<FromOperator> {
        Arc::new(FromOperator::Logs {
            key: TaskKey {
                workflow_id: "wf-1".into(),
                task: "t".into(),
                retry_id: 0,
            },
            lines: vec![LogLine {
                offset: 1,
                stream: LogStream::Stdout,
                time: 0,
                text: "y".repeat(text_bytes),
            }],
        })
    }

    #[test]
    fn the_backlog_is_full_by_bytes_long_before_it_is_full_by_count() {
        let mut backlog = Backlog::default();
        let mut seq = 0;
        while backlog.has_room() {
            seq += 1;
            backlog.push(seq, log_batch(1 << 20));
        }
        // 64 MiB of 1 MiB batches: 64 of them, not 65,536.
        assert_eq!(seq, 64);
        assert!(backlog.bytes >= BACKLOG_BYTES_MAX);
        backlog.acknowledge(1);
        assert!(backlog.has_room());
        backlog.acknowledge(seq);
        assert_eq!((backlog.messages.len(), backlog.bytes), (0, 0));
    }
}
