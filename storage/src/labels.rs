//! Workflow labels (OSMO's `workflow.labels`): their syntax, and the
//! selectors of the workflow list (`label=KEY=SELECTOR`, `no_label=KEY`).
//!
//! Invariants: a stored label map passes [`check_labels`] (Kubernetes
//! label syntax: a key is `[dns-prefix/]name`, a value a non-empty name; at
//! most [`LABELS_MAX`]); a selector is bounded before it is expanded
//! ([`SELECTOR_BYTES_MAX`], [`SELECTOR_PATTERNS_MAX`]); matching is pure
//! string work (anchored `*` globs), no regex. Messages are OSMO's.

use std::collections::BTreeMap;

/// A workflow's labels, by key.
pub type Labels = BTreeMap<String, String>;

/// Most labels one workflow may carry.
pub const LABELS_MAX: usize = 16;
/// Longest selector accepted, in bytes.
pub const SELECTOR_BYTES_MAX: usize = 4096;
/// Most patterns one selector may expand to.
pub const SELECTOR_PATTERNS_MAX: usize = 32;
/// Longest label name (and value).
const NAME_CHARS_MAX: usize = 63;
/// Longest DNS prefix of a key.
const PREFIX_CHARS_MAX: usize = 253;

/// `[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?`: a label's name, and
/// every label value.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= NAME_CHARS_MAX
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS subdomain: dot-separated lower-case DNS labels, 253 characters at most.
fn is_dns_prefix(text: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= NAME_CHARS_MAX
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    !text.is_empty() && text.len() <= PREFIX_CHARS_MAX && text.split('.').all(label_ok)
}

/// A label key: `name` or `prefix/name` (Kubernetes qualified-name syntax).
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) if !name.contains('/') => (Some(prefix), name),
        Some(_) => {
            return Err(format!(
                "Workflow label key \"{key}\" is not a valid Kubernetes label key."
            ))
        }
        None => (None, key),
    };
    if prefix.is_some_and(|prefix| !is_dns_prefix(prefix)) {
        return Err(format!(
            "Workflow label key \"{key}\" has an invalid DNS prefix."
        ));
    }
    if !is_name(name) {
        return Err(format!(
            "Workflow label key \"{key}\" has an invalid name segment."
        ));
    }
    Ok(())
}

/// A label value: non-empty, Kubernetes label-value syntax.
pub fn check_value(value: &str) -> Result<(), String> {
    if is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "Workflow label value \"{value}\" is not a valid non-empty Kubernetes label value."
        ))
    }
}

/// A complete label map, as stored with a workflow.
pub fn check_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > LABELS_MAX {
        return Err(format!("Workflows can have at most {LABELS_MAX} labels."));
    }
    for (key, value) in labels {
        check_key(key)?;
        check_value(value)?;
    }
    Ok(())
}

/// `KEY=VALUE` (a submit's `label` override).
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or("Workflow labels must use key=value format.")?;
    check_key(key)?;
    check_value(value)?;
    Ok((key.to_string(), value.to_string()))
}

/// One `label=KEY=SELECTOR` of the list: the key and the anchored glob
/// patterns its value expands to; a workflow matches when its value for
/// the key matches any pattern (`*` alone: the key is present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    pub key: String,
    pub patterns: Vec<String>,
}

impl LabelSelector {
    /// Parses `KEY=VALUE`, where VALUE may hold `*` wildcards and
    /// `(a|b)` alternatives (not nested), as OSMO's list does.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        if text.len() > SELECTOR_BYTES_MAX {
            return Err(format!(
                "Workflow label selectors can be at most {SELECTOR_BYTES_MAX} bytes."
            ));
        }
        let (key, value) = text
            .split_once('=')
            .ok_or("Workflow label selectors must use key=value format.")?;
        check_key(key)?;
        let patterns = expand(value)?;
        Ok(LabelSelector {
            key: key.to_string(),
            patterns,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let Some(value) = labels.get(&self.key) else {
            return false;
        };
        self.patterns
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), value.as_bytes()))
    }
}

