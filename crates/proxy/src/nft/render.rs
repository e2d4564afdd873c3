//! The nftables renderer: service ports → the objects of pier's own table (`table ip pier`),
//! and the scripts that create them all or move one Service from its old objects to its new
//! ones. Pure: text in nftables' own syntax, no IO.
//!
//! The layout follows kube-proxy's nftables mode (verdict maps keyed by
//! `daddr . l4proto . dport`, `numgen random`, reject chains in the filter hooks, a mark for
//! masquerade), with one change that matters at scale: endpoints are chosen by one
//! `dnat to numgen random mod N map { … }` rule per service port instead of one chain per
//! endpoint. Only Services with ClientIP affinity get kube-proxy's per-endpoint chains and
//! affinity sets, because the affinity record has to be written after the choice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::table::{Backend, NodeContext, ServicePort};

pub const TABLE: &str = "pier";
pub const FAMILY: &str = "ip";
const MASQ_MARK: &str = "0x00004000";

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const HAIRPIN: &str = "hairpin-endpoints";
pub const ENDPOINTS: &str = "endpoints";

/// The objects one Service owns in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceObjects {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    /// (set or map, key) → value (empty for plain sets).
    pub elements: BTreeMap<(&'static str, String), String>,
    /// Endpoint addresses that need the hairpin masquerade (shared between Services, so the
    /// caller counts references).
    pub hairpin: BTreeSet<Ipv4Addr>,
}

/// A short stable hash, as kube-proxy's chain names carry (base32 of a hash of the port's
/// identity), so names stay unique however long namespace and Service names get.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8).map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char).collect()
}

/// `<ns>/<name>/<proto>/<port name>`: the readable half of a chain name.
fn port_id(sp: &ServicePort) -> String {
    format!("{}/{}/{}/{}", sp.service.namespace, sp.service.name, sp.protocol.as_str(), sp.port_name)
}

fn chain_name(prefix: &str, sp: &ServicePort) -> String {
    let id = port_id(sp);
    format!("{prefix}-{}-{id}", short_hash(&format!("{prefix}{id}")))
}

fn endpoint_chain(sp: &ServicePort, ep: &Backend) -> String {
    let id = format!("{}__{}/{}", port_id(sp), ep.ip, ep.port);
    format!("endpoint-{}-{id}", short_hash(&id))
}

fn affinity_set(sp: &ServicePort, ep: &Backend, timeout: u32) -> String {
    let id = format!("{}__{}/{}", port_id(sp), ep.ip, ep.port);
    format!("affinity-{}", short_hash(&format!("{id}/{timeout}")))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

/// Endpoint slots per service port in the `endpoints` map: a port's endpoints live at
/// `id * SLOTS + i`. More endpoints than this are cut (with a warning by the caller).
pub const SLOTS: u32 = 1 << 12;

/// The rule(s) that pick one of `eps` and DNAT to it. `slot_base` is the first `endpoints` map
/// key of this chain.
///
/// Why `ct mark` and one shared map: the kernel checks every element of a set each time a
/// rule binds to it, and names anonymous sets by scanning the others, so 10,000 rules each
/// with its own `numgen … map { … }` (or each bound to one shared map) costs seconds to load.
/// Instead each service chain only writes a random slot into the connection's mark and jumps to
/// the one rule (per protocol) that turns the mark into an address: 10,000 Services × 10
/// endpoints load in well under a second.
fn pick_rules(
    sp: &ServicePort,
    eps: &[Backend],
    slot_base: u32,
    o: &mut ServiceObjects,
    rules: &mut Vec<String>,
    comment: &str,
) {
    let proto = sp.protocol.as_str();
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            rules.push(format!("ip saddr @{} goto {}", affinity_set(sp, ep, timeout), endpoint_chain(sp, ep)));
        }
        let arms: Vec<String> =
            eps.iter().enumerate().map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(sp, ep))).collect();
        rules.push(format!("numgen random mod {} vmap {{ {} }} comment {comment}", eps.len(), arms.join(", ")));
        return;
    }
    match eps {
        [one] => rules.push(format!("meta l4proto {proto} dnat ip to {one} comment {comment}")),
        _ => {
            let n = eps.len().min(SLOTS as usize);
            for (i, ep) in eps.iter().take(n).enumerate() {
                o.elements.insert((ENDPOINTS, (slot_base + i as u32).to_string()), format!("{} . {}", ep.ip, ep.port));
            }
            rules.push(format!(
                "ct mark set numgen random mod {n} offset {slot_base} goto endpoint-dnat comment {comment}"
            ));
        }
    }
}

