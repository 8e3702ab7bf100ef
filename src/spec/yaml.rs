//! YAML read the way OSMO reads it (PyYAML's `safe_load`): a mapping that
//! repeats a key keeps the last value, at the position of the first, where
//! serde_yaml_ng refuses the document. Each repeat is reported as a
//! [`DuplicateKey`] naming the mapping, the key and the key's line.
//!
//! Invariants:
//! - the value is exactly what serde_yaml_ng builds for the same text once
//!   the earlier entries of every repeated key are dropped (same scalar
//!   typing, tags, aliases and limits: the same deserializer reads it);
//! - syntax errors are serde_yaml_ng's own, unchanged;
//! - duplicates are listed in document order; locating one costs one more
//!   parse (stopped at that key), so only the first [`LOCATED_MAX`] get a
//!   line, which bounds the work an adversarial document can cause;
//! - the text passes [`yaml_bounds`] first (nesting depth, what aliases
//!   copy), so reading it is linear in time and memory;
//! - nothing here panics on any input.

use super::error::join;
use super::yaml_bounds::{self, Exceeded};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::de::{Error as _, VariantAccess};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value};
use std::cell::RefCell;
use std::fmt;

/// How many duplicates get their line (one extra parse each).
pub const LOCATED_MAX: usize = 10;

/// The error a locating parse stops with; never shown to anyone.
const STOP: &str = "gantry: duplicate key located";

/// A key given more than once in one mapping (the last value is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The mapping that holds it, as `workflow.tasks[0]`; empty at the top.
    pub path: String,
    pub key: String,
    /// 1-based line of the repeated key in the parsed text, for the first
    /// [`LOCATED_MAX`] duplicates.
    pub line: Option<usize>,
}

/// A parsed document with the keys it repeated.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub value: Value,
    pub duplicates: Vec<DuplicateKey>,
}

/// Why a text was not read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Past a bound of [`yaml_bounds`]; nothing was parsed beyond it.
    #[error("{0}")]
    Bounds(Exceeded),
    #[error("{0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// Parses `text` as one YAML document, the last of repeated keys winning.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    yaml_bounds::check(text).map_err(ParseError::Bounds)?;
    let (value, found) = read(text, None)?;
    let duplicates = found
        .into_iter()
        .enumerate()
        .map(|(index, (path, key))| DuplicateKey {
            path,
            key,
            line: (index < LOCATED_MAX).then(|| locate(text, index)).flatten(),
        })
        .collect();
    Ok(Parsed { value, duplicates })
}

/// What one pass collects: `(mapping path, key)` of each repeat, in order.
#[derive(Default)]
struct State {
    found: Vec<(String, String)>,
    /// Fail at this duplicate (by index), so the error carries its line.
    stop_at: Option<usize>,
}

type Found = Vec<(String, String)>;

fn read(text: &str, stop_at: Option<usize>) -> Result<(Value, Found), serde_yaml_ng::Error> {
    let state = RefCell::new(State {
        found: Vec::new(),
        stop_at,
    });
    let seed = ValueSeed {
        state: &state,
        path: &Segment::Root,
    };
    let value = seed.deserialize(serde_yaml_ng::Deserializer::from_str(text))?;
    Ok((value, state.into_inner().found))
}

/// The line of duplicate number `index`: a parse that fails on that key,
/// whose error serde_yaml_ng places at the key's scalar.
fn locate(text: &str, index: usize) -> Option<usize> {
    match read(text, Some(index)) {
        Err(error) if error.to_string().contains(STOP) => {
            error.location().map(|location| location.line())
        }
        _ => None,
    }
}

/// Where a value sits, rendered only when a duplicate is found.
enum Segment<'a> {
    Root,
    Key(&'a Segment<'a>, &'a Value),
    Index(&'a Segment<'a>, usize),
}

