//! The EndpointSlice controller, re-expressed from upstream's `pkg/controller/endpointslice`
//! and `staging/src/k8s.io/endpointslice` (`reconciler.go`, `utils.go`): for every Service with
//! a selector, the pods it selects become endpoints in slices of at most
//! `max_endpoints_per_slice`, one group of slices per address type and distinct port list.
//!
//! [`reconcile_endpoint_slices`] is pure: the Service, the pods of its namespace, the nodes and
//! the slices this controller manages for it in, writes out. Like upstream it keeps churn low:
//! endpoints are matched to existing slices by address, hostname and pod; a slice is written
//! only when one of its endpoints, its port list or its copied labels changed; new endpoints
//! fill the slices already being updated, then the unchanged slice closest to full, then new
//! slices; a slice that would be deleted while another is created is reused instead. Where
//! upstream picks at random (set iteration), this picks in sorted order so the output is
//! deterministic.
//!
//! Selector-less Services are the mirroring controller's ([`mirroring`]).

pub mod driver;
pub mod mirroring;
pub mod mirroring_driver;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use pier_api::selector::LabelSelector;

use crate::objects::{self, ObjectKey};
use crate::write::{Kind, Write};

pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What one reconcile of a Service's slices looks at.
#[derive(Clone, Debug)]
pub struct SliceInputs<'a> {
    pub service: &'a Service,
    /// Pods of the Service's namespace (the selector is applied here).
    pub pods: Vec<&'a Pod>,
    pub nodes: Vec<&'a Node>,
    /// The slices labelled `kubernetes.io/service-name=<svc>` and managed by this controller.
    pub slices: Vec<&'a EndpointSlice>,
    pub max_endpoints_per_slice: usize,
    pub now: Timestamp,
}

/// The selector of a Service the controllers act on: `None` for selector-less and
/// ExternalName Services (the user's, or nobody's).
pub fn service_selector(svc: &Service) -> Option<LabelSelector> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().map(LabelSelector::from_map)
}

/// `!helper.IsServiceIPSet`: headless (`None`) or without a cluster IP.
pub fn is_headless(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or_default();
    ip.is_empty() || ip == "None"
}

/// The pods a Service selects: its namespace, its selector.
pub fn selected_pods<'a>(svc: &Service, pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let Some(selector) = service_selector(svc) else { return Vec::new() };
    let ns = objects::namespace(&svc.metadata);
    let mut out: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| objects::namespace(&p.metadata) == ns && selector.matches(objects::labels(&p.metadata)))
        .collect();
    out.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));
    out
}

/// `ShouldPodBeInEndpoints`: not terminal, has an IP, and not terminating unless asked.
pub fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    !objects::pod_terminal(pod)
        && !objects::pod_ips(pod).is_empty()
        && (include_terminating || !objects::is_deleting(&pod.metadata))
}

/// `ShouldSetHostname`: the pod's `hostname`, when its `subdomain` is the Service's name.
pub fn endpoint_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && objects::namespace(&pod.metadata) == objects::namespace(&svc.metadata))
    .then(|| hostname.to_string())
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// The address types the Service's IP families call for (`getAddressTypesForService`).
pub fn address_types(svc: &Service) -> Vec<&'static str> {
    let spec = svc.spec.as_ref();
    let families = spec.and_then(|s| s.ip_families.as_ref()).cloned().unwrap_or_default();
    let mut types = Vec::new();
    for f in &families {
        match f.as_str() {
            "IPv4" if !types.contains(&"IPv4") => types.push("IPv4"),
            "IPv6" if !types.contains(&"IPv6") => types.push("IPv6"),
            _ => {}
        }
    }
    if !types.is_empty() {
        types.sort_unstable();
        return types;
    }
    let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or_default();
    if !ip.is_empty() && ip != "None" {
        return vec![if ip.contains(':') { "IPv6" } else { "IPv4" }];
    }
    vec!["IPv4", "IPv6"]
}

