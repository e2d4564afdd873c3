//! End-to-end, in a sealed network namespace: the node agent's pod lifecycle as a user sees it
//! with kubectl — liveness, readiness and startup probes; restart policies, crash-loop back-off
//! and terminal statuses; graceful, bounded and forced termination; the container environment
//! (values, `$(VAR)` expansion, the downward API, ConfigMaps, Secrets, Service links); logs
//! (`--tail`, `--timestamps`, `-f`, `--previous`, `-c`); exec (stdin, exit codes, a missing
//! command, a terminal); DNS policy and `/etc/hosts`; and that deleting pods leaves nothing
//! behind on the node.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 200 ms until it returns `Ok`, for at most `limit`; panics with the last
/// thing it saw.
#[track_caller]
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last seen:\n{last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl apply` of several objects at once (as a v1 List, which kubectl splits).
fn apply(c: &Cluster, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    c.kubectl_stdin(&["apply", "-f", "-"], &list.to_string()).ok();
}

/// A pod bound to the test node with `spec` (which must hold `containers`).
fn pod(name: &str, mut spec: Value) -> Value {
    spec["nodeName"] = json!("pier-node");
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

/// A container running `script` with the host's `sh`.
fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": "busybox", "command": ["sh", "-c", script]})
}

/// A one-container pod running `script`, with extra spec fields merged in.
fn sh_pod(name: &str, script: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [sh("app", script)]});
    if let Value::Object(m) = extra_spec {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    pod(name, spec)
}

fn get_pod(c: &Cluster, name: &str) -> Value {
    let out = c.kubectl(&["get", "pod", name, "-o", "json"]).ok().stdout;
    serde_json::from_str(&out).unwrap()
}

/// The pod's row in `kubectl get pod` (NAME READY STATUS RESTARTS AGE, split on blanks).
fn row(c: &Cluster, name: &str) -> Vec<String> {
    let out = c.kubectl(&["get", "pod", name, "--no-headers"]).ok().stdout;
    out.split_whitespace().map(str::to_string).collect()
}

fn condition(p: &Value, ty: &str) -> Value {
    p["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == ty).cloned().unwrap_or(Value::Null)
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready")["status"] == "True"
}

/// The first container's status.
fn cs(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn restarts(p: &Value) -> i64 {
    cs(p)["restartCount"].as_i64().unwrap_or(-1)
}

/// Waits until the pod's first container is running.
#[track_caller]
fn wait_running(c: &Cluster, name: &str, limit: Duration) -> Value {
    wait_for(&format!("{name} running"), limit, || {
        let p = get_pod(c, name);
        if cs(&p)["state"]["running"].is_object() { Ok(p) } else { Err(p["status"].to_string()) }
    })
}

#[track_caller]
fn wait_ready(c: &Cluster, name: &str, limit: Duration) -> Value {
    wait_for(&format!("{name} ready"), limit, || {
        let p = get_pod(c, name);
        if ready(&p) { Ok(p) } else { Err(p["status"].to_string()) }
    })
}

/// Waits until `container` of `pod` has started and its log is `want`.
#[track_caller]
fn wait_log(c: &Cluster, pod: &str, container: &str, want: &str) {
    wait_for(&format!("the log of {pod}/{container}"), Duration::from_secs(30), || {
        let out = c.kubectl(&["logs", pod, "-c", container]);
        if out.code == 0 && out.stdout == want { Ok(()) } else { Err(format!("{out:?}")) }
    });
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp with second precision
/// (`2025-01-02T03:04:05Z`), as the API server writes them.
fn epoch_seconds(ts: &str) -> i64 {
    let b = ts.as_bytes();
    assert!(ts.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z', "not an RFC 3339 UTC time: {ts:?}");
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Whether `s` is an RFC 3339 time with nanoseconds in UTC, as the kubelet prints
/// `--timestamps` (`2006-01-02T15:04:05.000000000Z`).
fn is_rfc3339_nanos(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 30
        && b.iter().enumerate().all(|(i, ch)| match i {
            4 | 7 => *ch == b'-',
            10 => *ch == b'T',
            13 | 16 => *ch == b':',
            19 => *ch == b'.',
            29 => *ch == b'Z',
            _ => ch.is_ascii_digit(),
        })
}

/// Runs a long-lived kubectl (`logs -f`) and hands its stdout lines over a channel; the
/// returned guard kills it.
struct Streaming {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn start(c: &Cluster, args: &[&str]) -> Streaming {
        let mut child = c.kubectl_cmd(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming { child, lines }
    }

    /// The next line, or `None` after `limit` (or when the stream ended).
    fn next_line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Whether kubectl exited by itself within `limit`.
    fn exits_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's network namespace name.
fn netns(c: &Cluster) -> String {
    c.netns.as_ref().unwrap().name.clone()
}

/// Every live (not zombie) process: its pid and start time (field 22 of `/proc/PID/stat`).
fn processes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z") || fields.len() < 20 {
            continue;
        }
        out.push((pid, fields[19].to_string()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Probes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failing_exec_liveness_probe_restarts_the_container_and_it_crash_loops() {
    let c = Cluster::start_sealed(&[]);
    // The container makes itself healthy at every start; the test makes it sick.
    let mut p = sh_pod("live", "touch /tmp/healthy; echo started; sleep 3600", json!({}));
    p["spec"]["containers"][0]["livenessProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2});
    // httpGet and tcpSocket liveness: a 404 restarts, an open port does not.
    let http_404 = pod(
        "live-http-404",
        json!({"containers": [{"name": "app", "image": "nginx",
            "livenessProbe": {"httpGet": {"port": 80, "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 1}}]}),
    );
    let tcp_open = pod(
        "live-tcp",
        json!({"containers": [{"name": "app", "image": "luksa/kubia", "ports": [{"name": "http", "containerPort": 8080}],
            // A second for the server to bind before the first probe: with one failure allowed,
            // a probe landing before that restarts it, on a kubelet too.
            "livenessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1}}]}),
    );
    apply(&c, &[p, http_404, tcp_open]);
    wait_running(&c, "live", Duration::from_secs(20));
    // Healthy: nothing happens.
    std::thread::sleep(Duration::from_secs(3));
    let p = get_pod(&c, "live");
    assert_eq!(restarts(&p), 0, "{}", p["status"]);
    assert!(ready(&p), "no readiness probe: ready once running\n{}", p["status"]);

    c.kubectl(&["exec", "live", "--", "rm", "/tmp/healthy"]).ok();
    let p = wait_for("the first restart", Duration::from_secs(15), || {
        let p = get_pod(&c, "live");
        if restarts(&p) >= 1 { Ok(p) } else { Err(p["status"].to_string()) }
    });
    let last = &cs(&p)["lastState"]["terminated"];
    assert!(matches!(last["exitCode"].as_i64(), Some(137 | 143)), "killed by a signal: {}", p["status"]);
    assert_eq!(last["reason"], "Error", "{}", p["status"]);
    assert!(last["startedAt"].is_string() && last["finishedAt"].is_string(), "{}", p["status"]);
    // It comes back (the container makes itself healthy again), with its old log kept.
    wait_running(&c, "live", Duration::from_secs(25));
    let prev = c.kubectl(&["logs", "live", "--previous"]).ok().stdout;
    assert_eq!(prev, "started\n");

    // Sick again: restarted again, backing off in between.
    c.kubectl(&["exec", "live", "--", "rm", "/tmp/healthy"]).ok();
    let r = wait_for("CrashLoopBackOff", Duration::from_secs(15), || {
        let r = row(&c, "live");
        if r[2] == "CrashLoopBackOff" { Ok(r) } else { Err(format!("{r:?}")) }
    });
    assert_eq!(r[1], "0/1", "{r:?}");
    // As a kubelet counts: the restart count grows when the container starts again, so it
    // is still 1 while the second restart backs off.
    let p = get_pod(&c, "live");
    assert_eq!(restarts(&p), 1, "{}", p["status"]);
    let waiting = &cs(&p)["state"]["waiting"];
    assert_eq!(waiting["reason"], "CrashLoopBackOff");
    assert!(
        waiting["message"].as_str().unwrap_or("").starts_with("back-off ")
            && waiting["message"].as_str().unwrap_or("").contains("restarting failed container=app pod=live"),
        "{waiting}"
    );
    assert!(!ready(&p));

    let p = get_pod(&c, "live-http-404");
    assert!(restarts(&p) >= 1, "a 404 fails an httpGet liveness probe: {}", p["status"]);
    let p = get_pod(&c, "live-tcp");
    assert_eq!(restarts(&p), 0, "{}", p["status"]);
    assert!(ready(&p), "{}", p["status"]);
}

/// A tiny HTTP server (the host's Python) answering 200 on `/ok` and 500 on anything else.
fn python_500_server() -> Option<Value> {
    let out = std::process::Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().ok()?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        return None;
    }
    let script = "import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/ok' else 500)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'hi')
http.server.ThreadingHTTPServer(('', 8000), H).serve_forever()
";
    Some(json!({"name": "app", "image": "python:3", "command": [exe, "-c", script],
        "ports": [{"name": "api", "containerPort": 8000}]}))
}

#[test]
fn readiness_probes_decide_ready_and_never_restart() {
    let c = Cluster::start_sealed(&[]);
    let with_probe = |name: &str, mut container: Value, probe: Value| {
        container["readinessProbe"] = probe;
        pod(name, json!({"containers": [container]}))
    };
    let nginx = json!({"name": "app", "image": "nginx", "ports": [{"name": "web", "containerPort": 80}]});
    let kubia = json!({"name": "app", "image": "luksa/kubia", "ports": [{"containerPort": 8080}]});
    let sleeper = sh("app", "sleep 3600");
    let mut pods = vec![
        with_probe("http-by-name", nginx.clone(), json!({"httpGet": {"port": "web", "path": "/"}, "periodSeconds": 1})),
        with_probe(
            "http-by-number",
            nginx.clone(),
            json!({"httpGet": {"port": 80, "path": "/index.html"}, "periodSeconds": 1}),
        ),
        with_probe("http-404", nginx, json!({"httpGet": {"port": 80, "path": "/missing"}, "periodSeconds": 1})),
        with_probe("tcp-open", kubia.clone(), json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1})),
        with_probe("tcp-closed", kubia, json!({"tcpSocket": {"port": 9999}, "periodSeconds": 1})),
        with_probe("exec-false", sleeper.clone(), json!({"exec": {"command": ["false"]}, "periodSeconds": 1})),
        // An exec probe that outlives timeoutSeconds fails.
        with_probe(
            "exec-timeout",
            sleeper,
            json!({"exec": {"command": ["sleep", "3"]}, "periodSeconds": 1, "timeoutSeconds": 1}),
        ),
    ];
    let mut ready_pods = vec!["http-by-name", "http-by-number", "tcp-open"];
    let mut never = vec!["http-404", "tcp-closed", "exec-false", "exec-timeout"];
    match python_500_server() {
        Some(py) => {
            pods.push(with_probe(
                "http-200",
                py.clone(),
                json!({"httpGet": {"port": "api", "path": "/ok"}, "periodSeconds": 1}),
            ));
            pods.push(with_probe(
                "http-500",
                py,
                json!({"httpGet": {"port": 8000, "path": "/boom"}, "periodSeconds": 1}),
            ));
            ready_pods.push("http-200");
            never.push("http-500");
        }
        None => eprintln!("no python3 on this host: the 500 case is covered by nginx's 404 only"),
    }
    apply(&c, &pods);
    for name in &ready_pods {
        let p = wait_ready(&c, name, Duration::from_secs(30));
        assert_eq!(cs(&p)["ready"], true);
        assert_eq!(condition(&p, "ContainersReady")["status"], "True");
    }
    for name in &never {
        wait_running(&c, name, Duration::from_secs(20));
    }
    // Several periods of failures later: still not ready, running, never restarted.
    std::thread::sleep(Duration::from_secs(5));
    for name in &never {
        let p = get_pod(&c, name);
        assert!(!ready(&p), "{name}: {}", p["status"]);
        assert_eq!(condition(&p, "Ready")["reason"], "ContainersNotReady", "{name}");
        assert_eq!(cs(&p)["ready"], false, "{name}");
        assert_eq!(restarts(&p), 0, "{name}: a readiness failure never restarts\n{}", p["status"]);
        assert!(cs(&p)["state"]["running"].is_object(), "{name}: {}", p["status"]);
        let r = row(&c, name);
        assert_eq!(r[1..4], ["0/1", "Running", "0"], "{name}: {r:?}");
    }
    for name in &ready_pods {
        assert_eq!(row(&c, name)[1..4], ["1/1", "Running", "0"], "{name}");
    }
}

#[test]
fn readiness_follows_initial_delay_and_thresholds() {
    let c = Cluster::start_sealed(&[]);
    let mut delayed = sh_pod("delayed", "sleep 3600", json!({}));
    delayed["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 6, "periodSeconds": 1});
    let mut thrice = sh_pod("thrice", "sleep 3600", json!({}));
    thrice["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["true"]}, "periodSeconds": 1, "successThreshold": 3});
    let mut tolerant = sh_pod("tolerant", "touch /tmp/ready; sleep 3600", json!({}));
    tolerant["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 3});
    apply(&c, &[delayed, thrice, tolerant]);
    let p = wait_running(&c, "delayed", Duration::from_secs(20));
    assert!(!ready(&p), "not ready before the initial delay: {}", p["status"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!ready(&get_pod(&c, "delayed")), "still inside the initial delay");

    for (name, at_least) in [("delayed", 6), ("thrice", 2)] {
        let p = wait_ready(&c, name, Duration::from_secs(20));
        let started = epoch_seconds(cs(&p)["state"]["running"]["startedAt"].as_str().unwrap());
        let became_ready = epoch_seconds(condition(&p, "Ready")["lastTransitionTime"].as_str().unwrap());
        assert!(
            became_ready - started >= at_least,
            "{name}: ready {}s after start, expected at least {at_least}s\n{}",
            became_ready - started,
            p["status"]
        );
        assert_eq!(restarts(&p), 0, "{name}");
    }

    // failureThreshold 3 with a one-second period: two failures are not enough to unready it.
    wait_ready(&c, "tolerant", Duration::from_secs(20));
    c.kubectl(&["exec", "tolerant", "--", "rm", "/tmp/ready"]).ok();
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(ready(&get_pod(&c, "tolerant")), "still ready a second after the first failures");
    wait_for("tolerant unready", Duration::from_secs(10), || {
        let p = get_pod(&c, "tolerant");
        if ready(&p) { Err(p["status"].to_string()) } else { Ok(()) }
    });
    assert!(removed.elapsed() >= Duration::from_millis(1500), "{:?}", removed.elapsed());
    assert_eq!(restarts(&get_pod(&c, "tolerant")), 0);
}

#[test]
fn a_startup_probe_gates_readiness_and_liveness() {
    let c = Cluster::start_sealed(&[]);
    let mut gated = sh_pod("gated", "sleep 3600", json!({}));
    gated["spec"]["containers"][0]["startupProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 60});
    gated["spec"]["containers"][0]["readinessProbe"] = json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    // Would kill the container at once if it ran before the startup probe succeeded.
    gated["spec"]["containers"][0]["livenessProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 1});
    apply(&c, &[gated]);

    wait_running(&c, "gated", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let p = get_pod(&c, "gated");
    assert_eq!(cs(&p)["started"], false, "{}", p["status"]);
    assert!(!ready(&p), "not ready before the startup probe succeeds: {}", p["status"]);
    assert_eq!(restarts(&p), 0, "liveness does not run before startup succeeds: {}", p["status"]);
    assert_eq!(row(&c, "gated")[1..4], ["0/1", "Running", "0"]);

    c.kubectl(&["exec", "gated", "--", "touch", "/tmp/started"]).ok();
    let p = wait_ready(&c, "gated", Duration::from_secs(15));
    assert_eq!(cs(&p)["started"], true);
    assert_eq!(restarts(&p), 0);
    assert_eq!(row(&c, "gated")[1..4], ["1/1", "Running", "0"]);
}

#[test]
fn a_failing_startup_probe_restarts_the_container() {
    let c = Cluster::start_sealed(&[]);
    let mut never_starts = sh_pod("never-starts", "sleep 3600", json!({}));
    never_starts["spec"]["containers"][0]["startupProbe"] =
        json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2});
    apply(&c, &[never_starts]);
    wait_running(&c, "never-starts", Duration::from_secs(20));
    // Two failures a second apart: killed and restarted well within 15 s.
    let p = wait_for("the failed startup probe's restart", Duration::from_secs(15), || {
        let p = get_pod(&c, "never-starts");
        if restarts(&p) >= 1 { Ok(p) } else { Err(p["status"].to_string()) }
    });
    assert!(!ready(&p));
    assert_eq!(cs(&p)["started"], false);
    let last = &cs(&p)["lastState"]["terminated"];
    assert!(matches!(last["exitCode"].as_i64(), Some(137 | 143)), "killed by a signal: {}", p["status"]);
}

#[test]
fn every_container_of_a_multi_container_pod_is_reported_running() {
    let c = Cluster::start_sealed(&[]);
    let names = ["multi-0", "multi-1", "multi-2"];
    let pods: Vec<Value> = names
        .iter()
        .map(|n| pod(n, json!({"containers": (0..4).map(|i| sh(&format!("c{i}"), "sleep 3600")).collect::<Vec<_>>()})))
        .collect();
    apply(&c, &pods);
    for name in names {
        let p = wait_for(&format!("{name} 4/4"), Duration::from_secs(30), || {
            let r = row(&c, name);
            if r[1] == "4/4" { Ok(get_pod(&c, name)) } else { Err(format!("{r:?}\n{}", get_pod(&c, name)["status"])) }
        });
        assert!(ready(&p));
        for s in p["status"]["containerStatuses"].as_array().unwrap() {
            assert!(s["state"]["running"].is_object(), "{s}");
        }
    }
}

#[test]
fn condition_transition_times_move_only_on_transitions() {
    let c = Cluster::start_sealed(&[]);
    let mut p = sh_pod("flip", "sleep 3600", json!({}));
    p["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1});
    apply(&c, &[p]);
    let before = wait_running(&c, "flip", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(2500));
    c.kubectl(&["exec", "flip", "--", "touch", "/tmp/ready"]).ok();
    let after = wait_ready(&c, "flip", Duration::from_secs(15));
    for ty in ["PodScheduled", "Initialized", "PodReadyToStartContainers"] {
        assert_eq!(
            condition(&before, ty)["lastTransitionTime"],
            condition(&after, ty)["lastTransitionTime"],
            "{ty} did not change, so its lastTransitionTime must not either"
        );
    }
    assert_ne!(condition(&before, "Ready")["lastTransitionTime"], condition(&after, "Ready")["lastTransitionTime"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Restart policy
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_policies_decide_restarts_and_terminal_statuses() {
    let c = Cluster::start_sealed(&[]);
    let never = json!({"restartPolicy": "Never"});
    let on_failure = json!({"restartPolicy": "OnFailure"});
    apply(
        &c,
        &[
            sh_pod("never-fails", "echo bye; exit 3", never.clone()),
            sh_pod("never-succeeds", "exit 0", never),
            sh_pod("onfailure-succeeds", "exit 0", on_failure.clone()),
            sh_pod("onfailure-fails", "exit 1", on_failure),
            sh_pod("always-succeeds", "exit 0", json!({})),
            sh_pod("always-fails", "exit 1", json!({"restartPolicy": "Always"})),
        ],
    );

    let terminated = |name: &str| {
        wait_for(&format!("{name} terminated"), Duration::from_secs(20), || {
            let p = get_pod(&c, name);
            if cs(&p)["state"]["terminated"].is_object() && p["status"]["phase"] != "Running" {
                Ok(p)
            } else {
                Err(p["status"].to_string())
            }
        })
    };
    let p = terminated("never-fails");
    assert_eq!(p["status"]["phase"], "Failed");
    let t = &cs(&p)["state"]["terminated"];
    assert_eq!((t["exitCode"].as_i64(), t["reason"].as_str()), (Some(3), Some("Error")), "{t}");
    assert_eq!(row(&c, "never-fails")[1..4], ["0/1", "Error", "0"]);
    assert_eq!(condition(&p, "Ready")["status"], "False");
    // Its log stays readable after it ended.
    assert_eq!(c.kubectl(&["logs", "never-fails"]).ok().stdout, "bye\n");
    let out = c.kubectl(&["exec", "never-fails", "--", "true"]).fails();
    assert!(
        out.stderr.contains("cannot exec into a container in a completed pod; current phase is Failed"),
        "{}",
        out.stderr
    );

    for name in ["never-succeeds", "onfailure-succeeds"] {
        let p = terminated(name);
        assert_eq!(p["status"]["phase"], "Succeeded", "{name}");
        let t = &cs(&p)["state"]["terminated"];
        assert_eq!((t["exitCode"].as_i64(), t["reason"].as_str()), (Some(0), Some("Completed")), "{name}: {t}");
        assert_eq!(row(&c, name)[1..4], ["0/1", "Completed", "0"], "{name}");
    }

    for name in ["onfailure-fails", "always-succeeds", "always-fails"] {
        let p = wait_for(&format!("{name} restarted"), Duration::from_secs(20), || {
            let p = get_pod(&c, name);
            if restarts(&p) >= 1 { Ok(p) } else { Err(p["status"].to_string()) }
        });
        assert_eq!(p["status"]["phase"], "Running", "{name}: {}", p["status"]);
        let want = if name == "always-succeeds" { 0 } else { 1 };
        assert_eq!(cs(&p)["lastState"]["terminated"]["exitCode"].as_i64(), Some(want), "{name}: {}", p["status"]);
    }
    // Restarting containers back off, and say so.
    wait_for("always-fails in CrashLoopBackOff", Duration::from_secs(15), || {
        let r = row(&c, "always-fails");
        if r[2] == "CrashLoopBackOff" { Ok(()) } else { Err(format!("{r:?}")) }
    });
    // OnFailure left the successful one alone.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(restarts(&get_pod(&c, "onfailure-succeeds")), 0);
    assert_eq!(restarts(&get_pod(&c, "never-fails")), 0);
}

#[test]
fn the_first_restart_is_immediate_and_later_ones_back_off() {
    let c = Cluster::start_sealed(&[]);
    // Each instance numbers itself (the pod's filesystem outlives its containers here).
    let script = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; echo instance $n; exit 1";
    apply(&c, &[sh_pod("crasher", script, json!({}))]);
    let start = Instant::now();
    // The kubelet starts a crashed container again right away the first time (it is not in
    // back-off yet), so the second instance runs within a few seconds...
    wait_for("the second instance", Duration::from_secs(8), || {
        let out = c.kubectl(&["logs", "crasher"]);
        if out.stdout.contains("instance 2") { Ok(()) } else { Err(format!("{out:?}\n{:?}", row(&c, "crasher"))) }
    });
    assert!(start.elapsed() < Duration::from_secs(9));
    // ... and after its exit the container backs off 10 s: no third instance for a while.
    std::thread::sleep(Duration::from_secs(4));
    let out = c.kubectl(&["logs", "crasher"]).stdout;
    assert!(!out.contains("instance 3"), "{out}");
    assert_eq!(row(&c, "crasher")[2], "CrashLoopBackOff");
}

// ---------------------------------------------------------------------------------------------
// 3. Termination
// ---------------------------------------------------------------------------------------------

#[test]
fn deleting_a_pod_sends_sigterm_and_shows_terminating_until_it_exits() {
    let c = Cluster::start_sealed(&[]);
    let script = "trap 'echo got TERM; sleep 2; echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done";
    apply(&c, &[sh_pod("graceful", script, json!({}))]);
    wait_ready(&c, "graceful", Duration::from_secs(20));
    let mut follow = Streaming::start(&c, &["logs", "-f", "graceful"]);
    assert_eq!(follow.next_line(Duration::from_secs(10)).as_deref(), Some("up"));

    let start = Instant::now();
    let out = c.kubectl(&["delete", "pod", "graceful", "--wait=false"]).ok().stdout;
    assert_eq!(out.trim(), "pod \"graceful\" deleted");
    let p = get_pod(&c, "graceful");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{}", p["metadata"]);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    let r = row(&c, "graceful");
    assert_eq!(r[2], "Terminating", "{r:?}");
    // The container saw SIGTERM and wrote so to its log.
    assert_eq!(follow.next_line(Duration::from_secs(5)).as_deref(), Some("got TERM"));
    assert_eq!(follow.next_line(Duration::from_secs(5)).as_deref(), Some("bye"));
    assert!(follow.exits_within(Duration::from_secs(5)), "logs -f ends when the container exits");
    // The pod goes once its container has exited, well within the grace period.
    wait_for("the pod gone", Duration::from_secs(15), || {
        let out = c.kubectl(&["get", "pod", "graceful"]);
        if out.code != 0 && out.stderr.contains("NotFound") { Ok(()) } else { Err(out.stdout) }
    });
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(12), "{took:?}");
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let c = Cluster::start_sealed(&[]);
    let stubborn = "trap '' TERM; while true; do sleep 0.1; done";
    apply(
        &c,
        &[
            sh_pod("stubborn", stubborn, json!({"terminationGracePeriodSeconds": 2})),
            sh_pod("stubborn-30", stubborn, json!({"terminationGracePeriodSeconds": 30})),
            sh_pod("forced", stubborn, json!({"terminationGracePeriodSeconds": 30})),
        ],
    );
    for name in ["stubborn", "stubborn-30", "forced"] {
        wait_ready(&c, name, Duration::from_secs(20));
    }

    // The spec's grace period.
    let start = Instant::now();
    let out = c.kubectl(&["delete", "pod", "stubborn", "--timeout=30s"]).ok().stdout;
    let took = start.elapsed();
    assert_eq!(out.trim(), "pod \"stubborn\" deleted");
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_secs(7), "deleted after {took:?}");

    // --grace-period overrides it.
    let start = Instant::now();
    c.kubectl(&["delete", "pod", "stubborn-30", "--grace-period=1", "--timeout=30s"]).ok();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(7), "deleted after {took:?}");

    // --force with --grace-period=0 (kubectl sends gracePeriodSeconds=0) removes it from the
    // API at once, whatever the container does.
    let start = Instant::now();
    let out = c.kubectl(&["delete", "pod", "forced", "--grace-period=0", "--force"]).ok();
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(out.stdout.contains("pod \"forced\" force deleted"), "{}", out.stdout);
    assert!(out.stderr.contains("Immediate deletion does not wait for confirmation"), "{}", out.stderr);
    let get = c.kubectl(&["get", "pod", "forced"]).fails();
    assert!(get.stderr.contains("pods \"forced\" not found"), "{}", get.stderr);
}

#[test]
fn pods_waiting_to_start_or_backing_off_delete_promptly() {
    let c = Cluster::start_sealed(&[]);
    let mut waiting = sh_pod("waiting", "sleep 3600", json!({}));
    waiting["spec"]["containers"][0]["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]);
    apply(&c, &[sh_pod("crashing", "exit 1", json!({})), waiting]);
    for (name, status) in [("crashing", "CrashLoopBackOff"), ("waiting", "CreateContainerConfigError")] {
        wait_for(&format!("{name} {status}"), Duration::from_secs(20), || {
            let r = row(&c, name);
            if r[2] == status { Ok(()) } else { Err(format!("{r:?}")) }
        });
    }
    let start = Instant::now();
    c.kubectl(&["delete", "pod", "crashing", "waiting", "--timeout=30s"]).ok();
    assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
    wait_for("no sandbox left", Duration::from_secs(5), || {
        let s = pier_runtime::recorded_sandboxes(&c.data_dir.join("runtime")).unwrap();
        if s.is_empty() { Ok(()) } else { Err(format!("{s:?}")) }
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Environment
// ---------------------------------------------------------------------------------------------

fn env_of(c: &Cluster, pod: &str) -> std::collections::BTreeMap<String, String> {
    let out = c.kubectl(&["exec", pod, "--", "env"]).ok().stdout;
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_container_environment_is_built_as_the_kubelet_builds_it() {
    let c = Cluster::start_sealed(&[]);
    apply(
        &c,
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-web-svc"},
                "spec": {"selector": {"app": "web"}, "ports": [
                    {"name": "http-main", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "port": 9090, "protocol": "UDP"}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plainsvc"},
                "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless"},
                "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "othersvc", "namespace": "other"},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 81}]}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                "data": {"key1": "value1", "A": "from-configmap"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                "stringData": {"password": "s3cret", "user": "admin"}}),
        ],
    );
    let svc_ip = |name: &str| c.kubectl(&["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"]).ok().stdout;
    let (web, plain) = (svc_ip("my-web-svc"), svc_ip("plainsvc"));

    let mut app = sh("app", "sleep 3600");
    app["env"] = json!([
        {"name": "A", "value": "hello"},
        {"name": "B", "value": "$(A)-world"},
        {"name": "C", "value": "$(LATER) $(NOPE) $$(A)"},
        {"name": "LATER", "value": "late"},
        {"name": "WEB", "value": "http://$(MY_WEB_SVC_SERVICE_HOST):$(MY_WEB_SVC_SERVICE_PORT_HTTP_MAIN)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "CM_VALUE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "key1"}}},
        {"name": "SECRET_VALUE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "absent", "optional": true}}},
    ]);
    app["envFrom"] = json!([{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}]);
    let mut nolinks = sh_pod("nolinks", "sleep 3600", json!({"enableServiceLinks": false}));
    nolinks["spec"]["containers"][0]["env"] = json!([{"name": "KUBIA", "value": "x"}]);
    apply(&c, &[pod("envy", json!({"containers": [app]})), nolinks]);
    let p = wait_ready(&c, "envy", Duration::from_secs(20));
    let pod_ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let env = env_of(&c, "envy");
    let want = |k: &str, v: &str| assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:#?}");

    want("A", "hello");
    want("B", "hello-world");
    // References to later or unknown variables stay as written; `$$` escapes.
    want("C", "$(LATER) $(NOPE) $(A)");
    want("WEB", &format!("http://{web}:80"));
    want("POD_NAME", "envy");
    want("POD_NAMESPACE", "default");
    want("POD_IP", &pod_ip);
    want("NODE_NAME", "pier-node");
    want("CM_VALUE", "value1");
    want("SECRET_VALUE", "s3cret");
    assert!(!env.contains_key("OPTIONAL"), "an optional missing key sets nothing");
    want("CFG_key1", "value1");
    want("CFG_A", "from-configmap");
    want("password", "s3cret");
    want("user", "admin");
    want("HOSTNAME", "envy");

    // Service links: every Service of the namespace with a cluster IP, names per the kubelet.
    want("MY_WEB_SVC_SERVICE_HOST", &web);
    want("MY_WEB_SVC_SERVICE_PORT", "80");
    want("MY_WEB_SVC_SERVICE_PORT_HTTP_MAIN", "80");
    want("MY_WEB_SVC_SERVICE_PORT_METRICS", "9090");
    want("MY_WEB_SVC_PORT", &format!("tcp://{web}:80"));
    want("MY_WEB_SVC_PORT_80_TCP", &format!("tcp://{web}:80"));
    want("MY_WEB_SVC_PORT_80_TCP_PROTO", "tcp");
    want("MY_WEB_SVC_PORT_80_TCP_PORT", "80");
    want("MY_WEB_SVC_PORT_80_TCP_ADDR", &web);
    want("MY_WEB_SVC_PORT_9090_UDP", &format!("udp://{web}:9090"));
    want("MY_WEB_SVC_PORT_9090_UDP_PROTO", "udp");
    want("MY_WEB_SVC_PORT_9090_UDP_PORT", "9090");
    want("MY_WEB_SVC_PORT_9090_UDP_ADDR", &web);
    want("PLAINSVC_SERVICE_HOST", &plain);
    want("PLAINSVC_SERVICE_PORT", "5432");
    want("PLAINSVC_PORT", &format!("tcp://{plain}:5432"));
    want("PLAINSVC_PORT_5432_TCP", &format!("tcp://{plain}:5432"));
    want("PLAINSVC_PORT_5432_TCP_PROTO", "tcp");
    want("PLAINSVC_PORT_5432_TCP_PORT", "5432");
    want("PLAINSVC_PORT_5432_TCP_ADDR", &plain);
    assert!(!env.keys().any(|k| k.starts_with("PLAINSVC_SERVICE_PORT_")), "an unnamed port has no named variable");
    assert!(!env.keys().any(|k| k.starts_with("HEADLESS_")), "a headless Service has no variables");
    assert!(!env.keys().any(|k| k.starts_with("OTHERSVC_")), "Services of other namespaces have none");
    want("KUBERNETES_SERVICE_HOST", "10.96.0.1");
    want("KUBERNETES_SERVICE_PORT", "443");
    want("KUBERNETES_SERVICE_PORT_HTTPS", "443");
    want("KUBERNETES_PORT", "tcp://10.96.0.1:443");
    want("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443");

    // enableServiceLinks: false keeps only the master Service's variables.
    wait_ready(&c, "nolinks", Duration::from_secs(20));
    let env = env_of(&c, "nolinks");
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST").map(String::as_str), Some("10.96.0.1"), "{env:#?}");
    assert_eq!(env.get("KUBERNETES_SERVICE_PORT").map(String::as_str), Some("443"), "{env:#?}");
    assert!(!env.keys().any(|k| k.starts_with("MY_WEB_SVC_") || k.starts_with("PLAINSVC_")), "{env:#?}");
    assert_eq!(env.get("KUBIA").map(String::as_str), Some("x"));
}

#[test]
fn a_missing_configmap_key_holds_the_container_until_it_exists() {
    let c = Cluster::start_sealed(&[]);
    let mut p = sh_pod("waits", "echo $LATE; sleep 3600", json!({}));
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "late"}}}]);
    apply(
        &c,
        &[json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"early": "1"}}), p],
    );
    let p = wait_for("CreateContainerConfigError", Duration::from_secs(20), || {
        let p = get_pod(&c, "waits");
        if cs(&p)["state"]["waiting"]["reason"] == "CreateContainerConfigError" {
            Ok(p)
        } else {
            Err(p["status"].to_string())
        }
    });
    assert_eq!(cs(&p)["state"]["waiting"]["message"], "couldn't find key late in ConfigMap default/cfg");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(row(&c, "waits")[1..4], ["0/1", "CreateContainerConfigError", "0"]);

    c.kubectl(&["patch", "configmap", "cfg", "--type=merge", "-p", r#"{"data":{"late":"finally"}}"#]).ok();
    wait_running(&c, "waits", Duration::from_secs(30));
    wait_for("the value in the log", Duration::from_secs(10), || {
        let out = c.kubectl(&["logs", "waits"]).ok().stdout;
        if out == "finally\n" { Ok(()) } else { Err(out) }
    });
    assert_eq!(restarts(&get_pod(&c, "waits")), 0);
}

#[test]
fn logs_of_a_waiting_container_give_its_reason() {
    let c = Cluster::start_sealed(&[]);
    let mut p = sh_pod("waits", "sleep 3600", json!({}));
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]);
    apply(&c, &[p]);
    wait_for("CreateContainerConfigError", Duration::from_secs(20), || {
        let r = row(&c, "waits");
        if r[2] == "CreateContainerConfigError" { Ok(()) } else { Err(format!("{r:?}")) }
    });
    // The kubelet (validateContainerLogStatus) names the waiting reason.
    let out = c.kubectl(&["logs", "waits"]).fails();
    assert!(
        out.stderr.contains("container \"app\" in pod \"waits\" is waiting to start: CreateContainerConfigError"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_configmap_says_not_found() {
    let c = Cluster::start_sealed(&[]);
    let mut p = sh_pod("nocm", "sleep 3600", json!({}));
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]);
    apply(&c, &[p]);
    let msg = wait_for("CreateContainerConfigError", Duration::from_secs(20), || {
        let p = get_pod(&c, "nocm");
        let w = &cs(&p)["state"]["waiting"];
        if w["reason"] == "CreateContainerConfigError" {
            Ok(w["message"].clone())
        } else {
            Err(p["status"].to_string())
        }
    });
    assert_eq!(msg, "configmap \"absent\" not found");
}

#[test]
fn command_and_args_expand_env_references() {
    let c = Cluster::start_sealed(&[]);
    // Unexpanded, sh would run `$(GREETING)` as a command substitution and print " from ".
    let mut p = sh_pod("expand", "echo $(GREETING) from $(POD_NAME); sleep 3600", json!({}));
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "GREETING", "value": "hi"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]);
    let a = json!({"name": "app", "image": "busybox", "command": ["echo"], "args": ["$(GREETING)", "$(UNSET)", "$$(GREETING)"],
        "env": [{"name": "GREETING", "value": "hello"}]});
    apply(&c, &[p, pod("expand-args", json!({"restartPolicy": "Never", "containers": [a]}))]);
    let out = wait_for("the log", Duration::from_secs(20), || {
        let out = c.kubectl(&["logs", "expand"]).stdout;
        if out.is_empty() { Err(out) } else { Ok(out) }
    });
    assert_eq!(out, "hi from expand\n");
    wait_for("expand-args done", Duration::from_secs(20), || {
        let p = get_pod(&c, "expand-args");
        if p["status"]["phase"] == "Succeeded" { Ok(()) } else { Err(p["status"].to_string()) }
    });
    assert_eq!(c.kubectl(&["logs", "expand-args"]).ok().stdout, "hello $(UNSET) $(GREETING)\n");
}

// ---------------------------------------------------------------------------------------------
// 5. Logs
// ---------------------------------------------------------------------------------------------

#[test]
fn logs_tail_timestamps_follow_previous_and_containers() {
    let c = Cluster::start_sealed(&[]);
    let counter = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; echo instance $n; \
                   if [ $n -ge 2 ]; then exec sleep 3600; fi; sleep 1; exit 1";
    let mut two = pod(
        "two",
        json!({"containers": [sh("a", "echo from a; sleep 3600"), sh("b", "echo from b; sleep 0.5; echo b-err >&2; sleep 3600")]}),
    );
    two["spec"]["containers"][1]["env"] = json!([{"name": "WHO", "value": "b"}]);
    let mut annotated = pod(
        "annotated",
        json!({"containers": [sh("a", "echo from a; sleep 3600"), sh("b", "echo from b; sleep 3600")]}),
    );
    annotated["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/default-container": "b"});
    apply(
        &c,
        &[
            sh_pod("chatty", "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 3600", json!({})),
            sh_pod("ticker", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done", json!({})),
            sh_pod("counter", counter, json!({})),
            two,
            annotated,
        ],
    );
    for name in ["chatty", "ticker"] {
        wait_ready(&c, name, Duration::from_secs(30));
    }
    // (Not readiness: the status of a pod with two containers can stay stale, see
    // `every_container_of_a_multi_container_pod_is_reported_running`.)
    for (name, container, want) in
        [("two", "a", "from a\n"), ("two", "b", "from b\nb-err\n"), ("annotated", "b", "from b\n")]
    {
        wait_log(&c, name, container, want);
    }

    // --tail and --timestamps.
    let all = wait_for("five lines", Duration::from_secs(5), || {
        let out = c.kubectl(&["logs", "chatty"]).ok().stdout;
        if out.lines().count() == 5 { Ok(out) } else { Err(out) }
    });
    assert_eq!(all, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    assert_eq!(c.kubectl(&["logs", "chatty", "--tail=2"]).ok().stdout, "line 4\nline 5\n");
    assert_eq!(c.kubectl(&["logs", "chatty", "--tail=0"]).ok().stdout, "");
    let stamped = c.kubectl(&["logs", "chatty", "--timestamps", "--tail=3"]).ok().stdout;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    let mut prev = "";
    for (i, l) in lines.iter().enumerate() {
        let (ts, text) = l.split_once(' ').unwrap();
        assert!(is_rfc3339_nanos(ts), "{ts:?} in {stamped}");
        assert_eq!(text, format!("line {}", i + 3));
        assert!(ts >= prev, "timestamps ascend: {stamped}");
        prev = ts;
    }

    // -f streams lines as they are written.
    let follow = Streaming::start(&c, &["logs", "-f", "ticker", "--tail=1"]);
    let first = follow.next_line(Duration::from_secs(10)).expect("a first line");
    let n: u32 = first.strip_prefix("tick ").unwrap().parse().unwrap();
    for k in 1..=3 {
        assert_eq!(follow.next_line(Duration::from_secs(5)), Some(format!("tick {}", n + k)));
    }
    drop(follow);

    // -c picks a container; without it kubectl takes the first and says so; the API itself
    // wants a name for a pod with two containers and no default-container annotation.
    assert_eq!(c.kubectl(&["logs", "two", "-c", "b"]).ok().stdout, "from b\nb-err\n");
    let out = c.kubectl(&["logs", "two"]).ok();
    assert_eq!(out.stdout, "from a\n");
    assert!(out.stderr.contains("Defaulted container \"a\" out of: a, b"), "{}", out.stderr);
    let out = c.kubectl(&["logs", "annotated"]).ok();
    assert_eq!(out.stdout, "from b\n");
    assert!(!out.stderr.contains("Defaulted"), "{}", out.stderr);
    let raw = c.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/two/log"]).fails();
    assert!(
        raw.stderr.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{}",
        raw.stderr
    );
    let bad = c.kubectl(&["logs", "two", "-c", "nope"]).fails();
    assert!(bad.stderr.contains("container nope is not valid for pod two"), "{}", bad.stderr);
    let all = c.kubectl(&["logs", "two", "--all-containers", "--prefix"]).ok().stdout;
    assert!(all.contains("[pod/two/a] from a") && all.contains("[pod/two/b] from b"), "{all}");

    // --previous: an error before any restart, the old instance's log after one.
    let p = get_pod(&c, "counter");
    if restarts(&p) == 0 && cs(&p)["state"]["running"].is_object() {
        let out = c.kubectl(&["logs", "counter", "--previous"]);
        if out.code != 0 {
            assert!(
                out.stderr.contains("previous terminated container \"app\" in pod \"counter\" not found"),
                "{}",
                out.stderr
            );
        }
    }
    wait_for("the second instance", Duration::from_secs(30), || {
        let out = c.kubectl(&["logs", "counter"]).ok().stdout;
        if out == "instance 2\n" { Ok(()) } else { Err(out) }
    });
    assert_eq!(c.kubectl(&["logs", "counter", "--previous"]).ok().stdout, "instance 1\n");
    assert_eq!(c.kubectl(&["logs", "counter", "-p"]).ok().stdout, "instance 1\n");
}

// ---------------------------------------------------------------------------------------------
// 6. Exec
// ---------------------------------------------------------------------------------------------

#[test]
fn exec_pipes_stdin_passes_exit_codes_and_picks_containers() {
    let c = Cluster::start_sealed(&[]);
    let mut two = pod("two", json!({"containers": [sh("a", "sleep 3600"), sh("b", "sleep 3600")]}));
    two["spec"]["containers"][1]["env"] = json!([{"name": "WHO", "value": "b"}]);
    apply(&c, &[sh_pod("shell", "sleep 3600", json!({})), two]);
    wait_ready(&c, "shell", Duration::from_secs(20));
    // (Not readiness: see `every_container_of_a_multi_container_pod_is_reported_running`.)
    wait_log(&c, "two", "a", "");
    wait_log(&c, "two", "b", "");

    // -i: stdin reaches the command, and its end reaches it too.
    let out = c.kubectl_stdin(&["exec", "-i", "shell", "--", "tr", "a-z", "A-Z"], "hello pier\n").ok();
    assert_eq!(out.stdout, "HELLO PIER\n");
    let big = "x".repeat(200_000);
    let out = c.kubectl_stdin(&["exec", "-i", "shell", "--", "wc", "-c"], &big).ok();
    assert_eq!(out.stdout.trim(), "200000");
    // Without -i there is no stdin: the command sees end of file at once.
    let out = c.kubectl_stdin(&["exec", "shell", "--", "cat"], "ignored\n").ok();
    assert_eq!(out.stdout, "");

    // Exit codes pass through, with stdout and stderr kept apart.
    let out = c.kubectl(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.starts_with("err\n"), "{}", out.stderr);
    assert!(out.stderr.contains("command terminated with exit code 7"), "{}", out.stderr);

    // -c picks the container; without it kubectl takes the first and says so.
    assert_eq!(c.kubectl(&["exec", "two", "-c", "b", "--", "sh", "-c", "echo $WHO"]).ok().stdout, "b\n");
    let out = c.kubectl(&["exec", "two", "--", "sh", "-c", "echo ${WHO:-a}"]).ok();
    assert_eq!(out.stdout, "a\n");
    assert!(out.stderr.contains("Defaulted container \"a\" out of: a, b"), "{}", out.stderr);
    let out = c.kubectl(&["exec", "two", "-c", "nope", "--", "true"]).fails();
    assert!(out.stderr.contains("container nope is not valid for pod two"), "{}", out.stderr);
}

#[test]
fn exec_of_a_missing_command_says_so() {
    let c = Cluster::start_sealed(&[]);
    apply(&c, &[sh_pod("shell", "sleep 3600", json!({}))]);
    wait_ready(&c, "shell", Duration::from_secs(20));
    // Upstream (containerd): `error: Internal error occurred: error executing command in
    // container: failed to exec in container: ... exec: "no-such-command": executable file not
    // found in $PATH: unknown`, exit code 1.
    let out = c.kubectl(&["exec", "shell", "--", "no-such-command", "arg"]).fails();
    assert!(out.stderr.contains("exec: \"no-such-command\": executable file not found in $PATH"), "{}", out.stderr);
    assert!(!out.stderr.contains("Upgrade request required"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // The pod is unharmed.
    assert_eq!(c.kubectl(&["exec", "shell", "--", "echo", "still"]).ok().stdout, "still\n");
}

#[test]
fn exec_with_a_terminal() {
    // `script` (util-linux) gives kubectl the terminal that `-t` needs.
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` on this host to give kubectl a terminal: skipped");
        return;
    }
    let c = Cluster::start_sealed(&[]);
    apply(&c, &[sh_pod("shell", "sleep 3600", json!({}))]);
    wait_ready(&c, "shell", Duration::from_secs(20));
    let kubectl = format!(
        "kubectl --kubeconfig {} --request-timeout=20s exec -it shell -- sh -c 'tty; echo TERM=$TERM; test -t 0 && echo stdin-is-a-tty'",
        c.kubeconfig().display()
    );
    let home = tempfile::tempdir().unwrap();
    let out = c
        .command("script")
        .args(["-qec", &kubectl, "/dev/null"])
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("TERM=xterm"), "{text}");
    assert!(text.contains("stdin-is-a-tty"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// 7. DNS policy and /etc/hosts
// ---------------------------------------------------------------------------------------------

/// What a pod with `dnsPolicy: Default` should see: the node's nameservers (at most three),
/// search domains and options.
fn node_resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let words = |key: &str| -> Vec<String> {
        host.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .flat_map(|rest| rest.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let mut search = words("search");
    search.extend(words("domain"));
    let servers: Vec<String> = words("nameserver").into_iter().take(3).collect();
    let options = words("options");
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[test]
fn dns_policy_dns_config_hostname_subdomain_and_host_aliases() {
    let c = Cluster::start_sealed(&[]);
    apply(
        &c,
        &[
            sh_pod("dns-default", "sleep 3600", json!({"dnsPolicy": "Default"})),
            sh_pod(
                "dns-none",
                "sleep 3600",
                json!({"dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["192.0.2.53", "192.0.2.54"],
                    "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            ),
            sh_pod(
                "dns-extra",
                "sleep 3600",
                json!({"dnsConfig": {"searches": ["extra.example"], "options": [{"name": "ndots", "value": "2"}]}}),
            ),
            sh_pod(
                "named",
                "sleep 3600",
                json!({"hostname": "web-0", "subdomain": "web",
                    "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["foo.local", "bar.local"]}]}),
            ),
        ],
    );
    for name in ["dns-default", "dns-none", "dns-extra", "named"] {
        wait_ready(&c, name, Duration::from_secs(20));
    }
    let cat = |pod: &str, file: &str| c.kubectl(&["exec", pod, "--", "cat", file]).ok().stdout;

    let node = node_resolv_conf();
    assert_eq!(cat("dns-default", "/etc/resolv.conf"), node, "the node's resolv.conf");
    assert!(!node.contains("10.96.0.10"));
    assert_eq!(
        cat("dns-none", "/etc/resolv.conf"),
        "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions ndots:2 edns0\n"
    );
    let extra = cat("dns-extra", "/etc/resolv.conf");
    assert!(extra.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"), "{extra}");
    assert!(extra.lines().next().unwrap().ends_with(" extra.example"), "{extra}");
    assert!(extra.contains("\nnameserver 10.96.0.10\n"), "{extra}");
    assert!(extra.ends_with("options ndots:2\n"), "dnsConfig options replace the same option: {extra}");

    let ip = get_pod(&c, "named")["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(c.kubectl(&["exec", "named", "--", "hostname"]).ok().stdout, "web-0\n");
    let hosts = cat("named", "/etc/hosts");
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains(&format!("\n{ip}\tweb-0.web.default.svc.cluster.local\tweb-0\n")), "{hosts}");
    assert!(hosts.contains("\n# Entries added by HostAliases.\n192.0.2.7\tfoo.local\tbar.local\n"), "{hosts}");
    let plain = cat("dns-default", "/etc/hosts");
    let ip = get_pod(&c, "dns-default")["status"]["podIP"].as_str().unwrap().to_string();
    assert!(plain.contains(&format!("\n{ip}\tdns-default\n")), "{plain}");
}

// ---------------------------------------------------------------------------------------------
// 8. Cleanup
// ---------------------------------------------------------------------------------------------

#[test]
fn thirty_pods_created_and_deleted_leave_nothing_behind() {
    let c = Cluster::start_sealed(&[]);
    let ns = netns(&c);
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    let pods: Vec<Value> = names.iter().map(|n| sh_pod(n, "exec sleep 3600", json!({}))).collect();
    apply(&c, &pods);
    wait_for("30 running pods", Duration::from_secs(45), || {
        let out = c.kubectl(&["get", "pods", "--no-headers"]).ok().stdout;
        let n = out.lines().filter(|l| l.split_whitespace().nth(2) == Some("Running")).count();
        if n == 30 { Ok(()) } else { Err(out) }
    });
    let veths = |c: &Cluster| {
        let out = c.command("ip").args(["-o", "link", "show", "master", "pier0"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(veths(&c).len(), 30, "one veth per pod on pier0");
    let sandboxes = pier_runtime::recorded_sandboxes(&c.data_dir.join("runtime")).unwrap();
    assert_eq!(sandboxes.len(), 30);
    // Every process of every pod (holders and containers), to look for survivors afterwards.
    let holder_ns: Vec<String> = sandboxes.iter().map(|s| format!("net:[{}]", s.holder.expect("a holder").1)).collect();
    let pod_processes: Vec<(u32, String)> = processes()
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|link| holder_ns.iter().any(|h| Path::new(h) == link))
        })
        .collect();
    assert!(pod_processes.len() >= 60, "a holder and a container per pod: {pod_processes:?}");

    c.kubectl(&["delete", "pods", "--all", "--timeout=40s"]).ok();
    let out = c.kubectl(&["get", "pods"]).ok();
    assert!(out.stderr.contains("No resources found"), "{}", out.stderr);
    wait_for("no sandbox left", Duration::from_secs(10), || {
        let (v, s) = (veths(&c), pier_runtime::recorded_sandboxes(&c.data_dir.join("runtime")).unwrap());
        if v.is_empty() && s.is_empty() { Ok(()) } else { Err(format!("veths {v:?}\nsandboxes {s:?}")) }
    });
    // Only the node's own links remain.
    let out = c.command("ip").args(["-o", "link"]).output().unwrap();
    let links: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
        .collect();
    let mut sorted = links.clone();
    sorted.sort();
    assert_eq!(sorted, ["eth0", "lo", "pier0"], "links left in {ns}: {links:?}");
    // Every address went back to the pool, and no process lives in a pod's namespace.
    let held = pier_runtime::recorded_addresses(&c.data_dir.join("runtime")).unwrap();
    assert_eq!(held, [], "addresses still held");
    // (Matched by pid and start time: namespace inode numbers are reused at once.)
    let now = processes();
    let survivors: Vec<String> = pod_processes
        .iter()
        .filter(|p| now.contains(p))
        .map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " "))
        .collect();
    assert!(survivors.is_empty(), "processes left in pod namespaces: {survivors:?}");
}
