//! Service admission: `SetDefaults_Service`, `ValidateService` / `ValidateServiceUpdate` /
//! `ValidateServiceStatusUpdate`, and the parts of the service REST storage and strategy that
//! run before validation (`patchAllocatedValues`, `normalizeClusterIPs`, `initIPFamilyFields`,
//! `dropTypeDependentFields`).
//!
//! Upstream allocates (and so default-fills the IP-family fields and checks them against the
//! cluster's families) before it validates, and returns the allocation errors alone when there
//! are any; [`validate_create`] and [`validate_update`] keep that ordering.

use serde_json::{Map, Value, json};

use super::meta;
use super::names::{self, NameKind};
use super::net;
use super::render::{self, quote};
use super::value::{self, get, s};
use super::{FieldError, pc, pi, pk};

/// An IP family of a cluster's service network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    fn of_ip(ip: &str) -> IpFamily {
        if net::is_ipv6_string(ip) { IpFamily::IPv6 } else { IpFamily::IPv4 }
    }

    fn other(self) -> IpFamily {
        match self {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        }
    }
}

/// The families of pier's service network: IPv4 single-stack. [`super::default_object`] and the
/// Service validators use it; a dual-stack server would call [`default_service_ip_families`]
/// itself.
pub const CLUSTER_IP_FAMILIES: &[IpFamily] = &[IpFamily::IPv4];

const KUBELET_PORT: i64 = 10250;
const DEFAULT_AFFINITY_TIMEOUT: i64 = 10800;
const MAX_AFFINITY_TIMEOUT: i64 = 86400;
const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
const ANNOTATION_TOPOLOGY_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
const ANNOTATION_LB_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];

fn spec(svc: &Value) -> &Value {
    static NULL: Value = Value::Null;
    get(svc, "spec").unwrap_or(&NULL)
}

fn svc_type(svc: &Value) -> &str {
    s(spec(svc), "type")
}

fn cluster_ips(svc: &Value) -> Option<Vec<String>> {
    value::as_str_list(get(spec(svc), "clusterIPs"))
}

fn ip_families(svc: &Value) -> Option<Vec<String>> {
    value::as_str_list(get(spec(svc), "ipFamilies"))
}

/// `isHeadlessService`: exactly one clusterIP, `None`.
fn is_headless(svc: &Value) -> bool {
    matches!(cluster_ips(svc).as_deref(), Some([only]) if only == "None")
}

/// `ExternallyAccessible`: NodePort, LoadBalancer, or ClusterIP with external IPs.
fn externally_accessible(svc: &Value) -> bool {
    let t = svc_type(svc);
    t == "LoadBalancer" || t == "NodePort" || (t == "ClusterIP" && !value::arr(spec(svc), "externalIPs").is_empty())
}