/// `getEndpointPorts`: the Service's ports resolved on this pod; a port whose named target the
/// pod lacks is left out (so that pod lands in a slice group of its own).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let port = objects::find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// A port list as a grouping key: order-independent, defaults filled in.
pub(crate) type PortKey = Vec<(String, i32, String, String)>;

pub(crate) fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// The identity of an endpoint across reconciles (`hashEndpoint`): addresses, hostname and the
/// referenced object; conditions, node and zone may change in place.
pub(crate) type EndpointKey = (Vec<String>, String, String, String);

pub(crate) fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let (ns, name) = ep
        .target_ref
        .as_ref()
        .map(|r| (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))
        .unwrap_or_default();
    (addresses, ep.hostname.clone().unwrap_or_default(), ns, name)
}

/// `EndpointsEqualBeyondHash`: what the key does not cover, ignoring the target's
/// resourceVersion.
pub(crate) fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let cond = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut r| {
            r.resource_version = None;
            r
        })
    };
    a.node_name == b.node_name && a.zone == b.zone && cond(a) == cond(b) && target(a) == target(b)
}

/// `podToEndpoint`.
pub fn pod_to_endpoint(pod: &Pod, node: Option<&Node>, svc: &Service, address_type: &str) -> Endpoint {
    let serving = objects::pod_ready(pod);
    let terminating = objects::is_deleting(&pod.metadata);
    let ready = publish_not_ready(svc) || (serving && !terminating);
    let addresses = objects::pod_ips(pod)
        .into_iter()
        .filter(|ip| (address_type == "IPv6") == ip.is_ipv6())
        .map(|ip| ip.to_string())
        .collect();
    let node_name = Some(objects::node_name(pod).to_string()).filter(|n| !n.is_empty());
    let zone = node.and_then(|n| objects::labels(&n.metadata).get(LABEL_ZONE)).filter(|z| !z.is_empty()).cloned();
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: endpoint_hostname(pod, svc),
        node_name,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        zone,
        ..Endpoint::default()
    }
}

fn is_reserved_label(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == LABEL_HEADLESS
}

/// `setEndpointSliceLabels`: the Service's labels (reserved keys excluded), the headless label
/// when headless, the service-name and managed-by labels; and whether the copied labels
/// differ from the slice's (a headless change alone does not count, as upstream).
pub fn slice_labels(slice_labels: &BTreeMap<String, String>, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let current: BTreeMap<&String, &String> = slice_labels.iter().filter(|(k, _)| !is_reserved_label(k)).collect();
    let mut wanted: BTreeMap<String, String> = objects::labels(&svc.metadata)
        .iter()
        .filter(|(k, _)| !is_reserved_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = current != wanted.iter().collect::<BTreeMap<_, _>>();
    if is_headless(svc) {
        wanted.insert(LABEL_HEADLESS.into(), String::new());
    }
    wanted.insert(LABEL_SERVICE_NAME.into(), objects::name(&svc.metadata).to_string());
    wanted.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (wanted, changed)
}

/// `ownedBy`: the slice has an owner reference to this Service (by UID).
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == objects::uid(&svc.metadata) && o.kind == "Service" && o.api_version == "v1")
}

fn service_owner_ref(svc: &Service) -> OwnerReference {
    objects::controller_ref("v1", "Service", &svc.metadata)
}

/// `newEndpointSlice`: an empty slice for a port list, named by the server from `<svc>-`.
fn new_slice(svc: &Service, ports: &[EndpointPort], address_type: &str) -> EndpointSlice {
    let (labels, _) = slice_labels(&BTreeMap::new(), svc);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", objects::name(&svc.metadata))),
            namespace: svc.metadata.namespace.clone(),
            owner_references: Some(vec![service_owner_ref(svc)]),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// `placeholderSliceCompare`: namespace, labels, owner references, address type, ports and
/// endpoints (null and empty alike).
fn same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    existing.metadata.namespace == placeholder.metadata.namespace
        && objects::labels(&existing.metadata) == objects::labels(&placeholder.metadata)
        && existing.metadata.owner_references.clone().unwrap_or_default()
            == placeholder.metadata.owner_references.clone().unwrap_or_default()
        && existing.address_type == placeholder.address_type
        && existing.endpoints.is_empty()
        && existing.ports.as_deref().unwrap_or_default().is_empty()
}

