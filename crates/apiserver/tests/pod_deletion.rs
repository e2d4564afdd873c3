//! Graceful pod deletion: a pod a node runs is marked (deletionTimestamp = now + grace,
//! deletionGracePeriodSeconds) and stays until the node agent deletes it with grace 0; a pod
//! no node runs goes at once.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::Method;
use common::TestServer;
use serde_json::json;

fn pod(name: &str, node: Option<&str>) -> serde_json::Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 20}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

#[tokio::test]
async fn pods_on_a_node_are_deleted_gracefully() {
    let s = TestServer::start().await;
    let base = "/api/v1/namespaces/default/pods";
    s.post(base, &pod("unscheduled", None)).await.expect(201);
    s.delete(&format!("{base}/unscheduled")).await.expect(200);
    s.get(&format!("{base}/unscheduled")).await.expect_status(404, "NotFound");

    s.post(base, &pod("running", Some("node-a"))).await.expect(201);
    let marked = s.delete(&format!("{base}/running")).await.expect(200);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 20);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    // Still there while the node stops it; a second delete does not extend the grace.
    let again = s.delete(&format!("{base}/running")).await.expect(200);
    assert_eq!(again["metadata"]["deletionTimestamp"], marked["metadata"]["deletionTimestamp"]);
    // A shorter grace period shortens it.
    let shorter = s
        .req(
            Method::DELETE,
            &format!("{base}/running"),
            &[("content-type", "application/json")],
            r#"{"gracePeriodSeconds": 5}"#,
        )
        .await
        .expect(200);
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    s.get(&format!("{base}/running")).await.expect(200);
    // The agent's final delete.
    s.req(Method::DELETE, &format!("{base}/running?gracePeriodSeconds=0"), &[], "").await.expect(200);
    s.get(&format!("{base}/running")).await.expect_status(404, "NotFound");
}

#[tokio::test]
async fn binding_assigns_an_unassigned_pod_once() {
    let s = TestServer::start().await;
    let base = "/api/v1/namespaces/default/pods";
    s.post(base, &pod("p", None)).await.expect(201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-a"}});
    s.post(&format!("{base}/p/binding"), &binding).await.expect(201);
    let p = s.get(&format!("{base}/p")).await.expect(200);
    assert_eq!(p["spec"]["nodeName"], "node-a");
    assert!(
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")
    );
    let again = s.post(&format!("{base}/p/binding"), &binding).await.expect_status(409, "Conflict");
    assert!(again["message"].as_str().unwrap().contains("is already assigned to node \"node-a\""), "{again}");
}

#[tokio::test]
async fn a_dependent_of_a_deleted_owner_is_collected() {
    let s = TestServer::start().await;
    let svc = s
        .post(
            "/api/v1/namespaces/default/services",
            &json!({"metadata": {"name": "gone"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .await
        .expect(201);
    let uid = svc["metadata"]["uid"].as_str().unwrap().to_string();
    s.delete("/api/v1/namespaces/default/services/gone").await.expect(200);
    let cm = json!({"metadata": {"name": "orphan", "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "gone", "uid": uid}]}});
    s.post("/api/v1/namespaces/default/configmaps", &cm).await.expect(201);
    s.wait_for("/api/v1/namespaces/default/configmaps/orphan", std::time::Duration::from_secs(5), |code, _| {
        code == 404
    })
    .await;
}
