//! `cargo xtask bench pods`: pod start latency and endpoint propagation, the goals of issue 3.
//!
//! The server runs in a fresh sealed network namespace ([`crate::sealed`]); the client runs on
//! a thread that `setns`es into that namespace before it creates its (current-thread) tokio
//! runtime, so every request goes to the namespace's own loopback. `kubectl` (for `exec`) runs
//! there too, through `ip netns exec`. The main thread only starts and stops things: it waits
//! for the client, for Ctrl-C or SIGTERM, and whatever happens it cleans up (server, pods,
//! namespaces, data directory) before the report is printed or the error returned.
//!
//! In the namespace `bench`, with a watch on its pods and one on the EndpointSlices and the
//! Endpoints of Service `bench`, each event stamped with the instant it arrived:
//! 1. one warm-up pod (it creates the node's bridge; reported apart), then `--sequential` pods
//!    one at a time: create (image `luksa/kubia`, `spec.nodeName` set, no probe, so Ready means
//!    running) → the watch shows `Ready=True`; each deleted (grace 0) and its sandbox gone
//!    before the next;
//! 2. `--burst` pods created at once over pre-opened connections: per-pod create → Ready, and
//!    the first create → the last Ready;
//! 3. a ReplicaSet of `--replicas` (the scheduler binds the pods): its create → each pod Ready;
//! 4. `--services` Services (`bench` selects `app=bench`; the fillers each select a label no pod
//!    has, or nothing with `--selectorless-fillers`), the controllers left to settle, a few
//!    single pods as in 1 (pod start with the Services' environment variables), then
//!    `--endpoint-pods` pods `app=bench` with an exec readiness probe (`ls /var/ready`,
//!    `periodSeconds: 1`, `failureThreshold: 1`); the file in pod `bench-0` is created and
//!    removed `--flips` times with `kubectl exec`, and each flip is timed from the pod watch
//!    event in which its Ready condition changes to the EndpointSlice watch event in which
//!    that address's `ready` condition shows the same value.
//!
//! Each round also accounts for the CPU: the machine's busy time, the server's (its own and
//! its exited children's), the pods' processes', the benchmark's, and the rest, so that a
//! missed goal can be told from a busy machine.
//!
//! Every wait is bounded; the report is printed and the task exits 0 whether or not the goals
//! are met. It fails only when the run itself fails. A delete that pier answers with a spurious
//! 409 Conflict is retried, and the report counts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;

use crate::PodsArgs;
use crate::procfs::{machine_cpu, proc_cpu, proc_cpu_with_children, proc_threads_cpu};
use crate::report::{Machine, machine, ms, percentile, print_table, revision, verdict};
use crate::sealed::{self, Cleanup, Sealed};

const NAMESPACE: &str = "bench";
const IMAGE: &str = "luksa/kubia";
/// The Service whose endpoints are timed, and the label its pods carry.
const SERVICE: &str = "bench";
/// Issue 4: pod Ready → its rule live, p99, with 10,000 Services.
const GOAL_PROGRAMMING_P99: Duration = Duration::from_millis(100);
const FLIP_POD: &str = "bench-0";
const RS_NAME: &str = "rs-bench";
/// Bound on one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one pod becoming Ready, or being gone with its sandbox.
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a whole round of pods becoming Ready, or being gone.
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the controllers' work for the Services (their EndpointSlices and Endpoints).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on waiting for the server to go quiet before a measurement (not an error).
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each step of a flip: the exec, the pod's condition, the slice.
const FLIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client thread may take to stop after an interruption.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const CREATE_CONCURRENCY: usize = 32;
/// Single pods started once the Services exist.
const WITH_SERVICES_STARTS: usize = 5;

const GOAL_POD_START_P50: Duration = Duration::from_millis(200);
const GOAL_PROPAGATION_P99: Duration = Duration::from_millis(50);

/// What the client thread needs to know about the sealed cluster.
#[derive(Debug, Clone)]
struct Target {
    netns: String,
    kubeconfig: PathBuf,
    home: PathBuf,
    data_dir: PathBuf,
    server_pid: u32,
}

/// One pod as the watch saw it.
#[derive(Debug, Clone)]
struct PodSeen {
    first_seen: Instant,
    /// First event with `spec.nodeName` set.
    bound: Option<Instant>,
    /// First event with `status.podIP`, and the IP.
    ip: Option<(Instant, String)>,
    ready: bool,
    /// Every change of the Ready condition (it starts false).
    transitions: Vec<(Instant, bool)>,
    owner: Option<String>,
    deleted: bool,
}

impl PodSeen {
    fn became_ready(&self) -> Option<Instant> {
        self.transitions.iter().find(|(_, r)| *r).map(|(t, _)| *t)
    }
}

/// Every change of one address's readiness in an object of the measured Service.
#[derive(Debug, Clone, Default)]
struct AddressSeen {
    ready: Option<bool>,
    transitions: Vec<(Instant, bool)>,
}

impl AddressSeen {
    fn observe(&mut self, ready: bool, now: Instant) {
        if self.ready != Some(ready) {
            self.ready = Some(ready);
            self.transitions.push((now, ready));
        }
    }

    fn first_since(&self, since: Instant, ready: bool) -> Option<Instant> {
        self.transitions.iter().find(|(t, r)| *t >= since && *r == ready).map(|(t, _)| *t)
    }
}