/// The latest change that can have moved this Service's endpoints: the stateless stand-in for
/// upstream's trigger-time tracker (`endpoints.kubernetes.io/last-change-trigger-time`).
pub fn trigger_time(svc: &Service, pods: &[&Pod]) -> Option<Timestamp> {
    let mut latest = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for pod in pods {
        let t = objects::pod_ready_condition(pod)
            .and_then(|c| c.last_transition_time.as_ref())
            .or(pod.metadata.deletion_timestamp.as_ref())
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        latest = latest.max(t);
    }
    latest
}

fn with_trigger_time(slice: &mut EndpointSlice, trigger: Option<Timestamp>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(t) => {
            annotations.insert(ANNOTATION_TRIGGER_TIME.into(), objects::rfc3339(t));
        }
        None => {
            annotations.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
}

/// True when a selected pod that would be an endpoint sits on a node that does not exist (and
/// the Service does not publish not-ready addresses): the pod is left out, and upstream retries
/// the Service until the node appears.
pub fn waiting_for_nodes(inputs: &SliceInputs<'_>) -> bool {
    if publish_not_ready(inputs.service) {
        return false;
    }
    let nodes: BTreeSet<&str> = inputs.nodes.iter().map(|n| objects::name(&n.metadata)).collect();
    selected_pods(inputs.service, &inputs.pods)
        .into_iter()
        .filter(|p| pod_in_endpoints(p, true))
        .any(|p| !nodes.contains(objects::node_name(p)))
}

/// The slices one address type of a Service should change.
#[derive(Default)]
struct Changes {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
}

/// Reconciles the EndpointSlices of one Service. Services without a selector (and
/// ExternalName ones) get no writes: their slices are not this controller's.
pub fn reconcile_endpoint_slices(inputs: &SliceInputs<'_>) -> Vec<Write> {
    let svc = inputs.service;
    if service_selector(svc).is_none() {
        return Vec::new();
    }
    let max = inputs.max_endpoints_per_slice.max(1);
    let pods = selected_pods(svc, &inputs.pods);
    let nodes: BTreeMap<&str, &Node> = inputs.nodes.iter().map(|n| (objects::name(&n.metadata), *n)).collect();
    let types = address_types(svc);

    let mut existing: Vec<&EndpointSlice> =
        inputs.slices.iter().copied().filter(|s| !objects::is_deleting(&s.metadata)).collect();
    existing.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));

    let mut all = Changes::default();
    for address_type in &types {
        let of_type: Vec<&EndpointSlice> =
            existing.iter().copied().filter(|s| s.address_type == *address_type).collect();
        let changes = reconcile_address_type(svc, &pods, &nodes, &of_type, address_type, max);
        all.create.extend(changes.create);
        all.update.extend(changes.update);
        all.delete.extend(changes.delete);
    }
    // Slices of an address type the Service no longer has.
    all.delete.extend(existing.iter().filter(|s| !types.contains(&s.address_type.as_str())).map(|s| (*s).clone()));
    finalize(svc, all, trigger_time(svc, &pods))
}

