//! A real `pier server` for black-box tests: started from the built binary with a fresh data
//! directory inside a fresh sealed network namespace (only `lo` and one veth to a second
//! private namespace, no route out; both deleted when the handle drops), driven with the real
//! `kubectl` run inside the same namespace, and killed — with every pod it started — when the
//! handle drops.

#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    child: Option<Child>,
    /// The sealed network namespace the server (and kubectl) run in, if any.
    pub netns: Option<Netns>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    cache_dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn fails(self) -> Run {
        assert_ne!(self.code, 0, "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

pub fn pier_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pier"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// Starts a server on a new data directory.
    pub fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().to_path_buf();
        let mut c = Cluster::start_in(&data_dir, &[]);
        c._tmp = Some(tmp);
        c
    }

    /// Starts a server on `data_dir` (existing or not) with extra flags, in a fresh sealed
    /// network namespace: every test cluster runs sealed, because a node that runs pods
    /// creates its bridge and routes in the namespace it runs in.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Cluster {
        std::fs::create_dir_all(data_dir).unwrap();
        let _ = std::fs::remove_file(data_dir.join("kubeconfig.yaml"));
        let log = data_dir.join(format!("server-{}.log", rand_suffix()));
        let logf = std::fs::File::create(&log).unwrap();
        let netns = Netns::create();
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(pier_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--node-ip")
            .arg(NODE_IP)
            .arg("--node-name")
            .arg("pier-node")
            .args(extra)
            .env("RUST_LOG", "info,pier_apiserver=debug,pier_agent=debug,pier_runtime=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn pier server");
        let c = Cluster {
            child: Some(child),
            netns: Some(netns),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            cache_dir: tempfile::tempdir().unwrap(),
            log,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&self.log).unwrap_or_default().contains("pier is ready")
                && self.kubeconfig().exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pier server did not become ready:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// Starts a server on a new data directory with extra flags (sealed, like every cluster).
    pub fn start_sealed(extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Cluster::start_in(tmp.path(), extra);
        c._tmp = Some(tmp);
        c
    }

    /// A command run inside the cluster's network namespace (or on the host when unsealed).
    pub fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name, program]);
                cmd
            }
            None => Command::new(program),
        }
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.command("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.cache_dir.path())
            .arg("--cache-dir")
            .arg(self.cache_dir.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl with `args`.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        Run::from(self.kubectl_cmd(args).output().expect("run kubectl"))
    }

    /// Runs kubectl with `stdin` piped in (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Runs kubectl with extra environment (`KUBE_EDITOR`).
    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.kubectl_cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run kubectl"))
    }

    /// Sends SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
        kill_pods(&self.data_dir);
    }
}

/// Kills every process of every pod the server left behind: the sandbox holders (recorded
/// under the runtime's state directory) and whatever runs in their network namespaces.
/// Pods outlive their agent by design, so a test that kills its server must do this.
pub fn kill_pods(data_dir: &Path) {
    if let Err(e) = pier_runtime::kill_recorded_pods(&data_dir.join("runtime")) {
        eprintln!("killing the pods of {}: {e}", data_dir.display());
    }
}

/// The node IP of test clusters: a documentation address (RFC 5737, TEST-NET-2) that exists
/// only inside the test's namespaces.
pub const NODE_IP: &str = "198.51.100.1";

/// A pair of fresh network namespaces joined by a veth: the node (`name`) with `NODE_IP`, and
/// a peer holding the other end. Neither has a default route. Both go when this drops.
pub struct Netns {
    pub name: String,
    pub peer: String,
}

impl Netns {
    pub fn create() -> Netns {
        let id = format!("{}-{}", std::process::id(), rand_suffix());
        let name = format!("pier-t-{id}");
        let peer = format!("pier-p-{id}");
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &name]);
        run(&["netns", "add", &peer]);
        let (a, b) =
            (format!("pt{}", &id[id.len().saturating_sub(8)..]), format!("pp{}", &id[id.len().saturating_sub(8)..]));
        run(&["-n", &name, "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &peer]);
        run(&["-n", &name, "link", "set", &a, "name", "eth0"]);
        run(&["-n", &peer, "link", "set", &b, "name", "eth0"]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        run(&["-n", &name, "addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]);
        run(&["-n", &name, "link", "set", "eth0", "up"]);
        run(&["-n", &peer, "link", "set", "lo", "up"]);
        run(&["-n", &peer, "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        run(&["-n", &peer, "link", "set", "eth0", "up"]);
        Netns { name, peer }
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:08x}", n)
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.name, &self.peer] {
            // Whatever still runs in it (pods) goes with it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Writes `contents` to a file in a fresh temp dir and returns its path (kept alive by the dir).
pub fn manifest(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, contents).unwrap();
    p.to_string_lossy().into_owned()
}

/// Polls `f` every 200 ms until it gives a value, for at most `limit`.
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// Seed 002's httpd Deployment, corrected to `apps/v1` (which requires a selector).
pub const HTTPD_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpd
spec:
  replicas: 4
  selector:
    matchLabels:
      run: httpd
  template:
    metadata:
      labels:
        run: httpd
    spec:
      containers:
      - name: httpd
        image: httpd
        ports:
        - containerPort: 80
";

/// A pod that only sleeps, to run clients (curl, dig) from.
pub const CLIENT_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: client
    image: busybox
    command: [sleep, '3600']
";