/// Everything the watches saw, keyed by pod name and by endpoint address.
#[derive(Debug, Default)]
struct View {
    pods: HashMap<String, PodSeen>,
    /// The measured Service's EndpointSlices.
    slices: HashMap<String, AddressSeen>,
    /// The measured Service's Endpoints (v1), for comparison.
    endpoints: HashMap<String, AddressSeen>,
    watch_errors: Vec<String>,
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

impl View {
    fn observe_pod(&mut self, p: &Pod, now: Instant) {
        let Some(name) = p.metadata.name.clone() else { return };
        let e = self.pods.entry(name).or_insert_with(|| PodSeen {
            first_seen: now,
            bound: None,
            ip: None,
            ready: false,
            transitions: Vec::new(),
            owner: None,
            deleted: false,
        });
        if e.bound.is_none() && p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
            e.bound = Some(now);
        }
        if e.ip.is_none()
            && let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|i| !i.is_empty())
        {
            e.ip = Some((now, ip));
        }
        let ready = pod_ready(p);
        if ready != e.ready {
            e.ready = ready;
            e.transitions.push((now, ready));
        }
        if e.owner.is_none() {
            e.owner = p.metadata.owner_references.as_ref().and_then(|o| o.first()).map(|o| o.name.clone());
        }
    }

    fn observe_slice(&mut self, s: &EndpointSlice, now: Instant) {
        for ep in &s.endpoints {
            let Some(addr) = ep.addresses.first() else { continue };
            // As the API defines it: no `ready` condition means ready.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            self.slices.entry(addr.clone()).or_default().observe(ready, now);
        }
    }

    fn observe_endpoints(&mut self, e: &Endpoints, now: Instant) {
        for subset in e.subsets.iter().flatten() {
            for (list, ready) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
                for a in list.iter().flatten() {
                    self.endpoints.entry(a.ip.clone()).or_default().observe(ready, now);
                }
            }
        }
    }

    fn ip_of(&self, pod: &str) -> Option<String> {
        self.pods.get(pod).and_then(|p| p.ip.as_ref()).map(|(_, ip)| ip.clone())
    }
}

/// Feeds one watch into the shared view until the runtime stops.
fn spawn_watch<K>(api: Api<K>, config: watcher::Config, view: std::sync::Arc<watch::Sender<View>>, what: &'static str)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    View: Observe<K>,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => view.send_modify(|v| v.apply(&o, now)),
                Ok(watcher::Event::Delete(o)) => view.send_modify(|v| v.delete(&o)),
                Ok(_) => {}
                Err(e) => view.send_modify(|v| v.watch_errors.push(format!("{what}: {e}"))),
            }
        }
    });
}

trait Observe<K> {
    fn apply(&mut self, o: &K, now: Instant);
    fn delete(&mut self, _o: &K) {}
}

impl Observe<Pod> for View {
    fn apply(&mut self, o: &Pod, now: Instant) {
        self.observe_pod(o, now);
    }
    fn delete(&mut self, o: &Pod) {
        if let Some(p) = o.metadata.name.as_ref().and_then(|n| self.pods.get_mut(n)) {
            p.deleted = true;
        }
    }
}

impl Observe<EndpointSlice> for View {
    fn apply(&mut self, o: &EndpointSlice, now: Instant) {
        self.observe_slice(o, now);
    }
}

impl Observe<Endpoints> for View {
    fn apply(&mut self, o: &Endpoints, now: Instant) {
        self.observe_endpoints(o, now);
    }
}

/// Waits until `f` finds something in the view.
async fn wait_view<T>(
    rx: &mut watch::Receiver<View>,
    what: &str,
    limit: Duration,
    mut f: impl FnMut(&View) -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(t) = f(&rx.borrow_and_update()) {
            return Ok(t);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("{what}: the watches stopped"),
            Err(_) => {
                let errors = rx.borrow().watch_errors.join("; ");
                bail!(
                    "{what}: not within {limit:?}{}",
                    if errors.is_empty() { String::new() } else { format!(" (watch errors: {errors})") }
                )
            }
        }
    }
}

async fn bounded<T>(what: &str, limit: Duration, f: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {limit:?}"),
    }
}

/// How often a delete is retried after a 409 Conflict (see [`delete_retrying`]).
const DELETE_ATTEMPTS: usize = 5;

/// Deletes `name`, retrying when the server answers 409 Conflict although the request has no
/// preconditions (pier's delete is a compare-and-swap on the revision it just read, and a
/// concurrent status write makes it fail; upstream retries inside the server). Returns how many
/// conflicts were retried.
async fn delete_retrying<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<usize>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("deleting {name}");
    for attempt in 0..DELETE_ATTEMPTS {
        match tokio::time::timeout(REQUEST_TIMEOUT, api.delete(name, dp)).await {
            Err(_) => bail!("{what}: no answer within {REQUEST_TIMEOUT:?}"),
            Ok(Ok(_)) => return Ok(attempt),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 && attempt + 1 < DELETE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context(what)),
        }
    }
    bail!("{what}: 409 Conflict {DELETE_ATTEMPTS} times")
}

/// Above this many Services in the namespace, the pods get `enableServiceLinks: false`: the
/// variables of 10,000 Services exceed the kernel's limit on a process's environment, which
/// fails the container's exec on a kubelet too.
const MAX_SERVICE_LINKS: u32 = 2000;

fn pod_body(name: &str, app: &str, probe: bool, service_links: bool) -> Result<Pod> {
    let mut container = json!({"name": "kubia", "image": IMAGE, "ports": [{"containerPort": 8080}]});
    if probe {
        container["readinessProbe"] =
            json!({"exec": {"command": ["ls", "/var/ready"]}, "periodSeconds": 1, "failureThreshold": 1});
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": sealed::NODE_NAME, "terminationGracePeriodSeconds": 0, "enableServiceLinks": service_links,
                 "containers": [container]}
    }))?)
}

