//! The answerer: (zone, query bytes) → response bytes, or "forward this", following
//! `reference/dns-spec.md` for the cluster domain and the reverse zones. Pure: no IO, no clock.
//!
//! The common query (one question, a known name) costs a hand parse of the question, a lowercase
//! copy of the name on the stack, one hash lookup and a few `memcpy`s of precomputed records
//! into the caller's buffer (see `records.rs` for why those records need no patching). The
//! question is echoed byte for byte, which is how the query's case comes back (K14).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::entry::{AliasView, Entry, RrsetView};
use crate::records;
use crate::wire::{self, Edns, HEADER_LEN, PTR_QNAME, flag, rcode, rtype};
use crate::zone::{Served, Zone};

/// The UDP payload size advertised when the transport does not say (RFC 9715's safe value).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
const MIN_UDP_PAYLOAD: usize = 512;
const OPT_LEN: usize = 11;
/// How many ExternalName → ExternalName hops are followed inside the zone.
const MAX_ALIAS_HOPS: usize = 8;
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";
const IP6_ARPA: &[u8] = b"\x03ip6\x04arpa\x00";

/// How the query arrived, which bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Responses are cut to 512 bytes, or to the query's EDNS size capped at `max_payload`,
    /// with TC set when answers had to go.
    Udp { max_payload: u16 },
    /// Responses up to 65535 bytes.
    Tcp,
}

impl Transport {
    fn limit(self, edns: Option<Edns>) -> usize {
        match self {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp { max_payload } => match edns {
                None => MIN_UDP_PAYLOAD,
                Some(e) => {
                    usize::from(e.udp_payload).clamp(MIN_UDP_PAYLOAD, usize::from(max_payload).max(MIN_UDP_PAYLOAD))
                }
            },
        }
    }

    fn advertised(self) -> u16 {
        match self {
            Transport::Udp { max_payload } => max_payload.max(MIN_UDP_PAYLOAD as u16),
            Transport::Tcp => DEFAULT_MAX_UDP_PAYLOAD,
        }
    }
}

/// An ExternalName target outside the cluster domain that must be resolved upstream; its
/// records go after the CNAME already in the partial response (K11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// Dotted, with the trailing dot.
    pub name: String,
    pub qtype: u16,
}

/// What [`answer_into`] left in the output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The buffer holds the response.
    Reply,
    /// Not ours (outside the cluster domain, or a reverse name we hold nothing for): send the
    /// query upstream. The buffer is empty.
    Forward,
    /// The buffer holds a complete response ending in a CNAME; resolve the target and append.
    Resolve(Resolve),
    /// Not worth a reply (a response, or too short to carry an ID). The buffer is empty.
    Drop,
}

/// [`answer_into`] with its own buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(Vec<u8>),
    Forward,
    Resolve { partial: Vec<u8>, target: Resolve },
    Drop,
}

pub fn answer(zone: &Zone, query: &[u8], transport: Transport) -> Answer {
    let mut out = Vec::new();
    match answer_into(zone, query, transport, &mut out) {
        Disposition::Reply => Answer::Reply(out),
        Disposition::Forward => Answer::Forward,
        Disposition::Resolve(target) => Answer::Resolve { partial: out, target },
        Disposition::Drop => Answer::Drop,
    }
}

/// The largest response `query` may get over `transport`.
pub(crate) fn response_limit(query: &[u8], transport: Transport) -> usize {
    transport.limit(parse_query(query).ok().and_then(|q| q.edns))
}

/// A query as far as the answerer needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParsedQuery<'a> {
    pub flags: u16,
    /// Question name, type and class, as received.
    pub question: &'a [u8],
    pub qname_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

pub(crate) enum Reject {
    Ignore,
    Error(u16),
}

