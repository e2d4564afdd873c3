//! Service environment variables exactly as the kubelet computes them (`envvars.go`):
//! `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT`, `{SVC}_SERVICE_PORT_{NAME}` and the docker-link
//! `{SVC}_PORT*` variables, for the `kubernetes` Service of `default` and — with
//! `enableServiceLinks` — every Service of the pod's namespace.
//!
//! Pure: the caller passes the Services that exist when the container starts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// What the variables need of a Service. The node's Service cache keeps these instead of the
/// objects (a few hundred bytes against kilobytes: 30,000 Services must fit a node agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvService {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIP`: empty or `None` for Services without one (they give no variables).
    pub cluster_ip: String,
    pub ports: Vec<EnvPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPort {
    pub name: Option<String>,
    /// As written (`TCP` when unset).
    pub protocol: String,
    pub port: i32,
}

impl EnvService {
    pub fn of(svc: &Service) -> EnvService {
        let spec = svc.spec.as_ref();
        let cluster_ip = spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
        let has_ip = !cluster_ip.is_empty() && cluster_ip != "None";
        EnvService {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .filter(|_| has_ip)
                .into_iter()
                .flatten()
                .map(|p| EnvPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.port,
                })
                .collect(),
            cluster_ip,
        }
    }
}

/// `redis-master` → `REDIS_MASTER` (current kubelets map only `-`; dots and leading digits
/// are left alone, as upstream does now).
fn prefix(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// `[ip]` for IPv6 in URL forms.
fn host_in_url(ip: &str) -> String {
    if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() }
}

/// The variables one Service contributes, in the kubelet's order.
pub fn service_env(svc: &EnvService) -> Vec<(String, String)> {
    let ip = svc.cluster_ip.as_str();
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let Some(first) = svc.ports.first() else { return Vec::new() };
    let p = prefix(&svc.name);
    let mut out =
        vec![(format!("{p}_SERVICE_HOST"), ip.to_string()), (format!("{p}_SERVICE_PORT"), first.port.to_string())];
    for port in &svc.ports {
        if let Some(name) = port.name.as_deref() {
            out.push((format!("{p}_SERVICE_PORT_{}", prefix(name)), port.port.to_string()));
        }
    }
    let first_proto = first.protocol.to_lowercase();
    out.push((format!("{p}_PORT"), format!("{first_proto}://{}:{}", host_in_url(ip), first.port)));
    for port in &svc.ports {
        let proto_upper = port.protocol.to_uppercase();
        let proto = proto_upper.to_lowercase();
        let base = format!("{p}_PORT_{}_{proto_upper}", port.port);
        out.push((base.clone(), format!("{proto}://{}:{}", host_in_url(ip), port.port)));
        out.push((format!("{base}_PROTO"), proto));
        out.push((format!("{base}_PORT"), port.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.to_string()));
    }
    out
}

/// The service variables for a pod in `namespace`: the `kubernetes` Service of `default`
/// always, every Service of the namespace when `enable_service_links`; a Service named
/// `kubernetes` in the pod's own namespace shadows the master one.
pub fn pod_service_env(
    namespace: &str,
    enable_service_links: bool,
    services: &[EnvService],
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<&str, &EnvService> = BTreeMap::new();
    for svc in services {
        if svc.namespace == namespace && enable_service_links {
            chosen.insert(&svc.name, svc);
        } else if svc.namespace == "default" && svc.name == "kubernetes" {
            chosen.entry(&svc.name).or_insert(svc);
        }
    }
    // A same-namespace `kubernetes` replaces the master one: the insert above overwrites it
    // whichever comes first in `services`.
    if enable_service_links
        && let Some(own) = services.iter().find(|s| s.namespace == namespace && s.name == "kubernetes")
    {
        chosen.insert("kubernetes", own);
    }
    chosen.values().flat_map(|s| service_env(s)).collect()
}

