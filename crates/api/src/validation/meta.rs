//! `ObjectMeta` validation on create and update (apimachinery's `ValidateObjectMeta*` plus the
//! core wrapper's finalizer-name rule), label and annotation maps, and label selectors
//! (validation and matching, as the apps validators need both).

use serde_json::Value;

use super::names::{self, NameKind};
use super::render::{self, quote};
use super::value::{self, get, s};
use super::{FieldError, pc, pi};

/// Total size limit of all annotation keys and values.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;
/// The finalizer names that need no domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// ValidateObjectMeta for a new object; `path` is normally `metadata`. Cluster-scoped kinds
/// (`namespaced == false`) are not checked for a namespace: the server clears it first.
pub fn validate_object_meta(meta: Option<&Value>, namespaced: bool, kind: NameKind, path: &str) -> Vec<FieldError> {
    let empty = Value::Null;
    let meta = meta.unwrap_or(&empty);
    let mut errs = Vec::new();
    let generate_name = s(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in kind.check(generate_name, true) {
            errs.push(FieldError::invalid(pc(path, "generateName"), quote(generate_name), msg));
        }
    }
    let name = s(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required(pc(path, "name"), "name or generateName is required"));
    } else {
        for msg in kind.check(name, false) {
            errs.push(FieldError::invalid(pc(path, "name"), quote(name), msg));
        }
    }
    if namespaced {
        let ns = s(meta, "namespace");
        if ns.is_empty() {
            errs.push(FieldError::required(pc(path, "namespace"), ""));
        } else {
            for msg in NameKind::Label.check(ns, false) {
                errs.push(FieldError::invalid(pc(path, "namespace"), quote(ns), msg));
            }
        }
    }
    let generation = value::i(meta, "generation");
    if generation < 0 {
        errs.push(FieldError::invalid(
            pc(path, "generation"),
            generation.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(common(meta, path));
    errs.extend(finalizers(meta, path));
    errs
}

/// Labels, annotations and owner references, shared by create and update.
fn common(meta: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(&pc(path, "labels"), get(meta, "labels"));
    errs.extend(validate_annotations(&pc(path, "annotations"), get(meta, "annotations")));
    errs.extend(owner_references(meta, &pc(path, "ownerReferences")));
    errs
}

/// ValidateFinalizers plus the core rule that unprefixed finalizers must be standard ones.
fn finalizers(meta: &Value, path: &str) -> Vec<FieldError> {
    let list = value::str_list(meta, "finalizers");
    let fpath = pc(path, "finalizers");
    let mut errs = Vec::new();
    for f in &list {
        errs.extend(names::qualified_name(f).into_iter().map(|m| FieldError::invalid(&fpath, quote(f), m)));
    }
    if list.iter().any(|f| f == "orphan") && list.iter().any(|f| f == "foregroundDeletion") {
        errs.push(FieldError::invalid(
            &fpath,
            render::str_slice("[]string", Some(&list)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs.extend(kube_finalizer_names(&fpath, &list));
    errs
}

/// validateKubeFinalizerName for each entry, indexed.
pub fn kube_finalizer_names(path: &str, list: &[String]) -> Vec<FieldError> {
    list.iter()
        .enumerate()
        .filter(|(_, f)| !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()))
        .map(|(i, f)| {
            FieldError::invalid(
                pi(path, i),
                quote(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            )
        })
        .collect()
}

/// ValidateLabels: errors are reported at the map's path, not at the key.
pub fn validate_labels(path: &str, labels: Option<&Value>) -> Vec<FieldError> {
    let pairs: Vec<(&str, &str)> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    names::labels_errors(path, &pairs)
}

/// ValidateAnnotations: keys are qualified names once lower-cased; the total size is capped.
pub fn validate_annotations(path: &str, annotations: Option<&Value>) -> Vec<FieldError> {
    let Some(m) = annotations.and_then(Value::as_object) else { return Vec::new() };
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in m {
        errs.extend(
            names::qualified_name(&k.to_lowercase()).into_iter().map(|msg| FieldError::invalid(path, quote(k), msg)),
        );
        total += k.len() + v.as_str().map(str::len).unwrap_or_default();
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE));
    }
    errs
}

fn owner_references(meta: &Value, path: &str) -> Vec<FieldError> {
    let refs = value::arr(meta, "ownerReferences");
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = s(r, "apiVersion");
        let version = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => *v,
            [_, v] => *v,
            _ => "",
        };
        if version.is_empty() {
            errs.push(FieldError::invalid(pc(path, "apiVersion"), quote(api_version), "version must not be empty"));
        }
        let kind = s(r, "kind");
        if kind.is_empty() {
            errs.push(FieldError::invalid(pc(path, "kind"), quote(kind), "must not be empty"));
        }
        let name = s(r, "name");
        if name.is_empty() {
            errs.push(FieldError::invalid(pc(path, "name"), quote(name), "must not be empty"));
        }
        let uid = s(r, "uid");
        if uid.is_empty() {
            errs.push(FieldError::invalid(pc(path, "uid"), quote(uid), "must not be empty"));
        }
        if api_version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid(
                path,
                owner_reference_repr(r),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if value::b(r, "controller") {
            let this = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    format!("[]v1.OwnerReference{{{}}}", refs.iter().map(owner_reference_repr).collect::<Vec<_>>().join(", ")),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"),
                )),
                None => first_controller = Some(this),
            }
        }
    }
    errs
}

