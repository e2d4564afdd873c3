//! Snapshot tests of the pure EndpointSlice and mirroring reconciles, including the seeds'
//! `kubia` ReplicaSet behind a Service with `targetPort: http`, readiness flips, 250 pods in 3
//! slices and the selector-less `external-service` with hand-written Endpoints.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::mirroring::{MirrorInputs, reconcile_mirrored_slices};
use super::*;
use crate::fixtures::*;

fn inputs<'a>(svc: &'a Service, pods: &[&'a Pod], nodes: &[&'a Node], slices: &[&'a EndpointSlice]) -> SliceInputs<'a> {
    SliceInputs {
        service: svc,
        pods: pods.to_vec(),
        nodes: nodes.to_vec(),
        slices: slices.to_vec(),
        max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        now: now(),
    }
}

/// A compact rendering of a slice write: summary, address type, ports, endpoints.
fn render(writes: &[Write]) -> String {
    let mut out = String::new();
    for w in writes {
        out.push_str(&w.summary());
        out.push('\n');
        let Some(o) = w.object() else { continue };
        let ports: Vec<String> = o["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!("{}:{}/{}", p["name"].as_str().unwrap_or(""), p["port"], p["protocol"].as_str().unwrap_or(""))
            })
            .collect();
        out.push_str(&format!("  {} ports=[{}]\n", o["addressType"].as_str().unwrap_or(""), ports.join(" ")));
        for e in o["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            let mut line = format!(
                "  - {} {} ready={} serving={} terminating={}",
                e["addresses"][0].as_str().unwrap_or(""),
                e["targetRef"]["name"].as_str().unwrap_or(""),
                c["ready"],
                c["serving"],
                c["terminating"]
            );
            for f in ["nodeName", "hostname", "zone"] {
                if let Some(v) = e[f].as_str() {
                    line.push_str(&format!(" {f}={v}"));
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn kubia_pods() -> Vec<Pod> {
    vec![
        pod("kubia-5rvfq", "10.44.0.2", true, "server02"),
        pod("kubia-8cgnm", "10.44.0.1", true, "server02"),
        pod("kubia-8kv8d", "10.44.0.3", false, "server02"),
    ]
}

fn refs<T>(v: &[T]) -> Vec<&T> {
    v.iter().collect()
}

#[test]
fn kubia_named_ports_give_one_slice() {
    let svc = kubia_service();
    let pods = kubia_pods();
    let nodes = [node("server02", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/kubia-\n\
         \x20 IPv4 ports=[http:8080/TCP https:8443/TCP]\n\
         \x20 - 10.44.0.1 kubia-8cgnm ready=true serving=true terminating=false nodeName=server02\n\
         \x20 - 10.44.0.2 kubia-5rvfq ready=true serving=true terminating=false nodeName=server02\n\
         \x20 - 10.44.0.3 kubia-8kv8d ready=false serving=false terminating=false nodeName=server02\n"
    );
    let o = object(&writes, 0);
    assert_eq!(o["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(o["metadata"]["generateName"], "kubia-");
    assert_eq!(o["metadata"]["labels"]["kubernetes.io/service-name"], "kubia");
    assert_eq!(o["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert!(o["metadata"]["labels"].get("service.kubernetes.io/headless").is_none());
    let owner = &o["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].as_str()),
        (Some("Service"), Some("kubia"), Some("uid-kubia"))
    );
    assert_eq!((owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some(true), Some(true)));
    assert_eq!(o["endpoints"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(o["endpoints"][0]["targetRef"]["uid"], "uid-kubia-8cgnm");
    assert!(o["endpoints"][0].get("zone").is_none());
    assert_eq!(
        o["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"],
        "2023-12-31T23:50:00Z"
    );
}

#[test]
fn reconciling_the_result_again_writes_nothing() {
    let svc = kubia_service();
    let pods = kubia_pods();
    let nodes = [node("server02", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    let stored: Vec<EndpointSlice> = as_stored(&writes, Kind::EndpointSlice);
    let again = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&stored)));
    assert_eq!(summaries(&again), Vec::<String>::new());
}

#[test]
fn readiness_flip_updates_the_same_slice_in_place() {
    let svc = kubia_service();
    let mut pods = kubia_pods();
    let nodes = [node("server02", &[], true)];
    let stored: Vec<EndpointSlice> =
        as_stored(&reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[])), Kind::EndpointSlice);
    // kubia-5rvfq stops being ready, kubia-8kv8d becomes ready.
    pods[0] = pod("kubia-5rvfq", "10.44.0.2", false, "server02");
    pods[2] = pod("kubia-8kv8d", "10.44.0.3", true, "server02");
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&stored)));
    assert_eq!(
        render(&writes),
        "update EndpointSlice default/kubia-00000\n\
         \x20 IPv4 ports=[http:8080/TCP https:8443/TCP]\n\
         \x20 - 10.44.0.1 kubia-8cgnm ready=true serving=true terminating=false nodeName=server02\n\
         \x20 - 10.44.0.2 kubia-5rvfq ready=false serving=false terminating=false nodeName=server02\n\
         \x20 - 10.44.0.3 kubia-8kv8d ready=true serving=true terminating=false nodeName=server02\n"
    );
    assert_eq!(object(&writes, 0)["metadata"]["resourceVersion"], "2", "updates carry the version they replace");
}

#[test]
fn terminating_pods_stay_as_serving_terminating_and_publish_not_ready_makes_all_ready() {
    let mut svc = kubia_service();
    let mut leaving = pod("kubia-a", "10.44.0.1", true, "n1");
    leaving.metadata.deletion_timestamp = Some(Time(now()));
    let mut done = pod("kubia-b", "10.44.0.2", true, "n1");
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let unready = pod("kubia-c", "10.44.0.3", false, "n1");
    let no_ip = pod("kubia-d", "", false, "n1");
    let pods = [leaving, done, unready, no_ip];
    let nodes = [node("n1", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/kubia-\n\
         \x20 IPv4 ports=[http:8080/TCP https:8443/TCP]\n\
         \x20 - 10.44.0.1 kubia-a ready=false serving=true terminating=true nodeName=n1\n\
         \x20 - 10.44.0.3 kubia-c ready=false serving=false terminating=false nodeName=n1\n"
    );
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    assert!(render(&writes).contains("10.44.0.1 kubia-a ready=true serving=true terminating=true"));
    assert!(render(&writes).contains("10.44.0.3 kubia-c ready=true serving=false terminating=false"));
}

#[test]
fn a_pod_without_the_named_port_gets_a_slice_of_its_own_port_set() {
    let svc = kubia_service();
    let mut plain = pod("kubia-plain", "10.44.0.9", true, "n1");
    // Only `http` declared: the `https` service port cannot be resolved on this pod.
    plain.spec.as_mut().unwrap().containers[0].ports.as_mut().unwrap().truncate(1);
    let pods = [pod("kubia-full", "10.44.0.1", true, "n1"), plain];
    let nodes = [node("n1", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/kubia-\n\
         \x20 IPv4 ports=[http:8080/TCP]\n\
         \x20 - 10.44.0.9 kubia-plain ready=true serving=true terminating=false nodeName=n1\n\
         create EndpointSlice default/kubia-\n\
         \x20 IPv4 ports=[http:8080/TCP https:8443/TCP]\n\
         \x20 - 10.44.0.1 kubia-full ready=true serving=true terminating=false nodeName=n1\n"
    );
}

#[test]
fn two_hundred_fifty_pods_fill_three_slices_of_at_most_one_hundred() {
    let svc = kubia_service();
    let pods: Vec<Pod> = (0..250)
        .map(|i| pod(&format!("kubia-{i:03}"), &format!("10.44.{}.{}", i / 200, i % 200 + 1), true, "n1"))
        .collect();
    let nodes = [node("n1", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    let sizes: Vec<usize> = writes.iter().map(|w| w.object().unwrap()["endpoints"].as_array().unwrap().len()).collect();
    assert_eq!(summaries(&writes), vec!["create EndpointSlice default/kubia-"; 3]);
    assert_eq!(sizes, vec![100, 100, 50]);
    // Stable: the stored result needs nothing more.
    let stored: Vec<EndpointSlice> = as_stored(&writes, Kind::EndpointSlice);
    assert!(reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&stored))).is_empty());
    // Ten more pods go to the slice with room, nothing else is rewritten.
    let more: Vec<Pod> =
        (250..260).map(|i| pod(&format!("kubia-{i:03}"), &format!("10.45.0.{}", i - 200), true, "n1")).collect();
    let all: Vec<&Pod> = pods.iter().chain(more.iter()).collect();
    let writes = reconcile_endpoint_slices(&inputs(&svc, &all, &refs(&nodes), &refs(&stored)));
    assert_eq!(summaries(&writes), vec!["update EndpointSlice default/kubia-00002"]);
    assert_eq!(object(&writes, 0)["endpoints"].as_array().unwrap().len(), 60);
}

#[test]
fn no_matching_pods_keep_one_placeholder_slice() {
    let svc = kubia_service();
    let writes = reconcile_endpoint_slices(&inputs(&svc, &[], &[], &[]));
    assert_eq!(render(&writes), "create EndpointSlice default/kubia-\n  IPv4 ports=[]\n");
    let stored: Vec<EndpointSlice> = as_stored(&writes, Kind::EndpointSlice);
    assert!(reconcile_endpoint_slices(&inputs(&svc, &[], &[], &refs(&stored))).is_empty());
    // A pod appears: the placeholder is reused for the real slice, not deleted and recreated.
    let pods = [pod("kubia-a", "10.44.0.1", true, "n1")];
    let nodes = [node("n1", &[], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&stored)));
    assert_eq!(summaries(&writes), vec!["update EndpointSlice default/kubia-00000"]);
    // And when the last pod goes, the slice is emptied back into the placeholder.
    let stored2: Vec<EndpointSlice> = as_stored(&writes, Kind::EndpointSlice);
    let writes = reconcile_endpoint_slices(&inputs(&svc, &[], &refs(&nodes), &refs(&stored2)));
    assert_eq!(render(&writes), "update EndpointSlice default/kubia-00000\n  IPv4 ports=[]\n");
}

#[test]
fn headless_services_get_hostnames_the_headless_label_and_zones() {
    let mut svc = kubia_service();
    svc.metadata.name = Some("kubia-headless".into());
    svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    svc.metadata.labels = Some(labels(&[("tier", "web")]));
    let mut p = pod("kubia-0", "10.44.0.1", true, "n1");
    let spec = p.spec.as_mut().unwrap();
    spec.hostname = Some("kubia-0".into());
    spec.subdomain = Some("kubia-headless".into());
    let other = {
        let mut q = pod("kubia-1", "10.44.0.2", true, "n1");
        q.spec.as_mut().unwrap().hostname = Some("kubia-1".into());
        q
    };
    let pods = [p, other];
    let nodes = [node("n1", &[("topology.kubernetes.io/zone", "zone-a")], true)];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[]));
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/kubia-headless-\n\
         \x20 IPv4 ports=[http:8080/TCP https:8443/TCP]\n\
         \x20 - 10.44.0.1 kubia-0 ready=true serving=true terminating=false nodeName=n1 hostname=kubia-0 zone=zone-a\n\
         \x20 - 10.44.0.2 kubia-1 ready=true serving=true terminating=false nodeName=n1 zone=zone-a\n"
    );
    let labels = &object(&writes, 0)["metadata"]["labels"];
    assert_eq!(labels["service.kubernetes.io/headless"], "");
    assert_eq!(labels["tier"], "web");
}

#[test]
fn pods_on_missing_nodes_wait_unless_not_ready_addresses_are_published() {
    let mut svc = kubia_service();
    let pods = [pod("kubia-a", "10.44.0.1", true, "ghost")];
    let i = inputs(&svc, &refs(&pods), &[], &[]);
    assert!(waiting_for_nodes(&i));
    // The pod is left out; with nothing else the Service keeps its placeholder.
    assert_eq!(render(&reconcile_endpoint_slices(&i)), "create EndpointSlice default/kubia-\n  IPv4 ports=[]\n");
    svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let i = inputs(&svc, &refs(&pods), &[], &[]);
    assert!(!waiting_for_nodes(&i));
    assert!(render(&reconcile_endpoint_slices(&i)).contains("10.44.0.1 kubia-a ready=true"));
}

#[test]
fn service_label_changes_rewrite_labels_and_foreign_or_stale_slices_go() {
    let mut svc = kubia_service();
    let pods = [pod("kubia-a", "10.44.0.1", true, "n1")];
    let nodes = [node("n1", &[], true)];
    let stored: Vec<EndpointSlice> =
        as_stored(&reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &[])), Kind::EndpointSlice);
    svc.metadata.labels = Some(labels(&[("team", "blue")]));
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&stored)));
    assert_eq!(summaries(&writes), vec!["update EndpointSlice default/kubia-00000"]);
    assert_eq!(object(&writes, 0)["metadata"]["labels"]["team"], "blue");

    // A slice left by an earlier Service of the same name (other UID) is deleted.
    let mut foreign = stored[0].clone();
    foreign.metadata.name = Some("kubia-old".into());
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-previous".into();
    let svc = kubia_service();
    let all = [stored[0].clone(), foreign];
    let writes = reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &refs(&nodes), &refs(&all)));
    assert_eq!(summaries(&writes), vec!["delete EndpointSlice default/kubia-old"]);

    // Ports change (targetPort 8080 instead of `http`): the old group's slice is reused.
    let mut svc2 = kubia_service();
    svc2.spec.as_mut().unwrap().ports = Some(vec![service_port("", 80, IntOrString::Int(9090))]);
    let writes = reconcile_endpoint_slices(&inputs(&svc2, &refs(&pods), &refs(&nodes), &refs(&stored)));
    assert_eq!(
        render(&writes),
        "update EndpointSlice default/kubia-00000\n\
         \x20 IPv4 ports=[:9090/TCP]\n\
         \x20 - 10.44.0.1 kubia-a ready=true serving=true terminating=false nodeName=n1\n"
    );
}

