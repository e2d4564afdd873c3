//! The EndpointSlice mirroring controller, re-expressed from upstream's
//! `pkg/controller/endpointslicemirroring`: a hand-written core/v1 Endpoints of a selector-less
//! Service (the seeds' `external-service`) is mirrored into EndpointSlices labelled
//! `endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.k8s.io`, one slice
//! per address type and distinct port list, owned by the Endpoints.
//!
//! Mirrored slices are removed when the Endpoints goes, when it is labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` (the API server's own `kubernetes`
//! Endpoints is) or carries the leader-election annotation, when no Service of that name exists
//! and when the Service gains a selector.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    EndpointKey, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, PortKey, endpoint_key, endpoints_equal_beyond_key, port_key,
};
use crate::objects;
use crate::write::{Kind, Write};

pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const DEFAULT_MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

/// What one reconcile of an Endpoints' mirrors looks at.
#[derive(Clone, Debug)]
pub struct MirrorInputs<'a> {
    /// The Endpoints (absent once deleted).
    pub endpoints: Option<&'a Endpoints>,
    /// The Service of the same name, if any.
    pub service: Option<&'a Service>,
    /// Slices labelled `kubernetes.io/service-name=<name>` and managed by the mirroring
    /// controller.
    pub slices: Vec<&'a EndpointSlice>,
    pub max_endpoints_per_subset: usize,
}

/// `shouldMirror`: not opted out, not a leader-election record.
pub fn should_mirror(ep: &Endpoints) -> bool {
    objects::labels(&ep.metadata).get(LABEL_SKIP_MIRROR).map(String::as_str) != Some("true")
        && !objects::annotations(&ep.metadata).contains_key(ANNOTATION_LEADER)
}

fn delete_all(slices: &[&EndpointSlice]) -> Vec<Write> {
    let mut sorted: Vec<&&EndpointSlice> = slices.iter().collect();
    sorted.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));
    sorted
        .into_iter()
        .map(|s| Write::Delete {
            kind: Kind::EndpointSlice,
            namespace: objects::namespace(&s.metadata).to_string(),
            name: objects::name(&s.metadata).to_string(),
            uid: s.metadata.uid.clone(),
        })
        .collect()
}

/// `epPortsToEpsPorts`.
fn slice_ports(ports: Option<&Vec<k8s_openapi::api::core::v1::EndpointPort>>) -> Vec<EndpointPort> {
    ports
        .into_iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// `addressToEndpoint`: the address type and endpoint of an address, `None` for a bad IP.
fn address_endpoint(a: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let ip = objects::parse_ip(&a.ip)?;
    let address_type = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    Some((
        address_type,
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions { ready: Some(ready), ..EndpointConditions::default() }),
            target_ref: a.target_ref.clone(),
            node_name: a.node_name.clone(),
            hostname: a.hostname.clone().filter(|h| !h.is_empty()),
            ..Endpoint::default()
        },
    ))
}

