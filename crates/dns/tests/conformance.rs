//! Conformance with `reference/dns-spec.md`, one module per rule of the spec (S1–S15, the
//! Kubernetes DNS specification) and of the CoreDNS behaviour it defers to (K1–K23), plus the
//! protocol rules around them (EDNS, truncation, error codes) and incremental updates. Every
//! test asks the pure answerer and decodes the reply with hickory-proto.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RecordType};
use pier_dns::{Answer, Resolve, Transport, Zone, ZoneConfig, reverse_name};
use serde_json::json;

const A: RecordType = RecordType::A;
const AAAA: RecordType = RecordType::AAAA;
const SRV: RecordType = RecordType::SRV;
const PTR: RecordType = RecordType::PTR;
const TXT: RecordType = RecordType::TXT;
const SOA: RecordType = RecordType::SOA;
const NS: RecordType = RecordType::NS;
const CNAME: RecordType = RecordType::CNAME;

fn q(name: &str, qtype: RecordType) -> Message {
    ask(name, qtype).on(&fixture())
}

fn rcode(m: &Message) -> u16 {
    rcode_of(&m.to_vec().unwrap())
}

fn assert_nodata(m: &Message) {
    assert_eq!(rcode(m), 0, "NOERROR expected");
    assert!(m.answers.is_empty(), "no answers expected: {:?}", answers(m));
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), SOA, "SOA in authority");
    assert!(m.metadata.authoritative);
}

fn assert_nxdomain(m: &Message) {
    assert_eq!(rcode_name(rcode(m)), "NXDOMAIN");
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), SOA, "SOA in authority");
    assert!(m.metadata.authoritative);
}

fn forwarded(name: &str, qtype: RecordType) -> bool {
    matches!(pier_dns::answer(&fixture(), &ask(name, qtype).bytes(), UDP), Answer::Forward)
}

mod s1_definitions {
    use super::*;

    #[test]
    fn the_zone_and_ttl_come_from_config() {
        let zone =
            Zone::new(ZoneConfig { cluster_domain: "K8s.Example.".into(), ttl: 30, ..ZoneConfig::default() }).unwrap();
        populate(&zone);
        let m = ask("svc1.testns.svc.k8s.example.", A).on(&zone);
        assert_eq!(answers(&m), ["svc1.testns.svc.k8s.example. 30 IN A 10.0.0.1"]);
        let other = ask("svc1.testns.svc.cluster.local.", A).bytes();
        assert_eq!(pier_dns::answer(&zone, &other, UDP), Answer::Forward);
    }

    #[test]
    fn bad_config_is_refused() {
        let with = |cluster_domain: &str, ttl| {
            Zone::new(ZoneConfig { cluster_domain: cluster_domain.into(), ttl, ..ZoneConfig::default() })
        };
        assert!(with("cluster.local", 0).is_ok());
        assert!(with("cluster.local", 3600).is_ok());
        assert_eq!(with("cluster.local", 3601).unwrap_err(), pier_dns::ConfigError::TtlOutOfRange(3601));
        assert!(with("", 5).is_err());
        assert!(with("bad..domain", 5).is_err());
        assert!(with("under_score.local", 5).is_err());
    }
}

mod s2_case {
    use super::*;

    #[test]
    fn matching_ignores_case() {
        let m = q("SVC1.TestNS.Svc.CLUSTER.local.", A);
        assert_eq!(answers(&m), ["SVC1.TestNS.Svc.CLUSTER.local. 5 IN A 10.0.0.1"]);
        let m = q("_HTTP._Tcp.svc1.testns.svc.cluster.local.", SRV);
        assert_eq!(m.answers.len(), 1);
        let m = q("Dup-Name.HDLS1.testns.svc.cluster.local.", A);
        assert_eq!(m.answers.len(), 2);
    }
}

mod s3_schema_version {
    use super::*;

    #[test]
    fn dns_version_txt() {
        let m = q("dns-version.cluster.local.", TXT);
        assert_eq!(answers(&m), ["dns-version.cluster.local. 28800 IN TXT \"1.1.0\""]);
    }

    #[test]
    fn other_types_at_dns_version_are_nodata() {
        assert_nodata(&q("dns-version.cluster.local.", A));
    }
}

mod s4_clusterip_a_aaaa {
    use super::*;

    #[test]
    fn ipv4_service_has_a() {
        let m = q("svc1.testns.svc.cluster.local.", A);
        assert_eq!(rcode(&m), 0);
        assert_eq!(answers(&m), ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]);
    }

    #[test]
    fn ipv6_service_has_aaaa_only() {
        assert_eq!(
            answers(&q("svc6.testns.svc.cluster.local.", AAAA)),
            ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"]
        );
        assert_nodata(&q("svc6.testns.svc.cluster.local.", A));
    }

    #[test]
    fn dual_stack_service_has_both() {
        assert_eq!(
            answers(&q("svc-dual-stack.testns.svc.cluster.local.", A)),
            ["svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3"]
        );
        assert_eq!(
            answers(&q("svc-dual-stack.testns.svc.cluster.local.", AAAA)),
            ["svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3"]
        );
    }
}

mod s5_clusterip_srv {
    use super::*;

    #[test]
    fn named_port_srv_points_at_the_service() {
        let m = q("_http._tcp.svc1.testns.svc.cluster.local.", SRV);
        assert_eq!(
            answers(&m),
            ["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."]
        );
        assert_eq!(additionals(&m), ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]);
    }

    #[test]
    fn protocol_must_match() {
        assert_eq!(
            answers(&q("_dns._udp.multiport.testns.svc.cluster.local.", SRV)),
            ["_dns._udp.multiport.testns.svc.cluster.local. 5 IN SRV 0 100 53 multiport.testns.svc.cluster.local."]
        );
        assert_nxdomain(&q("_dns._tcp.multiport.testns.svc.cluster.local.", SRV));
        assert_nxdomain(&q("_http._udp.svc1.testns.svc.cluster.local.", SRV));
    }

    #[test]
    fn a_port_name_that_does_not_exist_is_nxdomain() {
        assert_nxdomain(&q("_https._tcp.svc1.testns.svc.cluster.local.", SRV));
    }

    #[test]
    fn the_srv_name_exists_for_other_types() {
        assert_nodata(&q("_http._tcp.svc1.testns.svc.cluster.local.", TXT));
    }
}

mod s6_clusterip_ptr {
    use super::*;

    #[test]
    fn ipv4_cluster_ip_reverses_to_the_service() {
        let m = q("1.0.0.10.in-addr.arpa.", PTR);
        assert_eq!(answers(&m), ["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."]);
        assert!(m.metadata.authoritative);
    }

