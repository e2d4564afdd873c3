//! Pod tests on the real kernel: namespaces, veths, the overlay root, processes, logs, exec, IPAM.
//!
//! Safety: every test first creates its own sealed "node" network namespace (`ip netns add
//! pier-rt-test-*`, `lo` up, no default route, nothing bridged to the machine) and hands it to
//! the runtime as `node_netns`; the bridge, veths and pods all live in or below it. Test clients
//! connect from threads that have joined a pod's namespace. At the end the harness checks that
//! the machine's own namespace is unchanged (links, routes, `ip_forward`).
//!
//! `harness = false` because sandbox holders and the built-in images run the test binary itself
//! (`<this binary> __image <name>`), so `main` must dispatch that before anything else. Tests run
//! one after another; a positional argument filters them by substring. They need root and are
//! skipped (with a message) without it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pier_runtime::{
    Container, ContainerSpec, ExitStatus, LogOptions, Runtime, RuntimeConfig, RuntimeError, Sandbox, SandboxRequest,
    Signal, resolve_argv,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type TestFn = fn();

const TESTS: &[(&str, TestFn)] = &[
    ("pod_gets_an_ip_in_the_cidr_and_its_hostname", pod_gets_an_ip_in_the_cidr_and_its_hostname),
    ("two_pods_talk_over_tcp_to_builtin_images", two_pods_talk_over_tcp_to_builtin_images),
    ("files_are_private_to_their_pod", files_are_private_to_their_pod),
    ("resolv_conf_and_hosts_are_the_pods", resolv_conf_and_hosts_are_the_pods),
    ("env_vars_and_working_dir_arrive", env_vars_and_working_dir_arrive),
    ("logs_have_timestamps_and_keep_the_previous_instance", logs_have_timestamps_and_keep_the_previous_instance),
    ("exec_runs_in_the_pods_namespaces", exec_runs_in_the_pods_namespaces),
    ("stop_honours_grace_then_kills_the_group", stop_honours_grace_then_kills_the_group),
    ("ipam_survives_runtime_recreation", ipam_survives_runtime_recreation),
    ("bad_input_is_a_typed_error", bad_input_is_a_typed_error),
    ("kill_recorded_pods_ends_an_abandoned_nodes_pods", kill_recorded_pods_ends_an_abandoned_nodes_pods),
    ("pod_start_latency", pod_start_latency),
    ("remove_leaves_nothing_behind_after_1000_cycles", remove_leaves_nothing_behind_after_1000_cycles),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__image") {
        let name = args.get(2).cloned().unwrap_or_default();
        pier_runtime::run_builtin(&name, &args[3.min(args.len())..]);
    }
    let filters: Vec<&str> = args.iter().skip(1).filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let selected: Vec<&(&str, TestFn)> =
        TESTS.iter().filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f))).collect();
    if !nix::unistd::geteuid().is_root() {
        println!("pods: skipping {} tests: they need root (namespaces, veths, mounts)", selected.len());
        return ExitCode::SUCCESS;
    }
    let machine_before = MachineNet::snapshot();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(test);
        let ms = started.elapsed().as_millis();
        match outcome {
            Ok(()) => println!("test {name} ... ok ({ms} ms)"),
            Err(_) => {
                println!("test {name} ... FAILED ({ms} ms)");
                failed.push(*name);
            }
        }
    }
    let machine_after = MachineNet::snapshot();
    if machine_before != machine_after {
        println!("the machine's own network namespace changed!\nbefore: {machine_before:?}\nafter:  {machine_after:?}");
        failed.push("machine network namespace unchanged");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len().min(selected.len()),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures: {failed:?}");
        ExitCode::FAILURE
    }
}

/// What the machine's own network namespace looks like (read from the main thread, which never
/// leaves it): must be identical before and after the tests.
#[derive(Debug, PartialEq, Eq)]
struct MachineNet {
    links: BTreeSet<String>,
    routes: String,
    ip_forward: String,
    route_localnet: String,
}

impl MachineNet {
    fn snapshot() -> MachineNet {
        let links = fs::read_dir("/sys/class/net")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        MachineNet {
            links,
            routes: fs::read_to_string("/proc/net/route").unwrap_or_default(),
            ip_forward: fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
            route_localnet: fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").unwrap_or_default(),
        }
    }
}

fn block_on<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f);
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sealed node namespace with a runtime in it.
struct Node {
    netns: String,
    state: tempfile::TempDir,
    cidr: ipnet::Ipv4Net,
    rt: Option<Runtime>,
}

impl Node {
    fn new() -> Node {
        let netns = unique("pier-rt-test");
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let state = tempfile::tempdir().expect("state dir");
        let cidr: ipnet::Ipv4Net = "10.244.7.0/24".parse().expect("cidr");
        let mut node = Node { netns, state, cidr, rt: None };
        node.rt = Some(Runtime::new(node.config()).expect("runtime"));
        node
    }

    fn config(&self) -> RuntimeConfig {
        let mut cfg = RuntimeConfig::new(
            self.state.path().to_path_buf(),
            self.cidr,
            std::env::current_exe().expect("current exe"),
        );
        cfg.node_netns = Some(PathBuf::from(format!("/run/netns/{}", self.netns)));
        cfg
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime")
    }

