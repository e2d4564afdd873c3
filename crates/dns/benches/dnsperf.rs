//! The cluster DNS benchmark of issue 5: pier's DNS server side by side with unbound
//! (`local-data`), NSD and Knot (zone files), all serving the same records of a 10,000-Service /
//! 100,000-endpoint cluster, measured with `dnsperf` in one run.
//!
//! Run with `cargo bench -p pier-dns --bench dnsperf` (optionally `-- --seconds 10 --rounds 3
//! --changes 200`). Needs `dnsperf` and `taskset`; each missing peer is skipped with a note
//! (`apt-get install -y dnsperf unbound nsd knot`).
//!
//! What it does, in order:
//! 1. builds the zone in this process with the generator of `tests/scale.rs` and writes the
//!    peers' zone files and `local-data` from *pier's own answers* to every name the generator
//!    produces (the pure answerer, decoded by hickory-proto), so every server holds the same
//!    records;
//! 2. starts pier as a child process of this binary (`--serve-pier`, a current-thread runtime
//!    and one UDP worker, so its RSS is the serving process alone) and the peers with one
//!    worker each, every server pinned to CPU 1 with `taskset`, each on its own 127.0.53.x;
//! 3. checks a sample of answers agree, then runs `dnsperf` pinned to CPU 0: rounds of
//!    closed-loop runs (servers alternating inside a round) for queries per second, then one
//!    run per server at half of unbound's median rate with `-v`, whose per-query latencies give
//!    the percentiles (dnsperf 2.10 prints only mean and max otherwise);
//! 4. reads VmRSS/VmHWM (and PSS) of every process of each server after the load;
//! 5. measures DNS programming latency in this process: a Service or EndpointSlice applied to a
//!    served 10,000-Service zone, until a UDP query returns the new answer;
//! 6. prints a markdown table and the goals met or missed.
//!
//! Only 127.0.0.0/8 is used. Every wait is bounded, and every process started here is in its own
//! process group, killed by a drop guard (also when the harness panics).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{cluster_ip, ep, headless, http_port, record_text, slice};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use pier_dns::{Answer, Server, ServerConfig, Transport, Zone, ZoneConfig};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const SERVICES: u32 = 10_000;
const ENDPOINTS_PER_SERVICE: u32 = 10;
const NAMESPACES: u32 = 100;
const QUERY_LINES: usize = 100_000;
const SERVER_CPU: &str = "1";
const CLIENT_CPU: &str = "0";
const PIER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 53, 1);
const UNBOUND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 53, 2);
const NSD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 53, 3);
const KNOT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 53, 4);
const ZONE_TTL: u32 = 5;
/// Queries carry EDNS (dnsperf `-e`), as Go's resolver and systemd-resolved send them: without
/// it a headless Service's SRV answer (ten targets) does not fit in 512 bytes, and servers
/// disagree on what a truncated answer holds (pier keeps what fits, the peers send none).
const EDNS_PAYLOAD: u16 = 1232;
/// How long a server may take to load 10,000 Services' records and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// The cluster: the generator of tests/scale.rs.

fn namespace(s: u32) -> String {
    format!("ns{}", s % NAMESPACES)
}

fn service_ip(s: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (96 + s / 65536) as u8, ((s / 256) % 256) as u8, (s % 256) as u8)
}

fn endpoint_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, (16 + n / 65536) as u8, ((n / 256) % 256) as u8, (n % 256) as u8)
}

/// Even Services have a cluster IP, odd ones are headless; each has one slice of ten endpoints.
fn is_headless(s: u32) -> bool {
    s % 2 == 1
}

