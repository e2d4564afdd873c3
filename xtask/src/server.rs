//! A real `pier server` for the benchmarks: started from a built binary on a free loopback port
//! with a fresh data directory, and killed when the guard drops (also when the benchmark fails
//! or is interrupted). Only 127.0.0.1 is contacted, and the node IP is loopback too: the API
//! benchmark runs no pods, so the server never sets up pod networking (that happens with
//! the first pod) and the `kubernetes` Service gets no endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `pier server`; dropping it kills the process and removes the data directory.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    // Dropped after `Drop::drop` has killed the process.
    _tmp: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    /// Starts `bin server` and waits until it logs `pier is ready` and its kubeconfig exists.
    pub async fn start(bin: &Path, env: &[(String, String)]) -> Result<Server> {
        let tmp = tempfile::Builder::new().prefix("pier-bench-").tempdir().context("creating a data directory")?;
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let log = tmp.path().join("server.log");
        let logf = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let port = free_port()?;
        let child = Command::new(bin)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--node-ip")
            .arg("127.0.0.1")
            // Info only: per-request debug logging would be measured too.
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut server = Server { child, pid, data_dir, log, _tmp: tmp };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("pier server exited during start-up ({status}):\n{}", self.log_tail());
            }
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

    /// Fails with the end of the server log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of a process (`/proc/<pid>/stat`), or of this one with `"self"`.
pub fn proc_cpu(pid: &str) -> Option<Duration> {
    proc_cpu_fields(pid, 2)
}

/// [`proc_cpu`] plus the CPU time of the process's waited-for children (`cutime`, `cstime`).
pub fn proc_cpu_with_children(pid: &str) -> Option<Duration> {
    proc_cpu_fields(pid, 4)
}

fn proc_cpu_fields(pid: &str, n: usize) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0u64;
    for i in 11..11 + n {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// CPU time of every live thread of a process, to the nanosecond (`/proc/<pid>/task/*/schedstat`;
/// `/proc/<pid>/stat` counts in clock ticks per process, which rounds a short-lived pod
/// process's few milliseconds down to nothing).
pub fn proc_threads_cpu(pid: i32) -> Duration {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// CPU time the whole machine spent busy (every CPU: user, nice, system, irq, softirq and
/// steal from `/proc/stat`), for telling the benchmark's own load from everything else.
pub fn machine_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).copied().unwrap_or(0);
    Some(Duration::from_secs_f64(busy as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}
