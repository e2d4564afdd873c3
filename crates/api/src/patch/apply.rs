//! Server-side apply and field ownership (`metadata.managedFields`), after
//! sigs.k8s.io/structured-merge-diff and apiserver's field manager, simplified to one version
//! per kind.
//!
//! An *apply* merges the user's configuration into the live object: objects merge field by
//! field, lists keyed by [`SsaList::Map`] merge item by item (identified by their key fields,
//! a missing `protocol` key counting as `TCP`), set lists merge as sets, everything else is
//! replaced. The applier then owns exactly the fields its configuration names. Fields it
//! owned from its previous apply and no longer names are removed unless another manager
//! owns them. Changing a field another manager owns is a conflict unless `force` is set, in
//! which case the ownership moves; setting it to the value it already has makes the
//! appliers co-owners.
//!
//! An *update* (create, PUT, the other PATCH types) makes the writer the owner of every field
//! whose value it changed, taking them away from the previous owners.
//!
//! What is simplified: whether creating a map or list records ownership of it as a whole
//! (`".": {}`) is decided by field name ([`ALWAYS_PRESENT`]) where upstream looks at the Go
//! type's zero value; when an apply touches a live keyed list with repeated items, only the
//! first of each is kept; apply never records fields as owned through a subresource; the
//! cap of ten Update managers (`ancient-changes`) is not applied.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::LAST_APPLIED_ANNOTATION;
use super::fieldpath::{FieldSet, Path, PathElement, canonical, path_string};
use super::schema::{self, Node, SsaList};
use super::strategic::json_eq;
use crate::resources;

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";
/// The manager name whose applies upgrade objects managed by client-side `kubectl apply`.
const KUBECTL_APPLIER: &str = "kubectl";

/// A field another manager owns and the apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// `Apply` or `Update`: how the other manager came to own the field.
    pub operation: String,
    /// The version the other manager wrote with (part of an `Update` manager's identity).
    pub api_version: Option<String>,
    pub subresource: Option<String>,
    /// The field, as upstream prints it: `.spec.ports[port=80,protocol="TCP"].targetPort`.
    pub field: String,
}

impl Conflict {
    /// The manager as upstream's `printManager` shows it: `"kubectl"` for an applier,
    /// `"kubectl-client-side-apply" using v1` for an updater.
    pub fn manager_description(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == UPDATE {
            out.push_str(&format!(" using {}", self.api_version.as_deref().unwrap_or_default()));
        }
        out
    }

    /// The `details.causes[].message` of the 409 (`type: FieldManagerConflict`, `field` is
    /// [`Conflict::field`]).
    pub fn message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// Why an apply was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change: `409 Conflict`, one `FieldManagerConflict`
    /// cause per entry.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The apply configuration itself is not acceptable: `400 BadRequest`.
    #[error("{0}")]
    BadRequest(String),
}

impl ApplyError {
    /// The Status message.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The conflicts, for `details.causes`; empty for other errors.
    pub fn conflicts(&self) -> &[Conflict] {
        match self {
            Self::Conflicts(c) => c,
            Self::BadRequest(_) => &[],
        }
    }

    /// The HTTP status.
    pub fn code(&self) -> u16 {
        match self {
            Self::Conflicts(_) => 409,
            Self::BadRequest(_) => 400,
        }
    }
}

/// Upstream's wording: one conflict inline, several grouped by manager.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: {}: {}", only.message(), only.field);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    for c in conflicts {
        let who = c.manager_description();
        if last.as_ref() != Some(&who) {
            lines.push(format!("conflicts with {who}:"));
            last = Some(who);
        }
        lines.push(format!("- {}", c.field));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: Option<String>,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// Whether the entry belongs to this writer: appliers are one manager across versions,
    /// updaters one per version (upstream's manager identifier).
    fn is(&self, manager: &str, operation: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_none()
            && (operation == APPLY || self.api_version.as_deref() == Some(api_version))
    }

    fn sort_key(&self) -> (String, i64, String, String, String) {
        let seconds = self.time.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map_or(0, |t| t.as_second());
        (
            self.operation.clone(),
            seconds,
            self.manager.clone(),
            self.api_version.clone().unwrap_or_default(),
            self.subresource.clone().unwrap_or_default(),
        )
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        if let Some(v) = &self.api_version {
            m.insert("apiVersion".into(), Value::String(v.clone()));
        }
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    fn decode(v: &Value) -> Option<Entry> {
        let m = v.as_object()?;
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        if m.get("fieldsType").is_some_and(|t| t.as_str() != Some("FieldsV1")) {
            return None;
        }
        let set = match m.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(f) => FieldSet::from_fields_v1(f)?,
        };
        Some(Entry {
            manager: text("manager").unwrap_or_default(),
            operation: text("operation")?,
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource").filter(|s| !s.is_empty()),
            set,
        })
    }
}