fn svc_name(s: u32) -> String {
    format!("svc{s}.{}.svc.cluster.local", namespace(s))
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn endpoints_json(ips: &[Ipv4Addr]) -> Vec<serde_json::Value> {
    ips.iter().map(|ip| ep(&[&ip.to_string()], None, None)).collect()
}

fn endpoint_ips(s: u32) -> Vec<Ipv4Addr> {
    (0..ENDPOINTS_PER_SERVICE).map(|e| endpoint_ip(s * ENDPOINTS_PER_SERVICE + e)).collect()
}

fn zone_config() -> ZoneConfig {
    ZoneConfig { ttl: ZONE_TTL, nameservers: vec![IpAddr::V4(PIER_IP)], ..ZoneConfig::default() }
}

/// The 10,000-Service zone; API objects are built one Service at a time so they never count
/// towards the serving process's memory.
fn build_zone() -> Zone {
    let zone = Zone::new(zone_config()).unwrap();
    for s in 0..SERVICES {
        let (ns, name) = (namespace(s), format!("svc{s}"));
        if is_headless(s) {
            zone.apply_service(&headless(&ns, &name, http_port()));
        } else {
            zone.apply_service(&cluster_ip(&ns, &name, &[&service_ip(s).to_string()], http_port()));
        }
        let eps = endpoints_json(&endpoint_ips(s));
        zone.apply_slice(&slice(&ns, &format!("{name}-1"), &name, "IPv4", eps, http_port()));
    }
    zone.mark_synced();
    zone
}

fn reverse(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// The reverse zone a PTR name is served from by the peers (unbound has default local zones
/// for the RFC 1918 reverse zones, so these exact names replace them).
fn reverse_zone(ip: Ipv4Addr) -> String {
    let [a, b, _, _] = ip.octets();
    if a == 172 { format!("{b}.172.in-addr.arpa") } else { format!("{a}.in-addr.arpa") }
}

/// Every (name, type, zone) the generator gives an answer to.
fn enumerate() -> Vec<(String, RecordType, String)> {
    let cl = "cluster.local".to_string();
    let mut out = vec![
        (cl.clone(), RecordType::SOA, cl.clone()),
        (cl.clone(), RecordType::NS, cl.clone()),
        ("dns-version.cluster.local".into(), RecordType::TXT, cl.clone()),
        ("ns.dns.cluster.local".into(), RecordType::A, cl.clone()),
    ];
    for s in 0..SERVICES {
        let svc = svc_name(s);
        out.push((svc.clone(), RecordType::A, cl.clone()));
        out.push((svc.clone(), RecordType::SRV, cl.clone()));
        out.push((format!("_http._tcp.{svc}"), RecordType::SRV, cl.clone()));
        if !is_headless(s) {
            out.push((reverse(service_ip(s)), RecordType::PTR, reverse_zone(service_ip(s))));
        }
        for ip in endpoint_ips(s) {
            out.push((format!("{}.{svc}", dashed(ip)), RecordType::A, cl.clone()));
            out.push((reverse(ip), RecordType::PTR, reverse_zone(ip)));
        }
    }
    out
}

/// Zone file lines per zone, from pier's answers (over TCP, so nothing is truncated).
fn records_from_pier(zone: &Zone) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut zones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, qtype, zone_name) in enumerate() {
        let q = common::ask(&format!("{name}."), qtype).bytes();
        let Answer::Reply(bytes) = pier_dns::answer(zone, &q, Transport::Tcp) else {
            return Err(format!("pier does not answer {name} {qtype}").into());
        };
        let m = Message::from_vec(&bytes)?;
        if m.answers.is_empty() {
            return Err(format!("pier has no {qtype} at {name}").into());
        }
        let set = zones.entry(zone_name).or_default();
        for r in &m.answers {
            set.insert(record_text(r));
        }
    }
    // The reverse zones need an apex: pier's SOA and NS, moved there.
    let cl = zones.get("cluster.local").cloned().unwrap_or_default();
    let apex: Vec<String> = cl
        .iter()
        .filter(|l| l.starts_with("cluster.local. ") && (l.contains(" SOA ") || l.contains(" NS ")))
        .cloned()
        .collect();
    for (name, set) in zones.iter_mut().filter(|(n, _)| *n != "cluster.local") {
        for line in &apex {
            set.insert(line.replacen("cluster.local.", &format!("{name}."), 1));
        }
    }
    Ok(zones)
}

/// SOA first, as zone files want it.
fn zone_file(records: &BTreeSet<String>) -> String {
    let mut text = String::new();
    for l in records.iter().filter(|l| l.contains(" SOA ")) {
        writeln!(text, "{l}").unwrap();
    }
    for l in records.iter().filter(|l| !l.contains(" SOA ")) {
        writeln!(text, "{l}").unwrap();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// xorshift64*: a fixed seed gives the same query file every run, with no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % u64::from(n)) as u32
    }
}

const MIX: &str = "40% A of a ClusterIP Service, 10% A of a headless Service (10 addresses), 10% AAAA of a \
                   ClusterIP Service (NODATA), 15% SRV `_http._tcp` (headless: 10 targets), 5% A of an \
                   endpoint name, 10% PTR (half cluster IPs, half endpoints), 10% NXDOMAIN (half ndots:5 \
                   search-path expansions, half unknown Services)";