    /// Drops the runtime and starts a new one on the same state (an agent restart).
    fn restart_runtime(&mut self) {
        drop(self.rt.take());
        self.rt = Some(Runtime::new(self.config()).expect("runtime after restart"));
    }

    fn request(&self, name: &str) -> SandboxRequest {
        SandboxRequest {
            uid: unique("uid"),
            namespace: "default".into(),
            name: name.into(),
            hostname: name.into(),
            resolv_conf: "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n".into(),
            hosts: format!("127.0.0.1\tlocalhost\n{}\t{name}\n", pier_runtime::POD_IP_PLACEHOLDER),
        }
    }

    async fn pod(&self, name: impl Into<String>) -> Sandbox {
        let name = name.into();
        self.rt().create_sandbox(self.request(&name)).await.expect("create sandbox")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Remove whatever a failed test left, on a thread of its own: Drop may run inside
            // the test's async runtime, which cannot be blocked on.
            let _ = std::thread::spawn(move || {
                if let Ok(tr) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    let _ = tr.block_on(rt.remove_all_sandboxes());
                }
            })
            .join();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn spec(name: &str, argv: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        working_dir: None,
        tty: false,
    }
}

fn sh(name: &str, script: &str) -> ContainerSpec {
    spec(name, &["sh", "-c", script])
}

async fn wait_bounded(rt: &Runtime, c: &Container) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(20), rt.wait(c)).await.expect("container exits in time")
}

async fn logs(rt: &Runtime, c: &Container, opts: LogOptions) -> String {
    let mut out = Vec::new();
    rt.read_logs(&c.sandbox_uid, &c.name, &opts, &mut out).await.expect("read logs");
    String::from_utf8(out).expect("utf-8 logs")
}

/// Runs a command through exec and collects its output.
async fn exec(rt: &Runtime, c: &Container, argv: &[&str]) -> (ExitStatus, String, String) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut p = rt.exec(c, &argv, &[], false).await.expect("exec");
    drop(p.stdin.take());
    let (mut out, mut err) = (p.stdout.take().expect("stdout"), p.stderr.take().expect("stderr"));
    let (mut o, mut e) = (String::new(), String::new());
    let read = async {
        let (a, b) = tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e));
        a.and(b)
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("exec output in time").expect("exec output");
    let status = tokio::time::timeout(Duration::from_secs(20), p.wait()).await.expect("exec exits");
    (status, o, e)
}

/// Runs `f` on a thread that has joined the network namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(netns).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// HTTP requests over one keep-alive connection, from inside `netns`, retrying the connect
/// while the server starts (bounded).
fn http_get(netns: &Path, addr: SocketAddr, requests: usize) -> Vec<String> {
    in_netns(netns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    #[allow(clippy::disallowed_methods)] // A test thread of its own, not a runtime worker.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect {addr}: {e}"),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut bodies = Vec::new();
        let mut buf = Vec::new();
        for i in 0..requests {
            let last = i + 1 == requests;
            let req = format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pier-test\r\n{}\r\n",
                if last { "Connection: close\r\n" } else { "" }
            );
            stream.write_all(req.as_bytes()).expect("send");
            // Read one response: head, then Content-Length bytes.
            let (head_end, len) = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    break (p + 4, len);
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).expect("read");
                assert!(n > 0, "connection closed early");
                buf.extend_from_slice(&chunk[..n]);
            };
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).expect("read body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            bodies.push(String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned());
            let status_line =
                String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)]).into_owned();
            assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
            buf.drain(..head_end + len);
        }
        bodies
    })
}

// ---------------------------------------------------------------------------------------------

fn pod_gets_an_ip_in_the_cidr_and_its_hostname() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let pod = node.pod("web-1").await;
        assert!(node.cidr.contains(&pod.ip), "{} in {}", pod.ip, node.cidr);
        assert_ne!(pod.ip, rt.gateway());
        assert_eq!(rt.gateway(), Ipv4Addr::new(10, 244, 7, 1));
        let c = rt
            .start_container(
                &pod,
                sh("main", "hostname; cat /etc/hostname; ip -4 -o addr show dev eth0; ip route; ip route get 1.1.1.1"),
            )
            .await
            .expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        let out = logs(rt, &c, LogOptions::default()).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "web-1", "{out}");
        assert_eq!(lines[1], "web-1", "{out}");
        assert!(out.contains(&format!("inet {}/24", pod.ip)), "{out}");
        assert!(out.contains("default via 10.244.7.1 dev eth0"), "{out}");
        assert!(out.contains("10.96.0.0/12 via 10.244.7.1 dev eth0"), "{out}");
        // The node side: the veth is a hairpin port of pier0, the bridge holds the gateway, and
        // nothing routes out of the node namespace.
        let port = ip(&["-n", &node.netns, "-d", "link", "show", "dev", &pod.veth]);
        assert!(port.contains("master pier0") && port.contains("hairpin on"), "{port}");
        let bridge = ip(&["-n", &node.netns, "-4", "-o", "addr", "show", "dev", "pier0"]);
        assert!(bridge.contains("10.244.7.1/24"), "{bridge}");
        let out =
            Command::new("ip").args(["-n", &node.netns, "route", "get", "1.1.1.1"]).output().expect("ip route get");
        assert!(!out.status.success(), "the node namespace must have no route out");
        // The sysctls went to the node's namespace (the machine's own is checked by main).
        for (key, want) in [("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/pier0/route_localnet", "1")] {
            let out = Command::new("ip")
                .args(["netns", "exec", &node.netns, "cat", &format!("/proc/sys/{key}")])
                .output()
                .expect("cat");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{key} in the node namespace");
        }
        rt.remove_sandbox(&pod.uid).await.expect("remove");
    });
}