fn service_body(name: &str, selector: Option<&str>) -> Result<Service> {
    let mut spec = json!({"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]});
    if let Some(app) = selector {
        spec["selector"] = json!({"app": app});
    }
    Ok(serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
    )?)
}

/// One pod's milestones, from its create request being sent.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// The create response arrived.
    acked: Duration,
    /// The watch showed the pod with an IP (its sandbox exists).
    ip: Duration,
    /// The watch showed Ready=True.
    ready: Duration,
}

/// One readiness flip.
#[derive(Debug, Clone, Copy)]
struct Flip {
    /// How long `kubectl exec` ran.
    exec: Duration,
    /// `kubectl exec` started → the pod watch showed the new Ready value.
    exec_to_pod: Duration,
    /// The pod watch event → the EndpointSlice watch event (clamped at 0).
    pod_to_slice: Duration,
    slice_first: bool,
    /// The pod watch event → the Endpoints (v1) watch event (clamped at 0), if it came.
    pod_to_endpoints: Option<Duration>,
    /// The pod watch event → a connection to the Service's cluster IP from the node first
    /// shows the new state (accepted once the pod is its only ready endpoint, refused once it
    /// is not): the whole path to the data plane, rules live included.
    pod_to_rule: Option<Duration>,
}

/// How often the data-plane probe connects to the cluster IP. Every connect leaves a
/// TIME_WAIT socket in the node namespace, so this also bounds their number.
const PROBE_EVERY: Duration = Duration::from_millis(2);

/// Connects to `addr` every [`PROBE_EVERY`] until `stop`, recording each change between
/// accepted and refused with the instant it was first seen.
async fn probe_cluster_ip(
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(Instant, bool)>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let ok = matches!(
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        if last != Some(ok) {
            last = Some(ok);
            seen.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), ok));
        }
    }
}

/// A point in time with the CPU time used so far.
#[derive(Debug, Clone, Copy)]
struct Snap {
    at: Instant,
    machine: Duration,
    /// The server with its exited children.
    server: Duration,
    /// The server alone.
    server_own: Duration,
    client: Duration,
}

/// Where the CPU went during a round: the machine's busy time, split into the server, its exited
/// children (exec probes, `kubectl exec` sessions), the pods' processes, this benchmark, and
/// the rest (other people's work and kernel threads).
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    wall: Duration,
    machine: Duration,
    server: Duration,
    children: Duration,
    pods: Duration,
    client: Duration,
    /// CPUs busy (machine-wide) just before the round.
    background: f64,
}

impl CpuUse {
    fn line(&self) -> String {
        let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
        let other = self.machine.saturating_sub(self.server + self.children + self.pods + self.client);
        format!(
            "wall {}; machine busy {} s of {} CPU-s (server {}, its exited children {}, pods {}, benchmark {}, other {}); {:.2} CPUs busy just before",
            ms(self.wall),
            s(self.machine),
            s(self.wall * std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)),
            s(self.server),
            s(self.children),
            s(self.pods),
            s(self.client),
            s(other),
            self.background
        )
    }
}

#[derive(Debug, Default)]
struct Measured {
    /// Where the server kept its data, and that filesystem (type, journal).
    data_dir: PathBuf,
    data_fs: String,
    warmup: Option<Start>,
    sequential: Vec<Start>,
    burst: Vec<Start>,
    /// The first create sent → the last pod Ready.
    burst_all: Duration,
    burst_cpu: CpuUse,
    /// Per pod, from the ReplicaSet's create: (created, bound, Ready).
    rs: Vec<(Duration, Duration, Duration)>,
    rs_all: Duration,
    rs_cpu: CpuUse,
    services_created: Duration,
    /// Single pods started with the Services in their namespace (`enableServiceLinks`).
    with_services: Vec<Start>,
    settled: Duration,
    quiet: bool,
    flips: Vec<Flip>,
    /// Two seconds with the Service's pods running their probes, before the flips.
    probing: CpuUse,
    flip_cpu: CpuUse,
    watch_errors: Vec<String>,
    delete_conflicts: usize,
}

struct Client {
    client: kube::Client,
    pods: Api<Pod>,
    view: watch::Receiver<View>,
    target: Target,
    /// Deletes without preconditions that the server answered with 409 Conflict (retried).
    delete_conflicts: usize,
    /// `enableServiceLinks` of the pods created from now on.
    service_links: bool,
}

impl Client {
    async fn new(target: Target) -> Result<Client> {
        let kc = Kubeconfig::read_from(&target.kubeconfig).context("reading the server's kubeconfig")?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("loading the server's kubeconfig")?;
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        ensure!(
            config.cluster_url.host() == Some("127.0.0.1"),
            "the kubeconfig points at {}, not at the namespace's 127.0.0.1",
            config.cluster_url
        );
        let client = kube::Client::try_from(config).context("building the kube client")?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
        bounded("creating the bench namespace", REQUEST_TIMEOUT, namespaces.create(&PostParams::default(), &ns))
            .await?;
        let (tx, view) = watch::channel(View::default());
        let tx = std::sync::Arc::new(tx);
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        spawn_watch(pods.clone(), watcher::Config::default(), tx.clone(), "pods");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
        let by_service = format!("kubernetes.io/service-name={SERVICE}");
        spawn_watch(slices, watcher::Config::default().labels(&by_service), tx.clone(), "endpointslices");
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
        let by_name = format!("metadata.name={SERVICE}");
        spawn_watch(endpoints, watcher::Config::default().fields(&by_name), tx, "endpoints");
        Ok(Client { client, pods, view, target, delete_conflicts: 0, service_links: true })
    }

