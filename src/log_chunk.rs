//! The log chunk: the unit in which task output lines are stored. One
//! chunk holds lines of one task run as JSON lines ([`StoredLine`]),
//! compressed with zstd, at the object key [`chunk_key`]. Also the forms a
//! reader meets: OSMO's rendered text line, and the `after=` cursor of a
//! resumed stream.
//!
//! Invariants: a chunk's lines are of one task run, with strictly
//! increasing offsets (the writer's duty; `decode` returns them as
//! stored); the JSON of a line is the same whether it was written borrowed
//! or owned, so readers need one type; chunk keys sort in offset order.

use crate::protocol::{LogLine, LogStream};
use gantry_storage::TaskKey;
use serde::{Deserialize, Serialize};

/// zstd level: 3 is zstd's default, fast with a good ratio on text.
const ZSTD_LEVEL: i32 = 3;

/// One line as a chunk holds it and as `/logs?format=jsonl` sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredLine {
    pub task: String,
    pub retry_id: u32,
    pub stream: LogStream,
    #[serde(default)]
    pub offset: u64,
    pub time: i64,
    pub text: String,
}

/// A [`StoredLine`] borrowed from the line it is made of: what a chunk
/// writer serializes (the same JSON), without copying task name and text.
#[derive(Serialize)]
struct StoredLineRef<'a> {
    task: &'a str,
    retry_id: u32,
    stream: LogStream,
    offset: u64,
    time: i64,
    text: &'a str,
}

impl<'a> StoredLineRef<'a> {
    fn of(key: &'a TaskKey, line: &'a LogLine) -> StoredLineRef<'a> {
        StoredLineRef {
            task: &key.task,
            retry_id: key.retry_id,
            stream: line.stream,
            offset: line.offset,
            time: line.time,
            text: &line.text,
        }
    }
}

impl StoredLine {
    /// The stored form of `line` of task run `key`.
    pub fn of(key: &TaskKey, line: &LogLine) -> StoredLine {
        StoredLine {
            task: key.task.clone(),
            retry_id: key.retry_id,
            stream: line.stream,
            offset: line.offset,
            time: line.time,
            text: line.text.clone(),
        }
    }
}

/// The uncompressed chunk: one JSON object per line, each ended by `\n`.
pub fn encode(key: &TaskKey, lines: &[LogLine]) -> Result<Vec<u8>, serde_json::Error> {
    let mut raw = Vec::with_capacity(lines.len() * 64);
    for line in lines {
        serde_json::to_writer(&mut raw, &StoredLineRef::of(key, line))?;
        raw.push(b'\n');
    }
    Ok(raw)
}

/// The stored bytes of an encoded chunk.
pub fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(raw, ZSTD_LEVEL)
}

/// A stored chunk's lines; `raw_bytes` is its uncompressed size as indexed
/// (decompression refuses to grow past it). The error says what is wrong.
pub fn decode(compressed: &[u8], raw_bytes: usize) -> Result<Vec<StoredLine>, String> {
    let raw =
        zstd::bulk::decompress(compressed, raw_bytes.max(1)).map_err(|error| error.to_string())?;
    raw.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice::<StoredLine>(line).map_err(|error| error.to_string()))
        .collect()
}

/// `<workflow>/logs/<task>/<retry>/<first>-<last>.jsonl.zst`, offsets
/// zero-padded so keys sort in offset order.
pub fn chunk_key(key: &TaskKey, first: u64, last: u64) -> String {
    format!(
        "{}/logs/{}/{}/{first:020}-{last:020}.jsonl.zst",
        key.workflow_id, key.task, key.retry_id
    )
}

/// OSMO's rendered line: `YYYY/MM/DD HH:MM:SS [<task>] <text>`.
pub fn render_line(line: &StoredLine) -> String {
    let mut out = String::with_capacity(line.text.len() + line.task.len() + 32);
    render_line_into(&mut out, line);
    out
}

