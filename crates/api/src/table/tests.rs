//! Literal expected outputs for every kind, the duration thresholds and the Table JSON shape.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    match "2024-06-01T12:00:00Z".parse() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// The RFC 3339 time `secs` seconds before [`now`].
fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(name: &str, age_secs: i64) -> Value {
    json!({"name": name, "namespace": "default", "uid": "u-1", "resourceVersion": "7",
           "creationTimestamp": ago(age_secs), "labels": {"app": name}})
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let cells = row_cells(kind, obj, now());
    assert_eq!(cells.len(), column_definitions(kind).len(), "one cell per column for {kind}");
    cells
}

fn names(kind: &str) -> Vec<(String, i32)> {
    column_definitions(kind).into_iter().map(|c| (c.name, c.priority)).collect()
}

fn cols(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

#[test]
fn human_duration_thresholds() {
    let cases: &[(u64, &str)] = &[
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (452, "7m32s"),
        (540, "9m"),
        (599, "9m59s"),
        (600, "10m"),
        (117 * 60 + 59, "117m"),
        (179 * 60, "179m"),
        (180 * 60, "3h"),
        (5 * 3600, "5h"),
        (5 * 3600 + 30 * 60 + 59, "5h30m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 3599, "47h"),
        (48 * 3600, "2d"),
        (77 * 3600, "3d5h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (11 * 86400 + 7 * 3600, "11d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (760 * 86400, "2y30d"),
        (8 * 365 * 86400 - 1, "7y364d"),
        (8 * 365 * 86400, "8y"),
        (3650 * 86400, "10y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(Duration::from_secs(*secs)), *want, "{secs}s");
    }
    assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
}

#[test]
fn translate_timestamps() {
    assert_eq!(translate_timestamp_since(Some(&ago(300)), now()), "5m");
    assert_eq!(translate_timestamp_since(Some("2024-06-01T11:59:59.5Z"), now()), "0s");
    assert_eq!(translate_timestamp_since(None, now()), "<unknown>");
    assert_eq!(translate_timestamp_since(Some("yesterday"), now()), "<unknown>");
    assert_eq!(translate_timestamp_since(Some("0001-01-01T00:00:00Z"), now()), "<unknown>");
    // Clock skew: up to a second in the future is "now", beyond that invalid.
    assert_eq!(translate_timestamp_since(Some(&ago(-1)), now()), "0s");
    assert_eq!(translate_timestamp_since(Some(&ago(-2)), now()), "<invalid>");
}

fn service(name: &str, spec: Value, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(name, 300), "spec": spec, "status": status})
}

#[test]
fn service_rows() {
    assert_eq!(
        names("Service"),
        cols(&[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1)
        ])
    );
    let cluster_ip = service(
        "kubia",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
               "selector": {"app": "kubia"}}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        cells("Service", &cluster_ip),
        json!(["kubia", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "app=kubia"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    );

    let node_port = service(
        "kubia-nodeport",
        json!({"type": "NodePort", "clusterIP": "10.111.254.223", "clusterIPs": ["10.111.254.223"],
               "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30123, "protocol": "TCP"},
                         {"name": "alt", "port": 8080, "nodePort": 31688, "protocol": "TCP"}],
               "selector": {"tier": "web", "app": "kubia"}}),
        json!({}),
    );
    assert_eq!(
        Value::from(cells("Service", &node_port)),
        json!([
            "kubia-nodeport",
            "NodePort",
            "10.111.254.223",
            "<none>",
            "80:30123/TCP,8080:31688/TCP",
            "5m",
            "app=kubia,tier=web"
        ])
    );

    let headless = service(
        "kubia-headless",
        json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
               "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "kubia"}}),
        json!({}),
    );
    assert_eq!(
        Value::from(cells("Service", &headless)),
        json!(["kubia-headless", "ClusterIP", "None", "<none>", "80/TCP", "5m", "app=kubia"])
    );

    let pending = service(
        "kubia-loadbalancer",
        json!({"type": "LoadBalancer", "clusterIP": "10.111.241.153", "clusterIPs": ["10.111.241.153"],
               "ports": [{"port": 80, "nodePort": 32143, "protocol": "TCP"}], "selector": {"app": "kubia"}}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        Value::from(cells("Service", &pending)),
        json!(["kubia-loadbalancer", "LoadBalancer", "10.111.241.153", "<pending>", "80:32143/TCP", "5m", "app=kubia"])
    );

    let mut ready = pending.clone();
    ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "130.211.53.173"}, {"hostname": "lb.example.com"}]}});
    assert_eq!(cells("Service", &ready)[3], json!("130.211.53.173,lb.example.com"));
    ready["spec"]["externalIPs"] = json!(["1.2.3.4"]);
    assert_eq!(cells("Service", &ready)[3], json!("130.211.53.173,lb.example.com,1.2.3.4"));
    let mut ext_only = pending.clone();
    ext_only["spec"]["externalIPs"] = json!(["1.2.3.4", "5.6.7.8"]);
    assert_eq!(cells("Service", &ext_only)[3], json!("1.2.3.4,5.6.7.8"));

    let mut with_external_ips = cluster_ip.clone();
    with_external_ips["spec"]["externalIPs"] = json!(["192.168.1.10"]);
    assert_eq!(cells("Service", &with_external_ips)[3], json!("192.168.1.10"));

    let external_name = service(
        "external-service",
        json!({"type": "ExternalName", "externalName": "api.somecompany.com", "ports": [{"port": 80, "protocol": "TCP"}]}),
        json!({}),
    );
    assert_eq!(
        Value::from(cells("Service", &external_name)),
        json!(["external-service", "ExternalName", "<none>", "api.somecompany.com", "80/TCP", "5m", "<none>"])
    );

    let no_ports = service("np", json!({"type": "ClusterIP", "clusterIP": "10.0.0.1"}), json!({}));
    let c = cells("Service", &no_ports);
    assert_eq!((c[2].clone(), c[4].clone(), c[6].clone()), (json!("10.0.0.1"), json!("<none>"), json!("<none>")));

    let udp = service(
        "dns",
        json!({"type": "ClusterIP", "clusterIPs": ["10.96.0.10", "fd00::a"],
               "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
        json!({}),
    );
    let c = cells("Service", &udp);
    assert_eq!((c[2].clone(), c[4].clone()), (json!("10.96.0.10"), json!("53/UDP,53/TCP")));
}

fn endpoints(subsets: Value) -> Value {
    json!({"kind": "Endpoints", "metadata": meta("kubia", 600), "subsets": subsets})
}

#[test]
fn endpoints_rows() {
    assert_eq!(names("Endpoints"), cols(&[("Name", 0), ("Endpoints", 0), ("Age", 0)]));
    let one = endpoints(json!([{"addresses": [{"ip": "10.244.1.22"}], "ports": [{"port": 6379, "protocol": "TCP"}]}]));
    assert_eq!(Value::from(cells("Endpoints", &one)), json!(["kubia", "10.244.1.22:6379", "10m"]));

    let four = endpoints(json!([{
        "addresses": [{"ip": "10.244.1.101"}, {"ip": "10.244.1.102"}, {"ip": "10.244.2.35"}, {"ip": "10.244.2.36"}],
        "ports": [{"port": 80, "protocol": "TCP"}]
    }]));
    assert_eq!(cells("Endpoints", &four)[1], json!("10.244.1.101:80,10.244.1.102:80,10.244.2.35:80 + 1 more..."));

    let two_ports = endpoints(json!([{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    }]));
    assert_eq!(cells("Endpoints", &two_ports)[1], json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."));

    let headless = endpoints(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]));
    assert_eq!(cells("Endpoints", &headless)[1], json!("10.0.0.1,10.0.0.2"));

    let v6 = endpoints(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]));
    assert_eq!(cells("Endpoints", &v6)[1], json!("[fd00::1]:80"));

    assert_eq!(cells("Endpoints", &endpoints(json!([])))[1], json!("<none>"));
    let not_ready_only = endpoints(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]));
    assert_eq!(cells("Endpoints", &not_ready_only)[1], json!(""));
    let no_subsets = json!({"kind": "Endpoints", "metadata": meta("kubia", 600)});
    assert_eq!(cells("Endpoints", &no_subsets)[1], json!("<none>"));
}

fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta("kubia-abcde", 3600),
        "spec": {"containers": [{"name": "kubia", "image": "luksa/kubia"}], "nodeName": "node1"},
        "status": status,
    })
}

fn running(ready: bool) -> Value {
    json!({"name": "kubia", "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": ago(3000)}}})
}

#[test]
fn pod_rows() {
    assert_eq!(
        names("Pod"),
        cols(&[
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ])
    );
    let ok = pod(json!({"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                        "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [running(true)]}));
    assert_eq!(
        Value::from(cells("Pod", &ok)),
        json!(["kubia-abcde", "1/1", "Running", "0", "60m", "10.244.1.5", "node1", "<none>", "<none>"])
    );
    assert!(build_row("Pod", &ok, IncludeObject::None, now()).conditions.is_empty());

    let pending = json!({"kind": "Pod", "metadata": meta("p", 30),
                         "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Pending"}});
    assert_eq!(
        Value::from(cells("Pod", &pending)),
        json!(["p", "0/2", "Pending", "0", "30s", "<none>", "<none>", "<none>", "<none>"])
    );

    let creating = pod(json!({"phase": "Pending", "containerStatuses": [
        {"name": "kubia", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
    assert_eq!(cells("Pod", &creating)[1..4], [json!("0/1"), json!("ContainerCreating"), json!("0")]);

    let crashing = pod(json!({"phase": "Running", "containerStatuses": [
        {"name": "kubia", "ready": false, "restartCount": 5,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}}]}));
    assert_eq!(cells("Pod", &crashing)[1..4], [json!("0/1"), json!("CrashLoopBackOff"), json!("5 (5m ago)")]);

    let restarted =
        pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
        {"name": "kubia", "ready": true, "restartCount": 2, "state": {"running": {}},
         "lastState": {"terminated": {"exitCode": 137, "finishedAt": ago(7200)}}}]}));
    assert_eq!(cells("Pod", &restarted)[1..4], [json!("1/1"), json!("Running"), json!("2 (120m ago)")]);

    let completed = pod(json!({"phase": "Succeeded", "containerStatuses": [
        {"name": "kubia", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
    assert_eq!(cells("Pod", &completed)[1..4], [json!("0/1"), json!("Completed"), json!("0")]);
    let row = build_row("Pod", &completed, IncludeObject::None, now());
    assert_eq!(
        serde_json::to_value(&row.conditions).ok(),
        Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}])
        )
    );

    let failed = pod(json!({"phase": "Failed", "containerStatuses": [
        {"name": "kubia", "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]}));
    assert_eq!(cells("Pod", &failed)[2], json!("ExitCode:2"));
    assert_eq!(build_row("Pod", &failed, IncludeObject::None, now()).conditions[0].reason, "Failed");
    let killed = pod(json!({"phase": "Failed", "containerStatuses": [
        {"name": "kubia", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}));
    assert_eq!(cells("Pod", &killed)[2], json!("Signal:9"));

    let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
    assert_eq!(cells("Pod", &evicted)[2], json!("Evicted"));

    // Completed with another container still running.
    let mut two = pod(json!({"phase": "Running", "containerStatuses": [
        {"name": "kubia", "ready": true, "state": {"running": {}}},
        {"name": "job", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
    two["spec"]["containers"] = json!([{"name": "kubia"}, {"name": "job"}]);
    assert_eq!(cells("Pod", &two)[1..3], [json!("1/2"), json!("NotReady")]);
    two["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    assert_eq!(cells("Pod", &two)[2], json!("Running"));

    let gated = pod(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(cells("Pod", &gated)[2], json!("SchedulingGated"));
}

#[test]
fn pod_init_containers_and_deletion() {
    let mut p = pod(json!({"phase": "Pending",
        "conditions": [{"type": "Initialized", "status": "False"}],
        "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0, "state": {"running": {}}}],
        "containerStatuses": [{"name": "kubia", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}));
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    assert_eq!(cells("Pod", &p)[1..4], [json!("0/1"), json!("Init:0/1"), json!("0")]);

    p["status"]["initContainerStatuses"] = json!([
        {"name": "init", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(60)}}}]);
    assert_eq!(cells("Pod", &p)[2..4], [json!("Init:CrashLoopBackOff"), json!("3 (60s ago)")]);

    p["status"]["initContainerStatuses"] = json!([
        {"name": "init", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]);
    assert_eq!(cells("Pod", &p)[2], json!("Init:Error"));
    p["status"]["initContainerStatuses"] = json!([
        {"name": "init", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]);
    assert_eq!(cells("Pod", &p)[2], json!("Init:ExitCode:3"));

    // Two init containers, the first done.
    p["spec"]["initContainers"] = json!([{"name": "a"}, {"name": "b"}]);
    p["status"]["initContainerStatuses"] = json!([
        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "b", "state": {"running": {}}}]);
    assert_eq!(cells("Pod", &p)[2], json!("Init:1/2"));

    // A started sidecar (restartable init container) counts towards Ready.
    let mut sidecar = pod(json!({"phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}],
        "containerStatuses": [running(true)]}));
    sidecar["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    assert_eq!(cells("Pod", &sidecar)[1..4], [json!("2/2"), json!("Running"), json!("1")]);

    let mut deleting = pod(json!({"phase": "Running", "containerStatuses": [running(true)]}));
    deleting["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(cells("Pod", &deleting)[2], json!("Terminating"));
    deleting["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells("Pod", &deleting)[2], json!("Unknown"));
    let mut done = pod(json!({"phase": "Succeeded"}));
    done["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(cells("Pod", &done)[2], json!("Succeeded"));
}

#[test]
fn pod_wide_cells() {
    let mut p = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.244.2.7"}, {"ip": "fd00::7"}],
        "nominatedNodeName": "node2",
        "conditions": [{"type": "example.com/feature-1", "status": "True"}, {"type": "example.com/feature-2", "status": "False"}],
        "containerStatuses": [running(true)]}));
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/feature-1"}, {"conditionType": "example.com/feature-2"}]);
    assert_eq!(cells("Pod", &p)[5..], [json!("10.244.2.7"), json!("node1"), json!("node2"), json!("1/2")]);
}

#[test]
fn namespace_and_node_rows() {
    assert_eq!(names("Namespace"), cols(&[("Name", 0), ("Status", 0), ("Age", 0)]));
    let ns = json!({"kind": "Namespace", "metadata": {"name": "default", "creationTimestamp": ago(86400 * 3)}, "status": {"phase": "Active"}});
    assert_eq!(Value::from(cells("Namespace", &ns)), json!(["default", "Active", "3d"]));
    let terminating =
        json!({"metadata": {"name": "old", "creationTimestamp": ago(45)}, "status": {"phase": "Terminating"}});
    assert_eq!(Value::from(cells("Namespace", &terminating)), json!(["old", "Terminating", "45s"]));

    assert_eq!(
        names("Node"),
        cols(&[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ])
    );
    let node = json!({"kind": "Node",
        "metadata": {"name": "kind-control-plane", "creationTimestamp": ago(86400 * 11 + 3600),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": "kind-control-plane"}},
        "spec": {},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}, {"type": "Hostname", "address": "kind-control-plane"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.24"}}});
    assert_eq!(
        Value::from(cells("Node", &node)),
        json!([
            "kind-control-plane",
            "Ready",
            "control-plane",
            "11d",
            "v1.32.0",
            "172.18.0.2",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.8.0-45-generic",
            "containerd://1.7.24"
        ])
    );
    let cordoned = json!({"metadata": {"name": "w1", "creationTimestamp": ago(600),
                                       "labels": {"kubernetes.io/role": "worker", "node-role.kubernetes.io/infra": ""}},
                          "spec": {"unschedulable": true},
                          "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                                     "addresses": [{"type": "ExternalIP", "address": "203.0.113.9"}]}});
    assert_eq!(
        Value::from(cells("Node", &cordoned)),
        json!([
            "w1",
            "NotReady,SchedulingDisabled",
            "infra,worker",
            "10m",
            "",
            "<none>",
            "203.0.113.9",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ])
    );
    let bare = json!({"metadata": {"name": "n"}});
    assert_eq!(cells("Node", &bare)[1..4], [json!("Unknown"), json!("<none>"), json!("<unknown>")]);
}

#[test]
fn event_rows() {
    assert_eq!(
        names("Event"),
        cols(&[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ])
    );
    assert_eq!(column_definitions("Event")[9].format, "name");
    let ev = json!({"kind": "Event", "metadata": {"name": "kubia-abcde.17d8", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "kubia-abcde", "namespace": "default", "fieldPath": "spec.containers{kubia}"},
        "reason": "Pulled", "message": "  Successfully pulled image \"luksa/kubia\"\n", "type": "Normal",
        "source": {"component": "kubelet", "host": "node1"},
        "firstTimestamp": ago(600), "lastTimestamp": ago(120), "count": 3});
    assert_eq!(
        Value::from(cells("Event", &ev)),
        json!([
            "2m",
            "Normal",
            "Pulled",
            "pod/kubia-abcde",
            "spec.containers{kubia}",
            "kubelet, node1",
            "Successfully pulled image \"luksa/kubia\"",
            "10m",
            3,
            "kubia-abcde.17d8"
        ])
    );
    // events.k8s.io-style: eventTime, reportingComponent, series, no count.
    let new_style = json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
        "reason": "Starting", "type": "Warning", "eventTime": "2024-06-01T11:00:00.000000Z",
        "reportingComponent": "kube-proxy", "reportingInstance": "node1", "message": "m"});
    assert_eq!(
        Value::from(cells("Event", &new_style)),
        json!(["60m", "Warning", "Starting", "node", "", "kube-proxy, node1", "m", "60m", 1, "e2"])
    );
    let mut series = new_style.clone();
    series["series"] = json!({"count": 4, "lastObservedTime": "2024-06-01T11:59:00.000000Z"});
    let c = cells("Event", &series);
    assert_eq!((c[0].clone(), c[8].clone()), (json!("60s"), json!(4)));
    let bare = json!({"metadata": {"name": "e3"}});
    assert_eq!(cells("Event", &bare)[0], json!("<unknown>"));
}

fn workload(kind: &str, replicas: i64, status: Value) -> Value {
    json!({"kind": kind, "metadata": meta("kubia", 600),
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "kubia"}},
                    "template": {"metadata": {"labels": {"app": "kubia"}},
                                 "spec": {"containers": [{"name": "kubia", "image": "luksa/kubia:v1"},
                                                         {"name": "sidecar", "image": "envoy:1.30"}]}}},
           "status": status})
}

#[test]
fn replica_set_and_deployment_rows() {
    assert_eq!(
        names("ReplicaSet"),
        cols(&[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ])
    );
    let rs = workload("ReplicaSet", 3, json!({"replicas": 3, "readyReplicas": 2}));
    assert_eq!(
        Value::from(cells("ReplicaSet", &rs)),
        json!(["kubia", 3, 3, 2, "10m", "kubia,sidecar", "luksa/kubia:v1,envoy:1.30", "app=kubia"])
    );
    let mut rs_expr = workload("ReplicaSet", 0, json!({}));
    rs_expr["spec"]["selector"] =
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["kubia", "kubia-v2"]}]});
    assert_eq!(cells("ReplicaSet", &rs_expr)[1..4], [json!(0), json!(0), json!(0)]);
    assert_eq!(cells("ReplicaSet", &rs_expr)[7], json!("app in (kubia,kubia-v2)"));
    rs_expr["spec"]["selector"] = json!({});
    assert_eq!(cells("ReplicaSet", &rs_expr)[7], json!("<none>"));
    rs_expr["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]});
    assert_eq!(cells("ReplicaSet", &rs_expr)[7], json!("<error>"));

    assert_eq!(
        names("Deployment"),
        cols(&[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ])
    );
    let deploy = workload(
        "Deployment",
        3,
        json!({"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}),
    );
    assert_eq!(
        Value::from(cells("Deployment", &deploy)),
        json!(["kubia", "2/3", 3, 2, "10m", "kubia,sidecar", "luksa/kubia:v1,envoy:1.30", "app=kubia"])
    );
    let fresh = workload("Deployment", 1, json!({}));
    assert_eq!(cells("Deployment", &fresh)[1..4], [json!("0/1"), json!(0), json!(0)]);
    let mut empty_sel = fresh.clone();
    empty_sel["spec"]["selector"] = json!({});
    assert_eq!(cells("Deployment", &empty_sel)[7], json!(""));
}

#[test]
fn endpoint_slice_rows() {
    assert_eq!(
        names("EndpointSlice"),
        cols(&[("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)])
    );
    let slice = json!({"kind": "EndpointSlice", "metadata": meta("kubia-x7k2p", 90), "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.2.6"]}]});
    assert_eq!(
        Value::from(cells("EndpointSlice", &slice)),
        json!(["kubia-x7k2p", "IPv4", "8080", "10.244.1.5,10.244.2.6", "90s"])
    );
    let many = json!({"metadata": meta("s", 90), "addressType": "IPv6",
        "ports": [{"port": 1}, {"name": "named"}, {}, {"port": 4}],
        "endpoints": [{"addresses": ["fd00::1", "fd00::2"]}, {"addresses": ["fd00::3", "fd00::4", "fd00::5"]}]});
    assert_eq!(
        cells("EndpointSlice", &many)[1..4],
        [json!("IPv6"), json!("1,named,* + 1 more..."), json!("fd00::1,fd00::2,fd00::3 + 2 more...")]
    );
    let empty = json!({"metadata": meta("e", 90), "addressType": "IPv4"});
    assert_eq!(cells("EndpointSlice", &empty)[2..4], [json!("<unset>"), json!("<unset>")]);
}

#[test]
fn ingress_rows() {
    assert_eq!(
        names("Ingress"),
        cols(&[("Name", 0), ("Class", 0), ("Hosts", 0), ("Address", 0), ("Ports", 0), ("Age", 0)])
    );
    let ing = json!({"kind": "Ingress", "metadata": meta("kubia", 86400 * 2),
        "spec": {"rules": [{"host": "kubia.example.com", "http": {"paths": []}}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.49.2"}]}}});
    assert_eq!(
        Value::from(cells("Ingress", &ing)),
        json!(["kubia", "<none>", "kubia.example.com", "192.168.49.2", "80", "2d"])
    );
    let tls = json!({"metadata": meta("t", 60),
        "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                 "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
        "status": {}});
    assert_eq!(
        Value::from(cells("Ingress", &tls)),
        json!(["t", "nginx", "a.example.com,b.example.com,c.example.com + 2 more...", "", "80, 443", "60s"])
    );
    let default_backend = json!({"metadata": meta("d", 60), "spec": {"defaultBackend": {"service": {"name": "s"}}}});
    assert_eq!(cells("Ingress", &default_backend)[2], json!("*"));

    assert_eq!(names("IngressClass"), cols(&[("Name", 0), ("Controller", 0), ("Parameters", 0), ("Age", 0)]));
    let class = json!({"metadata": {"name": "nginx", "creationTimestamp": ago(60)}, "spec": {"controller": "k8s.io/ingress-nginx"}});
    assert_eq!(Value::from(cells("IngressClass", &class)), json!(["nginx", "k8s.io/ingress-nginx", "<none>", "60s"]));
    let with_params = json!({"metadata": {"name": "lb"}, "spec": {"controller": "example.com/lb",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
    assert_eq!(cells("IngressClass", &with_params)[2], json!("IngressParameters.k8s.example.com/external-lb"));
    let core_params = json!({"metadata": {"name": "lb"}, "spec": {"parameters": {"kind": "ConfigMap", "name": "cfg"}}});
    assert_eq!(cells("IngressClass", &core_params)[2..4], [json!("ConfigMap/cfg"), json!("<unknown>")]);
}

#[test]
fn config_rows() {
    assert_eq!(names("ConfigMap"), cols(&[("Name", 0), ("Data", 0), ("Age", 0)]));
    let cm =
        json!({"metadata": meta("fortune-config", 120), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(Value::from(cells("ConfigMap", &cm)), json!(["fortune-config", 3, "2m"]));
    assert_eq!(cells("ConfigMap", &json!({"metadata": meta("e", 1)}))[1], json!(0));

    assert_eq!(names("Secret"), cols(&[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)]));
    let secret = json!({"metadata": meta("fortune-https", 120), "type": "Opaque", "data": {"https.cert": "", "https.key": "", "foo": ""}});
    assert_eq!(Value::from(cells("Secret", &secret)), json!(["fortune-https", "Opaque", 3, "2m"]));

    assert_eq!(names("ServiceAccount"), cols(&[("Name", 0), ("Secrets", 0), ("Age", 0)]));
    let sa = json!({"metadata": meta("default", 86400 * 800)});
    assert_eq!(Value::from(cells("ServiceAccount", &sa)), json!(["default", 0, "2y70d"]));
    let sa2 = json!({"metadata": meta("builder", 5), "secrets": [{"name": "builder-token"}]});
    assert_eq!(cells("ServiceAccount", &sa2)[1], json!(1));
}

#[test]
fn default_rows() {
    let defs = column_definitions("Lease");
    assert_eq!(names("Lease"), cols(&[("Name", 0), ("Created At", 0)]));
    assert_eq!((defs[0].format.as_str(), defs[1].type_.as_str()), ("name", "date"));
    let lease = json!({"metadata": meta("holder", 300)});
    assert_eq!(Value::from(cells("Lease", &lease)), json!(["holder", "2024-06-01T11:55:00Z"]));
    assert_eq!(cells("Lease", &json!({"metadata": {"name": "x"}}))[1], json!("0001-01-01T00:00:00Z"));
}

#[test]
fn table_json_shape() {
    let svc = service(
        "kubia",
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "kubia"}}),
        json!({}),
    );
    let table = build_table("Service", std::slice::from_ref(&svc), "107", IncludeObject::Metadata, now(), true);
    let v = serde_json::to_value(&table).unwrap_or_default();
    assert_eq!(v["kind"], json!("Table"));
    assert_eq!(v["apiVersion"], json!("meta.k8s.io/v1"));
    assert_eq!(v["metadata"], json!({"resourceVersion": "107"}));
    assert_eq!(
        v["columnDefinitions"][0],
        json!({"name": "Name", "type": "string", "format": "name", "description": column_definitions("Service")[0].description, "priority": 0})
    );
    assert_eq!(v["columnDefinitions"][6]["priority"], json!(1));
    assert_eq!(v["columnDefinitions"][6]["format"], json!(""));
    assert_eq!(
        v["rows"],
        json!([{"cells": ["kubia", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "app=kubia"],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": svc["metadata"]}}])
    );
    let text = serde_json::to_string(&table).unwrap_or_default();
    assert!(text.starts_with(r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"107"},"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"#));

    let none = build_table("Service", std::slice::from_ref(&svc), "107", IncludeObject::None, now(), true);
    let v = serde_json::to_value(&none).unwrap_or_default();
    assert_eq!(
        v["rows"][0].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["cells".to_string()])
    );

    let full = build_table("Service", std::slice::from_ref(&svc), "", IncludeObject::Object, now(), false);
    let v = serde_json::to_value(&full).unwrap_or_default();
    assert_eq!(v["rows"][0]["object"], svc);
    assert_eq!(v["metadata"], json!({}));
    assert_eq!(v["columnDefinitions"], Value::Null, "no headers serialize as null");

    let empty = build_table("Pod", &[], "5", IncludeObject::Metadata, now(), true);
    let v = serde_json::to_value(&empty).unwrap_or_default();
    assert_eq!(v["rows"], json!([]));
    assert_eq!(v["columnDefinitions"].as_array().map(Vec::len), Some(9));

    // Round trip, including a null columnDefinitions.
    let back: Result<Table, _> = serde_json::from_str(&serde_json::to_string(&full).unwrap_or_default());
    assert_eq!(back.ok(), Some(full));

    let metadata_only = IncludeObject::Metadata.row_object(&json!({"kind": "X"}));
    assert_eq!(
        metadata_only,
        Some(json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {}}))
    );
}

#[test]
fn include_object_parsing() {
    assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
    assert_eq!(IncludeObject::from_query(Some("")), Ok(IncludeObject::Metadata));
    assert_eq!("None".parse(), Ok(IncludeObject::None));
    assert_eq!("Metadata".parse(), Ok(IncludeObject::Metadata));
    assert_eq!("Object".parse(), Ok(IncludeObject::Object));
    assert_eq!(
        "object".parse::<IncludeObject>().map_err(|e| e.to_string()),
        Err("unrecognized includeObject value: \"object\"".to_string())
    );
}
