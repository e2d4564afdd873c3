//! The data plane against the real kernel, inside throwaway network namespaces: deltas must
//! leave exactly the table a full sync would, the netlink back end must build exactly the
//! table `nft -f` builds from the same operations (as `nft list` prints it), a failed
//! transaction must leave the table as it was, and a table deleted out of band is noticed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pier_proxy::nft::{Nftables, list_table, run_nft};
use pier_proxy::table::{NodeContext, ServiceKey, ServicePort, compile_service};
use pier_proxy::{Change, DataPlane};
use serde_json::json;

/// A network namespace for one test, deleted on drop. Nothing in it routes anywhere.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("pier-nft-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Netns(name)
    }

    /// Runs `f` on a thread that lives in this namespace (children it spawns do too).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn node() -> NodeContext {
    NodeContext { name: "pier-node".into(), pod_cidr: "10.244.0.0/16".parse().unwrap(), served_locally: Vec::new() }
}

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                  {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})).unwrap()
}

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip], "nodeName": "pier-node"})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": eps
    }))
    .unwrap()
}

fn compiled(svc: &Service, ips: &[&str]) -> (ServiceKey, Vec<ServicePort>) {
    let s = slice(svc.metadata.name.as_deref().unwrap(), ips);
    (ServiceKey::of(svc), compile_service(svc, &[&s], &node()))
}

fn slice_on(svc: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    let eps: Vec<_> = eps.iter().map(|(ip, node)| json!({"addresses": [ip], "nodeName": node})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": eps
    }))
    .unwrap()
}

fn compiled_on(svc: &Service, eps: &[(&str, &str)]) -> (ServiceKey, Vec<ServicePort>) {
    let s = slice_on(svc.metadata.name.as_deref().unwrap(), eps);
    (ServiceKey::of(svc), compile_service(svc, &[&s], &node()))
}

/// What the sync loop knows and the data plane does not keep: each Service's ports as last
/// programmed, from which a step's changes are made.
struct Programmed(BTreeMap<ServiceKey, Vec<ServicePort>>);

impl Programmed {
    fn new(table: &BTreeMap<ServiceKey, Vec<ServicePort>>) -> Programmed {
        Programmed(table.clone())
    }

    fn changes(&mut self, step: &[(ServiceKey, Vec<ServicePort>)]) -> Vec<Change> {
        step.iter()
            .map(|(k, new)| {
                let old = if new.is_empty() { self.0.remove(k) } else { self.0.insert(k.clone(), new.clone()) };
                Change { service: k.clone(), old: old.unwrap_or_default(), new: new.clone() }
            })
            .collect()
    }
}

fn root() -> bool {
    nix::unistd::geteuid().is_root() && Command::new("nft").arg("--version").output().is_ok()
}

