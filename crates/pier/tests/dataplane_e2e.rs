//! End-to-end, in a sealed network namespace, the Service data plane with the real kubectl
//! and curl: the seeds' kubia sessions through the cluster IP (every replica answers), by
//! named port, with ClientIP affinity, through a NodePort from outside the node, refusal when
//! a Service has no ready endpoint, an unready pod leaving the rotation, a deleted Service
//! going silent while others keep answering, and `pier proxy rules`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Cluster, NODE_IP, wait_until};

const KUBIA: &str = "apiVersion: apps/v1
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
      containers:
      - name: kubia
        image: luksa/kubia
        readinessProbe:
          exec:
            command: [sh, -c, 'test ! -e /var/unready']
          periodSeconds: 1
        ports:
        - name: http
          containerPort: 8080
---
apiVersion: v1
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
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-by-number
spec:
  ports:
  - port: 8888
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-sticky
spec:
  sessionAffinity: ClientIP
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-nodeport
spec:
  type: NodePort
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 30123
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
spec:
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: nobody
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: client
    image: busybox
    command: [sleep, '3600']
";

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.kubectl(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]).ok().stdout
}

/// `n` requests from the client pod, one connection each; returns every answer (or curl's
/// exit code as `curl: N`).
fn curl_n(c: &Cluster, url: &str, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do out=$(curl -s -m 2 {url}); rc=$?; if [ $rc = 0 ]; then echo \"$out\"; else echo \"curl: $rc\"; fi; done"
    );
    let out = c.kubectl(&["exec", "client", "--", "sh", "-c", &script]).ok().stdout;
    out.lines().map(str::to_string).collect()
}

fn pods(c: &Cluster) -> BTreeSet<String> {
    let out = c.kubectl(&["get", "pods", "-l", "app=kubia", "-o", "jsonpath={.items[*].metadata.name}"]).ok().stdout;
    out.split_whitespace().map(|s| format!("You've hit {s}")).collect()
}

fn seed_sessions(mode: &str) {
    let c = Cluster::start_sealed(&["--proxy-mode", mode]);
    c.kubectl_stdin(&["apply", "-f", "-"], KUBIA).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod", "-l", "app=kubia", "--timeout=60s"]).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/client", "--timeout=60s"]).ok();
    let expected = pods(&c);
    assert_eq!(expected.len(), 3);
    let ip = cluster_ip(&c, "kubia");

    // Every replica answers through the cluster IP, by the named port's Service and by number.
    let seen: BTreeSet<String> = wait_until("every replica behind the cluster IP", Duration::from_secs(20), || {
        let seen: BTreeSet<String> = curl_n(&c, &format!("http://{ip}"), 30).into_iter().collect();
        (seen == expected).then_some(seen)
    });
    assert_eq!(seen, expected);
    let by_number = cluster_ip(&c, "kubia-by-number");
    let answers = curl_n(&c, &format!("http://{by_number}:8888"), 10);
    assert!(answers.iter().all(|a| expected.contains(a)), "{answers:?}");

    // ClientIP affinity: one client, one pod, 15 times in a row.
    let sticky = cluster_ip(&c, "kubia-sticky");
    let answers = curl_n(&c, &format!("http://{sticky}"), 15);
    assert!(expected.contains(&answers[0]), "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "affinity broke: {answers:?}");

    // NodePort 30123 from outside the node (the peer namespace), and from the node itself.
    let netns = c.netns.as_ref().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.peer, "curl", "-s", "-m", "3", &format!("http://{NODE_IP}:30123")])
        .output()
        .unwrap();
    assert!(expected.contains(String::from_utf8_lossy(&out.stdout).trim()), "{out:?}");
    let out = c.command("curl").args(["-s", "-m", "3", &format!("http://{NODE_IP}:30123")]).output().unwrap();
    assert!(expected.contains(String::from_utf8_lossy(&out.stdout).trim()), "{out:?}");

    // No endpoint: refused at once, not a timeout.
    let nobody = cluster_ip(&c, "nobody");
    let started = Instant::now();
    let answers = curl_n(&c, &format!("http://{nobody}"), 3);
    assert_eq!(answers, ["curl: 7", "curl: 7", "curl: 7"], "expected connection refused");
    assert!(started.elapsed() < Duration::from_secs(3), "refusal took {:?}", started.elapsed());

    // A pod that turns unready leaves the rotation.
    let victim = c.kubectl(&["get", "pods", "-l", "app=kubia", "-o", "jsonpath={.items[0].metadata.name}"]).ok().stdout;
    c.kubectl(&["exec", &victim, "--", "touch", "/var/unready"]).ok();
    let gone = format!("You've hit {victim}");
    wait_until("the unready pod leaves the rotation", Duration::from_secs(20), || {
        let answers = curl_n(&c, &format!("http://{ip}"), 20);
        (!answers.contains(&gone) && answers.iter().all(|a| expected.contains(a))).then_some(())
    });
    c.kubectl(&["exec", &victim, "--", "rm", "/var/unready"]).ok();

    // A deleted Service stops answering; the others keep working.
    c.kubectl(&["delete", "svc", "kubia-by-number"]).ok();
    wait_until("the deleted Service goes silent", Duration::from_secs(10), || {
        let answers = curl_n(&c, &format!("http://{by_number}:8888"), 1);
        answers[0].starts_with("curl: ").then_some(())
    });
    let answers = curl_n(&c, &format!("http://{ip}"), 5);
    assert!(answers.iter().all(|a| expected.contains(a)), "{answers:?}");

    if mode == "nftables" {
        let rules = c.command(common::pier_bin().to_str().unwrap()).args(["proxy", "rules"]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        assert!(rules.contains("table ip pier"), "{rules}");
        assert!(rules.contains("comment \"default/kubia:http\""), "{rules}");
        assert!(rules.contains(&format!("{ip} . tcp . 80 : goto service-")), "{rules}");
        assert!(rules.contains("tcp . 30123 : goto external-"), "{rules}");

        // Deleted out of band: restored by the next check.
        c.command("nft").args(["delete", "table", "ip", "pier"]).status().unwrap();
        wait_until("the table restored", Duration::from_secs(10), || {
            let answers = curl_n(&c, &format!("http://{ip}"), 1);
            expected.contains(&answers[0]).then_some(())
        });
    }
}

#[test]
fn nftables_mode_serves_the_seed_sessions() {
    seed_sessions("nftables");
}
