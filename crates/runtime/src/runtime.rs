//! The [`Runtime`]: configuration, sandboxes (create, list, recover, remove) and IPAM.
//!
//! State on disk, under `state_dir`:
//! ```text
//! lock                                  flock: one runtime per state directory
//! state.db                              SQLite (see state.rs): which sandbox holds which address,
//!                                       and every sandbox's record (request, IP, veth, holder)
//! pod-root/                             every pod's tmpfs mount point, each in its own mount
//!                                       namespace (the host sees it empty)
//! logs/<namespace>_<name>_<uid>_<container>.<instance>.log
//! ```
//! Each file or directory a pod creates costs a new inode, which on ext4 without a journal
//! means a search past every inode deleted in the last minute: a pod's state is rows in
//! `state.db`, and its only files are one log per container instance.
//! A sandbox is recorded once, as soon as its holder is up (before its veth exists), and its
//! record is deleted last, so after a crash the next [`Runtime::new`] adopts it if its holder is
//! alive, or finishes removing it; an address whose owner has no record was reserved by a
//! creation interrupted before that, and is released. Two windows are not covered (as before
//! the records moved into `state.db`): a crash between the holder's start and its record
//! leaves that holder running unrecorded, and one between the record and the veth leaves an
//! adopted pod without its veth. Operations on one sandbox are serialised by a per-uid lock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::container::ContainerRun;
use crate::error::RuntimeError;
use crate::holder::{HOLDER_IMAGE, HolderConfig};
use crate::logs;
use crate::network::{NodeNetwork, veth_name};
use crate::procfs::{self, ProcId};
use crate::state::{self, State};
use crate::sys;

/// In [`SandboxRequest::hosts`], replaced by the pod's IP (the IP is only known once the sandbox
/// exists, and the kubelet's hosts file names it).
pub const POD_IP_PLACEHOLDER: &str = "{{POD_IP}}";

/// How long a new holder may take to build the pod's namespaces.
const HOLDER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on killing a pod's processes: the whole wait, and the longest pause between rounds.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_KILL_PAUSE: Duration = Duration::from_millis(20);

/// How a node's runtime is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where IPAM, sandbox records and logs live (`/var/lib/pier/runtime`).
    pub state_dir: PathBuf,
    /// This node's pod CIDR (a /24 of the cluster's); its first address is the gateway.
    pub pod_cidr: Ipv4Net,
    /// The bridge the pods hang off (`pier0`).
    pub bridge: String,
    /// Routed to the gateway inside pods and onto the bridge on the node.
    pub service_cidr: Vec<IpNet>,
    /// The pier binary: sandbox holders and the built-in images run it.
    pub self_exe: PathBuf,
    /// The node's network namespace (for example `/run/netns/NAME`); `None` means the network
    /// namespace of the thread calling [`Runtime::new`].
    pub node_netns: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The defaults: bridge `pier0`, service CIDR `10.96.0.0/12`, the caller's namespace.
    pub fn new(state_dir: PathBuf, pod_cidr: Ipv4Net, self_exe: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            state_dir,
            pod_cidr,
            bridge: "pier0".to_string(),
            service_cidr: vec![IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default())],
            self_exe,
            node_netns: None,
        }
    }
}

/// What the agent asks for when a Pod lands on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRequest {
    /// The Pod's uid: the sandbox's identity.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    /// The final contents of the pod's `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// The final contents of the pod's `/etc/hosts` ([`POD_IP_PLACEHOLDER`] becomes the IP).
    pub hosts: String,
}

/// A pod sandbox that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The pod's network namespace (`/proc/<holder>/ns/net`), to `setns` into.
    pub netns_path: PathBuf,
    /// The process holding the pod's namespaces.
    pub holder_pid: i32,
    /// The host end of the pod's veth, on the bridge.
    pub veth: String,
    pub created_at: SystemTime,
}

/// A sandbox as [`Runtime::list_sandboxes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    pub sandbox: Sandbox,
    /// False when its holder is gone (after a reboot, or killed): remove and recreate it.
    pub ready: bool,
}

