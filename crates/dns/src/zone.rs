//! The cluster zone: Services and EndpointSlices in, a name index of precomputed answers out,
//! updated one object at a time.
//!
//! Concurrency: writers (the agent's watch handlers) serialise on `state`, compute the new nodes
//! of the one Service an event touches *outside* any lock the answerer takes, and then hold the
//! `served` write lock only to swap those nodes in. Answerers hold the read lock for the few
//! microseconds of one answer, so every answer sees one consistent version of each Service. A
//! cheap-to-clone snapshot was the alternative; with a hash map it costs a copy of the whole
//! index per event (cluster-sized, which the programming-latency goal rules out), and a
//! persistent map would slow every lookup to speed up the rare write.
//!
//! Cost of one event: proportional to the Service it touches (its slices, endpoints and ports),
//! never to the cluster.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::entry::Entry;
use crate::objects::{self, ObjectKey, ServiceInfo, SliceInfo};
use crate::records::{self, Node, Params, RrsetBuilder, relative_key};
use crate::wire::{self, PTR_QNAME, rtype};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// How the cluster zone is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain (kubelet's `clusterDomain`), e.g. `cluster.local`.
    pub cluster_domain: String,
    /// TTL of every record except `dns-version` (dns-spec K1: 0..=3600, default 5).
    pub ttl: u32,
    /// The value of the `dns-version.<zone>` TXT record (S3).
    pub schema_version: String,
    /// Addresses of this DNS server, served as `ns.dns.<zone>` and as NS glue (K12).
    pub nameservers: Vec<IpAddr>,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        ZoneConfig {
            cluster_domain: "cluster.local".to_string(),
            ttl: 5,
            schema_version: "1.1.0".to_string(),
            nameservers: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cluster domain {0:?} is not a valid DNS name")]
    InvalidDomain(String),
    #[error("ttl {0} is out of range 0..=3600")]
    TtlOutOfRange(u32),
    #[error("schema version {0:?} is longer than a TXT string (255 bytes)")]
    SchemaVersionTooLong(String),
}

/// TTL of `dns-version` (K1).
const SCHEMA_VERSION_TTL: u32 = 28_800;

/// What the answerer reads.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Cluster-domain names by relative key (wire labels below the zone, lowercase).
    pub names: Set<Entry>,
    /// PTR names by the IP they reverse.
    pub reverse: Map<IpAddr, Entry>,
}

/// Which Services (slots) own an address: the ones with an endpoint at it, which a PTR query
/// for an endpoint address (K10) starts from, or the ones claiming it as a cluster IP. Most
/// addresses are IPv4 with one owner; those cost 8 bytes in `v4`, the rest (IPv6, and the
/// owners after the first) live in `more`.
#[derive(Debug, Default)]
struct IpOwners {
    v4: Map<u32, u32>,
    more: Map<IpAddr, Vec<u32>>,
}

impl IpOwners {
    fn insert(&mut self, ip: IpAddr, id: u32) {
        if let IpAddr::V4(v4) = ip {
            match self.v4.entry(u32::from(v4)) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(id);
                    return;
                }
                std::collections::hash_map::Entry::Occupied(e) if *e.get() == id => return,
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
        let ids = self.more.entry(ip).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    fn remove(&mut self, ip: IpAddr, id: u32) {
        if let Some(ids) = self.more.get_mut(&ip) {
            ids.retain(|i| *i != id);
        }
        if let IpAddr::V4(v4) = ip {
            let k = u32::from(v4);
            if self.v4.get(&k) == Some(&id) {
                match self.more.get_mut(&ip).and_then(Vec::pop) {
                    Some(next) => self.v4.insert(k, next),
                    None => self.v4.remove(&k),
                };
            }
        }
        if self.more.get(&ip).is_some_and(Vec::is_empty) {
            self.more.remove(&ip);
        }
    }

    fn ids(&self, ip: IpAddr) -> Vec<u32> {
        let first = match ip {
            IpAddr::V4(v4) => self.v4.get(&u32::from(v4)).copied(),
            IpAddr::V6(_) => None,
        };
        first.into_iter().chain(self.more.get(&ip).into_iter().flatten().copied()).collect()
    }
}

fn packed_keys(packed: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = packed;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let (key, tail) = tail.split_at_checked(usize::from(len))?;
        rest = tail;
        Some(key)
    })
}