fn two_pods_talk_over_tcp_to_builtin_images() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let (a, b, c, d) =
            tokio::join!(node.pod("kubia-a"), node.pod("client-b"), node.pod("httpd-c"), node.pod("nginx-d"));
        let argv = |image: &str| resolve_argv(image, &[], &[]).expect("builtin argv");
        let kubia = rt
            .start_container(&a, ContainerSpec { argv: argv("luksa/kubia:latest"), ..spec("kubia", &["x"]) })
            .await
            .expect("kubia");
        let httpd = rt
            .start_container(&c, ContainerSpec { argv: argv("httpd:2.4"), ..spec("httpd", &["x"]) })
            .await
            .expect("httpd");
        let nginx = rt
            .start_container(&d, ContainerSpec { argv: argv("docker.io/library/nginx"), ..spec("nginx", &["x"]) })
            .await
            .expect("nginx");
        let from_b = b.netns_path.clone();
        let bodies = tokio::task::spawn_blocking({
            let from_b = from_b.clone();
            move || http_get(&from_b, SocketAddr::from((a.ip, 8080)), 3)
        })
        .await
        .expect("client");
        assert_eq!(bodies, vec!["You've hit kubia-a\n"; 3], "keep-alive, three answers");
        let bodies = tokio::task::spawn_blocking({
            let from_b = from_b.clone();
            move || http_get(&from_b, SocketAddr::from((c.ip, 80)), 1)
        })
        .await
        .expect("client");
        assert_eq!(bodies, vec!["<html><body><h1>It works!</h1></body></html>\n"]);
        // The node (where the agent and its probes run) reaches pods too.
        let node_ns = PathBuf::from(format!("/run/netns/{}", node.netns));
        let bodies = tokio::task::spawn_blocking(move || http_get(&node_ns, SocketAddr::from((a.ip, 8080)), 1))
            .await
            .expect("client");
        assert_eq!(bodies, vec!["You've hit kubia-a\n"]);
        let bodies = tokio::task::spawn_blocking(move || http_get(&from_b, SocketAddr::from((d.ip, 80)), 2))
            .await
            .expect("client");
        assert!(bodies.iter().all(|b| b.contains("<title>Welcome to nginx!</title>") && b.len() == 615), "{bodies:?}");

        // SIGTERM ends a built-in server promptly and cleanly.
        for c in [&kubia, &httpd, &nginx] {
            let t = Instant::now();
            assert_eq!(rt.stop(c, Duration::from_secs(10)).await.expect("stop"), ExitStatus::Code(0), "{}", c.name);
            assert!(t.elapsed() < Duration::from_secs(2), "{} took {:?} to stop", c.name, t.elapsed());
        }
        let kubia_log = logs(rt, &kubia, LogOptions::default()).await;
        assert!(kubia_log.starts_with("Kubia server starting...\n"), "{kubia_log}");
        assert!(kubia_log.contains(&format!("Received request from ::ffff:{}", b.ip)), "{kubia_log}");
        let nginx_log = logs(rt, &nginx, LogOptions::default()).await;
        assert!(
            nginx_log.contains(&format!("{} - - [", b.ip))
                && nginx_log.contains("\"GET / HTTP/1.1\" 200 615 \"-\" \"pier-test\""),
            "{nginx_log}"
        );
        for uid in [&a.uid, &b.uid, &c.uid, &d.uid] {
            rt.remove_sandbox(uid).await.expect("remove");
        }
    });
}

fn files_are_private_to_their_pod() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let (a, b) = tokio::join!(node.pod("writer"), node.pod("reader"));
        let marker = format!("/root/{}", unique("pier-isolation"));
        let ca = rt.start_container(&a, spec("main", &["sleep", "60"])).await.expect("a");
        let cb = rt.start_container(&b, spec("main", &["sleep", "60"])).await.expect("b");
        let script = format!(
            "echo secret > {marker} && echo changed >> /etc/motd && mkdir -p /usr/share/pier-test && touch /tmp/pier-test"
        );
        assert_eq!(exec(rt, &ca, &["sh", "-c", &script]).await.0, ExitStatus::Code(0));
        let (status, out, _) = exec(rt, &ca, &["cat", &marker]).await;
        assert_eq!((status, out.as_str()), (ExitStatus::Code(0), "secret\n"), "the writer sees its file");
        for path in [marker.as_str(), "/usr/share/pier-test", "/tmp/pier-test"] {
            assert_eq!(
                exec(rt, &cb, &["test", "-e", path]).await.0,
                ExitStatus::Code(1),
                "{path} is invisible to another pod"
            );
            assert!(!Path::new(path).exists(), "{path} is invisible to the host");
        }
        assert!(
            !fs::read_to_string("/etc/motd").unwrap_or_default().contains("changed"),
            "the host's files are untouched"
        );
        // A host file shows through (the overlay's lower layer is the host's root).
        assert_eq!(exec(rt, &cb, &["test", "-x", "/bin/sh"]).await.0, ExitStatus::Code(0));
        rt.remove_sandbox(&a.uid).await.expect("remove a");
        rt.remove_sandbox(&b.uid).await.expect("remove b");
        assert!(!Path::new(&marker).exists());
        let _ = cb;
    });
}

