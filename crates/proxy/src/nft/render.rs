//! The nftables renderer: service ports → the objects of pier's own table (`table ip pier`) in
//! the typed form of [`super::ir`], and the operations ([`Op`]) that create them all or move
//! one Service from its old objects to its new ones. The operations have two encoders: nft
//! script text ([`full_script`], [`delta_script`], for `nft -f`) and nf_tables netlink messages
//! ([`super::wire`]). Pure: no IO.
//!
//! The layout follows kube-proxy's nftables mode (maps keyed by `daddr . l4proto . dport`,
//! `numgen random`, reject chains in the filter hooks, a mark for masquerade) with one change
//! that matters at scale: a common Service is pure data. Its ports are elements of data maps —
//! frontend → *endpoint set* (`service-ips`, `external-ips`, `service-nodeports`), endpoint set
//! → its endpoints (`endpoints`) — and of data sets (`no-endpoint-services`, …), and fixed rules
//! do the rest. Adding, changing or removing such a Service adds and deletes elements only: no
//! chain, no rule, no verdict element, because each of those makes the kernel re-validate every
//! chain of the table and costs tens of milliseconds at 30,000 Services.
//!
//! An endpoint set is named by a 32-bit reference ([`set_ref`]) that travels in `ct mark` from
//! the frontend lookup to the pick: its endpoint count (the *class*, bits 19–30) and a number
//! no other live set has (bits 0–18). Bit 31 marks an external frontend of a Service with
//! externalTrafficPolicy Local. The pick is one fixed chain per class, `pick-<n>`:
//! `dnat ip to ct mark . numgen random mod n map @endpoints`, reached through the
//! `endpoint-classes` verdict map on the class bits. Classes 1–16 always exist; a larger one is
//! created with the first set of that size and deleted with the last. Only Services with
//! ClientIP affinity keep per-Service chains (kube-proxy's per-endpoint chains and affinity
//! sets, reached through `session-affinity`), because the affinity record has to be written
//! after the choice.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use super::ir::{
    BaseHook, BaseTable, Chain, ChainType, DataType, FibAddr, Hook, Load, MarkOp, Reject, Rule, SetDecl, Stmt,
    TypeofExpr, Value, Verdict, clean_comment,
};
use crate::table::{Backend, NodeContext, Protocol, ServicePort};

pub const TABLE: &str = "pier";
pub const FAMILY: &str = "ip";
const MASQ_MARK: u32 = 0x4000;
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const CLUSTER_IP: &str = "cluster-ip";
const EXTERNAL: &str = "external";
const EXTERNAL_LOCAL: &str = "external-local";
const ENDPOINT_PICK: &str = "endpoint-pick";
const REJECT_CHAIN: &str = "reject-chain";

pub const CLUSTER_IPS: &str = "cluster-ips";
pub const HAIRPIN: &str = "hairpin-endpoints";
pub const SERVICE_IPS: &str = "service-ips";
pub const EXTERNAL_IPS: &str = "external-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_LOCAL_ENDPOINT_SERVICES: &str = "no-local-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const LOCAL_ENDPOINT_SETS: &str = "local-endpoint-sets";
pub const ENDPOINT_CLASSES: &str = "endpoint-classes";
pub const SESSION_AFFINITY: &str = "session-affinity";
pub const ENDPOINTS: &str = "endpoints";

/// Bits of an endpoint set's number in its reference: 524,288 live sets (two per service
/// port at most; freed numbers are reused).
const NUMBER_BITS: u32 = 19;
/// The most endpoints one set holds (its class field is 12 bits); more are cut.
pub const MAX_ENDPOINTS: u32 = (1 << 12) - 1;
/// The class bits of a reference: the endpoint count, or 0 for a Service with affinity.
const CLASS_MASK: u32 = MAX_ENDPOINTS << NUMBER_BITS;
/// On an external frontend's reference: the Service has externalTrafficPolicy Local.
const LOCAL_POLICY: u32 = 1 << 31;
/// Classes whose pick chain always exists, so sets of up to this many endpoints never need
/// a chain of their own.
pub const PRESET_CLASSES: u32 = 16;
/// The protocols a Service port can have (the pick's DNAT needs a transport protocol).
const SERVICE_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// The reference of an endpoint set: `count` endpoints (0: picked by a per-Service chain),
/// `number` unique among live sets.
pub fn set_ref(count: u32, number: u32) -> u32 {
    (count.min(MAX_ENDPOINTS) << NUMBER_BITS) | (number & ((1 << NUMBER_BITS) - 1))
}

