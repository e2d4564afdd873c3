//! From one Service (and its EndpointSlices) to the names it owns, each with its answers already
//! in wire form. Pure: no locks, no IO; the zone decides where the results go.
//!
//! Every precomputed answer record is owned by `0xC00C`, a pointer to the question name, so one
//! blob serves any spelling of the name (dns-spec K14: owner names echo the query's case).
//! Generated names (SRV targets, Additional owners) are written as the lowercase object labels
//! followed by a pointer to the zone suffix *in the question*: the question for a given name has
//! a fixed length, so that offset is known here, and the zone part takes the query's case (K14).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::objects::{EndpointInfo, PortInfo, ServiceInfo, ServiceKind, SliceInfo, dashed_ip};
use crate::wire::{self, HEADER_LEN, PTR_QNAME, rtype};

/// The answers of one record type at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrset {
    pub rtype: u16,
    pub answers: u16,
    pub additionals: u16,
    /// `data[..split]` is the Answer section, `data[split..]` the Additional section.
    split: u32,
    data: Box<[u8]>,
}

impl Rrset {
    pub fn answer_bytes(&self) -> &[u8] {
        self.data.get(..self.split as usize).unwrap_or_default()
    }

    pub fn additional_bytes(&self) -> &[u8] {
        self.data.get(self.split as usize..).unwrap_or_default()
    }
}

/// An ExternalName Service's alias (dns-spec S13, K11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The target in wire form, lowercase.
    pub target: Box<[u8]>,
    /// The target's key in the cluster zone when it lies inside it, so it is followed there.
    pub in_zone: Option<Box<[u8]>>,
}

/// Everything served at one name, as built (stored as an [`crate::entry::Entry`]). A node with
/// no rrsets still exists: its other types are NODATA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub rrsets: Box<[Rrset]>,
    pub alias: Option<Box<Alias>>,
}

/// The PTR target of a claim of the Service whose key is `svc_key`, in wire form.
pub fn ptr_target(
    params: &Params,
    svc_key: &[u8],
    claim_ip: IpAddr,
    cluster_ip: bool,
    hostname: Option<&str>,
) -> Vec<u8> {
    let mut t = Vec::with_capacity(svc_key.len() + params.zone.len() + 40);
    if !cluster_ip {
        let label = match hostname {
            Some(h) => h.to_string(),
            None => dashed_ip(claim_ip),
        };
        t.push(label.len() as u8);
        t.extend_from_slice(label.as_bytes());
    }
    t.extend_from_slice(svc_key);
    t.extend_from_slice(&params.zone);
    t
}

/// The compiled zone configuration the builders need.
#[derive(Debug, Clone)]
pub struct Params {
    /// The cluster domain in wire form, lowercase, with the root byte.
    pub zone: Box<[u8]>,
    pub ttl: u32,
}

/// Messages over TCP are at most 65535 bytes; larger rrsets are cut when built.
const MAX_RRSET_BYTES: usize = 65_000;

pub struct RrsetBuilder {
    rtype: u16,
    answer: Vec<u8>,
    answers: u16,
    additional: Vec<u8>,
    additionals: u16,
}

impl RrsetBuilder {
    pub fn new(rtype: u16) -> Self {
        RrsetBuilder { rtype, answer: Vec::new(), answers: 0, additional: Vec::new(), additionals: 0 }
    }

    fn room(&self, more: usize) -> bool {
        self.answer.len() + self.additional.len() + more <= MAX_RRSET_BYTES && self.answers < u16::MAX
    }

    /// Appends one Answer record written by `write` (which must write exactly one RR).
    pub fn answer(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut rr = Vec::new();
        write(&mut rr);
        if self.room(rr.len()) {
            self.answer.extend_from_slice(&rr);
            self.answers += 1;
        }
    }

