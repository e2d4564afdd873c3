//! Snapshot tests of the compiler and the nftables renderer: Service + EndpointSlices in,
//! exact ruleset text out.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pier_proxy::nft::render::{delta_script, full_script, render_service};
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

#[test]
fn two_endpoints_render_a_slot_pick_and_their_slots() {
    let s = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let o = render_service(&compile_service(&kubia(), &[&s], &node()), &node(), &mut |_| 7);
    let text = format!("{:#?}", (&o.chains, &o.elements));
    let expected = r#"(
    {
        "service-TOFPQTM7-default/kubia/tcp/http": [
            "ip daddr 10.96.0.20 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
            "ct mark set numgen random mod 2 offset 28672 goto endpoint-dnat comment \"default/kubia:http\"",
        ],
    },
    {
        (
            "cluster-ips",
            "10.96.0.20",
        ): "",
        (
            "endpoints",
            "28672",
        ): "10.244.0.5 . 8080",
        (
            "endpoints",
            "28673",
        ): "10.244.0.6 . 8080",
        (
            "service-ips",
            "10.96.0.20 . tcp . 80",
        ): "goto service-TOFPQTM7-default/kubia/tcp/http",
    },
)"#;
    assert_eq!(text, expected);
}

#[test]
fn no_endpoints_reject() {
    let o = render_service(&compile_service(&kubia(), &[], &node()), &node(), &mut |_| 7);
    assert!(o.chains.is_empty());
    assert_eq!(
        o.elements.get(&("no-endpoint-services", "10.96.0.20 . tcp . 80".to_string())).map(String::as_str),
        Some("goto reject-chain")
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
    let o = render_service(&compile_service(&s, &[&sl], &node()), &node(), &mut |_| 7);
    let ext = o.chains.iter().find(|(k, _)| k.starts_with("external-")).unwrap();
    assert_eq!(
        ext.1,
        &vec![
            "ip saddr 10.244.0.0/16 goto service-XZFP2VJM-default/kubia-nodeport/tcp/".to_string(),
            "fib saddr type local jump mark-for-masquerade".to_string(),
            "fib saddr type local goto service-XZFP2VJM-default/kubia-nodeport/tcp/".to_string(),
            format!(
                "goto {} comment \"default/kubia-nodeport\"",
                o.chains.keys().find(|k| k.starts_with("local-")).unwrap()
            ),
        ]
    );
    let local = o.chains.iter().find(|(k, _)| k.starts_with("local-")).unwrap();
    assert!(local.1[1].contains("dnat ip to 10.244.0.5:8080"), "{local:?}");
    assert!(o.elements.contains_key(&("service-nodeports", "tcp . 30123".to_string())));
}

#[test]
fn affinity_gets_per_endpoint_chains_and_sets() {
    let mut s = kubia();
    s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let sl = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let o = render_service(&compile_service(&s, &[&sl], &node()), &node(), &mut |_| 7);
    assert_eq!(o.sets.len(), 2);
    assert!(o.sets.values().all(|d| d.contains("timeout 10800s")));
    assert_eq!(o.chains.keys().filter(|k| k.starts_with("endpoint-")).count(), 2);
    let svc_chain = o.chains.iter().find(|(k, _)| k.starts_with("service-")).unwrap().1;
    assert_eq!(svc_chain.len(), 4, "{svc_chain:#?}");
    assert!(svc_chain[3].starts_with("numgen random mod 2 vmap"));
}

#[test]
fn delta_touches_only_what_changed() {
    let one = kubia_slice(&[("10.244.0.5", true, true, false)]);
    let two = kubia_slice(&[("10.244.0.5", true, true, false), ("10.244.0.6", true, true, false)]);
    let a = render_service(&compile_service(&kubia(), &[&one], &node()), &node(), &mut |_| 7);
    let b = render_service(&compile_service(&kubia(), &[&two], &node()), &node(), &mut |_| 7);
    let script = delta_script(&a, &b, &["10.244.0.6".parse().unwrap()], &[]);
    assert_eq!(
        script,
        "flush chain ip pier service-TOFPQTM7-default/kubia/tcp/http\n\
         add rule ip pier service-TOFPQTM7-default/kubia/tcp/http ip daddr 10.96.0.20 ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n\
         add rule ip pier service-TOFPQTM7-default/kubia/tcp/http ct mark set numgen random mod 2 offset 28672 goto endpoint-dnat comment \"default/kubia:http\"\n\
         add element ip pier endpoints { 28672 : 10.244.0.5 . 8080 }\n\
         add element ip pier endpoints { 28673 : 10.244.0.6 . 8080 }\n\
         add element ip pier hairpin-endpoints { 10.244.0.6 . 10.244.0.6 }\n"
    );
    // Gone entirely.
    let gone = delta_script(&b, &Default::default(), &[], &["10.244.0.5".parse().unwrap()]);
    assert!(gone.contains("delete element ip pier service-ips { 10.96.0.20 . tcp . 80 }"), "{gone}");
    assert!(gone.ends_with("delete chain ip pier service-TOFPQTM7-default/kubia/tcp/http\n"), "{gone}");
    assert!(delta_script(&b, &b, &[], &[]).is_empty());
    let _ = full_script(&node(), [&a, &b]);
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
