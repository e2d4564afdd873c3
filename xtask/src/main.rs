//! Developer tasks for the pier workspace, run as `cargo xtask <task>`.
//!
//! `cargo xtask bench api` measures the API server against the goals of issue 2 (creates per
//! second, full-list latency, watch delivery latency, server memory): it builds the release
//! binaries, starts a real `pier server` with a fresh data directory in a sealed network
//! namespace (the server is a whole node: it must not run in the machine's own), drives it with
//! the `kube` client from inside that namespace and prints a report (see `docs/benchmarks.md`).
//!
//! `cargo xtask bench pods` measures pod start latency and endpoint propagation against the
//! goals of issue 3. Pods get addresses and a bridge, so that server runs in a fresh sealed
//! network namespace the benchmark creates and deletes (see [`sealed`]), and the client joins
//! it (see [`bench_pods`]).
//!
//! `cargo xtask bench agent` measures the memory of a `pier agent` that programs many
//! Services (issue 4), joining a sealed server from the peer namespace (see [`bench_agent`]).
//!
//! `cargo xtask bench proxy` measures rule programming of the nftables data plane against
//! `iptables-restore` loading kube-proxy's ruleset (issue 4), each load in a fresh network
//! namespace (see [`bench_proxy`]).
//!
//! `cargo xtask bench dataplane` measures the Service data path with real traffic in netns
//! mini clusters (issue 4): first-packet latency with many Services, nftables mode against the
//! direct pod path, userspace mode against HAProxy (see [`bench_dataplane`]).
//!
//! `cargo xtask` runs this crate in the dev profile, whose client-side JSON and TLS code would
//! make the load generator itself the bottleneck. So the dev build only builds
//! `target/release/{pier,xtask}` and hands over to the release `xtask`, which does the
//! measuring.

mod bench_agent;
mod bench_api;
mod bench_dataplane;
mod bench_pods;
mod bench_proxy;
mod procfs;
mod report;
mod sealed;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "xtask", about = "Developer tasks for pier")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Benchmarks against a real `pier server`.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Create N Services with C concurrent requests while W watchers watch them, then list
    /// them: creates/s, list latency, watch delivery latency, server RSS, SQLite size.
    Api(ApiArgs),
    /// In a sealed network namespace: pod start latency (1 pod at a time, 50 at once, a
    /// ReplicaSet of 50) and EndpointSlice propagation of readiness flips among 1,000 Services.
    Pods(PodsArgs),
    /// Rule programming of the nftables data plane against iptables-restore loading
    /// kube-proxy's ruleset: a full sync of N Services x M endpoints, and one Service added
    /// while many exist. Each load runs in a fresh network namespace.
    Proxy(ProxyArgs),
    /// In a sealed network namespace pair: the RSS of a `pier agent` that joins a server
    /// holding N Services x M endpoints and programs them all (nftables mode, cluster DNS).
    Agent(AgentArgs),
    /// The Service data path with real traffic, in network-namespace mini clusters: TCP
    /// connect latency with many Services programmed (nftables), ClusterIP against pod direct
    /// (iperf3, wrk), and userspace mode against HAProxy (throughput, connections/s, p99).
    Dataplane(DataplaneArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DataplaneArgs {
    /// Services programmed for the large first-packet measurement.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(3..=200_000))]
    pub services: u32,
    /// Services programmed for the small first-packet measurement.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(3..=200_000))]
    pub small: u32,
    /// Fresh TCP connections timed per first-packet round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pub connects: u64,
    /// Length of each throughput, connection-rate and latency phase.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub seconds: u32,
    /// Rounds of every measurement (the report gives medians).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Nice value for the proxies, servers and clients (e.g. -10), so that other work on a
    /// shared machine takes less of their CPUs; both contenders get the same. 0 leaves it.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// Skip goals 1 and 2 (nftables mode).
    #[arg(long)]
    pub skip_nftables: bool,
    /// Skip goal 3 (userspace mode against HAProxy).
    #[arg(long)]
    pub skip_userspace: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl DataplaneArgs {
    fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "--services".into(),
            self.services.to_string(),
            "--small".into(),
            self.small.to_string(),
            "--connects".into(),
            self.connects.to_string(),
            "--seconds".into(),
            self.seconds.to_string(),
            "--rounds".into(),
            self.rounds.to_string(),
            format!("--nice={}", self.nice),
        ];
        if self.skip_nftables {
            v.push("--skip-nftables".into());
        }
        if self.skip_userspace {
            v.push("--skip-userspace".into());
        }
        v
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// Full-sync rounds per contender.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Services already programmed when one is added.
    #[arg(long, default_value_t = 30_000)]
    pub existing: u32,
    /// Services added one at a time on top of `--existing`.
    #[arg(long, default_value_t = 20)]
    pub adds: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ProxyArgs {
    fn to_argv(&self) -> Vec<String> {
        vec![
            "--services".into(),
            self.services.to_string(),
            "--endpoints".into(),
            self.endpoints.to_string(),
            "--rounds".into(),
            self.rounds.to_string(),
            "--existing".into(),
            self.existing.to_string(),
            "--adds".into(),
            self.adds.to_string(),
        ]
    }
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Services in the cluster (selector-less, one TCP port each).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub services: u32,
    /// Ready endpoints in each Service's EndpointSlice.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub endpoints: u32,
    /// Seconds to wait after everything is programmed before reading the settled RSS.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=600))]
    pub settle: u32,
    /// Run the agent under this command (split at spaces), e.g. `heaptrack -o /tmp/agent` to
    /// see where its memory goes; the RSS figures are then the wrapper's.
    #[arg(long, value_name = "COMMAND")]
    pub agent_wrapper: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl AgentArgs {
    fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "--services".into(),
            self.services.to_string(),
            "--endpoints".into(),
            self.endpoints.to_string(),
            "--settle".into(),
            self.settle.to_string(),
        ];
        if let Some(w) = &self.agent_wrapper {
            v.push("--agent-wrapper".into());
            v.push(w.clone());
        }
        v
    }
}

/// Options every benchmark takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Use the existing release binaries as they are instead of running `cargo build --release`.
    #[arg(long)]
    pub no_build: bool,
    /// The `pier` binary to benchmark (default: `target/release/pier`).
    #[arg(long)]
    pub pier: Option<PathBuf>,
    /// Extra environment for the server, `KEY=VALUE` (repeatable; for experiments such as
    /// `MALLOC_ARENA_MAX=2`). `RUST_LOG` is `info` unless given here.
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
    /// Measure from this process even when it is a debug build (the client is then much
    /// slower than the server; for working on the xtask itself).
    #[arg(long)]
    pub debug_client: bool,
}

