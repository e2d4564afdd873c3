//! What every benchmark report shares: percentiles, number formatting, the PASS/FAIL verdict,
//! the table of metric / goal / measured / result, and the machine and revision the figures
//! were measured on.

use std::time::Duration;

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    percentile(&s, 0.5)
}

pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 { format!("{v:.2} ms") } else { format!("{v:.0} ms") }
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub memory: String,
}

fn first_line_value(text: &str, key: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = std::process::Command::new("uname")
        .arg("-sr")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let memory = first_line_value(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| format!("{:.1} GB", kb as f64 * 1024.0 / 1e9))
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        model: first_line_value(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        kernel,
        memory,
    }
}

/// `git describe` of the workspace, for the report.
pub fn revision() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Prints rows of (metric, goal, measured, result) as a Markdown table.
pub fn print_table(rows: &[(String, String, String, &str)]) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let gw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(10);
    let mw = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(26);
    println!("| {:width$} | {:>gw$} | {:>mw$} | {:6} |", "metric", "goal", "measured", "result");
    println!("|{}|{}|{}|{}|", "-".repeat(width + 2), "-".repeat(gw + 2), "-".repeat(mw + 2), "-".repeat(8));
    for (metric, goal, measured, result) in rows {
        println!("| {metric:width$} | {goal:>gw$} | {measured:>mw$} | {result:6} |");
    }
}