#[test]
fn full_and_incremental_syncs_load_into_the_kernel() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let ns = Netns::new("sync");
    let listing = ns.run(|| {
        let mut nft = Nftables::new(node());
        let plain = service("plain", "10.96.0.20", json!({}));
        let affinity = service(
            "sticky",
            "10.96.0.21",
            json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        );
        let nodeport = service(
            "np",
            "10.96.0.22",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local",
            "externalIPs": ["203.0.113.250"],
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30123, "protocol": "TCP"}]}),
        );
        let empty = service("empty", "10.96.0.23", json!({}));
        let mut table = BTreeMap::new();
        for (svc, ips) in [
            (&plain, vec!["10.244.0.5", "10.244.0.6"]),
            (&affinity, vec!["10.244.0.5"]),
            (&nodeport, vec!["10.244.0.7"]),
            (&empty, vec![]),
        ] {
            let (k, p) = compiled(svc, &ips);
            table.insert(k, p);
        }
        nft.full_sync(&table).unwrap();
        assert!(nft.healthy().unwrap());
        let mut programmed = Programmed::new(&table);

        // Endpoints come and go, affinity endpoints change, a Service goes away.
        let steps = [
            vec![compiled(&plain, &["10.244.0.5"]), compiled(&affinity, &["10.244.0.5", "10.244.0.6"])],
            vec![compiled(&plain, &[]), compiled(&empty, &["10.244.0.9"])],
            vec![compiled(&affinity, &[]), (ServiceKey::new("default", "np"), Vec::new())],
            vec![compiled(&plain, &["10.244.0.5", "10.244.0.6", "10.244.0.8"])],
        ];
        for step in steps {
            nft.apply(&programmed.changes(&step)).unwrap();
        }
        let incremental = list_table().unwrap().unwrap();

        // The same end state from scratch.
        let mut end = BTreeMap::new();
        for (k, p) in [
            compiled(&plain, &["10.244.0.5", "10.244.0.6", "10.244.0.8"]),
            compiled(&affinity, &[]),
            compiled(&empty, &["10.244.0.9"]),
        ] {
            end.insert(k, p);
        }
        let mut fresh = Nftables::new(node());
        fresh.full_sync(&end).unwrap();
        let full = list_table().unwrap().unwrap();

        // Out-of-band deletion is noticed.
        assert!(Command::new("nft").args(["delete", "table", "ip", "pier"]).status().unwrap().success());
        assert!(!fresh.healthy().unwrap());
        (incremental, full)
    });
    let (incremental, full) = listing;
    assert_eq!(canonical(&incremental), canonical(&full), "incremental:\n{incremental}\nfull:\n{full}");
    assert!(full.contains("10.96.0.20 . tcp . 80 comment \"default/plain:http\" : 0x00"), "{full}");
    assert!(full.contains(". 2 : 10.244.0.8 . 8080"), "{full}");
    let rejected = block(&full, "set no-endpoint-services");
    assert!(rejected.contains("10.96.0.21 . udp . 53 comment \"default/sticky:dns\""), "{full}");
}

/// The text of one set, map or chain of a listing (`set name`, `map name`, `chain name`).
fn block<'a>(listing: &'a str, head: &str) -> &'a str {
    let start = listing.find(&format!("\t{head} {{")).unwrap_or_else(|| panic!("no {head} in\n{listing}"));
    let len = listing[start..].find("\n\t}").unwrap();
    &listing[start..start + len]
}

