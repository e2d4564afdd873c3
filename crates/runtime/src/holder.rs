//! The sandbox holder: the pod's "pause" process, run as `pier __image pier-sandbox`.
//!
//! It builds the pod's namespaces from the inside and then holds them by staying alive:
//! 1. new network, UTS, IPC and mount namespaces (`unshare`), the pod's hostname;
//! 2. every mount made private, so nothing propagates back to the host;
//! 3. a tmpfs on the sandbox's `root` directory holding `upper/`, `work/` and `merged/`, and an
//!    overlay `lowerdir=/` on `merged/`: a writable copy-on-write view of the host's root whose
//!    writes land in this pod's tmpfs only;
//! 4. fresh `/proc`, `/sys` (this namespace's devices), the host's `/dev` with a private
//!    `/dev/shm`, the pier binary at [`crate::POD_PIER_EXE`] (for the built-in images, whose
//!    host path may be on another filesystem), and the pod's `/etc/resolv.conf`, `/etc/hosts`
//!    and `/etc/hostname`;
//! 5. `pivot_root` into `merged/` and detach the old root, so the namespace holds nothing of the
//!    host's mount tree (in particular no `/run/netns` bind mount that would keep another
//!    namespace alive).
//!
//! Doing this after `exec` in a fresh single-threaded process (rather than between `fork` and
//! `exec` of the multi-threaded agent) lets it be ordinary code. All of the pod's mounts live in
//! its mount namespace and vanish with it: the host's mount table never sees them. The runtime
//! sends a [`HolderConfig`] as JSON on stdin and reads one line back: `ok` or `error: ...`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};

use crate::images::POD_PIER_EXE;

/// The hidden image name under which the runtime starts holders.
pub(crate) const HOLDER_IMAGE: &str = "pier-sandbox";

/// What the runtime tells a new holder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HolderConfig {
    pub hostname: String,
    pub resolv_conf: String,
    pub hosts: String,
    /// An empty directory (on the host) to mount the pod's tmpfs on. Every holder may use the
    /// same one: the mount is made in the pod's own mount namespace.
    pub root_dir: PathBuf,
}

/// The holder's `main`: set up, report, then hold the namespaces until SIGTERM or SIGKILL.
pub(crate) fn run() -> i32 {
    let outcome = setup();
    let mut out = std::io::stdout();
    let reply = match &outcome {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error: {}\n", e.replace('\n', " ")),
    };
    let _ = out.write_all(reply.as_bytes()).and_then(|()| out.flush());
    if outcome.is_err() {
        return 1;
    }
    // Let go of the runtime's pipes: nothing reads them after the reply.
    if let Ok(null) = fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    wait_for_termination()
}

/// Blocks until SIGTERM or SIGINT (SIGKILL needs no help); the exit code is 0.
pub(crate) fn wait_for_termination() -> i32 {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    if set.thread_block().is_err() {
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => return 0,
            Ok(_) => continue,
            Err(_) => return 1,
        }
    }
}

fn setup() -> Result<(), String> {
    // unshare(CLONE_NEWNS) in one thread of many would move only that thread, and the runtime
    // would then join the wrong namespace through /proc/<pid>/ns/mnt.
    if crate::procfs::own_thread_count() != Some(1) {
        return Err("the sandbox holder must start single-threaded: call pier_runtime::run_builtin before starting any threads or async runtime".into());
    }
    let mut input = String::new();
    std::io::stdin().take(4 << 20).read_to_string(&mut input).map_err(|e| format!("reading the configuration: {e}"))?;
    let cfg: HolderConfig = serde_json::from_str(&input).map_err(|e| format!("parsing the configuration: {e}"))?;
    // Out of the agent's session: a terminal hangup or Ctrl-C aimed at the agent is not for pods.
    let _ = nix::unistd::setsid();
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    nix::unistd::sethostname(&cfg.hostname).map_err(|e| format!("sethostname {:?}: {e}", cfg.hostname))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("making / private: {e}"))?;
    let root = &cfg.root_dir;
    mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
        .map_err(|e| format!("mounting tmpfs on {}: {e}", root.display()))?;
    let (upper, work, merged) = (root.join("upper"), root.join("work"), root.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let opts = format!("lowerdir=/,upperdir={},workdir={}", upper.display(), work.display());
    mount(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
        .map_err(|e| format!("mounting the overlay root: {e}"))?;

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    ensure_dir(&merged.join("proc"))?;
    mount(Some("proc"), &merged.join("proc"), Some("proc"), nosuid, None::<&str>)
        .map_err(|e| format!("mounting /proc: {e}"))?;
    ensure_dir(&merged.join("sys"))?;
    // A fresh sysfs shows this network namespace's devices; the host's would show the node's.
    if mount(Some("sysfs"), &merged.join("sys"), Some("sysfs"), nosuid | MsFlags::MS_RDONLY, None::<&str>).is_err() {
        bind(Path::new("/sys"), &merged.join("sys"), true)?;
    }
    ensure_dir(&merged.join("dev"))?;
    bind(Path::new("/dev"), &merged.join("dev"), true)?;
    ensure_dir(&merged.join("dev/shm"))?;
    mount(Some("shm"), &merged.join("dev/shm"), Some("tmpfs"), nosuid, Some("mode=1777"))
        .map_err(|e| format!("mounting /dev/shm: {e}"))?;

    let exe = merged.join(POD_PIER_EXE.trim_start_matches('/'));
    if let Some(dir) = exe.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    fs::File::create(&exe).map_err(|e| format!("creating {}: {e}", exe.display()))?;
    // By path, resolved in this namespace: /proc/self/exe points into the host's mount
    // namespace, which a bind mount here may not take from.
    let own = std::env::current_exe().map_err(|e| format!("finding the pier binary: {e}"))?;
    bind(&own, &exe, false)?;
    mount(None::<&str>, &exe, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| format!("making {POD_PIER_EXE} read-only: {e}"))?;

    let etc = merged.join("etc");
    ensure_dir(&etc)?;
    replace_file(&etc.join("resolv.conf"), &cfg.resolv_conf)?;
    replace_file(&etc.join("hosts"), &cfg.hosts)?;
    replace_file(&etc.join("hostname"), &format!("{}\n", cfg.hostname))?;

    let old = merged.join(".pier-oldroot");
    fs::create_dir(&old).map_err(|e| format!("creating {}: {e}", old.display()))?;
    nix::unistd::pivot_root(&merged, &old).map_err(|e| format!("pivot_root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    umount2("/.pier-oldroot", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    let _ = fs::remove_dir("/.pier-oldroot");
    Ok(())
}

fn ensure_dir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

fn bind(src: &Path, dst: &Path, recursive: bool) -> Result<(), String> {
    let flags = if recursive { MsFlags::MS_BIND | MsFlags::MS_REC } else { MsFlags::MS_BIND };
    mount(Some(src), dst, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("bind-mounting {} on {}: {e}", src.display(), dst.display()))
}

/// Replaces a file of the overlay with a regular file (the host's may be a symlink into a
/// directory the pod does not see).
fn replace_file(path: &Path, contents: &str) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("replacing {}: {e}", path.display())),
    }
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(|e| format!("chmod {}: {e}", path.display()))
}
