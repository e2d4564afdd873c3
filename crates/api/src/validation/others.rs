//! The smaller kinds: Endpoints, EndpointSlice, Namespace, Node, Event, ConfigMap, Secret and
//! ServiceAccount validation, and the Namespace strategy's update preparation.

use serde_json::{Value, json};

use super::meta;
use super::names::{self, NameKind};
use super::net;
use super::render::{self, quote};
use super::value::{self, get, s};
use super::{FieldError, pc, pi, pk};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// The size limit of a ConfigMap's or Secret's data.
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_SLICE_PORTS: usize = 20000;
const MAX_TOPOLOGY_LABELS: usize = 16;
const MAX_ZONE_HINTS: usize = 8;

fn metadata(obj: &Value) -> Option<&Value> {
    get(obj, "metadata")
}

fn meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    meta::validate_object_meta_update(metadata(new), metadata(old), "metadata")
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// ValidateEndpoints.
pub fn validate_endpoints(ep: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(ep), true, NameKind::Subdomain, "metadata");
    for (i, ss) in value::arr(ep, "subsets").iter().enumerate() {
        let spath = pi("subsets", i);
        let addresses = value::arr(ss, "addresses");
        let not_ready = value::arr(ss, "notReadyAddresses");
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(&spath, "must specify `addresses` or `notReadyAddresses`"));
        }
        for (field, list) in [("addresses", addresses), ("notReadyAddresses", not_ready)] {
            for (j, addr) in list.iter().enumerate() {
                errs.extend(endpoint_address(addr, &pi(&pc(&spath, field), j)));
            }
        }
        let ports = value::arr(ss, "ports");
        for (k, port) in ports.iter().enumerate() {
            errs.extend(endpoint_port(port, ports.len() > 1, &pi(&pc(&spath, "ports"), k)));
        }
    }
    errs
}

/// validateEndpointAddress (an invalid IP is reported twice, as upstream does).
fn endpoint_address(addr: &Value, path: &str) -> Vec<FieldError> {
    let ip = s(addr, "ip");
    let ip_path = pc(path, "ip");
    let mut errs = net::valid_ip_errors(&ip_path, ip);
    let hostname = s(addr, "hostname");
    if !hostname.is_empty() {
        errs.extend(names::label_errors(&pc(path, "hostname"), hostname));
    }
    if let Some(node) = value::opt_s(addr, "nodeName") {
        errs.extend(
            names::dns1123_subdomain(node)
                .into_iter()
                .map(|m| FieldError::invalid(pc(path, "nodeName"), quote(node), m)),
        );
    }
    errs.extend(net::non_special_ip_errors(&ip_path, ip));
    errs
}

/// validateEndpointPort.
fn endpoint_port(port: &Value, require_name: bool, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(pc(path, "name"), ""));
    } else if !name.is_empty() {
        errs.extend(names::label_errors(&pc(path, "name"), name));
    }
    let p = value::i(port, "port");
    errs.extend(names::port_num(p).into_iter().map(|m| FieldError::invalid(pc(path, "port"), p.to_string(), m)));
    match s(port, "protocol") {
        "" => errs.push(FieldError::required(pc(path, "protocol"), "")),
        proto if !PROTOCOLS.contains(&proto) => {
            errs.push(FieldError::not_supported(pc(path, "protocol"), quote(proto), PROTOCOLS))
        }
        _ => {}
    }
    if let Some(app) = value::opt_s(port, "appProtocol") {
        errs.extend(names::qualified_name_errors(&pc(path, "appProtocol"), app));
    }
    errs
}

/// ValidateEndpointsUpdate.
pub fn validate_endpoints_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(validate_endpoints(new));
    errs
}

// ---------------------------------------------------------------------------------------------
// EndpointSlice

