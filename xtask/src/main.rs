//! Developer tasks for the pier workspace, run as `cargo xtask <task>`.
//!
//! `cargo xtask bench api` measures the API server against the goals of issue 2 (creates per
//! second, full-list latency, watch delivery latency, server memory): it builds the release
//! binaries, starts a real `pier server` on a loopback port with a fresh data directory, drives
//! it with the `kube` client and prints a report (see `docs/benchmarks.md`).
//!
//! `cargo xtask` runs this crate in the dev profile, whose client-side JSON and TLS code would
//! make the load generator itself the bottleneck. So the dev build only builds
//! `target/release/{pier,xtask}` and hands over to the release `xtask`, which does the
//! measuring.

mod bench_api;
mod server;

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
fn hand_over_to_release(args: &ApiArgs, pier: &Path) -> Result<i32> {
    let exe = target_dir().join("release").join("xtask");
    if !exe.exists() {
        bail!("{} is missing: run without --no-build, or cargo build --release -p xtask", exe.display());
    }
    eprintln!("xtask: measuring with the release build {}", exe.display());
    let mut cmd = Command::new(&exe);
    cmd.args(["bench", "api", "--no-build"])
        .arg("--services")
        .arg(args.services.to_string())
        .arg("--concurrency")
        .arg(args.concurrency.to_string())
        .arg("--watchers")
        .arg(args.watchers.to_string())
        .arg("--lists")
        .arg(args.lists.to_string())
        .arg("--pier")
        .arg(pier);
    for (k, v) in &args.server_env {
        cmd.arg("--server-env").arg(format!("{k}={v}"));
    }
    let status = cmd.status().with_context(|| format!("running {}", exe.display()))?;
    Ok(status.code().unwrap_or(1))
}

fn bench_api(args: ApiArgs) -> Result<i32> {
    if !args.no_build {
        build_release()?;
    }
    let pier = args.pier.clone().unwrap_or_else(|| target_dir().join("release").join("pier"));
    if !pier.exists() {
        bail!("{} does not exist: build it with cargo build --release -p pier", pier.display());
    }
    if cfg!(debug_assertions) && !args.debug_client {
        return hand_over_to_release(&args, &pier);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        tokio::select! {
            r = bench_api::run(&args, &pier) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    Ok(0)
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let code = match cli.task {
        Task::Bench { which: Bench::Api(args) } => bench_api(args)?,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
