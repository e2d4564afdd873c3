//! `cargo xtask bench dataplane`: the Service data path of pier's two back ends, measured with
//! real traffic against their peers, side by side in one run (issue 4):
//!
//! 1. **first-packet latency** (nftables mode): TCP connect time from a client pod to a
//!    ClusterIP with `--services` Services programmed against the same with `--small`;
//! 2. **nftables mode against the kernel's own path**: pod → ClusterIP against pod → pod direct,
//!    bulk throughput (iperf3, one stream) and new connections per second (wrk,
//!    `Connection: close`, against nginx);
//! 3. **userspace mode against HAProxy 2.6** (`mode tcp`, `nbthread 1`, on the same CPU as
//!    pier's proxy thread, both in the node namespace): bulk throughput, new connections per
//!    second, and the p99 latency each adds at half of HAProxy's maximum connection rate.
//!
//! Each mode gets its own mini cluster, built as in `dataplane-feasibility.md` section 2 and
//! deleted afterwards: a node namespace with bridge `cni0` (10.244.0.1/24) and
//! `ip_forward=1`, a client pod (10.244.0.11) and a server pod (10.244.0.12, nginx with one
//! worker and no access log, iperf3 servers), veths born inside the namespaces, hairpin on,
//! pods routing only the service range (10.96.0.0/12) through the node, no default route
//! anywhere (checked before anything starts). Nothing is added to the machine's own namespace
//! and no packet is sent from it: readiness is read with `ss`, and every client runs in the
//! client pod (tools through `ip netns exec`, Rust clients on threads that `setns` into it).
//!
//! Services are programmed by pier's own code: `Nftables::full_sync` on a thread inside the
//! node namespace, and `Userspace::full_sync` on a current-thread Tokio runtime whose thread
//! entered the node namespace and is pinned to the proxy CPU (the node routes the service
//! range to `lo`, as pier does in userspace mode).
//!
//! Pinning: pier's proxy thread and HAProxy share the first CPU this process may use; nginx,
//! the iperf3 servers and every client (iperf3 -c, `wrk -t1 -c50`, the Rust clients) share
//! the second, so the proxy under test has a core to itself apart from whatever else runs on
//! the machine. The proxies' CPU time and both CPUs' load are recorded with every sample, and
//! the report adds each proxy's rate per CPU-second it used, which such neighbours do not skew.
//!
//! wrk2 is not in Debian, so the latency goal uses an open-loop Rust client (see [`paced`]): a
//! new connection and one request at a fixed rate, half of HAProxy's measured maximum, for
//! the direct path, pier and HAProxy; "added p99" is a proxy's p99 minus the direct path's.
//! HAProxy runs its stock `mode tcp` forwarding (no `option splice-auto`), the configuration
//! of the peer baselines.
//!
//! Each direct/proxied pair uses its own backend port, and conntrack in the node namespace is
//! flushed before every measurement: otherwise flows left by one phase share reply tuples
//! with the next and it measures SYN retransmits (the gotcha in `dataplane-feasibility.md`).
//!
//! Namespaces are named `pier-bench-dp-<pid>-…`. They and every process started in them are
//! removed on success, error, panic and Ctrl-C/SIGTERM (which only set a flag that every wait
//! checks); a run that was SIGKILLed is cleaned up by the next one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pier_proxy::DataPlane;
use pier_proxy::nft::Nftables;
use pier_proxy::table::{Backend, NodeContext, Protocol, ServiceKey, ServicePort};
use pier_proxy::userspace::Userspace;

use crate::DataplaneArgs;
use crate::report::{machine, revision};

/// Set by Ctrl-C or SIGTERM; every wait and loop checks it, so cleanup starts within moments.
static STOP: AtomicBool = AtomicBool::new(false);
/// `--nice`, for every process and thread of the measurement (set once at start).
static NICE: AtomicI32 = AtomicI32::new(0);

/// Namespaces and the scratch directory of this benchmark start with this, then the pid.
const PREFIX: &str = "pier-bench-dp-";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);
const SERVICE_RANGE: &str = "10.96.0.0/12";
/// Measured by the first-packet rounds (nftables mode).
const VIP_FIRST: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// pier's Service for throughput and connection rate, in both modes.
const VIP_PIER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// HAProxy's frontend (userspace cluster only).
const VIP_HAPROXY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const HTTP_PORT: u16 = 80;
const IPERF_PORT: u16 = 5201;

/// Backend ports in the server pod: one per path, so no two paths share a conntrack reply
/// tuple or a server-side TIME_WAIT.
const NGINX_DIRECT: u16 = 8081;
const NGINX_NFT: u16 = 8082;
const NGINX_PIER: u16 = 8083;
const NGINX_HAPROXY: u16 = 8084;
const NGINX_FIRST: u16 = 8085;
const NGINX_PORTS: [u16; 5] = [NGINX_DIRECT, NGINX_NFT, NGINX_PIER, NGINX_HAPROXY, NGINX_FIRST];
const IPERF_DIRECT: u16 = 5201;
const IPERF_NFT: u16 = 5202;
const IPERF_PIER: u16 = 5203;
const IPERF_HAPROXY: u16 = 5204;
const IPERF_PORTS: [u16; 4] = [IPERF_DIRECT, IPERF_NFT, IPERF_PIER, IPERF_HAPROXY];

/// Response body size, as in the peer baselines (`peer-baselines.md`, "Service data path").
const BODY_BYTES: usize = 1024;
/// wrk's concurrent connections (one thread).
const WRK_CONNECTIONS: u32 = 50;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on one request of the rate-limited client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests the rate-limited client keeps in flight at most; beyond that it counts the
/// request as not sent instead of growing without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// First-packet connects thrown away per round (ARP, caches, the first conntrack entries).
const WARMUP_CONNECTS: usize = 100;
/// How long servers and proxies get to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Rounds of "list the processes in a namespace, SIGKILL them, pause" when cleaning up.
const KILL_ROUNDS: usize = 50;

const TOOLS: [(&str, &str); 12] = [
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("nstat", "iproute2"),
    ("taskset", "util-linux"),
    ("renice", "bsdutils"),
    ("sysctl", "procps"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("iperf3", "iperf3"),
    ("wrk", "wrk"),
    ("nginx", "nginx-light"),
    ("haproxy", "haproxy"),
];

fn stopped() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// The driver is plain blocking code on threads of its own (no async runtime to starve), so
/// short sleeps between polls are what it should do.
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Ctrl-C and SIGTERM only set [`STOP`]: the run then unwinds through the destructors that
/// stop the servers and delete the namespaces. Children run in their own process groups, so
/// the terminal's Ctrl-C reaches only this process.
fn watch_signals() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let (mut int, mut term) = {
        let _enter = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            STOP.store(true, Ordering::Relaxed);
            eprintln!("xtask: interrupted; stopping the servers and deleting the namespaces");
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(tool).is_file())
}

