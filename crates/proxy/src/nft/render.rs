//! The nftables renderer: service ports → the objects of pier's own table (`table ip pier`) in
//! the typed form of [`super::ir`], and the operations ([`Op`]) that create them all or move
//! one Service from its old objects to its new ones. The operations have two encoders: nft
//! script text ([`full_script`], [`delta_script`], for `nft -f`) and nf_tables netlink messages
//! ([`super::wire`]). Pure: no IO.
//!
//! The layout follows kube-proxy's nftables mode (verdict maps keyed by
//! `daddr . l4proto . dport`, `numgen random`, reject chains in the filter hooks, a mark for
//! masquerade), with one change that matters at scale: endpoints are chosen by one
//! `dnat to numgen random mod N map { … }` rule per service port instead of one chain per
//! endpoint. Only Services with ClientIP affinity get kube-proxy's per-endpoint chains and
//! affinity sets, because the affinity record has to be written after the choice.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use super::ir::{
    BaseHook, BaseTable, Chain, ChainType, DataType, FibAddr, Hook, Load, MarkOp, Reject, Rule, SetDecl, Stmt, Value,
    Verdict,
};
use crate::table::{Backend, NodeContext, ServicePort};

pub const TABLE: &str = "pier";
pub const FAMILY: &str = "ip";
const MASQ_MARK: u32 = 0x4000;
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const ENDPOINT_DNAT: &str = "endpoint-dnat";

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
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Affinity set name → its declaration.
    pub sets: BTreeMap<String, SetDecl>,
    /// (set or map, key) → value (empty for plain sets), in nft's element syntax: the text the
    /// snapshot tests and the delta compare. The netlink encoder parses them by the declared
    /// data types of their set, as nft does.
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
    rules: &mut Vec<Rule>,
    comment: &str,
) {
    let proto = Value::Proto(sp.protocol);
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            rules.push(Rule::new(vec![
                Stmt::InSet { keys: vec![Load::IpSaddr], set: affinity_set(sp, ep, timeout) },
                Stmt::goto(&endpoint_chain(sp, ep)),
            ]));
        }
        let arms = eps.iter().map(|ep| Verdict::Goto(endpoint_chain(sp, ep))).collect();
        rules.push(Rule::new(vec![Stmt::NumgenVmap(arms)]).comment(comment));
        return;
    }
    match eps {
        [one] => {
            rules.push(Rule::new(vec![Stmt::eq(Load::L4proto, proto), Stmt::Dnat(one.ip, one.port)]).comment(comment))
        }
        _ => {
            let n = eps.len().min(SLOTS as usize);
            for (i, ep) in eps.iter().take(n).enumerate() {
                o.elements.insert((ENDPOINTS, (slot_base + i as u32).to_string()), format!("{} . {}", ep.ip, ep.port));
            }
            rules.push(
                Rule::new(vec![
                    Stmt::CtMarkSetNumgen { modulus: n as u32, offset: slot_base },
                    Stmt::goto(ENDPOINT_DNAT),
                ])
                .comment(comment),
            );
        }
    }
}