    fn server_cpu(&self) -> Duration {
        proc_cpu_with_children(&self.target.server_pid.to_string()).unwrap_or_default()
    }

    fn snap(&self) -> Snap {
        Snap {
            at: Instant::now(),
            machine: machine_cpu().unwrap_or_default(),
            server: self.server_cpu(),
            server_own: proc_cpu(&self.target.server_pid.to_string()).unwrap_or_default(),
            // With its exited children: the `kubectl exec` runs are the benchmark's work too.
            client: proc_cpu_with_children("self").unwrap_or_default(),
        }
    }

    /// CPU used since `s`; the pods' share is what their live processes used in their lives.
    fn cpu_since(&self, s: Snap, background: f64) -> CpuUse {
        let pods = sealed::pod_processes(&self.target.data_dir).iter().map(|p| proc_threads_cpu(*p)).sum();
        let now = self.snap();
        CpuUse {
            wall: now.at - s.at,
            machine: now.machine.saturating_sub(s.machine),
            server: now.server_own.saturating_sub(s.server_own),
            children: now.server.saturating_sub(s.server).saturating_sub(now.server_own.saturating_sub(s.server_own)),
            pods,
            client: now.client.saturating_sub(s.client),
            background,
        }
    }

    /// Waits until the server used under 5% of a CPU for a whole second (false on timeout);
    /// also returns how many CPUs the whole machine kept busy in that last second.
    async fn quiet(&self) -> (bool, f64) {
        let deadline = Instant::now() + QUIET_TIMEOUT;
        let mut busy = 0.0;
        while Instant::now() < deadline {
            let s = self.snap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.snap();
            busy = now.machine.saturating_sub(s.machine).as_secs_f64() / (now.at - s.at).as_secs_f64();
            if now.server.saturating_sub(s.server) < Duration::from_millis(50) {
                return (true, busy);
            }
        }
        (false, busy)
    }

    async fn create_pod(&self, body: &Pod) -> Result<Instant> {
        let name = body.metadata.name.clone().unwrap_or_default();
        let sent = Instant::now();
        bounded(&format!("creating pod {name}"), REQUEST_TIMEOUT, self.pods.create(&PostParams::default(), body))
            .await?;
        Ok(sent)
    }

    /// The milestones of pod `name` whose create was sent at `sent`, once it is Ready.
    async fn wait_started(&mut self, name: &str, sent: Instant, acked: Instant, limit: Duration) -> Result<Start> {
        let (ip, ready) = wait_view(&mut self.view, &format!("pod {name} Ready"), limit, |v| {
            let p = v.pods.get(name)?;
            Some((p.ip.as_ref()?.0, p.became_ready()?))
        })
        .await?;
        Ok(Start { acked: acked - sent, ip: ip.saturating_duration_since(sent), ready: ready - sent })
    }

    /// Deletes pods (grace 0) and waits until the watch saw them go and no sandbox is left.
    async fn delete_pods(&mut self, names: &[String]) -> Result<()> {
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        let deletes = names.iter().map(|n| delete_retrying(&self.pods, n, &dp));
        for r in join_all(deletes).await {
            self.delete_conflicts += r?;
        }
        self.wait_gone(names).await
    }

