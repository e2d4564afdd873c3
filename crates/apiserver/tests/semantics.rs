//! Object semantics a client relies on: server-owned metadata, no-op updates, generation,
//! the status and scale subresources, deletecollection, generateName, namespace deletion,
//! ownerReference garbage collection (background and orphan) and finalizers.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::{Value, json};

const GC_WAIT: Duration = Duration::from_secs(10);

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn create_fills_server_owned_metadata() {
    let s = TestServer::start().await;
    let mut body = svc("meta");
    body["metadata"]["uid"] = json!("client-chosen");
    body["metadata"]["creationTimestamp"] = json!("2001-01-01T00:00:00Z");
    let created = s.post(&svc_path("default"), &body).await.expect(201);
    let m = &created["metadata"];
    let uid = m["uid"].as_str().unwrap();
    assert_ne!(uid, "client-chosen");
    assert_eq!(uid.len(), 36, "uid is a UUID: {uid}");
    assert_eq!(uid.matches('-').count(), 4);
    let ts = m["creationTimestamp"].as_str().unwrap();
    assert_ne!(ts, "2001-01-01T00:00:00Z");
    assert!(ts.parse::<jiff::Timestamp>().is_ok() && ts.ends_with('Z') && !ts.contains('.'), "RFC 3339 seconds: {ts}");
    let age = jiff::Timestamp::now().duration_since(ts.parse().unwrap()).as_secs();
    assert!((0..=60).contains(&age), "creationTimestamp is now: {ts}");
    assert!(rv(&created) > 0);
    assert_eq!(m["generation"], 1);
    assert_eq!(m["namespace"], "default");
    assert_eq!(created["kind"], "Service");
    assert_eq!(created["apiVersion"], "v1");
    let got = s.get(&format!("{}/meta", svc_path("default"))).await.expect(200);
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(rv(&got), rv(&created));

    // The list's resourceVersion is at least every item's.
    let list = s.get(&svc_path("default")).await.expect(200);
    assert_eq!(list["kind"], "ServiceList");
    assert!(rv(&list) >= rv(&created));

    // A PUT cannot change uid or creationTimestamp.
    let mut put = got.clone();
    put["metadata"]["uid"] = json!("other");
    put["metadata"]["creationTimestamp"] = json!("2001-01-01T00:00:00Z");
    put["metadata"]["labels"] = json!({"changed": "yes"});
    let updated = s.put(&format!("{}/meta", svc_path("default")), &put).await.expect(200);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(updated["metadata"]["creationTimestamp"], created["metadata"]["creationTimestamp"]);
    assert!(rv(&updated) > rv(&created));
}

