//! The job file as a tree of values that remember where they were written.
//!
//! YAML and JSON are both read into this tree (JSON is a subset of YAML 1.2, so one span-aware parser
//! serves both), so that every finding can point at a line and column. The typed [`crate::Job`] is built
//! from this tree by [`crate::reader`].

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, NonFiniteFloatPolicy, Options, Spanned};
use std::fmt;

/// A 1-based line and column in the job file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One value of the file with where it starts (None when the parser could not say, e.g. the JSON fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Option<Pos>,
}

/// One `key: value` pair of a mapping, in file order (duplicates kept, so they can be reported).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Option<Pos>,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A file that is not valid YAML / JSON: the parser's message and where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub pos: Option<Pos>,
}

impl Node {
    pub fn new(value: Value) -> Node {
        Node { value, pos: None }
    }

    /// An empty mapping: what an absent section reads as.
    pub fn empty_map() -> Node {
        Node::new(Value::Map(Vec::new()))
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// What kind of value this is, in the words a user reads in a message.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "true/false",
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Str(_) => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value as the user would write it, for messages (`40`, `"prodigy"`, `[512, 768]`).
    pub fn show(&self) -> String {
        // JSON has no spelling for these; YAML's is what the user wrote.
        if let Value::Float(f) = self.value {
            if f.is_nan() {
                return ".nan".into();
            }
            if f.is_infinite() {
                return if f > 0.0 { ".inf" } else { "-.inf" }.into();
            }
        }
        let text = serde_json::to_string(&self.to_json()).unwrap_or_default();
        const MAX: usize = 60;
        if text.chars().count() > MAX {
            let cut: String = text.chars().take(MAX).collect();
            format!("{cut}…")
        } else {
            text
        }
    }

    /// The entries of a mapping, or None for any other kind of value.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value of `key` in a mapping (the last one when a key repeats, as YAML loaders keep it).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        Node::new(match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(Node::from_json).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        key_pos: None,
                        value: Node::from_json(v),
                    })
                    .collect(),
            ),
        })
    }

    /// Replaces `from` by `to` in every text value and every key, as AI Toolkit does for `[name]`.
    pub fn replace_text(&mut self, from: &str, to: &str) {
        match &mut self.value {
            Value::Str(s) if s.contains(from) => *s = s.replace(from, to),
            Value::Seq(items) => items.iter_mut().for_each(|n| n.replace_text(from, to)),
            Value::Map(entries) => {
                for e in entries {
                    if e.key.contains(from) {
                        e.key = e.key.replace(from, to);
                    }
                    e.value.replace_text(from, to);
                }
            }
            _ => {}
        }
    }
}

/// Parses YAML (1.2 core schema, with `yes`/`no` as booleans like PyYAML) into a tree with positions.
pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    let mut options = Options::default();
    // Repeated keys reach us and are reported with both lines instead of stopping the parse.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // `.nan` / `.inf` reach the reader, which reports them at their key (the parser's own
    // refusal names no key).
    options.non_finite_float_policy = NonFiniteFloatPolicy::PassThrough;
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(text, options) {
        Ok(root) => Ok(node_from(root)),
        Err(err) => Err(SyntaxError {
            message: plain_message(&err),
            pos: err.location().and_then(|l| pos_from(l.line(), l.column())),
        }),
    }
}

/// Parses JSON. The YAML parser reads JSON too and keeps positions; a file it cannot read (JSON that
/// YAML spells differently, which is rare) falls back to serde_json, without positions.
pub fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    if let Ok(node) = parse_yaml(text) {
        return Ok(node);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => Ok(Node::from_json(&value)),
        Err(err) => Err(SyntaxError {
            message: err.to_string(),
            pos: pos_from(err.line() as u64, err.column() as u64),
        }),
    }
}

fn pos_from(line: u64, column: u64) -> Option<Pos> {
    (line > 0).then_some(Pos {
        line: line as usize,
        column: column.max(1) as usize,
    })
}

