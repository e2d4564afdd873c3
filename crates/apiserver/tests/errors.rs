//! Error answers as a Kubernetes client sees them: HTTP code, `Status` reason, message and
//! details for not-found, conflicts, validation, malformed or oversized bodies, media types,
//! methods, unknown paths, authentication, `fieldValidation` and `dryRun`.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn not_found_names_the_resource_and_carries_details() {
    let s = TestServer::start().await;
    let r = s.get(&format!("{}/x", svc_path("default"))).await;
    let st = r.expect_status(404, "NotFound");
    assert_eq!(st["message"], "services \"x\" not found");
    assert_eq!(st["details"]["name"], "x");
    assert_eq!(st["details"]["kind"], "services");
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));

    let st = s.get(&format!("{}/x", deploy_path("default"))).await.expect_status(404, "NotFound");
    assert_eq!(st["message"], "deployments.apps \"x\" not found");
    assert_eq!(st["details"]["group"], "apps");
    assert_eq!(st["details"]["kind"], "deployments");

    for (method, path) in [
        (Method::DELETE, format!("{}/x", svc_path("default"))),
        (Method::GET, format!("{}/x/status", svc_path("default"))),
        (Method::GET, "/api/v1/namespaces/nope".to_string()),
    ] {
        let st = s.req(method.clone(), &path, &[], Body::empty()).await.expect_status(404, "NotFound");
        assert!(st["message"].as_str().unwrap().ends_with("not found"), "{method} {path}: {st}");
    }
    let st = s
        .merge(&format!("{}/x", svc_path("default")), &json!({"metadata": {"labels": {"a": "b"}}}))
        .await
        .expect_status(404, "NotFound");
    assert_eq!(st["message"], "services \"x\" not found");
    let st = s.put(&format!("{}/x", svc_path("default")), &svc("x")).await.expect_status(404, "NotFound");
    assert_eq!(st["message"], "services \"x\" not found");
    // Creating in a namespace that does not exist.
    let st = s.post(&cm_path("nope"), &cm("c")).await.expect_status(404, "NotFound");
    assert_eq!(st["message"], "namespaces \"nope\" not found");
}

#[tokio::test]
async fn create_twice_is_already_exists() {
    let s = TestServer::start().await;
    s.post(&svc_path("default"), &svc("a")).await.expect(201);
    let st = s.post(&svc_path("default"), &svc("a")).await.expect_status(409, "AlreadyExists");
    assert_eq!(st["message"], "services \"a\" already exists");
    assert_eq!(st["details"]["name"], "a");
    assert_eq!(st["details"]["kind"], "services");
    s.post(&cm_path("default"), &cm("c")).await.expect(201);
    let st = s.post(&cm_path("default"), &cm("c")).await.expect_status(409, "AlreadyExists");
    assert_eq!(st["message"], "configmaps \"c\" already exists");
}

#[tokio::test]
async fn put_with_a_stale_resource_version_is_conflict() {
    let s = TestServer::start().await;
    let created = s.post(&cm_path("default"), &cm("a")).await.expect(201);
    let path = format!("{}/a", cm_path("default"));
    let mut v1 = created.clone();
    v1["data"]["k"] = json!("v1");
    s.put(&path, &v1).await.expect(200);
    let mut stale = created.clone();
    stale["data"]["k"] = json!("stale");
    let st = s.put(&path, &stale).await.expect_status(409, "Conflict");
    assert_eq!(
        st["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(st["details"]["kind"], "configmaps");
    assert_eq!(s.get(&path).await.expect(200)["data"]["k"], "v1", "the stale write changed nothing");
    // A merge patch carrying a stale resourceVersion is a conflict too.
    let st = s
        .merge(
            &path,
            &json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"k": "x"}}),
        )
        .await
        .expect_status(409, "Conflict");
    assert!(st["message"].as_str().unwrap().contains("the object has been modified"));
    // So is a delete with a stale precondition or the wrong uid.
    for pre in [json!({"resourceVersion": created["metadata"]["resourceVersion"]}), json!({"uid": "not-the-uid"})] {
        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre}).to_string();
        let r = s.req(Method::DELETE, &path, &[("content-type", "application/json")], body).await;
        let st = r.expect_status(409, "Conflict");
        assert!(
            st["message"].as_str().unwrap().contains("Precondition failed")
                || st["message"].as_str().unwrap().contains("precondition"),
            "{st}"
        );
    }
    s.get(&path).await.expect(200);
}

