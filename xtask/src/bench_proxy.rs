//! `cargo xtask bench proxy`: rule programming of the nftables data plane against
//! kube-proxy's iptables mode, side by side in one run (issue 4).
//!
//! Every load happens in a fresh network namespace this benchmark creates (nothing in it
//! routes anywhere, no packet is sent) and deletes:
//!
//! - **full sync**: pier's `Nftables::full_sync` of N Services × M endpoints (the real data
//!   plane code, the real `nft`), against `iptables-restore` (legacy and nft back ends) loading
//!   the ruleset kube-proxy's iptables mode writes for the same Services — `KUBE-SERVICES`
//!   jumps, one `KUBE-SVC-*` chain per Service with `statistic` rules, one `KUBE-SEP-*` chain
//!   per endpoint with its masquerade mark and DNAT;
//! - **add one Service** while `--existing` Services (1 endpoint each) are programmed: pier's
//!   incremental `apply` against iptables-restore's full reload (what kube-proxy's iptables mode
//!   does when it cannot do a partial sync) of the table plus one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pier_proxy::DataPlane;
use pier_proxy::nft::Nftables;
use pier_proxy::table::{Backend, NodeContext, Protocol, ServiceKey, ServicePort};

use crate::ProxyArgs;

/// A fresh network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        let name = format!("pier-bench-proxy-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let ok = Command::new("ip").args(["netns", "add", &name]).status().context("running ip")?.success();
        if !ok {
            bail!("ip netns add {name} failed (this benchmark needs root)");
        }
        Ok(Netns(name))
    }

    /// Runs `f` on a thread inside the namespace; processes it starts are inside too.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn node() -> NodeContext {
    NodeContext {
        name: "bench-node".into(),
        pod_cidr: "10.244.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
        served_locally: Vec::new(),
    }
}

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + 16 + i)
}

fn endpoint(i: u32, j: u32) -> Ipv4Addr {
    // 10.244.0.0/16 minus the network and gateway addresses.
    Ipv4Addr::from(0x0af4_0000 + (i * 16 + j) % 65_000 + 2)
}

fn service_port(i: u32, endpoints: u32) -> ServicePort {
    ServicePort {
        service: ServiceKey::new("default", format!("svc-{i}")),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ips: vec![vip(i)],
        node_port: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        cluster_endpoints: (0..endpoints).map(|j| Backend { ip: endpoint(i, j), port: 8080 }).collect(),
        local_endpoints: Vec::new(),
    }
}

fn table(services: u32, endpoints: u32) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
    (0..services).map(|i| (ServiceKey::new("default", format!("svc-{i}")), vec![service_port(i, endpoints)])).collect()
}

/// kube-proxy's iptables-mode nat table for the same Services (`iptables-save` format).
fn iptables_ruleset(services: u32, endpoints: u32) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for c in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    let _ = writeln!(rules, "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES");
    let _ = writeln!(rules, "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES");
    let _ = writeln!(rules, "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING");
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0");
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    for i in 0..services {
        let svc = format!("KUBE-SVC-{i:016X}");
        let name = format!("default/svc-{i}:http");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j {svc}",
            vip(i)
        );
        let _ = writeln!(
            rules,
            "-A {svc} ! -s 10.244.0.0/16 -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            vip(i)
        );
        for j in 0..endpoints {
            let sep = format!("KUBE-SEP-{i:08X}{j:08X}");
            let ep = endpoint(i, j);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let left = endpoints - j;
            if left > 1 {
                let p = 1.0 / f64::from(left);
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}:8080\" -m statistic --mode random --probability {p:.11} -j {sep}"
                );
            } else {
                let _ = writeln!(rules, "-A {svc} -m comment --comment \"{name} -> {ep}:8080\" -j {sep}");
            }
            let _ = writeln!(rules, "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ");
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:8080"
            );
        }
    }
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{chains}{rules}COMMIT\n"
    )
}