#[test]
fn selectorless_and_external_name_services_are_not_this_controllers() {
    let mut svc = kubia_service();
    svc.spec.as_mut().unwrap().selector = None;
    let pods = [pod("kubia-a", "10.44.0.1", true, "n1")];
    assert!(reconcile_endpoint_slices(&inputs(&svc, &refs(&pods), &[], &[])).is_empty());
    let mut ext = kubia_service();
    ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    assert!(reconcile_endpoint_slices(&inputs(&ext, &refs(&pods), &[], &[])).is_empty());
}

#[test]
fn small_max_spreads_and_fills_closest_to_full() {
    let svc = kubia_service();
    let nodes = [node("n1", &[], true)];
    let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"), &format!("10.0.0.{}", i + 1), true, "n1")).collect();
    let mut i = inputs(&svc, &refs(&pods), &refs(&nodes), &[]);
    i.max_endpoints_per_slice = 2;
    let writes = reconcile_endpoint_slices(&i);
    let sizes: Vec<usize> = writes.iter().map(|w| w.object().unwrap()["endpoints"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
}

// ---------------------------------------------------------------------------------------------
// Mirroring

fn external_service() -> Service {
    let mut svc = kubia_service();
    svc.metadata = meta("default", "external-service");
    let spec = svc.spec.as_mut().unwrap();
    spec.selector = None;
    spec.ports = Some(vec![service_port("", 80, IntOrString::Int(80))]);
    svc
}

/// The seeds' `external-service` Endpoints: 11.11.11.11 and 22.22.22.22 on port 80.
fn external_endpoints(ips: &[&str]) -> Endpoints {
    Endpoints {
        metadata: meta("default", "external-service"),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ips.iter().map(|ip| EndpointAddress { ip: ip.to_string(), ..Default::default() }).collect(),
            ),
            not_ready_addresses: None,
            ports: Some(vec![CorePort { port: 80, protocol: Some("TCP".into()), ..Default::default() }]),
        }]),
    }
}