/// A mark as nft writes and prints it.
fn mark(v: u32) -> String {
    format!("{v:#010x}")
}

/// One element's data: its value in nft's syntax (empty for a plain set) and its comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elem {
    pub value: String,
    pub comment: Option<String>,
}

impl Elem {
    fn value(value: String) -> Elem {
        Elem { value, comment: None }
    }

    fn commented(value: String, comment: &str) -> Elem {
        Elem { value, comment: Some(clean_comment(comment)) }
    }
}

/// The objects one Service owns in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceObjects {
    /// Chain name → its rules, in order (Services with affinity only).
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Affinity set name → its declaration.
    pub sets: BTreeMap<String, SetDecl>,
    /// (set or map, key) → value and comment, in nft's element syntax: the text the snapshot
    /// tests and the delta compare. The netlink encoder parses them by the declared data types
    /// of their set, as nft does.
    pub elements: BTreeMap<(&'static str, String), Elem>,
    /// Endpoint addresses that need the hairpin masquerade (shared between Services, so the
    /// caller counts references).
    pub hairpin: BTreeSet<Ipv4Addr>,
    /// The pick classes (endpoint counts) this Service's sets use (shared, counted by the
    /// caller).
    pub classes: BTreeSet<u32>,
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
    format!("{}/{}/{}", sp.service, sp.protocol.as_str(), sp.port_name)
}

/// The name of a service port's endpoint set: the identity its number is allocated to, and
/// the chain's name when the Service has affinity.
fn set_name(prefix: &str, sp: &ServicePort) -> String {
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

/// The chains every packet walks, and the only objects a generational replace (see
/// `Nftables::full_sync`) rewrites in place: every other chain and every set of the table is
/// named for its generation ([`set_in`], [`chain_in`]).
pub const FIXED_CHAINS: [&str; 17] = [
    "filter-input",
    "filter-forward",
    "filter-output",
    "filter-output-post-dnat",
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "service-endpoints-check",
    "cluster-ips-check",
    REJECT_CHAIN,
    MARK_FOR_MASQUERADE,
    "masquerading",
    "services",
    CLUSTER_IP,
    EXTERNAL,
    EXTERNAL_LOCAL,
    ENDPOINT_PICK,
];

/// A set's name in generation `generation`: generation 0 has the plain names, generation 1 the
/// suffix `-g1`. Anonymous sets (`__…`) are the kernel's to name.
pub fn set_in(name: &str, generation: u32) -> Cow<'_, str> {
    if generation == 0 || name.starts_with("__") {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}-g{generation}"))
    }
}

/// A chain's name in generation `generation` (fixed chains keep theirs).
pub fn chain_in(name: &str, generation: u32) -> Cow<'_, str> {
    if generation == 0 || FIXED_CHAINS.contains(&name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name}-g{generation}"))
    }
}

/// The chain that picks one of `n` endpoints.
pub fn class_chain(n: u32) -> String {
    format!("pick-{n}")
}

/// The fixed objects of one pick class: its chain, the chain's one rule, and its element of
/// `endpoint-classes` (key, verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassObjects {
    pub chain: String,
    pub rule: Rule,
    pub key: String,
    pub verdict: String,
}

pub fn class_objects(n: u32) -> ClassObjects {
    let chain = class_chain(n);
    ClassObjects {
        rule: Rule::new(vec![
            Stmt::L4protoIn(SERVICE_PROTOCOLS.to_vec()),
            Stmt::DnatPick { modulus: n, map: ENDPOINTS.into() },
        ]),
        key: mark(set_ref(n, 0)),
        verdict: format!("goto {chain}"),
        chain,
    }
}

/// The classes that always exist.
pub fn preset_classes() -> impl Iterator<Item = u32> {
    1..=PRESET_CLASSES
}

