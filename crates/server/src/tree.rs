//! A YAML/JSON document that keeps its keys in the order they were written, so a job goes from
//! YAML to the form and back without its sections being shuffled (serde_json's map sorts keys).

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Tree>),
    /// Keys in document order.
    Map(Vec<(String, Tree)>),
}

impl Tree {
    pub fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Tree::List(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Tree> {
        match self {
            Tree::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            Tree::List(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
    }

    /// The node at a `/`-separated path (`/config/process/0/train`).
    pub fn pointer(&self, path: &str) -> Option<&Tree> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |node, part| node.get(part))
    }

    pub fn pointer_mut(&mut self, path: &str) -> Option<&mut Tree> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |node, part| node.get_mut(part))
    }

    /// Sets `key` of a map, in place when present, else at the end. No effect on non-maps.
    pub fn insert(&mut self, key: &str, value: Tree) {
        if let Tree::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Tree::Int(i) => Some(*i),
            Tree::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[Tree] {
        match self {
            Tree::List(items) => items,
            _ => &[],
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self, Tree::Map(_))
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tree::Null => s.serialize_unit(),
            Tree::Bool(b) => s.serialize_bool(*b),
            Tree::Int(i) => s.serialize_i64(*i),
            Tree::Float(f) => s.serialize_f64(*f),
            Tree::Str(t) => s.serialize_str(t),
            Tree::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Tree::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(i64::try_from(v).map_or(Tree::Float(v as f64), Tree::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries: Vec<(String, Tree)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<TreeKey, Tree>()? {
            // A repeated key keeps its first place and its last value, as YAML loaders do.
            match entries.iter_mut().find(|(k, _)| *k == key.0) {
                Some((_, v)) => *v = value,
                None => entries.push((key.0, value)),
            }
        }
        Ok(Tree::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

/// Map keys: YAML allows numbers and booleans as keys; they become their text.
struct TreeKey(String);

impl<'de> Deserialize<'de> for TreeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TreeKey, D::Error> {
        match Tree::deserialize(d)? {
            Tree::Str(s) => Ok(TreeKey(s)),
            Tree::Int(i) => Ok(TreeKey(i.to_string())),
            Tree::Float(f) => Ok(TreeKey(f.to_string())),
            Tree::Bool(b) => Ok(TreeKey(b.to_string())),
            Tree::Null => Ok(TreeKey("null".into())),
            _ => Err(serde::de::Error::custom(
                "a mapping key must be a plain value",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keeps_key_order_through_json_and_back() {
        let yaml = "job: extension\nconfig:\n  name: x\n  process:\n    - type: sd_trainer\n      train: {steps: 10, lr: 1e-4}\nmeta: {z: 1, a: 2}\n";
        let tree: Tree = serde_saphyr::from_str(yaml).unwrap();
        let json = serde_json::to_string(&tree).unwrap();
        assert!(
            json.starts_with("{\"job\":\"extension\",\"config\""),
            "{json}"
        );
        assert!(json.contains("\"z\":1,\"a\":2"), "{json}");
        let back: Tree = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tree);
        let again: Tree = serde_saphyr::from_str(&serde_saphyr::to_string(&back).unwrap()).unwrap();
        assert_eq!(again, tree);
        assert_eq!(
            tree.pointer("/config/process/0/train/steps")
                .and_then(Tree::as_i64),
            Some(10)
        );
        assert_eq!(
            tree.pointer("/config/process/0/train/lr"),
            Some(&Tree::Float(1e-4))
        );
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut t = Tree::Map(vec![("a".into(), Tree::Int(1)), ("b".into(), Tree::Int(2))]);
        t.insert("a", Tree::Int(3));
        t.insert("c", Tree::Null);
        let keys: Vec<&str> = match &t {
            Tree::Map(e) => e.iter().map(|(k, _)| k.as_str()).collect(),
            _ => vec![],
        };
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(t.get("a"), Some(&Tree::Int(3)));
    }
}
