//! Containers and exec sessions: processes that join a pod's namespaces before they `exec`.
//!
//! A container is one process tree in the pod's network, UTS, IPC and mount namespaces (so its
//! root is the pod's overlay), in a process group of its own, with stdout and stderr (or a
//! terminal) pumped into its CRI log. The runtime holds a pidfd for it from the moment it is
//! spawned, so signals can never reach a recycled pid, and publishes its exit status once its log
//! is complete. When its main process exits, whatever is left of its process group is killed, as
//! the kernel would kill a PID namespace with its init.
//!
//! An exec session joins the same namespaces with the container's environment and working
//! directory, and hands its stdio (pipes, or a terminal) to the caller.

use std::fmt;
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::error::RuntimeError;
use crate::logs::{self, LogWriter, Stream};
use crate::runtime::{HolderRecord, Runtime, SandboxEntry, valid_name};
use crate::{pty, sys};

/// The `PATH` of a container whose spec sets none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long, after a container's main process exits, its log may take to drain.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long SIGKILL may take to end a container before `stop` gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// A terminal's size until the client says otherwise.
const TTY_ROWS: u16 = 24;
const TTY_COLS: u16 = 80;

/// A container to start in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    /// The program and its arguments (see [`crate::resolve_argv`]); the program is looked up
    /// in `PATH` inside the pod.
    pub argv: Vec<String>,
    /// On top of `PATH`, `HOSTNAME`, `HOME` (and `TERM` with a TTY); later entries win.
    pub env: Vec<(String, String)>,
    /// Absolute; created if missing; `/` when unset.
    pub working_dir: Option<String>,
    /// Run on a terminal (stdout and stderr merge into the log's stdout).
    pub tty: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// Nobody could observe it.
    Unknown,
}

impl ExitStatus {
    /// The code Kubernetes reports: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
            ExitStatus::Unknown => 255,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    fn from_std(s: std::process::ExitStatus) -> ExitStatus {
        match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            _ => ExitStatus::Unknown,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            ExitStatus::Unknown => f.write_str("unknown exit status"),
        }
    }
}

/// One started instance of a container, shared by its handles and the runtime.
#[derive(Debug)]
pub(crate) struct ContainerRun {
    pub sandbox_uid: String,
    pub name: String,
    pub instance: u32,
    pub pid: i32,
    pub started_at: SystemTime,
    pub log_path: PathBuf,
    pub tty: bool,
    /// The container's full environment and working directory, which exec sessions inherit.
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pidfd: OwnedFd,
    exit: watch::Sender<Option<ExitStatus>>,
    /// True once the process has exited and its log is complete.
    finished: watch::Sender<bool>,
}

impl ContainerRun {
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    pub(crate) fn finished(&self) -> watch::Receiver<bool> {
        self.finished.subscribe()
    }

    fn signal(&self, sig: Signal) -> std::io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig)
    }

    /// SIGKILL to the main process and its process group.
    pub(crate) fn kill(&self) {
        if self.status().is_none() {
            let _ = self.signal(Signal::SIGKILL);
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(s) => s.unwrap_or(ExitStatus::Unknown),
            Err(_) => ExitStatus::Unknown,
        }
    }
}

/// A handle on a started container instance.
#[derive(Debug, Clone)]
pub struct Container {
    pub sandbox_uid: String,
    pub name: String,
    /// 0 for the first start of this name in the sandbox, then 1, 2, ...
    pub instance: u32,
    pub pid: i32,
    pub started_at: SystemTime,
    pub log_path: PathBuf,
    pub tty: bool,
    run: Arc<ContainerRun>,
}

impl Container {
    fn of(run: Arc<ContainerRun>) -> Container {
        Container {
            sandbox_uid: run.sandbox_uid.clone(),
            name: run.name.clone(),
            instance: run.instance,
            pid: run.pid,
            started_at: run.started_at,
            log_path: run.log_path.clone(),
            tty: run.tty,
            run,
        }
    }
}