/// The holder process of a sandbox: its identity and namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HolderRecord {
    pub proc: ProcId,
    pub mnt_ns: u64,
    pub net_ns: u64,
}

/// A row of `state.db`'s `sandboxes`, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SandboxRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub veth: String,
    pub created_unix_ms: u64,
    /// Absent until the holder has set the pod up.
    pub holder: Option<HolderRecord>,
}

/// A sandbox recorded in a state directory, as [`recorded_sandboxes`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSandbox {
    pub uid: String,
    /// The holder's pid and network namespace inode (`net:[inode]`), once it was set up.
    pub holder: Option<(i32, u64)>,
}

/// The sandboxes recorded in `state_dir`, read without taking the directory over (the runtime
/// may be running): for tools that inspect or clean up a node (the tests, the benchmarks).
/// Empty when there is no state.
pub fn recorded_sandboxes(state_dir: &Path) -> Result<Vec<RecordedSandbox>, RuntimeError> {
    Ok(state::read_records(state_dir)?
        .into_iter()
        .map(|(uid, json)| {
            let holder = serde_json::from_str::<SandboxRecord>(&json)
                .ok()
                .and_then(|r| r.holder)
                .map(|h| (h.proc.pid, h.net_ns));
            RecordedSandbox { uid, holder }
        })
        .collect())
}

/// Kills every process of the pods recorded in `state_dir` (holders, containers, execs: all that
/// run in a pod's namespaces), for when their agent is gone for good: pods outlive their agent
/// by design. Refused while a runtime holds the directory. Only holders that are still the
/// recorded process, in the recorded namespaces, count (after a reboot the records name nobody,
/// and namespace inode numbers are reused); their namespaces are pinned meanwhile. SIGKILL in
/// rounds, for at most a second, until none is left; returns the processes killed and those
/// still there. Blocks: not for an async runtime's threads.
pub fn kill_recorded_pods(state_dir: &Path) -> Result<(usize, usize), RuntimeError> {
    const ROUNDS: usize = 50;
    const PAUSE: Duration = Duration::from_millis(20);
    let lock_path = state_dir.join("lock");
    let _lock = match File::open(&lock_path) {
        Ok(f) => Some(
            Flock::lock(f, FlockArg::LockExclusiveNonblock)
                .map_err(|_| RuntimeError::StateDirLocked { path: state_dir.to_path_buf() })?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(RuntimeError::io(format!("opening {}", lock_path.display()), e)),
    };
    let mut holders = Vec::new();
    for (_, json) in state::read_records(state_dir)? {
        if let Some(h) = serde_json::from_str::<SandboxRecord>(&json).ok().and_then(|r| r.holder)
            && let Some(pins) = pin_namespaces(&h)
        {
            holders.push((h, pins));
        }
    }
    if holders.is_empty() {
        return Ok((0, 0));
    }
    // One pass over /proc a round, for every pod at once.
    let pods: std::collections::HashSet<(u64, u64)> = holders.iter().map(|(h, _)| (h.mnt_ns, h.net_ns)).collect();
    let in_pods = || {
        procfs::pids_where(
            |pid| matches!((procfs::ns_inode(pid, "mnt"), procfs::ns_inode(pid, "net")), (Some(m), Some(n)) if pods.contains(&(m, n))),
        )
    };
    let mut killed = std::collections::HashSet::new();
    for _ in 0..ROUNDS {
        let pids = in_pods();
        if pids.is_empty() {
            return Ok((killed.len(), 0));
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed.insert(pid);
            }
        }
        // A killed process lingers until the kernel has torn it down.
        #[allow(clippy::disallowed_methods)] // Documented as blocking; called from plain threads.
        std::thread::sleep(PAUSE);
    }
    Ok((killed.len(), in_pods().len()))
}

/// The addresses held in `state_dir` and their owners (sandbox uids), read as
/// [`recorded_sandboxes`] reads.
pub fn recorded_addresses(state_dir: &Path) -> Result<Vec<(Ipv4Addr, String)>, RuntimeError> {
    state::read_allocations(state_dir)
}

