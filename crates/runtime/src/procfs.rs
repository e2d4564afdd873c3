//! Process facts from `/proc`: identity (pid + start time, so a recycled pid is never mistaken
//! for the process the runtime started), namespace inodes, and finding every process of a pod.
//!
//! A pod's processes are exactly those in its mount namespace: that catches a container's
//! children that left its process group, daemons and exec sessions alike, which is what lets
//! `remove_sandbox` kill everything without cgroups.

use std::fs;
use std::os::unix::fs::MetadataExt;

/// A process as the runtime knows it: the pid plus the kernel's start time (in clock ticks since
/// boot), which together never name two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProcId {
    pub pid: i32,
    pub start_time: u64,
}

/// The fields of `/proc/PID/stat` the runtime needs: state and start time.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22, i.e. 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some((state, start_time))
}

impl ProcId {
    /// The identity of a live process.
    pub(crate) fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|(_, start_time)| ProcId { pid, start_time })
    }

    /// True while this very process exists and has not exited (a zombie has exited).
    pub(crate) fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, st)) if st == self.start_time && state != 'Z' && state != 'X')
    }
}

/// The inode of a process's namespace of `kind` ("net", "mnt", ...), which identifies it.
pub(crate) fn ns_inode(pid: i32, kind: &str) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/{kind}")).ok().map(|m| m.ino())
}

/// Every live process whose mount and network namespaces are the given ones. Exited processes
/// have no namespaces left, so they never match.
pub(crate) fn pids_in_namespaces(mnt: u64, net: u64) -> Vec<i32> {
    pids_where(|pid| ns_inode(pid, "mnt") == Some(mnt) && ns_inode(pid, "net") == Some(net))
}

/// Every process for which `keep` holds.
pub(crate) fn pids_where(mut keep: impl FnMut(i32) -> bool) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| keep(pid))
        .collect()
}

/// The number of threads of the calling process.
pub(crate) fn own_thread_count() -> Option<usize> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_itself() {
        let me = ProcId::of(std::process::id() as i32).expect("own stat");
        assert!(me.alive());
        assert!(!ProcId { start_time: me.start_time + 1, ..me }.alive(), "another start time is another process");
        assert!(ns_inode(me.pid, "mnt").is_some());
        let (mnt, net) = (ns_inode(me.pid, "mnt").unwrap_or(0), ns_inode(me.pid, "net").unwrap_or(0));
        assert!(pids_in_namespaces(mnt, net).contains(&me.pid));
        assert!(own_thread_count().unwrap_or(0) >= 1);
    }
}