fn reconcile_address_type(
    svc: &Service,
    pods: &[&Pod],
    nodes: &BTreeMap<&str, &Node>,
    existing: &[&EndpointSlice],
    address_type: &str,
    max: usize,
) -> Changes {
    let mut changes = Changes::default();
    let mut existing_by_ports: BTreeMap<PortKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, svc) {
            existing_by_ports.entry(port_key(slice.ports.as_deref().unwrap_or_default())).or_default().push(slice);
        } else {
            changes.delete.push((*slice).clone());
        }
    }

    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !pod_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(svc, pod);
        let key = port_key(&ports);
        let group = desired.entry(key).or_insert_with(|| (ports, BTreeMap::new()));
        let node = nodes.get(objects::node_name(pod)).copied();
        if node.is_none() && !publish_not_ready(svc) {
            // Upstream skips the pod and retries the Service until its Node exists.
            continue;
        }
        let ep = pod_to_endpoint(pod, node, svc, address_type);
        if !ep.addresses.is_empty() {
            group.1.insert(endpoint_key(&ep), ep);
        }
    }

    for (key, (ports, endpoints)) in desired.iter_mut() {
        let slices = existing_by_ports.get(key).cloned().unwrap_or_default();
        let c = reconcile_port_group(svc, &slices, endpoints, ports, address_type, max);
        changes.create.extend(c.create);
        changes.update.extend(c.update);
        changes.delete.extend(c.delete);
    }
    for (key, slices) in &existing_by_ports {
        if !desired.contains_key(key) {
            changes.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }

    // With nothing else to keep, a Service still has one empty placeholder slice.
    if existing.len() == changes.delete.len() && changes.create.is_empty() {
        let placeholder = new_slice(svc, &[], address_type);
        if changes.delete.len() == 1 && same_placeholder(&changes.delete[0], &placeholder) {
            changes.delete.clear();
        } else {
            changes.create.push(placeholder);
        }
    }
    changes
}

/// `reconcileByPortMapping` for the slices of one port list.
fn reconcile_port_group(
    svc: &Service,
    existing: &[&EndpointSlice],
    desired: &mut BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
) -> Changes {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();

    // 1. Keep wanted endpoints where they are, refreshing changed ones; drop unwanted ones.
    for slice in existing {
        let name = objects::name(&slice.metadata).to_string();
        let mut kept = Vec::new();
        let mut endpoint_changed = false;
        for ep in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(ep)) {
                endpoint_changed |= !endpoints_equal_beyond_key(&want, ep);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(objects::labels(&slice.metadata), svc);
        if endpoint_changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, (*slice).clone());
            } else {
                let mut copy = (*slice).clone();
                copy.endpoints = kept;
                copy.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, copy);
            }
        } else if labels_changed {
            let mut copy = (*slice).clone();
            copy.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, copy);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, (*slice).clone());
        }
    }

    // 2. Top up the slices being written anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut order: Vec<String> = to_update.iter().cloned().collect();
        order.sort_by_key(|n| std::cmp::Reverse(by_name.get(n).map_or(0, |s| s.endpoints.len())));
        for name in order {
            if let Some(slice) = by_name.get_mut(&name) {
                fill(slice, desired, max);
            }
        }
    }

    // 3. The rest goes to the unchanged slice that ends up closest to full, or new slices.
    let mut create = Vec::new();
    while !desired.is_empty() {
        let target = if desired.len() < max {
            closest_to_full(unchanged.iter().filter_map(|n| by_name.get(n)), desired.len(), max)
        } else {
            None
        };
        match target {
            Some(name) => {
                if let Some(slice) = by_name.get_mut(&name) {
                    fill(slice, desired, max);
                }
                unchanged.remove(&name);
                to_update.insert(name);
            }
            None => {
                let mut slice = new_slice(svc, ports, address_type);
                fill(&mut slice, desired, max);
                create.push(slice);
            }
        }
    }

    Changes {
        create,
        update: to_update.iter().filter_map(|n| by_name.get(n).cloned()).collect(),
        delete: to_delete.iter().filter_map(|n| by_name.get(n).cloned()).collect(),
    }
}

fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, ep)) = desired.pop_first() else { break };
        slice.endpoints.push(ep);
    }
}

