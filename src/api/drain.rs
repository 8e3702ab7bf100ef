//! Early refusals reach the caller: a request answered before its body was
//! read (401, 403, 413 and the like) has the rest of its body read and
//! dropped, up to a bound, before the answer goes out.
//!
//! Over HTTP/2 an answer sent while the client is still uploading ends the
//! stream with a reset, and clients such as curl then report a stream
//! error instead of the answer; over HTTP/1.1 the server closes the
//! connection under the client's upload. Reading the body to its end first
//! makes the request complete, so the answer is an ordinary one.
//!
//! Invariants:
//! - only a body of declared size (`Content-Length`) within the bound (the
//!   API's body limit times [`DRAIN_LIMITS`]) is drained, and only once its
//!   handler gave it up (dropped) unread; a body still read by the
//!   handler's work or of unknown size (a stream, such as the operator
//!   connection) is never touched or waited for;
//! - draining stops after [`DRAIN_TIME_MAX`] or past the bound, so a
//!   client cannot hold the server; a larger upload gets its answer
//!   followed by a reset; drained bytes are counted and dropped, never
//!   kept.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Longest time spent reading a refused request's body.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(10);
/// Bodies up to this many times the API's body limit are drained (an
/// oversized submit of a few megabytes still sees its 413).
pub const DRAIN_LIMITS: usize = 4;

type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, axum::Error>> + Send>>;

/// The request body, shared between the handler's view and this layer.
struct Shared {
    stream: DataStream,
    ended: bool,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The middleware: `bound` is the number of body bytes drained at most.
pub async fn drain_unread(State(bound): State<usize>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // Only a body of a declared size within the bound: an endless stream
    // (the operator connection) is never waited for.
    let declared = axum::body::HttpBody::size_hint(&body).upper();
    if axum::body::HttpBody::is_end_stream(&body)
        || declared.is_none_or(|size| size as usize > bound)
    {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let shared = Arc::new(Mutex::new(Shared {
        stream: Box::pin(body.into_data_stream()),
        ended: false,
    }));
    let view = {
        let shared = shared.clone();
        futures::stream::poll_fn(move |cx: &mut Context<'_>| {
            let mut state = lock(&shared);
            let polled = state.stream.as_mut().poll_next(cx);
            if let Poll::Ready(None) = polled {
                state.ended = true;
            }
            polled
        })
    };
    let response = next
        .run(Request::from_parts(parts, Body::from_stream(view)))
        .await;
    // The handler's work still holds the body (it streams): not ours.
    let Some(state) = Arc::into_inner(shared) else {
        return response;
    };
    let state = state
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    if !state.ended {
        drain(state.stream, bound).await;
    }
    response
}

/// Reads and drops `stream` until it ends, fails, passes `bound` bytes or
/// [`DRAIN_TIME_MAX`] passes.
async fn drain(mut stream: DataStream, bound: usize) {
    let reading = async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            read = read.saturating_add(chunk.len());
            if read > bound {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME_MAX, reading).await;
}
