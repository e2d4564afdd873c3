//! Field selectors: a port of `k8s.io/apimachinery/pkg/fields` (`fields.ParseSelector`, escaping,
//! `String`, `Matches`) plus the per-kind part that lives in the API server: which fields a kind
//! accepts (the scheme's field-label conversion functions) and what value each field has on an
//! object (the registries' `GetAttrs` / `ToSelectableFields`).

use std::fmt;

use serde_json::Value;

use super::SelectorError;
use super::validation::go_quote;

/// `=`/`==` (the field has the value) or `!=` (it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field=value` / `field!=value` term (`value` unescaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

impl FieldTerm {
    fn matches(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A parsed field selector: the AND of its terms, in upstream's order (the raw terms sorted as
/// strings). The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// A selector from terms, kept in the given order.
    pub fn from_terms(terms: Vec<FieldTerm>) -> Self {
        FieldSelector { terms }
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an `=`/`==` term requires for `field`, if any (`RequiresExactMatch`; used to
    /// narrow a list to one name or namespace).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| t.field == field && t.operator == FieldOperator::Equals).map(|t| t.value.as_str())
    }

    /// Whether an object of `kind` (its stored JSON) satisfies every term. A field the kind does
    /// not expose reads as the empty string, as upstream's `fields.Set.Get` does; call
    /// [`check_supported`] first to reject such selectors the way the API server does.
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.terms.iter().all(|t| t.matches(&field_value(kind, obj, &t.field)))
    }
}

impl fmt::Display for FieldSelector {
    /// `Selector.String`: terms joined with `,`, values escaped (`a=b\,c`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// `fields.EscapeValue`: `\` → `\\`, `,` → `\,`, `=` → `\=`.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `fields.UnescapeValue`.
fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream formats the rune with %v, which prints its code point.
            ',' | '=' => {
                return Err(format!("invalid field selector: unescaped character in value: {}", c as u32));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// `splitTerms`: split on `,` not preceded by a backslash (escapes kept).
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// `splitTerm`: the first `!=`, `==` or `=` splits the term (no escaping on the left).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in
            [("!=", FieldOperator::NotEquals), ("==", FieldOperator::Equals), ("=", FieldOperator::Equals)]
        {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, rhs));
            }
        }
    }
    None
}

/// Parses a `fieldSelector` query parameter exactly as `fields.ParseSelector` does.
pub fn parse_field_selector(selector: &str) -> Result<FieldSelector, SelectorError> {
    let invalid = |message: String| SelectorError::InvalidFieldSelector { selector: selector.to_string(), message };
    let mut parts = split_terms(selector);
    parts.sort_unstable();
    let mut terms = Vec::new();
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let Some((lhs, operator, rhs)) = split_term(part) else {
            return Err(invalid(format!("invalid selector: '{selector}'; can't understand '{part}'")));
        };
        let value = unescape_value(rhs).map_err(invalid)?;
        terms.push(FieldTerm { field: lhs.to_string(), operator, value });
    }
    Ok(FieldSelector { terms })
}

/// The fields a kind accepts beyond the defaults, and whether the kind registers its own
/// field-label conversion (which changes both the accepted set and the error message).
fn kind_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            // Old clients' alias of spec.nodeName.
            "spec.host",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        "Secret" => &["type", "metadata.namespace", "metadata.name"],
        // Cluster-scoped: upstream accepts no metadata.namespace for these two.
        "Node" => &["metadata.name", "spec.unschedulable"],
        "Namespace" => &["status.phase", "metadata.name"],
        "ReplicaSet" => &["metadata.name", "metadata.namespace", "status.replicas"],
        _ => return None,
    })
}

/// Rejects a selector naming a field `kind` does not support, with the API server's message:
/// `field label not supported: foo` for kinds with their own field list (Pod, Event, Secret,
/// Node, Namespace, ReplicaSet), otherwise
/// `"foo" is not a known field selector: only "metadata.name", "metadata.namespace"`.
/// Terms are checked in selector order; the first unsupported one is reported.
pub fn check_supported(kind: &str, selector: &FieldSelector) -> Result<(), SelectorError> {
    for term in &selector.terms {
        let field = term.field.as_str();
        let message = match kind_fields(kind) {
            Some(fields) if fields.contains(&field) => continue,
            Some(_) => format!("field label not supported: {field}"),
            None if field == "metadata.name" || field == "metadata.namespace" => continue,
            None => format!(
                "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                go_quote(field)
            ),
        };
        return Err(SelectorError::UnsupportedField { kind: kind.to_string(), field: field.to_string(), message });
    }
    Ok(())
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut v = obj;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return "",
        }
    }
    v.as_str().unwrap_or("")
}

fn bool_at(obj: &Value, path: &[&str]) -> bool {
    let mut v = obj;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return false,
        }
    }
    v.as_bool().unwrap_or(false)
}

/// The value of a selectable field on an object, as the registries compute it; `""` for a field
/// the kind does not expose.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> String {
    match field {
        "metadata.name" => return str_at(obj, &["metadata", "name"]).to_string(),
        "metadata.namespace" => return str_at(obj, &["metadata", "namespace"]).to_string(),
        _ => {}
    }
    let s = |path: &[&str]| str_at(obj, path).to_string();
    match (kind, field) {
        ("Pod", "spec.nodeName" | "spec.host") => s(&["spec", "nodeName"]),
        ("Pod", "spec.restartPolicy") => s(&["spec", "restartPolicy"]),
        ("Pod", "spec.schedulerName") => s(&["spec", "schedulerName"]),
        ("Pod", "spec.serviceAccountName") => s(&["spec", "serviceAccountName"]),
        ("Pod", "spec.hostNetwork") => bool_at(obj, &["spec", "hostNetwork"]).to_string(),
        ("Pod", "status.phase") => s(&["status", "phase"]),
        ("Pod", "status.podIP") => {
            let ip = str_at(obj, &["status", "podIP"]);
            if ip.is_empty() {
                obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str).unwrap_or("").to_string()
            } else {
                ip.to_string()
            }
        }
        ("Pod", "status.nominatedNodeName") => s(&["status", "nominatedNodeName"]),
        ("Event", "involvedObject.kind") => s(&["involvedObject", "kind"]),
        ("Event", "involvedObject.namespace") => s(&["involvedObject", "namespace"]),
        ("Event", "involvedObject.name") => s(&["involvedObject", "name"]),
        ("Event", "involvedObject.uid") => s(&["involvedObject", "uid"]),
        ("Event", "involvedObject.apiVersion") => s(&["involvedObject", "apiVersion"]),
        ("Event", "involvedObject.resourceVersion") => s(&["involvedObject", "resourceVersion"]),
        ("Event", "involvedObject.fieldPath") => s(&["involvedObject", "fieldPath"]),
        ("Event", "reason") => s(&["reason"]),
        ("Event", "reportingComponent") => s(&["reportingComponent"]),
        ("Event", "source") => {
            let component = str_at(obj, &["source", "component"]);
            if component.is_empty() { s(&["reportingComponent"]) } else { component.to_string() }
        }
        ("Event", "type") => s(&["type"]),
        ("Secret", "type") => s(&["type"]),
        ("Node", "spec.unschedulable") => bool_at(obj, &["spec", "unschedulable"]).to_string(),
        ("Namespace", "status.phase") => s(&["status", "phase"]),
        ("ReplicaSet", "status.replicas") => {
            obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0).to_string()
        }
        _ => String::new(),
    }
}