    #[test]
    fn ipv6_cluster_ip_uses_the_full_nibble_form() {
        let name = reverse_name("1234:abcd::1".parse().unwrap());
        assert!(name.starts_with("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa"));
        assert_eq!(answers(&q(&name, PTR)), [format!("{name} 5 IN PTR svc6.testns.svc.cluster.local.")]);
    }

    #[test]
    fn both_families_of_a_dual_stack_service_reverse() {
        for ip in ["10.0.0.3", "10::3"] {
            let m = q(&reverse_name(ip.parse().unwrap()), PTR);
            assert_eq!(m.answers.len(), 1, "{ip}");
            assert_eq!(rdata_text(&m.answers[0].data), "svc-dual-stack.testns.svc.cluster.local.");
        }
    }
}

mod s7_headless_a_aaaa {
    use super::*;

    #[test]
    fn one_record_per_ready_address() {
        let m = q("hdls1.testns.svc.cluster.local.", A);
        let mut ips: Vec<String> = m.answers.iter().map(|r| rdata_text(&r.data)).collect();
        ips.sort();
        assert_eq!(ips, ["172.0.0.2", "172.0.0.3", "172.0.0.4", "172.0.0.5"]);
        let m = q("hdls1.testns.svc.cluster.local.", AAAA);
        assert_eq!(
            sorted_answers(&m),
            [
                "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
                "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"
            ]
        );
    }

    #[test]
    fn no_ready_endpoints_is_nxdomain() {
        for name in ["hdls-empty.testns.svc.cluster.local.", "hdls-unready.testns.svc.cluster.local."] {
            assert_nxdomain(&q(name, A));
            assert_nxdomain(&q(name, AAAA));
            assert_nxdomain(&q(name, SRV));
        }
    }

    #[test]
    fn a_family_without_endpoints_is_nodata() {
        assert_nodata(&q("hdlsprtls.testns.svc.cluster.local.", AAAA));
        assert_eq!(
            answers(&q("hdlsprtls.testns.svc.cluster.local.", A)),
            ["hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"]
        );
    }
}

mod s8_headless_endpoint_names {
    use super::*;

    #[test]
    fn hostname_names_its_addresses() {
        assert_eq!(
            sorted_answers(&q("dup-name.hdls1.testns.svc.cluster.local.", A)),
            [
                "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"
            ]
        );
        assert_eq!(
            answers(&q("v6-host.hdls1.testns.svc.cluster.local.", AAAA)),
            ["v6-host.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"]
        );
    }

    #[test]
    fn unready_endpoints_have_no_name() {
        assert_nxdomain(&q("unready.hdls1.testns.svc.cluster.local.", A));
    }

    #[test]
    fn several_addresses_in_one_endpoint_each_get_a_record() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "multi", http_port()));
        zone.apply_slice(&slice(
            "ns2",
            "multi-1",
            "multi",
            "IPv4",
            vec![ep(&["10.1.0.1", "10.1.0.2"], Some("m"), None)],
            http_port(),
        ));
        assert_eq!(
            sorted_answers(&ask("m.multi.ns2.svc.cluster.local.", A).on(&zone)),
            ["m.multi.ns2.svc.cluster.local. 5 IN A 10.1.0.1", "m.multi.ns2.svc.cluster.local. 5 IN A 10.1.0.2"]
        );
    }
}

mod s9_hostname {
    use super::*;

    #[test]
    fn endpoints_without_hostname_are_named_by_dashed_ip() {
        assert_eq!(
            answers(&q("172-0-0-2.hdls1.testns.svc.cluster.local.", A)),
            ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"]
        );
    }

    #[test]
    fn a_hostname_replaces_the_dashed_ip() {
        assert_nxdomain(&q("172-0-0-4.hdls1.testns.svc.cluster.local.", A));
    }
}

mod s10_ready {
    use super::*;

    #[test]
    fn unset_ready_condition_counts_as_ready() {
        assert_eq!(answers(&q("172-0-0-3.hdls1.testns.svc.cluster.local.", A)).len(), 1);
    }

    #[test]
    fn publish_not_ready_addresses_publishes_unready_endpoints() {
        assert_eq!(
            answers(&q("hdls-publish.testns.svc.cluster.local.", A)),
            ["hdls-publish.testns.svc.cluster.local. 5 IN A 172.0.0.40"]
        );
        assert_eq!(answers(&q("p.hdls-publish.testns.svc.cluster.local.", A)).len(), 1);
    }

    #[test]
    fn tolerate_unready_annotation_publishes_unready_endpoints() {
        let zone = fixture();
        let mut svc = headless("ns2", "tol", http_port());
        svc.metadata.annotations =
            Some([("service.alpha.kubernetes.io/tolerate-unready-endpoints".to_string(), "true".to_string())].into());
        zone.apply_service(&svc);
        zone.apply_slice(&slice(
            "ns2",
            "tol-1",
            "tol",
            "IPv4",
            vec![ep(&["10.2.0.1"], None, Some(false))],
            http_port(),
        ));
        assert_eq!(
            answers(&ask("tol.ns2.svc.cluster.local.", A).on(&zone)),
            ["tol.ns2.svc.cluster.local. 5 IN A 10.2.0.1"]
        );
    }
}

mod s11_headless_srv {
    use super::*;

    #[test]
    fn one_srv_per_endpoint_and_named_port() {
        let m = ask("_http._tcp.hdls1.testns.svc.cluster.local.", SRV).edns(1232).on(&fixture());
        let mut targets: Vec<String> = answers(&m);
        targets.sort();
        assert_eq!(
            targets,
            [
                "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
                "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local.",
                "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.",
                "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.",
                "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 v6-host.hdls1.testns.svc.cluster.local.",
            ]
        );
        assert_eq!(m.additionals.len(), 6);
    }

    #[test]
    fn n_endpoints_times_m_ports() {
        let zone = fixture();
        let ports = json!([{"name": "a", "port": 1, "protocol": "TCP"}, {"name": "b", "port": 2, "protocol": "TCP"}]);
        zone.apply_service(&headless("ns2", "nm", ports.clone()));
        let eps = vec![ep(&["10.3.0.1"], None, None), ep(&["10.3.0.2"], None, None), ep(&["10.3.0.3"], None, None)];
        zone.apply_slice(&slice("ns2", "nm-1", "nm", "IPv4", eps, ports));
        assert_eq!(ask("_a._tcp.nm.ns2.svc.cluster.local.", SRV).on(&zone).answers.len(), 3);
        assert_eq!(ask("_b._tcp.nm.ns2.svc.cluster.local.", SRV).on(&zone).answers.len(), 3);
        assert_eq!(ask("nm.ns2.svc.cluster.local.", SRV).on(&zone).answers.len(), 6);
    }