fn resolv_conf_and_hosts_are_the_pods() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        let host_hosts = fs::read("/etc/hosts").unwrap_or_default();
        let req = node.request("dns-pod");
        let pod = rt.create_sandbox(req.clone()).await.expect("create");
        let c = rt
            .start_container(&pod, sh("main", "cat /etc/resolv.conf; echo ---; cat /etc/hosts"))
            .await
            .expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        let out = logs(rt, &c, LogOptions::default()).await;
        let expected_hosts = req.hosts.replace(pier_runtime::POD_IP_PLACEHOLDER, &pod.ip.to_string());
        assert_eq!(out, format!("{}---\n{}", req.resolv_conf, expected_hosts));
        assert!(expected_hosts.contains(&format!("{}\tdns-pod", pod.ip)));
        assert_eq!(
            fs::read("/etc/resolv.conf").unwrap_or_default(),
            host_resolv,
            "the host's resolv.conf is untouched"
        );
        assert_eq!(fs::read("/etc/hosts").unwrap_or_default(), host_hosts, "the host's hosts file is untouched");
        rt.remove_sandbox(&pod.uid).await.expect("remove");
    });
}

fn env_vars_and_working_dir_arrive() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let pod = node.pod("env-pod").await;
        let mut s = sh("main", "echo \"A=$A\"; echo \"B=$B\"; echo \"H=$HOSTNAME\"; echo \"P=$PATH\"; pwd");
        s.env = vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words; $(not expanded)".into()),
            ("A".into(), "override".into()),
        ];
        s.working_dir = Some("/srv/app".into());
        let c = rt.start_container(&pod, s).await.expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        let out = logs(rt, &c, LogOptions::default()).await;
        assert_eq!(
            out,
            "A=override\nB=two words; $(not expanded)\nH=env-pod\nP=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/srv/app\n"
        );
        // A program named relative to the working directory runs from there, and a program
        // found in PATH sees the name it was given as argv[0].
        let mut s = sh("mk", "printf '#!/bin/sh\\necho \"rel $0\"\\n' > run.sh && chmod +x run.sh");
        s.working_dir = Some("/srv/app".into());
        let c = rt.start_container(&pod, s).await.expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        let s = ContainerSpec {
            name: "rel".into(),
            argv: vec!["./run.sh".into()],
            env: vec![],
            working_dir: Some("/srv/app".into()),
            tty: false,
        };
        let c = rt.start_container(&pod, s).await.expect("start ./run.sh");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        assert_eq!(logs(rt, &c, LogOptions::default()).await, "rel ./run.sh\n");
        let c = rt.start_container(&pod, sh("argv0", "echo \"$0\"")).await.expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        assert_eq!(logs(rt, &c, LogOptions::default()).await, "sh\n");
        // A working directory is created inside the pod, even through an absolute symlink
        // (/var/run -> /run here): the host's /run is not touched.
        let wd = format!("/var/run/{}", unique("pier-wd"));
        let mut s = sh("wd", "pwd");
        s.working_dir = Some(wd.clone());
        let c = rt.start_container(&pod, s).await.expect("start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        assert_eq!(logs(rt, &c, LogOptions::default()).await, format!("{}\n", wd.replace("/var/run", "/run")));
        assert!(
            !Path::new(&wd).exists() && !Path::new(&wd.replace("/var/run", "/run")).exists(),
            "created on the host"
        );
        // A TTY container: both streams on the terminal, logged as stdout without the CRs.
        let mut t = sh("tty", "echo out; echo err >&2; tty; echo \"T=$TERM\"");
        t.tty = true;
        let c = rt.start_container(&pod, t).await.expect("tty start");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        let out = logs(rt, &c, LogOptions::default()).await;
        assert!(out.starts_with("out\nerr\n/dev/pts/") && out.ends_with("T=xterm\n"), "{out:?}");
        let raw = fs::read_to_string(&c.log_path).expect("raw log");
        assert!(raw.lines().all(|l| l.contains(" stdout F ")), "{raw}");
        rt.remove_sandbox(&pod.uid).await.expect("remove");
    });
}

