//! End-to-end, in a sealed network namespace, the seed's workload sessions: the `kubia`
//! ReplicaSet (3 replicas, `nodeSelector: gpu: "true"`, named ports) waits for a labelled
//! node, comes up, fills the Service's endpoints; the seed-004 readiness probe session moves
//! exactly one pod in and out of the endpoints; scaling grows them; a Deployment rolls out.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

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
  - name: https
    port: 443
    targetPort: https
  selector:
    app: kubia
";

/// kubia-replicaset-renameport.yaml from seed 004, with its readiness probe tightened to a
/// one-second period so the test need not wait ten.
const KUBIA_RS: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: kubia
spec:
  replicas: 3
  selector:
    matchLabels:
      app: kubia
  template:
    metadata:
      labels:
        app: kubia
    spec:
      nodeSelector:
        gpu: \"true\"
      containers:
      - name: kubia
        image: luksa/kubia
        readinessProbe:
          exec:
            command:
            - ls
            - /var/ready
          periodSeconds: 1
        ports:
        - name: http
          containerPort: 8080
        - name: https
          containerPort: 8443
";

fn pods(c: &Cluster) -> Vec<Vec<String>> {
    let out = c.kubectl(&["get", "pods", "-l", "app=kubia", "-o", "wide", "--no-headers"]).ok().stdout;
    out.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn seed_replicaset_service_readiness_and_scaling() {
    let c = Cluster::start_sealed(&[]);
    c.kubectl_stdin(&["apply", "-f", "-"], KUBIA_SVC).ok();
    c.kubectl_stdin(&["create", "-f", "-"], KUBIA_RS).ok();
    // No node has gpu=true yet: the pods wait, and say why.
    let events = wait_until("FailedScheduling", Duration::from_secs(20), || {
        let e = c.kubectl(&["get", "events"]).ok().stdout;
        e.contains("FailedScheduling").then_some(e)
    });
    assert!(events.contains("didn't match Pod's node affinity/selector"), "{events}");
    assert!(pods(&c).iter().all(|p| p[2] == "Pending"));

    c.kubectl(&["label", "node", "pier-node", "gpu=true"]).ok();
    let running = wait_until("3 running pods", Duration::from_secs(60), || {
        let p = pods(&c);
        (p.len() == 3 && p.iter().all(|r| r[1] == "0/1" && r[2] == "Running")).then_some(p)
    });
    for r in &running {
        assert!(r[0].starts_with("kubia-") && r[0].len() == "kubia-".len() + 5, "{r:?}");
        assert!(r[5].starts_with("10.244.0."), "{r:?}");
        assert_eq!(r[6], "pier-node");
    }
    // Not ready: the endpoints list them as not ready, the Service has none.
    let ep =
        c.kubectl(&["get", "endpoints", "kubia", "-o", "jsonpath={.subsets[*].notReadyAddresses[*].ip}"]).ok().stdout;
    assert_eq!(ep.split_whitespace().count(), 3, "{ep}");
    // (upstream prints an empty ENDPOINTS cell when every address is not ready)
    let ep = c.kubectl(&["get", "endpoints", "kubia", "--no-headers"]).ok().stdout;
    assert!(!ep.contains("10.244."), "{ep}");

    // The seed's session: touch /var/ready in one pod, and only that one becomes Ready.
    let first = running[0][0].clone();
    let first_ip = running[0][5].clone();
    c.kubectl(&["exec", &first, "--", "touch", "/var/ready"]).ok();
    wait_until("one ready pod", Duration::from_secs(15), || {
        let p = pods(&c);
        (p.iter().filter(|r| r[1] == "1/1").count() == 1 && p.iter().any(|r| r[0] == first && r[1] == "1/1"))
            .then_some(())
    });
    let ep = wait_until("one endpoint", Duration::from_secs(10), || {
        let out = c.kubectl(&["get", "endpoints", "kubia", "--no-headers"]).ok().stdout;
        out.contains(&first_ip).then_some(out)
    });
    assert!(
        ep.contains(&format!("{first_ip}:8443,{first_ip}:8080"))
            || ep.contains(&format!("{first_ip}:8080,{first_ip}:8443")),
        "{ep}"
    );
    let d = c.kubectl(&["describe", "svc", "kubia"]).ok().stdout;
    assert!(d.contains(&format!("{first_ip}:8080")) && d.contains(&format!("{first_ip}:8443")), "{d}");
    let slices = c
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubia",
            "-o",
            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        ])
        .ok()
        .stdout;
    assert_eq!(slices.trim(), first_ip);

    // The environment of a pod started after the Service has the Service's variables.
    let env = c.kubectl(&["exec", &first, "--", "env"]).ok().stdout;
    assert!(env.lines().any(|l| l.starts_with("KUBIA_SERVICE_HOST=10.")), "{env}");
    assert!(env.lines().any(|l| l == "KUBIA_SERVICE_PORT=80"), "{env}");

    // rm makes it unready again.
    c.kubectl(&["exec", &first, "--", "rm", "-f", "/var/ready"]).ok();
    wait_until("no ready pod", Duration::from_secs(15), || pods(&c).iter().all(|r| r[1] == "0/1").then_some(()));

    // Scaling to 5 grows the endpoints (as not-ready addresses until they are ready).
    assert_eq!(c.kubectl(&["scale", "rs", "kubia", "--replicas=5"]).ok().stdout.trim(), "replicaset.apps/kubia scaled");
    wait_until("5 endpoints", Duration::from_secs(60), || {
        let ep = c
            .kubectl(&["get", "endpoints", "kubia", "-o", "jsonpath={.subsets[*].notReadyAddresses[*].ip}"])
            .ok()
            .stdout;
        (ep.split_whitespace().count() == 5).then_some(())
    });
    let rs = c.kubectl(&["get", "rs", "kubia", "--no-headers"]).ok().stdout;
    assert_eq!(rs.split_whitespace().take(4).collect::<Vec<_>>(), ["kubia", "5", "5", "0"], "{rs}");

    // Deleting the ReplicaSet takes its pods, and the endpoints empty.
    c.kubectl(&["delete", "rs", "kubia"]).ok();
    wait_until("pods gone", Duration::from_secs(90), || pods(&c).is_empty().then_some(()));
}

