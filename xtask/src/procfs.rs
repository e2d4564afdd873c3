//! What the benchmarks read of a running process: its memory (`/proc/<pid>/status`) and CPU
//! time (`/proc/<pid>/stat`), and the machine's. The servers themselves run in sealed network
//! namespaces ([`crate::sealed`]): a `pier server` is a whole node, which takes addresses and
//! programs nftables where it runs.

use std::process::Command;
use std::time::Duration;

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The first process named `comm` among `root` and its descendants (breadth first): the
/// program a wrapper such as `heaptrack` runs as its child. `None` when there is none.
pub fn find_descendant(root: u32, comm: &str) -> Option<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim_end() == comm {
            return Some(pid);
        }
        queue.extend(parents.iter().filter(|(_, pp)| *pp == pid).map(|(p, _)| *p));
    }
    None
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