impl Segment<'_> {
    fn render(&self) -> String {
        match self {
            Segment::Root => String::new(),
            Segment::Key(parent, key) => join(&parent.render(), &key_text(key)),
            Segment::Index(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

/// A key as users see it in the document.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "null".to_string(),
        Value::Tagged(tagged) => key_text(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => "(a complex key)".to_string(),
    }
}

/// Builds any value; mappings keep the last of repeated keys.
#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    state: &'a RefCell<State>,
    path: &'a Segment<'a>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let segment = Segment::Index(self.path, items.len());
            let seed = ValueSeed {
                state: self.state,
                path: &segment,
            };
            match access.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Mapping::new();
        loop {
            let seed = KeySeed {
                value: self,
                map: &map,
            };
            let Some(key) = access.next_key_seed(seed)? else {
                break;
            };
            let value = {
                let segment = Segment::Key(self.path, &key);
                access.next_value_seed(ValueSeed {
                    state: self.state,
                    path: &segment,
                })?
            };
            // Like PyYAML: a repeated key takes the new value and keeps the
            // position of its first occurrence.
            map.insert(key, value);
        }
        Ok(Value::Mapping(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = access.variant()?;
        if tag.is_empty() {
            return Err(A::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// A mapping key: built like any value, then checked against the keys the
/// mapping already has, inside the key's own visit so that an error raised
/// here is placed at the key.
struct KeySeed<'a, 'm> {
    value: ValueSeed<'a>,
    map: &'m Mapping,
}

impl KeySeed<'_, '_> {
    fn check<E: de::Error>(&self, key: Value) -> Result<Value, E> {
        if self.map.contains_key(&key) {
            let mut state = self.value.state.borrow_mut();
            let index = state.found.len();
            state.found.push((self.value.path.render(), key_text(&key)));
            if state.stop_at == Some(index) {
                return Err(E::custom(STOP));
            }
        }
        Ok(key)
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        let key = self.value.visit_bool(value)?;
        self.check(key)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        let key = self.value.visit_i64(value)?;
        self.check(key)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        let key = self.value.visit_u64(value)?;
        self.check(key)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        let key = self.value.visit_f64(value)?;
        self.check(key)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        let key = self.value.visit_str(value)?;
        self.check(key)
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        let key = self.value.visit_string(value)?;
        self.check(key)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        let key = self.value.visit_unit()?;
        self.check(key)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        let key = self.value.visit_none()?;
        self.check(key)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let key = self.value.visit_some(deserializer)?;
        self.check(key)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        let key = self.value.visit_seq(access)?;
        self.check(key)
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        let key = self.value.visit_map(access)?;
        self.check(key)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, access: A) -> Result<Value, A::Error> {
        let key = self.value.visit_enum(access)?;
        self.check(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        match parse(text) {
            Ok(parsed) => parsed,
            Err(error) => panic!("{text:?}: {error}"),
        }
    }

    #[test]
    fn the_same_value_as_serde_yaml_ng_without_duplicates() {
        let texts = [
            "a: 1\nb: [x, 2.5, true, null, ~]\nc: {d: !tag v, e: !!str 3}\n",
            "workflow:\n  name: x\n  tasks:\n  - {name: a, image: i, command: [sh]}\n",
            "anchor: &a {k: v}\nalias: *a\n? [complex, key]\n: value\n1: one\ntrue: yes\n",
            "plain scalar",
            "",
            "- 0x1f\n- 1e3\n- .inf\n- 18446744073709551615\n",
        ];
        for text in texts {
            let ours = parsed(text);
            let theirs: Result<Value, _> = serde_yaml_ng::from_str(text);
            assert_eq!(Some(&ours.value), theirs.as_ref().ok(), "{text}");
            assert!(ours.duplicates.is_empty(), "{text}");
        }
    }

    #[test]
    fn errors_are_serde_yaml_ngs() {
        for text in [
            "a: [unclosed\n",
            "a: 1\n---\nb: 2\n",
            "a: *missing\n",
            "!!int x",
            "? - a\n  - b\n",
        ] {
            let ours = parse(text).err().map(|e| e.to_string());
            let theirs = serde_yaml_ng::from_str::<Value>(text)
                .err()
                .map(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn the_last_value_wins_at_the_first_position() {
        let text = "a: 1\nb: 2\na: 3\n";
        let parsed = parsed(text);
        let expected: Value = serde_yaml_ng::from_str("a: 3\nb: 2\n").unwrap_or(Value::Null);
        assert_eq!(parsed.value, expected);
        let keys: Vec<_> = parsed
            .value
            .as_mapping()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec![Value::from("a"), Value::from("b")]);
        assert_eq!(
            parsed.duplicates,
            vec![DuplicateKey {
                path: String::new(),
                key: "a".into(),
                line: Some(3),
            }]
        );
    }

    #[test]
    fn duplicates_are_named_by_path_and_line_in_document_order() {
        let text = "\
workflow:
  name: wf
  tasks:
  - name: a
    image: one
    image: two
    outputs:
    - {url: s3://x, url: s3://y}
  name: again
";
        let parsed = parsed(text);
        let found: Vec<(String, String, Option<usize>)> = parsed
            .duplicates
            .iter()
            .map(|d| (join(&d.path, &d.key), d.key.clone(), d.line))
            .collect();
        assert_eq!(
            found,
            vec![
                ("workflow.tasks[0].image".into(), "image".into(), Some(6)),
                (
                    "workflow.tasks[0].outputs[0].url".into(),
                    "url".into(),
                    Some(8)
                ),
                ("workflow.name".into(), "name".into(), Some(9)),
            ]
        );
        assert_eq!(parsed.value["workflow"]["name"], Value::from("again"));
        assert_eq!(
            parsed.value["workflow"]["tasks"][0]["outputs"][0]["url"],
            Value::from("s3://y")
        );
    }

    #[test]
    fn only_the_first_duplicates_are_located() {
        let mut text = String::new();
        for _ in 0..LOCATED_MAX + 5 {
            text.push_str("k: v\n");
        }
        let parsed = parsed(&text);
        assert_eq!(parsed.duplicates.len(), LOCATED_MAX + 4);
        assert_eq!(parsed.duplicates[0].line, Some(2));
        assert_eq!(
            parsed.duplicates[LOCATED_MAX - 1].line,
            Some(LOCATED_MAX + 1)
        );
        assert_eq!(parsed.duplicates[LOCATED_MAX].line, None);
    }

    #[test]
    fn odd_keys_are_named() {
        let parsed = parsed("1: a\n1: b\nnull: c\n~: d\ntrue: e\ntrue: f\n");
        let keys: Vec<&str> = parsed.duplicates.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, vec!["1", "null", "true"]);
    }
}