/// Adds one endpoint set of `sp` to `o` and returns its reference. `prefix` tells the set of
/// cluster-wide endpoints ("service") from the set of this node's ("local").
fn endpoint_set(
    sp: &ServicePort,
    eps: &[Backend],
    prefix: &str,
    ids: &mut dyn FnMut(&str) -> u32,
    o: &mut ServiceObjects,
) -> u32 {
    let name = set_name(prefix, sp);
    let number = ids(&name);
    let n = eps.len().min(MAX_ENDPOINTS as usize);
    let Some(timeout) = sp.affinity_timeout else {
        let r = set_ref(n as u32, number);
        o.classes.insert(n as u32);
        let key = mark(r);
        for (i, ep) in eps.iter().take(n).enumerate() {
            o.elements.insert((ENDPOINTS, format!("{key} . {i}")), Elem::value(format!("{} . {}", ep.ip, ep.port)));
        }
        return r;
    };
    // ClientIP affinity: kube-proxy's chains. A client with a live record goes back to its
    // endpoint; a new one is spread by numgen, and the endpoint's chain writes the record.
    // Sets are named by endpoint, so the cluster-wide and local chains share records.
    let r = set_ref(0, number);
    let mut rules = Vec::new();
    for ep in eps.iter().take(n) {
        rules.push(Rule::new(vec![
            Stmt::InSet { keys: vec![Load::IpSaddr], set: affinity_set(sp, ep, timeout) },
            Stmt::goto(&endpoint_chain(sp, ep)),
        ]));
        let set = affinity_set(sp, ep, timeout);
        o.sets.insert(
            set.clone(),
            SetDecl {
                key: vec![DataType::Ipv4Addr],
                data: Vec::new(),
                typeof_exprs: None,
                dynamic: true,
                timeout: Some(timeout),
                size: None,
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
    let arms = eps.iter().take(n).map(|ep| Verdict::Goto(endpoint_chain(sp, ep))).collect();
    rules.push(Rule::new(vec![Stmt::NumgenVmap(arms)]).comment(&sp.display_name()));
    o.chains.insert(name.clone(), rules);
    o.elements.insert((SESSION_AFFINITY, mark(r)), Elem::value(format!("goto {name}")));
    r
}

/// Renders the objects of one Service (all its ports). `ids` gives each endpoint set a number
/// no other live set has.
pub fn render_service(ports: &[ServicePort], ids: &mut dyn FnMut(&str) -> u32) -> ServiceObjects {
    let mut o = ServiceObjects::default();
    for sp in ports {
        let proto = sp.protocol.as_str();
        let comment = sp.display_name();
        // The cluster-wide set serves cluster IPs (internalTrafficPolicy Cluster) and external
        // traffic; this node's set serves the Local policies.
        let cluster_used = !sp.internal_local || sp.has_external();
        let local_used = sp.internal_local || (sp.external_local && sp.has_external());
        let cluster_set = (cluster_used && !sp.cluster_endpoints.is_empty())
            .then(|| endpoint_set(sp, &sp.cluster_endpoints, "service", ids, &mut o));
        let local_set = (local_used && !sp.local_endpoints.is_empty())
            .then(|| endpoint_set(sp, &sp.local_endpoints, "local", ids, &mut o));
        // Only a pod of this node can be both the client and the chosen endpoint.
        o.hairpin.extend(sp.local_endpoints.iter().map(|e| e.ip));

        // Cluster IPs.
        let internal = if sp.internal_local { local_set } else { cluster_set };
        for vip in &sp.cluster_ips {
            o.elements.insert((CLUSTER_IPS, vip.to_string()), Elem::default());
            let key = format!("{vip} . {proto} . {}", sp.port);
            match internal {
                Some(r) => o.elements.insert((SERVICE_IPS, key), Elem::commented(mark(r), &comment)),
                None if sp.cluster_endpoints.is_empty() => {
                    o.elements.insert((NO_ENDPOINT_SERVICES, key), Elem::commented(String::new(), &comment))
                }
                // internalTrafficPolicy Local with endpoints only elsewhere: dropped, not
                // refused (CIP-13).
                None => o.elements.insert((NO_LOCAL_ENDPOINT_SERVICES, key), Elem::commented(String::new(), &comment)),
            };
        }

        // External destinations: node port, external IPs, load-balancer IPs.
        if !sp.has_external() {
            continue;
        }
        let external = cluster_set.map(|r| if sp.external_local { r | LOCAL_POLICY } else { r });
        if let (Some(c), Some(l), true) = (cluster_set, local_set, sp.external_local) {
            o.elements.insert((LOCAL_ENDPOINT_SETS, mark(c)), Elem::value(mark(l)));
        }
        for ip in &sp.external_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            match external {
                Some(r) => o.elements.insert((EXTERNAL_IPS, key), Elem::commented(mark(r), &comment)),
                None => o.elements.insert((NO_ENDPOINT_SERVICES, key), Elem::commented(String::new(), &comment)),
            };
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            match external {
                Some(r) => o.elements.insert((SERVICE_NODEPORTS, key), Elem::commented(mark(r), &comment)),
                None => o.elements.insert((NO_ENDPOINT_NODEPORTS, key), Elem::commented(String::new(), &comment)),
            };
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

fn not_loopback() -> Stmt {
    Stmt::neq(Load::IpDaddr, Value::Net(ipnet::Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default()))
}

/// A node port is any local address but loopback's (NP-06).
fn local_dest() -> Stmt {
    Stmt::eq(Load::FibType(FibAddr::Daddr), Value::Local)
}

fn frontend_key() -> Vec<Load> {
    vec![Load::IpDaddr, Load::L4proto, Load::ThDport]
}

/// Element counts a full sync loads, by set: they size the sets (see [`SetDecl::size`]).
pub type Counts = BTreeMap<&'static str, usize>;

/// The size a set is declared with: twice what the full sync loads, so growth between full
/// syncs fits; at least 8192. A delta that would go beyond it fails, and the full sync after it
/// sizes the set again.
pub fn capacity(count: usize) -> u32 {
    u32::try_from((count.saturating_mul(2)).next_power_of_two()).unwrap_or(u32::MAX).max(1 << 13)
}

/// The table's fixed part: comment, sets and maps (sized for `counts`), base chains and the
/// chains every Service goes through.
pub fn base(node: &NodeContext, counts: &Counts) -> BaseTable {
    use DataType::{InetProto, InetService, Integer, Ipv4Addr as Addr, Mark, Verdict as V};
    let pod = Value::Net(node.pod_cidr);
    let sized =
        |name: &'static str, decl: SetDecl| (name, decl.with_size(capacity(counts.get(name).copied().unwrap_or(0))));
    let mut endpoints = SetDecl::new(
        &[Mark, Integer],
        &[Addr, InetService],
        "Endpoints: endpoint set reference . index -> address . port",
    );
    endpoints.typeof_exprs =
        Some((vec![TypeofExpr::CtMark, TypeofExpr::NumgenRandom(2)], vec![TypeofExpr::IpDaddr, TypeofExpr::ThDport]));
    let sets = vec![
        sized(CLUSTER_IPS, SetDecl::new(&[Addr], &[], "Active ClusterIPs")),
        sized(
            HAIRPIN,
            SetDecl::new(&[Addr, Addr], &[], "Endpoint addresses, as source . destination, for hairpin masquerade"),
        ),
        sized(SERVICE_IPS, SetDecl::new(&[Addr, InetProto, InetService], &[Mark], "ClusterIP traffic -> endpoint set")),
        sized(
            EXTERNAL_IPS,
            SetDecl::new(
                &[Addr, InetProto, InetService],
                &[Mark],
                "ExternalIP and LoadBalancer IP traffic -> endpoint set (| 0x80000000: externalTrafficPolicy Local)",
            ),
        ),
        sized(
            SERVICE_NODEPORTS,
            SetDecl::new(
                &[InetProto, InetService],
                &[Mark],
                "NodePort traffic -> endpoint set (| 0x80000000: externalTrafficPolicy Local)",
            ),
        ),
        sized(
            NO_ENDPOINT_SERVICES,
            SetDecl::new(&[Addr, InetProto, InetService], &[], "Services with no usable endpoint: rejected"),
        ),
        sized(
            NO_LOCAL_ENDPOINT_SERVICES,
            SetDecl::new(
                &[Addr, InetProto, InetService],
                &[],
                "internalTrafficPolicy Local with endpoints on other nodes only: dropped",
            ),
        ),
        sized(
            NO_ENDPOINT_NODEPORTS,
            SetDecl::new(&[InetProto, InetService], &[], "Service nodeports with no usable endpoint: rejected"),
        ),
        sized(
            LOCAL_ENDPOINT_SETS,
            SetDecl::new(&[Mark], &[Mark], "externalTrafficPolicy Local: endpoint set -> its endpoints on this node"),
        ),
        sized(ENDPOINT_CLASSES, SetDecl::new(&[Mark], &[V], "Endpoint count -> the chain that picks one")),
        sized(
            SESSION_AFFINITY,
            SetDecl::new(&[Mark], &[V], "Endpoint sets of Services with ClientIP affinity -> their chains"),
        ),
        sized(ENDPOINTS, endpoints),
    ];
    let check = "service-endpoints-check";
    let cluster_check = "cluster-ips-check";
    let new_jump = |to: &str| Rule::new(vec![ct_state_new(), Stmt::jump(to)]);
    let from_node = || Stmt::eq(Load::FibType(FibAddr::Saddr), Value::Local);
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
                    Stmt::neq(Load::IpDaddr, pod.clone()),
                    Stmt::neq(Load::Oifname, Value::Iface("pier0".into())),
                    Stmt::Masquerade { fully_random: false },
                ])
                .comment("pod traffic leaving the node (the CNI's ipMasq)"),
            ],
        ),
        chain(
            check,
            vec![
                Rule::new(vec![
                    Stmt::InSet { keys: frontend_key(), set: NO_ENDPOINT_SERVICES.into() },
                    Stmt::goto(REJECT_CHAIN),
                ]),
                Rule::new(vec![
                    Stmt::InSet { keys: frontend_key(), set: NO_LOCAL_ENDPOINT_SERVICES.into() },
                    Stmt::Verdict(Verdict::Drop),
                ]),
                Rule::new(vec![
                    local_dest(),
                    not_loopback(),
                    Stmt::InSet { keys: vec![Load::L4proto, Load::ThDport], set: NO_ENDPOINT_NODEPORTS.into() },
                    Stmt::goto(REJECT_CHAIN),
                ]),
            ],
        ),
        chain(
            cluster_check,
            vec![
                Rule::new(vec![
                    Stmt::InSet { keys: vec![Load::IpDaddr], set: CLUSTER_IPS.into() },
                    Stmt::L4protoIn(SERVICE_PROTOCOLS.to_vec()),
                    Stmt::Reject(Reject::PortUnreachable),
                ])
                .comment("Reject traffic to invalid ports of ClusterIPs"),
                // Nothing answers anything else (ping) on a cluster IP, as with kube-proxy's
                // iptables mode: silence rather than an ICMP error.
                Rule::new(vec![
                    Stmt::InSet { keys: vec![Load::IpDaddr], set: CLUSTER_IPS.into() },
                    Stmt::Verdict(Verdict::Drop),
                ])
                .comment("Drop other protocols to ClusterIPs"),
            ],
        ),
        chain(
            REJECT_CHAIN,
            vec![
                Rule::new(vec![Stmt::eq(Load::L4proto, Value::Proto(Protocol::Tcp)), Stmt::Reject(Reject::TcpReset)])
                    .comment(&format!("helper for @{NO_ENDPOINT_SERVICES} / @{NO_ENDPOINT_NODEPORTS}")),
                Rule::new(vec![Stmt::Reject(Reject::PortUnreachable)]),
            ],
        ),
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
        // Each lookup leaves the endpoint set in ct mark for the chains below.
        chain(
            "services",
            vec![
                Rule::new(vec![
                    Stmt::CtMarkSetMap { keys: frontend_key(), map: SERVICE_IPS.into() },
                    Stmt::goto(CLUSTER_IP),
                ]),
                Rule::new(vec![
                    Stmt::CtMarkSetMap { keys: frontend_key(), map: EXTERNAL_IPS.into() },
                    Stmt::goto(EXTERNAL),
                ]),
                Rule::new(vec![
                    local_dest(),
                    not_loopback(),
                    Stmt::CtMarkSetMap { keys: vec![Load::L4proto, Load::ThDport], map: SERVICE_NODEPORTS.into() },
                    Stmt::goto(EXTERNAL),
                ]),
            ],
        ),
        chain(
            CLUSTER_IP,
            vec![
                // From outside the pod network: the reply must come back through this node.
                Rule::new(vec![Stmt::neq(Load::IpSaddr, pod.clone()), Stmt::jump(MARK_FOR_MASQUERADE)]),
                Rule::new(vec![Stmt::goto(ENDPOINT_PICK)]),
            ],
        ),
        chain(
            EXTERNAL,
            vec![
                Rule::new(vec![
                    Stmt::Match {
                        load: Load::CtMark,
                        mask: Some(LOCAL_POLICY),
                        neq: false,
                        value: Value::Int(LOCAL_POLICY),
                    },
                    Stmt::goto(EXTERNAL_LOCAL),
                ]),
                Rule::new(vec![Stmt::jump(MARK_FOR_MASQUERADE)]),
                Rule::new(vec![Stmt::goto(ENDPOINT_PICK)]),
            ],
        ),
        // externalTrafficPolicy Local: pods and the node itself are short-circuited to every
        // endpoint (CIP-20); only traffic from outside keeps its source and stays on this node.
        chain(
            EXTERNAL_LOCAL,
            vec![
                Rule::new(vec![Stmt::CtMarkAnd(!LOCAL_POLICY)]),
                Rule::new(vec![Stmt::eq(Load::IpSaddr, pod), Stmt::goto(ENDPOINT_PICK)]),
                Rule::new(vec![from_node(), Stmt::jump(MARK_FOR_MASQUERADE)]),
                Rule::new(vec![from_node(), Stmt::goto(ENDPOINT_PICK)]),
                Rule::new(vec![
                    Stmt::CtMarkSetMap { keys: vec![Load::CtMark], map: LOCAL_ENDPOINT_SETS.into() },
                    Stmt::goto(ENDPOINT_PICK),
                ]),
                Rule::new(vec![Stmt::Verdict(Verdict::Drop)]).comment("no endpoint on this node"),
            ],
        ),
        chain(
            ENDPOINT_PICK,
            vec![
                Rule::new(vec![Stmt::MaskedVmap {
                    load: Load::CtMark,
                    mask: CLASS_MASK,
                    map: ENDPOINT_CLASSES.into(),
                }]),
                Rule::new(vec![Stmt::Vmap { keys: vec![Load::CtMark], map: SESSION_AFFINITY.into() }]),
            ],
        ),
    ];
    BaseTable {
        comment: "pier: Service data plane (managed by pier; changes are overwritten)".into(),
        sets: sets.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
        chains,
    }
}