/// The entries of a `managedFields` list; `None` when it is malformed.
fn decode_entries(list: &Value) -> Option<Vec<Entry>> {
    list.as_array()?.iter().map(Entry::decode).collect()
}

fn managed_fields_of(object: &Value) -> Vec<Entry> {
    object.pointer("/metadata/managedFields").and_then(decode_entries).unwrap_or_default()
}

/// Writes `entries` (sorted as upstream does: appliers first, then by time) into `object`.
fn store_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by_key(Entry::sort_key);
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::encode).collect()));
    }
}

fn same_entries(a: &[Entry], b: &[Entry]) -> bool {
    let mut a: Vec<&Entry> = a.iter().filter(|e| !e.set.is_empty()).collect();
    let mut b: Vec<&Entry> = b.iter().filter(|e| !e.set.is_empty()).collect();
    a.sort_by_key(|e| e.sort_key());
    b.sort_by_key(|e| e.sort_key());
    a == b
}

/// `object` without `metadata.managedFields`.
fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
    out
}

/// The fields no manager owns (apiserver's `stripMeta`): identity and server bookkeeping.
fn ignored_fields() -> FieldSet {
    let f = |s: &str| PathElement::Field(s.to_string());
    let mut set = FieldSet::default();
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[f("metadata"), f(name)]);
    }
    set
}

fn now_string(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The apiVersion written into managedFields entries.
fn api_version_of(kind: &str, object: Option<&Value>) -> String {
    if let Some(v) = object.and_then(|o| o.get("apiVersion")).and_then(Value::as_str) {
        return v.to_string();
    }
    resources::RESOURCES.iter().find(|r| r.kind == kind).map_or_else(|| "v1".to_string(), |r| r.api_version())
}

fn has_status_subresource(kind: &str) -> bool {
    resources::RESOURCES.iter().any(|r| r.kind == kind && r.subresource("status").is_some())
}

// === Walking values by schema ===

/// The identity of each item of a non-atomic list, first occurrence only.
fn list_items<'a>(list: &'a [Value], node: &Node) -> Vec<(PathElement, &'a Value)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let pe = match node.ssa {
            SsaList::Map { keys, defaults } => item_key(item, keys, defaults).unwrap_or(PathElement::Index(i)),
            SsaList::Set => PathElement::value(item),
            SsaList::Atomic => PathElement::Index(i),
        };
        if seen.insert(pe.clone()) {
            out.push((pe, item));
        }
    }
    out
}

/// The `k:` element of a keyed list item, or the name of the key field it lacks.
fn item_key(item: &Value, keys: &[&str], defaults: &[(&str, &str)]) -> Result<PathElement, String> {
    let mut fields: Vec<(&str, Value)> = Vec::with_capacity(keys.len());
    for &k in keys {
        match item.get(k).filter(|v| !v.is_null()) {
            Some(v) => fields.push((k, v.clone())),
            None => match defaults.iter().find(|(d, _)| *d == k) {
                Some((_, default)) => fields.push((k, Value::String((*default).to_string()))),
                None => return Err(k.to_string()),
            },
        }
    }
    Ok(PathElement::key(&fields))
}

fn walks_as_list(node: &Node) -> bool {
    !node.atomic && node.ssa != SsaList::Atomic
}

/// Adds the fields `value` sets under `prefix` (structured-merge-diff's `ToFieldSet`):
/// leaves, atomic values and empty containers are members, and so is each list item.
fn to_field_set(value: &Value, node: &Node, prefix: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(m) if !node.atomic && !m.is_empty() => fields_to_set(m, node, prefix, out),
        Value::Array(a) if walks_as_list(node) && !a.is_empty() => {
            for (pe, item) in list_items(a, node) {
                prefix.push(pe);
                out.insert(prefix);
                if let Value::Object(m) = item {
                    fields_to_set(m, node, prefix, out);
                }
                prefix.pop();
            }
        }
        _ => out.insert(prefix),
    }
}