/// A selector value's alternatives expanded into glob patterns: the cross
/// product of its `(a|b)` groups, runs of `*` collapsed, duplicates
/// dropped, each a valid label value once its wildcards stand for a letter.
fn expand(value: &str) -> Result<Vec<String>, String> {
    const ALTERNATIVES: &str =
        "Workflow label selector alternatives must use (value|value) format.";
    let mut segments: Vec<Vec<String>> = Vec::new();
    let mut literal = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        match c {
            '(' => {
                if !literal.is_empty() {
                    segments.push(vec![std::mem::take(&mut literal)]);
                }
                let close = rest.find(')').ok_or(ALTERNATIVES)?;
                let group = &rest[1..close];
                if group.contains('(') {
                    return Err("Workflow label selector alternatives cannot be nested.".into());
                }
                let alternatives: Vec<String> = group.split('|').map(str::to_string).collect();
                if alternatives.len() < 2 || alternatives.iter().any(String::is_empty) {
                    return Err("Workflow label selector alternatives must contain at least two non-empty values.".into());
                }
                segments.push(alternatives);
                rest = &rest[close + 1..];
            }
            ')' | '|' => return Err(ALTERNATIVES.into()),
            _ => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        segments.push(vec![literal]);
    }
    let count = segments.iter().try_fold(1usize, |product, segment| {
        product.checked_mul(segment.len())
    });
    if count.is_none_or(|count| count > SELECTOR_PATTERNS_MAX) {
        return Err(format!(
            "Workflow label selectors can expand to at most {SELECTOR_PATTERNS_MAX} patterns."
        ));
    }
    let mut patterns = vec![String::new()];
    for segment in &segments {
        patterns = patterns
            .iter()
            .flat_map(|prefix| segment.iter().map(move |part| format!("{prefix}{part}")))
            .collect();
    }
    let mut unique: Vec<String> = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let mut collapsed = String::with_capacity(pattern.len());
        for c in pattern.chars() {
            if !(c == '*' && collapsed.ends_with('*')) {
                collapsed.push(c);
            }
        }
        check_value(&collapsed.replace('*', "a"))?;
        if !unique.contains(&collapsed) {
            unique.push(collapsed);
        }
    }
    Ok(unique)
}

/// Whether `text` matches `pattern` as a whole, `*` matching any run of
/// bytes (greedy with backtracking to the last star: linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values_follow_kubernetes_syntax() {
        for key in ["team", "a.b-c_d", "example.com/team", "x", "a1/b"] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
        for key in [
            "",
            "-a",
            "a-",
            "Example.com/team",
            "a/b/c",
            "/team",
            "a b",
            "é",
        ] {
            assert!(check_key(key).is_err(), "{key}");
        }
        assert!(check_key(&"a".repeat(63)).is_ok());
        assert!(check_key(&"a".repeat(64)).is_err());
        assert!(check_value("v1.2_x").is_ok());
        assert!(check_value("").is_err());
        assert!(check_value("has space").is_err());
        let many: Labels = (0..17)
            .map(|n| (format!("k{n}"), "v".to_string()))
            .collect();
        assert_eq!(
            check_labels(&many),
            Err("Workflows can have at most 16 labels.".into())
        );
        assert_eq!(parse_assignment("team=a"), Ok(("team".into(), "a".into())));
        assert!(parse_assignment("team=a=b").is_err());
        assert_eq!(
            parse_assignment("missing-separator"),
            Err("Workflow labels must use key=value format.".into())
        );
    }

    #[test]
    fn selectors_expand_alternatives_and_match_anchored_globs() {
        let selector = LabelSelector::parse("project=(sim_*|hil_*)").unwrap();
        assert_eq!(selector.patterns, ["sim_*", "hil_*"]);
        assert!(selector.matches(&labels(&[("project", "sim_cars")])));
        assert!(selector.matches(&labels(&[("project", "hil_")])));
        assert!(!selector.matches(&labels(&[("project", "xsim_cars")])));
        assert!(!selector.matches(&labels(&[("other", "sim_cars")])));
        let selector = LabelSelector::parse("team=robotics_(a|b)").unwrap();
        assert_eq!(selector.patterns, ["robotics_a", "robotics_b"]);
        assert!(selector.matches(&labels(&[("team", "robotics_b")])));
        assert!(!selector.matches(&labels(&[("team", "robotics_c")])));
        let present = LabelSelector::parse("team=**").unwrap();
        assert_eq!(present.patterns, ["*"]);
        assert!(present.matches(&labels(&[("team", "anything")])));
        let exact = LabelSelector::parse("team=a").unwrap();
        assert!(exact.matches(&labels(&[("team", "a")])));
        assert!(!exact.matches(&labels(&[("team", "ab")])));
        let middle = LabelSelector::parse("v=a*b*c").unwrap();
        assert!(middle.matches(&labels(&[("v", "abc")])));
        assert!(middle.matches(&labels(&[("v", "axxbyyc")])));
        assert!(!middle.matches(&labels(&[("v", "axxbyy")])));
    }

    #[test]
    fn bad_selectors_are_refused_with_osmos_messages() {
        for (text, message) in [
            ("team", "must use key=value format"),
            ("team=(a|b", "(value|value) format"),
            ("team=a|b", "(value|value) format"),
            ("team=a)", "(value|value) format"),
            ("team=((a|b)|c)", "cannot be nested"),
            ("team=(a)", "at least two non-empty values"),
            ("team=(a|)", "at least two non-empty values"),
            (
                "team=bad value",
                "not a valid non-empty Kubernetes label value",
            ),
            ("Bad/team=a", "invalid DNS prefix"),
            ("team=(a|b)(c|d)(e|f)(g|h)(i|j)(k|l)", "at most 32 patterns"),
        ] {
            let error = LabelSelector::parse(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
        let long = format!("team={}", "a".repeat(SELECTOR_BYTES_MAX));
        assert!(LabelSelector::parse(&long)
            .unwrap_err()
            .contains("at most 4096 bytes"));
    }
}