/// A sandbox the runtime knows, with its containers' current instances.
#[derive(Debug)]
pub(crate) struct SandboxEntry {
    pub sandbox: Sandbox,
    pub record: SandboxRecord,
    /// A pidfd for a holder this runtime started (for a recovered one, the pid and start time).
    pub holder_pidfd: Option<OwnedFd>,
    pub containers: Mutex<HashMap<String, Arc<ContainerRun>>>,
    /// The stem of its logs' paths (see logs.rs): `<logs>/<namespace>_<name>_<uid>`.
    pub log_dir: PathBuf,
}

impl SandboxEntry {
    pub(crate) fn holder(&self) -> Option<HolderRecord> {
        self.record.holder
    }

    pub(crate) fn ready(&self) -> bool {
        self.record.holder.is_some_and(|h| h.proc.alive())
    }
}

/// Per-key async locks that forget keys nobody holds.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyedGuard { locks: self, key: key.to_string(), lock, guard: Some(guard) }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // Two references (the map's and ours) mean nobody else holds or awaits this key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub cfg: RuntimeConfig,
    pub gateway: Ipv4Addr,
    pub net: NodeNetwork,
    pub state: Mutex<State>,
    pub sandboxes: Mutex<HashMap<String, Arc<SandboxEntry>>>,
    pub locks: KeyedLocks,
    logs_dir: PathBuf,
    /// Where every holder mounts its pod's tmpfs, in the pod's own mount namespace.
    pod_root: PathBuf,
}

/// The node's pod runtime. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
    _lock: Flock<File>,
}