/// `NeedsHealthCheck`: LoadBalancer with `externalTrafficPolicy: Local`.
fn needs_health_check(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && s(spec(svc), "externalTrafficPolicy") == "Local"
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

fn needs_node_port(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

fn needs_external_traffic_policy(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

// ---------------------------------------------------------------------------------------------
// Defaults

/// SetDefaults_Service, plus what the service REST does before validation on create
/// (`normalizeClusterIPs`: `clusterIPs` from `clusterIP`; `initIPFamilyFields` for
/// [`CLUSTER_IP_FAMILIES`], whose errors [`validate_create`] reports).
pub fn apply_defaults(svc: &mut Value) {
    let Some(spec) = value::ensure_obj(svc, "spec") else { return };
    if value::empty_str(spec, "sessionAffinity") {
        spec.insert("sessionAffinity".into(), json!("None"));
    }
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout =
                spec.get("sessionAffinityConfig").and_then(|c| value::at(c, &["clientIP", "timeoutSeconds"])).is_some();
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_TIMEOUT}}),
                );
            }
        }
        _ => {}
    }
    if value::empty_str(spec, "type") {
        spec.insert("type".into(), json!("ClusterIP"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            if value::empty_str(port, "protocol") {
                port.insert("protocol".into(), json!("TCP"));
            }
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(t)) => t.is_empty(),
                _ => false,
            };
            if unset {
                let p = port.get("port").and_then(Value::as_i64).unwrap_or_default();
                port.insert("targetPort".into(), json!(p));
            }
        }
    }
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let has_external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let externally = ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally && value::empty_str(spec, "externalTrafficPolicy") {
        spec.insert("externalTrafficPolicy".into(), json!("Cluster"));
    }
    if value::missing(spec, "internalTrafficPolicy") && matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP")
    {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if ty == "LoadBalancer" && value::missing(spec, "allocateLoadBalancerNodePorts") {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    // normalizeClusterIPs on create: an old client that set only the singular field.
    let cluster_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or_default().to_string();
    let plural_empty = spec.get("clusterIPs").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if !cluster_ip.is_empty() && plural_empty {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
    if ty == "LoadBalancer"
        && let Some(ingress) = svc
            .get_mut("status")
            .and_then(|st| st.get_mut("loadBalancer"))
            .and_then(|lb| lb.get_mut("ingress"))
            .and_then(Value::as_array_mut)
    {
        for ing in ingress.iter_mut().filter_map(Value::as_object_mut) {
            if !value::empty_str(ing, "ip") && value::missing(ing, "ipMode") {
                ing.insert("ipMode".into(), json!("VIP"));
            }
        }
    }
    // Errors are reported by validate_create, which repeats this on a copy.
    let _ = default_service_ip_families(svc, None, CLUSTER_IP_FAMILIES);
}

/// The IP-family fields of a Service as upstream's `initIPFamilyFields` sets them for a cluster
/// with `cluster` families (primary first): `ipFamilyPolicy` inherited from `old` or defaulted
/// (SingleStack; RequireDualStack for a headless Service without selector), `ipFamilies` inferred
/// from the clusterIPs or defaulted to the cluster's primary family. Returns the errors upstream
/// returns from allocation (families the cluster does not have, an inconsistent policy); on
/// errors the object is left as far as upstream had got.
pub fn default_service_ip_families(obj: &mut Value, old: Option<&Value>, cluster: &[IpFamily]) -> Vec<FieldError> {
    if svc_type(obj) == "ExternalName" {
        return Vec::new();
    }
    if let Some(old) = old
        && matching_prefer_dual_stack(obj, old)
    {
        return Vec::new();
    }
    let primary = cluster.first().copied().unwrap_or(IpFamily::IPv4);
    let sp = spec(obj);
    let cluster_ip = s(sp, "clusterIP").to_string();
    let selectorless = value::obj(sp, "selector").is_none_or(Map::is_empty);
    let mut policy = value::opt_s(sp, "ipFamilyPolicy").map(str::to_string);
    if policy.is_none() {
        policy = Some(match old.and_then(|o| value::opt_s(spec(o), "ipFamilyPolicy")) {
            Some(p) => p.to_string(),
            None if cluster_ip == "None" && selectorless => "RequireDualStack".to_string(),
            None => "SingleStack".to_string(),
        });
        set_spec(obj, "ipFamilyPolicy", json!(policy));
    }
    let policy = policy.unwrap_or_default();

    let pre = validate_cluster_ips_related(obj);
    if !pre.is_empty() {
        return pre;
    }

    let mut ips = cluster_ips(obj).unwrap_or_default();
    let had_families = ip_families(obj).is_some();
    let mut families = ip_families(obj).unwrap_or_default();
    let mut errs = Vec::new();
    if let Some(old) = old {
        let old_ips = cluster_ips(old).unwrap_or_default();
        let old_families = ip_families(old).unwrap_or_default();
        if policy == "SingleStack" {
            // Setting SingleStack while leaving the fields unchanged is the intent to downgrade.
            if old_ips == ips && ips.len() > 1 {
                ips.truncate(1);
                set_spec(obj, "clusterIPs", json!(ips));
            }
            if old_families == families && families.len() > 1 {
                families.truncate(1);
                set_spec(obj, "ipFamilies", json!(families));
            }
        } else {
            if !ips.is_empty() && ips.len() < old_ips.len() {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    quote(&policy),
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if !families.is_empty() && families.len() < old_families.len() {
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    quote(&policy),
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                quote(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if families.len() == 2 {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                quote(&policy),
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }
    let mut inferred = false;
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        if i >= families.len() {
            let fam = IpFamily::of_ip(ip);
            if cluster.contains(&fam) {
                families.push(fam.as_str().to_string());
                inferred = true;
            } else {
                errs.push(FieldError::invalid(
                    pi("spec.clusterIPs", i),
                    render::str_slice("[]string", Some(&ips)),
                    format!("{} is not configured on this cluster", fam.as_str()),
                ));
            }
        }
    }
    if inferred {
        set_spec(obj, "ipFamilies", json!(families));
    }
    if !errs.is_empty() {
        return errs;
    }

    if cluster_ip == "None" && selectorless {
        if families.is_empty() {
            families.push(primary.as_str().to_string());
        }
        if families.len() < 2 && policy != "SingleStack" {
            let first = if families[0] == "IPv6" { IpFamily::IPv6 } else { IpFamily::IPv4 };
            families.push(first.other().as_str().to_string());
        }
        set_spec(obj, "ipFamilies", json!(families));
        return Vec::new();
    }

    if policy == "RequireDualStack" && cluster.len() < 2 {
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            quote(&policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if !cluster.iter().any(|c| c.as_str() == f) {
            errs.push(FieldError::invalid(pi("spec.ipFamilies", i), quote(f), "not configured on this cluster"));
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    let before = families.len();
    if families.is_empty() {
        families.push(primary.as_str().to_string());
    }
    if policy != "SingleStack" && families.len() == 1 && cluster.len() == 2 {
        let first = if families[0] == "IPv6" { IpFamily::IPv6 } else { IpFamily::IPv4 };
        families.push(first.other().as_str().to_string());
    }
    if families.len() != before || !had_families {
        set_spec(obj, "ipFamilies", json!(families));
    }
    Vec::new()
}

/// `isMatchingPreferDualStackClusterIPFields`: an update that leaves a PreferDualStack service's
/// IP fields alone is not re-evaluated against the cluster's families.
fn matching_prefer_dual_stack(new: &Value, old: &Value) -> bool {
    let Some(policy) = value::opt_s(spec(new), "ipFamilyPolicy") else { return false };
    let ip_types = ["ClusterIP", "NodePort", "LoadBalancer"];
    svc_type(old) == svc_type(new)
        && ip_types.contains(&svc_type(new))
        && policy == "PreferDualStack"
        && value::opt_s(spec(old), "ipFamilyPolicy").is_none_or(|p| p == "PreferDualStack")
        && cluster_ips(old).unwrap_or_default() == cluster_ips(new).unwrap_or_default()
        && ip_families(old).unwrap_or_default() == ip_families(new).unwrap_or_default()
}

fn set_spec(obj: &mut Value, key: &str, v: Value) {
    if let Some(spec) = value::ensure_obj(obj, "spec") {
        spec.insert(key.to_string(), v);
    }
}

fn remove_spec(obj: &mut Value, key: &str) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove(key);
    }
}

// ---------------------------------------------------------------------------------------------
// Update preparation

/// The service REST's update normalisation (see [`super::prepare_update`]).
pub fn prepare_update(new: &mut Value, old: &Value) {
    patch_allocated_values(new, old);
    normalize_cluster_ips(new, old);
    let _ = default_service_ip_families(new, Some(old), CLUSTER_IP_FAMILIES);
    drop_type_dependent_fields(new, old);
}

fn node_ports(svc: &Value) -> Vec<i64> {
    value::arr(spec(svc), "ports").iter().map(|p| value::i(p, "nodePort")).filter(|n| *n != 0).collect()
}

/// `patchAllocatedValues`: values the server allocated survive a client that omits them.
fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        if s(spec(new), "clusterIP").is_empty() && !s(spec(old), "clusterIP").is_empty() {
            set_spec(new, "clusterIP", json!(s(spec(old), "clusterIP")));
        }
        let old_ips = cluster_ips(old).unwrap_or_default();
        if cluster_ips(new).unwrap_or_default().is_empty() && !old_ips.is_empty() {
            set_spec(new, "clusterIPs", json!(old_ips));
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let new_ports = node_ports(new);
        let used: Vec<i64> = node_ports(old).into_iter().filter(|p| new_ports.contains(p)).collect();
        let by_name: Vec<(String, i64)> = value::arr(spec(old), "ports")
            .iter()
            .map(|p| (s(p, "name").to_string(), value::i(p, "nodePort")))
            .collect();
        if let Some(ports) = new.get_mut("spec").and_then(|sp| sp.get_mut("ports")).and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if !value::zero_int(p, "nodePort") {
                    continue;
                }
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                // Go's map lookup: the last old port of that name wins, 0 when there is none.
                let old_val = by_name.iter().rev().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_default();
                if old_val != 0 && !used.contains(&old_val) {
                    p.insert("nodePort".into(), json!(old_val));
                }
            }
        }
    }
    if needs_health_check(old) && needs_health_check(new) && value::i(spec(new), "healthCheckNodePort") == 0 {
        let hc = value::i(spec(old), "healthCheckNodePort");
        if hc != 0 {
            set_spec(new, "healthCheckNodePort", json!(hc));
        }
    }
}

/// `normalizeClusterIPs` on update: keep the singular and plural fields in step for clients
/// that only know one of them.
fn normalize_cluster_ips(new: &mut Value, old: &Value) {
    let old_ip = s(spec(old), "clusterIP").to_string();
    let old_ips = cluster_ips(old).unwrap_or_default();
    let new_ip = s(spec(new), "clusterIP").to_string();
    if !old_ips.is_empty() && cluster_ips(new).unwrap_or_default().is_empty() && old_ip == new_ip {
        set_spec(new, "clusterIPs", json!(old_ips));
    }
    if old_ip != new_ip {
        let same_plural = cluster_ips(new).unwrap_or_default() == old_ips;
        if !old_ip.is_empty() && new_ip.is_empty() && same_plural {
            remove_spec(new, "clusterIPs");
        }
        let new_ips = cluster_ips(new).unwrap_or_default();
        if new_ips.len() == 1 && new_ips == old_ips {
            set_spec(new, "clusterIPs", json!([new_ip]));
        }
    }
}

/// `dropTypeDependentFields`: on a type change, clear what the new type does not use, as long
/// as the client did not also change it (then validation reports it).
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        let same_ips = s(spec(old), "clusterIP") == s(spec(new), "clusterIP") && cluster_ips(old) == cluster_ips(new);
        if same_ips {
            remove_spec(new, "clusterIP");
            remove_spec(new, "clusterIPs");
        }
        if ip_families(old) == ip_families(new) {
            remove_spec(new, "ipFamilies");
        }
        if value::opt_s(spec(old), "ipFamilyPolicy").unwrap_or_default()
            == value::opt_s(spec(new), "ipFamilyPolicy").unwrap_or_default()
        {
            remove_spec(new, "ipFamilyPolicy");
        }
    }
    if needs_node_port(old) && !needs_node_port(new) {
        let old_ports = node_ports(old);
        if node_ports(new).iter().all(|p| old_ports.contains(p))
            && let Some(ports) = new.get_mut("spec").and_then(|sp| sp.get_mut("ports")).and_then(Value::as_array_mut)
        {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("nodePort");
            }
        }
    }
    if needs_health_check(old)
        && !needs_health_check(new)
        && value::i(spec(old), "healthCheckNodePort") == value::i(spec(new), "healthCheckNodePort")
    {
        remove_spec(new, "healthCheckNodePort");
    }
    if svc_type(old) == "LoadBalancer" && svc_type(new) != "LoadBalancer" {
        let o = get(spec(old), "allocateLoadBalancerNodePorts").and_then(Value::as_bool);
        let n = get(spec(new), "allocateLoadBalancerNodePorts").and_then(Value::as_bool);
        if o.is_some() && o == n {
            remove_spec(new, "allocateLoadBalancerNodePorts");
        }
        if value::opt_s(spec(old), "loadBalancerClass") == value::opt_s(spec(new), "loadBalancerClass") {
            remove_spec(new, "loadBalancerClass");
        }
    }
    if needs_external_traffic_policy(old)
        && !needs_external_traffic_policy(new)
        && s(spec(old), "externalTrafficPolicy") == s(spec(new), "externalTrafficPolicy")
    {
        remove_spec(new, "externalTrafficPolicy");
    }
    if svc_type(new) != "LoadBalancer"
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Create: the allocation-time family errors alone if any, else ValidateService.
pub fn validate_create(svc: &Value) -> Vec<FieldError> {
    let mut probe = svc.clone();
    let errs = default_service_ip_families(&mut probe, None, CLUSTER_IP_FAMILIES);
    if !errs.is_empty() {
        return errs;
    }
    validate_service(svc)
}

/// Update: the allocation-time family errors alone if any, else ValidateServiceUpdate.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut probe = new.clone();
    let errs = default_service_ip_families(&mut probe, Some(old), CLUSTER_IP_FAMILIES);
    if !errs.is_empty() {
        return errs;
    }
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    errs.extend(upgrade_downgrade_cluster_ips(old, new));
    errs.extend(upgrade_downgrade_ip_families(old, new));
    errs.extend(load_balancer_class(Some(old), new));
    if needs_health_check(old)
        && needs_health_check(new)
        && value::i(spec(old), "healthCheckNodePort") != value::i(spec(new), "healthCheckNodePort")
    {
        errs.push(FieldError::forbidden("spec.healthCheckNodePort", "field is immutable"));
    }
    errs.extend(validate_service(new));
    errs
}

/// ValidateServiceStatusUpdate.
pub fn validate_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(get(new, "metadata"), get(old, "metadata"), "metadata");
    errs.extend(load_balancer_status(new));
    errs
}