fn fields_to_set(m: &Map<String, Value>, node: &Node, prefix: &mut Path, out: &mut FieldSet) {
    for (k, v) in m {
        prefix.push(PathElement::Field(k.clone()));
        to_field_set(v, node.child(k), prefix, out);
        prefix.pop();
    }
}

/// The differences between two versions of an object, as field sets.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    fn without(self, ignored: &FieldSet) -> Comparison {
        Comparison {
            added: self.added.difference(ignored),
            modified: self.modified.difference(ignored),
            removed: self.removed.difference(ignored),
        }
    }
}

fn compare_objects(old: &Value, new: &Value, root: &Node) -> Comparison {
    let mut cmp = Comparison::default();
    compare(Some(old), Some(new), root, &mut Vec::new(), &mut cmp);
    cmp.without(&ignored_fields())
}

fn is_empty_container(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

fn compare(old: Option<&Value>, new: Option<&Value>, node: &Node, prefix: &mut Path, cmp: &mut Comparison) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    let (old_v, new_v) = match (old, new) {
        (None, None) => return,
        (Some(o), None) => {
            record_removed(o, node, prefix, cmp);
            return;
        }
        (o, Some(n)) => (o, n),
    };
    let non_empty = |v: &Value| !is_empty_container(v);
    let both_objects = old_v.is_none_or(Value::is_object) && new_v.is_object();
    let both_lists = old_v.is_none_or(Value::is_array) && new_v.is_array();
    let some_content = old_v.is_some_and(non_empty) || non_empty(new_v);

    if both_objects && !node.atomic && some_content {
        // A map that did not exist is owned as a whole too (`".": {}`).
        if old_v.is_none() && newly_created(prefix) {
            cmp.added.insert(prefix);
        }
        let empty = Map::new();
        let old_m = old_v.and_then(Value::as_object).unwrap_or(&empty);
        let new_m = new_v.as_object().unwrap_or(&empty);
        let keys: Vec<&String> = old_m.keys().chain(new_m.keys().filter(|k| !old_m.contains_key(*k))).collect();
        for k in keys {
            prefix.push(PathElement::Field(k.clone()));
            compare(old_m.get(k), new_m.get(k), node.child(k), prefix, cmp);
            prefix.pop();
        }
        return;
    }
    if both_lists && walks_as_list(node) && some_content {
        if old_v.is_none() && newly_created(prefix) {
            cmp.added.insert(prefix);
        }
        let none: Vec<Value> = Vec::new();
        let old_items = list_items(old_v.and_then(Value::as_array).unwrap_or(&none), node);
        let new_items = list_items(new_v.as_array().unwrap_or(&none), node);
        let old_index: HashMap<&PathElement, &Value> = old_items.iter().map(|(p, v)| (p, *v)).collect();
        let new_index: HashMap<&PathElement, &Value> = new_items.iter().map(|(p, v)| (p, *v)).collect();
        for (pe, item) in &old_items {
            prefix.push(pe.clone());
            match new_index.get(pe) {
                None => record_removed(item, node, prefix, cmp),
                Some(new_item) => compare(Some(item), Some(new_item), node, prefix, cmp),
            }
            prefix.pop();
        }
        for (pe, item) in &new_items {
            if old_index.contains_key(pe) {
                continue;
            }
            prefix.push(pe.clone());
            cmp.added.insert(prefix);
            if let Value::Object(m) = item {
                fields_to_set(m, node, prefix, &mut cmp.added);
            }
            prefix.pop();
        }
        return;
    }
    match old_v {
        None => cmp.added.insert(prefix),
        // A map or list became something else: its old fields are gone.
        Some(o) if !is_empty_container(o) && (o.is_object() || o.is_array()) && !json_eq(o, new_v) => {
            record_removed(o, node, prefix, cmp);
            cmp.added.insert(prefix);
        }
        Some(o) if !json_eq(o, new_v) => cmp.modified.insert(prefix),
        Some(_) => {}
    }
}

/// Fields a Go object always has (non-pointer structs, lists without `omitempty`): upstream
/// compares against the typed zero value, where they exist, so creating them is not owning
/// them as a whole.
const ALWAYS_PRESENT: &[&str] = &["containers", "metadata", "source", "spec", "status", "strategy", "template"];

/// Whether a container appearing at `path` is recorded as owned itself.
fn newly_created(path: &[PathElement]) -> bool {
    match path.last() {
        None => false,
        Some(PathElement::Field(name)) => !ALWAYS_PRESENT.contains(&name.as_str()),
        Some(_) => true,
    }
}

