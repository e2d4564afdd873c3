//! The resources pier serves: their group, version, kind, plural and short names, scope,
//! categories and subresources — what discovery advertises and what routing, storage keys and
//! the per-kind logic of the other modules dispatch on.
//!
//! Also the one place that maps a kind to its `k8s-openapi` type ([`roundtrip`]), so that the
//! typed decoding used by strict field validation lives in one match.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A subresource of a resource (`pods/log`, `deployments/scale`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// Group, version and kind of the subresource's body when it differs from the parent's
    /// (`scale` is `autoscaling/v1 Scale`); `None` means the parent's own kind.
    pub kind: Option<(&'static str, &'static str, &'static str)>,
    pub verbs: &'static [&'static str],
}

/// One resource type served by the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` is the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The URL path segment (`services`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `services` for the core group, `deployments.apps` otherwise: the name upstream uses in
    /// messages such as `services "kubia" not found`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The URL prefix of the group-version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const STATUS: Subresource = Subresource { name: "status", kind: None, verbs: STATUS_VERBS };
const SCALE: Subresource =
    Subresource { name: "scale", kind: Some(("autoscaling", "v1", "Scale")), verbs: STATUS_VERBS };

/// Every resource pier serves, in discovery order (`kubectl get all` queries the `all`
/// category in this order).
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        list_kind: "PodList",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        categories: &["all"],
        subresources: &[
            STATUS,
            Subresource { name: "log", kind: None, verbs: &["get"] },
            Subresource { name: "exec", kind: None, verbs: &["create", "get"] },
            Subresource { name: "binding", kind: Some(("", "v1", "Binding")), verbs: &["create"] },
        ],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        list_kind: "ServiceList",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        categories: &["all"],
        subresources: &[STATUS],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        list_kind: "EndpointsList",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        list_kind: "NamespaceList",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        categories: &[],
        subresources: &[STATUS],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        list_kind: "NodeList",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        categories: &[],
        subresources: &[STATUS],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        list_kind: "EventList",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        list_kind: "SecretList",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        list_kind: "ServiceAccountList",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        list_kind: "DeploymentList",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        categories: &["all"],
        subresources: &[SCALE, STATUS],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        list_kind: "ReplicaSetList",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        categories: &["all"],
        subresources: &[SCALE, STATUS],
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        list_kind: "EndpointSliceList",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        namespaced: true,
        categories: &[],
        subresources: &[],
    },
    ResourceInfo {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        list_kind: "IngressList",
        plural: "ingresses",
        singular: "ingress",
        short_names: &["ing"],
        namespaced: true,
        categories: &[],
        subresources: &[STATUS],
    },
    ResourceInfo {
        group: "networking.k8s.io",
        version: "v1",
        kind: "IngressClass",
        list_kind: "IngressClassList",
        plural: "ingressclasses",
        singular: "ingressclass",
        short_names: &[],
        namespaced: false,
        categories: &[],
        subresources: &[],
    },
];

/// The resource served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource whose kind is `kind` in `group`.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// The API groups pier serves other than the core group, in discovery order, each with its
/// one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Why a JSON value is not a valid object of a kind.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn through<T: Serialize + DeserializeOwned>(value: &Value) -> Result<Value, DecodeError> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| DecodeError(e.to_string()))?;
    serde_json::to_value(typed).map_err(|e| DecodeError(e.to_string()))
}

/// Decodes `value` as the `k8s-openapi` type of `kind` and encodes it again.
///
/// The result has exactly the fields the type knows, so comparing it with the input finds the
/// unknown fields (`fieldValidation=Strict`), and a value of the wrong shape (a string where a
/// number belongs) fails here with serde's message. `Scale` is `autoscaling/v1 Scale`.
pub fn roundtrip(kind: &str, value: &Value) -> Result<Value, DecodeError> {
    use k8s_openapi::api::{apps, autoscaling, core, discovery, networking};
    match kind {
        "Pod" => through::<core::v1::Pod>(value),
        "Service" => through::<core::v1::Service>(value),
        "Endpoints" => through::<core::v1::Endpoints>(value),
        "Namespace" => through::<core::v1::Namespace>(value),
        "Node" => through::<core::v1::Node>(value),
        "Event" => through::<core::v1::Event>(value),
        "ConfigMap" => through::<core::v1::ConfigMap>(value),
        "Secret" => through::<core::v1::Secret>(value),
        "ServiceAccount" => through::<core::v1::ServiceAccount>(value),
        "Deployment" => through::<apps::v1::Deployment>(value),
        "ReplicaSet" => through::<apps::v1::ReplicaSet>(value),
        "EndpointSlice" => through::<discovery::v1::EndpointSlice>(value),
        "Ingress" => through::<networking::v1::Ingress>(value),
        "IngressClass" => through::<networking::v1::IngressClass>(value),
        "Scale" => through::<autoscaling::v1::Scale>(value),
        "Binding" => through::<core::v1::Binding>(value),
        other => Err(DecodeError(format!("no kind {other:?} is registered"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_roundtrips_an_empty_object() {
        for r in RESOURCES {
            let v = serde_json::json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            let out = roundtrip(r.kind, &v);
            assert!(out.is_ok(), "{}: {out:?}", r.kind);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(find("", "v1", "services").map(|r| r.kind), Some("Service"));
        assert_eq!(find("apps", "v1", "deployments").map(|r| r.qualified_plural()), Some("deployments.apps".into()));
        assert_eq!(find_kind("apps", "ReplicaSet").map(|r| r.plural), Some("replicasets"));
        assert_eq!(groups(), vec![("apps", "v1"), ("discovery.k8s.io", "v1"), ("networking.k8s.io", "v1")]);
    }

    #[test]
    fn wrong_shape_is_an_error_not_a_panic() {
        let v = serde_json::json!({"spec": {"ports": [{"port": "eighty"}]}});
        assert!(roundtrip("Service", &v).is_err());
    }
}
