//! Snapshot tests: whole responses rendered dig-style and compared with expected text inline,
//! so a change in any section, flag, TTL or the SOA shows up as a readable diff. The SOA serial
//! counts the fixture's changes, so adding fixture objects moves it.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use pier_dns::Transport;

#[track_caller]
fn check(a: Ask, transport: Transport, expected: &str) {
    check_on(&fixture(), a, transport, expected);
}

#[track_caller]
fn check_on(zone: &pier_dns::Zone, a: Ask, transport: Transport, expected: &str) {
    let got = render(&a.raw_on(zone, transport).unwrap());
    let expected = expected.trim_start_matches('\n');
    assert_eq!(got, expected, "\n--- got ---\n{got}\n--- expected ---\n{expected}");
}

#[test]
fn clusterip_a() {
    check(
        ask("svc1.testns.svc.cluster.local.", RecordType::A).edns(1232),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1
;; OPT: version 0, udp 1232
;; QUESTION
svc1.testns.svc.cluster.local. IN A
;; ANSWER
svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
"#,
    );
}

#[test]
fn headless_srv_with_additional_addresses() {
    check(
        ask("_http._tcp.hdls1.testns.svc.cluster.local.", RecordType::SRV).edns(1232),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 5, AUTHORITY: 0, ADDITIONAL: 7
;; OPT: version 0, udp 1232
;; QUESTION
_http._tcp.hdls1.testns.svc.cluster.local. IN SRV
;; ANSWER
_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local.
_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local.
_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.
_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.
_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 v6-host.hdls1.testns.svc.cluster.local.
;; ADDITIONAL
172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2
172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3
dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4
dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5
5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1
v6-host.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2
"#,
    );
}

#[test]
fn nxdomain_with_soa_in_the_query_case() {
    check(
        ask("nothere.testns.svc.Cluster.Local.", RecordType::A),
        UDP,
        r#"
;; status: NXDOMAIN, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 0
;; QUESTION
nothere.testns.svc.Cluster.Local. IN A
;; AUTHORITY
Cluster.Local. 5 IN SOA ns.dns.Cluster.Local. hostmaster.Cluster.Local. 15 7200 1800 86400 5
"#,
    );
}

#[test]
fn nodata_for_a_missing_type() {
    check(
        ask("svc1.testns.svc.cluster.local.", RecordType::AAAA),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 0
;; QUESTION
svc1.testns.svc.cluster.local. IN AAAA
;; AUTHORITY
cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 15 7200 1800 86400 5
"#,
    );
}

#[test]
fn externalname_chain_inside_the_zone() {
    check(
        ask("EXT-CHAIN.testns.svc.cluster.local.", RecordType::A),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 3, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
EXT-CHAIN.testns.svc.cluster.local. IN A
;; ANSWER
EXT-CHAIN.testns.svc.cluster.local. 5 IN CNAME ext-in.testns.svc.cluster.local.
ext-in.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.
svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1
"#,
    );
}

#[test]
fn ptr_for_an_endpoint() {
    check(
        ask("10.0.0.172.in-addr.arpa.", RecordType::PTR),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
10.0.0.172.in-addr.arpa. IN PTR
;; ANSWER
10.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-10.svc1.testns.svc.cluster.local.
"#,
    );
}

#[test]
fn apex_soa_and_dns_version() {
    check(
        ask("cluster.local.", RecordType::SOA),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
cluster.local. IN SOA
;; ANSWER
cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 15 7200 1800 86400 5
"#,
    );
    check(
        ask("dns-version.cluster.local.", RecordType::TXT),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
dns-version.cluster.local. IN TXT
;; ANSWER
dns-version.cluster.local. 28800 IN TXT "1.1.0"
"#,
    );
}

#[test]
fn additional_addresses_go_first_over_udp_without_edns() {
    // 512 bytes hold the header, question and 5 SRV records but not their addresses, which
    // are dropped first and without TC (RFC 2181 §9).
    check(
        ask("hdls1.testns.svc.cluster.local.", RecordType::SRV).id(7),
        UDP,
        r#"
;; status: NOERROR, id: 7
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 5, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
hdls1.testns.svc.cluster.local. IN SRV
;; ANSWER
hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local.
hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local.
hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.
hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.
hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 v6-host.hdls1.testns.svc.cluster.local.
"#,
    );
}

#[test]
fn refused_zone_transfer() {
    check(
        ask("cluster.local.", RecordType::AXFR),
        Transport::Tcp,
        r#"
;; status: REFUSED, id: 4660
;; flags: qr rd ra; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
cluster.local. IN AXFR
"#,
    );
}

#[test]
fn truncated_answers_set_tc() {
    let zone = pier_dns::Zone::new(pier_dns::ZoneConfig::default()).unwrap();
    zone.apply_service(&headless("ns", "big", http_port()));
    let ips: Vec<String> = (1..=40).map(|i| format!("10.8.0.{i}")).collect();
    let eps = ips.iter().map(|ip| ep(&[ip.as_str()], None, None)).collect();
    zone.apply_slice(&slice("ns", "big-1", "big", "IPv4", eps, http_port()));
    // 40 SRV records of 40 bytes each: a 512-byte reply keeps the first 11, sets TC and drops
    // the addresses. The weight is ⌊100/40⌋.
    check_on(
        &zone,
        ask("_http._tcp.big.ns.svc.cluster.local.", RecordType::SRV),
        UDP,
        r#"
;; status: NOERROR, id: 4660
;; flags: qr aa tc rd ra; QUERY: 1, ANSWER: 11, AUTHORITY: 0, ADDITIONAL: 0
;; QUESTION
_http._tcp.big.ns.svc.cluster.local. IN SRV
;; ANSWER
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-1.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-2.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-3.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-4.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-5.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-6.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-7.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-8.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-9.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-10.big.ns.svc.cluster.local.
_http._tcp.big.ns.svc.cluster.local. 5 IN SRV 0 2 80 10-8-0-11.big.ns.svc.cluster.local.
"#,
    );
}
