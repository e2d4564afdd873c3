//! The EndpointSlice, mirroring and Endpoints controllers against a real API server, as a
//! user sees them: the seeds' `kubia` Service with named ports, readiness flips, pods and
//! Services going away, 250 pods in slices of at most 100, and the selector-less
//! `external-service` with hand-written Endpoints mirrored into a slice.
//!
//! The pods are created with `spec.nodeName` set: pier's API server cannot bind pods yet (see
//! `scheduler.rs`), and the EndpointSlice controller, like upstream, leaves out pods whose node
//! does not exist.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, wait_for};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

fn kubia_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubia"},
        "spec": {
            "selector": {"app": "kubia"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "https", "port": 443, "targetPort": "https"},
            ],
        },
    })
}

fn kubia_pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kubia"}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "kubia", "image": "luksa/kubia",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "https", "containerPort": 8443}],
            }],
        },
    })
}

/// `ip(name)` lists of an Endpoints: (ready, not ready, ports).
fn endpoints_view(ep: &Endpoints) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut ports = Vec::new();
    for ss in ep.subsets.iter().flatten() {
        for a in ss.addresses.iter().flatten() {
            ready.push(format!("{}({})", a.ip, a.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default()));
        }
        for a in ss.not_ready_addresses.iter().flatten() {
            not_ready.push(format!(
                "{}({})",
                a.ip,
                a.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default()
            ));
        }
        for p in ss.ports.iter().flatten() {
            let s =
                format!("{}:{}/{}", p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default());
            if !ports.contains(&s) {
                ports.push(s);
            }
        }
    }
    ready.sort();
    not_ready.sort();
    ports.sort();
    (ready, not_ready, ports)
}