#[tokio::test]
async fn a_no_op_update_keeps_the_resource_version() {
    let s = TestServer::start().await;
    let path = format!("{}/same", svc_path("default"));
    let created = s.post(&svc_path("default"), &svc("same")).await.expect(201);
    let before = s.store.current_revision().await.unwrap();
    let put = s.put(&path, &created).await.expect(200);
    assert_eq!(rv(&put), rv(&created), "a PUT of the unchanged object must not bump resourceVersion");
    let patched = s.merge(&path, &json!({})).await.expect(200);
    assert_eq!(rv(&patched), rv(&created));
    let patched = s.merge(&path, &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await.expect(200);
    assert_eq!(rv(&patched), rv(&created), "re-sending the same spec is a no-op");
    let patched = s.patch(&path, "application/json-patch+json", &json!([])).await.expect(200);
    assert_eq!(rv(&patched), rv(&created));
    assert_eq!(s.store.current_revision().await.unwrap(), before, "nothing was written");
}

#[tokio::test]
async fn spec_changes_bump_generation_and_metadata_changes_do_not() {
    let s = TestServer::start().await;
    let path = format!("{}/gen", deploy_path("default"));
    let created = s.post(&deploy_path("default"), &deploy("gen", 1)).await.expect(201);
    assert_eq!(created["metadata"]["generation"], 1);
    let labeled = s.merge(&path, &json!({"metadata": {"labels": {"a": "b"}}})).await.expect(200);
    assert_eq!(labeled["metadata"]["generation"], 1, "a label change is not a spec change");
    assert!(rv(&labeled) > rv(&created));
    let scaled = s.merge(&path, &json!({"spec": {"replicas": 3}})).await.expect(200);
    assert_eq!(scaled["metadata"]["generation"], 2);
    let mut put = scaled.clone();
    put["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.example/web:2");
    let updated = s.put(&path, &put).await.expect(200);
    assert_eq!(updated["metadata"]["generation"], 3);
    // The client cannot set generation itself.
    let mut put = updated.clone();
    put["metadata"]["generation"] = json!(42);
    let out = s.put(&path, &put).await.expect(200);
    assert_eq!(out["metadata"]["generation"], 3);
}

#[tokio::test]
async fn status_writes_change_only_status_and_main_writes_never_status() {
    let s = TestServer::start().await;
    let path = format!("{}/st", deploy_path("default"));
    let mut body = deploy("st", 2);
    body["status"] = json!({"replicas": 99});
    let created = s.post(&deploy_path("default"), &body).await.expect(201);
    assert!(created["status"].get("replicas").is_none_or(|r| r != 99), "status is not set by a create: {created}");

    let status = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    let mut put = created.clone();
    put["spec"]["replicas"] = json!(7);
    put["metadata"]["labels"] = json!({"sneaky": "yes"});
    put["status"] = status.clone();
    let out = s.put(&format!("{path}/status"), &put).await.expect(200);
    assert_eq!(out["status"]["readyReplicas"], 2);
    assert_eq!(out["spec"]["replicas"], 2, "a status write must not change spec");
    assert!(out["metadata"]["labels"].get("sneaky").is_none(), "a status write must not change labels");
    assert_eq!(out["metadata"]["generation"], 1);
    let got = s.get(&path).await.expect(200);
    assert_eq!(got["spec"]["replicas"], 2);
    assert_eq!(got["status"]["availableReplicas"], 2);
    let via_status = s.get(&format!("{path}/status")).await.expect(200);
    assert_eq!(via_status["status"], got["status"]);

    let out = s
        .merge(
            &format!("{path}/status"),
            &json!({"status": {"readyReplicas": 1, "availableReplicas": 1}, "spec": {"replicas": 9}}),
        )
        .await
        .expect(200);
    assert_eq!(out["status"]["readyReplicas"], 1);
    assert_eq!(out["spec"]["replicas"], 2);

    // The main resource ignores status.
    let out = s.merge(&path, &json!({"status": {"readyReplicas": 0}, "spec": {"replicas": 3}})).await.expect(200);
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(out["status"]["readyReplicas"], 1, "a main-resource write must not change status");
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let s = TestServer::start().await;
    let dpath = format!("{}/web", deploy_path("default"));
    let spath = format!("{dpath}/scale");
    s.post(&deploy_path("default"), &deploy("web", 2)).await.expect(201);
    let scale = s.get(&spath).await.expect(200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["metadata"]["name"], "web");
    assert_eq!(scale["metadata"]["namespace"], "default");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");

    let mut put = scale.clone();
    put["spec"]["replicas"] = json!(5);
    let out = s.put(&spath, &put).await.expect(200);
    assert_eq!((out["kind"].as_str(), out["spec"]["replicas"].as_i64()), (Some("Scale"), Some(5)));
    let d = s.get(&dpath).await.expect(200);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(rv(&out), rv(&d));

    let out = s.merge(&spath, &json!({"spec": {"replicas": 3}})).await.expect(200);
    assert_eq!((out["kind"].as_str(), out["spec"]["replicas"].as_i64()), (Some("Scale"), Some(3)));
    let out =
        s.patch(&spath, "application/strategic-merge-patch+json", &json!({"spec": {"replicas": 4}})).await.expect(200);
    assert_eq!(out["spec"]["replicas"], 4);
    let out = s
        .patch(&spath, "application/json-patch+json", &json!([{"op": "replace", "path": "/spec/replicas", "value": 0}]))
        .await
        .expect(200);
    assert_eq!(out["spec"]["replicas"], 0);
    assert_eq!(s.get(&dpath).await.expect(200)["spec"]["replicas"], 0);

    // A stale resourceVersion on the Scale is a conflict; a Deployment body is the wrong kind.
    let mut stale = scale.clone();
    stale["spec"]["replicas"] = json!(8);
    s.put(&spath, &stale).await.expect_status(409, "Conflict");
    let d = s.get(&dpath).await.expect(200);
    s.put(&spath, &d).await.expect_status(400, "BadRequest");
    s.get(&format!("{}/nope/scale", deploy_path("default"))).await.expect_status(404, "NotFound");
}

#[tokio::test]
async fn deletecollection_honours_the_label_selector() {
    let s = TestServer::start().await;
    s.namespace("dc").await;
    for (name, tier) in [("a", "front"), ("b", "front"), ("c", "back")] {
        s.post(&cm_path("dc"), &cm_labeled(name, json!({"tier": tier}))).await.expect(201);
    }
    s.post(&cm_path("default"), &cm_labeled("elsewhere", json!({"tier": "front"}))).await.expect(201);
    let r = s.req(Method::DELETE, &format!("{}?labelSelector=tier%3Dfront", cm_path("dc")), &[], Body::empty()).await;
    let out = r.expect(200);
    assert_eq!(out["kind"], "ConfigMapList");
    assert_eq!(names(&out), ["a", "b"]);
    let left = s.get(&cm_path("dc")).await.expect(200);
    assert_eq!(names(&left), ["c"]);
    s.get(&format!("{}/elsewhere", cm_path("default"))).await.expect(200);

    // Services: a deleted Service frees its IP.
    let mut fixed = svc("ip");
    fixed["spec"]["clusterIP"] = json!("10.96.55.55");
    fixed["metadata"]["labels"] = json!({"x": "y"});
    s.post(&svc_path("dc"), &fixed).await.expect(201);
    let r = s.req(Method::DELETE, &format!("{}?labelSelector=x%3Dy", svc_path("dc")), &[], Body::empty()).await;
    assert_eq!(names(&r.expect(200)), ["ip"]);
    s.post(&svc_path("dc"), &fixed).await.expect(201);
}

#[tokio::test]
async fn generate_name_appends_a_random_suffix() {
    let s = TestServer::start().await;
    let body = json!({"metadata": {"generateName": "web-"}, "data": {"k": "v"}});
    let a = s.post(&cm_path("default"), &body).await.expect(201);
    let b = s.post(&cm_path("default"), &body).await.expect(201);
    let (na, nb) = (a["metadata"]["name"].as_str().unwrap(), b["metadata"]["name"].as_str().unwrap());
    assert_ne!(na, nb);
    for n in [na, nb] {
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        assert!(n[4..].chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{n}");
        s.get(&format!("{}/{n}", cm_path("default"))).await.expect(200);
    }
    assert_eq!(a["metadata"]["generateName"], "web-");
    let svc_body = json!({"metadata": {"generateName": "svc-"}, "spec": {"ports": [{"port": 80}]}});
    let out = s.post(&svc_path("default"), &svc_body).await.expect(201);
    assert!(out["metadata"]["name"].as_str().unwrap().starts_with("svc-"));
    // A name wins over generateName.
    let out =
        s.post(&cm_path("default"), &json!({"metadata": {"name": "fixed", "generateName": "x-"}})).await.expect(201);
    assert_eq!(out["metadata"]["name"], "fixed");
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_content_then_itself() {
    let s = TestServer::start().await;
    s.namespace("doomed").await;
    let mut fixed = svc("web");
    fixed["spec"]["clusterIP"] = json!("10.96.77.77");
    s.post(&svc_path("doomed"), &fixed).await.expect(201);
    s.post(&cm_path("doomed"), &cm("plain")).await.expect(201);
    s.post(&deploy_path("doomed"), &deploy("d", 1)).await.expect(201);
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "data": {"k": "v"}});
    s.post(&cm_path("doomed"), &held).await.expect(201);
    s.post(&cm_path("default"), &cm("bystander")).await.expect(201);

    let ns = s.delete("/api/v1/namespaces/doomed").await.expect(200);
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    assert_eq!(ns["status"]["phase"], "Terminating");

    for p in [
        format!("{}/web", svc_path("doomed")),
        format!("{}/plain", cm_path("doomed")),
        format!("{}/d", deploy_path("doomed")),
    ] {
        s.wait_for(&p, GC_WAIT, |code, _| code == 404).await;
    }
    // The object with a finalizer is marked and keeps the namespace.
    let held_now = s.get(&format!("{}/held", cm_path("doomed"))).await.expect(200);
    assert!(held_now["metadata"]["deletionTimestamp"].is_string(), "{held_now}");
    let ns = s.get("/api/v1/namespaces/doomed").await.expect(200);
    assert_eq!(ns["status"]["phase"], "Terminating");

    // No new content in a terminating namespace.
    let st = s.post(&cm_path("doomed"), &cm("late")).await.expect_status(403, "Forbidden");
    assert_eq!(
        st["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    s.post(&svc_path("doomed"), &svc("late")).await.expect_status(403, "Forbidden");

    // Releasing the finalizer lets the namespace go.
    s.merge(&format!("{}/held", cm_path("doomed")), &json!({"metadata": {"finalizers": null}})).await.expect(200);
    s.wait_for("/api/v1/namespaces/doomed", GC_WAIT, |code, _| code == 404).await;
    s.get(&format!("{}/bystander", cm_path("default"))).await.expect(200);
    // The deleted Service's IP is free again, and the namespace name can be reused.
    s.post(&svc_path("default"), &fixed).await.expect(201);
    s.namespace("doomed").await;
    s.post(&cm_path("doomed"), &cm("reborn")).await.expect(201);
}

fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
    })
}

