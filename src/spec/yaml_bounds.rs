//! Bounds on a YAML text, checked in linear time before serde_yaml_ng reads
//! it: nesting depth and what aliases add.
//!
//! libyaml's scanner costs O(flow depth) per token, so `[[[[…` nested
//! 100,000 deep costs seconds of CPU, and serde_yaml_ng gathers every event
//! of a document before its own recursion limit (128) can refuse it; an
//! alias expands to a copy of its anchor, so a few kilobytes of aliases can
//! stand for gigabytes of values. This pass runs the same parser
//! (`unsafe-libyaml`, which serde_yaml_ng uses) event by event and stops at
//! the first event past a bound, so it costs O(text × [`DEPTH_MAX`]) at
//! most.
//!
//! Invariants:
//! - a text this pass accepts is read by serde_yaml_ng with at most
//!   [`DEPTH_MAX`] nested collections and at most [`ALIAS_NODES_MAX`]
//!   values copied by aliases, so its parse is linear in time and memory;
//! - an alias inside its own anchor (which serde_yaml_ng can only refuse,
//!   after expanding it to its recursion limit) is refused here;
//! - a syntax error is left to serde_yaml_ng, which stops at the same place
//!   (same parser), so its message stays the one users see;
//! - nothing here panics on any input, and the parser is always freed.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use unsafe_libyaml as unsafe_sys;

/// Collections nested in one another, at most. Below serde_yaml_ng's own
/// recursion limit (128), so this is the limit users meet; OSMO specs nest
/// fewer than 10 deep.
pub const DEPTH_MAX: usize = 100;

/// Values that aliases may add to a document (each alias counts the values
/// of its anchor). A spec that shares an environment block among 100 tasks
/// adds a few thousand.
pub const ALIAS_NODES_MAX: u64 = 100_000;

/// The bound a text broke, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub bound: Bound,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Depth,
    AliasNodes,
    RecursiveAlias,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bound {
            Bound::Depth => write!(
                f,
                "collections nested more than {DEPTH_MAX} deep (the depth limit)"
            )?,
            Bound::AliasNodes => write!(
                f,
                "aliases copy more than {ALIAS_NODES_MAX} values (the alias limit)"
            )?,
            Bound::RecursiveAlias => f.write_str("an alias inside its own anchor")?,
        }
        write!(f, " at line {} column {}", self.line, self.column)
    }
}

/// Checks `text` against [`DEPTH_MAX`] and [`ALIAS_NODES_MAX`].
pub fn check(text: &str) -> Result<(), Exceeded> {
    let Some(mut events) = Events::new(text.as_bytes()) else {
        // The parser could not even start; serde_yaml_ng says why.
        return Ok(());
    };
    let mut walk = Walk::default();
    while let Some(event) = events.next() {
        if walk.step(&event).is_break() {
            break;
        }
        if let Some(bound) = walk.exceeded {
            return Err(Exceeded {
                bound,
                line: event.line + 1,
                column: event.column + 1,
            });
        }
    }
    Ok(())
}

/// One event, copied out of libyaml's structure.
struct Event {
    kind: Kind,
    anchor: Option<Vec<u8>>,
    line: usize,
    column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DocumentStart,
    Scalar,
    Alias,
    CollectionStart,
    CollectionEnd,
    StreamEnd,
    Other,
}

/// What an anchor stands for.
#[derive(Clone, Copy)]
enum Anchored {
    /// Its collection is still open: an alias to it would be inside it.
    Open,
    /// Values an alias to it copies.
    Values(u64),
}

/// Open collections with their value counts and anchors.
#[derive(Default)]
struct Walk {
    open: Vec<(u64, Option<Vec<u8>>)>,
    anchors: HashMap<Vec<u8>, Anchored>,
    alias_values: u64,
    exceeded: Option<Bound>,
}

impl Walk {
    /// Adds `values` to the innermost open collection.
    fn count(&mut self, values: u64) {
        if let Some((count, _)) = self.open.last_mut() {
            *count = count.saturating_add(values);
        }
    }