/// serde-saphyr's message without its source snippet and without the `line L column C:` prefix
/// (the finding carries the position itself), in the user's terms: the parser's hints for
/// developers (which name its own functions) are replaced.
pub fn plain_message(err: &serde_saphyr::Error) -> String {
    if let serde_saphyr::Error::MultipleDocuments { .. } = err.without_snippet() {
        return "the file holds more than one YAML document (a `---` line after the job); a job file holds one job — remove the `---` and what follows, or put each job in a file of its own".into();
    }
    let text = err.without_snippet().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = match text.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(text, |(_, msg)| msg),
        None => text,
    };
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// One value as serde-saphyr hands it over; wrapped in `Spanned` it also carries its position.
struct RawValue(Value);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor).map(RawValue)
    }
}

fn node_from(spanned: Spanned<RawValue>) -> Node {
    let at = spanned.referenced;
    Node {
        value: spanned.value.0,
        pos: pos_from(at.line(), at.column()),
    }
}

fn key_text(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => s.clone(),
        Value::Null => "null".to_string(),
        _ => node.to_json().to_string(),
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        // Beyond i64 a number is kept as a float; no job key needs such values exactly.
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(node_from(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawValue>>()? {
            let key = node_from(key);
            let value = node_from(map.next_value::<Spanned<RawValue>>()?);
            entries.push(Entry {
                key: key_text(&key),
                key_pos: key.pos,
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_keep_their_positions() {
        let root = parse_yaml("a: 1\nb:\n  c: [1e-4, text]\n").expect("valid YAML");
        let b = root.get("b").expect("b");
        let c = b.get("c").expect("c");
        assert_eq!(c.pos, Some(Pos { line: 3, column: 6 }));
        let Value::Seq(items) = &c.value else {
            panic!("c is a list: {c:?}")
        };
        assert_eq!(items[0].value, Value::Float(1e-4));
        assert_eq!(items[1].value, Value::Str("text".into()));
        let entries = b.entries().expect("map");
        assert_eq!(entries[0].key_pos, Some(Pos { line: 3, column: 3 }));
    }

    #[test]
    fn repeated_keys_are_kept_for_reporting() {
        let root = parse_yaml("a: 1\na: 2\n").expect("valid YAML");
        assert_eq!(root.entries().map(<[Entry]>::len), Some(2));
        assert_eq!(root.get("a").map(|n| n.value.clone()), Some(Value::Int(2)));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = parse_yaml("a: [1\nb: 2\n").expect_err("broken YAML");
        assert_eq!(err.pos.map(|p| p.line), Some(2));
        assert!(
            !err.message.is_empty() && !err.message.contains("-->"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_second_document_is_explained_without_parser_function_names() {
        let err = parse_yaml("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert!(
            err.message.contains("more than one YAML document"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("from_str"), "{}", err.message);
        // At the second document's first line.
        assert_eq!(err.pos.map(|p| p.line), Some(3));
    }

    #[test]
    fn json_is_read_with_positions() {
        let root =
            parse_json("{\n  \"a\": {\"b\": 2.5, \"s\": \"\\u00e9\"}\n}").expect("valid JSON");
        let a = root.get("a").expect("a");
        assert_eq!(a.get("b").map(|n| n.value.clone()), Some(Value::Float(2.5)));
        assert_eq!(a.get("s").and_then(Node::as_str), Some("é"));
        assert_eq!(a.pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn broken_json_reports_serde_json_position() {
        let err = parse_json("{\"a\": 1,,}").expect_err("broken JSON");
        assert_eq!(err.pos.map(|p| p.line), Some(1));
    }

    #[test]
    fn replace_text_reaches_keys_and_nested_values() {
        let mut root = parse_yaml("\"[name]_k\": [\"out/[name]\"]\n").expect("valid YAML");
        root.replace_text("[name]", "job1");
        assert_eq!(root.to_json(), serde_json::json!({"job1_k": ["out/job1"]}));
    }
}