impl Inner {
    pub(crate) fn entry(&self, uid: &str) -> Result<Arc<SandboxEntry>, RuntimeError> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.get(uid).cloned().ok_or_else(|| RuntimeError::SandboxNotFound { uid: uid.to_string() })
    }

    fn log_dir(&self, record: &SandboxRecord) -> PathBuf {
        self.logs_dir.join(format!("{}_{}_{}", record.namespace, record.name, record.uid))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Runtime {
    /// Prepares the node (bridge, gateway, sysctls) in the node's network namespace, loads the
    /// IPAM state and adopts the sandboxes a previous runtime left (their containers, which
    /// nobody supervises any more, are killed: the agent restarts them).
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        validate_config(&cfg)?;
        let logs_dir = cfg.state_dir.join("logs");
        let pod_root = cfg.state_dir.join("pod-root");
        for d in [&cfg.state_dir, &logs_dir, &pod_root] {
            fs::create_dir_all(d).map_err(|e| RuntimeError::io(format!("creating {}", d.display()), e))?;
        }
        let lock_path = cfg.state_dir.join("lock");
        let lock_file =
            File::create(&lock_path).map_err(|e| RuntimeError::io(format!("creating {}", lock_path.display()), e))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| RuntimeError::StateDirLocked { path: cfg.state_dir.clone() })?;

        let netns_path = cfg.node_netns.clone().unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
        let netns = File::open(&netns_path)
            .map_err(|e| RuntimeError::io(format!("opening the node network namespace {}", netns_path.display()), e))?;
        let gateway = state::gateway(cfg.pod_cidr);
        let state = State::open(&cfg.state_dir, cfg.pod_cidr)?;
        let net = NodeNetwork::setup(netns, &cfg.bridge, state.cidr(), gateway, &cfg.service_cidr)?;
        let inner = Arc::new(Inner {
            cfg,
            gateway,
            net,
            state: Mutex::new(state),
            sandboxes: Mutex::new(HashMap::new()),
            locks: KeyedLocks::default(),
            logs_dir,
            pod_root,
        });
        recover(&inner)?;
        Ok(Runtime { inner, _lock: lock })
    }

    /// Creates a pod's sandbox: namespaces, overlay root, veth, address and routes.
    pub async fn create_sandbox(&self, req: SandboxRequest) -> Result<Sandbox, RuntimeError> {
        validate_request(&req)?;
        let inner = &self.inner;
        let _guard = inner.locks.lock(&req.uid).await;
        if inner.entry(&req.uid).is_ok() || inner.state().record(&req.uid)?.is_some() {
            return Err(RuntimeError::SandboxExists { uid: req.uid });
        }
        let ip = inner.state().allocate(&req.uid)?;
        let mut record = SandboxRecord {
            uid: req.uid.clone(),
            namespace: req.namespace.clone(),
            name: req.name.clone(),
            hostname: req.hostname.clone(),
            ip,
            veth: veth_name(ip),
            created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            holder: None,
        };
        let mut holder_pidfd = None;
        match self.build_sandbox(&req, &mut record, &mut holder_pidfd).await {
            Ok(()) => {
                let entry = Arc::new(SandboxEntry {
                    sandbox: sandbox_of(&record, inner.gateway),
                    log_dir: inner.log_dir(&record),
                    record,
                    holder_pidfd,
                    containers: Mutex::new(HashMap::new()),
                });
                let sandbox = entry.sandbox.clone();
                inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(req.uid.clone(), entry);
                tracing::info!(uid = %req.uid, pod = %format!("{}/{}", req.namespace, req.name), ip = %ip, "sandbox created");
                Ok(sandbox)
            }
            Err(e) => {
                if let Err(cleanup) = teardown(inner, &record, holder_pidfd.as_ref()).await {
                    tracing::warn!(uid = %req.uid, error = %cleanup, "cleaning up a failed sandbox");
                }
                Err(e)
            }
        }
    }

    async fn build_sandbox(
        &self,
        req: &SandboxRequest,
        record: &mut SandboxRecord,
        holder_pidfd: &mut Option<OwnedFd>,
    ) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let config = HolderConfig {
            hostname: req.hostname.clone(),
            resolv_conf: req.resolv_conf.clone(),
            hosts: req.hosts.replace(POD_IP_PLACEHOLDER, &record.ip.to_string()),
            root_dir: inner.pod_root.clone(),
        };
        let mut child = tokio::process::Command::new(&inner.cfg.self_exe)
            .arg("__image")
            .arg(HOLDER_IMAGE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env_clear()
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| RuntimeError::Spawn {
                what: format!("the sandbox holder {}", inner.cfg.self_exe.display()),
                source: e,
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        *holder_pidfd = sys::pidfd_open(pid).ok();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        // Reap the holder whenever it ends; nobody needs its status.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let reply = tokio::time::timeout(HOLDER_START_TIMEOUT, async move {
            let json = serde_json::to_vec(&config).map_err(|e| io::Error::other(e.to_string()))?;
            if let Some(mut stdin) = stdin {
                stdin.write_all(&json).await?;
                stdin.shutdown().await?;
            }
            let mut line = String::new();
            if let Some(stdout) = stdout {
                BufReader::new(stdout).read_line(&mut line).await?;
            }
            Ok::<String, io::Error>(line)
        })
        .await;
        let line = match reply {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(RuntimeError::SandboxSetup(format!("talking to the holder: {e}"))),
            Err(_) => {
                if let Some(fd) = holder_pidfd.as_ref() {
                    let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL);
                }
                return Err(RuntimeError::Timeout(format!("waiting {HOLDER_START_TIMEOUT:?} for the sandbox holder")));
            }
        };
        let line = line.trim();
        if line != "ok" {
            let why = line.strip_prefix("error: ").unwrap_or(if line.is_empty() {
                "the holder exited without a reply (is self_exe a pier binary that dispatches `__image`?)"
            } else {
                line
            });
            return Err(RuntimeError::SandboxSetup(why.to_string()));
        }
        let (Some(proc), Some(mnt_ns), Some(net_ns)) =
            (ProcId::of(pid), procfs::ns_inode(pid, "mnt"), procfs::ns_inode(pid, "net"))
        else {
            return Err(RuntimeError::SandboxSetup("the holder died right after setting up".into()));
        };
        record.holder = Some(HolderRecord { proc, mnt_ns, net_ns });
        write_record(inner, record)?;

        let netns_path = format!("/proc/{pid}/ns/net");
        let pod_netns = File::open(&netns_path).map_err(|e| RuntimeError::io(format!("opening {netns_path}"), e))?;
        if !proc.alive() {
            return Err(RuntimeError::SandboxSetup("the holder died during setup".into()));
        }
        let inner2 = self.inner.clone();
        let (veth, ip) = (record.veth.clone(), record.ip);
        tokio::task::spawn_blocking(move || inner2.net.wire_pod(pod_netns.as_fd(), &veth, ip))
            .await
            .map_err(|e| RuntimeError::SandboxSetup(format!("network setup task: {e}")))?
    }

    /// Removes a sandbox: kills every process in the pod, deletes its veth, releases its IP and
    /// deletes its state and logs. Idempotent: removing an unknown uid succeeds.
    pub async fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError> {
        if !valid_uid(uid) {
            return Err(RuntimeError::InvalidRequest(format!("invalid sandbox uid {uid:?}")));
        }
        let inner = &self.inner;
        let _guard = inner.locks.lock(uid).await;
        let entry = inner.entry(uid).ok();
        let record = match &entry {
            Some(e) => Some(e.record.clone()),
            None => read_record(inner, uid)?,
        };
        if let Some(entry) = &entry {
            // Stop the containers through their pidfds first: exact, and their waiters learn why.
            let runs: Vec<Arc<ContainerRun>> =
                entry.containers.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
            for run in runs {
                run.kill();
            }
        }
        match &record {
            Some(record) => teardown(inner, record, entry.as_ref().and_then(|e| e.holder_pidfd.as_ref())).await?,
            None => {
                // Nothing adoptable (or a record that no longer parses): what is recorded goes.
                inner.state().release_owner(uid)?;
                inner.state().delete_record(uid)?;
            }
        }
        inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
        if record.is_some() {
            tracing::info!(uid = %uid, "sandbox removed");
        }
        Ok(())
    }

    /// Removes every sandbox (a node being drained or a test cleaning up: holders outlive the
    /// runtime by design, so pods survive an agent restart). Tries them all; the first error wins.
    pub async fn remove_all_sandboxes(&self) -> Result<(), RuntimeError> {
        let uids: Vec<String> =
            self.inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let mut first = None;
        for uid in uids {
            if let Err(e) = self.remove_sandbox(&uid).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Every sandbox this node has, including those recovered after a restart.
    pub fn list_sandboxes(&self) -> Vec<SandboxStatus> {
        let map = self.inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<SandboxStatus> =
            map.values().map(|e| SandboxStatus { sandbox: e.sandbox.clone(), ready: e.ready() }).collect();
        v.sort_by(|a, b| a.sandbox.uid.cmp(&b.sandbox.uid));
        v
    }

    /// One sandbox by uid.
    pub fn sandbox(&self, uid: &str) -> Option<SandboxStatus> {
        let entry = self.inner.entry(uid).ok()?;
        Some(SandboxStatus { sandbox: entry.sandbox.clone(), ready: entry.ready() })
    }

    /// Every address IPAM holds and the sandbox uid holding it.
    pub fn ip_allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, RuntimeError> {
        self.inner.state().allocations()
    }

    /// The gateway address pods route through (the bridge's).
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }
}