/// Returns once the garbage collector has listed and is watching: a throwaway dependent of a
/// deleted owner is gone. (Until then a delete is only seen through the collector's relist.)
async fn gc_running(s: &TestServer) {
    let owner = s.post(&cm_path("default"), &cm("gc-probe-owner")).await.expect(201);
    let mut dep = cm("gc-probe-dep");
    dep["metadata"]["ownerReferences"] = json!([owner_ref(&owner)]);
    s.post(&cm_path("default"), &dep).await.expect(201);
    s.delete(&format!("{}/gc-probe-owner", cm_path("default"))).await.expect(200);
    s.wait_for(&format!("{}/gc-probe-dep", cm_path("default")), GC_WAIT, |c, _| c == 404).await;
}

#[tokio::test]
async fn dependents_are_collected_when_their_owner_is_deleted() {
    let s = TestServer::start().await;
    gc_running(&s).await;
    let owner = s.post(&cm_path("default"), &cm("owner")).await.expect(201);
    let other = s.post(&cm_path("default"), &cm("other-owner")).await.expect(201);
    let mut dep = cm("dep");
    dep["metadata"]["ownerReferences"] = json!([owner_ref(&owner)]);
    s.post(&cm_path("default"), &dep).await.expect(201);
    let mut dep_svc = svc("dep-svc");
    dep_svc["metadata"]["ownerReferences"] = json!([owner_ref(&owner)]);
    s.post(&svc_path("default"), &dep_svc).await.expect(201);
    let mut two = cm("two-owners");
    two["metadata"]["ownerReferences"] = json!([owner_ref(&owner), owner_ref(&other)]);
    s.post(&cm_path("default"), &two).await.expect(201);

    s.delete(&format!("{}/owner", cm_path("default"))).await.expect(200);
    s.wait_for(&format!("{}/dep", cm_path("default")), GC_WAIT, |c, _| c == 404).await;
    s.wait_for(&format!("{}/dep-svc", svc_path("default")), GC_WAIT, |c, _| c == 404).await;
    // A dependent with a live owner left only loses the reference to the gone one.
    let r = s
        .wait_for(&format!("{}/two-owners", cm_path("default")), GC_WAIT, |c, v| {
            c == 200 && v["metadata"]["ownerReferences"].as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert_eq!(r.json()["metadata"]["ownerReferences"][0]["uid"], other["metadata"]["uid"]);
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_without_the_reference() {
    let s = TestServer::start().await;
    for (name, how) in [("by-query", "query"), ("by-body", "body")] {
        let owner = s.post(&cm_path("default"), &cm(name)).await.expect(201);
        let dep_name = format!("{name}-dep");
        let mut dep = cm(&dep_name);
        dep["metadata"]["ownerReferences"] = json!([owner_ref(&owner)]);
        s.post(&cm_path("default"), &dep).await.expect(201);
        let path = format!("{}/{name}", cm_path("default"));
        let r = if how == "query" {
            s.req(Method::DELETE, &format!("{path}?propagationPolicy=Orphan"), &[], Body::empty()).await
        } else {
            let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}).to_string();
            s.req(Method::DELETE, &path, &[("content-type", "application/json")], body).await
        };
        // As upstream: the owner is marked with the `orphan` finalizer, the collector releases
        // the dependents, then the owner goes.
        let marked = r.expect(200);
        assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]));
        s.wait_for(&path, GC_WAIT, |c, _| c == 404).await;
        // Give the collector time to (wrongly) act.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let kept = s.get(&format!("{}/{dep_name}", cm_path("default"))).await.expect(200);
        let refs = &kept["metadata"]["ownerReferences"];
        assert!(refs.is_null() || refs.as_array().is_some_and(Vec::is_empty), "{how}: reference kept: {kept}");
    }
}

