//! Running the pods bound to this node, as the kubelet does: one worker per pod that creates
//! its sandbox, starts its containers with their environment, probes them, restarts them by
//! `restartPolicy` with crash-loop back-off, reports the pod's status, and on deletion stops
//! the containers within the grace period and removes the pod for good.
//!
//! The worker talks to the machine through [`PodRuntime`] (implemented over `pier-runtime`),
//! so its decisions are tested with a scripted runtime.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, watch};

use crate::envvars;
use crate::probes::{Handler, ProbeSpec, ProbeState};
use crate::services::ServiceCache;

/// What the pod worker needs from the machine.
#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// Creates the pod's sandbox and returns its IP.
    async fn create_sandbox(&self, pod: &SandboxSpec) -> Result<IpAddr, String>;
    /// Starts a container; returns a handle the other calls take.
    async fn start_container(&self, pod_uid: &str, spec: &LaunchSpec) -> Result<u64, String>;
    /// Waits for a container to exit; its exit code (128 + signal for a signal).
    async fn wait_container(&self, handle: u64) -> i32;
    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop_container(&self, handle: u64, grace: Duration);
    /// Runs `argv` in the container for an exec probe; the exit code, or `None` on timeout.
    async fn exec_probe(&self, handle: u64, argv: &[String], timeout: Duration) -> Option<i32>;
    /// Removes the sandbox and everything in it.
    async fn remove_sandbox(&self, pod_uid: &str);
}

/// The sandbox of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub resolv_conf: String,
    pub hosts: String,
}

/// Written where the pod's IP belongs in [`SandboxSpec::hosts`]; the runtime substitutes the
/// address it assigns.
pub const POD_IP_PLACEHOLDER: &str = "{{POD_IP}}";

/// A container to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub name: String,
    /// Restart count so far: logs of the previous instance are kept.
    pub attempt: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub tty: bool,
}

/// Cluster facts the worker needs.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
}

/// The pod's `/etc/resolv.conf` for its `dnsPolicy` (ClusterFirst, Default, None,
/// ClusterFirstWithHostNet) and `dnsConfig`, with the host's search domains appended as the
/// kubelet does.
pub fn resolv_conf(pod: &Pod, cfg: &PodConfig, host_resolv: &str) -> String {
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_net = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_servers: Vec<String> =
        host_resolv.lines().filter_map(|l| l.strip_prefix("nameserver").map(|v| v.trim().to_string())).collect();
    let host_search: Vec<String> = host_resolv
        .lines()
        .filter_map(|l| l.strip_prefix("search").or_else(|| l.strip_prefix("domain")))
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let host_options: Vec<String> = host_resolv
        .lines()
        .filter_map(|l| l.strip_prefix("options"))
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let cluster_first = policy == "ClusterFirst" && !host_net || policy == "ClusterFirstWithHostNet";
    let (mut servers, mut search, mut options) = match policy {
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        _ if cluster_first => {
            let d = &cfg.cluster_domain;
            let mut search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            search.extend(host_search);
            (vec![cfg.cluster_dns.to_string()], search, vec!["ndots:5".to_string()])
        }
        _ => (host_servers, host_search, host_options),
    };
    if let Some(dc) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(dc.nameservers.iter().flatten().cloned());
        search.extend(dc.searches.iter().flatten().cloned());
        for o in dc.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = text.split(':').next().unwrap_or("").to_string();
            options.retain(|x| x.split(':').next() != Some(key.as_str()));
            options.push(text);
        }
    }
    servers.truncate(3);
    search.dedup();
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The pod's `/etc/hosts`, as the kubelet writes it.
pub fn hosts_file(pod: &Pod, ip: &str, cfg: &PodConfig) -> String {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or_else(|| name.to_string());
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) if !sub.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            out.push_str(&format!("{ip}\t{hostname}.{sub}.{ns}.svc.{}\t{hostname}\n", cfg.cluster_domain));
        }
        _ => out.push_str(&format!("{ip}\t{hostname}\n")),
    }
    for alias in spec.and_then(|s| s.host_aliases.as_ref()).into_iter().flatten() {
        out.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            alias.ip,
            alias.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    out
}

