//! Cluster-scale sanity check (ignored by default; run with
//! `cargo test -p pier-dns --test scale -- --ignored --nocapture`): 10,000 Services and
//! 100,000 endpoints, reporting build time, the cost of one event and the process RSS. Not a
//! benchmark: the numbers are for spotting a design that cannot meet the DNS goals.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;
use hickory_proto::rr::RecordType;
use pier_dns::{Zone, ZoneConfig};

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[test]
#[ignore = "cluster-scale sanity check; run by hand"]
fn ten_thousand_services_and_a_hundred_thousand_endpoints() {
    let before = rss_mb();
    let zone = Zone::new(ZoneConfig::default()).unwrap();
    let start = Instant::now();
    // Build the API objects in small batches so they do not count towards the RSS.
    for s in 0..10_000u32 {
        let ns = format!("ns{}", s % 100);
        let name = format!("svc{s}");
        let ip = format!("10.{}.{}.{}", 96 + s / 65536, (s / 256) % 256, s % 256);
        if s % 2 == 0 {
            zone.apply_service(&cluster_ip(&ns, &name, &[&ip], http_port()));
        } else {
            zone.apply_service(&headless(&ns, &name, http_port()));
        }
        let eps = (0..10u32)
            .map(|e| {
                let n = s * 10 + e;
                ep(&[&format!("172.{}.{}.{}", 16 + n / 65536, (n / 256) % 256, n % 256)], None, None)
            })
            .collect();
        zone.apply_slice(&slice(&ns, &format!("{name}-1"), &name, "IPv4", eps, http_port()));
    }
    zone.mark_synced();
    let built = start.elapsed();
    let after = rss_mb();
    let start = Instant::now();
    zone.apply_slice(&slice("ns7", "svc7-1", "svc7", "IPv4", vec![ep(&["172.31.0.1"], None, None)], http_port()));
    let one = start.elapsed();
    let m = ask("svc7.ns7.svc.cluster.local.", RecordType::A).on(&zone);
    assert_eq!(answers(&m), ["svc7.ns7.svc.cluster.local. 5 IN A 172.31.0.1"]);
    let start = Instant::now();
    let q = ask("svc9998.ns98.svc.cluster.local.", RecordType::A).bytes();
    let mut out = Vec::new();
    let n = 200_000;
    for _ in 0..n {
        pier_dns::answer_into(&zone, &q, UDP, &mut out);
    }
    let per_query = start.elapsed() / n;
    println!(
        "names: {}, build: {built:?}, one slice event: {one:?}, zone RSS: {:.1} MB, answer: {per_query:?}/query",
        zone.name_count(),
        after - before
    );
}