#[tokio::test]
async fn invalid_objects_are_422_with_causes() {
    let s = TestServer::start().await;
    let mut bad = svc("bad");
    bad["spec"]["ports"][0]["port"] = json!(0);
    let st = s.post(&svc_path("default"), &bad).await.expect_status(422, "Invalid");
    let msg = st["message"].as_str().unwrap();
    assert!(msg.starts_with("Service \"bad\" is invalid: "), "{msg}");
    assert!(msg.contains("spec.ports[0].port"), "{msg}");
    assert_eq!(st["details"]["name"], "bad");
    assert_eq!(st["details"]["kind"], "Service");
    let causes = st["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == "spec.ports[0].port" && c["reason"] == "FieldValueInvalid"),
        "{causes:?}"
    );

    let st = s
        .post(&svc_path("default"), &json!({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 80}]}}))
        .await
        .expect_status(422, "Invalid");
    let causes = st["details"]["causes"].as_array().unwrap();
    assert!(causes.iter().any(|c| c["field"] == "metadata.name"), "{causes:?}");

    let st = s
        .post(&svc_path("default"), &json!({"metadata": {"name": "noports"}, "spec": {}}))
        .await
        .expect_status(422, "Invalid");
    let causes = st["details"]["causes"].as_array().unwrap();
    assert!(causes.iter().any(|c| c["field"] == "spec.ports" && c["reason"] == "FieldValueRequired"), "{causes:?}");

    // Nothing was stored.
    let list = s.get(&svc_path("default")).await.expect(200);
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["kubernetes"]);

    // Scale below zero is Invalid too.
    s.post(&deploy_path("default"), &deploy("d", 1)).await.expect(201);
    let st = s
        .merge(&format!("{}/d/scale", deploy_path("default")), &json!({"spec": {"replicas": -1}}))
        .await
        .expect_status(422, "Invalid");
    assert!(st["message"].as_str().unwrap().contains("spec.replicas"), "{st}");
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let s = TestServer::start().await;
    let post = |body: &'static str, ct: &'static str| {
        let s = &s;
        async move { s.req(Method::POST, &svc_path("default"), &[("content-type", ct)], body).await }
    };
    // Malformed JSON and YAML.
    let st = post("{\"metadata\":", "application/json").await.expect_status(400, "BadRequest");
    assert!(st["message"].as_str().unwrap().contains("json parse error"), "{st}");
    post("metadata: [unclosed", "application/yaml").await.expect_status(400, "BadRequest");
    post("", "application/json").await.expect_status(400, "BadRequest");
    post("[1,2,3]", "application/json").await.expect_status(400, "BadRequest");
    post("\"just a string\"", "application/json").await.expect_status(400, "BadRequest");

    // A kind or apiVersion that does not match the URL.
    let st = s.post(&svc_path("default"), &cm("c")).await.expect_status(400, "BadRequest");
    assert!(st["message"].as_str().unwrap().contains("ConfigMap"), "{st}");
    let mut v = svc("a");
    v["apiVersion"] = json!("apps/v1");
    s.post(&svc_path("default"), &v).await.expect_status(400, "BadRequest");

    // A field of the wrong type.
    let mut v = svc("a");
    v["spec"]["ports"][0]["port"] = json!("eighty");
    let st = s.post(&svc_path("default"), &v).await.expect_status(400, "BadRequest");
    let msg = st["message"].as_str().unwrap();
    assert!(msg.starts_with("Service in version \"v1\" cannot be handled as a Service: "), "{msg}");
    let mut v = svc("a");
    v["metadata"]["labels"] = json!(["not", "a", "map"]);
    s.post(&svc_path("default"), &v).await.expect_status(400, "BadRequest");

    // A namespace or name in the body that disagrees with the URL.
    let mut v = svc("a");
    v["metadata"]["namespace"] = json!("kube-system");
    s.post(&svc_path("default"), &v).await.expect_status(400, "BadRequest");
    s.post(&svc_path("default"), &svc("a")).await.expect(201);
    s.put(&format!("{}/a", svc_path("default")), &svc("b")).await.expect_status(400, "BadRequest");

    // Bad query values.
    s.get(&format!("{}?labelSelector=a%3D%3D%3Db", svc_path("default"))).await.expect_status(400, "BadRequest");
    let r = s
        .req(
            Method::POST,
            &format!("{}?dryRun=Some", cm_path("default")),
            &[("content-type", "application/json")],
            cm("z").to_string(),
        )
        .await;
    r.expect_status(400, "BadRequest");
    let r = s
        .req(
            Method::POST,
            &format!("{}?fieldValidation=Loose", cm_path("default")),
            &[("content-type", "application/json")],
            cm("z").to_string(),
        )
        .await;
    r.expect_status(400, "BadRequest");
    let r = s
        .req(Method::DELETE, &format!("{}/a?propagationPolicy=Eventually", svc_path("default")), &[], Body::empty())
        .await;
    r.expect_status(400, "BadRequest");
    let r = s
        .req(
            Method::PATCH,
            &format!("{}/a", svc_path("default")),
            &[("content-type", "application/json-patch+json")],
            "{\"op\":1}",
        )
        .await;
    r.expect_status(400, "BadRequest");
    let r = s
        .req(
            Method::PATCH,
            &format!("{}/a", svc_path("default")),
            &[("content-type", "application/merge-patch+json")],
            "{nope",
        )
        .await;
    r.expect_status(400, "BadRequest");
}

