//! Tests of the patch engine: the patches kubectl sends (kubectl-compat.md §2), each
//! strategic-merge directive and merge key, the errors, server-side apply's ownership rules,
//! strict field validation, and properties.

use serde_json::{Value, json};

use super::*;

fn ts(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(second).expect("valid timestamp")
}

fn smp(kind: &str, original: Value, patch: Value) -> Result<Value, PatchError> {
    strategic_merge_patch(kind, &original, patch.to_string().as_bytes())
}

fn service(ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubia", "namespace": "default", "labels": {"app": "kubia"}},
        "spec": {"ports": ports, "selector": {"app": "kubia"}, "type": "ClusterIP"}
    })
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kubia", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kubia"}},
                 "template": {"metadata": {"labels": {"app": "kubia"}}, "spec": {"containers": containers}}}
    })
}

#[test]
fn content_types() {
    assert_eq!(PatchType::from_content_type("application/strategic-merge-patch+json"), Some(PatchType::Strategic));
    assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
    assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
    assert_eq!(PatchType::from_content_type("Application/Apply-Patch+YAML"), Some(PatchType::Apply));
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(PatchType::Apply.content_type(), "application/apply-patch+yaml");
}

// === Strategic merge patch: what kubectl sends ===

#[test]
fn smp_client_side_apply_of_a_service() {
    // kubectl-compat.md §2 `kubectl apply -f svc.yaml` (object present).
    let live = service(json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}]));
    let patch = json!({
        "metadata": {"annotations": {LAST_APPLIED_ANNOTATION: "{...new manifest...}\n"}},
        "spec": {"$setElementOrder/ports": [{"port": 80}], "ports": [{"port": 80, "targetPort": 9090}]}
    });
    let out = smp("Service", live, patch).expect("applies");
    assert_eq!(out["spec"]["ports"], json!([{"port": 80, "protocol": "TCP", "targetPort": 9090}]));
    assert_eq!(out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION], "{...new manifest...}\n");
    assert_eq!(out["metadata"]["labels"], json!({"app": "kubia"}));
    assert_eq!(out["spec"]["selector"], json!({"app": "kubia"}));
}

#[test]
fn smp_edit_keeps_the_other_ports() {
    let live = service(json!([
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
    ]));
    let patch = json!({"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}], "ports": [{"port": 80, "targetPort": 8081}]}});
    let out = smp("Service", live, patch).expect("applies");
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8081},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
}

#[test]
fn smp_apply_that_changes_the_port_number() {
    // What kubectl's three-way diff sends when the manifest's port 80 becomes 8080.
    let live = service(json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}]));
    let patch = json!({"spec": {
        "$setElementOrder/ports": [{"port": 8080}],
        "ports": [{"port": 8080, "targetPort": 8080}, {"$patch": "delete", "port": 80}]
    }});
    let out = smp("Service", live, patch).expect("applies");
    assert_eq!(out["spec"]["ports"], json!([{"port": 8080, "targetPort": 8080}]));
}

#[test]
fn smp_set_image() {
    let live = deployment(json!([
        {"name": "sidecar", "image": "busybox"},
        {"name": "kubia", "image": "luksa/kubia", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
    ]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "kubia"}],
        "containers": [{"image": "nginx", "name": "kubia"}]
    }}}});
    let out = smp("Deployment", live, patch).expect("applies");
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "sidecar", "image": "busybox"},
            {"name": "kubia", "image": "nginx", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
        ])
    );
}

// === Strategic merge patch: table of merge keys, strategies and directives ===

struct Case {
    name: &'static str,
    kind: &'static str,
    original: Value,
    patch: Value,
    expected: Value,
}