impl CommonArgs {
    fn to_argv(&self, pier: &Path) -> Vec<String> {
        let mut v = vec!["--no-build".to_string(), "--pier".to_string(), pier.display().to_string()];
        for (k, val) in &self.server_env {
            v.push("--server-env".into());
            v.push(format!("{k}={val}"));
        }
        v
    }
}

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// How many Services to create.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub services: u32,
    /// How many create requests are in flight at once (one pooled connection each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// How many watches on the namespace's Services run during the creates.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub watchers: u32,
    /// How many full lists to time.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub lists: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ApiArgs {
    fn to_argv(&self) -> Vec<String> {
        vec![
            "--services".into(),
            self.services.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--watchers".into(),
            self.watchers.to_string(),
            "--lists".into(),
            self.lists.to_string(),
        ]
    }
}

#[derive(Args, Debug, Clone)]
pub struct PodsArgs {
    /// Single pods started one after another (each deleted before the next) for the 1-pod
    /// latency.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sequential: u32,
    /// Pods created at once for the concurrent round.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub burst: u32,
    /// Replicas of the ReplicaSet round (the scheduler in the path); 0 skips it.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=200))]
    pub replicas: u32,
    /// Services in the cluster during the endpoint measurement, the measured one included.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub services: u32,
    /// Give the filler Services no selector (by default each selects its own label, which no
    /// pod has, so every one has a managed, empty EndpointSlice).
    #[arg(long)]
    pub selectorless_fillers: bool,
    /// Pods behind the measured Service (`app=bench`, exec readiness probe).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub endpoint_pods: u32,
    /// Readiness flips of one pod to time.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub flips: u32,
    /// Make the server's data directory (store, pod runtime state, container logs) under this
    /// directory instead of the temp directory, e.g. `/dev/shm` to take the disk's filesystem
    /// out of the measurement.
    #[arg(long, value_name = "DIR")]
    pub data_dir_in: Option<PathBuf>,
    /// Copy the server's log here before cleaning up (to see where the time goes, for example
    /// with `--server-env RUST_LOG=info,pier_agent=debug,pier_runtime=debug`).
    #[arg(long, value_name = "PATH")]
    pub server_log: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl PodsArgs {
    fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "--sequential".into(),
            self.sequential.to_string(),
            "--burst".into(),
            self.burst.to_string(),
            "--replicas".into(),
            self.replicas.to_string(),
            "--services".into(),
            self.services.to_string(),
            "--endpoint-pods".into(),
            self.endpoint_pods.to_string(),
            "--flips".into(),
            self.flips.to_string(),
        ];
        if self.selectorless_fillers {
            v.push("--selectorless-fillers".into());
        }
        if let Some(d) = &self.data_dir_in {
            v.push("--data-dir-in".into());
            v.push(std::path::absolute(d).unwrap_or_else(|_| d.clone()).display().to_string());
        }
        if let Some(p) = &self.server_log {
            v.push("--server-log".into());
            v.push(std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string());
        }
        v
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { workspace_root().join(d) }
        }
        _ => workspace_root().join("target"),
    }
}

