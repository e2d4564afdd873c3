//! End-to-end: the real `pier server` driven by the real `kubectl`, with the Service YAML of
//! the seed documents (typos corrected, and the originals rejected), the commands users run
//! on Services, upstream's validation messages verbatim, and durability across `kill -9`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Cluster, manifest};

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

/// The seed's kubia-svc.yaml as written: `sepc:` and `//` comments.
const KUBIA_SVC_TYPO: &str = "apiVersion: v1
kind: Service
metadata:
  name: kubia
sepc:
// sessionAffinity: ClientIP	// default None
  ports:
  - name: http			// port alias
    port: 80
    targetPort: http
  - name: https
    port: 443
    targetPort: https
  selector:
    app: kubia
";

const REDIS_SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: redis
  namespace: default
spec:
  selector:
    app: redis
    role: logstor
  clusterIP: 10.97.97.97
  type: ClusterIP
  ports:
  - port: 6379
    targetPort: 6379
";

const HTTPD_SVC: &str = "apiVersion: v1
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

const HTTPD_SVC_NODEPORT: &str = "apiVersion: v1
kind: Service
metadata:
  name: httpd-svc
spec:
  type: NodePort
  selector:
    run: httpd
  ports:
  - protocol: TCP
    nodePort: 31688
    port: 8080
    targetPort: 80
";

const KUBIA_NODEPORT: &str = "apiVersion: v1
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
";

const KUBIA_LB: &str = "apiVersion: v1
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
";

const KUBIA_HEADLESS: &str = "apiVersion: v1
kind: Service
metadata:
  name: kubia-headless
spec:
  clusterIP: None
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
";

const KUBIA_HEADLESS_TYPO: &str = "apiersion: v1
kin: Service
metdata:
  nme: kubia-headless
spe:
  custerIP: None
  prts:
  - port: 80
    targetPort: 8080
  slector:
    app: kubia
";

const EXTERNAL_SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: external-service
spec:
  ports:
  - port: 80
";

const EXTERNAL_EP: &str = "apiVersion: v1
kind: Endpoints
metadata:
  name: external-service
subsets:
  - addresses:
    - ip: 11.11.11.11
    - ip: 22.22.22.22
    ports:
    - port: 80
";

const KUBIA_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: kubia-service
spec:
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: kubia
";

const NGINX_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: nginx-service
spec:
  selector:
    app: nginx
  ports:
  - name: tcp-80-80-chjh2
    port: 80
    protocol: TCP
    targetPort: 80
";

/// Splits `kubectl get` output into rows of whitespace-separated cells.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

fn row<'a>(table: &'a [Vec<String>], name: &str) -> &'a Vec<String> {
    table
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table:?}"))
}