fn smp_cases() -> Vec<Case> {
    vec![
        Case {
            name: "maps merge recursively and null deletes",
            kind: "ConfigMap",
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}),
            patch: json!({"metadata": {"labels": {"b": null, "c": "3"}}, "data": {"y": "2"}}),
            expected: json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "data": {"x": "1", "y": "2"}}),
        },
        Case {
            name: "null for a missing key is ignored and nulls in new values dropped",
            kind: "ConfigMap",
            original: json!({"data": {"x": "1"}}),
            patch: json!({"nope": null, "metadata": {"labels": {"a": "1", "b": null}}}),
            expected: json!({"data": {"x": "1"}, "metadata": {"labels": {"a": "1"}}}),
        },
        Case {
            name: "scalars and primitive lists replace",
            kind: "Pod",
            original: json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"], "image": "x"}]}}),
            patch: json!({"spec": {"containers": [{"name": "c", "args": ["z"]}]}}),
            expected: json!({"spec": {"containers": [{"name": "c", "args": ["z"], "image": "x"}]}}),
        },
        Case {
            name: "finalizers merge as a set",
            kind: "Service",
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {"finalizers": ["c", "a"]}}),
            expected: json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList with $setElementOrder",
            kind: "Service",
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "c"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "finalizers": ["c"]
            }}),
            expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
        },
        Case {
            name: "ownerReferences merge by uid",
            kind: "ReplicaSet",
            original: json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a", "controller": true}]}}),
            patch: json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": false}, {"uid": "2", "name": "b"}]}}),
            expected: json!({"metadata": {"ownerReferences": [
                {"uid": "1", "name": "a", "controller": false}, {"uid": "2", "name": "b"}
            ]}}),
        },
        Case {
            name: "container ports merge by containerPort, env by name, volumeMounts by mountPath",
            kind: "Pod",
            original: json!({"spec": {"containers": [{"name": "c",
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "volumeMounts": [{"mountPath": "/data", "name": "d"}]}]}}),
            patch: json!({"spec": {"containers": [{"name": "c",
                "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
                "env": [{"name": "B", "value": "3"}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}]}]}}),
            expected: json!({"spec": {"containers": [{"name": "c",
                "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}],
                "volumeMounts": [{"mountPath": "/data", "name": "d", "readOnly": true}]}]}}),
        },
        Case {
            name: "envFrom and tolerations replace",
            kind: "Pod",
            original: json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "envFrom": [{"prefix": "A"}]}]}}),
            patch: json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "envFrom": [{"prefix": "B"}]}]}}),
            expected: json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "envFrom": [{"prefix": "B"}]}]}}),
        },
        Case {
            name: "volumes, imagePullSecrets, initContainers by name; hostAliases by ip",
            kind: "Pod",
            original: json!({"spec": {
                "volumes": [{"name": "v", "emptyDir": {}}],
                "imagePullSecrets": [{"name": "s1"}],
                "initContainers": [{"name": "i", "image": "a"}],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}]
            }}),
            patch: json!({"spec": {
                "volumes": [{"name": "w", "configMap": {"name": "cm"}}],
                "imagePullSecrets": [{"name": "s2"}],
                "initContainers": [{"name": "i", "image": "b"}],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}]
            }}),
            // Without `$setElementOrder`, upstream puts the patch's new items first.
            expected: json!({"spec": {
                "volumes": [{"name": "w", "configMap": {"name": "cm"}}, {"name": "v", "emptyDir": {}}],
                "imagePullSecrets": [{"name": "s2"}, {"name": "s1"}],
                "initContainers": [{"name": "i", "image": "b"}],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}]
            }}),
        },
        Case {
            name: "status conditions merge by type",
            kind: "Pod",
            original: json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}}),
            patch: json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            expected: json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]}}),
        },
        Case {
            name: "deployment and node conditions merge by type",
            kind: "Deployment",
            original: json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}}),
            patch: json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}),
            expected: json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}, {"type": "Available", "status": "False"}]}}),
        },
        Case {
            name: "ingress rules, endpoints subsets and slice endpoints replace",
            kind: "Ingress",
            original: json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}]}}),
            patch: json!({"spec": {"rules": [{"host": "c"}]}}),
            expected: json!({"spec": {"rules": [{"host": "c"}]}}),
        },
        Case {
            name: "endpoints subsets replace",
            kind: "Endpoints",
            original: json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}),
            patch: json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
            expected: json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
        },
        Case {
            name: "endpointslice endpoints replace",
            kind: "EndpointSlice",
            original: json!({"endpoints": [{"addresses": ["10.0.0.1"]}]}),
            patch: json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}),
            expected: json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}),
        },
        Case {
            name: "$patch: delete removes a list item",
            kind: "Service",
            original: json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}}),
            patch: json!({"spec": {"ports": [{"$patch": "delete", "port": 443}]}}),
            expected: json!({"spec": {"ports": [{"port": 80}]}}),
        },
        Case {
            name: "$patch: replace replaces a keyed list",
            kind: "Service",
            original: json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}}),
            patch: json!({"spec": {"ports": [{"port": 8080}, {"$patch": "replace"}]}}),
            expected: json!({"spec": {"ports": [{"port": 8080}]}}),
        },
        Case {
            name: "$patch: replace replaces a map",
            kind: "Service",
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            patch: json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
            expected: json!({"metadata": {"labels": {"c": "3"}}}),
        },
        Case {
            name: "$patch: delete removes a map",
            kind: "Service",
            original: json!({"metadata": {"name": "x", "labels": {"a": "1"}}}),
            patch: json!({"metadata": {"labels": {"$patch": "delete"}}}),
            expected: json!({"metadata": {"name": "x"}}),
        },
        Case {
            name: "$patch: merge is the default",
            kind: "Service",
            original: json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80, "name": "a"}]}}),
            patch: json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}, "spec": {"ports": [{"port": 80, "$patch": "merge", "name": "b"}]}}),
            expected: json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 80, "name": "b"}]}}),
        },
        Case {
            name: "$retainKeys clears the other keys of the strategy",
            kind: "Deployment",
            original: json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            expected: json!({"spec": {"strategy": {"type": "Recreate"}}}),
        },
        Case {
            name: "$retainKeys on a volume item",
            kind: "Pod",
            original: json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}),
            patch: json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}]}}),
            expected: json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}),
        },
        Case {
            name: "$setElementOrder reorders a keyed list",
            kind: "Pod",
            original: json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}),
            patch: json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
            expected: json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "a", "image": "1"}]}}),
        },
        Case {
            name: "$setElementOrder with a new item in the middle",
            kind: "Service",
            original: json!({"spec": {"ports": [{"port": 1}, {"port": 3}]}}),
            patch: json!({"spec": {"$setElementOrder/ports": [{"port": 1}, {"port": 2}, {"port": 3}], "ports": [{"port": 2}]}}),
            expected: json!({"spec": {"ports": [{"port": 1}, {"port": 2}, {"port": 3}]}}),
        },
        Case {
            name: "directives in a list the object lacks are processed",
            kind: "Service",
            original: json!({"spec": {}}),
            patch: json!({"spec": {"ports": [{"port": 80, "$patch": "delete"}, {"port": 81, "name": null}]}}),
            expected: json!({"spec": {"ports": [{"port": 81}]}}),
        },
        Case {
            name: "a keyed list item matches 80 and 80.0",
            kind: "Service",
            original: json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}),
            patch: json!({"spec": {"ports": [{"port": 80.0, "name": "b"}]}}),
            // One item: merged, the patch's spelling of the key winning as any field does.
            expected: json!({"spec": {"ports": [{"port": 80.0, "name": "b"}]}}),
        },
        Case {
            name: "a type change replaces",
            kind: "ConfigMap",
            original: json!({"data": {"x": {"a": 1}}}),
            patch: json!({"data": {"x": "now a string"}}),
            expected: json!({"data": {"x": "now a string"}}),
        },
    ]
}