/// Everything the zone holds for one Service name: the Service (while it exists), the
/// EndpointSlices labelled with its name, and what it put in the index. One record per
/// Service, reached by its slot number, instead of a map per aspect each keyed by its own
/// copy of the name: at 30,000 Services the maps' tables and keys were most of the zone.
#[derive(Debug, Default)]
struct Slot {
    key: ObjectKey,
    info: Option<ServiceInfo>,
    /// By slice name, sorted (a Service has one slice per 100 endpoints, so a short list).
    slices: Vec<(Box<str>, SliceInfo)>,
    /// The keys of the names it contributed, each prefixed by its length.
    keys: Box<[u8]>,
    /// The cluster IPs it claims a PTR record for.
    ips: Box<[IpAddr]>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.info.is_none() && self.slices.is_empty() && self.keys.is_empty() && self.ips.is_empty()
    }

    fn slice_infos(&self) -> Vec<&SliceInfo> {
        self.slices.iter().map(|(_, s)| s).collect()
    }

    /// Every address of its slices' endpoints, sorted and unique: what [`IpOwners`] files
    /// under its slot.
    fn endpoint_addresses(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for ep in self.slices.iter().flat_map(|(_, s)| s.endpoints()) {
            ips.extend(ep.addresses.iter());
        }
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    /// `<name>.<ns>.svc` as relative wire labels, when both are valid labels.
    fn svc_key(&self) -> Option<Box<[u8]>> {
        let (ns, name) = (objects::dns_label(self.key.namespace())?, objects::dns_label(self.key.name())?);
        Some(relative_key(&[&name, &ns, "svc"]))
    }
}

/// The source of truth writers work from; never touched by the answerer.
#[derive(Debug, Default)]
struct State {
    /// Slot number by Service (namespace, name).
    by_key: Map<ObjectKey, u32>,
    slots: Vec<Slot>,
    /// Slots free for reuse.
    free: Vec<u32>,
    /// The slot of the Service each EndpointSlice is filed under. (A slot holding slices is
    /// never released, so the number stays that Service's.)
    slice_owner: Map<ObjectKey, u32>,
    /// Services per namespace: `<ns>.svc.<zone>` exists while this is non-zero.
    namespaces: HashMap<Box<str>, usize>,
    /// The Services claiming each cluster IP's PTR record.
    ptrs: IpOwners,
    /// Services by endpoint address.
    endpoints: IpOwners,
    /// While the first lists arrive (see [`Zone::defer_until_synced`]): the slots whose names
    /// are built at [`Zone::mark_synced`] instead of at each event.
    deferred: Option<Vec<u32>>,
}

/// Services whose names [`Zone::mark_synced`] builds and commits together.
const BUILD_CHUNK: usize = 512;

/// A batch of index edits computed under `state` and applied under the `served` write lock.
#[derive(Default)]
struct Edits {
    remove: Vec<Box<[u8]>>,
    insert: Vec<Entry>,
    reverse: Vec<(IpAddr, Option<Entry>)>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.insert.is_empty() && self.reverse.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub params: Params,
    config: ZoneConfig,
    synced: AtomicBool,
    serial: AtomicU32,
    served: RwLock<Served>,
    state: Mutex<State>,
}

/// The cluster zone, shared by the agent (which applies watch events) and the server (which
/// answers from it). Cloning is cheap and shares the zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub(crate) inner: Arc<Inner>,
}