/// Renders the objects of one Service (all its ports). `ids` gives each chain that picks
/// endpoints a number no other live chain has (its slots in the `endpoints` map).
pub fn render_service(ports: &[ServicePort], node: &NodeContext, ids: &mut dyn FnMut(&str) -> u32) -> ServiceObjects {
    let mut o = ServiceObjects::default();
    for sp in ports {
        let proto = sp.protocol.as_str();
        let comment = quote(&sp.display_name());
        let service_chain = chain_name("service", sp);
        let local_chain = chain_name("local", sp);
        let external_chain = chain_name("external", sp);

        // Cluster-IP traffic from outside the pod network is masqueraded (the reply must come
        // back through this node); the match on the address keeps external traffic that
        // shares the chain (externalTrafficPolicy Local keeps its source) out of it.
        let masq_from_outside: Vec<String> = sp
            .cluster_ips
            .iter()
            .map(|vip| format!("ip daddr {vip} ip saddr != {} jump mark-for-masquerade", node.pod_cidr))
            .collect();
        if !sp.cluster_endpoints.is_empty() {
            let mut rules = masq_from_outside.clone();
            let base = ids(&service_chain).wrapping_mul(SLOTS);
            pick_rules(sp, &sp.cluster_endpoints, base, &mut o, &mut rules, &comment);
            o.chains.insert(service_chain.clone(), rules);
        }
        let wants_local = sp.internal_local || (sp.external_local && sp.has_external());
        if wants_local && !sp.local_endpoints.is_empty() {
            let mut rules = masq_from_outside.clone();
            let base = ids(&local_chain).wrapping_mul(SLOTS);
            pick_rules(sp, &sp.local_endpoints, base, &mut o, &mut rules, &comment);
            o.chains.insert(local_chain.clone(), rules);
        }
        if let Some(timeout) = sp.affinity_timeout {
            let local_chain_used = wants_local && !sp.local_endpoints.is_empty();
            let eps: BTreeSet<&Backend> =
                sp.cluster_endpoints.iter().chain(sp.local_endpoints.iter().filter(|_| local_chain_used)).collect();
            for ep in eps {
                let set = affinity_set(sp, ep, timeout);
                o.sets.insert(set.clone(), format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"));
                o.chains.insert(
                    endpoint_chain(sp, ep),
                    vec![format!("update @{set} {{ ip saddr }}"), format!("meta l4proto {proto} dnat ip to {ep}")],
                );
            }
        }
        // Only a pod of this node can be both the client and the chosen endpoint.
        o.hairpin.extend(sp.local_endpoints.iter().map(|e| e.ip));

        // Cluster IPs.
        for vip in &sp.cluster_ips {
            o.elements.insert((CLUSTER_IPS, vip.to_string()), String::new());
            let key = format!("{vip} . {proto} . {}", sp.port);
            if !sp.internal_endpoints().is_empty() {
                let target = if sp.internal_local { &local_chain } else { &service_chain };
                o.elements.insert((SERVICE_IPS, key), format!("goto {}", target));
            } else if sp.cluster_endpoints.is_empty() {
                o.elements.insert((NO_ENDPOINT_SERVICES, key), "goto reject-chain".into());
            } else {
                // internalTrafficPolicy Local with endpoints only elsewhere: dropped, not
                // refused (CIP-13).
                o.elements.insert((NO_ENDPOINT_SERVICES, key), "drop".into());
            }
        }

        // External destinations: node port, external IPs, load-balancer IPs.
        if !sp.has_external() {
            continue;
        }
        let external_ok = !sp.cluster_endpoints.is_empty();
        if external_ok {
            let mut rules = Vec::new();
            if sp.external_local {
                // Pods and the node itself are short-circuited to every endpoint (CIP-20);
                // only traffic from outside keeps its source and stays on this node.
                rules.push(format!("ip saddr {} goto {}", node.pod_cidr, service_chain));
                rules.push("fib saddr type local jump mark-for-masquerade".into());
                rules.push(format!("fib saddr type local goto {}", service_chain));
                if sp.local_endpoints.is_empty() {
                    rules.push(format!("drop comment {comment}"));
                } else {
                    rules.push(format!("goto {} comment {comment}", local_chain));
                }
            } else {
                rules.push("jump mark-for-masquerade".into());
                rules.push(format!("goto {} comment {comment}", service_chain));
            }
            o.chains.insert(external_chain.clone(), rules);
        }
        for ip in &sp.external_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            if external_ok {
                o.elements.insert((SERVICE_IPS, key), format!("goto {}", external_chain));
            } else {
                o.elements.insert((NO_ENDPOINT_SERVICES, key), "goto reject-chain".into());
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            if external_ok {
                o.elements.insert((SERVICE_NODEPORTS, key), format!("goto {}", external_chain));
            } else {
                o.elements.insert((NO_ENDPOINT_NODEPORTS, key), "goto reject-chain".into());
            }
        }
    }
    o
}

/// The table's fixed part: sets, maps and base chains. `flush`-free: it is only ever created
/// inside a transaction that first deleted the table.
pub fn base_table(node: &NodeContext) -> String {
    let pod_cidr = node.pod_cidr;
    format!(
        r#"table {FAMILY} {TABLE} {{
	comment "pier: Service data plane (managed by pier; changes are overwritten)"
	set {CLUSTER_IPS} {{ type ipv4_addr; comment "Active ClusterIPs"; }}
	set {HAIRPIN} {{ type ipv4_addr . ipv4_addr; comment "Endpoint addresses, as source . destination, for hairpin masquerade"; }}
	map {SERVICE_IPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"; }}
	map {ENDPOINTS} {{ type mark : ipv4_addr . inet_service; comment "Endpoint slots: a service chain puts a random slot of its own in ct mark"; }}
	map {SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict; comment "NodePort traffic"; }}
	map {NO_ENDPOINT_SERVICES} {{ type ipv4_addr . inet_proto . inet_service : verdict; comment "vmap to drop or reject packets to services with no endpoints"; }}
	map {NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict; comment "vmap to drop or reject packets to service nodeports with no endpoints"; }}
	chain filter-input {{ type filter hook input priority -110; policy accept; ct state new jump service-endpoints-check; }}
	chain filter-forward {{ type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }}
	chain filter-output {{ type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; }}
	chain filter-output-post-dnat {{ type filter hook output priority -90; policy accept; ct state new jump cluster-ips-check; }}
	chain nat-prerouting {{ type nat hook prerouting priority -100; policy accept; jump services; }}
	chain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
	chain nat-postrouting {{
		type nat hook postrouting priority 100; policy accept;
		jump masquerading
		ip saddr {pod_cidr} ip daddr != {pod_cidr} oifname != "pier0" masquerade comment "pod traffic leaving the node (the CNI's ipMasq)"
	}}
	chain service-endpoints-check {{
		ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}
	}}
	chain cluster-ips-check {{
		ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"
	}}
	chain reject-chain {{
		meta l4proto tcp reject with tcp reset comment "helper for @{NO_ENDPOINT_SERVICES} / @{NO_ENDPOINT_NODEPORTS}"
		reject
	}}
	chain endpoint-dnat {{
		meta l4proto tcp dnat ip to ct mark map @{ENDPOINTS}
		meta l4proto udp dnat ip to ct mark map @{ENDPOINTS}
		meta l4proto sctp dnat ip to ct mark map @{ENDPOINTS}
	}}
	chain mark-for-masquerade {{ meta mark set meta mark | {MASQ_MARK}; }}
	chain masquerading {{
		ct status dnat ip saddr . ip daddr @{HAIRPIN} jump mark-for-masquerade comment "hairpin: a pod reaching itself through a Service"
		meta mark & {MASQ_MARK} == 0 return
		meta mark set meta mark ^ {MASQ_MARK}
		masquerade fully-random
	}}
	chain services {{
		ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{SERVICE_NODEPORTS}
	}}
}}
"#
    )
}