/// Opens a live holder's mount and network namespaces. Holding them keeps the namespaces (and
/// so their inode numbers) from being freed and reused by a new pod while the runtime looks for
/// processes by namespace; `None` when the holder is gone or is not the recorded process.
fn pin_namespaces(h: &HolderRecord) -> Option<(File, File)> {
    use std::os::unix::fs::MetadataExt;
    if !h.proc.alive() {
        return None;
    }
    let mnt = File::open(format!("/proc/{}/ns/mnt", h.proc.pid)).ok()?;
    let net = File::open(format!("/proc/{}/ns/net", h.proc.pid)).ok()?;
    let same = mnt.metadata().ok()?.ino() == h.mnt_ns && net.metadata().ok()?.ino() == h.net_ns;
    // Checked after opening: the pid was not recycled in between.
    (same && h.proc.alive()).then_some((mnt, net))
}

/// SIGKILLs every process in the pinned namespaces until none is left (bounded by
/// [`KILL_TIMEOUT`]); the pauses between rounds grow from a millisecond, since SIGKILL usually
/// lands at once.
async fn kill_all_in(h: &HolderRecord) -> Result<(), RuntimeError> {
    let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        let pids = procfs::pids_in_namespaces(h.mnt_ns, h.net_ns);
        if pids.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RuntimeError::Timeout(format!(
                "killing the pod processes {pids:?} (held by pid {})",
                h.proc.pid
            )));
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_KILL_PAUSE);
    }
}

