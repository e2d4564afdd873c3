//! The desired-state compiler: one Service plus its EndpointSlices plus this node → the
//! service ports the data plane must serve, with everything resolved (addresses, node port,
//! usable endpoints after the ready / serving-terminating fallback, traffic policies,
//! affinity). Pure and deterministic: no IO, no clock, sorted output.
//!
//! It compiles one Service at a time because that is the unit of change: a Service or one of
//! its slices changed, so that Service — and nothing else — is recompiled and re-rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services carrying either label belong to another proxy (kube-proxy's informer selector
/// `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`).
const SKIP_LABELS: [&str; 2] = ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"];

/// What the compiler needs to know about the node it compiles for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    pub name: String,
    /// The cluster's pod CIDR: cluster-IP traffic from outside it is masqueraded.
    pub pod_cidr: Ipv4Net,
    /// Cluster IPs this node answers on itself (the node-local cluster DNS on the kube-dns
    /// address): Services with these addresses are left alone, so no DNAT (and none of its
    /// conntrack races) stands between a pod and them.
    pub served_locally: Vec<Ipv4Addr>,
}

/// A Service's `namespace/name`. Every map and every compiled port of the node names its
/// Service by one, so it is one shared allocation and a clone is a reference count (at 30,000
/// Services, a pair of `String`s per copy was megabytes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey(Arc<str>);

impl ServiceKey {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> ServiceKey {
        ServiceKey(format!("{}/{}", namespace.as_ref(), name.as_ref()).into())
    }

    pub fn of(svc: &Service) -> ServiceKey {
        ServiceKey::new(
            svc.metadata.namespace.as_deref().unwrap_or_default(),
            svc.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// (A namespace is a DNS label: it holds no `/`.)
    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&*self.0, |(_, name)| name)
    }
}

/// Ordered by namespace, then name.
impl Ord for ServiceKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.namespace(), self.name()).cmp(&(other.namespace(), other.name()))
    }
}

impl PartialOrd for ServiceKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lower-case name nftables and kube-proxy's chain names use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One usable endpoint of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// Everything the data plane needs for one port of one Service on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub service: ServiceKey,
    /// The port's name ("" when the Service has a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the LoadBalancer ingress IPs (ipMode VIP): traffic to them is
    /// external traffic, as for the node port.
    pub external_ips: Vec<Ipv4Addr>,
    /// The LoadBalancer ingress IPs among `external_ips`: the node takes these addresses itself
    /// (puts them on `lo`), as a load balancer without a cloud must.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// externalTrafficPolicy: Local.
    pub external_local: bool,
    /// internalTrafficPolicy: Local.
    pub internal_local: bool,
    /// Usable endpoints anywhere in the cluster (ready ones, else serving-and-terminating ones).
    pub cluster_endpoints: Vec<Backend>,
    /// Usable endpoints on this node, with the same fallback computed on its own (the ones a
    /// local client can hairpin to, and the only ones of the Local traffic policies).
    pub local_endpoints: Vec<Backend>,
}

impl ServicePort {
    /// `namespace/name:port` (or `namespace/name` for an unnamed port), as kube-proxy names a
    /// service port in its logs and comments.
    pub fn display_name(&self) -> String {
        if self.port_name.is_empty() {
            self.service.to_string()
        } else {
            format!("{}:{}", self.service, self.port_name)
        }
    }

    /// The endpoints cluster-IP traffic may reach.
    pub fn internal_endpoints(&self) -> &[Backend] {
        if self.internal_local { &self.local_endpoints } else { &self.cluster_endpoints }
    }