fn add_rules(out: &mut String, name: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(out, "add rule {FAMILY} {TABLE} {name} {r}");
    }
}

fn element(out: &mut String, verb: &str, set: &str, key: &str, value: &str) {
    if value.is_empty() || verb == "delete" {
        let _ = writeln!(out, "{verb} element {FAMILY} {TABLE} {set} {{ {key} }}");
    } else {
        let _ = writeln!(out, "{verb} element {FAMILY} {TABLE} {set} {{ {key} : {value} }}");
    }
}

fn hairpin_key(ip: &Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

/// One transaction that replaces the whole table: it is created, deleted and created again so
/// the script works whether or not the table exists, and nothing sees a half-built table.
pub fn full_script<'a>(node: &NodeContext, services: impl IntoIterator<Item = &'a ServiceObjects>) -> String {
    let mut out = String::with_capacity(1 << 16);
    let _ = writeln!(out, "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}");
    out.push_str(&base_table(node));
    let mut seen_keys: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    for o in &services {
        for (name, decl) in &o.sets {
            let _ = writeln!(out, "add set {FAMILY} {TABLE} {name} {{ {decl} }}");
        }
        // Every chain exists before any rule jumps to it.
        for name in o.chains.keys() {
            let _ = writeln!(out, "add chain {FAMILY} {TABLE} {name}");
        }
    }
    for o in &services {
        for (name, rules) in &o.chains {
            add_rules(&mut out, name, rules);
        }
    }
    // Elements grouped per set, many per statement: nft parses one long statement far faster
    // than many short ones.
    let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for o in &services {
        for ((set, key), value) in &o.elements {
            // Two Services claiming one address and port (e.g. the same external IP): the
            // first one keeps it rather than failing the whole table.
            if seen_keys.insert((set, key)) {
                by_set.entry(set).or_default().push(if value.is_empty() {
                    key.clone()
                } else {
                    format!("{key} : {value}")
                });
            }
        }
        hairpin.extend(&o.hairpin);
    }
    by_set.entry(HAIRPIN).or_default().extend(hairpin.iter().map(hairpin_key));
    for (set, elements) in by_set {
        for chunk in elements.chunks(4096) {
            let _ = writeln!(out, "add element {FAMILY} {TABLE} {set} {{ {} }}", chunk.join(", "));
        }
    }
    out
}