fn logs_have_timestamps_and_keep_the_previous_instance() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let pod = node.pod("logger").await;
        let first = rt.start_container(&pod, sh("app", "echo out1; echo err1 >&2; exit 3")).await.expect("first");
        assert_eq!(wait_bounded(rt, &first).await, ExitStatus::Code(3));
        let raw = fs::read_to_string(&first.log_path).expect("raw log");
        let mut streams = BTreeSet::new();
        for line in raw.lines() {
            // <RFC3339Nano> <stream> F <content>
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert_eq!(parts[0].len(), 30, "{line}");
            assert!(
                parts[0].ends_with('Z') && parts[0].as_bytes()[10] == b'T' && parts[0].as_bytes()[19] == b'.',
                "{line}"
            );
            assert_eq!(parts[2], "F");
            streams.insert((parts[1].to_string(), parts[3].to_string()));
        }
        assert_eq!(
            streams,
            BTreeSet::from([("stderr".to_string(), "err1".to_string()), ("stdout".to_string(), "out1".to_string())])
        );
        let with_ts = logs(rt, &first, LogOptions { timestamps: true, ..Default::default() }).await;
        assert!(with_ts.lines().all(|l| l.len() > 31 && l.as_bytes()[30] == b' '), "{with_ts}");
        assert!(matches!(rt.log_path(&pod.uid, "app", true), Err(RuntimeError::PreviousNotFound { .. })));

        // A restart: a new instance with its own log; the first is now "previous".
        let second = rt.start_container(&pod, sh("app", "echo second")).await.expect("second");
        assert_eq!(second.instance, first.instance + 1);
        assert_eq!(wait_bounded(rt, &second).await, ExitStatus::Code(0));
        assert_eq!(logs(rt, &second, LogOptions::default()).await, "second\n");
        let mut prev = Vec::new();
        rt.read_logs(&pod.uid, "app", &LogOptions { previous: true, ..Default::default() }, &mut prev)
            .await
            .expect("previous");
        let prev = String::from_utf8(prev).expect("utf-8");
        assert!(prev.contains("out1\n") && prev.contains("err1\n"), "{prev}");

        // A third start prunes the first; previous is now the second.
        let third = rt
            .start_container(&pod, sh("app", "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done"))
            .await
            .expect("third");
        let mut followed = Vec::new();
        let follow = LogOptions { follow: true, ..Default::default() };
        tokio::time::timeout(Duration::from_secs(20), rt.read_logs(&pod.uid, "app", &follow, &mut followed))
            .await
            .expect("follow ends when the container exits")
            .expect("follow");
        assert_eq!(String::from_utf8(followed).expect("utf-8"), "line1\nline2\nline3\nline4\nline5\n");
        assert_eq!(rt.try_wait(&third), Some(ExitStatus::Code(0)));
        assert!(!first.log_path.exists(), "instances before the previous one are deleted");
        let mut prev = Vec::new();
        rt.read_logs(&pod.uid, "app", &LogOptions { previous: true, ..Default::default() }, &mut prev)
            .await
            .expect("previous");
        assert_eq!(prev, b"second\n");
        assert_eq!(logs(rt, &third, LogOptions { tail_lines: Some(2), ..Default::default() }).await, "line4\nline5\n");
        rt.remove_sandbox(&pod.uid).await.expect("remove");
        assert!(!third.log_path.exists(), "logs go with the sandbox");
    });
}

fn exec_runs_in_the_pods_namespaces() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let pod = node.pod("exec-pod").await;
        let mut s = spec("main", &["sleep", "60"]);
        s.env = vec![("GREETING".into(), "hello from the spec".into())];
        s.working_dir = Some("/var/tmp".into());
        let c = rt.start_container(&pod, s).await.expect("start");
        let (status, out, _) = exec(rt, &c, &["hostname"]).await;
        assert_eq!((status, out.as_str()), (ExitStatus::Code(0), "exec-pod\n"));
        let (_, out, _) = exec(rt, &c, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).await;
        assert!(out.contains(&format!("inet {}/24", pod.ip)), "{out}");
        let (_, out, _) = exec(rt, &c, &["sh", "-c", "echo \"$GREETING\"; pwd"]).await;
        assert_eq!(out, "hello from the spec\n/var/tmp\n", "exec inherits the container's env and working dir");
        let (status, out, err) = exec(rt, &c, &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]).await;
        assert_eq!((status, out.as_str(), err.as_str()), (ExitStatus::Code(7), "to-out\n", "to-err\n"));
        // stdin reaches the process; dropping it is end of file.
        let mut p = rt.exec(&c, &["cat".to_string()], &[], false).await.expect("exec cat");
        let mut stdin = p.stdin.take().expect("stdin");
        stdin.write_all(b"through stdin\n").await.expect("write");
        drop(stdin);
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), p.stdout.take().expect("stdout").read_to_string(&mut out))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(out, "through stdin\n");
        assert_eq!(p.wait().await, ExitStatus::Code(0));
        // With a TTY.
        let mut p = rt
            .exec(&c, &["sh".to_string(), "-c".to_string(), "tty; stty size; echo $TERM".to_string()], &[], true)
            .await
            .expect("exec tty");
        assert!(p.stderr.is_none());
        p.resize(40, 120).expect("resize");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), p.stdout.take().expect("stdout").read_to_string(&mut out))
            .await
            .expect("in time")
            .expect("read");
        assert!(out.starts_with("/dev/pts/") && out.contains("40 120\r\n") && out.ends_with("xterm\r\n"), "{out:?}");
        assert_eq!(p.wait().await, ExitStatus::Code(0));
        // A missing program is its own error.
        let err = rt.exec(&c, &["no-such-program".to_string()], &[], false).await.expect_err("missing");
        assert!(matches!(err, RuntimeError::ExecutableNotFound { .. }), "{err}");
        assert_eq!(err.to_string(), "exec: \"no-such-program\": executable file not found in $PATH");
        rt.stop(&c, Duration::from_secs(5)).await.expect("stop");
        let err = rt.exec(&c, &["true".to_string()], &[], false).await.expect_err("not running");
        assert!(matches!(err, RuntimeError::ContainerNotRunning { .. }), "{err}");
        rt.remove_sandbox(&pod.uid).await.expect("remove");
    });
}

