//! What DNS needs from a Service and an EndpointSlice, extracted once when the object arrives so
//! the zone never keeps (or re-reads) whole API objects. Validation lives here: a label that
//! could not be a DNS label yields no record instead of a malformed name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// dns-spec S10: the pre-`publishNotReadyAddresses` way of publishing unready endpoints.
pub const TOLERATE_UNREADY_ANNOTATION: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// `namespace/name` of a Service or of an EndpointSlice, in one allocation (a namespace is a
/// DNS label: it holds no `/`). The zone keys every Service and slice of the cluster by one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey(format!("{namespace}/{name}").into_boxed_str())
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&*self.0, |(_, name)| name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Cluster IPs in `clusterIPs` order; empty while allocation is pending.
    ClusterIp(Box<[IpAddr]>),
    Headless,
    /// The target in wire form, or `None` when `externalName` is not a valid name.
    ExternalName(Option<Box<[u8]>>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// A valid DNS label, or `None` for an unnamed port (which gets no `_port._proto` name).
    pub name: Option<Box<str>>,
    pub port: u16,
    /// Lowercase: `tcp`, `udp`, `sctp`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub kind: ServiceKind,
    pub ports: Box<[PortInfo]>,
    /// Every endpoint counts as ready (S10).
    pub publish_not_ready: bool,
}

/// One endpoint, borrowed from its [`SliceInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo<'a> {
    /// Never empty.
    pub addresses: Addresses<'a>,
    /// A valid DNS label from the endpoint's `hostname` field.
    pub hostname: Option<&'a str>,
    /// `conditions.ready` true or unset (S10).
    pub ready: bool,
}

/// An endpoint's addresses: a slice holds one address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addresses<'a> {
    V4(&'a [Ipv4Addr]),
    V6(&'a [Ipv6Addr]),
}

impl Addresses<'_> {
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let (v4, v6) = match *self {
            Addresses::V4(a) => (a, &[][..]),
            Addresses::V6(a) => (&[][..], a),
        };
        v4.iter().map(|ip| IpAddr::V4(*ip)).chain(v6.iter().map(|ip| IpAddr::V6(*ip)))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Addresses::V4(a), IpAddr::V4(ip)) => a.contains(&ip),
            (Addresses::V6(a), IpAddr::V6(ip)) => a.contains(&ip),
            _ => false,
        }
    }
}

/// Where a slice's addresses are kept: 4 bytes each in an IPv4 slice, 16 in an IPv6 one.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Packed {
    V4(Box<[Ipv4Addr]>),
    V6(Box<[Ipv6Addr]>),
}

/// Readiness, in the top bit of an endpoint's end offset.
const READY: u32 = 1 << 31;

/// An EndpointSlice as the zone keeps it. Its endpoints are packed, since a node keeps every
/// endpoint of the cluster (300,000 in the scale goal): all addresses in one list of the
/// slice's family, and per endpoint only where its addresses end and whether it is ready,
/// 8 bytes an IPv4 endpoint instead of two allocations each. Hostnames are rare outside
/// StatefulSets and live aside. The owning Service is where the zone files it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub ports: Box<[PortInfo]>,
    /// Every endpoint's addresses, back to back.
    addresses: Packed,
    /// Per endpoint: the end of its addresses in `addresses`, `READY` when it is ready.
    ends: Box<[u32]>,
    /// Hostnames by endpoint index, in index order.
    hostnames: Box<[(u32, Box<str>)]>,
}

impl SliceInfo {
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointInfo<'_>> + '_ {
        let mut start = 0usize;
        let mut names = self.hostnames.iter().peekable();
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let (ready, end) = (end & READY != 0, (end & !READY) as usize);
            let addresses = match &self.addresses {
                Packed::V4(a) => Addresses::V4(a.get(start..end).unwrap_or_default()),
                Packed::V6(a) => Addresses::V6(a.get(start..end).unwrap_or_default()),
            };
            start = end;
            let hostname = names.next_if(|(at, _)| *at as usize == i).map(|(_, h)| &**h);
            EndpointInfo { addresses, hostname, ready }
        })
    }
}

/// A DNS label as this zone accepts one from the API: 1–63 bytes of `[a-z0-9-]` after
/// lowercasing (Kubernetes names and hostnames are already of this form).
pub fn dns_label(s: &str) -> Option<Box<str>> {
    let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| s.to_ascii_lowercase().into_boxed_str())
}

pub fn service_key(svc: &Service) -> Option<ObjectKey> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    Some(ObjectKey::new(ns, svc.metadata.name.as_deref()?))
}

pub fn slice_key(slice: &EndpointSlice) -> Option<ObjectKey> {
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some(ObjectKey::new(ns, slice.metadata.name.as_deref()?))
}

/// The lowercase protocol label of an SRV name, or `None` for a protocol the API does not
/// allow (such a port gets no record).
fn protocol_label(protocol: Option<&str>) -> Option<&'static str> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn port_name(name: Option<&str>) -> Option<Box<str>> {
    name.filter(|n| !n.is_empty()).and_then(dns_label)
}