fn iptables_restore(tool: &str, ruleset: &str) -> Result<Duration> {
    use std::io::Write as _;
    let started = Instant::now();
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    child.stdin.take().context("stdin")?.write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(args: &ProxyArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench proxy needs root (it creates network namespaces)");
    }
    let (n, m, rounds) = (args.services, args.endpoints, args.rounds);
    println!("# rule programming: {n} Services x {m} endpoints, {rounds} rounds, each in a fresh network namespace\n");

    let mut pier_full = Vec::new();
    for r in 0..rounds {
        let ns = Netns::new(&format!("full{r}"))?;
        let t = table(n, m);
        pier_full.push(ns.run(move || {
            let mut nft = Nftables::new(node());
            let started = Instant::now();
            nft.full_sync(&t).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(started.elapsed())
        })?);
    }
    let ruleset = iptables_ruleset(n, m);
    let mut peers: Vec<(&str, Vec<Duration>)> = Vec::new();
    for tool in ["iptables-legacy-restore", "iptables-nft-restore"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            println!("({tool} is not installed: apt-get install iptables)");
            continue;
        }
        let mut times = Vec::new();
        for r in 0..rounds {
            let ns = Netns::new(&format!("ipt{r}"))?;
            let rs = ruleset.clone();
            let tool_s = tool.to_string();
            times.push(ns.run(move || iptables_restore(&tool_s, &rs))?);
        }
        peers.push((tool, times));
    }
    let pier_med = median(pier_full.clone());
    println!("| full sync | median | rounds | pier is |");
    println!("|---|---|---|---|");
    println!(
        "| pier nftables (`nft -f`, one transaction) | {} | {} | |",
        ms(pier_med),
        pier_full.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    for (tool, times) in &peers {
        let med = median(times.clone());
        println!(
            "| {tool} (kube-proxy iptables ruleset) | {} | {} | {:.1}x faster |",
            ms(med),
            times.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            med.as_secs_f64() / pier_med.as_secs_f64()
        );
    }

    // One more Service while many exist.
    let existing = args.existing;
    println!("\n# adding one Service (1 endpoint) while {existing} exist\n");
    let ns = Netns::new("add")?;
    let adds = args.adds;
    let pier_adds = ns.run(move || {
        let mut nft = Nftables::new(node());
        nft.full_sync(&table(existing, 1)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut times = Vec::new();
        for k in 0..adds {
            let sp = service_port(existing + k, 1);
            let started = Instant::now();
            nft.apply(&[(sp.service.clone(), vec![sp])]).map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(started.elapsed());
        }
        Ok(times)
    })?;
    drop(ns);
    println!("| add one Service | median | max | pier is |");
    println!("|---|---|---|---|");
    let pier_add = median(pier_adds.clone());
    println!(
        "| pier nftables (incremental transaction) | {} | {} | |",
        ms(pier_add),
        ms(pier_adds.iter().max().copied().unwrap_or_default())
    );
    let plus_one = iptables_ruleset(existing + 1, 1);
    for tool in ["iptables-legacy-restore", "iptables-nft-restore"] {
        if !peers.iter().any(|(t, _)| *t == tool) {
            continue;
        }
        let ns = Netns::new("add-ipt")?;
        let base = iptables_ruleset(existing, 1);
        let plus = plus_one.clone();
        let tool_s = tool.to_string();
        let times = ns.run(move || {
            iptables_restore(&tool_s, &base)?;
            let mut times = Vec::new();
            for _ in 0..3 {
                times.push(iptables_restore(&tool_s, &plus)?);
            }
            Ok(times)
        })?;
        let med = median(times.clone());
        println!(
            "| {tool}, full reload of {} Services | {} | {} | {:.0}x faster |",
            existing + 1,
            ms(med),
            ms(times.iter().max().copied().unwrap_or_default()),
            med.as_secs_f64() / pier_add.as_secs_f64()
        );
    }
    Ok(())
}