/// Reads a `fieldRef` path of the pod (the downward API subset the kubelet supports in env).
pub fn field_ref(pod: &Pod, path: &str, pod_ip: Option<IpAddr>, cfg: &PodConfig) -> Option<String> {
    let m = &pod.metadata;
    let label_or_annotation = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map?.get(key).cloned()
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => Some(cfg.node_name.clone()),
        "spec.serviceAccountName" => {
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).or(Some("default".into()))
        }
        "status.hostIP" => Some(cfg.node_ip.to_string()),
        "status.hostIPs" => Some(cfg.node_ip.to_string()),
        "status.podIP" | "status.podIPs" => pod_ip.map(|i| i.to_string()),
        p if p.starts_with("metadata.labels['") => label_or_annotation("metadata.labels['", m.labels.as_ref()),
        p if p.starts_with("metadata.annotations['") => {
            label_or_annotation("metadata.annotations['", m.annotations.as_ref())
        }
        _ => None,
    }
}

fn decode_secret(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// Builds a container's environment as the kubelet does: service variables first, then
/// `envFrom` sources, then `env` (which wins), with `$(VAR)` expansion.
/// `services` is the node's Service cache, as the kubelet reads its Service lister: a container
/// start must not cost a list of every Service in the cluster.
pub async fn container_env(
    client: &kube::Client,
    services: &ServiceCache,
    pod: &Pod,
    container: &Container,
    pod_ip: Option<IpAddr>,
    cfg: &PodConfig,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    // The pod's namespace, plus `default` for the `kubernetes` Service.
    let svcs = services.for_namespace(&ns);
    let mut vars: BTreeMap<String, String> = envvars::pod_service_env(&ns, links, &svcs);
    let mut order: Vec<String> = vars.keys().cloned().collect();
    let set = |vars: &mut BTreeMap<String, String>, order: &mut Vec<String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for src in container.env_from.iter().flatten() {
        let prefix = src.prefix.clone().unwrap_or_default();
        if let Some(r) = &src.config_map_ref {
            match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, &mut order, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &src.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => {
                    for (k, v) in s.data.clone().unwrap_or_default() {
                        set(&mut vars, &mut order, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            envvars::expand(v, &vars)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, pod_ip, cfg).unwrap_or_default()
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    None if optional => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                    Some(cm) => match cm.data.and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => v,
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                    },
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    None if optional => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                    Some(sec) => match decode_secret(&sec, &r.key) {
                        Some(v) => v,
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                    },
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut vars, &mut order, e.name.clone(), value);
    }
    Ok(order.into_iter().filter_map(|k| vars.get(&k).map(|v| (k, v.clone()))).collect())
}

/// Crash-loop back-off: 10 s doubling to 5 minutes, as the kubelet.
pub fn backoff(restarts: u32) -> Duration {
    let secs = 10u64.saturating_mul(1u64 << restarts.min(5));
    Duration::from_secs(secs.min(300))
}

fn now() -> String {
    let t = Timestamp::now();
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

/// One container's state as the worker tracks it.
#[derive(Debug, Clone)]
struct ContainerTrack {
    name: String,
    image: String,
    ready: bool,
    started: bool,
    restarts: u32,
    state: Value,
    last_state: Value,
}

/// The shared state of one pod's worker, rendered into `status`.
#[derive(Debug)]
struct PodTrack {
    ip: Option<IpAddr>,
    start_time: String,
    containers: Vec<ContainerTrack>,
    ready_since: Option<String>,
    /// Each condition's last status and when it last changed: the kubelet moves
    /// `lastTransitionTime` only on a change.
    transitions: HashMap<String, (String, String)>,
    /// The grace period to stop the containers with, once the pod is being deleted.
    stop_grace: Option<u64>,
    /// How many changes [`PodManager::publish`] has been asked to report.
    changes: u64,
    /// Held while a status is written; holds the number of changes the last write carried.
    published: Arc<Mutex<u64>>,
}

fn render_status(track: &PodTrack, pod: &Pod, cfg: &PodConfig) -> Value {
    let all_ready = track.containers.iter().all(|c| c.ready);
    let gates_ok = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .map(|gates| {
            gates.iter().all(|g| {
                pod.status
                    .as_ref()
                    .and_then(|st| st.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == g.condition_type && c.status == "True")
            })
        })
        .unwrap_or(true);
    let running = track.containers.iter().any(|c| c.state.get("running").is_some());
    let terminated: Vec<i64> = track
        .containers
        .iter()
        .filter_map(|c| c.state.get("terminated").map(|t| t["exitCode"].as_i64().unwrap_or(0)))
        .collect();
    let phase = if terminated.len() == track.containers.len() && !track.containers.is_empty() {
        if terminated.iter().all(|c| *c == 0) { "Succeeded" } else { "Failed" }
    } else if running || track.containers.iter().any(|c| c.restarts > 0) {
        "Running"
    } else {
        "Pending"
    };
    let t = now();
    let cond = |ty: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": t});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ready = all_ready && gates_ok;
    let not_ready_reason = if all_ready { "ReadinessGatesNotReady" } else { "ContainersNotReady" };
    let statuses: Vec<Value> = track
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": format!("pier://{}", c.image),
                "containerID": format!("pier://{}", c.name),
                "ready": c.ready, "started": c.started, "restartCount": c.restarts,
                "state": c.state, "lastState": c.last_state,
            })
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", track.ip.is_some(), None),
            cond("Initialized", true, None),
            cond("Ready", ready, Some(not_ready_reason)),
            cond("ContainersReady", all_ready, Some("ContainersNotReady")),
            cond("PodScheduled", true, None),
        ],
        "hostIP": cfg.node_ip.to_string(),
        "hostIPs": [{"ip": cfg.node_ip.to_string()}],
        "startTime": track.start_time,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if let Some(ip) = track.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status
}