fn check_tools() -> Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS.iter().copied().filter(|(t, _)| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    bail!(
        "missing tools: {} (install with: apt-get install -y {}; policy-rc.d keeps the services from starting, \
         the benchmark starts its own instances)",
        missing.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
        packages.join(" ")
    )
}

/// Where things run. pier's proxy thread and HAProxy share `proxy`; nginx, the iperf3
/// servers and every load generator share `work`, so the proxy under test has a core to
/// itself and both contenders get the same one.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    proxy: usize,
    work: usize,
}

fn cpus() -> Result<Cpus> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|c| set.is_set(*c).unwrap_or(false)).collect();
    let proxy = *allowed.first().context("no CPU is allowed")?;
    Ok(Cpus { proxy, work: allowed.get(1).copied().unwrap_or(proxy) })
}

/// Moves the calling thread into namespace `ns` (and onto `cpu`): sockets it opens and
/// processes it starts from then on live there.
fn enter(ns: &str, cpu: Option<usize>) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu).context("CPU set")?;
        sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")?;
        let nice = NICE.load(Ordering::Relaxed);
        if nice != 0 {
            // renice of a thread id changes that thread only (Linux), as `nice` does for the
            // tools: every measured party gets the same weight.
            let tid = nix::unistd::gettid().to_string();
            sh("renice", &["-n", &nice.to_string(), "-p", &tid])?;
        }
    }
    Ok(())
}

/// `taskset` arguments that pin to `cpu` (and apply `--nice`) before the command that follows.
fn pinned(cpu: usize) -> Vec<String> {
    let mut v = vec!["-c".to_string(), cpu.to_string()];
    let nice = NICE.load(Ordering::Relaxed);
    if nice != 0 {
        v.extend(["nice".to_string(), "-n".to_string(), nice.to_string()]);
    }
    v
}

/// Runs `f` on a fresh thread inside namespace `ns`, optionally pinned to `cpu`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns, cpu)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("benchmark thread panicked"))?
}

fn cmd_output(program: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))
}

/// Runs a set-up command, failing with its stderr.
fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = cmd_output(program, args)?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    sh("ip", args)
}

/// SIGKILLs every process in namespace `ns` (ours: the namespace was created by this
/// benchmark) and deletes it. Returns how many processes were killed.
fn kill_and_delete(ns: &str) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let out = cmd_output("ip", &["netns", "pids", ns]).map(|o| o.stdout).unwrap_or_default();
        let pids: Vec<i32> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| u32::try_from(*p).is_ok_and(|p| p != me))
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        pause(POLL);
    }
    let _ = cmd_output("ip", &["netns", "del", ns]);
    killed
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name this benchmark gave (`pier-bench-dp-<pid>…`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    (tail.is_empty() || tail.starts_with('-')).then_some(())?;
    digits.parse().ok()
}

/// Removes the namespaces and scratch directories of earlier runs whose process is gone.
fn remove_stale() {
    let me = std::process::id();
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| pid != me && !pid_alive(pid));
    let list = cmd_output("ip", &["netns", "list"]).map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&list).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        if stale(name) {
            let killed = kill_and_delete(name);
            eprintln!("xtask: removed namespace {name} left by an earlier run ({killed} processes)");
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if stale(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
            eprintln!("xtask: removed {} left by an earlier run", entry.path().display());
        }
    }
}

/// Config files, logs and tool output of this run; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process started in one of the cluster's namespaces.
struct Spawned {
    what: String,
    child: Child,
    log: PathBuf,
}

/// One mini cluster (node, client pod, server pod) and the processes started in it; all of
/// it goes away on drop.
struct Cluster {
    node: String,
    client: String,
    server: String,
    /// Namespaces that exist, for the destructor.
    created: Vec<String>,
    children: Vec<Spawned>,
    cpus: Cpus,
    scratch: PathBuf,
    conntrack_warned: bool,
}

