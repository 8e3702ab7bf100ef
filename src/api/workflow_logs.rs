//! `GET /api/workflow/{name}/logs`: a workflow's lines as one `text/plain`
//! stream, stitched from committed chunks (the replicated index, bytes from
//! object storage) and, on the node holding it, the live buffer of lines
//! not yet durable; then, while the workflow runs, new lines as they come.
//!
//! Invariants: lines of one task run come in offset order, each once (a
//! per-run high-water offset filters both sources); chunks come in commit
//! order; with `last_n_lines` only the chunks holding the last N lines are
//! read (from the end of the index), and the response header
//! `x-gantry-log-chunks-read` says how many were; the stream ends once the
//! workflow has finished and every committed line has been sent. Any member
//! can serve it: a follower has no live buffer and sends lines once their
//! chunk commits, so a follow survives a leader change.
//!
//! `format=jsonl` (Gantry's own, used by the CLI) sends each line as JSON
//! with its task run and offset, and ends a complete stream with
//! `{"end":true}`, so a client can tell a finished log from a cut
//! connection. After the first part (the tail, or every stored line) it
//! sends `{"after":[[task,retry,offset],..]}`: how far each run was read,
//! lines skipped by the tail included. `after=<task>:<retry>:<offset>`
//! (repeatable) resumes past that, on any member.

use super::error::ApiError;
use super::params::Params;
use super::workflow::{read, resolve_id};
use super::AppState;
use crate::control::logger::LiveView;
use crate::log_chunk::{parse_after_param, render_line_into, StoredLine};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use gantry_storage::IndexedLogChunk;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a follower re-checks a quiet workflow (new chunks, its end).
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// After a wakeup, how long a follower lets more lines gather before it
/// reads: a busy workflow costs each follower at most one pass per
/// interval, not one per arriving batch.
const FOLLOW_GATHER: Duration = Duration::from_millis(100);
/// Live bytes one follower wakeup copies and sends at most: a follower
/// behind by a whole buffer catches up page by page, at the pace its
/// client reads, instead of holding a copy of the buffer.
const FOLLOW_PAGE_BYTES: usize = 256 << 10;
/// Response header: chunks read from object storage for the first answer.
pub const CHUNKS_READ_HEADER: &str = "x-gantry-log-chunks-read";

type Run = (String, u32);
type Sender = mpsc::Sender<Result<String, Infallible>>;

/// Lines kept by `error_logs` per failed task run when no `last_n_lines` is given.
const ERROR_LINES_DEFAULT: usize = 100;

struct Filter {
    task: Option<String>,
    retry_id: Option<u32>,
    /// OSMO's `query`: only lines whose text matches are sent (every line
    /// of the runs still counts as read, so a follow never reads it again).
    pattern: Option<regex::Regex>,
}

/// Longest `query` pattern, and the most memory its compiled form may take:
/// the regex engine matches in linear time, these bound the compiling.
const QUERY_PATTERN_BYTES_MAX: usize = 1024;
const QUERY_COMPILED_BYTES_MAX: usize = 1 << 20;