/// Keeps each condition's `lastTransitionTime` from its last change.
fn stamp_transitions(transitions: &mut HashMap<String, (String, String)>, status: &mut Value) {
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        let ty = c["type"].as_str().unwrap_or("").to_string();
        let st = c["status"].as_str().unwrap_or("").to_string();
        let now_t = c["lastTransitionTime"].as_str().unwrap_or("").to_string();
        let entry = transitions.entry(ty).or_insert_with(|| (st.clone(), now_t.clone()));
        if entry.0 != st {
            *entry = (st, now_t);
        }
        c["lastTransitionTime"] = json!(entry.1);
    }
}

/// The node's pod loop.
pub struct PodManager {
    client: kube::Client,
    services: Arc<ServiceCache>,
    runtime: Arc<dyn PodRuntime>,
    cfg: PodConfig,
    workers: Mutex<HashMap<String, watch::Sender<Option<Pod>>>>,
    /// Pods starting at once (sandbox, then first container starts). When many arrive together
    /// the machine's CPUs are the limit either way; started in arrival order, a few at a time,
    /// the first ones are Ready early instead of all of them late.
    starting: Arc<Semaphore>,
}

/// Pods started at once per CPU.
const STARTS_PER_CPU: usize = 2;
/// The longest a pod waits for its turn to start: pods whose sandboxes hang (a holder gets ten
/// seconds to set up) must not hold the others up for long.
const MAX_START_WAIT: Duration = Duration::from_secs(1);

impl PodManager {
    /// `services` is the node's Service cache, fed by its owner.
    pub fn new(
        client: kube::Client,
        runtime: Arc<dyn PodRuntime>,
        cfg: PodConfig,
        services: Arc<ServiceCache>,
    ) -> Arc<Self> {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Arc::new(PodManager {
            client,
            services,
            runtime,
            cfg,
            workers: Mutex::new(HashMap::new()),
            starting: Arc::new(Semaphore::new(cpus * STARTS_PER_CPU)),
        })
    }

