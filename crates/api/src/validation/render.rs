//! Rendering of bad values the way Go's `fmt` prints them in upstream's field errors: `%q` for
//! strings and `%#v` for composite values of the internal API types (`[]string{"a"}`,
//! `map[string]string{"k":"v"}`, `intstr.IntOrString{...}`, `v1.LabelSelector{...}`).
//!
//! Upstream v1.32 dereferences pointers and prints structs with `%#v` unless the value type
//! itself implements `String()`; the helpers here reproduce the outputs that users actually see.

use serde_json::Value;

use super::value;

/// Go's `strconv.Quote`: double quotes, backslash escapes for quotes, backslashes and control
/// characters, printable Unicode kept as is.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `%#v` of a slice of strings (or of a named string type, `ty` being e.g. `[]core.IPFamily`):
/// `[]string{"a", "b"}`, `[]string{}` when empty, `[]string(nil)` when absent.
pub fn str_slice(ty: &str, items: Option<&[String]>) -> String {
    match items {
        None => format!("{ty}(nil)"),
        Some(items) => {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("{ty}{{{}}}", quoted.join(", "))
        }
    }
}

/// `str_slice` over a JSON array (non-strings skipped, they cannot occur after decoding).
pub fn json_str_slice(ty: &str, v: Option<&Value>) -> String {
    let items = value::as_str_list(v);
    str_slice(ty, items.as_deref())
}

/// `%#v` of a `map[string]string`: keys sorted, `map[string]string{"a":"b", "c":"d"}`,
/// `map[string]string(nil)` when absent.
pub fn str_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let mut pairs: Vec<(&String, String)> =
                m.iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{}:{}", quote(k), quote(v))).collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// `%#v` of an `intstr.IntOrString` (its `String()` has a pointer receiver, so upstream prints
/// the struct).
pub fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}", quote(s)),
        Some(Value::Number(n)) => {
            format!("intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}", n.as_i64().unwrap_or_default())
        }
        _ => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
    }
}

/// `%#v` of a `metav1.LabelSelector` (what users see in `spec.selector: Invalid value: ...`).
pub fn label_selector(v: Option<&Value>) -> String {
    let match_labels = v.and_then(|v| value::get(v, "matchLabels"));
    let exprs = v.and_then(|v| value::get(v, "matchExpressions")).and_then(Value::as_array);
    let exprs = match exprs {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        quote(value::s(e, "key")),
                        quote(value::s(e, "operator")),
                        json_str_slice("[]string", value::get(e, "values"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}", str_map(match_labels), exprs)
}

/// A nullable string pointer as upstream prints it: the quoted string, or `null`.
pub fn opt_quote(v: Option<&str>) -> String {
    match v {
        Some(s) => quote(s),
        None => "null".to_string(),
    }
}
