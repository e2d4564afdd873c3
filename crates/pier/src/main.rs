//! The `pier` binary: `pier server` runs the whole cluster on this machine (API server on its
//! embedded store, controllers and — in later stages — the node agent); `pier agent` joins a
//! machine as a node.

mod cluster_dns;
mod kubelet;
mod netinfo;
mod node_streams;
mod pki;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ipnet::IpNet;

#[derive(Parser, Debug)]
#[command(name = "pier", version, about = "Kubernetes Service networking as one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server, its store, the controllers and the node agent on this machine.
    Server(Box<ServerArgs>),
    /// Join this machine to a pier cluster as a node.
    Agent(Box<AgentArgs>),
    /// Inspect the Service data plane of the node in this network namespace.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Clean up after a node agent that is gone for good.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Kill every process of the pods recorded in the node's data directory (pods outlive their
    /// agent by design, so that restarting it keeps them running).
    KillPods {
        /// The data directory of the `pier server` or `pier agent` that ran the pods.
        #[arg(long, default_value = "/var/lib/pier")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ProxyCommand {
    /// Print the live nftables ruleset pier programmed (one comment per Service port), as
    /// `iptables-save` shows kube-proxy's.
    Rules,
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Where the store, the credentials and kubeconfig.yaml live.
    #[arg(long, default_value = "/var/lib/pier")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// `sqlite` (embedded, in the data dir) or `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, default_value = "sqlite")]
    datastore: String,
    /// Node port range, `FIRST-LAST`.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    #[command(flatten)]
    node: NodeFlags,
    /// CIDRs LoadBalancer Services get their IPs from.
    #[arg(long)]
    loadbalancer_ip_pool: Option<String>,
}

#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// The API server, `https://HOST:PORT`.
    #[arg(long)]
    server: String,
    /// A file holding the bearer token (the server's `DATA_DIR/token`).
    #[arg(long)]
    token_file: PathBuf,
    /// The server's CA certificate (`DATA_DIR/pki/ca.crt`); without it the server's
    /// certificate is not verified.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Where this node keeps its pod runtime state.
    #[arg(long, default_value = "/var/lib/pier-agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeFlags,
}

/// The flags of the node, the same for `pier server` and `pier agent`.
#[derive(clap::Args, Debug, Clone)]
struct NodeFlags {
    /// Service CIDR; an IPv4,IPv6 pair makes the cluster dual-stack.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// The cluster's pod CIDR; each node takes a free /24 of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    pod_cidr: IpNet,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// TTL of the cluster DNS's answers for cluster names, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=3600))]
    cluster_dns_ttl: u32,
    /// This node's IP (default: the address of the default-route interface, else the first
    /// global IPv4 address).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// `nftables` or `userspace`.
    #[arg(long, default_value = "nftables")]
    proxy_mode: String,
    /// Where the data plane serves `/healthz` (kube-proxy's `--healthz-bind-address`).
    #[arg(long, default_value = "0.0.0.0:10256")]
    proxy_healthz_addr: SocketAddr,
    /// Where the data plane serves `/metrics` (kube-proxy's `--metrics-bind-address`).
    #[arg(long, default_value = "127.0.0.1:10249")]
    proxy_metrics_addr: SocketAddr,
}

fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s.split_once('-').with_context(|| format!("--service-node-port-range {s:?}: expected FIRST-LAST"))?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("--service-node-port-range {s:?}: FIRST must be between 1 and LAST");
    }
    Ok((a, b))
}

fn parse_pool(s: &str) -> Result<Vec<ipnet::Ipv4Net>> {
    s.split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            c.trim()
                .parse::<ipnet::Ipv4Net>()
                .with_context(|| format!("--loadbalancer-ip-pool: {c:?} is not an IPv4 CIDR"))
        })
        .collect()
}