/// The base table as an nft `table { … }` block, sized for `counts`. `flush`-free: it is only
/// ever created inside a transaction that first deleted the table.
pub fn base_table(node: &NodeContext, counts: &Counts) -> String {
    let mut out = String::new();
    write_base(&mut out, &base(node, counts));
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

/// One element of an `add element`: key, value (empty for a plain set) and comment.
#[derive(Debug, Clone)]
pub struct ElemRef<'a> {
    pub key: Cow<'a, str>,
    pub value: &'a str,
    pub comment: Option<&'a str>,
}

impl<'a> ElemRef<'a> {
    fn new(key: &'a str, e: &'a Elem) -> ElemRef<'a> {
        ElemRef { key: Cow::Borrowed(key), value: &e.value, comment: e.comment.as_deref() }
    }

    fn plain(key: String) -> ElemRef<'a> {
        ElemRef { key: Cow::Owned(key), value: "", comment: None }
    }
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
    /// Elements of a base set or map.
    AddElements(&'static str, Vec<ElemRef<'a>>),
    DeleteElements(&'static str, Vec<Cow<'a, str>>),
    DeleteChain(&'a str),
    DeleteSet(&'a str),
}

fn hairpin_key(ip: &Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

/// How many elements each set gets from `services` and `classes` (the sizes of a full sync).
pub fn counts<'a>(services: impl IntoIterator<Item = &'a ServiceObjects>, classes: usize) -> Counts {
    let mut counts = Counts::new();
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for o in services {
        add_counts(&mut counts, o);
        hairpin.extend(&o.hairpin);
    }
    counts.insert(HAIRPIN, hairpin.len());
    counts.insert(ENDPOINT_CLASSES, classes);
    counts
}

/// Adds one Service's elements to `counts` (the hairpin and class sets are the caller's, as
/// they are shared).
pub fn add_counts(counts: &mut Counts, o: &ServiceObjects) {
    for (set, _) in o.elements.keys() {
        *counts.entry(set).or_default() += 1;
    }
}

/// Creates pick classes: chains, rules, then their `endpoint-classes` elements.
pub fn class_add_ops(classes: &[ClassObjects]) -> Vec<Op<'_>> {
    let mut ops: Vec<Op> = classes.iter().map(|c| Op::AddChain(&c.chain)).collect();
    ops.extend(classes.iter().map(|c| Op::AddRule(&c.chain, &c.rule)));
    if !classes.is_empty() {
        let elements =
            classes.iter().map(|c| ElemRef { key: Cow::Borrowed(&c.key), value: &c.verdict, comment: None }).collect();
        ops.push(Op::AddElements(ENDPOINT_CLASSES, elements));
    }
    ops
}