#[tokio::test]
async fn bodies_over_3_mib_are_413() {
    let s = TestServer::start().await;
    let big = format!("{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}", "x".repeat(3 * 1024 * 1024));
    let r = s.req(Method::POST, &cm_path("default"), &[("content-type", "application/json")], big.clone()).await;
    let st = r.expect_status(413, "RequestEntityTooLarge");
    assert!(st["message"].as_str().unwrap().contains("Request entity too large"), "{st}");
    s.post(&cm_path("default"), &cm("big")).await.expect(201);
    let path = format!("{}/big", cm_path("default"));
    let r = s.req(Method::PUT, &path, &[("content-type", "application/json")], big.clone()).await;
    r.expect_status(413, "RequestEntityTooLarge");
    let r = s.req(Method::PATCH, &path, &[("content-type", "application/merge-patch+json")], big).await;
    r.expect_status(413, "RequestEntityTooLarge");
    assert_eq!(s.get(&path).await.expect(200)["data"]["k"], "v");
}

#[tokio::test]
async fn protobuf_and_unknown_media_types_are_415() {
    let s = TestServer::start().await;
    let pb = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace".to_vec();
    let r = s
        .req(Method::POST, "/api/v1/namespaces", &[("content-type", "application/vnd.kubernetes.protobuf")], pb.clone())
        .await;
    let st = r.expect_status(415, "UnsupportedMediaType");
    let msg = st["message"].as_str().unwrap();
    assert!(msg.contains("application/json") && msg.contains("kubectl apply"), "{msg}");
    s.post(&cm_path("default"), &cm("a")).await.expect(201);
    let path = format!("{}/a", cm_path("default"));
    for (method, ct) in [
        (Method::PUT, "application/vnd.kubernetes.protobuf"),
        (Method::PATCH, "application/vnd.kubernetes.protobuf"),
        (Method::POST, "text/plain"),
        (Method::PATCH, "application/json"),
        (Method::PATCH, "text/plain"),
    ] {
        let p = if method == Method::POST { cm_path("default") } else { path.clone() };
        let r = s.req(method.clone(), &p, &[("content-type", ct)], pb.clone()).await;
        r.expect_status(415, "UnsupportedMediaType");
    }
}

#[tokio::test]
async fn unsupported_methods_are_405() {
    let s = TestServer::start().await;
    s.post(&cm_path("default"), &cm("a")).await.expect(201);
    for (method, path) in [
        (Method::PUT, cm_path("default")),
        (Method::PATCH, cm_path("default")),
        (Method::POST, format!("{}/a", cm_path("default"))),
        (Method::DELETE, "/api".to_string()),
        (Method::POST, "/apis".to_string()),
        (Method::PUT, "/api/v1".to_string()),
    ] {
        let r = s.req(method.clone(), &path, &[("content-type", "application/json")], "{}").await;
        let st = r.expect_status(405, "MethodNotAllowed");
        assert!(!st["message"].as_str().unwrap().is_empty(), "{method} {path}");
    }
}

