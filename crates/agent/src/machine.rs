//! [`PodRuntime`] over `pier-runtime`: the real machine. The runtime (and with it the bridge
//! `pier0`) is created on first use, so a server that never runs a pod never touches the
//! network of the namespace it runs in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pier_runtime::{Container, ContainerSpec, Runtime, RuntimeConfig, SandboxRequest};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, OnceCell};

use crate::pods::{LaunchSpec, PodRuntime, SandboxSpec};

pub struct Machine {
    config: RuntimeConfig,
    runtime: OnceCell<Arc<Runtime>>,
    handles: Mutex<HashMap<u64, Container>>,
    next: AtomicU64,
}

impl Machine {
    pub fn new(config: RuntimeConfig) -> Self {
        Machine { config, runtime: OnceCell::new(), handles: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }
    }

    /// The runtime, created on first use.
    pub async fn runtime(&self) -> Result<Arc<Runtime>, String> {
        self.runtime
            .get_or_try_init(|| async {
                let cfg = self.config.clone();
                let rt = tokio::task::spawn_blocking(move || Runtime::new(cfg)).await.map_err(|e| e.to_string())?;
                rt.map(Arc::new).map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }

    async fn container(&self, handle: u64) -> Option<Container> {
        self.handles.lock().await.get(&handle).cloned()
    }
}

/// Reads a pipe to the end, so a chatty probe never blocks on a full pipe.
fn drain(r: Option<pier_runtime::ExecReader>) {
    if let Some(mut r) = r {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}

#[async_trait::async_trait]
impl PodRuntime for Machine {
    async fn create_sandbox(&self, pod: &SandboxSpec) -> Result<IpAddr, String> {
        let rt = self.runtime().await?;
        let req = SandboxRequest {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            hostname: pod.hostname.clone(),
            resolv_conf: pod.resolv_conf.clone(),
            hosts: pod.hosts.clone(),
        };
        // A sandbox left from before an agent restart is reused as it is.
        if let Some(existing) = rt.sandbox(&pod.uid).filter(|s| s.ready) {
            return Ok(IpAddr::V4(existing.sandbox.ip));
        }
        let _ = rt.remove_sandbox(&pod.uid).await;
        rt.create_sandbox(req).await.map(|s| IpAddr::V4(s.ip)).map_err(|e| e.to_string())
    }

    async fn start_container(&self, pod_uid: &str, spec: &LaunchSpec) -> Result<u64, String> {
        let rt = self.runtime().await?;
        let sandbox = rt.sandbox(pod_uid).ok_or_else(|| format!("no sandbox for pod {pod_uid}"))?.sandbox;
        let argv = pier_runtime::resolve_argv(&spec.image, &spec.command, &spec.args).map_err(|e| e.to_string())?;
        let c = rt
            .start_container(
                &sandbox,
                ContainerSpec {
                    name: spec.name.clone(),
                    argv,
                    env: spec.env.clone(),
                    working_dir: spec.working_dir.clone(),
                    tty: spec.tty,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let h = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().await.insert(h, c);
        Ok(h)
    }

    async fn wait_container(&self, handle: u64) -> i32 {
        let (Some(c), Ok(rt)) = (self.container(handle).await, self.runtime().await) else { return 255 };
        let code = rt.wait(&c).await.code();
        self.handles.lock().await.remove(&handle);
        code
    }

    async fn stop_container(&self, handle: u64, grace: Duration) {
        if let (Some(c), Ok(rt)) = (self.container(handle).await, self.runtime().await) {
            let _ = rt.stop(&c, grace).await;
        }
    }

    async fn exec_probe(&self, handle: u64, argv: &[String], timeout: Duration) -> Option<i32> {
        let c = self.container(handle).await?;
        let rt = self.runtime().await.ok()?;
        let mut p = rt.exec(&c, argv, &[], false).await.ok()?;
        drop(p.stdin.take());
        drain(p.stdout.take());
        drain(p.stderr.take());
        match tokio::time::timeout(timeout, p.wait()).await {
            Ok(status) => Some(status.code()),
            Err(_) => {
                p.kill();
                None
            }
        }
    }

    async fn remove_sandbox(&self, pod_uid: &str) {
        if let Ok(rt) = self.runtime().await
            && let Err(e) = rt.remove_sandbox(pod_uid).await
        {
            tracing::warn!(pod_uid, error = %e, "removing the sandbox failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hosts_placeholder_is_the_runtimes() {
        assert_eq!(crate::pods::POD_IP_PLACEHOLDER, pier_runtime::POD_IP_PLACEHOLDER);
    }
}