/// Deletes pick classes no set uses any more: their elements first, then their chains.
pub fn class_remove_ops(classes: &[ClassObjects]) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    if !classes.is_empty() {
        ops.push(Op::DeleteElements(ENDPOINT_CLASSES, classes.iter().map(|c| Cow::Borrowed(c.key.as_str())).collect()));
    }
    ops.extend(classes.iter().map(|c| Op::FlushChain(&c.chain)));
    ops.extend(classes.iter().map(|c| Op::DeleteChain(&c.chain)));
    ops
}

/// One transaction that replaces the whole table: it is created, deleted and created again so
/// the transaction works whether or not the table exists, and nothing sees a half-built table.
/// `classes` are the pick classes to create (the presets and every class a Service uses).
/// It is [`full_head`], then [`services_ops`] (which may be called on the Services a part at a
/// time), then [`hairpin_ops`].
pub fn full_ops<'a>(
    base: &'a BaseTable,
    classes: &'a [ClassObjects],
    services: impl IntoIterator<Item = &'a ServiceObjects>,
) -> Vec<Op<'a>> {
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    let mut ops = full_head(base, classes);
    ops.extend(services_ops(services.iter().copied(), &mut Claimed::default()));
    let hairpin: BTreeSet<Ipv4Addr> = services.iter().flat_map(|o| o.hairpin.iter().copied()).collect();
    ops.extend(hairpin_ops(hairpin));
    ops
}

