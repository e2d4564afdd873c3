//! `kubectl logs` and `kubectl exec` through the API server's log and websocket exec paths,
//! with the real kubectl as the client and a scripted node (the agent is the real node; here
//! a fake that echoes is enough to pin the wire protocol: channels, stdin, exit codes).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::body::Bytes;
use common::TestServer;
use futures::stream::BoxStream;
use pier_apiserver::error::ApiResult;
use pier_apiserver::streams::{ExecOutput, ExecSession, LogOptions, NodeStreams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

struct ScriptedNode;

#[async_trait::async_trait]
impl NodeStreams for ScriptedNode {
    async fn logs(&self, pod: &Value, o: LogOptions) -> ApiResult<BoxStream<'static, Bytes>> {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut lines: Vec<String> = (1..=5).map(|i| format!("{name}/{} line {i}\n", o.container)).collect();
        if let Some(n) = o.tail_lines {
            lines = lines.split_off(lines.len().saturating_sub(n as usize));
        }
        Ok(Box::pin(futures::stream::iter(lines.into_iter().map(Bytes::from))))
    }

    async fn exec(
        &self,
        _pod: &Value,
        _c: &str,
        command: Vec<String>,
        stdin: bool,
        _tty: bool,
    ) -> ApiResult<ExecSession> {
        let (out_tx, out_rx) = mpsc::channel(16);
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            match command.first().map(String::as_str) {
                Some("echo") => {
                    let _ = out_tx.send(ExecOutput::Stdout(Bytes::from(format!("{}\n", command[1..].join(" "))))).await;
                    let _ = out_tx.send(ExecOutput::Exit(0)).await;
                }
                Some("fail") => {
                    let _ = out_tx.send(ExecOutput::Stderr(Bytes::from_static(b"failing\n"))).await;
                    let code = command.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
                    let _ = out_tx.send(ExecOutput::Exit(code)).await;
                }
                Some("cat") => {
                    while let Some(b) = in_rx.recv().await {
                        let _ = out_tx.send(ExecOutput::Stdout(b)).await;
                    }
                    let _ = out_tx.send(ExecOutput::Exit(0)).await;
                }
                _ => {
                    let _ = out_tx.send(ExecOutput::Exit(127)).await;
                }
            }
        });
        Ok(ExecSession { stdin: stdin.then_some(in_tx), output: out_rx, resize: None })
    }
}

fn kubectl(server: &str, dir: &tempfile::TempDir, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: http://{server}\n  name: t\ncontexts:\n- context:\n    cluster: t\n    namespace: default\n    user: t\n  name: t\ncurrent-context: t\nusers:\n- name: t\n  user: {{}}\n"),
    )
    .unwrap();
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_and_exec_reach_the_node() {
    let s = TestServer::start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kubia"},
        "spec": {"nodeName": "n1", "containers": [{"name": "kubia", "image": "luksa/kubia"}]}});
    s.post("/api/v1/namespaces/default/pods", &pod).await.expect(201);
    let served = s.serve().await;
    let addr = served.addr.to_string();
    let dir = tempfile::tempdir().unwrap();

    // No node connected yet: a clear 503, not a hang.
    let (code, _, err) = tokio::task::block_in_place(|| kubectl(&addr, &dir, &["logs", "kubia"], None));
    assert_ne!(code, 0);
    assert!(err.contains("no node agent"), "{err}");

    s.server.set_node_streams(Arc::new(ScriptedNode));
    let (code, out, err) = tokio::task::block_in_place(|| kubectl(&addr, &dir, &["logs", "kubia", "--tail=2"], None));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "kubia/kubia line 4\nkubia/kubia line 5\n");

    let (code, out, err) =
        tokio::task::block_in_place(|| kubectl(&addr, &dir, &["exec", "kubia", "--", "echo", "hello", "world"], None));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello world\n");

    let (code, _, err) =
        tokio::task::block_in_place(|| kubectl(&addr, &dir, &["exec", "kubia", "--", "fail", "3"], None));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("failing") && err.contains("command terminated with exit code 3"), "{err}");

    let (code, out, err) = tokio::task::block_in_place(|| {
        kubectl(&addr, &dir, &["exec", "-i", "kubia", "--", "cat"], Some("piped\nthrough\n"))
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "piped\nthrough\n");

    let (code, _, err) =
        tokio::task::block_in_place(|| kubectl(&addr, &dir, &["exec", "kubia", "-c", "nope", "--", "echo"], None));
    assert_ne!(code, 0);
    assert!(err.contains("container nope is not valid for pod kubia"), "{err}");
}