/// ValidateEndpointSlice.
pub fn validate_endpoint_slice(slice: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(slice), true, NameKind::Subdomain, "metadata");
    let address_type = s(slice, "addressType");
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !["FQDN", "IPv4", "IPv6"].contains(&address_type) {
        errs.push(FieldError::not_supported("addressType", quote(address_type), &["FQDN", "IPv4", "IPv6"]));
    }
    let endpoints = value::arr(slice, "endpoints");
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), MAX_ENDPOINTS));
    } else {
        for (i, ep) in endpoints.iter().enumerate() {
            errs.extend(slice_endpoint(ep, address_type, &pi("endpoints", i)));
        }
    }
    let ports = value::arr(slice, "ports");
    if ports.len() > MAX_SLICE_PORTS {
        errs.push(FieldError::too_many("ports", ports.len(), MAX_SLICE_PORTS));
        return errs;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let ppath = pi("ports", i);
        let name = s(port, "name");
        if !name.is_empty() {
            errs.extend(names::label_errors(&pc(&ppath, "name"), name));
        }
        if seen.contains(&name) {
            errs.push(FieldError::duplicate(pc(&ppath, "name"), quote(name)));
        } else {
            seen.push(name);
        }
        match value::opt_s(port, "protocol") {
            None => errs.push(FieldError::required(pc(&ppath, "protocol"), "")),
            Some(proto) if !PROTOCOLS.contains(&proto) => {
                errs.push(FieldError::not_supported(pc(&ppath, "protocol"), quote(proto), PROTOCOLS));
            }
            Some(_) => {}
        }
        if let Some(app) = value::opt_s(port, "appProtocol") {
            errs.extend(names::qualified_name_errors(&pc(&ppath, "appProtocol"), app));
        }
    }
    errs
}

/// One endpoint of a slice.
fn slice_endpoint(ep: &Value, address_type: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let apath = pc(path, "addresses");
    let addresses = value::str_list(ep, "addresses");
    if addresses.is_empty() {
        errs.push(FieldError::required(&apath, "must contain at least 1 address"));
    } else if addresses.len() > MAX_ADDRESSES {
        errs.push(FieldError::too_many(&apath, addresses.len(), MAX_ADDRESSES));
    }
    for (i, a) in addresses.iter().enumerate() {
        let ipath = pi(&apath, i);
        match address_type {
            "IPv4" | "IPv6" => {
                let family = net::valid_family_ip_errors(&ipath, a, address_type == "IPv6");
                if family.is_empty() {
                    errs.extend(net::non_special_ip_errors(&ipath, a));
                } else {
                    errs.extend(family);
                }
            }
            "FQDN" => errs.extend(names::fully_qualified_domain_name(&ipath, a)),
            _ => {}
        }
    }
    if let Some(node) = value::opt_s(ep, "nodeName") {
        errs.extend(
            names::dns1123_subdomain(node)
                .into_iter()
                .map(|m| FieldError::invalid(pc(path, "nodeName"), quote(node), m)),
        );
    }
    let tpath = pc(path, "deprecatedTopology");
    let topology = value::str_pairs(ep, "deprecatedTopology");
    if topology.len() > MAX_TOPOLOGY_LABELS {
        errs.push(FieldError::too_many(&tpath, topology.len(), MAX_TOPOLOGY_LABELS));
    }
    errs.extend(names::labels_errors(&tpath, &topology));
    if let Some(h) = value::opt_s(ep, "hostname") {
        errs.extend(names::label_errors(&pc(path, "hostname"), h));
    }
    if let Some(hints) = get(ep, "hints") {
        let zpath = pc(&pc(path, "hints"), "forZones");
        let zones = value::arr(hints, "forZones");
        if zones.len() > MAX_ZONE_HINTS {
            errs.push(FieldError::too_many(&zpath, zones.len(), MAX_ZONE_HINTS));
        } else {
            let mut seen: Vec<&str> = Vec::new();
            for (i, z) in zones.iter().enumerate() {
                let npath = pc(&pi(&zpath, i), "name");
                let name = s(z, "name");
                if seen.contains(&name) {
                    errs.push(FieldError::duplicate(&npath, quote(name)));
                } else {
                    seen.push(name);
                }
                errs.extend(names::label_value(name).into_iter().map(|m| FieldError::invalid(&npath, quote(name), m)));
            }
        }
    }
    errs
}