/// Kills everything in a sandbox, deletes its veth, releases its IP and deletes its files.
async fn teardown(
    inner: &Arc<Inner>,
    record: &SandboxRecord,
    holder_pidfd: Option<&OwnedFd>,
) -> Result<(), RuntimeError> {
    let pinned = record.holder.as_ref().and_then(pin_namespaces);
    if let Some(fd) = holder_pidfd {
        let _ = sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL);
    } else if let Some(h) = record.holder.filter(|h| h.proc.alive()) {
        let _ = kill(Pid::from_raw(h.proc.pid), Signal::SIGKILL);
    }
    if let (Some(h), Some(_pins)) = (record.holder.as_ref(), &pinned) {
        kill_all_in(h).await?;
    }
    drop(pinned);
    let inner2 = inner.clone();
    let veth = record.veth.clone();
    tokio::task::spawn_blocking(move || inner2.net.unwire_pod(&veth))
        .await
        .map_err(|e| RuntimeError::net("veth removal task", io::Error::other(e.to_string())))??;
    {
        let state = inner.state();
        state.release(record.ip, &record.uid)?;
        state.release_owner(&record.uid)?;
    }
    let stem = inner.log_dir(record);
    logs::remove_pod(&stem).map_err(|e| RuntimeError::io(format!("removing the logs of {}", stem.display()), e))?;
    // The directory earlier versions kept a pod's logs in.
    remove_dir_all(&stem)?;
    inner.state().delete_record(&record.uid)?;
    Ok(())
}

/// Adopts what a previous runtime left in the state directory.
fn recover(inner: &Arc<Inner>) -> Result<(), RuntimeError> {
    let records = inner.state().records()?;
    for (uid, json) in records {
        let record = serde_json::from_str::<SandboxRecord>(&json).ok().filter(|r| r.uid == uid && valid_uid(&uid));
        let Some(record) = record.filter(|r| r.holder.is_some()) else {
            // Written by another version, or before its holder was known: what is left goes.
            tracing::info!(uid = %uid, "removing a sandbox record that cannot be adopted");
            if let Ok(r) = serde_json::from_str::<SandboxRecord>(&json) {
                let _ = inner.net.unwire_pod(&r.veth);
            }
            let state = inner.state();
            state.release_owner(&uid)?;
            state.delete_record(&uid)?;
            continue;
        };
        if let Some(h) = record.holder.as_ref()
            && let Some(_pins) = pin_namespaces(h)
        {
            // The previous runtime's containers: their output pipes died with it and nobody can
            // wait for them, so they go (the holder stays: the pod keeps its namespaces and IP).
            // One round, without waiting: nothing here can be slower than a SIGKILL.
            for pid in procfs::pids_in_namespaces(h.mnt_ns, h.net_ns) {
                if pid != h.proc.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        if !inner.state().reserve(record.ip, &uid)? {
            tracing::warn!(uid = %uid, ip = %record.ip, "recovered sandbox's address is held by another sandbox");
        }
        let entry = Arc::new(SandboxEntry {
            sandbox: sandbox_of(&record, inner.gateway),
            log_dir: inner.log_dir(&record),
            record,
            holder_pidfd: None,
            containers: Mutex::new(HashMap::new()),
        });
        inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, entry);
    }
    // Addresses whose owner has no sandbox: reservations interrupted by a crash.
    let known: Vec<String> = inner.sandboxes.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
    let state = inner.state();
    for (ip, owner) in state.allocations()? {
        if !known.contains(&owner) {
            tracing::info!(ip = %ip, owner = %owner, "releasing an address without a sandbox");
            state.release(ip, &owner)?;
        }
    }
    Ok(())
}

fn sandbox_of(record: &SandboxRecord, gateway: Ipv4Addr) -> Sandbox {
    let pid = record.holder.map(|h| h.proc.pid).unwrap_or(0);
    Sandbox {
        uid: record.uid.clone(),
        namespace: record.namespace.clone(),
        name: record.name.clone(),
        hostname: record.hostname.clone(),
        ip: record.ip,
        gateway,
        netns_path: PathBuf::from(format!("/proc/{pid}/ns/net")),
        holder_pid: pid,
        veth: record.veth.clone(),
        created_at: UNIX_EPOCH + Duration::from_millis(record.created_unix_ms),
    }
}

fn write_record(inner: &Inner, record: &SandboxRecord) -> Result<(), RuntimeError> {
    let json =
        serde_json::to_string(record).map_err(|e| RuntimeError::State(format!("encoding the sandbox record: {e}")))?;
    inner.state().put_record(&record.uid, &json)
}

/// The record of `uid`; one that no longer parses counts as none.
fn read_record(inner: &Inner, uid: &str) -> Result<Option<SandboxRecord>, RuntimeError> {
    Ok(inner.state().record(uid)?.and_then(|json| serde_json::from_str(&json).ok()))
}

/// Removes a directory tree; one that is already gone is fine.
pub(crate) fn remove_dir_all(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("removing {}", path.display()), e)),
    }
}