/// The start of a full sync: the table reset and created with its fixed objects, and the pick
/// classes.
pub fn full_head<'a>(base: &'a BaseTable, classes: &'a [ClassObjects]) -> Vec<Op<'a>> {
    let mut ops = vec![Op::ResetTable, Op::BaseTable(base)];
    ops.extend(class_add_ops(classes));
    ops
}

/// The start of a generational replace (see `Nftables::full_sync`): the fixed sets and maps and
/// the pick classes, created under the new generation's names in the existing table.
pub fn generation_head<'a>(base: &'a BaseTable, classes: &'a [ClassObjects]) -> Vec<Op<'a>> {
    let mut ops: Vec<Op> = base.sets.iter().map(|(name, decl)| Op::AddSet(name, decl)).collect();
    ops.extend(class_add_ops(classes));
    ops
}

/// The switch of a generational replace: every fixed chain's rules again, now naming the new
/// generation's sets (flushed and re-added in one transaction, so no packet sees them missing).
pub fn fixed_rules_ops(base: &BaseTable) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    for c in &base.chains {
        ops.push(Op::FlushChain(&c.name));
        ops.extend(c.rules.iter().map(|r| Op::AddRule(&c.name, r)));
    }
    ops
}

/// Element keys of a full sync already taken by a Service, outside the endpoint map (whose
/// keys are set numbers, unique by construction): two Services claiming one address and port
/// (e.g. the same external IP) leave the first one with it rather than failing the table.
///
/// It holds every frontend of the cluster while the full sync is built, at the agent's peak
/// of memory, so keys are packed: these sets' keys (addresses, protocols, ports and marks
/// joined by ` . `) fit exactly in 64 bits ([`pack_key`]), 16 bytes an entry instead of a
/// string each. A key that does not pack is kept as text.
#[derive(Debug, Default)]
pub struct Claimed {
    packed: HashSet<(u8, u64), BuildHasherDefault<WordHasher>>,
    text: HashSet<(&'static str, String), BuildHasherDefault<WordHasher>>,
}

/// The sets a Service's elements go to (but `endpoints`, whose keys are unique by
/// construction), by position: the sets whose keys [`Claimed`] packs.
const PACKED_SETS: [&str; 9] = [
    CLUSTER_IPS,
    SERVICE_IPS,
    EXTERNAL_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    NO_LOCAL_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    LOCAL_ENDPOINT_SETS,
    SESSION_AFFINITY,
];

impl Claimed {
    /// Takes `key` of `set`; false if a Service already has it.
    pub fn claim(&mut self, set: &'static str, key: &str) -> bool {
        match (PACKED_SETS.iter().position(|s| *s == set), pack_key(key)) {
            (Some(i), Some(k)) => self.packed.insert((i as u8, k)),
            _ => self.text.insert((set, key.to_string())),
        }
    }

