//! The loop between the API and a data plane: watches Services and EndpointSlices, keeps the
//! snapshot, and after each burst of events recompiles only the Services that changed and
//! hands them to the data plane in one batch. Nothing is programmed before both initial lists
//! are in (CIP-21); a data plane that lost its state (table deleted out of band) or failed a
//! batch is rebuilt in full, and so is every data plane once an hour (kube-proxy's nftables
//! full-sync period), which repairs what the cheap check cannot see: single rules or elements
//! deleted out of band.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher;

use crate::table::{Compiled, NodeContext, ServiceInfo, ServiceKey, ServicePort, SliceInfo, Snapshot};
use crate::{Change, DataPlane};

/// How often the data plane is checked for out-of-band damage.
const HEALTH_CHECK: Duration = Duration::from_secs(2);
/// Events queued for one consumer of [`service_events`].
const QUEUED_EVENTS: usize = 1024;

/// How long the data plane runs on incremental changes alone before it is rebuilt in full.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What `/healthz` and `/metrics` report.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<HealthInner>,
    /// True once the first full sync has been programmed.
    programmed: tokio::sync::watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Health {
        Health { inner: Mutex::default(), programmed: tokio::sync::watch::channel(false).0 }
    }
}

#[derive(Debug, Default, Clone)]
pub struct HealthInner {
    /// When the data plane last matched the API (kube-proxy's `lastUpdated`).
    pub last_updated: Option<SystemTime>,
    /// Seconds from an object change arriving to its rules being live, one per batch.
    pub programming_latencies: Vec<f64>,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    pub services: usize,
    /// Changes arrived that are not programmed yet.
    pub pending: bool,
}

impl Health {
    pub fn snapshot(&self) -> HealthInner {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Turns true once the data plane has programmed its first full sync.
    pub fn programmed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.programmed.subscribe()
    }

    fn set_pending(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).pending = true;
    }

    fn record(&self, started: Option<Instant>, full: bool, services: usize) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        h.pending = false;
        h.last_updated = Some(SystemTime::now());
        h.services = services;
        if full {
            h.full_syncs += 1;
            self.programmed.send_replace(true);
        } else {
            h.partial_syncs += 1;
        }
        if let Some(t) = started {
            // Bounded: the histogram is rebuilt from these, the recent ones are what matter.
            if h.programming_latencies.len() >= 4096 {
                h.programming_latencies.drain(..2048);
            }
            h.programming_latencies.push(t.elapsed().as_secs_f64());
        }
    }
}

/// The addresses this node must own for the Services it serves (LoadBalancer IPs), kept on
/// `lo` and taken off again when no Service needs them.
#[derive(Default)]
struct LocalAddresses {
    wanted: BTreeMap<ServiceKey, BTreeSet<Ipv4Addr>>,
    applied: BTreeSet<Ipv4Addr>,
}

impl LocalAddresses {
    fn update(&mut self, key: &ServiceKey, ports: &[ServicePort]) {
        let ips: BTreeSet<Ipv4Addr> = ports.iter().flat_map(|p| p.load_balancer_ips.iter().copied()).collect();
        if ips.is_empty() {
            self.wanted.remove(key);
        } else {
            self.wanted.insert(key.clone(), ips);
        }
    }

    fn reset(&mut self, snap: &Snapshot, node: &NodeContext) {
        self.wanted.clear();
        // Only a Service with LoadBalancer IPs can want one: only those are compiled.
        for key in snap.service_keys() {
            if snap.info(key).is_some_and(|i| !i.load_balancer_ips.is_empty()) {
                self.update(key, &snap.compile(key, node));
            }
        }
    }

    fn apply(&mut self) {
        let wanted: BTreeSet<Ipv4Addr> = self.wanted.values().flatten().copied().collect();
        for ip in wanted.difference(&self.applied) {
            if let Err(e) = pier_runtime::add_local_address(*ip) {
                tracing::warn!(%ip, error = %e, "cannot take the load-balancer address");
            }
        }
        for ip in self.applied.difference(&wanted) {
            if let Err(e) = pier_runtime::remove_local_address(*ip) {
                tracing::warn!(%ip, error = %e, "cannot release the load-balancer address");
            }
        }
        self.applied = wanted;
    }
}

