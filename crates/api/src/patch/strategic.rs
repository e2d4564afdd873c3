//! Strategic merge patch, applied server-side the way apimachinery's
//! `strategicpatch.StrategicMergeMapPatch` does (`MergeParallelList` and
//! `IgnoreUnmatchedNulls` on): maps merge key by key, `null` deletes, lists follow the
//! strategy of their field in [`schema`](super::schema) (replace by default, merge by key, or
//! merge as a set of scalars), and the directives kubectl puts in its patches are honoured:
//! `$patch: replace|delete|merge` in maps and list items, `$setElementOrder/<list>`,
//! `$deleteFromPrimitiveList/<list>` and `$retainKeys`.
//!
//! Deliberate differences from upstream, all on inputs kubectl does not send: `$patch: merge`
//! is accepted as the no-op it names (upstream rejects it); a nested map deleted with
//! `$patch: delete` is removed rather than left as `{}`; values new to the object have their
//! directives processed instead of being stored raw; errors upstream leaves as 500s are 422s.

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{Node, SmpList};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Go's names for the JSON types, as upstream's messages print them.
const GO_MAP: &str = "map[string]interface {}";
const GO_SLICE: &str = "[]interface {}";

type Object = Map<String, Value>;

/// Applies the strategic merge patch `patch_body` to `original` under schema `root`.
pub(crate) fn apply(root: &Node, original: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    // mergepatch.ErrBadJSONDoc: the patch must decode into a map.
    let bad_doc = || PatchError::BadRequest("invalid JSON document".to_string());
    let Value::Object(patch) = serde_json::from_slice(patch_body).map_err(|_| bad_doc())? else {
        return Err(bad_doc());
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Object::new(),
        _ => return Err(bad_doc()),
    };
    Ok(Value::Object(merge_map(original, patch, root)?.unwrap_or_default()))
}

/// Merges `patch` into `original`; `None` when the patch deletes the whole map.
fn merge_map(mut original: Object, mut patch: Object, node: &Node) -> Result<Option<Object>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            // The patch (minus the directive) is the new value; nested directives still apply.
            Some("replace") => return merge_map(Object::new(), patch, node),
            Some("delete") => return Ok(None),
            Some("merge") => {}
            _ => {
                patch.insert(DIRECTIVE.to_string(), directive.clone());
                return Err(bad_patch_type(&directive, &patch));
            }
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, node)?;

    for (key, patch_value) in patch {
        if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let list_key = rest.strip_prefix('/').ok_or_else(bad_primitive_list)?;
            if let Some(Value::Array(current)) = original.get_mut(list_key) {
                let Value::Array(to_delete) = &patch_value else {
                    return Err(bad_arg_type(GO_SLICE, &patch_value));
                };
                current.retain(|v| !to_delete.iter().any(|d| json_eq(v, d)));
            }
            continue;
        }
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let child = node.child(&key);
        match original.get_mut(&key) {
            None => {
                if let Some(value) = new_value(patch_value, child, &key)? {
                    original.insert(key, value);
                }
            }
            Some(slot) => {
                let current = std::mem::take(slot);
                match merge_value(current, patch_value, child, &key)? {
                    Some(value) => *slot = value,
                    None => {
                        original.shift_remove(&key);
                    }
                }
            }
        }
    }
    Ok(Some(original))
}

/// Merges a patch value into the value already at its key.
fn merge_value(current: Value, patch: Value, node: &Node, field: &str) -> Result<Option<Value>, PatchError> {
    match (current, patch) {
        (Value::Object(c), Value::Object(p)) => Ok(merge_map(c, p, node)?.map(Value::Object)),
        (Value::Array(c), Value::Array(p)) => Ok(Some(Value::Array(merge_list(c, p, node, field)?))),
        // A scalar, or a change of type: the patch value replaces.
        (_, p) => new_value(p, node, field),
    }
}

/// The value a patch puts where the original has nothing (or something of another type):
/// the patch value with its nulls dropped and its directives processed.
fn new_value(patch: Value, node: &Node, field: &str) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => Ok(merge_map(Object::new(), p, node)?.map(Value::Object)),
        Value::Array(p) => Ok(Some(Value::Array(merge_list(Vec::new(), p, node, field)?))),
        scalar => Ok(Some(scalar)),
    }
}

