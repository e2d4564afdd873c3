//! Snapshot tests of the pure Endpoints reconcile: the seeds' `kubia` Service with named
//! ports, readiness flips between `addresses` and `notReadyAddresses`, repacking, the Service
//! going away, selector-less Services left alone, truncation.

#![allow(clippy::unwrap_used)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::fixtures::*;

fn inputs<'a>(svc: Option<&'a Service>, pods: &[&'a Pod], existing: Option<&'a Endpoints>) -> EndpointsInputs<'a> {
    EndpointsInputs { key: ObjectKey::new("default", "kubia"), service: svc, pods: pods.to_vec(), existing, now: now() }
}

/// `kubectl describe`-like rendering of the subsets of the written object.
fn render(writes: &[Write]) -> String {
    let mut out = String::new();
    for w in writes {
        out.push_str(&w.summary());
        out.push('\n');
        let Some(o) = w.object() else { continue };
        for ss in o["subsets"].as_array().into_iter().flatten() {
            let addrs = |f: &str| -> String {
                ss[f]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let mut s = format!(
                            "{}({})",
                            a["ip"].as_str().unwrap_or(""),
                            a["targetRef"]["name"].as_str().unwrap_or("")
                        );
                        if let Some(h) = a["hostname"].as_str() {
                            s.push_str(&format!(" hostname={h}"));
                        }
                        s
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let ports: Vec<String> = ss["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}:{}/{}",
                        p["name"].as_str().unwrap_or(""),
                        p["port"],
                        p["protocol"].as_str().unwrap_or("")
                    )
                })
                .collect();
            out.push_str(&format!(
                "  addresses=[{}] notReady=[{}] ports=[{}]\n",
                addrs("addresses"),
                addrs("notReadyAddresses"),
                ports.join(" ")
            ));
        }
    }
    out
}

fn stored(writes: &[Write]) -> Endpoints {
    as_stored::<Endpoints>(writes, Kind::Endpoints).pop().unwrap()
}

#[test]
fn kubia_endpoints_split_ready_and_not_ready() {
    let svc = kubia_service();
    let pods = [
        pod("kubia-5rvfq", "10.44.0.2", true, "server02"),
        pod("kubia-8cgnm", "10.44.0.1", true, "server02"),
        pod("kubia-8kv8d", "10.44.0.3", false, "server02"),
    ];
    let p: Vec<&Pod> = pods.iter().collect();
    let writes = reconcile_endpoints(&inputs(Some(&svc), &p, None));
    assert_eq!(
        render(&writes),
        "create Endpoints default/kubia\n\
         \x20 addresses=[10.44.0.1(kubia-8cgnm) 10.44.0.2(kubia-5rvfq)] notReady=[10.44.0.3(kubia-8kv8d)] ports=[http:8080/TCP https:8443/TCP]\n"
    );
    let o = object(&writes, 0);
    assert_eq!(o["metadata"]["labels"]["endpoints.kubernetes.io/managed-by"], "endpoint-controller");
    assert_eq!(
        o["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"],
        "2023-12-31T23:50:00Z"
    );
    assert_eq!(o["subsets"][0]["addresses"][0]["nodeName"], "server02");
    assert_eq!(o["subsets"][0]["addresses"][0]["targetRef"]["kind"], "Pod");
    // Idempotent.
    let ep = stored(&writes);
    assert!(reconcile_endpoints(&inputs(Some(&svc), &p, Some(&ep))).is_empty());

    // Readiness flips move the addresses across.
    let flipped = [
        pod("kubia-5rvfq", "10.44.0.2", false, "server02"),
        pod("kubia-8cgnm", "10.44.0.1", true, "server02"),
        pod("kubia-8kv8d", "10.44.0.3", true, "server02"),
    ];
    let f: Vec<&Pod> = flipped.iter().collect();
    let writes = reconcile_endpoints(&inputs(Some(&svc), &f, Some(&ep)));
    assert_eq!(
        render(&writes),
        "update Endpoints default/kubia\n\
         \x20 addresses=[10.44.0.1(kubia-8cgnm) 10.44.0.3(kubia-8kv8d)] notReady=[10.44.0.2(kubia-5rvfq)] ports=[http:8080/TCP https:8443/TCP]\n"
    );
}

#[test]
fn pods_resolving_named_ports_differently_get_separate_subsets() {
    let svc = kubia_service();
    let mut plain = pod("kubia-plain", "10.44.0.9", true, "n1");
    plain.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap().truncate(1);
    let pods = [pod("kubia-full", "10.44.0.1", true, "n1"), plain];
    let p: Vec<&Pod> = pods.iter().collect();
    assert_eq!(
        render(&reconcile_endpoints(&inputs(Some(&svc), &p, None))),
        "create Endpoints default/kubia\n\
         \x20 addresses=[10.44.0.1(kubia-full) 10.44.0.9(kubia-plain)] notReady=[] ports=[http:8080/TCP]\n\
         \x20 addresses=[10.44.0.1(kubia-full)] notReady=[] ports=[https:8443/TCP]\n"
    );
}

#[test]
fn terminating_pods_leave_unless_not_ready_addresses_are_published() {
    let mut svc = kubia_service();
    let mut leaving = pod("kubia-a", "10.44.0.1", true, "n1");
    leaving.metadata.deletion_timestamp = Some(Time(now()));
    let pods = [leaving, pod("kubia-b", "10.44.0.2", false, "n1")];
    let p: Vec<&Pod> = pods.iter().collect();
    assert_eq!(
        render(&reconcile_endpoints(&inputs(Some(&svc), &p, None))),
        "create Endpoints default/kubia\n  addresses=[] notReady=[10.44.0.2(kubia-b)] ports=[http:8080/TCP https:8443/TCP]\n"
    );
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    assert_eq!(
        render(&reconcile_endpoints(&inputs(Some(&svc), &p, None))),
        "create Endpoints default/kubia\n  addresses=[10.44.0.1(kubia-a) 10.44.0.2(kubia-b)] notReady=[] ports=[http:8080/TCP https:8443/TCP]\n"
    );
}