impl Cluster {
    /// Builds the topology. `local_services` routes the service range to `lo` in the node
    /// (userspace mode); otherwise it is left to nftables' DNAT.
    fn create(tag: &str, local_services: bool, cpus: Cpus, scratch: &Path) -> Result<Cluster> {
        let base = format!("{PREFIX}{}-{tag}", std::process::id());
        let mut c = Cluster {
            node: format!("{base}-node"),
            client: format!("{base}-client"),
            server: format!("{base}-server"),
            created: Vec::new(),
            children: Vec::new(),
            cpus,
            scratch: scratch.to_path_buf(),
            conntrack_warned: false,
        };
        for ns in [c.node.clone(), c.client.clone(), c.server.clone()] {
            ip(&["netns", "add", &ns]).context("creating a network namespace (this benchmark needs root)")?;
            c.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let node = c.node.clone();
        let gw = format!("{NODE_IP}/24");
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"])?;
        ip(&["-n", &node, "addr", "add", &gw, "dev", "cni0"])?;
        ip(&["-n", &node, "link", "set", "cni0", "up"])?;
        for (i, (pod, addr)) in [(c.client.clone(), CLIENT_IP), (c.server.clone(), SERVER_IP)].iter().enumerate() {
            let veth = format!("veth{}", i + 1);
            // Both ends are born inside namespaces: nothing ever appears in the machine's own.
            ip(&["-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", pod])?;
            ip(&["-n", &node, "link", "set", &veth, "master", "cni0"])?;
            ip(&["-n", &node, "link", "set", &veth, "type", "bridge_slave", "hairpin", "on"])?;
            ip(&["-n", &node, "link", "set", &veth, "up"])?;
            ip(&["-n", pod, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", pod, "link", "set", "eth0", "up"])?;
            ip(&["-n", pod, "route", "add", SERVICE_RANGE, "via", &NODE_IP.to_string(), "dev", "eth0"])?;
        }
        // Same-bridge ClusterIP traffic needs br_netfilter (the default in a new namespace,
        // set anyway): without it replies are bridged straight back and never un-DNATed.
        sh(
            "ip",
            &["netns", "exec", &node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"],
        )?;
        // Connect-per-request phases open ~10^5 connections; the whole port range keeps the
        // client (and the proxies' backend legs) from running out.
        for ns in [&c.client, &c.node] {
            sh("ip", &["netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])?;
        }
        if local_services {
            ip(&["-n", &node, "route", "add", "local", SERVICE_RANGE, "dev", "lo"])?;
        }
        c.check_sealed()?;
        Ok(c)
    }

    /// No namespace has a default route or any route out (a route lookup sends nothing).
    fn check_sealed(&self) -> Result<()> {
        for ns in &self.created {
            for family in ["-4", "-6"] {
                let out = cmd_output("ip", &["-n", ns, family, "route", "show", "default"])?;
                ensure!(out.stdout.trim_ascii().is_empty(), "namespace {ns} has a default route");
            }
            let out = cmd_output("ip", &["-n", ns, "route", "get", "192.0.2.1"])?;
            ensure!(!out.status.success(), "namespace {ns} has a route to 192.0.2.1 (TEST-NET-1)");
        }
        Ok(())
    }

    /// Starts `argv` in namespace `ns` pinned to `cpu`, in its own process group.
    fn spawn(&mut self, what: &str, ns: &str, cpu: usize, argv: &[String]) -> Result<u32> {
        let log = self.scratch.join(format!("{}.log", what.replace(' ', "-")));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("taskset")
            .args(pinned(cpu))
            .args(["ip", "netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let pid = child.id();
        self.children.push(Spawned { what: what.to_string(), child, log });
        Ok(pid)
    }

    /// Waits until every `(address or any, port)` listens in `ns`, failing early if a
    /// started process died (with the end of its log).
    fn wait_listening(&mut self, ns: &str, wanted: &[(Option<Ipv4Addr>, u16)]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            stopped()?;
            for s in &mut self.children {
                if let Some(status) = s.child.try_wait()? {
                    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    bail!("{} exited ({status}): {}", s.what, tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
                }
            }
            let out = cmd_output("ip", &["netns", "exec", ns, "ss", "-Hltn"])?;
            let text = String::from_utf8_lossy(&out.stdout);
            let locals: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
            let missing: Vec<String> = wanted
                .iter()
                .filter(|(addr, port)| {
                    !locals.iter().any(|l| {
                        l.ends_with(&format!(":{port}")) && addr.is_none_or(|a| l.starts_with(&format!("{a}:")))
                    })
                })
                .map(|(a, p)| format!("{}:{p}", a.map_or("*".to_string(), |a| a.to_string())))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {} in {ns} after {READY_TIMEOUT:?}", missing.join(", "));
            }
            pause(POLL);
        }
    }

    /// nginx (one process, no access log, a 1 KB body on every backend port) and one iperf3
    /// server per backend port, all in the server pod on the work CPU.
    fn start_servers(&mut self) -> Result<()> {
        let conf = self.scratch.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&self.scratch, &self.node)).context("writing nginx.conf")?;
        let err = self.scratch.join(format!("nginx-{}.err", self.node));
        let argv: Vec<String> = vec![
            "nginx".into(),
            "-e".into(),
            err.display().to_string(),
            "-p".into(),
            self.scratch.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ];
        let (server, cpu) = (self.server.clone(), self.cpus.work);
        self.spawn("nginx", &server, cpu, &argv)?;
        for port in IPERF_PORTS {
            let argv: Vec<String> = vec!["iperf3".into(), "-s".into(), "-p".into(), port.to_string()];
            self.spawn(&format!("iperf3 server {port}"), &server, cpu, &argv)?;
        }
        let wanted: Vec<(Option<Ipv4Addr>, u16)> = NGINX_PORTS.iter().chain(&IPERF_PORTS).map(|p| (None, *p)).collect();
        self.wait_listening(&server, &wanted)
    }

    /// Flushes conntrack in the node before a measurement (see the module docs).
    fn flush_conntrack(&mut self) {
        let ok = cmd_output("ip", &["netns", "exec", &self.node, "conntrack", "-F"]).is_ok_and(|o| o.status.success());
        if !ok && !self.conntrack_warned {
            eprintln!("xtask: warning: conntrack -F failed in {}; phases may see each other's flows", self.node);
            self.conntrack_warned = true;
        }
    }

    /// Runs a load tool in the client pod on the work CPU and returns its standard output.
    fn run_tool(&self, argv: &[String], limit: Duration) -> Result<String> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let tool = argv.first().map_or("tool", String::as_str);
        let out_path = self.scratch.join(format!("{tool}-{n}.out"));
        let err_path = self.scratch.join(format!("{tool}-{n}.err"));
        let mut child = Command::new("taskset")
            .args(pinned(self.cpus.work))
            .args(["ip", "netns", "exec", &self.client])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {tool}"))?;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if STOP.load(Ordering::Relaxed) || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                stopped()?;
                bail!("{} did not finish within {limit:?}", argv.join(" "));
            }
            pause(POLL);
        };
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        if !status.success() {
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            bail!("{} failed ({status}): {} {}", argv.join(" "), err.trim(), out.chars().take(400).collect::<String>());
        }
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &self.children {
            if let Ok(pid) = i32::try_from(s.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for s in &mut self.children {
            loop {
                match s.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = s.child.kill();
                        let _ = s.child.wait();
                        break;
                    }
                    Ok(None) => pause(POLL),
                }
            }
        }
        for ns in self.created.drain(..) {
            kill_and_delete(&ns);
        }
    }
}

fn nginx_conf(scratch: &Path, tag: &str) -> String {
    let tmp = scratch.join("nginx-tmp").display().to_string();
    let body = "x".repeat(BODY_BYTES);
    let mut listens = String::new();
    for port in NGINX_PORTS {
        let _ = writeln!(listens, "        listen {port} backlog=4096;");
    }
    format!(
        "# One process (no master: one pid to pin and to stop), one worker's worth of work,
# no access log: the server must cost as little as possible next to the path measured.
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx-{tag}.pid;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {tmp}-body;
    proxy_temp_path {tmp}-proxy;
    fastcgi_temp_path {tmp}-fastcgi;
    uwsgi_temp_path {tmp}-uwsgi;
    scgi_temp_path {tmp}-scgi;
    default_type text/plain;
    keepalive_requests 1000000;
    server {{
{listens}        location / {{ return 200 \"{body}\"; }}
    }}
}}
",
        dir = scratch.display()
    )
}

fn haproxy_conf() -> String {
    let mut out = String::from(
        "# The peer of pier's userspace mode: HAProxy 2.6 as a plain L4 proxy, one thread.
global
    nbthread 1
    # Two descriptors per proxied connection must fit the machine's open-file limit
    # (20,000 here); 8,000 is far above what the clients keep open.
    maxconn 8000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
",
    );
    for (name, port, backend) in [("web", HTTP_PORT, NGINX_HAPROXY), ("bulk", IPERF_PORT, IPERF_HAPROXY)] {
        let _ = write!(
            out,
            "frontend {name}\n    bind {VIP_HAPROXY}:{port}\n    default_backend {name}\n\
             backend {name}\n    server s1 {SERVER_IP}:{backend}\n"
        );
    }
    out
}

fn node_context() -> Result<NodeContext> {
    Ok(NodeContext {
        name: "bench-node".into(),
        pod_cidr: "10.244.0.0/16".parse().context("pod CIDR")?,
        served_locally: Vec::new(),
    })
}

fn service_port(name: &str, port: u16, vip: Ipv4Addr, backends: Vec<Backend>) -> ServicePort {
    ServicePort {
        service: ServiceKey::new("default", name),
        port_name: format!("p{port}"),
        protocol: Protocol::Tcp,
        port,
        cluster_ips: vec![vip],
        node_port: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        cluster_endpoints: backends,
        local_endpoints: Vec::new(),
    }
}

fn server(port: u16) -> Vec<Backend> {
    vec![Backend { ip: SERVER_IP, port }]
}

/// `services` Services for nftables mode: `first` (VIP_FIRST:80 → nginx), `web` (VIP_PIER,
/// :80 → nginx, :5201 → iperf3), and fillers with two endpoints each on addresses that
/// exist nowhere (10.244.1.0 and up: never contacted).
fn nft_table(services: u32) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
    let mut t = BTreeMap::new();
    let first = service_port("first", HTTP_PORT, VIP_FIRST, server(NGINX_FIRST));
    t.insert(first.service.clone(), vec![first]);
    let web = vec![
        service_port("web", HTTP_PORT, VIP_PIER, server(NGINX_NFT)),
        service_port("web", IPERF_PORT, VIP_PIER, server(IPERF_NFT)),
    ];
    t.insert(ServiceKey::new("default", "web"), web);
    for i in 0..services.saturating_sub(2) {
        // 10.97.0.0 and up: inside the service range, clear of the measured addresses.
        let vip = Ipv4Addr::from(0x0a61_0000 + i);
        let ep = |j: u32| Backend { ip: Ipv4Addr::from(0x0af4_0100 + (2 * i + j) % 60_000), port: 8080 };
        let sp = service_port(&format!("filler-{i}"), HTTP_PORT, vip, vec![ep(0), ep(1)]);
        t.insert(sp.service.clone(), vec![sp]);
    }
    t
}

fn userspace_table() -> BTreeMap<ServiceKey, Vec<ServicePort>> {
    let web = vec![
        service_port("web", HTTP_PORT, VIP_PIER, server(NGINX_PIER)),
        service_port("web", IPERF_PORT, VIP_PIER, server(IPERF_PIER)),
    ];
    BTreeMap::from([(ServiceKey::new("default", "web"), web)])
}

/// Programs `table` with pier's nftables back end in the node namespace.
fn nft_full_sync(node: &str, table: BTreeMap<ServiceKey, Vec<ServicePort>>) -> Result<Duration> {
    let ctx = node_context()?;
    in_netns(node, None, move || {
        let mut nft = Nftables::new(ctx);
        let started = Instant::now();
        nft.full_sync(&table).map_err(|e| anyhow!("{e}"))?;
        Ok(started.elapsed())
    })
}

/// pier's userspace proxy on a current-thread runtime, on a thread inside the node namespace
/// pinned to the proxy CPU; stopped on drop.
struct PierProxy {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    /// The thread's `/proc` stat file, for its CPU time.
    stat: String,
}

impl PierProxy {
    fn start(node: &str, cpu: usize, table: BTreeMap<ServiceKey, Vec<ServicePort>>) -> Result<PierProxy> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let node = node.to_string();
        std::thread::Builder::new()
            .name("pier-proxy".into())
            .spawn(move || {
                let setup = (|| -> Result<_> {
                    enter(&node, Some(cpu))?;
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    // Bound here, so the listeners and every backend connection live in the
                    // node namespace, as with `pier agent --proxy-mode userspace`.
                    let mut proxy = Userspace::new(rt.handle().clone());
                    proxy.full_sync(&table).map_err(|e| anyhow!("{e}"))?;
                    Ok((rt, proxy))
                })();
                match setup {
                    Ok((rt, proxy)) => {
                        let _ = ready_tx.send(Ok(nix::unistd::gettid().as_raw()));
                        rt.block_on(async {
                            let _ = stop_rx.await;
                        });
                        drop(proxy);
                        drop(rt);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
                let _ = done_tx.send(());
            })
            .context("starting pier's proxy thread")?;
        let tid = ready_rx.recv_timeout(READY_TIMEOUT).context("pier's proxy thread did not start")??;
        Ok(PierProxy {
            stop: Some(stop_tx),
            done: done_rx,
            stat: format!("/proc/{}/task/{tid}/stat", std::process::id()),
        })
    }
}

impl Drop for PierProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

/// utime + stime of a `/proc/.../stat` file, in clock ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let s = std::fs::read_to_string(stat).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |t| t as f64)
}

/// One path through the cluster: where the client sends and which process does the work.
#[derive(Debug, Clone)]
struct DataPath {
    name: &'static str,
    host: Ipv4Addr,
    http_port: u16,
    iperf_port: u16,
    /// `/proc` stat file of the proxy process or thread, if any.
    stat: Option<String>,
}

/// One measurement of one path: the value and the proxy's CPU use (% of one core).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    value: f64,
    cpu: Option<f64>,
    /// How busy the proxy CPU and the work CPU were (% , everything on them: softirq and
    /// other people's builds included), to tell which side limited the run.
    busy: Option<(f64, f64)>,
    /// SYN retransmissions and listen-queue drops in the cluster during the sample: a phase
    /// that measured retransmits rather than the data path shows up here.
    syn_retrans: u64,
    listen_drops: u64,
    /// All retransmitted segments (lost packets anywhere in the path, or timeouts).
    retrans_segs: u64,
}

