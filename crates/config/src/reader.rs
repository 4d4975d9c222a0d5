//! Reading typed values out of the position-aware tree, one section at a time.
//!
//! A [`Section`] hands out each key a config struct asks for, converts it, and records what went
//! wrong as a [`Finding`] instead of stopping, so that one pass reports every problem. Whatever the
//! struct never asked for is an unknown key (a warning with the nearest known key). Keys that AI
//! Toolkit knows but wanlora does not implement are asked for with [`Section::refuse`], which accepts
//! only their neutral value. Run over an empty document in describing mode, the same calls produce the
//! list of known keys ([`crate::known_keys`]).

use crate::choice::{Choice, Rejected};
use crate::finding::Finding;
use crate::node::{Entry, Node, Pos, Value};
use crate::schema::{KeyInfo, KeyKind, Origin, Support};
use serde_json::json;
use std::collections::HashMap;

/// Help text of a key and whether it is AI Toolkit's or ours.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doc {
    pub text: &'static str,
    pub origin: Origin,
}

/// A key with AI Toolkit's meaning.
pub(crate) const fn ai(text: &'static str) -> Doc {
    Doc {
        text,
        origin: Origin::AiToolkit,
    }
}

/// A key only wanlora has.
pub(crate) const fn ours(text: &'static str) -> Doc {
    Doc {
        text,
        origin: Origin::Wanlora,
    }
}

/// The spellings of one key: the canonical one, then accepted aliases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    canonical: &'static str,
    aliases: &'static [&'static str],
}

impl From<&'static str> for Keys {
    fn from(canonical: &'static str) -> Keys {
        Keys {
            canonical,
            aliases: &[],
        }
    }
}

impl<const N: usize> From<&'static [&'static str; N]> for Keys {
    fn from(keys: &'static [&'static str; N]) -> Keys {
        let (canonical, aliases) = keys.split_first().map_or(("", &[][..]), |(c, a)| (*c, a));
        Keys { canonical, aliases }
    }
}

impl Keys {
    fn canonical(&self) -> &'static str {
        self.canonical
    }

    fn all(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.canonical).chain(self.aliases.iter().copied())
    }
}

/// Which values of a refused or no-effect key count as "not asking for anything".
#[derive(Debug, Clone, Copy)]
pub(crate) enum Neutral {
    /// null, false, 0, "", [] and {}.
    Off,
    /// null or this number.
    Number(f64),
    /// null or true.
    True,
    /// null or this text.
    Text(&'static str),
}

/// How a key that wanlora reads but does not act on is treated: one row of a section's table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unused {
    /// An error unless the value is neutral: the feature is not implemented.
    Refused(Neutral),
    /// A warning unless the value is neutral: the key changes nothing here.
    NoEffect(Neutral),
    /// Read and ignored without a word (AI Toolkit's own plumbing, or decided elsewhere).
    Accepted,
}

/// A key, how it is treated, and why (the reason users see).
pub(crate) type UnusedKey = (&'static str, Unused, &'static str);

impl Neutral {
    fn accepts(self, node: &Node) -> bool {
        match (self, &node.value) {
            (_, Value::Null) => true,
            (Neutral::Off, Value::Bool(b)) => !b,
            (Neutral::Off, Value::Int(i)) => *i == 0,
            (Neutral::Off, Value::Float(f)) => *f == 0.0,
            (Neutral::Off, Value::Str(s)) => s.is_empty(),
            (Neutral::Off, Value::Seq(items)) => items.is_empty(),
            (Neutral::Off, Value::Map(entries)) => entries.is_empty(),
            (Neutral::Number(n), _) => as_f64(node) == Some(n),
            (Neutral::True, Value::Bool(b)) => *b,
            (Neutral::True, _) => false,
            (Neutral::Text(t), Value::Str(s)) => s == t,
            (Neutral::Text(_), _) => false,
        }
    }

    fn default_json(self) -> serde_json::Value {
        match self {
            Neutral::Off => serde_json::Value::Null,
            Neutral::Number(n) => json!(n),
            Neutral::True => json!(true),
            Neutral::Text(t) => json!(t),
        }
    }
}

/// Where a key was written: its spelling (an alias, or a list index) and position.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub key: String,
    pub pos: Option<Pos>,
}

