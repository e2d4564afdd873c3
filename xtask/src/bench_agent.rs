//! `cargo xtask bench agent`: the memory of a node agent serving many Services (issue 4: agent
//! RSS with 30,000 Services under 100 MB).
//!
//! A real `pier server` runs in the sealed node namespace ([`crate::sealed`]). A client thread
//! inside that namespace creates `--services` selector-less Services (one TCP port each) in
//! namespace `bench`, each with an EndpointSlice of `--endpoints` ready endpoints, as
//! kube-proxy's scale tests do. Then a real `pier agent` joins from the peer namespace (the
//! other end of the node's link plays the second machine), in its default nftables mode, with
//! cluster DNS and the pod manager running as on any node: it lists and watches every Service
//! and EndpointSlice, builds its DNS zone and programs its own nftables table.
//!
//! The agent's RSS is sampled every 50 ms from its start. It has programmed everything when its
//! `pier_proxy_services` gauge (`/metrics` on the peer namespace's 127.0.0.1:10249) reaches the
//! Services created; the map of Service addresses in its table is then counted with the real
//! `nft`. After `--settle` seconds the settled RSS and the kernel's high-water mark (`VmHWM`)
//! are reported against the goal, with kube-proxy's published figure beside them (it is not
//! installable here to run side by side).
//!
//! Then the agent is killed and started again, as after a crash or an upgrade: the new one finds
//! the table the first left, and its first sync replaces it (a generational replace at this
//! size). Its settled RSS and peak are reported too.
//!
//! Everything runs in the two namespaces the benchmark creates and deletes; the machine's own
//! namespace only starts processes and reads `/proc`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::AgentArgs;
use crate::procfs::{self, proc_status_bytes};
use crate::report::{machine, mb, ms, print_table, revision, verdict};
use crate::sealed::{self, Sealed};

const NAMESPACE: &str = "bench";
/// Issue 4's goal.
const GOAL_RSS: u64 = 100 * 1000 * 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CREATE_CONCURRENCY: usize = 32;
/// Bound on the agent registering and programming everything.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const METRICS_EVERY: Duration = Duration::from_millis(500);
const AGENT_NODE: &str = "pier-node-2";

/// The endpoint addresses of Service `i`: pod addresses of the agent's future range, unique per
/// Service as long as `endpoints` ≤ 16 and there are fewer than 4,000 Services per /16.
fn endpoint(i: u32, j: u32) -> String {
    let n = i * 16 + j;
    format!("10.{}.{}.{}", 100 + n / 65_536, (n / 256) % 256, n % 256)
}

fn service_body(i: u32) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i:05}")},
        "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
    }))?)
}

fn slice_body(i: u32, endpoints: u32) -> Result<EndpointSlice> {
    let eps: Vec<_> = (0..endpoints)
        .map(|j| json!({"addresses": [endpoint(i, j)], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i:05}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }))?)
}