fn stop_honours_grace_then_kills_the_group() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let pod = node.pod("stopper").await;
        let holder = pod.holder_pid;
        // Ignores SIGTERM: killed once the grace period is over.
        let stubborn =
            rt.start_container(&pod, sh("stubborn", "trap '' TERM; sleep 60 & sleep 60")).await.expect("start");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let status = rt.stop(&stubborn, Duration::from_millis(700)).await.expect("stop");
        let took = t.elapsed();
        assert_eq!(status, ExitStatus::Signal(9));
        assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "took {took:?}");
        // Obeys SIGTERM: stops at once.
        let polite = rt.start_container(&pod, spec("polite", &["sleep", "60"])).await.expect("start");
        let t = Instant::now();
        assert_eq!(rt.stop(&polite, Duration::from_secs(30)).await.expect("stop"), ExitStatus::Signal(15));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(matches!(rt.signal(&polite, Signal::SIGTERM), Err(RuntimeError::ContainerNotRunning { .. })));
        // A container whose main process exits takes its background children with it.
        let parent = rt.start_container(&pod, sh("parent", "sleep 60 & sleep 60 & exit 0")).await.expect("start");
        assert_eq!(wait_bounded(rt, &parent).await, ExitStatus::Code(0));
        let mnt = fs::metadata(format!("/proc/{holder}/ns/mnt"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("ns");
        let mut left = Vec::new();
        for _ in 0..50 {
            left = pids_in_mnt_ns(mnt).into_iter().filter(|p| *p != holder).collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(left.is_empty(), "processes left in the pod: {left:?}");
        // signal() reaches a running container.
        let target = rt.start_container(&pod, spec("target", &["sleep", "60"])).await.expect("start");
        rt.signal(&target, Signal::SIGUSR1).expect("signal");
        assert_eq!(wait_bounded(rt, &target).await, ExitStatus::Signal(Signal::SIGUSR1 as i32));
        rt.remove_sandbox(&pod.uid).await.expect("remove");
    });
}

fn pids_in_mnt_ns(ino: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino() == ino).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default()
}

fn ipam_survives_runtime_recreation() {
    block_on(async {
        let mut node = Node::new();
        let mut pods = Vec::new();
        for i in 0..3 {
            pods.push(node.pod(&format!("keep-{i}")).await);
        }
        let c = node.rt().start_container(&pods[0], spec("main", &["sleep", "60"])).await.expect("start");
        let held: BTreeSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
        assert_eq!(held.len(), 3, "distinct addresses");
        node.restart_runtime();
        let rt = node.rt();
        let listed = rt.list_sandboxes();
        assert_eq!(listed.len(), 3);
        for s in &listed {
            assert!(s.ready, "{} survives the restart", s.sandbox.uid);
            let before = pods.iter().find(|p| p.uid == s.sandbox.uid).expect("same sandbox");
            assert_eq!((s.sandbox.ip, s.sandbox.holder_pid), (before.ip, before.holder_pid));
        }
        // The previous runtime's container is gone: nobody could supervise it.
        let mut gone = false;
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{}/ns", c.pid)).exists() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "orphaned container {} was killed", c.pid);
        // New pods never get a held address, and the survivors still work.
        for i in 0..5 {
            let p = node.pod(&format!("new-{i}")).await;
            assert!(!held.contains(&p.ip), "{} is still held", p.ip);
            pods.push(p);
        }
        assert_eq!(rt.ip_allocations().expect("allocations").len(), 8);
        // A sandbox whose holder died (as after a reboot) is reported, refused, and removable.
        let dead = pods.pop().expect("a pod");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(dead.holder_pid), Signal::SIGKILL).expect("kill holder");
        for _ in 0..100 {
            if rt.sandbox(&dead.uid).is_some_and(|s| !s.ready) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rt.sandbox(&dead.uid).map(|s| s.ready), Some(false));
        let err = rt.start_container(&dead, spec("main", &["true"])).await.expect_err("not ready");
        assert!(matches!(err, RuntimeError::SandboxNotReady { .. }), "{err}");
        rt.remove_sandbox(&dead.uid).await.expect("remove a dead sandbox");
        assert_eq!(rt.ip_allocations().expect("allocations").len(), 7);
        let c = rt.start_container(&pods[1], sh("main", "hostname")).await.expect("start after restart");
        assert_eq!(wait_bounded(rt, &c).await, ExitStatus::Code(0));
        assert_eq!(logs(rt, &c, LogOptions::default()).await, "keep-1\n");
        for p in &pods {
            rt.remove_sandbox(&p.uid).await.expect("remove");
        }
        assert!(rt.ip_allocations().expect("allocations").is_empty());
        assert!(rt.list_sandboxes().is_empty());
    });
}