/// ValidateLoadBalancerStatus for a Service (the LoadBalancerIPMode gate is on in v1.32).
fn load_balancer_status(svc: &Value) -> Vec<FieldError> {
    let path = "status.loadBalancer.ingress";
    let ingress = value::at(svc, &["status", "loadBalancer", "ingress"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if svc_type(svc) != "LoadBalancer" && !ingress.is_empty() {
        return vec![FieldError::forbidden(path, "may only be used when `spec.type` is 'LoadBalancer'")];
    }
    let mut errs = Vec::new();
    for (i, ing) in ingress.iter().enumerate() {
        let ipath = pi(path, i);
        let ip = s(ing, "ip");
        if !ip.is_empty() {
            errs.extend(net::valid_ip_errors(&pc(&ipath, "ip"), ip));
        }
        match value::opt_s(ing, "ipMode") {
            None if !ip.is_empty() => {
                errs.push(FieldError::required(pc(&ipath, "ipMode"), "must be specified when `ip` is set"))
            }
            None => {}
            Some(_) if ip.is_empty() => {
                errs.push(FieldError::forbidden(pc(&ipath, "ipMode"), "may not be specified when `ip` is not set"))
            }
            Some(mode) if mode != "VIP" && mode != "Proxy" => {
                errs.push(FieldError::not_supported(pc(&ipath, "ipMode"), quote(mode), &["Proxy", "VIP"]));
            }
            Some(_) => {}
        }
        errs.extend(lb_hostname(&pc(&ipath, "hostname"), s(ing, "hostname")));
    }
    errs
}

/// A load-balancer status hostname: a DNS-1123 subdomain, not an IP address.
pub fn lb_hostname(path: &str, hostname: &str) -> Vec<FieldError> {
    if hostname.is_empty() {
        return Vec::new();
    }
    let mut errs = names::subdomain_errors(path, hostname);
    if net::parse_ip(hostname).is_some() {
        errs.push(FieldError::invalid(path, quote(hostname), "must be a DNS name, not an IP address"));
    }
    errs
}

/// ValidateService.
pub fn validate_service(svc: &Value) -> Vec<FieldError> {
    let sp = spec(svc);
    let metadata = get(svc, "metadata");
    let mut errs = meta::validate_object_meta(metadata, true, NameKind::Dns1035, "metadata");

    let annotations = metadata.map(|m| value::str_pairs(m, "annotations")).unwrap_or_default();
    let annotation = |k: &str| annotations.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    if let (Some(mode), Some(hints)) = (annotation(ANNOTATION_TOPOLOGY_MODE), annotation(ANNOTATION_TOPOLOGY_HINTS))
        && mode != hints
    {
        errs.push(FieldError::invalid(
            pk("metadata.annotations", ANNOTATION_TOPOLOGY_MODE),
            quote(mode),
            format!("must match annotations[{ANNOTATION_TOPOLOGY_HINTS}] when both are specified"),
        ));
    }

    let ty = svc_type(svc);
    let ports = value::arr(sp, "ports");
    let headless = is_headless(svc);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" => {
            for (i, p) in ports.iter().enumerate() {
                if value::i(p, "port") == KUBELET_PORT {
                    errs.push(FieldError::invalid(
                        pi("spec.ports", i),
                        KUBELET_PORT.to_string(),
                        format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                    ));
                }
            }
            if headless {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    quote("None"),
                    "may not be set to 'None' for LoadBalancer services",
                ));
            }
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                quote("None"),
                "may not be set to 'None' for NodePort services",
            ));
        }
        "ExternalName" => {
            if !cluster_ips(svc).unwrap_or_default().is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !ip_families(svc).unwrap_or_default().is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if value::opt_s(sp, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            // A CNAME may carry one trailing dot to mark it fully qualified.
            let external_name = s(sp, "externalName");
            let cname = external_name.strip_suffix('.').unwrap_or(external_name);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                errs.extend(names::subdomain_errors("spec.externalName", cname));
            }
        }
        _ => {}
    }

    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(service_port(p, ports.len() > 1, &mut port_names, &pi("spec.ports", i)));
    }

    if let Some(selector) = get(sp, "selector") {
        errs.extend(meta::validate_labels("spec.selector", Some(selector)));
    }

    let affinity = s(sp, "sessionAffinity");
    if affinity.is_empty() {
        errs.push(FieldError::required("spec.sessionAffinity", ""));
    } else if affinity != "ClientIP" && affinity != "None" {
        errs.push(FieldError::not_supported("spec.sessionAffinity", quote(affinity), &["ClientIP", "None"]));
    }
    if affinity == "ClientIP" {
        errs.extend(client_ip_affinity(get(sp, "sessionAffinityConfig")));
    } else if affinity == "None" && get(sp, "sessionAffinityConfig").is_some() {
        errs.push(FieldError::forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"));
    }

    errs.extend(validate_cluster_ips_related(svc));

    for (i, ip) in value::str_list(sp, "externalIPs").iter().enumerate() {
        let path = pi("spec.externalIPs", i);
        let invalid = net::valid_ip_errors(&path, ip);
        if invalid.is_empty() {
            errs.extend(net::non_special_ip_errors(&path, ip));
        } else {
            errs.extend(invalid);
        }
    }

    if ty.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", quote(ty), TYPES));
    }

    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if value::i(p, "nodePort") != 0 {
                errs.push(FieldError::forbidden(
                    pc(&pi("spec.ports", i), "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }

    let mut seen_node_ports: Vec<(&str, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let node_port = value::i(p, "nodePort");
        if node_port == 0 {
            continue;
        }
        let key = (s(p, "protocol"), node_port);
        if seen_node_ports.contains(&key) {
            errs.push(FieldError::duplicate(pc(&pi("spec.ports", i), "nodePort"), node_port.to_string()));
        }
        seen_node_ports.push(key);
    }

    let mut seen_ports: Vec<(&str, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let key = (s(p, "protocol"), value::i(p, "port"));
        if seen_ports.contains(&key) {
            errs.push(FieldError::duplicate(pi("spec.ports", i), service_port_key_repr(key.0, key.1)));
        }
        seen_ports.push(key);
    }

    let ranges = value::str_list(sp, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        // Upstream names this path with a capital L.
        let path = "spec.LoadBalancerSourceRanges";
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(path, "may only be used when `type` is 'LoadBalancer'"));
        }
        for (i, r) in ranges.iter().enumerate() {
            errs.extend(net::valid_cidr_errors(&pi(path, i), r.trim()));
        }
    } else if let Some(val) = annotation(ANNOTATION_LB_SOURCE_RANGES) {
        let path = pk("metadata.annotations", ANNOTATION_LB_SOURCE_RANGES);
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(&path, "may only be used when `type` is 'LoadBalancer'"));
        }
        let val = val.trim();
        if !val.is_empty() {
            for cidr in val.split(',') {
                errs.extend(net::valid_cidr_errors(&path, cidr.trim()));
            }
        }
    }

    let allocate = get(sp, "allocateLoadBalancerNodePorts");
    if allocate.is_some() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if ty == "LoadBalancer" && allocate.is_none() {
        // Upstream reports this one without the `spec.` prefix.
        errs.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }

    errs.extend(load_balancer_class(None, svc));
    errs.extend(external_traffic_policy(svc));
    errs.extend(internal_traffic_policy(svc));

    if let Some(td) = value::opt_s(sp, "trafficDistribution")
        && td != "PreferClose"
    {
        errs.push(FieldError::not_supported("spec.trafficDistribution", quote(td), &["PreferClose"]));
    }
    errs
}