fn query_file() -> String {
    let mut rng = Rng(0x5EED_D15C_0DE5_1234);
    let mut text = String::with_capacity(QUERY_LINES * 48);
    let even = |s: u32| s & !1;
    let odd = |s: u32| s | 1;
    for _ in 0..QUERY_LINES {
        let s = rng.below(SERVICES);
        let roll = rng.below(100);
        let line = match roll {
            0..40 => format!("{} A", svc_name(even(s))),
            40..50 => format!("{} A", svc_name(odd(s))),
            50..60 => format!("{} AAAA", svc_name(even(s))),
            60..75 => format!("_http._tcp.{} SRV", svc_name(s)),
            75..80 => {
                let ip = endpoint_ip(s * ENDPOINTS_PER_SERVICE + rng.below(ENDPOINTS_PER_SERVICE));
                format!("{}.{} A", dashed(ip), svc_name(s))
            }
            80..85 => format!("{} PTR", reverse(service_ip(even(s)))),
            85..90 => format!("{} PTR", reverse(endpoint_ip(s * ENDPOINTS_PER_SERVICE + rng.below(10)))),
            90..95 => format!("{}.{}.svc.cluster.local A", svc_name(s), namespace(s)),
            _ => format!("nosuch{s}.{}.svc.cluster.local A", namespace(s)),
        };
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn parse_qtype(t: &str) -> RecordType {
    t.parse().unwrap_or(RecordType::A)
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A started process in its own process group, killed with the group when dropped.
struct Daemon {
    name: String,
    child: Child,
}

impl Daemon {
    fn spawn(name: &str, cmd: &mut Command) -> Result<Daemon> {
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Daemon { name: name.to_string(), child })
    }

    fn pgid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited: {status}", self.name)),
            _ => None,
        }
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.pgid();
        signal_group(pgid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            pause(Duration::from_millis(20));
        }
        // The leader may be gone while its workers (NSD's) are not: the whole group goes.
        signal_group(pgid, "-KILL");
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let dir = std::env::temp_dir().join(format!("pier-dnsperf-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The harness is synchronous (no runtime thread to block), so its bounded polls sleep.
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A port free on `ip` for UDP and TCP at the moment of asking.
fn free_port(ip: Ipv4Addr) -> Result<u16> {
    for _ in 0..32 {
        let udp = UdpSocket::bind((ip, 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no free port on {ip}").into())
}

/// Sends one query and waits up to `timeout` for its response.
fn query(addr: SocketAddr, name: &str, qtype: RecordType, id: u16, timeout: Duration) -> Option<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    let q = common::ask(&format!("{}.", name.trim_end_matches('.')), qtype).id(id).edns(EDNS_PAYLOAD).bytes();
    sock.send_to(&q, addr).ok()?;
    let mut buf = [0u8; 65_535];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        if from == addr
            && let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
        {
            return Some(m);
        }
    }
    None
}

fn wait_ready(server: &mut Running, probe: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut id = 1u16;
    while start.elapsed() < READY_TIMEOUT {
        if let Some(why) = server.daemon.exited() {
            return Err(why.into());
        }
        id = id.wrapping_add(1);
        if let Some(m) = query(server.addr, probe, RecordType::A, id, Duration::from_millis(200))
            && m.metadata.response_code == ResponseCode::NoError
            && !m.answers.is_empty()
        {
            return Ok(start.elapsed());
        }
        pause(Duration::from_millis(100));
    }
    Err(format!("{} did not answer {probe} within {READY_TIMEOUT:?}", server.name).into())
}

/// One server under test, started and answering.
struct Running {
    name: &'static str,
    addr: SocketAddr,
    daemon: Daemon,
    startup: Duration,
}

fn pinned(program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CPU]).arg(program);
    cmd
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(std::fs::File::create(dir.join(format!("{name}.log")))?.into())
}

fn start_pier(dir: &Path) -> Result<Running> {
    let exe = std::env::current_exe()?;
    let mut cmd = pinned(&exe);
    cmd.args(["--serve-pier", &PIER_IP.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "pier")?);
    let start = Instant::now();
    let mut daemon = Daemon::spawn("pier", &mut cmd)?;
    let stdout = daemon.child.stdout.take().ok_or("pier child has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(READY_TIMEOUT).map_err(|_| "pier child did not report its address")?;
    let addr: SocketAddr = line.strip_prefix("ready ").ok_or_else(|| format!("pier child said {line:?}"))?.parse()?;
    Ok(Running { name: "pier", addr, daemon, startup: start.elapsed() })
}

fn start_unbound(dir: &Path, program: &Path, zones: &BTreeMap<String, BTreeSet<String>>) -> Result<Running> {
    let port = free_port(UNBOUND_IP)?;
    let mut conf = format!(
        "server:\n  interface: {UNBOUND_IP}@{port}\n  port: {port}\n  num-threads: 1\n  username: \"\"\n  \
         chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  do-daemonize: no\n  use-syslog: no\n  \
         logfile: \"\"\n  verbosity: 0\n  do-ip6: no\n  so-reuseport: no\n  module-config: \"iterator\"\n",
        dir = dir.display()
    );
    for (name, records) in zones {
        writeln!(conf, "  local-zone: \"{name}.\" static")?;
        for r in records {
            writeln!(conf, "  local-data: '{r}'")?;
        }
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = pinned(program);
    cmd.arg("-d").arg("-c").arg(&path).stdout(log_file(dir, "unbound.out")?).stderr(log_file(dir, "unbound.err")?);
    let start = Instant::now();
    let daemon = Daemon::spawn("unbound", &mut cmd)?;
    Ok(Running { name: "unbound", addr: SocketAddr::from((UNBOUND_IP, port)), daemon, startup: start.elapsed() })
}

fn write_zone_files(dir: &Path, zones: &BTreeMap<String, BTreeSet<String>>) -> Result<()> {
    for (name, records) in zones {
        std::fs::write(dir.join(format!("{name}.zone")), zone_file(records))?;
    }
    Ok(())
}

fn start_nsd(dir: &Path, program: &Path, zones: &BTreeMap<String, BTreeSet<String>>) -> Result<Running> {
    let port = free_port(NSD_IP)?;
    let d = dir.display();
    // Debian's NSD rate-limits by default; a benchmark must turn RRL off.
    let mut conf = format!(
        "server:\n  ip-address: {NSD_IP}@{port}\n  port: {port}\n  server-count: 1\n  username: \"\"\n  \
         chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/nsd.zonelist\"\n  \
         xfrdfile: \"{d}/nsd.xfrd\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  \
         verbosity: 0\n  do-ip6: no\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n  \
         tcp-count: 16\nremote-control:\n  control-enable: no\n"
    );
    for name in zones.keys() {
        write!(conf, "zone:\n  name: \"{name}\"\n  zonefile: \"{d}/{name}.zone\"\n")?;
    }
    let path = dir.join("nsd.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = pinned(program);
    cmd.arg("-d").arg("-c").arg(&path).stdout(log_file(dir, "nsd.out")?).stderr(log_file(dir, "nsd.err")?);
    let start = Instant::now();
    let daemon = Daemon::spawn("NSD", &mut cmd)?;
    Ok(Running { name: "NSD", addr: SocketAddr::from((NSD_IP, port)), daemon, startup: start.elapsed() })
}

fn start_knot(dir: &Path, program: &Path, zones: &BTreeMap<String, BTreeSet<String>>) -> Result<Running> {
    let port = free_port(KNOT_IP)?;
    let d = dir.display();
    let knot_dir = dir.join("knot");
    std::fs::create_dir_all(&knot_dir)?;
    let k = knot_dir.display();
    let mut conf = format!(
        "server:\n  rundir: \"{k}\"\n  listen: {KNOT_IP}@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  \
         background-workers: 1\ndatabase:\n  storage: \"{k}\"\nlog:\n  - target: stderr\n    any: error\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\n    zonefile-sync: -1\n    \
         zonefile-load: whole\n    journal-content: none\nzone:\n"
    );
    for name in zones.keys() {
        writeln!(conf, "  - domain: \"{name}\"\n    file: \"{d}/{name}.zone\"")?;
    }
    let path = dir.join("knot.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = pinned(program);
    cmd.arg("-c").arg(&path).stdout(log_file(dir, "knot.out")?).stderr(log_file(dir, "knot.err")?);
    let start = Instant::now();
    let daemon = Daemon::spawn("Knot", &mut cmd)?;
    Ok(Running { name: "Knot", addr: SocketAddr::from((KNOT_IP, port)), daemon, startup: start.elapsed() })
}

// ---------------------------------------------------------------------------------------------
// The pier child: one process holding the zone and serving it.

fn serve_pier(ip: &str) -> Result<()> {
    let ip: IpAddr = ip.parse()?;
    let zone = build_zone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut config = ServerConfig::new(SocketAddr::new(ip, 0), Vec::new());
        config.udp_workers = 1;
        let server = Server::bind(config, zone)?;
        println!("ready {}", server.local_addr());
        std::io::stdout().flush()?;
        // The parent holds our stdin: when it goes (exit, panic, kill), so do we.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        server
            .run(async {
                let _ = rx.await;
            })
            .await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// dnsperf.

#[derive(Debug, Default, Clone)]
struct Perf {
    qps: f64,
    sent: u64,
    lost: u64,
    codes: String,
    /// Per-query latencies in seconds (only with `-v`).
    latencies: Vec<f64>,
    /// Shares of the run's wall time: the server's threads on a CPU, and waiting for one; and
    /// dnsperf's threads waiting for one.
    server_cpu: f64,
    server_waited: f64,
    client_waited: f64,
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::trim)
}

/// One dnsperf run against `server`: closed loop, or at a fixed `rate` with per-query latencies.
fn dnsperf(server: &Running, queries: &Path, out_dir: &Path, seconds: u32, rate: Option<u32>) -> Result<Perf> {
    let addr = server.addr;
    let out_path = out_dir.join("dnsperf.out");
    let mut cmd = Command::new("taskset");
    // `-b`: dnsperf's default 32 KB socket buffers overflow when it is descheduled, and each
    // lost query then holds one of the 100 outstanding slots for the whole `-t` timeout.
    cmd.args(["-c", CLIENT_CPU, "dnsperf", "-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-t", "2", "-c", "1", "-q", "100", "-b", "2048", "-e"]);
    if let Some(rate) = rate {
        cmd.args(["-Q", &rate.to_string(), "-v"]);
    }
    cmd.stdout(std::fs::File::create(&out_path)?).stderr(Stdio::null());
    let server_before = sched(server.daemon.pgid());
    let started = Instant::now();
    let mut d = Daemon::spawn("dnsperf", &mut cmd)?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 30);
    let mut client = Sched::default();
    loop {
        // Read while it runs: its threads' counters go with them.
        let now = sched(d.pgid());
        if now.ran > 0 {
            client = now;
        }
        if let Some(status) = d.child.try_wait()? {
            if !status.success() {
                return Err(format!("dnsperf failed: {status}").into());
            }
            break;
        }
        if Instant::now() > deadline {
            return Err("dnsperf did not finish in time".into());
        }
        pause(Duration::from_millis(50));
    }
    drop(d);
    let wall = started.elapsed().as_nanos().max(1) as f64;
    let server_after = sched(server.daemon.pgid());
    let mut perf = Perf {
        server_cpu: (server_after.ran - server_before.ran) as f64 / wall,
        server_waited: (server_after.waited - server_before.waited) as f64 / wall,
        client_waited: client.waited as f64 / wall,
        ..Perf::default()
    };
    let mut tail = String::new();
    for line in BufReader::new(std::fs::File::open(&out_path)?).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("> ") {
            if let Some(l) = rest.rsplit(' ').next().and_then(|t| t.parse::<f64>().ok()) {
                perf.latencies.push(l);
            }
        } else {
            tail.push_str(&line);
            tail.push('\n');
        }
    }
    let number = |key: &str| field(&tail, key).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    perf.qps = number("Queries per second:").ok_or_else(|| format!("no qps in dnsperf output:\n{tail}"))?;
    perf.sent = number("Queries sent:").unwrap_or(0.0) as u64;
    perf.lost = number("Queries lost:").unwrap_or(0.0) as u64;
    perf.codes = field(&tail, "Response codes:").unwrap_or("").to_string();
    let _ = std::fs::remove_file(&out_path);
    Ok(perf)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

// ---------------------------------------------------------------------------------------------
// Memory.

#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
    pss_kb: u64,
    processes: usize,
}

fn kb(text: &str, key: &str) -> u64 {
    field(text, key).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// The processes of a process group.
fn group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command (which may hold spaces): state, ppid, pgrp, ...
            let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
            pgrp == Some(pgid)
        })
        .collect()
}

/// Summed over every process in the group (NSD runs a main process, xfrd and a server).
fn memory(pgid: u32) -> Memory {
    let mut m = Memory::default();
    for pid in group(pgid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        m.rss_kb += kb(&status, "VmRSS:");
        m.hwm_kb += kb(&status, "VmHWM:");
        m.pss_kb += kb(&rollup, "Pss:");
        m.processes += 1;
    }
    m
}

/// Nanoseconds the group's threads ran, and waited runnable for a CPU (`schedstat`): the
/// second is how much another process (another engineer's build) took from them.
#[derive(Debug, Default, Clone, Copy)]
struct Sched {
    ran: u64,
    waited: u64,
}

fn sched(pgid: u32) -> Sched {
    let mut total = Sched::default();
    for pid in group(pgid) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
            total.ran += fields.next().unwrap_or(0);
            total.waited += fields.next().unwrap_or(0);
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Programming latency (in process).

struct Programming {
    changes: usize,
    failed: usize,
    apply: Vec<f64>,
    visible: Vec<f64>,
}

/// Serves `zone` on a one-worker runtime and times Service / EndpointSlice changes until a UDP
/// query sees them.
fn programming_latency(zone: &Zone, changes: usize) -> Result<Programming> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut config = ServerConfig::new(SocketAddr::new(IpAddr::V4(PIER_IP), 0), Vec::new());
    config.udp_workers = 1;
    let server = rt.block_on(async { Server::bind(config, zone.clone()) })?;
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = rt.spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut result = Programming { changes, failed: 0, apply: Vec::new(), visible: Vec::new() };
    for i in 0..changes as u32 {
        // Spread the changes over the cluster; alternate ClusterIP (Service event) and headless
        // (EndpointSlice event) Services.
        let s = (i * 4999 + i / 2) % SERVICES;
        let s = if i % 2 == 0 { s & !1 } else { s | 1 };
        let (ns, name) = (namespace(s), format!("svc{s}"));
        let fresh = Ipv4Addr::new(10, 250, (i / 256) as u8, (i % 256) as u8);
        // The event as the watch delivers it: built before the clock starts.
        let (svc, sl) = if is_headless(s) {
            let mut ips = endpoint_ips(s);
            ips[0] = Ipv4Addr::new(172, 30, (i / 256) as u8, (i % 256) as u8);
            (None, Some(slice(&ns, &format!("{name}-1"), &name, "IPv4", endpoints_json(&ips), http_port())))
        } else {
            (Some(cluster_ip(&ns, &name, &[&fresh.to_string()], http_port())), None)
        };
        let expect = if is_headless(s) { Ipv4Addr::new(172, 30, (i / 256) as u8, (i % 256) as u8) } else { fresh };
        let start = Instant::now();
        if let Some(svc) = &svc {
            zone.apply_service(svc);
        }
        if let Some(sl) = &sl {
            zone.apply_slice(sl);
        }
        result.apply.push(start.elapsed().as_secs_f64());
        let deadline = start + Duration::from_secs(2);
        let mut seen = false;
        let mut id = (i as u16).wrapping_mul(7);
        while Instant::now() < deadline {
            id = id.wrapping_add(1);
            if let Some(m) = query(addr, &svc_name(s), RecordType::A, id, Duration::from_millis(500))
                && m.answers.iter().any(|r| matches!(&r.data, RData::A(a) if a.0 == expect))
            {
                seen = true;
                break;
            }
        }
        if seen {
            result.visible.push(start.elapsed().as_secs_f64());
        } else {
            result.failed += 1;
        }
    }
    let _ = stop.send(());
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), serving).await });
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Answers agree.

