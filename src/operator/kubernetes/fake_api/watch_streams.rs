//! The fake's streamed answers: watches (changes after a version, then
//! new ones as they happen, bookmarks where allowed, ended when a test
//! drops the connections) and followed container logs.
//!
//! Invariant: a watch never delivers a change twice nor skips one after
//! the version it asked for; a dropped watch delivers nothing more.

use super::{faults, selector_matches, Shared};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde_json::json;
use std::sync::Arc;

pub(super) fn watch_stream(
    shared: Arc<Shared>,
    collection: String,
    selector: Option<String>,
    since: u64,
    bookmarks: Option<String>,
) -> Response {
    let changed = shared.changed.subscribe();
    let dropped = shared.dropped.subscribe();
    let mut bookmarked = shared.bookmarks.subscribe();
    bookmarked.mark_unchanged();
    let kind = kind_of(&collection);
    let events = stream::unfold(
        (shared, (changed, dropped, bookmarked), since),
        move |(shared, (mut changed, mut dropped, mut bookmarked), mut cursor)| {
            let collection = collection.clone();
            let selector = selector.clone();
            let bookmarks = bookmarks.clone();
            let kind = kind.clone();
            async move {
                loop {
                    // A dropped connection delivers nothing more.
                    if dropped.has_changed().unwrap_or(true) {
                        return None;
                    }
                    let batch: Vec<String> = {
                        let inner = shared.lock();
                        let lines = inner
                            .changes
                            .iter()
                            .filter(|c| c.version > cursor && c.collection == collection)
                            .filter(|c| selector_matches(selector.as_deref(), &c.object))
                            .map(|c| json!({"type": c.kind, "object": c.object}).to_string() + "\n")
                            .collect();
                        cursor = inner.version;
                        lines
                    };
                    if !batch.is_empty() {
                        let bytes = Bytes::from(batch.concat());
                        let state = (shared, (changed, dropped, bookmarked), cursor);
                        return Some((Ok::<_, std::io::Error>(bytes), state));
                    }
                    tokio::select! {
                        woke = changed.changed() => if woke.is_err() { return None },
                        _ = dropped.changed() => return None,
                        _ = bookmarked.changed() => {
                            if let Some(api_version) = &bookmarks {
                                let event = faults::bookmark_event(api_version, &kind, cursor);
                                let state = (shared, (changed, dropped, bookmarked), cursor);
                                return Some((Ok(Bytes::from(event)), state));
                            }
                        }
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The kind a collection holds, as bookmarks name it (`pods` → `Pod`).
fn kind_of(collection: &str) -> String {
    let resource = collection.rsplit('/').next().unwrap_or_default();
    let singular = resource.strip_suffix('s').unwrap_or(resource);
    let mut chars = singular.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

pub(super) fn log_stream(shared: Arc<Shared>, pod: String, follow: bool) -> Response {
    let changed = shared.changed.subscribe();
    let chunks = stream::unfold(
        (shared, changed, 0usize, false),
        move |(shared, mut changed, mut sent, done)| {
            let pod = pod.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let (text, closed) = {
                        let inner = shared.lock();
                        let (lines, closed) = inner.logs.get(&pod).cloned().unwrap_or_default();
                        let text: String = lines[sent.min(lines.len())..]
                            .iter()
                            .map(|line| format!("{line}\n"))
                            .collect();
                        sent = lines.len();
                        (text, closed || !follow)
                    };
                    if !text.is_empty() {
                        return Some((
                            Ok::<_, std::io::Error>(Bytes::from(text)),
                            (shared, changed, sent, closed),
                        ));
                    }
                    if closed || changed.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
