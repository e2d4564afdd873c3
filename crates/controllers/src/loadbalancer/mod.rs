//! LoadBalancer IPs without a cloud: Services of type LoadBalancer (without a
//! `loadBalancerClass`, which belongs to another controller) get `status.loadBalancer.ingress`
//! from the `--loadbalancer-ip-pool`, honouring `spec.loadBalancerIP` when it is in the pool
//! and free. With no pool, or the pool exhausted, the Service stays `<pending>` and works as a
//! NodePort Service, as on a cluster without a cloud provider.
//!
//! The reconcile is global (one address space, every Service), pure, and keeps every address
//! already handed out where it is, so it is stable when run twice.

pub mod driver;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;

use crate::objects::ObjectKey;

/// The status a Service should have: `Some(ip)` to publish, `None` to clear.
pub type Assignment = (ObjectKey, Option<Ipv4Addr>);

fn wants_address(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
}

fn current(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn in_pool(pool: &[Ipv4Net], ip: Ipv4Addr) -> bool {
    pool.iter().any(|n| n.contains(&ip))
}

/// Usable host addresses of the pool, in order (network and broadcast addresses of prefixes
/// shorter than /31 are skipped).
fn pool_addresses(pool: &[Ipv4Net]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    pool.iter().flat_map(|n| {
        let all = n.hosts();
        all.into_iter()
    })
}

/// The changes that bring every Service's LoadBalancer status in line with the pool.
pub fn reconcile_pool(pool: &[Ipv4Net], services: &[&Service]) -> Vec<Assignment> {
    let mut sorted: Vec<&Service> = services.to_vec();
    // Oldest first, so a contested address goes to the Service that asked first.
    sorted.sort_by(|a, b| {
        let ka = (a.metadata.creation_timestamp.as_ref().map(|t| t.0), ObjectKey::of(&a.metadata));
        let kb = (b.metadata.creation_timestamp.as_ref().map(|t| t.0), ObjectKey::of(&b.metadata));
        ka.cmp(&kb)
    });
    let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut keep: BTreeMap<ObjectKey, Ipv4Addr> = BTreeMap::new();
    // First pass: addresses already published stay, unless they left the pool, collide, or
    // the Service asked for a different one.
    for svc in &sorted {
        if !wants_address(svc) {
            continue;
        }
        let requested: Option<Ipv4Addr> =
            svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).and_then(|s| s.parse().ok());
        if let Some(ip) = current(svc).into_iter().next()
            && in_pool(pool, ip)
            && requested.is_none_or(|r| r == ip)
            && taken.insert(ip)
        {
            keep.insert(ObjectKey::of(&svc.metadata), ip);
        }
    }
    let mut out = Vec::new();
    for svc in &sorted {
        let key = ObjectKey::of(&svc.metadata);
        let have = current(svc);
        if !wants_address(svc) {
            if have.iter().any(|ip| in_pool(pool, *ip)) {
                out.push((key, None));
            }
            continue;
        }
        let chosen = match keep.get(&key) {
            Some(ip) => Some(*ip),
            None => {
                let requested: Option<Ipv4Addr> =
                    svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).and_then(|s| s.parse().ok());
                let pick = match requested {
                    Some(r) => (in_pool(pool, r) && !taken.contains(&r)).then_some(r),
                    None => pool_addresses(pool).find(|ip| !taken.contains(ip)),
                };
                if let Some(ip) = pick {
                    taken.insert(ip);
                }
                pick
            }
        };
        if have.first() != chosen.as_ref() || have.len() > 1 {
            out.push((key, chosen));
        }
    }
    out
}

#[cfg(test)]
mod tests;