fn record_removed(old: &Value, node: &Node, prefix: &mut Path, cmp: &mut Comparison) {
    cmp.removed.insert(prefix);
    to_field_set(old, node, prefix, &mut cmp.removed);
}

// === Merging an apply configuration ===

/// The live value with the configuration merged in.
fn merge(live: Option<&Value>, config: &Value, node: &Node) -> Value {
    match (live, config) {
        (Some(Value::Object(l)), Value::Object(c)) if !node.atomic => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = merge(out.get(k), cv, node.child(k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(c)) if walks_as_list(node) => Value::Array(merge_list(l, c, node)),
        _ => config.clone(),
    }
}

/// Merges keyed or set lists in structured-merge-diff's order: the configuration's order for
/// its items, live-only items staying where they were relative to them.
fn merge_list(live: &[Value], config: &[Value], node: &Node) -> Vec<Value> {
    let lhs = list_items(live, node);
    let rhs = list_items(config, node);
    let lhs_index: HashMap<&PathElement, usize> = lhs.iter().enumerate().map(|(i, (p, _))| (p, i)).collect();
    let rhs_index: HashMap<&PathElement, usize> = rhs.iter().enumerate().map(|(i, (p, _))| (p, i)).collect();
    let shared: Vec<&PathElement> = rhs.iter().map(|(p, _)| p).filter(|p| lhs_index.contains_key(p)).collect();
    let mut next_shared = 0;
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li].0;
            if *pe == rhs[ri].0 {
                out.push(merge(Some(lhs[li].1), rhs[ri].1, node));
                li += 1;
                ri += 1;
                next_shared += 1;
                continue;
            }
            // A shared item the configuration wants later: it is emitted when reached there.
            if rhs_index.contains_key(pe) && shared.get(next_shared).is_some_and(|s| *s != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() && !rhs_index.contains_key(&lhs[li].0) {
            out.push(lhs[li].1.clone());
            li += 1;
            continue;
        }
        if ri < rhs.len() {
            let pe = &rhs[ri].0;
            let live_item = lhs_index.get(pe).map(|&i| lhs[i].1);
            out.push(merge(live_item, rhs[ri].1, node));
            if shared.get(next_shared) == Some(&pe) {
                next_shared += 1;
            }
            ri += 1;
            continue;
        }
        // Only already-emitted shared items remain on the live side.
        li += 1;
    }
    out
}

/// Removes the fields in `to_remove` from `value`, except those `keep` has anything under;
/// maps and lists emptied by the removal go too.
fn prune(value: &mut Value, to_remove: &FieldSet, keep: &FieldSet, node: &Node) {
    let nothing = FieldSet::default();
    match value {
        Value::Object(m) => {
            for pe in to_remove.members() {
                if let PathElement::Field(k) = pe
                    && !keep.has_any_under(pe)
                {
                    m.shift_remove(k);
                }
            }
            for (pe, sub) in to_remove.children() {
                let PathElement::Field(k) = pe else { continue };
                let Some(child) = m.get_mut(k) else { continue };
                let was_empty = is_empty_container(child);
                prune(child, sub, keep.child(pe).unwrap_or(&nothing), node.child(k));
                if !was_empty && is_empty_container(child) && !keep.has_any_under(pe) {
                    m.shift_remove(k);
                }
            }
        }
        Value::Array(a) if walks_as_list(node) => {
            // Repeated items (which `list_items` ignores) keep their place untouched.
            let mut kept = Vec::with_capacity(a.len());
            let mut seen = std::collections::HashSet::new();
            for (i, mut item) in std::mem::take(a).into_iter().enumerate() {
                let pe = match node.ssa {
                    SsaList::Map { keys, defaults } => item_key(&item, keys, defaults).unwrap_or(PathElement::Index(i)),
                    _ => PathElement::value(&item),
                };
                if !seen.insert(pe.clone()) {
                    kept.push(item);
                    continue;
                }
                if to_remove.contains(std::slice::from_ref(&pe)) && !keep.has_any_under(&pe) {
                    continue;
                }
                if let Some(sub) = to_remove.child(&pe) {
                    prune(&mut item, sub, keep.child(&pe).unwrap_or(&nothing), node);
                }
                kept.push(item);
            }
            *a = kept;
        }
        _ => {}
    }
}

