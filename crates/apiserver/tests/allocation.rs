//! Service IP and node port allocation under concurrency and across a restart: concurrent
//! creates never share a ClusterIP or node port, exactly one of several requests for the same
//! address wins, and a server reopened on the same SQLite file refuses what stored Services hold.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

fn node_ports(svc: &Value) -> Vec<u64> {
    svc["spec"]["ports"].as_array().unwrap().iter().filter_map(|p| p["nodePort"].as_u64()).collect()
}

/// POSTs every body concurrently (one task each) and returns the answers in order.
async fn create_all(s: &TestServer, ns: &str, bodies: Vec<Value>) -> Vec<Resp> {
    let router = s.router.clone();
    let path = svc_path(ns);
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let router = router.clone();
            let path = path.clone();
            tokio::spawn(async move {
                send(&router, http::Method::POST, &path, &[("content-type", "application/json")], b.to_string()).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_concurrent_creates_get_distinct_cluster_ips() {
    let s = TestServer::start().await;
    s.namespace("c").await;
    let answers = create_all(&s, "c", (0..200).map(|i| svc(&format!("s{i}"))).collect()).await;
    let mut ips = BTreeSet::new();
    for a in &answers {
        let v = a.expect(201);
        let ip = v["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_eq!(v["spec"]["clusterIPs"], json!([ip]));
        assert!(ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"), "{ip}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 200, "every Service must get its own ClusterIP");
    // What is stored agrees, and no one took the bootstrap Services' addresses.
    let all = s.get("/api/v1/services").await.expect(200);
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in all["items"].as_array().unwrap() {
        if let Some(ip) = item["spec"]["clusterIP"].as_str().filter(|ip| *ip != "None") {
            by_ip.entry(ip.to_string()).or_default().push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    assert!(by_ip.values().all(|v| v.len() == 1), "an IP is held twice: {by_ip:?}");
    assert_eq!(by_ip.get("10.96.0.1").map(Vec::as_slice), Some(&["kubernetes".to_string()][..]));
    assert_eq!(by_ip.get("10.96.0.10").map(Vec::as_slice), Some(&["kube-dns".to_string()][..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_node_port_creates_never_share_a_port() {
    let s = TestServer::start().await;
    s.namespace("np").await;
    let answers = create_all(&s, "np", (0..100).map(|i| node_port_svc(&format!("n{i}"), None)).collect()).await;
    let mut ports = BTreeSet::new();
    for a in &answers {
        let v = a.expect(201);
        for p in node_ports(&v) {
            assert!((30000..=32767).contains(&p), "{p}");
            assert!(ports.insert(p), "node port {p} handed out twice");
        }
    }
    assert_eq!(ports.len(), 100);

    // Many ask for the same port (and the same IP): exactly one wins each.
    let want = (30500u16..).find(|p| !ports.contains(&u64::from(*p))).unwrap();
    let bodies = (0..20).map(|i| node_port_svc(&format!("want{i}"), Some(want))).collect();
    let answers = create_all(&s, "np", bodies).await;
    let won: Vec<&Resp> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(won.len(), 1, "exactly one create may get a requested port");
    ports.insert(u64::from(want));
    for a in answers.iter().filter(|a| a.status != 201) {
        let st = a.expect_status(422, "Invalid");
        assert!(st["message"].as_str().unwrap().contains("provided port is already allocated"), "{st}");
    }
    let bodies = (0..20)
        .map(|i| {
            let mut b = svc(&format!("ip{i}"));
            b["spec"]["clusterIP"] = json!("10.96.123.123");
            b
        })
        .collect();
    let answers = create_all(&s, "np", bodies).await;
    assert_eq!(answers.iter().filter(|a| a.status == 201).count(), 1);
    for a in answers.iter().filter(|a| a.status != 201) {
        let st = a.expect_status(422, "Invalid");
        assert!(st["message"].as_str().unwrap().contains("provided IP is already allocated"), "{st}");
    }

    // Concurrent type changes ClusterIP -> NodePort allocate distinct ports too.
    let answers = create_all(&s, "np", (0..30).map(|i| svc(&format!("t{i}"))).collect()).await;
    assert!(answers.iter().all(|a| a.status == 201));
    let router = s.router.clone();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let router = router.clone();
            tokio::spawn(async move {
                send(
                    &router,
                    http::Method::PATCH,
                    &format!("{}/t{i}", svc_path("np")),
                    &[("content-type", "application/merge-patch+json")],
                    json!({"spec": {"type": "NodePort"}}).to_string(),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        let v = t.await.unwrap().expect(200);
        for p in node_ports(&v) {
            assert!(ports.insert(p), "node port {p} handed out twice (type change)");
        }
    }
    // And the store agrees: no node port is held by two Services.
    let all = s.get("/api/v1/services").await.expect(200);
    let mut seen = BTreeSet::new();
    for item in all["items"].as_array().unwrap() {
        for p in node_ports(item) {
            assert!(seen.insert(p), "stored node port {p} is held twice");
        }
    }
}

/// Runs `f` on a fresh multi-thread runtime and drops the runtime afterwards, which stops the
/// server's background tasks and releases the store.
fn on_runtime<F: std::future::Future<Output = T>, T>(f: F) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let out = rt.block_on(f);
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    out
}

#[test]
fn a_restart_keeps_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(dir.path().join("store.db"));

    let (auto_ip, kube_uid) = on_runtime({
        let db = db.clone();
        async move {
            let s = TestServer::start_at(&db, None).await;
            let mut fixed = node_port_svc("fixed", Some(30100));
            fixed["spec"]["clusterIP"] = json!("10.96.100.100");
            s.post(&svc_path("default"), &fixed).await.expect(201);
            let auto = s.post(&svc_path("default"), &svc("auto")).await.expect(201);
            let kube = s.get(&format!("{}/kubernetes", svc_path("default"))).await.expect(200);
            (auto["spec"]["clusterIP"].as_str().unwrap().to_string(), kube["metadata"]["uid"].clone())
        }
    });

    on_runtime(async move {
        let s = TestServer::start_at(&db, None).await;
        // Bootstrap is idempotent: the same kubernetes Service, still on the first address.
        let kube = s.get(&format!("{}/kubernetes", svc_path("default"))).await.expect(200);
        assert_eq!(kube["metadata"]["uid"], kube_uid);
        assert_eq!(kube["spec"]["clusterIP"], "10.96.0.1");

        let mut same_ip = svc("same-ip");
        same_ip["spec"]["clusterIP"] = json!("10.96.100.100");
        let st = s.post(&svc_path("default"), &same_ip).await.expect_status(422, "Invalid");
        assert!(st["message"].as_str().unwrap().contains("provided IP is already allocated"), "{st}");
        let mut auto_again = svc("auto-again");
        auto_again["spec"]["clusterIP"] = json!(auto_ip);
        let st = s.post(&svc_path("kube-system"), &auto_again).await.expect_status(422, "Invalid");
        assert!(st["message"].as_str().unwrap().contains("provided IP is already allocated"), "{st}");
        let mut kube_ip = svc("kube-ip");
        kube_ip["spec"]["clusterIP"] = json!("10.96.0.1");
        s.post(&svc_path("default"), &kube_ip).await.expect_status(422, "Invalid");
        let st =
            s.post(&svc_path("default"), &node_port_svc("same-port", Some(30100))).await.expect_status(422, "Invalid");
        assert!(st["message"].as_str().unwrap().contains("provided port is already allocated"), "{st}");

        // Deleting the holder frees both.
        s.delete(&format!("{}/fixed", svc_path("default"))).await.expect(200);
        let mut both = node_port_svc("both", Some(30100));
        both["spec"]["clusterIP"] = json!("10.96.100.100");
        s.post(&svc_path("default"), &both).await.expect(201);
    });
}
