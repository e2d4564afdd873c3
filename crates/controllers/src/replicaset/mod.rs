//! The ReplicaSet controller, re-expressed from upstream's
//! `pkg/controller/replicaset/replica_set.go` and `replica_set_utils.go`.
//!
//! One reconcile of a ReplicaSet:
//! 1. **claims** pods ([`claim_pods`], `ClaimPods`): orphans of its namespace that match its
//!    selector are adopted (a controller ownerReference is added), owned pods that stopped
//!    matching are released; nothing is adopted by a ReplicaSet being deleted;
//! 2. **manages replicas** ([`manage_replicas`]): too few active pods → pods from the template,
//!    named by the server from `generateName: <rs>-` (at most 500 per sync, sent in slow-start
//!    batches by the driver); too many → deletes, preferring (upstream's `ActivePodsWithRanks`)
//!    unscheduled < scheduled, Pending < Unknown < Running, not ready < ready, lower
//!    `controller.kubernetes.io/pod-deletion-cost`, more pods of the same owner on the node,
//!    ready for less time, more restarts, newer — times compared on a log2 scale, ties by UID;
//! 3. **updates the status** ([`replica_set_status`]): replicas, fullyLabeledReplicas,
//!    readyReplicas, availableReplicas (ready for `minReadySeconds`), observedGeneration and the
//!    `ReplicaFailure` condition when creating or deleting failed.
//!
//! Everything here is pure; the driver applies the writes and reports a failed create or
//! delete back into step 3.

pub mod driver;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use pier_api::selector::LabelSelector;
use serde_json::{Value, json};

use crate::objects::{self, ObjectKey};
use crate::write::{Kind, Write};

/// Upstream's `BurstReplicas`: the most pods created or deleted in one sync.
pub const BURST_REPLICAS: usize = 500;
pub const ANNOTATION_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
const COMPONENT: &str = "replicaset-controller";

/// What one reconcile of a ReplicaSet looks at.
#[derive(Clone, Debug)]
pub struct ReplicaSetInputs<'a> {
    pub replica_set: &'a ReplicaSet,
    /// Pods of the ReplicaSet's namespace.
    pub pods: Vec<&'a Pod>,
    /// ReplicaSets of the namespace (for the colocation rank of sibling ReplicaSets of one
    /// Deployment).
    pub replica_sets: Vec<&'a ReplicaSet>,
    pub now: Timestamp,
}

/// A create or delete that failed, reported back into the status.
#[derive(Clone, Debug, PartialEq)]
pub struct ManageError {
    /// True for a failed create (`FailedCreate`), false for a failed delete.
    pub creating: bool,
    pub message: String,
}

pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// The ReplicaSet's selector; an invalid or absent one selects nothing.
pub fn selector(rs: &ReplicaSet) -> LabelSelector {
    LabelSelector::from_k8s_opt(rs.spec.as_ref().map(|s| &s.selector)).unwrap_or_else(|_| LabelSelector::nothing())
}

/// The outcome of `ClaimPods`.
#[derive(Debug, Default)]
pub struct Claim<'a> {
    /// Pods the ReplicaSet controls after the claim (owned and matching, plus adopted).
    pub owned: Vec<&'a Pod>,
    pub adopt: Vec<&'a Pod>,
    pub release: Vec<&'a Pod>,
}

/// `ClaimPods`: which pods the ReplicaSet keeps, adopts and releases.
pub fn claim_pods<'a>(rs: &ReplicaSet, pods: &[&'a Pod]) -> Claim<'a> {
    let sel = selector(rs);
    let deleting = objects::is_deleting(&rs.metadata);
    let ns = objects::namespace(&rs.metadata);
    let mut claim = Claim::default();
    let mut sorted: Vec<&'a Pod> = pods.iter().copied().filter(|p| objects::namespace(&p.metadata) == ns).collect();
    sorted.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));
    for pod in sorted {
        let matches = sel.matches(objects::labels(&pod.metadata));
        match objects::controller_of(&pod.metadata) {
            Some(r) if r.uid == objects::uid(&rs.metadata) => {
                if matches {
                    claim.owned.push(pod);
                } else if !deleting {
                    claim.release.push(pod);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && !objects::is_deleting(&pod.metadata) {
                    claim.owned.push(pod);
                    claim.adopt.push(pod);
                }
            }
        }
    }
    claim
}

