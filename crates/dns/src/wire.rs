//! DNS wire format by hand: header fields, the question, skipping resource records, the OPT
//! pseudo-record, and writing the handful of record types cluster DNS serves.
//!
//! Hand-written rather than hickory-proto because the hot path must not allocate and must keep
//! the query's own bytes: answers point at the question's name (compression pointer `0xC00C`),
//! which echoes the query's case for free (dns-spec K14). Knows nothing about Kubernetes.

use std::net::IpAddr;

pub const HEADER_LEN: usize = 12;
/// Owner name of every precomputed answer record: a pointer to the question name at offset 12.
pub const PTR_QNAME: u16 = 0xC000 | HEADER_LEN as u16;
pub const MAX_NAME_LEN: usize = 255;

/// Record types this crate names.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
}

pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Response codes this crate sends.
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// Extended (12-bit) code: the high 8 bits travel in the OPT record.
    pub const BADVERS: u16 = 16;
}

pub mod flag {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const CD: u16 = 0x0010;
    pub const OPCODE_MASK: u16 = 0x7800;
}

pub fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Length of the uncompressed name starting at `at`, including the root byte. `None` when it is
/// malformed, longer than 255 bytes, or uses compression (a query's first name has nothing
/// before it to point at).
pub fn uncompressed_name_len(msg: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            let total = pos + 1 - at;
            return (total <= MAX_NAME_LEN).then_some(total);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - at >= MAX_NAME_LEN {
            return None;
        }
    }
}

/// Offset just past the (possibly compressed) name at `at`. Pointers are not followed: skipping
/// needs only the bytes in place.
pub fn skip_name(msg: &[u8], at: usize) -> Option<usize> {
    let mut pos = at;
    loop {
        let len = *msg.get(pos)?;
        match len >> 6 {
            0 if len == 0 => return Some(pos + 1),
            0 => {
                pos += 1 + usize::from(len);
                if pos - at > MAX_NAME_LEN {
                    return None;
                }
            }
            3 => {
                msg.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
    }
}

/// The fixed part of a resource record after its owner name.
#[derive(Clone, Copy, Debug)]
pub struct RrView {
    pub owner_start: usize,
    pub rtype: u16,
    pub class: u16,
    /// Offset of the TTL field (patched by the forwarding cache).
    pub ttl_at: usize,
    pub ttl: u32,
    pub end: usize,
}

pub fn read_rr(msg: &[u8], at: usize) -> Option<RrView> {
    let fixed = skip_name(msg, at)?;
    let rtype = get_u16(msg, fixed)?;
    let class = get_u16(msg, fixed + 2)?;
    let ttl = get_u32(msg, fixed + 4)?;
    let rdlen = usize::from(get_u16(msg, fixed + 8)?);
    let rdata_start = fixed + 10;
    let end = rdata_start + rdlen;
    if end > msg.len() {
        return None;
    }
    Some(RrView { owner_start: at, rtype, class, ttl_at: fixed + 4, ttl, end })
}

/// EDNS(0) parameters from a query's OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// Writes the OPT pseudo-record of a response.
pub fn put_opt(out: &mut Vec<u8>, udp_payload: u16, ext_rcode: u8, dnssec_ok: bool) {
    out.push(0);
    put_u16(out, rtype::OPT);
    put_u16(out, udp_payload);
    out.push(ext_rcode);
    out.push(0); // version
    put_u16(out, if dnssec_ok { 0x8000 } else { 0 });
    put_u16(out, 0);
}

/// Dotted text (`a.b.c` or `a.b.c.`) to wire labels ending with the root byte. `None` for empty
/// labels, labels over 63 bytes or names over 255 bytes.
pub fn text_to_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

/// Wire labels (uncompressed, root-terminated) to dotted text with a trailing dot.
pub fn wire_to_text(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len() + 1);
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + usize::from(len)).unwrap_or_default();
        s.push_str(&String::from_utf8_lossy(label));
        s.push('.');
        pos += 1 + usize::from(len);
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Whether `suffix_at` is where a label starts in the uncompressed name `wire`.
pub fn is_label_boundary(wire: &[u8], suffix_at: usize) -> bool {
    let mut pos = 0;
    while pos < suffix_at {
        match wire.get(pos) {
            Some(&len) if len != 0 => pos += 1 + usize::from(len),
            _ => return false,
        }
    }
    pos == suffix_at
}

/// Writes a resource record's header; returns the offset of the RDLENGTH field for
/// [`finish_rdata`].
pub fn begin_rr(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32) -> usize {
    out.extend_from_slice(owner);
    put_u16(out, rtype);
    put_u16(out, CLASS_IN);
    put_u32(out, ttl);
    let at = out.len();
    put_u16(out, 0);
    at
}

pub fn finish_rdata(out: &mut [u8], rdlen_at: usize) {
    let len = out.len() - rdlen_at - 2;
    set_u16(out, rdlen_at, len as u16);
}

pub fn put_address_rr(out: &mut Vec<u8>, owner: &[u8], ttl: u32, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let at = begin_rr(out, owner, rtype::A, ttl);
            out.extend_from_slice(&v4.octets());
            finish_rdata(out, at);
        }
        IpAddr::V6(v6) => {
            let at = begin_rr(out, owner, rtype::AAAA, ttl);
            out.extend_from_slice(&v6.octets());
            finish_rdata(out, at);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn text_and_wire_round_trip() {
        let w = text_to_wire("svc1.testns.svc.cluster.local.").unwrap();
        assert_eq!(w[0], 4);
        assert_eq!(wire_to_text(&w), "svc1.testns.svc.cluster.local.");
        assert_eq!(text_to_wire("").unwrap(), vec![0]);
        assert!(text_to_wire("a..b").is_none());
        assert!(text_to_wire(&"a".repeat(64)).is_none());
    }

    #[test]
    fn label_boundaries() {
        let w = text_to_wire("ab.cluster.local").unwrap();
        assert!(is_label_boundary(&w, 3));
        assert!(!is_label_boundary(&w, 2));
        assert!(is_label_boundary(&w, 0));
    }
}
