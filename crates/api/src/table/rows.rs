//! Row cells per kind, re-expressing upstream's `printers.go` print functions on the stored JSON
//! (always with `Wide: true`, as the API server's table convertor does). Missing fields read as
//! Go zero values, so a partially filled object prints what upstream would print for it.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::TableRowCondition;
use super::duration::{parse_time, since, translate_timestamp_since};
use crate::selector::{LabelSelector, format_labels};

// ---------------------------------------------------------------------------------------------
// JSON access with Go zero-value defaults

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn boolean(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn map_len(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_object).map_or(0, |m| m.len() as i64)
}

fn name(obj: &Value) -> Value {
    json!(s(obj, &["metadata", "name"]))
}

fn age(obj: &Value, now: Timestamp) -> Value {
    json!(translate_timestamp_since(at(obj, &["metadata", "creationTimestamp"]).and_then(Value::as_str), now))
}

fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    parse_time(at(v, path).and_then(Value::as_str))
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".to_string() } else { s.to_string() }
}

/// `layoutContainerCells`: container names and images, each joined with `,`.
fn container_cells(obj: &Value) -> (Value, Value) {
    let containers = arr(obj, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| s(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, &["image"])).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// `sets.NewString(...).List()` of the load-balancer ingress IPs (or hostnames), joined with
/// `,`; never clipped, the server always prints wide.
fn load_balancer_ingress(obj: &Value) -> String {
    let set: BTreeSet<&str> = arr(obj, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| {
            let ip = s(i, &["ip"]);
            let host = s(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// `listWithMoreString`: the first three, then ` + N more...`; `<unset>` when empty.
fn list_with_more(items: impl IntoIterator<Item = String>) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    for item in items {
        if list.len() < MAX {
            list.push(item);
        }
        count += 1;
    }
    let ret = list.join(",");
    if count > MAX {
        format!("{ret} + {} more...", count - MAX)
    } else if ret.is_empty() {
        "<unset>".to_string()
    } else {
        ret
    }
}

/// `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

// ---------------------------------------------------------------------------------------------
// Per-kind rows

/// Cells and row conditions for one object of `kind`.
pub(super) fn row(kind: &str, obj: &Value, now: Timestamp) -> (Vec<Value>, Vec<TableRowCondition>) {
    let cells = match kind {
        "Pod" => return pod(obj, now),
        "Service" => service(obj, now),
        "Endpoints" => vec![name(obj), json!(format_endpoints(obj)), age(obj, now)],
        "EndpointSlice" => endpoint_slice(obj, now),
        "Namespace" => vec![name(obj), json!(s(obj, &["status", "phase"])), age(obj, now)],
        "Node" => node(obj, now),
        "Event" => event(obj, now),
        "ReplicaSet" => replica_set(obj, now),
        "Deployment" => deployment(obj, now),
        "Ingress" => ingress(obj, now),
        "IngressClass" => ingress_class(obj, now),
        "ConfigMap" => {
            let data = map_len(obj, &["data"]) + map_len(obj, &["binaryData"]);
            vec![name(obj), json!(data), age(obj, now)]
        }
        "Secret" => vec![name(obj), json!(s(obj, &["type"])), json!(map_len(obj, &["data"])), age(obj, now)],
        "ServiceAccount" => {
            vec![name(obj), json!(arr(obj, &["secrets"]).len()), age(obj, now)]
        }
        _ => default_row(obj),
    };
    (cells, Vec::new())
}

/// The default table convertor: name and the creation time in RFC 3339 (UTC, seconds).
fn default_row(obj: &Value) -> Vec<Value> {
    let created = time_at(obj, &["metadata", "creationTimestamp"])
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![name(obj), json!(created)]
}

fn pod(obj: &Value, now: Timestamp) -> (Vec<Value>, Vec<TableRowCondition>) {
    let spec = at(obj, &["spec"]).unwrap_or(&Value::Null);
    let status = at(obj, &["status"]).unwrap_or(&Value::Null);
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total = arr(spec, &["containers"]).len();
    let mut ready = 0usize;
    // None is Go's zero time, which sorts before every real time.
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = s(status, &["phase"]);
    let mut reason = match s(status, &["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    let conditions = arr(status, &["conditions"]);
    if conditions.iter().any(|c| s(c, &["type"]) == "PodScheduled" && s(c, &["reason"]) == "SchedulingGated") {
        reason = "SchedulingGated".to_string();
    }

    let row_conditions = match phase {
        "Succeeded" => vec![TableRowCondition::completed("Succeeded", "The pod has completed successfully.")],
        "Failed" => vec![TableRowCondition::completed("Failed", "The pod failed.")],
        _ => Vec::new(),
    };

    let init_specs = arr(spec, &["initContainers"]);
    let restartable = |name: &str| {
        init_specs.iter().find(|c| s(c, &["name"]) == name).is_some_and(|c| s(c, &["restartPolicy"]) == "Always")
    };
    total += init_specs.iter().filter(|c| s(c, &["restartPolicy"]) == "Always").count();

    let mut initializing = false;
    for (i, cs) in arr(status, &["initContainerStatuses"]).iter().enumerate() {
        let count = int(cs, &["restartCount"]);
        restarts += count;
        let finished = at(cs, &["lastState", "terminated"]).map(|t| time_at(t, &["finishedAt"]));
        if let Some(finished) = finished
            && last_restart < finished
        {
            last_restart = finished;
        }
        let is_restartable = restartable(s(cs, &["name"]));
        if is_restartable {
            restartable_init_restarts += count;
            if let Some(finished) = finished
                && last_restartable_init_restart < finished
            {
                last_restartable_init_restart = finished;
            }
        }
        let terminated = at(cs, &["state", "terminated"]);
        let waiting = at(cs, &["state", "waiting"]);
        if let Some(t) = terminated
            && int(t, &["exitCode"]) == 0
        {
            continue;
        }
        if is_restartable && at(cs, &["started"]).and_then(Value::as_bool) == Some(true) {
            if boolean(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match s(t, &["reason"]) {
                "" if int(t, &["signal"]) != 0 => format!("Init:Signal:{}", int(t, &["signal"])),
                "" => format!("Init:ExitCode:{}", int(t, &["exitCode"])),
                r => format!("Init:{r}"),
            };
        } else if let Some(w) = waiting
            && !s(w, &["reason"]).is_empty()
            && s(w, &["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", s(w, &["reason"]));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized =
        conditions.iter().find(|c| s(c, &["type"]) == "Initialized").is_some_and(|c| s(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for cs in arr(status, &["containerStatuses"]).iter().rev() {
            restarts += int(cs, &["restartCount"]);
            if let Some(t) = at(cs, &["lastState", "terminated"]) {
                let finished = time_at(t, &["finishedAt"]);
                if last_restart < finished {
                    last_restart = finished;
                }
            }
            let waiting = at(cs, &["state", "waiting"]);
            let terminated = at(cs, &["state", "terminated"]);
            if let Some(w) = waiting
                && !s(w, &["reason"]).is_empty()
            {
                reason = s(w, &["reason"]).to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, &["reason"]) {
                    "" if int(t, &["signal"]) != 0 => format!("Signal:{}", int(t, &["signal"])),
                    "" => format!("ExitCode:{}", int(t, &["exitCode"])),
                    r => r.to_string(),
                };
            } else if boolean(cs, &["ready"]) && at(cs, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| s(c, &["type"]) == "Ready" && s(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = at(obj, &["metadata", "deletionTimestamp"]).is_some();
    if deleting && s(status, &["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(t, now)),
        _ => restarts.to_string(),
    };

    // The v1 → internal conversion makes podIP authoritative over podIPs[0].
    let pod_ip = match s(status, &["podIP"]) {
        "" => arr(status, &["podIPs"]).first().map_or("", |ip| s(ip, &["ip"])),
        ip => ip,
    };
    let gates = arr(spec, &["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|g| {
                let t = s(g, &["conditionType"]);
                conditions.iter().find(|c| s(c, &["type"]) == t).is_some_and(|c| s(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    let cells = vec![
        name(obj),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(obj, now),
        json!(or_none(pod_ip)),
        json!(or_none(s(spec, &["nodeName"]))),
        json!(or_none(s(status, &["nominatedNodeName"]))),
        json!(readiness_gates),
    ];
    (cells, row_conditions)
}

fn service(obj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = at(obj, &["spec"]).unwrap_or(&Value::Null);
    let svc_type = s(spec, &["type"]);
    let cluster_ip = match arr(spec, &["clusterIPs"]).first().and_then(Value::as_str) {
        Some(ip) => ip.to_string(),
        None => or_none(s(spec, &["clusterIP"])),
    };
    let external_ips: Vec<&str> = arr(spec, &["externalIPs"]).iter().filter_map(Value::as_str).collect();
    let external = match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(obj);
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external_ips.iter().copied());
                results.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => s(spec, &["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(spec, &["ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let protocol = s(p, &["protocol"]);
            match int(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let selector = at(spec, &["selector"]).and_then(Value::as_object);
    let selector = format_labels(selector.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))));
    vec![
        name(obj),
        json!(svc_type),
        json!(cluster_ip),
        json!(external),
        json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
        age(obj, now),
        json!(selector),
    ]
}

/// `formatEndpoints(ep, nil)`: `ip:port` for every port of every subset (bare IPs for a subset
/// without ports), the first three then ` + N more...`; `<none>` without subsets.
pub(super) fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more { format!("{ret} + {} more...", count - MAX) } else { ret }
}

fn endpoint_slice(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ports = arr(obj, &["ports"]).iter().map(|p| {
        if let Some(port) = at(p, &["port"]).and_then(Value::as_i64) {
            port.to_string()
        } else if let Some(name) = at(p, &["name"]).and_then(Value::as_str) {
            name.to_string()
        } else {
            "*".to_string()
        }
    });
    let endpoints = arr(obj, &["endpoints"])
        .iter()
        .flat_map(|e| arr(e, &["addresses"]).iter().map(|a| a.as_str().unwrap_or("").to_string()));
    vec![
        name(obj),
        json!(s(obj, &["addressType"])),
        json!(list_with_more(ports)),
        json!(list_with_more(endpoints)),
        age(obj, now),
    ]
}

fn node(obj: &Value, now: Timestamp) -> Vec<Value> {
    let status = at(obj, &["status"]).unwrap_or(&Value::Null);
    // Upstream builds a map by condition type, so the last Ready condition wins.
    let mut state: Vec<String> = match arr(status, &["conditions"]).iter().rev().find(|c| s(c, &["type"]) == "Ready") {
        Some(c) if s(c, &["status"]) == "True" => vec!["Ready".to_string()],
        Some(_) => vec!["NotReady".to_string()],
        None => vec!["Unknown".to_string()],
    };
    if boolean(obj, &["spec", "unschedulable"]) {
        state.push("SchedulingDisabled".to_string());
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    let roles = roles.into_iter().collect::<Vec<_>>().join(",");
    let address = |kind: &str| {
        arr(status, &["addresses"]).iter().find(|a| s(a, &["type"]) == kind).map_or("<none>", |a| s(a, &["address"]))
    };
    let info = |field: &str| match s(status, &["nodeInfo", field]) {
        "" => "<unknown>",
        v => v,
    };
    vec![
        name(obj),
        json!(state.join(",")),
        json!(or_none(&roles)),
        age(obj, now),
        json!(s(status, &["nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn event(obj: &Value, now: Timestamp) -> Vec<Value> {
    let age_of = |t: Option<Timestamp>| t.map_or_else(|| "<unknown>".to_string(), |t| since(t, now));
    let first = match time_at(obj, &["firstTimestamp"]) {
        Some(t) => since(t, now),
        None => age_of(time_at(obj, &["eventTime"])),
    };
    let mut last = match time_at(obj, &["lastTimestamp"]) {
        Some(t) => since(t, now),
        None => first.clone(),
    };
    let mut count = int(obj, &["count"]);
    if let Some(series) = at(obj, &["series"]) {
        last = age_of(time_at(series, &["lastObservedTime"]));
        count = int(series, &["count"]);
    } else if count == 0 {
        // Singleton events of the events.k8s.io API carry no count.
        count = 1;
    }
    let kind = s(obj, &["involvedObject", "kind"]).to_lowercase();
    let involved = s(obj, &["involvedObject", "name"]);
    let target = if involved.is_empty() { kind } else { format!("{kind}/{involved}") };
    let component = match s(obj, &["source", "component"]) {
        "" => s(obj, &["reportingComponent"]),
        c => c,
    };
    let instance = match s(obj, &["source", "host"]) {
        "" => s(obj, &["reportingInstance"]),
        h => h,
    };
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        json!(last),
        json!(s(obj, &["type"])),
        json!(s(obj, &["reason"])),
        json!(target),
        json!(s(obj, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(s(obj, &["message"]).trim()),
        json!(first),
        json!(count),
        name(obj),
    ]
}

fn replicas(obj: &Value) -> i64 {
    // Defaulted to 1 by the API; a stored object always has it.
    at(obj, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(1)
}

fn spec_selector(obj: &Value) -> Option<Result<LabelSelector, ()>> {
    at(obj, &["spec", "selector"]).map(|v| {
        serde_json::from_value(v.clone()).map_err(|_| ()).and_then(|sel| LabelSelector::from_k8s(&sel).map_err(|_| ()))
    })
}

fn replica_set(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(obj);
    // metav1.FormatLabelSelector: "<error>" when invalid, "<none>" when it prints empty.
    let selector = match spec_selector(obj) {
        Some(Ok(sel)) => or_none(&sel.to_string()),
        Some(Err(())) => "<error>".to_string(),
        None => "<none>".to_string(),
    };
    vec![
        name(obj),
        json!(replicas(obj)),
        json!(int(obj, &["status", "replicas"])),
        json!(int(obj, &["status", "readyReplicas"])),
        age(obj, now),
        containers,
        images,
        json!(selector),
    ]
}

fn deployment(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = container_cells(obj);
    // LabelSelectorAsSelector(...).String(): "<invalid>" when invalid, "" for null or empty.
    let selector = match spec_selector(obj) {
        Some(Ok(sel)) => sel.to_string(),
        Some(Err(())) => "<invalid>".to_string(),
        None => String::new(),
    };
    vec![
        name(obj),
        json!(format!("{}/{}", int(obj, &["status", "readyReplicas"]), replicas(obj))),
        json!(int(obj, &["status", "updatedReplicas"])),
        json!(int(obj, &["status", "availableReplicas"])),
        age(obj, now),
        containers,
        images,
        json!(selector),
    ]
}

/// `formatHosts`: up to three hosts, ` + N more...` counting every further rule, `*` if none.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = s(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more { format!("{ret} + {} more...", rules.len() - MAX) } else { ret }
}

fn ingress(obj: &Value, now: Timestamp) -> Vec<Value> {
    let class = at(obj, &["spec", "ingressClassName"]).and_then(Value::as_str).unwrap_or("<none>");
    let ports = if arr(obj, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
    vec![
        name(obj),
        json!(class),
        json!(format_hosts(arr(obj, &["spec", "rules"]))),
        json!(load_balancer_ingress(obj)),
        json!(ports),
        age(obj, now),
    ]
}

fn ingress_class(obj: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match at(obj, &["spec", "parameters"]) {
        Some(p) => {
            let mut out = s(p, &["kind"]).to_string();
            if let Some(group) = at(p, &["apiGroup"]).and_then(Value::as_str) {
                out.push('.');
                out.push_str(group);
            }
            out.push('/');
            out.push_str(s(p, &["name"]));
            out
        }
        None => "<none>".to_string(),
    };
    vec![name(obj), json!(s(obj, &["spec", "controller"])), json!(parameters), age(obj, now)]
}
