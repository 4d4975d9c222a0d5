//! The list of every key wanlora knows, for forms and documentation ([`known_keys`]).
//!
//! It is not written by hand: the same readers that parse a job run once over an empty document in a
//! describing mode and record each key they ask for, with its kind, default and help text, so the list
//! cannot drift from what the parser accepts.

use serde::{Deserialize, Serialize};

/// The shape of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Bool,
    Int,
    Float,
    Text,
    TextList,
    /// A whole number or a list of them (`resolution`).
    IntOrList,
    /// A whole number or `auto` (`keep_blocks`).
    IntOrAuto,
    /// One of `choices`.
    Choice,
    /// A mapping of named keys (a section).
    Section,
    /// A list of sections (`datasets`, `samples`).
    List,
    /// A free mapping (`meta`).
    Map,
    /// Any value; only checked for being "off" (null, false, 0, empty).
    Any,
}

/// What wanlora does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Read and acted on.
    Used,
    /// Accepted for compatibility with AI Toolkit files; it changes nothing (the doc says why).
    NoEffect,
    /// Only its neutral value is accepted; anything else is refused with the reason in `doc`.
    Refused,
}

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// AI Toolkit's key, with its meaning.
    AiToolkit,
    /// A key only wanlora has.
    Wanlora,
}

/// One key of the job format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Full path, e.g. `config.process[0].train.lr`; list items appear as `datasets[]`.
    pub key: String,
    /// Other spellings accepted for the same key (e.g. `rank` for `linear`).
    pub aliases: Vec<String>,
    pub kind: KeyKind,
    /// The value used when the key is absent (null when there is none).
    pub default: serde_json::Value,
    /// For [`KeyKind::Choice`]: the accepted values.
    pub choices: Vec<String>,
    pub support: Support,
    pub origin: Origin,
    /// One line of help (for refused and no-effect keys: the reason).
    pub doc: String,
}

/// Every key of the job format, in reading order (sections before their keys).
pub fn known_keys() -> Vec<KeyInfo> {
    let mut ctx = crate::reader::Ctx::describing();
    let empty = crate::node::Node::empty_map();
    crate::job::read_job(&empty, &mut ctx);
    ctx.schema.unwrap_or_default()
}
