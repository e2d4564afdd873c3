//! What DNS needs from a Service and an EndpointSlice, extracted once when the object arrives so
//! the zone never keeps (or re-reads) whole API objects. Validation lives here: a label that
//! could not be a DNS label yields no record instead of a malformed name.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// dns-spec S10: the pre-`publishNotReadyAddresses` way of publishing unready endpoints.
pub const TOLERATE_UNREADY_ANNOTATION: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// `(namespace, name)` of a Service or of an EndpointSlice.
pub type ObjectKey = (Box<str>, Box<str>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Cluster IPs in `clusterIPs` order; empty while allocation is pending.
    ClusterIp(Vec<IpAddr>),
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
    pub protocol: Box<str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub kind: ServiceKind,
    pub ports: Vec<PortInfo>,
    /// Every endpoint counts as ready (S10).
    pub publish_not_ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addresses: Box<[IpAddr]>,
    /// A valid DNS label from the endpoint's `hostname` field.
    pub hostname: Option<Box<str>>,
    /// `conditions.ready` true or unset (S10).
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The owning Service's name from the `kubernetes.io/service-name` label.
    pub service: Option<Box<str>>,
    pub ports: Vec<PortInfo>,
    pub endpoints: Vec<EndpointInfo>,
}

/// A DNS label as this zone accepts one from the API: 1–63 bytes of `[a-z0-9-]` after
/// lowercasing (Kubernetes names and hostnames are already of this form).
pub fn dns_label(s: &str) -> Option<Box<str>> {
    let ok = !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| s.to_ascii_lowercase().into_boxed_str())
}

pub fn service_key(svc: &Service) -> Option<ObjectKey> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    Some((ns.into(), svc.metadata.name.as_deref()?.into()))
}

pub fn slice_key(slice: &EndpointSlice) -> Option<ObjectKey> {
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some((ns.into(), slice.metadata.name.as_deref()?.into()))
}

fn protocol_label(protocol: Option<&str>) -> Box<str> {
    protocol.unwrap_or("TCP").to_ascii_lowercase().into_boxed_str()
}

fn port_name(name: Option<&str>) -> Option<Box<str>> {
    name.filter(|n| !n.is_empty()).and_then(dns_label)
}

pub fn service_info(svc: &Service) -> ServiceInfo {
    let Some(spec) = &svc.spec else {
        return ServiceInfo { kind: ServiceKind::ClusterIp(Vec::new()), ports: Vec::new(), publish_not_ready: false };
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
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortInfo {
                name: port_name(p.name.as_deref()),
                port: u16::try_from(p.port).ok().filter(|&p| p != 0)?,
                protocol: protocol_label(p.protocol.as_deref()),
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

pub fn slice_info(slice: &EndpointSlice) -> SliceInfo {
    let service = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|s| s.as_str().into());
    let want_v4 = match slice.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        // FQDN slices (deprecated) carry no addresses DNS can serve.
        _ => return SliceInfo { service, ports: Vec::new(), endpoints: Vec::new() },
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
                protocol: protocol_label(p.protocol.as_deref()),
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|ep| EndpointInfo {
            addresses: ep
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .filter(|ip| ip.is_ipv4() == want_v4)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            hostname: ep.hostname.as_deref().and_then(dns_label),
            ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .filter(|ep| !ep.addresses.is_empty())
        .collect();
    SliceInfo { service, ports, endpoints }
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
    fn labels_are_validated_and_lowercased() {
        assert_eq!(dns_label("Web-0").as_deref(), Some("web-0"));
        assert_eq!(dns_label("a.b"), None);
        assert_eq!(dns_label(""), None);
        assert_eq!(dns_label(&"x".repeat(64)), None);
    }
}