#[test]
fn smp_table() {
    for case in smp_cases() {
        let out = smp(case.kind, case.original, case.patch);
        assert_eq!(out, Ok(case.expected), "{}", case.name);
    }
}

#[test]
fn smp_errors() {
    let live = service(json!([{"port": 80}]));
    let cases: Vec<(&str, &[u8], PatchError)> = vec![
        ("not JSON", b"{not json", PatchError::BadRequest("invalid JSON document".into())),
        ("not an object", b"[1]", PatchError::BadRequest("invalid JSON document".into())),
        (
            "item without its merge key",
            br#"{"spec":{"ports":[{"targetPort":1}]}}"#,
            PatchError::Unprocessable("map: map[targetPort:1] does not contain declared merge key: port".into()),
        ),
        (
            "unknown directive",
            br#"{"metadata":{"labels":{"$patch":"frobnicate"}}}"#,
            PatchError::Unprocessable("unknown patch type: frobnicate in map: map[$patch:frobnicate]".into()),
        ),
        (
            "patch outside $retainKeys",
            br#"{"spec":{"$retainKeys":["type"],"selector":{"a":"b"}}}"#,
            PatchError::BadRequest("invalid patch format of retainKeys".into()),
        ),
        (
            "$retainKeys not a list",
            br#"{"spec":{"$retainKeys":"type"}}"#,
            PatchError::BadRequest("invalid patch format of retainKeys".into()),
        ),
        (
            "$deleteFromPrimitiveList without a list name",
            br#"{"metadata":{"$deleteFromPrimitiveList":["a"]}}"#,
            PatchError::BadRequest("invalid patch format of primitive list".into()),
        ),
        (
            "lists of lists",
            br#"{"metadata":{"finalizers":[["a"]]}}"#,
            PatchError::Unprocessable("lists of lists are not supported".into()),
        ),
    ];
    for (name, body, want) in cases {
        assert_eq!(strategic_merge_patch("Service", &live, body), Err(want), "{name}");
    }
    let mismatch = strategic_merge_patch(
        "Service",
        &live,
        br#"{"spec":{"$setElementOrder/ports":[{"port":1}],"ports":[{"port":2}]}}"#,
    );
    match mismatch {
        Err(PatchError::Unprocessable(m)) => assert!(m.starts_with("The order in patch list:"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn smp_empty_patch_is_identity_on_a_real_object() {
    let live = deployment(json!([{"name": "a", "image": "x"}]));
    assert_eq!(smp("Deployment", live.clone(), json!({})), Ok(live));
}

// === JSON patch and merge patch ===

#[test]
fn json_patch_applies_and_fails_like_upstream() {
    let live = json!({"spec": {"replicas": 1}, "metadata": {"labels": {"a": "b"}}});
    let ok = json_patch(
        &live,
        br#"[{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/metadata/labels/c","value":"d"}]"#,
    );
    assert_eq!(ok, Ok(json!({"spec": {"replicas": 3}, "metadata": {"labels": {"a": "b", "c": "d"}}})));

    let cases: Vec<(&[u8], PatchError)> = vec![
        (
            br#"[{"op":"test","path":"/spec/replicas","value":2}]"#,
            PatchError::Unprocessable("testing value /spec/replicas failed: test failed".into()),
        ),
        (
            br#"[{"op":"remove","path":"/spec/nope"}]"#,
            PatchError::Unprocessable(
                "remove operation does not apply: doc is missing path: \"/spec/nope\": missing value".into(),
            ),
        ),
        (
            br#"[{"op":"replace","path":"/spec/nope","value":1}]"#,
            PatchError::Unprocessable(
                "replace operation does not apply: doc is missing key: /spec/nope: missing value".into(),
            ),
        ),
        (
            br#"[{"op":"add","path":"/nope/deeper","value":1}]"#,
            PatchError::Unprocessable(
                "add operation does not apply: doc is missing path: \"/nope/deeper\": missing value".into(),
            ),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(json_patch(&live, body), Err(want));
    }
    for bad in [&b"{not json"[..], br#"[{"op":"frob","path":"/a"}]"#, br#"{"op":"add"}"#] {
        assert!(matches!(json_patch(&live, bad), Err(PatchError::BadRequest(_))), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn merge_patch_label_annotate_scale() {
    let live = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"replicas": 1, "ports": [{"port": 80}]}});
    let out = merge_patch(
        &live,
        br#"{"metadata":{"labels":{"a":null,"x":"y"}},"spec":{"replicas":3,"ports":[{"port":81}]}}"#,
    );
    assert_eq!(out, Ok(json!({"metadata": {"labels": {"x": "y"}}, "spec": {"replicas": 3, "ports": [{"port": 81}]}})));
    assert_eq!(merge_patch(&live, b"{oops"), Err(PatchError::BadRequest("Invalid JSON Patch".into())));
    assert_eq!(PatchError::BadRequest(String::new()).code(), 400);
    assert_eq!(PatchError::Unprocessable(String::new()).code(), 422);
}

// === Apply body ===

#[test]
fn apply_bodies() {
    let from_json = parse_apply_body(br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}"#);
    assert_eq!(from_json, Ok(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}})));
    let from_yaml = parse_apply_body(
        b"apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    assert_eq!(from_yaml.expect("yaml")["spec"]["ports"][0], json!({"port": 80, "targetPort": 8080}));
    for bad in [&b"a: 1\n---\nb: 2\n"[..], b"- 1\n- 2\n", b"", b"a: [unclosed"] {
        match parse_apply_body(bad) {
            Err(PatchError::BadRequest(m)) => assert!(m.starts_with("error decoding YAML: "), "{m}"),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

// === Server-side apply ===

fn svc_manifest(target_port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "kubia5", "namespace": "default"},
           "spec": {"ports": [{"port": 80, "targetPort": target_port}], "selector": {"app": "kubia"}}})
}

/// What the server's defaulting adds after an apply creates the Service.
fn defaulted(mut svc: Value) -> Value {
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            p.as_object_mut().map(|m| m.entry("protocol").or_insert(json!("TCP")));
        }
    }
    svc["spec"]["type"] = json!("ClusterIP");
    svc["spec"]["sessionAffinity"] = json!("None");
    svc
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    (e["manager"].as_str().unwrap_or("").to_string(), e["operation"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of(obj: &Value, manager: &str) -> Value {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn ssa_create_records_the_applier() {
    let out =
        server_side_apply("Service", None, &svc_manifest(8080), "kubectl", false, ts(1_700_000_000)).expect("creates");
    assert_eq!(out["spec"], svc_manifest(8080)["spec"]);
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "2023-11-14T22:13:20Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {
                "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:targetPort": {}}},
                "f:selector": {}
            }}
        }])
    );
}

