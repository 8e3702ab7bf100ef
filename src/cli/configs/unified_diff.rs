//! A unified diff of two texts by lines (`diff -u`'s form, 3 lines of
//! context), for `config diff`: `similar`'s Myers diff, no external `diff`
//! program.
//!
//! Invariants: equal texts have no diff; the matching is bounded in time
//! ([`DIFF_TIME_MAX`]), past which the diff is still correct but may not
//! be minimal.

use similar::TextDiff;
use std::time::Duration;

/// Longest the line matching may take (configs are small; a huge one must
/// not hang the CLI).
const DIFF_TIME_MAX: Duration = Duration::from_secs(2);
/// Unchanged lines shown around each change.
const CONTEXT_LINES: usize = 3;

/// `None` when the texts are equal; else the hunks under `--- first` and
/// `+++ second` headers.
pub fn unified(first_label: &str, first: &str, second_label: &str, second: &str) -> Option<String> {
    if first == second {
        return None;
    }
    let diff = TextDiff::configure()
        .timeout(DIFF_TIME_MAX)
        .diff_lines(first, second);
    Some(
        diff.unified_diff()
            .context_radius(CONTEXT_LINES)
            .header(first_label, second_label)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a", "x\ny\n", "b", "x\ny\n"), None);
    }

    #[test]
    fn a_changed_line_is_shown_with_its_context() {
        let first = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let second = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        let diff = unified("A:1", first, "A:2", second).unwrap();
        assert_eq!(
            diff,
            "--- A:1\n+++ A:2\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn distant_changes_are_separate_hunks_and_additions_at_the_end_count() {
        let first: String = (1..=20).map(|n| format!("{n}\n")).collect();
        let second: String = (1..=21)
            .map(|n| match n {
                2 => "two\n".to_string(),
                19 => "19\n19b\n".to_string(),
                n => format!("{n}\n"),
            })
            .collect();
        let diff = unified("a", &first, "b", &second).unwrap();
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        assert!(
            diff.contains("@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n"),
            "{diff}"
        );
        assert!(diff.contains("@@ -17,4 +17,6 @@\n 17\n"), "{diff}");
        assert!(diff.ends_with(" 19\n+19b\n 20\n+21\n"), "{diff}");
    }

    #[test]
    fn an_emptied_text_is_all_removed() {
        let diff = unified("a", "x\ny\n", "b", "").unwrap();
        assert_eq!(diff, "--- a\n+++ b\n@@ -1,2 +0,0 @@\n-x\n-y\n");
    }
}