fn slice_view(s: &EndpointSlice) -> Vec<String> {
    let mut v: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            format!(
                "{} {} ready={:?} serving={:?} terminating={:?} node={}",
                e.addresses.join(","),
                e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(),
                c.ready,
                c.serving,
                c.terminating,
                e.node_name.clone().unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v
}

async fn managed_slices(
    slices: &Api<EndpointSlice>,
    service: &str,
    manager: &str,
) -> Result<Vec<EndpointSlice>, String> {
    let lp = ListParams::default()
        .labels(&format!("kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={manager}"));
    Ok(slices.list(&lp).await.map_err(|e| e.to_string())?.items)
}

const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubia_endpoints_and_slices_follow_pod_readiness() {
    let mut c = Cluster::start().await;
    c.run_all();
    c.node("server02", json!({}), true).await;
    let _: Service = c.create("default", kubia_service()).await;
    let endpoints: Api<Endpoints> = c.api("default");
    let slices: Api<EndpointSlice> = c.api("default");

    // Right away: an empty Endpoints and a placeholder slice.
    let ep =
        wait_for("empty Endpoints kubia", || async { endpoints.get("kubia").await.map_err(|e| e.to_string()) }).await;
    assert_eq!(endpoints_view(&ep), (vec![], vec![], vec![]));
    assert_eq!(ep.metadata.labels.unwrap()["endpoints.kubernetes.io/managed-by"], "endpoint-controller");
    let placeholder = wait_for("placeholder slice", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        if s.len() == 1 { Ok(s[0].clone()) } else { Err(format!("{} slices", s.len())) }
    })
    .await;
    assert!(placeholder.endpoints.is_empty());
    assert!(placeholder.metadata.name.as_deref().unwrap().starts_with("kubia-"));
    assert_eq!(placeholder.metadata.name.as_deref().unwrap().len(), "kubia-".len() + 5);

    for name in ["kubia-a", "kubia-b", "kubia-c"] {
        let _: Pod = c.create("default", kubia_pod(name, "server02")).await;
    }
    c.agent_set("default", "kubia-a", "10.44.0.1", true).await;
    c.agent_set("default", "kubia-b", "10.44.0.2", true).await;
    c.agent_set("default", "kubia-c", "10.44.0.3", false).await;

    let want = (
        vec!["10.44.0.1(kubia-a)".to_string(), "10.44.0.2(kubia-b)".to_string()],
        vec!["10.44.0.3(kubia-c)".to_string()],
        vec!["http:8080/TCP".to_string(), "https:8443/TCP".to_string()],
    );
    wait_for("kubia Endpoints", || async {
        let v = endpoints_view(&endpoints.get("kubia").await.map_err(|e| e.to_string())?);
        if v == want { Ok(()) } else { Err(format!("{v:?}")) }
    })
    .await;
    let slice = wait_for("kubia EndpointSlice", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        match s.as_slice() {
            [one] if one.endpoints.len() == 3 => Ok(one.clone()),
            other => Err(format!("{:?}", other.iter().map(slice_view).collect::<Vec<_>>())),
        }
    })
    .await;
    assert_eq!(slice.metadata.name, placeholder.metadata.name, "the placeholder slice is reused");
    assert_eq!(
        slice_view(&slice),
        vec![
            "10.44.0.1 kubia-a ready=Some(true) serving=Some(true) terminating=Some(false) node=server02",
            "10.44.0.2 kubia-b ready=Some(true) serving=Some(true) terminating=Some(false) node=server02",
            "10.44.0.3 kubia-c ready=Some(false) serving=Some(false) terminating=Some(false) node=server02",
        ]
    );
    let ports: Vec<String> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
        .collect();
    assert_eq!(ports, vec!["http:8080", "https:8443"]);
    assert_eq!(slice.address_type, "IPv4");
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Service", "kubia", Some(true)));

    // Readiness flips: b stops being ready, c becomes ready.
    c.agent_set("default", "kubia-b", "10.44.0.2", false).await;
    c.agent_set("default", "kubia-c", "10.44.0.3", true).await;
    let want = (
        vec!["10.44.0.1(kubia-a)".to_string(), "10.44.0.3(kubia-c)".to_string()],
        vec!["10.44.0.2(kubia-b)".to_string()],
        vec!["http:8080/TCP".to_string(), "https:8443/TCP".to_string()],
    );
    wait_for("flipped Endpoints", || async {
        let v = endpoints_view(&endpoints.get("kubia").await.map_err(|e| e.to_string())?);
        if v == want { Ok(()) } else { Err(format!("{v:?}")) }
    })
    .await;
    wait_for("flipped slice", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        let views: Vec<Vec<String>> = s.iter().map(slice_view).collect();
        let ok = s.len() == 1
            && s[0].metadata.name == placeholder.metadata.name
            && views[0][1].contains("kubia-b ready=Some(false) serving=Some(false)")
            && views[0][2].contains("kubia-c ready=Some(true) serving=Some(true)");
        if ok { Ok(()) } else { Err(format!("{views:?}")) }
    })
    .await;

    // A pod goes away.
    let pods: Api<Pod> = c.api("default");
    pods.delete("kubia-a", &DeleteParams::default()).await.unwrap();
    wait_for("Endpoints without kubia-a", || async {
        let v = endpoints_view(&endpoints.get("kubia").await.map_err(|e| e.to_string())?);
        if v.0 == vec!["10.44.0.3(kubia-c)".to_string()] && v.1 == vec!["10.44.0.2(kubia-b)".to_string()] {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    // Until the node agent confirms the pod is gone, the slice keeps it as terminating.
    wait_for("terminating kubia-a in the slice", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        let views: Vec<Vec<String>> = s.iter().map(slice_view).collect();
        let ok = views.len() == 1
            && views[0][0]
                == "10.44.0.1 kubia-a ready=Some(false) serving=Some(true) terminating=Some(true) node=server02";
        if ok { Ok(()) } else { Err(format!("{views:?}")) }
    })
    .await;
    c.agent_finish_deletion("default", "kubia-a").await;
    wait_for("slice without kubia-a", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        if s.len() == 1 && s[0].endpoints.len() == 2 {
            Ok(())
        } else {
            Err(format!("{:?}", s.iter().map(slice_view).collect::<Vec<_>>()))
        }
    })
    .await;

    // A deleted slice is recreated.
    slices.delete(placeholder.metadata.name.as_deref().unwrap(), &DeleteParams::default()).await.unwrap();
    wait_for("recreated slice", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        if s.len() == 1 && s[0].metadata.name != placeholder.metadata.name && s[0].endpoints.len() == 2 {
            Ok(())
        } else {
            Err(format!("{} slices", s.len()))
        }
    })
    .await;

    // The Service goes: its Endpoints and slices follow.
    let services: Api<Service> = c.api("default");
    services.delete("kubia", &DeleteParams::default()).await.unwrap();
    wait_for("Endpoints deleted", || async {
        match endpoints.get_opt("kubia").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(e) => Err(format!("{:?}", endpoints_view(&e))),
        }
    })
    .await;
    wait_for("slices collected", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        if s.is_empty() { Ok(()) } else { Err(format!("{} slices", s.len())) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_fifty_pods_fill_slices_of_at_most_one_hundred() {
    let mut c = Cluster::start().await;
    c.run(|client, rx| {
        pier_controllers::run_endpointslice_controller(client, Default::default(), async move {
            let _ = rx.await;
        })
    });
    c.node("n1", json!({}), true).await;
    let _: Service = c.create("default", kubia_service()).await;
    let pods: Api<Pod> = c.api("default");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..250u32 {
        let pods = pods.clone();
        let client = c.client.clone();
        tasks.spawn(async move {
            let name = format!("kubia-{i:03}");
            let p: Pod = serde_json::from_value(kubia_pod(&name, "n1")).unwrap();
            pods.create(&PostParams::default(), &p).await.unwrap();
            common::set_pod_running(&client, "default", &name, &format!("10.44.{}.{}", i / 200, i % 200 + 1), true)
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let slices: Api<EndpointSlice> = c.api("default");
    let sizes = wait_for("250 endpoints in slices", || async {
        let s = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await?;
        let mut sizes: Vec<usize> = s.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort_unstable();
        if sizes.iter().sum::<usize>() == 250 { Ok(sizes) } else { Err(format!("{sizes:?}")) }
    })
    .await;
    // Pods arriving a few at a time are packed as upstream packs them: new endpoints go to a
    // slice being rewritten anyway or to the one closest to full, so more than the minimum of
    // three slices can result (the unit tests show 3 for 250 at once).
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
    assert!(sizes.len() >= 3, "{sizes:?}");
    // Nothing keeps changing once converged.
    let before = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = managed_slices(&slices, "kubia", SLICE_CONTROLLER).await.unwrap();
    let versions = |s: &[EndpointSlice]| {
        let mut v: Vec<(String, String)> = s
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.metadata.resource_version.clone().unwrap()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(versions(&before), versions(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_service_endpoints_are_mirrored_and_left_alone() {
    let mut c = Cluster::start().await;
    c.run_all();
    let _: Service = c
        .create(
            "default",
            json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "external-service"},
                "spec": {"ports": [{"port": 80}]},
            }),
        )
        .await;
    let ep: Endpoints = c
        .create(
            "default",
            json!({
                "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external-service"},
                "subsets": [{"addresses": [{"ip": "11.11.11.11"}, {"ip": "22.22.22.22"}], "ports": [{"port": 80}]}],
            }),
        )
        .await;
    let slices: Api<EndpointSlice> = c.api("default");
    let mirror = "endpointslicemirroring-controller.k8s.io";
    let addresses = |s: &[EndpointSlice]| {
        let mut v: Vec<String> = s.iter().flat_map(|s| s.endpoints.iter().map(|e| e.addresses.join(","))).collect();
        v.sort();
        v
    };
    let mirrored = wait_for("mirrored slice", || async {
        let s = managed_slices(&slices, "external-service", mirror).await?;
        if addresses(&s) == ["11.11.11.11", "22.22.22.22"] { Ok(s) } else { Err(format!("{:?}", addresses(&s))) }
    })
    .await;
    assert_eq!(mirrored.len(), 1);
    assert_eq!(mirrored[0].ports.as_ref().unwrap()[0].port, Some(80));
    assert_eq!(mirrored[0].metadata.owner_references.as_ref().unwrap()[0].kind, "Endpoints");

    // An update is mirrored.
    let endpoints: Api<Endpoints> = c.api("default");
    let mut updated = endpoints.get("external-service").await.unwrap();
    updated.subsets.as_mut().unwrap()[0].addresses.as_mut().unwrap()[1].ip = "33.33.33.33".into();
    endpoints.replace("external-service", &PostParams::default(), &updated).await.unwrap();
    wait_for("mirrored update", || async {
        let s = managed_slices(&slices, "external-service", mirror).await?;
        if addresses(&s) == ["11.11.11.11", "33.33.33.33"] { Ok(()) } else { Err(format!("{:?}", addresses(&s))) }
    })
    .await;

    // The Endpoints controller never touched the user's object, and the API server's own
    // `kubernetes` Endpoints (skip-mirror) has no mirror.
    let now = endpoints.get("external-service").await.unwrap();
    assert!(!now.metadata.labels.unwrap_or_default().contains_key("endpoints.kubernetes.io/managed-by"));
    assert_eq!(now.metadata.uid, ep.metadata.uid);
    assert!(managed_slices(&slices, "kubernetes", mirror).await.unwrap().is_empty());
    let kubernetes = endpoints.get("kubernetes").await.unwrap();
    assert!(!kubernetes.metadata.labels.unwrap_or_default().contains_key("endpoints.kubernetes.io/managed-by"));

    // Deleting the Endpoints removes the mirror.
    endpoints.delete("external-service", &DeleteParams::default()).await.unwrap();
    wait_for("mirror removed", || async {
        let s = managed_slices(&slices, "external-service", mirror).await?;
        if s.is_empty() { Ok(()) } else { Err(format!("{} slices", s.len())) }
    })
    .await;
}