/// One event of the watch both node-side consumers of Services read (this loop and the
/// node's cluster DNS).
pub enum Event {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// One watch event as its consumers share it: decoded once, read by each.
pub type SharedEvent = Result<Arc<Event>, Arc<watcher::Error>>;

/// Every Service and EndpointSlice of the cluster, as `consumers` streams of the same watch
/// events, in order: one watch (and one decode of each object) for the node's data plane and
/// its cluster DNS, where each used to run its own. None can lose an event. Each consumer's
/// queue holds at most [`QUEUED_EVENTS`]; the watch is read no faster than the slowest one
/// takes them, so a consumer that falls behind during a first list of 30,000 Services does not
/// keep thousands of whole decoded objects that the others are done with.
pub fn service_events(client: kube::Client, consumers: usize) -> Vec<futures::stream::BoxStream<'static, SharedEvent>> {
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .map(|e| e.map(|e| Event::Service(Box::new(e))));
    let slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
        .map(|e| e.map(|e| Event::Slice(Box::new(e))));
    let mut events = futures::stream::select(services.boxed(), slices.boxed());
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..consumers).map(|_| tokio::sync::mpsc::channel(QUEUED_EVENTS)).unzip();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let ev: SharedEvent = ev.map(Arc::new).map_err(Arc::new);
            // A consumer that has stopped is simply skipped.
            let mut live = 0;
            for tx in &txs {
                live += usize::from(tx.send(ev.clone()).await.is_ok());
            }
            if live == 0 {
                return;
            }
        }
    });
    rxs.into_iter()
        .map(|rx| futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed())
        .collect()
}

/// The watched objects plus the bookkeeping of relists.
struct State {
    /// The node compiled for: slices are read as it sees them.
    node: NodeContext,
    snap: Snapshot,
    /// Slice (namespace, name) → the Service it was filed under.
    slice_owner: BTreeMap<Box<str>, ServiceKey>,
    relist_services: Option<BTreeMap<ServiceKey, ServiceInfo>>,
    /// Each object is made compact as it arrives, so a relist never holds the objects.
    relist_slices: Option<Vec<Slice>>,
    services_synced: bool,
    slices_synced: bool,
    /// The next sync rebuilds everything (the first one, or after a failure).
    needs_full: bool,
    /// The Services changed since the last sync, each with its ports as that sync
    /// programmed them: compiled from the snapshot just before its first change. (Unused
    /// while a full sync is due.)
    dirty: BTreeMap<ServiceKey, Vec<ServicePort>>,
}

/// A slice's `namespace/name`.
fn slice_id(s: &EndpointSlice) -> Box<str> {
    let (ns, name) =
        (s.metadata.namespace.as_deref().unwrap_or_default(), s.metadata.name.as_deref().unwrap_or_default());
    format!("{ns}/{name}").into_boxed_str()
}

/// The name part of a [`slice_id`] (a namespace holds no `/`).
fn slice_name(id: &str) -> &str {
    id.split_once('/').map_or(id, |(_, name)| name)
}

/// A slice as the node keeps it: its id, its Service and what the compiler reads.
struct Slice {
    id: Box<str>,
    owner: Option<ServiceKey>,
    info: SliceInfo,
}

impl Slice {
    fn of(s: &EndpointSlice, node: &str) -> Slice {
        Slice { id: slice_id(s), owner: Snapshot::owner_of(s), info: SliceInfo::of(s, node) }
    }
}

impl State {
    fn new(node: NodeContext) -> State {
        State {
            node,
            snap: Snapshot::default(),
            slice_owner: BTreeMap::new(),
            relist_services: None,
            relist_slices: None,
            services_synced: false,
            slices_synced: false,
            needs_full: true,
            dirty: BTreeMap::new(),
        }
    }

    /// Marks Service `key` changed; call before the snapshot changes.
    fn touch(&mut self, key: &ServiceKey) {
        if !self.needs_full && !self.dirty.contains_key(key) {
            let programmed = self.snap.compile(key, &self.node);
            self.dirty.insert(key.clone(), programmed);
        }
    }

    fn put_slice(&mut self, s: Slice) {
        self.drop_slice(&s.id);
        if let Some(owner) = s.owner {
            self.touch(&owner);
            let owner = self.snap.put_slice(owner, slice_name(&s.id), s.info);
            self.slice_owner.insert(s.id, owner);
        }
    }

    fn drop_slice(&mut self, id: &str) {
        if let Some(owner) = self.slice_owner.remove(id) {
            self.touch(&owner);
            self.snap.remove_slice(&owner, slice_name(id));
        }
    }