fn parse_cidrs(s: &str) -> Result<Vec<IpNet>> {
    let cidrs = s
        .split(',')
        .map(|c| c.trim().parse::<IpNet>().with_context(|| format!("--service-cidr: {c:?} is not a CIDR")))
        .collect::<Result<Vec<_>>>()?;
    match cidrs.as_slice() {
        [_] => {}
        [a, b] if a.addr().is_ipv4() != b.addr().is_ipv4() => {}
        _ => bail!("--service-cidr {s:?}: give one CIDR, or one IPv4 and one IPv6 CIDR"),
    }
    for c in &cidrs {
        let host_bits = c.max_prefix_len() - c.prefix_len();
        if host_bits < 4 {
            bail!("--service-cidr {c}: too small, it needs at least 16 addresses");
        }
    }
    Ok(cidrs)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What a node needs beyond its Node object: its flags, checked, and what follows from them.
struct NodeArgs {
    data_dir: PathBuf,
    service_cidrs: Vec<IpNet>,
    /// The kube-dns address: the tenth of the first service range.
    cluster_dns: IpAddr,
    cluster_pod_cidr: ipnet::Ipv4Net,
    flags: NodeFlags,
}

impl NodeArgs {
    fn new(data_dir: &std::path::Path, flags: &NodeFlags) -> Result<NodeArgs> {
        let service_cidrs = parse_cidrs(&flags.service_cidr)?;
        check_proxy_mode(&flags.proxy_mode)?;
        let cluster_pod_cidr = match flags.pod_cidr {
            IpNet::V4(v4) => v4,
            IpNet::V6(_) => bail!("--pod-cidr {}: an IPv4 CIDR is required", flags.pod_cidr),
        };
        Ok(NodeArgs {
            data_dir: data_dir.to_path_buf(),
            cluster_dns: pier_apiserver::alloc::IpAllocator::new(service_cidrs[0]).nth(10),
            service_cidrs,
            cluster_pod_cidr,
            flags: flags.clone(),
        })
    }

    /// `--node-name`, or the host name.
    fn node_name(&self) -> Result<String> {
        match &self.flags.node_name {
            Some(n) => Ok(n.clone()),
            None => default_node_name(),
        }
    }
}

/// Registers this machine as a Node and runs its pods; the same for `pier server` and
/// `pier agent`.
async fn run_node(
    client: &kube::Client,
    node: &pier_agent::node::NodeConfig,
    args: &NodeArgs,
) -> Result<(Arc<pier_agent::machine::Machine>, ipnet::Ipv4Net)> {
    let pod_cidr = pier_agent::node::register(client, node).await.context("registering the node")?;
    tokio::spawn(pier_agent::node::heartbeat(client.clone(), node.clone()));
    // Pods: the runtime (bridge pier0 and all) comes up with the first pod.
    let mut runtime_config = pier_runtime::RuntimeConfig::new(
        args.data_dir.join("runtime"),
        pod_cidr,
        std::env::current_exe().context("locating the pier binary")?,
    );
    runtime_config.service_cidr = args.service_cidrs.clone();
    let machine = Arc::new(pier_agent::machine::Machine::new(runtime_config));
    let pod_config = pier_agent::pods::PodConfig {
        node_name: node.name.clone(),
        node_ip: node.node_ip,
        cluster_dns: args.cluster_dns,
        cluster_domain: args.flags.cluster_domain.clone(),
    };
    // One watch of Services and EndpointSlices for the data plane, the cluster DNS and the
    // pods' Service variables.
    let mut events = pier_proxy::sync::service_events(client.clone(), 3).into_iter();
    let (Some(for_proxy), Some(for_dns), Some(mut for_pods)) = (events.next(), events.next(), events.next()) else {
        bail!("the node's Service watch has fewer consumers than asked for");
    };
    let services = Arc::new(pier_agent::services::ServiceCache::new());
    let feed = services.clone();
    tokio::spawn(async move {
        while let Some(ev) = futures::StreamExt::next(&mut for_pods).await {
            match ev.as_deref() {
                Ok(pier_proxy::sync::Event::Service(e)) => feed.handle(e),
                Ok(pier_proxy::sync::Event::Slice(_)) => {}
                Err(e) => tracing::warn!(error = %e, "service cache watch failed; retrying"),
            }
        }
    });
    tokio::spawn(pier_agent::pods::PodManager::new(client.clone(), machine.clone(), pod_config, services).run());
    let data_plane = start_proxy(for_proxy, &node.name, args)?;
    if let Err(e) = cluster_dns::start(
        for_dns,
        data_plane,
        args.cluster_dns,
        &args.flags.cluster_domain,
        args.flags.cluster_dns_ttl,
    ) {
        tracing::error!(error = format!("{e:#}"), "the cluster DNS is not running");
    }
    Ok((machine, pod_cidr))
}

/// The Service data plane of this node; the receiver turns true once its first sync is
/// programmed.
fn start_proxy(
    events: futures::stream::BoxStream<'static, pier_proxy::sync::SharedEvent>,
    node_name: &str,
    args: &NodeArgs,
) -> Result<tokio::sync::watch::Receiver<bool>> {
    let node = pier_proxy::table::NodeContext {
        name: node_name.to_string(),
        pod_cidr: args.cluster_pod_cidr,
        // The node-local cluster DNS answers on the kube-dns address itself.
        served_locally: match args.cluster_dns {
            IpAddr::V4(v4) => vec![v4],
            IpAddr::V6(_) => Vec::new(),
        },
    };
    let plane: Box<dyn pier_proxy::DataPlane> = match args.flags.proxy_mode.as_str() {
        "nftables" => Box::new(pier_proxy::nft::Nftables::new(node.clone())),
        "userspace" => {
            for cidr in &args.service_cidrs {
                if let IpNet::V4(v4) = cidr {
                    pier_runtime::add_local_route(v4.trunc())
                        .with_context(|| format!("taking the service range {v4} as local"))?;
                }
            }
            Box::new(pier_proxy::userspace::Userspace::new(tokio::runtime::Handle::current()))
        }
        other => bail!("--proxy-mode {other:?}: supported values: nftables, userspace"),
    };
    let health = Arc::new(pier_proxy::sync::Health::default());
    let mode: &'static str = if args.flags.proxy_mode == "userspace" { "userspace" } else { "nftables" };
    for addr in [args.flags.proxy_healthz_addr, args.flags.proxy_metrics_addr] {
        let health = health.clone();
        tokio::spawn(async move {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    if let Err(e) = pier_proxy::health::serve(l, health, mode).await {
                        tracing::warn!(%addr, error = %e, "proxy health server stopped");
                    }
                }
                Err(e) => tracing::warn!(%addr, error = %e, "cannot serve the proxy's health endpoints"),
            }
        });
    }
    let programmed = health.programmed();
    tokio::spawn(pier_proxy::sync::run(events, node, plane, health));
    Ok(programmed)
}

