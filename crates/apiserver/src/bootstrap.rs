//! What exists from the start: the four system namespaces, the `kubernetes` Service with its
//! Endpoints and EndpointSlice pointing at this API server, and the `kube-dns` Service.
//! Idempotent: run at every start, it creates what is missing and corrects the API server's
//! endpoints if the advertised address changed.

use std::net::IpAddr;

use jiff::Timestamp;
use pier_api::resources;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Registry, WriteOptions};

/// Upstream's namespace lifecycle admission refuses to delete these.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn opts() -> WriteOptions {
    WriteOptions { manager: "kube-apiserver".into(), dry_run: false, now: Timestamp::now() }
}

async fn ensure(registry: &Registry, plural: &str, group: &str, obj: Value, reconcile: bool) -> ApiResult<()> {
    let r = resources::RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
    let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match registry.get_kv(r, ns.as_deref(), &name).await {
        Ok((old, rev)) => {
            if reconcile {
                let mut new = old.clone();
                for field in ["subsets", "endpoints", "ports", "addressType"] {
                    if let Some(v) = obj.get(field) {
                        new[field] = v.clone();
                    }
                }
                if new != old {
                    registry.update(r, &old, rev, new, None, &opts()).await?;
                }
            }
            Ok(())
        }
        Err(e) if e.code == 404 => match registry.create(r, obj, &opts()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Creates the system objects. `kubernetes_ip` and `dns_ip` are the first and tenth
/// addresses of the service CIDR; `api` is where pods reach this server.
pub async fn run(registry: &Registry, kubernetes_ip: IpAddr, dns_ip: IpAddr, api: (IpAddr, u16)) -> ApiResult<()> {
    for ns in SYSTEM_NAMESPACES {
        ensure(registry, "namespaces", "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}), false).await?;
    }
    let family = if kubernetes_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    ensure(
        registry,
        "services",
        "",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": kubernetes_ip.to_string(), "clusterIPs": [kubernetes_ip.to_string()], "ipFamilies": [family],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.1}]},
        }),
        false,
    )
    .await?;
    if api.0.is_loopback() || api.0.is_unspecified() {
        // Endpoints may not hold loopback addresses; with no node IP pods cannot reach the
        // API server through the Service anyway.
        tracing::warn!(ip = %api.0, "no routable node IP: the kubernetes Service gets no endpoints");
    } else {
        write_api_endpoints(registry, api).await?;
    }
    let dns_family = if dns_ip.is_ipv4() { "IPv4" } else { "IPv6" };
    ensure(
        registry,
        "services",
        "",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": dns_ip.to_string(), "clusterIPs": [dns_ip.to_string()], "ipFamilies": [dns_family],
                     "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
        }),
        false,
    )
    .await?;
    Ok(())
}

async fn write_api_endpoints(registry: &Registry, api: (IpAddr, u16)) -> ApiResult<()> {
    ensure(
        registry,
        "endpoints",
        "",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": api.0.to_string()}], "ports": [{"name": "https", "port": api.1, "protocol": "TCP"}]}],
        }),
        true,
    )
    .await?;
    let address_type = if api.0.is_ipv4() { "IPv4" } else { "IPv6" };
    ensure(
        registry,
        "endpointslices",
        "discovery.k8s.io",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": address_type,
            "endpoints": [{"addresses": [api.0.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": api.1, "protocol": "TCP"}],
        }),
        true,
    )
    .await?;
    Ok(())
}