#[test]
fn ssa_same_manifest_twice_is_a_no_op() {
    let created = server_side_apply("Service", None, &svc_manifest(8080), "kubectl", false, ts(1)).expect("creates");
    let live = defaulted(created);
    let again =
        server_side_apply("Service", Some(&live), &svc_manifest(8080), "kubectl", false, ts(2)).expect("applies");
    assert_eq!(again, live);
}

#[test]
fn ssa_update_by_the_same_manager() {
    let live =
        defaulted(server_side_apply("Service", None, &svc_manifest(8080), "kubectl", false, ts(1)).expect("creates"));
    let out = server_side_apply("Service", Some(&live), &svc_manifest(9090), "kubectl", false, ts(2)).expect("applies");
    assert_eq!(out["spec"]["ports"], json!([{"port": 80, "protocol": "TCP", "targetPort": 9090}]));
    assert_eq!(out["metadata"]["managedFields"][0]["time"], "1970-01-01T00:00:02Z");
}

/// A Service created by a plain create (`kubectl create`), owned by that updater.
fn created_by(manager: &str, target_port: u16) -> Value {
    let mut obj = defaulted(svc_manifest(target_port));
    record_update("Service", None, &mut obj, manager, ts(100));
    obj
}

#[test]
fn ssa_conflicts_with_an_updater() {
    let live = created_by("kubectl-client-side-apply", 8080);
    let err = server_side_apply("Service", Some(&live), &svc_manifest(9090), "kubectl", false, ts(200))
        .expect_err("conflicts");
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .spec.ports[port=80,protocol=\"TCP\"].targetPort"
    );
    assert_eq!(err.code(), 409);
    let c = &err.conflicts()[0];
    assert_eq!(c.field, ".spec.ports[port=80,protocol=\"TCP\"].targetPort");
    assert_eq!(c.message(), "conflict with \"kubectl-client-side-apply\" using v1");
}