fn check_proxy_mode(mode: &str) -> Result<()> {
    if !matches!(mode, "nftables" | "userspace") {
        bail!("--proxy-mode {mode:?}: supported values: nftables, userspace");
    }
    Ok(())
}

/// `pier proxy rules`.
fn proxy_rules() -> Result<()> {
    match pier_proxy::nft::list_table()? {
        Some(text) => {
            print!("{text}");
            Ok(())
        }
        None => bail!(
            "no `table ip pier` in this network namespace: run this where pier runs (e.g. `ip netns exec <ns> pier proxy rules`), in --proxy-mode nftables"
        ),
    }
}

fn default_node_name() -> Result<String> {
    Ok(nix::unistd::gethostname()?.to_string_lossy().to_lowercase())
}

/// `pier agent`: this machine joins the cluster at `--server` as a node.
async fn agent(args: AgentArgs) -> Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    let url: http::Uri = args.server.parse().with_context(|| format!("--server {:?}", args.server))?;
    let mut config = kube::Config::new(url);
    config.auth_info.token = Some(token.clone().into());
    match &args.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
            config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
        }
        None => {
            tracing::warn!("no --ca-file: the API server's certificate is not verified");
            config.accept_invalid_certs = true;
        }
    }
    let client = kube::Client::try_from(config)?;
    let node_args = NodeArgs::new(&args.data_dir, &args.node)?;
    let node_ip = args.node.node_ip.or_else(netinfo::detect_node_ip).context("no node IP: pass --node-ip")?;
    let name = node_args.node_name()?;
    // The kubelet port, where the API server reaches this node's pod logs and exec.
    let identity = kubelet::identity(&name, node_ip)?;
    let kubelet_addr = SocketAddr::new(node_ip, kubelet::PORT);
    let kubelet_listener = tokio::net::TcpListener::bind(kubelet_addr)
        .await
        .with_context(|| format!("binding the kubelet port {kubelet_addr}"))?;
    let node = pier_agent::node::NodeConfig {
        name,
        node_ip,
        cluster_pod_cidr: node_args.cluster_pod_cidr,
        labels: Vec::new(),
        annotations: vec![(kubelet::CERT_ANNOTATION.to_string(), identity.fingerprint.clone())],
    };
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (machine, pod_cidr) = run_node(&client, &node, &node_args).await?;
    let local = Arc::new(node_streams::LocalNode { machine, node_name: node.name.clone() });
    tokio::spawn(kubelet::serve(kubelet_listener, identity.tls, local, client.clone(), token));
    tracing::info!(server = %args.server, node = %node.name, %node_ip, %pod_cidr, "pier agent is ready");
    shutdown_signal().await;
    tracing::info!("pier agent stopped");
    Ok(())
}

