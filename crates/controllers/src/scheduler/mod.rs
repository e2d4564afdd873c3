//! A minimal scheduler: binds pending pods (no `spec.nodeName`, `schedulerName:
//! default-scheduler`) to a node that fits, re-expressing the filters of upstream's default
//! profile that apply without resource accounting, in upstream's order and with its messages:
//!
//! 1. `NodeUnschedulable`: `spec.unschedulable` nodes, unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule` — "node(s) were unschedulable";
//! 2. `TaintToleration`: `NoSchedule` / `NoExecute` taints the pod does not tolerate — "node(s)
//!    had untolerated taint {key: value}". A node whose Ready condition is not True counts as
//!    tainted `node.kubernetes.io/not-ready:NoSchedule` (upstream's node lifecycle controller
//!    adds that taint; pier has none);
//! 3. `NodeAffinity`: `spec.nodeSelector` and required node affinity — "node(s) didn't match
//!    Pod's node affinity/selector".
//!
//! Among fitting nodes it picks the one running the fewest active pods (ties by name) — not
//! upstream's scoring. With none, the pod gets `PodScheduled=False`, reason `Unschedulable`,
//! and a Warning `FailedScheduling` event with upstream's message shape (`0/1 nodes are
//! available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are
//! available: 1 Preemption is not helpful for scheduling.`); it is retried when nodes change.
//!
//! Binding uses `pods/binding` when the server has it, else a merge patch of `spec.nodeName`
//! ([`crate::write::Write::Bind`]).

pub mod driver;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodCondition, Taint, Toleration,
};

use crate::objects;
use crate::write::{Kind, Write};

pub const SCHEDULER_NAME: &str = "default-scheduler";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Whether this scheduler should place the pod.
pub fn needs_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    objects::node_name(pod).is_empty()
        && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && !objects::is_deleting(&pod.metadata)
        && !objects::pod_terminal(pod)
        && spec.and_then(|s| s.scheduling_gates.as_ref()).is_none_or(|g| g.is_empty())
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty()) || t.key.as_deref() == Some(taint.key.as_str());
        let value_ok = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => true,
            _ => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        };
        // An empty key with Exists tolerates everything.
        effect_ok && key_ok && value_ok
    })
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = objects::labels(&node.metadata);
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref()))
}

/// `NodeAffinity` filter: `nodeSelector` labels and required node affinity terms (ORed).
fn affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    let labels = objects::labels(&node.metadata);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Why a node does not fit the pod (the first failing filter), or `None` if it fits.
pub fn filter(pod: &Pod, node: &Node) -> Option<String> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    if unschedulable {
        let taint = Taint { key: TAINT_UNSCHEDULABLE.into(), effect: "NoSchedule".into(), ..Taint::default() };
        if !tolerates(&tolerations, &taint) {
            return Some("node(s) were unschedulable".into());
        }
    }
    let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if !node_ready(node) && !taints.iter().any(|t| t.key == TAINT_NOT_READY) {
        taints.push(Taint { key: TAINT_NOT_READY.into(), effect: "NoSchedule".into(), ..Taint::default() });
    }
    for t in taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute") {
        if !tolerates(&tolerations, t) {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ));
        }
    }
    if !affinity_matches(pod, node) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    None
}

/// Upstream's `FitError` message for a pod no node fits.
pub fn fit_error(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut histogram: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    histogram.sort();
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
        histogram.join(", ")
    )
}

/// The node the pod goes to, or the reason it cannot go anywhere.
pub fn choose_node(pod: &Pod, nodes: &[&Node], pods: &[&Pod]) -> Result<String, String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pods.iter().filter(|p| objects::pod_active(p) && !objects::node_name(p).is_empty()) {
        *counts.entry(objects::node_name(p)).or_default() += 1;
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, &str)> = None;
    for node in nodes {
        match filter(pod, node) {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => {
                let name = objects::name(&node.metadata);
                let candidate = (counts.get(name).copied().unwrap_or(0), name);
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
    }
    best.map(|(_, n)| n.to_string()).ok_or_else(|| fit_error(nodes.len(), &reasons))
}

fn scheduled_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")
}

fn pod_event(pod: &Pod, type_: &str, reason: &str, message: &str, now: Timestamp) -> Write {
    let reference = objects::object_reference("v1", "Pod", &pod.metadata);
    objects::event_write(&objects::event(&reference, type_, reason, message, SCHEDULER_NAME, now))
}

/// The writes that schedule one pod: a bind and a `Scheduled` event, or the `Unschedulable`
/// condition and a `FailedScheduling` event (only when the message changes, so retries do not
/// pile up events).
pub fn schedule(pod: &Pod, nodes: &[&Node], pods: &[&Pod], now: Timestamp) -> Vec<Write> {
    if !needs_scheduling(pod) {
        return Vec::new();
    }
    let ns = objects::namespace(&pod.metadata).to_string();
    let name = objects::name(&pod.metadata).to_string();
    match choose_node(pod, nodes, pods) {
        Ok(node) => vec![
            Write::Bind {
                namespace: ns.clone(),
                name: name.clone(),
                uid: pod.metadata.uid.clone(),
                node: node.clone(),
            },
            pod_event(pod, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{name} to {node}"), now),
        ],
        Err(message) => unschedulable(pod, &message, now),
    }
}

/// `PodScheduled=False/Unschedulable` with `message`, and the `FailedScheduling` event.
pub fn unschedulable(pod: &Pod, message: &str, now: Timestamp) -> Vec<Write> {
    let current = scheduled_condition(pod);
    let same = current.is_some_and(|c| {
        c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(message)
    });
    if same {
        return Vec::new();
    }
    let mut updated = pod.clone();
    updated.metadata.managed_fields = None;
    let status = updated.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let transition = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone(),
        _ => Some(objects::time(now)),
    };
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_transition_time: transition,
        last_probe_time: None,
        observed_generation: None,
    });
    vec![
        Write::ReplaceStatus {
            kind: Kind::Pod,
            namespace: objects::namespace(&pod.metadata).to_string(),
            name: objects::name(&pod.metadata).to_string(),
            object: objects::to_value(&updated),
        },
        pod_event(pod, "Warning", "FailedScheduling", message, now),
    ]
}

/// After a bind that went through a patch: the `PodScheduled=True` condition the binding
/// subresource would have set.
pub fn scheduled(pod: &Pod, now: Timestamp) -> Option<Write> {
    if scheduled_condition(pod).is_some_and(|c| c.status == "True") {
        return None;
    }
    let mut updated = pod.clone();
    updated.metadata.managed_fields = None;
    let conditions = updated.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "True".into(),
        last_transition_time: Some(objects::time(now)),
        ..PodCondition::default()
    });
    Some(Write::ReplaceStatus {
        kind: Kind::Pod,
        namespace: objects::namespace(&pod.metadata).to_string(),
        name: objects::name(&pod.metadata).to_string(),
        object: objects::to_value(&updated),
    })
}