/// `query`, compiled; a 400 naming it when it is not a usable pattern.
fn query_pattern(params: &Params) -> Result<Option<regex::Regex>, ApiError> {
    let Some(pattern) = params.get("query") else {
        return Ok(None);
    };
    if pattern.len() > QUERY_PATTERN_BYTES_MAX {
        return Err(ApiError::bad_request(
            "USAGE",
            format!("query: the pattern is at most {QUERY_PATTERN_BYTES_MAX} bytes"),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(QUERY_COMPILED_BYTES_MAX)
        .build()
        .map(Some)
        .map_err(|error| {
            ApiError::bad_request(
                "USAGE",
                format!("query: not a usable regular expression: {error}"),
            )
        })
}

/// How lines go on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// OSMO's rendered lines.
    Text,
    /// One JSON object per line, then the end marker.
    JsonLines,
}

/// The record that closes a complete `jsonl` stream.
pub const JSONL_END: &str = "{\"end\":true}\n";

impl Encoding {
    fn parse(params: &Params) -> Result<Encoding, ApiError> {
        match params.get("format") {
            None | Some("text") => Ok(Encoding::Text),
            Some("jsonl") => Ok(Encoding::JsonLines),
            Some(other) => Err(ApiError::bad_request(
                "USAGE",
                format!("format: '{other}' is not one of text, jsonl"),
            )),
        }
    }

    /// Appends `line` in this encoding to `out`.
    fn line_into(self, out: &mut String, line: &StoredLine) {
        match self {
            Encoding::Text => render_line_into(out, line),
            Encoding::JsonLines => {
                // A StoredLine always serializes; the fallback keeps the stream valid.
                if let Ok(json) = serde_json::to_string(line) {
                    out.push_str(&json);
                }
                out.push('\n');
            }
        }
    }

    fn lines<'a>(self, lines: impl IntoIterator<Item = &'a StoredLine>) -> String {
        let mut out = String::new();
        for line in lines {
            self.line_into(&mut out, line);
        }
        out
    }
}

impl Filter {
    /// The line belongs to a task run asked for.
    fn keeps(&self, line: &StoredLine) -> bool {
        self.task.as_ref().is_none_or(|task| &line.task == task)
            && self.retry_id.is_none_or(|retry| line.retry_id == retry)
    }

    /// The line is sent: its run is asked for and its text matches `query`.
    fn shows(&self, line: &StoredLine) -> bool {
        self.keeps(line)
            && self
                .pattern
                .as_ref()
                .is_none_or(|pattern| pattern.is_match(&line.text))
    }
}

/// Most lines `last_n_lines` may ask for: the answer is assembled in memory
/// from the chunks holding them, so an unbounded N would let one request
/// hold a whole workflow's logs at once.
pub const LAST_N_LINES_MAX: u64 = 100_000;

/// `last_n_lines`, refused with 400 past [`LAST_N_LINES_MAX`].
fn last_n_lines(params: &Params) -> Result<Option<u64>, ApiError> {
    match params.number("last_n_lines")? {
        Some(n) if n > LAST_N_LINES_MAX => Err(ApiError::bad_request(
            "USAGE",
            format!("query parameter 'last_n_lines' is at most {LAST_N_LINES_MAX}, not {n}"),
        )),
        n => Ok(n),
    }
}

/// `GET /api/workflow/{name}/error_logs`: the last lines (`last_n_lines`,
/// default 100) of each failed task run, task by task; no follow.
pub async fn error_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let n = last_n_lines(&params)?.map_or(ERROR_LINES_DEFAULT, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let only_task = params.get("task_name").map(str::to_string);
    let only_retry = params.retry_id()?;
    let pattern = query_pattern(&params)?;
    let id = resolve_id(&state, &params, id).await?;
    let view = read(&state, &params).await?;
    let workflow = view
        .workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    refuse_if_purged(&view, &id)?;
    let mut failed = Vec::new();
    for group in view.groups(&workflow)? {
        for task in view.group_tasks(&group)? {
            if task.status.is_failure()
                && only_task.as_ref().is_none_or(|name| *name == task.name)
                && only_retry.is_none_or(|retry| retry == task.retry_id)
            {
                failed.push((task.name, task.retry_id));
            }
        }
    }
    let mut text = String::new();
    let mut chunks_read = 0;
    let live = state.logs.live(&id);
    for (task, retry_id) in failed {
        let chunks = view.log_chunks(&id, Some(&task), Some(retry_id))?;
        let filter = Filter {
            task: Some(task),
            retry_id: Some(retry_id),
            pattern: pattern.clone(),
        };
        let (lines, read_count) =
            tail(&state, &chunks, &live, &filter, n, &mut Sent::default()).await?;
        text.push_str(&Encoding::Text.lines(&lines));
        chunks_read += read_count;
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static(CHUNKS_READ_HEADER),
                chunks_read.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

/// What a reader has sent: per task run, the highest offset.
#[derive(Default)]
struct Sent {
    upto: HashMap<Run, u64>,
}

impl Sent {
    /// What a resuming client already has: `after=<task>:<retry>:<offset>`.
    fn after(params: &Params) -> Result<Sent, ApiError> {
        let mut sent = Sent::default();
        for value in params.all("after") {
            let (task, retry, offset) = parse_after_param(&value)
                .map_err(|message| ApiError::bad_request("USAGE", message))?;
            sent.note(task, retry, offset);
        }
        Ok(sent)
    }

    /// The `jsonl` cursor record: every run's high-water offset.
    fn cursor(&self) -> String {
        let runs: Vec<(&str, u32, u64)> = self
            .upto
            .iter()
            .map(|((task, retry), offset)| (task.as_str(), *retry, *offset))
            .collect();
        let mut json = serde_json::json!({ "after": runs }).to_string();
        json.push('\n');
        json
    }

    fn is_new(&self, line: &StoredLine) -> bool {
        self.upto
            .get(&(line.task.clone(), line.retry_id))
            .is_none_or(|upto| line.offset > *upto)
    }

    fn chunk_is_new(&self, indexed: &IndexedLogChunk) -> bool {
        let chunk = &indexed.chunk;
        self.upto
            .get(&(chunk.task.clone(), chunk.retry_id))
            .is_none_or(|upto| chunk.last_offset > *upto)
    }

    fn note(&mut self, task: &str, retry_id: u32, offset: u64) {
        let upto = self
            .upto
            .entry((task.to_string(), retry_id))
            .or_insert(offset);
        *upto = (*upto).max(offset);
    }

    /// Live lines that are new, of runs whose live part is contiguous with
    /// what was sent (nothing evicted from the buffer beyond it).
    fn live_lines<'a>(
        &self,
        live: &'a LiveView,
        filter: &'a Filter,
    ) -> impl Iterator<Item = &'a StoredLine> + 'a {
        let evicted_ok: HashMap<&Run, bool> = live
            .evicted
            .iter()
            .map(|(run, evicted)| (run, self.upto.get(run).is_some_and(|upto| upto >= evicted)))
            .collect();
        let upto = self.upto.clone();
        live.lines.iter().filter(move |line| {
            let run = (line.task.clone(), line.retry_id);
            filter.keeps(line)
                && evicted_ok.get(&run).copied().unwrap_or(true)
                && upto.get(&run).is_none_or(|u| line.offset > *u)
        })
    }
}

/// 410 when retention deleted the workflow's logs: saying so, and when,
/// instead of answering an empty log.
fn refuse_if_purged(view: &gantry_storage::ReadView, id: &str) -> Result<(), ApiError> {
    let Some(archive) = view.workflow_archive(id)? else {
        return Ok(());
    };
    let Some(purged) = archive.logs_purged_at else {
        return Ok(());
    };
    let retention = archive.retention_ms.map_or_else(String::new, |ms| {
        format!(" (kept for {} after the workflow ended)", duration_text(ms))
    });
    Err(ApiError::new(
        StatusCode::GONE,
        "RESOURCE",
        format!(
            "The logs of workflow '{id}' were deleted by the log retention policy (WORKFLOW config workflow_log.retention) at {}{retention}",
            super::views::time(Some(purged)).as_str().unwrap_or("?")
        ),
    )
    .with_workflow(id))
}

/// `30d`, `12h`, `90m` or `2s`: the largest unit that divides evenly.
fn duration_text(ms: u64) -> String {
    let seconds = ms / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "SERVER",
        format!("Internal server error: reading logs: {error}"),
    )
}

pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<crate::api::auth::Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let last_n = last_n_lines(&params)?;
    let retry_id = params.retry_id()?;
    let filter = Filter {
        task: params.get("task_name").map(str::to_string),
        retry_id,
        pattern: query_pattern(&params)?,
    };
    let encoding = Encoding::parse(&params)?;
    let mut sent = Sent::after(&params)?;
    let id = resolve_id(&state, &params, id).await?;
    // A stream that will follow reads the live lines page by page as it
    // follows (from the start of the buffer), instead of a copy of the
    // whole buffer now; one that ends at once (a finished workflow, a tail)
    // reads them here.
    let will_follow = last_n.is_none()
        && state
            .node
            .read_local()
            .ok()
            .and_then(|view| view.workflow(&id).ok().flatten())
            .is_some_and(|workflow| workflow.status.is_alive());
    // Live lines first, then the index: a line that left the buffer in
    // between is in a chunk the index read sees.
    let live = match will_follow {
        true => LiveView::empty_from_start(),
        false => state.logs.live(&id),
    };
    let view = read(&state, &params).await?;
    let workflow = view
        .workflow(&id)?
        .ok_or_else(|| ApiError::not_found(format!("Workflow '{id}' not found")))?;
    refuse_if_purged(&view, &id)?;
    if let Some(task) = &filter.task {
        if view.task(&id, task)?.is_none() {
            return Err(ApiError::not_found(format!(
                "Task '{task}' not found in workflow '{id}'"
            )));
        }
    }
    let chunks = view.log_chunks(&id, filter.task.as_deref(), filter.retry_id)?;
    drop(view);
    // Once following, the stream ends only when the workflow has and every
    // line is sent (its live lines were left for the follow to read).
    let follow = will_follow || workflow.status.is_alive();
    let follow_slot = match follow {
        true => Some(state.logs.follow_slot(&caller.user).ok_or_else(|| ApiError {
            retry_after_secs: Some(5),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "USAGE",
                format!(
                    "user '{}' already follows {} running workflows' logs on this server; stop some of them first",
                    caller.user,
                    crate::control::logger::FOLLOWERS_PER_CALLER_MAX
                ),
            )
        })?),
        false => None,
    };
    let (sender, receiver) = mpsc::channel::<Result<String, Infallible>>(4);
    let chunks_read;
    let first = match last_n {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let (lines, read_count) = tail(&state, &chunks, &live, &filter, n, &mut sent).await?;
            chunks_read = read_count;
            Some(lines)
        }
        None => {
            chunks_read = chunks.iter().filter(|c| sent.chunk_is_new(c)).count();
            None
        }
    };
    // The live lines read above are sent below: following starts after them.
    let seen_up_to = live.next_seq;
    let state = state.clone();
    // On the bulk runtime: a follower's work grows with what its tasks
    // print, and must not queue in front of other requests.
    state.bulk.clone().spawn(async move {
        // Held for as long as the stream is followed.
        let _follow_slot = follow_slot;
        let complete = async {
            match first {
                Some(lines) => send_lines(&sender, encoding, &filter, &lines).await?,
                None => {
                    send_chunks(&state, &chunks, &filter, encoding, &mut sent, &sender).await?;
                    let fresh: Vec<StoredLine> = sent.live_lines(&live, &filter).cloned().collect();
                    for line in &fresh {
                        sent.note(&line.task, line.retry_id, line.offset);
                    }
                    send_lines(&sender, encoding, &filter, &fresh).await?;
                }
            }
            if encoding == Encoding::JsonLines {
                send(&sender, sent.cursor()).await?;
            }
            if follow {
                follow_live(
                    &state, &id, &filter, encoding, &mut sent, &sender, seen_up_to,
                )
                .await?;
            }
            Ok::<(), ()>(())
        };
        if complete.await.is_ok() && encoding == Encoding::JsonLines {
            let _ = sender.send(Ok(JSONL_END.to_string())).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    let content_type = match encoding {
        Encoding::Text => "text/plain; charset=utf-8",
        Encoding::JsonLines => "application/jsonl",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::HeaderName::from_static(CHUNKS_READ_HEADER),
                chunks_read.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Sends `text` unless empty; `Err` once the client has gone.
async fn send(sender: &Sender, text: String) -> Result<(), ()> {
    if text.is_empty() {
        return Ok(());
    }
    sender.send(Ok(text)).await.map_err(|_| ())
}

/// Sends `lines` in pieces of about [`FOLLOW_PAGE_BYTES`], so no more than
/// a few pieces wait in the response at once, whatever the lines.
async fn send_lines(
    sender: &Sender,
    encoding: Encoding,
    filter: &Filter,
    lines: &[StoredLine],
) -> Result<(), ()> {
    let mut piece = String::new();
    for line in lines.iter().filter(|line| filter.shows(line)) {
        encoding.line_into(&mut piece, line);
        if piece.len() >= FOLLOW_PAGE_BYTES {
            send(sender, std::mem::take(&mut piece)).await?;
        }
    }
    send(sender, piece).await
}

/// The last `n` lines: live lines above the index, then chunks read from
/// the end of the index until they hold enough. Returns the lines and how
/// many chunks were read.
async fn tail(
    state: &AppState,
    chunks: &[IndexedLogChunk],
    live: &LiveView,
    filter: &Filter,
    n: usize,
    sent: &mut Sent,
) -> Result<(Vec<StoredLine>, usize), ApiError> {
    for indexed in chunks {
        sent.note(
            &indexed.chunk.task,
            indexed.chunk.retry_id,
            indexed.chunk.last_offset,
        );
    }
    // Every new live line of the runs asked for counts as read; those that
    // match `query` are the ones kept.
    let live_in_runs: Vec<&StoredLine> = sent.live_lines(live, filter).collect();
    let live_lines: Vec<StoredLine> = live_in_runs
        .iter()
        .filter(|line| filter.shows(line))
        .map(|line| (*line).clone())
        .collect();
    let mut need = n.saturating_sub(live_lines.len());
    // Chunks are per run and filtered by run like lines, so without `query`
    // a chunk's `lines` counts exactly what it adds and only the chunks
    // needed are read; with `query` each one read says how many matched.
    let mut pieces: Vec<Vec<StoredLine>> = Vec::new();
    for indexed in chunks.iter().rev() {
        if need == 0 {
            break;
        }
        let chunk_lines = state
            .logs
            .read_chunk(&indexed.chunk)
            .await
            .map_err(internal)?;
        let shown: Vec<StoredLine> = chunk_lines
            .into_iter()
            .filter(|line| filter.shows(line))
            .collect();
        need = need.saturating_sub(shown.len());
        pieces.push(shown);
    }
    let chunks_read = pieces.len();
    for line in live_in_runs {
        sent.note(&line.task, line.retry_id, line.offset);
    }
    let mut lines: Vec<StoredLine> = pieces.into_iter().rev().flatten().collect();
    lines.extend(live_lines);
    let skip = lines.len().saturating_sub(n);
    lines.drain(..skip);
    Ok((lines, chunks_read))
}

/// Sends the lines of every chunk not yet (fully) sent, in index order.
async fn send_chunks(
    state: &AppState,
    chunks: &[IndexedLogChunk],
    filter: &Filter,
    encoding: Encoding,
    sent: &mut Sent,
    sender: &Sender,
) -> Result<(), ()> {
    for indexed in chunks {
        if !sent.chunk_is_new(indexed) {
            continue;
        }
        let lines = match state.logs.read_chunk(&indexed.chunk).await {
            Ok(lines) => lines,
            Err(error) => {
                tracing::warn!(%error, "cannot read a log chunk; ending the log stream");
                return Err(());
            }
        };
        let text = encoding.lines(
            lines
                .iter()
                .filter(|line| filter.shows(line) && sent.is_new(line)),
        );
        let chunk = &indexed.chunk;
        sent.note(&chunk.task, chunk.retry_id, chunk.last_offset);
        send(sender, text).await?;
    }
    Ok(())
}

/// Sends new lines (committed chunks, then live ones) until the workflow
/// has ended and every committed line is sent (`Ok`), or the client goes
/// away or this node cannot read (`Err`: the stream is cut, not complete).
async fn follow_live(
    state: &AppState,
    id: &str,
    filter: &Filter,
    encoding: Encoding,
    sent: &mut Sent,
    sender: &Sender,
    mut seen_up_to: u64,
) -> Result<(), ()> {
    let mut changes = state.logs.subscribe(id);
    // Each wakeup copies only the live lines not seen yet (after
    // `seen_up_to`); a line passed over (its run's buffer has a gap)
    // reaches the follower in its chunk.
    loop {
        // The status first: chunks committed before the end are then all read below.
        let live = state.logs.live_since(id, seen_up_to, FOLLOW_PAGE_BYTES);
        seen_up_to = live.next_seq;
        let view = state.node.read_local().map_err(|_| ())?;
        let finished = match view.workflow(id) {
            Ok(Some(workflow)) => !workflow.status.is_alive(),
            Ok(None) => true,
            Err(_) => return Err(()),
        };
        let chunks = view
            .log_chunks(id, filter.task.as_deref(), filter.retry_id)
            .map_err(|_| ())?;
        drop(view);
        send_chunks(state, &chunks, filter, encoding, sent, sender).await?;
        let fresh: Vec<StoredLine> = sent.live_lines(&live, filter).cloned().collect();
        for line in &fresh {
            sent.note(&line.task, line.retry_id, line.offset);
        }
        send_lines(sender, encoding, filter, &fresh).await?;
        if live.more {
            // The rest of the backlog at once, a page per wakeup.
            continue;
        }
        if finished {
            return Ok(());
        }
        // A client that went away ends the follow now, not at the next
        // line (a quiet task may print nothing for hours).
        tokio::select! {
            _ = sender.closed() => return Err(()),
            changed = tokio::time::timeout(FOLLOW_POLL, changes.changed()) => {
                if let Ok(Err(_)) = changed {
                    // No more wakeups (cannot happen while the logger lives):
                    // poll instead of spinning.
                    tokio::time::sleep(FOLLOW_POLL).await;
                }
            }
        }
        tokio::select! {
            _ = sender.closed() => return Err(()),
            _ = tokio::time::sleep(FOLLOW_GATHER) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_takes_task_names_with_colons_and_refuses_bad_values() {
        let sent = Sent::after(&Params::parse(Some("after=a:b:2:17&after=c:0:3"))).unwrap();
        assert_eq!(sent.upto.get(&("a:b".to_string(), 2)), Some(&17));
        assert_eq!(sent.upto.get(&("c".to_string(), 0)), Some(&3));
        for bad in ["after=x", "after=a:b:c", "after=a:-1:3"] {
            let error = Sent::after(&Params::parse(Some(bad))).err().unwrap();
            assert!(error.message.contains("after"), "{bad}: {}", error.message);
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
    }
}
