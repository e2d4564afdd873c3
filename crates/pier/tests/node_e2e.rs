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

/// A second machine joins with `pier agent --server URL --token-file FILE`: here the other end
/// of the node's link (the peer namespace) plays that machine.
#[test]
fn a_second_node_joins_with_pier_agent() {
    let c = Cluster::start_sealed(&[]);
    let peer = c.netns.as_ref().unwrap().peer.clone();
    let agent_dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(agent_dir.path().join("agent.log")).unwrap();
    let mut agent = std::process::Command::new("ip")
        .args(["netns", "exec", &peer])
        .arg(common::pier_bin())
        .args(["agent", "--server", &format!("https://{NODE_IP}:6443"), "--token-file"])
        .arg(c.data_dir.join("token"))
        .arg("--ca-file")
        .arg(c.data_dir.join("pki/ca.crt"))
        .arg("--data-dir")
        .arg(agent_dir.path())
        .args(["--node-ip", "198.51.100.2", "--node-name", "pier-node-2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let nodes = loop {
        let out = c.kubectl(&["get", "nodes", "--no-headers"]).ok().stdout;
        if out.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() == 2 {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "second node did not join: {out}\n{}",
            std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(nodes.contains("pier-node-2"), "{nodes}");
    let cidr = c.kubectl(&["get", "node", "pier-node-2", "-o", "jsonpath={.spec.podCIDR}"]).ok().stdout;
    assert_eq!(cidr, "10.244.1.0/24");
    // A pod bound to the new node runs there, with an address from its range.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: far\nspec:\n  nodeName: pier-node-2\n  containers:\n  - name: kubia\n    image: luksa/kubia\n";
    c.kubectl_stdin(&["apply", "-f", "-"], pod).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/far", "--timeout=30s"]).ok();
    let ip = c.kubectl(&["get", "pod", "far", "-o", "jsonpath={.status.podIP}"]).ok().stdout;
    assert!(ip.starts_with("10.244.1."), "{ip}");
    // Its logs and exec come from the node that runs it, through that node's kubelet port,
    // whose certificate the API server pins from the Node's annotation.
    let annotation = c
        .kubectl(&[
            "get",
            "node",
            "pier-node-2",
            "-o",
            "jsonpath={.metadata.annotations.pier\\.dev/kubelet-serving-cert-sha256}",
        ])
        .ok()
        .stdout;
    assert_eq!(annotation.len(), 64, "{annotation:?}");
    let logs = c.kubectl(&["logs", "far"]).ok().stdout;
    assert!(logs.contains("Kubia server starting..."), "{logs}");
    assert_eq!(c.kubectl(&["exec", "far", "--", "hostname"]).ok().stdout.trim(), "far");
    assert_eq!(
        c.kubectl_stdin(&["exec", "-i", "far", "--", "cat"], "through two machines\n").ok().stdout,
        "through two machines\n"
    );
    let failed = c.kubectl(&["exec", "far", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert!(failed.stderr.contains("oops"), "{}", failed.stderr);
    let missing = c.kubectl(&["exec", "far", "--", "/no/such/command"]);
    assert_ne!(missing.code, 0);
    assert!(!missing.stderr.is_empty());
    // The kubelet port answers only the cluster's token.
    let out = c
        .command("curl")
        .args(["-sk", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer wrong"])
        .arg("https://198.51.100.2:10250/containerLogs/default/far/kubia")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let _ = agent.kill();
    let _ = agent.wait();
    common::kill_pods(agent_dir.path());
}

/// The README's way to try pier: `scripts/sandbox` starts a whole cluster in a sealed
/// namespace, and stopping it leaves nothing behind (its pods included, which outlive their
/// agent by design).
#[test]
fn the_sandbox_script_starts_a_cluster_and_cleans_up_after_it() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let ns = format!("pier-sbx-{}", std::process::id());
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let log = data.path().join("sandbox.log");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sandbox");
    let mut child = Command::new("bash")
        .args([script, common::pier_bin().to_str().unwrap()])
        .env("PIER_SANDBOX_NS", &ns)
        .env("PIER_SANDBOX_DIR", &data_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(data.path().join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let kubectl = |args: &[&str]| {
        let kubeconfig = data_dir.join("kubeconfig.yaml");
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "kubectl", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    common::wait_until("the sandbox's node to be Ready", Duration::from_secs(60), || {
        let (ok, out) = kubectl(&["get", "nodes", "--no-headers"]);
        (ok && out.split_whitespace().nth(1) == Some("Ready")).then_some(())
    });
    kubectl(&["run", "sbx", "--image=luksa/kubia"]);
    common::wait_until("the sandbox's pod to run", Duration::from_secs(60), || {
        let (_, out) = kubectl(&["get", "pod", "sbx", "--no-headers"]);
        (out.split_whitespace().nth(2) == Some("Running")).then_some(())
    });
    let holders = pier_runtime::recorded_sandboxes(&data_dir.join("runtime")).unwrap();
    let [pier_runtime::RecordedSandbox { holder: Some((_, net)), .. }] = holders[..] else {
        panic!("one pod with a holder: {holders:?}")
    };
    let in_pod = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/net")).is_ok_and(|l| l.to_string_lossy() == format!("net:[{net}]"))
            })
            .count()
    };
    assert!(in_pod() >= 2, "the holder and the container run");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = common::wait_until("the sandbox script to end", Duration::from_secs(30), || child.try_wait().unwrap());
    assert!(status.code().is_some(), "ended by its own cleanup, not by the signal: {status:?}");
    assert_eq!(in_pod(), 0, "the pod's processes are gone");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.lines().any(|l| l.starts_with(&ns)), "namespaces left: {list}");
    assert!(std::fs::read_to_string(&log).unwrap().contains(&format!("namespace {ns}")));
}
