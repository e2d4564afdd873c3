//! The rendered scripts against the real kernel: every script the renderer produces must load
//! with the real `nft` inside a throwaway network namespace, deltas must leave exactly the
//! table a full sync would, and a table deleted out of band is noticed.

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
