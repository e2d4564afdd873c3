//! Fuzz target: arbitrary packets to the cluster DNS answerer, over UDP (with a size chosen by
//! the input) and TCP, against a zone with every kind of Service. Run with
//! `cargo +nightly fuzz run dns_answer` from `fuzz/`.

#![no_main]

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;
use pier_dns::{Answer, Transport, Zone, ZoneConfig};
use serde_json::json;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let zone = Zone::new(ZoneConfig { nameservers: vec!["10.96.0.10".parse().unwrap()], ..ZoneConfig::default() })
            .unwrap();
        let svc = |name: &str, spec: serde_json::Value| -> Service {
            serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec})).unwrap()
        };
        let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
        zone.apply_service(&svc("c", json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1", "fd00::1"], "ports": ports})));
        zone.apply_service(&svc("h", json!({"clusterIP": "None", "ports": ports})));
        zone.apply_service(&svc("x", json!({"type": "ExternalName", "externalName": "c.ns.svc.cluster.local"})));
        zone.apply_service(&svc("y", json!({"type": "ExternalName", "externalName": "example.com"})));
        let endpoints: Vec<_> =
            (1..=40).map(|i| json!({"addresses": [format!("10.1.0.{i}")], "hostname": format!("h{i}")})).collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "h-1", "labels": {"kubernetes.io/service-name": "h"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        }))
        .unwrap();
        zone.apply_slice(&slice);
        zone.mark_synced();
        zone
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, packet)) = data.split_first() else { return };
    for transport in [Transport::Udp { max_payload: u16::from(size) * 8 }, Transport::Tcp] {
        let limit = match transport {
            Transport::Udp { max_payload } => usize::from(max_payload).max(512),
            Transport::Tcp => 65_535,
        };
        match pier_dns::answer(zone(), packet, transport) {
            Answer::Reply(r) | Answer::Resolve { partial: r, .. } => {
                assert!(r.len() >= 12 && r.len() <= limit);
                assert_eq!(r[..2], packet[..2]);
                hickory_proto::op::Message::from_vec(&r).expect("replies decode");
            }
            Answer::Forward | Answer::Drop => {}
        }
    }
});