/// Expands `$(VAR)` references in an env value as the kubelet does: `$$` escapes, unknown
/// references stay as written.
pub fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = value[i + 2..].find(')')
            {
                let name = &value[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&value[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = value[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> EnvService {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap();
        EnvService::of(&s)
    }

    #[test]
    fn upstream_conformance_example() {
        let s = svc(
            "default",
            "fooservice",
            "10.0.0.11",
            serde_json::json!([{"port": 8765, "protocol": "TCP", "targetPort": 8080}]),
        );
        let env: Vec<(String, String)> = service_env(&s);
        assert_eq!(
            env,
            vec![
                ("FOOSERVICE_SERVICE_HOST".into(), "10.0.0.11".into()),
                ("FOOSERVICE_SERVICE_PORT".into(), "8765".into()),
                ("FOOSERVICE_PORT".into(), "tcp://10.0.0.11:8765".into()),
                ("FOOSERVICE_PORT_8765_TCP".into(), "tcp://10.0.0.11:8765".into()),
                ("FOOSERVICE_PORT_8765_TCP_PROTO".into(), "tcp".into()),
                ("FOOSERVICE_PORT_8765_TCP_PORT".into(), "8765".into()),
                ("FOOSERVICE_PORT_8765_TCP_ADDR".into(), "10.0.0.11".into()),
            ]
        );
    }

    #[test]
    fn dashes_named_and_unnamed_ports() {
        let s = svc(
            "default",
            "nginx-service",
            "192.168.255.152",
            serde_json::json!([{"name": "tcp-80-80-chjh2", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
        );
        let env: BTreeMap<String, String> = service_env(&s).into_iter().collect();
        assert_eq!(env["NGINX_SERVICE_SERVICE_PORT_TCP_80_80_CHJH2"], "80");
        assert_eq!(env["NGINX_SERVICE_PORT"], "tcp://192.168.255.152:80");
        assert_eq!(env["NGINX_SERVICE_PORT_53_UDP"], "udp://192.168.255.152:53");
        assert_eq!(env["NGINX_SERVICE_PORT_53_UDP_PROTO"], "udp");
        assert!(!env.keys().any(|k| k.starts_with("NGINX_SERVICE_SERVICE_PORT_53")));
    }

    #[test]
    fn headless_and_external_names_give_nothing_and_ipv6_is_bracketed() {
        assert!(service_env(&svc("d", "h", "None", serde_json::json!([{"port": 80}]))).is_empty());
        assert!(service_env(&svc("d", "e", "", serde_json::json!([{"port": 80}]))).is_empty());
        let v6: BTreeMap<String, String> =
            service_env(&svc("d", "v6", "fd00::1", serde_json::json!([{"port": 80}]))).into_iter().collect();
        assert_eq!(v6["V6_PORT"], "tcp://[fd00::1]:80");
        assert_eq!(v6["V6_SERVICE_HOST"], "fd00::1");
    }

    #[test]
    fn namespace_scope_links_and_shadowing() {
        let all = vec![
            svc("default", "kubernetes", "10.96.0.1", serde_json::json!([{"name": "https", "port": 443}])),
            svc("default", "kubia", "10.96.0.50", serde_json::json!([{"port": 80}])),
            svc("other", "redis", "10.96.0.60", serde_json::json!([{"port": 6379}])),
        ];
        let env = pod_service_env("default", true, &all);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBIA_SERVICE_HOST"], "10.96.0.50");
        assert!(!env.contains_key("REDIS_SERVICE_HOST"));
        let off = pod_service_env("default", false, &all);
        assert!(off.contains_key("KUBERNETES_SERVICE_HOST") && !off.contains_key("KUBIA_SERVICE_HOST"));
        let mut shadow = all.clone();
        shadow.push(svc("other", "kubernetes", "10.96.0.99", serde_json::json!([{"port": 443}])));
        assert_eq!(pod_service_env("other", true, &shadow)["KUBERNETES_SERVICE_HOST"], "10.96.0.99");
        assert_eq!(pod_service_env("default", true, &shadow)["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
    }

    #[test]
    fn expansion() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("héllo $(A)", &vars), "héllo x");
    }
}