    /// The endpoints external traffic (node port, external and LB IPs) from outside may reach.
    pub fn external_endpoints(&self) -> &[Backend] {
        if self.external_local { &self.local_endpoints } else { &self.cluster_endpoints }
    }

    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// What the compiler reads of a Service, taken from the object as it arrives. The node keeps
/// these instead of the objects: a Service object with its metadata is kilobytes, this is a
/// few hundred bytes, and 30,000 Services must fit a node agent in well under 100 MB.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// The proxy ignores this Service entirely (CIP-17, CIP-18): another proxy's, headless,
    /// ExternalName or without a cluster IP.
    pub skipped: bool,
    pub cluster_ips: Box<[Ipv4Addr]>,
    /// `spec.externalIPs` plus the LoadBalancer ingress IPs (sorted, unique).
    pub external_ips: Box<[Ipv4Addr]>,
    pub load_balancer_ips: Box<[Ipv4Addr]>,
    pub affinity_timeout: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    /// Ports with a known protocol and a port number in range, in spec order.
    pub ports: Vec<PortInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// What the compiler reads of an EndpointSlice (IPv4 slices only; others carry nothing), as
/// seen from one node: 8 bytes an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceInfo {
    pub ports: Box<[SlicePort]>,
    pub endpoints: Box<[EndpointInfo]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Box<str>,
    /// `None` for an unknown protocol (the port then matches no Service port).
    pub protocol: Option<Protocol>,
    /// `None` when missing, 0 or out of range (the port then serves nothing).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The endpoint's first address: upstream defines no meaning for the others and
    /// kube-proxy ignores them.
    pub ip: Ipv4Addr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On the node the slice was read for (`nodeName`).
    pub local: bool,
}

impl ServiceInfo {
    pub fn of(svc: &Service) -> ServiceInfo {
        let labels = svc.metadata.labels.as_ref();
        let Some(spec) = &svc.spec else { return ServiceInfo { skipped: true, ..ServiceInfo::default() } };
        let skipped = SKIP_LABELS.iter().any(|l| labels.is_some_and(|m| m.contains_key(*l)))
            || spec.type_.as_deref() == Some("ExternalName")
            || matches!(spec.cluster_ip.as_deref(), None | Some("") | Some("None"));
        if skipped {
            return ServiceInfo { skipped: true, ..ServiceInfo::default() };
        }
        let mut cluster_ips: Vec<Ipv4Addr> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|s| parse_v4(s)).collect(),
            _ => spec.cluster_ip.as_deref().and_then(parse_v4).into_iter().collect(),
        };
        cluster_ips.dedup();
        let mut external_ips: BTreeSet<Ipv4Addr> =
            spec.external_ips.iter().flatten().filter_map(|s| parse_v4(s)).collect();
        let lb_ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        let mut load_balancer_ips = BTreeSet::new();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            for ing in lb_ingress.into_iter().flatten() {
                // ipMode Proxy means the load balancer itself delivers to the node; only VIP is ours.
                if ing.ip_mode.as_deref().is_none_or(|m| m == "VIP") {
                    load_balancer_ips.extend(ing.ip.as_deref().and_then(parse_v4));
                }
            }
        }
        external_ips.extend(&load_balancer_ips);
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(10_800)
        });
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some(PortInfo {
                    name: sp.name.clone().unwrap_or_default(),
                    protocol: Protocol::parse(sp.protocol.as_deref())?,
                    port: u16::try_from(sp.port).ok()?,
                    node_port: sp.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
                })
            })
            .collect();
        let mut ports: Vec<PortInfo> = ports;
        // Kept for the Service's life: no spare capacity (a collected list has room for four).
        ports.shrink_to_fit();
        ServiceInfo {
            skipped: false,
            cluster_ips: cluster_ips.into_boxed_slice(),
            external_ips: external_ips.into_iter().collect(),
            load_balancer_ips: load_balancer_ips.into_iter().collect(),
            affinity_timeout,
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            ports,
        }
    }
}