    /// Watches the pods bound to this node and keeps one worker per pod until it is gone.
    pub async fn run(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", self.cfg.node_name));
        let mut stream = watcher(pods, wc).boxed();
        let mut seen_in_relist: Vec<String> = Vec::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        seen_in_relist.push(uid);
                    }
                    self.clone().dispatch(pod).await;
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        self.gone(uid).await;
                    }
                }
                Ok(watcher::Event::Init) => seen_in_relist.clear(),
                Ok(watcher::Event::InitDone) => {
                    // Pods that vanished while the watch was down.
                    let known: Vec<String> = self.workers.lock().await.keys().cloned().collect();
                    for uid in known.into_iter().filter(|u| !seen_in_relist.contains(u)) {
                        self.gone(&uid).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn dispatch(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        let mut workers = self.workers.lock().await;
        if let Some(tx) = workers.get(&uid) {
            let _ = tx.send(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        workers.insert(uid.clone(), tx);
        let me = self.clone();
        tokio::spawn(async move {
            me.clone().worker(uid.clone(), rx).await;
            me.workers.lock().await.remove(&uid);
        });
    }

    async fn gone(&self, uid: &str) {
        if let Some(tx) = self.workers.lock().await.get(uid) {
            let _ = tx.send(None);
        }
    }

    async fn patch_status(&self, pod: &Pod, status: Value) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await
        {
            tracing::debug!(pod = %name, error = %e, "pod status update failed");
        }
    }

    /// One pod, from sandbox to removal.
    async fn worker(self: Arc<Self>, uid: String, mut rx: watch::Receiver<Option<Pod>>) {
        let Some(mut pod) = rx.borrow().clone() else { return };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let span = tracing::info_span!("pod", pod = %name, %uid);
        let _enter = span.enter();
        drop(_enter);
        let containers: Vec<Container> = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let track = Arc::new(Mutex::new(PodTrack {
            ip: None,
            start_time: now(),
            containers: containers
                .iter()
                .map(|c| ContainerTrack {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ready: false,
                    started: false,
                    restarts: 0,
                    state: json!({"waiting": {"reason": "ContainerCreating"}}),
                    last_state: json!({}),
                })
                .collect(),
            ready_since: None,
            transitions: HashMap::new(),
            stop_grace: None,
            changes: 0,
            published: Arc::new(Mutex::new(0)),
        }));
        // Its turn to start (see `starting`), held until its containers' first starts are
        // reported; the pod may have changed, or gone, while it waited.
        let mut admission = None;
        if pod.metadata.deletion_timestamp.is_none() {
            let turn = tokio::time::timeout(MAX_START_WAIT, self.starting.clone().acquire_owned()).await;
            admission = turn.ok().and_then(Result::ok).map(Arc::new);
            match rx.borrow_and_update().clone() {
                Some(p) => pod = p,
                None => return,
            }
        }
        if pod.metadata.deletion_timestamp.is_none() {
            let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| name.clone());
            let mut sandbox = SandboxSpec {
                uid: uid.clone(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: name.clone(),
                hostname,
                resolv_conf: resolv_conf(&pod, &self.cfg, &host_resolv),
                hosts: String::new(),
            };
            // The IP is only known once the sandbox has it: the runtime fills it in.
            sandbox.hosts = hosts_file(&pod, POD_IP_PLACEHOLDER, &self.cfg);
            match self.runtime.create_sandbox(&sandbox).await {
                Ok(ip) => {
                    track.lock().await.ip = Some(ip);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox creation failed");
                    let mut t = track.lock().await;
                    for c in &mut t.containers {
                        c.state = json!({"waiting": {"reason": "ContainerCreating", "message": format!("failed to create the pod sandbox: {e}")}});
                    }
                }
            }
        }
        // With a sandbox, the containers' starts report the pod (its IP with them).
        if track.lock().await.ip.is_none() {
            self.publish(&pod, &track).await;
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if track.lock().await.ip.is_some() {
            for (i, c) in containers.iter().enumerate() {
                let me = self.clone();
                let pod = pod.clone();
                let c = c.clone();
                let track = track.clone();
                let stop = stop_rx.clone();
                let admission = admission.clone();
                tasks.push(tokio::spawn(async move { me.run_container(pod, i, c, track, stop, admission).await }));
            }
        }
        drop(admission);

        // Wait for deletion (graceful) or disappearance.
        loop {
            if pod.metadata.deletion_timestamp.is_some() {
                break;
            }
            if rx.changed().await.is_err() {
                break;
            }
            match rx.borrow().clone() {
                Some(p) => pod = p,
                None => break,
            }
        }
        let grace = pod.metadata.deletion_grace_period_seconds.and_then(|g| u64::try_from(g).ok()).unwrap_or(30);
        track.lock().await.stop_grace = Some(grace);
        let _ = stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace) + Duration::from_secs(2);
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        self.runtime.remove_sandbox(&uid).await;
        if rx.borrow().is_some() {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
            let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
            if let Err(e) = api.delete(&name, &dp).await {
                tracing::debug!(error = %e, "final pod delete failed");
            }
        }
    }

    /// One container: start, probe, wait, restart by policy, stop on deletion.
    async fn run_container(
        self: Arc<Self>,
        pod: Pod,
        index: usize,
        container: Container,
        track: Arc<Mutex<PodTrack>>,
        mut stop: watch::Receiver<bool>,
        // The pod's turn to start: let go once this container's first start is reported.
        mut admission: Option<Arc<OwnedSemaphorePermit>>,
    ) {
        let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut attempt = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let ip = track.lock().await.ip;
            if self.services.wait_until_ready().await.is_err() {
                return;
            }
            let env = match container_env(&self.client, &self.services, &pod, &container, ip, &self.cfg).await {
                Ok(e) => e,
                Err(msg) => {
                    self.set_state(
                        &pod,
                        &track,
                        index,
                        json!({"waiting": {"reason": "CreateContainerConfigError", "message": msg}}),
                        false,
                    )
                    .await;
                    drop(admission.take());
                    if wait_or_stop(&mut stop, Duration::from_secs(5)).await {
                        return;
                    }
                    continue;
                }
            };
            // `$(VAR)` in command and args expands with the container's environment.
            let vars: BTreeMap<String, String> = env.iter().cloned().collect();
            let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
                v.iter().flatten().map(|a| envvars::expand(a, &vars)).collect()
            };
            let spec = LaunchSpec {
                name: container.name.clone(),
                attempt,
                image: container.image.clone().unwrap_or_default(),
                command: expand_all(&container.command),
                args: expand_all(&container.args),
                env,
                working_dir: container.working_dir.clone(),
                tty: container.tty.unwrap_or(false),
            };
            let handle = match self.runtime.start_container(&uid, &spec).await {
                Ok(h) => h,
                Err(msg) => {
                    self.set_state(
                        &pod,
                        &track,
                        index,
                        json!({"waiting": {"reason": "RunContainerError", "message": msg}}),
                        false,
                    )
                    .await;
                    drop(admission.take());
                    if wait_or_stop(&mut stop, backoff(attempt)).await {
                        return;
                    }
                    attempt += 1;
                    continue;
                }
            };
            let started_at = now();
            {
                let mut t = track.lock().await;
                let c = &mut t.containers[index];
                c.state = json!({"running": {"startedAt": started_at}});
                c.started = container.startup_probe.is_none();
                c.ready = container.readiness_probe.is_none() && container.startup_probe.is_none();
            }
            self.publish(&pod, &track).await;
            drop(admission.take());
            let probes = self.clone().probe_loops(pod.clone(), index, container.clone(), handle, track.clone());
            let waited = tokio::select! {
                code = self.runtime.wait_container(handle) => Some(code),
                _ = stop.wait_for(|s| *s) => None,
            };
            probes.abort();
            let code = match waited {
                Some(code) => code,
                None => {
                    let grace = track.lock().await.stop_grace.unwrap_or(u64::try_from(grace).unwrap_or(30));
                    self.runtime.stop_container(handle, Duration::from_secs(grace)).await;
                    return;
                }
            };
            let finished = now();
            let terminated = json!({"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": started_at, "finishedAt": finished, "containerID": format!("pier://{}", container.name)}});
            let restart = match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if !restart {
                self.set_state(&pod, &track, index, terminated, false).await;
                return;
            }
            // As the kubelet: the first restart is immediate, later ones back off.
            let delay = if attempt == 0 { Duration::ZERO } else { backoff(attempt - 1) };
            {
                let mut t = track.lock().await;
                let c = &mut t.containers[index];
                c.last_state = terminated;
                c.ready = false;
                if !delay.is_zero() {
                    c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off {}s restarting failed container={} pod={}", delay.as_secs(), container.name, pod.metadata.name.as_deref().unwrap_or(""))}});
                }
            }
            if !delay.is_zero() {
                self.publish(&pod, &track).await;
            }
            if wait_or_stop(&mut stop, delay).await {
                return;
            }
            track.lock().await.containers[index].restarts += 1;
            attempt += 1;
        }
    }

    async fn set_state(&self, pod: &Pod, track: &Arc<Mutex<PodTrack>>, index: usize, state: Value, ready: bool) {
        {
            let mut t = track.lock().await;
            t.containers[index].state = state;
            t.containers[index].ready = ready;
        }
        self.publish(pod, track).await;
    }

    /// Reports the pod's current state; returns once a status write carrying every change
    /// made before the call has completed. Writes are one at a time and each renders the latest
    /// state, so an older state never lands last, and changes made while a write is in flight
    /// share the next one (as the kubelet's status manager coalesces them).
    async fn publish(&self, pod: &Pod, track: &Arc<Mutex<PodTrack>>) {
        let (mine, published) = {
            let mut t = track.lock().await;
            t.changes += 1;
            (t.changes, t.published.clone())
        };
        let mut published = published.lock().await;
        if *published >= mine {
            return;
        }
        let st = {
            let mut t = track.lock().await;
            *published = t.changes;
            let mut st = render_status(&t, pod, &self.cfg);
            if st["conditions"][2]["status"] == "True" && t.ready_since.is_none() {
                t.ready_since = Some(now());
            }
            stamp_transitions(&mut t.transitions, &mut st);
            st
        };
        self.patch_status(pod, st).await;
    }

    /// Readiness, liveness and startup probes of one running container.
    fn probe_loops(
        self: Arc<Self>,
        pod: Pod,
        index: usize,
        c: Container,
        handle: u64,
        track: Arc<Mutex<PodTrack>>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let spec_of = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref().and_then(|p| ProbeSpec::from_k8s(p, &c).ok())
            };
            let startup = spec_of(&c.startup_probe);
            let readiness = spec_of(&c.readiness_probe);
            let liveness = spec_of(&c.liveness_probe);
            let ip = track.lock().await.ip;
            if let Some(s) = &startup {
                // No verdict yet: the failure threshold must be able to fire.
                let mut st = ProbeState::default();
                tokio::time::sleep(s.initial_delay).await;
                loop {
                    let ok = self.check(s, ip, handle).await;
                    if st.observe(ok, s) == Some(false) {
                        // Startup failed: kill; the container loop restarts it.
                        self.runtime.stop_container(handle, Duration::from_secs(1)).await;
                        return;
                    }
                    if st.result == Some(true) {
                        break;
                    }
                    tokio::time::sleep(s.period).await;
                }
                track.lock().await.containers[index].started = true;
                if readiness.is_none() {
                    track.lock().await.containers[index].ready = true;
                }
                self.publish(&pod, &track).await;
            }
            let live = liveness.clone().map(|s| {
                let me = self.clone();
                tokio::spawn(async move {
                    let mut st = ProbeState::starting_at(true);
                    tokio::time::sleep(s.initial_delay).await;
                    loop {
                        let ok = me.check(&s, ip, handle).await;
                        if st.observe(ok, &s) == Some(false) {
                            me.runtime.stop_container(handle, Duration::from_secs(1)).await;
                            return;
                        }
                        tokio::time::sleep(s.period).await;
                    }
                })
            });
            if let Some(s) = readiness {
                let mut st = ProbeState::starting_at(false);
                tokio::time::sleep(s.initial_delay).await;
                loop {
                    let ok = self.check(&s, ip, handle).await;
                    if let Some(now_ready) = st.observe(ok, &s) {
                        track.lock().await.containers[index].ready = now_ready;
                        self.publish(&pod, &track).await;
                    }
                    tokio::time::sleep(s.period).await;
                }
            }
            if let Some(l) = live {
                let _ = l.await;
            }
        })
    }

    async fn check(&self, spec: &ProbeSpec, ip: Option<IpAddr>, handle: u64) -> bool {
        let host = ip.map(|i| i.to_string()).unwrap_or_else(|| "127.0.0.1".into());
        match &spec.handler {
            Handler::Exec { argv } => self.runtime.exec_probe(handle, argv, spec.timeout).await == Some(0),
            Handler::HttpGet { scheme, host: h, port, path, headers } => {
                crate::probes::http_get(h.as_deref().unwrap_or(&host), *port, path, headers, scheme, spec.timeout).await
            }
            Handler::TcpSocket { host: h, port } => {
                crate::probes::tcp(h.as_deref().unwrap_or(&host), *port, spec.timeout).await
            }
            Handler::Grpc { port, .. } => crate::probes::tcp(&host, *port, spec.timeout).await,
        }
    }
}

