//! Cluster IP and node port allocation for Services.
//!
//! The allocated sets live in memory and are rebuilt from the stored Services at start, so the
//! Services themselves are the only record: nothing can drift between an allocation table and
//! the objects. The API server holds [`Allocators`] behind one mutex from allocation until the
//! Service is written (or the allocation is rolled back), so concurrent creates never get the
//! same IP or port, and a restart never hands out one that a stored Service holds.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use pier_api::validation::FieldError;
use rand::Rng;

/// Addresses of one service CIDR.
#[derive(Debug)]
pub struct IpAllocator {
    cidr: IpNet,
    used: BTreeSet<IpAddr>,
}

/// The usable offsets of a CIDR: upstream never hands out the network address, and for IPv4
/// not the broadcast address either. Capped so huge IPv6 ranges stay cheap to scan.
fn usable_range(cidr: &IpNet) -> (u128, u128) {
    let size: u128 = match cidr {
        IpNet::V4(n) => 1u128 << (32 - n.prefix_len()),
        IpNet::V6(n) => 1u128 << (128 - n.prefix_len()).min(64),
    };
    let last = match cidr {
        IpNet::V4(_) => size.saturating_sub(2),
        IpNet::V6(_) => size.saturating_sub(1),
    };
    (1, last.max(1))
}

fn ip_at(cidr: &IpNet, offset: u128) -> IpAddr {
    match cidr {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            IpAddr::from(std::net::Ipv4Addr::from(base.wrapping_add(offset as u32)))
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            IpAddr::from(std::net::Ipv6Addr::from(base.wrapping_add(offset)))
        }
    }
}

fn offset_of(cidr: &IpNet, ip: IpAddr) -> Option<u128> {
    match (cidr, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => Some(u128::from(u32::from(a).wrapping_sub(u32::from(n.network())))),
        (IpNet::V6(n), IpAddr::V6(a)) => Some(u128::from(a).wrapping_sub(u128::from(n.network()))),
        _ => None,
    }
}

impl IpAllocator {
    pub fn new(cidr: IpNet) -> Self {
        IpAllocator { cidr: cidr.trunc(), used: BTreeSet::new() }
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The `n`th usable address (the `kubernetes` Service takes the first, `kube-dns` the tenth).
    pub fn nth(&self, n: u128) -> IpAddr {
        ip_at(&self.cidr, n)
    }

    fn in_range(&self, ip: IpAddr) -> bool {
        let (lo, hi) = usable_range(&self.cidr);
        self.cidr.contains(&ip) && offset_of(&self.cidr, ip).is_some_and(|o| o >= lo && o <= hi)
    }

    /// Marks `ip` used, as found in a stored Service. Out-of-range addresses are ignored: they
    /// can only come from a change of `--service-cidr`, and upstream leaves them alone too.
    pub fn mark(&mut self, ip: IpAddr) {
        if self.in_range(ip) {
            self.used.insert(ip);
        }
    }

    pub fn release(&mut self, ip: IpAddr) {
        self.used.remove(&ip);
    }

    pub fn is_used(&self, ip: IpAddr) -> bool {
        self.used.contains(&ip)
    }

    /// Takes `ip`, with upstream's messages on failure.
    pub fn allocate_specific(&mut self, ip: IpAddr) -> Result<(), String> {
        if !self.in_range(ip) {
            return Err(format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                self.cidr
            ));
        }
        if !self.used.insert(ip) {
            return Err(format!("failed to allocate IP {ip}: provided IP is already allocated"));
        }
        Ok(())
    }

    /// Takes a free address. Like upstream, dynamic allocation prefers the range above the
    /// small "static" band at the bottom of the CIDR, which is left for explicit requests.
    pub fn allocate_next(&mut self) -> Result<IpAddr, String> {
        let (lo, hi) = usable_range(&self.cidr);
        let total = hi - lo + 1;
        let band = (total / 16).clamp(16, 256).min(total / 2);
        let mut rng = rand::rng();
        for (start, end) in [(lo + band, hi), (lo, hi)] {
            if start > end {
                continue;
            }
            let span = end - start + 1;
            let first = start + rng.random_range(0..span);
            // Bounded walk from a random start: O(used) in the worst case, never unbounded.
            let mut off = first;
            for _ in 0..span.min(1 << 24) {
                let ip = ip_at(&self.cidr, off);
                if !self.used.contains(&ip) {
                    self.used.insert(ip);
                    return Ok(ip);
                }
                off = if off == end { start } else { off + 1 };
            }
        }
        Err(format!("failed to allocate a serviceIP: range is full ({})", self.cidr))
    }
}

