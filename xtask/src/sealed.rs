//! A real `pier server` sealed in a fresh network namespace, for benchmarks that run pods.
//!
//! A node that runs pods creates bridge `pier0`, gives pods addresses from 10.244.0.0/16 and
//! adds routes in the namespace it runs in, so the server must never run in the machine's own
//! namespace. [`Sealed::create`] makes two fresh namespaces: `pier-bench-pods-<pid>` (the node:
//! only `lo` and one veth, `198.51.100.1/24`) and `pier-bench-pods-<pid>-p` (the veth's peer,
//! `198.51.100.2/24`), addresses from a documentation range (RFC 5737, TEST-NET-2) that exist
//! only there, no default route in either; it checks that before anything starts.
//! [`Sealed::start`] runs `ip netns exec <node> pier server` on the namespace's own loopback.
//!
//! Dropping a [`Sealed`] (on success, error, panic or interruption) kills the server, then every
//! process of every pod it started (pods outlive their agent by design: each sandbox holder's
//! network namespace is recorded as `holder.net_ns` in
//! `<data-dir>/runtime/state.db`, and every process in one of those namespaces
//! is killed), then whatever still runs in the two namespaces, deletes both namespaces and
//! removes the data directory. A run that was killed with SIGKILL cannot clean up: the next run
//! removes what it left ([`remove_stale`]).
//!
//! The machine's own namespace only runs `ip` and the server's start-up; no traffic is sent
//! from it.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The node's address, inside the node namespace only.
pub const NODE_IP: &str = "198.51.100.1";
/// The veth peer's address, inside the peer namespace only.
pub const PEER_IP: &str = "198.51.100.2";
/// The server's `--node-name`.
pub const NODE_NAME: &str = "pier-node";
/// The API's address: the node namespace's own loopback (the namespace is fresh, so the port
/// is free).
pub const LISTEN: &str = "127.0.0.1:6443";
/// Namespaces and data directories of this benchmark start with this, then the pid.
const PREFIX: &str = "pier-bench-pods-";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A sealed namespace pair and (once started) the server in it; cleans up when dropped.
pub struct Sealed {
    /// The node namespace (`/run/netns/<netns>`).
    pub netns: String,
    peer: String,
    child: Option<Child>,
    /// The server's pid (`ip netns exec` execs it: the same process).
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// HOME and cache directory for kubectl.
    pub home: PathBuf,
    cleaned: bool,
    // Removed after `Drop::drop` has killed everything that could be using it.
    _tmp: tempfile::TempDir,
}

/// What [`Sealed::cleanup`] did.
#[derive(Debug, Default, Clone)]
pub struct Cleanup {
    pub pod_processes_killed: usize,
    pub namespace_processes_killed: usize,
    /// Processes of pods still found after the last round (should be 0).
    pub survivors: usize,
    pub namespaces_deleted: usize,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().context("running ip (iproute2)")?;
    ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Sealed {
    /// Creates the two namespaces and the veth between them, and checks the seal: the node
    /// namespace has exactly `lo` and `eth0`, only the on-link route of 198.51.100.0/24, and
    /// no default route.
    /// The data directory is a fresh directory under `base` (default: the temp directory).
    pub fn create(base: Option<&Path>) -> Result<Sealed> {
        ensure!(nix::unistd::geteuid().is_root(), "bench pods creates network namespaces: run it as root");
        let pid = std::process::id();
        let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{pid}-"))
            .tempdir_in(&base)
            .with_context(|| format!("creating the benchmark's data directory in {}", base.display()))?;
        let data_dir = tmp.path().join("data");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&data_dir)?;
        std::fs::create_dir_all(&home)?;
        let s = Sealed {
            netns: format!("{PREFIX}{pid}"),
            peer: format!("{PREFIX}{pid}-p"),
            child: None,
            pid: 0,
            log: tmp.path().join("server.log"),
            data_dir,
            home,
            cleaned: false,
            _tmp: tmp,
        };
        // From here on, dropping `s` deletes whatever exists.
        let (node, peer) = (s.netns.clone(), s.peer.clone());
        ip(&["netns", "add", &node])?;
        ip(&["netns", "add", &peer])?;
        // Created inside the node namespace with its peer end straight in the peer namespace:
        // the machine's own namespace never holds either end.
        let (a, b) = (format!("pbn{}", pid % 100_000_000), format!("pbp{}", pid % 100_000_000));
        ip(&["-n", &node, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &peer])?;
        ip(&["-n", &node, "link", "set", &a, "name", "eth0"])?;
        ip(&["-n", &peer, "link", "set", &b, "name", "eth0"])?;
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        ip(&["-n", &node, "addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"])?;
        ip(&["-n", &node, "link", "set", "eth0", "up"])?;
        ip(&["-n", &peer, "link", "set", "lo", "up"])?;
        ip(&["-n", &peer, "addr", "add", &format!("{PEER_IP}/24"), "dev", "eth0"])?;
        ip(&["-n", &peer, "link", "set", "eth0", "up"])?;
        s.check_seal()?;
        Ok(s)
    }

