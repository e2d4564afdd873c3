//! The pool reconcile: stable assignments, requested addresses, exhaustion, release.

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::reconcile_pool;
use crate::objects::ObjectKey;

fn lb(name: &str, created: &str, requested: Option<&str>, current: Option<&str>) -> Service {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    });
    if let Some(r) = requested {
        v["spec"]["loadBalancerIP"] = json!(r);
    }
    if let Some(c) = current {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": c, "ipMode": "VIP"}]}});
    }
    serde_json::from_value(v).expect("valid service")
}

fn pool() -> Vec<ipnet::Ipv4Net> {
    vec!["198.51.100.200/30".parse().expect("cidr")]
}

fn key(n: &str) -> ObjectKey {
    ObjectKey::new("default", n)
}

#[test]
fn addresses_are_handed_out_in_order_and_kept() {
    let a = lb("a", "2026-01-01T00:00:00Z", None, None);
    let b = lb("b", "2026-01-01T00:00:01Z", None, None);
    let got = reconcile_pool(&pool(), &[&b, &a]);
    assert_eq!(
        got,
        vec![
            (key("a"), Some("198.51.100.201".parse().expect("ip"))),
            (key("b"), Some("198.51.100.202".parse().expect("ip")))
        ]
    );
    let a = lb("a", "2026-01-01T00:00:00Z", None, Some("198.51.100.201"));
    let b = lb("b", "2026-01-01T00:00:01Z", None, Some("198.51.100.202"));
    assert!(reconcile_pool(&pool(), &[&a, &b]).is_empty(), "a second run changes nothing");
}

#[test]
fn a_requested_address_is_honoured_when_free() {
    let a = lb("a", "2026-01-01T00:00:00Z", Some("198.51.100.202"), None);
    let b = lb("b", "2026-01-01T00:00:01Z", Some("198.51.100.202"), None);
    let got = reconcile_pool(&pool(), &[&a, &b]);
    assert_eq!(got, vec![(key("a"), Some("198.51.100.202".parse().expect("ip")))], "b stays pending");
    let outside = lb("c", "2026-01-01T00:00:00Z", Some("203.0.113.9"), None);
    assert!(reconcile_pool(&pool(), &[&outside]).is_empty(), "outside the pool: pending");
}

#[test]
fn an_exhausted_pool_leaves_services_pending_and_releases_on_type_change() {
    let svcs: Vec<Service> =
        (0..3).map(|i| lb(&format!("s{i}"), &format!("2026-01-01T00:00:0{i}Z"), None, None)).collect();
    let refs: Vec<&Service> = svcs.iter().collect();
    let got = reconcile_pool(&pool(), &refs);
    assert_eq!(got.len(), 2, "a /30 has two host addresses: {got:?}");
    let mut was_lb = lb("a", "2026-01-01T00:00:00Z", None, Some("198.51.100.201"));
    was_lb.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
    assert_eq!(reconcile_pool(&pool(), &[&was_lb]), vec![(key("a"), None)]);
}