#[test]
fn ssa_conflict_message_for_several() {
    let live = created_by("kubectl-create", 8080);
    let mut manifest = svc_manifest(9090);
    manifest["spec"]["selector"] = json!({"app": "other"});
    let err = server_side_apply("Service", Some(&live), &manifest, "mine", false, ts(200)).expect_err("conflicts");
    assert_eq!(
        err.message(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using v1:\n- .spec.ports[port=80,protocol=\"TCP\"].targetPort\n- .spec.selector"
    );
}

#[test]
fn ssa_same_value_is_co_ownership_not_a_conflict() {
    let live = created_by("kubectl-create", 8080);
    let out =
        server_side_apply("Service", Some(&live), &svc_manifest(8080), "mine", false, ts(200)).expect("no conflict");
    // The object is unchanged, so the applier's entry carries no time (as upstream).
    assert_eq!(out["spec"], live["spec"]);
    assert_eq!(managers(&out), vec![("mine".into(), "Apply".into()), ("kubectl-create".into(), "Update".into())]);
    let create = fields_of(&out, "kubectl-create");
    assert!(create["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"].get("f:targetPort").is_some());
    assert!(out["metadata"]["managedFields"][0].get("time").is_none());
}

#[test]
fn ssa_force_moves_ownership() {
    let live = created_by("kubectl-create", 8080);
    let out = server_side_apply("Service", Some(&live), &svc_manifest(9090), "mine", true, ts(200)).expect("forced");
    assert_eq!(out["spec"]["ports"][0]["targetPort"], 9090);
    let create = fields_of(&out, "kubectl-create");
    let item = &create["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"];
    assert!(item.get("f:targetPort").is_none(), "{create}");
    assert!(item.get("f:protocol").is_some());
    let mine = fields_of(&out, "mine");
    assert!(mine["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"].get("f:targetPort").is_some());
    // Once it owns the field, the next apply by that manager is not a conflict.
    let again =
        server_side_apply("Service", Some(&out), &svc_manifest(7070), "mine", false, ts(300)).expect("owned now");
    assert_eq!(again["spec"]["ports"][0]["targetPort"], 7070);
}

#[test]
fn ssa_takes_over_from_client_side_apply() {
    // `kubectl apply` created the object: the annotation records the manifest and
    // kubectl-client-side-apply owns every field.
    let mut manifest = svc_manifest(8080);
    let annotation = format!("{}\n", manifest);
    manifest["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: annotation });
    let mut live = defaulted(manifest);
    record_update("Service", None, &mut live, "kubectl-client-side-apply", ts(100));

    // Another applier conflicts...
    assert!(server_side_apply("Service", Some(&live), &svc_manifest(9090), "someone", false, ts(200)).is_err());
    // ...but `kubectl apply --server-side` (manager "kubectl") takes the fields it had applied.
    let out =
        server_side_apply("Service", Some(&live), &svc_manifest(9090), "kubectl", false, ts(200)).expect("upgrade");
    assert_eq!(out["spec"]["ports"][0]["targetPort"], 9090);
    let text = out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str().unwrap_or_default();
    let recorded: Value = serde_json::from_str(text).expect("annotation is JSON");
    assert_eq!(recorded, svc_manifest(9090));
    assert!(text.ends_with('\n'));

    // kubectl's follow-up PATCH as kubectl-last-applied re-applies the annotation's value.
    let follow_up = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"annotations": {LAST_APPLIED_ANNOTATION: text}, "name": "kubia5", "namespace": "default"}});
    let done = server_side_apply("Service", Some(&out), &follow_up, "kubectl-last-applied", false, ts(300))
        .expect("no conflict");
    assert_eq!(done["spec"], out["spec"]);
    assert!(managers(&done).contains(&("kubectl-last-applied".into(), "Apply".into())));
}

#[test]
fn ssa_removes_fields_it_no_longer_applies() {
    let mut first = svc_manifest(8080);
    first["metadata"]["labels"] = json!({"a": "1", "b": "2"});
    first["spec"]["ports"] = json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]);
    let live = defaulted(server_side_apply("Service", None, &first, "kubectl", false, ts(1)).expect("creates"));

    let mut second = svc_manifest(8080);
    second["metadata"]["labels"] = json!({"a": "1"});
    let out = server_side_apply("Service", Some(&live), &second, "kubectl", false, ts(2)).expect("applies");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(out["spec"]["ports"], json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}]));

    let mut third = svc_manifest(8080);
    third["metadata"].as_object_mut().map(|m| m.remove("labels"));
    let out = server_side_apply("Service", Some(&out), &third, "kubectl", false, ts(3)).expect("applies");
    assert!(out["metadata"].get("labels").is_none(), "{}", out["metadata"]);
}