/// Renders the objects of one Service (all its ports). `ids` gives each chain that picks
/// endpoints a number no other live chain has (its slots in the `endpoints` map).
pub fn render_service(ports: &[ServicePort], node: &NodeContext, ids: &mut dyn FnMut(&str) -> u32) -> ServiceObjects {
    let mut o = ServiceObjects::default();
    for sp in ports {
        let proto = sp.protocol.as_str();
        let comment = sp.display_name();
        let service_chain = chain_name("service", sp);
        let local_chain = chain_name("local", sp);
        let external_chain = chain_name("external", sp);

        // Cluster-IP traffic from outside the pod network is masqueraded (the reply must come
        // back through this node); the match on the address keeps external traffic that
        // shares the chain (externalTrafficPolicy Local keeps its source) out of it.
        let masq_from_outside: Vec<Rule> = sp
            .cluster_ips
            .iter()
            .map(|vip| {
                Rule::new(vec![
                    Stmt::eq(Load::IpDaddr, Value::Addr(*vip)),
                    Stmt::neq(Load::IpSaddr, Value::Net(node.pod_cidr)),
                    Stmt::jump(MARK_FOR_MASQUERADE),
                ])
            })
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
                o.sets.insert(
                    set.clone(),
                    SetDecl {
                        key: vec![DataType::Ipv4Addr],
                        data: Vec::new(),
                        dynamic: true,
                        timeout: Some(timeout),
                        comment: None,
                    },
                );
                o.chains.insert(
                    endpoint_chain(sp, ep),
                    vec![
                        Rule::new(vec![Stmt::Update { set, key: Load::IpSaddr }]),
                        Rule::new(vec![Stmt::eq(Load::L4proto, Value::Proto(sp.protocol)), Stmt::Dnat(ep.ip, ep.port)]),
                    ],
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
                let from_node = || Stmt::eq(Load::FibType(FibAddr::Saddr), Value::Local);
                rules.push(Rule::new(vec![
                    Stmt::eq(Load::IpSaddr, Value::Net(node.pod_cidr)),
                    Stmt::goto(&service_chain),
                ]));
                rules.push(Rule::new(vec![from_node(), Stmt::jump(MARK_FOR_MASQUERADE)]));
                rules.push(Rule::new(vec![from_node(), Stmt::goto(&service_chain)]));
                if sp.local_endpoints.is_empty() {
                    rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Drop)]).comment(&comment));
                } else {
                    rules.push(Rule::new(vec![Stmt::goto(&local_chain)]).comment(&comment));
                }
            } else {
                rules.push(Rule::new(vec![Stmt::jump(MARK_FOR_MASQUERADE)]));
                rules.push(Rule::new(vec![Stmt::goto(&service_chain)]).comment(&comment));
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

fn ct_state_new() -> Stmt {
    Stmt::eq(Load::CtState, Value::CtStateNew)
}

fn base_chain(name: &str, kind: ChainType, hook: Hook, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: Some(BaseHook { kind, hook, priority }), rules }
}

fn chain(name: &str, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: None, rules }
}

/// `<daddr> . meta l4proto . th dport vmap @map` and its node-port twin.
fn service_lookups(ips: &str, nodeports: &str) -> Vec<Rule> {
    let local_dest = || {
        vec![
            Stmt::eq(Load::FibType(FibAddr::Daddr), Value::Local),
            Stmt::neq(
                Load::IpDaddr,
                Value::Net(ipnet::Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default()),
            ),
        ]
    };
    let mut node_port = local_dest();
    node_port.push(Stmt::Vmap { keys: vec![Load::L4proto, Load::ThDport], map: nodeports.into() });
    vec![
        Rule::new(vec![Stmt::Vmap { keys: vec![Load::IpDaddr, Load::L4proto, Load::ThDport], map: ips.into() }]),
        Rule::new(node_port),
    ]
}

