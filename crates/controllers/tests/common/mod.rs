//! Shared harness for the controller integration tests: a real pier API server (SQLite store in
//! a temporary directory) serving plain HTTP on 127.0.0.1:0, a `kube::Client` to it, controllers
//! started on demand, a simulated node agent (it writes pod status through `pods/status`, as the
//! real agent will), and bounded waits. Only 127.0.0.1 is contacted.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pier_apiserver::{ApiServer, Config};
use pier_store::sqlite::SqliteStore;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The longest any single wait of a test may take.
pub const STEP: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub client: kube::Client,
    pub url: String,
    stops: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh API server and a client to it.
    pub async fn start() -> Cluster {
        // `RUST_LOG=pier_controllers=debug` shows the controllers' reconciles.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("pier.db")).unwrap());
        let config = Config {
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            node_port_range: (30000, 32767),
            advertise: ("198.51.100.10".parse().unwrap(), 6443),
            token: None,
            compaction_interval: Duration::from_secs(3600),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = ApiServer::start(config, store, format!("127.0.0.1:{}", addr.port())).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = server
                .serve(listener, None, async move {
                    let _ = rx.await;
                })
                .await;
        });
        let url = format!("http://127.0.0.1:{}", addr.port());
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        Cluster { client, url, stops: vec![tx], _dir: dir }
    }

    /// Runs a controller entry point until the cluster is dropped.
    pub fn run<F, Fut>(&mut self, start: F)
    where
        F: FnOnce(kube::Client, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = Result<(), pier_controllers::ControllerError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let fut = start(self.client.clone(), rx);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                panic!("controller failed: {e}");
            }
        });
        self.stops.push(tx);
    }

    /// Runs every controller.
    pub fn run_all(&mut self) {
        self.run(|c, rx| {
            pier_controllers::run(c, pier_controllers::ControllerConfig::default(), async move {
                let _ = rx.await;
            })
        });
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates an object from JSON in `ns`.
    pub async fn create<K>(&self, ns: &str, v: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(v).unwrap();
        self.api::<K>(ns).create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("create failed: {e}"))
    }

    /// A node with `labels`, Ready as given (status written through `nodes/status`).
    pub async fn node(&self, name: &str, labels: Value, ready: bool) -> Node {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let n: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
        let status = json!({"status": {"conditions": [{
            "type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady",
            "message": "simulated", "lastHeartbeatTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z",
        }]}});
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap()
    }

    /// What the node agent will do: a pod IP, phase Running and the Ready condition, written
    /// through `pods/status`.
    pub async fn agent_set(&self, ns: &str, pod: &str, ip: &str, ready: bool) -> Pod {
        set_pod_running(&self.client, ns, pod, ip, ready).await.unwrap_or_else(|e| panic!("status of {pod}: {e}"))
    }

    /// What the node agent does once a deleted pod's containers are stopped: the final delete
    /// with a grace period of 0.
    pub async fn agent_finish_deletion(&self, ns: &str, pod: &str) {
        finish_deletion(&self.client, ns, pod).await.unwrap_or_else(|e| panic!("final delete of {pod}: {e}"));
    }

    /// A simulated agent: every pod of `ns` without an IP that is on a node (or, with
    /// `any_node`, any pod) gets one and becomes Ready, until the cluster is dropped.
    pub fn run_agent(&mut self, ns: &'static str, any_node: bool) {
        let (tx, mut rx) = oneshot::channel::<()>();
        let client = self.client.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let mut next = 1u32;
            while matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items {
                        let has_ip = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                        let placed = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if p.metadata.deletion_timestamp.is_some() {
                            let _ = finish_deletion(&client, ns, &name).await;
                            continue;
                        }
                        if has_ip || !(placed || any_node) {
                            continue;
                        }
                        let ip = format!("10.244.{}.{}", next / 250, next % 250 + 1);
                        next += 1;
                        let _ = set_pod_running(&client, ns, &name, &ip, true).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        self.stops.push(tx);
    }
}

/// Deletes a pod for good (`gracePeriodSeconds: 0`), as the node agent does after stopping it.
pub async fn finish_deletion(client: &kube::Client, ns: &str, pod: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods.delete(pod, &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a running pod's status: IP, phase Running, the Ready condition as given.
pub async fn set_pod_running(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    ip: &str,
    ready: bool,
) -> Result<Pod, kube::Error> {
    let r = if ready { "True" } else { "False" };
    let t = jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", jiff::Timestamp::now()).unwrap();
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": r, "lastTransitionTime": t},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": t},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        ],
    }});
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// Polls `check` every 50 ms until it gives a value; panics after `STEP` with `what` and the
/// last thing `check` saw.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