#[tokio::test]
async fn finalizers_keep_an_object_until_removed() {
    let s = TestServer::start().await;
    let path = format!("{}/fin", cm_path("default"));
    let body =
        json!({"metadata": {"name": "fin", "finalizers": ["example.com/a", "example.com/b"]}, "data": {"k": "v"}});
    s.post(&cm_path("default"), &body).await.expect(201);
    let del = s.delete(&path).await.expect(200);
    let ts = del["metadata"]["deletionTimestamp"].as_str().unwrap().to_string();
    let got = s.get(&path).await.expect(200);
    assert_eq!(got["metadata"]["deletionTimestamp"], ts.as_str());
    // Deleting again changes nothing.
    let again = s.delete(&path).await.expect(200);
    assert_eq!(again["metadata"]["deletionTimestamp"], ts.as_str());
    assert_eq!(rv(&again), rv(&got));
    // The client cannot clear deletionTimestamp.
    let mut put = got.clone();
    put["metadata"]["deletionTimestamp"] = Value::Null;
    put["metadata"]["labels"] = json!({"l": "1"});
    let out = s.put(&path, &put).await.expect(200);
    assert_eq!(out["metadata"]["deletionTimestamp"], ts.as_str());
    // Removing one finalizer keeps it; removing the last deletes it.
    s.patch(&path, "application/json-patch+json", &json!([{"op": "remove", "path": "/metadata/finalizers/0"}]))
        .await
        .expect(200);
    s.get(&path).await.expect(200);
    s.merge(&path, &json!({"metadata": {"finalizers": null}})).await.expect(200);
    s.get(&path).await.expect_status(404, "NotFound");
}