/// A listing with every endpoint set reference (which depends on the order numbers were handed
/// out) replaced by what it stands for — its endpoints, or its affinity chain — and lines
/// sorted (elements come in hash order).
fn canonical(listing: &str) -> Vec<String> {
    let refs = |line: &str| -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = line[from..].find("0x") {
            let at = from + i;
            let hex = line.get(at + 2..at + 10).unwrap_or_default();
            if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                out.push((at, u32::from_str_radix(hex, 16).unwrap()));
            }
            from = at + 2;
        }
        out
    };
    let mut labels: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in block(listing, "map endpoints").lines().chain(block(listing, "map session-affinity").lines()) {
        let line = line.trim().trim_start_matches("elements = {").trim().trim_end_matches([',', '}']).trim();
        if let (Some((0, r)), Some((_, value))) = (refs(line).first().copied(), line.split_once(" : ")) {
            let index = line[10..].split(" : ").next().unwrap_or_default();
            labels.entry(r).or_default().push(format!("{index}->{value}"));
        }
    }
    let mut lines: Vec<String> = listing
        .lines()
        .map(|l| {
            let mut l = l.trim().to_string();
            for (_, r) in refs(&l).into_iter().rev() {
                let (flag, base) = (r & 0x8000_0000, r & 0x7fff_ffff);
                if let Some(label) = labels.get(&base) {
                    let hex = format!("{r:#010x}");
                    let mut label = label.clone();
                    label.sort();
                    let named = format!("{}set[{}]", if flag != 0 { "local-policy+" } else { "" }, label.join(" "));
                    l = l.replacen(&hex, &named, 1);
                }
            }
            l
        })
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// Every kind of object the renderer makes: multi-endpoint slots, a single endpoint, affinity
/// (per-endpoint chains, timeout sets, an anonymous vmap), node ports with
/// externalTrafficPolicy Local (local and remote endpoints), external and load-balancer IPs, a
/// Service without endpoints (rejects), internalTrafficPolicy Local with endpoints elsewhere
/// (drops), UDP ports, and hairpin addresses shared between Services. Returns the first full
/// table and the batches of changes that follow.
#[allow(clippy::type_complexity)]
fn scenario() -> (BTreeMap<ServiceKey, Vec<ServicePort>>, Vec<Vec<(ServiceKey, Vec<ServicePort>)>>) {
    let plain = service("plain", "10.96.0.20", json!({}));
    let sticky = service(
        "sticky",
        "10.96.0.21",
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
    );
    let np = service(
        "np",
        "10.96.0.22",
        json!({"type": "NodePort", "externalTrafficPolicy": "Local", "externalIPs": ["203.0.113.250"],
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30123, "protocol": "TCP"},
                  {"name": "dns", "port": 53, "targetPort": 5353, "nodePort": 30053, "protocol": "UDP"}]}),
    );
    let empty = service(
        "empty",
        "10.96.0.23",
        json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}),
    );
    let internal = service("internal", "10.96.0.24", json!({"internalTrafficPolicy": "Local"}));
    let mut lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "lb", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.25", "type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                 "sessionAffinity": "ClientIP",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}
    }))
    .unwrap();
    lb.metadata.namespace = Some("default".into());
    let me = "pier-node";
    let other = "other-node";
    let mut table = BTreeMap::new();
    for (k, p) in [
        compiled_on(&plain, &[("10.244.0.5", me), ("10.244.0.6", me)]),
        compiled_on(&sticky, &[("10.244.0.5", me), ("10.244.1.9", other)]),
        compiled_on(&np, &[("10.244.0.7", me), ("10.244.1.7", other)]),
        compiled_on(&empty, &[]),
        compiled_on(&internal, &[("10.244.1.8", other)]),
        compiled_on(&lb, &[("10.244.0.10", me)]),
    ] {
        table.insert(k, p);
    }
    let steps = vec![
        // Endpoints come and go; affinity endpoints change.
        vec![
            compiled_on(&plain, &[("10.244.0.5", me)]),
            compiled_on(&sticky, &[("10.244.0.5", me), ("10.244.0.6", me)]),
        ],
        // The only local endpoint of a Local node port goes: external traffic is dropped.
        vec![compiled_on(&np, &[("10.244.1.7", other)]), compiled_on(&empty, &[("10.244.0.9", me)])],
        // Services lose all endpoints (rejects) or go away; an internal-Local one gets a local one.
        vec![
            compiled_on(&plain, &[]),
            (ServiceKey::new("default", "sticky"), Vec::new()),
            compiled_on(&internal, &[("10.244.1.8", other), ("10.244.0.11", me)]),
        ],
        // A new Service, and one comes back with several endpoints; a Service with more
        // endpoints than the preset classes takes a pick chain of its own.
        vec![
            compiled_on(&plain, &[("10.244.0.5", me), ("10.244.0.6", me), ("10.244.0.8", me)]),
            compiled_on(&service("late", "10.96.0.26", json!({})), &[("10.244.0.5", me)]),
            (ServiceKey::new("default", "lb"), Vec::new()),
            many("big", "10.96.0.27", 17),
        ],
        // It grows: its class goes, the next one comes.
        vec![many("big", "10.96.0.27", 18)],
    ];
    (table, steps)
}

/// A Service with `n` endpoints on other nodes.
fn many(name: &str, ip: &str, n: usize) -> (ServiceKey, Vec<ServicePort>) {
    let ips: Vec<String> = (0..n).map(|i| format!("10.244.2.{}", i + 2)).collect();
    let eps: Vec<(&str, &str)> = ips.iter().map(|ip| (ip.as_str(), "other-node")).collect();
    compiled_on(&service(name, ip, json!({})), &eps)
}

/// `nft list table ip pier` and the kernel's expressions (`nft --debug=netlink`).
fn listings() -> (String, String) {
    let list = list_table().unwrap().expect("the table exists");
    let out = Command::new("nft").args(["--debug=netlink", "list", "table", "ip", "pier"]).output().unwrap();
    assert!(out.status.success());
    (list, String::from_utf8(out.stdout).unwrap())
}