#[tokio::test]
async fn unknown_resources_and_groups_are_404() {
    let s = TestServer::start().await;
    for path in [
        "/api/v1/namespaces/default/widgets",
        "/api/v1/widgets",
        "/api/v2/namespaces/default/services",
        "/apis/nope.example.com",
        "/apis/nope.example.com/v1",
        "/apis/nope.example.com/v1/things",
        "/apis/nope.example.com/v1/namespaces/default/things/x",
        "/apis/apps/v2/deployments",
        "/api/v1/namespaces/default/services/x/bogus",
        "/nonsense",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        let st = r.expect_status(404, "NotFound");
        assert!(!st["message"].as_str().unwrap().is_empty(), "{path}");
    }
    // Creating through an unknown resource stores nothing.
    let before = s.snapshot("/").await;
    let r = s
        .req(
            Method::POST,
            "/apis/nope.example.com/v1/namespaces/default/things",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    r.expect_status(404, "NotFound");
    assert_eq!(before, s.snapshot("/").await);
}

#[tokio::test]
async fn a_configured_token_is_required_except_for_version_and_health() {
    let s = TestServer::start_with_token(Some("s3cret-token")).await;
    let list = svc_path("default");
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong-token")],
        vec![("authorization", "Bearer s3cret-toke")],
        vec![("authorization", "Bearer s3cret-token-and-more")],
        vec![("authorization", "Basic czNjcmV0LXRva2Vu")],
        vec![("authorization", "s3cret-token")],
    ] {
        let r = s.req(Method::GET, &list, &headers, Body::empty()).await;
        let st = r.expect_status(401, "Unauthorized");
        assert_eq!(st["message"], "Unauthorized");
        let r = s.req(Method::GET, "/api", &headers, Body::empty()).await;
        r.expect_status(401, "Unauthorized");
        // An unauthenticated write stores nothing.
        let mut h = headers.clone();
        h.push(("content-type", "application/json"));
        let r = s.req(Method::POST, &cm_path("default"), &h, cm("sneaky").to_string()).await;
        r.expect_status(401, "Unauthorized");
    }
    for path in ["/version", "/livez", "/readyz", "/healthz"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200, "{path} must be open without a token: {}", r.text());
    }
    assert!(s.get("/version").await.json()["gitVersion"].is_string());
    let auth = [("authorization", "Bearer s3cret-token")];
    let r = s.req(Method::GET, &list, &auth, Body::empty()).await;
    assert_eq!(r.expect(200)["kind"], "ServiceList");
    let r = s.req(Method::GET, &format!("{}/sneaky", cm_path("default")), &auth, Body::empty()).await;
    r.expect_status(404, "NotFound");
}

