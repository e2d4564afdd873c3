//! Field paths and field sets in structured-merge-diff's model, and their `FieldsV1`
//! encoding in `metadata.managedFields`.
//!
//! A path is a sequence of elements: `f:<field>` (an object field), `k:{"port":80,"protocol":"TCP"}`
//! (an item of a list keyed by those fields), `v:"foo"` (a value of a set list) and `i:3` (a
//! list index, only read, never produced). A [`FieldSet`] is a trie of paths; a path is a
//! *member* when it is owned itself, and FieldsV1 writes membership of a node that also has
//! children as `".": {}`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path. The derived order (fields, then keys, then values, then
/// indexes) is structured-merge-diff's, which FieldsV1 is written in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    Field(String),
    /// The canonical JSON of the key fields, sorted by name.
    Key(String),
    /// The canonical JSON of a set member.
    Value(String),
    Index(usize),
}

impl PathElement {
    /// The key element of a list item from its key fields.
    pub(crate) fn key(fields: &[(&str, Value)]) -> Self {
        let mut sorted: Vec<&(&str, Value)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut m = Map::new();
        for (k, v) in sorted {
            m.insert((*k).to_string(), v.clone());
        }
        PathElement::Key(Value::Object(m).to_string())
    }

    pub(crate) fn value(v: &Value) -> Self {
        PathElement::Value(canonical(v).to_string())
    }

    /// The FieldsV1 spelling.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => {
                let Value::Object(m) = serde_json::from_str::<Value>(rest).ok()? else {
                    return None;
                };
                let fields: Vec<(&str, Value)> = m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                Some(PathElement::key(&fields))
            }
            "v:" => serde_json::from_str::<Value>(rest).ok().map(|v| PathElement::value(&v)),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

/// structured-merge-diff's `PathElement.String()`: `.name`, `[port=80,protocol="TCP"]`,
/// `[="foo"]`, `[3]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![json.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => write!(f, "[={json}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A JSON value with object keys sorted, so equal values spell the same.
pub(crate) fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub(crate) type Path = Vec<PathElement>;

/// Renders a path the way conflict messages print it: `.spec.ports[port=80,protocol="TCP"].targetPort`.
pub(crate) fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths, as a trie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub(crate) fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether `element` or anything below it is in the set.
    pub(crate) fn has_any_under(&self, element: &PathElement) -> bool {
        self.members.contains(element) || self.children.get(element).is_some_and(|c| !c.is_empty())
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub(crate) fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out =
            FieldSet { members: self.members.difference(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, in FieldsV1 order (a node before its descendants).
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let elements: BTreeSet<&PathElement> = self.members.iter().chain(self.children.keys()).collect();
        for pe in elements {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(pe) {
                child.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON object.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        let elements: BTreeSet<&PathElement> = self.members.iter().chain(self.children.keys()).collect();
        for pe in elements {
            let child = self.children.get(pe).filter(|c| !c.is_empty());
            let value = match child {
                None => Value::Object(Map::new()),
                Some(c) => {
                    let mut inner = Map::new();
                    if self.members.contains(pe) {
                        inner.insert(".".to_string(), Value::Object(Map::new()));
                    }
                    if let Value::Object(rest) = c.to_fields_v1() {
                        inner.extend(rest);
                    }
                    Value::Object(inner)
                }
            };
            out.insert(pe.encode(), value);
        }
        Value::Object(out)
    }

    /// Reads a FieldsV1 object; `None` when it is not one. Unknown element prefixes are
    /// skipped, as upstream does.
    pub(crate) fn from_fields_v1(v: &Value) -> Option<FieldSet> {
        let Value::Object(m) = v else {
            return None;
        };
        let mut out = FieldSet::default();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let Some(pe) = PathElement::decode(k) else {
                continue;
            };
            let Value::Object(cm) = child else {
                return None;
            };
            let grandchildren = FieldSet::from_fields_v1(child)?;
            if cm.is_empty() || cm.contains_key(".") {
                out.members.insert(pe.clone());
            }
            if !grandchildren.is_empty() {
                out.children.insert(pe, grandchildren);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    #[test]
    fn fields_v1_round_trips_and_marks_members_with_a_dot() {
        let port = PathElement::key(&[("protocol", json!("TCP")), ("port", json!(80))]);
        let mut set = FieldSet::default();
        set.insert(&[f("spec"), f("ports"), port.clone()]);
        set.insert(&[f("spec"), f("ports"), port.clone(), f("targetPort")]);
        set.insert(&[f("spec"), f("selector")]);
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:targetPort": {}}}, "f:selector": {}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), Some(set.clone()));
        assert_eq!(
            path_string(&[f("spec"), f("ports"), port, f("targetPort")]),
            ".spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
        assert_eq!(
            path_string(&[f("metadata"), f("finalizers"), PathElement::value(&json!("a"))]),
            ".metadata.finalizers[=\"a\"]"
        );
    }

    fn element() -> impl proptest::strategy::Strategy<Value = PathElement> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-c]{1,2}".prop_map(PathElement::Field),
            (0u16..3, "[xy]").prop_map(|(p, s)| PathElement::key(&[("port", json!(p)), ("name", json!(s))])),
            "[a-c]".prop_map(|v| PathElement::value(&json!(v))),
        ]
    }

    proptest::proptest! {
        #[test]
        fn fields_v1_round_trips(paths in proptest::collection::vec(proptest::collection::vec(element(), 1..4), 0..8)) {
            let mut set = FieldSet::default();
            for p in &paths {
                set.insert(p);
            }
            proptest::prop_assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()), Some(set.clone()));
            for p in &paths {
                proptest::prop_assert!(set.contains(p));
            }
            proptest::prop_assert!(set.difference(&set).is_empty());
            proptest::prop_assert_eq!(set.union(&set), set.clone());
            proptest::prop_assert_eq!(set.intersection(&set), set);
        }
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[f("a"), f("b")]);
        a.insert(&[f("a"), f("c")]);
        let mut b = FieldSet::default();
        b.insert(&[f("a"), f("c")]);
        b.insert(&[f("d")]);
        let mut only_b = FieldSet::default();
        only_b.insert(&[f("a"), f("b")]);
        assert_eq!(a.difference(&b), only_b);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("a"), f("c")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }
}