impl SliceInfo {
    /// `slice` as node `node` sees it.
    pub fn of(slice: &EndpointSlice, node: &str) -> SliceInfo {
        if slice.address_type != "IPv4" {
            return SliceInfo::default();
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePort {
                name: p.name.as_deref().unwrap_or_default().into(),
                protocol: Protocol::parse(p.protocol.as_deref()),
                port: p.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|ep| {
                let ip = parse_v4(ep.addresses.first()?)?;
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                Some(EndpointInfo {
                    ip,
                    ready,
                    serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                    local: ep.node_name.as_deref() == Some(node),
                })
            })
            .collect();
        SliceInfo { ports, endpoints }
    }
}

/// One endpoint of one slice, before the usable-set choice.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    backend: Backend,
    local: bool,
    ready: bool,
    serving_terminating: bool,
}

/// Ready endpoints, or — when there are none — the serving-and-terminating ones (CIP-11).
fn usable(cands: &[Candidate], pick: impl Fn(&Candidate) -> bool) -> Vec<Backend> {
    let ready: BTreeSet<Backend> = cands.iter().filter(|c| pick(c) && c.ready).map(|c| c.backend).collect();
    let chosen = if ready.is_empty() {
        cands.iter().filter(|c| pick(c) && c.serving_terminating).map(|c| c.backend).collect()
    } else {
        ready
    };
    chosen.into_iter().collect()
}

fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}

/// Compiles one Service from its objects (for tests and one-off use; the node keeps
/// [`ServiceInfo`] and [`SliceInfo`] and calls [`compile`]).
pub fn compile_service(svc: &Service, slices: &[&EndpointSlice], node: &NodeContext) -> Vec<ServicePort> {
    let slices: Vec<SliceInfo> = slices.iter().map(|s| SliceInfo::of(s, &node.name)).collect();
    compile(&ServiceKey::of(svc), &ServiceInfo::of(svc), slices.iter(), node)
}

/// Compiles one Service with the EndpointSlices labelled with its name (any manager, CIP-22)
/// into its ports with everything resolved for `node`. Returns nothing for a Service the
/// proxy skips.
pub fn compile<'a>(
    key: &ServiceKey,
    svc: &ServiceInfo,
    slices: impl Iterator<Item = &'a SliceInfo> + Clone,
    node: &NodeContext,
) -> Vec<ServicePort> {
    if svc.skipped || svc.cluster_ips.iter().any(|ip| node.served_locally.contains(ip)) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(svc.ports.len());
    for sp in &svc.ports {
        // Slice ports are matched to service ports by name and protocol (PORT-10).
        let mut cands = Vec::new();
        for slice in slices.clone() {
            let Some(slice_port) = slice.ports.iter().find(|p| *p.name == *sp.name && p.protocol == Some(sp.protocol))
            else {
                continue;
            };
            let Some(target) = slice_port.port else { continue };
            for ep in &slice.endpoints {
                cands.push(Candidate {
                    backend: Backend { ip: ep.ip, port: target },
                    local: ep.local,
                    ready: ep.ready,
                    serving_terminating: ep.serving && ep.terminating,
                });
            }
        }
        let cluster_endpoints = usable(&cands, |_| true);
        let local_endpoints = usable(&cands, |c| c.local);
        out.push(ServicePort {
            service: key.clone(),
            port_name: sp.name.clone(),
            protocol: sp.protocol,
            port: sp.port,
            cluster_ips: svc.cluster_ips.to_vec(),
            node_port: sp.node_port,
            external_ips: svc.external_ips.to_vec(),
            load_balancer_ips: svc.load_balancer_ips.to_vec(),
            affinity_timeout: svc.affinity_timeout,
            external_local: svc.external_local,
            internal_local: svc.internal_local,
            cluster_endpoints,
            local_endpoints,
        });
    }
    out.sort_by(|a, b| (a.port, a.protocol, &a.port_name).cmp(&(b.port, b.protocol, &b.port_name)));
    out
}

/// What the compiler reads of the watched objects, kept compact (see [`ServiceInfo`]) and
/// indexed the way it reads them: per Service, the Service and the slices labelled with its
/// name, under one key.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Boxed: B-tree nodes are about half full, and an entry is over a hundred bytes.
    entries: BTreeMap<ServiceKey, Box<Entry>>,
    services: usize,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    /// While the Service exists.
    info: Option<ServiceInfo>,
    /// Its slices by name. A Service has one slice per 100 endpoints, so a short sorted list
    /// (a map per Service would cost a whole B-tree node each).
    slices: Vec<(Box<str>, SliceInfo)>,
}