/// Compares rcode and the sorted Answer section of `sample` queries against pier's.
fn agreement(pier: SocketAddr, other: SocketAddr, sample: &[(String, RecordType)]) -> (usize, Vec<String>) {
    let mut same = 0;
    let mut diffs = Vec::new();
    for (i, (name, qtype)) in sample.iter().enumerate() {
        let id = 0x4000 + i as u16;
        let a = query(pier, name, *qtype, id, Duration::from_secs(1));
        let b = query(other, name, *qtype, id, Duration::from_secs(1));
        let view = |m: &Option<Message>| {
            m.as_ref().map(|m| {
                let mut answers: Vec<String> = m.answers.iter().map(record_text).collect();
                answers.sort();
                (m.metadata.response_code, answers)
            })
        };
        let (va, vb) = (view(&a), view(&b));
        if va.is_some() && va == vb {
            same += 1;
        } else if diffs.len() < 5 {
            let short = |v: &Option<(ResponseCode, Vec<String>)>| match v {
                Some((rc, answers)) => format!("{rc} with {} answers {:?}", answers.len(), answers.first()),
                None => "no response".to_string(),
            };
            diffs.push(format!("{name} {qtype}: pier {} vs {}", short(&va), short(&vb)));
        }
    }
    (same, diffs)
}

