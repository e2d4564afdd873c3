//! Small, pure helpers over `k8s-openapi` objects that several controllers share: pod
//! readiness and availability (upstream's `pkg/api/v1/pod`), named-port lookup (`FindPort`),
//! owner references (`metav1.NewControllerRef`, `GetControllerOf`), semantic equality
//! (`apiequality.Semantic.DeepEqual`: null, empty lists and empty maps are equal) and Events.
//!
//! Nothing here does IO or reads the clock: the current time is an argument.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, PodCondition, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::Value;

use crate::write::{Kind, Write};

/// A namespaced object's identity in a work queue: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    pub fn of(meta: &ObjectMeta) -> ObjectKey {
        ObjectKey::new(namespace(meta), name(meta))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

static EMPTY_LABELS: BTreeMap<String, String> = BTreeMap::new();

pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

pub fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

pub fn labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&EMPTY_LABELS)
}

pub fn annotations(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.annotations.as_ref().unwrap_or(&EMPTY_LABELS)
}

pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// `now` truncated to whole seconds: what survives a round trip through `metav1.Time`.
pub fn whole_seconds(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

pub fn time(now: Timestamp) -> Time {
    Time(whole_seconds(now))
}

/// RFC 3339 with upstream's `RFC3339Nano` shape (no fractional part for whole seconds).
pub fn rfc3339(t: Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.fZ", t).unwrap_or_else(|_| t.to_string())
}

// ---------------------------------------------------------------------------------------------
// Pods

pub fn pod_ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// `IsPodReady`: the Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_condition(pod).is_some_and(|c| c.status == "True")
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// `IsPodTerminal`: Succeeded or Failed.
pub fn pod_terminal(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// `IsPodActive`: not terminal and not being deleted.
pub fn pod_active(pod: &Pod) -> bool {
    !pod_terminal(pod) && !is_deleting(&pod.metadata)
}

/// `IsPodAvailable`: Ready for at least `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    let Some(c) = pod_ready_condition(pod).filter(|c| c.status == "True") else { return false };
    if min_ready_seconds <= 0 {
        return true;
    }
    match &c.last_transition_time {
        Some(t) => t.0.as_second() + i64::from(min_ready_seconds) < now.as_second(),
        None => false,
    }
}

/// When a ready pod becomes available (for a requeue), if it is not available yet.
pub fn pod_available_at(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    if min_ready_seconds <= 0 || !pod_ready(pod) || pod_available(pod, min_ready_seconds, now) {
        return None;
    }
    let t = pod_ready_condition(pod)?.last_transition_time.as_ref()?;
    Timestamp::from_second(t.0.as_second() + i64::from(min_ready_seconds) + 1).ok()
}

pub fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default()
}

/// The pod's IPs, normalised (`status.podIPs`, or `status.podIP` when the list is empty);
/// unparsable strings are dropped.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let listed: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
    let raw = if listed.is_empty() { status.pod_ip.iter().map(String::as_str).collect() } else { listed };
    raw.into_iter().filter_map(parse_ip).collect()
}

/// `netutils.ParseIPSloppy`: also accepts IPv4 octets with leading zeros.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let octets: Vec<u8> = s.split('.').map(|o| o.parse::<u8>().ok()).collect::<Option<_>>()?;
    let a: [u8; 4] = octets.try_into().ok()?;
    Some(IpAddr::from(a))
}

/// `FindPort`: the container port a Service port targets on this pod. An integer targetPort
/// is used as is; a name is looked up in the regular containers, then in restartable init
/// (sidecar) containers, matching the protocol.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let regular = spec.containers.iter();
            let sidecars =
                spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
            regular.chain(sidecars).flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Owner references

/// `metav1.NewControllerRef`.
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: name(meta).to_string(),
        uid: uid(meta).to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `metav1.GetControllerOf`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// `metav1.IsControlledBy`.
pub fn controlled_by(meta: &ObjectMeta, owner: &ObjectMeta) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid(owner))
}

// ---------------------------------------------------------------------------------------------
// Equality

/// `apiequality.Semantic.DeepEqual` on the JSON forms: nulls, empty lists and empty maps are the
/// same as absent fields.
pub fn semantic_eq<A: Serialize, B: Serialize>(a: &A, b: &B) -> bool {
    normalized(&to_value(a)) == normalized(&to_value(b))
}

/// Serialises a `k8s-openapi` object (cannot fail for them; a failure gives `null`).
pub fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The JSON value with nulls, empty lists and empty maps removed, recursively.
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, v)| {
                    let v = normalized(v);
                    (!is_empty(&v)).then(|| (k.clone(), v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// An `ObjectReference` to a namespaced object for an Event's `involvedObject`.
pub fn object_reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// A core/v1 Event as upstream's recorder makes it: named `<object>.<hex nanoseconds>`, count
/// 1, `source.component` the controller.
pub fn event(
    involved: &ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
    now: Timestamp,
) -> Event {
    let object_name = involved.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
            namespace: Some(involved.namespace.clone().unwrap_or_else(|| "default".into())),
            ..ObjectMeta::default()
        },
        involved_object: involved.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        source: Some(EventSource { component: Some(component.to_string()), host: None }),
        first_timestamp: Some(time(now)),
        last_timestamp: Some(time(now)),
        count: Some(1),
        type_: Some(type_.to_string()),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(String::new()),
        ..Event::default()
    }
}

/// The write that records `event`.
pub fn event_write(event: &Event) -> Write {
    Write::Create {
        kind: Kind::Event,
        namespace: event.metadata.namespace.clone().unwrap_or_default(),
        object: to_value(event),
        created_event: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn semantic_equality_ignores_empty_collections() {
        assert!(semantic_eq(&json!({"a": [], "b": {}, "c": null, "d": 1}), &json!({"d": 1})));
        assert!(!semantic_eq(&json!({"d": 1}), &json!({"d": 2})));
        assert!(!semantic_eq(&json!({"a": [1]}), &json!({})));
    }

    #[test]
    fn sloppy_ip_parsing() {
        assert_eq!(parse_ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap_or_else(|_| unreachable!())));
        assert_eq!(parse_ip("010.000.000.001").map(|ip| ip.to_string()), Some("10.0.0.1".to_string()));
        assert_eq!(parse_ip("fd00::01").map(|ip| ip.to_string()), Some("fd00::1".to_string()));
        assert_eq!(parse_ip("nonsense"), None);
    }

    #[test]
    fn rfc3339_has_no_fraction_for_whole_seconds() {
        let t = Timestamp::from_second(1_700_000_000).unwrap_or_else(|_| unreachable!());
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