/// The TCP counters of [`Sample`], summed over the cluster's namespaces.
fn tcp_counters(c: &Cluster) -> (u64, u64, u64) {
    let (mut retrans, mut drops, mut segs) = (0, 0, 0);
    for ns in [&c.node, &c.client, &c.server] {
        let out = cmd_output("ip", &["netns", "exec", ns, "nstat", "-asz"]).map(|o| o.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&out).lines() {
            let mut f = line.split_whitespace();
            let (Some(name), Some(value)) = (f.next(), f.next().and_then(|v| v.parse::<u64>().ok())) else { continue };
            match name {
                "TcpExtTCPSynRetrans" => retrans += value,
                "TcpExtListenDrops" => drops += value,
                "TcpRetransSegs" => segs += value,
                _ => {}
            }
        }
    }
    (retrans, drops, segs)
}

/// (busy, total) jiffies of each CPU from `/proc/stat`, indexed by CPU number.
fn cpu_jiffies() -> BTreeMap<usize, (u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: usize = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((cpu, (total.saturating_sub(idle), total)))
        })
        .collect()
}

fn busy_between(before: &BTreeMap<usize, (u64, u64)>, after: &BTreeMap<usize, (u64, u64)>, cpu: usize) -> Option<f64> {
    let (b0, t0) = before.get(&cpu)?;
    let (b1, t1) = after.get(&cpu)?;
    let total = t1.saturating_sub(*t0);
    (total > 0).then(|| b1.saturating_sub(*b0) as f64 / total as f64 * 100.0)
}

fn with_cpu(c: &Cluster, path: &DataPath, f: impl FnOnce() -> Result<f64>) -> Result<Sample> {
    let cpus = c.cpus;
    let counters = tcp_counters(c);
    let before = path.stat.as_deref().and_then(cpu_ticks);
    let jiffies = cpu_jiffies();
    let started = Instant::now();
    let value = f()?;
    let wall = started.elapsed().as_secs_f64();
    let after = path.stat.as_deref().and_then(cpu_ticks);
    let jiffies_after = cpu_jiffies();
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 / clock_ticks() / wall * 100.0),
        _ => None,
    };
    let busy =
        busy_between(&jiffies, &jiffies_after, cpus.proxy).zip(busy_between(&jiffies, &jiffies_after, cpus.work));
    let counters_after = tcp_counters(c);
    Ok(Sample {
        value,
        cpu,
        busy,
        syn_retrans: counters_after.0.saturating_sub(counters.0),
        listen_drops: counters_after.1.saturating_sub(counters.1),
        retrans_segs: counters_after.2.saturating_sub(counters.2),
    })
}