async fn server(args: ServerArgs) -> Result<()> {
    let node_args = NodeArgs::new(&args.data_dir, &args.node)?;
    let cidrs = node_args.service_cidrs.clone();
    let ports = parse_port_range(&args.service_node_port_range)?;
    let lb_pool = match &args.loadbalancer_ip_pool {
        Some(s) => parse_pool(s)?,
        None => Vec::new(),
    };
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let node_ip = args.node.node_ip.or_else(netinfo::detect_node_ip).unwrap_or(IpAddr::from([127, 0, 0, 1]));

    let store: Arc<dyn pier_store::Store> = match args.datastore.as_str() {
        "sqlite" | "" => {
            let path = args.data_dir.join("pier.db");
            Arc::new(
                pier_store::sqlite::SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?,
            )
        }
        other if other.starts_with("etcd://") => {
            bail!("--datastore {other}: the etcd backend is not built yet; use the embedded store (the default)")
        }
        other => bail!("--datastore {other:?}: expected \"sqlite\" or etcd://HOST:PORT[,HOST:PORT...]"),
    };

    let first_ip = pier_apiserver::alloc::IpAllocator::new(cidrs[0]).nth(1);
    let mut dns_names: Vec<String> =
        vec!["localhost".into(), "kubernetes".into(), "kubernetes.default".into(), "kubernetes.default.svc".into()];
    dns_names.push(format!("kubernetes.default.svc.{}", args.node.cluster_domain));
    let mut ips = vec![IpAddr::from([127, 0, 0, 1]), node_ip, first_ip];
    if !args.listen.ip().is_unspecified() {
        ips.push(args.listen.ip());
    }
    let creds = pki::load_or_create(&args.data_dir, &dns_names, &ips)?;

    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let client_host = if local.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { local.ip() };
    let server_url = format!("https://{}", SocketAddr::new(client_host, local.port()));

    let config = pier_apiserver::Config {
        service_cidrs: cidrs,
        node_port_range: ports,
        advertise: (node_ip, local.port()),
        token: Some(creds.token.clone()),
        compaction_interval: Duration::from_secs(300),
    };
    let api =
        pier_apiserver::ApiServer::start(config, store, SocketAddr::new(client_host, local.port()).to_string()).await?;
    let kubeconfig_path = args.data_dir.join("kubeconfig.yaml");
    pki::write_atomic(&kubeconfig_path, pki::kubeconfig(&server_url, &creds.ca_pem, &creds.token).as_bytes(), 0o600)?;

    api.set_ready(false);
    let api = Arc::new(api);
    let serving = {
        let api = api.clone();
        let tls = creds.server_config.clone();
        tokio::spawn(async move { api.serve(listener, Some(tls), shutdown_signal()).await })
    };
    // Pods reach the API through the `kubernetes` Service, whose endpoint is the node IP:
    // answer there too when the main listener is loopback only.
    if local.ip().is_loopback() && !node_ip.is_loopback() {
        match tokio::net::TcpListener::bind(SocketAddr::new(node_ip, local.port())).await {
            Ok(node_listener) => {
                let api = api.clone();
                let tls = creds.server_config.clone();
                tokio::spawn(async move { api.serve(node_listener, Some(tls), shutdown_signal()).await });
            }
            Err(e) => tracing::debug!(%node_ip, error = %e, "not serving the API on the node IP"),
        }
    }

    // The node: an ordinary API client of the server above, through the admin kubeconfig.
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(client_config)?;
    let node = pier_agent::node::NodeConfig {
        name: node_args.node_name()?,
        node_ip,
        cluster_pod_cidr: node_args.cluster_pod_cidr,
        labels: Vec::new(),
        annotations: Vec::new(),
    };
    tokio::spawn({
        let client = client.clone();
        async move {
            let config = pier_controllers::ControllerConfig { loadbalancer_pool: lb_pool, ..Default::default() };
            if let Err(e) = pier_controllers::run(client, config, std::future::pending()).await {
                tracing::error!(error = %e, "the controllers stopped");
            }
        }
    });
    let (machine, pod_cidr) = run_node(&client, &node, &node_args).await?;
    api.set_node_streams(Arc::new(kubelet::Nodes {
        local: node_streams::LocalNode { machine, node_name: node.name.clone() },
        client: client.clone(),
        token: creds.token.clone(),
    }));
    api.set_ready(true);
    tracing::info!(url = %server_url, kubeconfig = %kubeconfig_path.display(), %node_ip, node = %node.name, %pod_cidr, "pier is ready");
    serving.await.context("server task")??;
    tracing::info!("pier stopped");
    Ok(())
}