fn rs_owner_ref(rs: &ReplicaSet) -> OwnerReference {
    objects::controller_ref("apps/v1", "ReplicaSet", &rs.metadata)
}

/// The merge patch that sets a pod's owner references to `refs`.
fn owner_patch(pod: &Pod, refs: Vec<OwnerReference>) -> Write {
    let refs: Value = if refs.is_empty() { Value::Null } else { objects::to_value(&refs) };
    Write::Patch {
        kind: Kind::Pod,
        namespace: objects::namespace(&pod.metadata).to_string(),
        name: objects::name(&pod.metadata).to_string(),
        patch: json!({"metadata": {"ownerReferences": refs, "uid": objects::uid(&pod.metadata)}}),
    }
}

/// Adoption: the pod's owner references plus this controller's.
pub fn adopt_write(owner: OwnerReference, pod: &Pod) -> Write {
    let mut refs: Vec<OwnerReference> = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    owner_patch(pod, refs)
}

/// Release: the pod's owner references without the one to `owner_uid`.
pub fn release_write(owner_uid: &str, pod: &Pod) -> Write {
    let mut refs: Vec<OwnerReference> = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    owner_patch(pod, refs)
}

/// `GetPodFromTemplate`: a pod of the template, owned by the ReplicaSet.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", objects::name(&rs.metadata))),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![rs_owner_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn rs_event(
    rs: &ReplicaSet,
    type_: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> k8s_openapi::api::core::v1::Event {
    let reference = objects::object_reference("apps/v1", "ReplicaSet", &rs.metadata);
    objects::event(&reference, type_, reason, message, COMPONENT, now)
}

/// `IsPodActive` pods among the claimed ones.
fn active<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter().copied().filter(|p| objects::pod_active(p)).collect()
}

