//! IP and CIDR checks with upstream's "sloppy" parsing (`netutils.ParseIPSloppy`, which, like Go
//! before 1.17, accepts IPv4 octets with leading zeros) and the messages of
//! `IsValidIP`, `IsValidCIDR` and `ValidateNonSpecialIP`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{FieldError, render::quote};

/// Parses decimal digits like Go's `dtoi`: at least one digit, value below 2^24.
fn dtoi(s: &str) -> Option<(u32, usize)> {
    let mut n: u32 = 0;
    let mut used = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            break;
        }
        n = n * 10 + u32::from(c - b'0');
        if n >= 0x00ff_ffff {
            return None;
        }
        used += 1;
    }
    if used == 0 { None } else { Some((n, used)) }
}

fn parse_v4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut rest = s;
    let mut octets = [0u8; 4];
    for (i, octet) in octets.iter_mut().enumerate() {
        if i > 0 {
            rest = rest.strip_prefix('.')?;
        }
        let (n, used) = dtoi(rest)?;
        *octet = u8::try_from(n).ok()?;
        rest = rest.get(used..)?;
    }
    if rest.is_empty() { Some(Ipv4Addr::from(octets)) } else { None }
}

/// `netutils.ParseIPSloppy`.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if !s.contains(':') {
        return parse_v4_sloppy(s).map(IpAddr::V4);
    }
    // An embedded dotted quad may carry leading zeros too: canonicalise it before the strict
    // IPv6 parse.
    if let Some((head, tail)) = s.rsplit_once(':')
        && tail.contains('.')
    {
        let v4 = parse_v4_sloppy(tail)?;
        return format!("{head}:{v4}").parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The IPv4 form of an address, as Go's `To4` (IPv4-mapped IPv6 counts as IPv4).
pub fn to4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// `netutils.IsIPv6String`: a valid address that is not IPv4.
pub fn is_ipv6_string(s: &str) -> bool {
    parse_ip(s).is_some_and(|ip| to4(ip).is_none())
}

/// `netutils.ParseCIDRSloppy` succeeded.
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, mask)) = s.split_once('/') else { return false };
    if parse_ip(addr).is_none() {
        return false;
    }
    let bits = if addr.contains(':') { 128 } else { 32 };
    matches!(dtoi(mask), Some((n, used)) if used == mask.len() && n <= bits)
}

/// IsValidIP at `path`.
pub fn valid_ip_errors(path: &str, s: &str) -> Vec<FieldError> {
    if parse_ip(s).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, quote(s), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    }
}

/// IsValidCIDR at `path`.
pub fn valid_cidr_errors(path: &str, s: &str) -> Vec<FieldError> {
    if is_cidr(s) {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, quote(s), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    }
}

/// IsValidIPv4Address / IsValidIPv6Address at `path` (EndpointSlice addresses).
pub fn valid_family_ip_errors(path: &str, s: &str, v6: bool) -> Vec<FieldError> {
    let ok = parse_ip(s).is_some_and(|ip| to4(ip).is_none() == v6);
    if ok {
        Vec::new()
    } else {
        let msg = if v6 { "must be a valid IPv6 address" } else { "must be a valid IPv4 address" };
        vec![FieldError::invalid(path, quote(s), msg)]
    }
}

/// ValidateNonSpecialIP / ValidateEndpointIP at `path`: endpoints and external IPs may not be
/// unspecified, loopback or link-local.
pub fn non_special_ip_errors(path: &str, s: &str) -> Vec<FieldError> {
    let Some(ip) = parse_ip(s) else {
        return vec![FieldError::invalid(path, quote(s), "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    let v4 = to4(ip);
    let v6 = match ip {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    };
    let unspecified = v4.is_some_and(|a| a.is_unspecified()) || v6.is_some_and(|a| a.is_unspecified());
    let loopback = v4.is_some_and(|a| a.octets()[0] == 127) || (v4.is_none() && v6.is_some_and(|a| a.is_loopback()));
    let link_local = match (v4, v6) {
        (Some(a), _) => a.octets()[0] == 169 && a.octets()[1] == 254,
        (None, Some(a)) => a.segments()[0] & 0xffc0 == 0xfe80,
        _ => false,
    };
    let link_local_multicast = match (v4, v6) {
        (Some(a), _) => a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0,
        (None, Some(a)) => a.octets()[0] == 0xff && a.octets()[1] & 0x0f == 0x02,
        _ => false,
    };
    if unspecified {
        errs.push(FieldError::invalid(path, quote(s), format!("may not be unspecified ({s})")));
    }
    if loopback {
        errs.push(FieldError::invalid(path, quote(s), "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            quote(s),
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            quote(s),
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

/// `netutils.IsDualStackIPStrings`: every entry parses and both families are present.
pub fn is_dual_stack(ips: &[String]) -> bool {
    let mut v4 = false;
    let mut v6 = false;
    for s in ips {
        match parse_ip(s) {
            None => return false,
            Some(ip) if to4(ip).is_some() => v4 = true,
            Some(_) => v6 = true,
        }
    }
    v4 && v6
}