#[test]
fn no_pods_still_give_an_empty_endpoints() {
    let svc = kubia_service();
    let writes = reconcile_endpoints(&inputs(Some(&svc), &[], None));
    assert_eq!(render(&writes), "create Endpoints default/kubia\n");
    assert_eq!(object(&writes, 0)["subsets"], serde_json::json!([]));
}

#[test]
fn the_service_going_deletes_only_managed_endpoints() {
    let svc = kubia_service();
    let ep = stored(&reconcile_endpoints(&inputs(Some(&svc), &[], None)));
    assert_eq!(summaries(&reconcile_endpoints(&inputs(None, &[], Some(&ep)))), vec!["delete Endpoints default/kubia"]);
    let mut users = ep.clone();
    users.metadata.labels = None;
    assert!(reconcile_endpoints(&inputs(None, &[], Some(&users))).is_empty());
}

#[test]
fn selectorless_services_keep_their_hand_written_endpoints() {
    let mut svc = kubia_service();
    svc.spec.as_mut().unwrap().selector = None;
    let users = Endpoints { metadata: meta("default", "kubia"), subsets: None };
    let pods = [pod("kubia-a", "10.44.0.1", true, "n1")];
    let p: Vec<&Pod> = pods.iter().collect();
    assert!(reconcile_endpoints(&inputs(Some(&svc), &p, Some(&users))).is_empty());
    assert!(reconcile_endpoints(&inputs(Some(&svc), &p, None)).is_empty());
}

#[test]
fn headless_without_ports_lists_addresses_with_hostnames() {
    let mut svc = kubia_service();
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("None".into());
    spec.ports = None;
    let mut p0 = pod("kubia-0", "10.44.0.1", true, "n1");
    p0.spec.as_mut().unwrap().hostname = Some("web-0".into());
    p0.spec.as_mut().unwrap().subdomain = Some("kubia".into());
    let pods = [p0];
    let p: Vec<&Pod> = pods.iter().collect();
    let writes = reconcile_endpoints(&inputs(Some(&svc), &p, None));
    assert_eq!(
        render(&writes),
        "create Endpoints default/kubia\n  addresses=[10.44.0.1(kubia-0) hostname=web-0] notReady=[] ports=[]\n"
    );
    assert_eq!(object(&writes, 0)["metadata"]["labels"]["service.kubernetes.io/headless"], "");
}

#[test]
fn service_labels_are_copied_and_changes_rewrite() {
    let mut svc = kubia_service();
    let ep = stored(&reconcile_endpoints(&inputs(Some(&svc), &[], None)));
    svc.metadata.labels = Some(labels(&[("app", "kubia")]));
    let writes = reconcile_endpoints(&inputs(Some(&svc), &[], Some(&ep)));
    assert_eq!(summaries(&writes), vec!["update Endpoints default/kubia"]);
    assert_eq!(object(&writes, 0)["metadata"]["labels"]["app"], "kubia");
}

#[test]
fn more_than_a_thousand_addresses_are_truncated_and_annotated() {
    let svc = kubia_service();
    let pods: Vec<Pod> =
        (0..1005).map(|i| pod(&format!("p{i:04}"), &format!("10.1.{}.{}", i / 250, i % 250 + 1), true, "n1")).collect();
    let p: Vec<&Pod> = pods.iter().collect();
    let writes = reconcile_endpoints(&inputs(Some(&svc), &p, None));
    let o = object(&writes, 0);
    assert_eq!(o["subsets"][0]["addresses"].as_array().unwrap().len(), 1000);
    assert_eq!(o["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"], "truncated");
}

#[test]
fn repacking_merges_subsets_and_not_ready_wins() {
    let a = |ip: &str| EndpointAddress { ip: ip.into(), ..Default::default() };
    let port = |n: &str, p: i32| EndpointPort {
        name: Some(n.into()),
        port: p,
        protocol: Some("TCP".into()),
        app_protocol: None,
    };
    let subsets = vec![
        EndpointSubset { addresses: Some(vec![a("10.0.0.2")]), ports: Some(vec![port("a", 1)]), ..Default::default() },
        EndpointSubset { addresses: Some(vec![a("10.0.0.1")]), ports: Some(vec![port("a", 1)]), ..Default::default() },
        EndpointSubset { addresses: Some(vec![a("10.0.0.1")]), ports: Some(vec![port("b", 2)]), ..Default::default() },
        EndpointSubset {
            not_ready_addresses: Some(vec![a("10.0.0.2")]),
            ports: Some(vec![port("b", 2)]),
            ..Default::default()
        },
    ];
    let packed = repack_subsets(&subsets);
    let shown: Vec<String> = packed.iter().map(|s| objects::to_value(s).to_string()).collect();
    assert_eq!(
        shown,
        vec![
            r#"{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"name":"a","port":1,"protocol":"TCP"}]}"#,
            r#"{"addresses":[{"ip":"10.0.0.1"}],"notReadyAddresses":[{"ip":"10.0.0.2"}],"ports":[{"name":"b","port":2,"protocol":"TCP"}]}"#,
        ]
    );
}
