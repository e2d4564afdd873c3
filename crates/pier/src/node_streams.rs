//! The in-process node's side of `kubectl logs` and `kubectl exec`: the API server hands the
//! request to this node, which reads the container's log or runs the command through the
//! pod runtime.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use pier_agent::machine::Machine;
use pier_apiserver::error::{ApiError, ApiResult};
use pier_apiserver::streams::{ExecOutput, ExecSession, LogOptions, NodeStreams};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub struct LocalNode {
    pub machine: Arc<Machine>,
    pub node_name: String,
}

/// The node a pod is bound to; an error, as upstream's, for a pod not scheduled yet.
pub fn assigned_node(pod: &Value) -> ApiResult<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            pod["metadata"]["name"].as_str().unwrap_or("")
        ))
    })
}

impl LocalNode {
    /// Only this node's pods are here (the API server sends other pods to their own node).
    fn check_local(&self, pod: &Value) -> ApiResult<()> {
        match assigned_node(pod)? {
            n if n == self.node_name => Ok(()),
            n => Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("pod runs on node {n}, not on this node ({})", self.node_name),
            )),
        }
    }
}

fn uid_of(pod: &Value) -> ApiResult<String> {
    pod["metadata"]["uid"].as_str().map(str::to_string).ok_or_else(|| ApiError::internal("pod without a uid"))
}

/// Streams everything `r` yields as chunks.
fn chunks<R: tokio::io::AsyncRead + Send + Unpin + 'static>(r: R) -> BoxStream<'static, Bytes> {
    Box::pin(futures::stream::unfold(r, |mut r| async move {
        let mut buf = vec![0u8; 16 * 1024];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Bytes::from(buf), r))
            }
        }
    }))
}

#[async_trait::async_trait]
impl NodeStreams for LocalNode {
    async fn logs(&self, pod: &Value, o: LogOptions) -> ApiResult<BoxStream<'static, Bytes>> {
        self.check_local(pod)?;
        let uid = uid_of(pod)?;
        let rt = self.machine.runtime().await.map_err(ApiError::internal)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        // Upstream's wording when a container has not started yet.
        let waiting_reason = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"].as_str() == Some(o.container.as_str()))
            .and_then(|c| c["state"]["waiting"]["reason"].as_str())
            .unwrap_or("ContainerCreating")
            .to_string();
        rt.log_path(&uid, &o.container, o.previous).map_err(|_| {
            if o.previous {
                ApiError::bad_request(format!(
                    "previous terminated container \"{}\" in pod \"{name}\" not found",
                    o.container
                ))
            } else {
                ApiError::bad_request(format!(
                    "container \"{}\" in pod \"{name}\" is waiting to start: {waiting_reason}",
                    o.container
                ))
            }
        })?;
        let options = pier_runtime::LogOptions {
            previous: o.previous,
            follow: o.follow,
            tail_lines: o.tail_lines.and_then(|n| usize::try_from(n).ok()),
            timestamps: o.timestamps,
            since: o.since_seconds.and_then(|s| SystemTime::now().checked_sub(Duration::from_secs(s))),
            limit_bytes: o.limit_bytes,
        };
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let container = o.container.clone();
        tokio::spawn(async move {
            let _ = rt.read_logs(&uid, &container, &options, &mut w).await;
            let _ = w.shutdown().await;
        });
        Ok(chunks(r))
    }

    async fn exec(
        &self,
        pod: &Value,
        container: &str,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> ApiResult<ExecSession> {
        let uid = uid_of(pod)?;
        let rt = self.machine.runtime().await.map_err(ApiError::internal)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let c = rt
            .container(&uid, container)
            .ok_or_else(|| ApiError::bad_request(format!("container {container} is not valid for pod {name}")))?;
        let mut p = rt
            .exec(&c, &command, &[], tty)
            .await
            .map_err(|e| ApiError::internal(format!("error executing command in container: {e}")))?;
        let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(64);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(64);
        let (resize_tx, mut resize_rx) = mpsc::channel::<(u16, u16)>(8);
        if let Some(mut w) = p.stdin.take() {
            if stdin {
                tokio::spawn(async move {
                    while let Some(b) = in_rx.recv().await {
                        if w.write_all(&b).await.is_err() {
                            break;
                        }
                        let _ = w.flush().await;
                    }
                    let _ = w.shutdown().await;
                });
            } else {
                drop(w);
            }
        }
        let pump = |r: Option<pier_runtime::ExecReader>, out: mpsc::Sender<ExecOutput>, stderr: bool| {
            tokio::spawn(async move {
                let Some(mut r) = r else { return };
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let b = Bytes::copy_from_slice(&buf[..n]);
                    let msg = if stderr { ExecOutput::Stderr(b) } else { ExecOutput::Stdout(b) };
                    if out.send(msg).await.is_err() {
                        break;
                    }
                }
            })
        };
        let o1 = pump(p.stdout.take(), out_tx.clone(), false);
        let o2 = pump(p.stderr.take(), out_tx.clone(), true);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    s = p.wait() => break s,
                    Some((w, h)) = resize_rx.recv() => { let _ = p.resize(h, w); }
                }
            };
            // Everything the command wrote goes out before its exit status.
            let _ = o1.await;
            let _ = o2.await;
            let _ = out_tx.send(ExecOutput::Exit(status.code())).await;
        });
        Ok(ExecSession { stdin: stdin.then_some(in_tx), output: out_rx, resize: tty.then_some(resize_tx) })
    }
}