impl Zone {
    /// An empty zone. It answers NXDOMAIN-class outcomes with SERVFAIL (K4) until
    /// [`Zone::mark_synced`] says the Service and EndpointSlice caches have been listed.
    pub fn new(config: ZoneConfig) -> Result<Zone, ConfigError> {
        if config.ttl > 3600 {
            return Err(ConfigError::TtlOutOfRange(config.ttl));
        }
        if config.schema_version.len() > 255 {
            return Err(ConfigError::SchemaVersionTooLong(config.schema_version.clone()));
        }
        let domain = config.cluster_domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|l| objects::dns_label(l).is_some())
            && wire::text_to_wire(&domain).is_some();
        let zone = match wire::text_to_wire(&domain) {
            Some(w) if valid => w.into_boxed_slice(),
            _ => return Err(ConfigError::InvalidDomain(config.cluster_domain.clone())),
        };
        let params = Params { zone, ttl: config.ttl };
        let mut served = Served::default();
        for (key, node) in fixed_nodes(&params, &config) {
            served.names.insert(Entry::new(&key, &node));
        }
        Ok(Zone {
            inner: Arc::new(Inner {
                params,
                config,
                synced: AtomicBool::new(false),
                serial: AtomicU32::new(1),
                served: RwLock::new(served),
                state: Mutex::new(State::default()),
            }),
        })
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.inner.config
    }

    /// Declares the initial lists applied: NXDOMAIN answers are trusted from now on (K4).
    pub fn mark_synced(&self) {
        let mut state = self.state();
        if let Some(mut ids) = state.deferred.take() {
            ids.sort_unstable();
            ids.dedup();
            // A few hundred Services' names at a time: the edits of every Service at once are
            // a second copy of the whole zone, at the moment a node's memory peaks. Nothing
            // answers from the zone as synced before the flag below.
            for chunk in ids.chunks(BUILD_CHUNK) {
                let mut edits = Edits::default();
                for &id in chunk {
                    state.recompute(&self.inner.params, id, &mut edits);
                }
                self.commit(edits);
            }
        }
        self.inner.synced.store(true, Ordering::Release);
    }

    /// Builds no names until [`Zone::mark_synced`]: for a node's first lists, where every
    /// Service would otherwise be built again as each of its slices arrives (and the zone,
    /// not yet synced, cannot be trusted for NXDOMAIN anyway, K4). Upstream's DNS likewise
    /// waits for its caches to sync before it serves.
    pub fn defer_until_synced(&self) {
        if !self.is_synced() {
            self.state().deferred.get_or_insert_with(Vec::new);
        }
    }

    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
    }

    /// The SOA serial: how many changes the zone has taken, starting at 1. A counter rather than
    /// a clock (CoreDNS uses the time of the last change) because nothing transfers this zone
    /// (AXFR is refused) and a counter keeps answers a function of the applied objects alone.
    pub fn serial(&self) -> u32 {
        self.inner.serial.load(Ordering::Relaxed)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Served> {
        self.inner.served.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn commit(&self, edits: Edits) {
        if edits.is_empty() {
            return;
        }
        let mut served = self.inner.served.write().unwrap_or_else(PoisonError::into_inner);
        for key in edits.remove {
            served.names.remove(&key[..]);
        }
        for entry in edits.insert {
            served.names.replace(entry);
        }
        for (ip, node) in edits.reverse {
            match node {
                Some(node) => served.reverse.insert(ip, node),
                None => served.reverse.remove(&ip),
            };
        }
        self.inner.serial.store(self.serial().wrapping_add(1), Ordering::Relaxed);
    }

    /// Adds or replaces a Service (a watch `Added` or `Modified` event).
    pub fn apply_service(&self, svc: &Service) {
        let Some(key) = objects::service_key(svc) else {
            tracing::debug!("ignoring a Service without a name");
            return;
        };
        let info = objects::service_info(svc);
        let mut state = self.state();
        let id = state.slot(key);
        let slot = &mut state.slots[id as usize];
        if slot.info.as_ref() == Some(&info) {
            return;
        }
        let mut edits = Edits::default();
        if slot.info.replace(info).is_none() {
            let ns: Box<str> = slot.key.namespace().into();
            state.namespace_added(&ns, &mut edits);
        }
        state.build(&self.inner.params, id, &mut edits);
        drop(state);
        self.commit(edits);
    }

    /// Removes a Service (a watch `Deleted` event). Its EndpointSlices are kept until deleted,
    /// so a Service re-created before its slices go answers at once.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        let key = ObjectKey::new(namespace, name);
        let mut state = self.state();
        let Some(&id) = state.by_key.get(&key) else { return };
        if state.slots[id as usize].info.take().is_none() {
            return;
        }
        let mut edits = Edits::default();
        state.namespace_removed(key.namespace(), &mut edits);
        state.build(&self.inner.params, id, &mut edits);
        state.release_if_empty(id);
        drop(state);
        self.commit(edits);
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&self, slice: &EndpointSlice) {
        let Some(key) = objects::slice_key(slice) else {
            tracing::debug!("ignoring an EndpointSlice without a name");
            return;
        };
        let (owner, info) = objects::slice_info(slice);
        let mut state = self.state();
        let old = state.slice_owner.get(&key).copied();
        let mut edits = Edits::default();
        let params = &self.inner.params;
        match (old, owner) {
            (Some(id), Some(name)) if state.slots[id as usize].key.name() == &*name => {
                state.file_slice(params, &key, id, Some(info), &mut edits);
            }
            (old, new) => {
                if let Some(id) = old {
                    state.slice_owner.remove(&key);
                    state.file_slice(params, &key, id, None, &mut edits);
                }
                if let Some(name) = new {
                    let id = state.slot(ObjectKey::new(key.namespace(), &name));
                    state.file_slice(params, &key, id, Some(info), &mut edits);
                    state.slice_owner.insert(key, id);
                }
            }
        }
        drop(state);
        self.commit(edits);
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        let key = ObjectKey::new(namespace, name);
        let mut state = self.state();
        let Some(id) = state.slice_owner.remove(&key) else { return };
        let mut edits = Edits::default();
        state.file_slice(&self.inner.params, &key, id, None, &mut edits);
        drop(state);
        self.commit(edits);
    }

    /// K9 under a ClusterIP Service, built when asked for: the name `<ep>.<svc>.<ns>.svc`
    /// (`key`, relative wire labels, lowercase) if a ready endpoint of that Service has the
    /// label `<ep>`.
    pub(crate) fn endpoint_name(&self, key: &[u8]) -> Option<Entry> {
        let labels: Vec<&str> = packed_keys(key).map(std::str::from_utf8).collect::<Result<_, _>>().ok()?;
        let [ep, name, ns, "svc"] = labels.as_slice() else { return None };
        let state = self.state();
        let svc_key = ObjectKey::new(ns, name);
        let slot = &state.slots[*state.by_key.get(&svc_key)? as usize];
        let node = records::endpoint_name(self.inner.params.ttl, slot.info.as_ref()?, &slot.slice_infos(), ep)?;
        Some(Entry::new(key, &node))
    }

    /// K10 for an endpoint address, built when asked for: one PTR per (Service, endpoint
    /// label) with a ready endpoint at `ip`.
    pub(crate) fn endpoint_ptr(&self, ip: IpAddr) -> Option<Entry> {
        let params = &self.inner.params;
        let state = self.state();
        let mut targets = Vec::new();
        for id in state.endpoints.ids(ip) {
            let Some(slot) = state.slots.get(id as usize) else { continue };
            let (Some(svc), Some(svc_key)) = (&slot.info, slot.svc_key()) else { continue };
            records::endpoint_ptr_targets(params, &svc_key, svc, &slot.slice_infos(), ip, &mut targets);
        }
        targets.sort_unstable();
        targets.dedup();
        records::ptr_node(&[], &targets, params.ttl).map(|n| Entry::new(&[], &n))
    }

    /// The (namespace, name) of every Service the zone holds.
    pub fn service_keys(&self) -> Vec<(String, String)> {
        let state = self.state();
        let held = state.slots.iter().filter(|s| s.info.is_some());
        held.map(|s| (s.key.namespace().to_string(), s.key.name().to_string())).collect()
    }

    /// The (namespace, name) of every EndpointSlice the zone holds.
    pub fn slice_keys(&self) -> Vec<(String, String)> {
        self.state().slice_owner.keys().map(|k| (k.namespace().to_string(), k.name().to_string())).collect()
    }

    /// Number of names served in the cluster domain and reverse zones (for metrics and tests).
    pub fn name_count(&self) -> usize {
        let served = self.read();
        served.names.len() + served.reverse.len()
    }
}