/// Everything one reading pass collects.
pub(crate) struct Ctx {
    pub findings: Vec<Finding>,
    /// Canonical key path → where and how it was written, for checks that run on the typed job.
    pub written: HashMap<String, Written>,
    /// Present in describing mode: the keys asked for.
    pub schema: Option<Vec<KeyInfo>>,
}

impl Ctx {
    pub fn reading() -> Ctx {
        Ctx {
            findings: Vec::new(),
            written: HashMap::new(),
            schema: None,
        }
    }

    pub fn describing() -> Ctx {
        Ctx {
            schema: Some(Vec::new()),
            ..Ctx::reading()
        }
    }

    /// The spelling and position of a canonical key. For a key that was not written: its name under
    /// the spelling of the closest enclosing section that was (`prompts[0].ctrl_img` for a legacy
    /// prompt), at that section's position.
    pub fn locate(&self, canonical: &str) -> (String, Option<Pos>) {
        if let Some(w) = self.written.get(canonical) {
            return (w.key.clone(), w.pos);
        }
        let mut path = canonical;
        while let Some(cut) = path.rfind(['.', '[']) {
            path = &path[..cut];
            if let Some(w) = self.written.get(path) {
                let key = format!("{}{}", w.key, &canonical[path.len()..]);
                return (key, w.pos);
            }
        }
        (canonical.to_string(), None)
    }

    pub fn error_at(
        &mut self,
        canonical: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (key, pos) = self.locate(canonical);
        self.findings.push(Finding::error(key, pos, message, hint));
    }

    /// An error about `canonical` (usually missing) shown at the position of `near` (the setting that
    /// needs it), e.g. a missing DOP class at `diff_output_preservation: true`.
    pub fn error_near(
        &mut self,
        canonical: &str,
        near: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (key, _) = self.locate(canonical);
        let (_, pos) = self.locate(near);
        self.findings.push(Finding::error(key, pos, message, hint));
    }

    pub fn warning_at(
        &mut self,
        canonical: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (key, pos) = self.locate(canonical);
        self.findings
            .push(Finding::warning(key, pos, message, hint));
    }

    pub fn note_at(
        &mut self,
        canonical: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (key, pos) = self.locate(canonical);
        self.findings.push(Finding::note(key, pos, message, hint));
    }
}

