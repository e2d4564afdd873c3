//! `cargo xtask bench proxy`: rule programming of the nftables data plane against
//! kube-proxy's iptables mode, side by side in one run (issue 4).
//!
//! Every load happens in a fresh network namespace this benchmark creates (nothing in it
//! routes anywhere, no packet is sent) and deletes:
//!
//! - **full sync**: pier's `Nftables::full_sync` of N Services × M endpoints (the real data
//!   plane code: nf_tables netlink batches, and for comparison the same transaction as a
//!   script for the real `nft`), with the netlink sync split into its phases (render, encode,
//!   kernel), against `iptables-restore` (legacy and nft back ends) loading
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
use pier_proxy::nft::Nftables;
use pier_proxy::nft::netlink::Netlink;
use pier_proxy::nft::render;
use pier_proxy::table::{Backend, NodeContext, Protocol, ServiceKey, ServicePort};
use pier_proxy::{Change, DataPlane};

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

/// Milliseconds, with enough digits for sub-millisecond times (an incremental add).
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.1} ms") }
}

pub fn run(args: &ProxyArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("cargo xtask bench proxy needs root (it creates network namespaces)");
    }
    let (n, m, rounds) = (args.services, args.endpoints, args.rounds);
    println!("# rule programming: {n} Services x {m} endpoints, {rounds} rounds, each in a fresh network namespace\n");

    let mut pier_full = Vec::new();
    let mut pier_cli_full = Vec::new();
    for r in 0..rounds {
        for cli in [false, true] {
            let ns = Netns::new(&format!("full{r}{}", if cli { "c" } else { "n" }))?;
            let t = table(n, m);
            let took = ns.run(move || {
                let mut nft = if cli { Nftables::with_cli(node()) } else { Nftables::new(node()) };
                let started = Instant::now();
                nft.full_sync(&t).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(started.elapsed())
            })?;
            if cli { pier_cli_full.push(took) } else { pier_full.push(took) }
        }
    }
    let mut phases = Vec::new();
    for r in 0..rounds {
        let ns = Netns::new(&format!("phases{r}"))?;
        let t = table(n, m);
        phases.push(ns.run(move || full_sync_phases(&t))?);
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
        "| pier nftables (netlink batch, one transaction) | {} | {} | |",
        ms(pier_med),
        pier_full.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    let cli_med = median(pier_cli_full.clone());
    println!(
        "| pier nftables, same transaction through `nft -f` | {} | {} | {:.1}x faster |",
        ms(cli_med),
        pier_cli_full.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        cli_med.as_secs_f64() / pier_med.as_secs_f64()
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

    let phase = |i: usize| median(phases.iter().map(|p| p[i]).collect());
    println!(
        "\nwhere pier's netlink full sync goes (medians): render {} | encode {} ({} messages, {:.1} MB) | kernel (sendmsg, commit) {} | replies {}",
        ms(phase(0)),
        ms(phase(1)),
        phases.first().map(|p| p[4].as_nanos()).unwrap_or_default(),
        phases.first().map(|p| p[5].as_nanos() as f64 / 1e6).unwrap_or_default(),
        ms(phase(2)),
        ms(phase(3)),
    );

    // One more Service while many exist.
    let existing = args.existing;
    println!("\n# adding one Service (1 endpoint) while {existing} exist\n");
    let adds = args.adds;
    let add_one = |cli: bool| -> Result<Vec<Duration>> {
        let ns = Netns::new(if cli { "add-cli" } else { "add" })?;
        ns.run(move || {
            let mut nft = if cli { Nftables::with_cli(node()) } else { Nftables::new(node()) };
            nft.full_sync(&table(existing, 1)).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut times = Vec::new();
            for k in 0..adds {
                let sp = service_port(existing + k, 1);
                let started = Instant::now();
                nft.apply(&[Change { service: sp.service.clone(), old: Vec::new(), new: vec![sp] }])
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                times.push(started.elapsed());
            }
            // The adds are live: the last one's cluster IP is in the table.
            let last = format!("{} . tcp . 80", vip(existing + adds.saturating_sub(1)));
            let listing = pier_proxy::nft::list_table().map_err(|e| anyhow::anyhow!("{e}"))?.unwrap_or_default();
            if adds > 0 && !listing.contains(&last) {
                bail!("the added Services are not in the table ({last} missing)");
            }
            Ok(times)
        })
    };
    let pier_adds = add_one(false)?;
    let pier_cli_adds = add_one(true)?;
    let ns = Netns::new("add-phases")?;
    let add_phases = ns.run(move || add_one_phases(existing, adds))?;
    drop(ns);
    println!("| add one Service | median | max | pier is |");
    println!("|---|---|---|---|");
    let pier_add = median(pier_adds.clone());
    println!(
        "| pier nftables (incremental netlink transaction) | {} | {} | |",
        ms(pier_add),
        ms(pier_adds.iter().max().copied().unwrap_or_default())
    );
    let cli_add = median(pier_cli_adds.clone());
    println!(
        "| pier nftables, same transaction through `nft -f` | {} | {} | {:.0}x faster |",
        ms(cli_add),
        ms(pier_cli_adds.iter().max().copied().unwrap_or_default()),
        cli_add.as_secs_f64() / pier_add.as_secs_f64()
    );
    let phase = |i: usize| median(add_phases.iter().map(|p| p[i]).collect());
    println!(
        "\nwhere one netlink add goes (medians): render + encode {} | kernel (sendmsg: build, validate, commit) {} | replies {}",
        ms(phase(0)),
        ms(phase(1)),
        ms(phase(2)),
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

/// One netlink full sync done step by step with the data plane's own pieces: rendering the
/// Services, encoding the batch, the kernel's work inside `sendmsg` (parse, build, commit),
/// and reading the replies. Returns those four times, then the message count and batch bytes
/// (as nanoseconds-typed numbers, to keep one vector).
fn full_sync_phases(t: &BTreeMap<ServiceKey, Vec<ServicePort>>) -> Result<[Duration; 6]> {
    let node = node();
    let started = Instant::now();
    let mut next = 0;
    let objects: Vec<_> = t
        .values()
        .map(|ports| {
            render::render_service(ports, &mut |_| {
                next += 1;
                next
            })
        })
        .collect();
    let rendered = started.elapsed();
    let started = Instant::now();
    let classes: std::collections::BTreeSet<u32> =
        render::preset_classes().chain(objects.iter().flat_map(|o| o.classes.iter().copied())).collect();
    let classes: Vec<_> = classes.into_iter().map(render::class_objects).collect();
    let base = render::base(&node, &render::counts(objects.iter(), classes.len()));
    let mut sock = Netlink::open().context("netlink socket")?;
    let mut batch = sock.batch();
    for op in render::full_ops(&base, &classes, objects.iter()) {
        batch.op(&op).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let messages = batch.commands();
    let encoded = started.elapsed();
    let (kernel, replies, bytes) = sock.send_timed(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok([rendered, encoded, kernel, replies, Duration::from_nanos(messages as u64), Duration::from_nanos(bytes as u64)])
}

/// Adds Services one at a time on top of `existing` with the data plane's own pieces, timing
/// userspace (render and encode) apart from the kernel's `sendmsg` and the replies.
fn add_one_phases(existing: u32, adds: u32) -> Result<Vec<[Duration; 3]>> {
    let node = node();
    let mut nft = Nftables::new(node.clone());
    nft.full_sync(&table(existing, 1)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sock = Netlink::open().context("netlink socket")?;
    let empty = render::ServiceObjects::default();
    let mut out = Vec::new();
    for k in 0..adds {
        let started = Instant::now();
        let sp = service_port(existing + k, 1);
        // Numbers above any the full sync handed out (it numbered `existing` sets from 1).
        let new = render::render_service(&[sp], &mut |_| existing + k + 1);
        let mut batch = sock.batch();
        for op in render::delta_ops(&empty, &new, &[], &[]) {
            batch.op(&op).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let user = started.elapsed();
        let (kernel, replies, _) = sock.send_timed(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        out.push([user, kernel, replies]);
    }
    Ok(out)
}