/// One transaction moving one Service from `old` to `new` objects, touching nothing else.
/// `hairpin_add` / `hairpin_remove` are the endpoint addresses whose reference count went
/// from 0 to 1 and from 1 to 0 with this change. Empty when nothing changes.
pub fn delta_script(
    old: &ServiceObjects,
    new: &ServiceObjects,
    hairpin_add: &[Ipv4Addr],
    hairpin_remove: &[Ipv4Addr],
) -> String {
    let mut out = String::new();
    for (name, decl) in &new.sets {
        if !old.sets.contains_key(name) {
            let _ = writeln!(out, "add set {FAMILY} {TABLE} {name} {{ {decl} }}");
        }
    }
    // Every chain exists before any rule jumps to it.
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(out, "add chain {FAMILY} {TABLE} {name}");
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(old_rules) if old_rules == rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
                add_rules(&mut out, name, rules);
            }
            None => add_rules(&mut out, name, rules),
        }
    }
    for ((set, key), value) in &old.elements {
        if new.elements.get(&(*set, key.clone())) != Some(value) {
            element(&mut out, "delete", set, key, value);
        }
    }
    for ((set, key), value) in &new.elements {
        if old.elements.get(&(*set, key.clone())) != Some(value) {
            element(&mut out, "add", set, key, value);
        }
    }
    for ip in hairpin_remove {
        element(&mut out, "delete", HAIRPIN, &hairpin_key(ip), "");
    }
    for ip in hairpin_add {
        element(&mut out, "add", HAIRPIN, &hairpin_key(ip), "");
    }
    // Chains that go away may jump to each other: empty them all before deleting any.
    let gone: Vec<&String> = old.chains.keys().filter(|n| !new.chains.contains_key(*n)).collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {}", name);
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain {FAMILY} {TABLE} {}", name);
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(out, "delete set {FAMILY} {TABLE} {name}");
        }
    }
    out
}