    async fn wait_gone(&mut self, names: &[String]) -> Result<()> {
        wait_view(&mut self.view, "pods deleted", ROUND_TIMEOUT, |v| {
            names.iter().all(|n| v.pods.get(n).is_none_or(|p| p.deleted)).then_some(())
        })
        .await?;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while sealed::sandbox_count(&self.target.data_dir) > 0 {
            ensure!(
                Instant::now() < deadline,
                "{} pod sandboxes still exist {ROUND_TIMEOUT:?} after their pods were deleted",
                sealed::sandbox_count(&self.target.data_dir)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts `n` pods one after another, each deleted before the next; their milestones.
    async fn one_at_a_time(&mut self, prefix: &str, n: usize) -> Result<Vec<Start>> {
        let mut out = Vec::new();
        for i in 0..n {
            let name = format!("{prefix}-{i:03}");
            let sent = self.create_pod(&pod_body(&name, "start", false, self.service_links)?).await?;
            let acked = Instant::now();
            out.push(self.wait_started(&name, sent, acked, POD_TIMEOUT).await?);
            self.delete_pods(&[name]).await?;
        }
        Ok(out)
    }

    /// Opens `n` pooled connections, so concurrent creates do not pay for TLS handshakes.
    async fn warm_connections(&self, n: usize) -> Result<()> {
        let gets = (0..n).map(|_| bounded("warming a connection", REQUEST_TIMEOUT, self.pods.get_opt("no-such-pod")));
        for r in join_all(gets).await {
            r?;
        }
        Ok(())
    }

    async fn kubectl(&self, args: &[&str]) -> Result<()> {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.target.netns, "kubectl", "--kubeconfig"])
            .arg(&self.target.kubeconfig)
            .arg("--cache-dir")
            .arg(self.target.home.join("cache"))
            .args(["--request-timeout=20s", "-n", NAMESPACE])
            .args(args)
            .env("HOME", &self.target.home)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(FLIP_TIMEOUT, cmd.output()).await {
            Ok(r) => r.context("running kubectl")?,
            Err(_) => bail!("kubectl {}: no answer within {FLIP_TIMEOUT:?}", args.join(" ")),
        };
        ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

async fn measure(args: &PodsArgs, target: Target) -> Result<Measured> {
    let mut c = Client::new(target).await?;
    let mut m = Measured::default();

    // 1. One pod at a time; the first one sets the node's network up.
    eprintln!("xtask: 1 warm-up pod, then {} pods one at a time", args.sequential);
    m.warmup = c.one_at_a_time("warmup", 1).await?.first().copied();
    m.sequential = c.one_at_a_time("start", args.sequential as usize).await?;

    // 2. Many at once.
    let n = args.burst as usize;
    eprintln!("xtask: {n} pods at once");
    c.warm_connections(n).await?;
    let (_, background) = c.quiet().await;
    let names: Vec<String> = (0..n).map(|i| format!("burst-{i:03}")).collect();
    let bodies = names.iter().map(|n| pod_body(n, "burst", false, true)).collect::<Result<Vec<_>>>()?;
    let cpu0 = c.snap();
    let t0 = cpu0.at;
    let sent: Vec<(Instant, Instant)> = join_all(bodies.iter().map(|b| {
        let c = &c;
        async move {
            let sent = c.create_pod(b).await?;
            Ok::<_, anyhow::Error>((sent, Instant::now()))
        }
    }))
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    wait_view(&mut c.view, &format!("{n} pods Ready"), ROUND_TIMEOUT, |v| {
        names.iter().all(|n| v.pods.get(n).is_some_and(|p| p.became_ready().is_some())).then_some(())
    })
    .await?;
    m.burst_cpu = c.cpu_since(cpu0, background);
    let mut last = t0;
    for (name, (s, a)) in names.iter().zip(&sent) {
        let st = c.wait_started(name, *s, *a, POD_TIMEOUT).await?;
        last = last.max(*s + st.ready);
        m.burst.push(st);
    }
    m.burst_all = last - t0;
    c.delete_pods(&names).await?;

    // 3. A ReplicaSet: the scheduler binds its pods.
    let r = args.replicas as usize;
    if r > 0 {
        eprintln!("xtask: a ReplicaSet of {r}");
        let (_, background) = c.quiet().await;
        let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), NAMESPACE);
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": RS_NAME},
            "spec": {"replicas": r, "selector": {"matchLabels": {"app": RS_NAME}},
                "template": {"metadata": {"labels": {"app": RS_NAME}},
                    "spec": {"terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "kubia", "image": IMAGE, "ports": [{"containerPort": 8080}]}]}}}
        }))?;
        let cpu0 = c.snap();
        let t0 = cpu0.at;
        bounded("creating the ReplicaSet", REQUEST_TIMEOUT, rs_api.create(&PostParams::default(), &rs)).await?;
        let ready: Vec<(String, PodSeen)> =
            wait_view(&mut c.view, &format!("{r} ReplicaSet pods Ready"), ROUND_TIMEOUT, |v| {
                let pods: Vec<(String, PodSeen)> = v
                    .pods
                    .iter()
                    .filter(|(_, p)| p.owner.as_deref() == Some(RS_NAME) && !p.deleted && p.became_ready().is_some())
                    .map(|(n, p)| (n.clone(), p.clone()))
                    .collect();
                (pods.len() >= r).then_some(pods)
            })
            .await?;
        m.rs_cpu = c.cpu_since(cpu0, background);
        for (_, p) in &ready {
            let ready_at = p.became_ready().unwrap_or(t0);
            m.rs.push((p.first_seen - t0, p.bound.unwrap_or(ready_at) - t0, ready_at - t0));
        }
        m.rs_all = m.rs.iter().map(|x| x.2).max().unwrap_or_default();
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        c.delete_conflicts += delete_retrying(&rs_api, RS_NAME, &dp).await?;
        let names: Vec<String> = ready.into_iter().map(|(n, _)| n).collect();
        c.wait_gone(&names).await?;
    }

    // 4. Endpoint propagation among many Services.
    c.service_links = args.services <= MAX_SERVICE_LINKS;
    if !c.service_links {
        eprintln!(
            "xtask: more than {MAX_SERVICE_LINKS} Services: pods from here on get enableServiceLinks: false (their variables would exceed the environment limit)"
        );
    }
    let services = args.services as usize;
    eprintln!(
        "xtask: {services} Services ({} fillers), {} pods behind Service {SERVICE}, {} readiness flips",
        if args.selectorless_fillers { "selector-less" } else { "selector" },
        args.endpoint_pods,
        args.flips
    );
    let svc_api: Api<Service> = Api::namespaced(c.client.clone(), NAMESPACE);
    let t0 = Instant::now();
    let selectorless = args.selectorless_fillers;
    futures::stream::iter(0..services)
        .map(|i| {
            let svc_api = svc_api.clone();
            async move {
                let body = if i == 0 {
                    service_body(SERVICE, Some(SERVICE))?
                } else {
                    let name = format!("filler-{i:05}");
                    service_body(&name, (!selectorless).then_some(name.as_str()))?
                };
                let name = body.metadata.name.clone().unwrap_or_default();
                bounded(
                    &format!("creating Service {name}"),
                    REQUEST_TIMEOUT,
                    svc_api.create(&PostParams::default(), &body),
                )
                .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    m.services_created = t0.elapsed();
    // The controllers give every Service with a selector an EndpointSlice and an Endpoints.
    let expected = if selectorless { 1 } else { services };
    let slice_api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), NAMESPACE);
    let ep_api: Api<Endpoints> = Api::namespaced(c.client.clone(), NAMESPACE);
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let slices = bounded("listing EndpointSlices", REQUEST_TIMEOUT, slice_api.list(&ListParams::default())).await?;
        let eps = bounded("listing Endpoints", REQUEST_TIMEOUT, ep_api.list(&ListParams::default())).await?;
        if slices.items.len() >= expected && eps.items.len() >= expected {
            break;
        }
        ensure!(
            Instant::now() < settle_deadline,
            "after {SETTLE_TIMEOUT:?}: {} EndpointSlices and {} Endpoints for {expected} Services with selectors",
            slices.items.len(),
            eps.items.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    m.settled = t0.elapsed();
    // The controllers' work for the Services done: from here the pods' probes keep the node busy.
    m.quiet = c.quiet().await.0;
    // Pod start again, now that every container gets the Services' environment variables.
    m.with_services = c.one_at_a_time("with-services", WITH_SERVICES_STARTS).await?;

    let pod_names: Vec<String> = (0..args.endpoint_pods).map(|i| format!("{SERVICE}-{i}")).collect();
    for n in &pod_names {
        c.create_pod(&pod_body(n, SERVICE, true, c.service_links)?).await?;
    }
    // Running, not ready, and listed as not ready by the slice and the Endpoints.
    wait_view(&mut c.view, "the Service's pods listed as not ready", ROUND_TIMEOUT, |v| {
        pod_names
            .iter()
            .all(|n| {
                v.ip_of(n).is_some_and(|ip| {
                    v.slices.get(&ip).is_some_and(|a| a.ready == Some(false))
                        && v.endpoints.get(&ip).is_some_and(|a| a.ready == Some(false))
                })
            })
            .then_some(())
    })
    .await?;
    // Their status writes settle; then the steady cost of the probes, for the report.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s0 = c.snap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    m.probing = c.cpu_since(s0, 0.0);
    let background = m.probing.machine.as_secs_f64() / m.probing.wall.as_secs_f64();
    let ip = c.view.borrow().ip_of(FLIP_POD).ok_or_else(|| anyhow!("{FLIP_POD} has no IP"))?;

    // The data plane: the Service's cluster IP, probed from the node (this thread is in its
    // namespace) while the only pod that turns ready flips.
    let vip = svc_api
        .get(SERVICE)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| anyhow!("Service {SERVICE} has no cluster IP"))?;
    let probe_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (probe_stop, probe_stop_rx) = watch::channel(false);
    let prober = tokio::spawn(probe_cluster_ip(std::net::SocketAddr::new(vip, 80), probe_seen.clone(), probe_stop_rx));

    let cpu0 = c.snap();
    for k in 0..args.flips as usize {
        let ready = k % 2 == 0;
        let start = Instant::now();
        let cmd: &[&str] = if ready { &["touch", "/var/ready"] } else { &["rm", "-f", "/var/ready"] };
        let mut argv = vec!["exec", FLIP_POD, "--"];
        argv.extend_from_slice(cmd);
        c.kubectl(&argv).await?;
        let exec = start.elapsed();
        let what = format!("flip {k}: {FLIP_POD} Ready={ready}");
        let pod_at = wait_view(&mut c.view, &what, FLIP_TIMEOUT, |v| {
            v.pods.get(FLIP_POD)?.transitions.iter().find(|(t, r)| *t >= start && *r == ready).map(|(t, _)| *t)
        })
        .await?;
        let what = format!("flip {k}: the EndpointSlice shows {ip} ready={ready}");
        let slice_at =
            wait_view(&mut c.view, &what, FLIP_TIMEOUT, |v| v.slices.get(&ip)?.first_since(start, ready)).await?;
        // The Endpoints usually follow at once; a short grace, and no failure if they lag.
        let endpoints_at = wait_view(&mut c.view, "endpoints", Duration::from_secs(5), |v| {
            v.endpoints.get(&ip)?.first_since(start, ready)
        })
        .await
        .ok();
        // The cluster IP follows; a flip whose probe never saw it within the bound is reported
        // as missing rather than failing the run.
        let deadline = Instant::now() + FLIP_TIMEOUT;
        let rule_at = loop {
            let hit = probe_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|(t, ok)| *t >= pod_at && *ok == ready)
                .map(|(t, _)| *t);
            if hit.is_some() || Instant::now() > deadline {
                break hit;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        m.flips.push(Flip {
            exec,
            exec_to_pod: pod_at - start,
            pod_to_slice: slice_at.saturating_duration_since(pod_at),
            slice_first: slice_at < pod_at,
            pod_to_endpoints: endpoints_at.map(|t| t.saturating_duration_since(pod_at)),
            pod_to_rule: rule_at.map(|t| t.saturating_duration_since(pod_at)),
        });
    }
    let _ = probe_stop.send(true);
    let _ = prober.await;
    m.flip_cpu = c.cpu_since(cpu0, background);
    m.watch_errors = c.view.borrow().watch_errors.clone();
    m.delete_conflicts = c.delete_conflicts;
    Ok(m)
}

/// Sets up the sealed cluster, measures on a thread inside it, cleans up, prints the report.
pub fn run(args: &PodsArgs, pier: &Path) -> Result<()> {
    let machine = machine();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    // Handlers first: from here on Ctrl-C and SIGTERM only make the run stop and clean up.
    let (mut sigint, mut sigterm) = {
        let _enter = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)
    };
    for r in sealed::remove_stale(args.data_dir_in.as_deref()) {
        eprintln!("xtask: removed what an earlier killed run left: {r}");
    }
    let mut cluster = Sealed::create(args.data_dir_in.as_deref())?;
    eprintln!(
        "xtask: starting {} server in the sealed network namespace {} (node IP {})",
        pier.display(),
        cluster.netns,
        sealed::NODE_IP
    );
    rt.block_on(async {
        tokio::select! {
            r = cluster.start(pier, &args.common.server_env) => r,
            _ = sigint.recv() => bail!("interrupted"),
            _ = sigterm.recv() => bail!("terminated"),
        }
    })?;
    let target = Target {
        netns: cluster.netns.clone(),
        kubeconfig: cluster.kubeconfig(),
        home: cluster.home.clone(),
        data_dir: cluster.data_dir.clone(),
        server_pid: cluster.pid,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread = {
        let args = args.clone();
        let netns = format!("/run/netns/{}", cluster.netns);
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || {
                let _ = done_tx.send(client_thread(&netns, &args, target, stop_rx));
            })
            .context("starting the client thread")?
    };
    let outcome = rt.block_on(async {
        tokio::select! {
            r = done_rx => r.unwrap_or_else(|_| Err(anyhow!("the client thread panicked"))),
            _ = sigint.recv() => Err(anyhow!("interrupted")),
            _ = sigterm.recv() => Err(anyhow!("terminated")),
        }
    });
    let _ = stop_tx.send(true);
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if let Some(path) = &args.server_log {
        match std::fs::copy(&cluster.log, path) {
            Ok(_) => eprintln!("xtask: server log copied to {}", path.display()),
            Err(e) => eprintln!("xtask: copying the server log to {}: {e}", path.display()),
        }
    }
    let measured = match outcome {
        Ok(mut m) => {
            m.data_fs = filesystem_of(&cluster.data_dir);
            m.data_dir = cluster.data_dir.clone();
            m
        }
        Err(e) => {
            let e = match cluster.check_alive() {
                Err(dead) => e.context(format!("{dead:#}")),
                Ok(()) => e,
            };
            eprintln!("xtask: cleaning up (server, pods, namespaces)");
            let cleanup = cluster.cleanup();
            eprintln!("xtask: {}", cleanup_line(&cleanup));
            return Err(e);
        }
    };
    let alive = cluster.check_alive();
    let cleanup = cluster.cleanup();
    drop(cluster);
    alive.context("the server died during the run")?;
    report(args, pier, &machine, &measured, &cleanup);
    Ok(())
}

/// The client: joins the sealed namespace, then runs the measurement on its own runtime.
fn client_thread(netns: &str, args: &PodsArgs, target: Target, mut stop: watch::Receiver<bool>) -> Result<Measured> {
    sealed::enter_netns(netns)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        tokio::select! {
            r = measure(args, target) => r,
            _ = stop.wait_for(|s| *s) => bail!("interrupted"),
        }
    })
}

