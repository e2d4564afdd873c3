//! End-to-end, in a sealed network namespace: `pier server` registers its node, and the node
//! shows what `kubectl get nodes` shows on a real cluster; `kubectl label node` works.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Cluster, NODE_IP};

#[test]
fn the_server_is_a_ready_node() {
    let c = Cluster::start_sealed(&[]);
    let out = c.kubectl(&["get", "nodes", "-o", "wide"]).ok().stdout;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..6], ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]);
    assert_eq!(rows[1][0], "pier-node");
    assert_eq!(rows[1][1], "Ready");
    assert_eq!(rows[1][5], NODE_IP);
    c.kubectl(&["label", "node", "pier-node", "gpu=true"]).ok();
    let labels = c.kubectl(&["get", "node", "pier-node", "-o", "jsonpath={.metadata.labels.gpu}"]).ok().stdout;
    assert_eq!(labels, "true");
    let cidr = c.kubectl(&["get", "node", "pier-node", "-o", "jsonpath={.spec.podCIDR}"]).ok().stdout;
    assert_eq!(cidr, "10.244.0.0/24");
    // The kubernetes Service points at this node's API server.
    let ep = c.kubectl(&["get", "endpoints", "kubernetes"]).ok().stdout;
    assert!(ep.contains(&format!("{NODE_IP}:6443")), "{ep}");
    // ... and the API answers there, seen from the other end of the node's link.
    let peer = &c.netns.as_ref().unwrap().peer;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", peer, "curl", "-sk", "--max-time", "5", &format!("https://{NODE_IP}:6443/livez")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
}