fn bad_input_is_a_typed_error() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let mut req = node.request("ok");
        req.uid = "../../etc".into();
        assert!(matches!(rt.create_sandbox(req).await, Err(RuntimeError::InvalidRequest(_))));
        let mut req = node.request("ok");
        req.hostname = "h".repeat(65);
        assert!(matches!(rt.create_sandbox(req).await, Err(RuntimeError::InvalidRequest(_))));
        let req = node.request("dup");
        let pod = rt.create_sandbox(req.clone()).await.expect("create");
        assert!(matches!(rt.create_sandbox(req).await, Err(RuntimeError::SandboxExists { .. })));
        assert!(matches!(rt.start_container(&pod, spec("main", &[])).await, Err(RuntimeError::InvalidRequest(_))));
        assert!(matches!(
            rt.start_container(&pod, spec("Bad/Name", &["true"])).await,
            Err(RuntimeError::InvalidRequest(_))
        ));
        let err = rt.start_container(&pod, spec("main", &["/no/such/binary"])).await.expect_err("missing binary");
        assert_eq!(err.to_string(), "exec: \"/no/such/binary\": executable file not found in $PATH");
        let mut rel = spec("main", &["true"]);
        rel.working_dir = Some("relative".into());
        assert!(matches!(rt.start_container(&pod, rel).await, Err(RuntimeError::InvalidRequest(_))));
        let running = rt.start_container(&pod, spec("main", &["sleep", "60"])).await.expect("start");
        assert!(matches!(
            rt.start_container(&pod, spec("main", &["true"])).await,
            Err(RuntimeError::ContainerRunning { .. })
        ));
        assert!(matches!(rt.log_path(&pod.uid, "nope", false), Err(RuntimeError::ContainerNotFound { .. })));
        assert!(matches!(rt.log_path(&pod.uid, "../main", false), Err(RuntimeError::ContainerNotFound { .. })));
        assert!(matches!(rt.log_path("unknown", "main", false), Err(RuntimeError::SandboxNotFound { .. })));
        rt.remove_sandbox(&pod.uid).await.expect("remove");
        rt.remove_sandbox(&pod.uid).await.expect("removing twice is fine");
        rt.remove_sandbox("never-existed").await.expect("removing an unknown uid is fine");
        assert!(matches!(
            rt.start_container(&pod, spec("main", &["true"])).await,
            Err(RuntimeError::SandboxNotFound { .. })
        ));
        assert!(rt.try_wait(&running).is_some(), "removal killed the container");
        // A second runtime on the same state directory is refused.
        assert!(matches!(Runtime::new(node.config()), Err(RuntimeError::StateDirLocked { .. })));
        let mut cfg = node.config();
        cfg.self_exe = PathBuf::from("/no/such/pier");
        assert!(matches!(Runtime::new(cfg), Err(RuntimeError::InvalidConfig(_))));
        // A self_exe that is not pier: the holder never answers "ok"; nothing is left behind.
        let other_state = tempfile::tempdir().expect("tempdir");
        let mut cfg = node.config();
        cfg.state_dir = other_state.path().to_path_buf();
        cfg.self_exe = PathBuf::from("/bin/true");
        let broken = Runtime::new(cfg).expect("runtime");
        let err = broken.create_sandbox(node.request("never")).await.expect_err("no holder");
        assert!(matches!(err, RuntimeError::SandboxSetup(_)), "{err}");
        assert!(broken.ip_allocations().expect("allocations").is_empty());
        assert!(broken.list_sandboxes().is_empty());
        assert!(fs::read_dir(other_state.path().join("logs")).expect("logs").next().is_none());
        assert!(pier_runtime::recorded_sandboxes(other_state.path()).expect("records").is_empty());
    });
}

/// Pods outlive their runtime; `kill_recorded_pods` (`pier node kill-pods`) ends them once the
/// runtime is gone for good, and only them.
fn kill_recorded_pods_ends_an_abandoned_nodes_pods() {
    let mut node = Node::new();
    let (pod, c) = block_on_value(async {
        let pod = node.pod("abandoned").await;
        let c = node.rt().start_container(&pod, spec("main", &["sleep", "60"])).await.expect("start");
        (pod, c)
    });
    let state = node.state.path().to_path_buf();
    let err = pier_runtime::kill_recorded_pods(&state).expect_err("the runtime holds the directory");
    assert!(matches!(err, RuntimeError::StateDirLocked { .. }), "{err}");
    assert!(Path::new(&format!("/proc/{}", c.pid)).exists(), "nothing was killed meanwhile");
    // The agent goes away for good; its pods stay up until killed.
    drop(node.rt.take());
    assert!(Path::new(&format!("/proc/{}", pod.holder_pid)).exists());
    let (killed, left) = pier_runtime::kill_recorded_pods(&state).expect("kill");
    assert_eq!((killed, left), (2, 0), "the holder and the container");
    // (The holder is this process's child, a zombie now: its namespaces are gone.)
    assert!(fs::metadata(format!("/proc/{}/ns/net", pod.holder_pid)).is_err(), "the holder is gone");
    // The records now name nobody alive: a second run (as after a reboot) touches nothing.
    assert_eq!(pier_runtime::kill_recorded_pods(&state).expect("again"), (0, 0));
    assert_eq!(pier_runtime::recorded_sandboxes(&state).expect("records").len(), 1);
}

