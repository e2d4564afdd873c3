//! Defensive accessors over `serde_json::Value`. A JSON `null` reads as absent, as it decodes to
//! a nil pointer or zero value upstream; a value of the wrong type also reads as absent (it
//! cannot occur after `roundtrip` but must not panic).

use serde_json::{Map, Value};

/// The member `key` of an object, `None` when missing or `null`.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(x) => Some(x),
    }
}

/// Follows a path of member names.
pub fn at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for k in keys {
        cur = get(cur, k)?;
    }
    Some(cur)
}

/// A string member, `""` when absent (Go's zero value).
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).and_then(Value::as_str).unwrap_or_default()
}

/// A string member distinguishing absent (a nil `*string`) from empty.
pub fn opt_s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// An integer member, 0 when absent.
pub fn i(v: &Value, key: &str) -> i64 {
    opt_i(v, key).unwrap_or_default()
}

pub fn opt_i(v: &Value, key: &str) -> Option<i64> {
    get(v, key).and_then(Value::as_i64)
}

pub fn b(v: &Value, key: &str) -> bool {
    get(v, key).and_then(Value::as_bool).unwrap_or_default()
}

/// An array member, empty when absent.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    get(v, key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// An object member.
pub fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    get(v, key).and_then(Value::as_object)
}

/// The strings of an array, `None` when the array is absent (a nil slice).
pub fn as_str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
}

pub fn str_list(v: &Value, key: &str) -> Vec<String> {
    as_str_list(get(v, key)).unwrap_or_default()
}

/// The pairs of a `map[string]string` member in document order.
pub fn str_pairs<'a>(v: &'a Value, key: &str) -> Vec<(&'a str, &'a str)> {
    obj(v, key)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default()
}

/// The object member `key` of `v`, created (replacing `null`) when missing. `None` when `v` is
/// not an object or the member has another type.
pub fn ensure_obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// True when `key` is missing or `null` in `m`.
pub fn missing(m: &Map<String, Value>, key: &str) -> bool {
    matches!(m.get(key), None | Some(Value::Null))
}

/// True when `key` is missing, `null` or `""` (an unset Go string).
pub fn empty_str(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// True when `key` is missing, `null` or `0` (an unset Go int).
pub fn zero_int(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// A copy with nulls, empty arrays and empty objects removed (recursively), for the
/// `apiequality.Semantic.DeepEqual` comparisons upstream makes, which treat nil and empty
/// slices and maps as equal.
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let n = normalized(x);
                if !is_blank(&n) {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Semantic equality of two optional values (see [`normalized`]).
pub fn sem_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    let na = a.map(normalized).filter(|v| !is_blank(v));
    let nb = b.map(normalized).filter(|v| !is_blank(v));
    na == nb
}