/// `$retainKeys`: clears the original's keys missing from the list, after checking that the
/// patch sets nothing outside it.
fn apply_retain_keys(original: &mut Object, patch: &mut Object) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let bad = || PatchError::BadRequest("invalid patch format of retainKeys".to_string());
    let Value::Array(retain) = retain else {
        return Err(bad());
    };
    let retained = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if !retained(k) {
            return Err(bad());
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// `$setElementOrder/<list>`: merges `<list>` now and orders the result by the directive,
/// then the patch, then the live list (upstream's `mergePatchIntoOriginal`).
fn apply_set_element_order(original: &mut Object, patch: &mut Object, node: &Node) -> Result<(), PatchError> {
    let directives: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
    for directive in directives {
        let Some(order) = patch.shift_remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg_type(GO_SLICE, &order));
        };
        let list_key = directive
            .strip_prefix(SET_ELEMENT_ORDER)
            .and_then(|s| s.strip_prefix('/'))
            .ok_or_else(|| PatchError::BadRequest("invalid patch format of setElementOrder list".to_string()))?
            .to_string();
        let child = node.child(&list_key);
        let merge_key = match child.smp {
            SmpList::MergeByKey(k) => Some(k),
            _ => None,
        };
        let original_list = match original.get(&list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(GO_SLICE, other)),
        };
        let patch_list = match patch.shift_remove(&list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => return Err(bad_arg_type(GO_SLICE, &other)),
        };
        let objects = order.iter().chain(patch_list.iter().flatten()).any(Value::is_object);
        if objects && merge_key.is_none() {
            // Objects without a merge key cannot be matched to the order list (upstream
            // panics here); the list is merged by its own strategy alone.
            if let Some(p) = patch_list {
                patch.insert(list_key, Value::Array(p));
            }
            continue;
        }
        validate_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;
        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (Some(o), None) => o,
            (None, Some(p)) => merge_list(Vec::new(), p, child, &list_key)?,
            (Some(o), Some(p)) => merge_list(o, p, child, &list_key)?,
            (None, None) => continue,
        };
        let (ordered, server_only) = partition(merged, &order, merge_key)?;
        let result = normalize_element_order(ordered, server_only, &order, &server_order, merge_key)?;
        original.insert(list_key, Value::Array(result));
    }
    Ok(())
}

/// Checks that the patch list's items appear in the `$setElementOrder` list in the same
/// relative order (deletions aside).
fn validate_order(patch_list: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = match merge_key {
        Some(_) => {
            let mut kept = Vec::new();
            for item in patch_list {
                if !item.is_object() {
                    return Err(bad_arg_type(GO_MAP, item));
                }
                if directive_of(item) != Some("delete") {
                    kept.push(item);
                }
            }
            kept
        }
        None => patch_list.iter().collect(),
    };
    let (mut pi, mut si) = (0, 0);
    while pi < items.len() && si < order.len() {
        if directive_of(items[pi]).is_some() {
            pi += 1;
            continue;
        }
        if merge_key_equal(items[pi], &order[si], merge_key)? {
            pi += 1;
        }
        si += 1;
    }
    if pi < items.len() {
        return Err(PatchError::Unprocessable(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(order.to_vec())),
        )));
    }
    Ok(())
}