/// What may differ between two identical tables in `nft --debug=netlink` output: the order a
/// hash set iterates its elements in (each set has its own random seed) and rule handles.
fn normalise_exprs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut elements: Vec<String> = Vec::new();
    for line in s.lines() {
        if line.starts_with("\telement ") {
            elements.extend(line.split("[end]").map(str::trim).filter(|e| !e.is_empty()).map(String::from));
            continue;
        }
        elements.sort();
        out.append(&mut elements);
        // `ip pier <chain> <handle> [<previous handle>]` heads each rule.
        match line.strip_prefix("ip pier ") {
            Some(rest) if !rest.starts_with('@') => {
                out.push(rest.split(' ').next().unwrap_or_default().to_string());
            }
            _ => out.push(line.to_string()),
        }
    }
    elements.sort();
    out.append(&mut elements);
    out
}

/// Runs the scenario with one back end; the listings after the full sync and after each step.
fn run_scenario(tag: &str, cli: bool) -> Vec<(String, String)> {
    let ns = Netns::new(tag);
    ns.run(move || {
        let (table, steps) = scenario();
        let mut nft = if cli { Nftables::with_cli(node()) } else { Nftables::new(node()) };
        nft.full_sync(&table).unwrap();
        let mut programmed = Programmed::new(&table);
        let mut out = vec![listings()];
        for step in steps {
            nft.apply(&programmed.changes(&step)).unwrap();
            out.push(listings());
        }
        // A full sync over an existing table replaces it.
        nft.full_sync(&table).unwrap();
        out.push(listings());
        out
    })
}

#[test]
fn netlink_builds_the_table_nft_builds() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let netlink = run_scenario("nl", false);
    let cli = run_scenario("cli", true);
    assert_eq!(netlink.len(), cli.len());
    for (i, ((nl_list, nl_exprs), (cli_list, cli_exprs))) in netlink.iter().zip(&cli).enumerate() {
        assert_eq!(nl_list, cli_list, "step {i}: netlink:\n{nl_list}\nnft -f:\n{cli_list}");
        let (nl_exprs, cli_exprs) = (normalise_exprs(nl_exprs), normalise_exprs(cli_exprs));
        assert_eq!(nl_exprs, cli_exprs, "step {i}: kernel expressions differ");
    }
    // The scenario reached what it claims to cover.
    let all: String = cli.iter().map(|(l, _)| l.as_str()).collect();
    for needle in [
        "numgen random mod 2 vmap { 0 : goto endpoint-",
        "update @affinity-",
        "flags dynamic,timeout",
        "timeout 1m",
        "comment \"default/plain:http\"",
        "size 8192",
        "typeof ct mark . numgen random mod 2 : ip daddr . th dport",
        "meta l4proto { tcp, udp, sctp } dnat ip to ct mark . numgen random mod 3 map @endpoints",
        "meta l4proto { tcp, udp, sctp } reject",
        "chain pick-17 {",
        "chain pick-18 {",
    ] {
        assert!(all.contains(needle), "{needle:?} never appears:\n{all}");
    }
    // Each kind of element was in its set or map at some point.
    let step = |i: usize| cli[i].0.as_str();
    for (i, head, needle) in [
        (0, "map external-ips", "203.0.113.250 . tcp . 80 comment \"default/np:http\" : 0x8"),
        (0, "map service-nodeports", "udp . 30053 comment \"default/np:dns\" : 0x8"),
        (0, "map local-endpoint-sets", " : 0x"),
        (0, "set no-endpoint-nodeports", "tcp . 30080 comment \"default/empty:http\""),
        (0, "set no-local-endpoint-services", "10.96.0.24 . tcp . 80 comment \"default/internal:http\""),
        (0, "map external-ips", "198.51.100.7 . tcp . 80 comment \"default/lb:http\" : 0x000"),
        (0, "map session-affinity", " : goto service-"),
        (0, "set hairpin-endpoints", "10.244.0.5 . 10.244.0.5"),
        (2, "map service-nodeports", "udp . 30053 comment \"default/np:dns\" : 0x8"),
        (4, "map endpoint-classes", " : goto pick-17"),
        (5, "map endpoint-classes", " : goto pick-18"),
    ] {
        assert!(block(step(i), head).contains(needle), "step {i}: {needle:?} not in {head}:\n{}", step(i));
    }
    assert!(!step(5).contains("pick-17"), "a class nobody uses stays:\n{}", step(5));
}