fn block_on_value<T, F: std::future::Future<Output = T>>(f: F) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn pod_start_latency() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let mut samples = Vec::new();
        let mut pods = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            let pod = node.pod(&format!("fast-{i}")).await;
            let sandbox_done = t.elapsed();
            let c = rt.start_container(&pod, spec("main", &["sleep", "60"])).await.expect("start");
            samples.push((t.elapsed(), sandbox_done));
            pods.push((pod, c));
        }
        let mut total: Vec<Duration> = samples.iter().map(|s| s.0).collect();
        let mut sandbox: Vec<Duration> = samples.iter().map(|s| s.1).collect();
        total.sort();
        sandbox.sort();
        println!(
            "    pod start (create_sandbox + start_container), 20 pods: p50 {:?}, p90 {:?}, max {:?}; create_sandbox alone p50 {:?}",
            total[total.len() / 2],
            total[total.len() * 9 / 10],
            total[total.len() - 1],
            sandbox[sandbox.len() / 2]
        );
        let status = fs::read_to_string(format!("/proc/{}/status", pods[0].0.holder_pid)).unwrap_or_default();
        let field = |k: &str| {
            status.lines().find(|l| l.starts_with(k)).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        };
        println!(
            "    sandbox holder memory: VmRSS {} kB, RssAnon {} kB",
            field("VmRSS:").unwrap_or_default(),
            field("RssAnon:").unwrap_or_default()
        );
        let t = Instant::now();
        for (pod, _) in &pods {
            rt.remove_sandbox(&pod.uid).await.expect("remove");
        }
        println!("    remove_sandbox (with a running container): {:?} per pod", t.elapsed() / pods.len() as u32);
    });
}

/// Everything a pod could leak, counted.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    host_mounts: usize,
    /// Processes still inside a namespace of one of the test's pods. Counted by the pods' own
    /// namespace inodes, not machine-wide, so other work on the machine cannot disturb it.
    in_pod_namespaces: usize,
    node_links: usize,
    bridge_ports: usize,
    ipam_entries: usize,
    state_files: usize,
    log_files: usize,
    children: usize,
    open_fds: usize,
}

/// The network and mount namespace inodes of a pod (its holder's).
fn pod_namespaces(pod: &Sandbox) -> [u64; 2] {
    use std::os::unix::fs::MetadataExt;
    let ino = |kind: &str| fs::metadata(format!("/proc/{}/ns/{kind}", pod.holder_pid)).expect("holder ns").ino();
    [ino("net"), ino("mnt")]
}

fn footprint(node: &Node, pod_ns: &BTreeSet<u64>) -> Footprint {
    use std::os::unix::fs::MetadataExt;
    let mut in_pods = 0;
    let me = std::process::id().to_string();
    let mut children = 0;
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let inside = ["net", "mnt"]
            .iter()
            .any(|k| fs::metadata(format!("/proc/{pid}/ns/{k}")).is_ok_and(|m| pod_ns.contains(&m.ino())));
        if inside {
            in_pods += 1;
        }
        // Children of this process, zombies included.
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
            && rest.split_whitespace().nth(1) == Some(me.as_str())
        {
            children += 1;
        }
    }
    let count = |p: &Path| fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    Footprint {
        host_mounts: fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().count(),
        in_pod_namespaces: in_pods,
        node_links: ip(&["-n", &node.netns, "-o", "link", "show"]).lines().count(),
        bridge_ports: ip(&["-n", &node.netns, "-o", "link", "show", "master", "pier0"]).lines().count(),
        ipam_entries: node.rt().ip_allocations().expect("allocations").len(),
        state_files: count(node.state.path()),
        log_files: count(&node.state.path().join("logs")),
        children,
        open_fds: count(Path::new("/proc/self/fd")),
    }
}

fn remove_leaves_nothing_behind_after_1000_cycles() {
    block_on(async {
        let node = Node::new();
        let rt = node.rt();
        let mut pod_ns = BTreeSet::new();
        let before = footprint(&node, &pod_ns);
        let started = Instant::now();
        // 100 rounds of 10 concurrent pods (the 1,000 creations and deletions), each with
        // a running container and an exec session.
        for round in 0..100 {
            let mut pods = Vec::new();
            let creates = (0..10).map(|i| node.pod(format!("cycle-{round}-{i}")));
            for pod in futures_join_all(creates).await {
                pod_ns.extend(pod_namespaces(&pod));
                let c = rt.start_container(&pod, sh("main", "sleep 60 & exec sleep 60")).await.expect("start");
                pods.push((pod, c));
            }
            let (pod0, c0) = &pods[0];
            let mut session = rt.exec(c0, &["sleep".to_string(), "60".to_string()], &[], false).await.expect("exec");
            let (_, out, _) = exec(rt, c0, &["hostname"]).await;
            assert_eq!(out.trim(), pod0.hostname);
            let removes = pods.iter().map(|(p, _)| rt.remove_sandbox(&p.uid));
            for r in futures_join_all(removes).await {
                r.expect("remove");
            }
            assert!(
                tokio::time::timeout(Duration::from_secs(5), session.wait()).await.is_ok(),
                "the exec session died with its pod"
            );
            for (_, c) in &pods {
                assert!(tokio::time::timeout(Duration::from_secs(5), rt.wait(c)).await.is_ok());
            }
        }
        println!("    1000 create+start+remove cycles (10 at a time): {:?}", started.elapsed());
        // Reaping is asynchronous: give it a bounded moment.
        let mut after = footprint(&node, &pod_ns);
        for _ in 0..100 {
            if after == before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = footprint(&node, &pod_ns);
        }
        assert_eq!(after, before, "something leaked");
    });
}

/// `join_all` without the futures crate: polls the futures concurrently on this task.
async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, h) in handles.iter_mut().enumerate() {
            if let Some(f) = h {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *h = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().flatten().collect()
}
