//! Test fixtures: terse builders for the objects the pure reconciles read (the seeds' `kubia`
//! pods and Services among them) and a fixed clock. Test-only.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodIP, PodSpec, PodStatus,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::write::Write;

/// The fixed "now" of the tests: 2024-01-01T00:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_704_067_200).unwrap()
}

/// `now` plus `secs`.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_704_067_200 + secs).unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("1".into()),
        creation_timestamp: Some(Time(at(-3600))),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// The seeds' kubia container: ports `http` 8080 and `https` 8443.
pub fn kubia_container() -> Container {
    Container {
        name: "kubia".into(),
        image: Some("luksa/kubia".into()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("https".into()),
                container_port: 8443,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        ..Container::default()
    }
}

/// A pod of `app=kubia` on `node`, with `ip` (none when empty) and Ready as given.
pub fn pod(name: &str, ip: &str, ready: bool, node: &str) -> Pod {
    let mut m = meta("default", name);
    m.labels = Some(labels(&[("app", "kubia")]));
    Pod {
        metadata: m,
        spec: Some(PodSpec {
            containers: vec![kubia_container()],
            node_name: Some(node.to_string()).filter(|n| !n.is_empty()),
            scheduler_name: Some("default-scheduler".into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some(if ip.is_empty() { "Pending" } else { "Running" }.into()),
            pod_ip: Some(ip.to_string()).filter(|i| !i.is_empty()),
            pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.to_string() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(at(-600))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

pub fn service_port(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()).filter(|n| !n.is_empty()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The seeds' `kubia` Service: `http` 80 → `http`, `https` 443 → `https`, selector `app=kubia`.
pub fn kubia_service() -> Service {
    Service {
        metadata: meta("default", "kubia"),
        spec: Some(ServiceSpec {
            selector: Some(labels(&[("app", "kubia")])),
            cluster_ip: Some("10.96.0.20".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![
                service_port("http", 80, IntOrString::String("http".into())),
                service_port("https", 443, IntOrString::String("https".into())),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn node(name: &str, node_labels: &[(&str, &str)], ready: bool) -> Node {
    let mut m = meta("", name);
    m.namespace = None;
    m.labels = Some(labels(node_labels));
    Node {
        metadata: m,
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// The one-line summaries of `writes`.
pub fn summaries(writes: &[Write]) -> Vec<String> {
    writes.iter().map(Write::summary).collect()
}

/// The object of the `i`th write, or a panic naming what was there.
pub fn object(writes: &[Write], i: usize) -> Value {
    writes.get(i).and_then(|w| w.object().cloned()).unwrap_or_else(|| panic!("no object in write {i}: {writes:#?}"))
}

/// Pretends `writes` were applied: creates get a name, everything a resourceVersion, and the
/// results decode as `T`.
pub fn as_stored<T: serde::de::DeserializeOwned>(writes: &[Write], kind: crate::Kind) -> Vec<T> {
    writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.kind() == kind)
        .filter_map(|(i, w)| {
            let mut v = w.object()?.clone();
            if v["metadata"]["name"].is_null() {
                let prefix = v["metadata"]["generateName"].as_str().unwrap_or_default().to_string();
                v["metadata"]["name"] = Value::String(format!("{prefix}{i:05}"));
                v["metadata"]["uid"] = Value::String(format!("uid-created-{i}"));
            }
            v["metadata"]["resourceVersion"] = Value::String("2".into());
            Some(serde_json::from_value(v).unwrap())
        })
        .collect()
}
