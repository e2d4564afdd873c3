//! Deployment arithmetic and bookkeeping from upstream's `pkg/controller/deployment/util`:
//! surge and unavailability fenceposts, revisions and the replica annotations, the orderings
//! of ReplicaSets, proportions for scaling during a rollout, conditions.

use std::cmp::Ordering;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects;

pub const ANNOTATION_REVISION: &str = "deployment.kubernetes.io/revision";
pub const ANNOTATION_REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const ANNOTATION_DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const ANNOTATION_MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const ANNOTATION_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// `maxRevHistoryLengthInChars`.
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
pub const REASON_NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";
pub const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    if let Some(spec) = rs.spec.as_mut() {
        spec.replicas = Some(n);
    }
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

pub fn strategy_type(d: &Deployment) -> &str {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
}

pub fn is_rolling(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

pub fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
}

pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.revision_history_limit).filter(|s| *s != i32::MAX)
}

pub fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// `intstr.GetScaledValueFromIntOrPercent`: a number, or a percentage of `total` rounded up
/// or down. Anything else (rejected by validation) counts as zero.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else { return 0 };
            let exact = p as f64 * f64::from(total) / 100.0;
            let v = if round_up { exact.ceil() } else { exact.floor() };
            v as i32
        }
    }
}

/// `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down), never both zero.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let desired = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let mut unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// `MaxSurge`.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) { 0 } else { fenceposts(d).0 }
}

/// `MaxUnavailable`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// `Revision`: the revision annotation, 0 when absent, `None` when unparsable.
pub fn revision(rs: &ReplicaSet) -> Option<i64> {
    match objects::annotations(&rs.metadata).get(ANNOTATION_REVISION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

pub fn max_revision<'a>(rss: impl Iterator<Item = &'a ReplicaSet>) -> i64 {
    rss.filter_map(revision).max().unwrap_or(0).max(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    objects::annotations(&rs.metadata).get(key)?.parse().ok()
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, ANNOTATION_DESIRED_REPLICAS)
}

/// `SetReplicasAnnotations`; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(ANNOTATION_DESIRED_REPLICAS, desired), (ANNOTATION_MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = objects::annotations(&rs.metadata);
    a.get(ANNOTATION_DESIRED_REPLICAS) != Some(&desired.to_string())
        || a.get(ANNOTATION_MAX_REPLICAS) != Some(&max.to_string())
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        ANNOTATION_LAST_APPLIED
            | ANNOTATION_REVISION
            | ANNOTATION_REVISION_HISTORY
            | ANNOTATION_DESIRED_REPLICAS
            | ANNOTATION_MAX_REPLICAS
            | ANNOTATION_ROLLBACK_TO
    )
}

/// `SetNewReplicaSetAnnotations`: the Deployment's annotations (but its own bookkeeping), the
/// revision (keeping a history when an old revision is reused) and, for a ReplicaSet about to
/// be created, the replica annotations. Whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in objects::annotations(&d.metadata) {
        if skip_copy(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(ANNOTATION_REVISION).cloned();
    let old_n = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_n < new_revision {
        annotations.insert(ANNOTATION_REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations.get(ANNOTATION_REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                annotations.insert(ANNOTATION_REVISION_HISTORY.into(), old);
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    annotations.insert(ANNOTATION_REVISION_HISTORY.into(), parts.join(","));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// `SetDeploymentRevision`; whether it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let a = d.metadata.annotations.get_or_insert_with(Default::default);
    if a.get(ANNOTATION_REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    a.insert(ANNOTATION_REVISION.into(), revision.to_string());
    true
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// `ReplicaSetsByCreationTimestamp`: older first, ties by name. A ReplicaSet created in this
/// pass has no timestamp yet and counts as the newest.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let key = |rs: &ReplicaSet| created(rs).map_or((1, 0), |t| (0, t.as_nanosecond()));
    key(a).cmp(&key(b)).then_with(|| objects::name(&a.metadata).cmp(objects::name(&b.metadata)))
}

/// `ReplicaSetsBySizeNewer`: larger first, ties newer first.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a))
}

/// `ReplicaSetsBySizeOlder`: larger first, ties older first.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b))
}

/// `ReplicaSetsByRevision`: lower revision first, ties by creation.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let r = |rs: &ReplicaSet| revision(rs).unwrap_or(0);
    r(a).cmp(&r(b)).then_with(|| by_creation(a, b))
}

/// `getReplicaSetFraction`.
fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = annotation_i32(rs, ANNOTATION_MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

/// `GetProportion`.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

pub fn condition<'s>(status: &'s DeploymentStatus, type_: &str) -> Option<&'s DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_)
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(objects::time(now)),
        last_transition_time: Some(objects::time(now)),
    }
}

/// `SetDeploymentCondition`: no change for the same status and reason; the transition time
/// kept when only the reason changes.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            status.conditions = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(Some(&pct("25%")), 3, true), 1);
        assert_eq!(scaled_value(Some(&pct("25%")), 3, false), 0);
        assert_eq!(scaled_value(Some(&pct("25%")), 4, true), 1);
        assert_eq!(scaled_value(Some(&pct("25%")), 10, true), 3);
        assert_eq!(scaled_value(Some(&pct("25%")), 10, false), 2);
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 10, false), 2);
        assert_eq!(scaled_value(Some(&pct("bogus")), 10, false), 0);
    }
}