#[test]
fn seed_services_apply_and_print_like_upstream() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    for (file, yaml, name) in [
        ("kubia-svc.yaml", KUBIA_SVC, "kubia"),
        ("redis-svc.yaml", REDIS_SVC, "redis"),
        ("Httpd-Service.yaml", HTTPD_SVC, "httpd-svc"),
        ("kubia-svc-nodeport.yaml", KUBIA_NODEPORT, "kubia-nodeport"),
        ("kubia-svc-loadbalancer.yaml", KUBIA_LB, "kubia-loadbalancer"),
        ("kubia-svc-headless.yaml", KUBIA_HEADLESS, "kubia-headless"),
        ("kubia-service.yaml", KUBIA_SERVICE, "kubia-service"),
        ("nginx-service.yaml", NGINX_SERVICE, "nginx-service"),
    ] {
        let out = c.kubectl(&["apply", "-f", &manifest(&dir, file, yaml)]).ok();
        assert_eq!(out.stdout.trim(), format!("service/{name} created"));
    }
    c.kubectl(&["create", "-f", &manifest(&dir, "external-service.yaml", EXTERNAL_SVC)]).ok();
    c.kubectl(&["create", "-f", &manifest(&dir, "external-service-endpoints.yaml", EXTERNAL_EP)]).ok();

    let out = c.kubectl(&["get", "svc"]).ok().stdout;
    let t = rows(&out);
    assert_eq!(t[0], ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!(row(&t, "kubernetes")[1..5], ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"]);
    assert_eq!(row(&t, "kubia")[4], "80/TCP,443/TCP");
    assert_eq!(row(&t, "redis")[1..5], ["ClusterIP", "10.97.97.97", "<none>", "6379/TCP"]);
    assert_eq!(row(&t, "kubia-nodeport")[1], "NodePort");
    assert_eq!(row(&t, "kubia-nodeport")[4], "80:30123/TCP");
    assert_eq!(row(&t, "kubia-loadbalancer")[1], "LoadBalancer");
    assert_eq!(row(&t, "kubia-loadbalancer")[3], "<pending>");
    assert!(row(&t, "kubia-loadbalancer")[4].starts_with("80:3"), "{out}");
    assert_eq!(row(&t, "kubia-headless")[1..5], ["ClusterIP", "None", "<none>", "80/TCP"]);
    assert_eq!(row(&t, "external-service")[4], "80/TCP");
    let kubia_ip = row(&t, "kubia")[2].clone();
    assert!(kubia_ip.starts_with("10.") && kubia_ip != "10.96.0.1", "{kubia_ip}");

    // -o wide adds the selector.
    let t = rows(&c.kubectl(&["get", "svc", "-o", "wide"]).ok().stdout);
    assert_eq!(t[0].last().unwrap(), "SELECTOR");
    assert_eq!(row(&t, "redis").last().unwrap(), "app=redis,role=logstor");
    assert_eq!(row(&t, "external-service").last().unwrap(), "<none>");

    // -A shows every namespace, with kube-dns where the seeds show it.
    let t = rows(&c.kubectl(&["get", "svc", "-A"]).ok().stdout);
    assert_eq!(t[0][0], "NAMESPACE");
    let dns = t.iter().find(|r| r.get(1).map(String::as_str) == Some("kube-dns")).unwrap();
    assert_eq!(dns[..6], ["kube-system", "kube-dns", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP,9153/TCP"]);

    // -o yaml shows the server's defaults.
    let y = c.kubectl(&["get", "svc", "kubia", "-o", "yaml"]).ok().stdout;
    for want in [
        "sessionAffinity: None",
        "type: ClusterIP",
        "protocol: TCP",
        "targetPort: http",
        "ipFamilyPolicy: SingleStack",
        "- IPv4",
        "internalTrafficPolicy: Cluster",
    ] {
        assert!(y.contains(want), "missing {want:?} in\n{y}");
    }
    assert!(y.contains(&format!("clusterIP: {kubia_ip}")), "{y}");

    // describe, as in the seed.
    // kubectl aligns the values after the longest label, which differs between versions:
    // compare with runs of spaces collapsed.
    let squeeze = |s: &str| s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
    let d = squeeze(&c.kubectl(&["describe", "svc", "external-service"]).ok().stdout);
    for want in [
        "Name: external-service",
        "Namespace: default",
        "Selector: <none>",
        "Type: ClusterIP",
        "Port: <unset> 80/TCP",
        "TargetPort: 80/TCP",
        "Session Affinity: None",
        "Events: <none>",
    ] {
        assert!(d.iter().any(|l| l == want), "missing {want:?} in\n{d:#?}");
    }
    let d = squeeze(&c.kubectl(&["describe", "svc", "kubia-nodeport"]).ok().stdout);
    assert!(d.iter().any(|l| l == "NodePort: <unset> 30123/TCP"), "{d:#?}");
    assert!(d.iter().any(|l| l == "External Traffic Policy: Cluster"), "{d:#?}");

    // The manual Endpoints of a selector-less Service.
    let t = rows(&c.kubectl(&["get", "endpoints", "external-service"]).ok().stdout);
    assert_eq!(t[0], ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(t[1][1], "11.11.11.11:80,22.22.22.22:80");

    // The seed's second apply of httpd-svc turns it into a NodePort Service.
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "Httpd-Service.yaml", HTTPD_SVC_NODEPORT)]).ok();
    assert_eq!(out.stdout.trim(), "service/httpd-svc configured");
    let t = rows(&c.kubectl(&["get", "svc", "httpd-svc"]).ok().stdout);
    assert_eq!(row(&t, "httpd-svc")[1], "NodePort");
    assert_eq!(row(&t, "httpd-svc")[4], "8080:31688/TCP");
}

#[test]
fn seed_typos_get_clear_errors_and_the_corrected_yaml_applies() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let typo = c.kubectl(&["apply", "-f", &manifest(&dir, "kubia-svc.yaml", KUBIA_SVC_TYPO)]).fails();
    assert!(typo.stderr.contains("error"), "{}", typo.stderr);
    let typo = c.kubectl(&["apply", "-f", &manifest(&dir, "kubia-svc-headless.yaml", KUBIA_HEADLESS_TYPO)]).fails();
    assert!(typo.stderr.contains("apiVersion") || typo.stderr.contains("kind"), "{}", typo.stderr);
    // `sepc:` alone (valid YAML): the server's strict decoding names the field.
    let sepc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: kubia\nsepc:\n  ports:\n  - port: 80\n";
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "sepc.yaml", sepc)]).fails();
    assert!(out.stderr.contains(r#"strict decoding error: unknown field "sepc""#), "{}", out.stderr);
    // `apiVersion: vl`
    let vl = "apiVersion: vl\nkind: Service\nmetadata:\n  name: kubia\nspec:\n  sessionAffinity: ClientIP\n  ports:\n  - port: 80\n";
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "vl.yaml", vl)]).fails();
    assert!(out.stderr.contains(r#"no matches for kind "Service" in version "vl""#), "{}", out.stderr);
    // The seed's Deployment uses the long-gone apps/v1beta1 and no selector.
    let old_deploy = "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata:\n  name: httpd\nspec:\n  replicas: 4\n  template:\n    metadata:\n      labels:\n        run: httpd\n    spec:\n      containers:\n      - name: httpd\n        image: httpd\n        ports:\n        - containerPort: 80\n";
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "Httpd-Deployment.yaml", old_deploy)]).fails();
    assert!(out.stderr.contains(r#"no matches for kind "Deployment" in version "apps/v1beta1""#), "{}", out.stderr);
    let no_selector = old_deploy.replace("apps/v1beta1", "apps/v1");
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "Httpd-Deployment2.yaml", &no_selector)]).fails();
    assert!(out.stderr.contains("spec.selector: Required value"), "{}", out.stderr);
    let fixed = no_selector
        .replace("spec:\n  replicas: 4\n", "spec:\n  replicas: 4\n  selector:\n    matchLabels:\n      run: httpd\n");
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "Httpd-Deployment3.yaml", &fixed)]).ok();
    assert_eq!(out.stdout.trim(), "deployment.apps/httpd created");
    // Nothing was stored by the failures; the corrected files apply.
    c.kubectl(&["get", "svc", "kubia"]).fails();
    c.kubectl(&["apply", "-f", &manifest(&dir, "fixed.yaml", KUBIA_SVC)]).ok();
    c.kubectl(&["apply", "-f", &manifest(&dir, "fixed-headless.yaml", KUBIA_HEADLESS)]).ok();
}