fn mirror<'a>(ep: Option<&'a Endpoints>, svc: Option<&'a Service>, slices: &[&'a EndpointSlice]) -> Vec<Write> {
    reconcile_mirrored_slices(&MirrorInputs {
        endpoints: ep,
        service: svc,
        slices: slices.to_vec(),
        max_endpoints_per_subset: mirroring::DEFAULT_MAX_ENDPOINTS_PER_SUBSET,
    })
}

#[test]
fn manual_endpoints_of_a_selectorless_service_are_mirrored() {
    let svc = external_service();
    let ep = external_endpoints(&["11.11.11.11", "22.22.22.22"]);
    let writes = mirror(Some(&ep), Some(&svc), &[]);
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/external-service-\n\
         \x20 IPv4 ports=[:80/TCP]\n\
         \x20 - 11.11.11.11  ready=true serving=null terminating=null\n\
         \x20 - 22.22.22.22  ready=true serving=null terminating=null\n"
    );
    let o = object(&writes, 0);
    assert_eq!(
        o["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(o["metadata"]["labels"]["kubernetes.io/service-name"], "external-service");
    assert_eq!(o["metadata"]["ownerReferences"][0]["kind"], "Endpoints");
    // Stable once stored.
    let stored: Vec<EndpointSlice> = as_stored(&writes, Kind::EndpointSlice);
    assert!(mirror(Some(&ep), Some(&svc), &refs(&stored)).is_empty());
    // An update is mirrored into the same slice.
    let ep2 = external_endpoints(&["11.11.11.11", "33.33.33.33"]);
    let writes = mirror(Some(&ep2), Some(&svc), &refs(&stored));
    assert_eq!(
        render(&writes),
        "update EndpointSlice default/external-service-00000\n\
         \x20 IPv4 ports=[:80/TCP]\n\
         \x20 - 11.11.11.11  ready=true serving=null terminating=null\n\
         \x20 - 33.33.33.33  ready=true serving=null terminating=null\n"
    );
    // Deleting the Endpoints, opting out, or giving the Service a selector removes the mirror.
    assert_eq!(
        summaries(&mirror(None, Some(&svc), &refs(&stored))),
        vec!["delete EndpointSlice default/external-service-00000"]
    );
    let mut skip = ep.clone();
    skip.metadata.labels = Some(labels(&[("endpointslice.kubernetes.io/skip-mirror", "true")]));
    assert_eq!(mirror(Some(&skip), Some(&svc), &refs(&stored)).len(), 1);
    assert!(mirror(Some(&skip), Some(&svc), &[]).is_empty());
    assert_eq!(mirror(Some(&ep), Some(&kubia_service()), &refs(&stored)).len(), 1);
    assert_eq!(mirror(Some(&ep), None, &refs(&stored)).len(), 1);
}

#[test]
fn mirroring_splits_address_types_and_marks_not_ready() {
    let svc = external_service();
    let mut ep = external_endpoints(&["10.1.2.3", "fd00::1"]);
    ep.subsets.as_mut().unwrap()[0].not_ready_addresses =
        Some(vec![EndpointAddress { ip: "10.1.2.4".into(), ..Default::default() }]);
    let writes = mirror(Some(&ep), Some(&svc), &[]);
    assert_eq!(
        render(&writes),
        "create EndpointSlice default/external-service-\n\
         \x20 IPv4 ports=[:80/TCP]\n\
         \x20 - 10.1.2.3  ready=true serving=null terminating=null\n\
         \x20 - 10.1.2.4  ready=false serving=null terminating=null\n\
         create EndpointSlice default/external-service-\n\
         \x20 IPv6 ports=[:80/TCP]\n\
         \x20 - fd00::1  ready=true serving=null terminating=null\n"
    );
    let _: Value = object(&writes, 1);
}
