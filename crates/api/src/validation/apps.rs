//! apps/v1 Deployments and ReplicaSets: `SetDefaults_Deployment` / `SetDefaults_ReplicaSet`,
//! `ValidateDeploymentSpec` / `ValidateReplicaSetSpec`, the apps/v1 strategies' selector
//! immutability, and the status checks.

use serde_json::{Value, json};

use super::meta::{self, Selector};
use super::names::{self, NameKind};
use super::pod;
use super::render::{self, quote};
use super::value::{self, get, s};
use super::{FieldError, pc};

// ---------------------------------------------------------------------------------------------
// Defaults

/// SetDefaults_Deployment and the template's pod defaults.
pub fn apply_deployment_defaults(obj: &mut Value) {
    let Some(spec) = value::ensure_obj(obj, "spec") else { return };
    if value::missing(spec, "replicas") {
        spec.insert("replicas".into(), json!(1));
    }
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if strategy.is_null() {
        *strategy = json!({});
    }
    if let Some(strategy) = strategy.as_object_mut() {
        if value::empty_str(strategy, "type") {
            strategy.insert("type".into(), json!("RollingUpdate"));
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if ru.is_null() {
                *ru = json!({});
            }
            if let Some(ru) = ru.as_object_mut() {
                for field in ["maxUnavailable", "maxSurge"] {
                    if value::missing(ru, field) {
                        ru.insert(field.into(), json!("25%"));
                    }
                }
            }
        }
    }
    if value::missing(spec, "revisionHistoryLimit") {
        spec.insert("revisionHistoryLimit".into(), json!(10));
    }
    if value::missing(spec, "progressDeadlineSeconds") {
        spec.insert("progressDeadlineSeconds".into(), json!(600));
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let template = spec.entry("template").or_insert_with(|| json!({}));
        if template.is_null() {
            *template = json!({});
        }
        pod::apply_template_defaults(template);
    }
}

/// SetDefaults_ReplicaSet and the template's pod defaults.
pub fn apply_replica_set_defaults(obj: &mut Value) {
    let Some(spec) = value::ensure_obj(obj, "spec") else { return };
    if value::missing(spec, "replicas") {
        spec.insert("replicas".into(), json!(1));
    }
    // The template is a struct, not a pointer, upstream: it is defaulted even when absent.
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let template = spec.entry("template").or_insert_with(|| json!({}));
        if template.is_null() {
            *template = json!({});
        }
        pod::apply_template_defaults(template);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn spec(obj: &Value) -> &Value {
    static NULL: Value = Value::Null;
    get(obj, "spec").unwrap_or(&NULL)
}

fn nonneg(path: &str, v: i64) -> Vec<FieldError> {
    if v < 0 {
        vec![FieldError::invalid(path, v.to_string(), "must be greater than or equal to 0")]
    } else {
        Vec::new()
    }
}

/// The selector checks shared by Deployments and ReplicaSets: required, valid, non-empty.
fn selector_errors(sel: Option<&Value>) -> Vec<FieldError> {
    match sel {
        None => vec![FieldError::required("spec.selector", "")],
        Some(sel) => {
            let mut errs = meta::validate_label_selector("spec.selector", Some(sel));
            if value::str_pairs(sel, "matchLabels").is_empty() && value::arr(sel, "matchExpressions").is_empty() {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    render::label_selector(Some(sel)),
                    "empty selector is invalid for deployment",
                ));
            }
            errs
        }
    }
}