// ---------------------------------------------------------------------------------------------

struct Options {
    seconds: u32,
    rounds: usize,
    changes: usize,
}

fn options(args: &[String]) -> Options {
    let value = |flag: &str, default: usize| {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    Options { seconds: value("--seconds", 6) as u32, rounds: value("--rounds", 3), changes: value("--changes", 200) }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-pier") {
        if let Err(e) = serve_pier(args.get(i + 1).map_or("127.0.0.1", String::as_str)) {
            eprintln!("pier child: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: nothing to check then.
    if !args.iter().any(|a| a == "--bench") {
        println!("dnsperf: a benchmark; run it with `cargo bench -p pier-dns --bench dnsperf`");
        return ExitCode::SUCCESS;
    }
    match run(&options(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsperf benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = field(&cpuinfo, "model name").and_then(|v| v.strip_prefix(':')).unwrap_or("?").trim().to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("nproc {cores}, {model}, kernel {}, load average {}", kernel.trim(), load.join(" "))
}

fn run(opt: &Options) -> Result<()> {
    let missing: Vec<&str> = ["dnsperf", "taskset"].into_iter().filter(|t| find_tool(t).is_none()).collect();
    if !missing.is_empty() {
        println!(
            "dnsperf benchmark skipped: {} not installed (apt-get install -y dnsperf util-linux)",
            missing.join(", ")
        );
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        println!("dnsperf benchmark skipped: needs 2 CPUs (server on CPU 1, dnsperf on CPU 0), have {cores}");
        return Ok(());
    }
    let peers = [("unbound", "unbound"), ("NSD", "nsd"), ("Knot", "knotd")];
    let mut notes = Vec::new();
    for (name, tool) in peers {
        if find_tool(tool).is_none() {
            notes.push(format!("{name} skipped: `{tool}` not installed (apt-get install -y {})", name.to_lowercase()));
        }
    }
    for n in &notes {
        eprintln!("{n}");
    }

    let machine = machine();
    eprintln!("building the zone: {SERVICES} Services, {} endpoints", SERVICES * ENDPOINTS_PER_SERVICE);
    let t = Instant::now();
    let zone = build_zone();
    let build = t.elapsed();
    let zones = records_from_pier(&zone)?;
    let record_count: usize = zones.values().map(BTreeSet::len).sum();
    let names = zone.name_count();
    eprintln!("{names} names, {record_count} records, built in {build:.2?}");

    let tmp = TempDir::new()?;
    let dir = tmp.0.as_path();
    write_zone_files(dir, &zones)?;
    let queries_text = query_file();
    let queries = dir.join("queries.txt");
    std::fs::write(&queries, &queries_text)?;

    let mut servers: Vec<Running> = Vec::new();
    let mut pier = start_pier(dir)?;
    let answering = wait_ready(&mut pier, &svc_name(0))?;
    pier.startup += answering;
    servers.push(pier);
    for (name, tool) in peers {
        let Some(program) = find_tool(tool) else { continue };
        let started = match name {
            "unbound" => start_unbound(dir, &program, &zones),
            "NSD" => start_nsd(dir, &program, &zones),
            _ => start_knot(dir, &program, &zones),
        };
        let mut server = match started {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("{name} skipped: {e}"));
                continue;
            }
        };
        match wait_ready(&mut server, &svc_name(0)) {
            Ok(t) => {
                server.startup = t;
                servers.push(server);
            }
            Err(e) => {
                let log = std::fs::read_to_string(dir.join(format!("{}.err", name.to_lowercase()))).unwrap_or_default();
                notes.push(format!("{name} skipped: {e} {}", log.lines().last().unwrap_or("")));
            }
        }
    }
    for s in &servers {
        eprintln!("{} serving on {} (ready after {:.1?})", s.name, s.addr, s.startup);
    }

    // Same answers everywhere, on a sample of the query file.
    let sample: Vec<(String, RecordType)> = queries_text
        .lines()
        .step_by(QUERY_LINES / 200)
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), parse_qtype(t)))
        .collect();
    let pier_addr = servers[0].addr;
    let mut agree = Vec::new();
    for s in &servers[1..] {
        let (same, diffs) = agreement(pier_addr, s.addr, &sample);
        eprintln!("{}: {same}/{} answers identical to pier's", s.name, sample.len());
        for d in &diffs {
            eprintln!("  {d}");
        }
        agree.push(format!("{} {same}/{}", s.name, sample.len()));
    }

    // Warm up every server once, then rounds with the servers alternating.
    for s in &servers {
        dnsperf(s, &queries, dir, 1, None)?;
    }
    let mut qps: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut lost: Vec<u64> = vec![0; servers.len()];
    let mut codes: Vec<String> = vec![String::new(); servers.len()];
    let mut contention: Vec<Vec<Perf>> = vec![Vec::new(); servers.len()];
    for round in 0..opt.rounds {
        for (i, s) in servers.iter_mut().enumerate() {
            if let Some(why) = s.daemon.exited() {
                return Err(why.into());
            }
            let p = dnsperf(s, &queries, dir, opt.seconds, None)?;
            eprintln!(
                "round {}: {:<8} {:>9.0} qps, lost {}, server on CPU {:.0}% and waiting for it {:.0}%, dnsperf waiting {:.0}%",
                round + 1,
                s.name,
                p.qps,
                p.lost,
                p.server_cpu * 100.0,
                p.server_waited * 100.0,
                p.client_waited * 100.0
            );
            qps[i].push(p.qps);
            lost[i] += p.lost;
            contention[i].push(p.clone());
            codes[i] = p.codes;
        }
    }
    let medians: Vec<f64> = qps.iter().map(|v| median(v)).collect();
    let (rate_from, base) = match servers.iter().position(|s| s.name == "unbound") {
        Some(i) => ("unbound's median", medians[i]),
        None => ("pier's median (unbound missing)", medians[0]),
    };
    let rate = (base / 2.0).round().max(1000.0) as u32;
    let mut latency: Vec<Perf> = Vec::new();
    for s in &servers {
        let p = dnsperf(s, &queries, dir, opt.seconds, Some(rate))?;
        let mut sorted = p.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "{:<8} at {rate} qps: {:.0} qps, p50 {:.3} ms, p99 {:.3} ms, lost {}",
            s.name,
            p.qps,
            percentile(&sorted, 0.5) * 1e3,
            percentile(&sorted, 0.99) * 1e3,
            p.lost
        );
        latency.push(Perf { latencies: sorted, ..p });
    }
    let mems: Vec<Memory> = servers.iter().map(|s| memory(s.daemon.pgid())).collect();
    let server_names: Vec<&'static str> = servers.iter().map(|s| s.name).collect();
    let startups: Vec<Duration> = servers.iter().map(|s| s.startup).collect();
    // The servers stop before the in-process measurement so they do not compete for the CPUs.
    servers.clear();

    eprintln!("programming latency: {} changes", opt.changes);
    let prog = programming_latency(&zone, opt.changes)?;

    print_report(&Report {
        opt,
        machine,
        names,
        record_count,
        build,
        rate,
        rate_from,
        agree,
        notes,
        server_names,
        startups,
        qps,
        lost,
        codes,
        contention,
        medians,
        latency,
        mems,
        prog,
    });
    Ok(())
}