/// jemalloc: it keeps freed memory by size class instead of glibc's per-thread heaps, so what
/// a node's first sync of tens of thousands of objects frees goes back to the kernel.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: freed pages go back to the kernel after about a
/// second (with `MADV_DONTNEED`, so RSS shows it). The background thread that does it even
/// when the process is idle is started only by `pier server` and `pier agent` (see
/// [`purge_in_background`]): this binary is also the pods' sandbox holder, which must stay
/// single-threaded to enter new namespaces.
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)] // jemalloc reads this symbol by name; it is a plain C string.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Starts jemalloc's background thread, which returns freed memory to the kernel on its decay
/// schedule whether or not the process allocates meanwhile.
fn purge_in_background() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc's background thread did not start; freed memory is returned as the node allocates");
    }
}

/// Makes jemalloc return freed pages to the kernel after a tenth of a second rather than a
/// second. The node agent's first sync of a large cluster frees tens of megabytes of decoded
/// objects and rendered rules while it allocates what it keeps; returned soon, they do not add
/// up to the agent's peak. (At once, the first sync itself took several times longer: each
/// freed page was returned and faulted in again within the same burst.) The server keeps the
/// second: it frees and allocates all the time.
fn return_freed_pages_sooner() {
    #[cfg(feature = "jemalloc")]
    for name in [&b"arenas.dirty_decay_ms\0"[..], b"arena.4096.dirty_decay_ms\0"] {
        const DIRTY_DECAY_MS: isize = 100;
        // SAFETY: both are documented jemalloc controls taking an `ssize_t` (4096 is
        // MALLCTL_ARENAS_ALL: every existing arena); the names are NUL-terminated.
        #[allow(unsafe_code)]
        let r = unsafe { tikv_jemalloc_ctl::raw::write(name, DIRTY_DECAY_MS) };
        if let Err(e) = r {
            tracing::debug!(error = %e, "jemalloc keeps its page decay");
        }
    }
}

