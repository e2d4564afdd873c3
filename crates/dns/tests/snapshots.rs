//! Snapshot tests: whole responses rendered dig-style and compared with expected text inline,
//! so a change in any section, flag or TTL shows up as a readable diff.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::rr::RecordType;

fn check(a: Ask, expected: &str) {
    let zone = fixture();
    let got = render(&a.raw_on(&zone, UDP).unwrap());
    let expected = expected.trim_start_matches('\n');
    assert_eq!(got, expected, "\n--- got ---\n{got}\n--- expected ---\n{expected}");
}

#[test]
fn dump() {
    let zone = fixture();
    for (n, t) in [
        ("svc1.testns.svc.cluster.local.", RecordType::A),
        ("_http._tcp.hdls1.testns.svc.cluster.local.", RecordType::SRV),
        ("nothere.testns.svc.cluster.local.", RecordType::A),
        ("ext-in.testns.svc.cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("cluster.local.", RecordType::NS),
        ("cluster.local.", RecordType::SOA),
        ("10.0.0.172.in-addr.arpa.", RecordType::PTR),
    ] {
        println!("{}", render(&ask(n, t).edns(1232).raw_on(&zone, UDP).unwrap()));
    }
}