/// Merges two lists by the field's strategy.
fn merge_list(original: Vec<Value>, patch: Vec<Value>, node: &Node, field: &str) -> Result<Vec<Value>, PatchError> {
    let merge_key = match node.smp {
        SmpList::Replace => {
            let mut patch = Value::Array(patch);
            discard_nulls(&mut patch);
            return Ok(match patch {
                Value::Array(p) => p,
                _ => Vec::new(),
            });
        }
        SmpList::MergeSet => None,
        SmpList::MergeByKey(k) => Some(k),
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if !element_kinds_match(&original, &patch)? {
        return merge_scalars(original, patch);
    }
    let Some(key) = merge_key else {
        return Err(PatchError::Unprocessable(format!("cannot merge lists without merge key for {field}")));
    };
    merge_by_key(original, patch, node, key)
}

/// Whether the elements are all objects (`true`) or all scalars of one type (`false`);
/// upstream rejects lists of lists and mixed lists.
fn element_kinds_match(original: &[Value], patch: &[Value]) -> Result<bool, PatchError> {
    let mut kind: Option<&'static str> = None;
    for v in original.iter().chain(patch) {
        let k = go_type(v);
        if v.is_array() {
            return Err(PatchError::Unprocessable("lists of lists are not supported".to_string()));
        }
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                let all: Vec<Value> = original.iter().chain(patch).cloned().collect();
                return Err(PatchError::Unprocessable(format!(
                    "list element types are not identical: {}",
                    go_fmt(&Value::Array(all))
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind == Some(GO_MAP))
}

/// Merges lists of scalars as sets, keeping the patch's order for its items.
fn merge_scalars(original: Vec<Value>, patch: Vec<Value>) -> Result<Vec<Value>, PatchError> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(&patch) {
        if !merged.iter().any(|m| json_eq(m, v)) {
            merged.push(v.clone());
        }
    }
    let (in_patch, server_only) = partition(merged, &patch, None)?;
    normalize_element_order(in_patch, server_only, &patch, &original, None)
}

/// Merges lists of objects by `key`, handling `$patch: delete|replace|merge` items.
fn merge_by_key(mut original: Vec<Value>, patch: Vec<Value>, node: &Node, key: &str) -> Result<Vec<Value>, PatchError> {
    let mut items: Vec<Object> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut m) = item else {
            return Err(bad_arg_type(GO_MAP, &item));
        };
        let Some(directive) = m.get(DIRECTIVE).cloned() else {
            items.push(m);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(wanted) = m.get(key) else {
                    return Err(no_merge_key(&m, key));
                };
                original.retain(|o| !o.get(key).is_some_and(|v| json_eq(v, wanted)));
            }
            // Keep scanning: every other directive item is pruned too.
            Some("replace") => replace = true,
            Some("merge") => {
                m.shift_remove(DIRECTIVE);
                items.push(m);
            }
            _ => return Err(bad_patch_type(&directive, &m)),
        }
    }
    if replace {
        let mut replacement = Vec::with_capacity(items.len());
        for item in items {
            if let Some(m) = merge_map(Object::new(), item, node)? {
                replacement.push(Value::Object(m));
            }
        }
        return Ok(replacement);
    }

    let server_order = original.clone();
    let mut patch_order = Vec::with_capacity(items.len());
    for item in items {
        let Some(wanted) = item.get(key).cloned() else {
            return Err(no_merge_key(&item, key));
        };
        patch_order.push(Value::Object(item.clone()));
        let mut found = None;
        for (i, o) in original.iter().enumerate() {
            let Value::Object(om) = o else {
                return Err(PatchError::Unprocessable(format!("value for key {i} is not a map")));
            };
            if om.get(key).is_some_and(|v| json_eq(v, &wanted)) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let current = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => Object::new(),
                };
                match merge_map(current, item, node)? {
                    Some(m) => original[i] = Value::Object(m),
                    None => {
                        original.remove(i);
                    }
                }
            }
            None => {
                if let Some(m) = merge_map(Object::new(), item, node)? {
                    original.push(Value::Object(m));
                }
            }
        }
    }
    let (in_patch, server_only) = partition(original, &patch_order, Some(key))?;
    normalize_element_order(in_patch, server_only, &patch_order, &server_order, Some(key))
}

/// Splits `list` into the items present in `by` and the others, keeping their order.
fn partition(list: Vec<Value>, by: &[Value], merge_key: Option<&str>) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for item in list {
        let found = match merge_key {
            None => by.iter().any(|b| json_eq(b, &item)),
            Some(key) => {
                let Value::Object(m) = &item else {
                    return Err(bad_arg_type(GO_MAP, &item));
                };
                let Some(wanted) = m.get(key) else {
                    return Err(no_merge_key(m, key));
                };
                let mut found = false;
                for (i, b) in by.iter().enumerate() {
                    let Value::Object(bm) = b else {
                        return Err(PatchError::Unprocessable(format!("value for key {i} is not a map")));
                    };
                    if bm.get(key).is_some_and(|v| json_eq(v, wanted)) {
                        found = true;
                        break;
                    }
                }
                found
            }
        };
        if found { present.push(item) } else { absent.push(item) }
    }
    Ok((present, absent))
}