    fn check_seal(&self) -> Result<()> {
        let links: Vec<String> = ip(&["-n", &self.netns, "-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        ensure!(links == ["lo", "eth0"], "namespace {} is not sealed: links {links:?}", self.netns);
        let routes = ip(&["-n", &self.netns, "-4", "route", "show", "table", "all"])?;
        for r in routes.lines().filter(|l| !l.trim().is_empty()) {
            let local_table = r.contains("table local");
            ensure!(
                local_table || r.starts_with("198.51.100.0/24 "),
                "namespace {} is not sealed: route {r:?}",
                self.netns
            );
        }
        ensure!(
            ip(&["-n", &self.netns, "-6", "route", "show", "default"])?.trim().is_empty(),
            "namespace {} has an IPv6 default route",
            self.netns
        );
        Ok(())
    }

    /// Starts `pier server` in the node namespace (its own process group, so Ctrl-C reaches
    /// only the benchmark, which then cleans up in order) and waits until it is ready.
    pub async fn start(&mut self, pier: &Path, env: &[(String, String)]) -> Result<()> {
        ensure!(self.child.is_none(), "the server is already started");
        let logf = std::fs::File::create(&self.log).with_context(|| format!("creating {}", self.log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(pier)
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(LISTEN)
            .arg("--node-ip")
            .arg(NODE_IP)
            .arg("--node-name")
            .arg(NODE_NAME)
            // Info only: per-request debug logging would be measured too.
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} in namespace {}", pier.display(), self.netns))?;
        self.pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let logged = std::fs::read_to_string(&self.log).unwrap_or_default().contains("pier is ready");
            if logged && self.kubeconfig().exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("pier server was not ready after {READY_TIMEOUT:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// The peer namespace (the other end of the node's link; a second machine can run there).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Fails with the end of the server log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("pier server exited ({status}):\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the server's stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the server, every pod's processes and whatever runs in the namespaces, and
    /// deletes the namespaces. Idempotent; also run by `Drop`.
    pub fn cleanup(&mut self) -> Cleanup {
        let mut out = Cleanup::default();
        if self.cleaned {
            return out;
        }
        self.cleaned = true;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        (out.pod_processes_killed, out.survivors) = kill_pods(&self.data_dir);
        for ns in [&self.netns, &self.peer] {
            let (killed, deleted) = delete_netns(ns);
            out.namespace_processes_killed += killed;
            out.namespaces_deleted += usize::from(deleted);
        }
        out
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        let c = self.cleanup();
        if c.survivors > 0 {
            eprintln!("xtask: WARNING: {} pod processes survived SIGKILL", c.survivors);
        }
    }
}

/// SIGKILLs every process in `ns`, then deletes it; (processes killed, deleted).
fn delete_netns(ns: &str) -> (usize, bool) {
    let mut killed = 0;
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).stderr(Stdio::null()).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
    }
    let deleted = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (killed, deleted)
}

/// The network namespaces (`net:[inode]`) of the sandbox holders recorded in `data_dir`.
fn pod_namespaces(data_dir: &Path) -> HashSet<String> {
    pier_runtime::recorded_sandboxes(&data_dir.join("runtime"))
        .unwrap_or_else(|e| {
            eprintln!("xtask: {e}");
            Vec::new()
        })
        .into_iter()
        .filter_map(|s| s.holder)
        .map(|(_, inode)| format!("net:[{inode}]"))
        .collect()
}

/// How many sandboxes the node's runtime has recorded.
pub fn sandbox_count(data_dir: &Path) -> usize {
    pier_runtime::recorded_sandboxes(&data_dir.join("runtime")).map(|s| s.len()).unwrap_or(0)
}

/// Every process whose network namespace is one of `namespaces`.
fn processes_in(namespaces: &HashSet<String>) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            && namespaces.contains(ns.to_string_lossy().as_ref())
        {
            pids.push(pid);
        }
    }
    pids
}

/// The processes of the pods recorded in `data_dir` (holders, containers, execs).
pub fn pod_processes(data_dir: &Path) -> Vec<i32> {
    let namespaces = pod_namespaces(data_dir);
    if namespaces.is_empty() { Vec::new() } else { processes_in(&namespaces) }
}

/// SIGKILLs every process whose network namespace is a pod's, in rounds until none is left;
/// (processes killed, processes still there after the last round).
pub fn kill_pods(data_dir: &Path) -> (usize, usize) {
    pier_runtime::kill_recorded_pods(&data_dir.join("runtime")).unwrap_or_else(|e| {
        eprintln!("xtask: killing the pods: {e}");
        (0, 0)
    })
}

/// Removes what an earlier run killed with SIGKILL left: namespaces `pier-bench-pods-<pid>[-p]`
/// and data directories `<base>/pier-bench-pods-<pid>-*` whose `<pid>` no longer runs (their pods'
/// processes first). Returns what was removed, for the log.
pub fn remove_stale(base: Option<&Path>) -> Vec<String> {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let pid_of = |name: &str| -> Option<u32> {
        let rest = name.strip_prefix(PREFIX)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        (tail.is_empty() || tail.starts_with('-')).then_some(())?;
        digits.parse().ok()
    };
    let mut removed = Vec::new();
    let me = std::process::id();
    let mut bases = vec![std::env::temp_dir()];
    bases.extend(base.map(Path::to_path_buf));
    for entry in bases.iter().flat_map(std::fs::read_dir).flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = pid_of(&name) else { continue };
        if pid == me || alive(pid) || !entry.path().join("data").is_dir() {
            continue;
        }
        let (killed, _) = kill_pods(&entry.path().join("data"));
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(format!("{} ({killed} pod processes)", entry.path().display()));
        }
    }
    let list = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&list).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = pid_of(name) else { continue };
        if pid == me || alive(pid) {
            continue;
        }
        let (killed, deleted) = delete_netns(name);
        if deleted {
            removed.push(format!("namespace {name} ({killed} processes)"));
        }
    }
    removed
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/<name>`), and
/// checks that it is there and no longer in the process's own, so that nothing it sends can
/// leave through the machine's namespace.
pub fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("joining {path}"))?;
    let here = std::fs::read_link("/proc/thread-self/ns/net").context("reading this thread's namespace")?;
    let want = format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path)?));
    let own = std::fs::read_link("/proc/self/ns/net").context("reading the process's namespace")?;
    ensure!(
        here.to_string_lossy() == want && here != own,
        "this thread is not in {path}: it is in {}, the process in {}",
        here.display(),
        own.display()
    );
    Ok(())
}
