//! Turns a task's stdout and stderr into timestamped [`LogLine`]s and sends
//! them to the control plane in batches.
//!
//! Invariants: lines of one stream keep their order; a line longer than
//! [`MAX_LINE`] bytes is split into several lines so memory stays bounded
//! whatever the task prints; bytes that are not UTF-8 are replaced, never
//! dropped. A batch goes out at [`BATCH_LINES`] lines or after
//! [`BATCH_INTERVAL`], and whatever is pending goes out before [`batch`]
//! returns, so the caller can send the final status after it.

use super::outbox::Outbox;
use crate::clock::now_ms;
use crate::protocol::{FromOperator, LogLine, LogStream};
use gantry_storage::TaskKey;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

pub const MAX_LINE: usize = 64 * 1024;
pub const BATCH_LINES: usize = 256;
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The first log offset of a task run started now: the start time in
/// milliseconds, shifted so a run may send 2^20 lines per millisecond it
/// lasts before reaching where a later run (of the same task, after this
/// operator restarted) starts.
pub fn run_offset_base() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0) << 20
}

/// Reads `reader` to its end, one [`LogLine`] per line.
pub async fn read_lines(
    reader: impl AsyncRead + Unpin,
    stream: LogStream,
    lines: mpsc::Sender<LogLine>,
) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut line: Vec<u8> = Vec::new();
    // Once the batcher is gone the pipe is still drained, so the task never
    // blocks on a full pipe (or dies of SIGPIPE) because of us.
    let mut discard = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(error) => {
                tracing::debug!(%error, ?stream, "reading task output failed");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let window = &buf[..buf.len().min(MAX_LINE - line.len())];
        let (taken, complete) = match window.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&window[..end]);
                (end + 1, true)
            }
            None => {
                line.extend_from_slice(window);
                (window.len(), line.len() >= MAX_LINE)
            }
        };
        reader.consume(taken);
        if complete {
            let text = if line.len() >= MAX_LINE {
                split_at_char_boundary(&mut line)
            } else {
                std::mem::take(&mut line)
            };
            if !discard {
                discard = lines.send(to_line(stream, text)).await.is_err();
            }
        }
    }
    if !line.is_empty() && !discard {
        let _ = lines.send(to_line(stream, line)).await;
    }
}

/// Takes a full-length line out of `line`, leaving in it the bytes of a
/// character cut in half by the length limit, so the split never garbles it.
fn split_at_char_boundary(line: &mut Vec<u8>) -> Vec<u8> {
    let keep_from = match std::str::from_utf8(line) {
        // `error_len() == None`: the bytes end inside a character.
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        _ => line.len(),
    };
    let tail = line.split_off(keep_from);
    std::mem::replace(line, tail)
}

fn to_line(stream: LogStream, mut bytes: Vec<u8>) -> LogLine {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    LogLine {
        offset: 0, // assigned by the batcher, in the order lines arrive
        stream,
        time: now_ms(),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Forwards lines as `Logs` batches until every sender of `lines` is gone,
/// numbering them from `first_offset` on. Returns the next free offset.
pub async fn batch(
    key: &TaskKey,
    mut lines: mpsc::Receiver<LogLine>,
    outbox: &Outbox,
    first_offset: u64,
) -> u64 {
    let mut next_offset = first_offset;
    let mut pending: Vec<LogLine> = Vec::new();
    let mut tick = tokio::time::interval(BATCH_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(mut line) => {
                    line.offset = next_offset;
                    next_offset += 1;
                    pending.push(line);
                    if pending.len() >= BATCH_LINES {
                        flush(key, &mut pending, outbox).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(key, &mut pending, outbox).await,
        }
    }
    flush(key, &mut pending, outbox).await;
    next_offset
}

async fn flush(key: &TaskKey, pending: &mut Vec<LogLine>, outbox: &Outbox) {
    if pending.is_empty() {
        return;
    }
    let lines = std::mem::take(pending);
    outbox
        .send(FromOperator::Logs {
            key: key.clone(),
            lines,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(input: &[u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(1024);
        read_lines(input, LogStream::Stdout, tx).await;
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line.text);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_long_ones() {
        assert_eq!(collect(b"a\r\nb\n\nlast").await, vec!["a", "b", "", "last"]);
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = collect(&long).await;
        assert_eq!(
            lines.iter().map(String::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 10]
        );
        assert_eq!(collect(b"\xff\xfeok\n").await, vec!["\u{fffd}\u{fffd}ok"]);

        // A two-byte character straddling the limit moves whole to the next line.
        let mut straddling = vec![b'y'; MAX_LINE - 1];
        straddling.extend_from_slice("é!".as_bytes());
        let lines = collect(&straddling).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "é!");
    }
}