#[test]
fn ssa_keeps_removed_fields_another_manager_owns() {
    let mut first = svc_manifest(8080);
    first["metadata"]["labels"] = json!({"a": "1", "b": "2"});
    let live = defaulted(server_side_apply("Service", None, &first, "kubectl", false, ts(1)).expect("creates"));
    // `kubectl label svc kubia5 b=3` records kubectl-label as the owner of b.
    let mut labelled = merge_patch(&live, br#"{"metadata":{"labels":{"b":"3"}}}"#).expect("merge");
    record_update("Service", Some(&live), &mut labelled, "kubectl-label", ts(2));
    let mut second = svc_manifest(8080);
    second["metadata"]["labels"] = json!({"a": "1"});
    let out = server_side_apply("Service", Some(&labelled), &second, "kubectl", false, ts(3)).expect("applies");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "3"}));
}

#[test]
fn ssa_list_order_and_container_port_keys() {
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "b", "image": "2"},
        {"name": "c", "image": "3"}
    ]}});
    let config = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "30"},
        {"name": "a", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]}
    ]}});
    let out = server_side_apply("Pod", Some(&live), &config, "me", false, ts(1)).expect("applies");
    assert_eq!(
        out["spec"]["containers"],
        json!([
            {"name": "b", "image": "2"},
            {"name": "c", "image": "30"},
            {"name": "a", "image": "1", "ports": [
                {"containerPort": 80, "protocol": "TCP", "name": "http"},
                {"containerPort": 53, "protocol": "UDP"}
            ]}
        ])
    );
    let fields = fields_of(&out, "me");
    let a = &fields["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"];
    assert!(a["f:ports"].get("k:{\"containerPort\":53,\"protocol\":\"UDP\"}").is_some(), "{fields}");
    assert!(a["f:ports"].get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}").is_some(), "{fields}");
}

/// The managedFields of a real cluster (kubectl-compat research, `kubectl run` then
/// `kubectl apply --server-side` of the same Pod): the sets must match upstream's.
#[test]
fn managed_fields_match_an_upstream_pod() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"run": "nginx"}},
        "spec": {"containers": [{"image": "nginx", "imagePullPolicy": "Always", "name": "nginx", "resources": {},
                                 "terminationMessagePath": "/dev/termination-log"}],
                 "dnsPolicy": "ClusterFirst", "restartPolicy": "Never"}});
    record_update("Pod", None, &mut pod, "kubectl-run", ts(1_698_290_568));
    assert_eq!(
        fields_of(&pod, "kubectl-run"),
        json!({"f:metadata": {"f:labels": {".": {}, "f:run": {}}},
               "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {},
                   "f:name": {}, "f:resources": {}, "f:terminationMessagePath": {}}},
                   "f:dnsPolicy": {}, "f:restartPolicy": {}}})
    );
    let applied = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"creationTimestamp": null, "labels": {"run": "nginx"}, "name": "nginx", "namespace": "default"},
        "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {}}], "dnsPolicy": "ClusterFirst",
                 "restartPolicy": "Never"},
        "status": {}});
    let out = server_side_apply("Pod", Some(&pod), &applied, "kubectl", false, ts(1_698_290_686)).expect("co-owns");
    assert_eq!(
        fields_of(&out, "kubectl"),
        json!({"f:metadata": {"f:labels": {"f:run": {}}},
               "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}},
                          "f:dnsPolicy": {}, "f:restartPolicy": {}}})
    );
    assert_eq!(managers(&out), vec![("kubectl".into(), "Apply".into()), ("kubectl-run".into(), "Update".into())]);
}

#[test]
fn ssa_rejects_bad_configurations() {
    let mut with_mf = svc_manifest(80);
    with_mf["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        server_side_apply("Service", None, &with_mf, "m", false, ts(1)),
        Err(ApplyError::BadRequest("metadata.managedFields must be nil".into()))
    );
    let mut dup = svc_manifest(80);
    dup["spec"]["ports"] = json!([{"port": 80}, {"port": 80, "protocol": "TCP"}]);
    assert_eq!(
        server_side_apply("Service", None, &dup, "m", false, ts(1)),
        Err(ApplyError::BadRequest(
            "failed to create typed patch object (/v1, Kind=Service): .spec.ports: duplicate entries for key [port=80,protocol=\"TCP\"]".into()
        ))
    );
    let mut keyless = svc_manifest(80);
    keyless["spec"]["ports"] = json!([{"targetPort": 80}]);
    let err = server_side_apply("Service", None, &keyless, "m", false, ts(1)).expect_err("no key");
    assert!(
        err.message()
            .contains(".spec.ports[0]: associative list with keys has an element that omits key field \"port\""),
        "{err}"
    );
}

#[test]
fn ssa_ignores_status_on_the_main_resource() {
    let mut manifest = svc_manifest(80);
    manifest["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
    let out = server_side_apply("Service", None, &manifest, "m", false, ts(1)).expect("creates");
    assert!(out.get("status").is_none());
    assert!(fields_of(&out, "m").get("f:status").is_none());
}

// === Update tracking ===

#[test]
fn record_update_on_create_owns_everything_set() {
    let obj = created_by("kubectl-create", 8080);
    assert_eq!(
        obj["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": "1970-01-01T00:01:40Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {
                "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                "f:selector": {},
                "f:sessionAffinity": {},
                "f:type": {}
            }}
        }])
    );
}