#[tokio::test]
async fn field_validation_strict_warn_and_ignore() {
    let s = TestServer::start().await;
    let with_foo = |name: &str| {
        let mut v = svc(name);
        v["spec"]["foo"] = json!("bar");
        v
    };
    let post = |q: &'static str, v: Value| {
        let s = &s;
        async move {
            s.req(
                Method::POST,
                &format!("{}{q}", svc_path("default")),
                &[("content-type", "application/json")],
                v.to_string(),
            )
            .await
        }
    };
    let st = post("?fieldValidation=Strict", with_foo("strict")).await.expect_status(400, "BadRequest");
    assert_eq!(
        st["message"],
        "Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.foo\""
    );
    s.get(&format!("{}/strict", svc_path("default"))).await.expect_status(404, "NotFound");

    for q in ["?fieldValidation=Warn", ""] {
        let name = if q.is_empty() { "default-warn" } else { "warn" };
        let r = post(q, with_foo(name)).await;
        r.expect(201);
        let warnings = r.header_all("warning");
        assert_eq!(warnings, ["299 - \"unknown field \\\"spec.foo\\\"\""], "query {q:?}");
        let got = s.get(&format!("{}/{name}", svc_path("default"))).await.expect(200);
        assert!(got["spec"].get("foo").is_none(), "unknown fields are never stored: {got}");
    }

    let r = post("?fieldValidation=Ignore", with_foo("ignore")).await;
    r.expect(201);
    assert!(r.header_all("warning").is_empty());
    assert!(r.json()["spec"].get("foo").is_none());
    let got = s.get(&format!("{}/ignore", svc_path("default"))).await.expect(200);
    assert!(got["spec"].get("foo").is_none());

    // Duplicate fields in the JSON text.
    let dup = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"data":{"k":"v"}}"#;
    let r = s
        .req(
            Method::POST,
            &format!("{}?fieldValidation=Strict", cm_path("default")),
            &[("content-type", "application/json")],
            dup,
        )
        .await;
    let st = r.expect_status(400, "BadRequest");
    assert!(
        st["message"].as_str().unwrap().ends_with("strict decoding error: duplicate field \"metadata.name\""),
        "{st}"
    );
    let r = s.req(Method::POST, &cm_path("default"), &[("content-type", "application/json")], dup).await;
    r.expect(201);
    assert_eq!(r.header_all("warning"), ["299 - \"duplicate field \\\"metadata.name\\\"\""]);

    // Patches are validated the same way.
    let path = format!("{}/ignore", svc_path("default"));
    let r = s
        .req(
            Method::PATCH,
            &format!("{path}?fieldValidation=Strict"),
            &[("content-type", "application/merge-patch+json")],
            r#"{"spec":{"foo":1}}"#,
        )
        .await;
    let st = r.expect_status(400, "BadRequest");
    assert!(st["message"].as_str().unwrap().contains("unknown field \"spec.foo\""), "{st}");
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let s = TestServer::start().await;
    let before = s.snapshot("/").await;
    let mut fixed = svc("dry");
    fixed["spec"]["clusterIP"] = json!("10.96.200.200");
    let r = s
        .req(
            Method::POST,
            &format!("{}?dryRun=All", svc_path("default")),
            &[("content-type", "application/json")],
            fixed.to_string(),
        )
        .await;
    let out = r.expect(201);
    assert_eq!(out["spec"]["clusterIP"], "10.96.200.200");
    assert!(out["metadata"]["uid"].is_string());
    let r = s
        .req(
            Method::POST,
            &format!("{}?dryRun=All", cm_path("default")),
            &[("content-type", "application/json")],
            cm("dry").to_string(),
        )
        .await;
    r.expect(201);
    assert_eq!(before, s.snapshot("/").await, "a dry-run create wrote to the store");
    s.get(&format!("{}/dry", svc_path("default"))).await.expect_status(404, "NotFound");
    // The IP a dry run "allocated" is free.
    s.post(&svc_path("default"), &fixed).await.expect(201);

    let path = format!("{}/dry", svc_path("default"));
    let before = s.snapshot("/").await;
    let r = s
        .req(
            Method::PATCH,
            &format!("{path}?dryRun=All"),
            &[("content-type", "application/merge-patch+json")],
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        )
        .await;
    assert_eq!(r.expect(200)["metadata"]["labels"]["x"], "y");
    let mut put = s.get(&path).await.expect(200);
    put["spec"]["type"] = json!("NodePort");
    let r = s
        .req(Method::PUT, &format!("{path}?dryRun=All"), &[("content-type", "application/json")], put.to_string())
        .await;
    let out = r.expect(200);
    let np = out["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let r = s.req(Method::DELETE, &format!("{path}?dryRun=All"), &[], Body::empty()).await;
    r.expect(200);
    assert_eq!(before, s.snapshot("/").await, "a dry-run update or delete wrote to the store");
    s.get(&path).await.expect(200);
    // The node port the dry-run update showed is not held.
    s.post(&svc_path("default"), &node_port_svc("np", Some(np as u16))).await.expect(201);
}

#[tokio::test]
async fn json_patch_that_does_not_apply_is_422() {
    let s = TestServer::start().await;
    s.post(&cm_path("default"), &cm("a")).await.expect(201);
    let path = format!("{}/a", cm_path("default"));
    for patch in [
        json!([{"op": "test", "path": "/data/k", "value": "other"}]),
        json!([{"op": "remove", "path": "/data/missing"}]),
        json!([{"op": "replace", "path": "/spec/nothing", "value": 1}]),
    ] {
        let r = s.patch(&path, "application/json-patch+json", &patch).await;
        r.expect_status(422, "Invalid");
    }
    // A patch that is not a JSON patch at all stays a 400.
    s.patch(&path, "application/json-patch+json", &json!({"op": "add"})).await.expect_status(400, "BadRequest");
}

#[tokio::test]
async fn json_patch_with_more_than_10000_operations_is_413() {
    let s = TestServer::start().await;
    s.post(&cm_path("default"), &cm("a")).await.expect(201);
    let ops: Vec<Value> = (0..10_001).map(|_| json!({"op": "test", "path": "/data/k", "value": "v"})).collect();
    let r = s.patch(&format!("{}/a", cm_path("default")), "application/json-patch+json", &json!(ops)).await;
    let st = r.expect_status(413, "RequestEntityTooLarge");
    assert!(st["message"].as_str().unwrap().contains("10000"), "{st}");
}

/// Sends a PATCH on its own task, so a handler panic is reported instead of unwinding here.
async fn patch_catching(s: &TestServer, path: &str, ct: &'static str, body: &'static str) -> Result<Resp, String> {
    let router = s.router.clone();
    let path = path.to_string();
    tokio::spawn(async move { send(&router, Method::PATCH, &path, &[("content-type", ct)], body).await })
        .await
        .map_err(|e| format!("PANIC: {e}"))
}