/// Strips nulls: in an apply configuration a null sets nothing.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Rejects keyed list items without their key and duplicate items, as building the typed
/// apply configuration does upstream.
fn check_lists(value: &Value, node: &Node, path: &mut Path) -> Result<(), String> {
    match value {
        Value::Object(m) if !node.atomic => {
            for (k, v) in m {
                path.push(PathElement::Field(k.clone()));
                check_lists(v, node.child(k), path)?;
                path.pop();
            }
        }
        Value::Array(a) if walks_as_list(node) => {
            let mut seen = std::collections::HashSet::new();
            for (i, item) in a.iter().enumerate() {
                let pe = match node.ssa {
                    SsaList::Map { keys, defaults } => item_key(item, keys, defaults).map_err(|missing| {
                        format!(
                            "{}[{i}]: associative list with keys has an element that omits key field {missing:?} (and doesn't have default value)",
                            path_string(path)
                        )
                    })?,
                    _ => PathElement::value(item),
                };
                if !seen.insert(pe.clone()) {
                    let shown = pe.to_string();
                    let inner = shown.trim_start_matches('[').trim_end_matches(']').trim_start_matches('=');
                    let what = if matches!(pe, PathElement::Key(_)) { "key" } else { "value" };
                    return Err(format!("{}: duplicate entries for {what} [{inner}]", path_string(path)));
                }
                if let Value::Object(m) = item {
                    path.push(pe);
                    for (k, v) in m {
                        path.push(PathElement::Field(k.clone()));
                        check_lists(v, node.child(k), path)?;
                        path.pop();
                    }
                    path.pop();
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The fields of the client-side-apply annotation whose value the live object still has:
/// conflicts on them are not conflicts for `kubectl apply --server-side`, which takes over
/// from `kubectl apply` (upstream's `lastAppliedManager`).
fn last_applied_fields(live: &Value, root: &Node) -> Option<FieldSet> {
    let text = live.pointer("/metadata/annotations")?.get(LAST_APPLIED_ANNOTATION)?.as_str()?;
    let mut last_applied: Value = serde_json::from_str(text).ok()?;
    if last_applied.get("apiVersion") != live.get("apiVersion") {
        return None;
    }
    strip_nulls(&mut last_applied);
    let mut set = FieldSet::default();
    to_field_set(&last_applied, root, &mut Vec::new(), &mut set);
    let cmp = compare_objects(&last_applied, &without_managed_fields(live), root);
    Some(set.difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed))
}

/// The annotation value the apiserver keeps current after `kubectl apply --server-side` on an
/// object that has one: the applied configuration without the annotation, as sorted JSON.
fn last_applied_text(applied: &Value) -> String {
    let mut doc = applied.clone();
    if let Some(annotations) = doc.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        annotations.shift_remove(LAST_APPLIED_ANNOTATION);
    }
    format!("{}\n", canonical(&doc))
}

/// Server-side apply: merges `applied` (the user's intent, already parsed) into `live`
/// (`None` creates) as `manager`, maintaining `metadata.managedFields`.
///
/// Returns [`ApplyError::Conflicts`] when another manager owns a field whose value the
/// configuration changes and `force` is false; with `force` the ownership moves. Fields the
/// manager applied before and omits now are removed unless another manager owns them. When
/// nothing changes (the same configuration applied again) the result is `live` itself, so
/// the caller can skip the write.
pub fn server_side_apply(
    kind: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: jiff::Timestamp,
) -> Result<Value, ApplyError> {
    let root = schema::root(kind);
    let api_version = api_version_of(kind, Some(applied));
    let gvk = format!(
        "{}, Kind={kind}",
        if api_version.contains('/') { api_version.clone() } else { format!("/{api_version}") }
    );
    if !applied.is_object() {
        return Err(ApplyError::BadRequest("the apply configuration must be an object".to_string()));
    }
    if applied.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::BadRequest("metadata.managedFields must be nil".to_string()));
    }
    let mut config = applied.clone();
    strip_nulls(&mut config);
    if has_status_subresource(kind)
        && let Some(m) = config.as_object_mut()
    {
        // Status is reset on the main resource: an apply there neither sets nor owns it.
        m.shift_remove("status");
    }
    check_lists(&config, root, &mut Vec::new())
        .map_err(|e| ApplyError::BadRequest(format!("failed to create typed patch object ({gvk}): {e}")))?;

    let live_object = live.map(without_managed_fields).unwrap_or_else(|| json!({}));
    let old_entries = live.map(managed_fields_of).unwrap_or_default();

    let mut applied_set = FieldSet::default();
    to_field_set(&config, root, &mut Vec::new(), &mut applied_set);
    let applied_set = applied_set.difference(&ignored_fields());

    let mine = |e: &Entry| e.is(manager, APPLY, &api_version);
    let previous = old_entries.iter().find(|e| mine(e));
    let others = old_entries.iter().filter(|e| !mine(e)).fold(FieldSet::default(), |acc, e| acc.union(&e.set));

    let mut merged = merge(Some(&live_object), &config, root);
    if let Some(previous) = previous {
        let to_remove = previous.set.difference(&applied_set);
        prune(&mut merged, &to_remove, &others.union(&applied_set), root);
    }

    let cmp = compare_objects(&live_object, &merged, root);
    let changed = cmp.changed();
    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, e) in old_entries.iter().enumerate() {
        if mine(e) {
            continue;
        }
        let c = e.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !conflicts.is_empty() && !force {
        let allowed = match live {
            Some(l) if manager == KUBECTL_APPLIER => last_applied_fields(l, root),
            _ => None,
        }
        .unwrap_or_default();
        let mut refused: Vec<Conflict> = Vec::new();
        for (i, set) in &conflicts {
            let e = &old_entries[*i];
            for path in set.difference(&allowed).paths() {
                refused.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.clone(),
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    field: path_string(&path),
                });
            }
        }
        if !refused.is_empty() {
            refused.sort_by(|a, b| {
                (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(
                    &b.manager,
                    &b.operation,
                    &b.api_version,
                    &b.subresource,
                ))
            });
            return Err(ApplyError::Conflicts(refused));
        }
    }

    // Ownership: taken-over fields leave their old owners, removed fields leave everyone.
    let mut entries: Vec<Entry> = Vec::with_capacity(old_entries.len() + 1);
    for (i, e) in old_entries.iter().enumerate() {
        if mine(e) {
            continue;
        }
        let mut e = e.clone();
        if let Some((_, c)) = conflicts.iter().find(|(j, _)| *j == i) {
            e.set = e.set.difference(c);
        }
        e.set = e.set.difference(&cmp.removed);
        entries.push(e);
    }

    if manager == KUBECTL_APPLIER
        && let Some(live) = live
        && live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        && let Some(annotations) = merged.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED_ANNOTATION.to_string(), Value::String(last_applied_text(applied)));
    }

    let object_changed = live.is_none() || !json_eq(&merged, &live_object);
    entries.push(Entry {
        manager: manager.to_string(),
        operation: APPLY.to_string(),
        api_version: Some(api_version),
        // Upstream stamps the time only when the apply changed the object.
        time: if object_changed { Some(now_string(now)) } else { previous.and_then(|p| p.time.clone()) },
        subresource: None,
        set: applied_set,
    });
    if let Some(live) = live
        && !object_changed
        && same_entries(&entries, &old_entries)
    {
        return Ok(live.clone());
    }
    store_entries(&mut merged, entries);
    Ok(merged)
}

