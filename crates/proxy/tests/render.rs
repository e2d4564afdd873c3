//! Snapshot tests of the compiler and the nftables renderer: Service + EndpointSlices in,
//! exact ruleset text out.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pier_proxy::nft::render::{ServiceObjects, delta_script, full_script, render_service};
use pier_proxy::table::{NodeContext, compile_service};
use serde_json::json;

fn node() -> NodeContext {
    NodeContext { name: "pier-node".into(), pod_cidr: "10.244.0.0/16".parse().unwrap(), served_locally: Vec::new() }
}

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}

fn kubia() -> Service {
    svc(json!({
        "metadata": {"name": "kubia", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    }))
}

fn kubia_slice(eps: &[(&str, bool, bool, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            json!({
                "addresses": [ip], "nodeName": "pier-node",
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating}
            })
        })
        .collect();
    slice(json!({
        "metadata": {"name": "kubia-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubia"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
}

#[test]
fn ready_endpoints_win_over_terminating_ones() {
    let s = kubia_slice(&[
        ("10.244.0.5", true, true, false),
        ("10.244.0.6", false, true, true),
        ("10.244.0.7", false, false, false),
    ]);
    let ports = compile_service(&kubia(), &[&s], &node());
    assert_eq!(ports.len(), 1);
    let eps: Vec<String> = ports[0].cluster_endpoints.iter().map(|b| b.to_string()).collect();
    assert_eq!(eps, ["10.244.0.5:8080"]);
}

#[test]
fn serving_terminating_endpoints_are_the_fallback() {
    let s = kubia_slice(&[("10.244.0.6", false, true, true), ("10.244.0.7", false, false, true)]);
    let ports = compile_service(&kubia(), &[&s], &node());
    let eps: Vec<String> = ports[0].cluster_endpoints.iter().map(|b| b.to_string()).collect();
    assert_eq!(eps, ["10.244.0.6:8080"]);
}

#[test]
fn skipped_services_compile_to_nothing() {
    let mut headless = kubia();
    headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    headless.spec.as_mut().unwrap().cluster_ips = Some(vec!["None".into()]);
    assert!(compile_service(&headless, &[], &node()).is_empty());
    let mut other = kubia();
    other.metadata.labels = Some([("service.kubernetes.io/service-proxy-name".to_string(), "x".to_string())].into());
    assert!(compile_service(&other, &[], &node()).is_empty());
}

/// One line per element: `set: key [comment "…"] [: value]`.
fn elements(o: &ServiceObjects) -> String {
    let mut out = String::new();
    for ((set, key), e) in &o.elements {
        out.push_str(&format!("{set}: {key}"));
        if let Some(c) = &e.comment {
            out.push_str(&format!(" comment \"{c}\""));
        }
        if !e.value.is_empty() {
            out.push_str(&format!(" : {}", e.value));
        }
        out.push('\n');
    }
    out
}

#[test]
fn two_endpoints_are_an_endpoint_set_and_nothing_else() {
    let s = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let o = render_service(&compile_service(&kubia(), &[&s], &node()), &mut |_| 7);
    assert!(o.chains.is_empty() && o.sets.is_empty(), "{o:#?}");
    assert_eq!(o.classes.iter().copied().collect::<Vec<_>>(), [2]);
    // Endpoint set 7 of class 2: 2 << 19 | 7.
    assert_eq!(
        elements(&o),
        "cluster-ips: 10.96.0.20\n\
         endpoints: 0x00100007 . 0 : 10.244.0.5 . 8080\n\
         endpoints: 0x00100007 . 1 : 10.244.0.6 . 8080\n\
         service-ips: 10.96.0.20 . tcp . 80 comment \"default/kubia:http\" : 0x00100007\n"
    );
}

#[test]
fn no_endpoints_reject() {
    let o = render_service(&compile_service(&kubia(), &[], &node()), &mut |_| 7);
    assert!(o.chains.is_empty());
    assert_eq!(
        elements(&o),
        "cluster-ips: 10.96.0.20\n\
         no-endpoint-services: 10.96.0.20 . tcp . 80 comment \"default/kubia:http\"\n"
    );
}

#[test]
fn internal_local_with_endpoints_elsewhere_drops() {
    let mut s = kubia();
    s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let mut sl = kubia_slice(&[("10.244.1.5", true, true, false)]);
    sl.endpoints[0].node_name = Some("other".into());
    let o = render_service(&compile_service(&s, &[&sl], &node()), &mut |_| 7);
    assert_eq!(
        elements(&o),
        "cluster-ips: 10.96.0.20\n\
         no-local-endpoint-services: 10.96.0.20 . tcp . 80 comment \"default/kubia:http\"\n"
    );
}

#[test]
fn a_node_port_service_with_local_policy() {
    let s = svc(json!({
        "metadata": {"name": "kubia-nodeport", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.30", "type": "NodePort", "externalTrafficPolicy": "Local",
                 "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30123, "protocol": "TCP"}]}
    }));
    let sl = slice(json!({
        "metadata": {"name": "kubia-nodeport-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubia-nodeport"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": "pier-node"}, {"addresses": ["10.244.1.5"], "nodeName": "other"}]
    }));
    let mut next = 0;
    let o = render_service(&compile_service(&s, &[&sl], &node()), &mut |_| {
        next += 1;
        next
    });
    // Set 1: every endpoint (cluster IP, and pods and the node on the node port); set 2: this
    // node's (the node port from outside, which keeps its source). The node port's value
    // carries externalTrafficPolicy Local (bit 31).
    assert_eq!(
        elements(&o),
        "cluster-ips: 10.96.0.30\n\
         endpoints: 0x00080002 . 0 : 10.244.0.5 . 8080\n\
         endpoints: 0x00100001 . 0 : 10.244.0.5 . 8080\n\
         endpoints: 0x00100001 . 1 : 10.244.1.5 . 8080\n\
         local-endpoint-sets: 0x00100001 : 0x00080002\n\
         service-ips: 10.96.0.30 . tcp . 80 comment \"default/kubia-nodeport\" : 0x00100001\n\
         service-nodeports: tcp . 30123 comment \"default/kubia-nodeport\" : 0x80100001\n"
    );
    assert_eq!(o.hairpin.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(), ["10.244.0.5"]);
}

#[test]
fn affinity_gets_per_endpoint_chains_and_sets() {
    let mut s = kubia();
    s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let sl = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let o = render_service(&compile_service(&s, &[&sl], &node()), &mut |_| 7);
    assert_eq!(o.sets.len(), 2);
    assert!(o.sets.values().all(|d| d.contains("timeout 10800s")));
    assert_eq!(o.chains.keys().filter(|k| k.starts_with("endpoint-")).count(), 2);
    let svc_chain = o.chains.iter().find(|(k, _)| k.starts_with("service-")).unwrap().1;
    assert_eq!(svc_chain.len(), 3, "{svc_chain:#?}");
    assert!(svc_chain[2].starts_with("numgen random mod 2 vmap"));
    // Class 0: picked by the Service's own chain, through `session-affinity`.
    assert_eq!(
        elements(&o),
        "cluster-ips: 10.96.0.20\n\
         service-ips: 10.96.0.20 . tcp . 80 comment \"default/kubia:http\" : 0x00000007\n\
         session-affinity: 0x00000007 : goto service-TOFPQTM7-default/kubia/tcp/http\n"
    );
}

#[test]
fn delta_touches_only_what_changed() {
    let one = kubia_slice(&[("10.244.0.5", true, true, false)]);
    let two = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let a = render_service(&compile_service(&kubia(), &[&one], &node()), &mut |_| 7);
    let b = render_service(&compile_service(&kubia(), &[&two], &node()), &mut |_| 7);
    let script = delta_script(&a, &b, &["10.244.0.6".parse().unwrap()], &[]);
    // The endpoint count is part of the set's reference: a second endpoint moves the set.
    assert_eq!(
        script,
        "delete element ip pier endpoints { 0x00080007 . 0 }\n\
         delete element ip pier service-ips { 10.96.0.20 . tcp . 80 }\n\
         add element ip pier endpoints { 0x00100007 . 0 : 10.244.0.5 . 8080, 0x00100007 . 1 : 10.244.0.6 . 8080 }\n\
         add element ip pier hairpin-endpoints { 10.244.0.6 . 10.244.0.6 }\n\
         add element ip pier service-ips { 10.96.0.20 . tcp . 80 comment \"default/kubia:http\" : 0x00100007 }\n"
    );
    // Gone entirely.
    let gone = delta_script(&b, &Default::default(), &[], &["10.244.0.5".parse().unwrap()]);
    assert_eq!(
        gone,
        "delete element ip pier cluster-ips { 10.96.0.20 }\n\
         delete element ip pier endpoints { 0x00100007 . 0, 0x00100007 . 1 }\n\
         delete element ip pier hairpin-endpoints { 10.244.0.5 . 10.244.0.5 }\n\
         delete element ip pier service-ips { 10.96.0.20 . tcp . 80 }\n"
    );
    assert!(delta_script(&b, &b, &[], &[]).is_empty());
}

#[test]
fn the_fixed_chains() {
    let script = full_script(&node(), []);
    let chain = |name: &str| {
        let start = script.find(&format!("\tchain {name} {{")).unwrap();
        let len = script[start..].find('\n').unwrap();
        let line = &script[start..start + len];
        if line.ends_with('{') {
            let end = script[start..].find("\n\t}\n").unwrap();
            script[start..start + end].to_string()
        } else {
            line.to_string()
        }
    };
    let got: Vec<String> =
        ["services", "cluster-ip", "external", "external-local", "endpoint-pick", "cluster-ips-check"]
            .iter()
            .map(|c| chain(c))
            .collect();
    assert_eq!(
        got.join("\n"),
        "\tchain services {
\t\tct mark set ip daddr . meta l4proto . th dport map @service-ips goto cluster-ip
\t\tct mark set ip daddr . meta l4proto . th dport map @external-ips goto external
\t\tfib daddr type local ip daddr != 127.0.0.0/8 ct mark set meta l4proto . th dport map @service-nodeports goto external
\tchain cluster-ip {
\t\tip saddr != 10.244.0.0/16 jump mark-for-masquerade
\t\tgoto endpoint-pick
\tchain external {
\t\tct mark & 0x80000000 == 0x80000000 goto external-local
\t\tjump mark-for-masquerade
\t\tgoto endpoint-pick
\tchain external-local {
\t\tct mark set ct mark & 0x7fffffff
\t\tip saddr 10.244.0.0/16 goto endpoint-pick
\t\tfib saddr type local jump mark-for-masquerade
\t\tfib saddr type local goto endpoint-pick
\t\tct mark set ct mark map @local-endpoint-sets goto endpoint-pick
\t\tdrop comment \"no endpoint on this node\"
\tchain endpoint-pick {
\t\tct mark & 0x7ff80000 vmap @endpoint-classes
\t\tct mark vmap @session-affinity
\tchain cluster-ips-check {
\t\tip daddr @cluster-ips meta l4proto { tcp, udp, sctp } reject comment \"Reject traffic to invalid ports of ClusterIPs\"
\t\tip daddr @cluster-ips drop comment \"Drop other protocols to ClusterIPs\""
    );
    assert!(script.contains(
        "add rule ip pier pick-3 meta l4proto { tcp, udp, sctp } dnat ip to ct mark . numgen random mod 3 map @endpoints\n"
    ));
    assert!(script.contains(
        "map endpoints { typeof ct mark . numgen random mod 2 : ip daddr . th dport; size 8192; comment \"Endpoints: endpoint set reference . index -> address . port\"; }"
    ));
    assert!(
        script.contains("add element ip pier endpoint-classes { 0x00080000 : goto pick-1, 0x00100000 : goto pick-2,")
    );
}

#[test]
fn udp_entries_are_flushed_for_gone_endpoints_and_first_endpoints() {
    use pier_proxy::nft::conntrack::{Flush, stale};
    let dns = svc(json!({
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
    }));
    let sl = |ips: &[&str]| {
        let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        slice(json!({
            "metadata": {"name": "dns-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4", "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}], "endpoints": eps
        }))
    };
    let none = compile_service(&dns, &[], &node());
    let two = compile_service(&dns, &[&sl(&["10.244.0.5", "10.244.0.6"])], &node());
    let one = compile_service(&dns, &[&sl(&["10.244.0.6"])], &node());
    let vip = Some("10.96.0.53".parse().unwrap());
    assert_eq!(stale(&none, &two), vec![Flush { dest: vip, port: 53, endpoint: None }]);
    assert_eq!(stale(&two, &one), vec![Flush { dest: vip, port: 53, endpoint: Some("10.244.0.5".parse().unwrap()) }]);
    assert!(stale(&one, &one).is_empty());
}

/// A full sync de-duplicates frontends by their packed keys: packing is one-to-one on the keys
/// the renderer writes, and a key that does not pack is still compared as text.
#[test]
fn claimed_frontend_keys_pack_one_to_one() {
    use pier_proxy::nft::render::{Claimed, EXTERNAL_IPS, SERVICE_IPS, SERVICE_NODEPORTS, pack_key};
    let keys = [
        "10.96.0.1 . tcp . 80",
        "10.96.0.1 . udp . 80",
        "10.96.0.1 . tcp . 8080",
        "10.96.0.2 . tcp . 80",
        "0.0.0.0 . tcp . 0",
        "tcp . 30123",
        "udp . 30123",
        "0x00080001",
        "0x80080001",
        "10.96.0.1",
        "10.96.0.1 . tcp",
    ];
    let packed: Vec<u64> = keys.iter().map(|k| pack_key(k).unwrap_or_else(|| panic!("{k} packs"))).collect();
    let distinct: std::collections::BTreeSet<u64> = packed.iter().copied().collect();
    assert_eq!(distinct.len(), keys.len(), "{packed:x?}");
    assert_eq!(pack_key("10.96.0.1 . tcp . 80"), pack_key("10.96.0.1 . tcp . 80"));
    // Too wide, or not a key of these sets: kept as text.
    assert_eq!(pack_key("10.0.0.1 . 10.0.0.2"), None);
    assert_eq!(pack_key("10.96.0.1 . icmp . 80"), None);
    assert_eq!(pack_key("tcp . 70000"), None);

    let mut c = Claimed::default();
    assert!(c.claim(SERVICE_IPS, "10.96.0.1 . tcp . 80"));
    assert!(!c.claim(SERVICE_IPS, "10.96.0.1 . tcp . 80"), "taken");
    assert!(c.claim(EXTERNAL_IPS, "10.96.0.1 . tcp . 80"), "another set");
    assert!(c.claim(SERVICE_NODEPORTS, "tcp . 30123"));
    assert!(c.claim(SERVICE_IPS, "10.96.0.1 . icmp . 80"));
    assert!(!c.claim(SERVICE_IPS, "10.96.0.1 . icmp . 80"), "taken, as text");
    assert_eq!(c.len(), 4);
}

/// A generational replace rewrites exactly the base table's chains in place and renames
/// everything else: the list of fixed chains is the base table's.
#[test]
fn the_fixed_chains_are_the_base_tables() {
    use pier_proxy::nft::render::{self, FIXED_CHAINS};
    let base = render::base(&node(), &render::Counts::new());
    let mut chains: Vec<&str> = base.chains.iter().map(|c| c.name.as_str()).collect();
    let mut fixed = FIXED_CHAINS.to_vec();
    chains.sort_unstable();
    fixed.sort_unstable();
    assert_eq!(chains, fixed);
    assert_eq!(render::chain_in("services", 1), "services");
    assert_eq!(render::chain_in(&render::class_chain(3), 1), "pick-3-g1");
    assert_eq!(render::set_in(render::SERVICE_IPS, 1), "service-ips-g1");
    assert_eq!(render::set_in(render::SERVICE_IPS, 0), "service-ips");
    assert_eq!(render::set_in("__map%d", 1), "__map%d");
}