    #[test]
    fn srv_uses_the_endpoint_port_number() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "tp", http_port()));
        zone.apply_slice(&slice(
            "ns2",
            "tp-1",
            "tp",
            "IPv4",
            vec![ep(&["10.4.0.1"], Some("h"), None)],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ));
        let m = ask("_http._tcp.tp.ns2.svc.cluster.local.", SRV).on(&zone);
        assert_eq!(
            answers(&m),
            ["_http._tcp.tp.ns2.svc.cluster.local. 5 IN SRV 0 100 8080 h.tp.ns2.svc.cluster.local."]
        );
        assert_eq!(additionals(&m), ["h.tp.ns2.svc.cluster.local. 5 IN A 10.4.0.1"]);
    }

    #[test]
    fn portless_headless_service_has_no_srv() {
        assert_nodata(&q("hdlsprtls.testns.svc.cluster.local.", SRV));
    }
}

mod s12_headless_ptr {
    use super::*;

    #[test]
    fn ready_endpoint_reverses_to_its_name() {
        assert_eq!(
            answers(&q("2.0.0.172.in-addr.arpa.", PTR)),
            ["2.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-2.hdls1.testns.svc.cluster.local."]
        );
        assert_eq!(
            answers(&q("4.0.0.172.in-addr.arpa.", PTR)),
            ["4.0.0.172.in-addr.arpa. 5 IN PTR dup-name.hdls1.testns.svc.cluster.local."]
        );
        let v6 = reverse_name("5678:abcd::2".parse().unwrap());
        assert_eq!(answers(&q(&v6, PTR)), [format!("{v6} 5 IN PTR v6-host.hdls1.testns.svc.cluster.local.")]);
    }

    #[test]
    fn unready_endpoint_has_no_ptr_and_is_forwarded() {
        assert!(forwarded("6.0.0.172.in-addr.arpa.", PTR));
    }
}

mod s13_externalname {
    use super::*;