/// `%#v` of an owner reference; Go prints pointer addresses for the two `*bool` fields, which
/// cannot be reproduced, so a fixed placeholder stands in for them.
fn owner_reference_repr(r: &Value) -> String {
    let ptr = |k: &str| if get(r, k).is_some() { "(*bool)(0xc000000000)" } else { "(*bool)(nil)" };
    format!(
        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
        quote(s(r, "apiVersion")),
        quote(s(r, "kind")),
        quote(s(r, "name")),
        quote(s(r, "uid")),
        ptr("controller"),
        ptr("blockOwnerDeletion")
    )
}

/// ValidateObjectMetaUpdate (with the core wrapper's finalizer-name rule). The resource version,
/// generation and timestamps are managed by the server and not checked here.
pub fn validate_object_meta_update(new: Option<&Value>, old: Option<&Value>, path: &str) -> Vec<FieldError> {
    let empty = Value::Null;
    let new = new.unwrap_or(&empty);
    let old = old.unwrap_or(&empty);
    let mut errs = Vec::new();
    if get(old, "deletionTimestamp").is_some() {
        let old_f = value::str_list(old, "finalizers");
        let mut extra: Vec<String> =
            value::str_list(new, "finalizers").into_iter().filter(|f| !old_f.contains(f)).collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(FieldError::forbidden(
                pc(path, "finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    render::str_slice("[]string", Some(&extra))
                ),
            ));
        }
    }
    for field in ["name", "namespace", "uid"] {
        let (n, o) = (s(new, field), s(old, field));
        // An omitted uid is filled in from the stored object before validation upstream.
        if field == "uid" && n.is_empty() {
            continue;
        }
        if n != o {
            errs.push(FieldError::invalid(pc(path, field), quote(n), "field is immutable"));
        }
    }
    errs.extend(common(new, path));
    errs.extend(kube_finalizer_names(&pc(path, "finalizers"), &value::str_list(new, "finalizers")));
    errs
}

/// `unversionedvalidation.ValidateLabelSelector` (label values validated strictly).
pub fn validate_label_selector(path: &str, sel: Option<&Value>) -> Vec<FieldError> {
    let Some(sel) = sel else { return Vec::new() };
    let mut errs = validate_labels(&pc(path, "matchLabels"), get(sel, "matchLabels"));
    for (i, expr) in value::arr(sel, "matchExpressions").iter().enumerate() {
        let epath = pi(&pc(path, "matchExpressions"), i);
        let op = s(expr, "operator");
        let values = value::str_list(expr, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        pc(&epath, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        pc(&epath, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(pc(&epath, "operator"), quote(op), "not a valid selector operator")),
        }
        let key = s(expr, "key");
        errs.extend(names::qualified_name_errors(&pc(&epath, "key"), key));
        for (vi, v) in values.iter().enumerate() {
            errs.extend(
                names::label_value(v)
                    .into_iter()
                    .map(|m| FieldError::invalid(pi(&pc(&epath, "values"), vi), quote(v), m)),
            );
        }
    }
    errs
}

/// What `metav1.LabelSelectorAsSelector` makes of a selector.
pub enum Selector<'a> {
    /// A nil selector selects nothing (and is not "empty").
    Nothing,
    /// An empty selector selects everything.
    Everything,
    /// Requirements that parsed.
    Match(&'a Value),
    /// The conversion failed (an invalid key, value or operator).
    Invalid,
}

/// LabelSelectorAsSelector.
pub fn as_selector(sel: Option<&Value>) -> Selector<'_> {
    let Some(sel) = sel else { return Selector::Nothing };
    let labels = value::str_pairs(sel, "matchLabels");
    let exprs = value::arr(sel, "matchExpressions");
    if labels.is_empty() && exprs.is_empty() {
        return Selector::Everything;
    }
    let bad_labels =
        labels.iter().any(|(k, v)| !names::qualified_name(k).is_empty() || !names::label_value(v).is_empty());
    let bad_exprs = exprs.iter().any(|e| {
        let values = value::str_list(e, "values");
        let op_ok = match s(e, "operator") {
            "In" | "NotIn" => !values.is_empty(),
            "Exists" | "DoesNotExist" => values.is_empty(),
            _ => false,
        };
        !op_ok
            || !names::qualified_name(s(e, "key")).is_empty()
            || values.iter().any(|v| !names::label_value(v).is_empty())
    });
    if bad_labels || bad_exprs { Selector::Invalid } else { Selector::Match(sel) }
}

/// Whether a parsed selector matches a label map.
pub fn matches(sel: &Value, labels: Option<&Value>) -> bool {
    let empty = Value::Null;
    let labels = labels.unwrap_or(&empty);
    let lookup = |k: &str| value::get(labels, k).and_then(Value::as_str);
    for (k, v) in value::str_pairs(sel, "matchLabels") {
        if lookup(k) != Some(v) {
            return false;
        }
    }
    for e in value::arr(sel, "matchExpressions") {
        let have = lookup(s(e, "key"));
        let values = value::str_list(e, "values");
        let ok = match s(e, "operator") {
            "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
            "NotIn" => have.is_none_or(|h| !values.iter().any(|v| v == h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}