impl State {
    /// The slot of Service `key`, taken now if it has none.
    fn slot(&mut self, key: ObjectKey) -> u32 {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let slot = Slot { key: key.clone(), ..Slot::default() };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_key.insert(key, id);
        id
    }

    /// Frees slot `id` once it holds nothing (its index entries are gone with its slices and
    /// claims, so the number can serve another Service).
    fn release_if_empty(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else { return };
        if slot.is_empty() {
            let key = std::mem::take(&mut slot.key);
            self.by_key.remove(&key);
            self.free.push(id);
        }
    }

    /// Files `info` as slice `slice` of the Service in slot `id`, or removes it with `None`;
    /// then re-indexes that Service's endpoints and recomputes its names.
    fn file_slice(&mut self, params: &Params, slice: &ObjectKey, id: u32, info: Option<SliceInfo>, edits: &mut Edits) {
        let slot = &mut self.slots[id as usize];
        let at = slot.slices.binary_search_by(|(n, _)| (**n).cmp(slice.name()));
        match (&at, &info) {
            (Ok(i), Some(info)) if slot.slices[*i].1 == *info => return,
            (Err(_), None) => return,
            _ => {}
        }
        let before = slot.endpoint_addresses();
        match (at, info) {
            (Ok(i), Some(info)) => slot.slices[i].1 = info,
            (Err(i), Some(info)) => {
                // Exactly one more: most Services have one slice.
                slot.slices.reserve_exact(1);
                slot.slices.insert(i, (slice.name().into(), info));
            }
            (Ok(i), None) => {
                slot.slices.remove(i);
            }
            (Err(_), None) => {}
        }
        let after = slot.endpoint_addresses();
        for &ip in before.iter().filter(|ip| after.binary_search(ip).is_err()) {
            self.endpoints.remove(ip, id);
        }
        for &ip in after.iter().filter(|ip| before.binary_search(ip).is_err()) {
            self.endpoints.insert(ip, id);
        }
        self.build(params, id, edits);
        self.release_if_empty(id);
    }