/// An exec session's stdout or stderr.
pub type ExecReader = Box<dyn AsyncRead + Send + Unpin>;
/// An exec session's stdin (drop it to send end of file).
pub type ExecWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A process running in a container's namespaces at the caller's request (`kubectl exec`).
pub struct ExecProcess {
    pub pid: i32,
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    /// `None` with a TTY: the terminal carries both outputs on `stdout`.
    pub stderr: Option<ExecReader>,
    child: tokio::process::Child,
    pidfd: Option<OwnedFd>,
    tty: Option<OwnedFd>,
}

impl fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecProcess").field("pid", &self.pid).field("tty", &self.tty.is_some()).finish_non_exhaustive()
    }
}

impl ExecProcess {
    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        match self.child.wait().await {
            Ok(s) => ExitStatus::from_std(s),
            Err(_) => ExitStatus::Unknown,
        }
    }

    /// Resizes its terminal (no-op without one).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        match &self.tty {
            Some(master) => {
                sys::set_winsize(master.as_fd(), rows, cols).map_err(|e| RuntimeError::io("resizing the terminal", e))
            }
            None => Ok(()),
        }
    }

    /// SIGKILL to the process and its process group (for a timed-out exec probe).
    pub fn kill(&self) {
        if let Some(fd) = &self.pidfd
            && sys::pidfd_send_signal(fd.as_fd(), Signal::SIGKILL).is_ok()
        {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// What a new process in a pod gets for stdin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Null,
    Piped,
}

/// A process spawned into a pod.
struct Spawned {
    child: tokio::process::Child,
    pid: i32,
    pidfd: OwnedFd,
    /// The terminal's master side, with a TTY.
    master: Option<OwnedFd>,
}

fn validate_argv_env(argv: &[String], env: &[(String, String)]) -> Result<(), RuntimeError> {
    match argv.first() {
        None => return Err(RuntimeError::InvalidRequest("the command is empty".into())),
        Some(a) if a.is_empty() => return Err(RuntimeError::InvalidRequest("the program name is empty".into())),
        _ => {}
    }
    if let Some(a) = argv.iter().find(|a| a.contains('\0')) {
        return Err(RuntimeError::InvalidRequest(format!("argument {a:?} contains NUL")));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(RuntimeError::InvalidRequest(format!("invalid environment variable {k:?}")));
        }
    }
    Ok(())
}

/// The pod's namespaces, opened through its holder (verified to still be the recorded process
/// after opening, so a recycled pid cannot smuggle in someone else's namespaces).
fn open_namespaces(uid: &str, holder: &HolderRecord) -> Result<Vec<(OwnedFd, CloneFlags)>, RuntimeError> {
    let not_ready =
        || RuntimeError::SandboxNotReady { uid: uid.to_string(), reason: "its holder process is gone".into() };
    let mut out = Vec::with_capacity(4);
    // The mount namespace goes last: joining it also moves the root into the pod.
    for (kind, flag) in [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = File::open(format!("/proc/{}/ns/{kind}", holder.proc.pid)).map_err(|_| not_ready())?;
        out.push((OwnedFd::from(f), flag));
    }
    if !holder.proc.alive() {
        return Err(not_ready());
    }
    Ok(out)
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Where `argv0` is, with `PATH` lookup like `execvp`, for a caller whose root and working
/// directory are the pod's. Resolved before spawning so that a missing program gets its own
/// error, and so that the spawn itself needs no `PATH` search (which would read the agent's).
fn resolve_program(argv0: &str, path: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        return is_executable(Path::new(argv0)).then(|| PathBuf::from(argv0));
    }
    path.split(':').map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(argv0)).find(|p| is_executable(p))
}