#[test]
fn seed_httpd_deployment_rolls_out_and_serves() {
    let c = Cluster::start_sealed(&[]);
    c.kubectl_stdin(&["apply", "-f", "-"], common::HTTPD_DEPLOYMENT).ok();
    let out = c.kubectl(&["rollout", "status", "deployment/httpd", "--timeout=90s"]).ok().stdout;
    assert!(out.contains("deployment \"httpd\" successfully rolled out"), "{out}");
    let d = c.kubectl(&["get", "deploy", "httpd", "--no-headers"]).ok().stdout;
    assert_eq!(d.split_whitespace().take(4).collect::<Vec<_>>(), ["httpd", "4/4", "4", "4"], "{d}");
    // Every pod answers as the seed shows.
    let ips = c.kubectl(&["get", "pods", "-l", "run=httpd", "-o", "jsonpath={.items[*].status.podIP}"]).ok().stdout;
    for ip in ips.split_whitespace() {
        let out = c.command("curl").args(["-s", "--max-time", "5", &format!("http://{ip}/")]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "<html><body><h1>It works!</h1></body></html>\n");
    }
    // A new template rolls out without dropping below 3 available (maxUnavailable 25% of 4).
    c.kubectl(&["set", "env", "deployment/httpd", "VERSION=2"]).ok();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let available =
            c.kubectl(&["get", "deploy", "httpd", "-o", "jsonpath={.status.availableReplicas}"]).ok().stdout;
        let available: i64 = available.parse().unwrap_or(0);
        assert!(available >= 3, "available dropped to {available}");
        let updated = c
            .kubectl(&[
                "get",
                "deploy",
                "httpd",
                "-o",
                "jsonpath={.status.updatedReplicas}/{.status.replicas}/{.status.readyReplicas}",
            ])
            .ok()
            .stdout;
        if updated == "4/4/4" {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {updated}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rs = c.kubectl(&["get", "rs", "-l", "run=httpd", "--no-headers"]).ok().stdout;
    assert_eq!(rs.lines().count(), 2, "old and new ReplicaSet: {rs}");
}
