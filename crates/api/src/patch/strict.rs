//! `fieldValidation=Strict`: the fields of a request body the kind's type does not know, and
//! the fields its JSON text repeats, named the way apiserver's strict decoder names them
//! (`spec.ports[0].bogus`) and worded as its `strict decoding error`.
//!
//! Unknown fields are found by decoding the body as the kind's k8s-openapi type
//! ([`resources::roundtrip`]) and looking for what did not survive. The typed encoding drops
//! nulls and keeps maps (labels, selectors, data), `IntOrString`, `Quantity` and raw
//! extensions whole, so a field missing from the output is unknown unless its input was
//! null or an empty object or list.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::resources;

/// The paths of the fields in `value` that `kind`'s type does not have, in document order.
/// A body that does not decode as the kind at all yields nothing here (the decode error is
/// reported instead).
pub fn unknown_fields(kind: &str, value: &Value) -> Vec<String> {
    let mut input = value.clone();
    // A body may omit apiVersion and kind (the Python client does); the typed decode needs them.
    if let (Value::Object(m), Some(info)) = (&mut input, resources::RESOURCES.iter().find(|r| r.kind == kind)) {
        m.entry("apiVersion").or_insert_with(|| Value::String(info.api_version()));
        m.entry("kind").or_insert_with(|| Value::String(kind.to_string()));
    }
    let Ok(output) = resources::roundtrip(kind, &input) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk_unknown(&input, &output, "", &mut out);
    out
}

fn walk_unknown(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match o.get(k) {
                    Some(ov) => walk_unknown(v, ov, &here, out),
                    None if is_nothing(v) => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) if i.len() == o.len() => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                walk_unknown(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Values the typed encoding may drop although the field exists.
fn is_nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The paths of the object keys `raw_json` repeats (`metadata.name`, `spec.ports[0].port`),
/// each once, in document order. Text that is not JSON yields nothing.
pub fn duplicate_fields(raw_json: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(raw_json);
    if (Walk { path: String::new(), out: &mut out }).deserialize(&mut de).is_err() {
        return Vec::new();
    }
    out
}

/// Visits every object of a JSON document, noting repeated keys.
struct Walk<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let here = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) && !self.out.contains(&here) {
                self.out.push(here.clone());
            }
            map.next_value_seed(Walk { path: here, out: &mut *self.out })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        while seq.next_element_seed(Walk { path: format!("{}[{n}]", self.path), out: &mut *self.out })?.is_some() {
            n += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// apiserver's message for strict decoding failures:
/// `strict decoding error: unknown field "spec.sepc", duplicate field "x"`; `None` when
/// there is nothing to report.
pub fn strict_decoding_message(unknown: &[String], duplicates: &[String]) -> Option<String> {
    if unknown.is_empty() && duplicates.is_empty() {
        return None;
    }
    let parts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .chain(duplicates.iter().map(|p| format!("duplicate field {p:?}")))
        .collect();
    Some(format!("strict decoding error: {}", parts.join(", ")))
}