/// Sleeps `d` unless asked to stop first; true when asked to stop.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::time::timeout(d, stop.wait_for(|s| *s)).await.is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> PodConfig {
        PodConfig {
            node_name: "n1".into(),
            node_ip: "198.51.100.1".parse().unwrap(),
            cluster_dns: "10.96.0.10".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        }
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resolv_conf_per_dns_policy() {
        let host = "nameserver 198.51.100.53\nsearch corp.example\noptions edns0\n";
        let p = pod(json!({"metadata": {"name": "kubia", "namespace": "default"}, "spec": {"containers": []}}));
        assert_eq!(
            resolv_conf(&p, &cfg(), host),
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let p = pod(
            json!({"metadata": {"name": "k", "namespace": "shop"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(resolv_conf(&p, &cfg(), host), "search corp.example\nnameserver 198.51.100.53\noptions edns0\n");
        let p = pod(
            json!({"metadata": {"name": "k", "namespace": "shop"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(resolv_conf(&p, &cfg(), host), "search a.b\nnameserver 1.2.3.4\noptions ndots:2 edns0\n");
    }

    #[test]
    fn hosts_file_has_the_pod_and_its_subdomain() {
        let p = pod(
            json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"containers": [], "hostname": "web-0", "subdomain": "web"}}),
        );
        let h = hosts_file(&p, "10.244.0.5", &cfg());
        assert!(h.contains("10.244.0.5\tweb-0.web.default.svc.cluster.local\tweb-0\n"), "{h}");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn downward_api_fields() {
        let p = pod(
            json!({"metadata": {"name": "kubia", "namespace": "default", "uid": "u1", "labels": {"app": "kubia"}}, "spec": {"containers": []}}),
        );
        let ip = Some("10.244.0.5".parse().unwrap());
        assert_eq!(field_ref(&p, "metadata.name", ip, &cfg()).as_deref(), Some("kubia"));
        assert_eq!(field_ref(&p, "metadata.namespace", ip, &cfg()).as_deref(), Some("default"));
        assert_eq!(field_ref(&p, "status.podIP", ip, &cfg()).as_deref(), Some("10.244.0.5"));
        assert_eq!(field_ref(&p, "spec.nodeName", ip, &cfg()).as_deref(), Some("n1"));
        assert_eq!(field_ref(&p, "metadata.labels['app']", ip, &cfg()).as_deref(), Some("kubia"));
        assert_eq!(field_ref(&p, "status.hostIP", ip, &cfg()).as_deref(), Some("198.51.100.1"));
    }

    #[test]
    fn crash_loop_backoff_doubles_to_five_minutes() {
        let secs: Vec<u64> = (0..8).map(|r| backoff(r).as_secs()).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn status_phases_and_conditions() {
        let p = pod(json!({"metadata": {"name": "kubia"}, "spec": {"containers": []}}));
        let c = |state: Value, ready: bool, restarts: u32| ContainerTrack {
            name: "c".into(),
            image: "luksa/kubia".into(),
            ready,
            started: true,
            restarts,
            state,
            last_state: json!({}),
        };
        let mut t = PodTrack {
            ip: Some("10.244.0.5".parse().unwrap()),
            start_time: now(),
            containers: vec![c(json!({"running": {}}), false, 0)],
            ready_since: None,
            transitions: HashMap::new(),
            stop_grace: None,
            changes: 0,
            published: Arc::new(Mutex::new(0)),
        };
        let s = render_status(&t, &p, &cfg());
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][2]["type"], "Ready");
        assert_eq!(s["conditions"][2]["status"], "False");
        assert_eq!(s["conditions"][2]["reason"], "ContainersNotReady");
        assert_eq!(s["podIP"], "10.244.0.5");
        t.containers[0].ready = true;
        assert_eq!(render_status(&t, &p, &cfg())["conditions"][2]["status"], "True");
        t.containers = vec![c(json!({"terminated": {"exitCode": 0}}), false, 0)];
        assert_eq!(render_status(&t, &p, &cfg())["phase"], "Succeeded");
        t.containers = vec![c(json!({"terminated": {"exitCode": 2}}), false, 0)];
        assert_eq!(render_status(&t, &p, &cfg())["phase"], "Failed");
        t.containers = vec![c(json!({"waiting": {"reason": "ContainerCreating"}}), false, 0)];
        assert_eq!(render_status(&t, &p, &cfg())["phase"], "Pending");
    }
}
