//! The node's cluster DNS: `crates/dns` answering on the kube-dns cluster IP from this node's
//! own watch of Services and EndpointSlices. The address goes on `lo`, so pods reach it without
//! a DNAT hop (and without the conntrack race behind the well-known 5-second DNS timeouts);
//! the data plane leaves the kube-dns Service alone for the same reason. Other names are
//! forwarded to the host's resolvers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::runtime::watcher;
use pier_dns::{Server, ServerConfig, Zone, ZoneConfig, upstreams_from_resolv_conf};
use pier_proxy::sync::{Event, SharedEvent};

/// How long the zone's first build waits for the data plane's first sync.
const AFTER_DATA_PLANE: Duration = Duration::from_secs(10);

/// Takes the address, binds the server and starts feeding the zone from `events` (the node's
/// Service and EndpointSlice watch, shared with its data plane). The zone's first build waits
/// until `data_plane` turns true (the data plane's first sync is programmed), for at most
/// [`AFTER_DATA_PLANE`]: Services then work first, and the two largest allocations of a node's
/// start — the data plane's first transaction and every DNS name at once — do not add up (at
/// 30,000 Services they are each some 15 MB).
pub fn start(
    events: futures::stream::BoxStream<'static, SharedEvent>,
    data_plane: tokio::sync::watch::Receiver<bool>,
    dns_ip: IpAddr,
    cluster_domain: &str,
    ttl: u32,
) -> Result<()> {
    if let IpAddr::V4(v4) = dns_ip {
        pier_runtime::add_local_address(v4).with_context(|| format!("taking the cluster DNS address {dns_ip}"))?;
    }
    let zone = Zone::new(ZoneConfig {
        cluster_domain: cluster_domain.trim_end_matches('.').to_string(),
        ttl,
        nameservers: vec![dns_ip],
        ..ZoneConfig::default()
    })
    .context("--cluster-domain / --cluster-dns-ttl")?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams: Vec<SocketAddr> =
        upstreams_from_resolv_conf(&resolv).into_iter().filter(|u| u.ip() != dns_ip).collect();
    let server = Server::bind(ServerConfig::new(SocketAddr::new(dns_ip, 53), upstreams.clone()), zone.clone())?;
    tracing::info!(listen = %server.local_addr(), upstreams = ?upstreams, "cluster DNS is serving");
    tokio::spawn(server.run(std::future::pending()));
    zone.defer_until_synced();
    tokio::spawn(feed(events, data_plane, zone));
    Ok(())
}

/// What a relist delivered, so that at its end whatever the zone still holds and the relist
/// no longer does can be deleted: the zone must never keep a name its objects lost while the
/// watch was down. Only the relist's names are kept, and only while it runs; the zone knows
/// its own.
#[derive(Default)]
struct Relist {
    relisting: Option<BTreeSet<(String, String)>>,
    synced: bool,
}

impl Relist {
    /// Books one event; returns what to apply and what to delete. `held` lists what the zone
    /// holds (asked only at the end of a relist).
    fn handle<'e, K: kube::Resource>(
        &mut self,
        ev: &'e watcher::Event<K>,
        held: impl FnOnce() -> Vec<(String, String)>,
    ) -> (Option<&'e K>, Vec<(String, String)>) {
        let key = |o: &K| (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default());
        match ev {
            watcher::Event::Init => {
                self.relisting = Some(BTreeSet::new());
                (None, Vec::new())
            }
            watcher::Event::InitApply(o) => {
                if let Some(r) = self.relisting.as_mut() {
                    r.insert(key(o));
                }
                (Some(o), Vec::new())
            }
            watcher::Event::Apply(o) => (Some(o), Vec::new()),
            watcher::Event::Delete(o) => (None, vec![key(o)]),
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let gone = held().into_iter().filter(|k| !listed.contains(k)).collect();
                self.synced = true;
                (None, gone)
            }
        }
    }
}

/// Applies every watch event to the zone.
async fn feed(
    mut events: futures::stream::BoxStream<'static, SharedEvent>,
    mut data_plane: tokio::sync::watch::Receiver<bool>,
    zone: Zone,
) {
    let (mut svcs, mut slices) = (Relist::default(), Relist::default());
    while let Some(ev) = events.next().await {
        match ev {
            Err(e) => tracing::warn!(error = %e, "cluster DNS watch failed; retrying"),
            Ok(ev) => match &*ev {
                Event::Service(e) => {
                    let (apply, delete) = svcs.handle(e, || zone.service_keys());
                    apply.iter().for_each(|s| zone.apply_service(s));
                    delete.iter().for_each(|(ns, name)| zone.delete_service(ns, name));
                }
                Event::Slice(e) => {
                    let (apply, delete) = slices.handle(e, || zone.slice_keys());
                    apply.iter().for_each(|s| zone.apply_slice(s));
                    delete.iter().for_each(|(ns, name)| zone.delete_slice(ns, name));
                }
            },
        }
        if svcs.synced && slices.synced && !zone.is_synced() {
            if tokio::time::timeout(AFTER_DATA_PLANE, data_plane.wait_for(|p| *p)).await.is_err() {
                tracing::warn!("the data plane has not programmed its first sync; building the DNS zone anyway");
            }
            zone.mark_synced();
            tracing::info!(names = zone.name_count(), "cluster DNS zone synced");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn svc(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default"}})).unwrap()
    }

    fn key(name: &str) -> (String, String) {
        ("default".to_string(), name.to_string())
    }

    #[test]
    fn a_relist_deletes_what_the_zone_holds_and_the_list_no_longer_does() {
        let mut r = Relist::default();
        assert!(!r.synced);
        assert_eq!(r.handle(&watcher::Event::<Service>::Init, Vec::new).1, Vec::<(String, String)>::new());
        let a = watcher::Event::InitApply(svc("a"));
        let (apply, delete) = r.handle(&a, Vec::new);
        assert!(apply.is_some() && delete.is_empty());
        r.handle(&watcher::Event::InitApply(svc("b")), Vec::new);
        // The zone still holds c from before the watch was lost: the relist's end deletes it.
        let (_, gone) = r.handle(&watcher::Event::<Service>::InitDone, || vec![key("a"), key("b"), key("c")]);
        assert_eq!(gone, [key("c")]);
        assert!(r.synced);
        let (_, gone) = r.handle(&watcher::Event::Delete(svc("a")), Vec::new);
        assert_eq!(gone, [key("a")]);
    }
}