pub fn service_info(svc: &Service) -> ServiceInfo {
    let Some(spec) = &svc.spec else {
        return ServiceInfo {
            kind: ServiceKind::ClusterIp(Box::default()),
            ports: Box::default(),
            publish_not_ready: false,
        };
    };
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().and_then(external_name_wire);
        ServiceKind::ExternalName(target)
    } else if spec.cluster_ip.as_deref() == Some("None")
        || spec.cluster_ips.as_ref().and_then(|ips| ips.first()).is_some_and(|ip| ip == "None")
    {
        ServiceKind::Headless
    } else {
        let listed = spec.cluster_ips.as_deref().filter(|ips| !ips.is_empty());
        let texts: Vec<&str> = match listed {
            Some(ips) => ips.iter().map(String::as_str).collect(),
            None => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in texts.iter().filter_map(|t| t.parse::<IpAddr>().ok()) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        ServiceKind::ClusterIp(ips.into_boxed_slice())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortInfo {
                name: port_name(p.name.as_deref()),
                port: u16::try_from(p.port).ok().filter(|&p| p != 0)?,
                protocol: protocol_label(p.protocol.as_deref())?,
            })
        })
        .collect();
    let annotated = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    ServiceInfo { kind, ports, publish_not_ready: annotated || spec.publish_not_ready_addresses == Some(true) }
}

/// `externalName` in wire form, lowercased so in-zone targets can be looked up.
fn external_name_wire(name: &str) -> Option<Box<[u8]>> {
    let name = name.trim();
    if name.is_empty() || !name.is_ascii() {
        return None;
    }
    let mut wire = crate::wire::text_to_wire(&name.to_ascii_lowercase())?;
    // The root alone is not a usable alias target.
    (wire.len() > 1).then(|| {
        wire.shrink_to_fit();
        wire.into_boxed_slice()
    })
}

/// What the zone keeps of `slice`, and the Service it belongs to (its
/// `kubernetes.io/service-name` label).
pub fn slice_info(slice: &EndpointSlice) -> (Option<Box<str>>, SliceInfo) {
    let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|s| s.as_str().into());
    let want_v4 = match slice.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        // FQDN slices (deprecated) carry no addresses DNS can serve.
        _ => {
            let empty = SliceInfo {
                ports: Box::default(),
                addresses: Packed::V4(Box::default()),
                ends: Box::default(),
                hostnames: Box::default(),
            };
            return (service, empty);
        }
    };
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortInfo {
                name: port_name(p.name.as_deref()),
                // A nil port means "all ports": nothing to put in an SRV record.
                port: u16::try_from(p.port?).ok().filter(|&p| p != 0)?,
                protocol: protocol_label(p.protocol.as_deref())?,
            })
        })
        .collect();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let mut ends = Vec::new();
    let mut hostnames = Vec::new();
    for ep in &slice.endpoints {
        let start = v4.len() + v6.len();
        for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
            match ip {
                IpAddr::V4(ip) if want_v4 => v4.push(ip),
                IpAddr::V6(ip) if !want_v4 => v6.push(ip),
                _ => {}
            }
        }
        let end = v4.len() + v6.len();
        // (The API allows 100 addresses for each of 1,000 endpoints: far below the flag bit.)
        if end == start || end >= READY as usize {
            continue;
        }
        if let Some(h) = ep.hostname.as_deref().and_then(dns_label) {
            hostnames.push((ends.len() as u32, h));
        }
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        ends.push(end as u32 | if ready { READY } else { 0 });
    }
    let addresses = if want_v4 { Packed::V4(v4.into_boxed_slice()) } else { Packed::V6(v6.into_boxed_slice()) };
    let info = SliceInfo { ports, addresses, ends: ends.into_boxed_slice(), hostnames: hostnames.into_boxed_slice() };
    (service, info)
}

/// dns-spec K7: the label naming an endpoint that has no hostname.
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dashed_ip_follows_coredns() {
        assert_eq!(dashed_ip("172.0.0.2".parse().unwrap()), "172-0-0-2");
        assert_eq!(dashed_ip("5678:abcd::1".parse().unwrap()), "5678-abcd--1");
        assert_eq!(dashed_ip("2001:db8:3333:4444:5555:6666::".parse().unwrap()), "2001-db8-3333-4444-5555-6666--0");
    }

    #[test]
    fn packed_endpoints_keep_their_addresses_hostnames_and_readiness() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "x", "port": 81, "protocol": "ICMP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "hostname": "Web-0"},
                {"addresses": ["fd00::1"], "hostname": "skipped"},
                {"addresses": ["10.0.0.2", "10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.4"], "hostname": "web-3"}
            ]
        }))
        .unwrap();
        let (service, info) = slice_info(&slice);
        assert_eq!(service.as_deref(), Some("web"));
        assert_eq!(info.ports.len(), 1, "a port of a protocol the API does not allow gets no record");
        assert_eq!(info.ports[0].protocol, "tcp");
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let eps: Vec<(Vec<IpAddr>, Option<&str>, bool)> =
            info.endpoints().map(|ep| (ep.addresses.iter().collect(), ep.hostname, ep.ready)).collect();
        assert_eq!(
            eps,
            vec![
                (vec![a("10.0.0.1")], Some("web-0"), true),
                (vec![a("10.0.0.2"), a("10.0.0.3")], None, false),
                (vec![a("10.0.0.4")], Some("web-3"), true),
            ]
        );
        let first = info.endpoints().next().unwrap().addresses;
        assert!(first.contains(a("10.0.0.1")) && !first.contains(a("10.0.0.2")));
    }

    #[test]
    fn labels_are_validated_and_lowercased() {
        assert_eq!(dns_label("Web-0").as_deref(), Some("web-0"));
        assert_eq!(dns_label("a.b"), None);
        assert_eq!(dns_label(""), None);
        assert_eq!(dns_label(&"x".repeat(64)), None);
    }
}
