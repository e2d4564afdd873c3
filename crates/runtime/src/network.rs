//! The node's side and the pod's side of pod networking (what a CNI bridge plugin does).
//!
//! Node namespace: bridge `pier0` holding the gateway (first address of the pod CIDR), a fixed
//! MAC, `lo` up, the service CIDR routed onto the bridge (so host-network clients have a route
//! for cluster IPs even in a namespace without a default route; the data plane catches or
//! rejects those packets), `ip_forward=1` and `route_localnet=1` on the bridge (the data plane
//! may DNAT pod traffic to 127.0.0.1). Per pod: a veth whose host end is a hairpin port of the
//! bridge and whose other end is born as `eth0` inside the pod's namespace, with the pod's
//! address, a default route via the gateway and the service CIDR via the gateway.
//!
//! Every change goes through a netlink socket created inside the namespace it changes.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use ipnet::{IpNet, Ipv4Net};

use crate::error::RuntimeError;
use crate::netlink::{Netlink, in_netns, mac_for};

/// The pod's end of its veth.
pub(crate) const POD_IFNAME: &str = "eth0";

#[derive(Debug)]
pub(crate) struct NodeNetwork {
    nl: Mutex<Netlink>,
    bridge: String,
    bridge_index: u32,
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    service_v4: Vec<Ipv4Net>,
}

impl NodeNetwork {
    /// Creates or adopts the bridge in the namespace `netns` and prepares that namespace. The
    /// netlink socket it keeps stays bound to that namespace; the file is not needed afterwards.
    pub(crate) fn setup(
        netns: File,
        bridge: &str,
        cidr: Ipv4Net,
        gateway: Ipv4Addr,
        service_cidr: &[IpNet],
    ) -> Result<Self, RuntimeError> {
        // IPv6 service ranges need IPv6 pod addresses, which pods do not get yet.
        let service_v4: Vec<Ipv4Net> =
            service_cidr.iter().filter_map(|n| if let IpNet::V4(v4) = n { Some(v4.trunc()) } else { None }).collect();
        let (nl, bridge_index) = in_netns(netns.as_fd(), || {
            let mut nl = Netlink::open()?;
            let lo = nl.link_index("lo")?;
            nl.set_up(lo)?;
            let index = match nl.link_index(bridge) {
                Ok(i) => i,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    nl.add_bridge(bridge, mac_for(gateway))?;
                    nl.link_index(bridge)?
                }
                Err(e) => return Err(e),
            };
            nl.add_address(index, gateway, cidr.prefix_len(), cidr.broadcast())?;
            nl.set_up(index)?;
            for svc in &service_v4 {
                nl.replace_route(svc.network(), svc.prefix_len(), None, index)?;
            }
            // /proc/sys/net resolves against the calling thread's namespace: this is the node's.
            write_sysctl("net/ipv4/ip_forward", "1")?;
            write_sysctl(&format!("net/ipv4/conf/{bridge}/route_localnet"), "1")?;
            Ok((nl, index))
        })
        .map_err(|e| RuntimeError::net(format!("preparing bridge {bridge}"), e))?;
        Ok(NodeNetwork { nl: Mutex::new(nl), bridge: bridge.to_string(), bridge_index, cidr, gateway, service_v4 })
    }

    /// Connects a pod: the veth pair, then the pod's address and routes.
    pub(crate) fn wire_pod(&self, pod_netns: BorrowedFd<'_>, veth: &str, ip: Ipv4Addr) -> Result<(), RuntimeError> {
        {
            let mut nl = self.nl.lock().unwrap_or_else(|p| p.into_inner());
            let created = match nl.add_veth(veth, self.bridge_index, POD_IFNAME, mac_for(ip), pod_netns) {
                // A leftover from a sandbox that crashed before its cleanup: its IP was released, so the
                // name is free to take over.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => nl
                    .delete_link(veth)
                    .and_then(|()| nl.add_veth(veth, self.bridge_index, POD_IFNAME, mac_for(ip), pod_netns)),
                other => other,
            };
            created.map_err(|e| RuntimeError::net(format!("creating veth {veth} on {}", self.bridge), e))?;
            let index = nl.link_index(veth).map_err(|e| RuntimeError::net(format!("finding {veth}"), e))?;
            nl.set_hairpin(index).map_err(|e| RuntimeError::net(format!("hairpin on {veth}"), e))?;
            nl.set_up(index).map_err(|e| RuntimeError::net(format!("bringing {veth} up"), e))?;
        }
        let (gateway, prefix, broadcast) = (self.gateway, self.cidr.prefix_len(), self.cidr.broadcast());
        let services = &self.service_v4;
        in_netns(pod_netns, || {
            let mut nl = Netlink::open()?;
            let lo = nl.link_index("lo")?;
            nl.set_up(lo)?;
            let eth0 = nl.link_index(POD_IFNAME)?;
            nl.add_address(eth0, ip, prefix, broadcast)?;
            nl.set_up(eth0)?;
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, Some(gateway), eth0)?;
            for svc in services {
                nl.replace_route(svc.network(), svc.prefix_len(), Some(gateway), eth0)?;
            }
            Ok(())
        })
        .map_err(|e| RuntimeError::net(format!("configuring {POD_IFNAME} ({ip}) in the pod"), e))
    }

    /// Deletes the host end of a pod's veth (which takes the pod end with it); idempotent.
    pub(crate) fn unwire_pod(&self, veth: &str) -> Result<(), RuntimeError> {
        let mut nl = self.nl.lock().unwrap_or_else(|p| p.into_inner());
        nl.delete_link(veth).map_err(|e| RuntimeError::net(format!("deleting veth {veth}"), e))
    }
}

/// The host end's name: unique because it is derived from the pod's (unique) address.
pub(crate) fn veth_name(ip: Ipv4Addr) -> String {
    format!("veth{:08x}", u32::from(ip))
}

fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path).map(|v| v.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz_and_are_unique_per_address() {
        let a = veth_name(Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(a, "veth0af40002");
        assert!(a.len() <= 15);
        assert_ne!(a, veth_name(Ipv4Addr::new(10, 244, 0, 3)));
    }
}