/// `getSliceToFill`: the slice that would be closest to full after taking `n` endpoints.
fn closest_to_full<'s>(slices: impl Iterator<Item = &'s EndpointSlice>, n: usize, max: usize) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for s in slices {
        let total = n + s.endpoints.len();
        if total > max {
            continue;
        }
        let diff = max - total;
        if best.as_ref().is_none_or(|(d, _)| diff < *d) {
            best = Some((diff, objects::name(&s.metadata).to_string()));
            if diff == 0 {
                break;
            }
        }
    }
    best.map(|(_, name)| name)
}

/// `finalize`: reuse slices that would be deleted for slices that would be created, skip
/// creates for a Service being deleted, and emit creates, updates, deletes in that order.
fn finalize(svc: &Service, mut c: Changes, trigger: Option<Timestamp>) -> Vec<Write> {
    let mut i = 0;
    while i < c.delete.len() && !c.create.is_empty() {
        let reusable =
            c.create.last().is_some_and(|s| s.address_type == c.delete[i].address_type) && owned_by(&c.delete[i], svc);
        if reusable {
            let old = c.delete.remove(i);
            if let Some(mut slice) = c.create.pop() {
                slice.metadata.generate_name = None;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                slice.metadata.uid = old.metadata.uid.clone();
                c.update.push(slice);
            }
        } else {
            i += 1;
        }
    }
    let ns = objects::namespace(&svc.metadata).to_string();
    let mut writes = Vec::new();
    if !objects::is_deleting(&svc.metadata) {
        for mut slice in c.create {
            with_trigger_time(&mut slice, trigger);
            writes.push(Write::Create {
                kind: Kind::EndpointSlice,
                namespace: ns.clone(),
                object: objects::to_value(&slice),
                created_event: None,
            });
        }
    }
    for mut slice in c.update {
        with_trigger_time(&mut slice, trigger);
        writes.push(Write::Replace {
            kind: Kind::EndpointSlice,
            namespace: ns.clone(),
            name: objects::name(&slice.metadata).to_string(),
            object: objects::to_value(&slice),
        });
    }
    for slice in c.delete {
        writes.push(Write::Delete {
            kind: Kind::EndpointSlice,
            namespace: ns.clone(),
            name: objects::name(&slice.metadata).to_string(),
            uid: slice.metadata.uid.clone(),
        });
    }
    writes
}

/// The Service keys a pod change concerns: Services of the pod's namespace whose selector
/// matches the old or the new labels.
pub fn services_for_pod<'a>(services: impl Iterator<Item = &'a Service>, pods: &[Option<&Pod>]) -> Vec<ObjectKey> {
    // Runs for every pod event over every Service of the cluster, so it compares the selector
    // map in place (a Service selector is equality only) instead of building a `LabelSelector`
    // per Service: at 10,000 Services that allocation was most of a pod event's cost.
    let mut out = BTreeSet::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(selector) = spec.selector.as_ref() else { continue };
        for pod in pods.iter().flatten() {
            if objects::namespace(&pod.metadata) != objects::namespace(&svc.metadata) {
                continue;
            }
            let labels = objects::labels(&pod.metadata);
            if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                out.insert(ObjectKey::of(&svc.metadata));
            }
        }
    }
    out.into_iter().collect()
}

/// Whether a pod update can change any endpoint (`podEndpointsChanged` plus label, hostname
/// and node changes); status-only noise such as container restarts is ignored.
pub fn pod_change_matters(old: &Pod, new: &Pod) -> bool {
    let view = |p: &Pod| {
        let spec = p.spec.as_ref();
        (
            objects::labels(&p.metadata).clone(),
            p.metadata.deletion_timestamp.clone(),
            objects::pod_ready(p),
            objects::pod_ips(p),
            objects::node_name(p).to_string(),
            objects::pod_phase(p).to_string(),
            spec.and_then(|s| s.hostname.clone()),
            spec.and_then(|s| s.subdomain.clone()),
            objects::pod_ready_condition(p).and_then(|c| c.last_transition_time.clone()),
        )
    };
    view(old) != view(new)
}
