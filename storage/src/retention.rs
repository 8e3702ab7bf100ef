//! Log retention: how long a finished workflow's log chunks and archive are
//! kept, read from the WORKFLOW config's `workflow_log.retention`.
//!
//! The API validates the field with [`workflow_log_retention_ms`] before a
//! PUT commits, and `apply` reads the same stored text with the same function
//! when a workflow ends, so every replica schedules the same purge. The value
//! is a duration like the config's other durations (`"30d"`, `"12h"`,
//! `"90m"`, `"2s"`, or plain seconds); absent, empty or `"0"` keeps logs
//! forever.

use serde_json::Value;

/// Seconds of a duration: digits with an optional unit `s`, `m`, `h` or `d`.
pub fn parse_duration_seconds(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("invalid duration {text:?} (expected e.g. 30s, 10m, 8h, 2d or seconds)");
    let (digits, factor) = match trimmed.as_bytes().last() {
        Some(b's') => (&trimmed[..trimmed.len() - 1], 1),
        Some(b'm') => (&trimmed[..trimmed.len() - 1], 60),
        Some(b'h') => (&trimmed[..trimmed.len() - 1], 3600),
        Some(b'd') => (&trimmed[..trimmed.len() - 1], 86_400),
        Some(b) if b.is_ascii_digit() => (trimmed, 1),
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(factor))
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// The retention in milliseconds of a WORKFLOW config body's `workflow_log`
/// block (`None`: keep forever). Errors name the field.
pub fn workflow_log_retention_ms(workflow_log: &Value) -> Result<Option<u64>, String> {
    let retention = match workflow_log {
        Value::Null => return Ok(None),
        Value::Object(block) => match block.get("retention") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(format!(
                    "workflow_log.retention: must be a duration string like \"30d\", not {other}"
                ))
            }
        },
        other => return Err(format!("workflow_log: must be an object, not {other}")),
    };
    if retention.trim().is_empty() {
        return Ok(None);
    }
    let seconds = parse_duration_seconds(retention)
        .map_err(|error| format!("workflow_log.retention: {error}"))?;
    match seconds.checked_mul(1000) {
        Some(0) => Ok(None),
        Some(ms) if i64::try_from(ms).is_ok() => Ok(Some(ms)),
        _ => Err(format!(
            "workflow_log.retention: duration {retention:?} is too large"
        )),
    }
}

/// The retention of a stored WORKFLOW config (its JSON text); a text that
/// does not parse keeps logs forever (the API never stores one).
pub fn retention_of_config_text(text: &str) -> Option<u64> {
    let body: Value = serde_json::from_str(text).ok()?;
    workflow_log_retention_ms(body.get("workflow_log").unwrap_or(&Value::Null))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_their_errors() {
        for (text, seconds) in [
            ("2s", 2),
            ("90m", 5400),
            ("12h", 43_200),
            ("30d", 2_592_000),
        ] {
            assert_eq!(parse_duration_seconds(text), Ok(seconds), "{text}");
        }
        assert_eq!(parse_duration_seconds("45"), Ok(45));
        for bad in ["", "s", "2w", "-3s", "1.5h", "x9"] {
            assert!(parse_duration_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_is_read_from_the_workflow_log_block() {
        assert_eq!(workflow_log_retention_ms(&json!({})), Ok(None));
        assert_eq!(workflow_log_retention_ms(&Value::Null), Ok(None));
        assert_eq!(
            workflow_log_retention_ms(&json!({"retention": "0"})),
            Ok(None)
        );
        assert_eq!(
            workflow_log_retention_ms(&json!({"retention": "2s"})),
            Ok(Some(2000))
        );
        let error = workflow_log_retention_ms(&json!({"retention": "soon"})).unwrap_err();
        assert!(
            error.starts_with("workflow_log.retention: invalid duration"),
            "{error}"
        );
        let error = workflow_log_retention_ms(&json!({"retention": 30})).unwrap_err();
        assert!(error.contains("duration string"), "{error}");
        assert!(workflow_log_retention_ms(&json!("x")).is_err());
        assert_eq!(
            retention_of_config_text(r#"{"workflow_log":{"retention":"1m"}}"#),
            Some(60_000)
        );
        assert_eq!(retention_of_config_text("not json"), None);
    }
}