/// Header checks in the order miekg/dns (CoreDNS's server) applies them, then the question and
/// the OPT record.
pub(crate) fn parse_query(msg: &[u8]) -> Result<ParsedQuery<'_>, Reject> {
    if msg.len() < HEADER_LEN {
        return Err(Reject::Ignore);
    }
    let flags = wire::get_u16(msg, 2).ok_or(Reject::Ignore)?;
    if flags & flag::QR != 0 {
        return Err(Reject::Ignore);
    }
    if flags & flag::OPCODE_MASK != 0 {
        return Err(Reject::Error(rcode::NOTIMP));
    }
    let count = |at| wire::get_u16(msg, at).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Err(Reject::Error(rcode::FORMERR));
    }
    let formerr = Reject::Error(rcode::FORMERR);
    let qname_len = wire::uncompressed_name_len(msg, HEADER_LEN).ok_or(Reject::Error(rcode::FORMERR))?;
    let qend = HEADER_LEN + qname_len + 4;
    let question = msg.get(HEADER_LEN..qend).ok_or(Reject::Error(rcode::FORMERR))?;
    let qtype = wire::get_u16(msg, HEADER_LEN + qname_len).ok_or(Reject::Error(rcode::FORMERR))?;
    let qclass = wire::get_u16(msg, HEADER_LEN + qname_len + 2).ok_or(Reject::Error(rcode::FORMERR))?;
    let mut pos = qend;
    for _ in 0..u32::from(an) + u32::from(ns) {
        pos = wire::read_rr(msg, pos).ok_or(Reject::Error(rcode::FORMERR))?.end;
    }
    let mut edns = None;
    for _ in 0..ar {
        let rr = wire::read_rr(msg, pos).ok_or(Reject::Error(rcode::FORMERR))?;
        if rr.rtype == rtype::OPT {
            // RFC 6891 §6.1.1: one OPT, owned by the root.
            if edns.is_some() || msg.get(rr.owner_start) != Some(&0) {
                return Err(formerr);
            }
            edns = Some(Edns { udp_payload: rr.class, version: (rr.ttl >> 16) as u8, dnssec_ok: rr.ttl & 0x8000 != 0 });
        }
        pos = rr.end;
    }
    Ok(ParsedQuery { flags, question, qname_len, qtype, qclass, edns })
}

/// A header-only error reply (FORMERR, NOTIMP) for a query whose question cannot be trusted.
fn header_error(query: &[u8], rc: u16, out: &mut Vec<u8>) {
    let flags = wire::get_u16(query, 2).unwrap_or(0);
    out.extend_from_slice(query.get(..2).unwrap_or(&[0, 0]));
    let f = flag::QR | (flags & (flag::OPCODE_MASK | flag::RD)) | flag::RA | (rc & 0xF);
    wire::put_u16(out, f);
    out.extend_from_slice(&[0; 8]);
}

/// A reply carrying only the question and `rc`, e.g. SERVFAIL when upstreams fail. `None` when
/// the query deserves no reply at all.
pub fn error_response(query: &[u8], rc: u16) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match parse_query(query) {
        Err(Reject::Ignore) => return None,
        Err(Reject::Error(e)) => header_error(query, e, &mut out),
        Ok(q) => {
            let w = Writer::begin(&mut out, query, &q);
            w.finish(&q, rc, false, Transport::Tcp, usize::from(u16::MAX));
        }
    }
    Some(out)
}

/// Builds a response in `out` following the header, question, answer, authority, additional
/// order, then fits it to the size limit.
struct Writer<'o> {
    out: &'o mut Vec<u8>,
    answers: u16,
    authorities: u16,
    additionals: u16,
    answer_start: usize,
    authority_start: Option<usize>,
    additional_start: Option<usize>,
}