    pub fn len(&self) -> usize {
        self.packed.len() + self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An element key in nft's syntax packed into 64 bits, one-to-one: a leading 1, then per
/// ` . `-separated field a 2-bit kind and its value (an IPv4 address or a `0x` mark in 32
/// bits, a protocol name in 8, a decimal number up to 65535 in 16). `None` when a field is
/// something else or the fields need more than 63 bits.
pub fn pack_key(key: &str) -> Option<u64> {
    let mut acc: u64 = 1;
    let mut bits = 0u32;
    for field in key.split(" . ") {
        let (kind, width, value): (u64, u32, u64) = if let Ok(ip) = field.parse::<Ipv4Addr>() {
            (0, 32, u64::from(u32::from(ip)))
        } else if let Some(hex) = field.strip_prefix("0x") {
            (1, 32, u64::from(u32::from_str_radix(hex, 16).ok()?))
        } else if let Ok(n) = field.parse::<u16>() {
            (2, 16, u64::from(n))
        } else {
            let proto = match field {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => return None,
            };
            (3, 8, proto)
        };
        bits += 2 + width;
        if bits > 63 {
            return None;
        }
        acc = (acc << (2 + width)) | (kind << width) | value;
    }
    Some(acc)
}

/// Some Services' objects in a full sync: their sets and chains, then their rules (every chain
/// exists before a rule jumps to it), then their elements, one message per set.
pub fn services_ops<'a>(services: impl IntoIterator<Item = &'a ServiceObjects>, claimed: &mut Claimed) -> Vec<Op<'a>> {
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    let mut ops = Vec::new();
    for o in &services {
        for (name, decl) in &o.sets {
            ops.push(Op::AddSet(name, decl));
        }
        for name in o.chains.keys() {
            ops.push(Op::AddChain(name));
        }
    }
    for o in &services {
        for (name, rules) in &o.chains {
            ops.extend(rules.iter().map(|r| Op::AddRule(name, r)));
        }
    }
    let mut by_set: BTreeMap<&'static str, Vec<ElemRef>> = BTreeMap::new();
    for o in &services {
        for ((set, key), e) in &o.elements {
            if *set == ENDPOINTS || claimed.claim(set, key) {
                by_set.entry(set).or_default().push(ElemRef::new(key, e));
            }
        }
    }
    for (set, elements) in by_set {
        if !elements.is_empty() {
            ops.push(Op::AddElements(set, elements));
        }
    }
    ops
}

/// The end of a full sync: the hairpin set, shared by every Service (each address once).
pub fn hairpin_ops(hairpin: impl IntoIterator<Item = Ipv4Addr>) -> Vec<Op<'static>> {
    let elements: Vec<ElemRef> = hairpin.into_iter().map(|ip| ElemRef::plain(hairpin_key(&ip))).collect();
    if elements.is_empty() { Vec::new() } else { vec![Op::AddElements(HAIRPIN, elements)] }
}

