//! Discovery (`/api`, `/apis`, aggregated `apidiscovery.k8s.io/v2` and the legacy lists), the
//! small OpenAPI v3 documents kubectl needs to delegate validation to the server, and `/version`.
//!
//! Everything here is derived from `pier_api::resources::RESOURCES`; nothing is hand-listed.

use pier_api::resources::{self, ALL_VERBS, RESOURCES, ResourceInfo};
use serde_json::{Value, json};

/// The Kubernetes version pier speaks. kubectl on these machines dispatches on `minor`.
pub const GIT_VERSION: &str = "v1.32.4-pier";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.6",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn in_group<'a>(group: &'a str) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES.iter().filter(move |r| r.group == group)
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k) = s.kind.unwrap_or((r.group, r.version, r.kind));
            json!({"subresource": s.name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs})
        })
        .collect();
    let mut out = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": ALL_VERBS,
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        out["subresources"] = json!(subresources);
    }
    out
}

fn aggregated_group(name: &str, version: &str) -> Value {
    let resources: Vec<Value> = in_group(name).map(aggregated_resource).collect();
    json!({
        "metadata": {"name": name, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

/// `GET /api` with the aggregated Accept.
pub fn aggregated_core() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [aggregated_group("", "v1")],
    })
}

/// `GET /apis` with the aggregated Accept.
pub fn aggregated_groups() -> Value {
    let items: Vec<Value> = resources::groups().into_iter().map(|(g, v)| aggregated_group(g, v)).collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// Legacy `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Legacy `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `GET /apis/{group}`.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = resources::groups().into_iter().find(|(g, _)| *g == group)?;
    let mut out = group_entry(g, v);
    out["kind"] = json!("APIGroup");
    out["apiVersion"] = json!("v1");
    Some(out)
}

/// Legacy `GET /api/v1` or `/apis/{group}/{version}`.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list = Vec::new();
    for r in in_group(group).filter(|r| r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ALL_VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind.map_or(r.kind, |(_, _, k)| k),
                "verbs": s.verbs,
            });
            if let Some((g, v, _)) = s.kind {
                sub["group"] = json!(g);
                sub["version"] = json!(v);
            }
            list.push(sub);
        }
    }
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}

/// `GET /openapi/v3`: one entry per group-version.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", doc_hash("", "v1"))}),
    );
    for (g, v) in resources::groups() {
        paths.insert(
            format!("apis/{g}/{v}"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash={}", doc_hash(g, v))}),
        );
    }
    json!({"paths": paths})
}

/// A stable hash of a group-version document, so kubectl's cache keys change only with pier.
fn doc_hash(group: &str, version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{GIT_VERSION}/{group}/{version}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// `GET /openapi/v3/api/v1` (or a named group): a `patch` operation per kind carrying
/// `x-kubernetes-group-version-kind` and the `fieldValidation` parameter — what kubectl looks
/// for to send `fieldValidation=Strict` and leave validation to the server. No schemas: kubectl
/// then builds strategic merge patches from its compiled-in types.
pub fn openapi_v3_doc(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut any = false;
    for r in in_group(group).filter(|r| r.version == version) {
        any = true;
        let item_path = if r.namespaced {
            format!("{}/namespaces/{{namespace}}/{}/{{name}}", r.group_version_path(), r.plural)
        } else {
            format!("{}/{}/{{name}}", r.group_version_path(), r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(item_path, json!({"patch": op("patch"), "put": op("put")}));
    }
    if !any {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_has_short_names_and_scale() {
        let apis = aggregated_groups().to_string();
        assert!(apis.contains(r#""shortNames":["deploy"]"#));
        assert!(
            apis.contains(
                r#""subresource":"scale","responseKind":{"group":"autoscaling","version":"v1","kind":"Scale"}"#
            )
        );
        let core = aggregated_core().to_string();
        assert!(core.contains(r#""shortNames":["svc"]"#));
        assert!(core.contains(r#""categories":["all"]"#));
    }

    #[test]
    fn legacy_lists_subresources() {
        let list = api_resource_list("apps", "v1").map(|v| v.to_string()).unwrap_or_default();
        assert!(list.contains(r#""name":"deployments/scale""#));
        assert!(api_resource_list("apps", "v2").is_none());
    }

    #[test]
    fn openapi_doc_declares_field_validation() {
        let doc = openapi_v3_doc("", "v1").map(|v| v.to_string()).unwrap_or_default();
        assert!(doc.contains("/api/v1/namespaces/{namespace}/services/{name}"));
        assert!(doc.contains(r#""name":"fieldValidation","in":"query""#));
    }
}