/// `%#v` of the `core.ServicePort{Protocol, Port}` key upstream reports duplicates with.
fn service_port_key_repr(protocol: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        quote(protocol),
        port
    )
}

/// validateServicePort.
fn service_port<'a>(p: &'a Value, require_name: bool, names_seen: &mut Vec<&'a str>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(p, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(pc(path, "name"), ""));
    } else if !name.is_empty() {
        errs.extend(names::label_errors(&pc(path, "name"), name));
        if names_seen.contains(&name) {
            errs.push(FieldError::duplicate(pc(path, "name"), quote(name)));
        } else {
            names_seen.push(name);
        }
    }
    let port = value::i(p, "port");
    errs.extend(names::port_num(port).into_iter().map(|m| FieldError::invalid(pc(path, "port"), port.to_string(), m)));
    let protocol = s(p, "protocol");
    if protocol.is_empty() {
        errs.push(FieldError::required(pc(path, "protocol"), ""));
    } else if !PROTOCOLS.contains(&protocol) {
        errs.push(FieldError::not_supported(pc(path, "protocol"), quote(protocol), PROTOCOLS));
    }
    errs.extend(names::port_num_or_name(&pc(path, "targetPort"), get(p, "targetPort")));
    if let Some(app) = value::opt_s(p, "appProtocol") {
        errs.extend(names::qualified_name_errors(&pc(path, "appProtocol"), app));
    }
    errs
}