    fn handle(&mut self, ev: &Event) {
        match ev {
            Event::Service(e) => match &**e {
                watcher::Event::Init => self.relist_services = Some(BTreeMap::new()),
                watcher::Event::InitApply(s) => {
                    if let Some(r) = &mut self.relist_services {
                        r.insert(ServiceKey::of(s), ServiceInfo::of(s));
                    }
                }
                watcher::Event::InitDone => {
                    let fresh = self.relist_services.take().unwrap_or_default();
                    let keys: BTreeSet<ServiceKey> = self.snap.service_keys().chain(fresh.keys()).cloned().collect();
                    keys.iter().for_each(|k| self.touch(k));
                    self.snap.replace_services(fresh);
                    self.services_synced = true;
                }
                watcher::Event::Apply(s) => {
                    let key = ServiceKey::of(s);
                    self.touch(&key);
                    self.snap.put_service(key, ServiceInfo::of(s));
                }
                watcher::Event::Delete(s) => {
                    let key = ServiceKey::of(s);
                    self.touch(&key);
                    self.snap.remove_service(&key);
                }
            },
            Event::Slice(e) => match &**e {
                watcher::Event::Init => self.relist_slices = Some(Vec::new()),
                watcher::Event::InitApply(s) => {
                    if let Some(r) = &mut self.relist_slices {
                        r.push(Slice::of(s, &self.node.name));
                    }
                }
                watcher::Event::InitDone => {
                    let fresh = self.relist_slices.take().unwrap_or_default();
                    let ids: Vec<_> = self.slice_owner.keys().cloned().collect();
                    for id in ids {
                        self.drop_slice(&id);
                    }
                    for s in fresh {
                        self.put_slice(s);
                    }
                    self.slices_synced = true;
                }
                watcher::Event::Apply(s) => {
                    let s = Slice::of(s, &self.node.name);
                    self.put_slice(s);
                }
                watcher::Event::Delete(s) => self.drop_slice(&slice_id(s)),
            },
        }
    }
}

/// Runs the data plane on `events` (see [`service_events`]) until they end.
pub async fn run(
    mut events: futures::stream::BoxStream<'static, SharedEvent>,
    node: NodeContext,
    plane: Box<dyn DataPlane>,
    health: Arc<Health>,
) {
    let mut state = State::new(node.clone());
    let mut addresses = LocalAddresses::default();
    let mut plane = Some(plane);
    // When the last full sync succeeded; a full sync is due FULL_SYNC_PERIOD after it.
    let mut last_full = Instant::now();
    let mut check = tokio::time::interval(HEALTH_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let started;
        tokio::select! {
            ev = events.next() => {
                started = Instant::now();
                match ev {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "proxy watch failed; retrying");
                        continue;
                    }
                    Some(Ok(ev)) => state.handle(&ev),
                }
                // Take the whole burst that is already here: one batch, one transaction.
                while let Some(Some(ev)) = events.next().now_or_never() {
                    match ev {
                        Ok(ev) => state.handle(&ev),
                        Err(e) => tracing::warn!(error = %e, "proxy watch failed; retrying"),
                    }
                }
            }
            _ = check.tick() => {
                started = Instant::now();
                if !(state.services_synced && state.slices_synced) {
                    continue;
                }
                if state.needs_full {
                    // A failed batch: rebuild now, below.
                } else if last_full.elapsed() >= FULL_SYNC_PERIOD {
                    tracing::debug!("periodic full sync");
                    state.needs_full = true;
                } else {
                let Some(mut p) = plane.take() else { return };
                let (p, ok) = match tokio::task::spawn_blocking(move || { let ok = p.healthy(); (p, ok) }).await {
                    Ok(r) => r,
                    Err(e) => { tracing::error!(error = %e, "proxy health check panicked"); return; }
                };
                plane = Some(p);
                match ok {
                    Ok(true) => continue,
                    Ok(false) => { tracing::warn!("the data plane lost its state; rebuilding it"); state.needs_full = true; }
                    Err(e) => { tracing::warn!(error = %e, "checking the data plane"); continue; }
                }
                }
            }
        }
        if !(state.services_synced && state.slices_synced) {
            continue;
        }
        health.set_pending();
        let node_ctx = node.clone();
        let Some(mut p) = plane.take() else { return };
        let full = state.needs_full;
        let services = state.snap.service_count();
        let work = if full {
            state.dirty.clear();
            // Lent to the data plane for the sync, which compiles it Service by Service (no
            // event is handled meanwhile).
            Work::Full(std::mem::take(&mut state.snap))
        } else {
            let dirty = std::mem::take(&mut state.dirty);
            Work::Partial(
                dirty
                    .into_iter()
                    .map(|(service, old)| Change { new: state.snap.compile(&service, &node_ctx), old, service })
                    .filter(|c| c.old != c.new)
                    .collect(),
            )
        };
        match &work {
            Work::Full(snap) => addresses.reset(snap, &node_ctx),
            Work::Partial(c) => c.iter().for_each(|c| addresses.update(&c.service, &c.new)),
        }
        let result = tokio::task::spawn_blocking(move || {
            let r = match &work {
                Work::Full(snap) => p.full_sync(&Compiled { snap, node: &node_ctx }),
                Work::Partial(c) if c.is_empty() => Ok(()),
                Work::Partial(c) => p.apply(c),
            };
            (p, r, work)
        })
        .await;
        let (p, r, work) = match result {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "the data plane panicked");
                return;
            }
        };
        if let Work::Full(snap) = work {
            state.snap = snap;
        }
        plane = Some(p);
        match r {
            Ok(()) => {
                state.needs_full = false;
                if full {
                    last_full = Instant::now();
                }
                addresses.apply();
                health.record(Some(started), full, services);
            }
            Err(e) => {
                tracing::warn!(error = %e, full, "programming the data plane failed; rebuilding it");
                state.needs_full = true;
                // Retry soon, without spinning when the failure persists.
                tokio::time::sleep(Duration::from_millis(if full { 1000 } else { 0 })).await;
            }
        }
    }
}