/// iperf3, one stream, client → server: received Gbit/s.
fn iperf(c: &Cluster, p: &DataPath, secs: u32) -> Result<f64> {
    let argv: Vec<String> = [
        "iperf3",
        "-c",
        &p.host.to_string(),
        "-p",
        &p.iperf_port.to_string(),
        "-t",
        &secs.to_string(),
        "--connect-timeout",
        "2000",
        "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = c.run_tool(&argv, Duration::from_secs(u64::from(secs) + 20))?;
    let json: serde_json::Value = serde_json::from_str(&out).context("parsing iperf3 -J output")?;
    if let Some(e) = json.get("error") {
        bail!("iperf3 to {}: {e}", p.name);
    }
    let bps = json
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("iperf3 output without end.sum_received")?;
    Ok(bps / 1e9)
}

/// wrk with `Connection: close` (one connection per request): requests per second.
fn wrk_close(c: &Cluster, p: &DataPath, secs: u32, errors: &mut Vec<String>) -> Result<f64> {
    let argv: Vec<String> = vec![
        "wrk".into(),
        "-t1".into(),
        format!("-c{WRK_CONNECTIONS}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        "2s".into(),
        "-H".into(),
        "Connection: close".into(),
        format!("http://{}:{}/", p.host, p.http_port),
    ];
    let out = c.run_tool(&argv, Duration::from_secs(u64::from(secs) + 20))?;
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {out}"))?;
    for l in out.lines().map(str::trim) {
        if l.starts_with("Socket errors:") || l.starts_with("Non-2xx") {
            errors.push(format!("wrk {}: {l}", p.name));
        }
    }
    Ok(rps)
}

/// Sequential fresh TCP connections from the client pod: the time `connect` takes (SYN out,
/// SYN-ACK back: the first packet is the one the data plane translates). Each is closed with
/// RST so neither side keeps TIME_WAIT state between samples.
fn connect_times(c: &Cluster, addr: SocketAddrV4, n: usize) -> Result<(Vec<Duration>, usize)> {
    in_netns(&c.client, Some(c.cpus.work), move || {
        let addr = SocketAddr::V4(addr);
        let mut times = Vec::with_capacity(n);
        let mut failures = 0;
        for i in 0..WARMUP_CONNECTS + n {
            if i % 256 == 0 {
                stopped()?;
            }
            let started = Instant::now();
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let took = started.elapsed();
                    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
                    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger);
                    drop(s);
                    if i >= WARMUP_CONNECTS {
                        times.push(took);
                    }
                }
                Err(_) => failures += 1,
            }
            ensure!(failures <= n / 10 + 10, "too many failed connects to {addr} ({failures})");
        }
        Ok((times, failures))
    })
}

/// Result of one run of the rate-limited client.
#[derive(Debug, Clone, Default)]
struct Paced {
    latencies: Vec<Duration>,
    errors: usize,
    /// Requests not sent because `MAX_IN_FLIGHT` were outstanding.
    skipped: usize,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

async fn one_request(addr: SocketAddr) -> Result<Duration> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = Instant::now();
    let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(REQUEST).await?;
        let mut buf = Vec::with_capacity(BODY_BYTES + 512);
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| anyhow!("timed out"))??;
    let took = started.elapsed();
    ensure!(response.starts_with(b"HTTP/1.1 200"), "unexpected response");
    Ok(took)
}

/// An open-loop client in the client pod: one new connection and one request every
/// 1/`rate` s for `secs`, whatever the responses do (so a slow proxy meets the same
/// arrivals instead of throttling its own load, as wrk's closed loop would). Latency runs
/// from connect to the last response byte (the server closes). Arrivals follow Tokio's
/// millisecond timer: at a few thousand per second they come in small bursts each
/// millisecond, the same for every path.
fn paced(c: &Cluster, addr: SocketAddrV4, rate: f64, secs: u32) -> Result<Paced> {
    in_netns(&c.client, Some(c.cpus.work), move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let addr = SocketAddr::V4(addr);
            let total = (rate * f64::from(secs)) as u64;
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut set = tokio::task::JoinSet::new();
            let mut out = Paced::default();
            let take = |r: Result<Result<Duration>, tokio::task::JoinError>, out: &mut Paced| match r {
                Ok(Ok(d)) => out.latencies.push(d),
                _ => out.errors += 1,
            };
            let start = tokio::time::Instant::now();
            for i in 0..total {
                if i % 256 == 0 {
                    stopped()?;
                }
                tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
                while let Some(r) = set.try_join_next() {
                    take(r, &mut out);
                }
                if set.len() >= MAX_IN_FLIGHT {
                    out.skipped += 1;
                    continue;
                }
                set.spawn(one_request(addr));
            }
            // Every request is bounded by REQUEST_TIMEOUT, so this ends.
            while let Some(r) = set.join_next().await {
                take(r, &mut out);
            }
            Ok(out)
        })
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    crate::report::percentile(sorted, p)
}

