//! A second real client: the `kube` crate (what Rust controllers use) lists, creates,
//! patches and watches Services on a real `pier server`, through the kubeconfig pier writes.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::Cluster;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn client(c: &Cluster) -> kube::Client {
    let kc = Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The cluster's API listens inside its sealed namespace: the client runs on a thread that
/// joins that namespace, with its own runtime.
#[test]
fn kube_client_lists_creates_patches_and_watches() {
    let c = Cluster::start();
    let ns = c.netns.as_ref().unwrap().name.clone();
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(scenario(&c));
        })
        .join()
        .unwrap();
    });
}

async fn scenario(c: &Cluster) {
    let client = client(c).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");

    let list = svcs.list(&ListParams::default()).await.unwrap();
    assert!(list.items.iter().any(|s| s.metadata.name.as_deref() == Some("kubernetes")));
    let rv = list.metadata.resource_version.clone().unwrap();

    let mut stream = svcs.watch(&WatchParams::default().timeout(20), &rv).await.unwrap().boxed();

    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "from-kube"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let ip = created.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10."), "{ip}");

    let patched = svcs
        .patch(
            "from-kube",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"patched": "yes"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap().get("patched").map(String::as_str), Some("yes"));

    let applied = svcs
        .patch(
            "from-kube",
            &PatchParams::apply("kube-test"),
            &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "from-kube", "annotations": {"by": "ssa"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.annotations.unwrap().get("by").map(String::as_str), Some("ssa"));

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(s)))) => seen.push(("ADDED", s.metadata.name.unwrap_or_default())),
            Ok(Ok(Some(WatchEvent::Modified(s)))) => seen.push(("MODIFIED", s.metadata.name.unwrap_or_default())),
            Ok(Ok(Some(_))) => {}
            other => panic!("watch ended early: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", "from-kube".to_string()),
            ("MODIFIED", "from-kube".to_string()),
            ("MODIFIED", "from-kube".to_string())
        ]
    );

    let err = svcs.get("does-not-exist").await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.reason, "NotFound");
        }
        other => panic!("unexpected error {other:?}"),
    }
}