enum Work {
    Full(Snapshot),
    Partial(Vec<Change>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ServiceTable;
    use crate::table::SERVICE_NAME_LABEL;
    use serde_json::json;

    fn node() -> NodeContext {
        NodeContext { name: "n1".into(), pod_cidr: "10.244.0.0/16".parse().unwrap(), served_locally: Vec::new() }
    }

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    fn service_event(e: watcher::Event<Service>) -> Event {
        Event::Service(Box::new(e))
    }

    fn slice_event(e: watcher::Event<EndpointSlice>) -> Event {
        Event::Slice(Box::new(e))
    }

    /// The data plane keeps no copy of what it programmed: each change must carry the ports
    /// the last sync programmed, which the loop compiles from the snapshot before the first
    /// change to a Service since that sync.
    #[test]
    fn a_change_carries_the_ports_programmed_before_it() {
        let mut state = State::new(node());
        for e in [watcher::Event::Init, watcher::Event::InitApply(svc("a", "10.96.0.1")), watcher::Event::InitDone] {
            state.handle(&service_event(e));
        }
        let listed = slice("a-1", "a", &["10.244.0.5"]);
        for e in [watcher::Event::Init, watcher::Event::InitApply(listed), watcher::Event::InitDone] {
            state.handle(&slice_event(e));
        }
        assert!(state.dirty.is_empty(), "nothing to remember while a full sync is due");
        // What a full sync reads, compiled Service by Service, is the whole compiled table.
        let mut read = BTreeMap::new();
        Compiled { snap: &state.snap, node: &node() }.for_each(&mut |k, p| {
            read.insert(k.clone(), p.to_vec());
        });
        assert_eq!(read, state.snap.compile_all(&node()));
        assert_eq!(read.len(), 1);
        let key = ServiceKey::new("default", "a");
        let programmed = state.snap.compile(&key, &node());
        assert_eq!(programmed[0].cluster_endpoints.len(), 1);
        // The full sync is done.
        state.needs_full = false;

        // Two changes before the next sync: the first one's "before" is what is programmed.
        state.handle(&slice_event(watcher::Event::Apply(slice("a-1", "a", &["10.244.0.5", "10.244.0.6"]))));
        state.handle(&slice_event(watcher::Event::Apply(slice("a-1", "a", &["10.244.0.7"]))));
        assert_eq!(state.dirty.get(&key), Some(&programmed));
        // A new Service was not programmed: nothing to take out.
        state.handle(&service_event(watcher::Event::Apply(svc("b", "10.96.0.2"))));
        assert_eq!(state.dirty.get(&ServiceKey::new("default", "b")), Some(&Vec::new()));
        // Deleted: still the programmed ports, to take out; compiled now, nothing.
        state.handle(&service_event(watcher::Event::Delete(svc("a", "10.96.0.1"))));
        assert_eq!(state.dirty.get(&key), Some(&programmed));
        assert!(state.snap.compile(&key, &node()).is_empty());
    }
}
