//! Watch semantics over real HTTP on a loopback listener, as a Kubernetes client sees them:
//! synthetic `ADDED`s for an unset or `0` resourceVersion, exactly the later changes for
//! `resourceVersion=N`, `410 Expired` below the compacted revision, bookmarks, `timeoutSeconds`,
//! label-selector transitions, Table events, the delete's resourceVersion on `DELETED`, and
//! namespace scoping.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Creates a ConfigMap and returns it.
async fn create_cm(s: &TestServer, ns: &str, name: &str) -> Value {
    s.post(&cm_path(ns), &cm(name)).await.expect(201)
}

#[tokio::test]
async fn unset_and_zero_resource_version_start_with_synthetic_added_then_live_events() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    create_cm(&s, "w", "a").await;
    create_cm(&s, "w", "b").await;
    let http = s.serve().await;
    let mut existing: BTreeSet<_> = [ev_pair("ADDED", "a"), ev_pair("ADDED", "b")].into_iter().collect();
    for (i, q) in ["", "&resourceVersion=0"].iter().enumerate() {
        let mut w = http.watch(&format!("{}?watch=1{q}", cm_path("w"))).await;
        assert_eq!(w.status, 200);
        assert_eq!(w.header("content-type"), Some("application/json"));
        assert_eq!(w.header("transfer-encoding"), Some("chunked"));
        let mut first = BTreeSet::new();
        for _ in 0..existing.len() {
            first.insert(ev(&w.next().await));
        }
        assert_eq!(first, existing, "query {q:?}");
        let live = format!("live{i}");
        existing.insert(ev_pair("ADDED", &live));
        let created = create_cm(&s, "w", &live).await;
        let e = w.next().await;
        assert_eq!(ev(&e), ev_pair("ADDED", &live));
        assert_eq!(rv(&e["object"]), rv(&created));
        assert_eq!(e["object"]["kind"], "ConfigMap");
        assert_eq!(e["object"]["apiVersion"], "v1");
    }
}

#[tokio::test]
async fn resource_version_n_yields_exactly_the_changes_after_n() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    let a = create_cm(&s, "w", "a").await;
    let a2 = s.merge(&format!("{}/a", cm_path("w")), &json!({"metadata": {"labels": {"x": "1"}}})).await.expect(200);
    let b = create_cm(&s, "w", "b").await;
    let del = s.delete(&format!("{}/a", cm_path("w"))).await.expect(200);
    let after_delete = s.get(&cm_path("w")).await.expect(200);
    let http = s.serve().await;

    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={}", cm_path("w"), rv(&a))).await;
    assert_eq!(w.status, 200);
    let e1 = w.next().await;
    assert_eq!(ev(&e1), ev_pair("MODIFIED", "a"));
    assert_eq!(rv(&e1["object"]), rv(&a2));
    assert_eq!(e1["object"]["metadata"]["labels"]["x"], "1");
    let e2 = w.next().await;
    assert_eq!(ev(&e2), ev_pair("ADDED", "b"));
    assert_eq!(rv(&e2["object"]), rv(&b));
    let e3 = w.next().await;
    assert_eq!(ev(&e3), ev_pair("DELETED", "a"));
    assert_eq!(rv(&e3["object"]), rv(&after_delete), "DELETED carries the delete's revision");
    assert!(rv(&e3["object"]) > rv(&a2));
    let _ = del;
    // Nothing else is replayed: the next event is the sentinel written now.
    create_cm(&s, "w", "sentinel").await;
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "sentinel"));

    // From the latest revision: no synthetic events at all.
    let latest = rv(&s.get(&cm_path("w")).await.expect(200));
    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={latest}", cm_path("w"))).await;
    create_cm(&s, "w", "sentinel2").await;
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "sentinel2"));
}

#[tokio::test]
async fn watch_below_the_compacted_revision_is_410_expired() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    let a = create_cm(&s, "w", "a").await;
    for i in 0..3 {
        s.merge(&format!("{}/a", cm_path("w")), &json!({"data": {"k": format!("v{i}")}})).await.expect(200);
    }
    let current = s.store.current_revision().await.unwrap();
    s.store.compact(current).await.unwrap();
    let http = s.serve().await;

    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={}", cm_path("w"), rv(&a))).await;
    assert_eq!(w.status, 410, "a watch from a compacted revision must be refused");
    let body: Value = serde_json::from_slice(&w.body().await).unwrap();
    assert_status_shape(&body, 410);
    assert_eq!(body["reason"], "Expired");
    assert!(body["message"].as_str().unwrap().contains("too old resource version"), "{body}");

    // A list at that exact revision is expired too.
    let r = s.get(&format!("{}?resourceVersion={}&resourceVersionMatch=Exact", cm_path("w"), rv(&a))).await;
    r.expect_status(410, "Expired");

    // From the compacted revision itself, every later change is still there.
    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={current}", cm_path("w"))).await;
    assert_eq!(w.status, 200);
    create_cm(&s, "w", "b").await;
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "b"));
}