/// Runs `f` on a fresh runtime and drops the runtime afterwards, which stops the server's
/// background tasks and releases the store.
fn on_runtime<F: std::future::Future<Output = T>, T>(f: F) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let out = rt.block_on(f);
    rt.shutdown_timeout(Duration::from_secs(10));
    out
}

#[test]
fn an_owner_deleted_while_the_server_was_down_is_acted_on_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let other_uid = on_runtime(async {
        let s = TestServer::start_at(&db, None).await;
        let owner = s.post(&cm_path("default"), &cm("owner")).await.expect(201);
        let other = s.post(&cm_path("default"), &cm("other-owner")).await.expect(201);
        let mut dep = cm("dep");
        dep["metadata"]["ownerReferences"] = json!([owner_ref(&owner)]);
        s.post(&cm_path("default"), &dep).await.expect(201);
        let mut two = cm("two-owners");
        two["metadata"]["ownerReferences"] = json!([owner_ref(&owner), owner_ref(&other)]);
        s.post(&cm_path("default"), &two).await.expect(201);
        other["metadata"]["uid"].clone()
    });
    // The owner goes while no server runs (as if the server died before its collector saw
    // the delete).
    on_runtime(async {
        let store = pier_store::sqlite::SqliteStore::open(&db).unwrap();
        pier_store::Store::delete(&store, "/registry/core/configmaps/default/owner", None).await.unwrap();
    });
    on_runtime(async {
        let s = TestServer::start_at(&db, None).await;
        s.wait_for(&format!("{}/dep", cm_path("default")), GC_WAIT, |c, _| c == 404).await;
        let r = s
            .wait_for(&format!("{}/two-owners", cm_path("default")), GC_WAIT, |c, v| {
                c == 200 && v["metadata"]["ownerReferences"].as_array().is_some_and(|a| a.len() == 1)
            })
            .await;
        assert_eq!(r.json()["metadata"]["ownerReferences"][0]["uid"], other_uid);
    });
}

