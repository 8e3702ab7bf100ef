//! A unified diff of two texts by lines (`diff -u`'s form, 3 lines of
//! context), for `config diff`: pure, no external `diff` program.
//!
//! Invariants: the common head and tail are cut before any matching, and
//! the middle is matched by longest common subsequence only while it fits
//! [`MATCH_CELLS_MAX`]; beyond that the middle is shown as removed, then
//! added — still a correct diff, only not a minimal one.

/// Largest middle (lines of one side × lines of the other) matched line by line.
const MATCH_CELLS_MAX: usize = 4_000_000;
/// Unchanged lines shown around each change.
const CONTEXT_LINES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Edit {
    Same,
    Removed,
    Added,
}

/// `None` when the texts are equal; else the hunks under `--- first` and
/// `+++ second` headers.
pub fn unified(first_label: &str, first: &str, second_label: &str, second: &str) -> Option<String> {
    if first == second {
        return None;
    }
    let old: Vec<&str> = first.lines().collect();
    let new: Vec<&str> = second.lines().collect();
    let edits = edits(&old, &new);
    let mut out = format!("--- {first_label}\n+++ {second_label}\n");
    // Each edit with the line numbers it stands at (0-based) on both sides.
    let mut at = Vec::with_capacity(edits.len());
    let (mut i, mut j) = (0, 0);
    for edit in &edits {
        at.push((*edit, i, j));
        match edit {
            Edit::Same => (i, j) = (i + 1, j + 1),
            Edit::Removed => i += 1,
            Edit::Added => j += 1,
        }
    }
    let changed: Vec<usize> = (0..at.len()).filter(|&k| at[k].0 != Edit::Same).collect();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT_LINES);
        let mut end = changed[k];
        // Join changes whose contexts touch.
        while k + 1 < changed.len() && changed[k + 1] <= end + 2 * CONTEXT_LINES + 1 {
            k += 1;
            end = changed[k];
        }
        let end = (end + CONTEXT_LINES + 1).min(at.len());
        let hunk = &at[start..end];
        let old_count = hunk.iter().filter(|e| e.0 != Edit::Added).count();
        let new_count = hunk.iter().filter(|e| e.0 != Edit::Removed).count();
        let (_, old_at, new_at) = hunk[0];
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(old_at, old_count),
            range(new_at, new_count)
        ));
        for (edit, i, j) in hunk {
            let (mark, line) = match edit {
                Edit::Same => (' ', old[*i]),
                Edit::Removed => ('-', old[*i]),
                Edit::Added => ('+', new[*j]),
            };
            out.push(mark);
            out.push_str(line);
            out.push('\n');
        }
        k += 1;
    }
    Some(out)
}

/// `diff -u`'s range: 1-based start and count (an empty range starts
/// before its line).
fn range(at: usize, count: usize) -> String {
    match count {
        0 => format!("{at},0"),
        1 => format!("{}", at + 1),
        _ => format!("{},{count}", at + 1),
    }
}

/// The edits that turn `old` into `new`.
fn edits(old: &[&str], new: &[&str]) -> Vec<Edit> {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_mid, new_mid) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let mut edits = vec![Edit::Same; head];
    if old_mid.len().saturating_mul(new_mid.len()) <= MATCH_CELLS_MAX {
        edits.extend(matched(old_mid, new_mid));
    } else {
        edits.extend(std::iter::repeat_n(Edit::Removed, old_mid.len()));
        edits.extend(std::iter::repeat_n(Edit::Added, new_mid.len()));
    }
    edits.extend(std::iter::repeat_n(Edit::Same, tail));
    edits
}

/// Longest common subsequence by lines: removals before additions within
/// each change, as `diff` prints them.
fn matched(old: &[&str], new: &[&str]) -> Vec<Edit> {
    let (n, m) = (old.len(), new.len());
    // lengths[i][j]: LCS of old[i..] and new[j..], row-major, (n+1)×(m+1).
    let mut lengths = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[i * (m + 1) + j] = if old[i] == new[j] {
                lengths[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                lengths[(i + 1) * (m + 1) + j].max(lengths[i * (m + 1) + j + 1])
            };
        }
    }
    let mut edits = Vec::with_capacity(n + m);
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            edits.push(Edit::Same);
            (i, j) = (i + 1, j + 1);
        } else if i < n
            && (j == m || lengths[(i + 1) * (m + 1) + j] >= lengths[i * (m + 1) + j + 1])
        {
            edits.push(Edit::Removed);
            i += 1;
        } else {
            edits.push(Edit::Added);
            j += 1;
        }
    }
    edits
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