#[tokio::test]
#[ignore = "slow: the server sends a bookmark every 60 s; run with --ignored"]
async fn bookmarks_are_sent_when_allowed() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    create_cm(&s, "w", "a").await;
    let http = s.serve().await;
    let mut w = http.watch(&format!("{}?watch=1&allowWatchBookmarks=true", cm_path("w"))).await;
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "a"));
    let b = create_cm(&s, "w", "b").await;
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "b"));
    let e = w.next_within(Duration::from_secs(75)).await.expect("stream ended");
    assert_eq!(e["type"], "BOOKMARK", "{e}");
    assert_eq!(e["object"]["kind"], "ConfigMap");
    assert_eq!(e["object"]["apiVersion"], "v1");
    assert_eq!(rv(&e["object"]), rv(&b), "a bookmark carries the revision the watch has reached");
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    create_cm(&s, "w", "a").await;
    let http = s.serve().await;
    let started = Instant::now();
    let mut w = http.watch(&format!("{}?watch=1&timeoutSeconds=1", cm_path("w"))).await;
    assert_eq!(w.status, 200);
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "a"));
    assert_eq!(w.next_within(Duration::from_secs(5)).await, None, "the stream must end after timeoutSeconds");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "ended too early: {took:?}");

    let r = s.get(&format!("{}?watch=1&timeoutSeconds=soon", cm_path("w"))).await;
    r.expect_status(400, "BadRequest");
}

#[tokio::test]
async fn label_selector_watch_sees_objects_enter_and_leave_the_selector() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    let start = rv(&s.get(&cm_path("w")).await.expect(200));
    let http = s.serve().await;
    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={start}&labelSelector=app%3Dweb", cm_path("w"))).await;
    assert_eq!(w.status, 200);
    let x = format!("{}/x", cm_path("w"));
    create_cm(&s, "w", "x").await; // not matching: no event
    let enter = s.merge(&x, &json!({"metadata": {"labels": {"app": "web"}}})).await.expect(200);
    let modify = s.merge(&x, &json!({"data": {"k": "v2"}})).await.expect(200);
    let leave = s.merge(&x, &json!({"metadata": {"labels": {"app": "db"}}})).await.expect(200);
    s.delete(&x).await.expect(200); // no longer matching: no event
    s.post(&cm_path("w"), &cm_labeled("y", json!({"app": "web"}))).await.expect(201);

    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("ADDED", "x"), "entering the selector is ADDED");
    assert_eq!(rv(&e["object"]), rv(&enter));
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("MODIFIED", "x"));
    assert_eq!(rv(&e["object"]), rv(&modify));
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("DELETED", "x"), "leaving the selector is DELETED");
    assert_eq!(rv(&e["object"]), rv(&leave));
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "y"), "no event for the delete of a non-matching object");
}

#[tokio::test]
async fn label_selector_deleted_on_leave_carries_the_previous_state() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    s.post(&cm_path("w"), &cm_labeled("x", json!({"app": "web"}))).await.expect(201);
    let start = rv(&s.get(&cm_path("w")).await.expect(200));
    let http = s.serve().await;
    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={start}&labelSelector=app%3Dweb", cm_path("w"))).await;
    let leave =
        s.merge(&format!("{}/x", cm_path("w")), &json!({"metadata": {"labels": {"app": "db"}}})).await.expect(200);
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("DELETED", "x"));
    assert_eq!(rv(&e["object"]), rv(&leave));
    // Upstream (etcd3 watcher and cacher): the old object, so a selector watch only ever
    // shows objects that match its selector.
    assert_eq!(e["object"]["metadata"]["labels"]["app"], "web", "{e}");
}

#[tokio::test]
async fn table_watch_yields_tables_with_column_definitions_only_first() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    s.post(&svc_path("w"), &svc("a")).await.expect(201);
    s.post(&svc_path("w"), &svc("b")).await.expect(201);
    let http = s.serve().await;
    let mut w = http.watch_with(&format!("{}?watch=1", svc_path("w")), &[("Accept", TABLE_ACCEPT)]).await;
    assert_eq!(w.status, 200);
    assert_eq!(w.header("content-type"), Some(TABLE_ACCEPT));
    let mut events = vec![w.next().await, w.next().await];
    s.post(&svc_path("w"), &svc("c")).await.expect(201);
    events.push(w.next().await);
    let mut names = Vec::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["type"], "ADDED");
        let t = &e["object"];
        assert_eq!(t["kind"], "Table", "{e}");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "one row per event: {e}");
        names.push(rows[0]["cells"][0].as_str().unwrap().to_string());
        assert_eq!(rows[0]["object"]["metadata"]["name"], rows[0]["cells"][0]);
        let cols = t.get("columnDefinitions").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
        if i == 0 {
            assert!(cols > 0, "the first event carries the column definitions: {e}");
            assert_eq!(t["columnDefinitions"][0]["name"], "Name");
            assert_eq!(rows[0]["cells"].as_array().unwrap().len(), cols);
        } else {
            assert_eq!(cols, 0, "later events carry no column definitions: {e}");
        }
    }
    assert_eq!(names, ["a", "b", "c"]);
}