/// Why a spawn into a pod failed.
enum SpawnFailure {
    NotFound,
    /// What was being done, and the error.
    Io(&'static str, std::io::Error),
}

/// Spawns the command `build` makes for the resolved program from a short-lived thread that
/// has joined the pod's namespaces (the mount namespace last: joining it also moves the
/// thread's root into the pod) and entered the working directory, made if missing (like runc,
/// from inside, so a symlink in the path can only lead within the pod). The child inherits all
/// of that, so no
/// step remains between `fork` and `exec` and the standard library can use `posix_spawn`
/// (`clone(CLONE_VM | CLONE_VFORK)`): forking the agent instead copied its page tables, a
/// third of its CPU when many pods start at once. Only a terminal still needs a forked child
/// ([`sys::take_terminal_before_exec`]).
fn spawn_joined(
    namespaces: Vec<(OwnedFd, CloneFlags)>,
    argv0: &str,
    cwd: &str,
    path: &str,
    build: impl FnOnce(PathBuf) -> tokio::process::Command + Send,
) -> Result<tokio::process::Child, SpawnFailure> {
    let runtime = tokio::runtime::Handle::current();
    let spawn = move || {
        // Namespaces and the root belong to the thread, but the root and working directory are
        // shared with the agent's other threads until the thread takes its own copy.
        nix::sched::unshare(CloneFlags::CLONE_FS)
            .map_err(|e| SpawnFailure::Io("leaving the agent's file system context", e.into()))?;
        for (fd, kind) in &namespaces {
            nix::sched::setns(fd, *kind).map_err(|e| SpawnFailure::Io("joining the pod's namespaces", e.into()))?;
        }
        fs::create_dir_all(cwd).map_err(|e| SpawnFailure::Io("creating the working directory", e))?;
        // This thread's alone since `unshare(CLONE_FS)`.
        std::env::set_current_dir(cwd).map_err(|e| SpawnFailure::Io("entering the working directory", e))?;
        let mut cmd = build(resolve_program(argv0, path).ok_or(SpawnFailure::NotFound)?);
        let _runtime = runtime.enter();
        cmd.spawn().map_err(|e| SpawnFailure::Io("spawning", e))
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pier-spawn".into())
            .spawn_scoped(scope, spawn)
            .map_err(|e| SpawnFailure::Io("starting a thread to spawn from", e))?
            .join()
            .unwrap_or_else(|_| {
                Err(SpawnFailure::Io("spawning", std::io::Error::other("the spawning thread panicked")))
            })
    })
}

/// Spawns `argv` inside the sandbox's namespaces, rooted in the pod.
fn spawn_in_pod(
    entry: &SandboxEntry,
    argv: &[String],
    env: &[(String, String)],
    cwd: &str,
    tty: bool,
    input: Input,
) -> Result<Spawned, RuntimeError> {
    let uid = &entry.sandbox.uid;
    let holder = entry.holder().filter(|h| h.proc.alive()).ok_or_else(|| RuntimeError::SandboxNotReady {
        uid: uid.clone(),
        reason: "its holder process is gone".into(),
    })?;
    if !cwd.starts_with('/') || cwd.contains('\0') {
        return Err(RuntimeError::InvalidRequest(format!("working directory {cwd:?} is not an absolute path")));
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let namespaces = open_namespaces(uid, &holder)?;

    let mut master = None;
    // The terminal's slave side as stdin, stdout and stderr.
    let mut slave = None;
    if tty {
        let p = pty::open_pty(TTY_ROWS, TTY_COLS).map_err(|e| RuntimeError::io("allocating a terminal", e))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| RuntimeError::io("duplicating the terminal", e));
        slave = Some((dup(&p.slave)?, dup(&p.slave)?, p.slave));
        master = Some(p.master);
    }
    let build = |program: PathBuf| -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg0(&argv[0]).args(&argv[1..]).env_clear().envs(env.iter().map(|(k, v)| (k, v))).kill_on_drop(false);
        match slave {
            Some((stdin, stdout, stderr)) => {
                cmd.stdin(stdin).stdout(stdout).stderr(stderr);
                // A TTY session gets its own session (and so process group) in the child.
                sys::take_terminal_before_exec(&mut cmd);
            }
            None => {
                cmd.stdin(if input == Input::Piped { Stdio::piped() } else { Stdio::null() })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0);
            }
        }
        cmd
    };
    // The Command (and with it the terminal's slave side) is gone when this returns, so the
    // master sees end of file once the process tree is done with the terminal.
    let mut child = spawn_joined(namespaces, &argv[0], cwd, path, build).map_err(|e| match e {
        SpawnFailure::NotFound => RuntimeError::ExecutableNotFound { argv0: argv[0].clone() },
        SpawnFailure::Io(what, source) => {
            RuntimeError::Spawn { what: format!("{:?} in pod sandbox {uid} ({what})", argv[0]), source }
        }
    })?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Unsupervisable without it: do not leave it running.
            let _ = child.start_kill();
            return Err(RuntimeError::io(format!("pidfd_open({pid})"), e));
        }
    };
    Ok(Spawned { child, pid, pidfd, master })
}

