//! End-to-end, in a sealed network namespace: pods really run — their own IP, hostname,
//! resolv.conf and service environment variables, logs and exec through kubectl — and the
//! seed's readiness-probe session works as it shows (`touch /var/ready` makes that pod Ready).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Cluster, wait_until};

const KUBIA_SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: kubia
spec:
  ports:
  - name: http
    port: 80
    targetPort: http
  selector:
    app: kubia
";

fn kubia_pod(name: &str, extra_container: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: kubia
spec:
  nodeName: pier-node
  containers:
  - name: kubia
    image: luksa/kubia
    ports:
    - name: http
      containerPort: 8080
{extra_container}"
    )
}

#[test]
fn a_pod_runs_with_its_own_ip_hostname_env_dns_config_logs_and_exec() {
    let c = Cluster::start_sealed(&[]);
    c.kubectl_stdin(&["apply", "-f", "-"], KUBIA_SVC).ok();
    let svc_ip = c.kubectl(&["get", "svc", "kubia", "-o", "jsonpath={.spec.clusterIP}"]).ok().stdout;
    c.kubectl_stdin(&["apply", "-f", "-"], &kubia_pod("kubia", "")).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/kubia", "--timeout=30s"]).ok();

    let t = c.kubectl(&["get", "po", "-o", "wide"]).ok().stdout;
    let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["kubia", "1/1", "Running"], "{t}");
    let ip = row[5];
    assert!(ip.starts_with("10.244.0."), "{t}");
    assert_eq!(row[6], "pier-node");

    assert_eq!(c.kubectl(&["exec", "kubia", "--", "hostname"]).ok().stdout.trim(), "kubia");
    let env = c.kubectl(&["exec", "kubia", "--", "env"]).ok().stdout;
    for want in [
        format!("KUBIA_SERVICE_HOST={svc_ip}"),
        "KUBIA_SERVICE_PORT=80".to_string(),
        "KUBIA_SERVICE_PORT_HTTP=80".to_string(),
        format!("KUBIA_PORT=tcp://{svc_ip}:80"),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".to_string(),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }
    assert_eq!(
        c.kubectl(&["exec", "kubia", "--", "cat", "/etc/resolv.conf"]).ok().stdout,
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let hosts = c.kubectl(&["exec", "kubia", "--", "cat", "/etc/hosts"]).ok().stdout;
    assert!(hosts.contains(&format!("{ip}\tkubia")), "{hosts}");

    // The built-in image answers on the pod IP, from the node.
    let out = c.command("curl").args(["-s", "--max-time", "5", &format!("http://{ip}:8080/")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "You've hit kubia\n");
    let logs = c.kubectl(&["logs", "kubia"]).ok().stdout;
    assert!(logs.contains("Kubia server starting"), "{logs}");

    // exec passes exit codes through; a file one pod writes is its own.
    let out = c.kubectl(&["exec", "kubia", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    c.kubectl(&["exec", "kubia", "--", "touch", "/var/only-kubia"]).ok();
    c.kubectl_stdin(&["apply", "-f", "-"], &kubia_pod("kubia-2", "")).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/kubia-2", "--timeout=30s"]).ok();
    c.kubectl(&["exec", "kubia-2", "--", "ls", "/var/only-kubia"]).fails();
    assert!(!std::path::Path::new("/var/only-kubia").exists());

    // Deleting a pod stops it and removes it for good.
    c.kubectl(&["delete", "pod", "kubia", "kubia-2", "--timeout=60s"]).ok();
    let out = c.kubectl(&["get", "pods"]).ok();
    assert!(out.stderr.contains("No resources found"), "{}", out.stderr);
}

#[test]
fn seed_readiness_probe_session() {
    let c = Cluster::start_sealed(&[]);
    c.kubectl_stdin(&["apply", "-f", "-"], KUBIA_SVC).ok();
    let probe = "    readinessProbe:\n      exec:\n        command:\n        - ls\n        - /var/ready\n      periodSeconds: 1\n";
    for name in ["kubia-a", "kubia-b"] {
        c.kubectl_stdin(&["apply", "-f", "-"], &kubia_pod(name, probe)).ok();
    }
    let ready_of = |name: &str| {
        c.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]).ok().stdout
    };
    wait_until("both pods running", Duration::from_secs(30), || {
        let out = c.kubectl(&["get", "pods"]).ok().stdout;
        (out.matches("0/1     Running").count() == 2).then_some(out)
    });
    // Never ready without the file.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ready_of("kubia-a"), "False");
    c.kubectl(&["exec", "kubia-a", "--", "touch", "/var/ready"]).ok();
    wait_until("kubia-a ready", Duration::from_secs(10), || (ready_of("kubia-a") == "True").then_some(String::new()));
    assert_eq!(ready_of("kubia-b"), "False", "only the pod with the file is ready");
    let t = c.kubectl(&["get", "pods"]).ok().stdout;
    assert!(t.lines().any(|l| l.starts_with("kubia-a") && l.contains("1/1")), "{t}");
    c.kubectl(&["exec", "kubia-a", "--", "rm", "/var/ready"]).ok();
    wait_until("kubia-a unready", Duration::from_secs(10), || {
        (ready_of("kubia-a") == "False").then_some(String::new())
    });
}

#[test]
fn an_image_without_an_entrypoint_says_why() {
    let c = Cluster::start_sealed(&[]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mystery\nspec:\n  nodeName: pier-node\n  containers:\n  - name: app\n    image: example.com/mystery:1.0\n";
    c.kubectl_stdin(&["apply", "-f", "-"], pod).ok();
    let msg = wait_until("a waiting reason", Duration::from_secs(20), || {
        let m = c
            .kubectl(&["get", "pod", "mystery", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}"])
            .ok()
            .stdout;
        (!m.is_empty()).then_some(m)
    });
    assert!(msg.contains("has no built-in entrypoint: set command"), "{msg}");
    // And one with a command runs the host's executable.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  nodeName: pier-node\n  containers:\n  - name: app\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n";
    c.kubectl_stdin(&["apply", "-f", "-"], pod).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/sleeper", "--timeout=30s"]).ok();
}
