//! The Endpoints controller, re-expressed from upstream's
//! `pkg/controller/endpoint/endpoints_controller.go` (1.33): for every Service with a selector, a
//! core/v1 Endpoints of the same name — what `kubectl get endpoints` and `kubectl describe svc`
//! show — with ready pods in `addresses`, the others in `notReadyAddresses`, repacked so that
//! addresses with identical port lists share a subset (`RepackSubsets`).
//!
//! [`reconcile_endpoints`] is pure. It writes only when the subsets, the copied labels or the
//! over-capacity annotation would change (ignoring the pods' resourceVersions, as upstream).
//! The object carries the Service's labels, `endpoints.kubernetes.io/managed-by:
//! endpoint-controller`, `service.kubernetes.io/headless: ""` for headless Services and the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation; beyond 1000 addresses it is
//! truncated (ready ones kept first) and annotated `endpoints.kubernetes.io/over-capacity:
//! truncated`.
//!
//! Selector-less and ExternalName Services are never touched: their Endpoints are the user's.
//! When a Service goes, its Endpoints is deleted if this controller manages it (labelled).

pub mod driver;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::endpointslice::{self, LABEL_HEADLESS};
use crate::objects::{self, ObjectKey};
use crate::write::{Kind, Write};

pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpoint-controller";
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const MAX_CAPACITY: usize = 1000;

/// What one reconcile of a Service's Endpoints looks at.
#[derive(Clone, Debug)]
pub struct EndpointsInputs<'a> {
    /// The key reconciled (the Service's, and the Endpoints' name).
    pub key: ObjectKey,
    /// The Service, absent once deleted.
    pub service: Option<&'a Service>,
    /// Pods of the namespace (the selector is applied here).
    pub pods: Vec<&'a Pod>,
    /// The current Endpoints of that name, if any.
    pub existing: Option<&'a Endpoints>,
    pub now: Timestamp,
}

fn managed(ep: &Endpoints) -> bool {
    objects::labels(&ep.metadata).get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
}

/// `podToEndpointAddressForService`: the pod's IP of the Service's primary family.
fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = svc.spec.as_ref();
    let family_v6 = match spec.and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()) {
        Some(f) => f == "IPv6",
        None => {
            let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or_default();
            if !ip.is_empty() && ip != "None" {
                ip.contains(':')
            } else {
                objects::pod_ips(pod).first().is_some_and(|ip| ip.is_ipv6())
            }
        }
    };
    let ip = objects::pod_ips(pod).into_iter().find(|ip| ip.is_ipv6() == family_v6)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        node_name: Some(objects::node_name(pod).to_string()).filter(|n| !n.is_empty()),
        hostname: endpointslice::endpoint_hostname(pod, svc),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
    })
}

type AddrKey = (String, String);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

/// `LessEndpointAddress`: by IP bytes, then target UID.
fn addr_order(a: &EndpointAddress, b: &EndpointAddress) -> std::cmp::Ordering {
    a.ip.as_bytes().cmp(b.ip.as_bytes()).then_with(|| addr_key(a).1.cmp(&addr_key(b).1))
}

type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

/// `RepackSubsets`: every address offering exactly the same ports (with the same readiness)
/// ends up in one subset; not-ready wins over ready for the same address and port; addresses
/// without ports are kept (a headless Service without ports). Sorted: addresses by IP and UID,
/// ports by name, number and protocol, subsets by their content.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut addresses: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    // Per port (`None`: no ports, upstream's sentinel), the addresses offering it and whether
    // each is ready there.
    type Offered = (Option<EndpointPort>, BTreeMap<AddrKey, bool>);
    let mut ports: BTreeMap<Option<PortKey>, Offered> = BTreeMap::new();
    for ss in subsets {
        let ss_ports: Vec<Option<&EndpointPort>> = match ss.ports.as_deref() {
            Some(p) if !p.is_empty() => p.iter().map(Some).collect(),
            _ => vec![None],
        };
        let all = ss
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(ss.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in all {
            let k = addr_key(a);
            addresses.entry(k.clone()).or_insert_with(|| a.clone());
            for p in &ss_ports {
                let entry = ports.entry(p.map(port_key)).or_insert_with(|| (p.cloned(), BTreeMap::new()));
                let was = entry.1.entry(k.clone()).or_insert(ready);
                *was = *was && ready;
            }
        }
    }
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, addrs) in ports.into_values() {
        let set: Vec<(AddrKey, bool)> = addrs.into_iter().collect();
        let group = groups.entry(set).or_default();
        if let Some(p) = port {
            group.push(p);
        }
    }
    let mut out: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, mut ports)| {
            let mut ready: Vec<EndpointAddress> = Vec::new();
            let mut not_ready: Vec<EndpointAddress> = Vec::new();
            for (k, r) in set {
                if let Some(a) = addresses.get(&k) {
                    if r { ready.push(a.clone()) } else { not_ready.push(a.clone()) }
                }
            }
            ready.sort_by(addr_order);
            not_ready.sort_by(addr_order);
            ports.sort_by_key(port_key);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    out.sort_by_key(|s| objects::to_value(s).to_string());
    out
}