/// One transaction moving one Service from `old` to `new` objects, touching nothing else.
/// `hairpin_add` / `hairpin_remove` are the endpoint addresses whose reference count went
/// from 0 to 1 and from 1 to 0 with this change. Empty when nothing changes. (Pick classes
/// the change needs or frees are the caller's: [`class_add_ops`], [`class_remove_ops`].)
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
    // A changed value or comment is a deletion and an addition of the same key.
    let mut deleted: BTreeMap<&'static str, Vec<Cow<str>>> = BTreeMap::new();
    for ((set, key), e) in &old.elements {
        if new.elements.get(&(*set, key.clone())) != Some(e) {
            deleted.entry(set).or_default().push(Cow::Borrowed(key));
        }
    }
    let mut added: BTreeMap<&'static str, Vec<ElemRef>> = BTreeMap::new();
    for ((set, key), e) in &new.elements {
        if old.elements.get(&(*set, key.clone())) != Some(e) {
            added.entry(set).or_default().push(ElemRef::new(key, e));
        }
    }
    for ip in hairpin_remove {
        deleted.entry(HAIRPIN).or_default().push(Cow::Owned(hairpin_key(ip)));
    }
    for ip in hairpin_add {
        added.entry(HAIRPIN).or_default().push(ElemRef::plain(hairpin_key(ip)));
    }
    ops.extend(deleted.into_iter().map(|(set, keys)| Op::DeleteElements(set, keys)));
    ops.extend(added.into_iter().map(|(set, elements)| Op::AddElements(set, elements)));
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

/// One element in nft's syntax: `key [comment "…"] [: value]`.
fn write_element(out: &mut String, e: &ElemRef) {
    out.push_str(&e.key);
    if let Some(c) = e.comment {
        let _ = write!(out, " comment \"{c}\"");
    }
    if !e.value.is_empty() {
        let _ = write!(out, " : {}", e.value);
    }
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
                    for (i, e) in chunk.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        write_element(&mut out, e);
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

/// The full sync of `services` as an nft script (the preset classes and every class they use).
pub fn full_script<'a>(node: &NodeContext, services: impl IntoIterator<Item = &'a ServiceObjects>) -> String {
    let services: Vec<&ServiceObjects> = services.into_iter().collect();
    let classes: BTreeSet<u32> =
        preset_classes().chain(services.iter().flat_map(|o| o.classes.iter().copied())).collect();
    let classes: Vec<ClassObjects> = classes.into_iter().map(class_objects).collect();
    let base = base(node, &counts(services.iter().copied(), classes.len()));
    script(&full_ops(&base, &classes, services))
}

/// A fast non-cryptographic hasher for de-duplicating element keys (SipHash was a fifth of a
/// full sync's user time). The keys come from the renderer, not from an adversary.
#[derive(Default)]
pub struct WordHasher(u64);

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