/// Node ports of `--service-node-port-range`.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    used: BTreeSet<u16>,
}

impl PortAllocator {
    pub fn new(first: u16, last: u16) -> Self {
        PortAllocator { first, last, used: BTreeSet::new() }
    }

    pub fn range_text(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    pub fn mark(&mut self, port: u16) {
        if (self.first..=self.last).contains(&port) {
            self.used.insert(port);
        }
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    pub fn allocate_specific(&mut self, port: i64) -> Result<u16, String> {
        let p = u16::try_from(port).ok().filter(|p| (self.first..=self.last).contains(p));
        let Some(p) = p else {
            return Err(format!(
                "provided port is not in the valid range. The range of valid ports is {}",
                self.range_text()
            ));
        };
        if !self.used.insert(p) {
            return Err("provided port is already allocated".to_string());
        }
        Ok(p)
    }

    pub fn allocate_next(&mut self) -> Result<u16, String> {
        let span = u32::from(self.last - self.first) + 1;
        let start = rand::rng().random_range(0..span);
        for i in 0..span {
            let p = self.first + ((start + i) % span) as u16;
            if self.used.insert(p) {
                return Ok(p);
            }
        }
        Err(format!("range is full ({})", self.range_text()))
    }
}

/// Everything a Service can hold.
#[derive(Debug)]
pub struct Allocators {
    pub ips: Vec<IpAllocator>,
    pub ports: PortAllocator,
}

/// What one Service holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub ips: BTreeSet<IpAddr>,
    pub ports: BTreeSet<u16>,
}

impl Holdings {
    /// Reads the IPs and node ports a stored or admitted Service holds.
    pub fn of(svc: &serde_json::Value) -> Holdings {
        let mut h = Holdings::default();
        let spec = &svc["spec"];
        if let Some(ips) = spec["clusterIPs"].as_array() {
            h.ips.extend(ips.iter().filter_map(|v| v.as_str()?.parse::<IpAddr>().ok()));
        }
        if let Some(ip) = spec["clusterIP"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
            h.ips.insert(ip);
        }
        for p in spec["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) {
                h.ports.insert(n);
            }
        }
        if let Some(n) = spec["healthCheckNodePort"].as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) {
            h.ports.insert(n);
        }
        h
    }
}

impl Allocators {
    pub fn new(cidrs: &[IpNet], first_port: u16, last_port: u16) -> Self {
        Allocators {
            ips: cidrs.iter().map(|c| IpAllocator::new(*c)).collect(),
            ports: PortAllocator::new(first_port, last_port),
        }
    }

    pub fn mark(&mut self, h: &Holdings) {
        for ip in &h.ips {
            for a in &mut self.ips {
                a.mark(*ip);
            }
        }
        for p in &h.ports {
            self.ports.mark(*p);
        }
    }

    pub fn release(&mut self, h: &Holdings) {
        for ip in &h.ips {
            for a in &mut self.ips {
                if a.cidr().contains(ip) {
                    a.release(*ip);
                }
            }
        }
        for p in &h.ports {
            self.ports.release(*p);
        }
    }

    fn allocator_for(&mut self, family: &str) -> Option<&mut IpAllocator> {
        self.ips.iter_mut().find(|a| matches!((family, a.cidr()), ("IPv4", IpNet::V4(_)) | ("IPv6", IpNet::V6(_))))
    }

    /// Fills in and takes the cluster IPs and node ports that `svc` needs beyond what `old`
    /// (the stored version, on update) already holds. Returns what was newly taken, so the
    /// caller can give it back if the write fails; on error nothing stays taken.
    pub fn admit_service(
        &mut self,
        svc: &mut serde_json::Value,
        old: Option<&serde_json::Value>,
    ) -> Result<Holdings, Vec<FieldError>> {
        let held = old.map(Holdings::of).unwrap_or_default();
        let mut taken = Holdings::default();
        let mut errs = Vec::new();
        self.admit_ips(svc, &held, &mut taken, &mut errs);
        self.admit_ports(svc, &held, &mut taken, &mut errs);
        if errs.is_empty() {
            Ok(taken)
        } else {
            self.release(&taken);
            Err(errs)
        }
    }

