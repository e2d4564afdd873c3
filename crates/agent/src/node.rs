//! This machine as a Node object: registration with its addresses, labels, capacity and a
//! pod CIDR (the first /24 of the cluster's pod CIDR that no other node holds), and the
//! heartbeat that keeps its Ready condition current.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::AgentError;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub node_ip: IpAddr,
    /// The cluster's pod CIDR; this node takes one /24 of it.
    pub cluster_pod_cidr: Ipv4Net,
    pub labels: Vec<(String, String)>,
    /// Annotations this node keeps on its Node (refreshed at every start).
    pub annotations: Vec<(String, String)>,
}

pub const KUBELET_VERSION: &str = "v1.32.4-pier";

/// The first /24 of `cluster` that none of `taken` is.
pub fn free_pod_cidr(cluster: Ipv4Net, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let prefix = cluster.prefix_len().max(24);
    cluster.subnets(prefix).ok()?.find(|c| !taken.iter().any(|t| t.contains(&c.network()) || c.contains(&t.network())))
}

fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().trim_end_matches(" kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The Node's status: Ready, addresses, capacity and node info.
pub fn node_status(cfg: &NodeConfig, ready: bool) -> Value {
    let t = now();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{}Ki", memory_kib()), "pods": "110"});
    let condition = |ty: &str, status: &str, reason: &str, message: &str| json!({"type": ty, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": t});
    json!({
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            if ready {
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            } else {
                condition("Ready", "False", "KubeletNotReady", "the pod runtime is not ready")
            },
        ],
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip.to_string()}, {"type": "Hostname", "address": cfg.name}],
        "capacity": capacity,
        "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_version(),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("pier://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

/// Creates the Node (or adopts an existing one of the same name) and returns its pod CIDR.
pub async fn register(client: &kube::Client, cfg: &NodeConfig) -> Result<Ipv4Net, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let existing = nodes.get_opt(&cfg.name).await?;
    let cidr = match existing.as_ref().and_then(|n| n.spec.as_ref()?.pod_cidr.clone()) {
        Some(c) => c.parse::<Ipv4Net>().map_err(|e| AgentError::Config(format!("node podCIDR {c:?}: {e}")))?,
        None => {
            let all = nodes.list(&Default::default()).await?;
            let taken: Vec<Ipv4Net> = all
                .items
                .iter()
                .filter(|n| n.metadata.name.as_deref() != Some(cfg.name.as_str()))
                .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok())
                .collect();
            free_pod_cidr(cfg.cluster_pod_cidr, &taken).ok_or_else(|| {
                AgentError::Config(format!("no free /24 left in the pod CIDR {}", cfg.cluster_pod_cidr))
            })?
        }
    };
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(cfg.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!("amd64"));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!("amd64"));
    for (k, v) in &cfg.labels {
        labels.insert(k.clone(), json!(v));
    }
    let annotations: serde_json::Map<String, Value> =
        cfg.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    if existing.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": cfg.name, "labels": labels, "annotations": annotations},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
        }))
        .map_err(|e| AgentError::Config(e.to_string()))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        // Labels the user set (`kubectl label node`) stay; only ours are refreshed.
        let meta = json!({"metadata": {"labels": labels, "annotations": annotations}});
        nodes.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(meta)).await?;
    }
    report_status(client, cfg, true).await?;
    Ok(cidr)
}

pub async fn report_status(client: &kube::Client, cfg: &NodeConfig, ready: bool) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(json!({"status": node_status(cfg, ready)})))
        .await?;
    Ok(())
}

/// Keeps the Ready condition's heartbeat fresh (upstream's node status update frequency is
/// 10 s; the lease is not modelled).
pub async fn heartbeat(client: kube::Client, cfg: NodeConfig) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = report_status(&client, &cfg, true).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pod_cidrs_are_handed_out_in_order_and_never_twice() {
        let cluster: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(free_pod_cidr(cluster, &[]).unwrap().to_string(), "10.244.0.0/24");
        let taken = vec!["10.244.0.0/24".parse().unwrap(), "10.244.1.0/24".parse().unwrap()];
        assert_eq!(free_pod_cidr(cluster, &taken).unwrap().to_string(), "10.244.2.0/24");
        let small: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        assert!(free_pod_cidr(small, &["10.244.0.0/24".parse().unwrap()]).is_none());
    }

    #[test]
    fn status_has_the_ready_condition_and_addresses() {
        let cfg = NodeConfig {
            name: "n1".into(),
            node_ip: "198.51.100.1".parse().unwrap(),
            cluster_pod_cidr: "10.244.0.0/16".parse().unwrap(),
            labels: vec![],
            annotations: vec![],
        };
        let s = node_status(&cfg, true);
        assert_eq!(s["conditions"][3]["type"], "Ready");
        assert_eq!(s["conditions"][3]["status"], "True");
        assert_eq!(s["addresses"][0], json!({"type": "InternalIP", "address": "198.51.100.1"}));
        assert_eq!(s["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
    }
}
