//! userspace mode: the service table as frontends of the L4 proxy of `crates/l4` — one
//! listener per cluster IP, external IP and LoadBalancer IP and port, and one per node port on
//! every node address — instead of kernel rules. The node takes the whole service range as
//! local (a `local` route), so a cluster IP whose Service has no endpoint has no listener and
//! refuses at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pier_l4::{Choice, Frontend, Protocol as L4Protocol};

use crate::table::{Backend, Protocol, ServiceKey, ServicePort};
use crate::{Change, DataPlane, ProxyError, ServiceTable};

pub struct Userspace {
    proxy: pier_l4::Proxy,
    frontends: BTreeMap<ServiceKey, Vec<Frontend>>,
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Userspace").field("services", &self.frontends.len()).finish()
    }
}

fn addrs(eps: &[Backend]) -> Vec<SocketAddr> {
    eps.iter().map(|b| SocketAddr::new(IpAddr::V4(b.ip), b.port)).collect()
}

/// The frontends of one Service's ports. Pure.
pub fn frontends(ports: &[ServicePort]) -> Vec<Frontend> {
    let mut out = Vec::new();
    for sp in ports {
        let protocol = match sp.protocol {
            Protocol::Tcp => L4Protocol::Tcp,
            Protocol::Udp => L4Protocol::Udp,
            // Not proxied in userspace (kube-proxy's userspace mode did not either).
            Protocol::Sctp => continue,
        };
        let affinity = sp.affinity_timeout.map(|t| Duration::from_secs(u64::from(t)));
        // One pin table per Service port, whichever address the client came in through.
        let scope = affinity.map(|_| format!("{}:{}/{protocol}", sp.service, sp.port_name));
        let frontend = |addr: SocketAddr, eps: &[Backend]| Frontend {
            addr,
            protocol,
            backends: addrs(eps),
            choice: Choice::Random,
            affinity,
            affinity_scope: scope.clone(),
        };
        for vip in &sp.cluster_ips {
            out.push(frontend(SocketAddr::new(IpAddr::V4(*vip), sp.port), sp.internal_endpoints()));
        }
        for ip in &sp.external_ips {
            out.push(frontend(SocketAddr::new(IpAddr::V4(*ip), sp.port), sp.external_endpoints()));
        }
        if let Some(np) = sp.node_port {
            out.push(frontend(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), np), sp.external_endpoints()));
        }
    }
    out
}

impl Userspace {
    /// A proxy serving on `runtime` (the sync loop calls in from a blocking thread).
    pub fn new(runtime: tokio::runtime::Handle) -> Userspace {
        Userspace {
            proxy: pier_l4::Proxy::on_runtime(pier_l4::ProxyConfig::default(), runtime),
            frontends: BTreeMap::new(),
        }
    }

    fn sync(&mut self) -> Result<(), ProxyError> {
        let errors = self.proxy.sync(self.frontends.values().flatten().cloned());
        for (key, e) in &errors {
            tracing::warn!(frontend = %key, error = %e, "userspace proxy frontend not served");
        }
        // A frontend that cannot bind is reported, not retried in a loop: the next change
        // (or full sync) tries it again.
        Ok(())
    }
}

impl DataPlane for Userspace {
    fn full_sync(&mut self, table: &dyn ServiceTable) -> Result<(), ProxyError> {
        self.frontends.clear();
        table.for_each(&mut |k, ports| {
            let f = frontends(ports);
            if !f.is_empty() {
                self.frontends.insert(k.clone(), f);
            }
        });
        self.sync()
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), ProxyError> {
        for c in changes {
            let f = frontends(&c.new);
            if f.is_empty() {
                self.frontends.remove(&c.service);
            } else {
                self.frontends.insert(c.service.clone(), f);
            }
        }
        self.sync()
    }

    fn healthy(&mut self) -> Result<bool, ProxyError> {
        Ok(true)
    }
}