pub(crate) fn as_f64(node: &Node) -> Option<f64> {
    match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        // AI Toolkit casts some numbers with float(); a quoted number is accepted the same way.
        Value::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn as_i64(node: &Node) -> Option<i64> {
    match &node.value {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 9.0e15 => Some(*f as i64),
        Value::Str(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn as_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        // An unquoted `1234` trigger word is still meant as text.
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One mapping of the job file being read.
pub(crate) struct Section<'n, 'c> {
    path: String,
    entries: &'n [Entry],
    used: Vec<bool>,
    known: Vec<&'static str>,
    ctx: &'c mut Ctx,
}

impl<'n, 'c> Section<'n, 'c> {
    /// The whole document; `node` must be a mapping (anything else reads as empty: the caller reports it).
    pub fn root(node: &'n Node, ctx: &'c mut Ctx) -> Section<'n, 'c> {
        let entries = node.entries().unwrap_or(&[]);
        Section::new(String::new(), entries, ctx)
    }

    fn new(path: String, entries: &'n [Entry], ctx: &'c mut Ctx) -> Section<'n, 'c> {
        Section {
            path,
            used: vec![false; entries.len()],
            entries,
            known: Vec::new(),
            ctx,
        }
    }

    pub fn ctx(&mut self) -> &mut Ctx {
        self.ctx
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn describing(&self) -> bool {
        self.ctx.schema.is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn describe(
        &mut self,
        keys: Keys,
        kind: KeyKind,
        default: serde_json::Value,
        choices: Vec<&'static str>,
        support: Support,
        origin: Origin,
        doc: &'static str,
    ) {
        let key = self.key_path(keys.canonical());
        if let Some(schema) = self.ctx.schema.as_mut() {
            schema.push(KeyInfo {
                key,
                aliases: keys.aliases.iter().map(|s| s.to_string()).collect(),
                kind,
                default,
                choices: choices.into_iter().map(str::to_string).collect(),
                support,
                origin,
                doc: doc.to_string(),
            });
        }
    }

    /// The value written under any spelling of `keys` (null counts as absent, as in AI Toolkit's
    /// `kwargs.get`). Marks the spellings as known and records where the value was written.
    fn take(&mut self, keys: Keys) -> Option<&'n Node> {
        self.known.extend(keys.all());
        let mut found: Vec<(usize, &'static str)> = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(name) = keys.all().find(|k| *k == entry.key) {
                self.used[i] = true;
                if !entry.value.is_null() {
                    found.retain(|(_, n)| *n != name);
                    found.push((i, name));
                }
            }
        }
        let canonical = self.key_path(keys.canonical());
        if found.len() > 1 {
            let spelled: Vec<String> = found.iter().map(|(_, n)| format!("`{n}`")).collect();
            let (i, _) = found[0];
            self.ctx.findings.push(Finding::error(
                self.key_path(&self.entries[i].key),
                self.entries[i].key_pos,
                format!(
                    "{} are the same setting, written twice",
                    spelled.join(" and ")
                ),
                format!("keep only `{}`", keys.canonical()),
            ));
        }
        let (i, _) = *found.first()?;
        let entry = &self.entries[i];
        // A section or list is located at its key (`model:`), a scalar at its value.
        let pos = match entry.value.value {
            Value::Map(_) | Value::Seq(_) => entry.key_pos.or(entry.value.pos),
            _ => entry.value.pos.or(entry.key_pos),
        };
        self.ctx.written.insert(
            canonical,
            Written {
                key: self.key_path(&entry.key),
                pos,
            },
        );
        Some(&entry.value)
    }

    fn wrong_type(&mut self, keys: Keys, node: &Node, expected: &str) {
        let (key, _) = self.ctx.locate(&self.key_path(keys.canonical()));
        let found = match node.value {
            Value::Float(f) if !f.is_finite() => format!("{}, not a finite number", node.show()),
            _ => format!("{} ({})", node.show(), node.kind()),
        };
        self.ctx.findings.push(Finding::error(
            key,
            node.pos,
            format!("expected {expected}, found {found}"),
            format!("write {expected} here, or remove the key to use its default"),
        ));
    }

    /// Reports a value of the right type that is not allowed, at the value.
    pub fn invalid(&mut self, keys: Keys, node: &Node, message: String, hint: String) {
        let (key, _) = self.ctx.locate(&self.key_path(keys.canonical()));
        self.ctx
            .findings
            .push(Finding::error(key, node.pos, message, hint));
    }

    pub fn bool(&mut self, keys: impl Into<Keys>, default: bool, doc: Doc) -> bool {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Bool,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        match self.take(keys) {
            None => default,
            Some(Node {
                value: Value::Bool(b),
                ..
            }) => *b,
            Some(node) => {
                self.wrong_type(keys, node, "true or false");
                default
            }
        }
    }

    fn whole(&mut self, keys: Keys, max: i64, what: &str) -> Option<i64> {
        let node = self.take(keys)?;
        match as_i64(node) {
            Some(v) if (0..=max).contains(&v) => Some(v),
            Some(v) if v < 0 => {
                self.invalid(
                    keys,
                    node,
                    format!("{v} is negative"),
                    format!("write {what} (0 or more)"),
                );
                None
            }
            Some(v) => {
                self.invalid(
                    keys,
                    node,
                    format!("{v} is too large"),
                    format!("write {what} up to {max}"),
                );
                None
            }
            None => {
                self.wrong_type(keys, node, what);
                None
            }
        }
    }

    pub fn uint(&mut self, keys: impl Into<Keys>, default: u32, doc: Doc) -> u32 {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Int,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.whole(keys, i64::from(u32::MAX), "a whole number")
            .map_or(default, |v| v as u32)
    }

    pub fn opt_uint(&mut self, keys: impl Into<Keys>, doc: Doc) -> Option<u32> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Int,
            json!(null),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.whole(keys, i64::from(u32::MAX), "a whole number")
            .map(|v| v as u32)
    }

    /// A whole number up to `max`, or `auto` (the default; `None`).
    pub fn uint_or_auto(&mut self, keys: impl Into<Keys>, max: u32, doc: Doc) -> Option<u32> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::IntOrAuto,
            json!("auto"),
            vec!["auto"],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let node = self.take(keys)?;
        if as_text(node).is_some_and(|t| t.trim().eq_ignore_ascii_case("auto")) {
            return None;
        }
        match as_i64(node) {
            Some(v) if (0..=i64::from(max)).contains(&v) => Some(v as u32),
            _ => {
                self.invalid(
                    keys,
                    node,
                    format!(
                        "{} is neither auto nor a whole number up to {max}",
                        node.show()
                    ),
                    "write auto (chosen per bucket from the free memory) or a number of blocks"
                        .into(),
                );
                None
            }
        }
    }

    pub fn uint64(&mut self, keys: impl Into<Keys>, default: u64, doc: Doc) -> u64 {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Int,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.whole(keys, i64::MAX, "a whole number")
            .map_or(default, |v| v as u64)
    }

    pub fn opt_uint64(&mut self, keys: impl Into<Keys>, doc: Doc) -> Option<u64> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Int,
            json!(null),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.whole(keys, i64::MAX, "a whole number")
            .map(|v| v as u64)
    }

    pub fn float(&mut self, keys: impl Into<Keys>, default: f64, doc: Doc) -> f64 {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Float,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.read_float(keys).unwrap_or(default)
    }

    pub fn opt_float(&mut self, keys: impl Into<Keys>, doc: Doc) -> Option<f64> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Float,
            json!(null),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.read_float(keys)
    }

    fn read_float(&mut self, keys: Keys) -> Option<f64> {
        let node = self.take(keys)?;
        match as_f64(node) {
            Some(v) if v.is_finite() => Some(v),
            _ => {
                self.wrong_type(keys, node, "a number");
                None
            }
        }
    }

    pub fn text(&mut self, keys: impl Into<Keys>, default: &str, doc: Doc) -> String {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Text,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.read_text(keys).unwrap_or_else(|| default.to_string())
    }

    pub fn opt_text(&mut self, keys: impl Into<Keys>, doc: Doc) -> Option<String> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Text,
            json!(null),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.read_text(keys)
    }

    fn read_text(&mut self, keys: Keys) -> Option<String> {
        let node = self.take(keys)?;
        let text = as_text(node);
        if text.is_none() {
            self.wrong_type(keys, node, "text");
        }
        text
    }

    /// A whole number or a list of them (AI Toolkit's `resolution: 512` or `[512, 768]`).
    pub fn uint_or_list(&mut self, keys: impl Into<Keys>, default: &[u32], doc: Doc) -> Vec<u32> {
        self.whole_or_list(keys.into(), default, 1, doc)
    }

    /// Indices from 0 (`gpus: [0, 1]`, or one: `gpus: 1`); none when the key is absent.
    pub fn index_list(&mut self, keys: impl Into<Keys>, doc: Doc) -> Vec<u32> {
        self.whole_or_list(keys.into(), &[], 0, doc)
    }

    fn whole_or_list(&mut self, keys: Keys, default: &[u32], min: u32, doc: Doc) -> Vec<u32> {
        self.describe(
            keys,
            KeyKind::IntOrList,
            json!(default),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let Some(node) = self.take(keys) else {
            return default.to_vec();
        };
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut values = Vec::new();
        for item in items {
            match as_i64(item) {
                Some(v) if (i64::from(min)..=i64::from(u32::MAX)).contains(&v) => {
                    values.push(v as u32)
                }
                _ if min == 0 => {
                    self.wrong_type(keys, item, "a whole number from 0, or a list of them")
                }
                _ => self.wrong_type(keys, item, "a whole number above 0, or a list of them"),
            }
        }
        if values.is_empty() {
            self.invalid(
                keys,
                node,
                "no value given".to_string(),
                format!(
                    "write a number such as {}",
                    default
                        .first()
                        .copied()
                        .unwrap_or(if min == 0 { 0 } else { 512 })
                ),
            );
            return default.to_vec();
        }
        values
    }

    pub fn choice<T: Choice>(&mut self, keys: impl Into<Keys>, default: T, doc: Doc) -> T {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Choice,
            json!(default.name()),
            T::names(),
            Support::Used,
            doc.origin,
            doc.text,
        );
        let Some(node) = self.take(keys) else {
            return default;
        };
        let Some(text) = as_text(node) else {
            self.wrong_type(keys, node, &format!("one of: {}", T::names().join(", ")));
            return default;
        };
        self.parse_choice(keys, node, &text).unwrap_or(default)
    }

    /// Like [`Section::choice`] but without a default: absent stays None.
    pub fn opt_choice<T: Choice>(&mut self, keys: impl Into<Keys>, doc: Doc) -> Option<T> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Choice,
            json!(null),
            T::names(),
            Support::Used,
            doc.origin,
            doc.text,
        );
        let node = self.take(keys)?;
        let Some(text) = as_text(node) else {
            self.wrong_type(keys, node, &format!("one of: {}", T::names().join(", ")));
            return None;
        };
        self.parse_choice(keys, node, &text)
    }

    /// Parses `text` (the value of `keys`, at `node`) as a `T`, reporting refused and unknown values.
    pub fn parse_choice<T: Choice>(&mut self, keys: Keys, node: &Node, text: &str) -> Option<T> {
        match T::parse(text) {
            Ok(value) => Some(value),
            Err(Rejected::Refused(reason)) => {
                self.invalid(
                    keys,
                    node,
                    format!("`{text}` is not supported by wanlora: {reason}"),
                    format!("use one of: {}", T::names().join(", ")),
                );
                None
            }
            Err(Rejected::Unknown(suggestion)) => {
                let hint = match suggestion {
                    Some(s) => format!("did you mean `{s}`? (one of: {})", T::names().join(", ")),
                    None => format!("use one of: {}", T::names().join(", ")),
                };
                self.invalid(keys, node, format!("`{text}` is not a known value"), hint);
                None
            }
        }
    }

    /// The raw node of a key whose reading needs custom rules (e.g. `qtype: "uint4|<adapter>"`).
    pub fn raw(
        &mut self,
        keys: impl Into<Keys>,
        kind: KeyKind,
        default: serde_json::Value,
        doc: Doc,
    ) -> Option<&'n Node> {
        let keys = keys.into();
        self.describe(
            keys,
            kind,
            default,
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        self.take(keys)
    }

    /// A free mapping kept as JSON (`meta`).
    pub fn free_map(
        &mut self,
        keys: impl Into<Keys>,
        doc: Doc,
    ) -> serde_json::Map<String, serde_json::Value> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Map,
            json!({}),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let Some(node) = self.take(keys) else {
            return serde_json::Map::new();
        };
        match node.to_json() {
            serde_json::Value::Object(map) => map,
            _ => {
                self.wrong_type(keys, node, "a mapping");
                serde_json::Map::new()
            }
        }
    }

    /// A nested mapping, read by `read`; absent or null reads as empty (all defaults).
    pub fn section<T>(
        &mut self,
        keys: impl Into<Keys>,
        doc: Doc,
        read: impl FnOnce(&mut Section<'n, '_>) -> T,
    ) -> T {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Section,
            json!({}),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let path = self.key_path(keys.canonical());
        let node = self.take(keys);
        let entries: &'n [Entry] = match node {
            None => &[],
            Some(node) => match node.entries() {
                Some(entries) => entries,
                None => {
                    self.wrong_type(keys, node, "a mapping of keys");
                    &[]
                }
            },
        };
        let mut child = Section::new(path, entries, self.ctx);
        let value = read(&mut child);
        child.finish();
        value
    }

    /// A list of mappings, each read by `read` with its index. A single mapping is read as a list of one.
    pub fn items<T>(
        &mut self,
        keys: impl Into<Keys>,
        doc: Doc,
        mut read: impl FnMut(&mut Section<'n, '_>, usize) -> T,
    ) -> Vec<T> {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::List,
            json!([]),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let base = self.key_path(keys.canonical());
        if self.describing() {
            let mut child = Section::new(format!("{base}[]"), &[], self.ctx);
            read(&mut child, 0);
            return Vec::new();
        }
        let Some(node) = self.take(keys) else {
            return Vec::new();
        };
        let spelled = self
            .ctx
            .written
            .get(&base)
            .map_or_else(|| base.clone(), |w| w.key.clone());
        let items: Vec<&'n Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Map(_) => vec![node],
            _ => {
                self.wrong_type(keys, node, "a list");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let path = format!("{base}[{index}]");
            self.ctx.written.insert(
                path.clone(),
                Written {
                    key: format!("{spelled}[{index}]"),
                    pos: item.pos,
                },
            );
            let Some(entries) = item.entries() else {
                let (key, _) = self.ctx.locate(&path);
                self.ctx.findings.push(Finding::error(
                    key,
                    item.pos,
                    format!(
                        "expected a mapping of keys, found {} ({})",
                        item.show(),
                        item.kind()
                    ),
                    "write this item as `key: value` lines",
                ));
                continue;
            };
            let mut child = Section::new(path, entries, self.ctx);
            out.push(read(&mut child, index));
            child.finish();
        }
        out
    }

    /// A list of which only the first mapping is read (`config.process`); returns it and how many
    /// items the list has. Further items are only located, for the caller to report.
    pub fn first_item<T>(
        &mut self,
        keys: impl Into<Keys>,
        doc: Doc,
        read: impl FnOnce(&mut Section<'n, '_>) -> T,
    ) -> (Option<T>, usize) {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::List,
            json!([]),
            vec![],
            Support::Used,
            doc.origin,
            doc.text,
        );
        let base = self.key_path(keys.canonical());
        if self.describing() {
            let mut child = Section::new(format!("{base}[0]"), &[], self.ctx);
            read(&mut child);
            return (None, 0);
        }
        let Some(node) = self.take(keys) else {
            return (None, 0);
        };
        let items: Vec<&'n Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Map(_) => vec![node],
            _ => {
                self.wrong_type(keys, node, "a list");
                return (None, 0);
            }
        };
        for (index, item) in items.iter().enumerate() {
            self.ctx.written.insert(
                format!("{base}[{index}]"),
                Written {
                    key: format!("{base}[{index}]"),
                    pos: item.pos,
                },
            );
        }
        let first = items.first().and_then(|item| match item.entries() {
            Some(entries) => {
                let mut child = Section::new(format!("{base}[0]"), entries, self.ctx);
                let value = read(&mut child);
                child.finish();
                Some(value)
            }
            None => {
                self.wrong_type(keys, item, "a mapping of keys");
                None
            }
        });
        (first, items.len())
    }

    /// A key wanlora does not implement: accepted only with its neutral value, refused otherwise.
    /// Applies a section's table of keys it does not act on, in order.
    pub fn unused(&mut self, table: &[UnusedKey]) {
        for &(key, how, reason) in table {
            match how {
                Unused::Refused(neutral) => self.refuse(key, neutral, reason),
                Unused::NoEffect(neutral) => self.no_effect(key, neutral, reason),
                Unused::Accepted => self.accept(key, reason),
            }
        }
    }

    pub fn refuse(&mut self, keys: impl Into<Keys>, neutral: Neutral, reason: &'static str) {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Any,
            neutral.default_json(),
            vec![],
            Support::Refused,
            Origin::AiToolkit,
            reason,
        );
        if let Some(node) = self.take(keys) {
            if !neutral.accepts(node) {
                let (key, _) = self.ctx.locate(&self.key_path(keys.canonical()));
                self.ctx.findings.push(Finding::error(
                    key,
                    node.pos,
                    format!(
                        "`{}: {}` is not supported by wanlora: {reason}",
                        keys.canonical(),
                        node.show()
                    ),
                    "remove this key (or set it to its default)",
                ));
            }
        }
    }

    /// A key that changes nothing in wanlora: a warning when it is set to something other than its
    /// neutral value (the user may expect an effect), silence otherwise.
    pub fn no_effect(&mut self, keys: impl Into<Keys>, neutral: Neutral, reason: &'static str) {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Any,
            neutral.default_json(),
            vec![],
            Support::NoEffect,
            Origin::AiToolkit,
            reason,
        );
        if let Some(node) = self.take(keys) {
            if !neutral.accepts(node) {
                let (key, _) = self.ctx.locate(&self.key_path(keys.canonical()));
                self.ctx.findings.push(Finding::warning(
                    key,
                    node.pos,
                    format!(
                        "`{}: {}` has no effect in wanlora: {reason}",
                        keys.canonical(),
                        node.show()
                    ),
                    "remove this key",
                ));
            }
        }
    }

    /// A key accepted for compatibility that never matters (UI plumbing, AI Toolkit-only tuning).
    pub fn accept(&mut self, keys: impl Into<Keys>, reason: &'static str) {
        let keys = keys.into();
        self.describe(
            keys,
            KeyKind::Any,
            json!(null),
            vec![],
            Support::NoEffect,
            Origin::AiToolkit,
            reason,
        );
        self.take(keys);
    }

    /// Reports keys written twice and keys nobody asked for (with the nearest known key).
    pub fn finish(self) {
        let mut first_seen: HashMap<&str, &Entry> = HashMap::new();
        for entry in self.entries {
            if let Some(first) = first_seen.get(entry.key.as_str()) {
                let first_line = first
                    .key_pos
                    .map_or(String::from("earlier"), |p| format!("line {}", p.line));
                self.ctx.findings.push(Finding::error(
                    self.key_path(&entry.key),
                    entry.key_pos,
                    format!("`{}` is written twice (first at {first_line})", entry.key),
                    "keep one of them",
                ));
            } else {
                first_seen.insert(&entry.key, entry);
            }
        }
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let known = self.known.iter().copied();
            let hint = match crate::suggest::nearest(&entry.key, known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => "remove it; wanlora does not know this key here".to_string(),
            };
            self.ctx.findings.push(Finding::warning(
                self.key_path(&entry.key),
                entry.key_pos,
                format!("unknown key `{}`; it is ignored", entry.key),
                hint,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::parse_yaml;

    fn read<T>(yaml: &str, f: impl FnOnce(&mut Section) -> T) -> (T, Vec<Finding>) {
        let root = parse_yaml(yaml).expect("valid YAML");
        let mut ctx = Ctx::reading();
        let mut section = Section::root(&root, &mut ctx);
        let value = f(&mut section);
        section.finish();
        (value, ctx.findings)
    }

    #[test]
    fn typed_values_and_defaults() {
        let ((a, b, c, d), findings) = read("a: 3\nb: '1e-4'\nc: 7\n", |s| {
            (
                s.uint("a", 1, ai("")),
                s.float("b", 0.0, ai("")),
                s.text("c", "", ai("")),
                s.bool("d", true, ai("")),
            )
        });
        assert_eq!((a, b, c.as_str(), d), (3, 1e-4, "7", true));
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn wrong_types_are_reported_at_the_value_and_default_is_used() {
        let (v, findings) = read("steps:\n  - 1\n", |s| s.uint("steps", 1000, ai("")));
        assert_eq!(v, 1000);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].key, "steps");
        assert_eq!(findings[0].line, Some(2));
        assert!(
            findings[0].message.contains("expected a whole number"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_known_one() {
        let (_, findings) = read("num_frame: 41\n", |s| s.uint("num_frames", 1, ai("")));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, crate::Severity::Warning);
        assert_eq!(findings[0].hint, "did you mean `num_frames`?");
    }

    #[test]
    fn aliases_are_one_key_and_conflicts_are_errors() {
        let (v, findings) = read("rank: 16\n", |s| s.uint(&["linear", "rank"], 4, ai("")));
        assert_eq!(v, 16);
        assert!(findings.is_empty());
        let (_, findings) = read("rank: 16\nlinear: 8\n", |s| {
            s.uint(&["linear", "rank"], 4, ai(""))
        });
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0].message.contains("same setting"),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn refused_keys_accept_only_their_neutral_value() {
        let (_, findings) = read("a: 0\nb: []\nc: 0.1\n", |s| {
            s.refuse("a", Neutral::Off, "why");
            s.refuse("b", Neutral::Off, "why");
            s.refuse("c", Neutral::Off, "why");
        });
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].key, "c");
        assert!(findings[0].is_error());
    }

    #[test]
    fn repeated_keys_are_errors() {
        let (_, findings) = read("a: 1\na: 2\n", |s| s.uint("a", 0, ai("")));
        assert_eq!(findings.len(), 1);
        assert!(findings[0]
            .message
            .contains("written twice (first at line 1)"));
        assert_eq!(findings[0].line, Some(2));
    }
}