    pub fn additional(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut rr = Vec::new();
        write(&mut rr);
        if self.room(rr.len()) && self.additionals < u16::MAX {
            self.additional.extend_from_slice(&rr);
            self.additionals += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.answers == 0
    }

    pub fn finish(self) -> Rrset {
        let split = self.answer.len() as u32;
        let mut data = self.answer;
        data.extend_from_slice(&self.additional);
        Rrset {
            rtype: self.rtype,
            answers: self.answers,
            additionals: self.additionals,
            split,
            data: data.into_boxed_slice(),
        }
    }
}

/// Relative key (wire labels, no zone, no root byte) from labels listed leaf first.
pub fn relative_key(labels: &[&str]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(labels.iter().map(|l| l.len() + 1).sum());
    for l in labels {
        k.push(l.len() as u8);
        k.extend_from_slice(l.as_bytes());
    }
    k.into_boxed_slice()
}

fn prepend_label(label: &str, key: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(label.len() + 1 + key.len());
    k.push(label.len() as u8);
    k.extend_from_slice(label.as_bytes());
    k.extend_from_slice(key);
    k.into_boxed_slice()
}

/// The pointer to the zone suffix in the question of a name whose key is `key_len` bytes long.
pub fn zone_pointer(key_len: usize) -> [u8; 2] {
    (0xC000 | (HEADER_LEN + key_len) as u16).to_be_bytes()
}

/// A generated name: the relative labels, then the zone suffix of the question.
fn put_generated(out: &mut Vec<u8>, rel: &[u8], zone_ptr: [u8; 2]) {
    out.extend_from_slice(rel);
    out.extend_from_slice(&zone_ptr);
}

pub fn address_rrsets(ips: &[IpAddr], ttl: u32) -> Vec<Rrset> {
    let mut v4 = RrsetBuilder::new(rtype::A);
    let mut v6 = RrsetBuilder::new(rtype::AAAA);
    for &ip in ips {
        let b = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        b.answer(|o| wire::put_address_rr(o, &PTR_QNAME.to_be_bytes(), ttl, ip));
    }
    [v4, v6].into_iter().filter(|b| !b.is_empty()).map(RrsetBuilder::finish).collect()
}

/// One SRV candidate before deduplication (K6): a target (relative key), a port, an address.
struct SrvCandidate<'a> {
    target: &'a [u8],
    port: u16,
    address: IpAddr,
}

/// dns-spec S5/S11 with CoreDNS's numbers (K6): priority 0, weight ⌊100/n⌋ (≥ 1) over the n
/// candidates before deduplication, one SRV per (target, port), one Additional address record
/// per (target, address).
fn srv_rrset(candidates: &[SrvCandidate<'_>], key_len: usize, ttl: u32) -> Option<Rrset> {
    if candidates.is_empty() {
        return None;
    }
    let weight = u16::try_from((100 / candidates.len()).max(1)).unwrap_or(1);
    let zone_ptr = zone_pointer(key_len);
    let mut b = RrsetBuilder::new(rtype::SRV);
    let mut seen_srv: Vec<(&[u8], u16)> = Vec::new();
    let mut seen_addr: Vec<(&[u8], IpAddr)> = Vec::new();
    for c in candidates {
        if !seen_srv.contains(&(c.target, c.port)) {
            seen_srv.push((c.target, c.port));
            b.answer(|o| {
                let at = wire::begin_rr(o, &PTR_QNAME.to_be_bytes(), rtype::SRV, ttl);
                wire::put_u16(o, 0);
                wire::put_u16(o, weight);
                wire::put_u16(o, c.port);
                put_generated(o, c.target, zone_ptr);
                wire::finish_rdata(o, at);
            });
        }
        if !seen_addr.contains(&(c.target, c.address)) {
            seen_addr.push((c.target, c.address));
            b.additional(|o| {
                let mut owner = Vec::with_capacity(c.target.len() + 2);
                put_generated(&mut owner, c.target, zone_ptr);
                wire::put_address_rr(o, &owner, ttl, c.address);
            });
        }
    }
    Some(b.finish())
}

fn port_matches(p: &PortInfo, name: &str, protocol: &str) -> bool {
    p.name.as_deref() == Some(name) && p.protocol == protocol
}

/// What one Service contributes to the zone.
#[derive(Debug, Default)]
pub struct Built {
    pub names: Vec<(Box<[u8]>, Node)>,
    /// The Service's cluster IPs, whose PTR records (S6) the zone holds ready; the first
    /// Service claiming an IP wins it (K10).
    pub cluster_ips: Vec<IpAddr>,
    // Endpoint PTR records (K10) and, under a ClusterIP Service, endpoint names (K9) are not
    // here: the zone builds them when asked for, from its index of endpoint addresses
    // (300,000 endpoints would cost over 100 MB of ready answers).
}

struct ReadyEndpoint {
    label: Box<str>,
    address: IpAddr,
}

/// The label naming an endpoint address: its hostname, or its dashed IP (K7).
pub fn endpoint_label<'a>(ep: &EndpointInfo<'a>, address: IpAddr) -> std::borrow::Cow<'a, str> {
    match ep.hostname {
        Some(h) => std::borrow::Cow::Borrowed(h),
        None => std::borrow::Cow::Owned(dashed_ip(address)),
    }
}

