//! `pods/log` and `pods/exec`: the API server finds the pod and hands the stream to the node
//! that runs it ([`NodeStreams`]), as the real API server proxies to the kubelet.
//!
//! exec speaks Kubernetes' websocket channel protocol (`v5.channel.k8s.io`, and
//! `v4.channel.k8s.io` for older clients): binary messages whose first byte is the channel —
//! 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close (v5) — and a final
//! `Status` on channel 3 carrying the exit code.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::request::Query;

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub since_seconds: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Output of a command run by exec.
#[derive(Debug)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The command ended with this exit code.
    Exit(i32),
    /// The exec ended with this `Status` (from a node that speaks the channel protocol itself),
    /// passed on as it is.
    Status(Value),
}

/// A running exec: where stdin goes (if asked for) and where the output comes from.
pub struct ExecSession {
    pub stdin: Option<mpsc::Sender<Bytes>>,
    pub output: mpsc::Receiver<ExecOutput>,
    /// Terminal size changes (`tty`): width, height.
    pub resize: Option<mpsc::Sender<(u16, u16)>>,
}

/// The node side of log and exec streams: the server's own node in process, another node over
/// its kubelet port, behind the same trait.
#[async_trait::async_trait]
pub trait NodeStreams: Send + Sync {
    async fn logs(&self, pod: &Value, options: LogOptions) -> ApiResult<BoxStream<'static, Bytes>>;
    async fn exec(
        &self,
        pod: &Value,
        container: &str,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> ApiResult<ExecSession>;
}

/// The container a request names, or the pod's default one as kubectl picks it: the
/// `kubectl.kubernetes.io/default-container` annotation, else the only container.
fn container_of(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let names: Vec<&str> =
        pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}"))),
        None => {
            if let Some(d) = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str() {
                return Ok(d.to_string());
            }
            match names.as_slice() {
                [one] => Ok((*one).to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    names.join(" ")
                ))),
            }
        }
    }
}

fn parse_u64(q: &Query, key: &str) -> ApiResult<Option<u64>> {
    q.get(key)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid {key}: {s:?}"))))
        .transpose()
}

impl LogOptions {
    /// The options of a log request's query (`follow`, `previous`, `timestamps`, `tailLines`,
    /// `sinceSeconds`, `limitBytes`) for `container`.
    pub fn from_query(container: String, q: &Query) -> ApiResult<LogOptions> {
        Ok(LogOptions {
            container,
            follow: q.flag("follow"),
            previous: q.flag("previous"),
            timestamps: q.flag("timestamps"),
            tail_lines: parse_u64(q, "tailLines")?,
            since_seconds: parse_u64(q, "sinceSeconds")?,
            limit_bytes: parse_u64(q, "limitBytes")?,
        })
    }

    /// The same options as a query string (without the container), for a node's log endpoint.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (key, on) in [("follow", self.follow), ("previous", self.previous), ("timestamps", self.timestamps)] {
            if on {
                q.append_pair(key, "true");
            }
        }
        for (key, n) in
            [("tailLines", self.tail_lines), ("sinceSeconds", self.since_seconds), ("limitBytes", self.limit_bytes)]
        {
            if let Some(n) = n {
                q.append_pair(key, &n.to_string());
            }
        }
        q.finish()
    }
}