/// validateClientIPAffinityConfig.
fn client_ip_affinity(config: Option<&Value>) -> Vec<FieldError> {
    let path = "spec.sessionAffinityConfig";
    let detail = "when session affinity type is ClientIP";
    let Some(config) = config else { return vec![FieldError::required(path, detail)] };
    let Some(client_ip) = get(config, "clientIP") else {
        return vec![FieldError::required(pc(path, "clientIP"), detail)];
    };
    let tpath = pc(&pc(path, "clientIP"), "timeoutSeconds");
    let Some(timeout) = value::opt_i(client_ip, "timeoutSeconds") else {
        return vec![FieldError::required(tpath, detail)];
    };
    if timeout <= 0 || timeout > MAX_AFFINITY_TIMEOUT {
        return vec![FieldError::invalid(
            tpath,
            timeout.to_string(),
            format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"),
        )];
    }
    Vec::new()
}

/// ValidateServiceClusterIPsRelatedFields.
fn validate_cluster_ips_related(svc: &Value) -> Vec<FieldError> {
    if svc_type(svc) == "ExternalName" {
        return Vec::new();
    }
    let sp = spec(svc);
    let mut errs = Vec::new();
    let ips_value = get(sp, "clusterIPs");
    let ips = cluster_ips(svc).unwrap_or_default();
    let ips_repr = render::json_str_slice("[]string", ips_value);
    let cluster_ip = s(sp, "clusterIP");
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required("spec.clusterIPs", ""));
        } else if ips[0] != cluster_ip {
            errs.push(FieldError::invalid("spec.clusterIPs", &ips_repr, "first value must match `clusterIP`"));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid("spec.clusterIPs", &ips_repr, "must be empty when `clusterIP` is not specified"));
    }

    let families = ip_families(svc).unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(pi("spec.ipFamilies", i), quote(f), &["IPv4", "IPv6"]));
        }
        if seen.contains(&f.as_str()) {
            errs.push(FieldError::duplicate(pi("spec.ipFamilies", i), quote(f)));
        }
        seen.push(f);
    }

    if let Some(policy) = value::opt_s(sp, "ipFamilyPolicy")
        && !POLICIES.contains(&policy)
    {
        errs.push(FieldError::not_supported("spec.ipFamilyPolicy", quote(policy), POLICIES));
    }

    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid("spec.clusterIPs", &ips_repr, "'None' must be the first and only value"));
            }
            continue;
        }
        let e = net::valid_ip_errors(&pi("spec.clusterIPs", i), ip);
        has_invalid |= !e.is_empty();
        errs.extend(e);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid("spec.clusterIPs", &ips_repr, "may only hold up to 2 values"));
    }
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 && !net::is_dual_stack(&ips) {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            &ips_repr,
            "may specify no more than one IP for each IP family",
        ));
    }
    if !is_headless(svc) && !ips.is_empty() && !families.is_empty() {
        for (i, ip) in ips.iter().enumerate() {
            let Some(family) = families.get(i) else { break };
            let v6 = net::is_ipv6_string(ip);
            if family == "IPv4" && v6 {
                errs.push(FieldError::invalid(
                    pi("spec.clusterIPs", i),
                    quote(ip),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if family == "IPv6" && !v6 {
                errs.push(FieldError::invalid(
                    pi("spec.clusterIPs", i),
                    quote(ip),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

/// validateUpgradeDowngradeClusterIPs.
fn upgrade_downgrade_cluster_ips(old: &Value, new: &Value) -> Vec<FieldError> {
    if svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName" {
        return Vec::new();
    }
    if is_headless(old) && is_headless(new) {
        return Vec::new();
    }
    let old_ips = cluster_ips(old).unwrap_or_default();
    let new_ips = cluster_ips(new).unwrap_or_default();
    let repr = render::json_str_slice("[]string", get(spec(new), "clusterIPs"));
    let mut errs = Vec::new();
    if old_ips.len() == new_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if *ip != new_ips[i] {
                errs.push(FieldError::invalid(pi("spec.clusterIPs", i), &repr, "may not change once set"));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &repr, "primary clusterIP can not be unset"));
        }
        if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &repr, "may not change once set"));
        }
        if new_ips.len() == 1 && value::opt_s(spec(new), "ipFamilyPolicy") != Some("SingleStack") {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                render::opt_quote(value::opt_s(spec(new), "ipFamilyPolicy")),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(FieldError::invalid("spec.clusterIPs[0]", &repr, "may not change once set"));
    }
    errs
}

/// validateUpgradeDowngradeIPFamilies (including upstream's reuse of index 0 and of the
/// clusterIPs value in some messages).
fn upgrade_downgrade_ip_families(old: &Value, new: &Value) -> Vec<FieldError> {
    if svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName" {
        return Vec::new();
    }
    if is_headless(old) != is_headless(new) || is_headless(new) {
        return Vec::new();
    }
    let old_f = ip_families(old).unwrap_or_default();
    let new_f = ip_families(new).unwrap_or_default();
    let families_repr = render::json_str_slice("[]core.IPFamily", get(spec(new), "ipFamilies"));
    let ips_repr = render::json_str_slice("[]string", get(spec(new), "clusterIPs"));
    let mut errs = Vec::new();
    if old_f.len() == new_f.len() {
        for (i, f) in old_f.iter().enumerate() {
            if *f != new_f[i] {
                errs.push(FieldError::invalid("spec.ipFamilies[0]", &families_repr, "may not change once set"));
            }
        }
    } else if old_f.len() > new_f.len() {
        if cluster_ips(new).unwrap_or_default().is_empty() {
            errs.push(FieldError::invalid("spec.ipFamilies[0]", &families_repr, "primary ipFamily can not be unset"));
        }
        if !new_f.is_empty() && new_f[0] != old_f[0] {
            errs.push(FieldError::invalid("spec.ipFamilies[0]", &ips_repr, "may not change once set"));
        }
        if new_f.len() == 1 && value::opt_s(spec(new), "ipFamilyPolicy") != Some("SingleStack") {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                render::opt_quote(value::opt_s(spec(new), "ipFamilyPolicy")),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if !old_f.is_empty() && !new_f.is_empty() && new_f[0] != old_f[0] {
        errs.push(FieldError::invalid("spec.ipFamilies[0]", &ips_repr, "may not change once set"));
    }
    errs
}

/// validateLoadBalancerClassField.
fn load_balancer_class(old: Option<&Value>, svc: &Value) -> Vec<FieldError> {
    let class = value::opt_s(spec(svc), "loadBalancerClass");
    let mut errs = Vec::new();
    if let Some(old) = old
        && svc_type(old) == "LoadBalancer"
        && svc_type(svc) == "LoadBalancer"
        && value::opt_s(spec(old), "loadBalancerClass") != class
    {
        errs.push(FieldError::invalid("spec.loadBalancerClass", render::opt_quote(class), "may not change once set"));
    }
    match class {
        Some(c) if svc_type(svc) == "LoadBalancer" => {
            errs.extend(names::qualified_name_errors("spec.loadBalancerClass", c))
        }
        Some(_) => {
            errs.push(FieldError::forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"))
        }
        None => {}
    }
    errs
}

/// validateServiceExternalTrafficPolicy. A missing healthCheckNodePort is not reported: the
/// server allocates it before validating, as upstream does, so upstream never shows that error.
fn external_traffic_policy(svc: &Value) -> Vec<FieldError> {
    let sp = spec(svc);
    let etp = s(sp, "externalTrafficPolicy");
    let mut errs = Vec::new();
    if !externally_accessible(svc) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                quote(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported("spec.externalTrafficPolicy", quote(etp), &["Cluster", "Local"]));
    }
    let hc = value::i(sp, "healthCheckNodePort");
    if !needs_health_check(svc) {
        if hc != 0 {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                hc.to_string(),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    } else if hc != 0 {
        errs.extend(
            names::port_num(hc).into_iter().map(|m| FieldError::invalid("spec.healthCheckNodePort", hc.to_string(), m)),
        );
    }
    errs
}

/// validateServiceInternalTrafficFieldsValue.
fn internal_traffic_policy(svc: &Value) -> Vec<FieldError> {
    match value::opt_s(spec(svc), "internalTrafficPolicy") {
        None if matches!(svc_type(svc), "NodePort" | "LoadBalancer" | "ClusterIP") => {
            vec![FieldError::required("spec.internalTrafficPolicy", "")]
        }
        Some(p) if p != "Cluster" && p != "Local" => {
            vec![FieldError::not_supported("spec.internalTrafficPolicy", quote(p), &["Cluster", "Local"])]
        }
        _ => Vec::new(),
    }
}