/// ValidateEndpointSliceUpdate: the address type is immutable.
pub fn validate_endpoint_slice_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(validate_endpoint_slice(new));
    let (n, o) = (s(new, "addressType"), s(old, "addressType"));
    if n != o {
        errs.push(FieldError::invalid("addressType", quote(n), "field is immutable"));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Namespace

/// ValidateNamespace: a DNS-1123 label name and valid finalizer names.
pub fn validate_namespace(ns: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(ns), false, NameKind::Label, "metadata");
    let path = "spec.finalizers";
    for f in value::at(ns, &["spec", "finalizers"]).and_then(|v| value::as_str_list(Some(v))).unwrap_or_default() {
        errs.extend(names::qualified_name_errors(path, &f));
        if !f.contains('/') && f != "kubernetes" && f != "orphan" && f != "foregroundDeletion" {
            errs.push(FieldError::invalid(
                path,
                quote(&f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

/// ValidateNamespaceUpdate: only the metadata rules.
pub fn validate_namespace_update(new: &Value, old: &Value) -> Vec<FieldError> {
    meta_update(new, old)
}

/// ValidateNamespaceStatusUpdate: the phase follows the deletion timestamp.
pub fn validate_namespace_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    let phase = value::at(new, &["status", "phase"]).and_then(Value::as_str).unwrap_or_default();
    let deleting = value::at(new, &["metadata", "deletionTimestamp"]).is_some();
    if !deleting && phase != "Active" {
        errs.push(FieldError::invalid(
            "status.Phase",
            quote(phase),
            "may only be 'Active' if `deletionTimestamp` is empty",
        ));
    } else if deleting && phase != "Terminating" {
        errs.push(FieldError::invalid(
            "status.Phase",
            quote(phase),
            "may only be 'Terminating' if `deletionTimestamp` is not empty",
        ));
    }
    errs
}

/// The namespace strategy's PrepareForUpdate: finalizers and status only change through their
/// own subresources.
pub fn prepare_namespace_update(new: &mut Value, old: &Value) {
    let old_finalizers = value::at(old, &["spec", "finalizers"]).cloned();
    if let Some(spec) = value::ensure_obj(new, "spec") {
        match old_finalizers {
            Some(f) => spec.insert("finalizers".into(), f),
            None => spec.remove("finalizers"),
        };
    }
    if let Some(obj) = new.as_object_mut() {
        match get(old, "status") {
            Some(st) => obj.insert("status".into(), st.clone()),
            None => obj.remove("status"),
        };
    }
}

/// The namespace defaults: the `kubernetes.io/metadata.name` label (SetDefaults_Namespace),
/// phase Active and the `kubernetes` finalizer (the strategy's PrepareForCreate).
pub fn apply_namespace_defaults(ns: &mut Value) {
    let name = value::at(ns, &["metadata", "name"]).and_then(Value::as_str).unwrap_or_default().to_string();
    if !name.is_empty()
        && let Some(labels) = value::ensure_obj(ns, "metadata").and_then(|m| {
            let l = m.entry("labels").or_insert_with(|| json!({}));
            if l.is_null() {
                *l = json!({});
            }
            l.as_object_mut()
        })
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = value::ensure_obj(ns, "spec") {
        let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
        if finalizers.is_null() {
            *finalizers = json!([]);
        }
        if let Some(list) = finalizers.as_array_mut()
            && !list.iter().any(|f| f.as_str() == Some("kubernetes"))
        {
            list.push(json!("kubernetes"));
        }
    }
    if let Some(status) = value::ensure_obj(ns, "status")
        && value::empty_str(status, "phase")
    {
        status.insert("phase".into(), json!("Active"));
    }
}

// ---------------------------------------------------------------------------------------------
// Node, Event, ServiceAccount

/// ValidateNode: the name, taints and pod CIDRs.
pub fn validate_node(node: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(node), false, NameKind::Subdomain, "metadata");
    errs.extend(node_taints(node));
    let cidrs = value::at(node, &["spec", "podCIDRs"]).and_then(|v| value::as_str_list(Some(v))).unwrap_or_default();
    for (i, c) in cidrs.iter().enumerate() {
        errs.extend(net::valid_cidr_errors(&pi("spec.podCIDRs", i), c));
    }
    if cidrs.len() > 1 {
        let addrs: Vec<String> = cidrs.iter().map(|c| c.split('/').next().unwrap_or_default().to_string()).collect();
        if !net::is_dual_stack(&addrs) || cidrs.len() > 2 {
            errs.push(FieldError::invalid(
                "spec.podCIDRs",
                render::str_slice("[]string", Some(&cidrs)),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, c) in cidrs.iter().enumerate() {
            if seen.contains(&c.as_str()) {
                errs.push(FieldError::duplicate(pi("spec.podCIDRs", i), quote(c)));
            }
            seen.push(c);
        }
    }
    errs
}

/// validateNodeTaints (reported under `metadata.taints`, as upstream does).
fn node_taints(node: &Value) -> Vec<FieldError> {
    let taints = value::at(node, &["spec", "taints"]).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut errs = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let tpath = pi("metadata.taints", i);
        let (key, val, effect) = (s(t, "key"), s(t, "value"), s(t, "effect"));
        errs.extend(names::qualified_name_errors(&pc(&tpath, "key"), key));
        let msgs = names::label_value(val);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(pc(&tpath, "value"), quote(val), msgs.join(";")));
        }
        match effect {
            "" => errs.push(FieldError::required(pc(&tpath, "effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(
                pc(&tpath, "effect"),
                quote(other),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
        if seen.contains(&(key, effect)) {
            let mut e = FieldError::duplicate(
                &tpath,
                format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:(*v1.Time)(nil)}}",
                    quote(key),
                    quote(val),
                    quote(effect)
                ),
            );
            e.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(e);
            continue;
        }
        seen.push((key, effect));
    }
    errs
}

/// ValidateNodeUpdate: pod CIDRs and provider ID may only be set once.
pub fn validate_node_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(node_taints(new));
    let old_cidrs = value::at(old, &["spec", "podCIDRs"]).and_then(|v| value::as_str_list(Some(v))).unwrap_or_default();
    let new_cidrs = value::at(new, &["spec", "podCIDRs"]).and_then(|v| value::as_str_list(Some(v))).unwrap_or_default();
    let msg = "node updates may not change podCIDR except from \"\" to valid";
    if !old_cidrs.is_empty() {
        if old_cidrs.len() != new_cidrs.len() {
            errs.push(FieldError::forbidden("spec.podCIDRs", msg));
        } else {
            for (o, n) in old_cidrs.iter().zip(&new_cidrs) {
                if o != n {
                    errs.push(FieldError::forbidden("spec.podCIDRs", msg));
                }
            }
        }
    }
    let old_provider = value::at(old, &["spec", "providerID"]).and_then(Value::as_str).unwrap_or_default();
    let new_provider = value::at(new, &["spec", "providerID"]).and_then(Value::as_str).unwrap_or_default();
    if !old_provider.is_empty() && old_provider != new_provider {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    errs
}

/// The Node default: allocatable is the capacity when not reported.
pub fn apply_node_defaults(node: &mut Value) {
    if let Some(status) = node.get_mut("status").and_then(Value::as_object_mut)
        && value::missing(status, "allocatable")
        && let Some(capacity) = status.get("capacity").filter(|c| !c.is_null()).cloned()
    {
        status.insert("allocatable".into(), capacity);
    }
}

/// core/v1 Events get only `legacyValidateEvent`; when that passes, the generic registry's
/// metadata check follows, for which a name need only be a valid path segment.
pub fn validate_event(ev: &Value) -> Vec<FieldError> {
    let errs = legacy_validate_event(ev);
    if !errs.is_empty() {
        return errs;
    }
    let m = metadata(ev).unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    let name = s(m, "name");
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        errs.extend(
            names::path_segment_name(name)
                .into_iter()
                .map(|msg| FieldError::invalid("metadata.name", quote(name), msg)),
        );
    }
    if s(m, "namespace").is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    errs
}

/// legacyValidateEvent (for requests to core/v1).
fn legacy_validate_event(ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = value::at(ev, &["metadata", "namespace"]).and_then(Value::as_str).unwrap_or_default();
    let involved_ns = value::at(ev, &["involvedObject", "namespace"]).and_then(Value::as_str).unwrap_or_default();
    let mismatch =
        || FieldError::invalid("involvedObject.namespace", quote(involved_ns), "does not match event.namespace");
    if get(ev, "eventTime").is_none() {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != involved_ns {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let controller = s(ev, "reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required("reportingComponent", ""));
        }
        errs.extend(names::qualified_name_errors("reportingComponent", controller));
        let instance = s(ev, "reportingInstance");
        if instance.is_empty() {
            errs.push(FieldError::required("reportingInstance", ""));
        }
        if instance.len() > 128 {
            errs.push(FieldError::invalid("reportingInstance", quote(""), "can have at most 128 characters"));
        }
        let action = s(ev, "action");
        if action.is_empty() {
            errs.push(FieldError::required("action", ""));
        }
        if action.len() > 128 {
            errs.push(FieldError::invalid("action", quote(""), "can have at most 128 characters"));
        }
    }
    errs.extend(names::dns1123_subdomain(ns).into_iter().map(|m| FieldError::invalid("namespace", quote(ns), m)));
    errs
}

/// ValidateEventUpdate for core/v1: the legacy rules and the metadata update rules.
pub fn validate_event_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(legacy_validate_event(new));
    errs
}

/// ValidateServiceAccount.
pub fn validate_service_account(sa: &Value) -> Vec<FieldError> {
    meta::validate_object_meta(metadata(sa), true, NameKind::Subdomain, "metadata")
}

pub fn validate_service_account_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(validate_service_account(new));
    errs
}

// ---------------------------------------------------------------------------------------------
// ConfigMap and Secret

/// The decoded length of standard base64 text (data values arrive base64-encoded).
fn base64_len(s: &str) -> usize {
    let trimmed = s.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

/// ValidateConfigMap.
pub fn validate_config_map(cm: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(cm), true, NameKind::Subdomain, "metadata");
    let binary = value::obj(cm, "binaryData");
    let mut total = 0usize;
    for (k, v) in value::str_pairs(cm, "data") {
        let path = pk("data", k);
        errs.extend(names::config_map_key(k).into_iter().map(|m| FieldError::invalid(&path, quote(k), m)));
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(&path, quote(k), "duplicate of key present in binaryData"));
        }
        total += v.len();
    }
    for (k, v) in value::str_pairs(cm, "binaryData") {
        errs.extend(
            names::config_map_key(k).into_iter().map(|m| FieldError::invalid(pk("binaryData", k), quote(k), m)),
        );
        total += base64_len(v);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    errs
}

/// The `immutable: true` rules shared by ConfigMaps and Secrets.
fn immutable_errors(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !value::b(old, "immutable") {
        return errs;
    }
    if !value::b(new, "immutable") {
        errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
    }
    for f in fields {
        if !value::sem_eq(get(new, f), get(old, f)) {
            errs.push(FieldError::forbidden(*f, "field is immutable when `immutable` is set"));
        }
    }
    errs
}

/// ValidateConfigMapUpdate.
pub fn validate_config_map_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    errs.extend(immutable_errors(new, old, &["data", "binaryData"]));
    errs.extend(validate_config_map(new));
    errs
}

