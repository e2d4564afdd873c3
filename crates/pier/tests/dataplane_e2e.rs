//! End-to-end, in a sealed network namespace, the Service data plane with the real kubectl
//! and curl: the seeds' kubia sessions through the cluster IP (every replica answers), by
//! named port, with ClientIP affinity, through a NodePort from outside the node, refusal when
//! a Service has no ready endpoint, an unready pod leaving the rotation, a deleted Service
//! going silent while others keep answering, and `pier proxy rules`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{CLIENT_POD, Cluster, HTTPD_DEPLOYMENT, NODE_IP, wait_until};

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
  type: NodePort
  sessionAffinity: ClientIP
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 30125
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
kind: Service
metadata:
  name: kubia-loadbalancer
spec:
  type: LoadBalancer
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: httpd-svc
spec:
  selector:
    run: httpd
  ports:
  - protocol: TCP
    port: 8080
    targetPort: 80
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
    c.kubectl_stdin(&["apply", "-f", "-"], &format!("{KUBIA}---\n{CLIENT_POD}---\n{HTTPD_DEPLOYMENT}")).ok();
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

    // Seed 002: httpd-svc answers on 8080 from the node itself, as `curl 10.110.212.171:8080`.
    c.kubectl(&["wait", "--for=condition=Ready", "pod", "-l", "run=httpd", "--timeout=60s"]).ok();
    let httpd = cluster_ip(&c, "httpd-svc");
    let page = wait_until("httpd-svc from the node", Duration::from_secs(10), || {
        let out = c.command("curl").args(["-s", "-m", "3", &format!("{httpd}:8080")]).output().unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        body.contains("It works!").then_some(body)
    });
    assert_eq!(page.trim(), "<html><body><h1>It works!</h1></body></html>");

    // ClientIP affinity: one client, one pod, 15 times in a row.
    let sticky = cluster_ip(&c, "kubia-sticky");
    let answers = curl_n(&c, &format!("http://{sticky}"), 15);
    assert!(expected.contains(&answers[0]), "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "affinity broke: {answers:?}");
    // The pin is the Service port's, whichever address the client comes in through.
    let through_node_port = curl_n(&c, &format!("http://{NODE_IP}:30125"), 5);
    assert!(through_node_port.iter().all(|a| *a == answers[0]), "{through_node_port:?} after {answers:?}");

    // NodePort 30123 from outside the node (the peer namespace), and from the node itself.
    let netns = c.netns.as_ref().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.peer, "curl", "-s", "-m", "3", &format!("http://{NODE_IP}:30123")])
        .output()
        .unwrap();
    assert!(expected.contains(String::from_utf8_lossy(&out.stdout).trim()), "{out:?}");
    let out = c.command("curl").args(["-s", "-m", "3", &format!("http://{NODE_IP}:30123")]).output().unwrap();
    assert!(expected.contains(String::from_utf8_lossy(&out.stdout).trim()), "{out:?}");

    // Without a pool a LoadBalancer Service stays <pending> and works as a NodePort Service.
    let table = c.kubectl(&["get", "svc", "kubia-loadbalancer"]).ok().stdout;
    assert!(table.lines().nth(1).unwrap().contains("<pending>"), "{table}");
    let np = c.kubectl(&["get", "svc", "kubia-loadbalancer", "-o", "jsonpath={.spec.ports[0].nodePort}"]).ok().stdout;
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.peer, "curl", "-s", "-m", "3", &format!("http://{NODE_IP}:{np}")])
        .output()
        .unwrap();
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

    // kube-proxy's health and metrics endpoints.
    let out = c.command("curl").args(["-s", "-m", "3", &format!("http://{NODE_IP}:10256/healthz")]).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"lastUpdated\": \"20"), "{body}");
    let out = c.command("curl").args(["-s", "-m", "3", "http://127.0.0.1:10249/metrics"]).output().unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kubeproxy_network_programming_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(count.is_some_and(|n| n > 0), "{metrics}");
    let mode_answer = c.command("curl").args(["-s", "-m", "3", "http://127.0.0.1:10249/proxyMode"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&mode_answer.stdout), mode);

    if mode == "nftables" {
        // Seed 004: `ping kubia` resolves to the cluster IP and gets no answer (a cluster IP
        // means something only with a port), rather than an ICMP error.
        let out = c.kubectl(&["exec", "client", "--", "ping", "-c", "2", "-W", "1", "kubia"]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains(&format!("PING kubia.default.svc.cluster.local ({ip})")), "{out:?}");
        assert!(out.stdout.contains("2 packets transmitted, 0 received, 100% packet loss"), "{out:?}");

        let rules = c.command(common::pier_bin().to_str().unwrap()).args(["proxy", "rules"]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        assert!(rules.contains("table ip pier"), "{rules}");
        assert!(rules.contains("comment \"default/kubia:http\""), "{rules}");
        assert!(rules.contains(&format!("{ip} . tcp . 80 comment \"default/kubia:http\" : 0x")), "{rules}");
        assert!(rules.contains("tcp . 30123 comment \"default/kubia-nodeport\" : 0x"), "{rules}");

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

const LB: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: kubia
spec:
  replicas: 2
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
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-loadbalancer
spec:
  type: LoadBalancer
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: kubia-local
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
---
apiVersion: v1
kind: Service
metadata:
  name: external-service
spec:
  ports:
  - port: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: external-service
subsets:
  - addresses:
    - ip: 198.51.100.2
    ports:
    - port: 80
";

/// The peer namespace plays the world outside the node: a client of load-balancer IPs and
/// the "external server" behind a selector-less Service with hand-written Endpoints.
#[test]
fn load_balancer_ips_external_endpoints_and_source_addresses() {
    let c = Cluster::start_sealed(&["--loadbalancer-ip-pool", "198.51.100.200/29"]);
    let peer = c.netns.as_ref().unwrap().peer.clone();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "the external server\n").unwrap();
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &peer, "python3", "-m", "http.server", "80", "--bind", "198.51.100.2", "--directory"])
        .arg(www.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);

    c.kubectl_stdin(&["apply", "-f", "-"], &format!("{LB}---\n{CLIENT_POD}")).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod", "-l", "app=kubia", "--timeout=60s"]).ok();
    c.kubectl(&["wait", "--for=condition=Ready", "pod/client", "--timeout=60s"]).ok();
    let expected = pods(&c);

    // Each LoadBalancer Service gets an address of the pool, shown as EXTERNAL-IP.
    let lb_ip = wait_until("an address from the pool", Duration::from_secs(10), || {
        let ip = c
            .kubectl(&["get", "svc", "kubia-loadbalancer", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"])
            .ok()
            .stdout;
        (!ip.is_empty()).then_some(ip)
    });
    assert!(lb_ip.starts_with("198.51.100.20"), "{lb_ip}");
    let table = c.kubectl(&["get", "svc", "kubia-loadbalancer"]).ok().stdout;
    assert!(table.lines().nth(1).unwrap().contains(&lb_ip), "{table}");
    let local_ip = wait_until("a second address", Duration::from_secs(10), || {
        let ip = c
            .kubectl(&["get", "svc", "kubia-local", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"])
            .ok()
            .stdout;
        (!ip.is_empty()).then_some(ip)
    });
    assert_ne!(lb_ip, local_ip);

    let from_peer = |url: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &peer, "curl", "-s", "-m", "3", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The node answers for the address on port 80, from outside.
    let answer = wait_until("the load-balancer IP answering", Duration::from_secs(10), || {
        let a = from_peer(&format!("http://{lb_ip}"));
        expected.contains(&a).then_some(a)
    });
    // externalTrafficPolicy Cluster masquerades; Local keeps the client's address.
    let hit_pod = answer.trim_start_matches("You've hit ").to_string();
    let logs = c.kubectl(&["logs", &hit_pod]).ok().stdout;
    let last = logs.lines().last().unwrap_or_default();
    assert_eq!(last, "Received request from ::ffff:10.244.0.1", "Cluster policy masquerades to the node: {logs}");
    let answer = wait_until("the Local-policy address answering", Duration::from_secs(10), || {
        let a = from_peer(&format!("http://{local_ip}"));
        expected.contains(&a).then_some(a)
    });
    let hit_pod = answer.trim_start_matches("You've hit ").to_string();
    let logs = c.kubectl(&["logs", &hit_pod]).ok().stdout;
    let last = logs.lines().last().unwrap_or_default();
    assert_eq!(last, "Received request from ::ffff:198.51.100.2", "Local policy keeps the source: {logs}");

    // The seed's external-service: a selector-less Service with hand-written Endpoints.
    let ext = cluster_ip(&c, "external-service");
    let answers = wait_until("the external server through the cluster IP", Duration::from_secs(10), || {
        let a = curl_n(&c, &format!("http://{ext}"), 1);
        (a[0] == "the external server").then_some(a)
    });
    assert_eq!(answers, ["the external server"]);
}

#[test]
fn userspace_mode_serves_the_seed_sessions() {
    seed_sessions("userspace");
}