/// The selector conversion and ValidatePodTemplateSpecForReplicaSet (used by Deployments too,
/// hence the ReplicaSet wording). The template is a struct upstream, never absent.
fn template_errors(sel: Option<&Value>, template: &Value) -> Vec<FieldError> {
    let selector = meta::as_selector(sel);
    if let Selector::Invalid = selector {
        return vec![FieldError::invalid("spec.selector", render::label_selector(sel), "invalid label selector")];
    }
    let labels = value::at(template, &["metadata", "labels"]);
    let mut errs = Vec::new();
    let matches = match selector {
        Selector::Everything => true,
        Selector::Nothing | Selector::Invalid => false,
        Selector::Match(sel) => meta::matches(sel, labels),
    };
    // An empty selector is "everything" and skips the check; a nil one matches nothing.
    if !matches {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            render::str_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(pod::validate_pod_template_spec(template, "spec.template"));
    let tspec = get(template, "spec").unwrap_or(&Value::Null);
    let restart = s(tspec, "restartPolicy");
    if restart != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", quote(restart), &["Always"]));
    }
    if get(tspec, "activeDeadlineSeconds").is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

/// ValidateDeployment.
pub fn validate_deployment(obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(get(obj, "metadata"), true, NameKind::Subdomain, "metadata");
    errs.extend(deployment_spec(obj));
    errs
}

/// ValidateDeploymentSpec.
fn deployment_spec(obj: &Value) -> Vec<FieldError> {
    let sp = spec(obj);
    let mut errs = nonneg("spec.replicas", value::i(sp, "replicas"));
    let sel = get(sp, "selector");
    errs.extend(selector_errors(sel));
    errs.extend(template_errors(sel, get(sp, "template").unwrap_or(&Value::Null)));
    errs.extend(strategy_errors(get(sp, "strategy")));
    let min_ready = value::i(sp, "minReadySeconds");
    errs.extend(nonneg("spec.minReadySeconds", min_ready));
    if let Some(rhl) = value::opt_i(sp, "revisionHistoryLimit") {
        errs.extend(nonneg("spec.revisionHistoryLimit", rhl));
    }
    if let Some(pds) = value::opt_i(sp, "progressDeadlineSeconds") {
        errs.extend(nonneg("spec.progressDeadlineSeconds", pds));
        if pds <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pds.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// ValidateDeploymentStrategy.
fn strategy_errors(strategy: Option<&Value>) -> Vec<FieldError> {
    let null = Value::Null;
    let strategy = strategy.unwrap_or(&null);
    let rolling = get(strategy, "rollingUpdate");
    match s(strategy, "type") {
        "Recreate" => {
            if rolling.is_some() {
                return vec![FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )];
            }
            Vec::new()
        }
        "RollingUpdate" => match rolling {
            None => {
                vec![FieldError::required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")]
            }
            Some(ru) => rolling_update_errors(ru),
        },
        other => {
            let ru = if rolling.is_some() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            vec![FieldError::not_supported(
                "spec.strategy",
                format!("apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru}}}", quote(other)),
                &["Recreate", "RollingUpdate"],
            )]
        }
    }
}

/// The value of an int-or-percent (`getIntOrPercentValue`): the number, or the percentage.
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_default(),
        Some(Value::String(p)) => p.strip_suffix('%').and_then(|d| d.parse().ok()).unwrap_or_default(),
        _ => 0,
    }
}

/// ValidateRollingUpdateDeployment.
fn rolling_update_errors(ru: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let unavailable = get(ru, "maxUnavailable");
    let surge = get(ru, "maxSurge");
    for (field, v) in [("maxUnavailable", unavailable), ("maxSurge", surge)] {
        let path = format!("spec.strategy.rollingUpdate.{field}");
        match v {
            Some(Value::String(p)) => {
                errs.extend(
                    names::percent(p).into_iter().map(|m| FieldError::invalid(&path, render::int_or_string(v), m)),
                );
            }
            _ => errs.extend(nonneg(&path, int_or_percent_value(v))),
        }
    }
    if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
        errs.push(FieldError::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            render::int_or_string(unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if let Some(Value::String(p)) = unavailable
        && names::percent(p).is_empty()
        && int_or_percent_value(unavailable) > 100
    {
        errs.push(FieldError::invalid(
            "spec.strategy.rollingUpdate.maxUnavailable",
            render::int_or_string(unavailable),
            "must not be greater than 100%",
        ));
    }
    errs
}

/// Selector immutability of the apps/v1 strategies.
fn selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (get(spec(new), "selector"), get(spec(old), "selector"));
    if value::sem_eq(n, o) {
        Vec::new()
    } else {
        vec![FieldError::invalid("spec.selector", render::label_selector(n), "field is immutable")]
    }
}

/// ValidateDeploymentUpdate plus the strategy's selector immutability.
pub fn validate_deployment_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    errs.extend(deployment_spec(new));
    errs.extend(selector_immutable(new, old));
    errs
}

/// ValidateReplicaSet.
pub fn validate_replica_set(obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(get(obj, "metadata"), true, NameKind::Subdomain, "metadata");
    errs.extend(replica_set_spec(obj));
    errs
}

/// ValidateReplicaSetSpec.
fn replica_set_spec(obj: &Value) -> Vec<FieldError> {
    let sp = spec(obj);
    let mut errs = nonneg("spec.replicas", value::i(sp, "replicas"));
    errs.extend(nonneg("spec.minReadySeconds", value::i(sp, "minReadySeconds")));
    let sel = get(sp, "selector");
    errs.extend(selector_errors(sel));
    errs.extend(template_errors(sel, get(sp, "template").unwrap_or(&Value::Null)));
    errs
}

/// ValidateReplicaSetUpdate plus the strategy's selector immutability.
pub fn validate_replica_set_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    errs.extend(replica_set_spec(new));
    errs.extend(selector_immutable(new, old));
    errs
}

/// The replica counters of a status must be non-negative and consistent.
fn status_counts(status: &Value, fields: &[&str], labeled: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in fields {
        errs.extend(nonneg(&pc("status", f), value::i(status, f)));
    }
    let replicas = value::i(status, "replicas");
    let ready = value::i(status, "readyReplicas");
    let available = value::i(status, "availableReplicas");
    let msg = "cannot be greater than status.replicas";
    for f in [labeled, "readyReplicas", "availableReplicas"] {
        let v = value::i(status, f);
        if v > replicas {
            errs.push(FieldError::invalid(pc("status", f), v.to_string(), msg));
        }
    }
    if available > ready {
        errs.push(FieldError::invalid(
            "status.availableReplicas",
            available.to_string(),
            "cannot be greater than readyReplicas",
        ));
    }
    errs
}

fn collision_count(new: &Value, old: &Value) -> Vec<FieldError> {
    let n = value::at(new, &["status", "collisionCount"]).and_then(Value::as_i64);
    let o = value::at(old, &["status", "collisionCount"]).and_then(Value::as_i64);
    let mut errs = Vec::new();
    if let Some(c) = n {
        errs.extend(nonneg("status.collisionCount", c));
    }
    let decremented = match (n, o) {
        (None, Some(_)) => true,
        (Some(n), Some(o)) => n < o,
        _ => false,
    };
    if decremented {
        errs.push(FieldError::invalid(
            "status.collisionCount",
            n.unwrap_or_default().to_string(),
            "cannot be decremented",
        ));
    }
    errs
}

/// ValidateDeploymentStatusUpdate.
pub fn validate_deployment_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let null = Value::Null;
    let status = get(new, "status").unwrap_or(&null);
    errs.extend(status_counts(
        status,
        &[
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ],
        "updatedReplicas",
    ));
    errs.extend(collision_count(new, old));
    errs
}

/// ValidateReplicaSetStatusUpdate.
pub fn validate_replica_set_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    let null = Value::Null;
    let status = get(new, "status").unwrap_or(&null);
    errs.extend(status_counts(
        status,
        &["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"],
        "fullyLabeledReplicas",
    ));
    errs
}
