//! Sessions into running tasks (the router), as the control plane opens
//! them: a `ToOperator::OpenSession` goes down the backend's connection and
//! the caller waits for the operator to attach its end (`answer_session`).
//!
//! Invariants:
//! - A session is asked only of a ready connection whose operator said it
//!   answers sessions (an older build could not decode the message).
//! - Session IDs are random (v4 UUIDs) and taken once; an answer is taken
//!   only from an operator of the backend the session was asked of, and a
//!   session nobody answered within [`SESSION_ANSWER_WAIT`] is forgotten,
//!   so the table holds only sessions being opened.
//! - Bytes never pass through here: the hub only pairs the two ends.

use super::OperatorHub;
use crate::protocol::session::{SessionAnswer, SessionIo};
use crate::protocol::{SessionKind, ToOperator};
use gantry_storage::TaskKey;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long an operator may take to attach its end of a session.
pub const SESSION_ANSWER_WAIT: Duration = Duration::from_secs(15);

/// Sessions asked of an operator and not answered yet, by ID.
#[derive(Default)]
pub(super) struct PendingSessions {
    waiting: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    backend: String,
    answer: oneshot::Sender<SessionAnswer>,
}

impl PendingSessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        // Every update is one insert or remove: a poisoned map is consistent.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no operator of backend '{0}' is connected to this server")]
    NotConnected(String),
    #[error("the operator of backend '{backend}' is of a build that cannot open {verb} sessions; upgrade it")]
    Unsupported { backend: String, verb: &'static str },
    #[error("the operator of backend '{backend}' did not answer within {seconds} s", seconds = SESSION_ANSWER_WAIT.as_secs())]
    NoAnswer { backend: String },
    /// The operator's reason (nothing listens on the port, the task is gone).
    #[error("{0}")]
    Refused(String),
}

/// Removes a pending session when its opener stops waiting, answered or not.
struct Forget<'a> {
    pending: &'a PendingSessions,
    session: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.session);
    }
}

impl OperatorHub {
    /// Opens a session of `kind` into task `key` of `backend` and returns
    /// the operator's end once it has attached it.
    pub async fn open_session(
        &self,
        backend: &str,
        key: TaskKey,
        kind: SessionKind,
    ) -> Result<SessionIo, SessionError> {
        let jobs = {
            let connections = self.lock();
            let connection = connections
                .get(backend)
                .filter(|c| c.ready)
                .ok_or_else(|| SessionError::NotConnected(backend.to_string()))?;
            if connection.abilities.sessions < kind.level() {
                return Err(SessionError::Unsupported {
                    backend: backend.to_string(),
                    verb: kind.verb(),
                });
            }
            connection.jobs.clone()
        };
        let session = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = oneshot::channel();
        self.sessions.lock().insert(
            session.clone(),
            Pending {
                backend: backend.to_string(),
                answer,
            },
        );
        let _forget = Forget {
            pending: &self.sessions,
            session: session.clone(),
        };
        let message = ToOperator::OpenSession { session, key, kind };
        if jobs.send(message).await.is_err() {
            return Err(SessionError::NotConnected(backend.to_string()));
        }
        match tokio::time::timeout(SESSION_ANSWER_WAIT, answered).await {
            Ok(Ok(Ok(io))) => Ok(io),
            Ok(Ok(Err(reason))) => Err(SessionError::Refused(reason)),
            // The connection went away with the session unanswered.
            Ok(Err(_)) | Err(_) => Err(SessionError::NoAnswer {
                backend: backend.to_string(),
            }),
        }
    }

    /// The operator of `backend` attaches its end of `session`. Hands the
    /// answer back when no such session of that backend waits (unknown,
    /// given up on, or asked of another backend).
    pub fn answer_session(
        &self,
        backend: &str,
        session: &str,
        answer: SessionAnswer,
    ) -> Result<(), SessionAnswer> {
        let pending = {
            let mut waiting = self.sessions.lock();
            match waiting.get(session) {
                Some(pending) if pending.backend == backend => waiting.remove(session),
                _ => None,
            }
        };
        match pending {
            Some(pending) => pending.answer.send(answer),
            None => Err(answer),
        }
    }
}