    fn namespace_added(&mut self, ns: &str, edits: &mut Edits) {
        let count = self.namespaces.entry(ns.into()).or_default();
        *count += 1;
        if *count == 1 && objects::dns_label(ns).is_some() {
            edits.insert.push(Entry::new(&relative_key(&[&ns.to_ascii_lowercase(), "svc"]), &Node::default()));
        }
    }

    fn namespace_removed(&mut self, ns: &str, edits: &mut Edits) {
        if let Some(count) = self.namespaces.get_mut(ns) {
            *count -= 1;
            if *count == 0 {
                self.namespaces.remove(ns);
                edits.remove.push(relative_key(&[&ns.to_ascii_lowercase(), "svc"]));
            }
        }
    }

    /// Rebuilds slot `id` now, or books it for [`Zone::mark_synced`] while builds are
    /// deferred.
    fn build(&mut self, params: &Params, id: u32, edits: &mut Edits) {
        match &mut self.deferred {
            Some(ids) => ids.push(id),
            None => self.recompute(params, id, edits),
        }
    }

    /// Rebuilds the names and PTR claims of the Service in slot `id` and diffs them against
    /// what it had.
    fn recompute(&mut self, params: &Params, id: u32, edits: &mut Edits) {
        let slot = &mut self.slots[id as usize];
        let labels = (objects::dns_label(slot.key.namespace()), objects::dns_label(slot.key.name()));
        let built = match (&slot.info, labels) {
            (Some(svc), (Some(ns), Some(name))) => records::build_service(params, &ns, &name, svc, &slot.slice_infos()),
            _ => records::Built::default(),
        };
        let new_keys: HashSet<&[u8]> = built.names.iter().map(|(k, _)| &k[..]).collect();
        edits.remove.extend(packed_keys(&slot.keys).filter(|k| !new_keys.contains(k)).map(Box::from));
        let mut packed = Vec::with_capacity(built.names.iter().map(|(k, _)| k.len() + 1).sum());
        for (k, node) in &built.names {
            packed.push(k.len() as u8);
            packed.extend_from_slice(k);
            edits.insert.push(Entry::new(k, node));
        }
        slot.keys = packed.into_boxed_slice();

        let mut touched: Vec<IpAddr> = std::mem::take(&mut slot.ips).into_vec();
        let mut ips = built.cluster_ips;
        ips.sort_unstable();
        ips.dedup();
        slot.ips = ips.clone().into_boxed_slice();
        for &ip in &touched {
            self.ptrs.remove(ip, id);
        }
        for &ip in &ips {
            self.ptrs.insert(ip, id);
        }
        touched.extend_from_slice(&ips);
        touched.sort_unstable();
        touched.dedup();
        for ip in touched {
            let mut targets: Vec<Vec<u8>> = self
                .ptrs
                .ids(ip)
                .iter()
                .filter_map(|o| self.slots.get(*o as usize)?.svc_key())
                .map(|svc_key| records::ptr_target(params, &svc_key, ip, true, None))
                .collect();
            targets.sort_unstable();
            let entry = records::ptr_node(&targets, &[], params.ttl).map(|n| Entry::new(&[], &n));
            edits.reverse.push((ip, entry));
        }
    }
}