/// Sorts the patch's items by `patch_order` and the server-only items by `server_order`,
/// then interleaves them so both relative orders hold (upstream's `normalizeElementOrder`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key)?;
    let server_only = sort_by_order(server_only, server_order, merge_key)?;
    Ok(merge_sorted(server_only, patch_items, server_order, merge_key))
}

/// Stable sort by position in `order`; items `order` lacks, and deletions, go last.
fn sort_by_order(items: Vec<Value>, order: &[Value], merge_key: Option<&str>) -> Result<Vec<Value>, PatchError> {
    if let Some(key) = merge_key {
        for v in items.iter().chain(order) {
            let Value::Object(m) = v else {
                return Err(bad_arg_type(GO_MAP, v));
            };
            if !m.contains_key(key) {
                return Err(no_merge_key(m, key));
            }
        }
    }
    let mut keyed: Vec<(usize, Value)> = items
        .into_iter()
        .map(|v| {
            let rank = if directive_of(&v) == Some("delete") {
                usize::MAX
            } else {
                index_of(order, &v, merge_key).unwrap_or(usize::MAX - 1)
            };
            (rank, v)
        })
        .collect();
    keyed.sort_by_key(|(rank, _)| *rank);
    Ok(keyed.into_iter().map(|(_, v)| v).collect())
}

/// Inserts the server-only items (`left`) among the patch items (`right`): a server item
/// goes before a patch item only when the live list had it first.
fn merge_sorted(left: Vec<Value>, right: Vec<Value>, server_order: &[Value], merge_key: Option<&str>) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_of(server_order, l, merge_key), index_of(server_order, r, merge_key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// The position of `item` in `list`: by merge key value for objects, by value otherwise.
fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    match merge_key {
        Some(key) => {
            let wanted = item.get(key)?;
            list.iter().position(|v| v.get(key).is_some_and(|x| json_eq(x, wanted)))
        }
        None => list.iter().position(|v| json_eq(v, item)),
    }
}

fn merge_key_equal(a: &Value, b: &Value, merge_key: Option<&str>) -> Result<bool, PatchError> {
    let Some(key) = merge_key else {
        return Ok(json_eq(a, b));
    };
    let (Value::Object(am), Value::Object(bm)) = (a, b) else {
        let offender = if a.is_object() { b } else { a };
        return Err(bad_arg_type(GO_MAP, offender));
    };
    let av = am.get(key).ok_or_else(|| no_merge_key(am, key))?;
    let bv = bm.get(key).ok_or_else(|| no_merge_key(bm, key))?;
    Ok(json_eq(av, bv))
}

fn directive_of(v: &Value) -> Option<&str> {
    v.get(DIRECTIVE).and_then(Value::as_str)
}

/// Drops null-valued keys everywhere (upstream's `discardNullValuesFromPatch`).
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// JSON equality where `80` equals `80.0`, as Go's float64 decoding makes them.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn bad_primitive_list() -> PatchError {
    PatchError::BadRequest("invalid patch format of primitive list".to_string())
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Unprocessable(format!("expected a {expected}, but received a {}", go_type(actual)))
}

fn bad_patch_type(directive: &Value, m: &Object) -> PatchError {
    PatchError::Unprocessable(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt(&Value::Object(m.clone()))
    ))
}

fn no_merge_key(m: &Object, key: &str) -> PatchError {
    PatchError::Unprocessable(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(&Value::Object(m.clone()))
    ))
}

/// The Go type a JSON value decodes to, as `reflect.TypeOf` prints it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => GO_SLICE,
        Value::Object(_) => GO_MAP,
    }
}

/// A value the way Go's `%v` prints a decoded JSON value: `map[a:1 b:[x y]]`.
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_fmt).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{k}:{}", go_fmt(v))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}