/// Records a non-apply write (create, update, JSON/merge/strategic patch) by `manager` in
/// `new`'s `metadata.managedFields`: the fields whose value changed from `old` (`None` on
/// create) become `manager`'s and leave their other owners. A `managedFields` the request
/// set explicitly is kept (an empty list keeps the old one, `[{}]` clears it), as upstream.
/// Call it after the update strategy has reset what the request may not change (status).
pub fn record_update(kind: &str, old: Option<&Value>, new: &mut Value, manager: &str, now: jiff::Timestamp) {
    let root = schema::root(kind);
    let api_version = api_version_of(kind, Some(new));
    let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let requested = meta.shift_remove("managedFields");
    let old_entries = old.map(managed_fields_of).unwrap_or_default();
    let mut entries = match requested {
        Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty) => Vec::new(),
        Some(list) => match decode_entries(&list) {
            Some(e) if !e.is_empty() => e,
            _ => old_entries,
        },
        None => old_entries,
    };

    let old_object = old.map(without_managed_fields).unwrap_or_else(|| json!({}));
    let cmp = compare_objects(&old_object, new, root);
    let changed = cmp.changed();
    let lost = changed.union(&cmp.removed);
    for e in &mut entries {
        e.set = e.set.difference(&lost);
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.is(manager, UPDATE, &api_version)) {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(now_string(now));
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: UPDATE.to_string(),
                api_version: Some(api_version),
                time: Some(now_string(now)),
                subresource: None,
                set: changed,
            }),
        }
    }
    store_entries(new, entries);
}