/// The filesystem `dir` is on: type and device, and for ext4 whether it has a journal (without
/// one, ext4 skips inodes deleted in the last minutes when it allocates new ones, one by one).
fn filesystem_of(dir: &Path) -> String {
    let out = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut parts = out.split_whitespace();
    let (fstype, source) = (parts.next().unwrap_or("unknown"), parts.next().unwrap_or(""));
    if fstype != "ext4" {
        return format!("{fstype} {source}").trim().to_string();
    }
    let dev = source.rsplit('/').next().unwrap_or("");
    let journal = std::fs::read_dir("/proc/fs/jbd2")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{dev}-")));
    format!("ext4 on {source}, {}", if journal { "with a journal" } else { "no journal" })
}

fn cleanup_line(c: &Cleanup) -> String {
    format!(
        "cleanup: server killed, {} pod processes killed ({} left), {} other processes in the namespaces, {} of 2 namespaces deleted",
        c.pod_processes_killed, c.survivors, c.namespace_processes_killed, c.namespaces_deleted
    )
}

fn sorted(v: impl IntoIterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = v.into_iter().collect();
    v.sort();
    v
}

fn max(v: &[Duration]) -> Duration {
    v.last().copied().unwrap_or_default()
}

/// `p50 X, p90 Y, max Z` of sorted samples.
fn spread(v: &[Duration], high: f64) -> String {
    format!("p50 {}, p{:.0} {}, max {}", ms(percentile(v, 0.5)), high * 100.0, ms(percentile(v, high)), ms(max(v)))
}