/// The subsets a Service's pods call for, repacked.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let pnra = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let service_ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut subsets = Vec::new();
    for pod in endpointslice::selected_pods(svc, pods) {
        if !endpointslice::pod_in_endpoints(pod, pnra) {
            continue;
        }
        let Some(address) = pod_address(svc, pod) else { continue };
        let ready = pnra || objects::pod_ready(pod);
        let subset_with = |ports: Vec<EndpointPort>| {
            let addresses = Some(vec![address.clone()]);
            if ready {
                EndpointSubset { addresses, ports: Some(ports), ..EndpointSubset::default() }
            } else {
                EndpointSubset { not_ready_addresses: addresses, ports: Some(ports), ..EndpointSubset::default() }
            }
        };
        if service_ports.is_empty() {
            if endpointslice::is_headless(svc) {
                subsets.push(subset_with(Vec::new()));
            }
            continue;
        }
        for sp in &service_ports {
            let Some(port) = objects::find_port(pod, sp) else { continue };
            subsets.push(subset_with(vec![EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            }]));
        }
    }
    repack_subsets(&subsets)
}

/// `truncateEndpoints`: at most [`MAX_CAPACITY`] addresses, ready ones first, spread over the
/// subsets in proportion to their size. Returns whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready { (MAX_CAPACITY, ready) } else { (MAX_CAPACITY - ready, not_ready) };
    let mut can_add = max;
    for ss in subsets.iter_mut() {
        let in_subset = if truncate_ready { count(&ss.addresses) } else { count(&ss.not_ready_addresses) };
        let share = (in_subset as f64 / total as f64 * max as f64).ceil() as usize;
        let take = share.min(can_add);
        if truncate_ready {
            if let Some(a) = ss.addresses.as_mut() {
                a.truncate(take);
            }
            ss.not_ready_addresses = None;
            can_add -= count(&ss.addresses);
        } else {
            if let Some(a) = ss.not_ready_addresses.as_mut() {
                a.truncate(take);
            }
            can_add -= count(&ss.not_ready_addresses);
        }
    }
    true
}

/// Subsets compared as upstream's `endpointSubsetsEqualIgnoreResourceVersion`.
fn subsets_equal(a: &[EndpointSubset], b: &[EndpointSubset]) -> bool {
    let strip = |subsets: &[EndpointSubset]| {
        let mut v = subsets.to_vec();
        for ss in &mut v {
            for a in ss.addresses.iter_mut().flatten().chain(ss.not_ready_addresses.iter_mut().flatten()) {
                if let Some(r) = a.target_ref.as_mut() {
                    r.resource_version = None;
                }
            }
        }
        v
    };
    objects::semantic_eq(&strip(a), &strip(b))
}

/// Reconciles the Endpoints of one Service key.
pub fn reconcile_endpoints(inputs: &EndpointsInputs<'_>) -> Vec<Write> {
    let ns = inputs.key.namespace.clone();
    let Some(svc) = inputs.service else {
        // The Service is gone: its Endpoints goes too, when it is ours.
        return match inputs.existing {
            Some(ep) if managed(ep) => vec![Write::Delete {
                kind: Kind::Endpoints,
                namespace: ns,
                name: inputs.key.name.clone(),
                uid: ep.metadata.uid.clone(),
            }],
            _ => Vec::new(),
        };
    };
    if endpointslice::service_selector(svc).is_none() {
        return Vec::new();
    }
    let mut subsets = desired_subsets(svc, &inputs.pods);
    let svc_labels = objects::labels(&svc.metadata).clone();

    if let Some(current) = inputs.existing {
        let mut compare_labels = objects::labels(&current.metadata).clone();
        compare_labels.remove(LABEL_HEADLESS);
        compare_labels.remove(LABEL_MANAGED_BY);
        let total: usize = current
            .subsets
            .iter()
            .flatten()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let capacity_ok =
            total <= MAX_CAPACITY && !objects::annotations(&current.metadata).contains_key(ANNOTATION_OVER_CAPACITY);
        let labels_ok = compare_labels == svc_labels
            && objects::labels(&current.metadata).get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
            && objects::labels(&current.metadata).contains_key(LABEL_HEADLESS) == endpointslice::is_headless(svc);
        if subsets_equal(current.subsets.as_deref().unwrap_or_default(), &subsets) && labels_ok && capacity_ok {
            return Vec::new();
        }
    }

    let mut meta = match inputs.existing {
        Some(current) => current.metadata.clone(),
        None => {
            ObjectMeta { name: Some(inputs.key.name.clone()), namespace: Some(ns.clone()), ..ObjectMeta::default() }
        }
    };
    let mut labels = svc_labels;
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    if endpointslice::is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    meta.labels = Some(labels);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    let pods = endpointslice::selected_pods(svc, &inputs.pods);
    match endpointslice::trigger_time(svc, &pods) {
        Some(t) => annotations.insert(endpointslice::ANNOTATION_TRIGGER_TIME.into(), objects::rfc3339(t)),
        None => annotations.remove(endpointslice::ANNOTATION_TRIGGER_TIME),
    };
    if truncate(&mut subsets) {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    meta.managed_fields = None;
    let object = Endpoints { metadata: meta, subsets: Some(subsets) };
    let value = objects::to_value(&object);
    match inputs.existing {
        None => vec![Write::Create { kind: Kind::Endpoints, namespace: ns, object: value, created_event: None }],
        Some(_) => {
            vec![Write::Replace { kind: Kind::Endpoints, namespace: ns, name: inputs.key.name.clone(), object: value }]
        }
    }
}

/// The Service keys an Endpoints controller resync must look at: every Service, and every
/// Endpoints this controller manages (to delete those whose Service is gone).
pub fn resync_keys<'a>(
    services: impl Iterator<Item = &'a Service>,
    endpoints: impl Iterator<Item = &'a Endpoints>,
) -> Vec<ObjectKey> {
    let mut keys: BTreeSet<ObjectKey> = services.map(|s| ObjectKey::of(&s.metadata)).collect();
    keys.extend(endpoints.filter(|e| managed(e)).map(|e| ObjectKey::of(&e.metadata)));
    keys.into_iter().collect()
}