    fn admit_ips(
        &mut self,
        svc: &mut serde_json::Value,
        held: &Holdings,
        taken: &mut Holdings,
        errs: &mut Vec<FieldError>,
    ) {
        let spec = &mut svc["spec"];
        if spec["type"].as_str() == Some("ExternalName") {
            return;
        }
        let cluster_ip = spec["clusterIP"].as_str().unwrap_or("").to_string();
        if cluster_ip == "None" {
            spec["clusterIPs"] = serde_json::json!(["None"]);
            return;
        }
        let mut requested: Vec<String> = spec["clusterIPs"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if requested.is_empty() && !cluster_ip.is_empty() {
            requested.push(cluster_ip);
        }
        let families: Vec<String> = spec["ipFamilies"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .filter(|f: &Vec<String>| !f.is_empty())
            .unwrap_or_else(|| vec!["IPv4".to_string()]);
        let mut out = Vec::new();
        for (i, family) in families.iter().enumerate() {
            let want = requested.get(i).filter(|s| !s.is_empty());
            let result = match want {
                Some(ip_text) => match ip_text.parse::<IpAddr>() {
                    Ok(ip) if held.ips.contains(&ip) => Ok(ip),
                    Ok(ip) => match self.allocator_for(family) {
                        Some(a) => a.allocate_specific(ip).map(|()| {
                            taken.ips.insert(ip);
                            ip
                        }),
                        None => {
                            Err(format!("failed to allocate IP {ip}: no service CIDR of family {family} is configured"))
                        }
                    },
                    Err(_) => Err(format!("failed to allocate IP {ip_text}: not a valid IP")),
                },
                None => match self.allocator_for(family) {
                    Some(a) => a.allocate_next().inspect(|ip| {
                        taken.ips.insert(*ip);
                    }),
                    None => {
                        Err(format!("failed to allocate a serviceIP: no service CIDR of family {family} is configured"))
                    }
                },
            };
            match result {
                Ok(ip) => out.push(ip.to_string()),
                Err(msg) => {
                    let shown = format!(
                        "[]string{{{}}}",
                        requested.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
                    );
                    errs.push(FieldError::invalid("spec.clusterIPs", &shown, &msg));
                    return;
                }
            }
        }
        if let Some(first) = out.first() {
            spec["clusterIP"] = serde_json::json!(first);
        }
        spec["clusterIPs"] = serde_json::json!(out);
    }

    fn admit_ports(
        &mut self,
        svc: &mut serde_json::Value,
        held: &Holdings,
        taken: &mut Holdings,
        errs: &mut Vec<FieldError>,
    ) {
        let spec = &mut svc["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
        let wants_node_ports = ty == "NodePort"
            || (ty == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false));
        let Some(ports) = spec["ports"].as_array_mut() else { return };
        // One port number may serve several protocols of the same Service (DNS on 53/TCP and
        // 53/UDP): upstream allocates it once.
        let mut this_service: BTreeSet<u16> = BTreeSet::new();
        for (i, p) in ports.iter_mut().enumerate() {
            let requested = p["nodePort"].as_i64().unwrap_or(0);
            if requested == 0 && !wants_node_ports {
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            if requested != 0 {
                if let Ok(port) = u16::try_from(requested)
                    && (held.ports.contains(&port) || this_service.contains(&port))
                {
                    this_service.insert(port);
                    continue;
                }
                match self.ports.allocate_specific(requested) {
                    Ok(port) => {
                        taken.ports.insert(port);
                        this_service.insert(port);
                    }
                    Err(msg) => errs.push(FieldError::invalid(&field, requested.to_string(), &msg)),
                }
            } else {
                match self.ports.allocate_next() {
                    Ok(port) => {
                        taken.ports.insert(port);
                        this_service.insert(port);
                        p["nodePort"] = serde_json::json!(port);
                    }
                    Err(msg) => errs.push(FieldError::invalid(&field, "0", &msg)),
                }
            }
        }
        let needs_health_port = ty == "LoadBalancer" && spec["externalTrafficPolicy"].as_str() == Some("Local");
        if needs_health_port {
            let requested = spec["healthCheckNodePort"].as_i64().unwrap_or(0);
            if requested == 0 {
                match self.ports.allocate_next() {
                    Ok(port) => {
                        taken.ports.insert(port);
                        spec["healthCheckNodePort"] = serde_json::json!(port);
                    }
                    Err(msg) => errs.push(FieldError::invalid("spec.healthCheckNodePort", "0", &msg)),
                }
            } else if !u16::try_from(requested).is_ok_and(|p| held.ports.contains(&p)) {
                match self.ports.allocate_specific(requested) {
                    Ok(port) => {
                        taken.ports.insert(port);
                    }
                    Err(msg) => errs.push(FieldError::invalid("spec.healthCheckNodePort", requested.to_string(), &msg)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn allocs() -> Allocators {
        Allocators::new(&["10.96.0.0/12".parse().unwrap()], 30000, 32767)
    }

    #[test]
    fn explicit_ip_in_range_is_taken_once() {
        let mut a = allocs();
        let mut s = json!({"spec": {"clusterIP": "10.97.97.97", "ports": [{"port": 80}]}});
        a.admit_service(&mut s, None).unwrap();
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.97.97.97"]));
        let mut again = json!({"spec": {"clusterIP": "10.97.97.97", "ports": [{"port": 80}]}});
        let errs = a.admit_service(&mut again, None).unwrap_err();
        assert_eq!(
            errs[0].message(),
            r#"spec.clusterIPs: Invalid value: []string{"10.97.97.97"}: failed to allocate IP 10.97.97.97: provided IP is already allocated"#
        );
    }

    #[test]
    fn out_of_range_ip_and_port_have_upstream_messages() {
        let mut a = allocs();
        let mut s = json!({"spec": {"clusterIP": "192.168.1.1", "ports": [{"port": 80}]}});
        let errs = a.admit_service(&mut s, None).unwrap_err();
        assert!(errs[0].message().ends_with("failed to allocate IP 192.168.1.1: the provided IP (192.168.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"), "{}", errs[0].message());
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 8444}]}});
        let errs = a.admit_service(&mut s, None).unwrap_err();
        assert_eq!(
            errs[0].message(),
            "spec.ports[0].nodePort: Invalid value: 8444: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        // The failed create left nothing allocated.
        assert!(a.ips[0].used.is_empty());
    }

    #[test]
    fn node_ports_are_unique_and_shared_across_protocols() {
        let mut a = allocs();
        let mut s = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 53, "protocol": "UDP", "nodePort": 30053}, {"port": 53, "protocol": "TCP", "nodePort": 30053}]}});
        a.admit_service(&mut s, None).unwrap();
        let mut t = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30053}]}});
        assert_eq!(
            a.admit_service(&mut t, None).unwrap_err()[0].message(),
            "spec.ports[0].nodePort: Invalid value: 30053: provided port is already allocated"
        );
    }

    #[test]
    fn update_keeps_what_it_holds() {
        let mut a = allocs();
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.admit_service(&mut s, None).unwrap();
        let old = s.clone();
        let mut new = s.clone();
        let taken = a.admit_service(&mut new, Some(&old)).unwrap();
        assert_eq!(taken, Holdings::default());
    }

    proptest! {
        #[test]
        fn dynamic_ips_never_repeat(n in 1usize..300) {
            let mut a = Allocators::new(&["10.0.0.0/23".parse().unwrap()], 30000, 30010);
            let mut seen = BTreeSet::new();
            for _ in 0..n {
                let ip = a.ips[0].allocate_next().unwrap();
                prop_assert!(seen.insert(ip));
                prop_assert!(ip != "10.0.0.0".parse::<IpAddr>().unwrap() && ip != "10.0.1.255".parse::<IpAddr>().unwrap());
            }
        }

        #[test]
        fn ports_never_repeat_until_full(n in 1usize..20) {
            let mut a = PortAllocator::new(30000, 30010);
            let mut seen = BTreeSet::new();
            for i in 0..n {
                match a.allocate_next() {
                    Ok(p) => { prop_assert!(i < 11); prop_assert!(seen.insert(p)); }
                    Err(_) => prop_assert!(i >= 11),
                }
            }
        }
    }
}