    fn step(&mut self, event: &Event) -> std::ops::ControlFlow<()> {
        match event.kind {
            Kind::DocumentStart => {
                // Anchors are per document in libyaml and serde_yaml_ng.
                self.anchors.clear();
                self.open.clear();
            }
            Kind::Scalar => {
                if let Some(anchor) = &event.anchor {
                    self.anchors.insert(anchor.clone(), Anchored::Values(1));
                }
                self.count(1);
            }
            Kind::Alias => {
                let anchored = event
                    .anchor
                    .as_ref()
                    .and_then(|anchor| self.anchors.get(anchor).copied());
                match anchored {
                    Some(Anchored::Open) => self.exceeded = Some(Bound::RecursiveAlias),
                    Some(Anchored::Values(values)) => {
                        self.alias_values = self.alias_values.saturating_add(values);
                        if self.alias_values > ALIAS_NODES_MAX {
                            self.exceeded = Some(Bound::AliasNodes);
                        }
                        self.count(values);
                    }
                    // An unknown anchor: serde_yaml_ng refuses it.
                    None => return std::ops::ControlFlow::Break(()),
                }
            }
            Kind::CollectionStart => {
                if self.open.len() >= DEPTH_MAX {
                    self.exceeded = Some(Bound::Depth);
                }
                if let Some(anchor) = &event.anchor {
                    self.anchors.insert(anchor.clone(), Anchored::Open);
                }
                self.open.push((1, event.anchor.clone()));
            }
            Kind::CollectionEnd => {
                if let Some((values, anchor)) = self.open.pop() {
                    if let Some(anchor) = anchor {
                        self.anchors.insert(anchor, Anchored::Values(values));
                    }
                    self.count(values);
                }
            }
            Kind::StreamEnd => return std::ops::ControlFlow::Break(()),
            Kind::Other => {}
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// libyaml's event parser over a borrowed text.
struct Events<'input> {
    /// Boxed: libyaml keeps a pointer to the parser itself (its read
    /// handler's data), so it must not move once the input is set.
    parser: Box<MaybeUninit<unsafe_sys::yaml_parser_t>>,
    failed: bool,
    input: PhantomData<&'input [u8]>,
}

impl<'input> Events<'input> {
    fn new(input: &'input [u8]) -> Option<Events<'input>> {
        let mut parser = Box::new(MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
        let raw = parser.as_mut_ptr();
        // SAFETY: `raw` points to writable memory for a parser, which
        // `yaml_parser_initialize` zeroes and sets up before anything reads
        // it. The input outlives the parser (`'input` on `Events`), and the
        // parser stays in its box until `Drop` deletes it.
        unsafe {
            if unsafe_sys::yaml_parser_initialize(raw).fail {
                return None;
            }
            unsafe_sys::yaml_parser_set_encoding(raw, unsafe_sys::YAML_UTF8_ENCODING);
            unsafe_sys::yaml_parser_set_input_string(raw, input.as_ptr(), input.len() as u64);
        }
        Some(Events {
            parser,
            failed: false,
            input: PhantomData,
        })
    }

    /// The next event; `None` after a syntax error (not reported here).
    fn next(&mut self) -> Option<Event> {
        if self.failed {
            return None;
        }
        let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and is not shared.
        // `yaml_parser_parse` fills `event` when it succeeds (and only then
        // is it read); every pointer read from it is either null or a
        // NUL-terminated string owned by the event, copied before
        // `yaml_event_delete` frees it.
        unsafe {
            if unsafe_sys::yaml_parser_parse(self.parser.as_mut_ptr(), event.as_mut_ptr()).fail {
                self.failed = true;
                return None;
            }
            let raw = &*event.as_ptr();
            let (kind, anchor) = match raw.type_ {
                unsafe_sys::YAML_DOCUMENT_START_EVENT => {
                    (Kind::DocumentStart, std::ptr::null_mut())
                }
                unsafe_sys::YAML_SCALAR_EVENT => (Kind::Scalar, raw.data.scalar.anchor),
                unsafe_sys::YAML_ALIAS_EVENT => (Kind::Alias, raw.data.alias.anchor),
                unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                    (Kind::CollectionStart, raw.data.sequence_start.anchor)
                }
                unsafe_sys::YAML_MAPPING_START_EVENT => {
                    (Kind::CollectionStart, raw.data.mapping_start.anchor)
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    (Kind::CollectionEnd, std::ptr::null_mut())
                }
                unsafe_sys::YAML_STREAM_END_EVENT => (Kind::StreamEnd, std::ptr::null_mut()),
                _ => (Kind::Other, std::ptr::null_mut()),
            };
            let anchor = (!anchor.is_null()).then(|| {
                CStr::from_ptr(anchor.cast::<std::ffi::c_char>())
                    .to_bytes()
                    .to_vec()
            });
            let copied = Event {
                kind,
                anchor,
                line: usize::try_from(raw.start_mark.line).unwrap_or(usize::MAX),
                column: usize::try_from(raw.start_mark.column).unwrap_or(usize::MAX),
            };
            unsafe_sys::yaml_event_delete(event.as_mut_ptr());
            Some(copied)
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a failed initialization returns no
        // `Events`), deleted once, here.
        unsafe { unsafe_sys::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn bound(text: &str) -> Option<Bound> {
        check(text).err().map(|exceeded| exceeded.bound)
    }

    #[test]
    fn ordinary_documents_pass() {
        for text in [
            "",
            "a: 1",
            include_str!("../../examples/hello.yaml"),
            include_str!("../../examples/templated.yaml"),
            "env: &e {A: '1', B: '2'}\ntasks: [{env: *e}, {env: *e}]\n",
            "a: [unclosed\n",
            "a: *missing\n",
            "a: 1\n---\nb: 2\n",
        ] {
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn depth_is_limited_at_the_limit_exactly() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(check(&nested(DEPTH_MAX)), Ok(()));
        let err = check(&nested(DEPTH_MAX + 1)).err();
        assert_eq!(
            err,
            Some(Exceeded {
                bound: Bound::Depth,
                line: 1,
                column: DEPTH_MAX + 1
            })
        );
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("collections nested more than 100 deep (the depth limit) at line 1 column 101")
        );
        // Block nesting counts the same.
        let mut block = String::new();
        for level in 0..=DEPTH_MAX {
            block.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
        }
        block.push_str(&format!("{}v\n", "  ".repeat(DEPTH_MAX + 1)));
        assert_eq!(bound(&block), Some(Bound::Depth));
        // A second document is checked too.
        assert_eq!(
            bound(&format!("a: 1\n---\n{}", nested(DEPTH_MAX + 1))),
            Some(Bound::Depth)
        );
    }

    #[test]
    fn a_nesting_bomb_is_refused_in_linear_time() {
        for bomb in [
            format!("workflow: {}", "[".repeat(4 << 20)),
            format!("workflow: {}", "{a: ".repeat(1 << 20)),
        ] {
            let started = Instant::now();
            assert_eq!(bound(&bomb), Some(Bound::Depth));
            let elapsed = started.elapsed();
            assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        }
    }

    #[test]
    fn aliases_are_limited_by_what_they_copy() {
        let items = vec!["x"; 1000].join(",");
        let copies = |n: usize| format!("a: &a [{items}]\nb: [{}]\n", vec!["*a"; n].join(","));
        // 1001 values per copy (the sequence and its items).
        assert_eq!(check(&copies(99)), Ok(()));
        assert_eq!(bound(&copies(100)), Some(Bound::AliasNodes));
        // Doubling: 2^k values from k lines.
        let mut laughs = String::from("l0: &l0 [x, x]\n");
        for level in 1..40 {
            laughs.push_str(&format!(
                "l{level}: &l{level} [*l{prev}, *l{prev}]\n",
                prev = level - 1
            ));
        }
        assert_eq!(bound(&laughs), Some(Bound::AliasNodes));
        assert_eq!(
            bound("a: &a [x, *a]\n"),
            Some(Bound::RecursiveAlias),
            "serde_yaml_ng would expand it to its recursion limit"
        );
    }
}