/// [`render_line`], appended to `out` (no allocation of its own: a
/// follower renders every line it sends).
pub fn render_line_into(out: &mut String, line: &StoredLine) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(out, "{} [{}", osmo_time(line.time), line.task);
    if line.retry_id > 0 {
        let _ = write!(out, " retry-{}", line.retry_id);
    }
    out.push(']');
    if line.stream == LogStream::Osmo {
        out.push_str("[osmo]");
    }
    out.push(' ');
    out.push_str(&line.text);
    out.push('\n');
}

/// `after=` of a resumed `/logs` stream: task run `task`/`retry_id` was
/// read up to `offset` (the task name last, since it may hold colons).
pub fn after_param(task: &str, retry_id: u32, offset: u64) -> String {
    format!("{task}:{retry_id}:{offset}")
}

/// Parses [`after_param`]'s form; the error says what is wrong with it.
pub fn parse_after_param(value: &str) -> Result<(&str, u32, u64), String> {
    let parsed = value.rsplitn(3, ':').collect::<Vec<_>>();
    let [offset, retry, task] = parsed.as_slice() else {
        return Err(format!("after: '{value}' is not <task>:<retry>:<offset>"));
    };
    match (retry.parse::<u32>(), offset.parse::<u64>()) {
        (Ok(retry), Ok(offset)) => Ok((task, retry, offset)),
        _ => Err(format!(
            "after: '{value}' needs a number for retry and offset"
        )),
    }
}

/// OSMO's time in log and event lines: `YYYY/MM/DD HH:MM:SS` (UTC).
pub fn osmo_time(ms: i64) -> impl std::fmt::Display {
    // Parsed once: every line sent to every follower is formatted, and
    // parsing the pattern each time cost more than the formatting.
    static ITEMS: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> =
        std::sync::LazyLock::new(|| {
            chrono::format::StrftimeItems::new("%Y/%m/%d %H:%M:%S")
                .parse()
                .unwrap_or_default()
        });
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format_with_items(ITEMS.iter())
}

/// How a task run is named in log and event lines: `task` or `task retry-N`.
pub fn run_source(task: &str, retry_id: u32) -> String {
    if retry_id > 0 {
        format!("{task} retry-{retry_id}")
    } else {
        task.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TaskKey {
        TaskKey {
            workflow_id: "wf-1".into(),
            task: "a".into(),
            retry_id: 0,
        }
    }

    #[test]
    fn the_borrowed_form_writes_the_stored_json() {
        let key = key();
        let lines = (1..=3u64).map(|offset| LogLine {
            offset,
            stream: LogStream::Stdout,
            time: 1_700_000_000_000,
            text: format!("step {offset} loss=0.{offset:04}"),
        });
        for line in lines.chain([LogLine {
            offset: 9,
            stream: LogStream::Stderr,
            time: -1,
            text: "quote \" backslash \\ tab \t é".into(),
        }]) {
            let borrowed = serde_json::to_string(&StoredLineRef::of(&key, &line)).unwrap();
            let owned = serde_json::to_string(&StoredLine::of(&key, &line)).unwrap();
            assert_eq!(borrowed, owned);
        }
    }

    #[test]
    fn a_chunk_decodes_to_what_was_encoded_and_refuses_damage() {
        let key = key();
        let lines: Vec<LogLine> = (1..=50u64)
            .map(|offset| LogLine {
                offset,
                stream: LogStream::Stdout,
                time: 1,
                text: format!("line {offset}"),
            })
            .collect();
        let raw = encode(&key, &lines).unwrap();
        let stored = compress(&raw).unwrap();
        let decoded = decode(&stored, raw.len()).unwrap();
        assert_eq!(decoded.len(), 50);
        assert_eq!(decoded[49], StoredLine::of(&key, &lines[49]));
        assert!(decode(&stored[..stored.len() / 2], raw.len()).is_err());
        assert!(
            decode(&stored, raw.len() / 2).is_err(),
            "larger than indexed"
        );
    }
}