/// Sets up jemalloc for one of the node agent's threads: no thread cache, and the first arena.
///
/// The agent's threads do their work in bursts (a sync, a relist) and then sit idle for
/// minutes, each keeping the objects its cache holds, megabytes in all for an agent with
/// 30,000 Services; without the cache, freed memory goes straight back to the arena, at the
/// cost of an uncontended lock per allocation. And one thread's freed pages can only be reused
/// by threads of the same arena: the data plane's first transaction (some 17 MB at 30,000
/// Services) is freed on one thread just as the DNS builds its names on another, and with an
/// arena each (jemalloc's default is four per CPU) both were resident until the freed pages
/// decayed, 12 MB more at the agent's peak. The server keeps its caches and arenas: it
/// allocates all the time, from many threads.
fn agent_thread_allocator() {
    #[cfg(feature = "jemalloc")]
    {
        // SAFETY: `thread.tcache.enabled` (a bool) and `thread.arena` (an unsigned; arena 0
        // always exists) are documented jemalloc controls; the names are NUL-terminated as
        // `raw::write` requires.
        #[allow(unsafe_code)]
        let r = unsafe { tikv_jemalloc_ctl::raw::write(b"thread.tcache.enabled\0", false) };
        if let Err(e) = r {
            tracing::debug!(error = %e, "jemalloc's thread cache stays on");
        }
        #[allow(unsafe_code)]
        let r = unsafe { tikv_jemalloc_ctl::raw::write(b"thread.arena\0", 0u32) };
        if let Err(e) = r {
            tracing::debug!(error = %e, "the thread keeps its own jemalloc arena");
        }
    }
}

/// With `PIER_HEAP_STATS=<seconds>` set, logs jemalloc's own figures on that period: bytes
/// the program holds (`allocated`), in pages jemalloc has (`active`), and what of it is in
/// memory (`resident`, jemalloc's own `metadata` included). RSS alone cannot tell live data
/// from freed memory not yet returned or pages kept by a few survivors; `cargo xtask bench
/// agent` reads these lines.
fn log_heap_stats() {
    let Some(period) = std::env::var("PIER_HEAP_STATS").ok().and_then(|s| s.parse::<u64>().ok()).filter(|s| *s > 0)
    else {
        return;
    };
    #[cfg(feature = "jemalloc")]
    std::thread::spawn(move || {
        use tikv_jemalloc_ctl::{epoch, stats};
        loop {
            let read = || -> Result<[usize; 4], tikv_jemalloc_ctl::Error> {
                epoch::advance()?;
                Ok([
                    stats::allocated::read()?,
                    stats::active::read()?,
                    stats::resident::read()?,
                    stats::metadata::read()?,
                ])
            };
            match read() {
                Ok([allocated, active, resident, metadata]) => {
                    tracing::info!(allocated, active, resident, metadata, "heap")
                }
                Err(e) => tracing::warn!(error = %e, "reading jemalloc's statistics"),
            }
            #[allow(clippy::disallowed_methods)] // a plain thread of its own
            std::thread::sleep(std::time::Duration::from_secs(period));
        }
    });
    #[cfg(not(feature = "jemalloc"))]
    let _ = period;
}

fn main() -> Result<()> {
    // The sandbox holder and the built-in images run this binary inside pods; they must start
    // before anything else (no threads, no logging set up).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__image") {
        let name = argv.get(2).cloned().unwrap_or_default();
        pier_runtime::run_builtin(&name, &argv[3.min(argv.len())..]);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Server(_) | Command::Agent(_)) {
        purge_in_background();
        log_heap_stats();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Agent(_)) {
        return_freed_pages_sooner();
        agent_thread_allocator();
        rt.on_thread_start(agent_thread_allocator);
    }
    let rt = rt.enable_all().build()?;
    match cli.command {
        Command::Server(args) => rt.block_on(async { server(*args).await }),
        Command::Agent(args) => rt.block_on(async { agent(*args).await }),
        Command::Proxy(ProxyCommand::Rules) => proxy_rules(),
        Command::Node(NodeCommand::KillPods { data_dir }) => {
            let (killed, left) = pier_runtime::kill_recorded_pods(&data_dir.join("runtime"))?;
            println!("{killed} pod processes killed");
            anyhow::ensure!(left == 0, "{left} pod processes are still there");
            Ok(())
        }
    }
}