/// `cargo build --release -p pier`, then `-p xtask`, with their progress on the terminal. Two
/// invocations, so that pier is built with exactly the features of a plain
/// `cargo build --release -p pier` (one invocation would unify the features of both, and the
/// next plain build would rebuild pier).
fn build_release() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "xtask: building the release binaries (cargo build --release -p pier, then -p xtask); \
         the first build takes several minutes on a 2-core machine, later runs reuse it"
    );
    for package in ["pier", "xtask"] {
        let status = Command::new(&cargo)
            .args(["build", "--release", "-p", package])
            .current_dir(workspace_root())
            .status()
            .context("running cargo build --release")?;
        if !status.success() {
            bail!("cargo build --release -p {package} failed ({status})");
        }
    }
    Ok(())
}

/// Runs the measurement in the release `xtask` with the same options, returning its exit code.
/// Ctrl-C is left to the child, which cleans up before it exits: this process only waits.
fn hand_over_to_release(task: &str, argv: Vec<String>, common: &CommonArgs, pier: &Path) -> Result<i32> {
    let exe = target_dir().join("release").join("xtask");
    if !exe.exists() {
        bail!("{} is missing: run without --no-build, or cargo build --release -p xtask", exe.display());
    }
    eprintln!("xtask: measuring with the release build {}", exe.display());
    // A handler (not SIG_IGN, which the child would inherit) keeps this process alive on
    // Ctrl-C, so the terminal gets its prompt back only after the child has cleaned up.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let _signals = {
        let _enter = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    let status = Command::new(&exe)
        .args(["bench", task])
        .args(argv)
        .args(common.to_argv(pier))
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    Ok(status.code().unwrap_or(1))
}

/// Builds (unless `--no-build`) and finds the `pier` binary; `Err(exit code)` after handing
/// the run over to the release `xtask`.
fn prepare(task: &str, argv: Vec<String>, common: &CommonArgs) -> Result<std::result::Result<PathBuf, i32>> {
    if !common.no_build {
        build_release()?;
    }
    let pier = common.pier.clone().unwrap_or_else(|| target_dir().join("release").join("pier"));
    if !pier.exists() {
        bail!("{} does not exist: build it with cargo build --release -p pier", pier.display());
    }
    if cfg!(debug_assertions) && !common.debug_client {
        return Ok(Err(hand_over_to_release(task, argv, common, &pier)?));
    }
    Ok(Ok(pier))
}

fn bench_api(args: ApiArgs) -> Result<i32> {
    let pier = match prepare("api", args.to_argv(), &args.common)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    // The pier binary runs as root inside namespaces it gets a path to: make it absolute.
    let pier = std::path::absolute(&pier).with_context(|| format!("resolving {}", pier.display()))?;
    bench_api::run(&args, &pier)?;
    Ok(0)
}

fn bench_pods(args: PodsArgs) -> Result<i32> {
    let pier = match prepare("pods", args.to_argv(), &args.common)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    // The pier binary runs as root inside namespaces it gets a path to: make it absolute.
    let pier = std::path::absolute(&pier).with_context(|| format!("resolving {}", pier.display()))?;
    bench_pods::run(&args, &pier)?;
    Ok(0)
}

fn bench_agent(args: AgentArgs) -> Result<i32> {
    let pier = match prepare("agent", args.to_argv(), &args.common)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let pier = std::path::absolute(&pier).with_context(|| format!("resolving {}", pier.display()))?;
    bench_agent::run(&args, &pier)?;
    Ok(0)
}

fn bench_proxy(args: ProxyArgs) -> Result<i32> {
    if let Err(code) = prepare("proxy", args.to_argv(), &args.common)? {
        return Ok(code);
    }
    bench_proxy::run(&args)?;
    Ok(0)
}

fn bench_dataplane(args: DataplaneArgs) -> Result<i32> {
    if let Err(code) = prepare("dataplane", args.to_argv(), &args.common)? {
        return Ok(code);
    }
    bench_dataplane::run(&args)?;
    Ok(0)
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let code = match cli.task {
        Task::Bench { which: Bench::Api(args) } => bench_api(args)?,
        Task::Bench { which: Bench::Pods(args) } => bench_pods(args)?,
        Task::Bench { which: Bench::Proxy(args) } => bench_proxy(args)?,
        Task::Bench { which: Bench::Agent(args) } => bench_agent(args)?,
        Task::Bench { which: Bench::Dataplane(args) } => bench_dataplane(args)?,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
