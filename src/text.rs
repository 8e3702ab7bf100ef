//! Text that becomes one line of what users read (events): control
//! characters escaped, length bounded.
//!
//! Invariant: what [`one_line`] returns holds no control character and is
//! at most the limit's bytes, cut at a character boundary and marked when
//! cut, so text from a task, a user or a registry cannot write lines that
//! read as events of their own.

/// `text` with its control characters escaped (`\n` as `\\n`).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` cut to at most `limit` bytes at a character boundary, marked
/// when cut.
pub fn truncated(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` as one printable line of at most `limit` bytes.
pub fn one_line(text: &str, limit: usize) -> String {
    truncated(&printable(text), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_and_bounds() {
        assert_eq!(one_line("a\nb", 64), "a\\nb");
        let cut = one_line(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert!(!one_line("x\r\u{1b}[2J", 64).chars().any(char::is_control));
    }
}