/// What adding, changing or removing a common Service may touch: the listing without the
/// elements of data sets and maps (chains, rules, declarations, verdict-map elements).
fn structure(listing: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut verdict_map = false;
    for line in listing.lines() {
        let t = line.trim();
        if t.starts_with("map ") || t.starts_with("set ") {
            verdict_map = false;
        }
        if t.starts_with("type ") && t.ends_with(": verdict") {
            verdict_map = true;
        }
        if t.starts_with("elements = {") && !verdict_map {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && t.ends_with('}') {
            skipping = false;
        }
    }
    out
}

/// The point of the layout: a common Service — ClusterIP, NodePort, LoadBalancer and external
/// IPs, either traffic policy, with or without endpoints, but no affinity — is data. Adding,
/// changing and removing one creates or deletes no chain, no rule and no verdict-map element
/// (each of which makes the kernel re-validate the whole table).
#[test]
fn common_services_are_data_only() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let ns = Netns::new("data");
    ns.run(|| {
        let (table, _) = scenario();
        let mut nft = Nftables::new(node());
        nft.full_sync(&table).unwrap();
        let before = list_table().unwrap().unwrap();
        let me = "pier-node";
        let lb: Service = serde_json::from_value(json!({
            "metadata": {"name": "lb2", "namespace": "default"},
            "spec": {"clusterIP": "10.96.1.2", "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "internalTrafficPolicy": "Local", "externalIPs": ["203.0.113.9"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30099, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}
        }))
        .unwrap();
        let np = service(
            "np2",
            "10.96.1.3",
            json!({"type": "NodePort",
            "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "nodePort": 30054, "protocol": "UDP"}]}),
        );
        let steps = [
            vec![
                compiled_on(&service("new", "10.96.1.1", json!({})), &[("10.244.0.5", me), ("10.244.1.5", "x")]),
                compiled_on(&lb, &[("10.244.0.12", me), ("10.244.1.12", "x")]),
                compiled_on(&np, &[]),
            ],
            vec![compiled_on(&lb, &[("10.244.1.12", "x")]), compiled_on(&np, &[("10.244.0.13", me)])],
            vec![compiled_on(&lb, &[]), many("np2", "10.96.1.3", 16)],
            vec![
                (ServiceKey::new("default", "new"), Vec::new()),
                (ServiceKey::new("default", "lb2"), Vec::new()),
                (ServiceKey::new("default", "np2"), Vec::new()),
            ],
        ];
        let mut programmed = Programmed::new(&table);
        for (i, step) in steps.iter().enumerate() {
            nft.apply(&programmed.changes(step)).unwrap();
            let now = list_table().unwrap().unwrap();
            assert_eq!(structure(&now), structure(&before), "step {i} changed more than data:\n{now}");
            if i == 0 {
                assert!(now.contains("10.96.1.1 . tcp . 80 comment \"default/new:http\""), "{now}");
                assert!(now.contains("tcp . 30099 comment \"default/lb2:http\" : 0x8"), "{now}");
            }
        }
        assert_eq!(list_table().unwrap().unwrap(), before, "adding and removing left something behind");
    });
}

#[test]
fn a_failed_transaction_changes_nothing() {
    use pier_proxy::nft::ir::{Rule, Stmt, Verdict};
    use pier_proxy::nft::netlink::Netlink;
    use pier_proxy::nft::render::Op;
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    let ns = Netns::new("fail");
    ns.run(|| {
        let (table, steps) = scenario();
        let mut nft = Nftables::new(node());
        nft.full_sync(&table).unwrap();

        // A batch that fails in its middle: the error names the message and the errno, and
        // nothing before or after it is applied.
        let before = list_table().unwrap().unwrap();
        let good = Rule::new(vec![Stmt::Verdict(Verdict::Drop)]);
        let bad = Rule::new(vec![Stmt::jump("no-such-chain")]);
        let mut sock = Netlink::open().unwrap();
        let mut batch = sock.batch();
        for op in [
            Op::AddChain("added-by-a-failed-batch"),
            Op::AddRule("added-by-a-failed-batch", &good),
            Op::FlushChain("services"),
            Op::AddRule("services", &bad),
            Op::AddRule("services", &good),
        ] {
            batch.op(&op).unwrap();
        }
        let msg = sock.send(batch).unwrap_err().to_string();
        assert!(msg.contains("NEWRULE services (message 4 of 7"), "{msg}");
        assert!(msg.contains("ENOENT"), "{msg}");
        assert_eq!(list_table().unwrap().unwrap(), before, "the failed batch was partly applied");
        // The socket and the data plane are still usable afterwards.
        let mut programmed = Programmed::new(&table);
        nft.apply(&programmed.changes(&steps[0])).unwrap();
        assert!(nft.healthy().unwrap());

        // The table deleted out of band: the next delta fails as a whole (ProxyError), and
        // creates nothing.
        assert!(Command::new("nft").args(["delete", "table", "ip", "pier"]).status().unwrap().success());
        let msg = nft.apply(&programmed.changes(&steps[1])).unwrap_err().to_string();
        assert!(msg.contains("ENOENT") && msg.contains("message"), "{msg}");
        assert!(list_table().unwrap().is_none(), "a failed batch created something");
        assert!(!nft.healthy().unwrap());
        nft.full_sync(&table).unwrap();
        assert!(nft.healthy().unwrap());
    });
}

/// The limit behind sending each batch in one write: the kernel treats every write as a
/// separate batch, and rolls back one whose BATCH_END is missing, silently.
#[test]
fn a_batch_split_across_writes_is_not_applied() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, send, socket,
    };
    use std::os::fd::AsRawFd;
    let ns = Netns::new("split");
    ns.run(|| {
        let (table, _) = scenario();
        let mut nft = Nftables::new(node());
        nft.full_sync(&table).unwrap();
        let before = list_table().unwrap().unwrap();
        let sock = pier_proxy::nft::netlink::Netlink::open().unwrap();
        let mut batch = sock.batch();
        batch.op(&pier_proxy::nft::render::Op::AddChain("split-chain")).unwrap();
        let (bytes, _) = batch.finish();
        let bytes = bytes.to_vec();
        // BATCH_BEGIN and NEWCHAIN in one write, BATCH_END (the last 20 bytes) in another.
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .unwrap();
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).unwrap();
        let (head, tail) = bytes.split_at(bytes.len() - 20);
        send(fd.as_raw_fd(), head, MsgFlags::empty()).unwrap();
        send(fd.as_raw_fd(), tail, MsgFlags::empty()).unwrap();
        assert_eq!(list_table().unwrap().unwrap(), before);
        // The same bytes in one write are applied.
        let mut batch = sock.batch();
        batch.op(&pier_proxy::nft::render::Op::AddChain("split-chain")).unwrap();
        let (bytes, _) = batch.finish();
        let bytes = bytes.to_vec();
        send(fd.as_raw_fd(), &bytes, MsgFlags::empty()).unwrap();
        assert!(list_table().unwrap().unwrap().contains("chain split-chain"));
        assert!(nft.healthy().unwrap());
    });
}