fn report(args: &PodsArgs, pier: &Path, m: &Machine, r: &Measured, cleanup: &Cleanup) {
    let seq = sorted(r.sequential.iter().map(|s| s.ready));
    let burst = sorted(r.burst.iter().map(|s| s.ready));
    let rs = sorted(r.rs.iter().map(|x| x.2));
    let prop = sorted(r.flips.iter().map(|f| f.pod_to_slice));
    let goal_start = format!("p50 < {}", ms(GOAL_POD_START_P50));
    let mut rows: Vec<(String, String, String, &str)> = vec![
        (
            format!("pod start, 1 pod ({} in a row)", seq.len()),
            goal_start.clone(),
            spread(&seq, 0.9),
            verdict(percentile(&seq, 0.5) < GOAL_POD_START_P50),
        ),
        (
            format!("pod start, {} pods at once (each)", burst.len()),
            goal_start.clone(),
            spread(&burst, 0.99),
            verdict(percentile(&burst, 0.5) < GOAL_POD_START_P50),
        ),
        (format!("  all {} Ready", burst.len()), "-".into(), ms(r.burst_all), "info"),
    ];
    if !rs.is_empty() {
        rows.push((
            format!("pod start, ReplicaSet of {} (each)", rs.len()),
            goal_start,
            spread(&rs, 0.99),
            verdict(percentile(&rs, 0.5) < GOAL_POD_START_P50),
        ));
        rows.push((format!("  all {} Ready", rs.len()), "-".into(), ms(r.rs_all), "info"));
    }
    let with_services = sorted(r.with_services.iter().map(|s| s.ready));
    rows.push((
        format!("  1 pod with {} Services in its namespace ({} in a row)", args.services, with_services.len()),
        "-".into(),
        spread(&with_services, 0.9),
        "info",
    ));
    rows.push((
        format!("endpoint propagation ({} Services, {} flips)", args.services, prop.len()),
        format!("p99 < {}", ms(GOAL_PROPAGATION_P99)),
        spread(&prop, 0.99),
        verdict(percentile(&prop, 0.99) < GOAL_PROPAGATION_P99),
    ));
    let rule = sorted(r.flips.iter().filter_map(|f| f.pod_to_rule));
    let missing = r.flips.len() - rule.len();
    if !rule.is_empty() {
        rows.push((
            format!(
                "network programming: pod Ready → cluster IP follows ({} Services, {} flips{})",
                args.services,
                rule.len(),
                if missing > 0 { format!(", {missing} not seen") } else { String::new() }
            ),
            format!("p99 < {}", ms(GOAL_PROGRAMMING_P99)),
            spread(&rule, 0.99),
            verdict(missing == 0 && percentile(&rule, 0.99) < GOAL_PROGRAMMING_P99),
        ));
    }

    println!();
    println!("pier pods and endpoints benchmark (issue 3)");
    println!(
        "machine: {} CPUs ({}), {}, {} RAM; pier {} ({})",
        m.cpus,
        m.model,
        m.kernel,
        m.memory,
        revision(),
        pier.display()
    );
    let env: String = args.common.server_env.iter().map(|(k, v)| format!(" --server-env {k}={v}")).collect();
    let data_in = args.data_dir_in.as_ref().map(|d| format!(" --data-dir-in {}", d.display())).unwrap_or_default();
    println!(
        "command: cargo xtask bench pods --sequential {} --burst {} --replicas {} --services {}{} --endpoint-pods {} --flips {}{data_in}{env}",
        args.sequential,
        args.burst,
        args.replicas,
        args.services,
        if args.selectorless_fillers { " --selectorless-fillers" } else { "" },
        args.endpoint_pods,
        args.flips
    );
    println!("data directory: {} ({})", r.data_dir.display(), r.data_fs);
    println!();
    print_table(&rows);
    println!();
    println!("details:");
    if let Some(w) = r.warmup {
        println!(
            "  warm-up pod (creates bridge pier0): create answered {}, IP {}, Ready {}",
            ms(w.acked),
            ms(w.ip),
            ms(w.ready)
        );
    }
    let stages = |label: &str, v: &[Start], high: f64| {
        let acked = sorted(v.iter().map(|s| s.acked));
        let ip = sorted(v.iter().map(|s| s.ip));
        let ip_to_ready = sorted(v.iter().map(|s| s.ready.saturating_sub(s.ip)));
        println!("  {label}: create answered {}", spread(&acked, high));
        println!("  {:w$}  pod has its IP  {}", "", spread(&ip, high), w = label.len());
        println!("  {:w$}  IP → Ready      {}", "", spread(&ip_to_ready, high), w = label.len());
    };
    stages("1 pod, from create sent", &r.sequential, 0.9);
    stages(&format!("{} at once, from create sent", r.burst.len()), &r.burst, 0.99);
    println!("  {} at once, until all Ready: {}", r.burst.len(), r.burst_cpu.line());
    if !r.rs.is_empty() {
        let created = sorted(r.rs.iter().map(|x| x.0));
        let bound = sorted(r.rs.iter().map(|x| x.1));
        println!("  ReplicaSet, from its create: pod created {}", spread(&created, 0.99));
        println!("                                pod bound   {}", spread(&bound, 0.99));
        println!("                                pod Ready   {}", spread(&rs, 0.99));
        println!("  ReplicaSet, until all Ready: {}", r.rs_cpu.line());
    }
    println!(
        "  {} Services created in {}; their EndpointSlices and Endpoints complete after {}; server quiet afterwards: {}",
        args.services,
        ms(r.services_created),
        ms(r.settled),
        if r.quiet { "yes" } else { "no (still busy after 60 s)" }
    );
    stages(&format!("1 pod with {} Services, from create sent", args.services), &r.with_services, 0.9);
    println!(
        "  {} pods with an exec readiness probe every second, before the flips: {}",
        args.endpoint_pods,
        r.probing.line()
    );
    let exec = sorted(r.flips.iter().map(|f| f.exec));
    println!("  flip: kubectl exec ran                         {}", spread(&exec, 0.99));
    let exec = sorted(r.flips.iter().map(|f| f.exec_to_pod));
    println!("  flip: kubectl exec started → pod Ready changed: {}", spread(&exec, 0.99));
    println!(
        "  flip: pod Ready changed → EndpointSlice updated: {} ({} of {} slice events arrived first, counted as 0)",
        spread(&prop, 0.99),
        r.flips.iter().filter(|f| f.slice_first).count(),
        r.flips.len()
    );
    let eps = sorted(r.flips.iter().filter_map(|f| f.pod_to_endpoints));
    println!(
        "  flip: pod Ready changed → Endpoints (v1) updated:  {} ({} of {} seen)",
        spread(&eps, 0.99),
        eps.len(),
        r.flips.len()
    );
    println!("  {} flips: {}", r.flips.len(), r.flip_cpu.line());
    for e in &r.watch_errors {
        println!("  watch error: {e}");
    }
    if r.delete_conflicts > 0 {
        println!(
            "  server bug: {} DELETE(s) without preconditions answered 409 Conflict (retried by the benchmark)",
            r.delete_conflicts
        );
    }
    println!("  {}", cleanup_line(cleanup));
}