/// The table's fixed part: comment, sets and maps, base chains and the helper chains every
/// Service jumps to.
pub fn base(node: &NodeContext) -> BaseTable {
    use DataType::{InetProto, InetService, Ipv4Addr as Addr, Mark, Verdict as V};
    let pod = Value::Net(node.pod_cidr);
    let sets = vec![
        (CLUSTER_IPS, SetDecl::new(&[Addr], &[], "Active ClusterIPs")),
        (
            HAIRPIN,
            SetDecl::new(&[Addr, Addr], &[], "Endpoint addresses, as source . destination, for hairpin masquerade"),
        ),
        (
            SERVICE_IPS,
            SetDecl::new(&[Addr, InetProto, InetService], &[V], "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        ),
        (
            ENDPOINTS,
            SetDecl::new(
                &[Mark],
                &[Addr, InetService],
                "Endpoint slots: a service chain puts a random slot of its own in ct mark",
            ),
        ),
        (SERVICE_NODEPORTS, SetDecl::new(&[InetProto, InetService], &[V], "NodePort traffic")),
        (
            NO_ENDPOINT_SERVICES,
            SetDecl::new(
                &[Addr, InetProto, InetService],
                &[V],
                "vmap to drop or reject packets to services with no endpoints",
            ),
        ),
        (
            NO_ENDPOINT_NODEPORTS,
            SetDecl::new(
                &[InetProto, InetService],
                &[V],
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
        ),
    ];
    let check = "service-endpoints-check";
    let cluster_check = "cluster-ips-check";
    let new_jump = |to: &str| Rule::new(vec![ct_state_new(), Stmt::jump(to)]);
    let dnat_slot = |p| {
        Rule::new(vec![
            Stmt::eq(Load::L4proto, Value::Proto(p)),
            Stmt::DnatMap { key: Load::CtMark, map: ENDPOINTS.into() },
        ])
    };
    use crate::table::Protocol;
    let chains = vec![
        base_chain("filter-input", ChainType::Filter, Hook::Input, -110, vec![new_jump(check)]),
        base_chain(
            "filter-forward",
            ChainType::Filter,
            Hook::Forward,
            -110,
            vec![new_jump(check), new_jump(cluster_check)],
        ),
        base_chain("filter-output", ChainType::Filter, Hook::Output, -110, vec![new_jump(check)]),
        base_chain("filter-output-post-dnat", ChainType::Filter, Hook::Output, -90, vec![new_jump(cluster_check)]),
        base_chain(
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            vec![Rule::new(vec![Stmt::jump("services")])],
        ),
        base_chain("nat-output", ChainType::Nat, Hook::Output, -100, vec![Rule::new(vec![Stmt::jump("services")])]),
        base_chain(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            vec![
                Rule::new(vec![Stmt::jump("masquerading")]),
                Rule::new(vec![
                    Stmt::eq(Load::IpSaddr, pod.clone()),
                    Stmt::neq(Load::IpDaddr, pod),
                    Stmt::neq(Load::Oifname, Value::Iface("pier0".into())),
                    Stmt::Masquerade { fully_random: false },
                ])
                .comment("pod traffic leaving the node (the CNI's ipMasq)"),
            ],
        ),
        chain(check, service_lookups(NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS)),
        chain(
            cluster_check,
            vec![
                Rule::new(vec![
                    Stmt::InSet { keys: vec![Load::IpDaddr], set: CLUSTER_IPS.into() },
                    Stmt::Reject(Reject::PortUnreachable),
                ])
                .comment("Reject traffic to invalid ports of ClusterIPs"),
            ],
        ),
        chain(
            "reject-chain",
            vec![
                Rule::new(vec![Stmt::eq(Load::L4proto, Value::Proto(Protocol::Tcp)), Stmt::Reject(Reject::TcpReset)])
                    .comment(&format!("helper for @{NO_ENDPOINT_SERVICES} / @{NO_ENDPOINT_NODEPORTS}")),
                Rule::new(vec![Stmt::Reject(Reject::PortUnreachable)]),
            ],
        ),
        chain(ENDPOINT_DNAT, vec![dnat_slot(Protocol::Tcp), dnat_slot(Protocol::Udp), dnat_slot(Protocol::Sctp)]),
        chain(MARK_FOR_MASQUERADE, vec![Rule::new(vec![Stmt::MarkSet(MarkOp::Or, MASQ_MARK)])]),
        chain(
            "masquerading",
            vec![
                Rule::new(vec![
                    Stmt::eq(Load::CtStatus, Value::CtStatusDnat),
                    Stmt::InSet { keys: vec![Load::IpSaddr, Load::IpDaddr], set: HAIRPIN.into() },
                    Stmt::jump(MARK_FOR_MASQUERADE),
                ])
                .comment("hairpin: a pod reaching itself through a Service"),
                Rule::new(vec![
                    Stmt::Match { load: Load::Mark, mask: Some(MASQ_MARK), neq: false, value: Value::Int(0) },
                    Stmt::Verdict(Verdict::Return),
                ]),
                Rule::new(vec![Stmt::MarkSet(MarkOp::Xor, MASQ_MARK)]),
                Rule::new(vec![Stmt::Masquerade { fully_random: true }]),
            ],
        ),
        chain("services", service_lookups(SERVICE_IPS, SERVICE_NODEPORTS)),
    ];
    BaseTable {
        comment: "pier: Service data plane (managed by pier; changes are overwritten)".into(),
        sets: sets.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
        chains,
    }
}

/// The base table as an nft `table { … }` block. `flush`-free: it is only ever created inside
/// a transaction that first deleted the table.
pub fn base_table(node: &NodeContext) -> String {
    let mut out = String::new();
    write_base(&mut out, &base(node));
    out
}

fn write_base(out: &mut String, t: &BaseTable) {
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{\n\tcomment \"{}\"", t.comment);
    for (name, decl) in &t.sets {
        let _ = writeln!(out, "\t{} {name} {{ {decl} }}", if decl.is_map() { "map" } else { "set" });
    }
    for c in &t.chains {
        let hook = c.hook.map(|h| {
            let kind = if h.kind == ChainType::Nat { "nat" } else { "filter" };
            format!("type {kind} hook {} priority {}; policy accept;", h.hook.name(), h.priority)
        });
        // Short chains without comments read best on one line.
        let compact = c.rules.iter().all(|r| r.comment_text().is_none()) && (hook.is_some() || c.rules.len() == 1);
        if compact {
            let _ = write!(out, "\tchain {} {{ ", c.name);
            if let Some(h) = &hook {
                let _ = write!(out, "{h} ");
            }
            for r in &c.rules {
                let _ = write!(out, "{r}; ");
            }
            out.push_str("}\n");
        } else {
            let _ = writeln!(out, "\tchain {} {{", c.name);
            if let Some(h) = &hook {
                let _ = writeln!(out, "\t\t{h}");
            }
            for r in &c.rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
    }
    out.push_str("}\n");
}

/// One step of a transaction on pier's table. A full sync and a delta are both lists of these;
/// the text and netlink encoders turn them into nft script lines and nf_tables messages.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Create the table if it is missing and delete it: what follows starts from nothing
    /// whether or not the table existed.
    ResetTable,
    /// The table with its fixed sets and chains (rules included).
    BaseTable(&'a BaseTable),
    AddSet(&'a str, &'a SetDecl),
    AddChain(&'a str),
    /// Deletes every rule of the chain.
    FlushChain(&'a str),
    AddRule(&'a str, &'a Rule),
    /// Elements of a base set or map: (key, value), value empty for a plain set.
    AddElements(&'static str, Vec<(Cow<'a, str>, &'a str)>),
    DeleteElements(&'static str, Vec<Cow<'a, str>>),
    DeleteChain(&'a str),
    DeleteSet(&'a str),
}

fn hairpin_key(ip: &Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

/// One transaction that replaces the whole table: it is created, deleted and created again so
/// the transaction works whether or not the table exists, and nothing sees a half-built table.
pub fn full_ops<'a>(base: &'a BaseTable, services: impl IntoIterator<Item = &'a ServiceObjects>) -> Vec<Op<'a>> {
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    let mut ops = vec![Op::ResetTable, Op::BaseTable(base)];
    for o in &services {
        for (name, decl) in &o.sets {
            ops.push(Op::AddSet(name, decl));
        }
        // Every chain exists before any rule jumps to it.
        for name in o.chains.keys() {
            ops.push(Op::AddChain(name));
        }
    }
    for o in &services {
        for (name, rules) in &o.chains {
            ops.extend(rules.iter().map(|r| Op::AddRule(name, r)));
        }
    }
    let mut seen_keys: HashSet<(&str, &str), BuildHasherDefault<WordHasher>> = HashSet::default();
    seen_keys.reserve(services.iter().map(|o| o.elements.len()).sum());
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut by_set: BTreeMap<&'static str, Vec<(Cow<str>, &str)>> = BTreeMap::new();
    for o in &services {
        for ((set, key), value) in &o.elements {
            // Two Services claiming one address and port (e.g. the same external IP): the
            // first one keeps it rather than failing the whole table.
            if seen_keys.insert((set, key)) {
                by_set.entry(set).or_default().push((Cow::Borrowed(key.as_str()), value.as_str()));
            }
        }
        hairpin.extend(&o.hairpin);
    }
    by_set.entry(HAIRPIN).or_default().extend(hairpin.iter().map(|ip| (Cow::Owned(hairpin_key(ip)), "")));
    for (set, elements) in by_set {
        if !elements.is_empty() {
            ops.push(Op::AddElements(set, elements));
        }
    }
    ops
}

/// One transaction moving one Service from `old` to `new` objects, touching nothing else.
/// `hairpin_add` / `hairpin_remove` are the endpoint addresses whose reference count went
/// from 0 to 1 and from 1 to 0 with this change. Empty when nothing changes.
pub fn delta_ops<'a>(
    old: &'a ServiceObjects,
    new: &'a ServiceObjects,
    hairpin_add: &[Ipv4Addr],
    hairpin_remove: &[Ipv4Addr],
) -> Vec<Op<'a>> {
    let mut ops = Vec::new();
    for (name, decl) in &new.sets {
        if !old.sets.contains_key(name) {
            ops.push(Op::AddSet(name, decl));
        }
    }
    // Every chain exists before any rule jumps to it.
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            ops.push(Op::AddChain(name));
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(old_rules) if old_rules == rules => {}
            Some(_) => {
                ops.push(Op::FlushChain(name));
                ops.extend(rules.iter().map(|r| Op::AddRule(name, r)));
            }
            None => ops.extend(rules.iter().map(|r| Op::AddRule(name, r))),
        }
    }
    for ((set, key), value) in &old.elements {
        if new.elements.get(&(*set, key.clone())) != Some(value) {
            ops.push(Op::DeleteElements(set, vec![Cow::Borrowed(key)]));
        }
    }
    for ((set, key), value) in &new.elements {
        if old.elements.get(&(*set, key.clone())) != Some(value) {
            ops.push(Op::AddElements(set, vec![(Cow::Borrowed(key), value)]));
        }
    }
    for ip in hairpin_remove {
        ops.push(Op::DeleteElements(HAIRPIN, vec![Cow::Owned(hairpin_key(ip))]));
    }
    for ip in hairpin_add {
        ops.push(Op::AddElements(HAIRPIN, vec![(Cow::Owned(hairpin_key(ip)), "")]));
    }
    // Chains that go away may jump to each other: empty them all before deleting any.
    let gone: Vec<&String> = old.chains.keys().filter(|n| !new.chains.contains_key(*n)).collect();
    ops.extend(gone.iter().map(|n| Op::FlushChain(n)));
    ops.extend(gone.iter().map(|n| Op::DeleteChain(n)));
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            ops.push(Op::DeleteSet(name));
        }
    }
    ops
}

/// The text encoder: the operations as an nft script (one transaction under `nft -f`).
pub fn script(ops: &[Op]) -> String {
    let mut out = String::with_capacity(1 << 16);
    for op in ops {
        match op {
            Op::ResetTable => {
                let _ = writeln!(out, "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}");
            }
            Op::BaseTable(t) => write_base(&mut out, t),
            Op::AddSet(name, decl) => {
                let _ = writeln!(out, "add set {FAMILY} {TABLE} {name} {{ {decl} }}");
            }
            Op::AddChain(name) => {
                let _ = writeln!(out, "add chain {FAMILY} {TABLE} {name}");
            }
            Op::FlushChain(name) => {
                let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
            }
            Op::AddRule(chain, rule) => {
                let _ = writeln!(out, "add rule {FAMILY} {TABLE} {chain} {rule}");
            }
            // Many elements per statement: nft parses one long statement far faster than many
            // short ones.
            Op::AddElements(set, elements) => {
                for chunk in elements.chunks(4096) {
                    let _ = write!(out, "add element {FAMILY} {TABLE} {set} {{ ");
                    for (i, (key, value)) in chunk.iter().enumerate() {
                        let sep = if i > 0 { ", " } else { "" };
                        if value.is_empty() {
                            let _ = write!(out, "{sep}{key}");
                        } else {
                            let _ = write!(out, "{sep}{key} : {value}");
                        }
                    }
                    out.push_str(" }\n");
                }
            }
            Op::DeleteElements(set, keys) => {
                for chunk in keys.chunks(4096) {
                    let _ = writeln!(out, "delete element {FAMILY} {TABLE} {set} {{ {} }}", chunk.join(", "));
                }
            }
            Op::DeleteChain(name) => {
                let _ = writeln!(out, "delete chain {FAMILY} {TABLE} {name}");
            }
            Op::DeleteSet(name) => {
                let _ = writeln!(out, "delete set {FAMILY} {TABLE} {name}");
            }
        }
    }
    out
}

/// The full sync as an nft script.
pub fn full_script<'a>(node: &NodeContext, services: impl IntoIterator<Item = &'a ServiceObjects>) -> String {
    let base = base(node);
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    script(&full_ops(&base, services))
}

/// A fast non-cryptographic hasher for de-duplicating element keys (SipHash was a fifth of a
/// full sync's user time). The keys come from the renderer, not from an adversary.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One Service's delta as an nft script; empty when nothing changes.
pub fn delta_script(
    old: &ServiceObjects,
    new: &ServiceObjects,
    hairpin_add: &[Ipv4Addr],
    hairpin_remove: &[Ipv4Addr],
) -> String {
    script(&delta_ops(old, new, hairpin_add, hairpin_remove))
}