/// The endpoints of a ClusterIP Service named `label` (K9): one A/AAAA per address, or
/// `None` when no ready endpoint has that label.
pub fn endpoint_name(ttl: u32, svc: &ServiceInfo, slices: &[&SliceInfo], label: &str) -> Option<Node> {
    if !matches!(svc.kind, ServiceKind::ClusterIp(_)) {
        return None;
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for ep in slices.iter().flat_map(|s| s.endpoints()).filter(|ep| ep.ready || svc.publish_not_ready) {
        for address in ep.addresses.iter() {
            if endpoint_label(&ep, address) == label && !ips.contains(&address) {
                ips.push(address);
            }
        }
    }
    (!ips.is_empty()).then(|| Node { rrsets: address_rrsets(&ips, ttl).into_boxed_slice(), alias: None })
}

/// The PTR targets one Service gives an endpoint address (K10): `<label>.<svc>.<ns>.svc.<zone>`
/// for each of its ready endpoints with that address.
pub fn endpoint_ptr_targets(
    params: &Params,
    svc_key: &[u8],
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    ip: IpAddr,
    out: &mut Vec<Vec<u8>>,
) {
    for ep in slices.iter().flat_map(|s| s.endpoints()).filter(|ep| ep.ready || svc.publish_not_ready) {
        if ep.addresses.contains(ip) {
            out.push(ptr_target(params, svc_key, ip, false, ep.hostname));
        }
    }
}

/// Builds every name under `<name>.<ns>.svc.<zone>` and the PTR claims of one Service.
/// `ns` and `name` must already be valid labels.
pub fn build_service(params: &Params, ns: &str, name: &str, svc: &ServiceInfo, slices: &[&SliceInfo]) -> Built {
    let ttl = params.ttl;
    let svc_key = relative_key(&[name, ns, "svc"]);
    let mut built = Built::default();

    if let ServiceKind::ExternalName(target) = &svc.kind {
        let mut rrsets = Vec::new();
        let alias = target.as_ref().map(|target| {
            let mut b = RrsetBuilder::new(rtype::CNAME);
            b.answer(|o| {
                let at = wire::begin_rr(o, &PTR_QNAME.to_be_bytes(), rtype::CNAME, ttl);
                o.extend_from_slice(target);
                wire::finish_rdata(o, at);
            });
            rrsets.push(b.finish());
            let in_zone = target
                .len()
                .checked_sub(params.zone.len())
                .filter(|&at| target[at..] == *params.zone && wire::is_label_boundary(target, at))
                .map(|at| Box::<[u8]>::from(&target[..at]));
            Box::new(Alias { target: target.clone(), in_zone })
        });
        built.names.push((svc_key, Node { rrsets: rrsets.into_boxed_slice(), alias }));
        return built;
    }

    // Ready endpoints in slice order, each address once per label (K23 dedups addresses).
    let mut ready: Vec<ReadyEndpoint> = Vec::new();
    // For SRV: (slice index, endpoint label, address) — slice ports apply to their own endpoints.
    let mut per_slice: Vec<Vec<(usize, IpAddr)>> = Vec::with_capacity(slices.len());
    for slice in slices {
        let mut here = Vec::new();
        for ep in slice.endpoints().filter(|ep| ep.ready || svc.publish_not_ready) {
            for address in ep.addresses.iter() {
                let label: Box<str> = endpoint_label(&ep, address).into();
                let idx = match ready.iter().position(|r| r.label == label && r.address == address) {
                    Some(i) => i,
                    None => {
                        ready.push(ReadyEndpoint { label, address });
                        ready.len() - 1
                    }
                };
                here.push((idx, address));
            }
        }
        per_slice.push(here);
    }
    let endpoint_keys: Vec<Box<[u8]>> = ready.iter().map(|r| prepend_label(&r.label, &svc_key)).collect();

    // Per-endpoint names of a headless Service (S8), one A/AAAA per address. Under a ClusterIP
    // Service (K9) they are built when asked for: see `endpoint_name`.
    if matches!(svc.kind, ServiceKind::Headless) {
        let mut by_label: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
        for r in &ready {
            let ips = by_label.entry(&r.label).or_default();
            if !ips.contains(&r.address) {
                ips.push(r.address);
            }
        }
        for (label, ips) in &by_label {
            let key = prepend_label(label, &svc_key);
            built.names.push((key, Node { rrsets: address_rrsets(ips, ttl).into_boxed_slice(), alias: None }));
        }
    }
    match &svc.kind {
        ServiceKind::ClusterIp(ips) => {
            for &ip in ips {
                built.cluster_ips.push(ip);
            }
            // SRV at `_port._proto` for named Service ports (S5), and at the bare name for all
            // ports (K8).
            let target: &[u8] = &svc_key;
            let srv_at = |key_len: usize, filter: &dyn Fn(&PortInfo) -> bool| {
                let mut candidates = Vec::new();
                for &address in ips {
                    for p in svc.ports.iter().filter(|p| filter(p)) {
                        candidates.push(SrvCandidate { target, port: p.port, address });
                    }
                }
                srv_rrset(&candidates, key_len, ttl)
            };
            let mut seen: Vec<(&str, &str)> = Vec::new();
            for p in &svc.ports {
                let Some(pname) = p.name.as_deref() else { continue };
                if seen.contains(&(pname, p.protocol)) {
                    continue;
                }
                seen.push((pname, p.protocol));
                let key = srv_key(pname, p.protocol, &svc_key);
                if let Some(rrset) = srv_at(key.len(), &|q| port_matches(q, pname, p.protocol)) {
                    built.names.push((key, Node { rrsets: Box::new([rrset]), alias: None }));
                }
            }
            let mut rrsets = address_rrsets(ips, ttl);
            rrsets.extend(srv_at(svc_key.len(), &|_| true));
            built.names.push((svc_key.clone(), Node { rrsets: rrsets.into_boxed_slice(), alias: None }));
        }
        ServiceKind::Headless => {
            // S7: no ready endpoints, no name (NXDOMAIN).
            if ready.is_empty() {
                return built;
            }
            let srv_at = |key_len: usize, filter: &dyn Fn(&PortInfo) -> bool| {
                let mut candidates = Vec::new();
                for (slice, eps) in slices.iter().zip(&per_slice) {
                    for &(idx, address) in eps {
                        for p in slice.ports.iter().filter(|p| filter(p)) {
                            candidates.push(SrvCandidate { target: &endpoint_keys[idx], port: p.port, address });
                        }
                    }
                }
                srv_rrset(&candidates, key_len, ttl)
            };
            let mut named: Vec<(&str, &str)> = Vec::new();
            for p in slices.iter().flat_map(|s| &s.ports) {
                if let Some(n) = p.name.as_deref()
                    && !named.contains(&(n, p.protocol))
                {
                    named.push((n, p.protocol));
                }
            }
            for (pname, proto) in named {
                let key = srv_key(pname, proto, &svc_key);
                if let Some(rrset) = srv_at(key.len(), &|q| port_matches(q, pname, proto)) {
                    built.names.push((key, Node { rrsets: Box::new([rrset]), alias: None }));
                }
            }
            let mut ips: Vec<IpAddr> = Vec::new();
            for r in &ready {
                if !ips.contains(&r.address) {
                    ips.push(r.address);
                }
            }
            let mut rrsets = address_rrsets(&ips, ttl);
            rrsets.extend(srv_at(svc_key.len(), &|_| true));
            built.names.push((svc_key, Node { rrsets: rrsets.into_boxed_slice(), alias: None }));
        }
        ServiceKind::ExternalName(_) => {}
    }
    built
}

fn srv_key(port: &str, protocol: &str, svc_key: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(port.len() + protocol.len() + 4 + svc_key.len());
    k.push(port.len() as u8 + 1);
    k.push(b'_');
    k.extend_from_slice(port.as_bytes());
    k.push(protocol.len() as u8 + 1);
    k.push(b'_');
    k.extend_from_slice(protocol.as_bytes());
    k.extend_from_slice(svc_key);
    k.into_boxed_slice()
}

/// The PTR node for one IP from the claims on it (K10): the first cluster IP claim alone, or
/// else every distinct endpoint target.
/// Both lists must be sorted (and `endpoints` deduplicated) for stable answers.
pub fn ptr_node(cluster: &[Vec<u8>], endpoints: &[Vec<u8>], ttl: u32) -> Option<Node> {
    let mut b = RrsetBuilder::new(rtype::PTR);
    let put = |b: &mut RrsetBuilder, target: &[u8]| {
        b.answer(|o| {
            let at = wire::begin_rr(o, &PTR_QNAME.to_be_bytes(), rtype::PTR, ttl);
            o.extend_from_slice(target);
            wire::finish_rdata(o, at);
        });
    };
    if let Some(first) = cluster.first() {
        put(&mut b, first);
    } else {
        for t in endpoints {
            put(&mut b, t);
        }
    }
    (!b.is_empty()).then(|| Node { rrsets: Box::new([b.finish()]), alias: None })
}

/// The reverse name of an IP (S6): `d.c.b.a.in-addr.arpa.`, or 32 nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0xF, byte >> 4] {
                    s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("10.96.0.10".parse().unwrap()), "10.0.96.10.in-addr.arpa.");
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    #[test]
    fn srv_keys_are_underscored() {
        let k = srv_key("http", "tcp", &relative_key(&["svc1", "ns", "svc"]));
        assert_eq!(crate::wire::wire_to_text(&[&k[..], &[0]].concat()), "_http._tcp.svc1.ns.svc.");
    }
}