struct Report<'a> {
    opt: &'a Options,
    machine: String,
    names: usize,
    record_count: usize,
    build: Duration,
    rate: u32,
    rate_from: &'static str,
    agree: Vec<String>,
    notes: Vec<String>,
    server_names: Vec<&'static str>,
    startups: Vec<Duration>,
    qps: Vec<Vec<f64>>,
    lost: Vec<u64>,
    codes: Vec<String>,
    contention: Vec<Vec<Perf>>,
    medians: Vec<f64>,
    latency: Vec<Perf>,
    mems: Vec<Memory>,
    prog: Programming,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn ms(seconds: f64) -> f64 {
    seconds * 1e3
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_report(r: &Report<'_>) {
    let o = r.opt;
    let mut out = String::new();
    let w = &mut out;
    let p99 = |i: usize| percentile(&r.latency[i].latencies, 0.99);
    let _ = writeln!(w, "\n## Cluster DNS benchmark (issue 5)\n");
    let _ = writeln!(w, "- machine: {}", r.machine);
    let _ = writeln!(
        w,
        "- zone: {SERVICES} Services ({} ClusterIP, {} headless) in {NAMESPACES} namespaces, {} endpoints; \
         {} names, {} records (the same records for every server: peers' zone files and local-data written \
         from pier's answers to every generated name); built in {:.2?}",
        SERVICES / 2,
        SERVICES / 2,
        SERVICES * ENDPOINTS_PER_SERVICE,
        r.names,
        r.record_count,
        r.build
    );
    let _ = writeln!(w, "- queries: one {QUERY_LINES}-line file for every server, sent with EDNS (`-e`); {MIX}");
    let _ = writeln!(
        w,
        "- servers pinned to CPU {SERVER_CPU} with one worker (pier: current-thread runtime, udp_workers = 1, \
         its own process); dnsperf 2.10 pinned to CPU {CLIENT_CPU}, one thread, `-c 1 -q 100 -t 2 -e`"
    );
    let _ = writeln!(
        w,
        "- qps: median of {} closed-loop runs of {} s (servers alternating within a round); latency: one \
         `-Q {}` run of {} s ({}/2) with `-v`, percentiles over dnsperf's per-query latencies",
        o.rounds, o.seconds, r.rate, o.seconds, r.rate_from
    );
    let _ = writeln!(w, "- answers identical to pier's on a 200-query sample: {}", r.agree.join(", "));
    let ready: Vec<String> =
        r.server_names.iter().zip(&r.startups).map(|(n, t)| format!("{n} {:.1} s", t.as_secs_f64())).collect();
    let _ = writeln!(
        w,
        "- start to first answer: {} (pier builds its zone from API objects in the child)",
        ready.join(", ")
    );
    for n in &r.notes {
        let _ = writeln!(w, "- {n}");
    }
    let _ = writeln!(
        w,
        "\n| server | qps (runs) | median qps | lost | p50 / p99 / p99.9 at {} qps | RSS (peak) | PSS | pier qps / p99 / RSS ratio | server on CPU / waiting, dnsperf waiting | qps per server CPU-second (pier ratio) |",
        r.rate
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    let per_cpu: Vec<f64> = r
        .contention
        .iter()
        .map(|c| median(&c.iter().map(|p| p.qps / p.server_cpu.max(1e-3)).collect::<Vec<_>>()))
        .collect();
    for (i, name) in r.server_names.iter().enumerate() {
        let runs: Vec<String> = r.qps[i].iter().map(|q| format!("{:.0}k", q / 1e3)).collect();
        let l = &r.latency[i];
        let m = r.mems[i];
        let procs = if m.processes > 1 { format!(", {} processes", m.processes) } else { String::new() };
        let ratio = if i == 0 {
            "–".to_string()
        } else {
            format!(
                "{:.2}× / {:.2}× / {:.2}×",
                r.medians[0] / r.medians[i],
                p99(0) / p99(i),
                r.mems[0].rss_kb as f64 / m.rss_kb.max(1) as f64
            )
        };
        let c = &r.contention[i];
        let share = |f: fn(&Perf) -> f64| median(&c.iter().map(f).collect::<Vec<_>>()) * 100.0;
        let busy = format!(
            "{:.0}% / {:.0}%, {:.0}%",
            share(|p| p.server_cpu),
            share(|p| p.server_waited),
            share(|p| p.client_waited)
        );
        let cpu_ratio = if i == 0 { String::new() } else { format!(" ({:.2}×)", per_cpu[0] / per_cpu[i]) };
        let _ = writeln!(
            w,
            "| {name} | {} | **{:.0}** | {} | {:.3} / **{:.3}** / {:.3} ms (lost {}, server waiting {:.0}%) | {:.1} MB ({:.1}){procs} | {:.1} MB | {ratio} | {busy} | {:.0}{cpu_ratio} |",
            runs.join(", "),
            r.medians[i],
            r.lost[i],
            ms(percentile(&l.latencies, 0.5)),
            ms(percentile(&l.latencies, 0.99)),
            ms(percentile(&l.latencies, 0.999)),
            l.lost,
            l.server_waited * 100.0,
            mb(m.rss_kb),
            mb(m.hwm_kb),
            mb(m.pss_kb),
            per_cpu[i],
        );
    }
    let _ = writeln!(
        w,
        "\n\"waiting\" is the share of a run's wall time the process was runnable but another process held \
         its CPU (`/proc/<pid>/task/*/schedstat`, median over the qps runs): the machine is shared, and a server \
         waiting 40% of the time lost that much of its core. \"qps per server CPU-second\" divides each run's \
         qps by the server's on-CPU share to factor that out (its softirq work on the client's CPU is not \
         counted, alike for every server); the goals below use the raw medians."
    );
    let _ = writeln!(w, "\nResponse codes (last qps run):");
    for (i, name) in r.server_names.iter().enumerate() {
        let _ = writeln!(w, "- {name}: {}", r.codes[i]);
    }

    let prog = &r.prog;
    let mut visible = prog.visible.clone();
    visible.sort_by(f64::total_cmp);
    let mut apply = prog.apply.clone();
    apply.sort_by(f64::total_cmp);
    let _ = writeln!(
        w,
        "\nDNS programming latency (in process: `Zone::apply_service` / `apply_slice` on the served \
         10,000-Service zone until a UDP query to the running server returns the new answer; the watch and \
         API path are not included): {} changes (half Services, half EndpointSlices), {} not seen within 2 s; \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; of which the apply call p50 {:.3} ms, p99 {:.3} ms",
        prog.changes,
        prog.failed,
        ms(percentile(&visible, 0.5)),
        ms(percentile(&visible, 0.99)),
        ms(visible.last().copied().unwrap_or(f64::NAN)),
        ms(percentile(&apply, 0.5)),
        ms(percentile(&apply, 0.99)),
    );

    let _ = writeln!(w, "\n### Goals (issue 5)\n");
    let find = |n: &str| r.server_names.iter().position(|s| *s == n);
    let pier_qps = r.medians[0];
    let mut lines = Vec::new();
    match find("unbound") {
        Some(i) => lines.push(format!(
            "- qps ≥ 1.0× unbound: {:.2}× — {}",
            pier_qps / r.medians[i],
            verdict(pier_qps >= r.medians[i])
        )),
        None => lines.push("- qps ≥ 1.0× unbound: not measured (unbound missing)".into()),
    }
    for peer in ["NSD", "Knot"] {
        match find(peer) {
            Some(i) => lines.push(format!(
                "- qps ≥ 0.5× {peer}: {:.2}× — {}",
                pier_qps / r.medians[i],
                verdict(pier_qps >= 0.5 * r.medians[i])
            )),
            None => lines.push(format!("- qps ≥ 0.5× {peer}: not measured ({peer} missing)")),
        }
    }
    lines.push(format!("- qps ≥ 50,000: {pier_qps:.0} — {}", verdict(pier_qps >= 50_000.0)));
    let pier_p99 = p99(0);
    lines.push(format!(
        "- p99 < 1 ms at {} qps: {:.3} ms, lost {} — {}",
        r.rate,
        ms(pier_p99),
        r.latency[0].lost,
        verdict(pier_p99 < 1e-3 && r.latency[0].lost == 0)
    ));
    let worse: Vec<String> = (1..r.server_names.len())
        .filter(|&i| pier_p99 > p99(i))
        .map(|i| format!("{} {:.3} ms", r.server_names[i], ms(p99(i))))
        .collect();
    lines.push(format!(
        "- p99 no more than the peers': {}",
        if worse.is_empty() { "met".to_string() } else { format!("MISSED (lower: {})", worse.join(", ")) }
    ));
    let rss = mb(r.mems[0].rss_kb);
    let hwm = mb(r.mems[0].hwm_kb);
    lines.push(format!("- pier RSS < 93 MB: {rss:.1} MB (peak {hwm:.1} MB) — {}", verdict(hwm < 93.0)));
    if let Some(i) = find("NSD") {
        lines.push(format!(
            "- pier RSS ≤ 1.5× NSD's (D3): {:.2}× of NSD's summed RSS, {:.2}× of its PSS — {}",
            r.mems[0].rss_kb as f64 / r.mems[i].rss_kb.max(1) as f64,
            r.mems[0].pss_kb as f64 / r.mems[i].pss_kb.max(1) as f64,
            verdict(r.mems[0].rss_kb as f64 <= 1.5 * r.mems[i].rss_kb as f64)
        ));
    }
    let p99_prog = percentile(&visible, 0.99);
    lines.push(format!(
        "- programming latency p99 < 100 ms (in process): {:.3} ms — {}",
        ms(p99_prog),
        verdict(prog.failed == 0 && p99_prog < 0.1)
    ));
    for l in lines {
        let _ = writeln!(w, "{l}");
    }
    println!("{out}");
}