fn validate_config(cfg: &RuntimeConfig) -> Result<(), RuntimeError> {
    let b = &cfg.bridge;
    if b.is_empty()
        || b.len() > 15
        || !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
    {
        return Err(RuntimeError::InvalidConfig(format!(
            "bridge name {b:?} is not a valid interface name (1-15 of [A-Za-z0-9._-])"
        )));
    }
    if !cfg.self_exe.is_file() {
        return Err(RuntimeError::InvalidConfig(format!("self_exe {} is not a file", cfg.self_exe.display())));
    }
    if cfg.state_dir.as_os_str().is_empty() {
        return Err(RuntimeError::InvalidConfig("state_dir is empty".into()));
    }
    Ok(())
}

/// Pod uids become parts of file names: no separators, no dot files, bounded length, and no
/// `_`, which separates the parts of a log's name (`<namespace>_<pod>_<uid>_<container>…`, as
/// the kubelet names its directories): Kubernetes uids are UUIDs.
pub(crate) fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && !uid.starts_with('.')
        && uid.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
}

/// Namespace, pod and container names: DNS subdomains and labels are a subset (so no `_`,
/// see [`valid_uid`]).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && !h.starts_with(['-', '.'])
        && h.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
}

fn validate_request(req: &SandboxRequest) -> Result<(), RuntimeError> {
    let bad = |what: &str, v: &str| Err(RuntimeError::InvalidRequest(format!("invalid {what} {v:?}")));
    if !valid_uid(&req.uid) {
        return bad("sandbox uid", &req.uid);
    }
    if !valid_name(&req.namespace) {
        return bad("namespace", &req.namespace);
    }
    if !valid_name(&req.name) {
        return bad("pod name", &req.name);
    }
    if !valid_hostname(&req.hostname) {
        return bad("hostname (1-64 of [A-Za-z0-9.-])", &req.hostname);
    }
    for (what, text) in [("resolv.conf", &req.resolv_conf), ("hosts file", &req.hosts)] {
        if text.len() > 1 << 20 || text.contains('\0') {
            return Err(RuntimeError::InvalidRequest(format!("the {what} is larger than 1 MiB or contains NUL")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_the_state_directory_are_refused() {
        for bad in ["", "..", ".x", "a/b", "a b", "a_b", &"x".repeat(129), "ä"] {
            assert!(!valid_uid(bad), "{bad:?}");
        }
        assert!(valid_uid("0f8b1c9e-5a5e-4f8e-9a57-2f1f3a0c9d11"));
        assert!(valid_hostname("kubia-7d4b9"));
        assert!(!valid_hostname(&"h".repeat(65)));
        assert!(!valid_hostname("-x"));
    }

    #[tokio::test]
    async fn keyed_locks_serialise_per_key_and_forget_idle_keys() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is independent.
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await.expect("b is free");
        assert!(tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await.is_err(), "a is held");
        drop(a);
        drop(b);
        assert!(locks.map.lock().expect("map").is_empty());
    }
}