impl<'o> Writer<'o> {
    fn begin(out: &'o mut Vec<u8>, query: &[u8], q: &ParsedQuery<'_>) -> Writer<'o> {
        out.clear();
        out.extend_from_slice(query.get(..2).unwrap_or(&[0, 0]));
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(q.question);
        let answer_start = out.len();
        Writer {
            out,
            answers: 0,
            authorities: 0,
            additionals: 0,
            answer_start,
            authority_start: None,
            additional_start: None,
        }
    }

    fn answer_rrs(&mut self, bytes: &[u8], count: u16) {
        self.out.extend_from_slice(bytes);
        self.answers = self.answers.saturating_add(count);
    }

    fn authority_section(&mut self) {
        if self.authority_start.is_none() {
            self.authority_start = Some(self.out.len());
        }
    }

    fn additional_section(&mut self) {
        self.authority_section();
        if self.additional_start.is_none() {
            self.additional_start = Some(self.out.len());
        }
    }

    /// The zone's SOA (K1: TTL min(ttl, 300), MINIMUM ttl; K12: `ns.dns.`/`hostmaster.`),
    /// owned by the zone suffix of the question at `zone_ptr`.
    fn soa(&mut self, zone_ptr: [u8; 2], ttl: u32, serial: u32) {
        let out = &mut *self.out;
        let at = wire::begin_rr(out, &zone_ptr, rtype::SOA, ttl.min(300));
        out.extend_from_slice(b"\x02ns\x03dns");
        out.extend_from_slice(&zone_ptr);
        out.extend_from_slice(b"\x0ahostmaster");
        out.extend_from_slice(&zone_ptr);
        for v in [serial, 7200, 1800, 86400, ttl] {
            wire::put_u32(out, v);
        }
        wire::finish_rdata(out, at);
    }

    fn authority_soa(&mut self, zone_ptr: [u8; 2], ttl: u32, serial: u32) {
        self.authority_section();
        self.soa(zone_ptr, ttl, serial);
        self.authorities += 1;
    }

    /// Sets the header, appends the OPT record and enforces `limit`: Additional goes first
    /// (no TC: RFC 2181 §9), then Answer records from the end with TC set.
    fn finish(self, q: &ParsedQuery<'_>, rc: u16, aa: bool, transport: Transport, limit: usize) {
        let Writer {
            out,
            mut answers,
            mut authorities,
            mut additionals,
            answer_start,
            authority_start,
            additional_start,
        } = self;
        let authority_start = authority_start.unwrap_or(out.len());
        let additional_start = additional_start.unwrap_or(out.len());
        let opt_len = if q.edns.is_some() { OPT_LEN } else { 0 };
        let mut tc = false;
        if out.len() + opt_len > limit {
            out.truncate(additional_start);
            additionals = 0;
            if out.len() + opt_len > limit {
                let mut cut = answer_start;
                let mut kept = 0u16;
                while kept < answers {
                    match wire::read_rr(out, cut) {
                        Some(rr) if rr.end <= authority_start && rr.end + opt_len <= limit => {
                            cut = rr.end;
                            kept += 1;
                        }
                        _ => break,
                    }
                }
                out.truncate(cut);
                answers = kept;
                authorities = 0;
                tc = true;
            }
        }
        if let Some(edns) = q.edns {
            wire::put_opt(out, transport.advertised(), (rc >> 4) as u8, edns.dnssec_ok);
            additionals += 1;
        }
        let mut f = flag::QR | (q.flags & (flag::RD | flag::CD)) | flag::RA | (rc & 0xF);
        if aa {
            f |= flag::AA;
        }
        if tc {
            f |= flag::TC;
        }
        wire::set_u16(out, 2, f);
        wire::set_u16(out, 6, answers);
        wire::set_u16(out, 8, authorities);
        wire::set_u16(out, 10, additionals);
    }
}

/// Where a (lowercase) query name falls.
enum Place {
    /// In the cluster domain; the relative key is `lower[..key_len]`.
    Cluster {
        key_len: usize,
    },
    /// A full reverse name; the reverse zone suffix starts at `suffix_at` in the name.
    Reverse {
        ip: IpAddr,
        suffix_at: usize,
    },
    Elsewhere,
}

fn ends_with_at(name: &[u8], suffix: &[u8]) -> Option<usize> {
    let at = name.len().checked_sub(suffix.len())?;
    (name[at..] == *suffix && wire::is_label_boundary(name, at)).then_some(at)
}