async fn bounded<T>(what: &str, f: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// Creates the Services and their slices through the API; returns how long it took.
async fn populate(kubeconfig: &Path, services: u32, endpoints: u32) -> Result<Duration> {
    let kc = Kubeconfig::read_from(kubeconfig).context("reading the server's kubeconfig")?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.default_retry = false;
    ensure!(config.cluster_url.host() == Some("127.0.0.1"), "the kubeconfig points at {}", config.cluster_url);
    let client = kube::Client::try_from(config)?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    bounded("creating the bench namespace", Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns))
        .await?;
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    let t0 = Instant::now();
    futures::stream::iter(0..services)
        .map(|i| {
            let (svc_api, slice_api) = (svc_api.clone(), slice_api.clone());
            async move {
                let pp = PostParams::default();
                bounded(&format!("creating Service svc-{i:05}"), svc_api.create(&pp, &service_body(i)?)).await?;
                bounded(
                    &format!("creating EndpointSlice svc-{i:05}-1"),
                    slice_api.create(&pp, &slice_body(i, endpoints)?),
                )
                .await?;
                if i > 0 && i % 5000 == 0 {
                    eprintln!("xtask: {i} Services created");
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(t0.elapsed())
}

/// The agent's `pier_proxy_services` gauge, read with curl on the peer namespace's loopback.
fn services_gauge(peer: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", peer, "curl", "-s", "--max-time", "2", "http://127.0.0.1:10249/metrics"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("pier_proxy_services ")).and_then(|v| v.trim().parse().ok())
}

/// Elements of the agent's `service-ips` map for port 80/TCP (the benchmark's Services), as the
/// real `nft` lists them: the map of whichever generation is live (`service-ips`, or
/// `service-ips-g1` after a generational replace).
fn programmed_in_nft(peer: &str) -> Result<usize> {
    let mut errors = Vec::new();
    for map in ["service-ips", "service-ips-g1"] {
        let out = Command::new("ip")
            .args(["netns", "exec", peer, "nft", "list", "map", "ip", "pier", map])
            .stdin(Stdio::null())
            .output()
            .context("running nft")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).matches(" . tcp . 80 ").count());
        }
        errors.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    bail!("nft list map: {}", errors.join("; "))
}

struct Agent {
    child: Child,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(pier: &Path, cluster: &Sealed, wrapper: Option<&str>) -> Result<Agent> {
        let dir = cluster.data_dir.join("agent");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("agent.log");
        let child = Command::new("ip")
            .args(["netns", "exec", cluster.peer()])
            .args(wrapper.into_iter().flat_map(str::split_whitespace))
            .arg(pier)
            .args(["agent", "--server", &format!("https://{}:6443", sealed::NODE_IP), "--token-file"])
            .arg(cluster.data_dir.join("token"))
            .arg("--ca-file")
            .arg(cluster.data_dir.join("pki/ca.crt"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--node-ip", sealed::PEER_IP, "--node-name", AGENT_NODE])
            .env("RUST_LOG", "info")
            .env("PIER_HEAP_STATS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting pier agent in the peer namespace")?;
        Ok(Agent { child, log })
    }

    /// The agent's own pid, under a wrapper too (`--agent-wrapper` runs it as a child).
    fn pid(&self) -> u32 {
        procfs::find_descendant(self.child.id(), "pier").unwrap_or(self.child.id())
    }

    /// jemalloc's (allocated, active, resident, metadata) bytes from the agent's last `heap`
    /// log line.
    fn heap(&self) -> Option<(u64, u64, u64, u64)> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text.lines().rev().find(|l| l.contains(" heap") && l.contains("allocated="))?;
        let field = |name: &str| -> Option<u64> {
            let at = line.find(&format!("{name}="))? + name.len() + 1;
            line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        Some((field("allocated")?, field("active")?, field("resident")?, field("metadata")?))
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            bail!("pier agent exited ({status}):\n{}", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent first: under a wrapper it is not the child.
        let pid = self.pid();
        if pid != self.child.id() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Measured {
    created: Duration,
    first: AgentRun,
    /// The same agent started again over the table the first one left (an upgrade, a crash):
    /// its first sync replaces a table that exists.
    restarted: AgentRun,
    server_rss: u64,
}

/// One agent from its start until it has programmed everything and settled.
struct AgentRun {
    programmed: Duration,
    in_nft: usize,
    rss_programmed: u64,
    rss_settled: u64,
    hwm: u64,
    /// jemalloc's figures at the end, when the agent logged them.
    heap: Option<(u64, u64, u64, u64)>,
}

fn run_agent(args: &AgentArgs, pier: &Path, cluster: &Sealed) -> Result<(Agent, AgentRun)> {
    let services = args.services;
    let mut agent = Agent::start(pier, cluster, args.agent_wrapper.as_deref())?;
    let t0 = Instant::now();
    let mut next_metrics = t0;
    let (programmed, rss_programmed) = loop {
        agent.check_alive()?;
        if t0.elapsed() > PROGRAM_TIMEOUT {
            bail!("the agent had not programmed {services} Services after {PROGRAM_TIMEOUT:?}");
        }
        if Instant::now() >= next_metrics {
            next_metrics += METRICS_EVERY;
            if services_gauge(cluster.peer()).is_some_and(|n| n >= u64::from(services)) {
                break (t0.elapsed(), proc_status_bytes(agent.pid(), "VmRSS").unwrap_or(0));
            }
        }
        #[allow(clippy::disallowed_methods)] // a plain thread, not an async worker
        std::thread::sleep(SAMPLE_EVERY);
    };
    eprintln!("xtask: programmed after {}; settling for {} s", ms(programmed), args.settle);
    let in_nft = programmed_in_nft(cluster.peer())?;
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(Duration::from_secs(args.settle.into()));
    agent.check_alive()?;
    #[allow(clippy::disallowed_methods)] // one more period of the agent's heap log
    std::thread::sleep(Duration::from_secs(3));
    let run = AgentRun {
        heap: agent.heap(),
        programmed,
        in_nft,
        rss_programmed,
        rss_settled: proc_status_bytes(agent.pid(), "VmRSS").unwrap_or(0),
        hwm: proc_status_bytes(agent.pid(), "VmHWM").unwrap_or(0),
    };
    Ok((agent, run))
}

fn measure(args: &AgentArgs, pier: &Path, cluster: &mut Sealed) -> Result<Measured> {
    let services = args.services;
    eprintln!("xtask: creating {services} Services with {} endpoints each", args.endpoints);
    let created = {
        let netns = format!("/run/netns/{}", cluster.netns);
        let kubeconfig = cluster.kubeconfig();
        let endpoints = args.endpoints;
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || -> Result<Duration> {
                sealed::enter_netns(&netns)?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(populate(&kubeconfig, services, endpoints))
            })?
            .join()
            .map_err(|_| anyhow!("the client thread panicked"))??
    };
    cluster.check_alive()?;
    eprintln!("xtask: created in {}; starting pier agent in {}", ms(created), cluster.peer());
    let (agent, first) = run_agent(args, pier, cluster)?;
    // Killed (a crash; a stop leaves the table as well): the next agent finds its table.
    drop(agent);
    eprintln!("xtask: agent killed; starting it again over the table it left");
    let (_agent, restarted) = run_agent(args, pier, cluster)?;
    Ok(Measured { created, first, restarted, server_rss: proc_status_bytes(cluster.pid, "VmRSS").unwrap_or(0) })
}

pub fn run(args: &AgentArgs, pier: &Path) -> Result<()> {
    let machine = machine();
    for r in sealed::remove_stale(None) {
        eprintln!("xtask: removed what an earlier killed run left: {r}");
    }
    let mut cluster = Sealed::create(None)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    eprintln!("xtask: starting {} server in the sealed network namespace {}", pier.display(), cluster.netns);
    rt.block_on(cluster.start(pier, &args.common.server_env))?;
    let outcome = measure(args, pier, &mut cluster);
    let cleanup = cluster.cleanup();
    let m = outcome?;
    ensure!(cleanup.survivors == 0, "{} processes survived the cleanup", cleanup.survivors);

    println!("# pier agent memory with {} Services × {} endpoints", args.services, args.endpoints);
    println!();
    println!(
        "machine: {} CPUs, {}, {} RAM, {}; revision {}",
        machine.cpus,
        machine.model,
        machine.memory,
        machine.kernel,
        revision()
    );
    println!(
        "command: cargo xtask bench agent --services {} --endpoints {} --settle {}",
        args.services, args.endpoints, args.settle
    );
    println!();
    let passes = |r: &AgentRun| r.rss_settled < GOAL_RSS && r.hwm < GOAL_RSS && r.in_nft == args.services as usize;
    let ok = passes(&m.first) && passes(&m.restarted);
    let mut rows = Vec::new();
    for (r, when) in [(&m.first, ""), (&m.restarted, ", restarted over its table")] {
        rows.extend([
            (
                format!("agent RSS, {} Services programmed and settled{when}", args.services),
                format!("< {}", mb(GOAL_RSS)),
                mb(r.rss_settled),
                verdict(r.rss_settled < GOAL_RSS),
            ),
            (
                format!("agent peak RSS (VmHWM), start included{when}"),
                format!("< {}", mb(GOAL_RSS)),
                mb(r.hwm),
                verdict(r.hwm < GOAL_RSS),
            ),
            (
                format!("Services in the agent's nftables map (nft){when}"),
                args.services.to_string(),
                r.in_nft.to_string(),
                verdict(r.in_nft == args.services as usize),
            ),
        ]);
    }
    print_table(&rows);
    println!();
    for (r, who) in [(&m.first, "agent"), (&m.restarted, "restarted agent")] {
        println!("- {who}: start → all {} Services programmed: {}", args.services, ms(r.programmed));
        println!("- {who}: RSS when the last Service was programmed: {}", mb(r.rss_programmed));
        if let Some((allocated, active, resident, metadata)) = r.heap {
            println!(
                "- {who}: heap (jemalloc) at the end: {} allocated, {} in active pages, {} resident ({} of it jemalloc's metadata)",
                mb(allocated),
                mb(active),
                mb(resident),
                mb(metadata)
            );
        }
    }
    println!("- creating the Services and slices through the API: {}", ms(m.created));
    println!("- the server (store, controllers and its own node) meanwhile: {}", mb(m.server_rss));
    println!(
        "- kube-proxy, published (kubernetes/kubernetes PR #126013, nftables mode, kind): peak ~260 MiB with 10,000 Services × 2 endpoints"
    );
    println!("- overall: {}", verdict(ok));
    Ok(())
}
