//! What a request asks for: the URL parsed into a resource, namespace, name and subresource
//! (upstream's `RequestInfo`), the query parameters, and content negotiation.

use std::collections::HashMap;

use axum::http::HeaderMap;
use pier_api::resources::{self, ResourceInfo};

use crate::error::{ApiError, ApiResult};

/// A request for a resource (as opposed to discovery or a health endpoint).
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    pub resource: &'static ResourceInfo,
    /// `None` for cluster-scoped resources and for all-namespaces collections.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Every non-resource path pier serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health(&'static str),
    ApiVersions,
    ApiGroups,
    ApiGroup(String),
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV3Root,
    OpenApiV3 {
        group: String,
        version: String,
    },
    OpenApiV2,
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`).
    SelfSubjectAccessReview,
    Resource,
}

/// Parses a path into a route, and for resource paths into a [`ResourceRequest`].
pub fn parse_path(path: &str) -> ApiResult<(Route, Option<ResourceRequest>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return Ok((Route::Version, None)),
        ["livez"] | ["livez", ..] => return Ok((Route::Health("livez"), None)),
        ["readyz"] | ["readyz", ..] => return Ok((Route::Health("readyz"), None)),
        ["healthz"] | ["healthz", ..] => return Ok((Route::Health("healthz"), None)),
        ["api"] => return Ok((Route::ApiVersions, None)),
        ["apis"] => return Ok((Route::ApiGroups, None)),
        ["openapi", "v3"] => return Ok((Route::OpenApiV3Root, None)),
        ["openapi", "v3", "api", v] => {
            return Ok((Route::OpenApiV3 { group: String::new(), version: (*v).into() }, None));
        }
        ["openapi", "v3", "apis", g, v] => {
            return Ok((Route::OpenApiV3 { group: (*g).into(), version: (*v).into() }, None));
        }
        ["openapi", "v2"] => return Ok((Route::OpenApiV2, None)),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
            return Ok((Route::SelfSubjectAccessReview, None));
        }
        ["apis", g] => return Ok((Route::ApiGroup((*g).into()), None)),
        ["api", v] => {
            return Ok((Route::ResourceList { group: String::new(), version: (*v).into() }, None));
        }
        ["apis", g, v] => {
            return Ok((Route::ResourceList { group: (*g).into(), version: (*v).into() }, None));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::no_route);
    let req = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let resource = lookup(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (Some(*name), None),
                [name, sub] => (Some(*name), Some(*sub)),
                _ => return Err(ApiError::no_route()),
            };
            ResourceRequest {
                resource,
                namespace: Some((*ns).to_string()),
                name: name.map(str::to_string),
                subresource: subresource.map(str::to_string),
            }
        }
        [plural, tail @ ..] => {
            let resource = lookup(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (Some(*name), None),
                [name, sub] => (Some(*name), Some(*sub)),
                _ => return Err(ApiError::no_route()),
            };
            // A namespaced resource without a namespace is only meaningful as a collection
            // across all namespaces (`/api/v1/services`).
            if resource.namespaced && name.is_some() {
                return Err(ApiError::no_route());
            }
            ResourceRequest {
                resource,
                namespace: None,
                name: name.map(str::to_string),
                subresource: subresource.map(str::to_string),
            }
        }
        [] => return Err(ApiError::no_route()),
    };
    if let Some(sub) = &req.subresource
        && req.resource.subresource(sub).is_none()
    {
        return Err(ApiError::no_route());
    }
    Ok((Route::Resource, Some(req)))
}

/// Query parameters; a key may repeat (`command=` of exec).
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query(form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    pub fn as_map(&self) -> HashMap<&str, &str> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

/// The media types a response can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Table,
}

/// Picks the response form from `Accept`: a `meta.k8s.io` Table when asked for, else JSON.
/// Like upstream, anything unknown falls back to JSON rather than 406.
pub fn negotiate(headers: &HeaderMap) -> Output {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=Table") && p.contains("g=meta.k8s.io") && p.contains("v=v1") {
            return Output::Table;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") {
            return Output::Json;
        }
    }
    Output::Json
}

/// True when the client accepts aggregated discovery `apidiscovery.k8s.io/v2` (`v2beta1` is
/// answered with legacy discovery, which every client falls back to).
pub fn wants_aggregated_discovery(headers: &HeaderMap) -> bool {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').any(|p| {
        let p = p.replace(' ', "");
        p.contains("g=apidiscovery.k8s.io") && p.contains("v=v2;") && p.contains("as=APIGroupDiscoveryList")
            || p.ends_with("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let (_, r) = parse_path("/api/v1/namespaces/default/services/kubia").unwrap();
        let r = r.unwrap();
        assert_eq!(
            (r.resource.plural, r.namespace.as_deref(), r.name.as_deref()),
            ("services", Some("default"), Some("kubia"))
        );
        let (_, r) = parse_path("/api/v1/namespaces/default").unwrap();
        let r = r.unwrap();
        assert_eq!((r.resource.plural, r.namespace, r.name.as_deref()), ("namespaces", None, Some("default")));
        let (_, r) = parse_path("/api/v1/namespaces/default/status").unwrap();
        assert_eq!(r.unwrap().subresource.as_deref(), Some("status"));
        let (_, r) = parse_path("/apis/apps/v1/namespaces/x/deployments/d/scale").unwrap();
        assert_eq!(r.unwrap().subresource.as_deref(), Some("scale"));
        let (_, r) = parse_path("/api/v1/services").unwrap();
        assert!(r.unwrap().namespace.is_none());
        assert!(parse_path("/api/v1/services/x").is_err());
        assert!(parse_path("/api/v1/namespaces/default/widgets").is_err());
        assert!(parse_path("/api/v1/namespaces/default/services/kubia/bogus").is_err());
        assert_eq!(
            parse_path("/apis/apps/v1").unwrap().0,
            Route::ResourceList { group: "apps".into(), version: "v1".into() }
        );
    }

    #[test]
    fn negotiates_table() {
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap());
        assert_eq!(negotiate(&h), Output::Table);
        h.insert("accept", "application/json".parse().unwrap());
        assert_eq!(negotiate(&h), Output::Json);
        h.insert("accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json".parse().unwrap());
        assert!(wants_aggregated_discovery(&h));
        h.insert(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
                .parse()
                .unwrap(),
        );
        assert!(!wants_aggregated_discovery(&h));
    }
}