    #[test]
    fn cname_query_gets_the_cname() {
        let m = q("ext.testns.svc.cluster.local.", CNAME);
        assert_eq!(answers(&m), ["ext.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]);
    }

    #[test]
    fn a_query_asks_for_the_target_to_be_resolved() {
        let zone = fixture();
        let a = pier_dns::answer(&zone, &ask("ext.testns.svc.cluster.local.", A).bytes(), UDP);
        let Answer::Resolve { partial, target } = a else { panic!("expected Resolve, got {a:?}") };
        assert_eq!(target, Resolve { name: "ext.interwebs.test.".into(), qtype: 1 });
        let m = Message::from_vec(&partial).unwrap();
        assert_eq!(answers(&m), ["ext.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]);
    }

    #[test]
    fn in_zone_target_is_followed() {
        let m = q("ext-in.testns.svc.cluster.local.", A);
        assert_eq!(
            answers(&m),
            [
                "ext-in.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
                "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
            ]
        );
    }
}

mod s15_not_covered {
    use super::*;

    #[test]
    fn wildcards_are_not_served() {
        assert_nxdomain(&q("*.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("any.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("svc1.*.svc.cluster.local.", A));
    }
}

mod k1_ttl {
    use super::*;

    #[test]
    fn configured_ttl_everywhere_but_dns_version_and_soa() {
        let zone = Zone::new(ZoneConfig { ttl: 3600, ..ZoneConfig::default() }).unwrap();
        populate(&zone);
        zone.mark_synced();
        let m = ask("svc1.testns.svc.cluster.local.", A).on(&zone);
        assert_eq!(m.answers[0].ttl, 3600);
        let m = ask("nope.testns.svc.cluster.local.", A).on(&zone);
        let soa = &m.authorities[0];
        assert_eq!(soa.ttl, 300, "SOA TTL is min(ttl, 300)");
        assert!(rdata_text(&soa.data).ends_with(" 3600"), "SOA MINIMUM is the ttl: {}", rdata_text(&soa.data));
        assert_eq!(ask("dns-version.cluster.local.", TXT).on(&zone).answers[0].ttl, 28800);
    }

    #[test]
    fn ttl_zero_is_allowed() {
        let zone = Zone::new(ZoneConfig { ttl: 0, ..ZoneConfig::default() }).unwrap();
        populate(&zone);
        assert_eq!(ask("svc1.testns.svc.cluster.local.", A).on(&zone).answers[0].ttl, 0);
    }
}

mod k3_nxdomain_vs_nodata {
    use super::*;

    #[test]
    fn existing_names_without_the_type_are_nodata() {
        assert_nodata(&q("svc1.testns.svc.cluster.local.", AAAA));
        assert_nodata(&q("svc1.testns.svc.cluster.local.", TXT));
        assert_nodata(&q("svc1.testns.svc.cluster.local.", NS));
        assert_nodata(&q("svc1.testns.svc.cluster.local.", PTR));
        assert_nodata(&q("svc1.testns.svc.cluster.local.", RecordType::HINFO));
        for t in [A, AAAA, SRV, RecordType::HINFO, TXT] {
            assert_nodata(&q("cluster.local.", t));
        }
    }

    #[test]
    fn soa_below_the_apex_is_nodata_even_for_missing_names() {
        assert_nodata(&q("svc1.testns.svc.cluster.local.", SOA));
        assert_nodata(&q("no.such.name.cluster.local.", SOA));
    }

    #[test]
    fn empty_non_terminals_are_nodata() {
        assert_nodata(&q("svc.cluster.local.", A));
        assert_nodata(&q("pod.cluster.local.", A));
        assert_nodata(&q("testns.svc.cluster.local.", A));
    }

    #[test]
    fn missing_names_are_nxdomain() {
        assert_nxdomain(&q("nosvc.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("svc1.nons.svc.cluster.local.", A));
        assert_nxdomain(&q("nons.svc.cluster.local.", A));
        assert_nxdomain(&q("foo.cluster.local.", A));
        assert_nxdomain(&q("nope.svc1.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("_http._tcp.ext.testns.svc.cluster.local.", SRV));
        assert_nxdomain(&q("ep.ext.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("a.b._http._tcp.svc1.testns.svc.cluster.local.", A));
        assert_nxdomain(&q("_tcp.svc1.testns.svc.cluster.local.", SRV));
    }
}

mod k4_cache_not_synced {
    use super::*;

    #[test]
    fn nxdomain_becomes_servfail_with_soa_until_synced() {
        let zone = Zone::new(ZoneConfig::default()).unwrap();
        populate(&zone);
        let m = ask("nosvc.testns.svc.cluster.local.", A).on(&zone);
        assert_eq!(rcode_name(rcode(&m)), "SERVFAIL");
        assert_eq!(m.authorities[0].record_type(), SOA);
        // Known names are answered already.
        assert_eq!(ask("svc1.testns.svc.cluster.local.", A).on(&zone).answers.len(), 1);
        zone.mark_synced();
        assert_nxdomain(&ask("nosvc.testns.svc.cluster.local.", A).on(&zone));
    }

    /// A node's first lists: names are built once, at the sync, and the zone then answers as
    /// one fed event by event does.
    #[test]
    fn a_zone_deferring_builds_answers_the_same_once_synced() {
        let deferred = Zone::new(ZoneConfig::default()).unwrap();
        deferred.defer_until_synced();
        populate(&deferred);
        let m = ask("svc1.testns.svc.cluster.local.", A).on(&deferred);
        assert_eq!(rcode_name(rcode(&m)), "SERVFAIL", "nothing is built before the sync");
        deferred.delete_service("testns", "svc1");
        deferred.mark_synced();
        let eager = fixture();
        eager.delete_service("testns", "svc1");
        assert_eq!(deferred.name_count(), eager.name_count());
        for (name, t) in [
            ("svc1.testns.svc.cluster.local.", A),
            ("hdls1.testns.svc.cluster.local.", A),
            ("_http._tcp.hdls1.testns.svc.cluster.local.", SRV),
            ("2.0.0.172.in-addr.arpa.", PTR),
            ("2.0.0.10.in-addr.arpa.", PTR),
        ] {
            let (d, e) = (ask(name, t).on(&deferred), ask(name, t).on(&eager));
            assert_eq!((rcode(&d), sorted_answers(&d)), (rcode(&e), sorted_answers(&e)), "{name}");
        }
        // Afterwards each event is applied at once.
        deferred.apply_service(&cluster_ip("testns", "late", &["10.0.0.99"], http_port()));
        assert_eq!(ask("late.testns.svc.cluster.local.", A).on(&deferred).answers.len(), 1);
    }

    /// The first build commits a few hundred Services at a time: with more than that, every
    /// name is there once synced, and none is answered as missing before.
    #[test]
    fn a_deferred_build_larger_than_one_chunk_is_whole() {
        let zone = Zone::new(ZoneConfig::default()).unwrap();
        zone.defer_until_synced();
        for i in 0..1500u32 {
            let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            zone.apply_service(&cluster_ip("bulk", &format!("svc-{i}"), &[ip.as_str()], http_port()));
        }
        assert_eq!(rcode_name(rcode(&ask("svc-1499.bulk.svc.cluster.local.", A).on(&zone))), "SERVFAIL");
        zone.mark_synced();
        for i in [0u32, 511, 512, 1023, 1024, 1499] {
            let m = ask(&format!("svc-{i}.bulk.svc.cluster.local."), A).on(&zone);
            assert_eq!(
                answers(&m),
                [format!("svc-{i}.bulk.svc.cluster.local. 5 IN A 10.1.{}.{}", i / 250, i % 250 + 1)]
            );
        }
        assert_nxdomain(&ask("svc-1500.bulk.svc.cluster.local.", A).on(&zone));
    }
}

mod k5_clusterip_without_endpoints {
    use super::*;

    #[test]
    fn keeps_its_records() {
        assert_eq!(
            answers(&q("svcempty.testns.svc.cluster.local.", A)),
            ["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.2"]
        );
        assert_eq!(q("_http._tcp.svcempty.testns.svc.cluster.local.", SRV).answers.len(), 1);
    }
}

mod k6_srv_details {
    use super::*;

    #[test]
    fn dual_stack_collapses_to_one_srv_weighted_over_two_candidates() {
        let m = q("_http._tcp.svc-dual-stack.testns.svc.cluster.local.", SRV);
        assert_eq!(
            answers(&m),
            [
                "_http._tcp.svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local."
            ]
        );
        assert_eq!(
            additionals(&m),
            [
                "svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
                "svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3",
            ]
        );
    }

    #[test]
    fn shared_hostname_gives_one_srv_but_each_address() {
        let m = ask("_http._tcp.hdls1.testns.svc.cluster.local.", SRV).edns(1232).on(&fixture());
        let dup = answers(&m).iter().filter(|a| a.contains("dup-name")).count();
        assert_eq!(dup, 1);
        let dup_addrs = additionals(&m).iter().filter(|a| a.starts_with("dup-name")).count();
        assert_eq!(dup_addrs, 2);
    }

    #[test]
    fn weight_has_a_floor_of_one() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "big", http_port()));
        let ips: Vec<String> = (1..=150).map(|i| format!("10.5.{}.{}", i / 256, i % 256)).collect();
        let eps = ips.iter().map(|ip| ep(&[ip.as_str()], None, None)).collect();
        zone.apply_slice(&slice("ns2", "big-1", "big", "IPv4", eps, http_port()));
        let m = ask("_http._tcp.big.ns2.svc.cluster.local.", SRV).on(&zone);
        let raw = ask("_http._tcp.big.ns2.svc.cluster.local.", SRV).raw_on(&zone, Transport::Tcp).unwrap();
        let full = Message::from_vec(&raw).unwrap();
        assert_eq!(full.answers.len(), 150);
        assert!(full.answers.iter().all(|r| rdata_text(&r.data).starts_with("0 1 80 ")));
        assert!(m.metadata.truncation, "150 SRV records do not fit 512 bytes");
    }
}

mod k7_endpoint_identifier {
    use super::*;

    #[test]
    fn ipv6_dashed_form() {
        assert_eq!(
            answers(&q("5678-abcd--1.hdls1.testns.svc.cluster.local.", AAAA)),
            ["5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1"]
        );
    }

    #[test]
    fn ipv6_trailing_dash_gets_a_zero() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "v6", http_port()));
        zone.apply_slice(&slice(
            "ns2",
            "v6-1",
            "v6",
            "IPv6",
            vec![ep(&["2001:db8:3333:4444:5555:6666::"], None, None)],
            http_port(),
        ));
        let m = ask("2001-db8-3333-4444-5555-6666--0.v6.ns2.svc.cluster.local.", AAAA).on(&zone);
        assert_eq!(m.answers.len(), 1);
    }
}

mod k8_bare_srv {
    use super::*;

    #[test]
    fn bare_service_name_srv_lists_all_ports() {
        let m = q("multiport.testns.svc.cluster.local.", SRV);
        assert_eq!(
            answers(&m),
            [
                "multiport.testns.svc.cluster.local. 5 IN SRV 0 33 80 multiport.testns.svc.cluster.local.",
                "multiport.testns.svc.cluster.local. 5 IN SRV 0 33 53 multiport.testns.svc.cluster.local.",
                "multiport.testns.svc.cluster.local. 5 IN SRV 0 33 8080 multiport.testns.svc.cluster.local.",
            ]
        );
        assert_eq!(additionals(&m), ["multiport.testns.svc.cluster.local. 5 IN A 10.0.0.5"]);
    }

    #[test]
    fn headless_bare_srv_lists_endpoints() {
        assert_eq!(q("hdls1.testns.svc.cluster.local.", SRV).answers.len(), 5);
    }
}

mod k9_endpoint_names_under_clusterip {
    use super::*;

    #[test]
    fn clusterip_endpoints_have_names_too() {
        assert_eq!(
            answers(&q("172-0-0-10.svc1.testns.svc.cluster.local.", A)),
            ["172-0-0-10.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.10"]
        );
        assert_eq!(
            answers(&q("svc1-pod.svc1.testns.svc.cluster.local.", A)),
            ["svc1-pod.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.11"]
        );
    }
}

mod k10_ptr {
    use super::*;

    #[test]
    fn endpoint_of_a_clusterip_service_reverses_to_its_endpoint_name() {
        assert_eq!(
            answers(&q("11.0.0.172.in-addr.arpa.", PTR)),
            ["11.0.0.172.in-addr.arpa. 5 IN PTR svc1-pod.svc1.testns.svc.cluster.local."]
        );
    }

    #[test]
    fn an_ip_in_several_services_gets_one_ptr_per_target_deduplicated() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "x", http_port()));
        zone.apply_service(&headless("ns2", "y", http_port()));
        zone.apply_slice(&slice("ns2", "x-1", "x", "IPv4", vec![ep(&["10.6.0.1"], Some("h"), None)], http_port()));
        zone.apply_slice(&slice("ns2", "x-2", "x", "IPv4", vec![ep(&["10.6.0.1"], Some("h"), None)], http_port()));
        zone.apply_slice(&slice("ns2", "y-1", "y", "IPv4", vec![ep(&["10.6.0.1"], None, None)], http_port()));
        let m = ask("1.0.6.10.in-addr.arpa.", PTR).on(&zone);
        assert_eq!(
            sorted_answers(&m),
            [
                "1.0.6.10.in-addr.arpa. 5 IN PTR 10-6-0-1.y.ns2.svc.cluster.local.",
                "1.0.6.10.in-addr.arpa. 5 IN PTR h.x.ns2.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn a_cluster_ip_beats_endpoints() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "x", http_port()));
        zone.apply_slice(&slice("ns2", "x-1", "x", "IPv4", vec![ep(&["10.0.0.1"], None, None)], http_port()));
        assert_eq!(
            answers(&ask("1.0.0.10.in-addr.arpa.", PTR).on(&zone)),
            ["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."]
        );
    }

    #[test]
    fn unknown_ips_and_partial_reverse_names_are_forwarded() {
        assert!(forwarded("9.9.9.9.in-addr.arpa.", PTR));
        assert!(forwarded("10.in-addr.arpa.", PTR));
        assert!(forwarded("in-addr.arpa.", SOA));
        assert!(forwarded("1.0.0.010.in-addr.arpa.", PTR));
    }

    #[test]
    fn other_types_at_a_known_reverse_name_are_nodata_with_the_reverse_soa() {
        let m = q("1.0.0.10.in-addr.arpa.", A);
        assert_eq!(rcode(&m), 0);
        assert!(m.answers.is_empty());
        assert_eq!(authorities(&m)[0].split(' ').next(), Some("in-addr.arpa."));
    }
}

mod k11_externalname {
    use super::*;

    #[test]
    fn chains_are_followed_inside_the_zone_cname_first() {
        let m = q("ext-chain.testns.svc.cluster.local.", A);
        assert_eq!(
            answers(&m),
            [
                "ext-chain.testns.svc.cluster.local. 5 IN CNAME ext-in.testns.svc.cluster.local.",
                "ext-in.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
                "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
            ]
        );
    }

    #[test]
    fn missing_in_zone_target_is_nxdomain_after_the_cname() {
        let m = q("ext-missing.testns.svc.cluster.local.", A);
        assert_eq!(rcode_name(rcode(&m)), "NXDOMAIN");
        assert_eq!(answers(&m), ["ext-missing.testns.svc.cluster.local. 5 IN CNAME nope.testns.svc.cluster.local."]);
    }

    #[test]
    fn target_without_the_type_is_cname_and_soa() {
        let m = q("ext-in.testns.svc.cluster.local.", AAAA);
        assert_eq!(rcode(&m), 0);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.authorities[0].record_type(), SOA);
    }

    #[test]
    fn srv_at_an_externalname_is_nodata() {
        assert_nodata(&q("ext.testns.svc.cluster.local.", SRV));
    }

    #[test]
    fn a_self_referencing_alias_terminates() {
        let zone = fixture();
        zone.apply_service(&external("ns2", "loop", "loop.ns2.svc.cluster.local"));
        let m = ask("loop.ns2.svc.cluster.local.", A).on(&zone);
        assert!(m.answers.len() <= 8);
    }
}

mod k12_apex {
    use super::*;

    #[test]
    fn soa_at_the_apex_is_in_the_answer() {
        let m = q("cluster.local.", SOA);
        assert_eq!(m.answers.len(), 1);
        let soa = rdata_text(&m.answers[0].data);
        assert!(soa.starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "), "{soa}");
        assert!(soa.ends_with(" 7200 1800 86400 5"), "{soa}");
    }

    #[test]
    fn ns_with_glue_for_configured_addresses() {
        let zone = Zone::new(ZoneConfig { nameservers: vec!["10.96.0.10".parse().unwrap()], ..ZoneConfig::default() })
            .unwrap();
        let m = ask("cluster.local.", NS).on(&zone);
        assert_eq!(answers(&m), ["cluster.local. 5 IN NS ns.dns.cluster.local."]);
        assert_eq!(additionals(&m), ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]);
        assert_eq!(answers(&ask("ns.dns.cluster.local.", A).on(&zone)), ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]);
    }
}

mod k13_zone_transfer {
    use super::*;

    #[test]
    fn axfr_and_ixfr_are_refused() {
        for t in [RecordType::AXFR, RecordType::IXFR] {
            let m = q("cluster.local.", t);
            assert_eq!(rcode_name(rcode(&m)), "REFUSED");
            assert!(m.answers.is_empty());
        }
    }
}

mod k14_case {
    use super::*;

    #[test]
    fn generated_names_take_the_zone_case_from_the_query_and_labels_from_the_api() {
        let m = q("_http._tcp.SVC1.testns.svc.cLuStEr.LoCaL.", SRV);
        assert_eq!(
            answers(&m),
            ["_http._tcp.SVC1.testns.svc.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."]
        );
        assert_eq!(additionals(&m), ["svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1"]);
    }

    #[test]
    fn the_soa_owner_takes_the_query_case() {
        let m = q("nope.testns.svc.CLUSTER.local.", A);
        assert!(
            authorities(&m)[0].starts_with("CLUSTER.local. 5 IN SOA ns.dns.CLUSTER.local. hostmaster.CLUSTER.local. ")
        );
    }

    #[test]
    fn the_question_is_echoed_exactly() {
        let m = q("SvC1.TESTNS.svc.cluster.LOCAL.", A);
        assert_eq!(m.queries[0].name().to_ascii(), "SvC1.TESTNS.svc.cluster.LOCAL.");
    }
}

mod k15_pods {
    use super::*;

    #[test]
    fn pod_records_are_disabled() {
        assert_nxdomain(&q("172-0-0-2.testns.pod.cluster.local.", A));
        assert_nxdomain(&q("testns.pod.cluster.local.", A));
        assert_nodata(&q("pod.cluster.local.", A));
    }
}

mod k22_header_flags {
    use super::*;

    #[test]
    fn authoritative_answers_echo_id_and_rd() {
        for (name, t) in [
            ("svc1.testns.svc.cluster.local.", A),
            ("svc1.testns.svc.cluster.local.", AAAA),
            ("nosvc.testns.svc.cluster.local.", A),
        ] {
            let m = ask(name, t).id(0xBEEF).on(&fixture());
            assert_eq!(m.metadata.id, 0xBEEF);
            assert!(m.metadata.authoritative);
            assert!(m.metadata.recursion_desired);
            assert!(!m.metadata.truncation);
        }
    }
}

mod k23_dedup {
    use super::*;

    #[test]
    fn an_address_in_several_slices_is_returned_once() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "d", http_port()));
        zone.apply_slice(&slice("ns2", "d-1", "d", "IPv4", vec![ep(&["10.7.0.1"], None, None)], http_port()));
        zone.apply_slice(&slice(
            "ns2",
            "d-2",
            "d",
            "IPv4",
            vec![ep(&["10.7.0.1"], None, None), ep(&["10.7.0.2"], None, None)],
            http_port(),
        ));
        assert_eq!(
            sorted_answers(&ask("d.ns2.svc.cluster.local.", A).on(&zone)),
            ["d.ns2.svc.cluster.local. 5 IN A 10.7.0.1", "d.ns2.svc.cluster.local. 5 IN A 10.7.0.2"]
        );
    }
}