/// A full sync larger than one rendering chunk: every Service is in the table, an external IP
/// claimed by two Services in different chunks stays with the first, and the table is the
/// same through netlink and `nft -f`.
#[test]
fn a_full_sync_spanning_several_chunks_is_whole() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    const N: usize = 2_500;
    let table = || {
        let mut table = BTreeMap::new();
        for i in 0..N {
            let ip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
            let extra = if i == 10 || i == 2_400 { json!({"externalIPs": ["203.0.113.77"]}) } else { json!({}) };
            let (k, p) =
                compiled(&service(&format!("s{i:04}"), &ip, extra), &[&format!("10.244.{}.{}", i / 250, i % 250 + 1)]);
            table.insert(k, p);
        }
        table
    };
    let build = |tag: &'static str, cli: bool| {
        let ns = Netns::new(tag);
        ns.run(move || {
            let mut nft = if cli { Nftables::with_cli(node()) } else { Nftables::new(node()) };
            nft.full_sync(&table()).unwrap();
            canonical(&list_table().unwrap().unwrap())
        })
    };
    let netlink = build("chunks", false);
    let all = netlink.join("\n");
    assert!(all.matches(" . tcp . 80 comment \"default/s").count() >= N);
    for i in [0, 999, 1_000, 1_999, 2_000, N - 1] {
        let ip = format!("10.97.{}.{} . tcp . 80 comment \"default/s{i:04}:http\"", i / 250, i % 250 + 1);
        assert!(all.contains(&ip), "{ip} is missing");
    }
    assert!(all.contains("203.0.113.77 . tcp . 80 comment \"default/s0010:http\""), "the first claim keeps the IP");
    assert!(!all.contains("203.0.113.77 . tcp . 80 comment \"default/s2400:http\""), "the second claim took the IP");
    assert_eq!(netlink, build("chunks-cli", true), "netlink and nft -f built different tables");
}