/// The object the whole-object patch tests aim at, and how to tell it is intact.
fn keeper() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "keep", "labels": {"keep": "me"}, "annotations": {"a": "b"}}, "data": {"k": "v"}})
}

async fn reset_keeper(s: &TestServer) {
    s.delete(&format!("{}/keep", cm_path("default"))).await;
    s.post(&cm_path("default"), &keeper()).await.expect(201);
    s.post(&deploy_path("default"), &deploy("keep", 3)).await;
    s.merge(&format!("{}/keep/scale", deploy_path("default")), &json!({"spec": {"replicas": 3}})).await.expect(200);
}

/// Checks one patch that must be refused with a 4xx Status and leave the object as it was.
async fn refused_and_unchanged(s: &TestServer, target: &str, ct: &'static str, body: &'static str) -> Option<String> {
    let (path, scale) = match target {
        "scale" => (format!("{}/keep/scale", deploy_path("default")), true),
        _ => (format!("{}/keep", cm_path("default")), false),
    };
    let problem = match patch_catching(s, &path, ct, body).await {
        Err(panic) => Some(panic),
        Ok(r) if !(400..500).contains(&r.status) => Some(format!("{} {}", r.status, r.text())),
        Ok(r) => {
            let st = r.json();
            (st["kind"] != "Status" || st["code"] != json!(r.status)).then(|| format!("not a Status: {st}"))
        }
    };
    let intact = if scale {
        s.get(&format!("{}/keep", deploy_path("default"))).await.json()["spec"]["replicas"] == 3
    } else {
        let got = s.get(&format!("{}/keep", cm_path("default"))).await.json();
        got["data"] == keeper()["data"]
            && got["metadata"]["labels"]["keep"] == "me"
            && got["metadata"]["annotations"]["a"] == "b"
    };
    let problem = match (problem, intact) {
        (None, true) => None,
        (p, intact) => Some(format!(
            "{target} {ct} {body}: {}{}",
            p.unwrap_or_default(),
            if intact { "" } else { " [object changed]" }
        )),
    };
    reset_keeper(s).await;
    problem
}

#[tokio::test]
async fn patches_whose_result_is_not_an_object_are_refused_not_a_panic() {
    let s = TestServer::start().await;
    reset_keeper(&s).await;
    let mut problems = Vec::new();
    for (target, ct, body) in [
        ("cm", "application/merge-patch+json", "[]"),
        ("cm", "application/merge-patch+json", "1"),
        ("cm", "application/merge-patch+json", "\"x\""),
        ("cm", "application/merge-patch+json", "true"),
        ("scale", "application/merge-patch+json", "[]"),
        ("cm", "application/json-patch+json", r#"[{"op":"replace","path":"","value":1}]"#),
        ("cm", "application/json-patch+json", r#"[{"op":"add","path":"","value":[]}]"#),
        ("cm", "application/json-patch+json", r#"[{"op":"copy","from":"/data/k","path":""}]"#),
        ("scale", "application/json-patch+json", r#"[{"op":"move","from":"/spec/replicas","path":""}]"#),
    ] {
        problems.extend(refused_and_unchanged(&s, target, ct, body).await);
    }
    s.get("/version").await.expect(200);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn patches_that_replace_the_whole_object_are_refused() {
    let s = TestServer::start().await;
    reset_keeper(&s).await;
    let mut problems = Vec::new();
    for (target, ct, body) in [
        ("cm", "application/merge-patch+json", "null"),
        ("cm", "application/merge-patch+json", r#"{"metadata":null}"#),
        ("cm", "application/json-patch+json", r#"[{"op":"replace","path":"","value":{}}]"#),
        ("cm", "application/json-patch+json", r#"[{"op":"replace","path":"","value":null}]"#),
        ("cm", "application/json-patch+json", r#"[{"op":"remove","path":"/metadata"}]"#),
        ("cm", "application/strategic-merge-patch+json", r#"{"$patch":"replace"}"#),
        ("cm", "application/strategic-merge-patch+json", r#"{"$patch":"delete"}"#),
        ("scale", "application/merge-patch+json", "null"),
        ("scale", "application/json-patch+json", r#"[{"op":"replace","path":"","value":{}}]"#),
    ] {
        problems.extend(refused_and_unchanged(&s, target, ct, body).await);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