#[test]
fn record_update_moves_changed_fields_and_drops_removed_ones() {
    let mut live = created_by("kubectl-create", 8080);
    live["metadata"]["labels"] = json!({"a": "1"});
    let before = live.clone();
    let mut edited =
        strategic_merge_patch("Service", &before, br#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#)
            .expect("patch");
    record_update("Service", Some(&before), &mut edited, "kubectl-edit", ts(200));
    let edit = fields_of(&edited, "kubectl-edit");
    assert_eq!(edit, json!({"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {"f:targetPort": {}}}}}));
    let create = fields_of(&edited, "kubectl-create");
    assert!(create["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"].get("f:targetPort").is_none());

    // Deleting the selector removes it from its owner.
    let mut cleared = merge_patch(&edited, br#"{"spec":{"selector":null}}"#).expect("merge");
    record_update("Service", Some(&edited), &mut cleared, "kubectl-patch", ts(300));
    assert!(fields_of(&cleared, "kubectl-create")["f:spec"].get("f:selector").is_none());
    // A write that changes nothing records nothing new.
    assert!(!managers(&cleared).contains(&("kubectl-patch".into(), "Update".into())));
    assert_eq!(
        managers(&cleared),
        vec![("kubectl-create".into(), "Update".into()), ("kubectl-edit".into(), "Update".into())]
    );
}

#[test]
fn record_update_honours_requested_managed_fields() {
    let live = created_by("kubectl-create", 8080);
    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    record_update("Service", Some(&live), &mut reset, "x", ts(1));
    assert!(reset["metadata"].get("managedFields").is_none());

    // An empty list keeps the old entries (clients that do not understand them).
    let mut emptied = live.clone();
    emptied["metadata"]["managedFields"] = json!([]);
    record_update("Service", Some(&live), &mut emptied, "x", ts(1));
    assert_eq!(emptied["metadata"]["managedFields"], live["metadata"]["managedFields"]);
}

// === Strict field validation ===

#[test]
fn unknown_fields_of_the_seed_typo() {
    // The `sepc:` typo at the top level of a Service (seed 004).
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubia"},
                      "sepc": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], "selector": {"app": "kubia"}}});
    let unknown = unknown_fields("Service", &body);
    assert_eq!(unknown, vec!["sepc".to_string()]);
    assert_eq!(
        strict_decoding_message(&unknown, &[]).as_deref(),
        Some("strict decoding error: unknown field \"sepc\"")
    );
}

#[test]
fn unknown_fields_nested_and_tolerated() {
    let body = json!({"kind": "Service", "metadata": {"name": "x", "creationTimestamp": null, "labels": {"any": "thing"},
                      "annotations": {}, "finalizers": []},
                      "spec": {"sepc": 1, "ports": [{"port": 80, "bogus": true, "targetPort": "http"}],
                               "selector": {"whatever": "x"}},
                      "status": {"loadBalancer": {}}});
    assert_eq!(unknown_fields("Service", &body), vec!["spec.sepc".to_string(), "spec.ports[0].bogus".to_string()]);
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}}});
    assert_eq!(unknown_fields("Deployment", &deploy), vec!["spec.template.spec.containers[0].imagee".to_string()]);
    // A body that does not decode is reported by the decode, not here.
    assert!(unknown_fields("Service", &json!({"spec": {"ports": [{"port": "eighty"}]}})).is_empty());
}

