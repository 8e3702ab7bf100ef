//! Terminal output shared by the CLI verbs: JSON printing, tables, time and
//! duration formatting, and the wait spinner.
//!
//! Invariants: in JSON mode stdout carries exactly the API's JSON (pretty) and
//! nothing else; decorations (spinner) go to stderr and only when stderr is a
//! terminal, so pipes and scripts never see control characters. Rendering
//! functions are pure (time zone passed in) so tests pin their output.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::OutputFormat;

/// Placeholder for absent values, so columns never collapse.
pub const NONE: &str = "-";

/// Header underline only, no vertical rules: easy to read and to `awk`.
/// (Component order is comfy-table's `TableComponent`; index 5 = header line.)
const TABLE_STYLE: &str = "     -             ";

/// Prints `value` pretty-printed to stdout with a trailing newline.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table with the CLI's style that never wraps or measures the terminal,
/// so output is identical on a terminal, in a pipe and in tests.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(TABLE_STYLE)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    table
}

/// Renders a table without trailing spaces, ending in a newline.
pub fn render_table(table: &Table) -> String {
    let rendered = table.trim_fmt();
    // comfy-table pads cells by one space each side: drop the left margin and
    // cut the header rule to the widest row (it also spans the last padding).
    let lines: Vec<&str> = rendered
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let is_rule = |l: &str| !l.is_empty() && l.chars().all(|c| c == '-');
    let width = lines
        .iter()
        .filter(|l| !is_rule(l))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for line in lines {
        if is_rule(line) {
            text.push_str(&"-".repeat(width));
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    text
}

/// A string field of a JSON object, `-` when missing, null or empty.
pub fn text_field(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => NONE.to_owned(),
        Some(Value::String(_)) => NONE.to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Parses the API's ISO-8601 times. Gantry's API writes them as OSMO does,
/// naive UTC with microseconds (`2026-12-06T07:50:53.571000`); times with an
/// offset (older servers, other tools) are read too.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|n| n.and_utc())
}

/// `YYYY-MM-DD HH:MM:SS` in `tz`; `-` when absent, the raw text if unparsable.
pub fn format_time<Tz: TimeZone>(value: Option<&Value>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match value {
        Some(Value::String(raw)) if !raw.is_empty() => match parse_time(raw) {
            Some(t) => t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string(),
            None => raw.clone(),
        },
        _ => NONE.to_owned(),
    }
}

/// Seconds as `1d 2h 3m 4s`, dropping leading zero units; `-` when absent.
pub fn format_duration(value: Option<&Value>) -> String {
    let Some(seconds) = value.and_then(Value::as_f64) else {
        return NONE.to_owned();
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return NONE.to_owned();
    }
    let total = seconds.round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3_600 % 24,
        total / 60 % 60,
        total % 60,
    );
    let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Spinner on stderr while waiting for a response; cleared on drop. Inert in
/// JSON mode or when stderr is not a terminal.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn start(format: OutputFormat, message: &str) -> Spinner {
        if format != OutputFormat::Text || !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        // new_spinner draws to stderr by default.
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs `future` with a spinner shown while it is pending.
pub async fn with_spinner<T>(
    format: OutputFormat,
    message: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    let _spinner = Spinner::start(format, message);
    future.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;
    use serde_json::json;

    #[test]
    fn times_in_given_zone() {
        let utc = Utc;
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let v = json!("2025-03-01T10:20:30.123456+00:00");
        assert_eq!(format_time(Some(&v), &utc), "2025-03-01 10:20:30");
        assert_eq!(format_time(Some(&v), &plus2), "2025-03-01 12:20:30");
        // Naive timestamps (as OSMO's Python sends) are UTC.
        let v = json!("2025-03-01T10:20:30.5");
        assert_eq!(format_time(Some(&v), &plus2), "2025-03-01 12:20:30");
        // The API's own form (OSMO's): naive UTC with microseconds.
        let v = json!("2026-12-06T07:50:53.571000");
        assert_eq!(format_time(Some(&v), &plus2), "2026-12-06 09:50:53");
        assert_eq!(
            parse_time("2026-12-06T07:50:53.571000").map(|t| t.timestamp_millis()),
            Some(1_796_543_453_571)
        );
        let v = json!("2025-03-01T10:20:30Z");
        assert_eq!(format_time(Some(&v), &utc), "2025-03-01 10:20:30");
        assert_eq!(format_time(Some(&Value::Null), &utc), "-");
        assert_eq!(format_time(None, &utc), "-");
        assert_eq!(format_time(Some(&json!("yesterday")), &utc), "yesterday");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Some(&json!(0))), "0s");
        assert_eq!(format_duration(Some(&json!(59.6))), "1m 0s");
        assert_eq!(format_duration(Some(&json!(3723))), "1h 2m 3s");
        assert_eq!(format_duration(Some(&json!(90061.0))), "1d 1h 1m 1s");
        assert_eq!(format_duration(Some(&Value::Null)), "-");
        assert_eq!(format_duration(Some(&json!(-1))), "-");
    }

    #[test]
    fn table_style() {
        let mut t = table(&["A", "Long header"]);
        t.add_row(vec!["x", "y"]);
        assert_eq!(render_table(&t), "A  Long header\n--------------\nx  y\n");
    }
}