#[test]
fn validation_errors_are_upstreams_verbatim() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad-np\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 8444\n",
            r#"The Service "bad-np" is invalid: spec.ports[0].nodePort: Invalid value: 8444: provided port is not in the valid range. The range of valid ports is 30000-32767"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: Customer-api-service\nspec:\n  ports:\n  - port: 80\n",
            r#"The Service "Customer-api-service" is invalid: metadata.name: Invalid value: "Customer-api-service": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: cip-np\nspec:\n  ports:\n  - port: 80\n    nodePort: 30080\n",
            r#"The Service "cip-np" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: two-ports\nspec:\n  ports:\n  - port: 80\n  - port: 443\n",
            r#"spec.ports[0].name: Required value"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: affinity\nspec:\n  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 86401\n  ports:\n  - port: 80\n",
            r#"spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: out-of-range\nspec:\n  clusterIP: 192.168.0.10\n  ports:\n  - port: 80\n",
            r#"spec.clusterIPs: Invalid value: []string{"192.168.0.10"}: failed to allocate IP 192.168.0.10: the provided IP (192.168.0.10) is not in the valid range. The range of valid IPs is 10.96.0.0/12"#,
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: taken\nspec:\n  clusterIP: 10.96.0.10\n  ports:\n  - port: 80\n",
            r#"spec.clusterIPs: Invalid value: []string{"10.96.0.10"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"#,
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let out = c.kubectl(&["apply", "-f", &manifest(&dir, &format!("case{i}.yaml"), yaml)]).fails();
        assert!(out.stderr.contains(want), "case {i}: want {want:?}\ngot: {}", out.stderr);
    }
    // A port taken by one Service is refused to the next.
    c.kubectl(&["apply", "-f", &manifest(&dir, "np1.yaml", KUBIA_NODEPORT)]).ok();
    let second = KUBIA_NODEPORT.replace("name: kubia-nodeport", "name: kubia-nodeport2");
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "np2.yaml", &second)]).fails();
    assert!(
        out.stderr.contains(r#"The Service "kubia-nodeport2" is invalid: spec.ports[0].nodePort: Invalid value: 30123: provided port is already allocated"#),
        "{}",
        out.stderr
    );
    // Refusals are recorded as events; one on an existing Service shows in describe.
    let ev = c.kubectl(&["get", "events"]).ok().stdout;
    assert!(
        ev.contains("PortAlreadyAllocated")
            && ev.contains("PortOutOfRange")
            && ev.contains("ClusterIPAlreadyAllocated"),
        "{ev}"
    );
    let third = KUBIA_NODEPORT
        .replace("name: kubia-nodeport", "name: kubia-nodeport3")
        .replace("nodePort: 30123", "nodePort: 30124");
    c.kubectl(&["apply", "-f", &manifest(&dir, "np3.yaml", &third)]).ok();
    let out = c
        .kubectl(&[
            "patch",
            "svc",
            "kubia-nodeport3",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/ports/0/nodePort","value":30123}]"#,
        ])
        .fails();
    assert!(out.stderr.contains("provided port is already allocated"), "{}", out.stderr);
    let d = c.kubectl(&["describe", "svc", "kubia-nodeport3"]).ok().stdout;
    assert!(d.contains("Warning  PortAlreadyAllocated"), "{d}");
    // Deleting the owner frees it.
    c.kubectl(&["delete", "svc", "kubia-nodeport"]).ok();
    c.kubectl(&["apply", "-f", &manifest(&dir, "np2.yaml", &second)]).ok();
}