fn place(zone: &[u8], lower: &[u8]) -> Place {
    if let Some(key_len) = ends_with_at(lower, zone) {
        return Place::Cluster { key_len };
    }
    if let Some(at) = ends_with_at(lower, IN_ADDR_ARPA) {
        return parse_reverse_v4(&lower[..at]).map_or(Place::Elsewhere, |ip| Place::Reverse { ip, suffix_at: at });
    }
    if let Some(at) = ends_with_at(lower, IP6_ARPA) {
        return parse_reverse_v6(&lower[..at]).map_or(Place::Elsewhere, |ip| Place::Reverse { ip, suffix_at: at });
    }
    Place::Elsewhere
}

/// `d.c.b.a` labels (decimal octets without leading zeros) to `a.b.c.d`.
fn parse_reverse_v4(labels: &[u8]) -> Option<IpAddr> {
    let mut octets = [0u8; 4];
    let mut pos = 0;
    for i in (0..4).rev() {
        let len = usize::from(*labels.get(pos)?);
        let digits = labels.get(pos + 1..pos + 1 + len)?;
        if len == 0 || len > 3 || (len > 1 && digits[0] == b'0') || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = digits.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        octets[i] = u8::try_from(v).ok()?;
        pos += 1 + len;
    }
    (pos == labels.len()).then(|| IpAddr::V4(Ipv4Addr::from(octets)))
}

/// 32 single-nibble labels, least significant first.
fn parse_reverse_v6(labels: &[u8]) -> Option<IpAddr> {
    if labels.len() != 64 {
        return None;
    }
    let mut bits: u128 = 0;
    for (i, pair) in labels.chunks_exact(2).enumerate() {
        if pair[0] != 1 {
            return None;
        }
        let nibble = char::from(pair[1]).to_digit(16)?;
        bits |= u128::from(nibble) << (4 * i);
    }
    Some(IpAddr::V6(Ipv6Addr::from(bits)))
}

/// Answers `query` from `zone` into `out` (cleared first).
pub fn answer_into(zone: &Zone, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Disposition {
    out.clear();
    let q = match parse_query(query) {
        Ok(q) => q,
        Err(Reject::Ignore) => return Disposition::Drop,
        Err(Reject::Error(rc)) => {
            header_error(query, rc, out);
            return Disposition::Reply;
        }
    };
    let mut lower_buf = [0u8; wire::MAX_NAME_LEN];
    let Some(lower) = lower_buf.get_mut(..q.qname_len) else { return Disposition::Drop };
    lower.copy_from_slice(&q.question[..q.qname_len]);
    // Length bytes are < 64, below 'A', so lowercasing the whole wire name is safe.
    lower.make_ascii_lowercase();
    let lower = &*lower;

    let inner = &zone.inner;
    let place = place(&inner.params.zone, lower);
    if matches!(place, Place::Elsewhere) {
        return Disposition::Forward;
    }
    let limit = transport.limit(q.edns);
    let served = zone.read();
    match place {
        Place::Elsewhere => Disposition::Forward,
        Place::Reverse { ip, suffix_at } => {
            // Cluster IPs are held ready; endpoint addresses (K10) are built when asked for.
            let built;
            let node = match served.reverse.get(&ip) {
                Some(node) => node,
                None => match zone.endpoint_ptr(ip) {
                    Some(entry) => {
                        built = entry;
                        &built
                    }
                    None => return Disposition::Forward,
                },
            };
            let mut w = Writer::begin(out, query, &q);
            if let Some(rc) = refusal(&q) {
                w.finish(&q, rc, false, transport, limit);
                return Disposition::Reply;
            }
            let zone_ptr = records::zone_pointer(suffix_at);
            match node.rrset(q.qtype) {
                Some(rrset) => positive(&mut w, rrset, query),
                None => w.authority_soa(zone_ptr, inner.params.ttl, zone.serial()),
            }
            w.finish(&q, rcode::NOERROR, true, transport, limit);
            Disposition::Reply
        }
        Place::Cluster { key_len } => cluster(zone, &served, query, &q, &lower[..key_len], transport, limit, out),
    }
}

/// REFUSED for classes other than IN and for zone transfers (K13); BADVERS for EDNS versions
/// above 0 (RFC 6891 §6.1.3).
fn refusal(q: &ParsedQuery<'_>) -> Option<u16> {
    if q.qclass != wire::CLASS_IN && q.qclass != wire::CLASS_ANY {
        return Some(rcode::REFUSED);
    }
    if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
        return Some(rcode::REFUSED);
    }
    if q.edns.is_some_and(|e| e.version != 0) {
        return Some(rcode::BADVERS);
    }
    None
}