#[test]
fn a_stored_object_has_no_unknown_fields() {
    // What `kubectl get -o json` returns and `kubectl replace`/`edit` send back.
    let mut svc = created_by("kubectl-create", 8080);
    svc["metadata"]["uid"] = json!("6b1c0c0e-0000-4000-8000-000000000000");
    svc["metadata"]["resourceVersion"] = json!("42");
    svc["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
    svc["spec"]["clusterIP"] = json!("10.96.0.10");
    svc["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    svc["spec"]["ipFamilies"] = json!(["IPv4"]);
    svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
    svc["status"] = json!({"loadBalancer": {}});
    assert_eq!(unknown_fields("Service", &svc), Vec::<String>::new());
    let raw = serde_json::to_vec(&svc).expect("encodes");
    assert!(duplicate_fields(&raw).is_empty());
}

#[test]
fn duplicate_fields_in_the_json_text() {
    let raw = br#"{"kind":"Service","kind":"Service","metadata":{"name":"a","name":"b"},"spec":{"ports":[{"port":80,"port":81}]}}"#;
    let dups = duplicate_fields(raw);
    assert_eq!(dups, vec!["kind".to_string(), "metadata.name".to_string(), "spec.ports[0].port".to_string()]);
    assert_eq!(
        strict_decoding_message(&["spec.sepc".to_string()], &dups[..1]).as_deref(),
        Some("strict decoding error: unknown field \"spec.sepc\", duplicate field \"kind\"")
    );
    assert!(duplicate_fields(b"{\"a\":1,\"b\":{\"a\":2}}").is_empty());
    assert!(duplicate_fields(b"not json").is_empty());
    assert_eq!(strict_decoding_message(&[], &[]), None);
}

// === Properties ===

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::super::*;
    use super::ts;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string)
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::from),
            (0u32..5).prop_map(Value::from),
            "[xy]{0,2}".prop_map(Value::from)
        ]
    }

    /// JSON without nulls (documents as stored).
    fn document() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON patches: nulls only as object members (where both patch types mean "delete").
    fn patch_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![4 => document(), 1 => Just(Value::Null)];
        leaf.prop_recursive(2, 16, 3, |inner| {
            prop::collection::btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    fn object(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(m),
            other => json!({ "a": other }),
        }
    }

    /// The RFC 7386 patch from `a` to `b`.
    fn merge_diff(a: &Value, b: &Value) -> Value {
        match (a, b) {
            (Value::Object(am), Value::Object(bm)) => {
                let mut out = Map::new();
                for k in am.keys().filter(|k| !bm.contains_key(*k)) {
                    out.insert(k.clone(), Value::Null);
                }
                for (k, bv) in bm {
                    match am.get(k) {
                        Some(av) if av == bv => {}
                        Some(av @ Value::Object(_)) if bv.is_object() => {
                            out.insert(k.clone(), merge_diff(av, bv));
                        }
                        _ => {
                            out.insert(k.clone(), bv.clone());
                        }
                    }
                }
                Value::Object(out)
            }
            _ => b.clone(),
        }
    }

    proptest! {
        #[test]
        fn empty_strategic_patch_is_identity(doc in document().prop_map(object)) {
            prop_assert_eq!(strategic_merge_patch("ConfigMap", &doc, b"{}"), Ok(doc.clone()));
            prop_assert_eq!(strategic_merge_patch("Pod", &doc, b"{}"), Ok(doc));
        }

        /// Where the schema has no merge lists, a strategic merge patch is an RFC 7386 merge.
        #[test]
        fn strategic_is_merge_patch_without_merge_lists(doc in document().prop_map(object), p in patch_value().prop_map(object)) {
            let body = p.to_string();
            let smp = strategic_merge_patch("ConfigMap", &doc, body.as_bytes());
            let merged = merge_patch(&doc, body.as_bytes());
            prop_assert_eq!(smp, merged);
        }

        #[test]
        fn patches_are_idempotent(doc in document().prop_map(object), p in patch_value().prop_map(object)) {
            let body = p.to_string();
            let once = merge_patch(&doc, body.as_bytes()).expect("merge");
            prop_assert_eq!(merge_patch(&once, body.as_bytes()).expect("merge"), once);
            let once = strategic_merge_patch("Pod", &doc, body.as_bytes()).expect("smp");
            prop_assert_eq!(strategic_merge_patch("Pod", &once, body.as_bytes()).expect("smp"), once);
        }

        /// RFC 6902: applying the crate's diff of two documents turns one into the other.
        #[test]
        fn json_patch_of_a_diff(a in document(), b in document()) {
            let diff = serde_json::to_vec(&json_patch::diff(&a, &b)).expect("encodes");
            prop_assert_eq!(json_patch(&a, &diff), Ok(b));
        }

        /// RFC 7386: a merge patch built as the difference of two null-free objects turns one
        /// into the other.
        #[test]
        fn merge_patch_of_a_diff(a in document().prop_map(object), b in document().prop_map(object)) {
            let diff = merge_diff(&a, &b).to_string();
            prop_assert_eq!(merge_patch(&a, diff.as_bytes()), Ok(b));
        }

        /// Applying the same configuration twice changes nothing the second time.
        #[test]
        fn apply_twice_is_a_no_op(
            labels in prop::collection::btree_map("[a-c]{1,2}", "[a-z]{0,3}", 0..4),
            ports in prop::collection::btree_map(1u16..6, 1u16..9000, 0..4),
            other_manager in any::<bool>(),
        ) {
            let ports: Vec<Value> = ports.into_iter().map(|(p, t)| json!({"port": p, "targetPort": t})).collect();
            let config = json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "s", "labels": Value::Object(labels.into_iter().map(|(k, v)| (k, Value::from(v))).collect::<Map<_, _>>())},
                "spec": {"ports": ports}});
            let mut live = server_side_apply("Service", None, &config, "one", false, ts(1)).expect("create");
            if other_manager {
                let mut updated = merge_patch(&live, br#"{"metadata":{"annotations":{"x":"y"}}}"#).expect("merge");
                record_update("Service", Some(&live), &mut updated, "other", ts(2));
                live = updated;
            }
            let again = server_side_apply("Service", Some(&live), &config, "one", false, ts(3)).expect("apply");
            prop_assert_eq!(again, live);
        }
    }
}