#[tokio::test]
async fn deleted_events_carry_the_delete_resource_version() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    let http = s.serve().await;
    let start = rv(&s.get(&svc_path("w")).await.expect(200));
    let mut w = http.watch(&format!("{}?watch=1&resourceVersion={start}", svc_path("w"))).await;
    let created = s.post(&svc_path("w"), &svc("gone")).await.expect(201);
    s.delete(&format!("{}/gone", svc_path("w"))).await.expect(200);
    let after = rv(&s.get(&svc_path("w")).await.expect(200));
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("ADDED", "gone"));
    assert_eq!(rv(&e["object"]), rv(&created));
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("DELETED", "gone"));
    assert_eq!(rv(&e["object"]), after, "DELETED must carry the revision of the delete");
    assert!(rv(&e["object"]) > rv(&created));
    assert_eq!(e["object"]["spec"]["clusterIP"], created["spec"]["clusterIP"], "DELETED carries the last state");
}

#[tokio::test]
async fn all_namespaces_watch_sees_every_namespace_and_a_namespace_watch_only_its_own() {
    let s = TestServer::start().await;
    for ns in ["w1", "w10", "w2"] {
        s.namespace(ns).await;
    }
    let start = rv(&s.get("/api/v1/services").await.expect(200));
    let http = s.serve().await;
    let mut all = http.watch(&format!("/api/v1/services?watch=1&resourceVersion={start}")).await;
    let mut one = http.watch(&format!("{}?watch=1&resourceVersion={start}", svc_path("w1"))).await;
    assert_eq!((all.status, one.status), (200, 200));
    for (ns, name) in [("w10", "s10"), ("w2", "s2"), ("w1", "s1")] {
        s.post(&svc_path(ns), &svc(name)).await.expect(201);
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = all.next().await;
        seen.push((ev(&e).1, e["object"]["metadata"]["namespace"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen,
        [("s10".into(), "w10".into()), ("s2".into(), "w2".into()), ("s1".into(), "w1".into())],
        "all-namespaces watch in revision order"
    );
    let e = one.next().await;
    assert_eq!(ev(&e), ev_pair("ADDED", "s1"), "w1 must not see w10 (a prefix of its name) nor w2");

    // Without a resourceVersion the all-namespaces watch starts with every Service, the
    // bootstrap ones included.
    let mut w = http.watch("/api/v1/services?watch=1").await;
    let want: BTreeSet<String> = ["kubernetes", "kube-dns", "s1", "s2", "s10"].map(String::from).into();
    let mut names = BTreeSet::new();
    while !want.is_subset(&names) {
        let e = w.next().await;
        assert_eq!(e["type"], "ADDED", "{e}");
        names.insert(ev(&e).1);
    }
}

#[tokio::test]
async fn field_selector_watch_on_one_name_like_kubectl_get_name_w() {
    let s = TestServer::start().await;
    s.namespace("w").await;
    create_cm(&s, "w", "a").await;
    create_cm(&s, "w", "b").await;
    let http = s.serve().await;
    let mut w =
        http.watch(&format!("{}?watch=1&resourceVersion=0&fieldSelector=metadata.name%3Da", cm_path("w"))).await;
    assert_eq!(w.status, 200);
    assert_eq!(ev(&w.next().await), ev_pair("ADDED", "a"));
    s.merge(&format!("{}/b", cm_path("w")), &json!({"data": {"k": "b2"}})).await.expect(200);
    s.merge(&format!("{}/a", cm_path("w")), &json!({"data": {"k": "a2"}})).await.expect(200);
    let e = w.next().await;
    assert_eq!(ev(&e), ev_pair("MODIFIED", "a"), "b's change must be filtered out");
    assert_eq!(e["object"]["data"]["k"], "a2");

    let r = s.get(&format!("{}?watch=1&fieldSelector=spec.bogus%3Dx", cm_path("w"))).await;
    r.expect_status(400, "BadRequest");
    let r = s.get(&format!("{}?watch=1&resourceVersion=abc", cm_path("w"))).await;
    r.expect_status(400, "BadRequest");
}