#[test]
fn edit_patch_apply_twice_server_side_and_delete() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let f = manifest(&dir, "svc.yaml", KUBIA_SERVICE);
    assert_eq!(c.kubectl(&["apply", "-f", &f]).ok().stdout.trim(), "service/kubia-service created");
    assert_eq!(c.kubectl(&["apply", "-f", &f]).ok().stdout.trim(), "service/kubia-service unchanged");
    let changed = manifest(&dir, "svc2.yaml", &KUBIA_SERVICE.replace("targetPort: 8080", "targetPort: 9090"));
    assert_eq!(c.kubectl(&["apply", "-f", &changed]).ok().stdout.trim(), "service/kubia-service configured");
    let tp = c.kubectl(&["get", "svc", "kubia-service", "-o", "jsonpath={.spec.ports[0].targetPort}"]).ok().stdout;
    assert_eq!(tp, "9090");

    // edit with a scripted editor
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/targetPort: 9090/targetPort: 8081/' \"$1\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = c.kubectl_env(&["edit", "svc", "kubia-service"], &[("KUBE_EDITOR", editor.to_str().unwrap())]).ok();
    assert_eq!(out.stdout.trim(), "service/kubia-service edited");
    let tp = c.kubectl(&["get", "svc", "kubia-service", "-o", "jsonpath={.spec.ports[0].targetPort}"]).ok().stdout;
    assert_eq!(tp, "8081");

    // patch: strategic (default), merge, json
    let out = c.kubectl(&["patch", "svc", "kubia-service", "-p", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#]).ok();
    assert_eq!(out.stdout.trim(), "service/kubia-service patched");
    let t = c
        .kubectl(&[
            "get",
            "svc",
            "kubia-service",
            "-o",
            "jsonpath={.spec.sessionAffinityConfig.clientIP.timeoutSeconds}",
        ])
        .ok()
        .stdout;
    assert_eq!(t, "10800");
    c.kubectl(&["patch", "svc", "kubia-service", "--type=merge", "-p", r#"{"metadata":{"labels":{"tier":"web"}}}"#])
        .ok();
    c.kubectl(&[
        "patch",
        "svc",
        "kubia-service",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#,
    ])
    .ok();
    let out = c.kubectl(&["get", "svc", "kubia-service", "--show-labels"]).ok().stdout;
    assert!(out.contains("81/TCP") && out.contains("tier=web"), "{out}");
    let out = c
        .kubectl(&[
            "patch",
            "svc",
            "kubia-service",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/type","value":"NodePort"}]"#,
        ])
        .fails();
    assert!(out.stderr.contains("testing value /spec/type failed"), "{}", out.stderr);

    // server-side apply: create, no-op, conflict with another manager, force.
    let ssa = manifest(&dir, "ssa.yaml", &KUBIA_SERVICE.replace("kubia-service", "kubia-ssa"));
    assert_eq!(
        c.kubectl(&["apply", "--server-side", "-f", &ssa]).ok().stdout.trim(),
        "service/kubia-ssa serverside-applied"
    );
    assert_eq!(
        c.kubectl(&["apply", "--server-side", "-f", &ssa]).ok().stdout.trim(),
        "service/kubia-ssa serverside-applied"
    );
    let other = manifest(
        &dir,
        "ssa2.yaml",
        &KUBIA_SERVICE.replace("kubia-service", "kubia-ssa").replace("targetPort: 8080", "targetPort: 7070"),
    );
    let out = c.kubectl(&["apply", "--server-side", "--field-manager=other", "-f", &other]).fails();
    assert!(out.stderr.contains("conflict") && out.stderr.contains("targetPort"), "{}", out.stderr);
    c.kubectl(&["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", &other]).ok();
    let tp = c.kubectl(&["get", "svc", "kubia-ssa", "-o", "jsonpath={.spec.ports[0].targetPort}"]).ok().stdout;
    assert_eq!(tp, "7070");

    // replace with a stale resourceVersion conflicts.
    let live = c.kubectl(&["get", "svc", "kubia-ssa", "-o", "json"]).ok().stdout;
    c.kubectl(&["label", "svc", "kubia-ssa", "x=y"]).ok();
    let out = c.kubectl_stdin(&["replace", "-f", "-"], &live).fails();
    assert!(
        out.stderr
            .contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        out.stderr
    );

    // delete
    assert_eq!(c.kubectl(&["delete", "svc", "kubia-service"]).ok().stdout.trim(), r#"service "kubia-service" deleted"#);
    let out = c.kubectl(&["get", "svc", "kubia-service"]).fails();
    assert_eq!(out.stderr.trim(), r#"Error from server (NotFound): services "kubia-service" not found"#);
    let out = c.kubectl(&["delete", "svc", "kubia-service"]).fails();
    assert!(out.stderr.contains(r#"services "kubia-service" not found"#), "{}", out.stderr);
}

#[test]
fn watch_streams_changes() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut watch = c
        .kubectl_cmd(&["get", "svc", "-w"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    c.kubectl(&["apply", "-f", &manifest(&dir, "svc.yaml", KUBIA_SERVICE)]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            let done = line.starts_with("kubia-service");
            seen.push(line);
            if done {
                break;
            }
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter().any(|l| l.starts_with("kubia-service ") && l.contains("ClusterIP") && l.contains("80/TCP")),
        "{seen:?}"
    );
}

/// `kubectl get svc NAME -w` watches from resourceVersion 0 and drops the first (synthetic)
/// event: the change after it must still be printed.
#[test]
fn watch_of_one_service_sees_its_next_change() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    c.kubectl(&["apply", "-f", &manifest(&dir, "svc.yaml", KUBIA_SERVICE)]).ok();
    let mut watch = c
        .kubectl_cmd(&[
            "get",
            "svc",
            "kubia-service",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,AFFINITY:.spec.sessionAffinity",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut patched = false;
    while std::time::Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("ClientIP")) {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(300)) {
            seen.push(line);
        }
        if !patched && seen.iter().any(|l| l.starts_with("kubia-service")) {
            std::thread::sleep(std::time::Duration::from_millis(300));
            c.kubectl(&["patch", "svc", "kubia-service", "-p", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#]).ok();
            patched = true;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.iter().any(|l| l.starts_with("kubia-service") && l.contains("ClientIP")), "{seen:?}");
}

#[test]
fn api_resources_lists_what_pier_serves() {
    let c = Cluster::start();
    let out = c.kubectl(&["api-resources"]).ok().stdout;
    let t = rows(&out);
    assert_eq!(t[0], ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    assert_eq!(row(&t, "services")[1..], ["svc", "v1", "true", "Service"]);
    assert_eq!(row(&t, "deployments")[1..], ["deploy", "apps/v1", "true", "Deployment"]);
    assert_eq!(row(&t, "endpointslices")[1..], ["discovery.k8s.io/v1", "true", "EndpointSlice"]);
    assert_eq!(row(&t, "ingresses")[1..], ["ing", "networking.k8s.io/v1", "true", "Ingress"]);
    assert_eq!(row(&t, "namespaces")[1..], ["ns", "v1", "false", "Namespace"]);
    let out = c.kubectl(&["get", "widgets"]).fails();
    assert!(out.stderr.contains(r#"the server doesn't have a resource type "widgets""#), "{}", out.stderr);
    let out = c.kubectl(&["get", "ns"]).ok().stdout;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(rows(&out).iter().any(|r| r[0] == ns && r[1] == "Active"), "{out}");
    }
}

#[test]
fn kill_9_keeps_every_object_and_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = Cluster::start_in(&data, &[]);
    for (f, y) in [("a.yaml", REDIS_SVC), ("b.yaml", KUBIA_NODEPORT), ("c.yaml", KUBIA_LB), ("d.yaml", KUBIA_SVC)] {
        c.kubectl(&["apply", "-f", &manifest(&dir, f, y)]).ok();
    }
    let before = c
        .kubectl(&[
            "get",
            "svc",
            "-o",
            "custom-columns=N:.metadata.name,IP:.spec.clusterIP,NP:.spec.ports[*].nodePort,RV:.metadata.uid",
        ])
        .ok()
        .stdout;
    c.kill9();
    let c = Cluster::start_in(&data, &[]);
    let after = c
        .kubectl(&[
            "get",
            "svc",
            "-o",
            "custom-columns=N:.metadata.name,IP:.spec.clusterIP,NP:.spec.ports[*].nodePort,RV:.metadata.uid",
        ])
        .ok()
        .stdout;
    assert_eq!(before, after);
    // Allocations survived too: the held IP and port are refused to newcomers.
    let lb_port =
        c.kubectl(&["get", "svc", "kubia-loadbalancer", "-o", "jsonpath={.spec.ports[0].nodePort}"]).ok().stdout;
    let clash = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {lb_port}\n"
    );
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "clash.yaml", &clash)]).fails();
    assert!(out.stderr.contains("provided port is already allocated"), "{}", out.stderr);
    let clash_ip = "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  clusterIP: 10.97.97.97\n  ports:\n  - port: 80\n";
    let out = c.kubectl(&["apply", "-f", &manifest(&dir, "clash2.yaml", clash_ip)]).fails();
    assert!(out.stderr.contains("provided IP is already allocated"), "{}", out.stderr);
}

#[test]
fn namespaces_take_their_content_and_owners_their_dependents() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    c.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n").ok();
    c.kubectl(&[
        "apply",
        "-n",
        "shop",
        "-f",
        &manifest(&dir, "svc.yaml", REDIS_SVC.replace("namespace: default", "namespace: shop").as_str()),
    ])
    .ok();
    c.kubectl(&["delete", "ns", "shop"]).ok();
    c.kubectl(&["get", "ns", "shop"]).fails();
    // Its ClusterIP was freed with it.
    c.kubectl(&["apply", "-f", &manifest(&dir, "redis.yaml", REDIS_SVC)]).ok();

    // A ReplicaSet's pods carry an ownerReference to it.
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: kubia\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: kubia\n  template:\n    metadata:\n      labels:\n        app: kubia\n    spec:\n      containers:\n      - name: kubia\n        image: luksa/kubia\n";
    let pod_of_rs = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out =
                c.kubectl(&["get", "pods", "-l", "app=kubia", "-o", "jsonpath={.items[*].metadata.name}"]).ok().stdout;
            if let Some(name) = out.split_whitespace().next() {
                return name.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "the ReplicaSet made no pod");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    c.kubectl_stdin(&["apply", "-f", "-"], rs).ok();
    let pod = pod_of_rs();
    let owner = c
        .kubectl(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
        ])
        .ok()
        .stdout;
    assert_eq!(owner, "ReplicaSet/kubia");
    // Orphan keeps the pod, without the reference.
    c.kubectl(&["delete", "rs", "kubia", "--cascade=orphan"]).ok();
    let refs = c.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.metadata.ownerReferences}"]).ok().stdout;
    assert_eq!(refs, "");
    // A new ReplicaSet with the same selector adopts it; foreground deletion waits for it.
    c.kubectl_stdin(&["apply", "-f", "-"], rs).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.metadata.ownerReferences[0].name}"]).ok().stdout != "kubia"
    {
        assert!(std::time::Instant::now() < deadline, "the orphan was not adopted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    c.kubectl(&["delete", "rs", "kubia", "--cascade=foreground", "--timeout=60s"]).ok();
    c.kubectl(&["get", "pod", &pod]).fails();
    // Background (the default): the pod follows shortly.
    c.kubectl_stdin(&["apply", "-f", "-"], rs).ok();
    let pod = pod_of_rs();
    c.kubectl(&["delete", "rs", "kubia"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = c.kubectl(&["get", "pod", &pod]);
        if out.code != 0 {
            assert!(out.stderr.contains("not found"), "{}", out.stderr);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the owned pod outlived its ReplicaSet");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn bad_input_gets_upstream_status_codes_and_changes_nothing() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    c.kubectl(&["apply", "-f", &manifest(&dir, "svc.yaml", KUBIA_SERVICE)]).ok();
    let before = c.kubectl(&["get", "svc", "-o", "json"]).ok().stdout;

    let raw = |body: &str, name: &str| {
        let f = manifest(&dir, name, body);
        c.kubectl(&["create", "--raw", "/api/v1/namespaces/default/services", "-f", &f])
    };
    let out = raw("{not json", "bad.json").fails();
    assert!(out.stderr.contains("BadRequest") || out.stderr.contains("json parse error"), "{}", out.stderr);
    let out = raw(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#, "kind.json").fails();
    assert!(out.stderr.contains("does not match the expected kind"), "{}", out.stderr);
    let out = raw(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":"eighty"}]}}"#,
        "shape.json",
    )
    .fails();
    assert!(out.stderr.contains("cannot be handled as a Service"), "{}", out.stderr);
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "a".repeat(3 * 1024 * 1024 + 10)
    );
    let f = manifest(&dir, "big.json", &big);
    let out = c.kubectl(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", &f]).fails();
    assert!(out.stderr.contains("Request entity too large"), "{}", out.stderr);
    let out = c.kubectl(&["create", "namespace", "proto"]).fails();
    assert!(out.stderr.contains("kubectl apply"), "{}", out.stderr);
    let out = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/widgets"]).fails();
    assert!(out.stderr.contains("NotFound") || out.stderr.contains("could not find"), "{}", out.stderr);
    let out = c.kubectl(&["get", "--raw", "/api/v1/services?watch=1&resourceVersion=abc"]).fails();
    assert!(out.stderr.contains("BadRequest") || out.stderr.contains("invalid resource version"), "{}", out.stderr);

    let after = c.kubectl(&["get", "svc", "-o", "json"]).ok().stdout;
    assert_eq!(before, after);
    assert!(!c.server_log().contains("panicked"), "{}", c.server_log());
}

/// The seed's Ingress is written for `networking.k8s.io/v1beta1`, which Kubernetes removed:
/// kubectl says so as against any current cluster, and the `v1` form applies and prints.
#[test]
fn seed_ingress_v1beta1_is_refused_and_v1_applies() {
    let c = Cluster::start();
    let v1 = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: kubia
spec:
  rules:
  - host: kubia.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: kubia-nodeport
            port:
              number: 80
      - path: /kubia
        pathType: Prefix
        backend:
          service:
            name: kubia
            port:
              number: 80
  - host: bar.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: bar
            port:
              number: 80
";
    let v1beta1 = "apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata:
  name: kubia
spec:
  rules:
  - host: kubia.example.com
    http:
      paths:
      - path: /
        backend:
          serviceName: kubia-nodeport
          servicePort: 80
";
    let out = c.kubectl_stdin(&["create", "-f", "-"], v1beta1).fails();
    assert!(
        out.stderr.contains(r#"no matches for kind "Ingress" in version "networking.k8s.io/v1beta1""#),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.kubectl_stdin(&["create", "-f", "-"], v1).ok().stdout.trim(),
        "ingress.networking.k8s.io/kubia created"
    );
    let t = rows(&c.kubectl(&["get", "ingress"]).ok().stdout);
    assert_eq!(t[0], ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]);
    assert_eq!(t[1][..4], ["kubia", "<none>", "kubia.example.com,bar.example.com", "80"]);
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &v1.replace("pathType: Prefix", "pathType: Bogus")).fails();
    assert!(
        out.stderr.contains(r#"spec.rules[0].http.paths[0].pathType: Unsupported value: "Bogus": supported values: "Exact", "ImplementationSpecific", "Prefix""#),
        "{}",
        out.stderr
    );
}