/// ValidateSecret.
pub fn validate_secret(secret: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(metadata(secret), true, NameKind::Subdomain, "metadata");
    let data = value::str_pairs(secret, "data");
    let mut total = 0usize;
    for (k, v) in &data {
        errs.extend(names::config_map_key(k).into_iter().map(|m| FieldError::invalid(pk("data", k), quote(k), m)));
        total += base64_len(v);
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.iter().any(|(key, _)| *key == k);
    let decoded = |k: &str| data.iter().find(|(key, _)| *key == k).map(|(_, v)| base64_decode(v));
    match s(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let name = value::at(secret, &["metadata", "annotations", "kubernetes.io/service-account.name"])
                .and_then(Value::as_str);
            if name.is_none_or(str::is_empty) {
                errs.push(FieldError::required(pk("metadata.annotations", "kubernetes.io/service-account.name"), ""));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if s(secret, "type") == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            match decoded(key) {
                None => errs.push(FieldError::required(pk("data", key), "")),
                Some(bytes) => {
                    if let Some(msg) = json_object_error(&bytes) {
                        errs.push(FieldError::invalid(pk("data", key), quote("<secret contents redacted>"), msg));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required(pk("data", "username"), ""));
            errs.push(FieldError::required(pk("data", "password"), ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey").is_none_or(|b| b.is_empty()) => {
            errs.push(FieldError::required(pk("data", "ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.push(FieldError::required(pk("data", key), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Why `bytes` is not a JSON object, in the words of Go's `encoding/json` for the common cases
/// (other syntax errors get a generic message).
fn json_object_error(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Some("unexpected end of JSON input".to_string());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => None,
        Ok(Value::Array(_)) => {
            Some("json: cannot unmarshal array into Go value of type map[string]interface {}".to_string())
        }
        Ok(Value::String(_)) => {
            Some("json: cannot unmarshal string into Go value of type map[string]interface {}".to_string())
        }
        Ok(Value::Number(_)) => {
            Some("json: cannot unmarshal number into Go value of type map[string]interface {}".to_string())
        }
        Ok(Value::Bool(_)) => {
            Some("json: cannot unmarshal bool into Go value of type map[string]interface {}".to_string())
        }
        Ok(Value::Null) => None,
        Err(_) => {
            let c = trimmed.chars().next().unwrap_or(' ');
            if "{[\"-0123456789tfn".contains(c) {
                Some("unexpected end of JSON input".to_string())
            } else {
                Some(format!("invalid character '{c}' looking for beginning of value"))
            }
        }
    }
}

/// ValidateSecretUpdate: the type is immutable, as is the data of an immutable Secret.
pub fn validate_secret_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta_update(new, old);
    let (n, o) = (s(new, "type"), s(old, "type"));
    if n != o {
        errs.push(FieldError::invalid("type", quote(n), "field is immutable"));
    }
    errs.extend(immutable_errors(new, old, &["data"]));
    errs.extend(validate_secret(new));
    errs
}

/// The Secret defaults: type Opaque, and `stringData` folded into `data` as upstream's
/// conversion does (it is write-only and never stored).
pub fn apply_secret_defaults(secret: &mut Value) {
    let Some(obj) = secret.as_object_mut() else { return };
    if value::empty_str(obj, "type") {
        obj.insert("type".into(), json!("Opaque"));
    }
    let Some(Value::Object(string_data)) = obj.remove("stringData") else { return };
    let data = obj.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            data.insert(k, json!(base64_encode(v.as_str().unwrap_or_default().as_bytes())));
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 decoding; invalid characters are skipped (the input already decoded once).
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = B64.iter().position(|&b| b == c) else { continue };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "hello world"] {
            let enc = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&enc), s.as_bytes(), "{enc}");
            assert_eq!(base64_len(&enc), s.len(), "{enc}");
        }
        assert_eq!(base64_encode(b"ab"), "YWI=");
    }
}