/// The environment of a container: defaults, then the spec's entries (later ones win).
fn container_env(hostname: &str, tty: bool, spec_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), hostname.to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    if tty {
        env.push(("TERM".to_string(), "xterm".to_string()));
    }
    overlay_env(&mut env, spec_env);
    env
}

fn overlay_env(env: &mut Vec<(String, String)>, extra: &[(String, String)]) {
    // Indexed, not searched: a pod in a namespace with a thousand Services has eight
    // thousand variables, and a linear search per variable made starts quadratic.
    let mut index: std::collections::HashMap<String, usize> =
        env.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
    for (k, v) in extra {
        match index.get(k) {
            Some(&i) => env[i].1 = v.clone(),
            None => {
                index.insert(k.clone(), env.len());
                env.push((k.clone(), v.clone()));
            }
        }
    }
}

impl Runtime {
    /// Starts a container in a sandbox. Starting a name again (a restart) makes a new instance
    /// whose log is separate; the previous instance's log stays readable as `previous`.
    pub async fn start_container(
        &self,
        sandbox: &crate::Sandbox,
        spec: ContainerSpec,
    ) -> Result<Container, RuntimeError> {
        if !valid_name(&spec.name) || spec.name.len() > 63 {
            return Err(RuntimeError::InvalidRequest(format!("invalid container name {:?}", spec.name)));
        }
        validate_argv_env(&spec.argv, &spec.env)?;
        let inner = &self.inner;
        let _guard = inner.locks.lock(&sandbox.uid).await;
        let entry = inner.entry(&sandbox.uid)?;
        let running = |uid: &str| RuntimeError::ContainerRunning { uid: uid.to_string(), container: spec.name.clone() };
        if let Some(run) = entry.containers.lock().unwrap_or_else(|p| p.into_inner()).get(&spec.name)
            && run.status().is_none()
        {
            return Err(running(&sandbox.uid));
        }
        let log_dir = &entry.log_dir;
        let instance = logs::instances(log_dir, &spec.name).last().map(|n| n + 1).unwrap_or(0);
        let env = container_env(&entry.sandbox.hostname, spec.tty, &spec.env);
        let cwd = spec.working_dir.clone().unwrap_or_else(|| "/".to_string());

        let Spawned { mut child, pid, pidfd, master } =
            spawn_in_pod(&entry, &spec.argv, &env, &cwd, spec.tty, Input::Null)?;
        let log_path = logs::instance_path(log_dir, &spec.name, instance);
        let log = match LogWriter::create(&log_path) {
            Ok(l) => l,
            Err(e) => {
                let _ = sys::pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL);
                return Err(RuntimeError::io(format!("creating {}", log_path.display()), e));
            }
        };
        logs::prune(log_dir, &spec.name, instance);
        let mut pumps = Vec::new();
        if let Some(master) = master {
            match pty::reader(master) {
                Ok(r) => pumps.push(tokio::spawn(logs::pump(r, Stream::Stdout, log.clone(), true))),
                Err(e) => tracing::warn!(error = %e, "container terminal is not readable; its output is lost"),
            }
        }
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(logs::pump(out, Stream::Stdout, log.clone(), false)));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(logs::pump(err, Stream::Stderr, log, false)));
        }
        let run = Arc::new(ContainerRun {
            sandbox_uid: sandbox.uid.clone(),
            name: spec.name.clone(),
            instance,
            pid,
            started_at: SystemTime::now(),
            log_path,
            tty: spec.tty,
            env,
            working_dir: cwd,
            pidfd,
            exit: watch::channel(None).0,
            finished: watch::channel(false).0,
        });
        let watcher = run.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => ExitStatus::from_std(s),
                Err(_) => ExitStatus::Unknown,
            };
            // What is left of its process group dies with it, as a PID namespace would.
            let _ = killpg(Pid::from_raw(watcher.pid), Signal::SIGKILL);
            let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
            if tokio::time::timeout(LOG_DRAIN_TIMEOUT, async {
                for p in pumps {
                    let _ = p.await;
                }
            })
            .await
            .is_err()
            {
                // Someone outside the group still holds the output open: stop reading it.
                aborts.iter().for_each(|a| a.abort());
            }
            tracing::debug!(uid = %watcher.sandbox_uid, container = %watcher.name, status = %status, "container exited");
            watcher.exit.send_replace(Some(status));
            watcher.finished.send_replace(true);
        });
        entry.containers.lock().unwrap_or_else(|p| p.into_inner()).insert(spec.name.clone(), run.clone());
        Ok(Container::of(run))
    }

    /// The current instance of a container, if this runtime started one.
    pub fn container(&self, sandbox_uid: &str, name: &str) -> Option<Container> {
        let entry = self.inner.entry(sandbox_uid).ok()?;
        let run = entry.containers.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()?;
        Some(Container::of(run))
    }

    /// Waits for the container to exit (its log is complete by then).
    pub async fn wait(&self, c: &Container) -> ExitStatus {
        c.run.wait().await
    }

    /// The exit status if it has exited.
    pub fn try_wait(&self, c: &Container) -> Option<ExitStatus> {
        c.run.status()
    }

    /// Sends a signal to the container's main process.
    pub fn signal(&self, c: &Container, sig: Signal) -> Result<(), RuntimeError> {
        let not_running =
            || RuntimeError::ContainerNotRunning { uid: c.sandbox_uid.clone(), container: c.name.clone() };
        if c.run.status().is_some() {
            return Err(not_running());
        }
        c.run.signal(sig).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) { not_running() } else { RuntimeError::io("sending a signal", e) }
        })
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL to its whole process group.
    pub async fn stop(&self, c: &Container, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        if let Some(s) = c.run.status() {
            return Ok(s);
        }
        let _ = c.run.signal(Signal::SIGTERM);
        if let Ok(s) = tokio::time::timeout(grace, c.run.wait()).await {
            return Ok(s);
        }
        c.run.kill();
        tokio::time::timeout(KILL_TIMEOUT, c.run.wait())
            .await
            .map_err(|_| RuntimeError::Timeout(format!("waiting for container {:?} to die after SIGKILL", c.name)))
    }

    /// Runs `argv` in a running container's namespaces and root, with its environment (plus
    /// `env`) and working directory. The caller owns the process's stdio.
    pub async fn exec(
        &self,
        c: &Container,
        argv: &[String],
        env: &[(String, String)],
        tty: bool,
    ) -> Result<ExecProcess, RuntimeError> {
        validate_argv_env(argv, env)?;
        if c.run.status().is_some() {
            return Err(RuntimeError::ContainerNotRunning { uid: c.sandbox_uid.clone(), container: c.name.clone() });
        }
        let entry = self.inner.entry(&c.sandbox_uid)?;
        let mut full_env = c.run.env.clone();
        if tty && !full_env.iter().any(|(k, _)| k == "TERM") {
            full_env.push(("TERM".to_string(), "xterm".to_string()));
        }
        overlay_env(&mut full_env, env);
        let Spawned { mut child, pid, pidfd, master } =
            spawn_in_pod(&entry, argv, &full_env, &c.run.working_dir, tty, Input::Piped)?;
        let (stdin, stdout, stderr, tty_fd): (Option<ExecWriter>, Option<ExecReader>, Option<ExecReader>, _) =
            match master {
                Some(master) => {
                    let resize = master.try_clone().map_err(|e| RuntimeError::io("duplicating the terminal", e))?;
                    let (r, w) =
                        pty::split_master(master).map_err(|e| RuntimeError::io("registering the terminal", e))?;
                    (Some(Box::new(w)), Some(Box::new(r)), None, Some(resize))
                }
                None => (
                    child.stdin.take().map(|s| Box::new(s) as ExecWriter),
                    child.stdout.take().map(|s| Box::new(s) as ExecReader),
                    child.stderr.take().map(|s| Box::new(s) as ExecReader),
                    None,
                ),
            };
        Ok(ExecProcess { pid, stdin, stdout, stderr, child, pidfd: Some(pidfd), tty: tty_fd })
    }

    /// The log of a container's current (or, with `previous`, previous) instance.
    pub fn log_path(&self, sandbox_uid: &str, container: &str, previous: bool) -> Result<PathBuf, RuntimeError> {
        let not_found =
            || RuntimeError::ContainerNotFound { uid: sandbox_uid.to_string(), container: container.to_string() };
        if !valid_name(container) {
            return Err(not_found());
        }
        let entry = self.inner.entry(sandbox_uid)?;
        let dir = &entry.log_dir;
        let found = logs::instances(dir, container);
        let current = *found.last().ok_or_else(not_found)?;
        if previous {
            return match found.iter().rev().nth(1) {
                Some(&n) if n < current => Ok(logs::instance_path(dir, container, n)),
                _ => Err(RuntimeError::PreviousNotFound {
                    uid: sandbox_uid.to_string(),
                    container: container.to_string(),
                }),
            };
        }
        Ok(logs::instance_path(dir, container, current))
    }

    /// Writes a container's log to `out` as `kubectl logs` shows it. With `follow`, returns once
    /// the instance has exited and everything it wrote has been copied (or `out` fails).
    pub async fn read_logs<W: AsyncWrite + Unpin>(
        &self,
        sandbox_uid: &str,
        container: &str,
        opts: &logs::LogOptions,
        out: &mut W,
    ) -> Result<(), RuntimeError> {
        let path = self.log_path(sandbox_uid, container, opts.previous)?;
        let finished = if opts.follow && !opts.previous {
            self.container(sandbox_uid, container).filter(|c| c.log_path == path).map(|c| c.run.finished())
        } else {
            None
        };
        logs::copy(&path, opts, finished, out)
            .await
            .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_kubernetes() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
        assert_eq!(ExitStatus::Signal(15).to_string(), "killed by SIGTERM");
        assert!(ExitStatus::Code(0).success());
    }

    #[test]
    fn env_defaults_are_overridden_in_order() {
        let env = container_env(
            "web-0",
            false,
            &[("PATH".into(), "/x".into()), ("A".into(), "1".into()), ("A".into(), "2".into())],
        );
        assert_eq!(env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()), Some("/x"));
        assert_eq!(env.iter().filter(|(k, _)| k == "A").count(), 1);
        assert_eq!(env.iter().find(|(k, _)| k == "A").map(|(_, v)| v.as_str()), Some("2"));
        assert_eq!(env.iter().find(|(k, _)| k == "HOSTNAME").map(|(_, v)| v.as_str()), Some("web-0"));
    }

    #[test]
    fn bad_argv_and_env_are_refused() {
        assert!(validate_argv_env(&[], &[]).is_err());
        assert!(validate_argv_env(&["".into()], &[]).is_err());
        assert!(validate_argv_env(&["a\0b".into()], &[]).is_err());
        assert!(validate_argv_env(&["sh".into()], &[("A=B".into(), "x".into())]).is_err());
        assert!(validate_argv_env(&["sh".into()], &[("A".into(), "x\0".into())]).is_err());
        assert!(validate_argv_env(&["sh".into()], &[("A".into(), "x".into())]).is_ok());
    }
}