/// A full sync that finds no table fills it in pieces of whole Services. One that finds a large
/// table builds the next generation beside it in pieces and then switches to it: the same
/// table under the other generation's names, nothing of the old one left, deltas working on
/// the new one. A replace interrupted half-way is repaired by one whole transaction.
#[test]
fn large_tables_are_written_in_pieces_and_replaced_by_generations() {
    if !root() {
        eprintln!("skipped: needs root and nft");
        return;
    }
    const N: usize = 4_000;
    let ns = Netns::new("pieces");
    ns.run(|| {
        let mut table = BTreeMap::new();
        for i in 0..N {
            let ip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
            let eps: Vec<String> = (0..10).map(|e| format!("10.244.{}.{}", e * 10 + i / 250, i % 250 + 1)).collect();
            let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
            let extra = if i == 7 { json!({"sessionAffinity": "ClientIP"}) } else { json!({}) };
            let (k, p) = compiled(&service(&format!("s{i:04}"), &ip, extra), &eps);
            table.insert(k, p);
        }
        let listing = || list_table().unwrap().unwrap();
        // Generation names aside, two listings of the same Services are the same.
        let plain = |l: &str| canonical(&l.replace("-g1", ""));
        let mut nft = Nftables::new(node());
        nft.full_sync(&table).unwrap();
        let pieces = nft.transactions();
        assert!(pieces >= 3, "{N} Services × 10 endpoints (about 2.4 MB) went in {pieces} transactions");
        assert_eq!(nft.generation(), 0);
        let first = listing();
        assert_eq!(first.matches(" . tcp . 80 comment \"default/s").count(), N, "every Service is there");

        // Replaced: generation 1 built beside generation 0, then switched to.
        nft.full_sync(&table).unwrap();
        assert_eq!(nft.generation(), 1);
        assert!(nft.transactions() - pieces >= 3, "a replace in pieces and a switch");
        let second = listing();
        assert!(
            second.contains("map service-ips-g1 {") && second.contains("chain pick-10-g1 {"),
            "{}",
            &second[..2000]
        );
        assert!(
            !second.contains("map service-ips {") && !second.contains("chain pick-10 {"),
            "the old generation is gone"
        );
        assert_eq!(plain(&second), plain(&first));

        // Deltas go to the live generation.
        let mut programmed = Programmed::new(&table);
        let gone = table.keys().next().unwrap().clone();
        let (k, p) = compiled(&service("added", "10.99.0.1", json!({})), &["10.244.99.1"]);
        let changes = programmed.changes(&[(gone.clone(), Vec::new()), (k.clone(), p.clone())]);
        nft.apply(&changes).unwrap();
        let third = listing();
        assert!(third.contains("10.99.0.1 . tcp . 80 comment \"default/added:http\""));
        assert_eq!(third.matches(" . tcp . 80 comment \"default/s").count(), N - 1);
        table.remove(&gone);
        table.insert(k, p);

        // And back to generation 0: the same table as a fresh sync of these Services writes.
        nft.full_sync(&table).unwrap();
        assert_eq!(nft.generation(), 0);
        let fourth = listing();
        assert!(!fourth.contains("-g1"), "nothing of generation 1 is left");
        assert_eq!(plain(&fourth), plain(&third));

        // A replace interrupted half-way leaves objects of the next generation: the next full
        // sync rewrites the table in one transaction.
        run_nft("add set ip pier service-ips-g1 { type ipv4_addr; }").unwrap();
        let before = nft.transactions();
        nft.full_sync(&table).unwrap();
        assert_eq!((nft.transactions() - before, nft.generation()), (1, 0));
        assert_eq!(listing(), fourth);
    });
}
