//! Finding this node's IP: the address of the interface that holds the default route, else
//! the first global IPv4 address on any interface (DESIGN.md's contract).

use std::net::{IpAddr, Ipv4Addr};

/// The interface of the IPv4 default route, from `/proc/net/route`.
fn default_route_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.len() > 2 && cols[1] == "00000000").then(|| cols[0].to_string())
    })
}

fn is_global(ip: &Ipv4Addr) -> bool {
    !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast())
}

pub fn detect_node_ip() -> Option<IpAddr> {
    let addrs: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .filter(|(_, ip)| is_global(ip))
        .collect();
    if let Some(iface) = default_route_interface()
        && let Some((_, ip)) = addrs.iter().find(|(name, _)| *name == iface)
    {
        return Some(IpAddr::V4(*ip));
    }
    addrs.first().map(|(_, ip)| IpAddr::V4(*ip))
}
