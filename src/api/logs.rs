//! `GET /api/workflow/{id}/logs`: a workflow's lines as one `text/plain`
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

use super::error::ApiError;
use super::params::Params;
use super::workflow::read;
use super::AppState;
use crate::control::logs::{render_line, LiveView, StoredLine};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_storage::IndexedLogChunk;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a follower re-checks a quiet workflow (new chunks, its end).
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Response header: chunks read from object storage for the first answer.
pub const CHUNKS_READ_HEADER: &str = "x-gantry-log-chunks-read";

type Run = (String, u32);
type Sender = mpsc::Sender<Result<String, Infallible>>;

/// Lines kept by `error_logs` per failed task run when no `last_n_lines` is given.
const ERROR_LINES_DEFAULT: usize = 100;

struct Filter {
    task: Option<String>,
    retry_id: Option<u32>,
}

impl Filter {
    fn keeps(&self, line: &StoredLine) -> bool {
        self.task.as_ref().is_none_or(|task| &line.task == task)
            && self.retry_id.is_none_or(|retry| line.retry_id == retry)
    }
}

/// `GET /api/workflow/{id}/error_logs`: the last lines (`last_n_lines`,
/// default 100) of each failed task run, task by task; no follow.
pub async fn error_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let n = params
        .number("last_n_lines")?
        .map_or(ERROR_LINES_DEFAULT, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let only_task = params.get("task_name").map(str::to_string);
    let only_retry = params.number("retry_id")?;
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
                && only_retry.is_none_or(|retry| retry == u64::from(task.retry_id))
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
        };
        let (tail_text, read_count) =
            tail(&state, &chunks, &live, &filter, n, &mut Sent::default()).await?;
        text.push_str(&tail_text);
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
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref());
    let last_n = params.number("last_n_lines")?;
    let retry_id = params
        .number("retry_id")?
        .map(|retry| {
            u32::try_from(retry)
                .map_err(|_| ApiError::bad_request("USAGE", "retry_id is too large"))
        })
        .transpose()?;
    let filter = Filter {
        task: params.get("task_name").map(str::to_string),
        retry_id,
    };
    // Live lines first, then the index: a line that left the buffer in
    // between is in a chunk the index read sees.
    let live = state.logs.live(&id);
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
    let follow = workflow.status.is_alive();
    let mut sent = Sent::default();
    let (sender, receiver) = mpsc::channel::<Result<String, Infallible>>(4);
    let chunks_read;
    match last_n {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let (text, read_count) = tail(&state, &chunks, &live, &filter, n, &mut sent).await?;
            chunks_read = read_count;
            let state = state.clone();
            tokio::spawn(async move {
                if !text.is_empty() && sender.send(Ok(text)).await.is_err() {
                    return;
                }
                if follow {
                    follow_live(state, id, filter, sent, sender).await;
                }
            });
        }
        None => {
            chunks_read = chunks.len();
            let state = state.clone();
            tokio::spawn(async move {
                if send_chunks(&state, &chunks, &filter, &mut sent, &sender)
                    .await
                    .is_err()
                {
                    return;
                }
                let text: String = sent.live_lines(&live, &filter).map(render_line).collect();
                for line in sent.live_lines(&live, &filter).collect::<Vec<_>>() {
                    sent.note(&line.task, line.retry_id, line.offset);
                }
                if !text.is_empty() && sender.send(Ok(text)).await.is_err() {
                    return;
                }
                if follow {
                    follow_live(state, id, filter, sent, sender).await;
                }
            });
        }
    }
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
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
        body,
    )
        .into_response())
}

/// The last `n` lines: live lines above the index, then chunks read from
/// the end of the index until they hold enough. Returns the text and how
/// many chunks were read.
async fn tail(
    state: &AppState,
    chunks: &[IndexedLogChunk],
    live: &LiveView,
    filter: &Filter,
    n: usize,
    sent: &mut Sent,
) -> Result<(String, usize), ApiError> {
    for indexed in chunks {
        sent.note(
            &indexed.chunk.task,
            indexed.chunk.retry_id,
            indexed.chunk.last_offset,
        );
    }
    // Chunks are per run and filtered like lines, so `lines` counts exactly.
    let live_lines: Vec<StoredLine> = sent.live_lines(live, filter).cloned().collect();
    let mut need = n.saturating_sub(live_lines.len());
    let mut picked = Vec::new();
    for indexed in chunks.iter().rev() {
        if need == 0 {
            break;
        }
        picked.push(indexed);
        need = need.saturating_sub(usize::try_from(indexed.chunk.lines).unwrap_or(usize::MAX));
    }
    picked.reverse();
    let mut lines: Vec<StoredLine> = Vec::new();
    for indexed in &picked {
        let chunk_lines = state
            .logs
            .read_chunk(&indexed.chunk)
            .await
            .map_err(internal)?;
        lines.extend(chunk_lines.into_iter().filter(|line| filter.keeps(line)));
    }
    for line in &live_lines {
        sent.note(&line.task, line.retry_id, line.offset);
    }
    lines.extend(live_lines);
    let skip = lines.len().saturating_sub(n);
    Ok((
        lines[skip..].iter().map(render_line).collect(),
        picked.len(),
    ))
}

/// Sends the lines of every chunk not yet (fully) sent, in index order.
async fn send_chunks(
    state: &AppState,
    chunks: &[IndexedLogChunk],
    filter: &Filter,
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
        let text: String = lines
            .iter()
            .filter(|line| filter.keeps(line) && sent.is_new(line))
            .map(render_line)
            .collect();
        let chunk = &indexed.chunk;
        sent.note(&chunk.task, chunk.retry_id, chunk.last_offset);
        if !text.is_empty() && sender.send(Ok(text)).await.is_err() {
            return Err(());
        }
    }
    Ok(())
}

/// Sends new lines (committed chunks, then live ones) until the workflow
/// has ended and every committed line is sent, or the client goes away.
async fn follow_live(state: AppState, id: String, filter: Filter, mut sent: Sent, sender: Sender) {
    let mut appended = state.logs.subscribe();
    loop {
        // The status first: chunks committed before the end are then all read below.
        let live = state.logs.live(&id);
        let Ok(view) = state.node.read_local() else {
            return;
        };
        let finished = match view.workflow(&id) {
            Ok(Some(workflow)) => !workflow.status.is_alive(),
            _ => true,
        };
        let Ok(chunks) = view.log_chunks(&id, filter.task.as_deref(), filter.retry_id) else {
            return;
        };
        drop(view);
        if send_chunks(&state, &chunks, &filter, &mut sent, &sender)
            .await
            .is_err()
        {
            return;
        }
        let fresh: Vec<StoredLine> = sent.live_lines(&live, &filter).cloned().collect();
        for line in &fresh {
            sent.note(&line.task, line.retry_id, line.offset);
        }
        let text: String = fresh.iter().map(render_line).collect();
        if !text.is_empty() && sender.send(Ok(text)).await.is_err() {
            return;
        }
        if finished {
            return;
        }
        let wait_for_append = async {
            loop {
                match appended.recv().await {
                    Ok(workflow) if workflow == id => return,
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(FOLLOW_POLL, wait_for_append).await;
    }
}