/// Copies an rrset's answers (rotated for A/AAAA, so clients that take the first address spread
/// over the endpoints; the rotation comes from the query ID to keep this function pure) and its
/// additional records.
fn positive(w: &mut Writer<'_>, rrset: RrsetView<'_>, query: &[u8]) {
    let bytes = rrset.answer_bytes;
    let n = usize::from(rrset.answers);
    let rotatable = (rrset.rtype == rtype::A || rrset.rtype == rtype::AAAA) && n > 1 && bytes.len().is_multiple_of(n);
    if rotatable {
        let size = bytes.len() / n;
        let id = usize::from(wire::get_u16(query, 0).unwrap_or(0));
        let at = (id % n) * size;
        w.answer_rrs(&bytes[at..], 0);
        w.answer_rrs(&bytes[..at], rrset.answers);
    } else {
        w.answer_rrs(bytes, rrset.answers);
    }
    if rrset.additionals > 0 {
        w.additional_section();
        w.out.extend_from_slice(rrset.additional_bytes);
        w.additionals += rrset.additionals;
    }
}

#[allow(clippy::too_many_arguments)]
fn cluster(
    zone: &Zone,
    served: &Served,
    query: &[u8],
    q: &ParsedQuery<'_>,
    key: &[u8],
    transport: Transport,
    limit: usize,
    out: &mut Vec<u8>,
) -> Disposition {
    let params = &zone.inner.params;
    let zone_ptr = records::zone_pointer(key.len());
    let serial = zone.serial();
    let mut w = Writer::begin(out, query, q);
    if let Some(rc) = refusal(q) {
        w.finish(q, rc, false, transport, limit);
        return Disposition::Reply;
    }
    if key.is_empty() && q.qtype == rtype::SOA {
        w.soa(PTR_QNAME.to_be_bytes(), params.ttl, serial);
        w.answers = 1;
        w.finish(q, rcode::NOERROR, true, transport, limit);
        return Disposition::Reply;
    }
    // K3: SOA below the apex is NODATA without an existence check.
    if q.qtype == rtype::SOA {
        w.authority_soa(zone_ptr, params.ttl, serial);
        w.finish(q, rcode::NOERROR, true, transport, limit);
        return Disposition::Reply;
    }
    // Endpoint names under ClusterIP Services (K9) are built when asked for.
    let built = if served.names.contains(key) { None } else { zone.endpoint_name(key) };
    let Some(node) = served.names.get(key).or(built.as_ref()) else {
        w.authority_soa(zone_ptr, params.ttl, serial);
        // K4: until the caches have synced, a missing name may only be missing from us.
        let rc = if zone.is_synced() { rcode::NXDOMAIN } else { rcode::SERVFAIL };
        w.finish(q, rc, true, transport, limit);
        return Disposition::Reply;
    };
    if let Some(alias) = node.alias()
        && q.qtype != rtype::SRV
        && q.qtype != rtype::CNAME
    {
        return chase(zone, served, q, node, alias, w, zone_ptr, transport, limit);
    }
    match node.rrset(q.qtype) {
        Some(rrset) => positive(&mut w, rrset, query),
        None => w.authority_soa(zone_ptr, params.ttl, serial),
    }
    w.finish(q, rcode::NOERROR, true, transport, limit);
    Disposition::Reply
}

