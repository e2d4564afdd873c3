//! Stale UDP conntrack entries: UDP has no connection to end, so a client that keeps its
//! source port keeps hitting a DNAT entry made for an endpoint that is gone (or a
//! no-endpoint entry made before the first endpoint came). As kube-proxy does, pier deletes
//! those entries when a UDP service port loses an endpoint or gains its first one, with the
//! `conntrack` tool.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::table::{Backend, Protocol, ServicePort};

/// One deletion: entries to `dest:port` over UDP, optionally only those DNATed to `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flush {
    pub dest: Option<Ipv4Addr>,
    pub port: u16,
    pub endpoint: Option<Ipv4Addr>,
}

/// The UDP destinations of a service port: (address or any local address, port).
fn destinations(sp: &ServicePort) -> Vec<(Option<Ipv4Addr>, u16)> {
    let mut d: Vec<(Option<Ipv4Addr>, u16)> =
        sp.cluster_ips.iter().chain(&sp.external_ips).map(|ip| (Some(*ip), sp.port)).collect();
    if let Some(np) = sp.node_port {
        d.push((None, np));
    }
    d
}

fn backends(ports: &[ServicePort]) -> BTreeSet<(String, u16, Backend)> {
    ports
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
        .flat_map(|p| {
            p.cluster_endpoints.iter().chain(&p.local_endpoints).map(move |b| (p.port_name.clone(), p.port, *b))
        })
        .collect()
}

/// What to delete when a Service moves from `old` to `new` ports. Pure.
pub fn stale(old: &[ServicePort], new: &[ServicePort]) -> Vec<Flush> {
    let mut out = BTreeSet::new();
    let (before, after) = (backends(old), backends(new));
    for (name, port, gone) in before.difference(&after) {
        for sp in old.iter().filter(|p| p.protocol == Protocol::Udp && &p.port_name == name && p.port == *port) {
            for (dest, port) in destinations(sp) {
                out.insert(Flush { dest, port, endpoint: Some(gone.ip) });
            }
        }
    }
    for sp in new.iter().filter(|p| p.protocol == Protocol::Udp && !p.cluster_endpoints.is_empty()) {
        let had = old
            .iter()
            .any(|o| o.protocol == Protocol::Udp && o.port_name == sp.port_name && !o.cluster_endpoints.is_empty());
        if !had {
            for (dest, port) in destinations(sp) {
                out.insert(Flush { dest, port, endpoint: None });
            }
        }
    }
    out.into_iter().collect()
}

static MISSING_WARNED: AtomicBool = AtomicBool::new(false);

/// Deletes the entries with the `conntrack` tool; a missing tool is reported once.
pub fn flush(flushes: &[Flush]) {
    for f in flushes {
        let mut cmd = Command::new("conntrack");
        cmd.args(["-D", "-p", "udp"]);
        if let Some(d) = f.dest {
            cmd.args(["--orig-dst", &d.to_string()]);
        }
        cmd.args(["--orig-port-dst", &f.port.to_string()]);
        if let Some(ep) = f.endpoint {
            cmd.args(["--reply-src", &ep.to_string()]);
        }
        match cmd.stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !MISSING_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("the conntrack tool is missing: stale UDP entries are not flushed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "running conntrack"),
        }
    }
}