/// Protocol rules around the spec: EDNS (RFC 6891), truncation (RFC 1035, 2181), error codes
/// as miekg/dns (CoreDNS's server library) sends them, and the forward decision.
mod protocol {
    use super::*;

    fn big_zone() -> Zone {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "big", http_port()));
        let ips: Vec<String> = (1..=60).map(|i| format!("10.8.0.{i}")).collect();
        let eps = ips.iter().map(|ip| ep(&[ip.as_str()], None, None)).collect();
        zone.apply_slice(&slice("ns2", "big-1", "big", "IPv4", eps, http_port()));
        zone
    }

    #[test]
    fn opt_is_echoed_with_our_payload_size() {
        let zone = fixture();
        let m = ask("svc1.testns.svc.cluster.local.", A).edns(4096).on(&zone);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
        assert!(ask("svc1.testns.svc.cluster.local.", A).on(&zone).edns.is_none());
    }

    #[test]
    fn unknown_edns_version_is_badvers() {
        let mut bytes = ask("svc1.testns.svc.cluster.local.", A).edns(1232).bytes();
        let n = bytes.len();
        bytes[n - 5] = 1; // OPT TTL: extended rcode, version, flags
        let resp = match pier_dns::answer(&fixture(), &bytes, UDP) {
            Answer::Reply(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(rcode_name(rcode_of(&resp)), "BADVERS");
    }

    #[test]
    fn udp_without_edns_truncates_at_512_with_tc() {
        let zone = big_zone();
        let raw = ask("big.ns2.svc.cluster.local.", A).raw_on(&zone, UDP).unwrap();
        assert!(raw.len() <= 512);
        let m = Message::from_vec(&raw).unwrap();
        assert!(m.metadata.truncation);
        assert!(!m.answers.is_empty() && m.answers.len() < 60);
    }

    #[test]
    fn edns_size_is_honoured_up_to_our_maximum() {
        let zone = big_zone();
        // 60 A records are ~1000 bytes: they fit 1232 but not 700.
        let m =
            Message::from_vec(&ask("big.ns2.svc.cluster.local.", A).edns(4096).raw_on(&zone, UDP).unwrap()).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        let raw = ask("big.ns2.svc.cluster.local.", A).edns(700).raw_on(&zone, UDP).unwrap();
        assert!(raw.len() <= 700);
        assert!(Message::from_vec(&raw).unwrap().metadata.truncation);
        let small = Transport::Udp { max_payload: 600 };
        let raw = ask("big.ns2.svc.cluster.local.", A).edns(4096).raw_on(&zone, small).unwrap();
        assert!(raw.len() <= 600);
    }

    #[test]
    fn tcp_gets_everything() {
        let zone = big_zone();
        let raw = ask("big.ns2.svc.cluster.local.", A).raw_on(&zone, Transport::Tcp).unwrap();
        let m = Message::from_vec(&raw).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }

    #[test]
    fn additional_records_go_before_answers_and_without_tc() {
        let zone = big_zone();
        let m = Message::from_vec(
            &ask("_http._tcp.big.ns2.svc.cluster.local.", SRV).edns(4096).raw_on(&zone, Transport::Tcp).unwrap(),
        )
        .unwrap();
        assert_eq!(m.additionals.len(), 60);
        // Over UDP 1232 the 60 SRV answers do not fit with their addresses: addresses go first.
        let raw = ask("_http._tcp.hdls1.testns.svc.cluster.local.", SRV).raw_on(&zone, UDP).unwrap();
        let m = Message::from_vec(&raw).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 5);
    }

    #[test]
    fn answers_rotate_with_the_query_id() {
        let zone = fixture();
        let firsts: std::collections::BTreeSet<String> = (0..8)
            .map(|id| rdata_text(&ask("hdls1.testns.svc.cluster.local.", A).id(id).on(&zone).answers[0].data))
            .collect();
        assert_eq!(firsts.len(), 4);
    }

    #[test]
    fn malformed_queries_get_formerr() {
        let zone = fixture();
        let good = ask("svc1.testns.svc.cluster.local.", A).bytes();
        let mut no_question = good[..12].to_vec();
        no_question[5] = 0;
        let mut two_questions = good.clone();
        two_questions[5] = 2;
        let cut = good[..good.len() - 2].to_vec();
        let mut bad_label = good.clone();
        bad_label[12] = 0x80;
        let mut pointer = good[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        for (what, bytes) in [
            ("qdcount 0", no_question),
            ("qdcount 2", two_questions),
            ("cut", cut),
            ("label", bad_label),
            ("pointer", pointer),
        ] {
            let Answer::Reply(resp) = pier_dns::answer(&zone, &bytes, UDP) else { panic!("{what}: no reply") };
            assert_eq!(rcode_name(rcode_of(&resp)), "FORMERR", "{what}");
            assert_eq!(&resp[..2], &bytes[..2], "{what}: id echoed");
        }
    }

    #[test]
    fn two_opt_records_are_formerr() {
        let mut bytes = ask("svc1.testns.svc.cluster.local.", A).edns(1232).bytes();
        let opt = bytes[bytes.len() - 11..].to_vec();
        bytes.extend_from_slice(&opt);
        bytes[11] = 2;
        let Answer::Reply(resp) = pier_dns::answer(&fixture(), &bytes, UDP) else { panic!() };
        assert_eq!(rcode_name(rcode_of(&resp)), "FORMERR");
    }

    #[test]
    fn other_opcodes_get_notimp() {
        let mut bytes = ask("svc1.testns.svc.cluster.local.", A).bytes();
        bytes[2] |= 5 << 3; // UPDATE
        let Answer::Reply(resp) = pier_dns::answer(&fixture(), &bytes, UDP) else { panic!() };
        assert_eq!(rcode_name(rcode_of(&resp)), "NOTIMP");
    }

    #[test]
    fn responses_and_runts_are_dropped() {
        let zone = fixture();
        let mut resp = ask("svc1.testns.svc.cluster.local.", A).bytes();
        resp[2] |= 0x80;
        assert_eq!(pier_dns::answer(&zone, &resp, UDP), Answer::Drop);
        assert_eq!(pier_dns::answer(&zone, &[0x12, 0x34, 0], UDP), Answer::Drop);
    }

    #[test]
    fn other_classes_are_refused() {
        let m = ask("svc1.testns.svc.cluster.local.", A).class(DNSClass::CH).on(&fixture());
        assert_eq!(rcode_name(rcode(&m)), "REFUSED");
    }

    #[test]
    fn names_outside_the_zone_are_forwarded() {
        assert!(forwarded("example.com.", A));
        assert!(forwarded("local.", A));
        assert!(forwarded("xcluster.local.", A));
        assert!(forwarded(".", NS));
    }
}

/// Incremental updates: each event changes exactly what it should.
mod updates {
    use super::*;

    #[test]
    fn changing_a_cluster_ip_moves_a_and_ptr() {
        let zone = fixture();
        zone.apply_service(&cluster_ip("testns", "svc1", &["10.0.0.99"], http_port()));
        assert_eq!(
            answers(&ask("svc1.testns.svc.cluster.local.", A).on(&zone)),
            ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.99"]
        );
        assert_eq!(ask("99.0.0.10.in-addr.arpa.", PTR).on(&zone).answers.len(), 1);
        let old = ask("1.0.0.10.in-addr.arpa.", PTR).bytes();
        assert_eq!(pier_dns::answer(&zone, &old, UDP), Answer::Forward);
    }

    #[test]
    fn deleting_a_service_removes_its_names_and_then_its_namespace() {
        let zone = Zone::new(ZoneConfig::default()).unwrap();
        zone.mark_synced();
        zone.apply_service(&cluster_ip("solo", "a", &["10.9.0.1"], http_port()));
        zone.apply_slice(&slice("solo", "a-1", "a", "IPv4", vec![ep(&["10.9.1.1"], Some("h"), None)], http_port()));
        assert_nodata(&ask("solo.svc.cluster.local.", A).on(&zone));
        assert_eq!(ask("h.a.solo.svc.cluster.local.", A).on(&zone).answers.len(), 1);
        let before = zone.name_count();
        zone.delete_service("solo", "a");
        assert_nxdomain(&ask("a.solo.svc.cluster.local.", A).on(&zone));
        assert_nxdomain(&ask("h.a.solo.svc.cluster.local.", A).on(&zone));
        assert_nxdomain(&ask("_http._tcp.a.solo.svc.cluster.local.", SRV).on(&zone));
        assert_nxdomain(&ask("solo.svc.cluster.local.", A).on(&zone));
        assert!(matches!(pier_dns::answer(&zone, &ask("1.0.9.10.in-addr.arpa.", PTR).bytes(), UDP), Answer::Forward));
        assert!(matches!(pier_dns::answer(&zone, &ask("1.1.9.10.in-addr.arpa.", PTR).bytes(), UDP), Answer::Forward));
        assert!(zone.name_count() < before);
        // The slice is kept: re-creating the Service brings its endpoints back at once.
        zone.apply_service(&cluster_ip("solo", "a", &["10.9.0.1"], http_port()));
        assert_eq!(ask("h.a.solo.svc.cluster.local.", A).on(&zone).answers.len(), 1);
    }

    #[test]
    fn endpoint_ptrs_follow_slices_that_share_an_address_or_change_service() {
        let zone = fixture();
        let ptr = |zone: &Zone| answers(&ask("9.9.0.172.in-addr.arpa.", PTR).on(zone));
        zone.apply_service(&headless("idx", "one", http_port()));
        zone.apply_service(&headless("idx", "two", http_port()));
        let shared = || vec![ep(&["172.0.9.9"], Some("web"), None)];
        zone.apply_slice(&slice("idx", "one-a", "one", "IPv4", shared(), http_port()));
        zone.apply_slice(&slice("idx", "one-b", "one", "IPv4", shared(), http_port()));
        assert_eq!(ptr(&zone), ["9.9.0.172.in-addr.arpa. 5 IN PTR web.one.idx.svc.cluster.local."]);
        // The other slice of the Service still has the address.
        zone.delete_slice("idx", "one-a");
        assert_eq!(ptr(&zone), ["9.9.0.172.in-addr.arpa. 5 IN PTR web.one.idx.svc.cluster.local."]);
        // Relabelled to another Service: the name and the PTR move with it.
        zone.apply_slice(&slice("idx", "one-b", "two", "IPv4", shared(), http_port()));
        assert_eq!(ptr(&zone), ["9.9.0.172.in-addr.arpa. 5 IN PTR web.two.idx.svc.cluster.local."]);
        assert_nxdomain(&ask("one.idx.svc.cluster.local.", A).on(&zone));
        assert_eq!(ask("web.two.idx.svc.cluster.local.", A).on(&zone).answers.len(), 1);
        // Gone with its last slice; a Service created afterwards does not inherit it.
        zone.delete_slice("idx", "one-b");
        zone.delete_service("idx", "one");
        zone.apply_service(&headless("idx", "three", http_port()));
        assert!(matches!(pier_dns::answer(&zone, &ask("9.9.0.172.in-addr.arpa.", PTR).bytes(), UDP), Answer::Forward));
        assert!(!zone.slice_keys().iter().any(|(ns, _)| ns == "idx"));
        assert!(!zone.service_keys().contains(&("idx".to_string(), "one".to_string())));
        assert!(zone.service_keys().contains(&("idx".to_string(), "three".to_string())));
    }

    #[test]
    fn deleting_the_last_slice_of_a_headless_service_makes_it_nxdomain() {
        let zone = fixture();
        zone.delete_slice("testns", "hdls1-v4");
        assert_eq!(ask("hdls1.testns.svc.cluster.local.", A).on(&zone).answers.len(), 0);
        assert_eq!(ask("hdls1.testns.svc.cluster.local.", AAAA).on(&zone).answers.len(), 2);
        zone.delete_slice("testns", "hdls1-v6");
        assert_nxdomain(&ask("hdls1.testns.svc.cluster.local.", AAAA).on(&zone));
    }

    #[test]
    fn an_endpoint_turning_unready_disappears() {
        let zone = fixture();
        zone.apply_slice(&slice(
            "testns",
            "hdlsprtls-1",
            "hdlsprtls",
            "IPv4",
            vec![ep(&["172.0.0.20"], None, Some(false))],
            json!([]),
        ));
        assert_nxdomain(&ask("hdlsprtls.testns.svc.cluster.local.", A).on(&zone));
        assert_eq!(pier_dns::answer(&zone, &ask("20.0.0.172.in-addr.arpa.", PTR).bytes(), UDP), Answer::Forward);
    }

    #[test]
    fn a_slice_that_changes_service_moves_its_endpoints() {
        let zone = fixture();
        zone.apply_service(&headless("ns2", "one", http_port()));
        zone.apply_service(&headless("ns2", "two", http_port()));
        zone.apply_slice(&slice("ns2", "s", "one", "IPv4", vec![ep(&["10.10.0.1"], None, None)], http_port()));
        assert_eq!(ask("one.ns2.svc.cluster.local.", A).on(&zone).answers.len(), 1);
        zone.apply_slice(&slice("ns2", "s", "two", "IPv4", vec![ep(&["10.10.0.1"], None, None)], http_port()));
        assert_nxdomain(&ask("one.ns2.svc.cluster.local.", A).on(&zone));
        assert_eq!(ask("two.ns2.svc.cluster.local.", A).on(&zone).answers.len(), 1);
    }

    #[test]
    fn slices_arriving_before_their_service_count_once_it_arrives() {
        let zone = fixture();
        zone.apply_slice(&slice(
            "ns2",
            "early-1",
            "early",
            "IPv4",
            vec![ep(&["10.11.0.1"], Some("h"), None)],
            http_port(),
        ));
        assert_nxdomain(&ask("h.early.ns2.svc.cluster.local.", A).on(&zone));
        zone.apply_service(&headless("ns2", "early", http_port()));
        assert_eq!(ask("h.early.ns2.svc.cluster.local.", A).on(&zone).answers.len(), 1);
    }

    #[test]
    fn a_service_that_changes_kind_changes_its_answers() {
        let zone = fixture();
        zone.apply_service(&external("testns", "svc1", "elsewhere.example"));
        assert_eq!(
            answers(&ask("svc1.testns.svc.cluster.local.", CNAME).on(&zone)),
            ["svc1.testns.svc.cluster.local. 5 IN CNAME elsewhere.example."]
        );
        assert_nxdomain(&ask("_http._tcp.svc1.testns.svc.cluster.local.", SRV).on(&zone));
        assert_nxdomain(&ask("172-0-0-10.svc1.testns.svc.cluster.local.", A).on(&zone));
    }

    #[test]
    fn the_soa_serial_counts_changes() {
        let zone = fixture();
        let before = zone.serial();
        zone.apply_service(&cluster_ip("testns", "svc1", &["10.0.0.1"], http_port()));
        assert_eq!(zone.serial(), before, "re-applying an unchanged object changes nothing");
        zone.delete_service("testns", "svc1");
        assert_eq!(zone.serial(), before + 1);
    }

    /// Proportional work: a cluster-sized zone, then one Service's slice changes. The bound
    /// is loose (debug build, shared CI cores); a rebuild of the whole zone would take seconds.
    #[test]
    fn one_event_in_a_large_zone_is_cheap() {
        let zone = Zone::new(ZoneConfig::default()).unwrap();
        zone.mark_synced();
        for s in 0..2000u32 {
            let name = format!("s{s}");
            zone.apply_service(&headless("big", &name, http_port()));
            let eps =
                (0..10).map(|e| ep(&[&format!("10.{}.{}.{}", 100 + s / 256, s % 256, e + 1)], None, None)).collect();
            zone.apply_slice(&slice("big", &format!("{name}-1"), &name, "IPv4", eps, http_port()));
        }
        // Each headless Service holds its name, its SRV and its 10 endpoint names (endpoint
        // PTRs are built when asked for).
        assert!(zone.name_count() > 2000 * 11, "{}", zone.name_count());
        let start = std::time::Instant::now();
        zone.apply_slice(&slice("big", "s7-1", "s7", "IPv4", vec![ep(&["10.200.0.1"], None, None)], http_port()));
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(50), "one slice update took {took:?}");
        assert_eq!(
            answers(&ask("s7.big.svc.cluster.local.", A).on(&zone)),
            ["s7.big.svc.cluster.local. 5 IN A 10.200.0.1"]
        );
    }
}
