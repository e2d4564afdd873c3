//! The data plane against the real kernel, inside throwaway network namespaces: deltas must
//! leave exactly the table a full sync would, the netlink back end must build exactly the
//! table `nft -f` builds from the same operations (as `nft list` prints it), a failed
//! transaction must leave the table as it was, and a table deleted out of band is noticed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pier_proxy::DataPlane;
use pier_proxy::nft::{Nftables, list_table};
use pier_proxy::table::{NodeContext, ServiceKey, ServicePort, compile_service};
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

        // Endpoints come and go, affinity endpoints change, a Service goes away.
        let steps = [
            vec![compiled(&plain, &["10.244.0.5"]), compiled(&affinity, &["10.244.0.5", "10.244.0.6"])],
            vec![compiled(&plain, &[]), compiled(&empty, &["10.244.0.9"])],
            vec![compiled(&affinity, &[]), (ServiceKey::new("default", "np"), Vec::new())],
            vec![compiled(&plain, &["10.244.0.5", "10.244.0.6", "10.244.0.8"])],
        ];
        for step in steps {
            nft.apply(&step).unwrap();
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
    // Slot numbers (`offset N`, the keys of the `endpoints` map) depend on the order slots
    // were handed out; everything else must be identical.
    let norm = |s: &str| {
        let start = s.find("map endpoints {").unwrap();
        let end = start + s[start..].find("\n\t}\n").unwrap();
        let mut slots: Vec<String> = s[start..end]
            .split([',', '{', '}', '\n'])
            .filter_map(|e| e.split_once(" : ").map(|(_, v)| v.trim().to_string()))
            .collect();
        slots.sort();
        let rest = format!("{}{}", &s[..start], &s[end..]);
        let mut lines: Vec<String> = rest
            .lines()
            .map(|l| {
                let l = l.trim();
                match l.find("offset ") {
                    Some(i) => {
                        let tail = &l[i + 7..];
                        let skip = tail.find(' ').unwrap_or(tail.len());
                        format!("{}offset _{}", &l[..i], &tail[skip..])
                    }
                    None => l.to_string(),
                }
            })
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        (lines, slots)
    };
    assert_eq!(norm(&incremental), norm(&full), "incremental:\n{incremental}\nfull:\n{full}");
    assert!(full.contains("10.96.0.20 . tcp . 80 : goto"), "{full}");
    assert!(full.contains("ct mark set numgen random mod 3 offset"), "{full}");
    assert!(full.contains("10.244.0.8 . 8080"), "{full}");
    assert!(full.contains("10.96.0.21 . udp . 53 : goto reject-chain"), "{full}");
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
        // A new Service, and one comes back with several endpoints.
        vec![
            compiled_on(&plain, &[("10.244.0.5", me), ("10.244.0.6", me), ("10.244.0.8", me)]),
            compiled_on(&service("late", "10.96.0.26", json!({})), &[("10.244.0.5", me)]),
            (ServiceKey::new("default", "lb"), Vec::new()),
        ],
    ];
    (table, steps)
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
        let mut out = vec![listings()];
        for step in steps {
            nft.apply(&step).unwrap();
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
        "fib saddr type local goto service-",
        "goto reject-chain",
        ". udp . 53 : goto",
        "udp . 30053 : goto external-",
        "tcp . 30080 : goto reject-chain",
        " : drop",
        "198.51.100.7 . tcp . 80 : goto external-",
        "ct mark set numgen random mod 3 offset",
        "comment \"default/plain:http\"",
    ] {
        assert!(all.contains(needle), "{needle:?} never appears:\n{all}");
    }
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
        nft.apply(&steps[0]).unwrap();
        assert!(nft.healthy().unwrap());

        // The table deleted out of band: the next delta fails as a whole (ProxyError), and
        // creates nothing.
        assert!(Command::new("nft").args(["delete", "table", "ip", "pier"]).status().unwrap().success());
        let msg = nft.apply(&steps[1]).unwrap_err().to_string();
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
        send(fd.as_raw_fd(), &bytes, MsgFlags::empty()).unwrap();
        assert!(list_table().unwrap().unwrap().contains("chain split-chain"));
        assert!(nft.healthy().unwrap());
    });
}