impl Snapshot {
    /// The Service a slice belongs to, from its label.
    pub fn owner_of(slice: &EndpointSlice) -> Option<ServiceKey> {
        let ns = slice.metadata.namespace.as_deref()?;
        let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some(ServiceKey::new(ns, svc))
    }

    /// How many Services it holds.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// What it holds of Service `key`, while the Service exists.
    pub fn info(&self, key: &ServiceKey) -> Option<&ServiceInfo> {
        self.entries.get(key)?.info.as_ref()
    }

    /// The Services it holds.
    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> + '_ {
        self.entries.iter().filter(|(_, e)| e.info.is_some()).map(|(k, _)| k)
    }

    pub fn put_service(&mut self, key: ServiceKey, info: ServiceInfo) {
        if self.entries.entry(key).or_default().info.replace(info).is_none() {
            self.services += 1;
        }
    }

    pub fn remove_service(&mut self, key: &ServiceKey) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if entry.info.take().is_some() {
            self.services -= 1;
        }
        if entry.slices.is_empty() {
            self.entries.remove(key);
        }
    }

    /// Replaces every Service with `fresh` (a relist); slices stay.
    pub fn replace_services(&mut self, fresh: BTreeMap<ServiceKey, ServiceInfo>) {
        for entry in self.entries.values_mut() {
            entry.info = None;
        }
        self.entries.retain(|_, e| !e.slices.is_empty());
        self.services = 0;
        for (key, info) in fresh {
            self.put_service(key, info);
        }
    }

    /// Files `slice` under `owner`, replacing a slice of the same name; returns the key it
    /// is filed under (shared with the map's).
    pub fn put_slice(&mut self, owner: ServiceKey, name: &str, slice: SliceInfo) -> ServiceKey {
        let entry = self.entries.entry(owner);
        let key = entry.key().clone();
        let list = &mut entry.or_default().slices;
        match list.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => list[i].1 = slice,
            Err(i) => {
                // Exactly one more: most Services have one slice, and a doubled list is
                // megabytes at 30,000 Services.
                list.reserve_exact(1);
                list.insert(i, (name.into(), slice));
            }
        }
        key
    }

    /// Removes slice `name` of `owner`, if filed there.
    pub fn remove_slice(&mut self, owner: &ServiceKey, name: &str) {
        let Some(entry) = self.entries.get_mut(owner) else { return };
        entry.slices.retain(|(n, _)| &**n != name);
        if entry.slices.is_empty() && entry.info.is_none() {
            self.entries.remove(owner);
        }
    }

    pub fn compile(&self, key: &ServiceKey, node: &NodeContext) -> Vec<ServicePort> {
        let Some(Entry { info: Some(svc), slices }) = self.entries.get(key).map(|e| &**e) else { return Vec::new() };
        compile(key, svc, slices.iter().map(|(_, s)| s), node)
    }

    /// The whole service table, Service by Service.
    pub fn compile_all(&self, node: &NodeContext) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
        self.service_keys().map(|k| (k.clone(), self.compile(k, node))).filter(|(_, ports)| !ports.is_empty()).collect()
    }
}

/// The service table of a snapshot for one node, each Service compiled as it is read: a full
/// sync never holds the whole compiled table.
pub struct Compiled<'a> {
    pub snap: &'a Snapshot,
    pub node: &'a NodeContext,
}

impl crate::ServiceTable for Compiled<'_> {
    fn for_each(&self, f: &mut dyn FnMut(&ServiceKey, &[ServicePort])) {
        for key in self.snap.service_keys() {
            let ports = self.snap.compile(key, self.node);
            if !ports.is_empty() {
                f(key, &ports);
            }
        }
    }
}