/// The pods of every ReplicaSet sharing this one's controller (or just its own pods).
fn related_pods<'a>(inputs: &ReplicaSetInputs<'a>, own: &[&'a Pod]) -> Vec<&'a Pod> {
    let Some(controller) = objects::controller_of(&inputs.replica_set.metadata) else { return own.to_vec() };
    let siblings: Vec<&str> = inputs
        .replica_sets
        .iter()
        .filter(|rs| objects::controller_of(&rs.metadata).is_some_and(|c| c.uid == controller.uid))
        .map(|rs| objects::uid(&rs.metadata))
        .collect();
    let mut out: Vec<&Pod> = inputs
        .pods
        .iter()
        .copied()
        .filter(|p| objects::controller_of(&p.metadata).is_some_and(|c| siblings.contains(&c.uid.as_str())))
        .collect();
    for p in own {
        if !out.iter().any(|o| std::ptr::eq(*o, *p)) {
            out.push(p);
        }
    }
    out
}

fn phase_rank(pod: &Pod) -> u8 {
    match objects::pod_phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    objects::annotations(&pod.metadata).get(ANNOTATION_DELETION_COST).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn ready_time(pod: &Pod) -> Option<Timestamp> {
    objects::pod_ready_condition(pod).filter(|c| c.status == "True")?.last_transition_time.as_ref().map(|t| t.0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// `afterOrZero` on a log2 scale of the age at `now` (`LogarithmicScaleDown`): a zero time
/// first, then the newer (smaller age bucket), ties by UID. `Less` when `a` goes first.
fn time_order(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp, uids: (&str, &str)) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (Some(a), Some(b)) => {
            let rank = |t: Timestamp| {
                let d = now.as_nanosecond() - t.as_nanosecond();
                if d > 0 { (d as f64).log2() as i64 } else { -1 }
            };
            match rank(a).cmp(&rank(b)) {
                Ordering::Equal => uids.0.cmp(uids.1),
                other => other,
            }
        }
    }
}

/// `ActivePodsWithRanks.Less` as an ordering: pods to delete first come first.
pub fn deletion_order(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> Ordering {
    let (na, nb) = (objects::node_name(a), objects::node_name(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let by = phase_rank(a).cmp(&phase_rank(b));
    if by != Ordering::Equal {
        return by;
    }
    let (ra, rb) = (objects::pod_ready(a), objects::pod_ready(b));
    if ra != rb {
        return if !ra { Ordering::Less } else { Ordering::Greater };
    }
    let by = deletion_cost(a).cmp(&deletion_cost(b));
    if by != Ordering::Equal {
        return by;
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    let uids = (objects::uid(&a.metadata), objects::uid(&b.metadata));
    if ra && rb {
        let by = time_order(ready_time(a), ready_time(b), now, uids);
        if by != Ordering::Equal {
            return by;
        }
    }
    let by = max_restarts(b).cmp(&max_restarts(a));
    if by != Ordering::Equal {
        return by;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    time_order(created(a), created(b), now, uids)
}

/// `getPodsToDelete`: the `n` pods to delete first.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], n: usize, now: Timestamp) -> Vec<&'a Pod> {
    let mut on_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in related.iter().filter(|p| objects::pod_active(p)) {
        *on_node.entry(objects::node_name(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> =
        pods.iter().map(|p| (*p, on_node.get(objects::node_name(p)).copied().unwrap_or(0))).collect();
    if n < ranked.len() {
        ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb, now));
    }
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

/// Adoptions, releases, creates and deletes (`manageReplicas`), without the status.
pub fn manage_replicas(inputs: &ReplicaSetInputs<'_>) -> Vec<Write> {
    let rs = inputs.replica_set;
    let claim = claim_pods(rs, &inputs.pods);
    let mut writes: Vec<Write> = Vec::new();
    let owner = rs_owner_ref(rs);
    writes.extend(claim.adopt.iter().map(|p| adopt_write(owner.clone(), p)));
    writes.extend(claim.release.iter().map(|p| release_write(objects::uid(&rs.metadata), p)));
    if objects::is_deleting(&rs.metadata) {
        return writes;
    }
    let pods = active(&claim.owned);
    let want = usize::try_from(desired_replicas(rs).max(0)).unwrap_or(0);
    let ns = objects::namespace(&rs.metadata).to_string();
    if pods.len() < want {
        let n = (want - pods.len()).min(BURST_REPLICAS);
        let pod = objects::to_value(&pod_from_template(rs));
        let event = rs_event(rs, "Normal", "SuccessfulCreate", "Created pod: {name}", inputs.now);
        for _ in 0..n {
            writes.push(Write::Create {
                kind: Kind::Pod,
                namespace: ns.clone(),
                object: pod.clone(),
                created_event: Some(Box::new(objects::to_value(&event))),
            });
        }
    } else if pods.len() > want {
        let n = (pods.len() - want).min(BURST_REPLICAS);
        let related = related_pods(inputs, &pods);
        for p in pods_to_delete(&pods, &related, n, inputs.now) {
            writes.push(Write::Delete {
                kind: Kind::Pod,
                namespace: ns.clone(),
                name: objects::name(&p.metadata).to_string(),
                uid: p.metadata.uid.clone(),
            });
        }
    }
    writes
}

/// The Event recorded for a pod deletion.
pub fn deleted_event(rs: &ReplicaSet, pod_name: &str, now: Timestamp) -> Write {
    objects::event_write(&rs_event(rs, "Normal", "SuccessfulDelete", &format!("Deleted pod: {pod_name}"), now))
}

/// The Event recorded for a failed create or delete.
pub fn failed_event(rs: &ReplicaSet, err: &ManageError, now: Timestamp) -> Write {
    let (reason, verb) = if err.creating { ("FailedCreate", "creating") } else { ("FailedDelete", "deleting") };
    objects::event_write(&rs_event(rs, "Warning", reason, &format!("Error {verb}: {}", err.message), now))
}

/// `calculateStatus`.
pub fn calculate_status(inputs: &ReplicaSetInputs<'_>, manage_error: Option<&ManageError>) -> ReplicaSetStatus {
    let rs = inputs.replica_set;
    let claim = claim_pods(rs, &inputs.pods);
    let pods = active(&claim.owned);
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let template_selector = LabelSelector::from_map(&template_labels);
    let min_ready = min_ready_seconds(rs);
    let count = |f: &dyn Fn(&Pod) -> bool| i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX);
    let current = rs.status.clone().unwrap_or_default();
    let mut conditions = current.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some(err) if !has_failure => {
            let reason = if err.creating { "FailedCreate" } else { "FailedDelete" };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(err.message.clone()),
                last_transition_time: Some(objects::time(inputs.now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| template_selector.matches(objects::labels(&p.metadata)))),
        ready_replicas: Some(count(&|p| objects::pod_ready(p))),
        available_replicas: Some(count(&|p| objects::pod_available(p, min_ready, inputs.now))),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: current.terminating_replicas,
    }
}

/// The status write, when the status changed (`updateReplicaSetStatus`).
pub fn replica_set_status(inputs: &ReplicaSetInputs<'_>, manage_error: Option<&ManageError>) -> Option<Write> {
    let rs = inputs.replica_set;
    let status = calculate_status(inputs, manage_error);
    let current = rs.status.clone().unwrap_or_default();
    let unchanged = current.replicas == status.replicas
        && current.fully_labeled_replicas.unwrap_or(0) == status.fully_labeled_replicas.unwrap_or(0)
        && current.ready_replicas.unwrap_or(0) == status.ready_replicas.unwrap_or(0)
        && current.available_replicas.unwrap_or(0) == status.available_replicas.unwrap_or(0)
        && current.observed_generation == rs.metadata.generation
        && objects::semantic_eq(&current.conditions, &status.conditions);
    if unchanged {
        return None;
    }
    let mut updated = rs.clone();
    updated.metadata.managed_fields = None;
    updated.status = Some(status);
    Some(Write::ReplaceStatus {
        kind: Kind::ReplicaSet,
        namespace: objects::namespace(&rs.metadata).to_string(),
        name: objects::name(&rs.metadata).to_string(),
        object: objects::to_value(&updated),
    })
}

/// One full reconcile assuming every write succeeds: claims, creates or deletes, status.
pub fn reconcile_replica_set(inputs: &ReplicaSetInputs<'_>) -> Vec<Write> {
    let mut writes = manage_replicas(inputs);
    writes.extend(replica_set_status(inputs, None));
    writes
}

/// When to look again for pods becoming available after `minReadySeconds`.
pub fn requeue_after(inputs: &ReplicaSetInputs<'_>) -> Option<Duration> {
    let rs = inputs.replica_set;
    let claim = claim_pods(rs, &inputs.pods);
    active(&claim.owned)
        .iter()
        .filter_map(|p| objects::pod_available_at(p, min_ready_seconds(rs), inputs.now))
        .min()
        .map(|t| Duration::from_secs(u64::try_from(t.as_second() - inputs.now.as_second()).unwrap_or(0).max(1)))
}

/// The ReplicaSet keys a pod change concerns: its controller (old and new), or for an orphan
/// every ReplicaSet of its namespace whose selector matches it (a candidate adopter).
pub fn replica_sets_for_pod<'a>(
    replica_sets: impl Iterator<Item = &'a ReplicaSet>,
    pods: &[Option<&Pod>],
) -> Vec<ObjectKey> {
    let all: Vec<&ReplicaSet> = replica_sets.collect();
    let mut out = Vec::new();
    for pod in pods.iter().flatten() {
        let ns = objects::namespace(&pod.metadata);
        match objects::controller_of(&pod.metadata) {
            Some(r) if r.kind == "ReplicaSet" => {
                if let Some(rs) = all.iter().find(|rs| objects::uid(&rs.metadata) == r.uid) {
                    out.push(ObjectKey::of(&rs.metadata));
                }
            }
            Some(_) => {}
            None => out.extend(
                all.iter()
                    .filter(|rs| {
                        objects::namespace(&rs.metadata) == ns && selector(rs).matches(objects::labels(&pod.metadata))
                    })
                    .map(|rs| ObjectKey::of(&rs.metadata)),
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}