/// `limit` and `continue` as upstream's chunking: pages of at most `limit` items that
/// together are the list, each carrying the first page's resourceVersion, the last one
/// without a token; label selectors filter before the limit counts; bad tokens are refused.
#[tokio::test]
async fn lists_come_in_pages_with_limit_and_continue() {
    let s = TestServer::start().await;
    for i in 0..7 {
        let mut body = svc(&format!("page-{i}"));
        body["metadata"]["labels"] = json!({"odd": if i % 2 == 1 { "yes" } else { "no" }});
        s.post(&svc_path("default"), &body).await.expect(201);
    }
    let whole = s.get(&svc_path("default")).await.expect(200);
    assert!(whole["metadata"].get("continue").is_none(), "{whole}");
    let mut seen = Vec::new();
    let mut path = format!("{}?limit=3", svc_path("default"));
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = s.get(&path).await.expect(200);
        pages += 1;
        assert!(page["items"].as_array().unwrap().len() <= 3, "{page}");
        assert_eq!(*first_rv.get_or_insert_with(|| rv(&page)), rv(&page));
        seen.extend(names(&page));
        // A write between pages: the later pages still report the first page's revision.
        if pages == 1 {
            s.post(&svc_path("default"), &svc("zz-late")).await.expect(201);
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{}?limit=3&continue={token}", svc_path("default")),
            None => break,
        }
    }
    assert_eq!(pages, 3, "7 Services (plus one written meanwhile) in pages of 3");
    let mut expected = names(&whole);
    expected.push("zz-late".into());
    seen.sort();
    assert_eq!(seen, expected);

    // The selector filters first: 3 odd Services, pages of 2.
    let odd = s.get(&format!("{}?labelSelector=odd%3Dyes&limit=2", svc_path("default"))).await.expect(200);
    assert_eq!(names(&odd), ["page-1", "page-3"]);
    let token = odd["metadata"]["continue"].as_str().unwrap().to_string();
    let rest =
        s.get(&format!("{}?labelSelector=odd%3Dyes&limit=2&continue={token}", svc_path("default"))).await.expect(200);
    assert_eq!(names(&rest), ["page-5"]);
    assert!(rest["metadata"].get("continue").is_none(), "{rest}");

    let bad = s.get(&format!("{}?limit=2&continue=bm90LWEtdG9rZW4", svc_path("default"))).await.expect(400);
    assert!(bad["message"].as_str().unwrap().starts_with("continue key is not valid"), "{bad}");
    let both = s.get(&format!("{}?limit=2&continue={token}&resourceVersion=5", svc_path("default"))).await.expect(400);
    assert_eq!(both["message"], "specifying resource version is not allowed when using continue");
}