/// The labels and annotations a mirror of `ep` carries.
fn mirror_meta(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = objects::labels(&ep.metadata).clone();
    labels.insert(LABEL_SERVICE_NAME.into(), objects::name(&ep.metadata).to_string());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    let annotations = objects::annotations(&ep.metadata)
        .iter()
        .filter(|(k, _)| k.as_str() != super::ANNOTATION_TRIGGER_TIME && k.as_str() != ANNOTATION_LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (labels, annotations)
}

fn new_mirror(
    ep: &Endpoints,
    ports: &[EndpointPort],
    address_type: &str,
    name: Option<&EndpointSlice>,
) -> EndpointSlice {
    let (labels, annotations) = mirror_meta(ep);
    let mut meta = ObjectMeta {
        namespace: ep.metadata.namespace.clone(),
        owner_references: Some(vec![objects::controller_ref("v1", "Endpoints", &ep.metadata)]),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };
    match name {
        Some(old) => {
            meta.name = old.metadata.name.clone();
            meta.resource_version = old.metadata.resource_version.clone();
            meta.uid = old.metadata.uid.clone();
        }
        None => meta.generate_name = Some(format!("{}-", objects::name(&ep.metadata))),
    }
    EndpointSlice {
        metadata: meta,
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

type GroupKey = (String, PortKey);

/// Reconciles the mirrored slices of one Endpoints.
pub fn reconcile_mirrored_slices(inputs: &MirrorInputs<'_>) -> Vec<Write> {
    let ep = match inputs.endpoints {
        Some(ep) if should_mirror(ep) => ep,
        _ => return delete_all(&inputs.slices),
    };
    match inputs.service {
        Some(svc) if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none() => {}
        _ => return delete_all(&inputs.slices),
    }
    let max = inputs.max_endpoints_per_subset.max(1);

    // Desired endpoints per (address type, port list); every subset's port list is wanted for
    // both address types, so a group that lost all its addresses is cleaned up.
    let mut desired: BTreeMap<GroupKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports = slice_ports(subset.ports.as_ref());
        let key = port_key(&ports);
        for t in ["IPv4", "IPv6"] {
            desired.entry((t.to_string(), key.clone())).or_insert_with(|| (ports.clone(), BTreeMap::new()));
        }
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        let mut added = 0;
        for (address, is_ready) in ready.chain(not_ready) {
            if added >= max {
                break;
            }
            if let Some((t, endpoint)) = address_endpoint(address, is_ready) {
                if let Some(group) = desired.get_mut(&(t.to_string(), key.clone())) {
                    group.1.insert(endpoint_key(&endpoint), endpoint);
                }
                added += 1;
            }
        }
    }

    let mut existing: BTreeMap<GroupKey, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut sorted: Vec<&EndpointSlice> = inputs.slices.to_vec();
    sorted.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));
    for s in sorted {
        existing.entry((s.address_type.clone(), port_key(s.ports.as_deref().unwrap_or_default()))).or_default().push(s);
    }

    let (labels, annotations) = mirror_meta(ep);
    let mut create: Vec<EndpointSlice> = Vec::new();
    let mut update: Vec<EndpointSlice> = Vec::new();
    let mut delete: Vec<&EndpointSlice> = Vec::new();
    for (key, (ports, endpoints)) in &desired {
        let slices = existing.get(key).cloned().unwrap_or_default();
        if endpoints.is_empty() {
            delete.extend(slices);
            continue;
        }
        if let Some((first, rest)) = slices.split_first() {
            delete.extend(rest.iter().copied());
            let unchanged = first.endpoints.len() == endpoints.len()
                && first
                    .endpoints
                    .iter()
                    .all(|e| endpoints.get(&endpoint_key(e)).is_some_and(|want| endpoints_equal_beyond_key(want, e)))
                && objects::labels(&first.metadata) == &labels
                && objects::annotations(&first.metadata) == &annotations;
            if unchanged {
                continue;
            }
        }
        let mut slice = new_mirror(ep, ports, &key.0, slices.first().copied());
        slice.endpoints = endpoints.values().take(max).cloned().collect();
        if slice.metadata.name.is_some() {
            update.push(slice);
        } else {
            create.push(slice);
        }
    }
    for (key, slices) in &existing {
        if !desired.contains_key(key) {
            delete.extend(slices.iter().copied());
        }
    }

    // `recycleSlices`: turn a create plus a delete of the same address type into an update.
    let mut reused = Vec::new();
    create.retain(|c| match delete.iter().position(|d| d.address_type == c.address_type) {
        Some(i) => {
            let old = delete.remove(i);
            let mut slice = c.clone();
            slice.metadata.generate_name = None;
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            slice.metadata.uid = old.metadata.uid.clone();
            reused.push(slice);
            false
        }
        None => true,
    });
    update.extend(reused);

    let ns = objects::namespace(&ep.metadata).to_string();
    let mut writes = Vec::new();
    if !objects::is_deleting(&ep.metadata) {
        writes.extend(create.iter().map(|s| Write::Create {
            kind: Kind::EndpointSlice,
            namespace: ns.clone(),
            object: objects::to_value(s),
            created_event: None,
        }));
    }
    writes.extend(update.iter().map(|s| Write::Replace {
        kind: Kind::EndpointSlice,
        namespace: ns.clone(),
        name: objects::name(&s.metadata).to_string(),
        object: objects::to_value(s),
    }));
    writes.extend(delete_all(&delete));
    writes
}