/// An ExternalName answer (S13, K11): the CNAME, then for A/AAAA the target's records —
/// followed inside the zone, or left to the server to resolve upstream.
#[allow(clippy::too_many_arguments)]
fn chase<'s>(
    zone: &Zone,
    served: &'s Served,
    q: &ParsedQuery<'_>,
    mut node: &'s Entry,
    mut alias: AliasView<'s>,
    mut w: Writer<'_>,
    zone_ptr: [u8; 2],
    transport: Transport,
    limit: usize,
) -> Disposition {
    let params = &zone.inner.params;
    let mut owner = PTR_QNAME.to_be_bytes();
    let mut rc = rcode::NOERROR;
    let follow = q.qtype == rtype::A || q.qtype == rtype::AAAA;
    for _ in 0..MAX_ALIAS_HOPS {
        let Some(cname) = node.rrset(rtype::CNAME) else { break };
        let rr_start = w.out.len();
        append_with_owner(&mut w, cname.answer_bytes, owner);
        w.answers += 1;
        // The CNAME's target is the owner of whatever follows.
        let rdata_at = rr_start + 2 + 10;
        owner = (0xC000 | (rdata_at as u16 & 0x3FFF)).to_be_bytes();
        if !follow {
            break;
        }
        let Some(target_key) = alias.in_zone else {
            let name = wire::wire_to_text(alias.target);
            w.finish(q, rc, true, transport, limit);
            return Disposition::Resolve(Resolve { name, qtype: q.qtype });
        };
        match served.names.get(target_key) {
            None => {
                w.authority_soa(zone_ptr, params.ttl, zone.serial());
                rc = if zone.is_synced() { rcode::NXDOMAIN } else { rcode::SERVFAIL };
                break;
            }
            Some(next) => {
                if let Some(next_alias) = next.alias() {
                    node = next;
                    alias = next_alias;
                    continue;
                }
                match next.rrset(q.qtype) {
                    Some(rrset) => {
                        append_with_owner(&mut w, rrset.answer_bytes, owner);
                        w.answers += rrset.answers;
                    }
                    None => w.authority_soa(zone_ptr, params.ttl, zone.serial()),
                }
                break;
            }
        }
    }
    w.finish(q, rc, true, transport, limit);
    Disposition::Reply
}

/// Copies precomputed answer records (each owned by the 2-byte `0xC00C`) with another owner.
fn append_with_owner(w: &mut Writer<'_>, mut rrs: &[u8], owner: [u8; 2]) {
    while let Some(rr) = wire::read_rr(rrs, 0) {
        w.out.extend_from_slice(&owner);
        w.out.extend_from_slice(&rrs[2..rr.end]);
        rrs = &rrs[rr.end..];
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reverse_labels_parse_strictly() {
        let v4 = crate::wire::text_to_wire("10.0.96.10").unwrap();
        assert_eq!(parse_reverse_v4(&v4[..v4.len() - 1]), Some("10.96.0.10".parse().unwrap()));
        for bad in ["010.0.96.10", "0.96.10", "256.0.96.10", "1.2.3.4.5", "a.0.96.10"] {
            let w = crate::wire::text_to_wire(bad).unwrap();
            assert_eq!(parse_reverse_v4(&w[..w.len() - 1]), None, "{bad}");
        }
    }

    #[test]
    fn udp_limit_follows_edns() {
        let t = Transport::Udp { max_payload: 1232 };
        assert_eq!(t.limit(None), 512);
        let e = |udp_payload| Some(Edns { udp_payload, version: 0, dnssec_ok: false });
        assert_eq!(t.limit(e(100)), 512);
        assert_eq!(t.limit(e(1000)), 1000);
        assert_eq!(t.limit(e(4096)), 1232);
        assert_eq!(Transport::Tcp.limit(None), 65535);
    }
}