/// Names that exist whatever the cluster holds: the apex (NS), `dns-version` (S3), the empty
/// non-terminals `svc` and `pod` (K3), and `ns.dns` (K12).
fn fixed_nodes(params: &Params, config: &ZoneConfig) -> Vec<(Box<[u8]>, Node)> {
    let ttl = params.ttl;
    let apex_ptr = records::zone_pointer(0);
    let mut ns = RrsetBuilder::new(rtype::NS);
    ns.answer(|o| {
        let at = wire::begin_rr(o, &PTR_QNAME.to_be_bytes(), rtype::NS, ttl);
        o.extend_from_slice(b"\x02ns\x03dns");
        o.extend_from_slice(&apex_ptr);
        wire::finish_rdata(o, at);
    });
    for &ip in &config.nameservers {
        ns.additional(|o| {
            let mut owner = b"\x02ns\x03dns".to_vec();
            owner.extend_from_slice(&apex_ptr);
            wire::put_address_rr(o, &owner, ttl, ip);
        });
    }
    let mut txt = RrsetBuilder::new(rtype::TXT);
    txt.answer(|o| {
        let at = wire::begin_rr(o, &PTR_QNAME.to_be_bytes(), rtype::TXT, SCHEMA_VERSION_TTL);
        o.push(config.schema_version.len() as u8);
        o.extend_from_slice(config.schema_version.as_bytes());
        wire::finish_rdata(o, at);
    });
    vec![
        (Box::default(), Node { rrsets: Box::new([ns.finish()]), alias: None }),
        (relative_key(&["dns-version"]), Node { rrsets: Box::new([txt.finish()]), alias: None }),
        (relative_key(&["svc"]), Node::default()),
        (relative_key(&["pod"]), Node::default()),
        (
            relative_key(&["ns", "dns"]),
            Node { rrsets: records::address_rrsets(&config.nameservers, ttl).into_boxed_slice(), alias: None },
        ),
    ]
}
