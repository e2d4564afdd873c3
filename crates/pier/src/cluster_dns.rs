//! The node's cluster DNS: `crates/dns` answering on the kube-dns cluster IP from this node's
//! own watch of Services and EndpointSlices. The address goes on `lo`, so pods reach it without
//! a DNAT hop (and without the conntrack race behind the well-known 5-second DNS timeouts);
//! the data plane leaves the kube-dns Service alone for the same reason. Other names are
//! forwarded to the host's resolvers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher;
use pier_dns::{Server, ServerConfig, Zone, ZoneConfig, upstreams_from_resolv_conf};

/// Takes the address, binds the server and starts feeding the zone.
pub fn start(client: &kube::Client, dns_ip: IpAddr, cluster_domain: &str, ttl: u32) -> Result<()> {
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
    tokio::spawn(feed(client.clone(), zone));
    Ok(())
}

fn key(ns: &Option<String>, name: &Option<String>) -> (String, String) {
    (ns.clone().unwrap_or_default(), name.clone().unwrap_or_default())
}

enum Event {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Applies every watch event to the zone. After a relist, what the relist no longer holds is
/// deleted, so the zone never keeps a name its objects lost while the watch was down.
async fn feed(client: kube::Client, zone: Zone) {
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .map(|e| e.map(|e| Event::Service(Box::new(e))));
    let slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .map(|e| e.map(|e| Event::Slice(Box::new(e))));
    let mut events = futures::stream::select(services.boxed(), slices.boxed());
    let (mut svc_keys, mut slice_keys) = (BTreeSet::new(), BTreeSet::new());
    let (mut svc_relist, mut slice_relist) = (BTreeSet::new(), BTreeSet::new());
    let (mut svc_synced, mut slice_synced) = (false, false);
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "cluster DNS watch failed; retrying");
                continue;
            }
        };
        match ev {
            Event::Service(e) => match *e {
                watcher::Event::Init => svc_relist.clear(),
                watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                    let k = key(&s.metadata.namespace, &s.metadata.name);
                    svc_relist.insert(k.clone());
                    svc_keys.insert(k);
                    zone.apply_service(&s);
                }
                watcher::Event::Delete(s) => {
                    let k = key(&s.metadata.namespace, &s.metadata.name);
                    svc_keys.remove(&k);
                    zone.delete_service(&k.0, &k.1);
                }
                watcher::Event::InitDone => {
                    for (ns, name) in svc_keys.difference(&svc_relist) {
                        zone.delete_service(ns, name);
                    }
                    svc_keys = std::mem::take(&mut svc_relist);
                    svc_synced = true;
                }
            },
            Event::Slice(e) => match *e {
                watcher::Event::Init => slice_relist.clear(),
                watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                    let k = key(&s.metadata.namespace, &s.metadata.name);
                    slice_relist.insert(k.clone());
                    slice_keys.insert(k);
                    zone.apply_slice(&s);
                }
                watcher::Event::Delete(s) => {
                    let k = key(&s.metadata.namespace, &s.metadata.name);
                    slice_keys.remove(&k);
                    zone.delete_slice(&k.0, &k.1);
                }
                watcher::Event::InitDone => {
                    for (ns, name) in slice_keys.difference(&slice_relist) {
                        zone.delete_slice(ns, name);
                    }
                    slice_keys = std::mem::take(&mut slice_relist);
                    slice_synced = true;
                }
            },
        }
        if svc_synced && slice_synced && !zone.is_synced() {
            zone.mark_synced();
            tracing::info!(names = zone.name_count(), "cluster DNS zone synced");
        }
    }
}