/// `GET pods/{name}/log`.
pub async fn logs(nodes: Option<Arc<dyn NodeStreams>>, pod: &Value, q: &Query) -> ApiResult<Response> {
    let container = container_of(pod, q.get("container"))?;
    let nodes = nodes.ok_or_else(no_node)?;
    let options = LogOptions::from_query(container, q)?;
    let stream = nodes.logs(pod, options).await?;
    let body = Body::from_stream(stream.map(Ok::<Bytes, std::convert::Infallible>));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn no_node() -> ApiError {
    ApiError::new(503, "ServiceUnavailable", "no node agent is connected to serve pod logs and exec")
}

/// The websocket subprotocols of exec, newest first.
pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

/// `GET|POST pods/{name}/exec` with a websocket upgrade.
pub async fn exec(
    nodes: Option<Arc<dyn NodeStreams>>,
    pod: &Value,
    q: &Query,
    parts: &mut axum::http::request::Parts,
) -> ApiResult<Response> {
    let container = container_of(pod, q.get("container"))?;
    let command: Vec<String> = q.all("command").into_iter().map(str::to_string).collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::bad_request("Upgrade request required"))?;
    if pod["status"]["phase"].as_str().is_some_and(|p| p == "Succeeded" || p == "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {}",
            pod["status"]["phase"].as_str().unwrap_or("")
        )));
    }
    let nodes = nodes.ok_or_else(no_node)?;
    let stdin = q.flag("stdin");
    let tty = q.flag("tty");
    let upgrade = upgrade.protocols([V5, V4]);
    let v5 = upgrade.selected_protocol().and_then(|p| p.to_str().ok()) == Some(V5);
    let pod = pod.clone();
    // The node is asked once the connection is upgraded, so its failures (a command that
    // does not exist, a container not running) reach kubectl on the status channel, as from
    // a kubelet, instead of turning into a refused upgrade.
    Ok(upgrade
        .on_upgrade(move |socket| async move {
            match nodes.exec(&pod, &container, command, stdin, tty).await {
                Ok(session) => bridge(socket, session, v5).await,
                Err(e) => fail(socket, e).await,
            }
        })
        .into_response())
}

/// Ends an upgraded exec connection with a failure `Status` on channel 3.
pub async fn fail(socket: WebSocket, e: ApiError) {
    let (mut tx, _rx) = socket.split();
    let mut status = e.status();
    if let Some(m) = status.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    let _ = tx.send(frame(3, status.to_string().as_bytes())).await;
    let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: "".into() }))).await;
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Copies between the websocket and the exec session until the command exits.
pub async fn bridge(socket: WebSocket, mut session: ExecSession, v5: bool) {
    let (mut tx, mut rx) = socket.split();
    let stdin = session.stdin.take();
    let resize = session.resize.take();
    // Client → command: stdin bytes, resize events, and (v5) the close of stdin.
    let reader = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            match channel {
                0 => {
                    if let Some(s) = &stdin
                        && s.send(Bytes::copy_from_slice(payload)).await.is_err()
                    {
                        stdin = None;
                    }
                }
                4 => {
                    if let (Some(r), Ok(v)) = (&resize, serde_json::from_slice::<Value>(payload)) {
                        let w = v["Width"].as_u64().and_then(|w| u16::try_from(w).ok()).unwrap_or(80);
                        let h = v["Height"].as_u64().and_then(|h| u16::try_from(h).ok()).unwrap_or(24);
                        let _ = r.send((w, h)).await;
                    }
                }
                255 if v5 && payload.first() == Some(&0) => stdin = None,
                _ => {}
            }
        }
    });
    let mut code = None;
    let mut given = None;
    while let Some(out) = session.output.recv().await {
        let msg = match out {
            ExecOutput::Stdout(b) => frame(1, &b),
            ExecOutput::Stderr(b) => frame(2, &b),
            ExecOutput::Exit(c) => {
                code = Some(c);
                break;
            }
            ExecOutput::Status(s) => {
                given = Some(s);
                break;
            }
        };
        if tx.send(msg).await.is_err() {
            reader.abort();
            return;
        }
    }
    let status = match (given, code) {
        (Some(s), _) => s,
        (None, Some(0)) => json!({"metadata": {}, "status": "Success"}),
        (None, Some(c)) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [exit status {c}], exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        (None, None) => {
            json!({"metadata": {}, "status": "Failure", "message": "the command ended without an exit status", "reason": "InternalError"})
        }
    };
    let _ = tx.send(frame(3, status.to_string().as_bytes())).await;
    // A normal close (1000): kubectl treats a close without a code as an error.
    let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: "".into() }))).await;
    reader.abort();
}