fn median_f(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { 0.0 } else { s[(s.len() - 1) / 2] }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms3(d: f64) -> String {
    format!("{d:.3} ms")
}

/// A row of the summary.
struct Row {
    metric: String,
    goal: String,
    pier: String,
    peer: String,
    ratio: String,
    pass: Option<bool>,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

fn rotate<T: Clone>(v: &[T], by: usize) -> Vec<T> {
    let n = v.len().max(1);
    v.iter().cycle().skip(by % n).take(v.len()).cloned().collect()
}

fn fmt_rounds(v: &[Sample], unit: &str, digits: usize) -> String {
    v.iter()
        .map(|s| {
            let mut notes = Vec::new();
            if let Some(cpu) = s.cpu {
                notes.push(format!("proxy {cpu:.0}%"));
            }
            if let Some((p, w)) = s.busy {
                notes.push(format!("CPUs {p:.0}%/{w:.0}%"));
            }
            if s.syn_retrans + s.listen_drops + s.retrans_segs > 0 {
                notes.push(format!(
                    "{} retransmits ({} SYN), {} listen drops",
                    s.retrans_segs, s.syn_retrans, s.listen_drops
                ));
            }
            format!("{:.digits$}{unit} ({})", s.value, notes.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn median_sample(v: &[Sample]) -> f64 {
    median_f(&v.iter().map(|s| s.value).collect::<Vec<_>>())
}

fn median_cpu(v: &[Sample]) -> Option<f64> {
    let cpus: Vec<f64> = v.iter().filter_map(|s| s.cpu).collect();
    (!cpus.is_empty()).then(|| median_f(&cpus))
}

/// Everything measured, for the report.
#[derive(Default)]
struct Results {
    first: BTreeMap<u32, (Vec<Duration>, Vec<Duration>, usize)>,
    first_direct: Vec<Duration>,
    sync_times: Vec<(u32, Duration)>,
    nft_iperf: BTreeMap<&'static str, Vec<Sample>>,
    nft_wrk: BTreeMap<&'static str, Vec<Sample>>,
    us_iperf: BTreeMap<&'static str, Vec<Sample>>,
    us_wrk: BTreeMap<&'static str, Vec<Sample>>,
    us_rate: f64,
    us_paced: BTreeMap<&'static str, Vec<(Paced, Sample)>>,
    errors: Vec<String>,
}

fn progress(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Goal 1 and goal 2 in one nftables-mode cluster.
fn nftables_mode(args: &DataplaneArgs, cpus: Cpus, scratch: &Path, r: &mut Results) -> Result<()> {
    progress("nftables mode: building the mini cluster");
    let connects = usize::try_from(args.connects).context("--connects")?;
    let mut c = Cluster::create("nft", false, cpus, scratch)?;
    c.start_servers()?;

    // Goal 1: small and large tables alternate (S L L S S L …) so drift hits both sides and
    // every other round needs no reprogramming.
    let mut loaded = None;
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [args.small, args.services] } else { [args.services, args.small] };
        for size in order {
            stopped()?;
            if loaded != Some(size) {
                progress(&format!("nftables mode: programming {size} Services (Nftables::full_sync)"));
                let took = nft_full_sync(&c.node, nft_table(size))?;
                r.sync_times.push((size, took));
                loaded = Some(size);
            }
            c.flush_conntrack();
            let (mut times, failures) = connect_times(&c, SocketAddrV4::new(VIP_FIRST, HTTP_PORT), connects)?;
            let entry = r.first.entry(size).or_default();
            entry.1.push(report_median(&times));
            entry.0.append(&mut times);
            entry.2 += failures;
        }
        c.flush_conntrack();
        let (mut times, _) = connect_times(&c, SocketAddrV4::new(SERVER_IP, NGINX_DIRECT), connects)?;
        r.first_direct.append(&mut times);
    }

    // Goal 2 with the small table (what goal 1 left loaded last is reloaded if needed).
    if loaded != Some(args.small) {
        let took = nft_full_sync(&c.node, nft_table(args.small))?;
        r.sync_times.push((args.small, took));
    }
    let paths = [
        DataPath { name: "direct", host: SERVER_IP, http_port: NGINX_DIRECT, iperf_port: IPERF_DIRECT, stat: None },
        DataPath { name: "clusterip", host: VIP_PIER, http_port: HTTP_PORT, iperf_port: IPERF_PORT, stat: None },
    ];
    for round in 0..args.rounds as usize {
        for p in rotate(&paths, round) {
            progress(&format!("nftables mode: iperf3 {} (round {})", p.name, round + 1));
            c.flush_conntrack();
            let s = with_cpu(&c, &p, || iperf(&c, &p, args.seconds))?;
            r.nft_iperf.entry(p.name).or_default().push(s);
        }
    }
    for round in 0..args.rounds as usize {
        for p in rotate(&paths, round) {
            progress(&format!("nftables mode: wrk Connection: close {} (round {})", p.name, round + 1));
            c.flush_conntrack();
            let s = with_cpu(&c, &p, || wrk_close(&c, &p, args.seconds, &mut r.errors))?;
            r.nft_wrk.entry(p.name).or_default().push(s);
        }
    }
    Ok(())
}

fn report_median(times: &[Duration]) -> Duration {
    crate::report::median(times)
}

/// Goal 3: pier's userspace proxy and HAProxy, both in the node on the proxy CPU.
fn userspace_mode(args: &DataplaneArgs, cpus: Cpus, scratch: &Path, r: &mut Results) -> Result<()> {
    progress("userspace mode: building the mini cluster");
    let mut c = Cluster::create("us", true, cpus, scratch)?;
    c.start_servers()?;
    let cfg = scratch.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_conf()).context("writing haproxy.cfg")?;
    let node = c.node.clone();
    let argv: Vec<String> = vec!["haproxy".into(), "-f".into(), cfg.display().to_string(), "-db".into()];
    let haproxy_pid = c.spawn("haproxy", &node, cpus.proxy, &argv)?;
    let pier = PierProxy::start(&c.node, cpus.proxy, userspace_table())?;
    c.wait_listening(
        &node,
        &[
            (Some(VIP_HAPROXY), HTTP_PORT),
            (Some(VIP_HAPROXY), IPERF_PORT),
            (Some(VIP_PIER), HTTP_PORT),
            (Some(VIP_PIER), IPERF_PORT),
        ],
    )?;
    let paths = [
        DataPath { name: "direct", host: SERVER_IP, http_port: NGINX_DIRECT, iperf_port: IPERF_DIRECT, stat: None },
        DataPath {
            name: "pier",
            host: VIP_PIER,
            http_port: HTTP_PORT,
            iperf_port: IPERF_PORT,
            stat: Some(pier.stat.clone()),
        },
        DataPath {
            name: "haproxy",
            host: VIP_HAPROXY,
            http_port: HTTP_PORT,
            iperf_port: IPERF_PORT,
            stat: Some(format!("/proc/{haproxy_pid}/stat")),
        },
    ];
    for round in 0..args.rounds as usize {
        for p in rotate(&paths, round) {
            progress(&format!("userspace mode: iperf3 {} (round {})", p.name, round + 1));
            c.flush_conntrack();
            let s = with_cpu(&c, &p, || iperf(&c, &p, args.seconds))?;
            r.us_iperf.entry(p.name).or_default().push(s);
        }
    }
    for round in 0..args.rounds as usize {
        for p in rotate(&paths, round) {
            progress(&format!("userspace mode: wrk Connection: close {} (round {})", p.name, round + 1));
            c.flush_conntrack();
            let s = with_cpu(&c, &p, || wrk_close(&c, &p, args.seconds, &mut r.errors))?;
            r.us_wrk.entry(p.name).or_default().push(s);
        }
    }
    let haproxy_max = median_sample(r.us_wrk.get("haproxy").map_or(&[][..], Vec::as_slice));
    ensure!(haproxy_max > 0.0, "HAProxy's connection rate was not measured");
    r.us_rate = (haproxy_max / 2.0).max(1.0);
    for round in 0..args.rounds as usize {
        for p in rotate(&paths, round) {
            progress(&format!(
                "userspace mode: {:.0} req/s paced, new connection each, {} (round {})",
                r.us_rate,
                p.name,
                round + 1
            ));
            c.flush_conntrack();
            let mut paced_out = Paced::default();
            let s = with_cpu(&c, &p, || {
                paced_out = paced(&c, SocketAddrV4::new(p.host, p.http_port), r.us_rate, args.seconds)?;
                Ok(0.0)
            })?;
            r.us_paced.entry(p.name).or_default().push((paced_out, s));
        }
    }
    drop(pier);
    Ok(())
}

/// p50, p99 and p90 in ms of one paced run.
fn paced_stats(p: &Paced) -> (f64, f64, f64) {
    let mut s = p.latencies.clone();
    s.sort();
    let ms = |q| percentile(&s, q).as_secs_f64() * 1e3;
    (ms(0.5), ms(0.99), ms(0.9))
}

fn print_report(args: &DataplaneArgs, cpus: Cpus, r: &Results) {
    let m = machine();
    println!("# pier data path (issue 4): cargo xtask bench dataplane\n");
    println!("machine: {} CPUs ({}), {}, {} RAM; pier {}", m.cpus, m.model, m.kernel, m.memory, revision());
    println!(
        "pinning: pier's proxy thread and HAProxy on CPU {}; nginx, iperf3 -s and every client (iperf3 -c, \
         wrk -t1 -c{WRK_CONNECTIONS}, the Rust connect and paced clients) on CPU {}",
        cpus.proxy, cpus.work
    );
    if args.nice != 0 {
        println!(
            "priority: proxies, servers and clients ran at nice {} (--nice), ahead of the machine's other work",
            args.nice
        );
    }
    println!(
        "phases: {} s each, {} rounds (medians; paths interleaved and rotated each round); conntrack flushed \
         in the node before each; {} connects per first-packet round\n",
        args.seconds, args.rounds, args.connects
    );

    let mut rows = Vec::new();
    let stats = |size: u32| -> Option<(Duration, Duration)> {
        let (all, _, _) = r.first.get(&size)?;
        let mut s = all.clone();
        s.sort();
        Some((percentile(&s, 0.5), percentile(&s, 0.99)))
    };
    if let (Some((big50, big99)), Some((small50, small99))) = (stats(args.services), stats(args.small)) {
        for (what, big, small) in [("median", big50, small50), ("p99", big99, small99)] {
            let ratio = big.as_secs_f64() / small.as_secs_f64().max(1e-9);
            rows.push(Row {
                metric: format!(
                    "1. nftables, first packet: TCP connect {what}, {} vs {} Services",
                    args.services, args.small
                ),
                goal: "<= 1.10x".into(),
                pier: format!("{} ({} Svc)", us(big), args.services),
                peer: format!("{} ({} Svc)", us(small), args.small),
                ratio: format!("{ratio:.2}x"),
                pass: Some(ratio <= 1.10),
            });
        }
    }
    let ratio_row = |metric: &str, goal: f64, data: &BTreeMap<&str, Vec<Sample>>, a: &str, b: &str, unit: &str| {
        // A side that was not measured (an earlier failure) gets no row rather than a 0.
        let (va, vb) = (median_sample(data.get(a)?), median_sample(data.get(b)?));
        let ratio = va / vb.max(1e-9);
        Some(Row {
            metric: metric.to_string(),
            goal: format!(">= {goal:.2}x"),
            pier: format!("{va:.2} {unit} ({a})"),
            peer: format!("{vb:.2} {unit} ({b})"),
            ratio: format!("{ratio:.2}x"),
            pass: Some(ratio >= goal),
        })
    };
    for (metric, goal, data, a, b, unit) in [
        ("2a. nftables, iperf3 1 stream: ClusterIP vs pod direct", 0.97, &r.nft_iperf, "clusterip", "direct", "Gbit/s"),
        ("2b. nftables, new conn/s (wrk close): ClusterIP vs direct", 0.95, &r.nft_wrk, "clusterip", "direct", "req/s"),
        ("3a. userspace, iperf3 1 stream: pier vs HAProxy", 1.0, &r.us_iperf, "pier", "haproxy", "Gbit/s"),
        ("3b. userspace, new conn/s (wrk close): pier vs HAProxy", 1.0, &r.us_wrk, "pier", "haproxy", "req/s"),
    ] {
        rows.extend(ratio_row(metric, goal, data, a, b, unit));
    }
    let p99_med = |name: &str| -> Option<f64> {
        let runs = r.us_paced.get(name)?;
        Some(median_f(&runs.iter().map(|(p, _)| paced_stats(p).1).collect::<Vec<_>>()))
    };
    if let (Some(direct), Some(pier), Some(haproxy)) = (p99_med("direct"), p99_med("pier"), p99_med("haproxy")) {
        let (added_pier, added_haproxy) = (pier - direct, haproxy - direct);
        rows.push(Row {
            metric: format!("3c. userspace, added p99 at {:.0} req/s (1/2 HAProxy max): pier vs HAProxy", r.us_rate),
            goal: "<= 1.00x".into(),
            pier: format!("{added_pier:+.3} ms ({} p99)", ms3(pier)),
            peer: format!("{added_haproxy:+.3} ms ({} p99)", ms3(haproxy)),
            ratio: if added_haproxy > 0.0 { format!("{:.2}x", added_pier / added_haproxy) } else { "-".into() },
            pass: Some(added_pier <= added_haproxy),
        });
    }

    println!("| metric | goal | pier | peer | ratio | result |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            row.metric,
            row.goal,
            row.pier,
            row.peer,
            row.ratio,
            verdict(row.pass)
        );
    }

    // The proxies share their core with whatever else runs on the machine; their rate per
    // CPU-second of their own does not depend on how much of the core they got.
    let per_core = |data: &BTreeMap<&str, Vec<Sample>>, name: &str| -> Option<f64> {
        let v = data.get(name)?;
        let per: Vec<f64> =
            v.iter().filter_map(|s| s.cpu.filter(|c| *c > 0.0).map(|c| s.value / (c / 100.0))).collect();
        (!per.is_empty()).then(|| median_f(&per))
    };
    let mut context = Vec::new();
    for (what, data, unit) in
        [("iperf3 1 stream", &r.us_iperf, "Gbit/s"), ("new conn/s (wrk close)", &r.us_wrk, "req/s")]
    {
        if let (Some(p), Some(h)) = (per_core(data, "pier"), per_core(data, "haproxy")) {
            context.push(format!(
                "| userspace, {what} per proxy core (rate / proxy CPU): pier vs HAProxy | {p:.2} {unit} | {h:.2} {unit} | {:.2}x |",
                p / h.max(1e-9)
            ));
        }
    }
    if !context.is_empty() {
        println!(
            "\nCPU-normalized (context, not a goal): each proxy's rate divided by the share of its core it used\n"
        );
        println!("| metric | pier | HAProxy | ratio |");
        println!("|---|---|---|---|");
        for line in context {
            println!("{line}");
        }
    }
    let stolen: Vec<f64> = [&r.us_iperf, &r.us_wrk]
        .iter()
        .flat_map(|d| d.values().flatten())
        .filter_map(|s| Some(s.busy?.0 - s.cpu?))
        .collect();
    if !stolen.is_empty() && median_f(&stolen) > 25.0 {
        println!(
            "\nwarning: other processes used a median {:.0}% of the proxy CPU ({}) while a proxy was measured: the \
             userspace rates above are shares of a contended core (see the per-core figures)",
            median_f(&stolen),
            cpus.proxy
        );
    }

    println!("\n## Details\n");
    for (title, data) in [("userspace iperf3", &r.us_iperf), ("userspace wrk close", &r.us_wrk)] {
        if let (Some(p), Some(h)) = (data.get("pier"), data.get("haproxy")) {
            let ratios: Vec<String> =
                p.iter().zip(h).map(|(a, b)| format!("{:.2}x", a.value / b.value.max(1e-9))).collect();
            println!("- {title}, pier / HAProxy per round: {}", ratios.join(", "));
        }
    }
    for (size, took) in &r.sync_times {
        println!("- Nftables::full_sync of {size} Services: {:.0} ms", took.as_secs_f64() * 1e3);
    }
    for (size, (all, medians, failures)) in &r.first {
        let mut s = all.clone();
        s.sort();
        println!(
            "- first packet, {size} Services: {} connects, p50 {} p90 {} p99 {} max {}; round medians {}; {failures} failed",
            s.len(),
            us(percentile(&s, 0.5)),
            us(percentile(&s, 0.9)),
            us(percentile(&s, 0.99)),
            us(s.last().copied().unwrap_or_default()),
            medians.iter().map(|d| us(*d)).collect::<Vec<_>>().join(", ")
        );
    }
    if !r.first_direct.is_empty() {
        let mut s = r.first_direct.clone();
        s.sort();
        println!(
            "- first packet, pod direct (no Service, context): p50 {} p99 {}",
            us(percentile(&s, 0.5)),
            us(percentile(&s, 0.99))
        );
    }
    for (title, data, unit, digits) in [
        ("nftables iperf3", &r.nft_iperf, " Gbit/s", 2),
        ("nftables wrk close", &r.nft_wrk, " req/s", 0),
        ("userspace iperf3", &r.us_iperf, " Gbit/s", 2),
        ("userspace wrk close", &r.us_wrk, " req/s", 0),
    ] {
        for (name, v) in data {
            let cpu = median_cpu(v).map(|c| format!(", proxy CPU median {c:.0}%")).unwrap_or_default();
            println!(
                "- {title}, {name}: median {:.digits$}{unit}{cpu}; rounds {}",
                median_sample(v),
                fmt_rounds(v, unit, digits)
            );
        }
    }
    // Work per proxy CPU-second: what the proxy would do with a core to itself, less
    // sensitive than the raw rate to whatever else ran on its CPU.
    for (title, data, unit) in [("iperf3", &r.us_iperf, "Gbit/s"), ("wrk close", &r.us_wrk, "req/s")] {
        for name in ["pier", "haproxy"] {
            let Some(v) = data.get(name) else { continue };
            let per: Vec<f64> =
                v.iter().filter_map(|s| s.cpu.filter(|c| *c > 0.0).map(|c| s.value / (c / 100.0))).collect();
            if !per.is_empty() {
                println!(
                    "- userspace {title}, {name}: {:.1} {unit} per proxy core (value / proxy CPU, median)",
                    median_f(&per)
                );
            }
        }
    }
    if let Some(direct) = r.us_wrk.get("direct").map(|v| median_sample(v)) {
        for name in ["pier", "haproxy"] {
            if let Some(v) = r.us_wrk.get(name) {
                println!("- userspace wrk close, {name} at {:.2}x of pod direct", median_sample(v) / direct.max(1e-9));
            }
        }
    }
    if let Some(direct) = r.us_iperf.get("direct").map(|v| median_sample(v)) {
        for name in ["pier", "haproxy"] {
            if let Some(v) = r.us_iperf.get(name) {
                println!("- userspace iperf3, {name} at {:.2}x of pod direct", median_sample(v) / direct.max(1e-9));
            }
        }
    }
    for (name, runs) in &r.us_paced {
        let parts: Vec<String> = runs
            .iter()
            .map(|(p, sample)| {
                let (p50, p99, p90) = paced_stats(p);
                let mut cpu = sample.cpu.map(|c| format!(", proxy {c:.0}%")).unwrap_or_default();
                if let Some((a, b)) = sample.busy {
                    let _ = write!(cpu, ", CPUs {a:.0}%/{b:.0}%");
                }
                if sample.syn_retrans + sample.listen_drops + sample.retrans_segs > 0 {
                    let _ = write!(
                        cpu,
                        ", {} retransmits ({} SYN), {} listen drops",
                        sample.retrans_segs, sample.syn_retrans, sample.listen_drops
                    );
                }
                format!(
                    "p50 {} p90 {} p99 {} ({} ok, {} errors, {} not sent{cpu})",
                    ms3(p50),
                    ms3(p90),
                    ms3(p99),
                    p.latencies.len(),
                    p.errors,
                    p.skipped
                )
            })
            .collect();
        println!("- paced {:.0} req/s, {name}: {}", r.us_rate, parts.join("; "));
    }
    for e in &r.errors {
        println!("- {e}");
    }
}

pub fn run(args: &DataplaneArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench dataplane needs root (it creates network namespaces)");
    }
    check_tools()?;
    watch_signals()?;
    remove_stale();
    NICE.store(args.nice, Ordering::Relaxed);
    let cpus = cpus()?;
    if cpus.proxy == cpus.work {
        eprintln!("xtask: warning: one CPU only; proxies, servers and clients all share it");
    }
    let scratch = Scratch::create()?;
    let mut results = Results::default();
    let started = Instant::now();
    let outcome = (|| -> Result<()> {
        if !args.skip_nftables {
            nftables_mode(args, cpus, &scratch.0, &mut results)?;
        }
        if !args.skip_userspace {
            userspace_mode(args, cpus, &scratch.0, &mut results)?;
        }
        Ok(())
    })();
    // What was measured is printed even when a later phase failed.
    print_report(args, cpus, &results);
    println!("\n(run took {:.0} s)", started.elapsed().as_secs_f64());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("pier-bench-dp-123-nft-node"), Some(123));
        assert_eq!(owner_pid("pier-bench-dp-123"), Some(123));
        assert_eq!(owner_pid("pier-bench-dp-12x"), None);
        assert_eq!(owner_pid("pier-bench-proxy-1"), None);
    }

    #[test]
    fn tables_hold_the_measured_services() {
        let t = nft_table(10);
        assert_eq!(t.len(), 10);
        assert!(t.values().flatten().any(|p| p.cluster_ips == vec![VIP_FIRST]));
        assert_eq!(nft_table(30_000).len(), 30_000);
    }

    #[test]
    fn haproxy_conf_binds_its_own_vip() {
        let c = haproxy_conf();
        assert!(c.contains("bind 10.96.0.30:80"));
        assert!(c.contains("server s1 10.244.0.12:8084"));
    }
}
