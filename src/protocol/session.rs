//! Byte sessions into running tasks (the router's data path): what the
//! operator hands the control plane for a `ToOperator::OpenSession`.
//!
//! Invariants: a session's bytes never travel in the operator stream's
//! frames (nor, so, in the Raft log); each session is a stream of its own
//! with its own flow control: a separate HTTP/2 request of the operator
//! (`POST /api/agent/session/{id}`) or, for an operator in the server's
//! process, the task's socket itself. An operator answers every session it
//! is asked for exactly once, with its end or with why it has none.

use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// One end of a session: bytes to the task are written, bytes from it read.
pub trait SessionStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> SessionStream for T {}

/// A session's end, boxed.
pub type SessionIo = Box<dyn SessionStream>;

/// The operator's answer to a session: its end, or why it has none (shown
/// to the user).
pub type SessionAnswer = Result<SessionIo, String>;

/// How an operator hands its answer for session `id` to the control plane
/// over the link it was asked on; the future ends when the session does.
pub type AttachSession = Arc<dyn Fn(String, SessionAnswer) -> BoxFuture<'static, ()> + Send + Sync>;

/// The request header in which an operator says it answers sessions, and
/// of which kinds (an operator is never asked a kind its build could not
/// decode).
pub const SESSIONS_HEADER: &str = "gantry-sessions";

/// The session kinds this build answers: 1, port-forward; 2, also exec;
/// 3, also UDP port-forward.
pub const SESSIONS_LEVEL: u8 = 3;

/// The request header that marks a session answer as a refusal: the body
/// is then the reason, as text.
pub const SESSION_REFUSED_HEADER: &str = "gantry-session-refused";

/// Longest reason an operator sends for refusing a session.
pub const SESSION_REASON_BYTES_MAX: usize = 4096;

/// The `Upgrade` protocol token of a user's port-forward request
/// (`GET /api/workflow/{name}/portforward/{task_name}?port=N`).
pub const PORT_FORWARD_PROTOCOL: &str = "gantry-port-forward";
